"""Bad-input corpus for models, the registry and downloads, training and the batch script (issue 13).

Every case runs the real command line in a subprocess (``python -m seg2med_core ...`` or
``scripts/seg2med_batch.py``) on tiny data generated here, and asserts: the documented exit code (2), exactly
one ``seg2med: error:`` line naming the file or value, no traceback, and that the case folder (inputs, model
cache, run folder, output folder) is byte-for-byte what it was before: nothing written, nothing deleted.
Downloads are served by a local ``http.server`` (no internet). A few behaviours that are not errors (distinct
case ids, re-hashed caches, leftovers cleaned, full disks while checkpointing) are checked after the corpus.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_models import tiny_metadata, write_raw_bundle

REPO = Path(__file__).resolve().parents[1]
BATCH = REPO / "scripts" / "seg2med_batch.py"


# ------------------------------------------------------------------------------------------ helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every file and symlink under ``root`` with its SHA-256 (empty folders are not outputs)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Case:
    """One bad input: the command (without the interpreter), what the error line must contain, extra env."""

    args: list[str]
    needle: str
    env: dict[str, str] = field(default_factory=dict)
    batch: bool = False


def run(case: Case, root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEG2MED_HOME": str(root / "home"),
        "SEG2MED_REGISTRY": str(root / "home" / "registry.json"),
        "SEG2MED_CPU_BF16": "0",
        "OMP_NUM_THREADS": "1",
        **case.env,
    }
    command = [sys.executable, str(BATCH)] if case.batch else [sys.executable, "-m", "seg2med_core"]
    return subprocess.run(command + case.args, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def write_seg(path: Path, shape: tuple[int, int, int] = (3, 24, 24), spacing: float = 12.0) -> Path:
    """A tiny ``total`` label map (a liver block) that synthesize can read."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[:, 8:16, 8:16] = 5
    img = sitk.GetImageFromArray(labels)
    img.SetSpacing((spacing, spacing, spacing))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def write_training_case(folder: Path) -> tuple[Path, Path]:
    """A 6x20x20 CT (body at 40 HU, a 60 HU liver block) and its label map, 6 mm voxels."""
    z, y, x = np.mgrid[0:6, 0:20, 0:20]
    body = (y - 10) ** 2 + (x - 10) ** 2 <= 64
    liver = body & (abs(y - 9) <= 3) & (abs(x - 8) <= 3)
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct[liver] = 60
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arr, name in ((ct, "image"), (np.where(liver, 5, 0).astype(np.uint8), "seg")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((6.0, 6.0, 6.0))
        paths.append(folder / f"case_{name}.nii.gz")
        sitk.WriteImage(img, str(paths[-1]))
    return paths[0], paths[1]


TRAIN_FLAGS = ["--modality", "ct", "--image-size", "16", "--spacing", "6", "--channels", "8,8", "--max-steps", "2",
               "--batch-size", "2", "--val-every", "0", "--device", "cpu", "--progress-format", "none"]


def train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    image, seg = write_training_case(root / "data")
    return ["train", "--image", str(image), "--segmentation", str(seg), "--out", str(run_dir),
            "--cache-dir", str(root / "cache"), *TRAIN_FLAGS, *extra]


def fake_checkpoint(run_dir: Path, payload_change: Callable[[dict], None]) -> None:
    """``checkpoints/latest`` with a valid safetensors file and a ``state.pt`` edited by ``payload_change``."""
    import torch
    from safetensors.torch import save_file

    from seg2med_core.training.checkpoint import TrainState, rng_state

    latest = run_dir / "checkpoints" / "latest"
    latest.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(latest / "model.safetensors"))
    payload = {"optimizer": {"state": {}, "param_groups": []}, "train_state": dict(TrainState(step=1).__dict__),
               "rng": rng_state(), "config": {}}
    payload_change(payload)
    torch.save(payload, latest / "state.pt")


def zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> str:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(f"{folder.name}/{name}", data)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def write_registry(root: Path, models: list[dict]) -> None:
    path = root / "home" / "registry.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "models": models}), encoding="utf-8")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test's files; under ``/stream/`` without a Content-Length (the size is known only at the end)."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/stream/"):
            data = (Path(self.directory) / self.path.removeprefix("/stream/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.end_headers()
            for i in range(0, len(data), 1 << 16):
                self.wfile.write(data[i : i + (1 << 16)])
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``(folder, base_url)``: files put in ``folder`` are downloadable from ``base_url``."""
    folder = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def serve_bundle(server, root: Path, name: str, metadata: dict | None = None, state: dict | None = None,
                 extra: dict[str, bytes] | None = None, stream: bool = False) -> dict:
    """Zip a (possibly broken) bundle, serve it and return its registry entry (with the right sha256)."""
    folder, base = server
    bundle = write_raw_bundle(root / "src" / name, metadata, state)
    archive = folder / f"{root.name}_{name}.zip"
    digest = zip_folder(bundle, archive, extra)
    shutil.rmtree(root / "src")
    url = f"{base}/{'stream/' if stream else ''}{archive.name}"
    return {"name": name, "modality": "ct", "url": url, "sha256": digest}


def _tensors(kind: str) -> dict:
    import torch

    from seg2med_core.network import build_network
    from tiny_models import TINY_NO_ATTENTION

    state = {k: v.clone().contiguous() for k, v in build_network(dict(TINY_NO_ATTENTION)).state_dict().items()}
    key = "conv_in.conv.weight"
    if kind == "nan":
        state[key][0] = float("nan")
    elif kind == "inf":
        state[key][0] = float("inf")
    elif kind == "int":
        state[key] = state[key].round().to(torch.int32)
    return state


# ------------------------------------------------------------------------------------------ the cases
def bundle_meta(**changes: object) -> Callable[[Path, object], Case]:
    """A bundle whose metadata has ``changes``, checked with ``bundle check``."""

    def make(root: Path, _server: object) -> Case:
        folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(**changes))
        return Case(["bundle", "check", str(folder)], changes_needle(changes))

    return make


def changes_needle(changes: dict) -> str:
    return next(iter(changes))


def bundle_weights(kind: str, needle: str, command: str = "check") -> Callable[[Path, object], Case]:
    def make(root: Path, _server: object) -> Case:
        folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(), _tensors(kind))
        if command == "synthesize":
            seg = write_seg(root / "seg.nii.gz")
            return Case(["synthesize", "--seg", str(seg), "--model", str(folder), "--out", str(root / "syn.nii.gz"),
                         "--steps", "1", "--device", "cpu", "--progress-format", "none"], needle)
        return Case(["bundle", "check", str(folder)], needle)

    return make


def case_image_size_synthesize(root: Path, _server: object) -> Case:
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(image_size=100000))
    seg = write_seg(root / "seg.nii.gz")
    return Case(["synthesize", "--seg", str(seg), "--model", str(folder), "--out", str(root / "syn.nii.gz"),
                 "--steps", "1", "--device", "cpu", "--progress-format", "none"], "image_size must be an integer between 8 and 2048 pixels, got 100000")


def case_huge_channels(root: Path, _server: object) -> Case:
    net = dict(tiny_metadata()["network"], channels=[512, 1024], norm_num_groups=8)
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(network=net))
    return Case(["bundle", "check", str(folder)], "do not match the network config: conv_in.conv.weight has shape (8, 2, 3, 3), expected (512, 2, 3, 3)")


def case_gigantic_channels(root: Path, _server: object) -> Case:
    net = dict(tiny_metadata()["network"], channels=[65536, 65536], norm_num_groups=8)
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(network=net))
    return Case(["bundle", "check", str(folder)], "G parameters")


def case_no_weights(root: Path, _server: object) -> Case:
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(), {})
    return Case(["bundle", "check", str(folder)], "has no model.safetensors")


def case_truncated_weights(root: Path, _server: object) -> Case:
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return Case(["bundle", "check", str(folder)], "model.safetensors' are unreadable or corrupt")


def case_register_without_weights(root: Path, _server: object) -> Case:
    folder = write_raw_bundle(root / "bad_bundle", tiny_metadata(), {})
    return Case(["bundle", "register", str(folder), "--name", "ok_name"], "has no model.safetensors")


def case_register_slash_name(root: Path, _server: object) -> Case:
    folder = write_raw_bundle(root / "good_bundle", tiny_metadata())
    return Case(["bundle", "register", str(folder), "--name", "evil/../../x"], "model name 'evil/../../x' is not allowed")


def case_registry_name_escapes(root: Path, server: object) -> Case:
    victim = root / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep", encoding="utf-8")
    entry = serve_bundle(server, root, "x")
    write_registry(root, [dict(entry, name="./../../victim")])  # <root>/home/models/./../../victim = <root>/victim
    return Case(["bundle", "info", "x"], "is not allowed")


def case_wrong_sha(root: Path, server: object) -> Case:
    entry = serve_bundle(server, root, "m")
    write_registry(root, [dict(entry, sha256="0" * 64)])
    return Case(["bundle", "info", "m"], "is corrupt: sha256")


def case_download_too_large(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m")])
    return Case(["bundle", "info", "m"], "MB limit (SEG2MED_MAX_DOWNLOAD_MB)", {"SEG2MED_MAX_DOWNLOAD_MB": "0.01"})


def case_download_too_large_streamed(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", stream=True)])
    return Case(["bundle", "info", "m"], "exceeded the 0 MB limit", {"SEG2MED_MAX_DOWNLOAD_MB": "0.01"})


def case_zip_bomb(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", extra={"padding.bin": bytes(40 << 20)})])
    return Case(["bundle", "info", "m"], "zip bomb")


def case_unpacked_too_large(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m")])
    return Case(["bundle", "info", "m"], "SEG2MED_MAX_UNPACKED_MB", {"SEG2MED_MAX_UNPACKED_MB": "0.001"})


def case_too_many_members(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", extra={f"f{i}.txt": b"x" for i in range(1001)})])
    return Case(["bundle", "info", "m"], "entries (at most 1000)")


def case_download_corrupt_weights(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", state={"conv_in.conv.weight": __import__("torch").zeros(1)})])
    return Case(["bundle", "info", "m"], "do not match the network config")


def case_download_nan_weights(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", state=_tensors("nan"))])
    return Case(["bundle", "info", "m"], "NaN/Inf value(s)")


def case_download_bad_metadata(root: Path, server: object) -> Case:
    write_registry(root, [serve_bundle(server, root, "m", metadata=tiny_metadata(spacing_xy=float("inf")))])
    return Case(["bundle", "info", "m"], "spacing_xy")


def case_download_unreachable(root: Path, server: object) -> Case:
    entry = serve_bundle(server, root, "m")
    write_registry(root, [dict(entry, url=entry["url"].rsplit("/", 1)[0] + "/missing.zip")])
    return Case(["bundle", "info", "m"], "could not download model 'm'")


def case_resume_without_checkpoint(root: Path, _server: object) -> Case:
    (root / "run").mkdir()
    (root / "run" / "train_log.csv").write_text("step,epoch,loss,lr,elapsed_s\n1,0,0.5,0.0002,1.0\n", encoding="utf-8")
    return Case(train_args(root, root / "run", "--resume"), "there is no checkpoint at")


def case_resume_without_state(root: Path, _server: object) -> Case:
    fake_checkpoint(root / "run", lambda p: None)
    (root / "run" / "checkpoints" / "latest" / "state.pt").unlink()
    return Case(train_args(root, root / "run", "--resume"), "is incomplete (no state.pt)")


def case_fresh_run_over_log(root: Path, _server: object) -> Case:
    (root / "run").mkdir()
    (root / "run" / "train_log.csv").write_text("step,epoch,loss,lr,elapsed_s\n1,0,0.5,0.0002,1.0\n", encoding="utf-8")
    return Case(train_args(root, root / "run"), "already holds a training log")


def case_state_wrong_keys(root: Path, _server: object) -> Case:
    fake_checkpoint(root / "run", lambda p: p.pop("rng"))
    return Case(train_args(root, root / "run", "--resume"), "missing key(s) rng")


def case_state_extra_key(root: Path, _server: object) -> Case:
    fake_checkpoint(root / "run", lambda p: p.update(surprise=1))
    return Case(train_args(root, root / "run", "--resume"), "unexpected key(s) surprise")


def case_state_train_state_keys(root: Path, _server: object) -> Case:
    fake_checkpoint(root / "run", lambda p: p["train_state"].update(stepp=3))
    return Case(train_args(root, root / "run", "--resume"), "train_state is not a seg2med checkpoint: unexpected key(s) stepp")


def case_state_broken_rng(root: Path, _server: object) -> Case:
    fake_checkpoint(root / "run", lambda p: p["rng"]["python"].update(state=[1, 2, 3]))
    return Case(train_args(root, root / "run", "--resume"), "random-number state is broken")


def case_csv_not_utf8(root: Path, _server: object) -> Case:
    image, seg = write_training_case(root / "data")
    table = root / "cases.csv"
    table.write_bytes(f"image,segmentation\n{image},{seg}\n".encode() + "Ã©t\xe9,x\n".encode("latin-1"))
    return Case(["train", "--data", str(table), "--out", str(root / "run"), "--cache-dir", str(root / "cache"), *TRAIN_FLAGS],
                f"CSV '{table}' is not UTF-8 text")


def case_phantom_negative_seed(root: Path, _server: object) -> Case:
    return Case(["phantom", "--seed", "-1", "--out", str(root / "p.nii.gz")], "phantom seed must be an integer between 0 and 4294967295, got -1")


def case_batch_collision(root: Path, _server: object) -> Case:
    write_seg(root / "in" / "a.nii.gz")
    write_seg(root / "in" / "a.nii")
    return Case(["--input-dir", str(root / "in"), "--output-dir", str(root / "out"), "--quiet"], "would both be case 'a'", batch=True)


def case_batch_only_folders_without_seg(root: Path, _server: object) -> Case:
    (root / "in" / "patient7").mkdir(parents=True)
    (root / "in" / "patient7" / "image.nii.gz").write_bytes(b"not read")
    return Case(["--input-dir", str(root / "in"), "--output-dir", str(root / "out"), "--quiet"],
                "1 folder(s) without a segmentation: patient7", batch=True)


CASES: dict[str, Callable[[Path, object], Case]] = {
    "bundle-intensity-unsupported": bundle_meta(intensity={"kind": "ct_window", "level": 40, "width": 400}),
    "bundle-intensity-unknown-kind": bundle_meta(intensity={"kind": "zscore"}),
    "bundle-label-set-unknown": bundle_meta(label_set="total_v9"),
    "bundle-spacing-infinity": bundle_meta(spacing_xy=float("inf")),
    "bundle-spacing-nan": bundle_meta(spacing_xy=float("nan")),
    "bundle-spacing-negative": bundle_meta(spacing_xy=-1.5),
    "bundle-spacing-absurd": bundle_meta(spacing_xy=1e6),
    "bundle-image-size-absurd-synthesize": case_image_size_synthesize,
    "bundle-nan-weights-synthesize": bundle_weights("nan", "conv_in.conv.weight has", "synthesize"),
    "bundle-inf-weights": bundle_weights("inf", "NaN/Inf value(s)"),
    "bundle-int-weights": bundle_weights("int", "has dtype I32; network weights must be floating point"),
    "bundle-huge-channels": case_huge_channels,
    "bundle-gigantic-channels": case_gigantic_channels,
    "bundle-no-weights": case_no_weights,
    "bundle-truncated-weights": case_truncated_weights,
    "register-without-weights": case_register_without_weights,
    "register-slash-name": case_register_slash_name,
    "registry-name-escapes-cache": case_registry_name_escapes,
    "download-wrong-sha256": case_wrong_sha,
    "download-too-large": case_download_too_large,
    "download-too-large-streamed": case_download_too_large_streamed,
    "download-zip-bomb": case_zip_bomb,
    "download-unpacked-too-large": case_unpacked_too_large,
    "download-too-many-members": case_too_many_members,
    "download-corrupt-weights": case_download_corrupt_weights,
    "download-nan-weights": case_download_nan_weights,
    "download-bad-metadata": case_download_bad_metadata,
    "download-unreachable": case_download_unreachable,
    "train-resume-without-checkpoint": case_resume_without_checkpoint,
    "train-resume-without-state": case_resume_without_state,
    "train-fresh-run-over-log": case_fresh_run_over_log,
    "train-state-wrong-keys": case_state_wrong_keys,
    "train-state-extra-key": case_state_extra_key,
    "train-state-train-state-keys": case_state_train_state_keys,
    "train-state-broken-rng": case_state_broken_rng,
    "train-csv-not-utf8": case_csv_not_utf8,
    "phantom-negative-seed": case_phantom_negative_seed,
    "batch-case-id-collision": case_batch_collision,
    "batch-only-folders-without-segmentation": case_batch_only_folders_without_seg,
}


#: Cases that repeat a check made by a cheaper case (each costs a torch + MONAI start-up, ~5 s of CPU): run
#: with ``-m slow``; the default run keeps the suite's CPU budget.
SLOW = {"bundle-inf-weights", "bundle-gigantic-channels", "bundle-truncated-weights", "download-nan-weights",
        "train-state-train-state-keys"}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in CASES])
def test_bad_input_gives_one_error_line_and_changes_nothing(kind: str, tmp_path: Path, server) -> None:
    case = CASES[kind](tmp_path, server)
    before = snapshot(tmp_path)
    result = run(case, tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("seg2med: error:")]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(errors) == 1, result.stderr
    assert case.needle in errors[0], errors[0]
    assert snapshot(tmp_path) == before  # no output, no temp file, no input changed or deleted


def test_the_corpus_covers_at_least_25_kinds() -> None:
    areas = {kind.split("-")[0] for kind in CASES}
    assert len(set(CASES) - SLOW) >= 25 and {"bundle", "register", "registry", "download", "train", "batch"} <= areas
