#!/usr/bin/env python
"""Sampling benchmark: MONAI's default path (fp32 eager, DDPM) vs seg2med's fast path, on one card.

One process, one device. Measures, with the real sampler code (``seg2med_core.sampler.denoise``):

* ms per slice-step of each variant (plain fp32, +SDPA, SDPA+bf16+channels_last, + cuDNN autotuning
  on CUDA, optional ``torch.compile``) at several batch sizes, with the peak GPU memory and the compile time;
* a whole-volume estimate (default 300 slices of 512²): 500-step DDPM on the baseline path vs the fast
  sampler (DPM-Solver++ / DDIM, 20–50 steps) on the fast path. These are **extrapolated** from the
  measured per-step times (a full baseline volume would take hours), and the JSON says so;
* quality: MAE (HU for CT, inside a body mask) of each fast output vs a plain fp32 many-step DDPM sample
  from the same seed-matched noise (the converged reference, 1000 steps) and vs MONAI's default
  ``--baseline-steps`` DDPM (500, the paper's count), next to the MAE between two plain DDPM samples with
  different seeds (the sampler's own variability, i.e. the floor); with ``--image`` also SSIM, PSNR and
  MAE of every sample against the real image. With ``--model`` a trained bundle is used (and
  ``--seg``, optionally ``--image``, give real priors); otherwise random weights on a synthetic phantom,
  and the quality numbers are meaningless (the JSON says so).

``--budget-s`` caps the wall time: each measurement is skipped when its cost, estimated from what was
already measured, would not fit. Results go to ``benchmarks/results/<card>-<date>.json``.

Examples::

    python benchmarks/bench_sampling.py --cpu                 # small network, < 1 min on a laptop CPU
    python benchmarks/bench_sampling.py --budget-s 180        # GPU: paper network at 512², ~3 min
    python benchmarks/bench_sampling.py --model models/ct --seg seg.nii.gz --image ct.nii.gz
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from seg2med_core.device import pick_device  # noqa: E402
from seg2med_core.fast import FastOptions, prepared  # noqa: E402
from seg2med_core.io import write_json  # noqa: E402
from seg2med_core.network import PAPER_NETWORK, PAPER_SCHEDULER, build_network, count_parameters  # noqa: E402
from seg2med_core.sampler import (  # noqa: E402
    SamplerConfig,
    denoise,
    initial_noise,
    make_stepper,
    sample_slices,
    step_generators,
    to_model_space,
)

CPU_NETWORK: dict[str, Any] = dict(
    spatial_dims=2,
    in_channels=2,
    out_channels=1,
    channels=(8, 16, 16),
    attention_levels=(False, False, True),
    num_res_blocks=1,
    num_head_channels=8,
    norm_num_groups=8,
)
HU_PER_UNIT = 2000.0  # CT model space [0, 1] spans the window L0/W2000


class Budget:
    """Wall-clock budget; ``fits(cost)`` says whether an estimated cost still fits."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, cost_s: float) -> bool:
        return cost_s <= self.left()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- inputs --------------------------------------------------------------------------------------


