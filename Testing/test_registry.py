"""Model registry: shipped entries, a user registry, and verified downloads from a zip URL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from seg2med_core import cli, registry
from seg2med_core.bundle import read_metadata
from seg2med_core.errors import Seg2MedError


@pytest.fixture()
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty per-user seg2med folder and registry (``SEG2MED_HOME`` / ``SEG2MED_REGISTRY``)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SEG2MED_HOME", str(home))
    monkeypatch.setenv("SEG2MED_REGISTRY", str(home / "registry.json"))
    return home


def _zip_bundle(bundle: Path, archive: Path) -> str:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(bundle.iterdir()):
            zf.write(f, f"{bundle.name}/{f.name}")
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def _write_registry(path: Path, models: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "models": models}), encoding="utf-8")


def test_shipped_entries_resolve_to_the_package_data(user_home: Path) -> None:
    entries = {e.name: e for e in registry.load_registry()}
    assert {"demo_ct", "demo_mr"} <= set(entries)
    models_dir = registry.shipped_data_dir() / "models"
    for name, modality in (("demo_ct", "ct"), ("demo_mr", "mr")):
        entry = entries[name]
        assert entry.modality == modality
        assert Path(entry.path) == (models_dir / name).resolve()
        if Path(entry.path).exists():
            assert registry.resolve_bundle_path(name) == Path(entry.path)
            assert read_metadata(entry.path).modality == modality
        else:  # demo weights not installed yet: the error names the model and where it was expected
            with pytest.raises(Seg2MedError, match=rf"model '{name}' is registered at '.*{name}', which does not exist"):
                registry.resolve_bundle_path(name)


def test_local_bundle_registered_in_user_registry_resolves_by_name(
    user_home: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bundle", "register", str(tiny_bundle), "--name", "my_ct"]) == 0
    data = json.loads((user_home / "registry.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in data["models"]] == ["my_ct"]
    assert registry.resolve_bundle_path("my_ct") == tiny_bundle.resolve()
    assert registry.resolve_bundle("my_ct").metadata.name == "tiny_ct"
    assert cli.main(["bundle", "list"]) == 0
    listing = capsys.readouterr().out
    assert "my_ct\tct" in listing and "demo_ct" in listing
    # registering again under the same name replaces the entry instead of duplicating it
    registry.register_bundle(tiny_bundle, name="my_ct")
    assert len(json.loads((user_home / "registry.json").read_text(encoding="utf-8"))["models"]) == 1


def test_download_from_file_url_is_verified_and_cached(user_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.zip"
    digest = _zip_bundle(tiny_bundle, archive)
    _write_registry(user_home / "registry.json", [{"name": "remote_ct", "modality": "ct", "url": archive.as_uri(), "sha256": digest}])
    events: list[tuple[int, int, str]] = []
    folder = registry.resolve_bundle_path("remote_ct", progress=lambda d, t, m: events.append((d, t, m)))
    assert folder == user_home / "models" / "remote_ct"
    assert (folder / "model.safetensors").read_bytes() == (tiny_bundle / "model.safetensors").read_bytes()
    assert events and events[-1][0] == archive.stat().st_size
    archive.unlink()  # the second resolution uses the cache, no download
    assert registry.resolve_bundle("remote_ct").metadata.modality == "ct"


def test_wrong_checksum_errors_and_caches_nothing(user_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.zip"
    _zip_bundle(tiny_bundle, archive)
    wrong = "0" * 64
    _write_registry(user_home / "registry.json", [{"name": "remote_ct", "modality": "ct", "url": archive.as_uri(), "sha256": wrong}])
    with pytest.raises(Seg2MedError, match=rf"model 'remote_ct' download from .* is corrupt: sha256 [0-9a-f]{{64}} != expected {wrong}"):
        registry.resolve_bundle_path("remote_ct")
    models = user_home / "models"
    assert not (models / "remote_ct").exists()
    assert list(models.iterdir()) == []  # no temporary download folder left either


def test_download_needs_a_checksum_and_a_real_bundle(user_home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("readme.txt", "no bundle here")
    digest = hashlib.sha256(junk.read_bytes()).hexdigest()
    _write_registry(
        user_home / "registry.json",
        [
            {"name": "unverified", "modality": "ct", "url": junk.as_uri()},
            {"name": "junk", "modality": "ct", "url": junk.as_uri(), "sha256": digest},
        ],
    )
    with pytest.raises(Seg2MedError, match="has a url but no sha256"):
        registry.resolve_bundle_path("unverified")
    with pytest.raises(Seg2MedError, match="archive holds 0 bundles"):
        registry.resolve_bundle_path("junk")
    assert not (user_home / "models" / "junk").exists()


def test_unknown_names_paths_and_broken_registries(user_home: Path, tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match=r"model 'nonesuch' is neither a bundle folder nor a registry name \(known: demo_ct, demo_mr"):
        registry.resolve_bundle_path("nonesuch")
    with pytest.raises(Seg2MedError, match=r"model bundle '.*/typo' does not exist"):
        registry.resolve_bundle_path(str(tmp_path / "typo"))
    (user_home).mkdir(parents=True, exist_ok=True)
    (user_home / "registry.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(Seg2MedError, match=r"model registry '.*registry.json' is not valid JSON"):
        registry.load_registry()
    _write_registry(user_home / "registry.json", [{"name": "x", "modality": "xray", "path": "."}])
    with pytest.raises(Seg2MedError, match="needs a name and modality 'ct' or 'mr'"):
        registry.load_registry()


def test_cached_copy_of_another_checksum_is_replaced(user_home: Path, tiny_bundle: Path, tiny_mr_bundle: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    _write_registry(user_home / "registry.json", [{"name": "m", "modality": "ct", "url": first.as_uri(), "sha256": _zip_bundle(tiny_bundle, first)}])
    assert read_metadata(registry.resolve_bundle_path("m")).name == "tiny_ct"
    renamed = tmp_path / "tiny_mr_copy"
    shutil.copytree(tiny_mr_bundle, renamed)
    _write_registry(user_home / "registry.json", [{"name": "m", "modality": "mr", "url": second.as_uri(), "sha256": _zip_bundle(renamed, second)}])
    assert read_metadata(registry.resolve_bundle_path("m")).name == "tiny_mr"


# ------------------------------------------------------------------ entry names cannot reach outside the cache
def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me", encoding="utf-8")
    return victim


@pytest.mark.parametrize("name", ["./../../victim", "../victim", "a/b", "/abs", "..", ".", ".hidden", "", "x" * 101, "a\\b", "sp ace"])
def test_unsafe_registry_names_are_refused_and_delete_nothing(user_home: Path, tiny_bundle: Path, tmp_path: Path, name: str) -> None:
    victim = _victim(tmp_path)
    archive = tmp_path / "tiny.zip"
    digest = _zip_bundle(tiny_bundle, archive)
    entry = {"name": name, "modality": "ct", "url": archive.as_uri(), "sha256": digest}
    _write_registry(user_home / "registry.json", [entry])
    with pytest.raises(Seg2MedError, match=r"model registry '.*registry.json': model name .* is not allowed|needs a name"):
        registry.load_registry()
    # the Python API (what the Slicer Download button calls) refuses the same entry built by hand
    with pytest.raises(Seg2MedError, match="is not allowed"):
        registry.download_entry(registry.RegistryEntry(name=name, modality="ct", url=archive.as_uri(), sha256=digest))
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert not (user_home / "models").exists() or list((user_home / "models").iterdir()) == []


def test_cache_folder_that_is_a_symlink_is_not_replaced(user_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    archive = tmp_path / "tiny.zip"
    digest = _zip_bundle(tiny_bundle, archive)
    (user_home / "models").mkdir(parents=True)
    (user_home / "models" / "m").symlink_to(victim, target_is_directory=True)
    _write_registry(user_home / "registry.json", [{"name": "m", "modality": "ct", "url": archive.as_uri(), "sha256": digest}])
    with pytest.raises(Seg2MedError, match=r"model cache folder '.*m' is a symbolic link"):
        registry.resolve_bundle_path("m")
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


def test_register_refuses_unsafe_names(user_home: Path, tiny_bundle: Path) -> None:
    for name in ("../x", "a/b", ".."):
        with pytest.raises(Seg2MedError, match="is not allowed"):
            registry.register_bundle(tiny_bundle, name=name)
    assert not (user_home / "registry.json").exists()


def test_cached_download_is_rehashed_and_restored_when_changed(user_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.zip"
    digest = _zip_bundle(tiny_bundle, archive)
    _write_registry(user_home / "registry.json", [{"name": "m", "modality": "ct", "url": archive.as_uri(), "sha256": digest}])
    folder = registry.resolve_bundle_path("m")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    assert registry.cached_bundle_ok(folder, digest)
    weights.write_bytes(good[:100] + bytes(len(good) - 100))  # damaged after caching (disk error, an edit...)
    assert not registry.cached_bundle_ok(folder, digest)
    assert registry.resolve_bundle_path("m") == folder  # re-hashed, found changed, downloaded again
    assert weights.read_bytes() == good
    (folder / "extra.txt").write_text("planted", encoding="utf-8")  # a file that did not come from the archive
    registry.resolve_bundle_path("m")
    assert not (folder / "extra.txt").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m"]  # no temporary download folder left


def test_bundle_check_accepts_a_good_bundle(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bundle", "check", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "finite weights match the network config" in out


def test_download_left_by_a_killed_process_is_cleaned_up(user_home: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """A download cut short by ``kill -9`` leaves its temporary folder; the next download in that cache removes
    it, but never the folder of a download still running (a live pid)."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    models = user_home / "models"
    models.mkdir(parents=True, exist_ok=True)
    stale = models / f".remote_ct.download.tmp-{dead_pid}-0123abcd"
    (stale / "unpacked").mkdir(parents=True)
    (stale / "bundle.zip").write_bytes(b"half a download")
    running = models / f".other.download.tmp-{os.getppid()}-89abcdef"  # a live process's download
    running.mkdir()
    archive = tmp_path / "tiny.zip"
    digest = _zip_bundle(tiny_bundle, archive)
    _write_registry(user_home / "registry.json", [{"name": "remote_ct", "modality": "ct", "url": archive.as_uri(), "sha256": digest}])
    assert registry.resolve_bundle_path("remote_ct") == models / "remote_ct"
    assert sorted(p.name for p in models.iterdir()) == sorted(["remote_ct", running.name])
