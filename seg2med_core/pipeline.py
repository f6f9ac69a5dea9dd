"""Synthesis pipeline: segmentation (+ optional real image) → prior → 2D slices → sampler → volume.

The pipeline owns the order of operations and the geometry; the sampler owns the denoising loop and the
bundle owns the network. Every output is returned in exactly the segmentation's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from seg2med_core import labels as labels_mod
from seg2med_core.bundle import Bundle, check_modality
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.io import Segmentation, check_same_geometry
from seg2med_core.preprocess import (
    SliceGrid,
    body_mask_from_image,
    body_mask_from_segmentation,
    denormalise_ct,
    normalise_ct,
    normalise_mr,
)
from seg2med_core.prior import normalise_prior, prior_image
from seg2med_core.sampler import SamplerConfig, predict_regression, sample_slices

ProgressFn = Any  # Callable[[int, int, str], None] | None
CancelFn = Any  # Callable[[], bool] | None

#: Intensity scale of synthetic MR volumes when no real MR is given: model space [0, 1] × this value.
MR_OUTPUT_SCALE = 1000.0
#: Slices whose body area is below this fraction of the slice are not sampled (left as background).
MIN_BODY_FRACTION = 0.002

MR_LABEL_SETS = ("total_mr",)
CT_LABEL_SETS = ("total", "total_v1", "total_v3")


@dataclass
class SynthesisResult:
    """Synthetic volume (HU for CT, arbitrary units for MR) and what it was made from."""

    image: sitk.Image
    prior: sitk.Image
    body: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    slices_sampled: int = 0


def segmentation_modality(seg: Segmentation) -> str:
    """``"mr"`` for ``total_mr`` label sets, ``"ct"`` otherwise."""
    return "mr" if seg.label_set in MR_LABEL_SETS else "ct"


def _body_mask(seg: Segmentation, image: sitk.Image | None, image_modality: str | None) -> np.ndarray:
    if image is not None:
        return body_mask_from_image(image, image_modality or segmentation_modality(seg))
    return body_mask_from_segmentation(sitk.GetArrayFromImage(seg.image), seg.image.GetSpacing())


def normalise_image(image: sitk.Image, modality: str) -> np.ndarray:
    """Real image → model space [0, 1] (CT window L0/W2000; MR p10–p90 of the volume)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if modality == "ct":
        return normalise_ct(arr)
    return normalise_mr(arr)[0]


def synthesize(
    seg: Segmentation,
    bundle: Bundle,
    *,
    image: sitk.Image | None = None,
    image_modality: str | None = None,
    body: np.ndarray | None = None,
    sampler: SamplerConfig | None = None,
    device: torch.device | str = "cpu",
    tissue_table: str | Path | None = None,
    progress: ProgressFn = None,
    cancel: CancelFn = None,
) -> SynthesisResult:
    """Synthesise a volume of the bundle's modality from ``seg``.

    ``image`` is the real image the segmentation came from (optional): it gives the body contour and, when it
    has the bundle's modality, the reference for ``metrics``. ``body`` overrides the contour (bool array in
    the segmentation's (z, y, x) order).
    """
    meta = bundle.metadata
    modality = meta.modality
    seg_modality = segmentation_modality(seg)
    if seg_modality != modality:
        raise Seg2MedError(
            f"segmentation label set '{seg.label_set}' is for {seg_modality.upper()} but model '{meta.name}' makes "
            f"{modality.upper()}: convert the labels first (seg2med convert --to {modality})"
        )
    if image is not None:
        check_same_geometry(seg.image, image, "segmentation", "image")
    if body is None:
        body = _body_mask(seg, image, image_modality)
    body = np.asarray(body, dtype=bool)
    if body.shape != sitk.GetArrayViewFromImage(seg.image).shape:
        raise Seg2MedError(f"body mask shape {body.shape} does not match the segmentation {seg.image.GetSize()[::-1]}")
    if not body.any():
        raise Seg2MedError("the body contour is empty: nothing to synthesise")

    prior = prior_image(seg, modality, sequence=meta.sequence, body=body, table_path=tissue_table)
    prior01 = normalise_prior(sitk.GetArrayFromImage(prior), modality, meta.sequence).astype(np.float32)

    grid = SliceGrid.from_image(seg.image, spacing_xy=meta.spacing_xy, size=meta.image_size)
    prior_stack = grid.forward_array(prior01, interpolator="linear")
    body_stack = grid.forward_array(body.astype(np.float32), interpolator="nearest") > 0.5
    keep = body_stack.reshape(body_stack.shape[0], -1).mean(axis=1) >= MIN_BODY_FRACTION
    out_stack = np.zeros_like(prior_stack, dtype=np.float32)
    if keep.any():
        config = sampler or SamplerConfig()
        if meta.model_kind == "regression":
            generated = predict_regression(bundle.network, prior_stack[keep], config, device, progress=progress, cancel=cancel)
        else:
            generated = sample_slices(
                bundle.network, meta.scheduler, prior_stack[keep], config, device, progress=progress, cancel=cancel
            )
        out_stack[keep] = generated
    if cancel is not None and cancel():
        raise Cancelled("synthesis cancelled")

    out01 = grid.inverse_array(out_stack, interpolator="linear")
    out01 = np.where(body, np.clip(out01, 0.0, 1.0), 0.0).astype(np.float32)
    if modality == "ct":
        values = np.round(denormalise_ct(out01)).astype(np.int16)
    else:
        values = (out01 * MR_OUTPUT_SCALE).astype(np.float32)
    result_img = sitk.GetImageFromArray(values)
    result_img.CopyInformation(seg.image)

    result = SynthesisResult(image=result_img, prior=prior, body=body, slices_sampled=int(keep.sum()))
    if image is not None and (image_modality or seg_modality) == modality:
        result.metrics = compare_to_real(out01, image, body, modality)
    return result


