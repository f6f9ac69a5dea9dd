"""Input/output safety of ``seg2med_core.io`` (issue 13): full disks, truncated files, implausible geometry,
``.seg.nrrd`` class-name case, all-or-nothing output groups, ``.mhd`` pairs, upper-case suffixes, stale
temporary files. The same cases through the real command line are in ``test_bad_inputs.py``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import io
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def _image(arr: np.ndarray, spacing=(1.5, 1.5, 3.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 2.0))
    return img


def _noise(shape=(20, 48, 48)) -> sitk.Image:
    """Random int16: does not compress, so a small disk really fills up."""
    return _image(np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16))


def _labels(shape=(20, 48, 48)) -> io.Segmentation:
    arr = np.random.default_rng(1).integers(0, 60, shape).astype(np.uint16)
    return io.Segmentation(_image(arr), names_for("total"), "total")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------ truncated inputs
@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES + (".mhd",))
def test_truncated_image_is_refused_naming_the_file(tmp_path: Path, suffix: str) -> None:
    full = io.write_image(_noise(), tmp_path / f"full{suffix}")
    data_file = tmp_path / "full.zraw" if suffix == ".mhd" else full
    blob = data_file.read_bytes()
    data_file.write_bytes(blob[: len(blob) // 2])
    before = _digest(tmp_path)
    with pytest.raises(Seg2MedError, match=r"is truncated or corrupt: .*(ends early|promises)") as err:
        io.read_image(full)
    assert str(full) in str(err.value) or str(data_file) in str(err.value)
    with pytest.raises(Seg2MedError, match="truncated or corrupt"):
        io.read_segmentation(full)
    assert _digest(tmp_path) == before  # inputs byte-identical


@pytest.mark.parametrize("suffix", (".nii.gz", ".nii", ".seg.nrrd"))
def test_truncated_segmentation_is_refused(tmp_path: Path, suffix: str) -> None:
    out = io.write_segmentation(_labels(), tmp_path / f"s{suffix}")
    blob = out.read_bytes()
    out.write_bytes(blob[: int(len(blob) * 0.6)])
    with pytest.raises(Seg2MedError, match=f"segmentation '.*s{suffix}' is truncated or corrupt"):
        io.read_segmentation(out)


def test_truncated_nifti_was_read_as_zeros_by_simpleitk(tmp_path: Path) -> None:
    """Why the check exists: SimpleITK itself reads half a .nii.gz without complaint."""
    out = io.write_image(_noise(), tmp_path / "a.nii.gz")
    blob = out.read_bytes()
    out.write_bytes(blob[: len(blob) // 2])
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert (arr[-5:] == 0).all()


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "seg.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(Seg2MedError, match="seg.nii.gz' is a FIFO, not a regular file"):
        io.read_segmentation(fifo)
    with pytest.raises(Seg2MedError, match="is a FIFO"):
        io.read_image(fifo)


# ------------------------------------------------------------------------------------------ implausible files
def _nifti_with_pixdim(path: Path, pixdim3: float) -> Path:
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header["pixdim"][1:4] = (1.0, 1.0, pixdim3)
    nib.save(img, str(path))
    return path


def test_nifti_spacing_zero_is_refused_not_read_as_1mm(tmp_path: Path) -> None:
    path = _nifti_with_pixdim(tmp_path / "zero.nii.gz", 0.0)
    assert sitk.ReadImage(str(path)).GetSpacing()[2] == 1.0  # what SimpleITK makes of it
    with pytest.raises(Seg2MedError, match="zero.nii.gz' has spacing 0 mm along z"):
        io.read_image(path)


@pytest.mark.parametrize("spacing", [1e-6, 0.003, 1e5])
def test_implausible_spacing_is_refused_with_the_value(tmp_path: Path, spacing: float) -> None:
    path = io.write_image(_image(np.ones((3, 4, 5), np.int16), spacing=(spacing, spacing, 2.0)), tmp_path / "s.mha")
    with pytest.raises(Seg2MedError, match=f"s.mha' has spacing .*: {spacing:.6g} mm is outside the plausible"):
        io.read_image(path)
    with pytest.raises(Seg2MedError, match="outside the plausible"):
        io.read_segmentation(path)


def test_skewed_directions_are_refused(tmp_path: Path) -> None:
    img = _image(np.ones((3, 4, 5), np.uint8))
    img.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "skew.mha"
    sitk.WriteImage(img, str(path))
    with pytest.raises(Seg2MedError, match="skew.mha' has skewed \\(non-orthogonal\\) voxel axes"):
        io.read_segmentation(path)


def _seg_nrrd_with_directions(path: Path, directions: str) -> Path:
    good = io.write_segmentation(io.Segmentation(_image(np.ones((3, 4, 5), np.uint16)), names_for("total"), "total"), path)
    text = good.read_bytes()
    head, sep, body = text.partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.startswith(b"space directions:")]
    lines.insert(3, b"space directions: " + directions.encode())
    good.write_bytes(b"\n".join(lines) + sep + body)
    return good


@pytest.mark.parametrize(
    "directions, expected",
    [
        ("(1.5,0,0) (0,0,0) (0,0,3)", "zero space direction for axis j"),
        ("(nan,0,0) (0,1.5,0) (0,0,3)", "non-finite space directions"),
        ("(1.5,0,0) (0.9,1.5,0) (0,0,3)", "skewed \\(non-orthogonal\\)"),
    ],
)
def test_bad_seg_nrrd_space_directions(tmp_path: Path, directions: str, expected: str) -> None:
    path = _seg_nrrd_with_directions(tmp_path / "d.seg.nrrd", directions)
    with pytest.raises(Seg2MedError, match=expected):
        io.read_segmentation(path)


def test_nan_in_a_float_label_map_is_refused(tmp_path: Path) -> None:
    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 1, 1] = 5
    arr[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).any()  # ITK: NaN -> 0
    with pytest.raises(Seg2MedError, match="nan.nii.gz' has 1 NaN/infinite label value"):
        io.read_segmentation(tmp_path / "nan.nii.gz")


def test_caret_extension_with_a_non_integer_key(tmp_path: Path) -> None:
    out = io.write_segmentation(_labels((3, 4, 5)), tmp_path / "s.nii.gz")
    img = nib.load(str(out))
    xml = img.header.extensions[0].get_content().replace(b'Key="1"', b'Key="one"', 1)
    img.header.extensions.clear()
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=img.header), str(tmp_path / "one.nii.gz"))
    with pytest.raises(Seg2MedError, match="one.nii.gz' has a label-name header extension with a non-integer Key 'one'"):
        io.read_segmentation(tmp_path / "one.nii.gz")


def test_memory_is_estimated_from_the_header_before_reading(tmp_path: Path) -> None:
    """A NIfTI claiming 30000 x 30000 x 2000 voxels is a few bytes of header: refused with numbers."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 2000))
    hdr.set_data_dtype(np.int16)
    hdr["pixdim"][1:4] = 1.0
    path = tmp_path / "huge.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)
    with pytest.raises(Seg2MedError, match=r"huge.nii' has 1.8e\+12 voxels \(30000x30000x2000\): working on it needs about [0-9.]+ [TP]B of memory"):
        io.read_image(path)


