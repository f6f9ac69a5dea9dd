"""Reading/writing images and segmentations: formats, geometry, names, bad input, atomic writes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import io
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for

ROT = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z: a non-trivial direction


def _image(arr: np.ndarray, spacing=(0.8, 1.25, 2.5), origin=(-10.5, 20.25, 3.0), direction=ROT) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _labels() -> np.ndarray:
    """(z, y, x) = (5, 6, 7): liver block, kidney_left inside it (overlap resolved on write), spleen."""
    arr = np.zeros((5, 6, 7), np.uint16)
    arr[1:4, 1:5, 1:6] = 5  # liver
    arr[2, 2:4, 2:4] = 3  # kidney_left (small, inner)
    arr[0, 0, :3] = 1  # spleen
    arr[4, 5, 6] = 202  # torso_fat (tissue id)
    return arr


def _seg() -> io.Segmentation:
    return io.Segmentation(_image(_labels()), names_for("total"), "total")


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------------- reading images


def test_read_image_roundtrip_keeps_geometry(tmp_path: Path) -> None:
    img = _image(np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        out = io.write_image(img, tmp_path / f"a{suffix}")
        back = io.read_image(out)
        _same_geometry(img, back)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    _no_leftovers(tmp_path)


def test_read_image_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match="'.*missing.nii.gz' does not exist"):
        io.read_image(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    with pytest.raises(Seg2MedError, match="junk.nii.gz' cannot be read"):
        io.read_image(junk)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(Seg2MedError, match="flat.nii.gz' is 2D"):
        io.read_image(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False), str(tmp_path / "time.nii.gz"))
    with pytest.raises(Seg2MedError, match="time.nii.gz' is 4D"):
        io.read_image(tmp_path / "time.nii.gz")
    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(Seg2MedError, match="nan.nii.gz' has 1 NaN"):
        io.read_image(tmp_path / "nan.nii.gz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(Seg2MedError, match="no DICOM series"):
        io.read_image(tmp_path / "empty_dir")


def test_read_dicom_folder(tmp_path: Path) -> None:
    arr = (np.arange(3 * 4 * 5).reshape(3, 4, 5) * 7 - 100).astype(np.int16)
    img = _image(arr, spacing=(0.5, 0.5, 2.0), origin=(1.0, 2.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = img[:, :, k]
        for tag, value in {"0020|000e": "1.2.3.4.5", "0020|0013": str(k + 1), "0008|0060": "CT",
                           "0020|0032": "\\".join(f"{v}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "2.0"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"s{k}.dcm"))
        writer.Execute(sl)
    back = io.read_image(tmp_path)
    assert back.GetSize() == img.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)


# ------------------------------------------------------------------------------------- reading segmentations


def test_header_names_match_total(examples: Path) -> None:
    path = examples / "example_seg_fast_force_split.nii.gz"
    names = io.nifti_label_names(path)
    assert names is not None and names == names_for("total", include_tissue=False)
    seg = io.read_segmentation(path)
    assert seg.label_set == "total" and seg.image.GetPixelID() == sitk.sitkUInt16
    raw = sitk.ReadImage(str(path))
    _same_geometry(raw, seg.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(raw), seg.array())
    mr = io.read_segmentation(examples / "example_seg_mr.nii.gz")
    assert mr.label_set == "total_mr"
    with pytest.raises(Seg2MedError, match="names differ from label set 'total'.*lung_right"):
        io.read_segmentation(examples / "example_seg_mr.nii.gz", "total")


def test_multilabel_nifti_roundtrip_with_names(tmp_path: Path) -> None:
    seg = _seg()
    out = io.write_segmentation(seg, tmp_path / "seg.nii.gz")
    assert io.nifti_label_names(out) == {1: "spleen", 3: "kidney_left", 5: "liver", 202: "torso_fat"}
    back = io.read_segmentation(out)
    assert back.label_set == "total"
    _same_geometry(seg.image, back.image)
    np.testing.assert_array_equal(back.array(), _labels())
    _no_leftovers(tmp_path)


def test_mask_folder_roundtrip_smaller_structure_wins(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    arr = _labels()
    liver = (arr == 5) | (arr == 3)  # TotalSegmentator masks overlap: the liver mask also covers the kidney
    for name, mask in {"liver": liver, "kidney_left": arr == 3, "spleen": arr == 1, "torso_fat": arr == 202,
                       "gallbladder": np.zeros_like(liver)}.items():
        io.write_image(_image(mask.astype(np.uint8)), folder / f"{name}.nii.gz")
    seg = io.read_segmentation(folder)
    assert seg.label_set == "total"
    np.testing.assert_array_equal(seg.array(), arr)
    _same_geometry(_seg().image, seg.image)


def test_mask_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Seg2MedError, match="contains no mask files"):
        io.read_segmentation(empty)
    folder = tmp_path / "m"
    folder.mkdir()
    io.write_image(_image(np.zeros((5, 6, 7), np.uint8)), folder / "liver.nii.gz")
    with pytest.raises(Seg2MedError, match="is empty"):
        io.read_segmentation(folder)
    io.write_image(_image(np.ones((5, 6, 7), np.uint8), spacing=(1, 1, 1)), folder / "spleen.nii.gz")
    with pytest.raises(Seg2MedError, match="different geometry.*spacing=\\(0.8, 1.25, 2.5\\).*spacing=\\(1, 1, 1\\)"):
        io.read_segmentation(folder)
    io.write_image(_image(np.ones((5, 6, 7), np.uint8)), folder / "spleen.nii.gz")
    io.write_image(_image(np.ones((5, 6, 7), np.uint8)), folder / "banana.nii.gz")
    with pytest.raises(Seg2MedError, match="not in label set 'total': banana"):
        io.read_segmentation(folder, "total")
    (folder / "banana.nii.gz").unlink()
    io.write_image(_image(np.full((5, 6, 7), 7, np.uint8)), folder / "spleen.nii.gz")
    with pytest.raises(Seg2MedError, match="spleen.nii.gz' has values other than 0 and 1 \\(e.g. 7\\)"):
        io.read_segmentation(folder)


def test_seg_nrrd_roundtrip(tmp_path: Path) -> None:
    seg = _seg()
    out = io.write_segmentation(seg, tmp_path / "seg.seg.nrrd")
    import slicerio

    raw = slicerio.read_segmentation(str(out))
    assert sorted(s["name"] for s in raw["segments"]) == ["kidney_left", "liver", "spleen", "torso_fat"]
    back = io.read_segmentation(out)
    assert back.label_set == "total"
    np.testing.assert_array_equal(back.array(), _labels())
    _same_geometry(seg.image, back.image)
    _no_leftovers(tmp_path)


def test_seg_nrrd_overlapping_layers_and_slicer_names(tmp_path: Path) -> None:
    """Slicer may store overlapping segments in layers and name them with spaces/capitals."""
    import slicerio

    arr = _labels()
    img = _seg().image
    m = np.eye(4)
    m[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    seg = slicerio.create_segmentation(arr.shape[::-1], m)
    ijk = lambda a: np.transpose(a, (2, 1, 0))  # noqa: E731
    slicerio.add_segment(seg, ijk((arr == 5) | (arr == 3)), {"name": "Liver"})
    slicerio.add_segment(seg, ijk(arr == 3), {"name": "kidney left"})
    slicerio.add_segment(seg, ijk(arr == 1), {"id": "spleen", "name": "Milz"})  # translated name, class ID
    assert seg["voxels"].ndim == 4  # overlap forced a second layer
    slicerio.write_segmentation(str(tmp_path / "s.seg.nrrd"), seg)
    back = io.read_segmentation(tmp_path / "s.seg.nrrd")
    expected = np.where(np.isin(arr, (1, 3, 5)), arr, 0)
    np.testing.assert_array_equal(back.array(), expected)


def test_bad_segmentations(tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match="segmentation '.*nope.nii.gz' does not exist"):
        io.read_segmentation(tmp_path / "nope.nii.gz")
    frac = np.zeros((3, 4, 5), np.float32)
    frac[1, 1, 1] = 1.5
    io.write_image(_image(frac), tmp_path / "frac.nii.gz")
    with pytest.raises(Seg2MedError, match="frac.nii.gz' has non-integer labels \\(e.g. 1.5\\)"):
        io.read_segmentation(tmp_path / "frac.nii.gz")
    io.write_image(_image(np.zeros((3, 4, 5), np.uint8)), tmp_path / "zero.nii.gz")
    with pytest.raises(Seg2MedError, match="zero.nii.gz' is empty"):
        io.read_segmentation(tmp_path / "zero.nii.gz")
    unknown = np.zeros((3, 4, 5), np.uint8)
    unknown[0, 0, :3] = [5, 60, 61]
    io.write_image(_image(unknown), tmp_path / "unknown.nii.gz")
    with pytest.raises(Seg2MedError, match="label ids not in label set 'total_mr': 60, 61"):
        io.read_segmentation(tmp_path / "unknown.nii.gz", "total_mr")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4, 5), np.uint8), isVector=False), str(tmp_path / "four.nii.gz"))
    with pytest.raises(Seg2MedError, match="four.nii.gz' is 4D"):
        io.read_segmentation(tmp_path / "four.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5), np.uint8)), str(tmp_path / "two.nii.gz"))
    with pytest.raises(Seg2MedError, match="two.nii.gz' is 2D"):
        io.read_segmentation(tmp_path / "two.nii.gz")
    with pytest.raises(Seg2MedError, match="unknown label set"):
        io.read_segmentation(tmp_path / "unknown.nii.gz", "mr")


def test_check_same_geometry_message() -> None:
    a = _image(np.zeros((3, 4, 5), np.uint8))
    b = _image(np.zeros((3, 4, 5), np.uint8), origin=(0.0, 0.0, 0.0))
    io.check_same_geometry(a, _image(np.zeros((3, 4, 5), np.uint8)), "image 'a'", "segmentation 'b'")
    with pytest.raises(Seg2MedError) as err:
        io.check_same_geometry(a, b, "image 'a.nii.gz'", "segmentation 'b.nii.gz'")
    msg = str(err.value)
    assert "\n" not in msg and "origin=(-10.5, 20.25, 3)" in msg and "origin=(0, 0, 0)" in msg
    assert "image 'a.nii.gz'" in msg and "segmentation 'b.nii.gz'" in msg


# ------------------------------------------------------------------------------------------- atomic writing


def test_atomic_path_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and ".tmp-" in tmp.name
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    _no_leftovers(target.parent)
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("new", encoding="utf-8")
            raise RuntimeError("x")
    assert target.read_text(encoding="utf-8") == "old"  # the previous file is untouched


def test_write_json_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "results" / "r.json"
    assert io.write_json(target, {"ms": 1.5, "card": "cpu"}) == target
    assert io.read_json(target, "result") == {"ms": 1.5, "card": "cpu"}
    with pytest.raises(TypeError):  # not serialisable: the earlier file stays, no temporary is left
        io.write_json(target, {"path": Path("x")})
    assert io.read_json(target, "result")["card"] == "cpu"
    _no_leftovers(target.parent)
    io.write_json(target, {"path": Path("x")}, default=str)
    assert io.read_json(target, "result") == {"path": "x"}


def test_failed_writes_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(Seg2MedError, match="cannot write image"):
        io.write_image(_image(np.zeros((2, 2, 2), np.float32)), tmp_path / "out.unknownext")
    with pytest.raises(Seg2MedError, match="must end with .nii.gz"):
        io.write_segmentation(_seg(), tmp_path / "seg.png")
    nameless = io.Segmentation(_image(np.full((2, 2, 2), 150, np.uint16)), names_for("total"), "total")
    with pytest.raises(Seg2MedError, match="without names"):
        io.write_segmentation(nameless, tmp_path / "seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_header_extension_readable_by_totalsegmentator_parser(tmp_path: Path) -> None:
    """Our CaretExtension XML has the structure TotalSegmentator's own reader expects."""
    out = io.write_segmentation(_seg(), tmp_path / "seg.nii.gz")
    content = nib.load(str(out)).header.extensions[0].get_content()
    assert b"<CaretExtension>" in content and b'<Label Key="5"' in content and b"liver" in content
