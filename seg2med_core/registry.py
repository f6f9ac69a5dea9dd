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
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from seg2med_core.errors import Seg2MedError
from seg2med_core.io import read_json

ProgressFn = Callable[[int, int, str], None]
#: What a registry entry name may look like: it becomes a folder name under the model cache, so no path
#: separators, no leading dot (``.``, ``..``, hidden files), nothing but letters, digits and ``._+-``.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
#: File inside a cached download recording the archive checksum it came from and the SHA-256 of each file.
MANIFEST = ".seg2med-manifest.json"


def check_entry_name(name: Any, where: str = "model registry") -> str:
    """Return ``name`` if it is a safe registry entry name (see :data:`NAME_PATTERN`), else raise.

    The name is joined into the model cache path (``<user_dir>/models/<name>``), which a download replaces,
    so ``../x``, ``a/b``, ``/abs``, ``.`` or ``..`` must never get that far.
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise Seg2MedError(
            f"{where}: model name {name!r} is not allowed (1-100 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit; no '/' or '..')"
        )
    return name


def user_dir() -> Path:
    """Per-user seg2med folder (``SEG2MED_HOME`` or ``~/.seg2med``): registry and model cache."""
    return Path(os.environ.get("SEG2MED_HOME", str(Path.home() / ".seg2med")))


def user_registry_path() -> Path:
    """The user's registry file (``SEG2MED_REGISTRY`` or ``<user_dir>/model_registry.json``)."""
    return Path(os.environ.get("SEG2MED_REGISTRY", str(user_dir() / "model_registry.json")))


def shipped_data_dir() -> Path:
    """``seg2med_core/data`` (shipped registry, tables, demo models)."""
    return Path(str(resources.files("seg2med_core") / "data"))


@dataclass
class RegistryEntry:
    """One named model: a local ``path`` (relative paths are relative to the registry file) or a ``url``
    of a zip archive with its ``sha256``."""

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
        """Parse one registry item; ``base`` is the folder of the registry file."""
        known = {k: d.get(k) for k in ("name", "modality", "path", "url", "sha256", "sequence")}
        if not known["name"] or known["modality"] not in ("ct", "mr"):
            raise Seg2MedError(f"registry entry {d!r} needs a name and modality 'ct' or 'mr'")
        if known["path"] and not Path(known["path"]).is_absolute():
            known["path"] = str((base / known["path"]).resolve())
        rest = {k: v for k, v in d.items() if k not in known and k not in ("description", "licence")}
        return cls(description=d.get("description", ""), licence=d.get("licence", ""), extra=rest, **known)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to a registry file (empty fields omitted)."""
        d = {k: v for k, v in self.__dict__.items() if k != "extra" and v not in (None, "")}
        d.update(self.extra)
        return d


def _read_registry_file(path: Path) -> dict[str, Any]:
    """Parse one registry file; one-line errors for bad JSON or a wrong layout."""
    data = read_json(path, "model registry")
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise Seg2MedError(f"model registry '{path}' must be a JSON object with a 'models' list")
    return data


def load_registry(path: str | Path | None = None) -> list[RegistryEntry]:
    """Entries of the shipped registry followed by the user's (user entries override same names)."""
    files = [shipped_data_dir() / "model_registry.json", Path(path) if path else user_registry_path()]
    entries: dict[str, RegistryEntry] = {}
    for f in files:
        if not f.exists():
            continue
        for item in _read_registry_file(f).get("models", []):
            if not isinstance(item, dict):
                raise Seg2MedError(f"model registry '{f}' has an entry that is not an object: {item!r}")
            entry = RegistryEntry.from_dict(item, f.parent)
            check_entry_name(entry.name, f"model registry '{f}'")
            entries[entry.name] = entry
    return list(entries.values())


def register_bundle(bundle_dir: str | Path, name: str | None = None, registry: str | Path | None = None) -> RegistryEntry:
    """Add a local bundle folder to the user's registry (atomic rewrite) and return its entry.

    The bundle's metadata and weights are validated first and the name must pass :func:`check_entry_name`;
    an entry of the same name is replaced.
    """
    from seg2med_core.bundle import check_weights, read_metadata

    bundle_dir = Path(bundle_dir).expanduser().resolve()
    if name is not None:
        check_entry_name(name, f"bundle '{bundle_dir}'")
    meta = read_metadata(bundle_dir)
    if name is None:
        check_entry_name(meta.name, f"bundle '{bundle_dir}' (its metadata name; give another with --name)")
    check_weights(bundle_dir, meta)  # no entry for a bundle without (valid) weights
    reg_path = Path(registry) if registry else user_registry_path()
    data = _read_registry_file(reg_path) if reg_path.exists() else {"schema": 1, "models": []}
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
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, reg_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """The folder holding downloaded bundles (``<user_dir>/models``)."""
    return user_dir() / "models"


