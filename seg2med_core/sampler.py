"""The sampling loop: priors in [0, 1] → synthetic slices in [0, 1].

Division of labour: the network only predicts (noise for diffusion models, the image for regression
models), MONAI's scheduler owns the diffusion maths and ``step`` (DPM-Solver++ from
:mod:`seg2med_core.dpm_solver` for ``kind="dpmpp_2m"``), and this module owns the loop: batching,
noise, progress, cancellation and the fast path (:mod:`seg2med_core.fast`).

Reproducibility: every slice has its own random streams seeded from ``(seed, slice_index)`` (initial
noise is drawn on the CPU, so it is identical on every device; DDPM's per-step noise is drawn per
slice on the sampling device), hence a result does not depend on the batch size or on which other
slices are sampled with it.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from seg2med_core.defaults import (
    DEFAULT_NOISE_CORRELATION,
    DEFAULT_SAMPLER,
    DEFAULT_SLICE_COUPLING,
    DEFAULT_STEPS,
    SAMPLER_KINDS,
)
from seg2med_core.device import DeviceSpec, as_device_list, auto_batch_size
from seg2med_core.dpm_solver import SPACINGS, DPMSolverPP2M
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.fast import FastOptions, prepared, takes_timesteps
from seg2med_core.network import build_scheduler

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

#: Automatic ``torch.compile`` from this much work, in slice-steps of 512² (a 256² slice-step counts ¼).
#: Measured on an H100 with the paper network: compiling costs 38 s the first time (the on-disk cache
#: makes later runs cheaper) and saves 12.8 ms per 512² slice-step (18.3 → 5.5 ms), so it pays from about
#: 3000, e.g. a 150-slice volume at 20 steps. A failing compiler falls back to eager (``fast.prepared``).
AUTO_COMPILE_WORK = 3000.0

#: Tolerance for priors slightly outside [0, 1] (interpolation overshoot); they are clipped.
_RANGE_TOLERANCE = 1e-3
_NOISE_STREAM, _STEP_STREAM, _NEGATIVE_NOISE_STREAM = 0, 1, 2
#: Largest accepted ``noise_correlation`` (at 1 every slice would start from the same noise field).
MAX_NOISE_CORRELATION = 0.99
#: Slice indices from here on are padding rows (compiled fixed-shape batches): plain, uncorrelated noise.
_PAD_INDEX = 2**62


@dataclass
class SamplerConfig:
    """How to sample.

    ``kind``: ``"ddpm"`` (the paper: MONAI's DDPM scheduler, ancestral, ``steps`` ≤ training steps;
    with fewer steps than training steps MONAI's DDPM step still uses the one-step posterior, as in
    the paper's 500-step sampling), ``"ddim"`` (deterministic for ``eta=0``; ``eta=1`` is strided
    ancestral DDPM) or ``"dpmpp_2m"`` (DPM-Solver++(2M), deterministic, good at 10–30 steps; the
    default, see :mod:`seg2med_core.defaults`).
    ``seed``: 0 by default, as the command line (the same seed gives the same volume); ``None`` draws a random
    seed. ``batch_size=None`` measures what fits (see
    :func:`seg2med_core.device.auto_batch_size`). ``fast``: the levers of
    :meth:`seg2med_core.fast.FastOptions.for_device` (SDPA + channels_last everywhere but MPS, bf16 on
    CUDA and on CPUs with native bf16); ``compile``: ``torch.compile`` the network (slow first batch);
    ``None`` = automatic: on CUDA with the fast path when the volume is big enough to pay for it
    (:data:`AUTO_COMPILE_WORK`), never on CPU/MPS.

    Training-free coupling across slices (the 2D network sees one slice at a time, so each slice makes its
    own random choices: stripes in coronal/sagittal views). ``slice_coupling`` ``w`` ∈ [0, 1]: at every
    step each slice's x0 prediction is blended with the mean of its adjacent slices' (slice index ± 1) with
    weight ``w · σ_t`` (σ_t = the noise level, so the last steps keep each slice's own detail); all slices
    then advance in lock step. ``noise_correlation`` ρ ∈ [0, 0.99]: the starting noise of adjacent slices
    has correlation ρ (a Gaussian moving average along the slices of per-slice noises, still unit
    variance). Both are deterministic for a seed and independent of batch size and devices; 0 = off (the
    uncoupled result, bit for bit).
    """

    kind: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    seed: int | None = 0
    batch_size: int | None = None
    fast: bool = True
    compile: bool | None = None
    eta: float = 0.0
    compile_mode: str | None = None
    spacing: str = "linspace"  # DPM-Solver++ timestep spacing (seg2med_core.dpm_solver.SPACINGS)
    slice_coupling: float = DEFAULT_SLICE_COUPLING
    noise_correlation: float = DEFAULT_NOISE_CORRELATION

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise Seg2MedError(f"sampler {self.kind!r} is not supported (choose from {', '.join(SAMPLER_KINDS)})")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise Seg2MedError(f"sampling steps must be a positive integer, got {self.steps!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise Seg2MedError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise Seg2MedError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.spacing not in SPACINGS:
            raise Seg2MedError(f"timestep spacing {self.spacing!r} must be one of {', '.join(SPACINGS)}")
        if not 0.0 <= self.eta <= 1.0:
            raise Seg2MedError(f"DDIM eta must be in [0, 1], got {self.eta}")
        if not (isinstance(self.slice_coupling, (int, float)) and 0.0 <= self.slice_coupling <= 1.0):
            raise Seg2MedError(f"slice coupling must be in [0, 1], got {self.slice_coupling!r}")
        if not (isinstance(self.noise_correlation, (int, float)) and 0.0 <= self.noise_correlation <= MAX_NOISE_CORRELATION):
            raise Seg2MedError(f"noise correlation between adjacent slices must be in [0, {MAX_NOISE_CORRELATION}], "
                               f"got {self.noise_correlation!r}")

    def fast_options(self, device: torch.device | str, work: float | None = None) -> FastOptions:
        """The fast-path levers this config selects on ``device`` for ``work`` 512²-equivalent slice-steps
        (``None``: unknown, so no automatic compilation)."""
        compile = self.compile
        if compile is None:
            compile = bool(self.fast and torch.device(device).type == "cuda" and work is not None and work >= AUTO_COMPILE_WORK)
        return FastOptions.for_device(device, fast=self.fast, compile=compile, compile_mode=self.compile_mode)


def to_model_space(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1]: what the networks see (priors, images) and produce."""
    return x01 * 2.0 - 1.0


def from_model_space(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1], clipped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def slice_seed(seed: int, index: int, stream: int = _NOISE_STREAM) -> int:
    """Well-mixed 64-bit seed for one slice's random stream (independent of batching)."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1, dtype=np.uint64)[0])


def _slice_noise(seed: int, index: int, size: tuple[int, int]) -> torch.Tensor:
    """The independent noise field of one slice index (negative indices, neighbours of slice 0, too)."""
    stream = _NOISE_STREAM if index >= 0 else _NEGATIVE_NOISE_STREAM
    gen = torch.Generator().manual_seed(slice_seed(seed, abs(int(index)), stream))
    return torch.randn(size, generator=gen)


def noise_kernel(correlation: float) -> np.ndarray:
    """Weights ``a_j`` (j = -J..J, Σ a_j² = 1) of the moving average along the slices that gives adjacent
    slices' noise the correlation ``Σ a_j a_{j+1}`` = ``correlation`` (Gaussian weights, width solved for)."""
    if correlation <= 0:
        return np.ones(1)

    def kernel(width: float) -> np.ndarray:
        half = max(1, int(math.ceil(4.0 * width)))
        j = np.arange(-half, half + 1, dtype=np.float64)
        a = np.exp(-0.5 * (j / width) ** 2)
        return a / np.sqrt(np.sum(a * a))

    def lag1(width: float) -> float:
        a = kernel(width)
        return float(np.sum(a[:-1] * a[1:]))

    lo, hi = 1e-3, 64.0
    for _ in range(80):  # lag-1 correlation grows monotonically with the width
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if lag1(mid) < correlation else (lo, mid)
    return kernel(hi)


def initial_noise(seed: int, indices: Sequence[int], size: tuple[int, int], correlation: float = 0.0) -> torch.Tensor:
    """Starting noise ``(len(indices), 1, H, W)``, drawn on the CPU per slice (device-independent).

    ``correlation`` > 0: slice ``i`` gets ``Σ_j a_j e_{i+j}`` (:func:`noise_kernel`) of the independent
    per-index fields ``e``, so adjacent slices' noise has that correlation whichever slices are drawn together.
    """
    out = torch.empty(len(indices), 1, *size)
    kernel = noise_kernel(correlation)
    half = len(kernel) // 2
    cache: dict[int, torch.Tensor] = {}

    def field(index: int) -> torch.Tensor:
        if index not in cache:
            cache[index] = _slice_noise(seed, index, size)
        return cache[index]

    for row, index in enumerate(indices):
        index = int(index)
        if half == 0 or index >= _PAD_INDEX:
            out[row, 0] = field(index)
            continue
        acc = torch.zeros(size, dtype=torch.float64)
        for j, a in zip(range(-half, half + 1), kernel):
            acc += float(a) * field(index + j).to(torch.float64)
        out[row, 0] = acc.to(torch.float32)
    return out


class _MonaiStepper:
    """MONAI DDPM/DDIM ``step`` with one generator per slice where the step draws noise."""

    def __init__(self, scheduler: Any, kind: str, eta: float) -> None:
        self.scheduler = scheduler
        self.kind = kind
        self.eta = eta
        self.timesteps: torch.Tensor = scheduler.timesteps

    @property
    def stochastic(self) -> bool:
        return self.kind == "ddpm" or self.eta > 0

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.prediction_type)

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        extra: dict[str, Any] = {"eta": self.eta} if self.kind == "ddim" else {}
        if not self.stochastic:
            return self.scheduler.step(eps, t, x, **extra)[0]
        rows = [
            self.scheduler.step(eps[i : i + 1], t, x[i : i + 1], generator=generators[i], **extra)[0]
            for i in range(x.shape[0])
        ]
        return torch.cat(rows, dim=0)


