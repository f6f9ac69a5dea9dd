"""Procedural digital phantom: a TotalSegmentator-labelled (``total`` v2 + tissue types) adult torso.

``make_phantom(seed, sex, height_cm, spacing, region)`` builds a label map of a plausible adult abdomen
and/or pelvis from smooth primitives (superquadrics, swept tubes, thick sheets) with smooth random
deformations, placed relative to a vertebral column whose level heights scale with body height. It is
meant as input for the synthesis pipeline when no patient segmentation is at hand (the paper uses XCAT
phantoms for the same purpose, section II.A), and as a test object with known anatomy.

Patient coordinates
    Built directly in LPS millimetres: x → patient left, y → posterior, z → superior; x = 0 is the
    midline, z = 0 the upper endplate of S1. The SimpleITK image has the identity direction (which *is*
    LPS in SimpleITK/ITK), so physical points of the volume are patient coordinates: the liver lies at
    negative x (patient right), the spleen at positive x (patient left).

Labels
    Organ ids are looked up by *name* in the ``total`` label set (``labels.names_for``); tissue classes
    use ``labels.TISSUE_OFFSET + id``: subcutaneous_fat, torso_fat (visceral fat), skeletal_muscle
    (abdominal wall, gluteal and other unnamed muscles). Unlabelled voxels inside the skin are "body" (soft
    tissue) for the priors. Every voxel holds one label: overlaps are resolved by a fixed paint order
    (tissues, lungs, bowel, muscles, solid organs, small organs, vessels, spinal cord, bones; later wins)
    and organs are clipped to the abdominal/thoracic cavity, so every structure lies inside the skin.
    Organs with a documented volume are sized on what stays visible after that order (``_Canvas.flush``).

Sizes (adult reference values; the generator samples inside them, tests check them)
    ``SIZE_RANGES`` lists the documented ranges with sources:
    - liver volume 1.0-2.2 L (CT volumetry: Heinemann et al., Forensic Sci Int 1999, mean ~1.5 L;
      standard liver volume 706 mL x BSA(m^2) + 2.4 mL, Urata et al., Hepatology 1995 → 1.1-1.6 L).
    - spleen volume 0.10-0.35 L (Prassopoulos et al., Eur Radiol 1997: mean 215 mL, range 107-314 mL).
    - kidney length 10-13 cm and volume 100-250 mL (Emamian et al., AJR 1993: mean length 11.2 cm left,
      10.9 cm right; volume ~ 130-150 mL).
    - pancreas 40-110 mL (Saisho et al., Clin Anat 2007: adult mean ~ 70 mL).
    - gallbladder 15-60 mL (fasting gallbladder, typical 30-50 mL).
    - urinary bladder 100-500 mL (moderately filled; capacity ~ 400-600 mL).
    - prostate 15-35 mL (normal adult gland ~ 20-25 mL).
    - abdominal aorta diameter 15-25 mm (infrarenal ~ 20 mm in men, ~ 17 mm in women).
    - lumbar vertebral segment (body + disc) 30-45 mm per level (adult lumbar body height ~ 27 mm,
      disc ~ 10 mm); 175 cm reference height, z lengths scale linearly with height.

Speed: everything is evaluated in small bounding boxes; the 3 mm abdomen-pelvis phantom takes about
0.8 s of CPU time (one core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import Seg2MedError
from .io import Segmentation
from .labels import names_for

Region = Literal["abdomen", "pelvis", "abdomen-pelvis"]
Sex = Literal["male", "female"]
REGIONS: tuple[str, ...] = ("abdomen", "pelvis", "abdomen-pelvis")
SEXES: tuple[str, ...] = ("male", "female")

#: Documented adult size ranges: (low, high) in mL for volumes, mm for lengths/diameters (see docstring).
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "liver": (1000.0, 2200.0),
    "spleen": (100.0, 350.0),
    "kidney_volume": (100.0, 250.0),
    "kidney_length": (100.0, 130.0),
    "pancreas": (40.0, 110.0),
    "gallbladder": (15.0, 60.0),
    "urinary_bladder": (100.0, 500.0),
    "prostate": (15.0, 35.0),
    "aorta_diameter": (15.0, 25.0),
    "lumbar_segment": (30.0, 45.0),
}

# Vertebral levels from L5 upwards with segment heights (body + disc, mm) at 175 cm.
_LEVELS: tuple[tuple[str, float], ...] = (
    ("L5", 35.0), ("L4", 37.0), ("L3", 37.0), ("L2", 36.0), ("L1", 34.0), ("T12", 30.0), ("T11", 28.0),
    ("T10", 26.0), ("T9", 24.0), ("T8", 23.0), ("T7", 22.0), ("T6", 21.0), ("T5", 20.0),
)

_BoxMask = tuple[tuple[slice, slice, slice], np.ndarray]


# ---------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class _Grid:
    """Axis-aligned LPS grid: ``origin``/``spacing`` in (x, y, z) mm, arrays in (z, y, x) order."""

    origin: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) covering the physical box [lo, hi] (x, y, z), or None when outside."""
        i0 = np.floor((np.asarray(lo) - self.origin) / self.spacing).astype(int)
        i1 = np.ceil((np.asarray(hi) - self.origin) / self.spacing).astype(int) + 1
        size = np.array(self.shape[::-1])
        i0, i1 = np.clip(i0, 0, size), np.clip(i1, 0, size)
        if np.any(i1 <= i0):
            return None
        return (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))

    def axes(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable physical coordinates (X (1,1,nx), Y (1,ny,1), Z (nz,1,1)) of a box."""
        x = self.origin[0] + self.spacing[0] * np.arange(sl[2].start, sl[2].stop)
        y = self.origin[1] + self.spacing[1] * np.arange(sl[1].start, sl[1].stop)
        z = self.origin[2] + self.spacing[2] * np.arange(sl[0].start, sl[0].stop)
        return x[None, None, :], y[None, :, None], z[:, None, None]

    def full(self) -> tuple[slice, slice, slice]:
        return (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))


def _rotation(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    """R = Rz @ Ry @ Rx: columns are the object's local axes in patient coordinates."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ---------------------------------------------------------------------------------------- primitives
def _superquadric(
    grid: _Grid,
    center: np.ndarray,
    radii: np.ndarray,
    rot: np.ndarray | None = None,
    e_h: float = 2.0,
    e_v: float = 2.0,
    taper: float = 0.0,
    wobble: float = 0.0,
    rng: np.random.Generator | None = None,
) -> _BoxMask | None:
    """Superquadric ``(|u|^e_h + |v|^e_h)^(e_v/e_h) + |w|^e_v <= 1`` in local unit coordinates.

    ``taper`` thins the shape toward local +u (v and w radii scaled by ``1 - taper (u+1)/2``: the liver's
    left lobe); ``wobble`` adds a smooth random displacement (fraction of the radii) so seeds differ.
    """
    rot = np.eye(3) if rot is None else rot
    reach = float(np.max(radii)) * (1.0 + 2.0 * wobble) + 1.0
    sl = grid.box(center - reach, center + reach)
    if sl is None:
        return None
    X, Y, Z = (a.astype(np.float32) for a in grid.axes(sl))
    d = (X - np.float32(center[0]), Y - np.float32(center[1]), Z - np.float32(center[2]))
    rot, radii = rot.astype(np.float32), np.asarray(radii, np.float32)
    u = (rot[0, 0] * d[0] + rot[1, 0] * d[1] + rot[2, 0] * d[2]) / radii[0]
    v = (rot[0, 1] * d[0] + rot[1, 1] * d[1] + rot[2, 1] * d[2]) / radii[1]
    w = (rot[0, 2] * d[0] + rot[1, 2] * d[1] + rot[2, 2] * d[2]) / radii[2]
    if wobble > 0.0 and rng is not None:
        for _ in range(3):
            k = rng.normal(0.0, 1.6, size=3)
            phase = rng.uniform(0, 2 * np.pi)
            amp = wobble * rng.uniform(0.5, 1.0)
            field = amp * np.sin(k[0] * u + k[1] * v + k[2] * w + phase)
            u, v, w = u + field * rng.uniform(-1, 1), v + field * rng.uniform(-1, 1), w + field * rng.uniform(-1, 1)
    if taper:
        g = np.clip(1.0 - taper * (u + 1.0) / 2.0, 0.05, None)
        v, w = v / g, w / g
    horiz = (np.abs(u) ** e_h + np.abs(v) ** e_h) ** (e_v / e_h)
    return sl, (horiz + np.abs(w) ** e_v) <= 1.0


def _sweep(grid: _Grid, points: np.ndarray, radii: np.ndarray) -> _BoxMask | None:
    """Union of axis-aligned ellipsoids swept along a polyline; ``radii`` (N, 3) are interpolated."""
    points, radii = np.asarray(points, float), np.broadcast_to(np.asarray(radii, float), (len(points), 3))
    seg_len = np.linalg.norm(np.diff(points, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg_len)])
    step = max(0.5, min(0.6 * float(grid.spacing.min()), 0.4 * float(radii.min())))
    ts = np.linspace(0.0, t[-1], max(2, int(math.ceil(t[-1] / step)) + 1))
    pts = np.stack([np.interp(ts, t, points[:, k]) for k in range(3)], axis=1)
    rad = np.stack([np.interp(ts, t, radii[:, k]) for k in range(3)], axis=1)
    sl = grid.box(pts.min(0) - rad.max(0) - 1, pts.max(0) + rad.max(0) + 1)
    if sl is None:
        return None
    X, Y, Z = grid.axes(sl)
    xs, ys, zs = X[0, 0], Y[0, :, 0], Z[:, 0, 0]
    out = np.zeros((len(zs), len(ys), len(xs)), dtype=bool)
    # index range of every ellipsoid inside the sweep's box, computed for all points at once
    base = np.array([xs[0], ys[0], zs[0]])
    lo = np.clip(np.floor((pts - rad - base) / grid.spacing).astype(int), 0, None)
    hi = np.minimum(np.ceil((pts + rad - base) / grid.spacing).astype(int) + 1, np.array([len(xs), len(ys), len(zs)]))
    for p, r, l, h in zip(pts, rad, lo, hi):
        if np.any(h <= l):
            continue
        dx = ((xs[l[0] : h[0]] - p[0]) / r[0]) ** 2
        dy = ((ys[l[1] : h[1]] - p[1]) / r[1]) ** 2
        dz = ((zs[l[2] : h[2]] - p[2]) / r[2]) ** 2
        out[l[2] : h[2], l[1] : h[1], l[0] : h[0]] |= (dz[:, None, None] + dy[None, :, None] + dx[None, None, :]) <= 1.0
    return sl, out


