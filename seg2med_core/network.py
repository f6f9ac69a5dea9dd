"""Network and noise-scheduler construction from plain JSON-able config dicts.

The paper's denoiser is MONAI's ``DiffusionModelUNet`` with a 2-channel input (noisy image + prior)
and the noise schedule is MONAI's DDPM/DDIM scheduler. Configs are plain dicts so they can live in a
bundle's ``metadata.json`` and round-trip through JSON (tuples come back as lists; both are accepted).

A network config may carry an optional ``"class"`` key naming the MONAI network class (default
``DiffusionModelUNet``); regression baselines such as ``AttentionUnet`` use the same mechanism.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from monai.networks import nets as monai_nets
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from seg2med_core.errors import Seg2MedError

#: The paper's denoiser: channels (64,128,256,256), 2 res blocks per level, attention at the last level
#: with 8 heads of 32 channels (256 / 32), input = noisy image + prior.
PAPER_NETWORK: dict[str, Any] = dict(
    spatial_dims=2,
    in_channels=2,
    out_channels=1,
    channels=(64, 128, 256, 256),
    attention_levels=(False, False, False, True),
    num_res_blocks=2,
    num_head_channels=32,
)

#: MONAI's default DDPM schedule (1000 training steps, linear betas 1e-4..2e-2, epsilon prediction).
PAPER_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    schedule="linear_beta",
    beta_start=1e-4,
    beta_end=2e-2,
    prediction_type="epsilon",
    clip_sample=True,
)

#: MONAI network classes a config may name (an allow-list: configs come from files).
NETWORK_CLASSES: tuple[str, ...] = ("DiffusionModelUNet", "AttentionUnet", "UNet", "BasicUNet")
DEFAULT_CLASS = "DiffusionModelUNet"

SCHEDULER_KINDS: tuple[str, ...] = ("ddpm", "ddim")
_COMMON_SCHEDULER_KEYS = {
    "num_train_timesteps",
    "schedule",
    "prediction_type",
    "clip_sample",
    "clip_sample_min",
    "clip_sample_max",
    # schedule-function arguments
    "beta_start",
    "beta_end",
    "sig_range",
}
_KIND_ONLY_KEYS = {"ddpm": {"variance_type"}, "ddim": {"set_alpha_to_one", "steps_offset"}}


def network_class_name(config: dict[str, Any]) -> str:
    """The MONAI class a network config builds (``DiffusionModelUNet`` when the config names none)."""
    name = str(config.get("class", DEFAULT_CLASS))
    if name not in NETWORK_CLASSES:
        raise Seg2MedError(f"network class {name!r} is not supported (choose from {', '.join(NETWORK_CLASSES)})")
    return name


def is_diffusion_config(config: dict[str, Any]) -> bool:
    """True when the config builds a ``DiffusionModelUNet`` (a denoiser taking timesteps)."""
    return network_class_name(config) == DEFAULT_CLASS


def to_json_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with tuples turned into lists, i.e. exactly what JSON gives back."""

    def convert(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        return value

    return convert(dict(config))


def build_network(config: dict[str, Any], **overrides: Any) -> torch.nn.Module:
    """Build the MONAI network described by ``config`` (e.g. :data:`PAPER_NETWORK`), in eval mode.

    ``overrides`` replace config entries without changing the stored config, e.g.
    ``use_flash_attention=True`` for inference with PyTorch's SDPA kernels (same weights).
    Unknown keys raise :class:`Seg2MedError` naming the key and the accepted ones.
    """
    if not isinstance(config, dict):
        raise Seg2MedError(f"network config must be a dict, got {type(config).__name__}")
    name = network_class_name(config)
    cls = getattr(monai_nets, name)
    kwargs = {k: v for k, v in {**config, **overrides}.items() if k != "class"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise Seg2MedError(
            f"network config has unknown key(s) {unknown} for {name} (accepted: {', '.join(sorted(accepted))})"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        network = cls(**kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise Seg2MedError(f"invalid {name} config {to_json_config(config)}: {exc}") from exc
    return network.eval()


def build_scheduler(config: dict[str, Any] | None = None, kind: str = "ddpm") -> DDPMScheduler | DDIMScheduler:
    """Build MONAI's DDPM or DDIM scheduler from a scheduler config (default :data:`PAPER_SCHEDULER`).

    Keys that belong only to the other kind (``variance_type`` for DDPM, ``set_alpha_to_one`` and
    ``steps_offset`` for DDIM) are ignored, so one stored config serves both samplers.
    """
    if kind not in SCHEDULER_KINDS:
        raise Seg2MedError(f"scheduler kind {kind!r} is not supported (choose from {', '.join(SCHEDULER_KINDS)})")
    config = dict(PAPER_SCHEDULER if config is None else config)
    known = _COMMON_SCHEDULER_KEYS | set().union(*_KIND_ONLY_KEYS.values())
    unknown = sorted(set(config) - known)
    if unknown:
        raise Seg2MedError(f"scheduler config has unknown key(s) {unknown} (accepted: {', '.join(sorted(known))})")
    kwargs = {k: v for k, v in config.items() if k in _COMMON_SCHEDULER_KEYS | _KIND_ONLY_KEYS[kind]}
    cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise Seg2MedError(f"invalid {kind} scheduler config {config}: {exc}") from exc


def count_parameters(network: torch.nn.Module) -> int:
    """Number of parameters (for ``bundle info`` and benchmark reports)."""
    return sum(p.numel() for p in network.parameters())
