"""Composite digital phantom: the body (and skeleton) of one subject with organs taken from others.

The seg2med paper (Experiment III) builds a "synthetic digital phantom" by merging segmentations and the
body contour of several patients. ``compose`` does this reproducibly and reports what went wrong:

Alignment (one transform per organ source, computed in LPS physical space so any file orientation works)
    1. ``landmarks`` (needs >= 2 vertebrae labelled in both segmentations): for every common vertebra,
       its centroid plus four body-contour extremes (patient left/right/anterior/posterior) of the body
       mask in the axial plane through that centroid. An affine transform is fitted to these point pairs
       with ``sitk.LandmarkBasedTransformInitializer`` (least squares), so the organs follow the target's
       spine level and body width/depth. When fewer than 2 vertebrae are common (``total_mr`` has a single
       ``vertebrae`` class), the centroids of all structures labelled in both (names converted between
       label sets, structures cut by the scan range skipped) serve as anchors for a similarity transform
       (rotation, uniform scale, translation), which stays well-posed with few anchors.
    2. ``bounding box`` (fallback): per-axis scale and translation that map the source body's bounding box
       onto the target's in x and y; z is only translated (centres matched) and scaled by the mean in-plane
       scale, because scan ranges along z rarely cover the same anatomy.
    Each organ mask is then resampled into the target grid with nearest-neighbour interpolation.

Overlaps and body
    The target body is ``preprocess.body_mask_from_segmentation`` (union of labels, closed, hole-filled)
    of the body source. Organs are clipped to it. Kept structures of the body source (skeleton when
    ``keep_skeleton``, muscles and tissue-type labels always) win over moved organs, except visceral fat
    (``torso_fat``), which organs replace; among moved organs
    the smaller one wins (the rule of ``tables.resolve_overlaps``). The body source's own organs are
    dropped. ``CompositeReport`` lists, per organ, the voxels outside the body and the voxels in conflict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import Seg2MedError
from .io import Segmentation, write_json
from .labels import TISSUE_OFFSET, conversion_table, names_for
from .preprocess import body_mask_from_segmentation

_SKELETON_PREFIXES = (
    "vertebrae", "rib_", "sacrum", "hip_", "femur_", "sternum", "costal_cartilages", "skull", "humerus_",
    "scapula_", "clavicula_", "intervertebral_discs", "spinal_cord",
)
_MUSCLE_PREFIXES = ("autochthon_", "iliopsoas_", "gluteus_")


def is_skeleton(name: str) -> bool:
    """Bones (and the spinal cord inside them) that define the body frame."""
    return name.startswith(_SKELETON_PREFIXES)


@dataclass
class Alignment:
    """How one organ source was mapped into the target: method, landmarks used and fit residual."""

    source: str
    method: str
    landmarks: list[str]
    rms_residual_mm: float | None
    matrix: list[float]
    translation: list[float]


@dataclass
class OrganPlacement:
    """One moved organ: voxel counts before/after clipping to the body and after overlap resolution."""

    name: str
    source: str
    source_name: str
    voxels_moved: int
    voxels_outside_body: int
    fraction_outside_body: float
    voxels_in_conflict: int
    conflicts: dict[str, int]
    voxels_final: int


@dataclass
class CompositeReport:
    """Printable/JSON summary of a composite phantom."""

    body_source: str
    label_set: str
    keep_skeleton: bool
    kept_from_body: list[str]
    alignments: list[Alignment] = field(default_factory=list)
    organs: list[OrganPlacement] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def __str__(self) -> str:
        lines = [f"composite phantom: body from {self.body_source} ({self.label_set}), "
                 f"{len(self.kept_from_body)} kept structures, skeleton {'kept' if self.keep_skeleton else 'dropped'}"]
        for a in self.alignments:
            res = "n/a" if a.rms_residual_mm is None else f"{a.rms_residual_mm:.1f} mm"
            lines.append(f"  {a.source}: {a.method} ({len(a.landmarks)} landmarks, rms {res})")
        for o in self.organs:
            lines.append(
                f"  {o.name:<28} from {o.source}: {o.voxels_final} voxels, outside body {o.voxels_outside_body} "
                f"({100 * o.fraction_outside_body:.1f}%), conflicts {o.voxels_in_conflict}"
                + (f" {o.conflicts}" if o.conflicts else "")
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ geometry
def _physical(img: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """LPS physical points (N, 3) of (z, y, x) voxel indices (N, 3)."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    idx = np.asarray(zyx, float)[:, ::-1] * np.array(img.GetSpacing())
    return idx @ d.T + np.array(img.GetOrigin())


def _centroids(arr: np.ndarray, img: sitk.Image, names: dict[int, str], rename: dict[str, str | None] | None = None) -> dict[str, np.ndarray]:
    """Physical centroids of every structure not cut by the first/last slice, keyed by (converted) name.

    Assumes the array's first axis is the slice (scan) axis, as for axial acquisitions.
    """
    out: dict[str, np.ndarray] = {}
    for i in np.unique(arr):
        name = names.get(int(i), "")
        name = (rename.get(name) if rename is not None else name) or ""
        if int(i) == 0 or not name or int(i) >= TISSUE_OFFSET or name in out:
            continue
        idx = np.argwhere(arr == i)
        if idx[:, 0].min() == 0 or idx[:, 0].max() == arr.shape[0] - 1:
            continue  # cut by the scan range: its centroid would be biased
        out[name] = _physical(img, idx).mean(axis=0)
    return out


