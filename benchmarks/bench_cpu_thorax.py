#!/usr/bin/env python
"""CPU speed of the default command line on the 133-slice 512² lidc-idri-0001 thorax (issue 14: ≤ 10 min).

Runs ``seg2med synthesize`` exactly as a user would, with the default sampler settings (only ``--model``,
``--seg``, ``--image``, ``--out``, ``--metrics`` and ``--device cpu`` are given), as a subprocess, and
prints the wall time of the whole command (start-up, reading, prior, sampling, writing), the sampling
time the command reports, the slices and the machine. The label map is first renumbered to ``total`` v2 by
name (``benchmarks/ct_patients.py``; its ids differ from v2 at 117/118). Results go to
``benchmarks/results/cpu_thorax-<host>-<date>.json``.

It is long on a small CPU (minutes): run it when the machine is idle, e.g.::

    nohup python benchmarks/bench_cpu_thorax.py > /tmp/cpu_thorax.log 2>&1 &
    python benchmarks/bench_cpu_thorax.py --model demo_ct --extra=--steps=10   # other settings
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ct_patients import lidc_total_v2  # noqa: E402

TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_ct", help="bundle folder or registry name (default demo_ct)")
    parser.add_argument("--extra", default="", help="extra seg2med synthesize arguments (one string)")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/cpu_thorax-<host>-<date>.json)")
    parser.add_argument("--keep", default=None, help="folder to keep the synthetic volume and metrics in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seg2med-cpu-thorax-") as tmp_s:
        tmp = Path(args.keep) if args.keep else Path(tmp_s)
        tmp.mkdir(parents=True, exist_ok=True)
        case = lidc_total_v2(tmp)
        out, metrics = tmp / "synthetic_ct.nii.gz", tmp / "metrics.json"
        cmd = [sys.executable, "-m", "seg2med_core", "synthesize", "--model", args.model, "--seg", str(case["seg"]),
               "--image", str(case["image"]), "--out", str(out), "--metrics", str(metrics), "--device", "cpu",
               "--progress-format", "json", *shlex.split(args.extra)]
        print("command:", " ".join(shlex.quote(c) for c in cmd), flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{") and '"done"' in line]
        info = [json.loads(line).get("message", "") for line in proc.stdout.splitlines() if line.startswith("{") and "\"log\"" in line]
        quality = json.loads(metrics.read_text(encoding="utf-8"))
    result = {
        "benchmark": "cpu_thorax",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "command": cmd, "wall_seconds": round(wall, 1),
        "sampling_seconds": done[-1].get("seconds_sampling") if done else None,
        "target_seconds": TARGET_S, "within_target": wall <= TARGET_S, "info": info,
        "metrics": {k: v for k, v in quality.items() if isinstance(v, (int, float, dict))},
    }
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"cpu_thorax-{platform.node()}-{_dt.date.today()}.json"
    from seg2med_core.io import write_json

    write_json(path, result)
    for line in info:
        print(line)
    print(f"wall time {wall:.1f} s for the whole command (target ≤ {TARGET_S:.0f} s: {'met' if wall <= TARGET_S else 'NOT met'}); "
          f"sampling {result['sampling_seconds']} s; {os.cpu_count()} CPUs")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
