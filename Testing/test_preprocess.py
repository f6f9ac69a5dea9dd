"""Intensity normalisation, body contour and the SliceGrid forward/inverse geometry chain."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from seg2med_core.errors import Seg2MedError
from seg2med_core.preprocess import (
    SliceGrid,
    array_to_canonical,
    body_mask_from_image,
    body_mask_from_segmentation,
    denormalise_ct,
    denormalise_mr,
    normalise_ct,
    normalise_mr,
    to_canonical,
)


def _geometry(img: sitk.Image) -> tuple:
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _assert_canonical_geometry(img: sitk.Image, grid: SliceGrid) -> None:
    """The grid's analytic canonical geometry equals what ``sitk.DICOMOrient`` produces."""
    canon = to_canonical(img)
    assert canon.GetSize() == grid.canonical.size
    np.testing.assert_allclose(canon.GetSpacing(), grid.canonical.spacing, rtol=1e-12)
    np.testing.assert_allclose(canon.GetOrigin(), grid.canonical.origin, atol=1e-6)
    np.testing.assert_allclose(canon.GetDirection(), grid.canonical.direction, atol=1e-12)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# Oblique (rotated by ~20°) and axis-permuted with flips: the array's first ITK axis runs head-to-foot.
OBLIQUE = tuple((_rotation(0.35, -0.2, 0.3) @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])).ravel().tolist())


# ---------------------------------------------------------------------------------------------- intensities
def test_ct_window_maps_level0_width2000_and_inverts() -> None:
    hu = np.array([-2000.0, -1000.0, -500.0, 0.0, 40.0, 1000.0, 3000.0])
    out = normalise_ct(hu)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25, 0.5, 0.52, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(denormalise_ct(out)[1:6], hu[1:6], atol=1e-3)


def test_mr_percentile_normalisation_returns_its_range_and_inverts() -> None:
    rng = np.random.default_rng(0)
    arr = rng.gamma(2.0, 100.0, size=(4, 20, 20)).astype(np.float32)
    out, (lo, hi) = normalise_mr(arr)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(arr, [10, 90])))
    assert out.min() == 0.0 and out.max() == 1.0
    inside = (arr >= lo) & (arr <= hi)
    np.testing.assert_allclose(denormalise_mr(out, lo, hi)[inside], arr[inside], rtol=1e-5)
    assert np.mean((out > 0) & (out < 1)) == pytest.approx(0.8, abs=0.02)


def test_mr_normalisation_of_constant_image_is_a_user_error() -> None:
    with pytest.raises(Seg2MedError, match="p10=5"):
        normalise_mr(np.full((2, 3, 3), 5.0))


