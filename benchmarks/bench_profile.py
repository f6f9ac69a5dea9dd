#!/usr/bin/env python
"""Where one denoising step spends its time: a kernel-level profile of the network on the fast path.

Answers "what would the next lever have to speed up?" for issue 6's per-step target. For each variant
(``plain`` = MONAI's fp32 eager path, ``fast`` = seg2med's default levers for the device, ``compile`` =
the fast path under ``torch.compile``) it times ``--calls`` forward passes without the profiler (ms per
slice-step), then profiles the same calls with ``torch.profiler`` and sums the time of every CUDA kernel
(on a GPU) or of every ATen op's own time (on the CPU) into categories: convolution, matmul, attention,
normalization, elementwise (activations, adds, copies, concatenation, upsampling) and other. Names are
sorted into categories by pattern (:func:`category`; a heuristic, the top kernels are listed by name so
it can be checked). Inductor's generated kernels are named after what they fuse (``triton_red_fused_
native_group_norm_...``): a fused GroupNorm+SiLU counts as normalization, other fused pointwise kernels as
elementwise, and its conv/matmul templates (``triton_tem_...``, max-autotune) as convolution/matmul.

    python benchmarks/bench_profile.py                                 # CPU: demo CT model, batch 8
    python benchmarks/bench_profile.py --device cuda --variants fast,compile --out results/h100-profile.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from seg2med_core.bundle import load_bundle  # noqa: E402
from seg2med_core.device import pick_device  # noqa: E402
from seg2med_core.fast import FastOptions, prepared  # noqa: E402
from seg2med_core.io import write_json  # noqa: E402
from seg2med_core.network import PAPER_NETWORK, build_network  # noqa: E402

#: (category, pattern) in the order they are tried; the first match wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("attention", r"flash|fmha|attention|sdpa|softmax|_efficient_attention"),
    ("convolution", r"conv|implicit_gemm|fprop|dgrad|wgrad|winograd|precomputed|cudnn"),
    ("matmul", r"gemm|addmm|bmm|(^|[^a-z])mm([^a-z]|$)|linear|matmul|cublas|nvjet"),
    ("normalization", r"group_norm|layer_norm|batch_norm|welford|\bnorm"),
    ("elementwise", r"elementwise|silu|sigmoid|add|mul|copy|(^|[^a-z])cat([^a-z]|$)|catarray|upsample"
                    r"|fill|clone|contiguous|to_copy|reduce|sum|mean|div|sub|exp|sin|cos|nchwtonhwc|nhwctonchw|transpose"),
)
#: Profiler events that are bookkeeping, not work.
IGNORED = re.compile(r"^(ProfilerStep|seg2med::|cuda(LaunchKernel|StreamSynchronize|DeviceSynchronize|GetDevice)|aten::empty)")


def category(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith(("triton_poi", "triton_per", "triton_red")):
        # inductor's generated pointwise/reduction kernels (a conv or matmul itself is a cuDNN/cuBLAS call or a
        # triton_tem template); they are named after the ops they fuse, e.g. a convolution's bias epilogue
        return "normalization" if re.search(r"norm|welford", lowered) else "elementwise"
    for label, pattern in CATEGORIES:
        if re.search(pattern, lowered):
            return label
    return "other"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variant_options(name: str, device: torch.device, mode: str) -> FastOptions:
    if name == "plain":
        return FastOptions()
    if name == "fast":
        return FastOptions.for_device(device)
    if name == "compile":
        return FastOptions.for_device(device, compile=True, compile_mode=mode)
    raise SystemExit(f"bench_profile: unknown variant {name!r} (plain, fast, compile)")


def self_time_us(event: Any, on_gpu: bool) -> float:
    if on_gpu:
        return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))
    return float(event.self_cpu_time_total)


def profile_variant(network: torch.nn.Module, device: torch.device, options: FastOptions, batch: int, size: int,
                    calls: int, top: int) -> dict[str, Any]:
    x = torch.randn(batch, 2, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    on_gpu = device.type == "cuda"
    with prepared(network, device, options) as predict:
        t0 = time.perf_counter()
        predict(x, t)  # compiles when compiling, autotunes cuDNN when asked
        sync(device)
        first_s = time.perf_counter() - t0
        predict(x, t)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            predict(x, t)
        sync(device)
        ms_per_slice_step = 1000 * (time.perf_counter() - t0) / calls / batch
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(calls):
                predict(x, t)
            sync(device)
    kernels: dict[str, float] = {}
    for event in prof.key_averages():
        if IGNORED.search(event.key):
            continue
        if on_gpu and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        spent = self_time_us(event, on_gpu)
        if spent > 0:
            kernels[event.key] = kernels.get(event.key, 0.0) + spent
    total_us = sum(kernels.values()) or 1.0
    per_slice_step = 1.0 / (1000.0 * calls * batch)  # µs summed over the profiled calls → ms per slice-step
    categories: dict[str, float] = {}
    for name, spent in kernels.items():
        label = category(name)
        categories[label] = categories.get(label, 0.0) + spent
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {
        "variant": options.describe(),
        "batch": batch,
        "calls": calls,
        "first_call_s": first_s,
        "ms_per_slice_step": ms_per_slice_step,
        "profiled_ms_per_slice_step": total_us * per_slice_step,
        "what_is_summed": "CUDA kernel time" if on_gpu else "ATen ops' own CPU time",
        "categories": {k: {"ms_per_slice_step": v * per_slice_step, "share": v / total_us}
                       for k, v in sorted(categories.items(), key=lambda kv: -kv[1])},
        "top": [{"name": name, "category": category(name), "ms_per_slice_step": spent * per_slice_step,
                 "share": spent / total_us} for name, spent in ranked],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto (default cpu)")
    p.add_argument("--model", help="bundle folder (default: demo CT model on the CPU, paper network at 512² on a GPU)")
    p.add_argument("--batch", type=int, help="slices per forward pass (default 8 on the CPU, 32 on a GPU)")
    p.add_argument("--variants", help="comma list of plain, fast, compile (default plain,fast on the CPU; "
                                      "plain,fast,compile on a GPU)")
    p.add_argument("--mode", default="default", help="torch.compile mode for the compile variant")
    p.add_argument("--calls", type=int, default=5, help="forward passes timed and profiled per variant")
    p.add_argument("--top", type=int, default=12, help="kernels/ops listed by name")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--out", help="result JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    if args.model is None and not on_gpu:
        args.model = str(ROOT / "seg2med_core" / "data" / "models" / "demo_ct")
    if args.model:
        bundle = load_bundle(args.model, device)
        network, size, what = bundle.network, bundle.metadata.image_size, args.model
    else:
        network, size, what = build_network(PAPER_NETWORK).to(device), 512, "paper network (random weights)"
    batch = args.batch or (32 if on_gpu else 8)
    names = [v.strip() for v in (args.variants or ("plain,fast,compile" if on_gpu else "plain,fast")).split(",") if v.strip()]
    card = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    print(f"# {card}, torch {torch.__version__}, {what}, {size}², batch {batch}", flush=True)
    rows = []
    for name in names:
        row = profile_variant(network, device, variant_options(name, device, args.mode), batch, size, args.calls, args.top)
        rows.append(row)
        print(f"\n{row['variant']}: {row['ms_per_slice_step']:.2f} ms per slice-step "
              f"({row['what_is_summed']}: {row['profiled_ms_per_slice_step']:.2f}; first call {row['first_call_s']:.1f} s)")
        for label, c in row["categories"].items():
            print(f"  {label:14s} {c['ms_per_slice_step']:8.3f} ms  {100 * c['share']:5.1f} %")
        for k in row["top"]:
            print(f"    {100 * k['share']:5.1f} %  {k['category']:13s} {k['name'][:90]}")
    result = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "card": card,
              "torch": torch.__version__, "model": what, "size": size, "rows": rows}
    if args.out:
        print(f"# wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