class _DPMStepper:
    def __init__(self, solver: DPMSolverPP2M) -> None:
        self.solver = solver
        self.timesteps: torch.Tensor = solver.timesteps
        self.stochastic = False
        self.alphas_cumprod: torch.Tensor = solver.alphas_cumprod
        self.prediction_type: str = solver.prediction_type

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        return self.solver.step(eps, t, x)[0]


Stepper = Union[_MonaiStepper, _DPMStepper]


def make_stepper(scheduler_config: dict[str, Any] | None, config: SamplerConfig) -> Stepper:
    """A fresh stepper (scheduler with timesteps set) for one batch; DPM-Solver++ keeps per-batch state."""
    kind = "ddpm" if config.kind == "dpmpp_2m" else config.kind
    scheduler = build_scheduler(scheduler_config or None, kind)
    if config.kind == "dpmpp_2m":
        clip = (float(getattr(scheduler, "clip_sample_values", [-1.0, 1.0])[0]), float(scheduler.clip_sample_values[1]))
        solver = DPMSolverPP2M(scheduler.alphas_cumprod, scheduler.prediction_type, scheduler.clip_sample, clip,
                               spacing=config.spacing)
        solver.set_timesteps(config.steps)
        return _DPMStepper(solver)
    try:
        scheduler.set_timesteps(config.steps)
    except ValueError as exc:
        raise Seg2MedError(f"{config.kind} with {config.steps} steps: {exc}") from exc
    return _MonaiStepper(scheduler, config.kind, config.eta)