# ---------------------------------------------------------------------------------------------- body contour
def _ct_phantom(spacing_mm: float = 1.5) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Air, an elliptic torso with lungs, two arms (one touching the torso) and a thin table below."""
    n_z, half = 10, 120.0
    coords = np.arange(-half, half, spacing_mm)
    y, x = np.meshgrid(coords, coords, indexing="ij")  # y grows towards the back (LPS rows)
    torso = (x / 85.0) ** 2 + (y / 60.0) ** 2 <= 1.0
    lungs = ((np.abs(x) - 40.0) / 25.0) ** 2 + (y / 30.0) ** 2 <= 1.0
    arm_free = ((x + 105.0) / 13.0) ** 2 + (y / 17.0) ** 2 <= 1.0
    arm_touching = ((x - 100.0) / 14.0) ** 2 + (y / 18.0) ** 2 <= 1.0
    bridge = (np.abs(y) <= 4.0) & (x > 80.0) & (x < 90.0)  # 8 mm wide contact with the torso
    table = (y >= 66.0) & (y <= 68.0) & (np.abs(x) < 110.0)
    slice_hu = np.full(x.shape, -1000.0)
    slice_hu[torso | arm_touching | bridge | arm_free] = 40.0
    slice_hu[lungs] = -850.0
    slice_hu[table] = 200.0
    arr = np.repeat(slice_hu[None], n_z, axis=0).astype(np.float32)
    parts = {"torso": torso, "lungs": lungs, "arms": arm_free | arm_touching, "table": table}
    return arr, {k: np.repeat(v[None], n_z, axis=0) for k, v in parts.items()}


@pytest.mark.parametrize("spacing_mm", [0.75, 1.5, 3.0])  # 0.75 mm goes through the 2 mm working grid
def test_ct_body_mask_keeps_torso_and_drops_table_and_arms(spacing_mm: float) -> None:
    arr, parts = _ct_phantom(spacing_mm)
    mask = body_mask_from_image(_image(arr, (spacing_mm, spacing_mm, 3.0)), "ct")
    assert mask.dtype == bool and mask.shape == arr.shape
    assert mask[parts["lungs"]].all(), "lungs are holes inside the body and must be filled"
    assert not mask[parts["table"]].any()
    far_arm = parts["arms"] & (np.abs(np.arange(arr.shape[2]) * spacing_mm - 120.0) > 95.0)[None, None, :]
    assert not mask[far_arm].any()
    iou = (mask & parts["torso"]).sum() / (mask | parts["torso"]).sum()
    assert iou > 0.97


def test_arms_are_kept_when_asked() -> None:
    arr, parts = _ct_phantom(1.5)
    mask = body_mask_from_image(_image(arr, (1.5, 1.5, 3.0)), "ct", remove_arms=False)
    assert mask[parts["arms"]].mean() > 0.95
    assert not mask[parts["table"]].any()


def test_body_mask_comes_back_in_the_input_array_order() -> None:
    arr, parts = _ct_phantom(3.0)
    # Same anatomy stored head-first with flipped rows/columns (RAS-like NIfTI layout).
    flipped = np.ascontiguousarray(arr[::-1, ::-1, ::-1])
    img = _image(flipped, (3.0, 3.0, 3.0), direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, -1.0))
    mask = body_mask_from_image(img, "ct")
    reference = body_mask_from_image(_image(arr, (3.0, 3.0, 3.0)), "ct")
    np.testing.assert_array_equal(mask, reference[::-1, ::-1, ::-1])


def test_mr_body_mask_with_noisy_background() -> None:
    arr, parts = _ct_phantom(3.0)
    rng = np.random.default_rng(1)
    mr = np.abs(rng.normal(0.0, 8.0, arr.shape)).astype(np.float32)
    mr[parts["torso"]] = 350.0
    mr[parts["lungs"]] = 15.0  # dark lungs, like MR
    mask = body_mask_from_image(_image(mr, (3.0, 3.0, 3.0)), "mr")
    iou = (mask & parts["torso"]).sum() / (mask | parts["torso"]).sum()
    assert iou > 0.95


def test_body_mask_rejects_unknown_modality() -> None:
    with pytest.raises(Seg2MedError, match="'pet'"):
        body_mask_from_image(_image(np.zeros((3, 8, 8), np.float32)), "pet")


def test_body_mask_from_segmentation_bridges_gaps_and_matches_image_input() -> None:
    seg = np.zeros((6, 60, 60), dtype=np.uint8)
    seg[:, 20:40, 12:27] = 1
    seg[:, 20:40, 31:46] = 2  # 4 voxels (8 mm) apart: closed by the 10 mm closing
    seg[:, 28:32, 17:22] = 0  # a hole inside label 1
    mask = body_mask_from_segmentation(seg, (2.0, 2.0, 5.0))
    assert mask.shape == seg.shape and mask.dtype == bool
    assert mask[:, 25:35, 12:46].all()
    assert not mask[:, :10].any() and not mask[:, :, :5].any()
    img = _image(seg, (2.0, 2.0, 5.0))
    np.testing.assert_array_equal(body_mask_from_segmentation(img), mask)


def test_body_mask_from_empty_segmentation_is_a_user_error() -> None:
    with pytest.raises(Seg2MedError, match="empty"):
        body_mask_from_segmentation(np.zeros((2, 5, 5), np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(Seg2MedError, match="spacing"):
        body_mask_from_segmentation(np.ones((2, 5, 5), np.uint8))


@pytest.mark.data
def test_body_mask_on_real_ct_excludes_the_table(examples) -> None:
    img = sitk.ReadImage(str(examples / "example_ct_sm.nii.gz"))
    mask = body_mask_from_image(img, "ct")
    hu = sitk.GetArrayFromImage(img)
    assert 0.4 < mask.mean() < 0.9
    assert np.median(hu[mask]) > -200  # soft tissue, not air
    # The table lies posterior to the patient: in canonical LPS the last rows of each slice.
    canon = array_to_canonical(mask, img.GetDirection())
    rows_with_body = np.flatnonzero(canon.any(axis=(0, 2)))
    canon_hu = array_to_canonical(hu, img.GetDirection())
    table_rows = np.flatnonzero((canon_hu > -500).mean(axis=(0, 2)) > 0)
    assert table_rows.max() > rows_with_body.max(), "the dense table below the body must be left out"


# ---------------------------------------------------------------------------------------------- SliceGrid
@pytest.mark.data
@pytest.mark.parametrize("name", ["example_mr_sm.nii.gz", "example_ct_sm.nii.gz"])
@pytest.mark.parametrize("spacing_xy,size", [(None, 128), (1.0, 384), (1.5, 160)])
def test_slice_grid_round_trip_keeps_geometry_on_real_images(examples, name: str, spacing_xy, size: int) -> None:
    ref = sitk.ReadImage(str(examples / name))
    grid = SliceGrid.from_image(ref, spacing_xy, size)
    _assert_canonical_geometry(ref, grid)
    stack = grid.forward(ref, "linear", pad_value=-1000.0)
    assert stack.shape == (ref.GetSize()[2], size, size) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack, grid.forward_array(sitk.GetArrayFromImage(ref), "linear", -1000.0))
    back = grid.inverse(stack, "linear", fill_value=-1000.0)
    assert _geometry(back) == _geometry(ref)
    if spacing_xy is None:  # pure permutation + pad: exact
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ref).astype(np.float32))
    elif spacing_xy == 1.0:  # 3 mm → 1 mm: the original grid points are on the 1 mm grid
        np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ref), atol=1e-3)


@pytest.mark.data
def test_labels_round_trip_exactly_at_unchanged_spacing(examples) -> None:
    seg = sitk.ReadImage(str(examples / "example_seg.nii.gz"))
    grid = SliceGrid.from_image(seg, None, 128)
    stack = grid.forward(seg, "nearest")
    assert stack.dtype == np.uint8
    back = grid.inverse(stack, "nearest")
    assert _geometry(back) == _geometry(seg)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(seg))


def test_canonical_slices_are_radiological_axial() -> None:
    # RAS-stored volume: voxel (0, 0) lies at the largest physical x and y, i.e. the patient's most left
    # and posterior point, so in canonical LPS (column 0 = patient's right, row 0 = anterior) it is last.
    arr = np.zeros((3, 4, 5), np.float32)
    arr[:, 0, 0] = 1.0
    img = _image(arr, direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    grid = SliceGrid.from_image(img, None, 5)
    stack = grid.forward(img, "nearest")
    canon = sitk.GetArrayFromImage(to_canonical(img))
    assert canon[0, -1, -1] == 1.0
    np.testing.assert_array_equal(stack[:, :4, :], canon)  # 4 rows padded to 5 at the bottom (offset 0)


def test_oblique_image_round_trip_keeps_geometry_and_labels_exactly() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, size=(24, 11, 17), dtype=np.uint16)  # (z, y, x) of the stored array
    img = _image(labels, spacing=(0.8, 1.3, 2.1), origin=(12.5, -30.25, 7.0), direction=OBLIQUE)
    grid = SliceGrid.from_image(img, None, 32)
    _assert_canonical_geometry(img, grid)
    stack = grid.forward(img, "nearest")
    assert stack.shape[0] == grid.n_slices and stack.dtype == np.uint16
    back = grid.inverse(stack, "nearest")
    assert _geometry(back) == _geometry(img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def _smooth(shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape_zyx, spacing_xyz[::-1])], indexing="ij")
    return (np.sin(x / 25.0) * np.cos(y / 30.0) + 0.5 * np.sin(z / 20.0)).astype(np.float32)


@pytest.mark.parametrize("spacing_xy", [1.0, 1.25, 2.0])
def test_resampling_round_trip_of_a_smooth_image_is_close(spacing_xy: float) -> None:
    shape, spacing = (8, 40, 50), (3.0, 3.0, 3.0)
    img = _image(_smooth(shape, spacing), spacing=spacing, origin=(-70.0, 20.0, 3.0), direction=OBLIQUE)
    grid = SliceGrid.from_image(img, spacing_xy, 192)
    assert grid.spacing_xy == (spacing_xy, spacing_xy)
    back = grid.inverse(grid.forward(img), "linear")
    assert _geometry(back) == _geometry(img)
    err = np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(img))
    assert err.max() < 0.03 and err.mean() < 0.005  # values span [-1.5, 1.5]


def test_model_grid_is_centred_on_the_image() -> None:
    arr = np.zeros((3, 21, 31), np.float32)
    arr[:, 10, 15] = 1.0  # the centre voxel
    img = _image(arr, spacing=(2.0, 2.0, 4.0))
    stack = SliceGrid.from_image(img, 1.0, 64).forward(img)[1]
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    centroid = ((rows * stack).sum() / stack.sum(), (cols * stack).sum() / stack.sum())
    assert centroid == pytest.approx((31.5, 31.5), abs=1e-6)  # (size - 1) / 2


def test_crop_keeps_the_centre_and_inverse_fills_the_rest() -> None:
    arr = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    img = _image(arr)
    grid = SliceGrid.from_image(img, None, 6)
    stack = grid.forward(img)
    np.testing.assert_array_equal(stack, arr[:, 2:8, 3:9])
    back = sitk.GetArrayFromImage(grid.inverse(stack, fill_value=-1.0))
    np.testing.assert_array_equal(back[:, 2:8, 3:9], arr[:, 2:8, 3:9])
    assert (back[:, :2] == -1.0).all() and (back[:, :, :3] == -1.0).all()


def test_slice_grid_rejects_mismatched_inputs() -> None:
    img = _image(np.zeros((3, 8, 8), np.float32))
    grid = SliceGrid.from_image(img, None, 8)
    with pytest.raises(Seg2MedError, match=r"\(3, 8, 9\)"):
        grid.forward_array(np.zeros((3, 8, 9)))
    with pytest.raises(Seg2MedError, match="does not match"):
        grid.forward(_image(np.zeros((3, 8, 8), np.float32), spacing=(2.0, 1.0, 1.0)))
    with pytest.raises(Seg2MedError, match=r"\(3, 7, 7\)"):
        grid.inverse(np.zeros((3, 7, 7)))
    with pytest.raises(Seg2MedError, match="cubic"):
        grid.forward(img, "cubic")  # type: ignore[arg-type]
    with pytest.raises(Seg2MedError, match="-1"):
        SliceGrid.from_image(img, -1.0, 8)


_PERMUTATIONS = [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    (0, 0, 1, 1, 0, 0, 0, 1, 0),
    (0, -1, 0, 0, 0, -1, 1, 0, 0),
    (0, 0, -1, 0, 1, 0, -1, 0, 0),
]


@settings(max_examples=25, deadline=None)
@given(
    direction=st.sampled_from(_PERMUTATIONS),
    shape=st.tuples(st.integers(1, 6), st.integers(2, 9), st.integers(2, 9)),
    spacing=st.tuples(*[st.floats(0.5, 4.0)] * 3),
    size=st.integers(2, 12),
)
def test_forward_inverse_is_exact_for_any_permutation(direction, shape, spacing, size) -> None:
    arr = np.arange(np.prod(shape), dtype=np.int32).reshape(shape) + 1
    img = _image(arr, spacing=spacing, origin=(1.0, -2.0, 3.5), direction=[float(v) for v in direction])
    grid = SliceGrid.from_image(img, None, size)
    _assert_canonical_geometry(img, grid)
    back = grid.inverse(grid.forward(img, "nearest"), "nearest", fill_value=0)
    assert _geometry(back) == _geometry(img)
    got, canon = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(to_canonical(img))
    kept = got > 0  # voxels inside the (possibly cropped) model grid come back unchanged
    np.testing.assert_array_equal(got[kept], arr[kept])
    n_y, n_x = canon.shape[1:]
    assert kept.sum() == canon.shape[0] * min(n_y, size) * min(n_x, size)