def _thick_sheet(grid: _Grid, points: np.ndarray, half_thickness: float) -> _BoxMask | None:
    """Voxels within ``half_thickness`` mm of a dense point cloud (a sheet such as the iliac wing)."""
    sl = grid.box(points.min(0) - half_thickness - 1, points.max(0) + half_thickness + 1)
    if sl is None:
        return None
    X, Y, Z = grid.axes(sl)
    idx = np.round((points - np.array([X[0, 0, 0], Y[0, 0, 0], Z[0, 0, 0]])) / grid.spacing).astype(int)
    shape = tuple(s.stop - s.start for s in sl)
    keep = np.all((idx >= 0) & (idx < np.array(shape[::-1])), axis=1)
    seeds = np.ones(shape, dtype=bool)
    seeds[idx[keep, 2], idx[keep, 1], idx[keep, 0]] = False
    if seeds.all():
        return None
    dist = ndimage.distance_transform_edt(seeds, sampling=grid.spacing[::-1])
    return sl, dist <= half_thickness


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cell: int) -> np.ndarray:
    """Zero-mean unit-variance smooth noise (random lattice every ``cell`` voxels, linearly upsampled)."""
    coarse_shape = tuple(max(2, s // cell + 2) for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 0.7).astype(np.float32)
    fine = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse_shape)], order=1)[: shape[0], : shape[1], : shape[2]]
    return (fine - fine.mean()) / (fine.std() + 1e-9)


