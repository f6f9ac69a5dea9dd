"""The fast inference path: SDPA attention, bf16 autocast, channels_last, optional torch.compile.

Every lever is a flag in :class:`FastOptions`; none changes the weights, and each computes the same
function as MONAI's default fp32 eager path up to floating-point rounding (tested on CPU in
``Testing/test_fast.py``). Defaults (:meth:`FastOptions.for_device`):

* CUDA, ``fast=True``: SDPA attention + bf16 autocast (fp16 where bf16 is unsupported) + channels_last
  + cuDNN autotuning (``torch.backends.cudnn.benchmark`` while sampling: cuDNN times its convolution
  algorithms once per input shape and keeps the fastest; sampling calls the network hundreds of times
  with one shape, and the last batch is padded to it, so the one-off tuning is paid once per volume).
* CPU, ``fast=True``: SDPA attention + channels_last (exact, fp32), plus bf16 autocast where the CPU
  runs bf16 natively (Intel AMX or AVX-512 BF16, see :func:`cpu_bf16_native`; ``SEG2MED_CPU_BF16=0|1``
  overrides). Measured on 2 cores of a Sapphire-Rapids-class Xeon with the demo CT model at 128²,
  batch 8: 29.1 ms per slice-step with SDPA only, 24.0 with channels_last, 11.8 with bf16 as well.
  SDPA matters even here: the paper network attends over 64×64 = 4096 tokens at 512², and MONAI's
  plain attention materialises an 8×4096×4096 fp32 matrix (512 MB) per slice.
* MPS, ``fast=True``: SDPA attention only.
* ``compile=True`` wraps the network in ``torch.compile`` (first call compiles for tens of seconds;
  later calls with the same batch shape reuse it). Inductor caches compiled graphs and kernels on disk;
  seg2med points that cache at a persistent folder (:func:`compile_cache_dir`, default
  ``~/.cache/seg2med/torchinductor`` instead of PyTorch's ``/tmp/torchinductor_<user>``, which a reboot
  empties), so only the first run on a machine pays the full compile time.
  ``compile_mode="reduce-overhead"`` adds CUDA graphs.

:func:`prepared` applies the options for the duration of a ``with`` block and restores the network
afterwards, so a loaded bundle is never left modified.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks.selfattention import SABlock

from seg2med_core.errors import Seg2MedError

#: ``torch.compile`` modes that may be requested (``None`` = PyTorch's default mode).
COMPILE_MODES: tuple[str | None, ...] = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Environment variable forcing bf16 autocast on the CPU on (``1``) or off (``0``); unset = detect.
CPU_BF16_ENV = "SEG2MED_CPU_BF16"
#: PyTorch inductor's cache folder variable; seg2med sets it (when unset) before compiling.
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
#: Held during a first (compiling) call, so threads (one per device, see ``sharding``) compile one at a time.
_COMPILE_LOCK = threading.Lock()

Predictor = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class FastOptions:
    """Which speed levers to apply; all off = MONAI's default fp32 eager path."""

    sdpa: bool = False
    autocast: str | None = None  # "bf16" | "fp16" | None
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cudnn_benchmark: bool = False  # CUDA only: let cuDNN autotune convolution algorithms per shape

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise Seg2MedError(f"autocast dtype {self.autocast!r} must be one of {sorted(AUTOCAST_DTYPES)} or None")
        if self.compile_mode not in COMPILE_MODES:
            raise Seg2MedError(f"compile mode {self.compile_mode!r} must be one of {COMPILE_MODES}")
        if self.compile_mode == "default":  # one spelling of PyTorch's default mode, so equal options compare equal
            object.__setattr__(self, "compile_mode", None)

    @classmethod
    def for_device(
        cls, device: torch.device | str, fast: bool = True, compile: bool = False, compile_mode: str | None = None
    ) -> FastOptions:
        """Default levers for ``device`` (see the module docstring); ``fast=False`` gives the plain path."""
        device = torch.device(device)
        if not fast:
            return cls(compile=compile, compile_mode=compile_mode)
        autocast: str | None = None
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            autocast = "bf16" if torch.cuda.get_device_capability(index)[0] >= 8 else "fp16"
        elif device.type == "cpu" and cpu_bf16_native():
            autocast = "bf16"
        return cls(sdpa=True, autocast=autocast, channels_last=device.type in ("cuda", "cpu"), compile=compile,
                   compile_mode=compile_mode, cudnn_benchmark=device.type == "cuda")

    def describe(self) -> str:
        """Short label for logs and benchmark tables, e.g. ``sdpa+bf16+channels_last``."""
        parts = [
            name
            for name, on in (("sdpa", self.sdpa), (self.autocast or "", bool(self.autocast)), ("channels_last", self.channels_last),
                             ("cudnn_benchmark", self.cudnn_benchmark))
            if on
        ]
        if self.compile:
            parts.append(f"compile({self.compile_mode or 'default'})")
        return "+".join(parts) or "plain-fp32"

    def with_(self, **changes: Any) -> FastOptions:
        """A copy with some levers changed."""
        return replace(self, **changes)


