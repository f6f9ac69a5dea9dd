"""Synthesis pipeline: segmentation (+ optional real image) → prior → 2D slices → sampler → volume.

The pipeline owns the order of operations and the geometry; the sampler owns the denoising loop and the
bundle owns the network. Every output is returned in exactly the segmentation's geometry
(``CopyInformation`` from the segmentation after the inverse slice chain). Nothing is written here:
callers write the results only after every computation has succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from seg2med_core import labels as labels_mod
from seg2med_core.bundle import Bundle, check_modality
from seg2med_core.defaults import DEFAULT_ANCHOR
from seg2med_core.device import DeviceSpec, as_device_list, describe_devices, parse_devices
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.grids import match_segmentation
from seg2med_core.io import Segmentation, check_same_geometry
from seg2med_core.mrsignal import Sequence as MRSequence
from seg2med_core.network import conditioning, neighbour_stack
from seg2med_core.preprocess import (  # noqa: F401  (check_not_constant: re-exported)
    CT_WINDOW_WIDTH,
    SliceGrid,
    check_not_constant,
    body_mask_from_image,
    body_mask_from_segmentation,
    denormalise_ct,
    normalise_ct,
    normalise_mr,
)
from seg2med_core.prior import normalise_prior, prior_image
from seg2med_core.sampler import SamplerConfig, predict_regression, sample_slices

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]
InfoFn = Callable[[str], None]

#: Intensity scale of synthetic MR volumes when no real MR is given: model space [0, 1] × this value.
MR_OUTPUT_SCALE = 1000.0
#: Slices whose body area is below this fraction of the model slice are not sampled (left as background).
MIN_BODY_FRACTION = 0.002
#: HU written outside the body contour of a synthetic CT (air; the bottom of the model's HU window).
CT_BACKGROUND_HU = -1000

MR_LABEL_SETS = ("total_mr", "tissue_types_mr")


@dataclass
class SynthesisResult:
    """Synthetic volume (int16 HU for CT, float32 for MR) and what it was made from, all in the seg's geometry."""

    image: sitk.Image
    prior: sitk.Image
    body: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)
    slices_sampled: int = 0
    seconds_sampling: float = 0.0
    #: the segmentation the prior was made from (after label conversion, for ``convert``)
    segmentation: Segmentation | None = None
    #: what class anchoring did (:func:`anchor_to_prior`): strength, classes, shift per class
    anchoring: dict[str, Any] = field(default_factory=dict)


def segmentation_modality(seg: Segmentation) -> str:
    """``"mr"`` for the MR label sets (``total_mr``), ``"ct"`` otherwise."""
    return "mr" if seg.label_set in MR_LABEL_SETS else "ct"


def body_mask(seg: Segmentation, image: sitk.Image | None = None, image_modality: str | None = None) -> np.ndarray:
    """Body contour in the segmentation's (z, y, x) order: from ``image`` when given, else from the labels."""
    if image is not None:
        check_same_geometry(seg.image, image, "segmentation", "image")
        check_not_constant(image)
        body = body_mask_from_image(image, image_modality or segmentation_modality(seg))
        if not body.any():
            raise Seg2MedError(
                f"no body found in the image (nothing above the {image_modality or segmentation_modality(seg)} body "
                "threshold): is it the right image, or of the other modality (--image-modality)?"
            )
        return body
    return body_mask_from_segmentation(seg.image)



