"""Honest run-time estimate for synthesis: measured seconds per slice per denoising step × slices × steps.

The constants are one forward pass of the paper network (MONAI DiffusionModelUNet, channels
64/128/256/256, attention at the lowest level, 2 input channels) under ``torch.no_grad``, divided by the
batch size. They were measured once and live only here; docs/slicer.md says how to re-measure.
"""

from __future__ import annotations

import math

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


def estimate_seconds(n_slices: int, steps: int, device: str, image_size: int = 256) -> float:
    """Expected wall time of ``synthesize`` for ``n_slices`` axial slices and ``steps`` sampler steps."""
    if n_slices < 1 or steps < 1 or image_size < 1:
        raise ValueError(f"slices, steps and image size must be >= 1, got {n_slices}, {steps}, {image_size}")
    startup = STARTUP_SECONDS.get(device, STARTUP_SECONDS[FALLBACK_DEVICE])
    return startup + seconds_per_slice_step(device, image_size) * n_slices * steps


def format_duration(seconds: float) -> str:
    """'45 s', '3 min', '1 h 20 min' (rounded up: the estimate must not promise too little)."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def describe_estimate(n_slices: int, steps: int, device: str, image_size: int = 256) -> str:
    """One line for the GUI, e.g. '≈ 4 min on cpu (120 slices × 20 steps at 256²)'."""
    seconds = estimate_seconds(n_slices, steps, device, image_size)
    text = f"≈ {format_duration(seconds)} on {device} ({n_slices} slices × {steps} steps at {image_size}²)"
    if device not in SECONDS_PER_SLICE_STEP:
        text += f"; {device} not measured, {FALLBACK_DEVICE} figures used"
    return text