def cache_dir_for(entry: RegistryEntry) -> Path:
    """Where a downloaded bundle of ``entry`` is unpacked (``~/.seg2med/models/<name>``).

    The name is validated and the result is checked to lie directly inside the cache root (after resolving
    symbolic links), so no entry can point a download, and the replacement of an older copy, elsewhere.
    """
    name = check_entry_name(entry.name, f"model '{entry.name}'")
    root = cache_root()
    target = root / name
    if target.is_symlink():
        raise Seg2MedError(f"model cache folder '{target}' is a symbolic link; refusing to replace it (remove it by hand)")
    if target.resolve().parent != root.resolve():
        raise Seg2MedError(f"model '{name}' would be cached at '{target.resolve()}', outside the model cache '{root}'")
    return target


def _inside(path: Path, root: Path) -> bool:
    """True when ``path`` (resolved) lies strictly inside ``root`` (resolved)."""
    path, root = path.resolve(), root.resolve()
    return path != root and path.is_relative_to(root)


def _limit(env: str, default_mb: int) -> int:
    """A size limit in bytes: ``env`` (MB) when set to a positive number, else ``default_mb``."""
    try:
        value = float(os.environ.get(env, default_mb))
    except ValueError:
        raise Seg2MedError(f"{env}={os.environ[env]!r} must be a number of MB") from None
    if not value > 0:
        raise Seg2MedError(f"{env}={os.environ[env]!r} must be a positive number of MB")
    return int(value * (1 << 20))


def max_download_bytes() -> int:
    """Largest archive a download may be (``SEG2MED_MAX_DOWNLOAD_MB``, default 8192 MB), checked while streaming."""
    return _limit("SEG2MED_MAX_DOWNLOAD_MB", 8192)


def max_unpacked_bytes() -> int:
    """Largest unpacked bundle (``SEG2MED_MAX_UNPACKED_MB``, default 16384 MB)."""
    return _limit("SEG2MED_MAX_UNPACKED_MB", 16384)


#: An archive may unpack to at most this many times its own size (once it unpacks to more than
#: :data:`RATIO_FLOOR` bytes): float weights barely compress, so a larger ratio means a zip bomb.
MAX_RATIO = 10
RATIO_FLOOR = 16 << 20
MAX_MEMBERS = 1000


def _check_archive(zf: zipfile.ZipFile, archive: Path, entry: RegistryEntry) -> None:
    """Refuse an archive whose declared contents are too many, too large or too compressed (zipfile then
    enforces the declared sizes while extracting: a member cannot unpack to more than it declares)."""
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise Seg2MedError(f"model '{entry.name}' archive {entry.url} has {len(members)} entries (at most {MAX_MEMBERS})")
    total = sum(m.file_size for m in members)
    limit = max_unpacked_bytes()
    if total > limit:
        raise Seg2MedError(
            f"model '{entry.name}' archive {entry.url} unpacks to {total / 1e6:.1f} MB, more than the "
            f"{limit / 1e6:.0f} MB limit (SEG2MED_MAX_UNPACKED_MB)"
        )
    size = max(archive.stat().st_size, 1)
    if total > RATIO_FLOOR and total > MAX_RATIO * size:
        raise Seg2MedError(
            f"model '{entry.name}' archive {entry.url} unpacks to {total / 1e6:.1f} MB from {size / 1e6:.1f} MB "
            f"(ratio {total / size:.0f}, at most {MAX_RATIO}): refusing a possible zip bomb"
        )


