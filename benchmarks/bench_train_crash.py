"""Crash safety of training, measured: ``kill -9`` at random moments, then ``--resume``.

For each try a training run of a tiny config (CPU) is started, killed with SIGKILL after a random delay
(uniform over the time an uninterrupted run spends training, so kills land in steps, log writes and
checkpoint writes alike), then continued with ``--resume``. Each try reports:

* ``lost_steps``: steps done before the kill (last row of ``train_log.csv``, logged every step) minus the
  step of the checkpoint the resume started from; must be at most ``--checkpoint-every``;
* ``equal``: the resumed run's final bundle weights equal, bit for bit, those of an uninterrupted run;
* ``leftovers``: seg2med temp folders (``.latest.tmp-*`` ...) left in ``checkpoints/`` after the resume.

A kill before the first checkpoint leaves nothing to resume: ``--resume`` must then fail with one line
(counted as ``before_first_checkpoint``) and a fresh run in a new folder is compared instead.

By default each run is a forked child process running the real command-line entry point
(``seg2med_core.cli.main(["train", ...])``: same code, no interpreter start-up per run, so 20 tries fit in
a few CPU minutes); ``--subprocess`` starts ``python -m seg2med_core train`` instead.

    python benchmarks/bench_train_crash.py --tries 20 --json benchmarks/results/cpu-train-crash.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked children must not inherit a thread pool
os.environ.setdefault("SEG2MED_CPU_BF16", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

TINY_NET = {"spatial_dims": 2, "in_channels": 2, "out_channels": 1, "channels": [8, 8],
            "attention_levels": [False, True], "num_res_blocks": 1, "num_head_channels": 8, "norm_num_groups": 4}


def write_case(folder: Path) -> tuple[Path, Path]:
    """A small CT (body at 40 HU with a 60 HU block) and its label map, 12 slices of 20x20 at 6 mm."""
    z, y, x = np.mgrid[0:12, 0:20, 0:20]
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


def _child(argv: list[str], log: str) -> None:
    import torch

    torch.set_num_threads(1)
    from seg2med_core.cli import main

    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Run:
    """One training process (forked child or ``python -m seg2med_core``)."""

    def __init__(self, argv: list[str], use_subprocess: bool) -> None:
        log = Path(argv[argv.index("--out") + 1]).with_name(Path(argv[argv.index("--out") + 1]).name + ".log")
        if use_subprocess:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            with open(log, "a", encoding="utf-8") as fh:
                self.proc = subprocess.Popen([sys.executable, "-m", "seg2med_core", *argv], env=env, stdout=fh, stderr=fh)
            self.pid = self.proc.pid
        else:
            self.proc = mp.get_context("fork").Process(target=_child, args=(argv, str(log)))
            self.proc.start()
            self.pid = self.proc.pid

    def wait(self) -> int:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.wait()
        self.proc.join()
        return int(self.proc.exitcode)

    def alive(self) -> bool:
        return self.proc.poll() is None if isinstance(self.proc, subprocess.Popen) else self.proc.is_alive()


def last_logged_step(run_dir: Path) -> int:
    log = run_dir / "train_log.csv"
    if not log.exists():
        return 0
    rows = [line.split(",")[0] for line in log.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return int(float(rows[-1])) if rows else 0


def checkpoint_step(run_dir: Path) -> int | None:
    from seg2med_core.training.checkpoint import find_checkpoint

    found = find_checkpoint(run_dir / "checkpoints" / "latest")
    if found is None:
        return None
    return int(json.loads((found / "info.json").read_text(encoding="utf-8"))["step"])


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def _preimport() -> None:
    """Import the training code once in the parent, so each forked run starts at once (no thread pool is
    started: OMP_NUM_THREADS=1 and no tensor work happens here before the forks)."""
    import monai.networks.nets  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import seg2med_core.cli  # noqa: F401
    import seg2med_core.training.cli  # noqa: F401
    import seg2med_core.training.dataset  # noqa: F401
    import seg2med_core.training.train  # noqa: F401


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--checkpoint-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--subprocess", action="store_true", help="python -m seg2med_core per run instead of fork")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rng = random.Random(args.seed)
    if not args.subprocess:
        _preimport()
    work = args.work or Path(tempfile.mkdtemp(prefix="seg2med-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    image, seg = write_case(work / "data")
    config = work / "config.json"
    config.write_text(json.dumps({
        "modality": "ct", "image_size": 16, "spacing_xy": 6.0, "network": TINY_NET, "batch_size": 2,
        "max_steps": args.steps, "epochs": None, "val_every": 0, "log_every": 1,
        "checkpoint_every": args.checkpoint_every, "mixed_precision": "none", "seed": 3,
    }), encoding="utf-8")

    def argv(run_dir: Path, *extra: str) -> list[str]:
        return ["train", "--config", str(config), "--image", str(image), "--segmentation", str(seg), "--out", str(run_dir),
                "--cache-dir", str(work / "cache"), "--device", "cpu", "--progress-format", "none", *extra]

    t0 = time.monotonic()
    ref = work / "reference"
    code = Run(argv(ref), args.subprocess).wait()  # fills the slice cache too
    if code != 0:
        print(f"the uninterrupted run failed (exit {code}); see {ref}.log")
        return 1
    t1 = time.monotonic()
    probe = work / "probe"
    run = Run(argv(probe), args.subprocess)
    while run.alive() and not (probe / "train_log.csv").exists():
        time.sleep(0.005)
    started = time.monotonic()
    run.wait()
    train_s = time.monotonic() - started
    print(f"uninterrupted run: {time.monotonic() - t1:.1f} s, of which training {train_s:.2f} s "
          f"({args.steps} steps, checkpoint every {args.checkpoint_every}); reference took {t1 - t0:.1f} s with cache fill")
    if not same_weights(ref / "bundle", probe / "bundle"):
        print("the two uninterrupted runs differ: training is not deterministic here, comparison meaningless")
        return 1

    results = []
    for i in range(args.tries):
        run_dir = work / f"try{i:02d}"
        run = Run(argv(run_dir), args.subprocess)
        while run.alive() and not (run_dir / "train_log.csv").exists():
            time.sleep(0.002)
        t_start = time.monotonic()
        delay = rng.uniform(0, train_s)
        time.sleep(delay)
        killed = run.alive()
        if killed:
            os.kill(run.pid, signal.SIGKILL)
        run.wait()
        if not killed:  # the machine got faster than when train_s was measured: use this run's time
            train_s = time.monotonic() - t_start
        done = last_logged_step(run_dir)
        ckpt = checkpoint_step(run_dir)
        tmp_before = sorted(p.name for p in (run_dir / "checkpoints").glob(".*")) if (run_dir / "checkpoints").exists() else []
        entry = {"try": i, "delay_s": round(delay, 3), "killed": killed, "steps_done": done, "checkpoint_step": ckpt,
                 "leftovers_after_kill": tmp_before}
        if not killed:
            entry.update(outcome="finished before the kill", equal=same_weights(ref / "bundle", run_dir / "bundle"), lost_steps=0)
        elif ckpt is None:
            code = Run(argv(run_dir, "--resume"), args.subprocess).wait()
            fresh = work / f"try{i:02d}-fresh"
            Run(argv(fresh), args.subprocess).wait()
            entry.update(outcome="before_first_checkpoint", resume_exit=code, lost_steps=done,
                         equal=same_weights(ref / "bundle", fresh / "bundle"))
        else:
            code = Run(argv(run_dir, "--resume"), args.subprocess).wait()
            leftovers = sorted(p.name for p in (run_dir / "checkpoints").glob(".*.tmp-*"))
            entry.update(outcome="resumed", resume_exit=code, lost_steps=done - ckpt, leftovers=leftovers,
                         equal=code == 0 and same_weights(ref / "bundle", run_dir / "bundle"))
        results.append(entry)
        print(json.dumps(entry), flush=True)

    killed = [r for r in results if r["killed"]]
    resumed = [r for r in results if r["outcome"] == "resumed"]
    early = [r for r in results if r["outcome"] == "before_first_checkpoint"]
    summary = {
        "tries": len(results),
        "killed": len(killed),
        "finished_before_kill": len(results) - len(killed),
        "resumed": len(resumed),
        "before_first_checkpoint": len(early),
        "before_first_checkpoint_resume_refused_exit2": sum(r.get("resume_exit") == 2 for r in early),
        "resume_exit_0": sum(r.get("resume_exit") == 0 for r in resumed),
        "final_weights_equal": sum(bool(r["equal"]) for r in results),
        "max_lost_steps": max((r["lost_steps"] for r in resumed), default=0),
        "lost_within_one_interval": sum(r["lost_steps"] <= args.checkpoint_every for r in resumed),
        "temp_folders_left_after_kill": sum(bool(r["leftovers_after_kill"]) for r in killed),
        "temp_folders_left_after_resume": sum(bool(r.get("leftovers")) for r in resumed),
        "checkpoint_every": args.checkpoint_every,
        "steps": args.steps,
        "mode": "subprocess" if args.subprocess else "fork",
        "machine": f"{os.cpu_count()}-core CPU",
        "date": time.strftime("%Y-%m-%d"),
    }
    print("summary: " + json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "tries": results}, indent=2) + "\n", encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    ok = summary["final_weights_equal"] == len(results) and summary["lost_within_one_interval"] == len(resumed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