def _body_extremes(body_pts: np.ndarray, z: float, half_band: float) -> np.ndarray | None:
    """Left, right, anterior, posterior extremes (LPS) of the body points near axial plane ``z``."""
    band = body_pts[np.abs(body_pts[:, 2] - z) <= half_band]
    if len(band) < 10:
        return None
    c = band.mean(axis=0)
    return np.array([
        [band[:, 0].max(), c[1], z], [band[:, 0].min(), c[1], z],
        [c[0], band[:, 1].min(), z], [c[0], band[:, 1].max(), z],
    ])


def _fit(fixed: np.ndarray, moving: np.ndarray, affine: bool) -> sitk.AffineTransform:
    """Least-squares affine (or similarity: rotation + uniform scale + shift) fit, as an AffineTransform."""
    base = sitk.AffineTransform(3) if affine else sitk.Similarity3DTransform()
    tx = sitk.LandmarkBasedTransformInitializer(base, [float(v) for v in fixed.ravel()], [float(v) for v in moving.ravel()])
    out = sitk.AffineTransform(3)
    out.SetMatrix(tx.GetMatrix())
    out.SetTranslation(tx.GetTranslation())
    out.SetCenter(tx.GetCenter())
    return out


def _residual(tx: sitk.Transform, fixed: np.ndarray, moving: np.ndarray) -> float:
    mapped = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in fixed])
    return float(np.sqrt(np.mean(np.sum((mapped - moving) ** 2, axis=1))))


def align(
    target: Segmentation, target_body: np.ndarray, source: Segmentation, source_body: np.ndarray, source_label: str = "source"
) -> tuple[sitk.AffineTransform, Alignment]:
    """Affine transform mapping target physical points to source points (what ``sitk.Resample`` needs)."""
    t_arr, s_arr = target.array(), source.array()
    t_pts = _physical(target.image, np.argwhere(target_body))
    s_pts = _physical(source.image, np.argwhere(source_body))
    if len(t_pts) == 0 or len(s_pts) == 0:
        raise Seg2MedError(f"cannot align {source_label}: empty body mask")
    t_cent = _centroids(t_arr, target.image, target.names)
    s_cent = _centroids(s_arr, source.image, source.names, _name_map(source.label_set, target.label_set))
    vertebrae = sorted(n for n in set(t_cent) & set(s_cent) if n.startswith("vertebrae_"))
    kind = "vertebra centroids"
    if len(vertebrae) < 2:  # e.g. total_mr has one "vertebrae" class: use the structures both label
        vertebrae, kind = sorted(set(t_cent) & set(s_cent)), "common structure centroids"
    fixed, moving, used = [], [], []
    for name in vertebrae:
        ft = _body_extremes(t_pts, t_cent[name][2], max(target.image.GetSpacing()) * 0.75)
        fs = _body_extremes(s_pts, s_cent[name][2], max(source.image.GetSpacing()) * 0.75)
        if ft is None or fs is None:
            continue
        fixed += [t_cent[name], *ft]
        moving += [s_cent[name], *fs]
        used.append(name)
    z_levels = {round(float(p[2]) / 5.0) for p in fixed}
    if len(used) >= 2 and len(z_levels) < 2:
        used = []  # all anchors in one axial plane: the affine would be degenerate along z
    if len(used) >= 2:
        f, m = np.array(fixed), np.array(moving)
        affine = kind == "vertebra centroids"  # few organ anchors: a similarity transform is more robust
        tx = _fit(f, m, affine)
        method = f"landmarks: {len(used)} {kind} + body extremes, {'affine' if affine else 'similarity'} least squares"
        rms: float | None = _residual(tx, f, m)
        names_used = used
    else:
        t_lo, t_hi = t_pts.min(0), t_pts.max(0)
        s_lo, s_hi = s_pts.min(0), s_pts.max(0)
        scale_xy = (s_hi[:2] - s_lo[:2]) / np.maximum(t_hi[:2] - t_lo[:2], 1e-3)  # target → source
        scale = np.array([scale_xy[0], scale_xy[1], float(scale_xy.mean())])
        t_c, s_c = 0.5 * (t_lo + t_hi), 0.5 * (s_lo + s_hi)
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(tuple(float(v) for v in np.diag(scale).ravel()))
        tx.SetCenter(tuple(float(v) for v in t_c))
        tx.SetTranslation(tuple(float(v) for v in (s_c - t_c)))
        method = "body bounding box (fewer than 2 common landmarks): x/y scale + centre match, z centre match"
        rms, names_used = None, []
    report = Alignment(
        source=source_label, method=method, landmarks=names_used, rms_residual_mm=rms,
        matrix=[float(v) for v in tx.GetMatrix()], translation=[float(v) for v in tx.GetTranslation()],
    )
    return tx, report