def normalise_image(image: sitk.Image, modality: str) -> np.ndarray:
    """Real image → model space [0, 1] (CT window L0/W2000; MR p10–p90 of the volume)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if modality == "ct":
        return normalise_ct(arr)
    return normalise_mr(arr)[0]


def check_compatible(seg: Segmentation, bundle: Bundle, relabel_hint: str | None = None) -> None:
    """Raise unless the segmentation's label set belongs to the modality the bundle makes.

    ``relabel_hint`` (the command line passes one) is a command that relabels the segmentation for the
    model; without it the message names the API call that does.
    """
    meta = bundle.metadata
    seg_modality = segmentation_modality(seg)
    if seg_modality != meta.modality:
        target = "total_mr" if meta.modality == "mr" else "total"
        fix = relabel_hint or f"pipeline.convert_segmentation(seg, '{target}')"
        raise Seg2MedError(
            f"segmentation label set '{seg.label_set}' is for {seg_modality.upper()} but model '{meta.name}' makes "
            f"{meta.modality.upper()}: relabel it first with {fix} and synthesise from the result"
        )


def _timed_progress(
    progress: ProgressFn | None, info: InfoFn | None, n_slices: int, steps: int
) -> tuple[ProgressFn, Callable[[], float]]:
    """Wrap ``progress`` so the first sampling steps are timed and an honest total estimate goes to ``info``.

    The estimate is ``slices × steps × seconds per slice-step``. The seconds per slice-step are measured on
    the first step after the warm-up step (the very first step also pays one-time costs such as kernel
    selection or compilation, so it is reported separately), on the real batch size and device. With a
    single step nothing is estimated. Returns the wrapped callback and a function giving the seconds since
    sampling began.
    """
    marks: list[float] = []
    state = {"reported": False}

    def elapsed() -> float:
        return time.perf_counter() - marks[0] if marks else 0.0

    def wrapped(done: int, total: int, message: str) -> None:
        now = time.perf_counter()
        if len(marks) < 3:
            marks.append(now)
        if len(marks) == 3 and not state["reported"] and total > 2:
            state["reported"] = True
            warmup, step = marks[1] - marks[0], marks[2] - marks[1]
            events_per_step = total / max(1, steps)  # one progress event per batch and step
            per_slice_step = step * events_per_step / max(1, n_slices)
            estimate = warmup + step * (total - 1)
            if info is not None:
                info(
                    f"estimated {message} time: {format_seconds(estimate)} ({n_slices} slices x {steps} steps x "
                    f"{per_slice_step:.3g} s per slice-step, measured; first step incl. warm-up {warmup:.2f} s)"
                )
        if progress is not None:
            progress(done, total, message)

    return wrapped, elapsed


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min`` — for people, not parsers."""
    s = int(round(seconds))
    if seconds < 1:
        return f"{max(seconds, 0.0):.2f} s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def check_anchor(strength: float) -> float:
    """``strength`` as a float in [0, 1], else Seg2MedError naming the value."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise Seg2MedError(f"anchor strength must be a number in [0, 1], got {strength!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise Seg2MedError(f"anchor strength must be in [0, 1], got {strength!r}")
    return value


def anchor_to_prior(
    values01: np.ndarray,
    prior01: np.ndarray,
    label_map: np.ndarray,
    body: np.ndarray,
    strength: float,
    names: dict[int, str] | None = None,
    unit_scale: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Class anchoring: pull each labelled class's level back to the prior's, keep the model's texture.

    For every label id > 0 with voxels inside ``body`` the synthetic values of that class are shifted by
    ``-strength x median(values01 - prior01)`` over its voxels, so at strength 1 the class's median equals the
    prior's there (its spread, i.e. the texture, is untouched); the result is clipped to [0, 1] (model space).
    Voxels outside the body and unlabelled body voxels (id 0) are not changed; strength 0 returns
    ``values01`` unchanged. All arrays share one (z, y, x) shape. Returns the anchored array and a report
    ``{"strength", "classes", "shift": {name: shift}, "median_abs_shift", "largest_shift"}`` with the shift
    added to each class (before the final clip), in model units times ``unit_scale`` (2000 for CT gives HU).
    """
    strength = check_anchor(strength)
    values01 = np.asarray(values01, dtype=np.float32)
    shapes = {np.shape(values01), np.shape(prior01), np.shape(label_map), np.shape(body)}
    if len(shapes) != 1:
        raise Seg2MedError(f"anchoring needs arrays of one shape, got {sorted(shapes)}")
    report: dict[str, Any] = {"strength": strength, "classes": 0, "shift": {}}
    if strength == 0.0:
        return values01, report
    inside = np.asarray(body, dtype=bool) & (np.asarray(label_map) > 0)
    flat = np.flatnonzero(inside)
    if flat.size == 0:
        return values01, report
    ids = np.asarray(label_map).ravel()[flat]
    diff = values01.ravel()[flat] - np.asarray(prior01, dtype=np.float32).ravel()[flat]
    order = np.argsort(ids, kind="stable")
    ids, diff, flat = ids[order], diff[order], flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], ids.size]
    out = values01.copy().ravel()
    shifts: dict[str, float] = {}
    for a, b in zip(starts, stops):
        shift = -strength * float(np.median(diff[a:b]))  # what is added to the class
        out[flat[a:b]] += np.float32(shift)
        label = int(ids[a])
        shifts[(names or {}).get(label, str(label))] = round(shift * unit_scale, 3)
    out = np.clip(out, 0.0, 1.0).reshape(values01.shape).astype(np.float32)
    magnitudes = [abs(v) for v in shifts.values()]
    largest = max(shifts, key=lambda k: abs(shifts[k]))
    report.update(classes=len(shifts), shift=shifts, median_abs_shift=round(float(np.median(magnitudes)), 3),
                  largest_shift={"class": largest, "shift": shifts[largest]})
    return out, report