def phantom_priors(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic body-like priors in [0, 1] (CT window) and their body masks: an ellipse with organs."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    priors = np.zeros((n, size, size), np.float32)
    bodies = np.zeros((n, size, size), bool)
    for k in range(n):
        s = 1.0 + 0.05 * k
        body = (xx / (0.42 * s)) ** 2 + (yy / (0.30 * s)) ** 2 <= 1
        img = np.where(body, 0.52, 0.0)  # soft tissue ≈ 40 HU, outside -1000 HU
        img[((xx + 0.15) / 0.1) ** 2 + (yy / 0.12) ** 2 <= 1] = 0.53  # liver-ish
        img[((xx - 0.15) / 0.08) ** 2 + (yy / 0.08) ** 2 <= 1] = 0.25  # lung-ish
        img[(xx / 0.04) ** 2 + ((yy - 0.2) / 0.04) ** 2 <= 1] = 0.85  # vertebra-ish
        priors[k], bodies[k] = img, body
    return priors, bodies


def real_priors(args: argparse.Namespace, meta: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Priors, body masks and (with ``--image``) real slices in [0, 1]: the ``n`` slices with the most body."""
    import SimpleITK as sitk

    from seg2med_core import io as sio
    from seg2med_core.preprocess import (
        SliceGrid,
        body_mask_from_image,
        body_mask_from_segmentation,
        normalise_ct,
        normalise_mr,
    )
    from seg2med_core.prior import normalise_prior, prior_image

    seg = sio.read_segmentation(args.seg)
    image = sio.read_image(args.image) if args.image else None
    # the body contour as the pipeline takes it: from the real image when there is one, else from the labels
    body = body_mask_from_image(image, meta.modality) if image is not None else body_mask_from_segmentation(seg)
    prior = prior_image(seg, meta.modality, sequence=meta.sequence, body=body)
    prior01 = normalise_prior(sitk.GetArrayFromImage(prior), meta.modality, meta.sequence).astype(np.float32)
    grid = SliceGrid.from_image(seg.image, spacing_xy=meta.spacing_xy, size=meta.image_size)
    priors = grid.forward_array(prior01, interpolator="linear")
    bodies = grid.forward_array(body.astype(np.float32), interpolator="nearest") > 0.5
    area = bodies.reshape(len(bodies), -1).mean(axis=1)
    chosen = np.argsort(-area)[:n]  # the slices with the most body
    real = None
    if image is not None:
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        real01 = normalise_ct(arr) if meta.modality == "ct" else normalise_mr(arr)[0]
        real = grid.forward_array(real01.astype(np.float32), interpolator="linear")[chosen]
    return np.clip(priors[chosen], 0, 1), bodies[chosen], real


# --- measurements --------------------------------------------------------------------------------


def time_variant(
    network: torch.nn.Module,
    scheduler: dict[str, Any],
    device: torch.device,
    options: FastOptions,
    kind: str,
    batch: int,
    size: int,
    steps: int,
) -> dict[str, Any]:
    """ms per slice-step of ``steps`` denoising steps (after one warm-up step) at ``batch``."""
    priors, _ = phantom_priors(batch, size)
    cond = to_model_space(torch.from_numpy(priors)).unsqueeze(1).to(device)
    noise = initial_noise(0, range(batch), (size, size)).to(device)
    row: dict[str, Any] = {"variant": options.describe(), "sampler": kind, "batch": batch, "steps_timed": steps,
                           "options": asdict(options)}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with prepared(network, device, options) as predict, torch.inference_mode():
            warm = make_stepper(scheduler, SamplerConfig(kind=kind, steps=1))
            sync(device)
            t0 = time.perf_counter()
            denoise(predict, noise, cond, warm, step_generators(warm, device, 0, range(batch)))
            sync(device)
            first = time.perf_counter() - t0
            stepper = make_stepper(scheduler, SamplerConfig(kind=kind, steps=steps))
            gens = step_generators(stepper, device, 0, range(batch))
            sync(device)
            t0 = time.perf_counter()
            denoise(predict, noise, cond, stepper, gens)
            sync(device)
            elapsed = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        row["oom"] = True
        return row
    per_step = elapsed / steps
    row.update(
        ms_per_slice_step=1000 * per_step / batch,
        ms_per_batch_step=1000 * per_step,
        first_step_s=first,
        compile_s=max(0.0, first - per_step) if options.compile else None,
        peak_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    )
    return row


def run_timings(args: argparse.Namespace, network: torch.nn.Module, scheduler: dict[str, Any], device: torch.device,
                budget: Budget) -> list[dict[str, Any]]:
    fast = FastOptions.for_device(device, fast=True)
    variants: list[tuple[FastOptions, str]] = [(FastOptions(), "ddpm"), (FastOptions(sdpa=True), "ddpm")]
    if fast.cudnn_benchmark:  # measure cuDNN autotuning as a lever of its own
        variants.append((fast.with_(cudnn_benchmark=False), args.fast_sampler))
    if fast != FastOptions(sdpa=True):
        variants.append((fast, args.fast_sampler))
    rows: list[dict[str, Any]] = []
    for options, kind in variants:
        last_ms: float | None = None
        for batch in args.batch_sizes:
            estimate = 0.0 if last_ms is None else last_ms * batch * (args.timing_steps + 1) / 1000 * 1.5
            if not budget.fits(estimate + args.reserve_s):
                rows.append({"variant": options.describe(), "sampler": kind, "batch": batch, "skipped": "budget"})
                continue
            row = time_variant(network, scheduler, device, options, kind, batch, args.size, args.timing_steps)
            rows.append(row)
            log(row)
            if row.get("oom"):
                break
            last_ms = row["ms_per_slice_step"]
    if args.compile and device.type == "cuda":
        best = best_row(rows, fast.describe())
        batch = best["batch"] if best else args.batch_sizes[0]
        for mode in args.compile_modes:
            options = fast.with_(compile=True, compile_mode=mode)
            if not budget.fits(args.compile_estimate_s + args.reserve_s):
                rows.append({"variant": options.describe(), "batch": batch, "skipped": "budget"})
                continue
            row = time_variant(network, scheduler, device, options, args.fast_sampler, batch, args.size, args.timing_steps)
            rows.append(row)
            log(row)
    return rows


def best_row(rows: list[dict[str, Any]], variant: str | None = None, prefix: str | None = None) -> dict[str, Any] | None:
    ok = [
        r for r in rows
        if "ms_per_slice_step" in r
        and (variant is None or r["variant"] == variant)
        and (prefix is None or r["variant"].startswith(prefix))
    ]
    return min(ok, key=lambda r: r["ms_per_slice_step"]) if ok else None


def nearest_row(rows: list[dict[str, Any]], keep: Any, batch: int) -> dict[str, Any] | None:
    """The measured row (passing ``keep``) whose batch size is nearest to ``batch``."""
    ok = [r for r in rows if "ms_per_slice_step" in r and keep(r)]
    return min(ok, key=lambda r: (abs(r["batch"] - batch), r["ms_per_slice_step"])) if ok else None


def volume_estimate(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    base = best_row(rows, "plain-fp32")
    fast_rows = [r for r in rows if "ms_per_slice_step" in r and r["variant"] != "plain-fp32"]
    fast = min(fast_rows, key=lambda r: r["ms_per_slice_step"]) if fast_rows else None
    if base is None or fast is None:
        return {"skipped": "not enough timings"}
    n, base_steps = args.volume_slices, args.baseline_steps
    base_s = base["ms_per_slice_step"] * base_steps * n / 1000
    out: dict[str, Any] = {
        "extrapolated": True,
        "note": "whole-volume times are extrapolated from the measured ms per slice-step at the best batch size",
        "slices": n,
        "image_size": args.size,
        "baseline": {"variant": base["variant"], "batch": base["batch"], "sampler": "ddpm", "steps": base_steps,
                     "seconds": base_s},
        "baseline_fast_kernels": {"variant": fast["variant"], "batch": fast["batch"], "sampler": "ddpm",
                                  "steps": base_steps, "seconds": fast["ms_per_slice_step"] * base_steps * n / 1000},
        "fast": [],
    }
    for steps in args.fast_steps:
        seconds = fast["ms_per_slice_step"] * steps * n / 1000 + (fast.get("compile_s") or 0.0)
        out["fast"].append({"variant": fast["variant"], "batch": fast["batch"], "sampler": args.fast_sampler,
                            "steps": steps, "seconds": seconds, "speedup_vs_baseline": base_s / seconds})
    out["kernel_speedup"] = base["ms_per_slice_step"] / fast["ms_per_slice_step"]
    return out


def run_volume(args: argparse.Namespace, network: torch.nn.Module, scheduler: dict[str, Any], device: torch.device,
               budget: Budget, rows: list[dict[str, Any]], volume: dict[str, Any]) -> dict[str, Any]:
    """A real whole-volume run (not extrapolated): ``--volume-slices`` phantom slices through ``sample_slices``
    with the fast sampler at the fewest ``--fast-steps`` on the fastest measured variant, compile included."""
    fast_rows = [r for r in rows if "ms_per_slice_step" in r and r["variant"] != "plain-fp32"]
    if not fast_rows or "baseline" not in volume:
        return {"skipped": "no fast timing"}
    row = min(fast_rows, key=lambda r: r["ms_per_slice_step"])
    n, steps = args.volume_slices, min(args.fast_steps)
    estimate = row["ms_per_slice_step"] * steps * n / 1000 + (row.get("compile_s") or 0.0)
    if not budget.fits(estimate * 1.3 + args.reserve_s):
        return {"skipped": "budget", "estimated_s": estimate}
    options = FastOptions(**row["options"])
    priors, _ = phantom_priors(n, args.size)
    config = SamplerConfig(kind=args.fast_sampler, steps=steps, seed=args.seed, batch_size=row["batch"])
    sync(device)
    t0 = time.perf_counter()
    sample_slices(network, scheduler, priors, config, device, options=options)
    sync(device)
    seconds = time.perf_counter() - t0
    baseline = volume["baseline"]["seconds"] * n / volume["slices"]
    result = {"measured": True, "slices": n, "image_size": args.size, "sampler": args.fast_sampler, "steps": steps,
              "variant": row["variant"], "batch": row["batch"], "seconds": seconds,
              "includes": "compilation for this batch shape (cached on disk from the timing run when compiled)",
              "baseline_extrapolated_s": baseline, "speedup_vs_baseline": baseline / seconds}
    log({"volume_measured": result})
    return result


def run_quality(args: argparse.Namespace, network: torch.nn.Module, scheduler: dict[str, Any], device: torch.device,
                budget: Budget, rows: list[dict[str, Any]], meta: Any, trained: bool) -> dict[str, Any]:
    n = args.quality_slices
    base = nearest_row(rows, lambda r: r["variant"] == "plain-fp32", n)
    fast_row = nearest_row(rows, lambda r: r["variant"] != "plain-fp32" and "compile" not in r["variant"], n)
    base_ms = base["ms_per_slice_step"] if base else 1.0
    fast_ms = fast_row["ms_per_slice_step"] if fast_row else base_ms
    ref_steps = args.reference_steps

    def cost(slices: int, steps: int) -> float:  # references + fast-kernel DDPM + fast samplers
        plain_steps = steps + args.baseline_steps
        return (base_ms * plain_steps + fast_ms * (steps + sum(args.fast_steps))) * slices / 1000 + args.reserve_s

    # keep the reference a full DDPM as long as possible: first sample fewer slices, then fewer steps
    while not budget.fits(cost(n, ref_steps)) and n > 1:
        n -= 1
    while not budget.fits(cost(n, ref_steps)) and ref_steps > 100:
        ref_steps //= 2
    if args.seg and meta is not None:
        priors, bodies, real = real_priors(args, meta, n)
        source = f"segmentation {args.seg}"
    else:
        priors, bodies = phantom_priors(n, args.size)
        real, source = None, "synthetic phantom"
    modality = getattr(meta, "modality", "ct")
    scale, unit = (HU_PER_UNIT, "HU") if modality == "ct" else (1.0, "model units [0,1]")
    result: dict[str, Any] = {
        "meaningful": trained,
        "note": ("" if trained else "random network weights: these quality numbers are meaningless (plumbing check only). ")
        + ("" if ref_steps >= 1000 else "reference DDPM has fewer steps than training steps (MONAI's DDPM step then "
           "leaves residual noise), so it is not a converged reference. "),
        "source": source,
        "slices": n,
        "unit": unit,
        "reference": {"variant": "plain-fp32", "sampler": "ddpm", "steps": ref_steps},
        "baseline": {"variant": "plain-fp32", "sampler": "ddpm", "steps": args.baseline_steps,
                     "what": "MONAI's default path with the paper's step count, same seed-matched noise; MONAI's "
                             "DDPM step with fewer steps than training uses the one-step posterior, so some "
                             "noise is left in it"},
        "comparisons": [],
    }
    plain, fastopt = FastOptions(), FastOptions.for_device(device, fast=True)

    def sample(kind: str, steps: int, options: FastOptions, seed: int) -> np.ndarray:
        cfg = SamplerConfig(kind=kind, steps=steps, seed=seed, batch_size=n)
        return sample_slices(network, scheduler, priors, cfg, device, options=options)

    def mae(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b)[bodies].mean() * scale)

    def vs_real(out: np.ndarray) -> dict[str, float]:
        """SSIM, PSNR and MAE against the real image inside the body (``metrics.image_metrics``)."""
        if real is None:
            return {}
        from seg2med_core.metrics import CT_RANGE, image_metrics  # scikit-image: only needed with --image

        natural = (lambda a: a * HU_PER_UNIT + CT_RANGE[0]) if modality == "ct" else (lambda a: a)
        found = image_metrics(natural(out), natural(real), bodies, modality)
        return {"mae_vs_real": found["mae"], "ssim_vs_real": found["ssim"], "psnr_vs_real": found["psnr"]}

    t0 = time.perf_counter()
    reference = sample("ddpm", ref_steps, plain, args.seed)
    result["reference"]["seconds"] = time.perf_counter() - t0
    # re-calibrate the cost estimates with what the reference really took (includes the scheduler steps)
    scale_cost = max(1.0, result["reference"]["seconds"] / max(1e-9, base_ms * n * ref_steps / 1000))
    base_ms, fast_ms = base_ms * scale_cost, fast_ms * scale_cost
    result["reference"].update(vs_real(reference))
    baseline = None
    if budget.fits(base_ms * n * args.baseline_steps / 1000 * 1.2 + 1):
        t0 = time.perf_counter()
        baseline = sample("ddpm", args.baseline_steps, plain, args.seed)
        result["baseline"].update(seconds=time.perf_counter() - t0, **vs_real(baseline))
        result["baseline"][f"mae_vs_reference_{slug(unit)}"] = mae(baseline, reference)
    else:
        result["baseline"]["skipped"] = "budget"
    candidates = [("ddpm", ref_steps, fastopt, args.seed)] + [(args.fast_sampler, s, fastopt, args.seed) for s in args.fast_steps]
    candidates.append(("ddpm", ref_steps, plain, args.seed + 1))  # variability floor: another seed
    for kind, steps, options, seed in candidates:
        step_ms = base_ms if options == plain else fast_ms
        if not budget.fits(step_ms * n * steps / 1000 * 1.2 + 1):
            result["comparisons"].append({"sampler": kind, "steps": steps, "variant": options.describe(), "skipped": "budget"})
            continue
        t0 = time.perf_counter()
        out = sample(kind, steps, options, seed)
        entry = {
            "sampler": kind, "steps": steps, "variant": options.describe(), "seed": seed,
            "seconds": time.perf_counter() - t0,
            f"mae_vs_reference_{slug(unit)}": mae(out, reference),
        }
        if baseline is not None:
            entry[f"mae_vs_baseline_{slug(unit)}"] = mae(out, baseline)
        if seed != args.seed:
            entry["what"] = "plain DDPM with a different seed: the natural sample-to-sample variability"
        entry.update(vs_real(out))
        result["comparisons"].append(entry)
        log(entry)
    return result


# --- main ----------------------------------------------------------------------------------------


def log(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="small network at 64² on the CPU (< 1 min)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu (default auto; --cpu forces cpu)")
    p.add_argument("--model", help="trained bundle folder (default: random weights)")
    p.add_argument("--seg", help="segmentation for real priors (with --model)")
    p.add_argument("--image", help="real image matching --seg (adds MAE vs the real image)")
    p.add_argument("--size", type=int, help="slice size (default 512, --cpu 64; a bundle's image_size)")
    p.add_argument("--batch-sizes", help="comma list (default 1,8,16,32; --cpu 1,4)")
    p.add_argument("--timing-steps", type=int, help="denoising steps timed per measurement (default 5; --cpu 3)")
    p.add_argument("--fast-sampler", default="dpmpp_2m", choices=("dpmpp_2m", "ddim"))
    p.add_argument("--fast-steps", help="fast-sampler step counts (default 20,50; --cpu 10,20)")
    p.add_argument("--baseline-steps", type=int, default=500, help="DDPM steps of the baseline (paper: 500)")
    p.add_argument("--reference-steps", type=int, help="plain DDPM steps of the quality reference (default 1000; --cpu 200)")
    p.add_argument("--quality-slices", type=int, help="slices sampled for the quality comparison (default 2; --cpu 1)")
    p.add_argument("--volume-slices", type=int, default=300)
    p.add_argument("--no-volume-run", dest="volume_run", action="store_false",
                   help="skip the real whole-volume run (fast sampler, fewest --fast-steps, fastest variant)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile (CUDA only anyway)")
    p.add_argument("--compile-modes", default="default", help="comma list: default, reduce-overhead (CUDA graphs), ...")
    p.add_argument("--compile-estimate-s", type=float, default=75.0, help="assumed compile time for budgeting")
    p.add_argument("--budget-s", type=float, help="wall-clock budget for all measurements (default 170; --cpu 45)")
    p.add_argument("--reserve-s", type=float, default=5.0, help="budget kept free for writing results")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; --cpu 1, which "
                   "avoids oversubscription slow-downs for a network this small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result JSON path (default <out-dir>/<card>-<date>.json)")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"), help="folder for the result JSON")
    args = p.parse_args(argv)
    cpu = args.cpu
    args.size = args.size or (64 if cpu else 512)
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if cpu else "1,8,16,32")).split(",")]
    args.timing_steps = args.timing_steps or (2 if cpu else 5)
    args.fast_steps = [int(s) for s in (args.fast_steps or ("10,20" if cpu else "20,50")).split(",")]
    args.reference_steps = args.reference_steps or (200 if cpu else 1000)
    args.quality_slices = args.quality_slices or (1 if cpu else 2)
    args.budget_s = args.budget_s or (45.0 if cpu else 170.0)
    args.threads = args.threads or (1 if cpu else None)
    args.compile_modes = [m.strip() for m in args.compile_modes.split(",") if m.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device("cpu" if args.cpu else args.device)
    meta = None
    if args.model:
        from seg2med_core.bundle import load_bundle

        bundle = load_bundle(args.model, device)
        network, meta = bundle.network, bundle.metadata
        if meta.model_kind != "diffusion":
            raise SystemExit(f"bench_sampling: {args.model} is a {meta.model_kind} model; this benchmarks diffusion sampling")
        scheduler = meta.scheduler or dict(PAPER_SCHEDULER)
        args.size = meta.image_size
        config, trained = meta.network, True
    else:
        config = CPU_NETWORK if args.cpu else PAPER_NETWORK
        torch.manual_seed(args.seed)
        network = build_network(config)
        with torch.no_grad():  # MONAI zero-initialises the output conv; perturb it so samples are non-trivial
            for param in network.out.parameters():
                param.normal_(0.0, 0.02)
        network = network.to(device)
        scheduler, trained = dict(PAPER_SCHEDULER), False
    card = card_name(device)
    print(f"# {card}, torch {torch.__version__}, size {args.size}, budget {args.budget_s:.0f} s", flush=True)
    rows = run_timings(args, network, scheduler, device, budget)
    volume = volume_estimate(args, rows)
    measured = run_volume(args, network, scheduler, device, budget, rows, volume) if args.volume_run else {"skipped": "--no-volume-run"}
    quality = run_quality(args, network, scheduler, device, budget, rows, meta, trained)
    now = _dt.datetime.now(_dt.timezone.utc)
    result = {
        "card": card,
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "date": now.isoformat(timespec="seconds"),
        "network": {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                    "parameters": count_parameters(network), "trained": trained, "bundle": args.model},
        "scheduler": scheduler,
        "args": {k: v for k, v in vars(args).items()},
        "fast_options": asdict(FastOptions.for_device(device)),
        "timings": rows,
        "volume_estimate": volume,
        "volume_measured": measured,
        "quality": quality,
        "wall_s": budget.elapsed(),
    }
    out = Path(args.out) if args.out else Path(args.out_dir) / f"{slug(card)}-{now:%Y%m%d-%H%M}.json"
    write_json(out, result, default=str)
    print_summary(result)
    print(f"# wrote {out} ({budget.elapsed():.0f} s)", flush=True)
    return 0


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{'variant':38s} {'sampler':9s} {'batch':>5s} {'ms/slice-step':>14s} {'peak MiB':>9s} {'compile s':>9s}")
    for r in result["timings"]:
        if "ms_per_slice_step" in r:
            peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-"
            comp = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else "-"
            print(f"{r['variant']:38s} {r['sampler']:9s} {r['batch']:5d} {r['ms_per_slice_step']:14.2f} {peak:>9s} {comp:>9s}")
        else:
            print(f"{r['variant']:38s} {r.get('sampler', ''):9s} {r['batch']:5d} {'OOM' if r.get('oom') else r.get('skipped', '?'):>14s}")
    v = result["volume_estimate"]
    if "baseline" in v:
        b = v["baseline"]
        print(f"\nvolume {v['slices']}x{v['image_size']}² (extrapolated): baseline {b['sampler']} {b['steps']} steps "
              f"{b['variant']} = {b['seconds'] / 60:.1f} min; same sampler on fast kernels = "
              f"{v['baseline_fast_kernels']['seconds'] / 60:.1f} min (kernel speed-up {v['kernel_speedup']:.2f}x)")
        for f in v["fast"]:
            print(f"  {f['sampler']} {f['steps']} steps {f['variant']} = {f['seconds']:.0f} s "
                  f"({f['speedup_vs_baseline']:.0f}x faster)")
    m = result.get("volume_measured", {})
    if m.get("measured"):
        print(f"  measured: {m['slices']} slices, {m['sampler']} {m['steps']} steps, {m['variant']} batch {m['batch']} = "
              f"{m['seconds']:.1f} s ({m['speedup_vs_baseline']:.0f}x faster than the extrapolated baseline)")
    q = result["quality"]
    base = q.get("baseline", {})
    print(f"\nquality ({q['source']}; MAE in {q['unit']}): vs plain DDPM {q['reference']['steps']} steps (reference) "
          f"and vs MONAI-default DDPM {base.get('steps', '?')} steps (baseline)"
          + ("" if q["meaningful"] else " -- RANDOM WEIGHTS, MEANINGLESS"))

    mae_digits = 2 if q["unit"] == "HU" else 4

    def value(entry: dict[str, Any], prefix: str, digits: int = mae_digits) -> str:
        key = next((k for k in entry if k.startswith(prefix)), None)
        return "-" if key is None or entry[key] is None else f"{entry[key]:.{digits}f}"

    print(f"  {'sampler':9s} {'steps':>5s} {'variant':38s} {'vs ref':>7s} {'vs base':>7s} {'MAE real':>8s} {'SSIM real':>9s}")
    rows = [dict(q["reference"], what="reference"), dict(base, what="baseline: MONAI default")] + q["comparisons"]
    for c in rows:
        if "skipped" in c:
            print(f"  {c['sampler']:9s} {c['steps']:5d} {c['variant']:38s} {c['skipped']}")
            continue
        print(f"  {c['sampler']:9s} {c['steps']:5d} {c['variant']:38s} {value(c, 'mae_vs_reference'):>7s} "
              f"{value(c, 'mae_vs_baseline'):>7s} {value(c, 'mae_vs_real'):>8s} {value(c, 'ssim_vs_real', 3):>9s}"
              + (f"  ({c['what'][:60]})" if "what" in c else ""))


if __name__ == "__main__":
    raise SystemExit(main())