def _check_priors(priors: np.ndarray, allow_channels: bool = False) -> np.ndarray:
    arr = np.asarray(priors)
    if arr.ndim != 3 and not (allow_channels and arr.ndim == 4):
        shapes = "(slices, height, width) or (slices, channels, height, width)" if allow_channels else "(slices, height, width)"
        raise Seg2MedError(f"priors must be a {shapes} array, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise Seg2MedError("priors contain NaN or infinite values")
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise Seg2MedError(f"priors must lie in [0, 1] (model space), got values in [{lo:.4g}, {hi:.4g}]")
    return np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)


def resolve_slice_indices(n: int, slice_indices: Sequence[int] | None) -> list[int]:
    """``slice_indices`` as ints (default ``0..n-1``); an error when there is not one per prior."""
    indices = list(range(n)) if slice_indices is None else [int(i) for i in slice_indices]
    if len(indices) != n:
        raise Seg2MedError(f"slice_indices has {len(indices)} entries for {n} priors")
    return indices


def _check_network_input(network: torch.nn.Module, expected: int, what: str) -> None:
    from seg2med_core.device import _in_channels

    found = _in_channels(network)
    if found != expected:
        raise Seg2MedError(f"{what} needs a network with {expected} input channel(s), this one has {found}")


def _resolve_batch_size(
    config: SamplerConfig, network: torch.nn.Module, device: torch.device, options: FastOptions, channels: int, size: int, n: int
) -> int:
    if config.batch_size is not None:
        return max(1, min(config.batch_size, n))
    with prepared(network, device, options.with_(compile=False)) as predict:

        def forward(batch: int) -> None:
            x = torch.zeros(batch, channels, size, size, device=device)
            predict(x, torch.full((batch,), 500, device=device, dtype=torch.long))

        return max(1, min(n, auto_batch_size(network, size, device, forward=forward)))


