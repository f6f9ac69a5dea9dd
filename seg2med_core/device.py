"""Device selection and memory-aware batch sizing.

``pick_device("auto")`` prefers CUDA, then Apple MPS, then the CPU; asking for a device that is not
available is an error rather than a silent fallback. ``auto_batch_size`` measures what one forward
pass really costs on the GPU instead of guessing from parameter counts.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import torch

from seg2med_core.errors import Seg2MedError

#: Batch size used where memory cannot be measured (CPU, MPS): small, so progress stays responsive.
CPU_BATCH_SIZE = 4
#: Fraction of the free GPU memory a batch may use (the rest is headroom for the allocator and others).
SAFETY_FRACTION = 0.8
#: One device, or several to split the slices over (see ``seg2med_core.sharding``).
DeviceSpec = Union[torch.device, str, Sequence[Union[torch.device, str]]]


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises :class:`Seg2MedError` naming the device when it is unknown or not available here.
    """
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise Seg2MedError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Seg2MedError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__})")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise Seg2MedError(f"device {name!r} requested but only {count} CUDA device(s) exist (0..{count - 1})")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise Seg2MedError(f"device {name!r} requested but Apple MPS is not available")
        return device
    raise Seg2MedError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")


def parse_devices(text: str) -> list[torch.device]:
    """``"cuda:0,cuda:1"`` → devices (each checked by :func:`pick_device`); ``"auto"``/``"cpu"`` → one device.

    Raises :class:`Seg2MedError` naming the entry when one is unknown, unavailable or repeated.
    """
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise Seg2MedError(f"device list {text!r} is empty (use e.g. auto, cpu, cuda:0 or cuda:0,cuda:1)")
    devices = [pick_device(name) for name in names]
    seen: set[str] = set()
    for name, device in zip(names, devices):
        if str(device) in seen and device.type != "cpu":
            raise Seg2MedError(f"device {name!r} appears twice in {text!r}")
        seen.add(str(device))
    return devices


def as_device_list(device: DeviceSpec) -> list[torch.device]:
    """One device or a sequence of devices → a non-empty list of ``torch.device``."""
    if isinstance(device, (str, torch.device)):
        return [torch.device(device)]
    devices = [torch.device(d) for d in device]
    if not devices:
        raise Seg2MedError("no device given")
    return devices


def describe_devices(device: DeviceSpec) -> str:
    """``cuda:0`` or ``cuda:0,cuda:1`` for log lines."""
    return ",".join(str(d) for d in as_device_list(device))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@dataclass
class MemoryProbe:
    """How to read device memory; injectable so the batch-size logic is testable without a GPU."""

    reset_peak: Callable[[], None]
    peak_allocated: Callable[[], int]
    allocated: Callable[[], int]
    free_bytes: Callable[[], int]

    @classmethod
    def cuda(cls, device: torch.device) -> MemoryProbe:
        """Probe backed by ``torch.cuda`` memory statistics of ``device``."""

        def free() -> int:
            free_b, _total = torch.cuda.mem_get_info(device)
            # memory the caching allocator holds but does not use is also available to us
            return int(free_b + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))

        return cls(
            reset_peak=lambda: torch.cuda.reset_peak_memory_stats(device),
            peak_allocated=lambda: int(torch.cuda.max_memory_allocated(device)),
            allocated=lambda: int(torch.cuda.memory_allocated(device)),
            free_bytes=free,
        )


@dataclass
class BatchSizeReport:
    """What :func:`measure_batch_size` measured and chose (for logs and the benchmark)."""

    batch_size: int
    bytes_per_slice: float
    free_bytes: int
    budget_bytes: float
    measured: dict[int, int]  # batch size → peak bytes above the baseline, as measured