def test_simpleitk_messages_keep_the_meaningful_part() -> None:
    exc = RuntimeError(
        "Exception thrown in SimpleITK ImageFileReader_Execute: /work/src/Code/IO/src/sitkImageReaderBase.cxx:99:\n"
        'sitk::ERROR: Unable to determine ImageIO reader for "/tmp/x.nii.gz"'
    )
    assert io.sitk_error(exc) == 'Unable to determine ImageIO reader for "/tmp/x.nii.gz"'
    exc = RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: /b/itkNiftiImageIO.cxx:1494:\n"
                       "ITK ERROR: NiftiImageIO(0x55e626e9fc50): Bad Nifti file name: /tmp/X.NII.GZ")  # fmt: skip
    assert io.sitk_error(exc) == "Bad Nifti file name: /tmp/X.NII.GZ"


# ------------------------------------------------------------------------------------------ .seg.nrrd names
def test_seg_nrrd_round_trip_over_every_total_class(tmp_path: Path) -> None:
    """Segment names are lower-cased on the way (vertebrae_L4 -> vertebrae_l4): matched case-insensitively."""
    names = names_for("total")
    ids = sorted(names)
    arr = np.zeros((len(ids), 4, 4), np.uint16)
    for k, i in enumerate(ids):
        arr[k, 1:3, 1:3] = i
    seg = io.Segmentation(_image(arr), names, "total")
    out = io.write_segmentation(seg, tmp_path / "all.seg.nrrd")
    back = io.read_segmentation(out)
    assert back.label_set == "total"
    np.testing.assert_array_equal(back.array(), arr)
    lowered = io.read_segmentation(_lowercase_segment_names(out, tmp_path / "lower.seg.nrrd"))
    np.testing.assert_array_equal(lowered.array(), arr)


def _lowercase_segment_names(src: Path, dst: Path) -> Path:
    import slicerio

    seg = slicerio.read_segmentation(str(src))
    for s in seg["segments"]:
        s["name"] = s["name"].lower()
        s["id"] = s["id"].lower()
    slicerio.write_segmentation(str(dst), seg)
    return dst


def test_mask_folder_names_match_case_insensitively(tmp_path: Path) -> None:
    arr = np.zeros((3, 4, 5), np.uint8)
    arr[1, 1, 1] = 1
    io.write_image(_image(arr), tmp_path / "masks" / "Vertebrae_l4.nii.gz")
    back = io.read_segmentation(tmp_path / "masks")
    assert back.names[int(back.array().max())] == "vertebrae_L4"