# ----------------------------------------------------------------------------------------- compose
def _name_map(src_set: str, dst_set: str) -> dict[str, str | None]:
    if src_set == dst_set:
        return {n: n for n in names_for(dst_set).values()}
    return conversion_table(src_set, dst_set)


def compose(
    body_source: Segmentation,
    organ_sources: list[tuple[Segmentation, list[str]]],
    keep_skeleton: bool = True,
    *,
    body_name: str = "body source",
    source_names: list[str] | None = None,
) -> tuple[Segmentation, CompositeReport]:
    """Body (+ skeleton) of ``body_source`` with the named organs of each organ source moved into it.

    ``organ_sources`` is a list of ``(segmentation, [organ names in that segmentation's label set])``.
    Names are converted to the body source's label set by name (``labels.conversion_table``); a name that
    is absent from its source or has no counterpart raises ``Seg2MedError``. Returns the composite
    segmentation (body source geometry and label set) and a ``CompositeReport``.
    """
    if not organ_sources:
        raise Seg2MedError("composite phantom needs at least one organ source")
    labels_out = source_names or [f"source {i + 1}" for i in range(len(organ_sources))]
    if len(labels_out) != len(organ_sources):
        raise Seg2MedError(f"{len(labels_out)} source names given for {len(organ_sources)} organ sources")
    dst_set = body_source.label_set
    dst_ids = {n: i for i, n in names_for(dst_set).items()}
    t_arr = body_source.array()
    body = body_mask_from_segmentation(body_source)

    # kept structures of the body source
    out = np.zeros(t_arr.shape, dtype=np.uint16)
    kept: list[str] = []
    for i in np.unique(t_arr):
        i = int(i)
        name = body_source.names.get(i, "")
        if i == 0:
            continue
        keep = i >= TISSUE_OFFSET or name.startswith(_MUSCLE_PREFIXES) or (keep_skeleton and is_skeleton(name))
        if keep:
            out[t_arr == i] = i
            kept.append(name or str(i))
    # visceral fat fills the cavity around the body source's own organs: moved organs may take it
    fillable = [i for i, n in body_source.names.items() if n == "torso_fat"]
    kept_mask = (out > 0) & ~np.isin(out, fillable)

    report = CompositeReport(body_source=body_name, label_set=dst_set, keep_skeleton=keep_skeleton, kept_from_body=kept)
    moved: list[tuple[str, str, str, np.ndarray, int, int]] = []  # name, source, source name, mask, n moved, n outside
    seen: set[str] = set()
    for (src, organs), src_label in zip(organ_sources, labels_out):
        if not organs:
            raise Seg2MedError(f"no organs named for {src_label}")
        s_arr = src.array()
        s_ids = {n: i for i, n in src.names.items()}
        mapping = _name_map(src.label_set, dst_set)
        tx, alignment = align(body_source, body, src, body_mask_from_segmentation(src), src_label)
        report.alignments.append(alignment)
        for organ in organs:
            if organ not in s_ids or not (s_arr == s_ids[organ]).any():
                raise Seg2MedError(f"organ '{organ}' is not labelled in {src_label} (label set {src.label_set})")
            dst_name = mapping.get(organ)
            if dst_name is None or dst_name not in dst_ids:
                raise Seg2MedError(f"organ '{organ}' of {src_label} ({src.label_set}) has no class in '{dst_set}'")
            if dst_name in seen:
                raise Seg2MedError(f"organ '{dst_name}' requested twice")
            seen.add(dst_name)
            mask_img = sitk.GetImageFromArray((s_arr == s_ids[organ]).astype(np.uint8))
            mask_img.CopyInformation(src.image)
            res = sitk.Resample(mask_img, body_source.image, tx, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            mask = sitk.GetArrayFromImage(res).astype(bool)
            n_moved = int(mask.sum())
            n_out = int((mask & ~body).sum())
            moved.append((dst_name, src_label, organ, mask & body, n_moved, n_out))

    # overlap resolution: kept structures win, then smaller moved organs over larger ones
    moved.sort(key=lambda m: -int(m[3].sum()))
    owners = {dst_ids[m[0]]: m[0] for m in moved}
    for name, _s, _o, mask, _n, _out in moved:
        out[mask & ~kept_mask] = dst_ids[name]
    for name, src_label, organ, mask, n_moved, n_out in moved:
        final = out == dst_ids[name]
        conflicts: dict[str, int] = {}
        lost = mask & ~final
        for i, c in zip(*np.unique(out[lost], return_counts=True)):
            label = owners.get(int(i)) or body_source.names.get(int(i), str(int(i)))
            conflicts[label] = int(c)
        # voxels this organ won from smaller-priority (larger) organs are their conflicts, counted there
        report.organs.append(OrganPlacement(
            name=name, source=src_label, source_name=organ, voxels_moved=n_moved, voxels_outside_body=n_out,
            fraction_outside_body=(n_out / n_moved) if n_moved else 0.0,
            voxels_in_conflict=int(lost.sum()), conflicts=conflicts, voxels_final=int(final.sum()),
        ))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(body_source.image)
    return Segmentation(image=img, names=names_for(dst_set), label_set=dst_set), report
