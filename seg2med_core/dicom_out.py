"""Synthetic CT/MR volumes written as a DICOM series (pydicom), readable back with the same geometry.

One file per axial slice of the volume's own slice axis (``slice_0001.dcm`` ...), CT Image Storage or MR
Image Storage, ``ImageType = DERIVED\\SECONDARY``, new Study/Series/SOP Instance/Frame of Reference UIDs, an
anonymous patient (``seg2med^synthetic``) unless the caller passes a source DICOM whose patient and study
attributes (and Frame of Reference, since the synthetic volume lies in the source's space) are to be copied.
Geometry: ``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing`` /
``SpacingBetweenSlices`` from the image's origin, direction and spacing. DICOM readers order slices along
row × column; a left-handed grid (e.g. a LAS NIfTI) is therefore written with its slice axis reversed
(same voxels in space), and reads back with that direction. Values: CT as int16 HU (rescale 1/0); MR as
uint16 with a rescale slope/intercept covering the volume's range. The series is written into a temporary
folder and moved into place at the end (``io.atomic_folder``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import Seg2MedError

InfoFn = Callable[[str], None]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Patient and study attributes copied from ``source`` when the user asks for them.
SOURCE_ATTRIBUTES: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "PatientSize",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "FrameOfReferenceUID",
)


def is_dicom_output(path: str | Path) -> bool:
    """True when ``--out`` asks for a DICOM series: an existing folder, or a path ending with a separator."""
    text = str(path)
    return Path(text).is_dir() or text.endswith(("/", "\\"))


def read_source_attributes(source: str | Path) -> dict[str, object]:
    """Patient/study attributes (``SOURCE_ATTRIBUTES``) of a DICOM file or of the first DICOM file in a folder."""
    import pydicom

    src = Path(source)
    files = sorted(f for f in src.rglob("*") if f.is_file()) if src.is_dir() else [src]
    if not src.exists():
        raise Seg2MedError(f"--dicom-source '{src}' does not exist")
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM: try the next file  # noqa: BLE001
            continue
        if "SOPClassUID" not in ds:
            continue
        return {k: ds.data_element(k).value for k in SOURCE_ATTRIBUTES if k in ds}
    raise Seg2MedError(f"--dicom-source '{src}' contains no readable DICOM file")


def _right_handed(img: sitk.Image, info: InfoFn | None) -> sitk.Image:
    d = np.array(img.GetDirection(), float).reshape(3, 3)
    if np.linalg.det(d) > 0:
        return img
    if info is not None:
        info("the volume's grid is left-handed: its slice axis is written in reverse order (the same voxels in "
             "space), as DICOM readers sort slices along row x column")
    return sitk.Flip(img, [False, False, True], False)


def _values(arr: np.ndarray, modality: str) -> tuple[np.ndarray, float, float, int]:
    """Stored pixel values, rescale slope, intercept and PixelRepresentation (1 signed, 0 unsigned)."""
    if modality == "ct":
        hu = np.round(arr.astype(np.float64))
        if hu.min() < -32768 or hu.max() > 32767:
            raise Seg2MedError(f"CT values {hu.min():g}..{hu.max():g} HU do not fit DICOM's 16 bits")
        return hu.astype(np.int16), 1.0, 0.0, 1
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 65535 and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.uint16), 1.0, 0.0, 0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((arr.astype(np.float64) - lo) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, lo, 0


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string: the most significant digits that fit its 16 characters."""
    for digits in range(16, 5, -1):
        out = f"{float(value):.{digits}g}"
        if len(out) <= 16:
            return out
    raise Seg2MedError(f"value {value!r} cannot be written as a DICOM decimal string")


def _save(ds: object, path: Path) -> None:
    """Save with the DICOM file preamble and meta header (pydicom 3: enforce_file_format; 2.x: write_like_original)."""
    try:
        ds.save_as(str(path), enforce_file_format=True)  # type: ignore[attr-defined]
    except TypeError:
        ds.save_as(str(path), write_like_original=False)  # type: ignore[attr-defined]


def write_dicom_series(
    img: sitk.Image,
    folder: str | Path,
    modality: str,
    *,
    source: str | Path | None = None,
    series_description: str | None = None,
    info: InfoFn | None = None,
) -> Path:
    """Write a 3D volume (HU for CT, MR signal) as a DICOM series into ``folder`` (new or empty) atomically.

    ``source``: a DICOM file or folder whose patient, study and frame-of-reference attributes are copied
    (``SOURCE_ATTRIBUTES``); without it the series gets an anonymous patient and a new study.
    Returns ``folder``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .io import atomic_folder

    if modality not in ("ct", "mr"):
        raise Seg2MedError(f"DICOM output needs modality 'ct' or 'mr', got {modality!r}")
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Seg2MedError(f"DICOM output folder '{target}' is not empty; give a new or empty folder")
    if not target.parent.is_dir():
        raise Seg2MedError(f"DICOM output folder '{target.parent}' does not exist")
    if img.GetDimension() != 3:
        raise Seg2MedError(f"DICOM output needs a 3D volume, got {img.GetDimension()}D")
    copied = read_source_attributes(source) if source is not None else {}
    img = _right_handed(img, info)
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    stored, slope, intercept, signed = _values(arr, modality)
    d = np.array(img.GetDirection(), float).reshape(3, 3)
    sp = np.array(img.GetSpacing(), float)
    origin = np.array(img.GetOrigin(), float)
    normal = d[:, 2]
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid = str(copied.get("StudyInstanceUID") or generate_uid())
    series_uid = generate_uid()
    frame_uid = str(copied.get("FrameOfReferenceUID") or generate_uid())
    sop_class = CT_IMAGE_STORAGE if modality == "ct" else MR_IMAGE_STORAGE
    description = series_description or f"seg2med synthetic {modality.upper()}"
    with atomic_folder(target) as tmp:
        for k in range(stored.shape[0]):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.Modality = modality.upper()
            ds.Manufacturer = "seg2med"
            ds.SeriesDescription = description
            ds.DerivationDescription = "synthetic image generated by seg2med from a segmentation (not acquired)"
            ds.PatientName = "seg2med^synthetic"
            ds.PatientID = "SEG2MED"
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            for key, value in copied.items():
                setattr(ds, key, value)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.SeriesNumber = 901
            ds.InstanceNumber = k + 1
            ds.PositionReferenceIndicator = ""
            position = origin + k * sp[2] * normal
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
            ds.PixelSpacing = [_ds(sp[1]), _ds(sp[0])]  # row spacing (between rows = y), column spacing (x)
            ds.SliceThickness = _ds(sp[2])
            ds.SpacingBetweenSlices = _ds(sp[2])
            ds.SliceLocation = _ds(float(position @ normal))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = signed
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = _ds(intercept)
            if modality == "ct":
                ds.RescaleType = "HU"
                ds.KVP = ""
                ds.WindowCenter, ds.WindowWidth = "40", "400"
            else:
                ds.ScanningSequence = "RM"  # research mode: not acquired
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "3D"
            ds.BurnedInAnnotation = "NO"
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            try:
                _save(ds, tmp / f"slice_{k + 1:04d}.dcm")
            except OSError as exc:
                raise Seg2MedError(f"cannot write DICOM series '{target}': {exc.strerror or exc}") from None
    del pydicom
    return target
