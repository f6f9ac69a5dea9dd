"""Procedural phantom: valid `total` labels, anatomy on the right side, sizes in documented ranges."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import TISSUE_OFFSET, names_for
from seg2med_core.phantom import SIZE_RANGES, make_phantom

IDS = {name: i for i, name in names_for("total").items()}
TISSUE = {TISSUE_OFFSET + 1, TISSUE_OFFSET + 2, TISSUE_OFFSET + 3}
HEIGHTS = (150.0, 165.0, 175.0, 190.0, 205.0)
CASES = [(seed, sex, HEIGHTS[seed % len(HEIGHTS)]) for seed in range(7) for sex in ("male", "female")]
SP = 4.0  # coarse spacing keeps the seed loop fast
VOXEL_ML = SP**3 / 1000.0


@pytest.fixture(scope="module")
def phantoms():
    return {case: make_phantom(case[0], sex=case[1], height_cm=case[2], spacing=(SP, SP, SP)) for case in CASES}


def _centroid_lps(seg, name: str) -> np.ndarray:
    """Physical (LPS) centroid of a structure, computed with the image geometry."""
    arr = sitk.GetArrayViewFromImage(seg.image)
    idx = np.argwhere(arr == IDS[name])
    assert len(idx), f"{name} missing"
    zyx = idx.mean(axis=0)
    return np.array(seg.image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1])))


def _volume_ml(arr: np.ndarray, name: str) -> float:
    return float((arr == IDS[name]).sum()) * VOXEL_ML


def _length_mm(arr: np.ndarray, name: str) -> float:
    """Extent along the principal axis (+ one voxel), e.g. the kidney's pole-to-pole length."""
    pts = np.argwhere(arr == IDS[name]).astype(float) * SP
    pts -= pts.mean(axis=0)
    axis = np.linalg.svd(pts, full_matrices=False)[2][0]
    proj = pts @ axis
    return float(proj.max() - proj.min() + SP)


def _in(value: float, key: str, tol: float = 0.0) -> bool:
    lo, hi = SIZE_RANGES[key]
    return lo - tol <= value <= hi + tol


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-{c[1]}-{int(c[2])}")
def test_phantom_properties(phantoms, case) -> None:
    seg = phantoms[case]
    seed, sex, _ = case
    arr = sitk.GetArrayFromImage(seg.image)
    assert seg.label_set == "total"
    assert seg.image.GetPixelID() == sitk.sitkUInt16
    assert np.allclose(seg.image.GetDirection(), np.eye(3).ravel())

    # label ids are valid for `total` (+ tissue ids) and the names embedded match the class map
    present = set(np.unique(arr).tolist()) - {0}
    assert present <= set(names_for("total"))
    assert TISSUE <= present
    for i in present:
        assert seg.names[i] == names_for("total")[i]
    required = [
        "liver", "spleen", "kidney_left", "kidney_right", "pancreas", "stomach", "gallbladder", "aorta",
        "inferior_vena_cava", "small_bowel", "colon", "urinary_bladder", "spinal_cord", "sacrum",
        "hip_left", "hip_right", "femur_left", "femur_right", "lung_lower_lobe_left", "lung_lower_lobe_right",
        "rib_left_10", "rib_right_10", "vertebrae_L3", "vertebrae_T12",
    ]
    for name in required:
        assert IDS[name] in present, name
    assert (IDS["prostate"] in present) == (sex == "male")

    # every structure is inside the body: no organ voxel touches the air outside the skin
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    body = ndimage.binary_fill_holes(arr > 0, structure=in_plane)  # per axial slice
    air_border = ndimage.binary_dilation(~body, structure=in_plane)
    organs = (arr > 0) & ~np.isin(arr, list(TISSUE))
    assert not (organs & air_border).any()

    # sides in patient coordinates (LPS: larger x = patient left)
    c = {n: _centroid_lps(seg, n) for n in ("liver", "spleen", "kidney_left", "kidney_right", "hip_left", "hip_right",
                                            "femur_left", "femur_right", "rib_left_10", "rib_right_10", "stomach", "aorta",
                                            "inferior_vena_cava", "gallbladder", "urinary_bladder", "vertebrae_L3")}
    assert c["kidney_left"][0] > 0 > c["kidney_right"][0]
    assert c["spleen"][0] > 0 > c["liver"][0]
    assert c["stomach"][0] > 0 and c["gallbladder"][0] < 0
    assert c["aorta"][0] > c["inferior_vena_cava"][0]
    for pair in ("hip", "femur", "rib_{}_10"):
        left = c[pair.format("left") if "{}" in pair else f"{pair}_left"]
        right = c[pair.format("right") if "{}" in pair else f"{pair}_right"]
        assert left[0] > 0 > right[0], pair
    # craniocaudal/AP order: liver above kidneys above bladder; kidneys posterior to the liver centre;
    # right kidney lower than the left (displaced by the liver)
    assert c["liver"][2] > c["kidney_right"][2] > c["urinary_bladder"][2]
    assert c["kidney_right"][2] < c["kidney_left"][2]
    assert c["kidney_left"][1] > c["stomach"][1]
    assert c["urinary_bladder"][1] < c["vertebrae_L3"][1]  # bladder anterior to the spine
    levels = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10"]
    zs = [_centroid_lps(seg, f"vertebrae_{lv}")[2] for lv in levels]
    assert np.all(np.diff(zs) > 0)
    lumbar = np.diff(zs[1:6])
    assert all(_in(d, "lumbar_segment", tol=SP) for d in lumbar), lumbar

    # sizes within the documented adult ranges (one voxel of tolerance for lengths)
    for name in ("liver", "spleen", "pancreas", "gallbladder", "urinary_bladder"):
        assert _in(_volume_ml(arr, name), name), (name, _volume_ml(arr, name))
    for side in ("left", "right"):
        assert _in(_volume_ml(arr, f"kidney_{side}"), "kidney_volume"), (side, _volume_ml(arr, f"kidney_{side}"))
        assert _in(_length_mm(arr, f"kidney_{side}"), "kidney_length", tol=SP), (side, _length_mm(arr, f"kidney_{side}"))
    if sex == "male":
        assert _in(_volume_ml(arr, "prostate"), "prostate"), _volume_ml(arr, "prostate")
    # abdominal aorta: equivalent diameter of its cross-section at L3
    k = int(round(seg.image.TransformPhysicalPointToContinuousIndex(tuple(c["vertebrae_L3"]))[2]))
    area = float((arr[k] == IDS["aorta"]).sum()) * SP * SP
    assert _in(2.0 * np.sqrt(area / np.pi), "aorta_diameter", tol=SP)


