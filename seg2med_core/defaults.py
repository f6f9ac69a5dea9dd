"""Sampling defaults shared by the command line, the demo, evaluation and the Slicer module (no torch import).

DPM-Solver++(2M) with 20 steps: with the shipped demo CT model it is 2.2 HU (mean, inside the body) from
a seed-matched 1000-step DDPM sample, where DDIM needs 50 steps for 1.9 HU and 20 steps give 2.8 HU
(``benchmarks/results/cpu-2026-11-26-demo-ct-*.json``). The paper samples 500–1000 DDPM steps.
"""

from __future__ import annotations

#: Samplers ``SamplerConfig.kind`` accepts.
SAMPLER_KINDS: tuple[str, ...] = ("dpmpp_2m", "ddim", "ddpm")
#: Sampler used when none is given.
DEFAULT_SAMPLER = "dpmpp_2m"
#: Denoising steps used when none are given (every device).
DEFAULT_STEPS = 20
#: Training-free coupling across slices while sampling (``SamplerConfig.slice_coupling``, x0 blending with
#: the adjacent slices) and the correlation of adjacent slices' starting noise (``noise_correlation``).
DEFAULT_SLICE_COUPLING = 0.0
DEFAULT_NOISE_CORRELATION = 0.0
#: Class anchoring after sampling (``pipeline.synthesize(anchor=...)``, ``--anchor``): within each labelled
#: class inside the body the synthetic intensities are shifted by ``-anchor x median(output - prior)``, so the
#: tissue table / ``--phase`` preset sets each class's level and the model only its texture. 0 = off.
#: 0.5: leave-one-patient-out with the demo recipe (``benchmarks/results/cpu-2026-12-03-lopo-*.json``), on the
#: T11-L3 overlap it raised SSIM and lowered MAE in both directions (as did 1), while the whole-volume MAE rose by
#: 1.8 and 0.2 HU (at 1: 4.6 and 3.3 HU); organs within 40 HU of the real: 4 and 5 of 5 (at 1: 5 and 5; raw 4 and 4).
DEFAULT_ANCHOR = 0.5
