"""Segmentations on the image grid in another axis order (reoriented exactly), real grid mismatches, --resample-seg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, grids, io
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for


def geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def _labels(shape: tuple[int, int, int] = (6, 36, 40)) -> np.ndarray:
    """(z, y, x) label array with a body-sized spleen/liver pair that is not symmetric in any axis."""
    nz, ny, nx = shape
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    arr = np.zeros(shape, np.uint16)
    arr[((x - 14) / 6.0) ** 2 + ((y - 13) / 5.0) ** 2 <= 1] = 5
    arr[(((x - 28) / 3.0) ** 2 + ((y - 22) / 4.0) ** 2 <= 1) & (z < nz - 1)] = 1
    return arr


def _image(arr: np.ndarray, spacing=(2.0, 2.5, 4.0), origin=(-40.0, 30.0, 12.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def y_flipped(img: sitk.Image) -> sitk.Image:
    """What TotalSegmentator writes for a DICOM series: the same voxels with the y axis running the other way
    (array flipped, direction's y column negated, origin moved to the other end of y) - built by hand."""
    arr = sitk.GetArrayFromImage(img)[:, ::-1, :]
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    origin = np.array(img.GetOrigin()) + d[:, 1] * sp[1] * (img.GetSize()[1] - 1)
    d[:, 1] *= -1
    out.SetSpacing(tuple(sp))
    out.SetOrigin(tuple(origin))
    out.SetDirection(tuple(d.flatten()))
    return out


def permuted(img: sitk.Image) -> sitk.Image:
    """x and y swapped and z flipped, built with numpy and hand-made geometry."""
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    new = np.ascontiguousarray(np.transpose(arr, (0, 2, 1))[::-1])  # new axes: x'=y, y'=x, z'=-z
    out = sitk.GetImageFromArray(new)
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    nd = np.stack([d[:, 1], d[:, 0], -d[:, 2]], axis=1)
    origin = np.array(img.GetOrigin()) + d[:, 2] * sp[2] * (img.GetSize()[2] - 1)
    out.SetSpacing((sp[1], sp[0], sp[2]))
    out.SetOrigin(tuple(origin))
    out.SetDirection(tuple(nd.flatten()))
    return out


# ------------------------------------------------------------------------------------------ core
@pytest.mark.parametrize("make", [y_flipped, permuted], ids=["y-flip", "permute-and-flip"])
def test_same_grid_in_another_axis_order_is_brought_on_exactly(make) -> None:  # noqa: ANN001
    arr = _labels()
    image = _image(np.zeros_like(arr, dtype=np.int16))
    seg = make(_image(arr))
    assert not io.same_geometry(seg, image)
    lines: list[str] = []
    out = grids.match_to_grid(seg, image, "segmentation 's.nii.gz'", "image 'i.nii.gz'", info=lines.append)
    assert geometry(out) == geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), arr)  # every voxel, no interpolation
    assert len(lines) == 1 and "another axis order" in lines[0] and "without interpolation" in lines[0]
    assert "segmentation 's.nii.gz'" in lines[0]


def test_physical_positions_agree_after_reordering() -> None:
    arr = _labels()
    seg = permuted(_image(arr))
    image = _image(np.zeros_like(arr, dtype=np.int16))
    out = grids.match_to_grid(seg, image, "s", "i")
    for index in [(0, 0, 0), (39, 35, 5), (7, 20, 3)]:
        point = out.TransformIndexToPhysicalPoint(index)
        src_index = seg.TransformPhysicalPointToIndex(point)
        assert seg[src_index] == out[index]


def test_header_rounding_is_tolerated() -> None:
    arr = _labels()
    image = _image(np.zeros_like(arr, dtype=np.int16))
    seg = y_flipped(_image(arr))
    seg.SetOrigin(tuple(np.array(seg.GetOrigin()) + 1e-5))  # float32 rounding in a NIfTI header
    out = grids.match_to_grid(seg, image, "s", "i")
    assert geometry(out) == geometry(image)


def test_identical_grid_is_returned_unchanged() -> None:
    image = _image(_labels())
    assert grids.match_to_grid(image, image, "s", "i") is image


def test_really_different_grid_names_what_differs() -> None:
    arr = _labels()
    image = _image(np.zeros_like(arr, dtype=np.int16))
    seg = _image(arr, spacing=(2.0, 2.5, 3.0))
    with pytest.raises(Seg2MedError) as err:
        grids.match_to_grid(seg, image, "segmentation 's.nii.gz'", "image 'i.nii.gz'")
    msg = str(err.value)
    assert "\n" not in msg
    assert "spacing (2, 2.5, 3) vs (2, 2.5, 4)" in msg and "size" not in msg and "origin" not in msg
    assert "--resample-seg" in msg  # they overlap, so resampling would work


def test_flip_plus_a_shift_is_not_taken_for_a_reorder() -> None:
    arr = _labels()
    image = _image(np.zeros_like(arr, dtype=np.int16))
    seg = y_flipped(_image(arr))
    seg.SetOrigin(tuple(np.array(seg.GetOrigin()) + (0.0, 5.0, 0.0)))
    with pytest.raises(Seg2MedError, match=r"after reordering the axes, origin \(-40, 35, 12\) vs \(-40, 30, 12\)"):
        grids.match_to_grid(seg, image, "s", "i")