# ------------------------------------------------------------------------------------------ full disk
class _HalfWriter:
    """A SimpleITK writer that, like the real one on a full disk, writes only part of the file and succeeds."""

    def __init__(self, real):  # noqa: ANN001
        self.real = real

    def __call__(self, img, path, *args):  # noqa: ANN001, ANN002
        self.real(img, path, *args)
        for f in [Path(path), *Path(path).parent.glob(Path(path).stem + ".*raw")]:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES + (".mhd",))
def test_short_write_is_an_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    monkeypatch.setattr(sitk, "WriteImage", _HalfWriter(sitk.WriteImage))
    with pytest.raises(Seg2MedError, match=f"cannot write '.*out{suffix}': the file came out incomplete .*Nothing was written"):
        io.write_image(_noise(), tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", (".nii.gz", ".nii", ".seg.nrrd"))
def test_segmentation_writer_failing_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Python writers (nibabel, slicerio) raise ENOSPC themselves: one line, nothing left."""
    import errno

    import slicerio

    real_open = open

    def failing_save(*args, **kwargs):  # noqa: ANN002, ANN003
        path = Path(args[1] if len(args) > 1 else args[0])
        with real_open(path, "wb") as f:
            f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nib, "save", lambda img, path: failing_save(img, path))
    monkeypatch.setattr(slicerio, "write_segmentation", lambda path, seg: failing_save(path))
    with pytest.raises(Seg2MedError, match=f"cannot write '.*s{suffix}': No space left on device"):
        io.write_segmentation(_labels(), tmp_path / f"s{suffix}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 160 KiB tmpfs (needs root / CAP_SYS_ADMIN; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'mount failed'}); the fake writers above still run")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES + (".mhd",))
def test_full_tmpfs_image_write_fails(small_disk: Path, suffix: str) -> None:
    with pytest.raises(Seg2MedError, match=f"cannot write( image)? '.*out{suffix}'"):
        io.write_image(_noise((40, 64, 64)), small_disk / f"out{suffix}")
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("suffix", (".nii.gz", ".nii", ".seg.nrrd"))
def test_full_tmpfs_segmentation_write_fails(small_disk: Path, suffix: str) -> None:
    with pytest.raises(Seg2MedError, match=f"cannot write '.*s{suffix}'"):
        io.write_segmentation(_labels((60, 64, 64)), small_disk / f"s{suffix}")
    assert list(small_disk.iterdir()) == []


# ------------------------------------------------------------------------------------------ output groups etc.
def test_output_group_is_all_or_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="late failure"):
        with io.output_group():
            io.write_image(_noise((3, 4, 5)), tmp_path / "a.nii.gz")
            io.write_json(tmp_path / "m.json", {"x": 1})
            assert not (tmp_path / "a.nii.gz").exists()  # not before the group succeeds
            raise RuntimeError("late failure")
    assert list(tmp_path.iterdir()) == []
    with io.output_group():
        io.write_image(_noise((3, 4, 5)), tmp_path / "a.nii.gz")
        io.write_json(tmp_path / "m.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "m.json"]


def test_mhd_pair_written_together_and_readable(tmp_path: Path) -> None:
    img = _noise((3, 4, 5))
    io.write_image(img, tmp_path / "x.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mhd", "x.zraw"]
    assert "ElementDataFile = x.zraw" in (tmp_path / "x.mhd").read_text()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(io.read_image(tmp_path / "x.mhd")), sitk.GetArrayFromImage(img))


@pytest.mark.parametrize("name", ["X.MHA", "X.NII.GZ", "X.Nrrd"])
def test_upper_case_suffixes_are_written_and_read(tmp_path: Path, name: str) -> None:
    img = _noise((3, 4, 5))
    io.write_image(img, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(io.read_image(tmp_path / name)), sitk.GetArrayFromImage(img))


def test_stale_temp_files_of_dead_processes_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"out.tmp-{dead.pid}-0123abcd.nii.gz"
    stale_dir = tmp_path / f".x.mhd.tmp-{dead.pid}-0123abcd"
    live = tmp_path / f"out.tmp-{os.getppid()}-0123abcd.nii.gz"  # a running process (our parent)
    user_files = [tmp_path / "out.tmp-notes.txt", tmp_path / f"my.tmp-{dead.pid}.nii.gz", tmp_path / "a.tmp-1-xyz.nii"]
    for f in [stale, live, *user_files]:
        f.write_bytes(b"")
    stale_dir.mkdir()
    (stale_dir / "x.mhd").write_bytes(b"")
    io.write_json(tmp_path / "new.json", {})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert stale.name not in left and stale_dir.name not in left
    assert live.name in left and all(f.name in left for f in user_files) and "new.json" in left
