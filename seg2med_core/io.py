"""Reading images and segmentations (as TotalSegmentator and 3D Slicer write them) and atomic writing.

Geometry always travels in ``SimpleITK.Image`` objects: spacing, origin and direction are kept exactly.
Segmentations are read from

* one multilabel NIfTI (class names from TotalSegmentator's CaretExtension XML header extension),
* a folder of per-structure masks (``liver.nii.gz``, ...; overlaps: smaller structures win, see
  ``tables.paint_by_volume``), or
* a Slicer ``.seg.nrrd`` (slicerio; segment names are matched to class names, overlaps as for folders).

Every problem with the input raises a one-line ``Seg2MedError`` naming the file and the offending value.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import Seg2MedError
from .filecheck import check_geometry, check_image_file, check_regular_file, free_bytes, fsync_file, suffix_of
from .labels import all_class_names, class_names_to_ids, guess_label_set, names_for
from .tables import paint_by_volume

MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_COMPOUND_SUFFIXES: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".tar.gz")
_MAX_LABEL = np.iinfo(np.uint16).max


@dataclass
class Segmentation:
    """A label map (UInt16 SimpleITK image), the ``{id: name}`` of its label set, and that set's name."""

    image: sitk.Image
    names: dict[int, str]
    label_set: str

    def array(self) -> np.ndarray:
        """Label ids as a numpy array in (z, y, x) order (a copy)."""
        return sitk.GetArrayFromImage(self.image)


# --------------------------------------------------------------------------------------------------
# Geometry helpers


def describe_geometry(img: sitk.Image) -> str:
    """Size, spacing, origin and direction of an image in one short line."""
    fmt = lambda xs: "(" + ", ".join(f"{x:.6g}" for x in xs) + ")"  # noqa: E731
    return (f"size={tuple(img.GetSize())} spacing={fmt(img.GetSpacing())} origin={fmt(img.GetOrigin())} "
            f"direction={fmt(img.GetDirection())}")


def _fmt(xs: Any) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in xs) + ")"


