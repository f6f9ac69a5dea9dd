"""Model registry: named bundles (shipped, local folders, or downloads verified by SHA-256).

A registry is a JSON file ``{"schema": 1, "models": [{name, modality, path | url + sha256, licence, ...}]}``.
The shipped registry (``data/model_registry.json``) lists the demo bundles; users keep their own registry
(default ``~/.seg2med/model_registry.json``, or ``SEG2MED_REGISTRY``) to which the Slicer modules and
``seg2med train`` add bundles. Downloaded bundles are zip archives of a bundle folder, cached under
``~/.seg2med/models/<name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from seg2med_core.errors import Seg2MedError

ProgressFn = Callable[[int, int, str], None]


def user_dir() -> Path:
    return Path(os.environ.get("SEG2MED_HOME", str(Path.home() / ".seg2med")))


def user_registry_path() -> Path:
    return Path(os.environ.get("SEG2MED_REGISTRY", str(user_dir() / "model_registry.json")))


def shipped_data_dir() -> Path:
    return Path(str(resources.files("seg2med_core") / "data"))


@dataclass
class RegistryEntry:
    name: str
    modality: str
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    sequence: str | None = None
    description: str = ""
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path) -> "RegistryEntry":
        known = {k: d.get(k) for k in ("name", "modality", "path", "url", "sha256", "sequence")}
        if not known["name"] or known["modality"] not in ("ct", "mr"):
            raise Seg2MedError(f"registry entry {d!r} needs a name and modality 'ct' or 'mr'")
        if known["path"] and not Path(known["path"]).is_absolute():
            known["path"] = str((base / known["path"]).resolve())
        rest = {k: v for k, v in d.items() if k not in known and k not in ("description", "licence")}
        return cls(description=d.get("description", ""), licence=d.get("licence", ""), extra=rest, **known)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra" and v not in (None, "")}
        d.update(self.extra)
        return d


def load_registry(path: str | Path | None = None) -> list[RegistryEntry]:
    """Entries of the shipped registry followed by the user's (user entries override same names)."""
    files = [shipped_data_dir() / "model_registry.json"]
    files.append(Path(path) if path else user_registry_path())
    entries: dict[str, RegistryEntry] = {}
    for f in files:
        if not f.exists():
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise Seg2MedError(f"model registry '{f}' is not valid JSON: {exc}") from exc
        for item in data.get("models", []):
            entry = RegistryEntry.from_dict(item, f.parent)
            entries[entry.name] = entry
    return list(entries.values())


def register_bundle(bundle_dir: str | Path, name: str | None = None, registry: str | Path | None = None) -> RegistryEntry:
    """Add a local bundle folder to the user's registry (atomic rewrite) and return its entry."""
    from seg2med_core.bundle import load_metadata

    bundle_dir = Path(bundle_dir).resolve()
    meta = load_metadata(bundle_dir)
    reg_path = Path(registry) if registry else user_registry_path()
    data = json.loads(reg_path.read_text()) if reg_path.exists() else {"schema": 1, "models": []}
    entry = RegistryEntry(
        name=name or meta.name,
        modality=meta.modality,
        path=str(bundle_dir),
        sequence=meta.sequence,
        description=f"local bundle {bundle_dir}",
        licence=meta.licence,
    )
    data["models"] = [m for m in data.get("models", []) if m.get("name") != entry.name] + [entry.to_dict()]
    reg_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=reg_path.name + ".tmp-", dir=reg_path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, reg_path)
    return entry


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_entry(entry: RegistryEntry, progress: ProgressFn | None = None, timeout: float = 30.0) -> Path:
    """Download and verify a registry entry's zip into the user cache; return the bundle folder."""
    if not entry.url:
        raise Seg2MedError(f"model '{entry.name}' has no url to download from")
    target = user_dir() / "models" / entry.name
    if (target / "metadata.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmpdir:
        archive = Path(tmpdir) / "bundle.zip"
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as resp, open(archive, "wb") as fh:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total, f"downloading {entry.name}")
        except OSError as exc:
            raise Seg2MedError(f"could not download model '{entry.name}' from {entry.url}: {exc}") from exc
        if entry.sha256:
            digest = sha256_of(archive)
            if digest != entry.sha256.lower():
                raise Seg2MedError(f"model '{entry.name}' download is corrupt: sha256 {digest} != expected {entry.sha256}")
        unpacked = Path(tmpdir) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        found = [p.parent for p in unpacked.rglob("metadata.json")]
        if len(found) != 1:
            raise Seg2MedError(f"model '{entry.name}' archive holds {len(found)} bundles, expected one")
        shutil.move(str(found[0]), str(target))
    return target


def resolve_bundle_path(name_or_path: str | Path, registry: str | Path | None = None, progress: ProgressFn | None = None) -> Path:
    """A bundle folder from a path, or from a registry name (downloading if needed)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    for entry in load_registry(registry):
        if entry.name == str(name_or_path):
            if entry.path:
                return Path(entry.path)
            return download_entry(entry, progress)
    names = ", ".join(e.name for e in load_registry(registry)) or "none"
    raise Seg2MedError(f"model '{name_or_path}' is neither a bundle folder nor a registry name (known: {names})")


def resolve_bundle(name_or_path: str | Path, device: Any = "cpu", registry: str | Path | None = None):
    """Load a bundle given a folder or a registry name."""
    from seg2med_core.bundle import load_bundle

    return load_bundle(resolve_bundle_path(name_or_path, registry), device=device)