def sample_slices(
    network: torch.nn.Module,
    scheduler_config: dict[str, Any] | None,
    priors: np.ndarray,
    config: SamplerConfig,
    device: DeviceSpec,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    slice_indices: Sequence[int] | None = None,
    options: FastOptions | None = None,
) -> np.ndarray:
    """Sample one synthetic slice per prior with a conditional diffusion network.

    ``device`` may be a list of devices: the slices are then split over them
    (:func:`seg2med_core.sharding.sample_sharded`), with the same result as on one device.

    ``priors``: ``(N, H, W)`` in [0, 1]; the network sees ``[noisy image, prior]`` in [-1, 1]. 2.5D networks
    (``prior_neighbours`` k > 0, :func:`seg2med_core.network.neighbour_stack`) take ``(N, 2k+1, H, W)``.
    Returns ``(N, H, W)`` float32 in [0, 1]. ``slice_indices`` (default ``0..N-1``) name the slices
    for seeding, so a sub-selection of a volume's slices gets the same noise as the full volume.
    ``options`` overrides the fast-path levers chosen from ``config`` (benchmarks use this).
    Progress is reported once per denoising step per batch; ``cancel`` is checked before each step.
    """
    devices = as_device_list(device)
    if len(devices) > 1:
        from seg2med_core.sharding import sample_sharded  # it imports this module

        return sample_sharded(network, scheduler_config, priors, config, devices, progress, cancel,
                              slice_indices=slice_indices, options=options)
    arr = _check_priors(priors, allow_channels=True)
    if arr.ndim == 3:
        arr = arr[:, None]
    n, channels, height, width = arr.shape
    indices = resolve_slice_indices(n, slice_indices)
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    if not takes_timesteps(network):
        raise Seg2MedError("sample_slices needs a diffusion network (with timesteps); use predict_regression instead")
    _check_network_input(network, 1 + channels, f"diffusion sampling with {channels} prior channel(s)")
    device = devices[0]
    network.to(device)
    opts = options if options is not None else config.fast_options(device, work=n * config.steps * height * width / 512**2)
    batch = _resolve_batch_size(config, network, device, opts, 1 + channels, height, n)
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    if config.slice_coupling > 0:  # neighbours' x0 predictions at every step: all slices in lock step
        return sample_lockstep([network], [device], scheduler_config, arr, indices, config, [opts], batch, seed,
                               progress, cancel)
    n_batches = math.ceil(n / batch)
    total = n_batches * config.steps
    out = np.empty((n, height, width), dtype=np.float32)
    done = 0
    if progress is not None:
        # the first compiled batch compiles for tens of seconds (once per machine, then cached): say so
        progress(0, total, "compiling the network (torch.compile), then sampling" if opts.compile else "sampling")
    with prepared(network, device, opts) as predict, torch.inference_mode():
        for b in range(n_batches):
            rows = list(range(b * batch, min(n, (b + 1) * batch)))
            ids = [indices[r] for r in rows]
            pad = batch - len(rows) if opts.compile else 0  # fixed shapes: no recompiling for the last batch
            # padded rows get seeds of slice indices far beyond any real volume (their output is dropped)
            ids_padded = ids + [2**62 + k for k in range(pad)]
            x = initial_noise(seed, ids_padded, (height, width), config.noise_correlation).to(device)
            cond = to_model_space(torch.from_numpy(priors_padded(arr, rows, pad))).to(device)
            stepper = make_stepper(scheduler_config, config)
            generators = step_generators(stepper, device, seed, ids_padded)

            def on_step() -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total, "sampling")

            x = denoise(predict, x, cond, stepper, generators, cancel=cancel, on_step=on_step)
            out[rows] = from_model_space(x[: len(rows), 0]).float().cpu().numpy()
    return out


