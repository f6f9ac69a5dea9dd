"""Crash safety of ``seg2med synthesize``, measured: kill it (SIGKILL, and SIGTERM) at random moments.

For each try a ``synthesize`` run (tiny random-weight bundle, generated case, ``--out`` + ``--prior-out``)
is started and killed after a random delay drawn uniformly from [0, 1.1 x the duration of an uninterrupted
run] (half the tries are drawn from the last 40 % of the run, where the outputs are written). The SIGKILL
and SIGTERM tries run side by side, each signal's tries one after another in one output folder (so every run
is also the "next run" of the try before it). Then, after each try:

* every file under a final name must be complete and readable (``io.read_image``, which checks gzip
  integrity and the voxel byte count) - a partial file under a final name is a failure;
* ``--out`` and ``--prior-out`` must both exist or both be absent (they are written as one group);
* temporary files (``*.tmp-*``) left by the kill are counted; the outputs are removed for the next try.
  After the last try one uninterrupted run writes into the same folder: afterwards no temporary file of any
  killed run may remain.

Prints one line per try and the counts; exit code 1 when any check failed. Example (2-core CPU VM):

    python benchmarks/bench_crash_safety.py --tries 20 --size 128 --slices 32
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
from concurrent.futures import ThreadPoolExecutor
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
        def timed(k: int) -> float:
            folder = ref / str(k)
            folder.mkdir()
            t0 = time.perf_counter()
            subprocess.run(synth_cmd(seg, model, folder, args.steps), check=True, env=env, capture_output=True)
            return time.perf_counter() - t0

        with ThreadPoolExecutor(max_workers=2) as pool:  # two at once, as the tries run
            durations = list(pool.map(timed, range(2)))
        duration = float(np.mean(durations))
        print(f"uninterrupted run: {duration:.2f} s, mean of 2 concurrent runs "
              f"({args.size}x{args.size}x{args.slices} voxels, {args.steps} steps)", flush=True)
        failures = 0
        totals: dict[str, dict[str, int]] = {}

        def stream(sig: signal.Signals) -> list[str]:
            """All tries of one signal in one folder: each run is also the "next run" of the try before it."""
            out = root / sig.name
            out.mkdir()
            t = totals.setdefault(sig.name, {"tries": 0, "finished_before_kill": 0, "no_output": 0, "complete_outputs": 0,
                                             "partial_file_under_final_name": 0, "only_one_of_the_group": 0,
                                             "temps_after_kill": 0, "exit_143": 0})  # fmt: skip
            lines = []
            for i in range(args.tries):
                delay = rng.uniform(0, 1.1 * duration) if i % 2 == 0 else rng.uniform(0.6 * duration, 1.05 * duration)
                proc = subprocess.Popen(synth_cmd(seg, model, out, args.steps), env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip
                time.sleep(delay)
                finished = proc.poll() is not None
                if not finished:
                    proc.send_signal(sig)
                proc.communicate(timeout=600)
                complete, partial, temps = check_folder(out)
                t["tries"] += 1
                t["finished_before_kill"] += finished
                t["no_output"] += not complete and not partial
                t["complete_outputs"] += len(complete) == 2
                t["partial_file_under_final_name"] += bool(partial)
                t["only_one_of_the_group"] += len(complete) == 1
                t["temps_after_kill"] += bool(temps)
                t["exit_143"] += proc.returncode == 143
                # a SIGTERM that lands once both outputs are in place (interpreter exit) may end with 0 or -15: fine
                bad = bool(partial) or len(complete) == 1 or (
                    sig == signal.SIGTERM and not finished and proc.returncode != 143 and len(complete) != 2)
                t.setdefault("failed", 0)
                t["failed"] += bad
                lines.append(f"{sig.name} try {i + 1:2d}: kill at {delay:5.2f} s{' (already done)' if finished else ''}  "
                             f"rc={proc.returncode:4d}  final={complete or '-'} partial={partial or '-'} "
                             f"temps_after_kill={len(temps)}{'  FAIL' if bad else ''}")
                for name in ("sct.nii.gz", "prior.nii.gz"):  # checked: the next try starts without outputs
                    (out / name).unlink(missing_ok=True)
            # one more, uninterrupted run into the same folder: nothing left by any killed run may remain
            subprocess.run(synth_cmd(seg, model, out, args.steps), check=True, env=env, capture_output=True)
            after = [p.name for p in out.iterdir() if ".tmp-" in p.name]
            t["temps_after_next_run"] = len(after)
            t["failed"] += bool(after)
            lines.append(f"{sig.name}: after the next run {len(after)} temporary file(s) remain {after or ''}")
            return lines

        with ThreadPoolExecutor(max_workers=2) as pool:  # the two signals side by side
            for lines in pool.map(stream, (signal.SIGKILL, signal.SIGTERM)):
                print("\n".join(lines), flush=True)
        failures = sum(t["failed"] for t in totals.values())
        for name, t in totals.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
        print(f"failed checks: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
