"""Crash safety of ``seg2med synthesize``, measured: kill it (SIGKILL, and SIGTERM) at random moments.

For each try a ``synthesize`` run (tiny random-weight bundle, generated case, ``--out`` + ``--prior-out``)
is started and killed after a random delay drawn uniformly from [0, 1.1 x the duration of an uninterrupted
run] (half the tries are drawn from the last 40 % of the run, where the outputs are written). Then:

* every file under a final name must be complete and readable (``io.read_image``, which checks gzip
  integrity and the voxel byte count) - a partial file under a final name is a failure;
* ``--out`` and ``--prior-out`` must both exist or both be absent (they are written as one group);
* temporary files (``*.tmp-*``) left by the kill are counted, then a second, short run (``prior``) writes
  into the same folder; afterwards no temporary file may remain.

Prints one line per try and the counts; exit code 1 when any check failed. Example (2-core CPU VM):

    python benchmarks/bench_crash_safety.py --tries 20 --size 160 --slices 48
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from seg2med_core import io  # noqa: E402
from seg2med_core.errors import Seg2MedError  # noqa: E402
from seg2med_core.labels import names_for  # noqa: E402


def make_case(folder: Path, size: int, slices: int) -> Path:
    """A body-shaped ``total`` label map (liver, spleen, kidneys in an ellipse of torso fat), 1.5 mm in-plane."""
    z, y, x = np.mgrid[0:slices, 0:size, 0:size]
    c = size / 2
    arr = np.zeros((slices, size, size), np.uint16)
    arr[((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.32 * size)) ** 2 <= 1] = 202  # torso_fat
    arr[((x - 0.4 * size) / (0.1 * size)) ** 2 + ((y - c) / (0.1 * size)) ** 2 <= 1] = 5  # liver
    arr[((x - 0.65 * size) / (0.06 * size)) ** 2 + ((y - c) / (0.06 * size)) ** 2 <= 1] = 1  # spleen
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.5, 3.0))
    return io.write_segmentation(io.Segmentation(img, names_for("total"), "total"), folder / "seg.nii.gz")


def synth_cmd(seg: Path, model: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "seg2med_core", "synthesize", "--seg", str(seg), "--model", str(model), "--steps", str(steps),
            "--device", "cpu", "--out", str(out / "sct.nii.gz"), "--prior-out", str(out / "prior.nii.gz"),
            "--progress-format", "none"]  # fmt: skip


def check_folder(out: Path) -> tuple[list[str], list[str], list[str]]:
    """(complete final files, partial final files, temporary files) in ``out``."""
    complete, partial, temps = [], [], []
    for p in sorted(out.iterdir()):
        if ".tmp-" in p.name:
            temps.append(p.name)
        elif p.name in ("sct.nii.gz", "prior.nii.gz"):
            try:
                io.read_image(p)
                complete.append(p.name)
            except Seg2MedError:
                partial.append(p.name)
    return complete, partial, temps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20, help="tries per signal (default 20)")
    parser.add_argument("--size", type=int, default=160, help="in-plane size of the generated case (voxels)")
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from conftest import make_tiny_bundle

    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="seg2med-crash-") as tmp:
        root = Path(tmp)
        model = make_tiny_bundle(root / "model", "ct")
        seg = make_case(root, args.size, args.slices)
        ref = root / "ref"
        ref.mkdir()
        t0 = time.perf_counter()
        subprocess.run(synth_cmd(seg, model, ref, args.steps), check=True, env=env, capture_output=True)
        duration = time.perf_counter() - t0
        print(f"uninterrupted run: {duration:.2f} s ({args.size}x{args.size}x{args.slices} voxels, {args.steps} steps)")
        failures = 0
        totals: dict[str, dict[str, int]] = {}
        for sig in (signal.SIGKILL, signal.SIGTERM):
            name = sig.name
            t = totals.setdefault(name, {"tries": 0, "no_output": 0, "complete": 0, "finished": 0, "partial_file": 0,
                                         "half_group": 0, "temps_after_kill": 0, "temps_after_next_run": 0,
                                         "exit_143": 0})  # fmt: skip
            for i in range(args.tries):
                out = root / f"{name}_{i}"
                out.mkdir()
                delay = rng.uniform(0, 1.1 * duration) if i % 2 == 0 else rng.uniform(0.6 * duration, 1.05 * duration)
                proc = subprocess.Popen(synth_cmd(seg, model, out, args.steps), env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip
                time.sleep(delay)
                finished = proc.poll() is not None
                if not finished:
                    proc.send_signal(sig)
                _, err = proc.communicate(timeout=120)
                rc = proc.returncode
                complete, partial, temps = check_folder(out)
                # the next run writing into the same folder cleans up what the killed run left
                subprocess.run([sys.executable, "-m", "seg2med_core", "prior", "--seg", str(seg), "--modality", "ct",
                                "--out", str(out / "next_prior.nii.gz"), "--progress-format", "none"],
                               env=env, check=True, capture_output=True)  # fmt: skip
                after = [p.name for p in out.iterdir() if ".tmp-" in p.name]
                t["tries"] += 1
                t["finished"] += finished
                t["no_output"] += not complete and not partial
                t["complete"] += len(complete) == 2
                t["partial_file"] += bool(partial)
                t["half_group"] += len(complete) == 1
                t["temps_after_kill"] += bool(temps)
                t["temps_after_next_run"] += bool(after)
                t["exit_143"] += rc == 143
                bad = bool(partial) or len(complete) == 1 or bool(after) or (sig == signal.SIGTERM and not finished and rc != 143)
                failures += bad
                print(f"{name} try {i + 1:2d}: kill at {delay:5.2f} s{' (already done)' if finished else ''}  rc={rc:4d}  "
                      f"final={complete or '-'} partial={partial or '-'} temps_after_kill={len(temps)} "
                      f"temps_after_next_run={len(after)}{'  FAIL' if bad else ''}")
        for name, t in totals.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
        print(f"failed checks: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