def test_resample_nearest_on_request_and_no_overlap_error() -> None:
    arr = _labels()
    image = _image(np.zeros_like(arr, dtype=np.int16))
    fine = sitk.Resample(_image(arr), [80, 72, 12], sitk.Transform(), sitk.sitkNearestNeighbor, (-40.5, 29.375, 11.0),
                         (1.0, 1.25, 2.0), image.GetDirection(), 0, sitk.sitkUInt16)
    lines: list[str] = []
    out = grids.match_to_grid(fine, image, "s", "i", resample=True, info=lines.append)
    assert geometry(out) == geometry(image) and "nearest neighbour" in lines[0]
    assert set(np.unique(sitk.GetArrayFromImage(out))) <= {0, 1, 5}  # labels stay labels
    assert np.mean(sitk.GetArrayFromImage(out) == arr) > 0.97
    far = _image(arr, origin=(1000.0, 0.0, 0.0))
    with pytest.raises(Seg2MedError, match="does not overlap"):
        grids.match_to_grid(far, image, "s", "i", resample=True)
    with pytest.raises(Seg2MedError, match="do not overlap at all") as err:
        grids.match_to_grid(far, image, "s", "i")
    assert "--resample-seg" not in str(err.value)


def test_check_same_geometry_says_which_parts_differ() -> None:
    a = _image(_labels())
    b = _image(_labels(), origin=(0.0, 0.0, 0.0))
    with pytest.raises(Seg2MedError, match=r"different geometry \(origin differ\)"):
        io.check_same_geometry(a, b, "a", "b")


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def case(tmp_path: Path) -> dict[str, Path]:
    arr = _labels()
    ct = np.full(arr.shape, -1000, np.int16)
    z, y, x = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1], 0 : arr.shape[2]]
    ct[((x - 20) / 17.0) ** 2 + ((y - 18) / 15.0) ** 2 <= 1] = 30
    paths = {k: tmp_path / f"{k}.nii.gz" for k in ("ct", "seg", "flipped", "coarse")}
    io.write_image(_image(ct), paths["ct"])
    io.write_segmentation(io.Segmentation(_image(arr), names_for("total"), "total"), paths["seg"])
    io.write_segmentation(io.Segmentation(y_flipped(_image(arr)), names_for("total"), "total"), paths["flipped"])
    coarse = _image(arr[::2], spacing=(2.0, 2.5, 8.0), origin=(-40.0, 30.0, 14.0))
    io.write_segmentation(io.Segmentation(coarse, names_for("total"), "total"), paths["coarse"])
    return paths


def test_cli_prior_accepts_the_flipped_segmentation(case: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ref, out = tmp_path / "ref.nii.gz", tmp_path / "out.nii.gz"
    base = ["prior", "--modality", "ct", "--image", str(case["ct"]), "--progress-format", "none"]
    assert cli.main([*base, "--seg", str(case["seg"]), "--out", str(ref)]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--seg", str(case["flipped"]), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("another axis order") == 1 and "flipped" in err
    a, b = sitk.ReadImage(str(ref)), sitk.ReadImage(str(out))
    assert geometry(a) == geometry(b) == geometry(sitk.ReadImage(str(case["ct"])))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_cli_different_grid_is_one_line_error_and_resample_seg_works(case: dict[str, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.nii.gz"
    args = ["prior", "--modality", "ct", "--image", str(case["ct"]), "--seg", str(case["coarse"]), "--out", str(out),
            "--progress-format", "none"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg2med: error: ") and "\n" not in err
    assert str(case["coarse"]) in err and "size (40, 36, 3) vs (40, 36, 6)" in err and "spacing" in err
    assert not out.exists() and not list(tmp_path.glob("out*"))
    assert cli.main([*args, "--resample-seg"]) == 0
    assert "resampled onto the grid" in capsys.readouterr().err
    assert geometry(sitk.ReadImage(str(out))) == geometry(sitk.ReadImage(str(case["ct"])))


@pytest.mark.data
def test_real_example_with_y_flipped_segmentation(examples: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The real CT example and its TotalSegmentator labels with the y axis stored the other way round."""
    seg = io.read_segmentation(examples / "example_seg.nii.gz")
    flipped = tmp_path / "seg_flipped.nii.gz"
    io.write_segmentation(io.Segmentation(y_flipped(seg.image), seg.names, seg.label_set), flipped)
    image = str(examples / "example_ct_sm.nii.gz")
    ref, out = tmp_path / "ref.nii.gz", tmp_path / "out.nii.gz"
    assert cli.main(["prior", "--modality", "ct", "--image", image, "--seg", str(examples / "example_seg.nii.gz"),
                     "--out", str(ref), "--progress-format", "none"]) == 0
    capsys.readouterr()
    assert cli.main(["prior", "--modality", "ct", "--image", image, "--seg", str(flipped), "--out", str(out),
                     "--progress-format", "none"]) == 0
    assert "another axis order (y axis flipped)" in capsys.readouterr().err
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ref))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(out))))
    assert geometry(sitk.ReadImage(str(out))) == geometry(sitk.ReadImage(image))
