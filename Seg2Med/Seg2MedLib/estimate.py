"""Honest run-time estimate for synthesis: measured seconds per slice per denoising step × slices × steps.

The constants are one forward pass of the paper network (MONAI DiffusionModelUNet, channels
64/128/256/256, attention at the lowest level, 2 input channels) under ``torch.no_grad``, divided by the
batch size. They were measured once and live only here; benchmarks/bench_sampling.py re-measures them (--model BUNDLE for a given network).
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
from pathlib import Path

#: device → {image size: seconds per slice-step}.
#: cuda: NVIDIA H100 80GB, torch 2.11, bf16 autocast, batch 64/32/64/8 (128/256/256/512 px).
#: cpu: shared 2-core x86 VM, torch 2.13 float32, batch 4 (128 px) / 2 (256 px); a 16-core desktop is faster.
SECONDS_PER_SLICE_STEP: dict[str, dict[int, float]] = {
    "cuda": {128: 0.00087, 256: 0.0037, 512: 0.0222},
    "cpu": {128: 0.356, 256: 2.05},
}
#: Fixed cost: starting Python, importing torch and MONAI, loading the bundle, reading/writing volumes.
STARTUP_SECONDS: dict[str, float] = {"cuda": 15.0, "cpu": 10.0}
#: Devices without a measurement use this device's figures, and the description says so.
FALLBACK_DEVICE = "cpu"


def seconds_per_slice_step(device: str, image_size: int) -> float:
    """Interpolated (in pixel count) between measured sizes; beyond them scaled with the pixel count."""
    table = SECONDS_PER_SLICE_STEP.get(device, SECONDS_PER_SLICE_STEP[FALLBACK_DEVICE])
    sizes = sorted(table)
    pixels = float(image_size) ** 2
    if image_size <= sizes[0]:
        return table[sizes[0]] * pixels / sizes[0] ** 2
    if image_size >= sizes[-1]:
        return table[sizes[-1]] * pixels / sizes[-1] ** 2
    for lo, hi in zip(sizes, sizes[1:]):
        if lo <= image_size <= hi:
            w = (pixels - lo**2) / (hi**2 - lo**2)
            return table[lo] * (1 - w) + table[hi] * w
    raise AssertionError("unreachable")


def estimate_seconds(
    n_slices: int, steps: int, device: str, image_size: int = 256, measured: dict[str, float] | None = None
) -> float:
    """Expected wall time of ``synthesize`` for ``n_slices`` axial slices and ``steps`` sampler steps.

    ``measured`` (from :func:`model_timing`) holds the bundle's own seconds per slice-step per device; it
    wins over the paper-network constants, which overestimate small networks by far.
    """
    if n_slices < 1 or steps < 1 or image_size < 1:
        raise ValueError(f"slices, steps and image size must be >= 1, got {n_slices}, {steps}, {image_size}")
    startup = STARTUP_SECONDS.get(device, STARTUP_SECONDS[FALLBACK_DEVICE])
    per_step = (measured or {}).get(device) or seconds_per_slice_step(device, image_size)
    return startup + per_step * n_slices * steps


def format_duration(seconds: float) -> str:
    """'45 s', '3 min', '1 h 20 min' (rounded up: the estimate must not promise too little)."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def describe_estimate(
    n_slices: int, steps: int, device: str, image_size: int = 256, measured: dict[str, float] | None = None
) -> str:
    """One line for the GUI, e.g. '≈ 4 min on cpu (120 slices × 20 steps at 256²)'."""
    seconds = estimate_seconds(n_slices, steps, device, image_size, measured)
    text = f"≈ {format_duration(seconds)} on {device} ({n_slices} slices × {steps} steps at {image_size}²)"
    if (measured or {}).get(device):
        text += "; timing measured for this model"
    elif device not in SECONDS_PER_SLICE_STEP:
        text += f"; {device} not measured, {FALLBACK_DEVICE} figures used"
    return text


def guess_auto_device() -> tuple[str, str]:
    """(device, reason) that ``--device auto`` will most likely pick, *without* importing torch into Slicer.

    torch is asked only when something already imported it; otherwise an NVIDIA driver (``nvidia-smi`` on the
    PATH) means CUDA and Apple silicon means MPS. The reason goes into the estimate text, so a wrong guess is
    visible to the user.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return "cuda", "torch sees a GPU"
        except Exception:  # noqa: BLE001  (a broken CUDA set-up must not break the estimate)
            pass
        return "cpu", "torch sees no GPU"
    if shutil.which("nvidia-smi"):
        return "cuda", "NVIDIA driver found"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps", "Apple silicon"
    return "cpu", "no GPU driver found"


def _bundle_metadata(bundle_dir: str | Path | None) -> dict:
    """A local bundle's ``metadata.json`` as plain JSON (no torch); ``{}`` when absent or unreadable."""
    if bundle_dir is None:
        return {}
    try:
        meta = json.loads((Path(bundle_dir) / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def model_image_size(bundle_dir: str | Path | None, default: int = 256) -> int:
    """``image_size`` from a local bundle's ``metadata.json``; ``default`` otherwise."""
    try:
        size = int(_bundle_metadata(bundle_dir).get("image_size", default))
    except (ValueError, TypeError):
        return default
    return size if size > 0 else default


def model_timing(bundle_dir: str | Path | None) -> dict[str, float]:
    """Seconds per slice-step measured for this bundle, per device type, from its ``metadata.json``
    (``metrics["seconds_per_slice_step"]``, e.g. ``{"cpu": 0.03, "cuda": 0.0007}``); empty when absent."""
    try:
        timing = _bundle_metadata(bundle_dir).get("metrics", {}).get("seconds_per_slice_step", {})
        return {str(k): float(v) for k, v in timing.items() if float(v) > 0}
    except (ValueError, TypeError, AttributeError):
        return {}
