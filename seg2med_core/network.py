"""Network and noise-scheduler construction from plain JSON-able config dicts.

The paper's denoiser is MONAI's ``DiffusionModelUNet`` with a 2-channel input (noisy image + prior)
and the noise schedule is MONAI's DDPM/DDIM scheduler. Configs are plain dicts so they can live in a
bundle's ``metadata.json`` and round-trip through JSON (tuples come back as lists; both are accepted).

A network config may carry an optional ``"class"`` key naming the MONAI network class (default
``DiffusionModelUNet``); regression baselines such as ``AttentionUnet`` use the same mechanism.

Conditioning keys (seg2med's own, stripped before MONAI sees the config, so they round-trip through a
bundle's ``metadata.json``):

* ``"prior_neighbours": k`` (default 0) — 2.5D: the denoiser's input is ``[x_t, prior(z-k), …, prior(z),
  …, prior(z+k)]`` (neighbouring prior slices of the same volume, the edge slice repeated at the volume's
  ends), so ``in_channels`` must be ``2 + 2k``. :func:`neighbour_stack` builds that input.
* ``"prior_residual": true`` (default false) — the network predicts the *correction* to the prior: its
  output is added to the centre prior channel (:class:`PriorResidual`). With MONAI's zero-initialised
  output layer an untrained network returns the prior itself, so too little training degrades towards
  the prior, not below it. Needs ``prediction_type: "sample"`` (the output is the clean image).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seg2med_core.errors import Seg2MedError

if TYPE_CHECKING:  # MONAI is imported when a network is built: reading configs stays cheap
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

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


#: seg2med conditioning keys of a network config (not MONAI arguments).
CONDITIONING_KEYS: tuple[str, ...] = ("prior_neighbours", "prior_residual")


def conditioning(config: dict[str, Any]) -> tuple[int, bool]:
    """``(prior_neighbours, prior_residual)`` of a network config (``(0, False)`` for older configs)."""
    k = config.get("prior_neighbours", 0)
    residual = config.get("prior_residual", False)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise Seg2MedError(f"network config: prior_neighbours must be a non-negative integer, got {k!r}")
    if not isinstance(residual, bool):
        raise Seg2MedError(f"network config: prior_residual must be true or false, got {residual!r}")
    return k, residual


def prior_channels(config: dict[str, Any]) -> int:
    """How many prior channels the network takes (``2k + 1``)."""
    return 2 * conditioning(config)[0] + 1


def neighbour_stack(priors: np.ndarray, neighbours: int, rows: Any = None) -> np.ndarray:
    """2.5D conditioning: for each slice ``z`` of ``priors`` (N, H, W) (or only the slices ``rows``) the
    stack ``priors[z-k … z+k]`` as (len(rows), 2k+1, H, W); indices beyond the volume repeat its first/last
    slice (edge replication, as a real volume's end has no further anatomy to show)."""
    arr = np.asarray(priors)
    if arr.ndim != 3:
        raise Seg2MedError(f"priors must be a (slices, height, width) array, got shape {arr.shape}")
    n = arr.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    offsets = np.arange(-neighbours, neighbours + 1)
    index = np.clip(rows[:, None] + offsets[None, :], 0, max(n - 1, 0))
    return arr[index]


class PriorResidual(torch.nn.Module):
    """Wraps a denoiser so that it predicts the correction to the prior: ``net(x) + x[:, centre]``.

    ``centre`` is the input channel of the slice's own prior (``1 + k`` for ``[x_t, k neighbours below, the
    slice, k above]``). State-dict keys keep the inner network's names under ``net.``.
    """

    def __init__(self, net: torch.nn.Module, centre: int) -> None:
        super().__init__()
        self.net = net
        self.centre = int(centre)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: Any = None, class_labels: Any = None) -> torch.Tensor:
        out = self.net(x, timesteps=timesteps, context=context, class_labels=class_labels)
        return out + x[:, self.centre : self.centre + 1].to(out.dtype)


def build_network(config: dict[str, Any], **overrides: Any) -> torch.nn.Module:
    """Build the MONAI network described by ``config`` (e.g. :data:`PAPER_NETWORK`), in eval mode.

    ``overrides`` replace config entries without changing the stored config, e.g.
    ``use_flash_attention=True`` for inference with PyTorch's SDPA kernels (same weights).
    Unknown keys raise :class:`Seg2MedError` naming the key and the accepted ones.
    """
    if not isinstance(config, dict):
        raise Seg2MedError(f"network config must be a dict, got {type(config).__name__}")
    from monai.networks import nets as monai_nets

    name = network_class_name(config)
    neighbours, residual = conditioning(config)
    cls = getattr(monai_nets, name)
    kwargs = {k: v for k, v in {**config, **overrides}.items() if k != "class" and k not in CONDITIONING_KEYS}
    if (neighbours or residual) and name != DEFAULT_CLASS:
        raise Seg2MedError(f"prior_neighbours / prior_residual need a {DEFAULT_CLASS} network, not {name}")
    if name == DEFAULT_CLASS and (neighbours or residual) and kwargs.get("in_channels") != 2 + 2 * neighbours:
        raise Seg2MedError(
            f"network config: in_channels must be {2 + 2 * neighbours} (noisy image + {2 * neighbours + 1} prior "
            f"slices for prior_neighbours={neighbours}), got {kwargs.get('in_channels')}"
        )
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
    if residual:
        network = PriorResidual(network, centre=1 + neighbours)
    return network.eval()


def build_scheduler(config: dict[str, Any] | None = None, kind: str = "ddpm") -> DDPMScheduler | DDIMScheduler:
    """Build MONAI's DDPM or DDIM scheduler from a scheduler config (default :data:`PAPER_SCHEDULER`).

    Keys that belong only to the other kind (``variance_type`` for DDPM, ``set_alpha_to_one`` and
    ``steps_offset`` for DDIM) are ignored, so one stored config serves both samplers.
    """
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

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