def _bundle_files(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in a bundle folder except the manifest."""
    return {
        p.relative_to(folder).as_posix(): sha256_of(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def cached_bundle_ok(folder: Path, expected_sha256: str) -> bool:
    """True when ``folder`` is an intact copy unpacked from the archive with ``expected_sha256``: its
    manifest names that archive and every file (no more, no fewer) still has the hash recorded at unpacking."""
    manifest = folder / MANIFEST
    if not manifest.is_file() or folder.is_symlink():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(data, dict) or data.get("archive_sha256") != expected_sha256:
        return False
    try:
        return _bundle_files(folder) == data.get("files")
    except OSError:
        return False


def download_entry(entry: RegistryEntry, progress: ProgressFn | None = None, timeout: float = 30.0) -> Path:
    """Download, verify (SHA-256) and unpack a registry entry's zip into the user cache; return the folder.

    Nothing is cached unless the download stays under :func:`max_download_bytes` (checked while streaming),
    the checksum matches, the archive passes the size/ratio limits and holds exactly one bundle whose
    metadata and weights both validate (:func:`seg2med_core.bundle.check_weights`). The cached copy records
    the hash of each of its files; it is re-hashed on every use and downloaded again if anything changed.
    """
    from seg2med_core.bundle import check_weights, read_metadata

    if not entry.url:
        raise Seg2MedError(f"model '{entry.name}' has no url to download from")
    if not entry.sha256:
        raise Seg2MedError(f"model '{entry.name}' has a url but no sha256 in the registry; refusing an unverified download")
    expected = entry.sha256.lower()
    target = cache_dir_for(entry)
    if target.is_dir() and cached_bundle_ok(target, expected):
        return target
    limit = max_download_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    from seg2med_core.io import clean_stale_temp_files, temp_folder

    clean_stale_temp_files(target.parent)  # downloads cut short by kill -9 or a power cut
    with temp_folder(target.parent, f"{entry.name}.download") as tmpdir:
        archive = Path(tmpdir) / "bundle.zip"
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as resp, open(archive, "wb") as fh:
                total = int(resp.headers.get("Content-Length") or 0)
                if total > limit:
                    raise Seg2MedError(
                        f"model '{entry.name}' download from {entry.url} is {total / 1e6:.1f} MB, more than the "
                        f"{limit / 1e6:.0f} MB limit (SEG2MED_MAX_DOWNLOAD_MB)"
                    )
                done = 0
                while chunk := resp.read(1 << 20):
                    done += len(chunk)
                    if done > limit:
                        raise Seg2MedError(
                            f"model '{entry.name}' download from {entry.url} exceeded the {limit / 1e6:.0f} MB limit "
                            "(SEG2MED_MAX_DOWNLOAD_MB); stopped"
                        )
                    fh.write(chunk)
                    if progress:
                        progress(done, total, f"downloading {entry.name}")
        except (OSError, ValueError) as exc:
            if isinstance(exc, Seg2MedError):
                raise
            raise Seg2MedError(f"could not download model '{entry.name}' from {entry.url}: {exc}") from exc
        digest = sha256_of(archive)
        if digest != expected:
            raise Seg2MedError(f"model '{entry.name}' download from {entry.url} is corrupt: sha256 {digest} != expected {expected}")
        unpacked = Path(tmpdir) / "unpacked"
        try:
            with zipfile.ZipFile(archive) as zf:
                _check_archive(zf, archive, entry)
                zf.extractall(unpacked)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
            raise Seg2MedError(f"model '{entry.name}' download from {entry.url} is not a usable zip archive: {exc}") from exc
        except OSError as exc:
            raise Seg2MedError(f"cannot unpack model '{entry.name}' into '{target.parent}': {exc.strerror or exc}") from exc
        found = [p.parent for p in unpacked.rglob("metadata.json")]
        if len(found) != 1:
            raise Seg2MedError(f"model '{entry.name}' archive holds {len(found)} bundles, expected one")
        check_weights(found[0], read_metadata(found[0]))  # a broken bundle (metadata or weights) is never cached
        (found[0] / MANIFEST).write_text(
            json.dumps({"archive_sha256": expected, "url": entry.url, "files": _bundle_files(found[0])}, indent=2) + "\n",
            encoding="utf-8",
        )
        if target.exists() or target.is_symlink():
            # move the old copy into the temporary folder (deleted with it) instead of deleting in place
            if target.is_symlink() or not _inside(target, cache_root()):
                raise Seg2MedError(f"model cache folder '{target}' is outside '{cache_root()}'; refusing to replace it")
            os.replace(target, Path(tmpdir) / "previous")
        os.replace(found[0], target)
    return target


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith(".") or text.startswith("~")


def resolve_bundle_path(name_or_path: str | Path, registry: str | Path | None = None, progress: ProgressFn | None = None) -> Path:
    """A bundle folder from a path, or from a registry name (downloading if needed).

    Something that looks like a path (contains a slash) is never looked up by name, so a mistyped
    folder gets the error "model bundle '...' does not exist" rather than a registry listing.
    """
    text = str(name_or_path)
    p = Path(text).expanduser()
    if p.exists() or isinstance(name_or_path, Path) or _looks_like_path(text):
        if not p.exists():
            raise Seg2MedError(f"model bundle '{p}' does not exist")
        return p
    entries = load_registry(registry)
    for entry in entries:
        if entry.name == text:
            if entry.path:
                path = Path(entry.path)
                if not path.exists():
                    raise Seg2MedError(f"model '{text}' is registered at '{path}', which does not exist (not installed?)")
                return path
            return download_entry(entry, progress)
    names = ", ".join(e.name for e in entries) or "none"
    raise Seg2MedError(f"model '{text}' is neither a bundle folder nor a registry name (known: {names})")


def resolve_bundle(name_or_path: str | Path, device: Any = "cpu", registry: str | Path | None = None):  # noqa: ANN201
    """Load a bundle (``seg2med_core.bundle.Bundle``) given a folder or a registry name."""
    from seg2med_core.bundle import load_bundle

    return load_bundle(resolve_bundle_path(name_or_path, registry), device=device)