def cpu_bf16_native() -> bool:
    """True when this CPU computes bf16 convolutions in hardware (AMX tiles or AVX-512 BF16 via oneDNN).

    Elsewhere bf16 is emulated and slower than fp32, so the CPU fast path stays fp32. The environment
    variable ``SEG2MED_CPU_BF16`` (``0``/``1``) overrides the detection.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced:
        raise Seg2MedError(f"{CPU_BF16_ENV}={forced!r} must be 0 or 1 (or unset to detect the CPU)")
    cpu = getattr(torch, "cpu", None)
    hardware = any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    return hardware and onednn


_CUDNN_LOCK = threading.Lock()
_cudnn_users = {"count": 0, "previous": False}


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = True`` for the duration of the block, then the user's setting back.

    The flag is process-wide, so nested or concurrent blocks (one thread per GPU, see ``sharding``) are
    counted and the last one out restores the value seen by the first one in.
    """
    if not enabled:
        yield
        return
    with _CUDNN_LOCK:
        if _cudnn_users["count"] == 0:
            _cudnn_users["previous"] = torch.backends.cudnn.benchmark
        _cudnn_users["count"] += 1
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        with _CUDNN_LOCK:
            _cudnn_users["count"] -= 1
            if _cudnn_users["count"] == 0:
                torch.backends.cudnn.benchmark = _cudnn_users["previous"]


def compile_cache_dir() -> Path:
    """Folder for ``torch.compile``'s on-disk cache: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/seg2med/torchinductor`` (``~/.cache/seg2med/torchinductor``)."""
    given = os.environ.get(COMPILE_CACHE_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "seg2med" / "torchinductor"


def use_persistent_compile_cache() -> Path:
    """Point inductor at :func:`compile_cache_dir` (unless the user chose a folder) and create it.

    Must run before the first compilation in the process: inductor reads the variable once.
    """
    folder = compile_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Seg2MedError(f"torch.compile cache folder '{folder}' cannot be created ({exc}); set {COMPILE_CACHE_ENV}") from exc
    os.environ.setdefault(COMPILE_CACHE_ENV, str(folder))
    return folder


def is_compile_error(exc: BaseException) -> bool:
    """True for errors of ``torch.compile`` itself (dynamo/inductor, e.g. no Triton or C++ compiler), not of
    the computation (out of memory, shape errors), which must surface as they would without compiling."""
    from torch._dynamo.exc import TorchDynamoException  # imported only when needed: it costs about a second

    return isinstance(exc, TorchDynamoException)


def attention_blocks(network: torch.nn.Module) -> list[SABlock]:
    """MONAI self-attention blocks inside ``network`` (the ones SDPA can replace)."""
    return [m for m in network.modules() if isinstance(m, SABlock)]


def set_sdpa(network: torch.nn.Module, enabled: bool) -> dict[SABlock, bool]:
    """Switch MONAI attention blocks to PyTorch's ``scaled_dot_product_attention`` (same weights).

    MONAI reads ``use_flash_attention`` at forward time, so this is a flag flip, not a rebuild.
    Blocks that cannot use SDPA (saved attention maps, relative position embeddings, dropout) are
    left alone. Returns the previous flag of every block that was changed (to restore it).
    """
    previous: dict[SABlock, bool] = {}
    for block in attention_blocks(network):
        if enabled and (block.save_attn or block.rel_positional_embedding is not None or block.dropout_rate > 0):
            continue
        previous[block] = bool(block.use_flash_attention)
        block.use_flash_attention = enabled
    return previous


def takes_timesteps(network: torch.nn.Module) -> bool:
    """True for denoisers called as ``network(x, timesteps)`` (``DiffusionModelUNet`` and test doubles)."""
    return "timesteps" in inspect.signature(network.forward).parameters


@contextlib.contextmanager
def prepared(network: torch.nn.Module, device: torch.device | str, options: FastOptions) -> Iterator[Predictor]:
    """Apply ``options`` to ``network`` (already on ``device``) and yield ``predict(x, timesteps)``.

    ``predict`` returns float32 output whatever the autocast dtype, so the scheduler maths stays in
    fp32. ``timesteps`` is ignored (may be None) for networks without a timestep input (regression
    models). On exit the attention flags and memory format are restored.
    """
    device = torch.device(device)
    was_training = network.training
    network.eval()
    sdpa_previous = set_sdpa(network, True) if options.sdpa else {}
    if options.channels_last:
        network.to(memory_format=torch.channels_last)
    # state["module"] is the compiled network until its first call fails to compile, then the eager one
    state: dict[str, Any] = {"module": network}
    if options.compile:
        use_persistent_compile_cache()
        state.update(module=torch.compile(network, mode=options.compile_mode, dynamic=False), fresh=True)
    takes_t = takes_timesteps(network)
    autocast_dtype = AUTOCAST_DTYPES[options.autocast] if options.autocast else None

    def forward(x: torch.Tensor, timesteps: torch.Tensor | None) -> torch.Tensor:
        cuda_graphs = state["module"] is not network and options.compile_mode == "reduce-overhead" and device.type == "cuda"
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        ctx = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = state["module"](x, timesteps) if takes_t else state["module"](x)
        # CUDA-graph outputs live in static buffers that the next replay overwrites: copy them out
        return out.float().clone() if cuda_graphs else out.float().contiguous()

    def predict(x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not state.pop("fresh", False):
            return forward(x, timesteps)
        try:  # the first call compiles: a compiler that cannot work here (no Triton, no C++ compiler) is not fatal
            with _COMPILE_LOCK:
                return forward(x, timesteps)
        except Exception as exc:
            if not is_compile_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"torch.compile failed ({first}); sampling continues without compilation", RuntimeWarning,
                          stacklevel=2)
            state["module"] = network
            return forward(x, timesteps)

    try:
        with cudnn_autotuning(options.cudnn_benchmark and device.type == "cuda"):
            yield predict
    finally:
        for block, flag in sdpa_previous.items():
            block.use_flash_attention = flag
        if options.channels_last:
            network.to(memory_format=torch.contiguous_format)
        network.train(was_training)