def geometry_differences(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> list[str]:
    """What differs between the voxel grids of ``a`` and ``b``: ``["size (3, 4, 5) vs (3, 4, 6)", ...]``.

    Spacing and direction are compared with relative/absolute tolerance ``tol``; origins with ``tol`` times
    the largest spacing (in mm), so float rounding in file headers does not count as a mismatch.
    """
    out: list[str] = []
    if a.GetDimension() != b.GetDimension():
        return [f"dimension {a.GetDimension()} vs {b.GetDimension()}"]
    if a.GetSize() != b.GetSize():
        out.append(f"size {tuple(a.GetSize())} vs {tuple(b.GetSize())}")
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=tol, atol=0):
        out.append(f"spacing {_fmt(sa)} vs {_fmt(sb)}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * max(sa.max(), 1.0)):
        out.append(f"origin {_fmt(a.GetOrigin())} vs {_fmt(b.GetOrigin())}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=tol):
        out.append(f"direction {_fmt(a.GetDirection())} vs {_fmt(b.GetDirection())}")
    return out


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when ``a`` and ``b`` share the voxel grid (see :func:`geometry_differences`)."""
    return not geometry_differences(a, b, tol)


def check_same_geometry(a: sitk.Image, b: sitk.Image, name_a: str, name_b: str, tol: float = 1e-4) -> None:
    """Raise Seg2MedError (saying what differs, and showing both geometries) unless ``a`` and ``b`` share the
    voxel grid (tolerances as :func:`geometry_differences`)."""
    diffs = geometry_differences(a, b, tol)
    if diffs:
        what = ", ".join(d.split(" ", 1)[0] for d in diffs)
        raise Seg2MedError(f"{name_a} and {name_b} have different geometry ({what} differ): {name_a} {describe_geometry(a)}; "
                           f"{name_b} {describe_geometry(b)}")


def _check_volume(img: sitk.Image, what: str, path: str | Path) -> None:
    if img.GetDimension() != 3:
        raise Seg2MedError(f"{what} '{path}' is {img.GetDimension()}D (size {tuple(img.GetSize())}); a 3D volume is needed")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise Seg2MedError(f"{what} '{path}' has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                           "a scalar volume is needed")


_SITK_NOISE = re.compile(
    r"^(Exception thrown in SimpleITK \S+:\s*)?(\S+\.(cxx|cpp|h|hxx|txx):\d+:?\s*)?(sitk::ERROR:\s*|ITK ERROR:\s*)?(\w+\(0x[0-9a-f]+\):\s*)?"
)


def sitk_error(exc: BaseException, limit: int = 300) -> str:
    """The meaningful part of a SimpleITK/ITK exception in one line (not the C++ source-location line)."""
    parts = []
    for line in str(exc).splitlines():
        text = _SITK_NOISE.sub("", line.strip()).strip()
        if text:
            parts.append(text)
    message = " ".join(parts) or exc.__class__.__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _check_geometry(img: sitk.Image, what: str, path: str | Path) -> None:
    check_geometry(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), path, what)


def _read_file(path: Path, what: str) -> sitk.Image:
    """``sitk.ReadImage`` after the checks SimpleITK does not make (regular, complete file; header spacing)."""
    check_image_file(path, what)
    name = path.name
    low = name[: -len(suffix_of(name))] + suffix_of(name) if suffix_of(name) else name
    try:
        if low == name or suffix_of(name) == ".mhd":
            with quiet_native_stderr():
                return sitk.ReadImage(str(path))
        # ITK picks its reader by the (case-sensitive) suffix: read X.NII.GZ through a lower-case link
        with tempfile.TemporaryDirectory(prefix="seg2med-read-") as folder:
            link = Path(folder) / low
            link.symlink_to(path.resolve())
            with quiet_native_stderr():
                return sitk.ReadImage(str(link))
    except RuntimeError as exc:
        raise Seg2MedError(f"{what} '{path}' cannot be read: {sitk_error(exc)}") from None


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise Seg2MedError(f"image folder '{folder}' contains no DICOM series")
    if len(series) > 1:
        raise Seg2MedError(f"image folder '{folder}' contains {len(series)} DICOM series ({', '.join(series[:3])}); "
                           "pass a folder with one series")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise Seg2MedError(f"DICOM series in '{folder}' cannot be read: {sitk_error(exc)}") from None


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA, ... or a DICOM folder); errors for 2D/4D input and NaN/inf."""
    p = Path(path)
    img = _read_dicom_folder(p) if p.is_dir() else _read_file(p, "image")
    _check_volume(img, "image", p)
    _check_geometry(img, "image", p)
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        bad = int(np.count_nonzero(~np.isfinite(sitk.GetArrayViewFromImage(img))))
        if not bad and suffix_of(p.name) in (".nii", ".nii.gz"):
            bad = _nifti_nonfinite(p)
        if bad:
            raise Seg2MedError(f"image '{path}' has {bad} NaN/infinite voxel(s)")
    return img


def _nifti_nonfinite(path: Path) -> int:
    """Count NaN/inf voxels of a float NIfTI with nibabel: ITK's NIfTI reader silently turns NaN into 0."""
    import nibabel as nib

    nimg = nib.load(str(path))
    if not np.issubdtype(nimg.get_data_dtype(), np.floating):
        return 0
    return int(np.count_nonzero(~np.isfinite(np.asanyarray(nimg.dataobj))))


# --------------------------------------------------------------------------------------------------
# Segmentations


def nifti_label_names(path: str | Path) -> dict[int, str] | None:
    """Class names from TotalSegmentator's CaretExtension XML in a NIfTI header, or None when absent."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as exc:  # nibabel raises many types for broken files
        raise Seg2MedError(f"segmentation '{path}' cannot be read by nibabel: {exc}") from None
    for ext in getattr(header, "extensions", []):
        content = ext.get_content()
        if isinstance(content, bytes) and b"CaretExtension" in content:
            try:
                root = ET.fromstring(content.decode("utf-8", errors="replace").strip())
            except ET.ParseError as exc:
                raise Seg2MedError(f"segmentation '{path}' has an unreadable label-name header extension: {exc}") from None
            names: dict[int, str] = {}
            for lab in root.iter("Label"):
                key = lab.get("Key", "-1")
                try:
                    names[int(key)] = (lab.text or "").strip()
                except ValueError:
                    raise Seg2MedError(
                        f"segmentation '{path}' has a label-name header extension with a non-integer Key {key!r} "
                        f"(label {(lab.text or '').strip()!r})"
                    ) from None
            return {k: v for k, v in names.items() if k > 0 and v}
    return None


def _integer_labels(arr: np.ndarray, path: str | Path) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            raise Seg2MedError(f"segmentation '{path}' has NaN/infinite labels")
        frac = arr != np.round(arr)
        if frac.any():
            raise Seg2MedError(f"segmentation '{path}' has non-integer labels (e.g. {float(arr[frac][0]):g})")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise Seg2MedError(f"segmentation '{path}' has non-numeric voxel type {arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > _MAX_LABEL:
        raise Seg2MedError(f"segmentation '{path}' has label {lo if lo < 0 else hi} outside 0..{_MAX_LABEL}")
    return arr.astype(np.uint16)


def _few(xs: list) -> str:
    from .label_tables import few

    return few(xs)


_DROP_HINT = "; add `--drop-unknown-labels` to continue without them"


_TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".ctbl", ".txt", ".label")


def _sibling_table_hint(path: Path) -> str:
    """`` (next to it: add `--label-names FILE`)`` when exactly one label-table-like file lies beside ``path``."""
    import shlex

    try:
        found = [f for f in path.parent.iterdir() if f.is_file() and f.name.lower().endswith(_TABLE_SUFFIXES)]
    except OSError:
        return ""
    if len(found) != 1:
        return ""
    return f" (next to it: add `--label-names {shlex.quote(str(found[0]))}`)"


def _read_label_map(path: Path) -> tuple[sitk.Image, np.ndarray, set[int]]:
    """A multilabel file as it is: the image, its labels as a uint16 (z, y, x) array, and the present ids."""
    img = _read_file(path, "segmentation")
    _check_volume(img, "segmentation", path)
    _check_geometry(img, "segmentation", path)
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) and suffix_of(path.name) in (".nii", ".nii.gz"):
        bad = _nifti_nonfinite(path)  # ITK's NIfTI reader turns NaN into 0, i.e. background
        if bad:
            raise Seg2MedError(f"segmentation '{path}' has {bad} NaN/infinite label value(s)")
    arr = _integer_labels(sitk.GetArrayFromImage(img), path)
    ids = {int(i) for i in np.unique(arr) if i != 0}
    if not ids:
        raise Seg2MedError(f"segmentation '{path}' is empty (no labelled voxel)")
    return img, arr, ids


def _closest_set(ids: set[int]) -> tuple[str, list[int]]:
    """The main label set holding most of ``ids`` (ties: the usual guess order) and the ids it lacks."""
    from .labels import _GUESS_ORDER, TISSUE_SET_FOR

    sets = [s for s in _GUESS_ORDER if s in TISSUE_SET_FOR]
    best = max(sets, key=lambda s: len(ids & set(names_for(s))))
    return best, sorted(ids - set(names_for(best)))


def _drop_ids(arr: np.ndarray, drop: list[int]) -> int:
    mask = np.isin(arr, drop)
    arr[mask] = 0
    return int(mask.sum())


def _multilabel(path: Path, label_set: str | None, opts: "ReadOptions") -> Segmentation:
    from .label_tables import scheme_names

    img, arr, ids = _read_label_map(path)
    if opts.label_names is not None or (label_set is not None and label_set in scheme_names()):
        return _multilabel_by_table(path, img, arr, ids, label_set, opts)
    file_names = nifti_label_names(path) if suffix_of(path.name) in (".nii", ".nii.gz") else None
    if label_set is None:
        present_names = {i: n for i, n in (file_names or {}).items() if i in ids} or None
        if present_names is None and not any(ids <= set(names_for(s)) for s in ("total", "total_mr", "total_v1", "total_v3")):
            best, missing = _closest_set(ids)
            if not opts.drop_unknown:
                raise Seg2MedError(
                    f"segmentation '{path}' has label ids that fit no supported label set: {_few(missing)} "
                    f"(not in '{best}', the closest); pass its id -> name table with --label-names FILE"
                    f"{_sibling_table_hint(path)}{_DROP_HINT}")
            label_set = best
        else:
            label_set = guess_label_set(ids, present_names)
    names = names_for(label_set)
    unknown = sorted(ids - set(names))
    if unknown:
        if not opts.drop_unknown:
            raise Seg2MedError(f"segmentation '{path}' has label ids not in label set '{label_set}': {_few(unknown)}"
                               f"{_DROP_HINT}")
        voxels = _drop_ids(arr, unknown)
        opts.report(f"segmentation '{path}': dropped label ids not in '{label_set}': {_few(unknown)} ({voxels} voxels set to 0)")
        if not arr.any():
            raise Seg2MedError(f"segmentation '{path}' has no label of '{label_set}' left after dropping {_few(unknown)}")
        ids -= set(unknown)
    if file_names:
        clash = [f"{i}={file_names[i]!r} (set: {names[i]!r})" for i in sorted(ids) if i in file_names and file_names[i] != names[i]]
        if clash:
            raise Seg2MedError(f"segmentation '{path}' names differ from label set '{label_set}': {_few(clash)}; "
                               "pass the id -> name table with --label-names FILE")
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return Segmentation(out, names, label_set)


def _multilabel_by_table(path: Path, img: sitk.Image, arr: np.ndarray, ids: set[int], label_set: str | None,
                         opts: "ReadOptions") -> Segmentation:
    """Relabel a label map through a label table (``--label-names``) or a shipped scheme (``--label-set amos``)."""
    from . import label_tables as lt

    split: dict[int, tuple[str, str]] = {}
    body_id = None
    notes: list[str] = []
    if opts.label_names is not None:
        if label_set is not None and label_set in lt.scheme_names():
            raise Seg2MedError(f"--label-names and the label scheme '{label_set}' both say what the ids mean: pass one")
        table = lt.read_label_table(opts.label_names)
        source = f"label table '{opts.label_names}'"
        dst = label_set or lt.guess_label_set_for_table(table)
        targets = lt.table_to_label_set(table, dst)
    else:
        assert label_set is not None
        scheme = lt.load_scheme(label_set)
        table, targets, split, body_id = scheme.names, dict(scheme.to_total), scheme.split_by_side, scheme.body_id
        source = f"label scheme '{label_set}'"
        dst = "total"
        notes = [f"{table[i]}: {scheme.notes[i]}" for i in sorted(ids) if i in scheme.notes]
    dst_ids = {v: k for k, v in names_for(dst).items()}
    no_class = [i for i in sorted(ids) if i != body_id and (i not in table or (targets.get(i) is None and i not in split))]
    # A user's table names classes the set does not know: an error (or dropped on request). A shipped scheme
    # says which of its classes have no counterpart: those are reported and set to 0, as for CT <-> MR.
    expected = [i for i in no_class if opts.label_names is None and i in table]
    bad = [i for i in no_class if i not in expected]
    describe = [f"{i} ({table[i]})" if i in table else f"{i} (not in the table)" for i in bad]
    if bad and not opts.drop_unknown:
        raise Seg2MedError(f"segmentation '{path}' has label ids that fit no class of label set '{dst}' through {source}: "
                           f"{_few(describe)}{_DROP_HINT}")
    report = lt.TableReport(source=f"segmentation '{path}' via {source}", label_set=dst, notes=notes)
    lut = np.zeros(max(ids) + 1, dtype=np.uint16)
    for i in sorted(ids):
        target = targets.get(i)
        if target is not None:
            lut[i] = dst_ids[target]
            report.mapped[i] = (table[i], target)
    out_arr = lut[arr]
    for i, (right, left) in split.items():
        if i in ids:
            r, l = lt.split_sides(arr == i, img.GetDirection(), img.GetOrigin(), img.GetSpacing())
            out_arr[r], out_arr[l] = dst_ids[right], dst_ids[left]
            report.mapped[i] = (table[i], f"{right}/{left}")
            report.notes.append(f"{table[i]} ({i}) split into {right} and {left} by side (connected components "
                                "left or right of the centre of the field of view)")
    if body_id is not None and body_id in ids:
        report.notes.append(f"{table[body_id]} ({body_id}) becomes unlabelled body (soft tissue in the prior)")
    report.dropped = {i: (table.get(i, "")) for i in no_class}
    report.dropped_voxels = int(np.isin(arr, no_class).sum()) if no_class else 0
    report.absent_unmapped = {i: n for i, n in table.items() if i not in ids and targets.get(i) is None
                              and i not in split and i != body_id}
    for line in report.lines():
        opts.report(line)
    if not out_arr.any():
        raise Seg2MedError(f"segmentation '{path}': no label id has a class in '{dst}' through {source}")
    out = sitk.GetImageFromArray(out_arr)
    out.CopyInformation(img)
    return Segmentation(out, names_for(dst), dst)


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def canonical_class_name(name: str, label_set: str | None = None) -> str:
    """``name`` spelled as the label set spells it (``vertebrae_l4`` -> ``vertebrae_L4``): class names are
    matched case-insensitively (Slicer and some tools lower-case them); unknown names are returned as given."""
    pool = names_for(label_set).values() if label_set is not None else all_class_names()
    lookup = {n.lower(): n for n in pool}
    return lookup.get(name.lower(), name)


def _strip_suffix(name: str) -> str:
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _ids_for_names(names: list[str], label_set: str | None, source: str, opts: "ReadOptions | None" = None
                   ) -> tuple[str, dict[str, int]]:
    """Label set and ``{structure name: id}`` for mask/segment names (matched as ``label_tables.match_class_name``,
    or through a shipped scheme's names); unknown names are an error or, with ``drop_unknown``, left out."""
    from . import label_tables as lt

    opts = opts or ReadOptions()
    if opts.label_names is not None:
        raise Seg2MedError(f"--label-names is for multilabel label maps; {source} names its structures itself")
    table = {-(i + 1): n for i, n in enumerate(names)}
    if label_set is not None and label_set in lt.scheme_names():
        scheme = lt.load_scheme(label_set)
        own = {lt.normalise_name(n): scheme.to_total[i] for i, n in scheme.names.items()}
        targets = {k: own.get(lt.normalise_name(n)) for k, n in table.items()}
        label_set = "total"
    else:
        if label_set is None:
            label_set = lt.guess_label_set_for_table(table)
        targets = lt.table_to_label_set(table, label_set)
    unknown = sorted(n for k, n in table.items() if targets[k] is None)
    if unknown:
        if not opts.drop_unknown:
            raise Seg2MedError(f"{source} has structures not in label set '{label_set}': {_few(unknown)}{_DROP_HINT}")
        opts.report(f"{source}: dropped structures not in '{label_set}': {_few(unknown)}")
    known = {n: targets[k] for k, n in table.items() if targets[k] is not None}
    if not known:
        raise Seg2MedError(f"{source} has no structure of label set '{label_set}'")
    lookup = class_names_to_ids(sorted(set(known.values())), label_set)
    return label_set, {n: lookup[t] for n, t in known.items()}


def _mask_indices(arr: np.ndarray, what: str) -> np.ndarray:
    values = np.unique(arr)
    extra = [v for v in values.tolist() if v not in (0, 1)]
    if extra:
        raise Seg2MedError(f"{what} has values other than 0 and 1 (e.g. {extra[0]:g}); is it a multilabel map?")
    return np.flatnonzero(arr)


def _mask_folder(folder: Path, label_set: str | None, opts: "ReadOptions") -> Segmentation:
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(MASK_SUFFIXES))
    if not files:
        raise Seg2MedError(f"segmentation folder '{folder}' contains no mask files ({', '.join(MASK_SUFFIXES)})")
    names = [_strip_suffix(f.name) for f in files]
    label_set, ids = _ids_for_names(names, label_set, f"segmentation folder '{folder}'", opts)
    ref: sitk.Image | None = None
    flat: dict[str, np.ndarray] = {}
    for f, name in zip(files, names):
        if name not in ids:  # dropped (--drop-unknown-labels)
            continue
        img = _read_file(f, "mask")
        _check_volume(img, "mask", f)
        _check_geometry(img, "mask", f)
        if ref is None:
            ref = img
        else:
            check_same_geometry(ref, img, f"mask '{files[0].name}'", f"mask '{f.name}'")
        flat[name] = _mask_indices(sitk.GetArrayViewFromImage(img), f"mask '{f}'")
    assert ref is not None
    if not any(len(v) for v in flat.values()):
        raise Seg2MedError(f"segmentation folder '{folder}' is empty (all {len(files)} masks are empty)")
    shape = tuple(reversed(ref.GetSize()))
    out = sitk.GetImageFromArray(paint_by_volume(shape, flat, ids))
    out.CopyInformation(ref)
    return Segmentation(out, names_for(label_set), label_set)


def _ijk_to_lps_geometry(
    ijk_to_lps: np.ndarray, path: str | Path = "", what: str = "segmentation"
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    m = np.asarray(ijk_to_lps, dtype=float)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise Seg2MedError(f"{what} '{path}' has non-finite space directions/origin in its header: {m[:3].tolist()}")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if not np.all(spacing > 0):
        axis = "ijk"[int(np.argmin(spacing))]
        raise Seg2MedError(f"{what} '{path}' has a zero space direction for axis {axis} (spacing 0 mm): "
                           f"space directions {m[:3, :3].T.tolist()}")
    direction = m[:3, :3] / spacing
    return tuple(spacing.tolist()), tuple(m[:3, 3].tolist()), tuple(direction.flatten().tolist())


def _segment_class_name(segment: Mapping[str, object]) -> str:
    """Class name of a Slicer segment: its name (``"Kidney left"`` -> ``kidney_left``), or its ID when only
    the ID is a known class name (Slicer shows terminology names but may keep TotalSegmentator IDs)."""
    known = {n.lower() for n in all_class_names()}  # _normalise_name lower-cases: compare lower-cased
    name = _normalise_name(str(segment.get("name") or segment.get("id") or ""))
    seg_id = _normalise_name(str(segment.get("id") or ""))
    return seg_id if name not in known and seg_id in known else name


def _seg_nrrd(path: Path, label_set: str | None, opts: "ReadOptions") -> Segmentation:
    import slicerio

    check_image_file(path, "segmentation")
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio/pynrrd raise assorted errors for broken files
        raise Seg2MedError(f"segmentation '{path}' cannot be read as a Slicer .seg.nrrd: {exc}") from None
    segments = seg.get("segments") or []
    if not segments:
        raise Seg2MedError(f"segmentation '{path}' has no segments")
    names = [canonical_class_name(_segment_class_name(s), label_set) for s in segments]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise Seg2MedError(f"segmentation '{path}' has several segments named {_few(dup)}")
    label_set, ids = _ids_for_names(names, label_set, f"segmentation '{path}'", opts)
    spacing, origin, direction = _ijk_to_lps_geometry(seg["ijkToLPS"], path)
    check_geometry(spacing, origin, direction, path, "segmentation")
    flat = {n: np.flatnonzero(np.transpose(slicerio.segment_mask(seg, s), (2, 1, 0)))
            for n, s in zip(names, segments) if n in ids}
    if not any(len(v) for v in flat.values()):
        raise Seg2MedError(f"segmentation '{path}' is empty (all {len(segments)} segments are empty)")
    shape_ijk = seg["voxels"].shape[-3:]
    out = sitk.GetImageFromArray(paint_by_volume(tuple(reversed(shape_ijk)), flat, ids))
    out.SetSpacing(spacing)
    out.SetOrigin(origin)
    out.SetDirection(direction)
    return Segmentation(out, names_for(label_set), label_set)


@dataclass
class ReadOptions:
    """How :func:`read_segmentation` treats labels that are not classes of the label set."""

    #: id -> name table of a multilabel map (``label_tables.read_label_table`` formats)
    label_names: str | Path | None = None
    #: leave unknown ids / structures out (reported through ``info``) instead of refusing the file
    drop_unknown: bool = False
    info: Any = None

    def report(self, line: str) -> None:
        if self.info is not None:
            self.info(line)


def read_segmentation(
    path: str | Path,
    label_set: str | None = None,
    *,
    label_names: str | Path | None = None,
    drop_unknown: bool = False,
    info: Any = None,
) -> Segmentation:
    """Read a segmentation (multilabel file, folder of masks, or ``.seg.nrrd``) as a UInt16 label map.

    ``label_set``: a TotalSegmentator label set (``total``, ``total_mr``, ...) or a shipped label scheme of
    another dataset (``amos``, ``btcv``, ``maisi``, ``kits23``, ... see ``label_tables.scheme_names``), which is
    mapped onto ``total`` by name; None: guessed from the header names / mask names / ids
    (``labels.guess_label_set``). ``label_names``: the map's own id -> name table (CSV, JSON, ITK-SNAP, Slicer
    colour table), whose names are mapped onto the label set. ``drop_unknown``: ids/structures that fit no class
    are set to 0 and reported through ``info`` (a callable taking one line) instead of being an error.
    """
    p = Path(path)
    opts = ReadOptions(label_names, drop_unknown, info)
    if p.is_dir():
        return _mask_folder(p, label_set, opts)
    if p.name.endswith(".seg.nrrd"):
        return _seg_nrrd(p, label_set, opts)
    return _multilabel(p, label_set, opts)


# --------------------------------------------------------------------------------------------------
# Atomic writing


def _split_suffix(name: str) -> tuple[str, str]:
    low = name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot and stem else (name, "")


#: seg2med's own temporary names: ``<stem>.tmp-<pid>-<8 hex>[.ext]`` files and ``.<name>.tmp-<pid>-<8 hex>``
#: folders (``.mhd`` pairs). Only names of this exact form whose process is gone are ever cleaned up.
_TEMP_FILE = re.compile(r"^.+\.tmp-(?P<pid>\d{1,10})-[0-9a-f]{8}(\.[a-z0-9]{1,8}){0,2}$")
_TEMP_DIR = re.compile(r"^\..+\.tmp-(?P<pid>\d{1,10})-[0-9a-f]{8}$")


def _temp_name(target: Path) -> Path:
    """``name.tmp-<pid>-<hex>.ext`` next to ``target``; the suffix lower-cased (ITK picks writers by it)."""
    stem, suffix = _split_suffix(target.name)
    return target.with_name(f"{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix.lower()}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's process), or not a pid we can judge: keep its files
    return True


def clean_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove seg2med's temporary files/folders in ``folder`` whose writing process no longer runs (left by
    ``kill -9`` or a power cut). Only names of the exact form made by :func:`atomic_path` are touched, and
    never those of a live process (this one included). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        m = (_TEMP_DIR if is_dir else _TEMP_FILE).match(entry.name)
        if m is None or not (is_dir or entry.is_file(follow_symlinks=False)):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


@contextmanager
def temp_folder(parent: str | Path, name: str) -> Iterator[Path]:
    """A new folder ``.<name>.tmp-<pid>-<8 hex>`` in ``parent``, removed on exit (also after an error). The
    name is the form :func:`clean_stale_temp_files` recognises, so a folder left by ``kill -9`` is removed by
    the next run in that folder."""
    folder = Path(parent) / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Pending:
    """Finished temporary files waiting to be moved onto their final names (see :func:`output_group`)."""

    def __init__(self) -> None:
        self.moves: list[tuple[Path, Path]] = []
        self.cleanup: list[Path] = []

    def discard(self) -> None:
        for tmp, _ in self.moves:
            tmp.unlink(missing_ok=True)
        for extra in self.cleanup:
            shutil.rmtree(extra, ignore_errors=True)

    def commit(self) -> None:
        for tmp, target in self.moves:
            os.replace(tmp, target)
        for extra in self.cleanup:
            shutil.rmtree(extra, ignore_errors=True)


_GROUP: list[_Pending] = []


def _blocked_signals():  # noqa: ANN202
    """Context: SIGINT/SIGTERM wait while final names are put in place (in the main thread only)."""
    import signal
    import threading

    @contextmanager
    def block() -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
            yield
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return block()


def _finish(moves: list[tuple[Path, Path]], cleanup: list[Path] = ()) -> None:  # type: ignore[assignment]
    """Move finished temporary files into place now, or at the end of the enclosing :func:`output_group`."""
    if _GROUP:
        _GROUP[-1].moves.extend(moves)
        _GROUP[-1].cleanup.extend(cleanup)
        return
    pending = _Pending()
    pending.moves, pending.cleanup = list(moves), list(cleanup)
    with _blocked_signals():
        pending.commit()


@contextmanager
def output_group() -> Iterator[None]:
    """Write several outputs all-or-nothing: inside, :func:`atomic_path` (and every writer using it) leaves
    its finished temporary file in place; only when the block succeeds are all of them moved onto their final
    names (signals held meanwhile). On any failure every temporary file is removed and no output appears."""
    pending = _Pending()
    _GROUP.append(pending)
    try:
        yield
    except BaseException:
        _GROUP.pop()
        pending.discard()
        raise
    _GROUP.pop()
    try:
        with _blocked_signals():
            pending.commit()
    except BaseException:
        pending.discard()
        raise


def _write_error(target: Path, exc: OSError) -> Seg2MedError:
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    return Seg2MedError(f"cannot write '{target}': {reason}")


def _incomplete(target: Path, exc: Seg2MedError) -> Seg2MedError:
    free = free_bytes(target.parent)
    disk = f", {free} bytes free on its disk" if free is not None and free < (1 << 20) else ""
    detail = str(exc).split(": ", 1)[-1].replace("; the file was cut off", "")
    return Seg2MedError(f"cannot write '{target}': the file came out incomplete ({detail}{disk}); is the disk full? Nothing was written")


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what ITK/NIfTI C code prints on stderr (``** ERROR: NWAD ...``): failures reach the user as
    one ``Seg2MedError`` line instead. Only the main thread redirects (fd 2 is process-wide)."""
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread() or os.environ.get("SEG2MED_NATIVE_STDERR"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (``name.tmp-<pid>-XXXX.ext``) and move it into place on success.

    The extension is kept (lower-cased) so writers that choose a format by suffix work. The file is flushed
    to the disk (``fsync``: a full disk shows up there on many file systems) before the rename. On any
    exception the temporary file is removed and ``path`` is left untouched; an ``OSError`` (full disk,
    permissions) becomes a one-line ``Seg2MedError`` naming ``path``. Missing parent folders are created, and
    temporary files left in that folder by killed seg2med processes are removed. Inside
    :func:`output_group` the rename waits until the whole group has succeeded.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    clean_stale_temp_files(target.parent)
    tmp = _temp_name(target)
    try:
        yield tmp
        if tmp.exists():
            fsync_file(tmp)
        _finish([(tmp, target)])
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Seg2MedError):
            raise
        raise _write_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, default: Any = None) -> Path:
    """Write ``data`` as indented UTF-8 JSON to ``path`` through :func:`atomic_path` (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=default) + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | Path, what: str) -> Any:
    """Parse the JSON file ``path``; a one-line Seg2MedError naming ``what`` and the file otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Seg2MedError(f"{what} '{path}' does not exist") from None
    except OSError as exc:
        raise Seg2MedError(f"cannot read {what} '{path}': {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Seg2MedError(f"{what} '{path}' is not valid JSON ({exc})") from None


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path`` in one rename.

    An existing folder at ``path`` is moved aside first and deleted only after the new one is in place, so
    readers see the old folder or the new one, never a half-written one. On any exception the temporary
    folder is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should not be
    try:
        yield tmp
        old: Path | None = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verify_written(tmp: Path, target: Path) -> None:
    """Re-check a file just written (complete, decompressible, as many voxel bytes as its header says):
    SimpleITK's writers do not report a full disk, so this is where a short write is caught."""
    try:
        check_image_file(tmp, "output")
    except Seg2MedError as exc:
        raise _incomplete(target, exc) from None


def write_image(img: sitk.Image, path: str | Path) -> Path:
    """Write ``img`` atomically (format from the suffix, compressed where the format allows), then verify it.

    A short write (full disk) is an error and leaves nothing under ``path``. ``.mhd`` writes its header and
    its ``.zraw`` data file as one pair. Upper-case suffixes (``X.NII.GZ``) are written as such.
    """
    target = Path(path)
    if suffix_of(target.name) == ".mhd":
        return _write_mhd(img, target)
    with atomic_path(target) as tmp:
        try:
            with quiet_native_stderr():
                sitk.WriteImage(img, str(tmp), True)
        except RuntimeError as exc:
            raise Seg2MedError(f"cannot write image '{path}': {sitk_error(exc).replace(str(tmp), str(target))}") from None
        verify_written(tmp, target)
    return target


def _write_mhd(img: sitk.Image, target: Path) -> Path:
    """``.mhd`` header + data file: both are written in a temporary folder, verified, then moved (data first)."""
    if not target.name.endswith(".mhd"):
        raise Seg2MedError(f"cannot write image '{target}': give .mhd outputs a lower-case suffix (the header names its data file)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    clean_stale_temp_files(target.parent)
    folder = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        folder.mkdir()
        header = folder / target.name
        with quiet_native_stderr():
            sitk.WriteImage(img, str(header), True)
        data = [f for f in folder.iterdir() if f.name != target.name]
        for f in [header, *data]:
            fsync_file(f)
        verify_written(header, target)
        _finish([(f, target.parent / f.name) for f in data] + [(header, target)], [folder])
    except RuntimeError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise Seg2MedError(f"cannot write image '{target}': {sitk_error(exc).replace(str(folder / target.name), str(target))}") from None
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _write_error(target, exc) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def caret_extension_xml(names: Mapping[int, str]) -> bytes:
    """TotalSegmentator-compatible CaretExtension XML naming the labels (read by ``nifti_label_names``)."""
    root = ET.Element("CaretExtension")
    volume = ET.SubElement(root, "VolumeInformation", Index="0")
    table = ET.SubElement(volume, "LabelTable")
    for key, name in sorted(names.items()):
        label = ET.SubElement(table, "Label", Key=str(key), Red="1", Green="1", Blue="1", Alpha="1")
        label.text = name
    ET.SubElement(volume, "VolumeType").text = "Label"
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _present_names(seg: Segmentation) -> dict[int, str]:
    ids = [int(i) for i in np.unique(sitk.GetArrayViewFromImage(seg.image)) if i != 0]
    missing = [i for i in ids if i not in seg.names]
    if missing:
        raise Seg2MedError(f"segmentation has label ids without names in '{seg.label_set}': {_few(missing)}")
    return {i: seg.names[i] for i in ids}


def _write_seg_nrrd(seg: Segmentation, path: Path, present: Mapping[int, str]) -> None:
    import slicerio

    img = seg.image
    m = np.eye(4)
    m[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    arr = np.transpose(sitk.GetArrayViewFromImage(img), (2, 1, 0))
    out = slicerio.create_segmentation(arr.shape, m)
    for i, name in present.items():
        slicerio.add_segment(out, arr == i, {"id": name, "name": name})
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), out)
        verify_written(tmp, path)


def write_segmentation(seg: Segmentation, path: str | Path) -> Path:
    """Write a label map atomically: NIfTI with CaretExtension names, or a Slicer ``.seg.nrrd`` (slicerio)."""
    import nibabel as nib

    target = Path(path)
    present = _present_names(seg)
    img = sitk.Cast(seg.image, sitk.sitkUInt16)
    if suffix_of(target.name) == ".seg.nrrd":
        _write_seg_nrrd(Segmentation(img, seg.names, seg.label_set), target, present)
        return target
    if suffix_of(target.name) not in (".nii", ".nii.gz"):
        raise Seg2MedError(f"segmentation output '{path}' must end with .nii.gz, .nii or .seg.nrrd")
    with atomic_path(target) as tmp:
        plain = _temp_name(target)  # SimpleITK writes the geometry; nibabel adds the names
        try:
            with quiet_native_stderr():
                sitk.WriteImage(img, str(plain), True)
            verify_written(plain, target)
            nimg = nib.load(str(plain), mmap=False)
            data = np.asarray(nimg.dataobj).astype(np.uint16)
            header = nimg.header.copy()
            header.extensions.append(nib.nifti1.Nifti1Extension(0, caret_extension_xml(present)))
            nib.save(nib.Nifti1Image(data, nimg.affine, header=header), str(tmp))
            verify_written(tmp, target)
        except RuntimeError as exc:
            raise Seg2MedError(f"cannot write segmentation '{target}': {sitk_error(exc)}") from None
        finally:
            plain.unlink(missing_ok=True)
    return target
