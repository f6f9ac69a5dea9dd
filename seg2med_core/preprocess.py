"""Preprocessing shared by synthesis and training: intensities, body contour, and the 2D slice geometry.

* Intensities: CT is windowed at level 0 / width 2000 and scaled to [0, 1]; MR is clipped to its
  10th–90th percentile and scaled to [0, 1] (the paper's normalisation). Each has an exact inverse.
* Body contour: a bool mask of the patient without scanner table and arms, in the input's (z, y, x) order.
* ``SliceGrid``: canonical LPS reorientation → in-plane resampling → centre pad/crop to ``size``² and the
  exact inverse, so a stack of model-space slices maps back onto the reference image's voxel grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from seg2med_core.errors import Seg2MedError

Modality = Literal["ct", "mr"]
Interpolator = Literal["linear", "nearest"]

CT_WINDOW_LEVEL = 0.0
CT_WINDOW_WIDTH = 2000.0
CT_MIN_HU = CT_WINDOW_LEVEL - CT_WINDOW_WIDTH / 2  # -1000 HU ↦ 0
CT_MAX_HU = CT_WINDOW_LEVEL + CT_WINDOW_WIDTH / 2  # +1000 HU ↦ 1
CANONICAL_ORIENTATION = "LPS"

# --------------------------------------------------------------------------------------------------
# Intensities


def normalise_ct(arr: np.ndarray) -> np.ndarray:
    """HU → [0, 1] with the paper's window (level 0, width 2000): -1000 HU ↦ 0, +1000 HU ↦ 1, clipped."""
    out = (np.asarray(arr, dtype=np.float32) - np.float32(CT_MIN_HU)) / np.float32(CT_WINDOW_WIDTH)
    return np.clip(out, 0.0, 1.0)


def denormalise_ct(arr01: np.ndarray) -> np.ndarray:
    """[0, 1] → HU (inverse of :func:`normalise_ct` inside the window)."""
    return np.asarray(arr01, dtype=np.float32) * np.float32(CT_WINDOW_WIDTH) + np.float32(CT_MIN_HU)


def normalise_mr(
    arr: np.ndarray, p_lo: float = 10.0, p_hi: float = 90.0, mask: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """MR → [0, 1] by clipping to its ``p_lo``–``p_hi`` percentiles (paper: p10–p90 of the volume).

    Returns the scaled array and ``(lo, hi)`` so results can be mapped back with :func:`denormalise_mr`.
    ``mask`` (optional, same shape) restricts the voxels the percentiles are taken from.
    """
    values = np.asarray(arr, dtype=np.float32)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise Seg2MedError(f"MR percentiles must satisfy 0 <= p_lo < p_hi <= 100, got {p_lo}, {p_hi}")
    sample = values if mask is None else values[np.asarray(mask, dtype=bool)]
    if sample.size == 0:
        raise Seg2MedError("cannot normalise MR: no voxels (empty image or empty mask)")
    lo, hi = (float(v) for v in np.percentile(sample, [p_lo, p_hi]))
    if not hi > lo:
        raise Seg2MedError(
            f"cannot normalise MR: percentiles p{p_lo:g}={lo:g} and p{p_hi:g}={hi:g} are equal (near-constant image)"
        )
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), (lo, hi)