def _prior_through_grid(grid: SliceGrid, prior_stack: np.ndarray, keep: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The model-grid prior (the network's conditioning) brought back onto the segmentation grid exactly as the
    output is: what the prior looks like at the model's resolution, the reference of class anchoring."""
    stack = np.where(keep[:, None, None], prior_stack, 0.0).astype(np.float32)
    back = grid.inverse_array(stack, interpolator="linear")
    return np.where(body, np.clip(back, 0.0, 1.0), 0.0).astype(np.float32)


def anchor_reference(seg: Segmentation, prior01: np.ndarray, bundle: Bundle, body: np.ndarray) -> np.ndarray:
    """The reference :func:`synthesize` anchors to: ``prior01`` (model space, ``seg``'s (z, y, x) grid) through
    the bundle's slice grid and back, like the output. Comparing the output with this rather than with the
    prior itself keeps the resampling blur at organ edges (small organs, coarse model grid) out of the shift, so
    a model that returns its conditioning unchanged is left unchanged."""
    meta = bundle.metadata
    grid = SliceGrid.from_image(seg.image, spacing_xy=meta.spacing_xy, size=meta.image_size)
    prior_stack = np.clip(grid.forward_array(np.asarray(prior01, dtype=np.float32), interpolator="linear"), 0.0, 1.0)
    body_stack = grid.forward_array(np.asarray(body, dtype=bool), interpolator="nearest").astype(bool)
    keep = body_stack.reshape(body_stack.shape[0], -1).mean(axis=1) >= MIN_BODY_FRACTION
    return _prior_through_grid(grid, prior_stack, keep, np.asarray(body, dtype=bool))


def synthesize(
    seg: Segmentation,
    bundle: Bundle,
    *,
    image: sitk.Image | None = None,
    image_modality: str | None = None,
    body: np.ndarray | None = None,
    sampler: SamplerConfig | None = None,
    device: DeviceSpec = "auto",
    tissue_table: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    info: InfoFn | None = None,
    phase: str | None = None,
    sequence: "MRSequence | str | None" = None,
    anchor: float = DEFAULT_ANCHOR,
) -> SynthesisResult:
    """Synthesise a volume of the bundle's modality from ``seg``, in exactly ``seg``'s geometry.

    The defaults are the command line's (``seg2med synthesize``): ``sampler=None`` is ``SamplerConfig()``
    (DPM-Solver++(2M), 20 steps, seed 0, fast path), ``device="auto"`` (cuda, then mps, then cpu; a string
    such as ``"cuda:0,cuda:1"`` splits the slices over the devices). The result is returned, not written.
    ``image`` is the real image the segmentation came from (optional): a segmentation on its grid in another
    axis order is brought onto it exactly first (``grids.match_segmentation``; the result then has the
    image's geometry; other grid differences raise Seg2MedError). It gives the body contour and, when it
    has the bundle's modality (``image_modality``, default: the segmentation's), the reference for
    ``metrics`` (SSIM/PSNR/MAE/HistCC inside the body). ``body`` overrides the contour (bool array in the
    segmentation's (z, y, x) order). ``info`` receives human-readable lines (plan, time estimate).
    ``phase`` picks a CT contrast-phase tissue table (``native``/``arterial``/``portal-venous``),
    ``sequence`` the MR sequence of the prior (default: the bundle's, else ``vibe_in``). The network's
    conditioning follows its config: 2.5D models get the neighbouring prior slices of the model-space stack
    (:func:`seg2med_core.network.neighbour_stack`).
    Only slices that contain body are sampled; the rest stay background. ``device`` may be a list of
    devices: the slices are split over them (same result as on one device, see :mod:`seg2med_core.sharding`).
    ``anchor`` (0..1, default ``defaults.DEFAULT_ANCHOR``) is class anchoring after sampling
    (:func:`anchor_to_prior`: each labelled class's median is moved that far towards the prior's, the prior as
    seen through the model's slice grid, :func:`anchor_reference`); what it did is in ``result.anchoring`` and,
    with a real image, under ``metrics["anchoring"]``.
    """
    meta = bundle.metadata
    modality = meta.modality
    anchor = check_anchor(anchor)
    check_compatible(seg, bundle)
    if isinstance(device, str):  # "auto", "cpu", "cuda:0,cuda:1": as the command line's --device
        device = parse_devices(device)
    if image is not None:  # same grid in another axis order: reoriented exactly (info line); else an error
        seg = match_segmentation(seg, image, resample_option=None, info=info)
    if body is None:
        body = body_mask(seg, image, image_modality)
    elif image is not None:
        check_same_geometry(seg.image, image, "segmentation", "image")
    body = np.asarray(body, dtype=bool)
    seg_shape = sitk.GetArrayViewFromImage(seg.image).shape
    if body.shape != seg_shape:
        raise Seg2MedError(f"body mask shape {body.shape} does not match the segmentation's {seg_shape} (z, y, x)")
    if not body.any():
        raise Seg2MedError("the body contour is empty: nothing to synthesise")

    if modality == "mr" and sequence is None:
        sequence = meta.sequence
    if modality == "ct" and sequence is not None:
        raise Seg2MedError("an MR sequence was given for a CT model")
    prior = prior_image(seg, modality, sequence=sequence, body=body, table_path=tissue_table, phase=phase)
    prior01 = normalise_prior(sitk.GetArrayFromImage(prior), modality, sequence).astype(np.float32)

    grid = SliceGrid.from_image(seg.image, spacing_xy=meta.spacing_xy, size=meta.image_size)
    prior_stack = np.clip(grid.forward_array(prior01, interpolator="linear"), 0.0, 1.0)
    body_stack = grid.forward_array(body, interpolator="nearest").astype(bool)
    keep = body_stack.reshape(body_stack.shape[0], -1).mean(axis=1) >= MIN_BODY_FRACTION
    config = sampler or SamplerConfig()
    out_stack = np.zeros(prior_stack.shape, dtype=np.float32)
    n_keep = int(keep.sum())
    if n_keep == 0:
        largest = int(body_stack.reshape(body_stack.shape[0], -1).sum(axis=1).max()) if body_stack.size else 0
        raise Seg2MedError(
            f"the body is too small to synthesise: it covers at most {largest} of the {meta.image_size}x{meta.image_size} "
            f"model pixels in any slice (at least {MIN_BODY_FRACTION:.1%} = "
            f"{int(np.ceil(MIN_BODY_FRACTION * meta.image_size ** 2))} are needed); is the segmentation complete?"
        )
    seconds = 0.0
    if n_keep:
        steps = 1 if meta.model_kind == "regression" else config.steps
        if info is not None:
            what = "regression" if meta.model_kind == "regression" else f"{config.kind}, {config.steps} steps"
            info(
                f"model '{meta.name}' ({modality.upper()}, {what}) on {describe_devices(device)}: {n_keep} of {grid.n_slices} slices "
                f"contain body, {meta.image_size}x{meta.image_size} px at {meta.spacing_xy:g} mm"
            )
        timed, elapsed = _timed_progress(progress, info, n_keep, steps)
        if meta.model_kind == "regression":
            first = as_device_list(device)[0]  # one pass per slice: not worth sharding
            generated = predict_regression(bundle.network, prior_stack[keep], config, first, progress=timed, cancel=cancel)
        else:
            neighbours, _ = conditioning(meta.network)
            cond = neighbour_stack(prior_stack, neighbours, np.flatnonzero(keep)) if neighbours else prior_stack[keep]
            generated = sample_slices(
                bundle.network,
                meta.scheduler,
                cond,
                config,
                device,
                progress=timed,
                cancel=cancel,
                slice_indices=np.flatnonzero(keep).tolist(),
            )
        seconds = elapsed()
        out_stack[keep] = generated
    if cancel is not None and cancel():
        raise Cancelled("synthesis cancelled")

    out01 = grid.inverse_array(out_stack, interpolator="linear")
    out01 = np.where(body, np.clip(out01, 0.0, 1.0), 0.0).astype(np.float32)
    reference01 = _prior_through_grid(grid, prior_stack, keep, body) if anchor > 0 else prior01
    out01, anchoring = anchor_to_prior(out01, reference01, sitk.GetArrayViewFromImage(seg.image), body, anchor,
                                       names=seg.names, unit_scale=CT_WINDOW_WIDTH if modality == "ct" else 1.0)
    anchoring["unit"] = "HU" if modality == "ct" else "model units ([0, 1] prior scale)"
    if info is not None and anchoring["classes"]:
        info(
            f"anchored {anchoring['classes']} classes to the prior (strength {anchor:g}): median |shift| "
            f"{anchoring['median_abs_shift']:g}, largest {anchoring['largest_shift']['shift']:+g} "
            f"({anchoring['largest_shift']['class']}) {'HU' if modality == 'ct' else 'model units'}"
        )
    real_is_target = image is not None and (image_modality or segmentation_modality(seg)) == modality
    if modality == "ct":
        hu = np.where(body, np.round(denormalise_ct(out01)), CT_BACKGROUND_HU)
        values: np.ndarray = hu.astype(np.int16)
    elif real_is_target:
        assert image is not None
        _, (lo, hi) = normalise_mr(sitk.GetArrayFromImage(image))
        values = np.where(body, out01 * np.float32(hi - lo) + np.float32(lo), 0.0).astype(np.float32)
    else:
        values = (out01 * MR_OUTPUT_SCALE).astype(np.float32)
    result_img = sitk.GetImageFromArray(values)
    result_img.CopyInformation(seg.image)

    result = SynthesisResult(
        image=result_img, prior=prior, body=body, slices_sampled=n_keep, seconds_sampling=seconds, segmentation=seg,
        anchoring=anchoring,
    )
    if real_is_target:
        assert image is not None
        result.metrics = compare_to_real(out01, image, body, modality)
        result.metrics["anchoring"] = anchoring
    return result


def compare_to_real(synthetic01: np.ndarray, real: sitk.Image, body: np.ndarray, modality: str) -> dict[str, Any]:
    """SSIM/PSNR/MAE/HistCC inside the body; CT in HU (MAE in HU), MR in model space [0, 1]; and under
    ``"banding"`` the slice-consistency metric of the synthetic and the real volume (largest / mean jump of
    the per-slice soft-tissue mean between adjacent axial slices, through-plane / in-plane gradient ratio)."""
    from seg2med_core.metrics import image_metrics

    real01 = normalise_image(real, modality)
    if modality == "ct":
        synthetic, reference = denormalise_ct(synthetic01), denormalise_ct(real01)
        result = image_metrics(synthetic, reference, body, "ct", CT_WINDOW_WIDTH)
    else:
        synthetic, reference = synthetic01, real01
        result = image_metrics(synthetic, reference, body, "mr", 1.0)
    result["banding"] = banding_or_reason(synthetic, reference, body, modality, real)
    return result


def banding_or_reason(synthetic: np.ndarray, real: np.ndarray, body: np.ndarray, modality: str, reference: sitk.Image) -> dict[str, Any]:
    """Slice-consistency metric (:func:`seg2med_core.metrics.banding_for_image`), or ``{"skipped": reason}``
    when the volume has nothing to measure it on (e.g. no soft tissue)."""
    from seg2med_core.metrics import banding_for_image

    try:
        return banding_for_image(synthetic, real, body, modality, reference)
    except Seg2MedError as exc:
        return {"skipped": str(exc)}


def convert(
    image: sitk.Image,
    seg: Segmentation,
    to_modality: str,
    bundle: Bundle,
    *,
    sampler: SamplerConfig | None = None,
    device: DeviceSpec = "auto",
    tissue_table: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    info: InfoFn | None = None,
    phase: str | None = None,
    sequence: "MRSequence | str | None" = None,
    anchor: float = DEFAULT_ANCHOR,
) -> tuple[SynthesisResult, labels_mod.ConversionReport | None]:
    """MR→CT or CT→MR: convert the labels, take the body contour from the source image, synthesise.

    Defaults as :func:`synthesize` (and ``seg2med convert``, ``anchor`` included); ``seg`` is brought onto ``image``'s grid first.

    The result lies in the source image's geometry; the report lists classes without a counterpart
    (``None`` when no conversion was needed).
    """
    if to_modality not in ("ct", "mr"):
        raise Seg2MedError(f"target modality must be 'ct' or 'mr', got '{to_modality}'")
    anchor = check_anchor(anchor)
    check_modality(bundle, to_modality)
    seg = match_segmentation(seg, image, resample_option=None, info=info)
    source_modality = segmentation_modality(seg)
    report = None
    if source_modality != to_modality:
        seg, report = convert_segmentation(seg, "total_mr" if to_modality == "mr" else "total")
    body = body_mask_from_image(image, source_modality)
    result = synthesize(
        seg,
        bundle,
        body=body,
        sampler=sampler,
        device=device,
        tissue_table=tissue_table,
        progress=progress,
        cancel=cancel,
        info=info,
        phase=phase,
        sequence=sequence,
        anchor=anchor,
    )
    return result, report


def convert_segmentation(seg: Segmentation, dst: str) -> tuple[Segmentation, labels_mod.ConversionReport]:
    """Relabel ``seg`` into label set ``dst`` (geometry kept); tissue labels (≥ TISSUE_OFFSET) pass through."""
    arr = sitk.GetArrayFromImage(seg.image)
    converted, report = labels_mod.convert_labels(arr, seg.label_set, dst)
    if not converted.any():
        raise Seg2MedError(
            f"no class of the segmentation has a counterpart in '{dst}' ({report.summary()}); nothing is left to synthesise"
        )
    out = sitk.GetImageFromArray(converted.astype(np.uint16))
    out.CopyInformation(seg.image)
    return Segmentation(image=out, names=labels_mod.names_for(dst), label_set=dst), report


def export_segmentation(seg: Segmentation, scheme_name: str) -> tuple[Segmentation, Any]:
    """``seg`` (any TotalSegmentator set, a phantom, ...) written in another scheme's ids, e.g. MAISI's 132
    classes with unlabelled body voxels as its body label 200 (body contour from the labels), so it can drive
    that scheme's model. Returns the relabelled segmentation and a ``label_tables.ExportReport`` listing
    classes without a counterpart."""
    from seg2med_core import label_tables
    from seg2med_core.preprocess import body_mask_from_segmentation

    scheme = label_tables.load_scheme(scheme_name)
    if seg.label_set != "total":
        seg, _ = convert_segmentation(seg, "total")
    arr = sitk.GetArrayFromImage(seg.image)
    body = body_mask_from_segmentation(seg.image) if scheme.body_id is not None else None
    out_arr, report = label_tables.export_to_scheme(arr, scheme, body)
    if not out_arr.any():
        raise Seg2MedError(f"no class of the segmentation has a counterpart in '{scheme_name}' ({report.summary()})")
    out = sitk.GetImageFromArray(out_arr)
    out.CopyInformation(seg.image)
    return Segmentation(out, dict(scheme.names), scheme.name), report