def measure_batch_size(
    forward: Callable[[int], None],
    probe: MemoryProbe,
    max_batch: int = 64,
    probe_batch: int = 2,
    safety: float = SAFETY_FRACTION,
    max_checks: int = 4,
) -> BatchSizeReport:
    """Choose the largest batch whose *measured* peak memory fits in ``safety`` × free memory.

    ``forward(b)`` runs one forward pass at batch ``b``. The peak at ``probe_batch`` gives a per-slice
    cost; the extrapolated batch is then run and measured itself, and shrunk until its measured peak
    fits, so the result never relies on an unmeasured extrapolation (unless it is ``probe_batch`` or 1).
    """
    if not 0 < safety <= 1:
        raise Seg2MedError(f"memory safety fraction must be in (0, 1], got {safety}")
    max_batch = max(1, int(max_batch))
    measured: dict[int, int] = {}
    free = probe.free_bytes()
    budget = safety * free

    def run(batch: int) -> int | None:
        gc.collect()
        base = probe.allocated()
        probe.reset_peak()
        try:
            forward(batch)
        except torch.cuda.OutOfMemoryError:
            _empty_cache()
            return None
        used = max(0, probe.peak_allocated() - base)
        measured[batch] = used
        return used

    probe_batch = max(1, min(probe_batch, max_batch))
    used = run(probe_batch)
    while used is None or used > budget:
        if probe_batch == 1:
            raise Seg2MedError(
                f"one slice needs more memory than is free on the device ({free / 2**20:.0f} MiB free); "
                "use a smaller model/image size or the CPU"
            )
        probe_batch = max(1, probe_batch // 2)
        used = run(probe_batch)
    per_slice = max(used / probe_batch, 1.0)
    best = probe_batch
    candidate = min(max_batch, max(probe_batch, int(budget // per_slice)))
    for _ in range(max_checks):
        if candidate <= best:
            break
        used_c = run(candidate)
        if used_c is not None and used_c <= budget:
            best = candidate
            break
        # shrink proportionally to the measured overshoot (or halve after an OOM), but stay above best
        shrink = 0.5 if used_c is None else budget / used_c * 0.95
        candidate = max(best, int(math.floor(candidate * shrink)))
    return BatchSizeReport(best, per_slice, free, budget, measured)


def auto_batch_size(
    network: torch.nn.Module,
    image_size: int,
    device: torch.device | str,
    max_batch: int = 64,
    *,
    forward: Callable[[int], None] | None = None,
    probe: MemoryProbe | None = None,
    safety: float = SAFETY_FRACTION,
) -> int:
    """Largest batch of ``image_size``² slices whose measured forward fits the device memory.

    On CUDA one forward at a small batch is measured with ``torch.cuda.max_memory_allocated`` (see
    :func:`measure_batch_size`); elsewhere :data:`CPU_BATCH_SIZE` is returned unless a ``probe`` is
    given. ``forward`` defaults to a plain forward of ``network`` on zeros; pass the real (fast-path)
    predictor so the measurement includes autocast/SDPA savings.
    """
    device = torch.device(device)
    if probe is None:
        if device.type != "cuda":
            return max(1, min(max_batch, CPU_BATCH_SIZE))
        probe = MemoryProbe.cuda(device)
    if forward is None:
        forward = default_forward(network, image_size, device)
    return measure_batch_size(forward, probe, max_batch=max_batch, safety=safety).batch_size


def default_forward(network: torch.nn.Module, image_size: int, device: torch.device) -> Callable[[int], None]:
    """``forward(b)``: one inference pass of ``network`` on a zero batch of ``b`` slices."""
    from seg2med_core.fast import takes_timesteps

    in_channels = _in_channels(network)
    takes_t = takes_timesteps(network)

    def forward(batch: int) -> None:
        x = torch.zeros(batch, in_channels, image_size, image_size, device=device)
        with torch.inference_mode():
            if takes_t:
                network(x, torch.full((batch,), 500, device=device, dtype=torch.long))
            else:
                network(x)
        del x

    return forward


def _in_channels(network: torch.nn.Module) -> int:
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return int(module.in_channels)
    raise Seg2MedError(f"cannot tell the input channels of {type(network).__name__} (no convolution found)")


def _empty_cache() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