def slice_neighbours(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of each row's adjacent slices (slice index - 1 and + 1), -1 where that slice is not sampled."""
    row_of = {int(i): r for r, i in enumerate(indices)}
    before = torch.tensor([row_of.get(int(i) - 1, -1) for i in indices], dtype=torch.long)
    after = torch.tensor([row_of.get(int(i) + 1, -1) for i in indices], dtype=torch.long)
    return before, after


def couple_predictions(
    output: torch.Tensor, x: torch.Tensor, t: int, stepper: Stepper, neighbours: tuple[torch.Tensor, torch.Tensor], weight: float
) -> torch.Tensor:
    """The network ``output`` for all rows with each row's x0 prediction blended towards its neighbours'.

    x0 is recovered from the output according to the scheduler's ``prediction_type`` (epsilon, sample or
    v_prediction) at timestep ``t``; each row's x0 moves towards the mean x0 of its sampled neighbours by
    ``weight · σ_t``; the result is converted back into the same kind of output, so every sampler
    (DDPM, DDIM, DPM-Solver++) takes its normal step with it. Rows without a sampled neighbour are unchanged.
    """
    acp = float(stepper.alphas_cumprod[int(t)])
    alpha, sigma = acp**0.5, (1.0 - acp) ** 0.5
    w = float(weight) * sigma
    if w <= 0:
        return output
    kind = stepper.prediction_type
    if kind == "sample":
        x0 = output
    elif kind == "epsilon":
        x0 = (x - sigma * output) / alpha
    elif kind == "v_prediction":
        x0 = alpha * x - sigma * output
    else:
        raise Seg2MedError(f"slice coupling does not support prediction_type {kind!r}")
    before, after = (n.to(output.device) for n in neighbours)
    has_before = (before >= 0).to(x0.dtype).view(-1, 1, 1, 1)
    has_after = (after >= 0).to(x0.dtype).view(-1, 1, 1, 1)
    count = has_before + has_after
    total = x0[before.clamp(min=0)] * has_before + x0[after.clamp(min=0)] * has_after
    mean = total / count.clamp(min=1.0)
    blended = x0 + (w * (count > 0).to(x0.dtype)) * (mean - x0)
    if kind == "sample":
        return blended
    if kind == "epsilon":
        return (x - alpha * blended) / sigma
    return (alpha * x - blended) / sigma


def sample_lockstep(
    networks: Sequence[torch.nn.Module],
    devices: Sequence[torch.device],
    scheduler_config: dict[str, Any] | None,
    arr: np.ndarray,  # (N, channels, H, W) priors in [0, 1]
    indices: Sequence[int],
    config: SamplerConfig,
    options: Sequence[FastOptions],
    batch: int,
    seed: int,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """All slices advance together, one denoising step at a time, so the step can couple neighbours
    (:func:`couple_predictions`); used when ``config.slice_coupling`` > 0.

    The state (noisy slices, solver history, per-slice generators) lives on ``devices[0]``; the batches
    (the same ones whatever the number of devices) are shared out over ``devices`` (contiguous, one thread
    per device, ``networks[k]`` on ``devices[k]``), so several devices give the one-device result.
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    n, _channels, height, width = arr.shape
    home = devices[0]
    x = initial_noise(seed, indices, (height, width), config.noise_correlation).to(home)
    cond = to_model_space(torch.from_numpy(np.ascontiguousarray(arr))).to(home)
    stepper = make_stepper(scheduler_config, config)
    generators = step_generators(stepper, home, seed, indices)
    neighbours = slice_neighbours(indices)
    batches = [list(range(b * batch, min(n, (b + 1) * batch))) for b in range(math.ceil(n / batch))]
    shares = [chunk.tolist() for chunk in np.array_split(np.arange(len(batches)), len(devices)) if len(chunk)]
    total = len(batches) * config.steps
    done = 0
    lock = threading.Lock()
    if progress is not None:
        progress(0, total, "compiling the network (torch.compile), then sampling" if options[0].compile else "sampling")
    with ExitStack() as stack, torch.inference_mode():
        predicts = [stack.enter_context(prepared(networks[k], devices[k], options[k])) for k in range(len(shares))]
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="seg2med-lockstep")) \
            if len(shares) > 1 else None

        def run_share(k: int, t: int, output: torch.Tensor) -> None:
            with torch.inference_mode():  # thread-local: the worker threads need it too
                predict_share(k, t, output)

        def predict_share(k: int, t: int, output: torch.Tensor) -> None:
            nonlocal done
            for b in shares[k]:
                rows = batches[b]
                lo, hi = rows[0], rows[-1] + 1
                inp = torch.cat([x[lo:hi], cond[lo:hi]], dim=1)
                pad = batch - len(rows) if options[k].compile else 0
                if pad:
                    inp = torch.cat([inp, torch.zeros((pad, *inp.shape[1:]), dtype=inp.dtype, device=inp.device)])
                inp = inp.to(devices[k])
                t_batch = torch.full((inp.shape[0],), int(t), dtype=torch.long, device=devices[k])
                output[lo:hi] = predicts[k](inp, t_batch)[: len(rows)].to(home, dtype=output.dtype)
                with lock:
                    done += 1
                    if progress is not None:
                        progress(done, total, "sampling")

        for t in stepper.timesteps.tolist():
            if cancel is not None and cancel():
                raise Cancelled("sampling cancelled")
            output = torch.empty_like(x)
            if pool is None:
                run_share(0, t, output)
            else:
                for future in [pool.submit(run_share, k, t, output) for k in range(len(shares))]:
                    future.result()
            output = couple_predictions(output, x, int(t), stepper, neighbours, config.slice_coupling)
            x = stepper.step(output, int(t), x, generators)
    return from_model_space(x[:, 0]).float().cpu().numpy()


def step_generators(stepper: Stepper, device: torch.device, seed: int, ids: Sequence[int]) -> list[torch.Generator]:
    """One device generator per slice for steppers that draw noise at every step (else none)."""
    if not stepper.stochastic:
        return []
    return [torch.Generator(device=device).manual_seed(slice_seed(seed, int(i), _STEP_STREAM)) for i in ids]


def denoise(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    cond: torch.Tensor,
    stepper: Stepper,
    generators: list[torch.Generator],
    cancel: CancelFn | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The reverse-diffusion loop for one batch: ``x`` (B,1,H,W) noise → sample, conditioned on ``cond``.

    ``predict(input, timesteps)`` is the (prepared) network; ``stepper.step`` does the scheduler maths.
    """
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for t in stepper.timesteps.tolist():
        if cancel is not None and cancel():
            raise Cancelled("sampling cancelled")
        eps = predict(torch.cat([x, cond], dim=1), t_batch.fill_(int(t)))
        x = stepper.step(eps, int(t), x, generators)
        if on_step is not None:
            on_step()
    return x


def priors_padded(arr: np.ndarray, rows: list[int], pad: int) -> np.ndarray:
    """``arr[rows]`` followed by ``pad`` empty (zero) priors."""
    chosen = arr[rows]
    if pad:
        chosen = np.concatenate([chosen, np.zeros((pad, *arr.shape[1:]), dtype=arr.dtype)], axis=0)
    return np.ascontiguousarray(chosen)


def predict_regression(
    network: torch.nn.Module,
    priors: np.ndarray,
    config: SamplerConfig,
    device: torch.device | str,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    options: FastOptions | None = None,
) -> np.ndarray:
    """One forward pass per batch for ``model_kind="regression"`` bundles (e.g. MONAI AttentionUnet).

    The network maps the prior (1 channel, in [-1, 1]) to the image in [-1, 1]; returns ``(N, H, W)``
    in [0, 1]. ``config`` supplies ``batch_size``/``fast``/``compile`` (steps and seed are unused).
    """
    arr = _check_priors(priors)
    n, height, width = arr.shape
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    _check_network_input(network, 1, "regression prediction")
    device = torch.device(device)
    network.to(device)
    opts = options if options is not None else config.fast_options(device)
    batch = _resolve_batch_size(config, network, device, opts, 1, height, n)
    n_batches = math.ceil(n / batch)
    out = np.empty((n, height, width), dtype=np.float32)
    if progress is not None:
        progress(0, n_batches, "predicting")
    with prepared(network, device, opts) as predict, torch.inference_mode():
        for b in range(n_batches):
            if cancel is not None and cancel():
                raise Cancelled("prediction cancelled")
            rows = list(range(b * batch, min(n, (b + 1) * batch)))
            pad = batch - len(rows) if opts.compile else 0
            x = to_model_space(torch.from_numpy(priors_padded(arr, rows, pad))).unsqueeze(1).to(device)
            y = predict(x, None)
            out[rows] = from_model_space(y[: len(rows), 0]).float().cpu().numpy()
            if progress is not None:
                progress(b + 1, n_batches, "predicting")
    return out