def test_phantoms_vary_with_seed_sex_and_height(phantoms) -> None:
    a = sitk.GetArrayViewFromImage(phantoms[(0, "male", 150.0)].image)
    b = sitk.GetArrayViewFromImage(phantoms[(1, "male", 165.0)].image)
    assert a.shape != b.shape or (a != b).mean() > 0.05
    short = make_phantom(2, height_cm=155.0, spacing=(SP, SP, SP))
    tall = make_phantom(2, height_cm=195.0, spacing=(SP, SP, SP))
    assert tall.image.GetSize()[2] > short.image.GetSize()[2] * 1.15
    male = phantoms[(3, "male", 190.0)]
    female = phantoms[(3, "female", 190.0)]
    hip_w = [abs(_centroid_lps(s, "hip_left")[0] - _centroid_lps(s, "hip_right")[0]) for s in (male, female)]
    assert hip_w[1] > hip_w[0]  # wider female pelvis


def test_phantom_is_deterministic() -> None:
    a = make_phantom(5, region="pelvis", spacing=(SP, SP, SP))
    b = make_phantom(5, region="pelvis", spacing=(SP, SP, SP))
    assert np.array_equal(sitk.GetArrayViewFromImage(a.image), sitk.GetArrayViewFromImage(b.image))
    assert a.image.GetOrigin() == b.image.GetOrigin()


def test_regions_cover_the_expected_anatomy() -> None:
    pel = sitk.GetArrayFromImage(make_phantom(0, region="pelvis", spacing=(SP, SP, SP)).image)
    abd = sitk.GetArrayFromImage(make_phantom(0, region="abdomen", spacing=(SP, SP, SP)).image)
    for name in ("femur_left", "hip_right", "urinary_bladder", "sacrum"):
        assert (pel == IDS[name]).any(), name
    assert not (pel == IDS["liver"]).any()
    for name in ("liver", "spleen", "lung_lower_lobe_right", "vertebrae_T11"):
        assert (abd == IDS[name]).any(), name
    assert not (abd == IDS["femur_left"]).any()


def test_phantom_speed_at_3mm() -> None:
    make_phantom(0, region="abdomen", spacing=(6.0, 6.0, 6.0))  # warm caches (label maps, imports)
    t0 = time.process_time()  # CPU time: robust to other jobs sharing the machine (the code is single-threaded)
    seg = make_phantom(1, region="abdomen-pelvis", spacing=(3.0, 3.0, 3.0))
    elapsed = time.process_time() - t0
    assert seg.image.GetSpacing() == (3.0, 3.0, 3.0)
    assert elapsed < 2.0, f"phantom took {elapsed:.2f} s of CPU time (budget 2 s)"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sex": "other"}, "sex"),
        ({"region": "thorax"}, "region"),
        ({"height_cm": 90.0}, "height"),
        ({"spacing": (3.0, 3.0)}, "spacing"),
        ({"spacing": (0.0, 3.0, 3.0)}, "spacing"),
    ],
)
def test_bad_arguments_raise_seg2med_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(Seg2MedError, match=fragment):
        make_phantom(0, **kwargs)