# ------------------------------------------------------------------------------------------- anatomy
@dataclass
class _Anatomy:
    """Seeded body plan: vertebral levels, spine curve, body contour and cavity profiles along z."""

    rng: np.random.Generator
    sex: str
    s: float  # z scale (height / 175)
    w: float  # transverse scale
    pw: float  # pelvic width factor
    fat: float  # adiposity factor (subcutaneous fat, belly)
    z_bot: dict[str, float]
    z_top: dict[str, float]

    @classmethod
    def sample(cls, seed: int, sex: str, height_cm: float) -> "_Anatomy":
        rng = np.random.default_rng(seed)
        s = height_cm / 175.0
        female = sex == "female"
        w = (height_cm / 175.0) ** 0.6 * rng.uniform(0.95, 1.05) * (0.94 if female else 1.0)
        pw = (1.12 if female else 1.0) * rng.uniform(0.97, 1.03)
        fat = rng.uniform(0.8, 1.4) * (1.2 if female else 1.0)
        z, z_bot, z_top = 0.0, {}, {}
        for name, h in _LEVELS:
            h = h * s * rng.uniform(0.96, 1.04)
            z_bot[name], z_top[name] = z, z + h
            z += h
        return cls(rng, sex, s, w, pw, fat, z_bot, z_top)

    def zc(self, level: str) -> float:
        return 0.5 * (self.z_bot[level] + self.z_top[level])

    # spine: vertebral body centre y (lordosis in the lumbar spine, sacrum tilting backwards below S1)
    def spine_y(self, z: np.ndarray | float) -> np.ndarray:
        z = np.asarray(z, float)
        z_l1 = self.z_top["L1"]
        lumbar = -14.0 * np.sin(np.pi * np.clip(z / z_l1, 0.0, 1.0))
        thoracic = 12.0 * np.sin(np.pi * np.clip((z - z_l1) / (400.0 * self.s), 0.0, 1.0))
        sacral = np.interp(z, self.sacrum_z()[::-1], self.sacrum_y()[::-1])
        return np.where(z >= 0.0, lumbar + thoracic, sacral)

    def sacrum_z(self) -> np.ndarray:
        return np.array([0.0, -12.0, -50.0, -85.0, -115.0, -140.0]) * self.s

    def sacrum_y(self) -> np.ndarray:
        return np.array([0.0, 6.0, 25.0, 48.0, 60.0, 56.0]) * self.w

    # body contour along z (x half-width, anterior and posterior skin y) and layer thicknesses
    def profiles(self, z: np.ndarray) -> dict[str, np.ndarray]:
        s, w, pw, fat = self.s, self.w, self.pw, self.fat
        female = self.sex == "female"
        zc = np.array([-175, -100, -40, 40, 110, 190, 260, 330]) * s
        a = np.array([165, 180, 170, 160, 150, 152, 158, 162], float) * w
        a[:4] *= pw * (1.03 if female else 1.0)
        a += (fat - 1.0) * np.array([35, 35, 35, 35, 40, 30, 20, 15])
        y_post = np.array([125, 125, 115, 95, 90, 95, 100, 105], float) * w + (fat - 1.0) * 20
        y_ant = np.array([-95, -110, -115, -125, -130, -120, -115, -110], float) * w
        y_ant -= (fat - 1.0) * np.array([20, 30, 40, 60, 70, 45, 25, 15]) * (0.6 if female else 1.0)
        out = {
            "a": np.interp(z, zc, a),
            "y_post": np.interp(z, zc, y_post),
            "y_ant": np.interp(z, zc, y_ant),
        }
        out["t_fat"] = np.full_like(z, 14.0 * fat * (1.3 if female else 1.0))
        out["t_muscle"] = np.full_like(z, 11.0 * w)
        # pelvic side walls (iliac wings, obturator internus, levator): lateral limit of the cavity
        zl = np.array([-175, -120, -85, -40, 20, 70, 95]) * s
        lim = np.array([40, 52, 70, 85, 105, 120, 1000], float) * w * pw
        out["cavity_a"] = np.minimum(np.interp(z, zl, lim), out["a"] - out["t_fat"] - out["t_muscle"])
        # posterior limit of the cavity: in front of the sacrum below S1, paravertebral gutters above
        spine = self.spine_y(z)
        blend = np.clip(z / (30.0 * s), 0.0, 1.0)  # 0 at/below S1, 1 from 30 mm above
        out["cavity_post"] = spine + blend * 50.0 * w + (1.0 - blend) * -8.0
        return out


def _inside_contour(X: np.ndarray, Y: np.ndarray, a: np.ndarray, y_ant: np.ndarray, y_post: np.ndarray, e: float = 2.4) -> np.ndarray:
    """Axial superellipse with different anterior/posterior extents (a, y_* are (nz,1,1) arrays)."""
    yc = 0.5 * (y_ant + y_post)
    b = 0.5 * (y_post - y_ant)
    b = b * np.where(Y > yc, 0.97, 1.03)  # slightly fuller anteriorly
    return (np.abs(X) / a) ** e + (np.abs(Y - yc) / b) ** e <= 1.0


# --------------------------------------------------------------------------------------------- canvas
@dataclass
class _Calibrated:
    """A shape ``make(scale)`` whose visible volume (after clipping and later paints) should be ``target_ml``."""

    make: Callable[[float], "_BoxMask | None"]
    target_ml: float


class _Canvas:
    """Label volume painted in priority order; each structure is clipped to an allowed region.

    ``paint`` only records; ``flush`` resolves the order: walking from the highest priority down it knows
    which voxels later structures will take, so calibrated organs are sized on what stays visible.
    """

    def __init__(self, grid: _Grid, ids: dict[str, int]) -> None:
        self.grid = grid
        self.ids = ids
        self.labels = np.zeros(grid.shape, dtype=np.uint16)
        self._ops: list[tuple[str, _BoxMask | _Calibrated | None, np.ndarray | None]] = []

    def paint(self, name: str, shape: _BoxMask | _Calibrated | None, clip: np.ndarray | None) -> None:
        if name not in self.ids:
            raise KeyError(f"'{name}' is not a class of the total label set")
        self._ops.append((name, shape, clip))

    def flush(self) -> np.ndarray:
        voxel_ml = float(np.prod(self.grid.spacing)) / 1000.0
        covered = np.zeros(self.grid.shape, dtype=bool)
        resolved: list[_BoxMask | None] = [None] * len(self._ops)
        for i in range(len(self._ops) - 1, -1, -1):
            _name, shape, clip = self._ops[i]
            if isinstance(shape, _Calibrated):
                allowed = ~covered if clip is None else clip & ~covered
                shape = _calibrated(shape.make, shape.target_ml, voxel_ml, allowed)
            if shape is None:
                continue
            sl, mask = shape
            if clip is not None:
                mask = mask & clip[sl]
            covered[sl] |= mask
            resolved[i] = (sl, mask)
        for (name, _shape, _clip), res in zip(self._ops, resolved):
            if res is not None:
                self.labels[res[0]][res[1]] = self.ids[name]
        self._ops.clear()
        return self.labels


def _side(sign: float) -> str:
    return "left" if sign > 0 else "right"


