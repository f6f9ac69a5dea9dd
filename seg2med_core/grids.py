"""Bringing a segmentation onto an image's voxel grid: exactly when the grids differ only in axis order.

TotalSegmentator run on a DICOM series writes a NIfTI whose y axis (for example) runs the other way from
the DICOM image as SimpleITK reads it: the same voxels on the same physical grid, stored in another axis
order and with another direction and origin. :func:`match_to_grid` recognises such a pair (a signed axis
permutation that maps one grid onto the other, within tolerance), reorders the segmentation with
``sitk.PermuteAxes`` and ``sitk.Flip`` (no interpolation: every label value is kept), verifies the result
against the image and then copies the image's geometry exactly. Grids that really differ stay an error
naming what differs (size, spacing, origin, direction) unless the caller asks for nearest-neighbour
resampling of a segmentation that overlaps the image (``resample=True``, ``--resample-seg``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import Seg2MedError
from .io import Segmentation, geometry_differences, same_geometry

InfoFn = Callable[[str], None]
_AXES = "xyz"


@dataclass(frozen=True)
class AxisReorder:
    """How a source grid's axes map onto a reference grid: output axis ``k`` is source axis ``order[k]``,
    flipped when ``flip[k]`` (ITK axis order x, y, z)."""

    order: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.order == (0, 1, 2) and not any(self.flip)

    def describe(self) -> str:
        """``axes (y, x, z) of the segmentation, y flipped`` style text for the info line."""
        parts = []
        if self.order != (0, 1, 2):
            parts.append("axes reordered to (" + ", ".join(_AXES[i] for i in self.order) + ")")
        flipped = [_AXES[self.order[k]] for k in range(3) if self.flip[k]]
        if flipped:
            parts.append(f"{', '.join(flipped)} axis flipped" if len(flipped) == 1 else f"{', '.join(flipped)} axes flipped")
        return "; ".join(parts) or "no change"

    def apply(self, img: sitk.Image) -> sitk.Image:
        """Permute and flip ``img`` (physical positions of the voxels are kept; values are not touched)."""
        out = img
        if self.order != (0, 1, 2):
            out = sitk.PermuteAxes(out, [int(i) for i in self.order])
        if any(self.flip):
            out = sitk.Flip(out, [bool(f) for f in self.flip], False)
        return out


def axis_reorder(src: sitk.Image, ref: sitk.Image, tol: float = 1e-4) -> AxisReorder | None:
    """The signed axis permutation taking ``src``'s axes onto ``ref``'s, or None when the direction
    cosines are not a permutation/flip of each other (within ``tol``)."""
    if src.GetDimension() != 3 or ref.GetDimension() != 3:
        return None
    d_src = np.array(src.GetDirection(), dtype=float).reshape(3, 3)  # columns: axis directions
    d_ref = np.array(ref.GetDirection(), dtype=float).reshape(3, 3)
    dots = d_ref.T @ d_src  # dots[k, i] = ref axis k . src axis i
    order: list[int] = []
    flip: list[bool] = []
    for k in range(3):
        i = int(np.argmax(np.abs(dots[k])))
        if abs(abs(dots[k, i]) - 1.0) > tol or i in order:
            return None
        order.append(i)
        flip.append(bool(dots[k, i] < 0))
    return AxisReorder(tuple(order), tuple(flip))  # type: ignore[arg-type]


def reorder_onto(src: sitk.Image, ref: sitk.Image, tol: float = 1e-4) -> tuple[sitk.Image, AxisReorder] | None:
    """``src`` brought onto ``ref``'s grid by a pure permutation/flip, with ``ref``'s geometry copied
    exactly; None when no permutation/flip makes the grids agree (within ``tol``, as ``check_same_geometry``)."""
    reorder = axis_reorder(src, ref, tol)
    if reorder is None:
        return None
    moved = reorder.apply(src)
    if not same_geometry(moved, ref, tol):
        return None
    out = sitk.Image(moved)
    out.CopyInformation(ref)
    return out, reorder


def _corners(img: sitk.Image) -> np.ndarray:
    """Physical positions of the 8 outer corners of the grid (voxel edges, not centres)."""
    size = np.array(img.GetSize(), dtype=float)
    out = []
    for corner in np.ndindex(2, 2, 2):
        idx = np.where(np.array(corner) == 1, size - 0.5, -0.5)
        out.append(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    return np.array(out)


def overlaps(src: sitk.Image, ref: sitk.Image) -> bool:
    """True when ``src``'s field of view intersects ``ref``'s grid (bounding boxes in ``ref``'s index space)."""
    idx = np.array([ref.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in _corners(src)])
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    size = np.array(ref.GetSize(), dtype=float)
    return bool(np.all(hi > -0.5) and np.all(lo < size - 0.5))


def resample_nearest(src: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """``src`` resampled onto ``ref``'s grid with nearest neighbour (outside ``src``: 0); labels stay labels."""
    return sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, src.GetPixelID())


def match_to_grid(
    src: sitk.Image,
    ref: sitk.Image,
    src_name: str,
    ref_name: str,
    *,
    resample: bool = False,
    resample_option: str | None = "--resample-seg",
    info: InfoFn | None = None,
    tol: float = 1e-4,
) -> sitk.Image:
    """``src`` on ``ref``'s voxel grid: unchanged when the grids agree, reordered exactly when they differ only
    in axis order/flips (one ``info`` line), resampled (nearest neighbour) when ``resample`` and the fields
    of view overlap; otherwise a one-line error naming what differs (and suggesting ``resample_option``
    when resampling would work)."""
    if same_geometry(src, ref, tol):
        return src
    found = reorder_onto(src, ref, tol)
    if found is not None:
        out, reorder = found
        if info is not None:
            info(f"{src_name} covers the voxels of {ref_name} in another axis order ({reorder.describe()}): "
                 "brought onto its grid exactly, without interpolation")
        return out
    reorder = axis_reorder(src, ref, tol)
    compared = reorder.apply(src) if reorder is not None and not reorder.is_identity else src
    diffs = geometry_differences(compared, ref, tol)
    where = "after reordering the axes, " if compared is not src else ""
    overlap = overlaps(src, ref)
    if resample:
        if not overlap:
            raise Seg2MedError(f"{src_name} does not overlap {ref_name} ({where}{'; '.join(diffs)}): nothing to resample")
        out = resample_nearest(src, ref)
        if info is not None:
            info(f"{src_name} resampled onto the grid of {ref_name} (nearest neighbour; {where}{'; '.join(diffs)})")
        return out
    hint = ""
    if overlap and resample_option:
        hint = f"; the two overlap: add `{resample_option}` to resample the segmentation onto the image grid (nearest neighbour)"
    elif not overlap:
        hint = "; they do not overlap at all"
    raise Seg2MedError(f"{src_name} and {ref_name} are on different voxel grids ({where}{'; '.join(diffs)}){hint}")


def match_segmentation(
    seg: Segmentation,
    image: sitk.Image,
    seg_name: str = "segmentation",
    image_name: str = "image",
    *,
    resample: bool = False,
    resample_option: str | None = "--resample-seg",
    info: InfoFn | None = None,
) -> Segmentation:
    """``seg`` on ``image``'s grid (see :func:`match_to_grid`); names and label set are kept."""
    moved = match_to_grid(seg.image, image, seg_name, image_name, resample=resample,
                          resample_option=resample_option, info=info)
    if moved is seg.image:
        return seg
    return Segmentation(moved, seg.names, seg.label_set)