def denormalise_mr(arr01: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[0, 1] → MR signal with the ``(lo, hi)`` returned by :func:`normalise_mr`."""
    return np.asarray(arr01, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)


def check_not_constant(image: sitk.Image, name: str = "the image") -> None:
    """Refuse a constant image: it has no body contour (all air, or the whole field as body)."""
    arr = sitk.GetArrayViewFromImage(image)
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise Seg2MedError(f"{name} is constant (every voxel is {lo:g}): no body contour can be found in it")


def check_modality(modality: str) -> Modality:
    """Return ``modality`` lower-cased if it is ``ct`` or ``mr``; else a one-line :class:`Seg2MedError`."""
    m = str(modality).lower()
    if m not in ("ct", "mr"):
        raise Seg2MedError(f"modality must be 'ct' or 'mr', got '{modality}'")
    return m  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Canonical orientation


def to_canonical(img: sitk.Image) -> sitk.Image:
    """Reorient to LPS (``sitk.DICOMOrient``): a pure axis permutation/flip, so axial slices are ``array[k]``."""
    return sitk.DICOMOrient(img, CANONICAL_ORIENTATION)


@dataclass(frozen=True)
class _Reorientation:
    """How a (z, y, x) array of an image maps onto the (z, y, x) array of its canonical LPS version."""

    transpose: tuple[int, int, int]  # canonical array axis k ← input array axis transpose[k]
    flip: tuple[int, ...]  # canonical array axes flipped after the transpose

    @staticmethod
    def for_direction(direction: Sequence[float]) -> "_Reorientation":
        # The permutation/flip only depends on the direction cosines: ask ITK on a 2×2×2 proxy.
        proxy = sitk.Image([2, 2, 2], sitk.sitkUInt8)
        proxy.SetDirection(tuple(direction))
        f = sitk.DICOMOrientImageFilter()
        f.SetDesiredCoordinateOrientation(CANONICAL_ORIENTATION)
        f.Execute(proxy)
        perm = f.GetPermuteOrder()  # canonical ITK axis i ← input ITK axis perm[i]
        flips = f.GetFlipAxes()  # in canonical ITK axes
        transpose = tuple(2 - int(perm[2 - k]) for k in range(3))
        flip = tuple(k for k in range(3) if flips[2 - k])
        return _Reorientation(transpose, flip)  # type: ignore[arg-type]

    def forward(self, arr: np.ndarray) -> np.ndarray:
        out = np.transpose(arr, self.transpose)
        return np.flip(out, self.flip) if self.flip else out

    def inverse(self, arr: np.ndarray) -> np.ndarray:
        out = np.flip(arr, self.flip) if self.flip else arr
        return np.transpose(out, np.argsort(self.transpose))


def array_to_canonical(arr: np.ndarray, direction: Sequence[float]) -> np.ndarray:
    """View of a (z, y, x) array of an image with ``direction`` in canonical LPS (z, y, x) order (numpy
    transpose/flip, no copy): axial slices ``out[k]`` with anterior at the top and the patient's right on
    the left (radiological display)."""
    return _Reorientation.for_direction(direction).forward(np.asarray(arr))


def _canonical_array(img: sitk.Image) -> tuple[np.ndarray, _Reorientation]:
    reo = _Reorientation.for_direction(img.GetDirection())
    return reo.forward(sitk.GetArrayViewFromImage(img)), reo


# --------------------------------------------------------------------------------------------------
# Morphology in millimetres on axial slices (2D per slice, vectorised over the stack)

_SLICE_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_SLICE_CONNECTIVITY[1] = True  # 8-connected in-plane, never across slices


def _edt(mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per-slice Euclidean distance (mm) of every True pixel to the nearest False pixel of its slice;
    ``inf`` in slices without any False pixel."""
    out = np.empty(mask.shape, dtype=np.float32)
    for k, plane in enumerate(mask):
        if plane.all():
            out[k] = np.inf
        else:
            out[k] = ndimage.distance_transform_edt(plane, sampling=spacing_yx)
    return out


def _erode(mask: np.ndarray, r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    return _edt(mask, sp) > r_mm


def _dilate(mask: np.ndarray, r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    return _edt(~mask, sp) <= r_mm


def _close(mask: np.ndarray, r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    if r_mm <= 0:
        return mask
    # Pad in-plane so the closing is not clipped by the array border.
    pad = int(np.ceil(r_mm / min(sp))) + 1
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    closed = _erode(_dilate(padded, r_mm, sp), r_mm, sp)
    return closed[:, pad:-pad, pad:-pad]


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not touch the in-plane border of their axial slice."""
    lab, n = ndimage.label(~mask, structure=_SLICE_CONNECTIVITY)
    touches_border = np.zeros(n + 1, dtype=bool)
    touches_border[0] = True  # label 0 is the mask itself
    touches_border[lab[:, [0, -1], :].ravel()] = True
    touches_border[lab[:, :, [0, -1]].ravel()] = True
    return mask | ~touches_border[lab]


def _keep_main_components_per_slice(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Per axial slice keep the 2D components whose area is ≥ ``min_fraction`` × the slice's largest."""
    lab, n = ndimage.label(mask, structure=_SLICE_CONNECTIVITY)
    if n == 0:
        return mask
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    slice_of = np.zeros(n + 1, dtype=np.int64)
    z_idx = np.nonzero(lab)[0]
    slice_of[lab[lab > 0]] = z_idx
    largest = np.zeros(mask.shape[0], dtype=np.int64)
    np.maximum.at(largest, slice_of[1:], areas[1:])
    keep = areas >= min_fraction * largest[slice_of]
    keep[0] = False
    return keep[lab]


def _largest_component_3d(mask: np.ndarray, min_fraction: float = 1.0) -> np.ndarray:
    """Keep the 3D components (6-connected) of at least ``min_fraction`` × the largest's volume
    (1.0: the largest only)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    volumes = np.bincount(lab.ravel())
    volumes[0] = 0
    keep = volumes >= min_fraction * volumes.max()
    keep[0] = False
    return keep[lab]


# --------------------------------------------------------------------------------------------------
# Body contour


def _foreground(arr: np.ndarray, modality: Modality) -> np.ndarray:
    if modality == "ct":
        return arr > -500.0
    # MR: background is near zero; a fraction of a robust maximum is steadier than Otsu, which tends to
    # split fat from muscle inside the body. Otsu is used only when it is lower (very dark bodies).
    from skimage.filters import threshold_otsu

    robust_max = float(np.percentile(arr, 99.5))
    if robust_max <= float(arr.min()):
        return np.zeros(arr.shape, dtype=bool)
    threshold = min(0.1 * robust_max, float(threshold_otsu(arr)))
    return arr > threshold


WORK_SPACING_MM = 2.0
#: With ``remove_arms=False``, separate 3D parts (arms not touching the torso) of at least this fraction of
#: the largest part's volume are kept.
SEPARATE_PART_FRACTION = 0.02


def body_mask_from_image(
    img: sitk.Image,
    modality: str,
    *,
    arm_opening_mm: float = 12.0,
    remove_arms: bool = True,
    arm_area_fraction: float = 0.3,
    restore_mm: float = 3.0,
    closing_mm: float = 3.0,
) -> np.ndarray:
    """Body contour of a CT (HU) or MR image as a bool array in ``img``'s own (z, y, x) order.

    Works on canonical axial slices: threshold (CT > -500 HU; MR > min(10 % of the p99.5, Otsu)) and fill
    holes (lungs, bowel gas). Then the foreground is eroded by ``arm_opening_mm`` (a radius in mm, so it
    means the same at any spacing): thin structures (scanner table, cables, narrow contacts between an arm
    and the torso) vanish and the remaining cores are separate pieces. Per slice, cores smaller than
    ``arm_area_fraction`` × the largest are arms (both legs are kept; ``remove_arms=False`` keeps them,
    and separate 3D parts of ≥ ``SEPARATE_PART_FRACTION`` of the largest).
    Every foreground pixel goes to its nearest core; pixels of kept cores within ``arm_opening_mm +
    restore_mm`` form the body (so the contour keeps its detail). Finally the largest 3D component is
    kept, closed by ``closing_mm`` and hole-filled. Parts thinner than ``2 × arm_opening_mm`` that are not
    attached to the torso (fingers, the very top of the head) are dropped. Finer scans are processed on a
    working grid of about ``WORK_SPACING_MM`` in-plane and the result is intersected with the
    full-resolution foreground (plus one working pixel of slack), so the contour keeps its full detail.
    """
    modality = check_modality(modality)
    if img.GetDimension() != 3:
        raise Seg2MedError(f"body contour needs a 3D image, got {img.GetDimension()}D")
    arr, reo = _canonical_array(img)
    sp = _canonical_spacing_yx(img, reo)
    fg = fill_holes_per_slice(_foreground(np.asarray(arr, dtype=np.float32), modality))
    # Shape decisions on a working grid of about WORK_SPACING_MM (fine scans are 5–10× faster this way);
    # the detail of the contour comes back from the full-resolution foreground.
    factors = (max(1, int(WORK_SPACING_MM // sp[0])), max(1, int(WORK_SPACING_MM // sp[1])))
    coarse_fg = _block_majority(fg, factors)
    coarse_sp = (sp[0] * factors[0], sp[1] * factors[1])
    fraction = arm_area_fraction if remove_arms else 0.0
    part_fraction = 1.0 if remove_arms else SEPARATE_PART_FRACTION
    body = _main_body(coarse_fg, coarse_sp, arm_opening_mm, fraction, restore_mm)
    body = _largest_component_3d(body, part_fraction)
    body = fill_holes_per_slice(_close(body, closing_mm, coarse_sp))
    if factors != (1, 1):
        reach = ndimage.binary_dilation(body, structure=_SLICE_CONNECTIVITY)  # one coarse pixel of slack
        body = fg & _block_expand(reach, factors, fg.shape)
        body = fill_holes_per_slice(_largest_component_3d(body, part_fraction))
    return np.ascontiguousarray(reo.inverse(body))



def _block_majority(mask: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Downsample in-plane by integer ``factors``: a coarse pixel is set when more than half of its block
    is set (the array is padded with False to whole blocks)."""
    fy, fx = factors
    if (fy, fx) == (1, 1):
        return mask
    nz, ny, nx = mask.shape
    py, px = -ny % fy, -nx % fx
    padded = np.pad(mask, ((0, 0), (0, py), (0, px)))
    blocks = padded.reshape(nz, (ny + py) // fy, fy, (nx + px) // fx, fx)
    counts = blocks.sum(axis=(2, 4))
    return counts * 2 > fy * fx


def _block_expand(mask: np.ndarray, factors: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_block_majority`: repeat each coarse pixel over its block and crop to ``shape``."""
    out = np.repeat(np.repeat(mask, factors[0], axis=1), factors[1], axis=2)
    return out[:, : shape[1], : shape[2]]


def _main_body(fg: np.ndarray, sp: tuple[float, float], r_mm: float, fraction: float, restore_mm: float) -> np.ndarray:
    cores = _erode(fg, r_mm, sp)
    kept = _keep_main_components_per_slice(cores, fraction)
    if not kept.any():
        return np.zeros_like(fg)
    dist_kept = _edt(~kept, sp)
    dist_dropped = _edt(~(cores & ~kept), sp) if (cores & ~kept).any() else np.inf
    return fg & (dist_kept <= r_mm + restore_mm) & (dist_kept <= dist_dropped)


def body_mask_from_segmentation(
    seg: sitk.Image | np.ndarray | object,
    spacing: Sequence[float] | None = None,
    *,
    closing_mm: float = 10.0,
) -> np.ndarray:
    """Approximate body contour from a label map when no image exists: union of labels, closed, filled.

    ``seg`` is a ``sitk.Image``, an object with an ``.image`` (``io.Segmentation``), or a (z, y, x) array
    whose axis 0 is the slice axis; for an array ``spacing`` is the SimpleITK (x, y, z) spacing in mm.
    Closing (``closing_mm``) bridges the unlabelled tissue between organs; holes are filled per axial
    slice. Returns a bool array in the input's (z, y, x) order.
    """
    image = getattr(seg, "image", seg)
    if isinstance(image, sitk.Image):
        arr, reo = _canonical_array(image)
        sp = _canonical_spacing_yx(image, reo)
    else:
        if spacing is None or len(spacing) != 3:
            raise Seg2MedError(f"body_mask_from_segmentation needs the (x, y, z) spacing for an array, got {spacing}")
        arr, reo = np.asarray(image), _Reorientation((0, 1, 2), ())
        sp = (float(spacing[1]), float(spacing[0]))
    if arr.ndim != 3:
        raise Seg2MedError(f"segmentation must be 3D, got shape {arr.shape}")
    union = np.asarray(arr) > 0
    if not union.any():
        raise Seg2MedError("segmentation is empty: no body contour can be derived from it")
    body = fill_holes_per_slice(_close(union, closing_mm, sp))
    body = _largest_component_3d(body) | union
    return np.ascontiguousarray(reo.inverse(body))


def _canonical_spacing_yx(img: sitk.Image, reo: _Reorientation) -> tuple[float, float]:
    sp_zyx = img.GetSpacing()[::-1]
    return float(sp_zyx[reo.transpose[1]]), float(sp_zyx[reo.transpose[2]])


# --------------------------------------------------------------------------------------------------
# Slice grid: the forward/inverse geometry chain


@dataclass(frozen=True)
class Geometry:
    """Size/spacing/origin/direction of an image (SimpleITK (x, y, z) order)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @staticmethod
    def of(img: sitk.Image) -> "Geometry":
        return Geometry(
            tuple(int(v) for v in img.GetSize()),  # type: ignore[arg-type]
            tuple(float(v) for v in img.GetSpacing()),  # type: ignore[arg-type]
            tuple(float(v) for v in img.GetOrigin()),  # type: ignore[arg-type]
            tuple(float(v) for v in img.GetDirection()),
        )

    def apply(self, img: sitk.Image) -> sitk.Image:
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def matches(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=tol * max(self.spacing))
            and np.allclose(self.origin, other.origin, rtol=0, atol=tol * max(self.spacing))
            and np.allclose(self.direction, other.direction, rtol=0, atol=tol)
        )


def _sitk_interpolator(name: str) -> int:
    if name == "linear":
        return sitk.sitkLinear
    if name == "nearest":
        return sitk.sitkNearestNeighbor
    raise Seg2MedError(f"interpolator must be 'linear' or 'nearest', got '{name}'")


def _resample_onto(img: sitk.Image, grid: Geometry, interpolator: int, default: float = 0.0) -> sitk.Image:
    """Resample ``img`` onto ``grid`` (size, spacing, origin, direction); edges extrapolate the nearest voxel."""
    res = sitk.ResampleImageFilter()
    res.SetSize(grid.size)
    res.SetOutputSpacing(grid.spacing)
    res.SetOutputOrigin(grid.origin)
    res.SetOutputDirection(grid.direction)
    res.SetInterpolator(interpolator)
    res.SetDefaultPixelValue(default)
    res.SetUseNearestNeighborExtrapolator(True)
    return res.Execute(img)


class SliceGrid:
    """Forward/inverse chain between a reference volume and a stack of square model-space axial slices.

    Forward: reorient to LPS (exact permutation/flip) → resample in-plane to ``spacing_xy`` mm (slice
    spacing and positions unchanged; ``None`` keeps the in-plane spacing, no interpolation at all) →
    centre pad/crop to ``size`` × ``size`` → array ``(n_slices, size, size)``. Inverse: un-pad/crop
    (``fill_value`` where the model grid did not reach) → resample back → un-permute → image with exactly
    the reference's size, spacing, origin and direction.
    """

    def __init__(self, ref: Geometry, spacing_xy: float | None, size: int) -> None:
        if size < 1:
            raise Seg2MedError(f"slice size must be a positive number of pixels, got {size}")
        if spacing_xy is not None and not spacing_xy > 0:
            raise Seg2MedError(f"in-plane spacing must be > 0 mm, got {spacing_xy}")
        self.ref = ref
        self.size = int(size)
        self.reorientation = _Reorientation.for_direction(ref.direction)
        self.canonical = self._canonical_geometry()
        self.resampled = self._resampled_geometry(spacing_xy)
        self.needs_resampling = not (
            self.resampled.size == self.canonical.size
            and np.allclose(self.resampled.spacing, self.canonical.spacing, rtol=1e-9, atol=0)
        )

    @classmethod
    def from_image(cls, ref: sitk.Image, spacing_xy: float | None, size: int) -> "SliceGrid":
        if ref.GetDimension() != 3:
            raise Seg2MedError(f"slice grid needs a 3D reference image, got {ref.GetDimension()}D")
        return cls(Geometry.of(ref), spacing_xy, size)

    # -- geometry ---------------------------------------------------------------------------------
    def _canonical_geometry(self) -> Geometry:
        g = self.ref
        d = np.asarray(g.direction).reshape(3, 3)
        t, flip = self.reorientation.transpose, self.reorientation.flip
        perm = [2 - t[2 - i] for i in range(3)]  # canonical ITK axis i ← reference ITK axis perm[i]
        flipped_itk = {2 - k for k in flip}
        new_d = np.zeros((3, 3))
        origin = np.asarray(g.origin, dtype=float)
        for i, j in enumerate(perm):
            column = d[:, j]
            if i in flipped_itk:
                origin = origin + column * (g.size[j] - 1) * g.spacing[j]
                column = -column
            new_d[:, i] = column
        return Geometry(
            tuple(g.size[j] for j in perm),  # type: ignore[arg-type]
            tuple(g.spacing[j] for j in perm),  # type: ignore[arg-type]
            tuple(origin.tolist()),  # type: ignore[arg-type]
            tuple(new_d.ravel().tolist()),
        )

    def _resampled_geometry(self, spacing_xy: float | None) -> Geometry:
        c = self.canonical
        if spacing_xy is None:
            return c
        d = np.asarray(c.direction).reshape(3, 3)
        size, spacing = list(c.size), list(c.spacing)
        origin = np.asarray(c.origin, dtype=float)
        for axis in (0, 1):  # in-plane; the centre of the extent stays where it was
            n_new = max(1, int(round(c.size[axis] * c.spacing[axis] / spacing_xy)))
            shift = (c.size[axis] - 1) * c.spacing[axis] / 2 - (n_new - 1) * spacing_xy / 2
            origin = origin + d[:, axis] * shift
            size[axis], spacing[axis] = n_new, float(spacing_xy)
        return Geometry(tuple(size), tuple(spacing), tuple(origin.tolist()), c.direction)  # type: ignore[arg-type]

    @property
    def n_slices(self) -> int:
        return self.canonical.size[2]

    @property
    def spacing_xy(self) -> tuple[float, float]:
        """Model-space pixel spacing (x, y) in mm."""
        return self.resampled.spacing[0], self.resampled.spacing[1]

    @property
    def stack_shape(self) -> tuple[int, int, int]:
        return (self.n_slices, self.size, self.size)

    def _pad_crop(self, n: int) -> tuple[int, int]:
        """(source start, target start) of the centred overlap between length ``n`` and ``size``."""
        return (max(0, (n - self.size) // 2), max(0, (self.size - n) // 2))

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, img: sitk.Image, interpolator: Interpolator = "linear", pad_value: float = 0.0) -> np.ndarray:
        """Image on the reference grid → ``(n_slices, size, size)`` stack (float32 for linear; the input
        dtype for nearest, e.g. labels). ``pad_value`` fills pixels outside the image."""
        if not Geometry.of(img).matches(self.ref):
            raise Seg2MedError(
                f"image geometry {Geometry.of(img)} does not match the slice grid's reference {self.ref}"
            )
        canon = to_canonical(img)
        if not Geometry.of(canon).matches(self.canonical):  # the analytic chain must agree with ITK
            raise AssertionError(f"canonical geometry {Geometry.of(canon)} != expected {self.canonical}")
        return self._forward_canonical(sitk.GetArrayViewFromImage(canon), interpolator, pad_value)

    def forward_array(
        self, arr: np.ndarray, interpolator: Interpolator = "linear", pad_value: float = 0.0
    ) -> np.ndarray:
        """Like :meth:`forward` for an array in the reference's (z, y, x) order."""
        arr = np.asarray(arr)
        expected = self.ref.size[::-1]
        if arr.shape != expected:
            raise Seg2MedError(f"array shape {arr.shape} does not match the reference volume {expected} (z, y, x)")
        return self._forward_canonical(self.reorientation.forward(arr), interpolator, pad_value)

    def _forward_canonical(self, arr: np.ndarray, interpolator: Interpolator, pad_value: float) -> np.ndarray:
        interp = _sitk_interpolator(interpolator)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if interpolator == "linear":
            arr = arr.astype(np.float32, copy=False)
        if self.needs_resampling:
            img = self.canonical.apply(sitk.GetImageFromArray(np.ascontiguousarray(arr)))
            arr = sitk.GetArrayFromImage(_resample_onto(img, self.resampled, interp))
        out = np.full(self.stack_shape, pad_value, dtype=arr.dtype)
        (sy, ty), (sx, tx) = self._pad_crop(arr.shape[1]), self._pad_crop(arr.shape[2])
        ny, nx = min(arr.shape[1], self.size), min(arr.shape[2], self.size)
        out[:, ty : ty + ny, tx : tx + nx] = arr[:, sy : sy + ny, sx : sx + nx]
        return out

    # -- inverse ----------------------------------------------------------------------------------
    def inverse_array(
        self, stack: np.ndarray, interpolator: Interpolator = "linear", fill_value: float = 0.0
    ) -> np.ndarray:
        """``(n_slices, size, size)`` stack → array in the reference's (z, y, x) order (float32 for linear;
        the stack's dtype for nearest). ``fill_value`` where the model grid did not cover the image."""
        stack = np.asarray(stack)
        if stack.shape != self.stack_shape:
            raise Seg2MedError(f"slice stack shape {stack.shape} does not match the grid {self.stack_shape}")
        interp = _sitk_interpolator(interpolator)
        if stack.dtype == bool:
            stack = stack.astype(np.uint8)
        if interpolator == "linear":
            stack = stack.astype(np.float32, copy=False)
        n_y, n_x = self.resampled.size[1], self.resampled.size[0]
        arr = np.full((self.n_slices, n_y, n_x), fill_value, dtype=stack.dtype)
        (sy, ty), (sx, tx) = self._pad_crop(n_y), self._pad_crop(n_x)
        ny, nx = min(n_y, self.size), min(n_x, self.size)
        arr[:, sy : sy + ny, sx : sx + nx] = stack[:, ty : ty + ny, tx : tx + nx]
        if self.needs_resampling:
            img = self.resampled.apply(sitk.GetImageFromArray(arr))
            arr = sitk.GetArrayFromImage(_resample_onto(img, self.canonical, interp, float(fill_value)))
        out = np.ascontiguousarray(self.reorientation.inverse(arr))
        assert out.shape == self.ref.size[::-1], (out.shape, self.ref.size)
        return out

    def inverse(self, stack: np.ndarray, interpolator: Interpolator = "linear", fill_value: float = 0.0) -> sitk.Image:
        """``(n_slices, size, size)`` stack → image with exactly the reference's geometry."""
        img = sitk.GetImageFromArray(self.inverse_array(stack, interpolator, fill_value))
        self.ref.apply(img)
        out_geometry = Geometry.of(img)
        if out_geometry != self.ref:
            raise AssertionError(f"inverse geometry {out_geometry} != reference {self.ref}")
        return img
