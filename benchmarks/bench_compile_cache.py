#!/usr/bin/env python
"""What ``torch.compile`` costs a user the first time and every time after: cold vs warm on-disk cache.

Runs the same child process twice (then ``--runs`` times) against one fresh inductor cache folder: each
child builds the network (a bundle with ``--model``, else the paper network at 512² on CUDA / the demo
CT model on CPU), compiles it through seg2med's fast path (``seg2med_core.fast.prepared``) and times the
first call (compile + one step) and the next ones. The first child compiles from scratch; later children
find the graphs and kernels in the cache, as a user's second ``seg2med synthesize --compile`` does
(seg2med keeps that cache in ``~/.cache/seg2med/torchinductor``, see ``fast.compile_cache_dir``).

    python benchmarks/bench_compile_cache.py                     # CPU: demo CT model, batch 4
    python benchmarks/bench_compile_cache.py --device cuda --batch 32 --out results/h100-compile.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from seg2med_core.bundle import load_bundle
    from seg2med_core.fast import FastOptions, prepared
    from seg2med_core.network import PAPER_NETWORK, build_network

    t_start = time.perf_counter()
    device = torch.device(args.device)
    if args.model:
        bundle = load_bundle(args.model, device)
        network, size = bundle.network, bundle.metadata.image_size
    else:
        network, size = build_network(PAPER_NETWORK).to(device), 512
    options = FastOptions.for_device(device, compile=True, compile_mode=args.mode)
    x = torch.randn(args.batch, 2, size, size, device=device)
    t = torch.full((args.batch,), 500, device=device, dtype=torch.long)
    calls = []
    with prepared(network, device, options) as predict:
        for _ in range(4):
            t0 = time.perf_counter()
            predict(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls.append(time.perf_counter() - t0)
    print(json.dumps({"first_call_s": calls[0], "later_call_s": min(calls[1:]), "process_s": time.perf_counter() - t_start,
                      "options": options.describe(), "size": size, "batch": args.batch, "torch": torch.__version__,
                      "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="bundle folder (default: demo CT on CPU, paper network on CUDA)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--mode", default="default", help="torch.compile mode: default, reduce-overhead, ...")
    p.add_argument("--runs", type=int, default=2, help="child processes sharing the cache (first = cold)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the children (CPU)")
    p.add_argument("--out", default=None, help="result JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None and args.device == "cpu":
        args.model = str(ROOT / "seg2med_core" / "data" / "models" / "demo_ct")
    if args.child:
        child(args)
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="seg2med-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--batch", str(args.batch), "--mode", args.mode]
        if args.model:
            cmd += ["--model", args.model]
        for k in range(args.runs):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["cache"] = "cold" if k == 0 else "warm"
            runs.append(row)
            print(f"run {k + 1} ({row['cache']}): first call {row['first_call_s']:.1f} s, later calls "
                  f"{1000 * row['later_call_s']:.1f} ms per batch, process {row['process_s']:.1f} s  [{row['options']}]", flush=True)
    result = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "device": args.device,
              "model": args.model or "paper network (random weights)", "mode": args.mode, "runs": runs}
    if args.out:
        sys.path.insert(0, str(ROOT))
        from seg2med_core.io import write_json

        print(f"# wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
