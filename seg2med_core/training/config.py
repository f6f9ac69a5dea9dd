"""Training configuration: one dataclass, loadable from JSON, with the paper's settings as defaults.

The paper (Sec. III) trains the 2-channel DDPM with Adam (lr 2e-4, betas 0.9/0.999) and an MSE
noise-prediction loss on MONAI's DiffusionModelUNet with channels (64, 128, 256, 256). Everything that
changes with the data or hardware (image size, spacing, batch size, how long to train) is a field here,
so a run is fully described by its ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg2med_core.errors import Seg2MedError
from seg2med_core.io import read_json
from seg2med_core.network import PAPER_NETWORK, PAPER_SCHEDULER, to_json_config

MODEL_KINDS = ("diffusion", "regression")
MODALITIES = ("ct", "mr")

#: The paper's supervised baseline: MONAI AttentionUnet (Oktay et al.) regressing the image from the prior.
ATTENTION_UNET: dict[str, Any] = {
    "class": "AttentionUnet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": (32, 64, 128, 256),
    "strides": (2, 2, 2),
}


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data; JSON keys are the field names."""

    modality: str = "ct"
    sequence: str | None = None
    label_set: str | None = None
    model_kind: str = "diffusion"
    name: str = ""
    # geometry of the 2D slices the network sees
    spacing_xy: float = 1.0
    image_size: int = 512
    min_body_fraction: float = 0.02
    # network and noise schedule (MONAI DiffusionModelUNet / DDPMScheduler configs)
    network: dict[str, Any] = field(default_factory=lambda: to_json_config(PAPER_NETWORK))
    scheduler: dict[str, Any] = field(default_factory=lambda: to_json_config(PAPER_SCHEDULER))
    # optimisation (paper: Adam 2e-4, betas (0.9, 0.999), MSE on the noise)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    loss: str | None = None  # None: "mse" for diffusion (paper), "l1" for the regression baseline
    batch_size: int = 8
    max_steps: int | None = None
    epochs: int | None = 100
    max_minutes: float | None = None
    mixed_precision: str = "auto"
    augment: bool = False
    # prior randomisation (SynthSeg-style; see dataset.PriorRandomiser): the prior of each class is drawn
    # around the case's own measured median (jitter: HU for CT, relative for MR); with probability
    # shift_probability the target and prior of each class are shifted together by U(-shift, shift) HU (CT)
    # or, for MR with random_sequences, set to the levels of a random MR sequence
    prior_randomisation: bool = False
    prior_jitter: float = 0.0
    intensity_shift_hu: float = 0.0
    shift_probability: float = 0.5
    random_sequences: bool = False
    # train on random crop_size² windows of the image_size² slices (fully convolutional network; sampling
    # uses whole slices): finer spacing for the same cost per step
    crop_size: int | None = None
    seed: int = 0
    # hold-out: cases with split "val"/"test" are never trained on; without them a contiguous block of
    # axial slices (this fraction, centred at holdout_position of the volume) is held out per case
    holdout_fraction: float = 0.0
    holdout_position: float = 0.5
    # validation / logging / checkpoints (in optimiser steps; 0 disables)
    val_every: int = 500
    val_slices: int = 4
    val_steps: int = 20
    log_every: int = 10
    checkpoint_every: int = 500
    bundle_from: str = "best"

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`Seg2MedError` naming the first bad value."""
        checks: list[tuple[bool, str]] = [
            (self.modality in MODALITIES, f"modality must be one of {MODALITIES}, got {self.modality!r}"),
            (self.model_kind in MODEL_KINDS, f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}"),
            (self.image_size >= 16, f"image_size must be at least 16, got {self.image_size}"),
            (self.spacing_xy > 0, f"spacing_xy must be positive, got {self.spacing_xy}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.loss in (None, "mse", "l1"), f"loss must be 'mse' or 'l1', got {self.loss!r}"),
            (self.mixed_precision in ("auto", "bf16", "none"), f"mixed_precision must be auto, bf16 or none, got {self.mixed_precision!r}"),
            (0.0 <= self.holdout_fraction < 1.0, f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}"),
            (0.0 <= self.holdout_position <= 1.0, f"holdout_position must be in [0, 1], got {self.holdout_position}"),
            (self.bundle_from in ("best", "last"), f"bundle_from must be 'best' or 'last', got {self.bundle_from!r}"),
            (0.0 <= self.min_body_fraction < 1.0, f"min_body_fraction must be in [0, 1), got {self.min_body_fraction}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be at least 1, got {self.max_steps}"),
            (self.epochs is None or self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be positive, got {self.max_minutes}"),
            (self.val_steps >= 1, f"val_steps must be at least 1, got {self.val_steps}"),
            (self.prior_jitter >= 0, f"prior_jitter must be >= 0, got {self.prior_jitter}"),
            (self.intensity_shift_hu >= 0, f"intensity_shift_hu must be >= 0, got {self.intensity_shift_hu}"),
            (0.0 <= self.shift_probability <= 1.0, f"shift_probability must be in [0, 1], got {self.shift_probability}"),
            (not self.random_sequences or self.modality == "mr", "random_sequences is for MR models only"),
            (self.crop_size is None or (16 <= self.crop_size <= self.image_size and self.crop_size % 8 == 0),
             f"crop_size must be a multiple of 8 between 16 and image_size {self.image_size}, got {self.crop_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise Seg2MedError(message)
        from seg2med_core.network import conditioning

        neighbours, residual = conditioning(self.network)
        if (neighbours or residual) and self.model_kind != "diffusion":
            raise Seg2MedError("prior_neighbours / prior_residual are for diffusion models")
        if residual and self.scheduler.get("prediction_type") != "sample":
            raise Seg2MedError(
                f"prior_residual needs the scheduler's prediction_type 'sample' (the network predicts the image), "
                f"got {self.scheduler.get('prediction_type')!r}"
            )
        if self.max_steps is None and self.epochs is None and self.max_minutes is None:
            raise Seg2MedError("training needs a limit: set max_steps, epochs or max_minutes")

    def to_dict(self) -> dict[str, Any]:
        return to_json_config(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise Seg2MedError(f"{source} has unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise Seg2MedError(f"{source} is invalid: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        data = read_json(path, "training config")
        if not isinstance(data, dict):
            raise Seg2MedError(f"training config '{path}' must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=f"training config '{path}'")

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with the non-None ``overrides`` applied (command-line flags win over the file)."""
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(values, source="training settings")

    def default_network_for_kind(self) -> None:
        """Switch to the AttentionUnet baseline network when a regression run still has the DDPM network."""
        if self.model_kind == "regression" and self.network.get("class", "DiffusionModelUNet") == "DiffusionModelUNet":
            self.network = to_json_config(ATTENTION_UNET)

    @property
    def effective_loss(self) -> str:
        """The loss actually used: the configured one, else MSE (diffusion) / L1 (regression)."""
        if self.loss is not None:
            return self.loss
        return "mse" if self.model_kind == "diffusion" else "l1"