# ----------------------------------------------------------------------------------------- builders
def _paint_tissues(cv: _Canvas, an: _Anatomy, prof: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Skin, subcutaneous fat, muscle wall and the cavity; returns the region masks used for clipping."""
    g = cv.grid
    X, Y, Z = g.axes(g.full())
    p = {k: v[:, None, None] for k, v in prof.items()}
    skin = _inside_contour(X, Y, p["a"], p["y_ant"], p["y_post"])
    t, m = p["t_fat"], p["t_muscle"]
    fat_in = _inside_contour(X, Y, p["a"] - t, p["y_ant"] + t, p["y_post"] - t)
    # cavity: inside the muscle wall, narrowed by the pelvic side walls, in front of the back muscles
    cav_post = np.minimum(p["y_post"] - t - m, p["cavity_post"])
    cav = _inside_contour(X, Y, p["cavity_a"], p["y_ant"] + t + m, cav_post + 0.25 * (cav_post - p["y_ant"] - t - m))
    spine = an.spine_y(Z[:, 0, 0])[:, None, None]
    cav &= Y < cav_post
    cav &= ~((np.abs(X) < 32.0 * an.w) & (Y > spine - 20.0))
    cav &= fat_in
    ids = cv.ids
    cv.labels[skin] = ids["subcutaneous_fat"]
    cv.labels[fat_in] = ids["skeletal_muscle"]
    visceral = _smooth_noise(g.shape, rng, max(2, int(round(18.0 / g.spacing.min()))))
    fat_fraction = 0.55 if an.sex == "male" else 0.4
    threshold = float(np.quantile(visceral, 1.0 - fat_fraction))
    cv.labels[cav] = 0
    cv.labels[cav & (visceral > threshold)] = ids["torso_fat"]
    return {"skin": skin, "fat_in": fat_in, "cavity": cav, "spine": np.broadcast_to(spine, g.shape)}


def _diaphragm(an: _Anatomy, X: np.ndarray, Y: np.ndarray, apex_r: float, apex_l: float) -> np.ndarray:
    """Height of the diaphragm dome z_d(x, y): right dome higher, posterior recesses lower."""
    blend = 1.0 / (1.0 + np.exp(-X / 15.0))
    apex = apex_r * (1 - blend) + apex_l * blend
    lateral = 0.006 * (np.abs(X) - 70.0 * an.w) ** 2
    posterior = 0.010 * np.clip(Y + 20.0, 0.0, None) ** 2
    anterior = 0.002 * np.clip(-Y - 60.0, 0.0, None) ** 2
    return apex - np.minimum(lateral + posterior + anterior, 130.0 * an.s)


def _calibrated(make: Callable[[float], _BoxMask | None], target_ml: float, voxel_ml: float, clip: np.ndarray | None, rounds: int = 3) -> _BoxMask | None:
    """Evaluate ``make(scale)`` and rescale (``rounds`` times) so the clipped volume approaches ``target_ml``."""
    scale = 1.0
    shape = make(scale)
    for _ in range(rounds):
        if shape is None:
            return None
        sl, mask = shape
        vol = float((mask & clip[sl]).sum() if clip is not None else mask.sum()) * voxel_ml
        if vol <= 0 or abs(vol / target_ml - 1.0) < 0.04:
            return shape
        scale = float(np.clip(scale * (target_ml / vol) ** (1 / 3), 0.6, 1.6))
        shape = make(scale)
    return shape


def _build(seed: int, sex: str, height_cm: float, spacing: tuple[float, float, float], region: str) -> tuple[np.ndarray, _Grid]:
    an = _Anatomy.sample(seed, sex, height_cm)
    rng = an.rng
    s, w, pw = an.s, an.w, an.pw
    female = sex == "female"
    zc, zt = an.zc, an.z_top

    z_lo = {"abdomen": zc("L5") - 5.0, "pelvis": -165.0 * s, "abdomen-pelvis": -165.0 * s}[region]
    z_hi = {"abdomen": zt["T9"] + 10.0, "pelvis": zt["L4"], "abdomen-pelvis": zt["T9"] + 10.0}[region]
    zz = np.arange(z_lo, z_hi + 1e-6, 1.0)
    prof_mm = an.profiles(zz)
    x_half = float(prof_mm["a"].max()) + 12.0
    y0, y1 = float(prof_mm["y_ant"].min()) - 12.0, float(prof_mm["y_post"].max()) + 12.0
    sp = np.asarray(spacing, float)
    size = np.ceil(np.array([2 * x_half, y1 - y0, z_hi - z_lo]) / sp).astype(int) + 1
    origin = np.array([-0.5 * (size[0] - 1) * sp[0], y0, z_lo])
    grid = _Grid(origin=origin, spacing=sp, shape=(int(size[2]), int(size[1]), int(size[0])))
    cv = _Canvas(grid, {name: i for i, name in names_for("total").items()})

    Xf, Yf, Zf = grid.axes(grid.full())
    prof = an.profiles(Zf[:, 0, 0])
    masks = _paint_tissues(cv, an, prof, rng)
    fat_in, cav = masks["fat_in"], masks["cavity"]
    ys = an.spine_y

    def j(scale: float = 6.0) -> np.ndarray:
        return rng.normal(0.0, scale, size=3)

    # --- diaphragm from the liver top ---------------------------------------------------------------
    liver_c = np.array([-62.0 * w, -22.0, zc("T12") - 5.0 * s]) + j(5)
    liver_r0 = np.array([98.0 * w, 88.0 * w, 78.0 * s])
    apex_r = liver_c[2] + liver_r0[2] * 0.92
    apex_l = apex_r - rng.uniform(10, 22) * s
    zd = _diaphragm(an, Xf, Yf, apex_r, apex_l)
    below = Zf < zd - 2.0
    above = Zf > zd + 3.0
    thorax = cav & above
    abdomen_cav = cav & below

    # --- paraspinal muscles (autochthon) --------------------------------------------------------------
    spine_f = masks["spine"]
    z_auto = np.clip((Zf + 60.0 * s) / (80.0 * s), 0.0, 1.0)  # thin over the sacrum, full from L5 up
    for sign in (1.0, -1.0):
        ex = (Xf - sign * 36.0 * w) / (30.0 * w * (0.5 + 0.5 * z_auto))
        ey = (Yf - (spine_f + 52.0 * w)) / (28.0 * w * (0.4 + 0.6 * z_auto))
        belly = (ex**2 + ey**2 <= 1.0) & (Zf > -60.0 * s) & fat_in & ~cav & (np.sign(Xf) == sign)
        cv.labels[belly] = cv.ids[f"autochthon_{_side(sign)}"]

    # --- lung bases ---------------------------------------------------------------------------------------
    mediastinum = ((np.abs(Xf) < 30.0 * w) & (Yf > spine_f - 60.0)) | (np.abs(Xf) < 18.0 * w)
    lungs = thorax & ~mediastinum
    fissure = Yf > (-70.0 + 0.9 * (Zf - apex_r))
    cv.labels[lungs & (Xf < 0) & fissure] = cv.ids["lung_lower_lobe_right"]
    cv.labels[lungs & (Xf < 0) & ~fissure] = cv.ids["lung_middle_lobe_right"]
    cv.labels[lungs & (Xf > 0) & fissure] = cv.ids["lung_lower_lobe_left"]
    cv.labels[lungs & (Xf > 0) & ~fissure] = cv.ids["lung_upper_lobe_left"]

    # --- small bowel: loops filling the central lower abdomen -----------------------------------------
    sb_center = np.array([0.0, -55.0 * w, zc("L4")]) + j(8)
    sb = _superquadric(grid, sb_center, np.array([115.0 * w, 70.0 * w, 95.0 * s]), wobble=0.1, rng=rng)
    if sb is not None:
        sl, m = sb
        loops = _smooth_noise(m.shape, rng, max(2, int(round(12.0 / grid.spacing.min()))))
        cv.paint("small_bowel", (sl, m & (loops > -0.6)), abdomen_cav)

    # --- colon frame -----------------------------------------------------------------------------------
    def pt(x: float, y: float, z: float, jitter: float = 6.0) -> np.ndarray:
        return np.array([x, y, z]) + j(jitter) * np.array([1.0, 1.0, 0.5])

    sac_y = lambda z: float(np.interp(z, an.sacrum_z()[::-1], an.sacrum_y()[::-1]))  # noqa: E731
    colon = [
        (pt(-72 * w, -40, zc("L5") - 5), 30), (pt(-88 * w, -15, zc("L3")), 25), (pt(-82 * w, -25, zc("L1") - 10 * s), 24),
        (pt(-45 * w, -95 * w, zc("L2")), 22), (pt(0, -105 * w, zc("L3") - 10 * s, 10), 22), (pt(50 * w, -95 * w, zc("L2")), 22),
        (pt(88 * w, -30, zc("T12")), 22), (pt(95 * w, 5, zc("L2")), 20), (pt(92 * w, 10, zc("L4")), 19),
        (pt(80 * w, -15, zc("L5")), 18), (pt(55 * w, -50, -25 * s), 17), (pt(15, -60, -45 * s), 17),
        (pt(-15, -30, -62 * s, 4), 17), (pt(0, sac_y(-85 * s) - 32, -85 * s, 2), 18),
        (pt(0, sac_y(-115 * s) - 32, -115 * s, 2), 17), (pt(0, sac_y(-140 * s) - 35, -150 * s, 2), 13),
    ]
    cv.paint("colon", _sweep(grid, np.array([c for c, _ in colon]), np.array([[r * w] * 3 for _, r in colon])), cav)

    # --- iliopsoas ------------------------------------------------------------------------------------
    for sign in (1.0, -1.0):
        pts = np.array([
            [sign * 22 * w, ys(zt["L1"]) + 4, zt["L1"]], [sign * 35 * w, ys(zc("L3")) + 2, zc("L3")],
            [sign * 48 * w, ys(zc("L5")) - 4, zc("L5")], [sign * 65 * w * pw, -22.0, -40.0 * s],
            [sign * 80 * w * pw, -45.0, -95.0 * s], [sign * 100 * w * pw, -30.0, -160.0 * s],
        ])
        radii = np.array([6, 17, 23, 24, 20, 15], float)[:, None] * np.array([w, w, 1.0])
        cv.paint(f"iliopsoas_{_side(sign)}", _sweep(grid, pts, radii), fat_in)

    # --- upper abdominal organs ---------------------------------------------------------------------
    cv.paint("duodenum", _sweep(grid, np.array([
        pt(-22 * w, -62, zc("L1")), pt(-42 * w, -42, zc("L1"), 3), pt(-50 * w, -22, zc("L2"), 3), pt(-46 * w, -25, zc("L3"), 3),
        pt(-10, -35, zc("L3") - 4 * s, 3), pt(20, -40, zc("L3"), 3), pt(26, -45, zc("L2"), 3),
    ]), np.array([[12.0 * w] * 3])), abdomen_cav)

    stomach = np.array([
        pt(52 * w, -8, apex_l - 42 * s), pt(62 * w, -45, apex_l - 90 * s), pt(45 * w, -72 * w, zc("L1")),
        pt(10, -78 * w, zc("L1") - 5 * s, 3), pt(-22 * w, -62, zc("L1"), 2),
    ])
    stomach_r = np.array([40, 37, 30, 24, 14], float) * w * rng.uniform(0.9, 1.1)
    cv.paint("stomach", _sweep(grid, stomach, np.repeat(stomach_r[:, None], 3, axis=1)), abdomen_cav)

    # organ size factor: sex and (weakly) height, bounded so the sampled volumes stay in SIZE_RANGES
    size_f = float(np.clip((0.92 if female else 1.0) * (height_cm / 175.0) ** 0.75, 0.85, 1.15))
    rot_liver = _rotation(deg_z=rng.uniform(-8, 8), deg_y=rng.uniform(-6, 6))
    liver_ml = rng.uniform(1300, 1700) * size_f
    cv.paint("liver", _Calibrated(
        lambda k: _superquadric(grid, liver_c, liver_r0 * k, rot_liver, e_h=2.3, taper=0.55, wobble=0.06, rng=np.random.default_rng(seed + 11)),
        liver_ml), abdomen_cav)

    z_spleen = zc("T12") + 4 * s
    spleen_x = 0.68 * float(an.profiles(np.array([z_spleen]))["cavity_a"][0])  # keeps it inside small bodies
    spleen_c = np.array([spleen_x, float(ys(z_spleen)) + 30.0 * w, z_spleen]) + j(4)
    spleen_ml = rng.uniform(150, 250) * size_f
    rot_spleen = _rotation(deg_z=rng.uniform(25, 40), deg_x=rng.uniform(-10, 10))
    cv.paint("spleen", _Calibrated(
        lambda k: _superquadric(grid, spleen_c, np.array([22.0, 55.0, 50.0]) * k, rot_spleen, wobble=0.08, rng=np.random.default_rng(seed + 12)),
        spleen_ml), abdomen_cav)

    kidney_tops: dict[float, np.ndarray] = {}
    for sign in (1.0, -1.0):
        zk = zc("L1") - 8 * s if sign > 0 else zc("L2") + 5 * s
        c = np.array([sign * 72.0 * w, float(ys(zk)) + 28.0, zk]) + j(4)
        length = rng.uniform(107, 121) * s**0.3 * (0.97 if female else 1.0)
        radii = np.array([28.0 * w, 23.0 * w, length / 2])
        rot = _rotation(deg_x=-rng.uniform(10, 20), deg_y=sign * -rng.uniform(8, 16), deg_z=sign * -rng.uniform(20, 35))
        kidney_ml = rng.uniform(135, 190) * size_f
        cv.paint(f"kidney_{_side(sign)}", _Calibrated(
            lambda k, c=c, radii=radii, rot=rot, sign=sign: _kidney(grid, c, radii, rot, k, sign, np.random.default_rng(seed + 20 + int(sign))),
            kidney_ml), abdomen_cav)
        kidney_tops[sign] = c + rot @ np.array([0.0, 0.0, radii[2]])

    pancreas_pts = np.array([
        pt(-36 * w, ys(zc("L2")) - 32, zc("L2") + 10 * s, 3), pt(-8, ys(zc("L1")) - 48, zc("L1"), 3),
        pt(35 * w, ys(zc("L1")) - 35, zc("L1") + 10 * s, 3), pt(72 * w, ys(zc("T12")) + 5, zc("T12") - 4 * s, 3),
    ])
    pancreas_r = np.array([[18, 15, 22], [12, 10, 12], [11, 9, 11], [10, 8, 10]], float) * w
    cv.paint("pancreas", _Calibrated(
        lambda k: _sweep(grid, pancreas_pts, pancreas_r * k**1.5), rng.uniform(55, 85) * size_f), abdomen_cav)

    bladder_c = np.array([0.0, -48.0 * w, -78.0 * s + (8.0 if not female else 0.0)]) + j(4)
    cv.paint("urinary_bladder", _Calibrated(
        lambda k: _superquadric(grid, bladder_c, np.array([46.0, 36.0, 36.0]) * k, wobble=0.05, rng=np.random.default_rng(seed + 13)),
        rng.uniform(150, 380)), cav)
    if not female:
        cv.paint("prostate", _Calibrated(
            lambda k, c=np.array([0.0, -40.0 * w, -122.0 * s]) + j(2): _superquadric(grid, c, np.array([20.0, 15.0, 17.0]) * k),
            rng.uniform(18, 30)), cav)

    heart_c = np.array([25.0 * w, -72.0 * w, apex_r + 50.0 * s]) + j(4)
    heart = _superquadric(grid, heart_c, np.array([68.0, 48.0, 52.0]) * w, _rotation(deg_z=35), wobble=0.04, rng=rng)
    cv.paint("heart", heart, cav & (Zf > zd + 1.0))

    gb_c = liver_c + np.array([18.0 * w, -55.0 * w, -45.0 * s]) + j(4)
    gb_ml = rng.uniform(22, 45)
    cv.paint("gallbladder", _Calibrated(
        lambda k: _superquadric(grid, gb_c, np.array([14.0, 15.0, 38.0]) * k, _rotation(deg_x=35, deg_z=-20), e_v=2.2), gb_ml),
        abdomen_cav)

    for sign, top in kidney_tops.items():
        c = top + np.array([-sign * 14.0, -8.0, 10.0 * s])
        cv.paint(f"adrenal_gland_{_side(sign)}", _superquadric(grid, c, np.array([6.0, 13.0, 17.0]), _rotation(deg_z=sign * 30)), abdomen_cav)

    # --- vessels ---------------------------------------------------------------------------------------
    z_top_img = grid.origin[2] + grid.spacing[2] * grid.shape[0] + 20
    cv.paint("esophagus", _sweep(grid, np.array([
        [0.0, ys(z_top_img) - 42, z_top_img], [12 * w, ys(zc("T10")) - 44, zc("T10")], stomach[0] + np.array([-20 * w, -6, 20 * s]),
    ]), np.array([[9.0, 9.0, 9.0]])), fat_in)
    r_ao = rng.uniform(9.5, 11.5) * (0.88 if female else 1.0)
    z_bif = zc("L4") + rng.uniform(-8, 8) * s
    zs_ao = np.linspace(z_top_img, z_bif, 24)
    aorta = np.stack([np.full_like(zs_ao, 14.0 * w), ys(zs_ao) - 22.0 - r_ao, zs_ao], axis=1)
    r_line = np.interp(zs_ao, [z_bif, zt["L1"], z_top_img], [r_ao * 0.85, r_ao, r_ao * 1.1])
    cv.paint("aorta", _sweep(grid, aorta, np.repeat(r_line[:, None], 3, axis=1)), fat_in)
    bif = aorta[-1]
    for sign in (1.0, -1.0):
        pts = np.array([bif, [sign * 38 * w, ys(zc("L5")) - 28, zc("L5") - 8 * s], [sign * 62 * w * pw, -32.0, -40 * s],
                        [sign * 82 * w * pw, -48.0, -85 * s], [sign * 92 * w * pw, -42.0, -130 * s]])
        cv.paint(f"iliac_artery_{_side(sign)}", _sweep(grid, pts, np.array([[6.5, 6.5, 6.5]])), fat_in)
    z_conf = zc("L5") + 5 * s
    zs_cv = np.linspace(zc("T10"), z_conf, 20)
    ivc = np.stack([np.full_like(zs_cv, -22.0 * w), ys(zs_cv) - 28.0, zs_cv], axis=1)
    ivc = np.vstack([[[-28.0 * w, -20.0, z_top_img]], ivc])
    cv.paint("inferior_vena_cava", _sweep(grid, ivc, np.array([[13.0, 10.0, 10.0]]) * w), fat_in)
    for sign in (1.0, -1.0):
        pts = np.array([ivc[-1], [sign * 35 * w, ys(zc("L5")) - 18, zc("L5") - 12 * s], [sign * 66 * w * pw, -22.0, -45 * s],
                        [sign * 84 * w * pw, -38.0, -88 * s], [sign * 92 * w * pw, -32.0, -130 * s]])
        cv.paint(f"iliac_vena_{_side(sign)}", _sweep(grid, pts, np.array([[8.0, 8.0, 8.0]])), fat_in)
    conf = np.array([-4.0, float(ys(zc("L1"))) - 38.0, zc("L1")])
    cv.paint("portal_vein_and_splenic_vein", _sweep(grid, np.array([
        conf, [-30 * w, ys(zc("T12")) - 42, zc("T12")], [-52 * w, ys(zc("T12")) - 38, zc("T12") + 14 * s]]), np.array([[7.0, 7.0, 7.0]])), abdomen_cav)
    cv.paint("portal_vein_and_splenic_vein", _sweep(grid, np.array([
        conf, [35 * w, ys(zc("L1")) - 24, zc("L1") + 10 * s], spleen_c + np.array([-18.0, -6.0, -10.0 * s])]), np.array([[5.0, 5.0, 5.0]])), abdomen_cav)

    # --- spinal cord -----------------------------------------------------------------------------------
    def canal_y(z: np.ndarray | float) -> np.ndarray:
        z = np.asarray(z, float)
        body_ry = np.where(z > zt["L1"], 14.0, 17.0) * w
        return ys(z) + body_ry + 11.0 * w

    zs_cord = np.linspace(z_top_img, an.z_bot["L2"], 30)
    cord = np.stack([np.zeros_like(zs_cord), canal_y(zs_cord), zs_cord], axis=1)
    cv.paint("spinal_cord", _sweep(grid, cord, np.array([[5.0 * w, 5.0 * w, 5.0]])), fat_in)

    # --- bones -------------------------------------------------------------------------------------------
    _paint_ribs(cv, an, prof_fn=an.profiles, clip=fat_in, z_top_img=z_top_img)
    _paint_pelvis(cv, an, clip=fat_in, rng=rng)
    for name, _h in _LEVELS:
        _paint_vertebra(cv, an, name, canal_y, fat_in)
    return cv.flush(), grid


def _kidney(grid: _Grid, c: np.ndarray, radii: np.ndarray, rot: np.ndarray, k: float, sign: float, rng: np.random.Generator) -> _BoxMask | None:
    """Bean-shaped kidney: ellipsoid (width/depth scaled by ``k^1.5``, length fixed) minus a medial hilum."""
    r = radii * np.array([k**1.5, k**1.5, 1.0])
    shape = _superquadric(grid, c, r, rot, wobble=0.04, rng=rng)
    hilum = _superquadric(grid, c + rot @ np.array([-sign * 0.85 * r[0], -8.0, 0.0]), np.array([12.0, 10.0, 18.0]), rot)
    if shape is None or hilum is None:
        return shape
    sl, mask = shape
    full = np.zeros(grid.shape, bool)
    full[sl] = mask
    full[hilum[0]] &= ~hilum[1]
    return sl, full[sl]


def _paint_vertebra(cv: _Canvas, an: _Anatomy, level: str, canal_y: Callable[[float], np.ndarray], clip: np.ndarray) -> None:
    """Body (elliptic cylinder), neural arch ring, spinous and transverse processes of one vertebra."""
    g, w = cv.grid, an.w
    lumbar = level.startswith("L")
    z0, z1 = an.z_bot[level], an.z_top[level]
    h = z1 - z0
    zc = 0.5 * (z0 + z1)
    y_body = float(an.spine_y(zc))
    rx, ry = (24.0 if lumbar else 18.0) * w, (17.0 if lumbar else 14.0) * w
    cy = float(canal_y(zc))
    cr = (10.0 if lumbar else 8.5) * w
    sp_len = (30.0 if lumbar else 34.0) * w
    sl = g.box(np.array([-50.0 * w - 2, y_body - ry - 2, z0 - 20.0]), np.array([50.0 * w + 2, cy + cr + sp_len + 8, z1 + 2]))
    if sl is None:
        return
    X, Y, Z = g.axes(sl)
    body = (((X / rx) ** 2 + ((Y - y_body) / ry) ** 2) <= 1.0) & (np.abs(Z - zc) <= 0.38 * h)
    arch_z = (Z > z0 + 0.2 * h) & (Z < z1 - 0.08 * h)
    rr = np.sqrt(X**2 + (Y - cy) ** 2)
    arch = (rr >= cr) & (rr <= cr + 6.5 * w) & (Y > y_body) & arch_z
    pedicle = (np.abs(X) > 0.55 * cr) & (np.abs(X) < cr + 6.0) & (Y > y_body) & (Y < cy) & arch_z
    drop = 0.25 if lumbar else 0.8  # thoracic spinous processes slope steeply downwards
    y_rel = Y - (cy + cr)
    spinous = (np.abs(X) < 4.5 * w) & (y_rel > 0) & (y_rel < sp_len) & (np.abs(Z - (zc + 0.1 * h) + drop * y_rel) < (9.0 if lumbar else 6.0))
    t_len = (48.0 if lumbar else 38.0) * w
    t_y = cy - 3.0 + (0.0 if lumbar else 0.45) * np.abs(X)
    transverse = (np.abs(X) > cr) & (np.abs(X) < t_len) & (np.abs(Y - t_y) < 5.0) & (np.abs(Z - (zc + 0.1 * h)) < 6.0)
    cv.paint(f"vertebrae_{level}", (sl, body | arch | pedicle | spinous | transverse), clip)


def _paint_ribs(cv: _Canvas, an: _Anatomy, prof_fn: Callable[[np.ndarray], dict[str, np.ndarray]], clip: np.ndarray, z_top_img: float) -> None:
    """Ribs 5-12 following the inner body wall and dropping anteriorly; cartilages of ribs 5-10; sternum."""
    g, w, s = cv.grid, an.w, an.s
    theta_end = {5: 150, 6: 150, 7: 148, 8: 138, 9: 128, 10: 118, 11: 92, 12: 68}
    drop = {5: 80, 6: 82, 7: 85, 8: 82, 9: 75, 10: 65, 11: 45, 12: 30}
    z_xiph = an.zc("T10") + 5.0 * s
    for k in range(5, 13):
        level = f"T{k}"
        zk = an.z_bot[level] + 0.6 * (an.z_top[level] - an.z_bot[level])
        y_s = float(an.spine_y(zk))
        th = np.radians(np.linspace(38.0, theta_end[k], 28))
        frac = (th - th[0]) / (th[-1] - th[0])
        zr = zk - drop[k] * s * frac**1.3
        p = prof_fn(zr)
        ring_a = p["a"] - p["t_fat"] - 0.5 * p["t_muscle"] - 4.0
        y_post_in = p["y_post"] - p["t_fat"] - 0.5 * p["t_muscle"]
        y_ant_in = p["y_ant"] + p["t_fat"] + 0.5 * p["t_muscle"] + 2.0
        yc = 0.5 * (y_post_in + y_ant_in)
        b = np.where(np.cos(th) > 0, y_post_in - yc, yc - y_ant_in)
        for sign in (1.0, -1.0):
            x = sign * ring_a * np.sin(th)
            y = np.minimum(yc + b * np.cos(th), y_s + 52.0 * w)
            head = np.array([[sign * 16.0 * w, y_s + 14.0 * w, zk + 2.0], [sign * 42.0 * w, y_s + 44.0 * w, zk]])
            pts = np.vstack([head, np.stack([x, y, zr], axis=1)])
            cv.paint(f"rib_{_side(sign)}_{k}", _sweep(g, pts, np.array([[5.5, 5.5, 5.5]]) * w), clip)
            if k <= 10:
                end = pts[-1]
                z_end = z_xiph + (k - 7) * 3.0 * s if k >= 8 else end[2] + 4.0
                th_c = np.radians(np.linspace(theta_end[k], 172.0, 10))
                pc = prof_fn(np.full(10, z_end))
                ra = pc["a"] - pc["t_fat"] - 0.5 * pc["t_muscle"] - 4.0
                ya = pc["y_ant"] + pc["t_fat"] + 0.5 * pc["t_muscle"] + 2.0
                yc_c = 0.5 * (pc["y_post"] - pc["t_fat"] + ya)
                xc = sign * ra * np.sin(th_c)
                yc_line = yc_c + (yc_c - ya) * np.cos(th_c)
                zc_line = np.linspace(end[2], z_end, 10)
                cart = np.vstack([end, np.stack([xc, yc_line, zc_line], axis=1)[1:]])
                cv.paint("costal_cartilages", _sweep(g, cart, np.array([[5.0, 5.0, 5.0]]) * w), clip)
    zs = np.array([z_xiph - 30.0 * s, z_xiph, z_top_img])
    p = prof_fn(zs)
    y = p["y_ant"] + p["t_fat"] + 0.5 * p["t_muscle"] + 4.0
    radii = np.array([[7.0, 4.0, 4.0], [14.0, 6.0, 4.0], [15.0, 6.0, 4.0]]) * w
    cv.paint("sternum", _sweep(g, np.stack([np.zeros(3), y, zs], axis=1), radii), clip)


def _paint_pelvis(cv: _Canvas, an: _Anatomy, clip: np.ndarray, rng: np.random.Generator) -> None:
    """Sacrum (with S1), hip bones (iliac wing sheet, acetabulum, pubic and ischial rami) and femora."""
    g, w, s, pw = cv.grid, an.w, an.s, an.pw
    sz, sy = an.sacrum_z(), an.sacrum_y()
    half_x = np.array([50.0, 52.0, 46.0, 32.0, 18.0, 8.0]) * w * pw
    half_y = np.array([16.0, 17.0, 15.0, 11.0, 8.0, 6.0]) * w
    radii = np.stack([half_x, half_y, np.full(6, 5.0)], axis=1)
    pts = np.stack([np.zeros(6), sy, sz], axis=1)
    pts[0, 2] -= 4.0
    sacrum = _sweep(g, pts, radii)
    if sacrum is not None:
        sl, m = sacrum
        _, _, Z = g.axes(sl)
        cv.paint("sacrum", (sl, m & (Z < -30.0 * s)), clip)
        cv.paint("vertebrae_S1", (sl, m & (Z >= -30.0 * s)), clip)
    for sign in (1.0, -1.0):
        side = _side(sign)
        acet = np.array([sign * 90.0 * w * pw, -14.0 * w, -86.0 * s]) + rng.normal(0, 2, 3)
        # iliac wing: fan from the crest (posterior → anterior superior iliac spine) down to the acetabulum
        u = np.linspace(0.0, 1.0, 40)[:, None]
        v = np.linspace(0.0, 1.0, 30)[None, :]
        phi = np.radians(5.0 + 130.0 * u)
        crest = np.stack(np.broadcast_arrays(
            sign * (42.0 + 82.0 * np.sin(phi)) * w * pw, -5.0 * w + 72.0 * w * np.cos(phi), (58.0 + 12.0 * np.sin(phi)) * s * np.ones_like(phi)), axis=-1)
        target = acet + np.stack(np.broadcast_arrays(-sign * 6.0, (28.0 - 48.0 * u) * w, 36.0 * s), axis=-1)
        bow = sign * 14.0 * np.sin(np.pi * v) * np.sin(np.pi * u)
        sheet = (1 - v)[..., None] * crest + v[..., None] * target
        sheet[..., 0] += bow
        wing = _thick_sheet(g, sheet.reshape(-1, 3), 5.0 * w)
        pubis = np.array([sign * 10.0, -74.0 * w, -112.0 * s])
        tuber = np.array([sign * 55.0 * w * pw, 5.0, -150.0 * s])
        parts = [
            wing,
            _superquadric(g, acet, np.full(3, 34.0 * w)),
            _sweep(g, np.array([acet, acet + np.array([-sign * 6.0, 2.0, 42.0 * s])]), np.array([[15.0, 20.0, 15.0]]) * w),
            _sweep(g, np.array([acet, pubis]), np.array([[11.0, 11.0, 11.0]])),
            _sweep(g, np.array([pubis + np.array([0.0, 4.0, -8.0]), tuber]), np.array([[8.0, 8.0, 8.0]])),
            _sweep(g, np.array([acet + np.array([0.0, 10.0, -10.0]), tuber]), np.array([[14.0, 14.0, 13.0]])),
            _sweep(g, np.array([sheet[0, 0], pts[1] + np.array([sign * half_x[1] * 0.9, 6.0, 0.0])]), np.array([[9.0, 9.0, 9.0]])),
        ]
        for part in parts:
            cv.paint(f"hip_{side}", part, clip)
        head = acet + np.array([sign * 4.0, 0.0, 0.0])
        troch = np.array([sign * 142.0 * w * pw, 2.0, -108.0 * s])
        femur = [
            _superquadric(g, head, np.full(3, 24.0 * w)),
            _sweep(g, np.array([head, troch + np.array([-sign * 12.0, 0.0, -6.0])]), np.array([[15.0, 15.0, 15.0]]) * w),
            _superquadric(g, troch, np.array([16.0, 20.0, 22.0]) * w),
            _sweep(g, np.array([troch + np.array([-sign * 12.0, 0.0, -20.0]), troch + np.array([-sign * 20.0, 4.0, -260.0 * s])]), np.array([[15.0, 15.0, 15.0]]) * w),
        ]
        for part in femur:
            cv.paint(f"femur_{side}", part, clip)


# --------------------------------------------------------------------------------------------- public
#: Phantom seeds are used as ``numpy.random.default_rng(seed + k)``, which needs non-negative integers.
MAX_SEED = 2**32 - 1


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an integer in 0..MAX_SEED, else raise a one-line error naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise Seg2MedError(f"phantom seed must be an integer between 0 and {MAX_SEED}, got {seed!r}")
    return seed


def make_phantom(
    seed: int = 0,
    sex: Sex = "male",
    height_cm: float = 175.0,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    region: Region = "abdomen-pelvis",
) -> Segmentation:
    """A seeded procedural torso phantom labelled with ``total`` ids (plus tissue ids 201-203).

    ``seed`` varies shapes, sizes and positions; ``sex`` changes pelvis width, fat distribution, organ
    sizes and adds the prostate for ``male``; ``height_cm`` scales lengths (z linearly, transverse
    sizes weakly); ``spacing`` is (x, y, z) in mm; ``region`` picks the z range (abdomen: L5 to T9 with
    lung bases, pelvis: below the femoral heads to L4, abdomen-pelvis: both). Returns a
    ``Segmentation`` in LPS patient coordinates (identity direction, x = 0 midline, z = 0 top of S1).
    """
    check_seed(seed)
    if sex not in SEXES:
        raise Seg2MedError(f"phantom sex must be one of {', '.join(SEXES)}, got '{sex}'")
    if region not in REGIONS:
        raise Seg2MedError(f"phantom region must be one of {', '.join(REGIONS)}, got '{region}'")
    if not (140.0 <= float(height_cm) <= 210.0):
        raise Seg2MedError(f"phantom height must be between 140 and 210 cm, got {height_cm}")
    sp = tuple(float(v) for v in spacing)
    if len(sp) != 3 or not all(0.5 <= v <= 10.0 for v in sp):
        raise Seg2MedError(f"phantom spacing must be three values between 0.5 and 10 mm, got {tuple(spacing)}")
    labels, grid = _build(int(seed), sex, float(height_cm), sp, region)
    img = sitk.GetImageFromArray(labels)
    img.SetSpacing(tuple(float(v) for v in grid.spacing))
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return Segmentation(image=img, names=names_for("total"), label_set="total")
