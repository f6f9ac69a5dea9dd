"""What a synthetic image can be compared against: the paper's baselines and trained bundles.

Every method implements :class:`Method`: given a case's segmentation, its real image and the body mask
to synthesise inside, return the synthetic volume in the image's own (z, y, x) voxel grid, in *metric
units*: HU for CT, model space [0, 1] for MR (the same units :func:`seg2med_core.pipeline.compare_to_real`
uses).

* :class:`PriorBaseline` — the prior image itself (no network; ``seg2med evaluate --baseline prior``).
* :class:`BundleMethod` — a trained bundle: the DDPM (paper) or a regression model such as the
  AttentionUnet baseline (``seg2med train --baseline attention-unet``), via :func:`pipeline.synthesize`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import SimpleITK as sitk
import torch

from seg2med_core.errors import Seg2MedError

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]
BASELINES = ("prior",)
TRAINABLE_BASELINES = ("attention-unet",)


class Method(Protocol):
    name: str
    modality: str

    def predict(
        self, seg, image: sitk.Image, body: np.ndarray, progress: ProgressFn | None, cancel: CancelFn | None
    ) -> np.ndarray: ...


class PriorBaseline:
    """The simulated prior (tissue table values inside the body) as the "synthetic" image."""

    def __init__(self, modality: str, sequence: str | None = None, tissue_table: str | None = None) -> None:
        if modality not in ("ct", "mr"):
            raise Seg2MedError(f"the prior baseline needs --modality ct or mr, got {modality!r}")
        self.name = "prior"
        self.modality = modality
        self.sequence = sequence
        self.tissue_table = tissue_table

    def predict(self, seg, image, body, progress=None, cancel=None) -> np.ndarray:
        from seg2med_core.prior import normalise_prior, prior_image

        prior = sitk.GetArrayFromImage(prior_image(seg, self.modality, sequence=self.sequence, body=body, table_path=self.tissue_table))
        if self.modality == "ct":
            return prior.astype(np.float32)
        return normalise_prior(prior, "mr", self.sequence).astype(np.float32)


class BundleMethod:
    """A trained bundle applied with the synthesis pipeline (same code path as ``seg2med synthesize``)."""

    def __init__(self, bundle, sampler, device: torch.device, tissue_table: str | None = None, name: str | None = None) -> None:
        self.bundle = bundle
        self.sampler = sampler
        self.device = device
        self.tissue_table = tissue_table
        self.modality = bundle.metadata.modality
        self.name = name or bundle.metadata.name

    def predict(self, seg, image, body, progress=None, cancel=None) -> np.ndarray:
        from seg2med_core.pipeline import MR_OUTPUT_SCALE, synthesize

        result = synthesize(
            seg,
            self.bundle,
            body=body,
            sampler=self.sampler,
            device=self.device,
            tissue_table=self.tissue_table,
            progress=progress,
            cancel=cancel,
        )
        arr = sitk.GetArrayFromImage(result.image).astype(np.float32)
        return arr if self.modality == "ct" else arr / np.float32(MR_OUTPUT_SCALE)


def load_bundle_method(model: str | Path, sampler, device: torch.device, tissue_table: str | None = None) -> BundleMethod:
    """A bundle folder or registry name as a :class:`BundleMethod`."""
    from seg2med_core.registry import resolve_bundle

    return BundleMethod(resolve_bundle(str(model), device=device), sampler, device, tissue_table)