def compare_to_real(synthetic01: np.ndarray, real: sitk.Image, body: np.ndarray, modality: str) -> dict[str, float]:
    """SSIM/PSNR/MAE/HistCC inside the body; CT in HU (MAE in HU), MR in model space [0, 1]."""
    from seg2med_core.metrics import image_metrics

    real01 = normalise_image(real, modality)
    if modality == "ct":
        return image_metrics(denormalise_ct(synthetic01), denormalise_ct(real01), body, "ct", 2000.0)
    return image_metrics(synthetic01, real01, body, "mr", 1.0)


def convert(
    image: sitk.Image,
    seg: Segmentation,
    to_modality: str,
    bundle: Bundle,
    *,
    sampler: SamplerConfig | None = None,
    device: torch.device | str = "cpu",
    tissue_table: str | Path | None = None,
    progress: ProgressFn = None,
    cancel: CancelFn = None,
) -> tuple[SynthesisResult, labels_mod.ConversionReport | None]:
    """MR→CT or CT→MR: convert the labels, take the body contour from the source image, synthesise."""
    if to_modality not in ("ct", "mr"):
        raise Seg2MedError(f"target modality must be 'ct' or 'mr', got '{to_modality}'")
    check_modality(bundle, to_modality)
    check_same_geometry(seg.image, image, "segmentation", "image")
    source_modality = segmentation_modality(seg)
    body = body_mask_from_image(image, source_modality)
    report = None
    if source_modality != to_modality:
        seg, report = convert_segmentation(seg, "total_mr" if to_modality == "mr" else "total")
    result = synthesize(
        seg,
        bundle,
        body=body,
        sampler=sampler,
        device=device,
        tissue_table=tissue_table,
        progress=progress,
        cancel=cancel,
    )
    return result, report


def convert_segmentation(seg: Segmentation, dst: str) -> tuple[Segmentation, labels_mod.ConversionReport]:
    """Relabel ``seg`` into label set ``dst`` (geometry kept); tissue labels (≥ TISSUE_OFFSET) pass through."""
    arr = sitk.GetArrayFromImage(seg.image)
    converted, report = labels_mod.convert_labels(arr, seg.label_set, dst)
    out = sitk.GetImageFromArray(converted.astype(np.uint16))
    out.CopyInformation(seg.image)
    names = labels_mod.names_for(dst)
    return Segmentation(image=out, names=names, label_set=dst), report
