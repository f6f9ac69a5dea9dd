"""The fast inference path: SDPA attention, bf16 autocast, channels_last, optional torch.compile.

Every lever is a flag in :class:`FastOptions`; none changes the weights, and each computes the same
function as MONAI's default fp32 eager path up to floating-point rounding (tested on CPU in
``Testing/test_fast.py``). Defaults (:meth:`FastOptions.for_device`):

* CUDA, ``fast=True``: SDPA attention + bf16 autocast (fp16 where bf16 is unsupported) + channels_last.
* CPU/MPS, ``fast=True``: SDPA attention only; the arithmetic stays fp32. SDPA matters even here: the
  paper network attends over 64×64 = 4096 tokens at 512², and MONAI's plain attention materialises an
  8×4096×4096 fp32 matrix (512 MB) per slice.
* ``compile=True`` wraps the network in ``torch.compile`` (first call compiles for tens of seconds;
  later calls with the same batch shape reuse it; inductor caches kernels on disk between processes).
  ``compile_mode="reduce-overhead"`` adds CUDA graphs.

:func:`prepared` applies the options for the duration of a ``with`` block and restores the network
afterwards, so a loaded bundle is never left modified.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from monai.networks.blocks.selfattention import SABlock

from seg2med_core.errors import Seg2MedError

#: ``torch.compile`` modes that may be requested (``None`` = PyTorch's default mode).
COMPILE_MODES: tuple[str | None, ...] = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}

Predictor = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class FastOptions:
    """Which speed levers to apply; all off = MONAI's default fp32 eager path."""

    sdpa: bool = False
    autocast: str | None = None  # "bf16" | "fp16" | None
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise Seg2MedError(f"autocast dtype {self.autocast!r} must be one of {sorted(AUTOCAST_DTYPES)} or None")
        if self.compile_mode not in COMPILE_MODES:
            raise Seg2MedError(f"compile mode {self.compile_mode!r} must be one of {COMPILE_MODES}")

    @classmethod
    def for_device(
        cls, device: torch.device | str, fast: bool = True, compile: bool = False, compile_mode: str | None = None
    ) -> FastOptions:
        """Default levers for ``device`` (see the module docstring); ``fast=False`` gives the plain path."""
        device = torch.device(device)
        if not fast:
            return cls(compile=compile, compile_mode=compile_mode)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            bf16 = torch.cuda.get_device_capability(index)[0] >= 8
            return cls(
                sdpa=True,
                autocast="bf16" if bf16 else "fp16",
                channels_last=True,
                compile=compile,
                compile_mode=compile_mode,
            )
        return cls(sdpa=True, compile=compile, compile_mode=compile_mode)

    def describe(self) -> str:
        """Short label for logs and benchmark tables, e.g. ``sdpa+bf16+channels_last``."""
        parts = [
            name
            for name, on in (("sdpa", self.sdpa), (self.autocast or "", bool(self.autocast)), ("channels_last", self.channels_last))
            if on
        ]
        if self.compile:
            parts.append(f"compile({self.compile_mode or 'default'})")
        return "+".join(parts) or "plain-fp32"

    def with_(self, **changes: Any) -> FastOptions:
        """A copy with some levers changed."""
        return replace(self, **changes)


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
    module: Any = network
    if options.compile:
        module = torch.compile(network, mode=options.compile_mode, dynamic=False)
    takes_t = takes_timesteps(network)
    cuda_graphs = options.compile and options.compile_mode == "reduce-overhead" and device.type == "cuda"
    autocast_dtype = AUTOCAST_DTYPES[options.autocast] if options.autocast else None

    def predict(x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (
            torch.autocast(device_type=device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), ctx:
            out = module(x, timesteps) if takes_t else module(x)
        # CUDA-graph outputs live in static buffers that the next replay overwrites: copy them out
        return out.float().clone() if cuda_graphs else out.float().contiguous()

    try:
        yield predict
    finally:
        for block, flag in sdpa_previous.items():
            block.use_flash_attention = flag
        if options.channels_last:
            network.to(memory_format=torch.contiguous_format)
        network.train(was_training)
