"""Measured anatomy of a phantom (or any ``total`` segmentation) and the checks that keep it valid.

``measure(seg)`` returns per-structure volumes (mL), centroids (LPS mm), number of 26-connected pieces,
kidney lengths and the number of organ voxels that touch the air outside the body. ``check(seg, region,
info)`` compares a template phantom with its template and returns the violated rules (empty = valid):

* sizes: every organ with a documented adult volume range (``phantom.SIZE_RANGES``) that the template
  holds completely has its volume inside that range;
* laterality: every ``*_left`` structure lies at larger LPS x (patient left) than its ``*_right`` partner,
  the liver right of the spleen and the stomach;
* order along z: vertebra centroids keep their cranio-caudal order, and every organ's centroid stays at
  the same vertebral level as in the template (± one level; organs, not bones or muscles);
* pieces: no structure has more 26-connected pieces than in the template;
* inside the body: no organ voxel (anything but the tissue classes, bones and muscles) touches the air
  outside the body (body = labels, holes filled per axial slice);
* deformation: the Jacobian determinant of the deformation is > 0 everywhere (from ``PhantomInfo``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..labels import TISSUE_OFFSET, names_for
from .template import SIZED_ORGANS, _in_plane, _is_skeleton, _n_pieces, _region_template, template_segmentation

_MUSCLE_PREFIXES = ("autochthon_", "iliopsoas_", "gluteus_")
_LEVEL_ORDER = ["sacrum", "vertebrae_S1"] + [f"vertebrae_L{k}" for k in range(5, 0, -1)] + \
    [f"vertebrae_T{k}" for k in range(12, 0, -1)] + [f"vertebrae_C{k}" for k in range(7, 0, -1)]


def _names() -> dict[int, str]:
    return names_for("total")


def measure(seg: Any) -> dict[str, Any]:
    """Volumes, centroids, pieces, kidney lengths and organ voxels touching the outside of a segmentation."""
    img: sitk.Image = seg.image
    arr = sitk.GetArrayViewFromImage(img)
    sp = np.array(img.GetSpacing())
    voxel_ml = float(np.prod(sp)) / 1000.0
    names = _names()
    d = np.array(img.GetDirection()).reshape(3, 3)
    o = np.array(img.GetOrigin())
    volumes, centroids, pieces, z_ranges = {}, {}, {}, {}
    for i, sl in enumerate(ndimage.find_objects(np.asarray(arr, dtype=np.int64)), start=1):
        if sl is None or i not in names:
            continue
        m = arr[sl] == i
        name = names[i]
        volumes[name] = float(m.sum()) * voxel_ml
        idx = np.argwhere(m) + np.array([s.start for s in sl])
        pts = (idx[:, ::-1] * sp) @ d.T + o
        centroids[name] = pts.mean(axis=0).tolist()
        z_ranges[name] = (float(pts[:, 2].min()), float(pts[:, 2].max()))
        if i < TISSUE_OFFSET:
            pieces[name] = _n_pieces(m)
    lengths = {}
    for side in ("left", "right"):
        name = f"kidney_{side}"
        if name in volumes:
            pts = np.argwhere(arr == [k for k, v in names.items() if v == name][0])[:, ::-1] * sp
            pts = pts - pts.mean(axis=0)
            axis = np.linalg.svd(pts, full_matrices=False)[2][0]
            proj = pts @ axis
            lengths[name] = float(proj.max() - proj.min() + sp.min())
    body = ndimage.binary_fill_holes(arr > 0, structure=_in_plane())
    air_border = ndimage.binary_dilation(~body, structure=_in_plane()) & body
    organ_ids = [i for i, n in names.items()
                 if i < TISSUE_OFFSET and not _is_skeleton(n) and not n.startswith(_MUSCLE_PREFIXES)]
    outside = np.isin(arr, organ_ids) & air_border
    out_by = {names[int(i)]: int(c) for i, c in zip(*np.unique(arr[outside], return_counts=True))}
    return {"volume_ml": volumes, "centroid": centroids, "pieces": pieces, "z_range": z_ranges,
            "kidney_length_mm": lengths, "organ_voxels_at_skin": out_by}


def _level_of(z: float, m: dict[str, Any]) -> float | None:
    """Vertebral level index (``_LEVEL_ORDER`` position, fractional) of height ``z``."""
    lv = [(k, m["centroid"][n][2]) for k, n in enumerate(_LEVEL_ORDER) if n in m["centroid"] and n != "sacrum"]
    if len(lv) < 2:
        return None
    ks, zs = np.array([a for a, _ in lv], float), np.array([b for _, b in lv])
    order = np.argsort(zs)
    if z < zs.min() or z > zs.max():
        return None
    return float(np.interp(z, zs[order], ks[order]))


_TEMPLATE_CACHE: dict[str, dict[str, Any]] = {}


def template_measures(region: str) -> dict[str, Any]:
    """``measure`` of a region's undeformed template (cached)."""
    if region not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE[region] = measure(template_segmentation(region))
    return _TEMPLATE_CACHE[region]


def check(seg: Any, region: str, info: Any = None, measured: dict[str, Any] | None = None) -> list[str]:
    """Rules violated by a template phantom of ``region`` (see the module docstring); [] when valid."""
    from ..phantom import SIZE_RANGES

    m = measured or measure(seg)
    ref = template_measures(region)
    t = _region_template(region)
    ids = {n: i for i, n in _names().items()}
    bad: list[str] = []
    for name, key in SIZED_ORGANS.items():
        if name in m["volume_ml"] and t.complete(ids[name]):
            lo, hi = SIZE_RANGES[key]
            v = m["volume_ml"][name]
            if not lo <= v <= hi:
                bad.append(f"volume of {name} {v:.0f} mL outside {lo:g}-{hi:g} mL")
    c = m["centroid"]
    for name in c:
        if name.endswith("_left") or "_left_" in name:
            partner = name.replace("_left", "_right")
            if partner in c and not c[name][0] > c[partner][0]:
                bad.append(f"laterality: {name} is not left of {partner}")
    for organ in ("spleen", "stomach"):
        if "liver" in c and organ in c and not c["liver"][0] < c[organ][0]:
            bad.append(f"laterality: liver is not right of {organ}")
    lv = [c[n][2] for n in _LEVEL_ORDER if n in c and n != "sacrum"]
    if any(b <= a for a, b in zip(lv, lv[1:])):
        bad.append("vertebrae out of cranio-caudal order")
    for name, cen in c.items():
        i = ids.get(name, 0)
        if i >= TISSUE_OFFSET or _is_skeleton(name) or name.startswith(_MUSCLE_PREFIXES) or name not in ref["centroid"]:
            continue
        if not t.complete(i):
            continue
        a, b = _level_of(cen[2], m), _level_of(ref["centroid"][name][2], ref)
        if a is not None and b is not None and abs(a - b) > 1.0:
            bad.append(f"order along z: {name} moved from vertebral level {b:.1f} to {a:.1f}")
    for name, n in m["pieces"].items():
        allowed = ref["pieces"].get(name, 1)
        if n > allowed:
            bad.append(f"{name} is in {n} pieces (template: {allowed})")
    for name, n in m["organ_voxels_at_skin"].items():
        allowed = ref["organ_voxels_at_skin"].get(name, 0)
        if n > allowed:
            bad.append(f"{n} voxels of {name} touch the outside of the body (template: {allowed})")
    if info is not None and not info.jacobian_min > 0:
        bad.append(f"Jacobian determinant of the deformation reaches {info.jacobian_min:.3f} (folding)")
    return bad
