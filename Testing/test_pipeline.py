"""Pipeline: exact geometry, CT value range, body handling, seeding, conversion, cancel and time estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from seg2med_core import io
from seg2med_core.bundle import Bundle, BundleMetadata, load_bundle
from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.pipeline import (
    CT_BACKGROUND_HU,
    body_mask,
    convert,
    convert_segmentation,
    format_seconds,
    synthesize,
)
from seg2med_core.prior import prior_image
from seg2med_core.sampler import SamplerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def identity_bundle(spacing_xy: float, image_size: int) -> Bundle:
    """A "regression" bundle whose network returns its input: the synthetic image is the prior itself.

    It makes the geometry chain observable: anything misplaced by the forward/inverse slice grid shows up
    as a difference between the output and the prior.
    """
    conv = torch.nn.Conv2d(1, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    meta = BundleMetadata(
        name="identity",
        version="0",
        modality="ct",
        sequence=None,
        label_set="total",
        network={"class": "UNet"},
        scheduler={},
        spacing_xy=spacing_xy,
        image_size=image_size,
        intensity={"kind": "ct_window", "level": 0, "width": 2000},
        model_kind="regression",
    )
    return Bundle(metadata=meta, network=conv.eval())


def test_identity_model_reproduces_the_prior_exactly_in_a_permuted_geometry(synthetic_case: dict[str, Path]) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    ct = io.read_image(synthetic_case["ct"])
    result = synthesize(seg, identity_bundle(5.0, 48), image=ct, sampler=SamplerConfig(batch_size=2), device="cpu")
    assert _geometry(result.image) == _geometry(seg.image)
    out = sitk.GetArrayFromImage(result.image)
    prior = sitk.GetArrayFromImage(result.prior)
    body = result.body
    assert out.dtype == np.int16
    # same spacing and a large enough grid: the chain is a pure permutation, so the prior comes back exactly
    np.testing.assert_array_equal(out[body], np.clip(np.round(prior[body]), -1000, 1000))
    assert (out[~body] == CT_BACKGROUND_HU).all()
    # the liver (id 5) keeps its table HU at its own voxels, which proves the labels were not moved
    labels = sitk.GetArrayFromImage(seg.image)
    assert len(np.unique(out[labels == 5])) == 1
    assert result.metrics and {"ssim", "psnr", "mae", "histcc"} <= set(result.metrics)


def test_identity_model_with_resampling_stays_aligned(synthetic_case: dict[str, Path]) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    result = synthesize(seg, identity_bundle(2.5, 96), sampler=SamplerConfig(batch_size=3), device="cpu")
    out = sitk.GetArrayFromImage(result.image).astype(np.float32)
    prior = np.clip(sitk.GetArrayFromImage(result.prior), -1000, 1000)
    # away from edges (linear up- and down-sampling blurs one voxel) the prior is recovered
    from scipy import ndimage

    in_plane = np.ones((1, 3, 3), dtype=bool)
    interior = ndimage.binary_erosion(result.body, structure=in_plane, iterations=2)
    labels = sitk.GetArrayFromImage(seg.image)
    edges = ndimage.morphological_gradient(labels, size=(1, 3, 3)) > 0
    core = interior & ~ndimage.binary_dilation(edges, structure=in_plane)
    assert core.sum() > 100
    assert np.abs(out[core] - prior[core]).max() <= 1.0


def test_tiny_diffusion_bundle_on_examples(examples: Path, tiny_bundle: Path) -> None:
    seg = io.read_segmentation(examples / "example_seg.nii.gz")
    ct = io.read_image(examples / "example_ct_sm.nii.gz")
    bundle = load_bundle(tiny_bundle)
    lines: list[str] = []
    events: list[tuple[int, int, str]] = []
    result = synthesize(
        seg,
        bundle,
        image=ct,
        sampler=SamplerConfig(kind="ddim", steps=2, seed=3, batch_size=8),
        device="cpu",
        progress=lambda d, t, m: events.append((d, t, m)),
        info=lines.append,
    )
    assert _geometry(result.image) == _geometry(seg.image)
    out = sitk.GetArrayFromImage(result.image)
    assert out.min() >= -1024 and out.max() <= 3071
    assert (out[~result.body] == -1000).all()
    assert {"ssim", "psnr", "mae"} <= set(result.metrics)
    assert result.slices_sampled == seg.image.GetSize()[2]
    # progress counts batch-steps up to the total; the estimate is printed once, with its arithmetic
    assert events[0][0] == 0 and events[-1][0] == events[-1][1] == 4 * 2
    estimates = [line for line in lines if line.startswith("estimated sampling time")]
    assert len(estimates) == 1 and f"{result.slices_sampled} slices x 2 steps" in estimates[0]


def test_same_seed_same_volume_other_seed_differs(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    bundle = load_bundle(tiny_bundle)

    def run(seed: int, batch: int) -> np.ndarray:
        config = SamplerConfig(kind="ddim", steps=2, seed=seed, batch_size=batch)
        return sitk.GetArrayFromImage(synthesize(seg, bundle, sampler=config, device="cpu").image)

    a = run(7, 2)
    np.testing.assert_array_equal(a, run(7, 6))  # batch size does not change the result
    assert not np.array_equal(a, run(8, 2))


def test_slices_without_body_are_not_sampled(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    body = body_mask(seg)
    body[:2] = False
    result = synthesize(seg, load_bundle(tiny_bundle), body=body, sampler=SamplerConfig(steps=1, seed=0), device="cpu")
    out = sitk.GetArrayFromImage(result.image)
    assert result.slices_sampled == seg.image.GetSize()[2] - 2
    assert (out[:2] == -1000).all()


def test_cancel_raises_and_returns_nothing(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    with pytest.raises(Cancelled):
        synthesize(seg, load_bundle(tiny_bundle), sampler=SamplerConfig(steps=3, seed=0), device="cpu", cancel=lambda: True)


def test_model_of_other_modality_is_refused(synthetic_case: dict[str, Path], tiny_mr_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    with pytest.raises(Seg2MedError, match=r"label set 'total' is for CT but model 'tiny_mr' makes MR"):
        synthesize(seg, load_bundle(tiny_mr_bundle), device="cpu")


def test_geometry_mismatch_is_refused(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    ct = io.read_image(synthetic_case["ct"])
    ct.SetSpacing((5.0, 5.0, 4.0))
    with pytest.raises(Seg2MedError, match=r"different voxel grids \(spacing \(5, 5, 5\) vs \(5, 5, 4\)\)"):
        synthesize(seg, load_bundle(tiny_bundle), image=ct, device="cpu")


def test_empty_body_is_refused(synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    empty = np.zeros(sitk.GetArrayViewFromImage(seg.image).shape, dtype=bool)
    with pytest.raises(Seg2MedError, match="body contour is empty"):
        synthesize(seg, load_bundle(tiny_bundle), body=empty, device="cpu")


def test_convert_mr_to_ct_on_examples_keeps_the_mr_geometry(examples: Path, tiny_bundle: Path) -> None:
    mr = io.read_image(examples / "example_mr_sm.nii.gz")
    seg = io.read_segmentation(examples / "example_seg_mr.nii.gz")
    assert seg.label_set == "total_mr"
    result, report = convert(mr, seg, "ct", load_bundle(tiny_bundle), sampler=SamplerConfig(steps=1, seed=0), device="cpu")
    assert _geometry(result.image) == _geometry(mr)
    assert report is not None and report.dst == "total" and report.mapped
    out = sitk.GetArrayFromImage(result.image)
    assert (out[~result.body] == -1000).all() and out.max() <= 3071
    # the body contour came from the MR image: it covers the labelled voxels
    labels = sitk.GetArrayFromImage(seg.image)
    assert result.body[labels > 0].mean() > 0.97


def test_convert_segmentation_keeps_geometry_and_refuses_empty_results(synthetic_case: dict[str, Path]) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    converted, report = convert_segmentation(seg, "total_mr")
    assert _geometry(converted.image) == _geometry(seg.image)
    assert report.mapped == {"liver": "liver", "spleen": "spleen"}
    only_ribs = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(seg.image) > 0, 99, 0).astype(np.uint16))
    only_ribs.CopyInformation(seg.image)
    assert seg.names[99].startswith("rib_")
    with pytest.raises(Seg2MedError, match="no class of the segmentation has a counterpart in 'total_mr'"):
        convert_segmentation(io.Segmentation(only_ribs, seg.names, "total"), "total_mr")


def test_mr_prior_geometry(synthetic_case: dict[str, Path]) -> None:
    seg = io.read_segmentation(synthetic_case["seg"])
    mr_seg, _ = convert_segmentation(seg, "total_mr")
    prior = prior_image(mr_seg, "mr", sequence="t1_gre", body=body_mask(mr_seg))
    assert _geometry(prior) == _geometry(seg.image)


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "0.25 s"), (42.4, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
