"""DICOM series output: UIDs, DERIVED/SECONDARY, source attributes on request, geometry read back, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")

from seg2med_core import cli, dicom_out, io  # noqa: E402
from seg2med_core.errors import Seg2MedError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _volume(direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0), dtype=np.int16) -> sitk.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1500, size=(5, 12, 14)).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7031250000001, 0.9, 2.5))
    img.SetOrigin((-183.00000762939453, 12.25, -40.125))
    img.SetDirection(direction)
    return img


def _files(folder: Path) -> list:
    return [pydicom.dcmread(str(f)) for f in sorted(folder.glob("*.dcm"))]


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    """Same voxel grid to 1e-9 mm (DICOM stores positions as 16-character decimal strings)."""
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-12)


def test_ct_series_reads_back_with_the_same_geometry_and_values(tmp_path: Path) -> None:
    img = _volume()
    out = dicom_out.write_dicom_series(img, tmp_path / "sct", "ct")
    back = io.read_image(out)
    assert_same_grid(back, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    files = _files(out)
    assert len(files) == 5
    first = files[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"] and first.Modality == "CT"
    assert first.SOPClassUID == dicom_out.CT_IMAGE_STORAGE and first.PatientName == "seg2med^synthetic"
    assert len({f.SOPInstanceUID for f in files}) == 5 and len({f.SeriesInstanceUID for f in files}) == 1
    again = _files(dicom_out.write_dicom_series(img, tmp_path / "again", "ct"))[0]
    assert again.StudyInstanceUID != first.StudyInstanceUID and again.SeriesInstanceUID != first.SeriesInstanceUID


def test_mr_float_values_are_rescaled_within_one_step(tmp_path: Path) -> None:
    img = sitk.Cast(_volume(), sitk.sitkFloat32) * 0.731 + 1000.5
    out = dicom_out.write_dicom_series(img, tmp_path / "smr", "mr")
    back = io.read_image(out)
    assert_same_grid(back, img)
    ds = _files(out)[0]
    assert ds.SOPClassUID == dicom_out.MR_IMAGE_STORAGE and ds.Modality == "MR"
    err = np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(img)).max()
    assert err <= float(ds.RescaleSlope) / 2 + 1e-6


def test_left_handed_grid_is_written_with_the_slices_reversed(tmp_path: Path) -> None:
    img = _volume(direction=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # LAS-like, det -1
    lines: list[str] = []
    back = io.read_image(dicom_out.write_dicom_series(img, tmp_path / "las", "ct", info=lines.append))
    assert "left-handed" in lines[0]
    flipped = sitk.Flip(img, [False, False, True], False)
    assert_same_grid(back, flipped)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(flipped))


def test_source_attributes_only_when_asked(tmp_path: Path) -> None:
    src = dicom_out.write_dicom_series(_volume(), tmp_path / "src", "ct")
    for f in src.glob("*.dcm"):  # pretend this is the patient's scan
        ds = pydicom.dcmread(str(f))
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Doe^Jane", "P123", "A42"
        ds.save_as(str(f))
    source = _files(src)[0]
    plain = _files(dicom_out.write_dicom_series(_volume(), tmp_path / "plain", "ct"))[0]
    assert plain.PatientID == "SEG2MED" and plain.StudyInstanceUID != source.StudyInstanceUID
    copied = _files(dicom_out.write_dicom_series(_volume(), tmp_path / "copied", "ct", source=src))[0]
    assert (copied.PatientName, copied.PatientID, copied.AccessionNumber) == ("Doe^Jane", "P123", "A42")
    assert copied.StudyInstanceUID == source.StudyInstanceUID and copied.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert copied.SeriesInstanceUID != source.SeriesInstanceUID and copied.SOPInstanceUID != source.SOPInstanceUID


def test_bad_dicom_outputs(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(Seg2MedError, match="is not empty"):
        dicom_out.write_dicom_series(_volume(), full, "ct")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(Seg2MedError, match="contains no readable DICOM file"):
        dicom_out.read_source_attributes(full)


def test_cli_synthesize_to_a_dicom_folder(synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    nifti, series = tmp_path / "sct.nii.gz", tmp_path / "sct_dicom"
    base = ["synthesize", "--seg", str(synthetic_case["seg"]), "--model", str(tiny_bundle), "--steps", "2",
            "--progress-format", "none"]
    assert cli.main([*base, "--out", str(nifti)]) == 0
    assert cli.main([*base, "--out", f"{series}/"]) == 0
    a, b = io.read_image(nifti), io.read_image(series)
    assert_same_grid(b, a)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert cli.main([*base, "--out", f"{bad}/", "--dicom-source", str(tmp_path / "nope")]) == 2
    assert "--dicom-source" in capsys.readouterr().err and not bad.exists()
    assert cli.main([*base, "--out", str(nifti), "--dicom-source", str(series)]) == 2
    assert "needs a DICOM --out folder" in capsys.readouterr().err


@pytest.mark.data
def test_dicom_image_with_a_y_flipped_totalsegmentator_nifti(examples: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The common case of issue 11: the image is a DICOM series, TotalSegmentator's NIfTI has y the other way."""
    from test_grids import y_flipped

    ct = io.read_image(examples / "example_ct_sm.nii.gz")
    series = dicom_out.write_dicom_series(sitk.Cast(ct, sitk.sitkInt16), tmp_path / "ct_dicom", "ct")
    dicom_image = io.read_image(series)
    seg = io.read_segmentation(examples / "example_seg.nii.gz")
    on_dicom_grid = sitk.Resample(seg.image, dicom_image, sitk.Transform(), sitk.sitkNearestNeighbor)
    flipped = tmp_path / "seg_from_totalsegmentator.nii.gz"
    io.write_segmentation(io.Segmentation(y_flipped(on_dicom_grid), seg.names, seg.label_set), flipped)
    out = tmp_path / "prior.nii.gz"
    assert cli.main(["prior", "--seg", str(flipped), "--image", str(series), "--modality", "ct", "--out", str(out),
                     "--progress-format", "none"]) == 0
    assert "another axis order" in capsys.readouterr().err
    assert_same_grid(io.read_image(out), dicom_image)
