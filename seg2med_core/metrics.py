"""Image-quality metrics inside the body (SSIM, PSNR, MAE, HistCC, optional FSIM) and per-label Dice.

All image metrics are restricted to the body mask so the air around the patient (easy to get right and
a large part of every slice) does not inflate the scores. Volumes are (z, y, x) arrays; SSIM and FSIM are
2D metrics computed on axial slices, as the network works slice by slice.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from skimage.metrics import structural_similarity

from seg2med_core.errors import Seg2MedError

#: CT values are clipped to the model's window before comparison: the network cannot produce values
#: outside it, and the paper windowed its ground truth the same way.
CT_RANGE = (-1000.0, 1000.0)
HIST_BINS = 256
FSIM_BATCH = 16


def ssim_map(pred: np.ndarray, real: np.ndarray, data_range: float) -> np.ndarray:
    """Per-voxel SSIM map (same shape as the inputs), computed on each axial slice (2D, 7×7 window).

    A 2D array is one slice; a 3D (z, y, x) array is processed slice by slice. Slices smaller than the
    window use the largest odd window that fits (minimum 3).
    """
    pred, real = _check_pair(pred, real)
    if not data_range > 0:
        raise Seg2MedError(f"SSIM data_range must be > 0, got {data_range}")
    if pred.ndim == 2:
        return _ssim_slice(pred, real, data_range)
    if pred.ndim != 3:
        raise Seg2MedError(f"SSIM needs a 2D slice or a 3D (z, y, x) volume, got shape {pred.shape}")
    return np.stack([_ssim_slice(p, r, data_range) for p, r in zip(pred, real)]).astype(np.float32)


def _ssim_slice(pred: np.ndarray, real: np.ndarray, data_range: float) -> np.ndarray:
    win = min(7, *pred.shape)
    win = win if win % 2 else win - 1
    if win < 3:
        raise Seg2MedError(f"slices of shape {pred.shape} are too small for SSIM (need at least 3×3)")
    _, full = structural_similarity(real, pred, data_range=data_range, win_size=win, full=True)
    return full.astype(np.float32)


def image_metrics(
    pred: np.ndarray,
    real: np.ndarray,
    mask: np.ndarray,
    modality: str,
    data_range: float | None = None,
) -> dict[str, Any]:
    """Compare a synthetic volume with the real one inside ``mask`` (bool, same shape).

    Inputs are in natural units: HU for CT (both clipped to the model window -1000..1000 HU first), any
    unit for MR (typically model space [0, 1]). ``data_range`` defaults to 2000 for CT and to the real
    image's range inside the mask for MR. Returns floats:

    * ``ssim``: the full SSIM map (per axial slice, see :func:`ssim_map`) averaged over the mask voxels;
    * ``psnr``: ``10 log10(data_range² / MSE)`` with the MSE inside the mask, ``math.inf`` when identical;
    * ``mae``: mean absolute error inside the mask (HU for CT);
    * ``histcc``: Pearson correlation of the two intensity histograms inside the mask (256 common bins;
      the paper's HistCC);
    * ``fsim``: mean FSIM (``piq.fsim``) of the axial slices that contain body, when piq can be imported;
      otherwise the key is absent and ``fsim_skipped`` holds the reason.
    """
    modality = str(modality).lower()
    if modality not in ("ct", "mr"):
        raise Seg2MedError(f"modality must be 'ct' or 'mr', got '{modality}'")
    pred, real = _check_pair(pred, real)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pred.shape:
        raise Seg2MedError(f"mask shape {mask.shape} does not match the images {pred.shape}")
    if not mask.any():
        raise Seg2MedError("the body mask is empty: no voxels to compare")
    if modality == "ct":
        pred, real = np.clip(pred, *CT_RANGE), np.clip(real, *CT_RANGE)
        lo, hi = CT_RANGE
        data_range = float(hi - lo) if data_range is None else float(data_range)
    else:
        lo = float(min(pred[mask].min(), real[mask].min()))
        hi = float(max(pred[mask].max(), real[mask].max()))
        data_range = float(real[mask].max() - real[mask].min()) if data_range is None else float(data_range)
    if not data_range > 0:
        raise Seg2MedError(f"data_range must be > 0, got {data_range} (is the real image constant?)")

    diff = pred[mask] - real[mask]
    mse = float(np.mean(diff * diff))
    result: dict[str, Any] = {
        "ssim": float(ssim_map(pred, real, data_range)[mask].mean()),
        "psnr": math.inf if mse == 0.0 else float(10.0 * math.log10(data_range**2 / mse)),
        "mae": float(np.mean(np.abs(diff))),
        "histcc": histogram_correlation(pred[mask], real[mask], (lo, hi)),
    }
    result.update(_fsim(pred, real, mask, lo, hi))
    return result


def histogram_correlation(a: np.ndarray, b: np.ndarray, value_range: tuple[float, float], bins: int = HIST_BINS) -> float:
    """Pearson correlation of the histograms of ``a`` and ``b`` over the same bins (1 = same distribution)."""
    lo, hi = value_range
    if not hi > lo:  # both constant and equal: same (one-bin) histogram
        return 1.0 if np.array_equal(np.unique(a), np.unique(b)) else 0.0
    ha, _ = np.histogram(a, bins=bins, range=(lo, hi))
    hb, _ = np.histogram(b, bins=bins, range=(lo, hi))
    ha, hb = ha.astype(np.float64), hb.astype(np.float64)
    if ha.std() == 0 or hb.std() == 0:
        return 1.0 if np.array_equal(ha, hb) else 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def _fsim(pred: np.ndarray, real: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> dict[str, Any]:
    """Mean FSIM over the axial slices with body; images scaled to [0, 1] and set to 0 outside the body."""
    try:
        import piq
        import torch
    except Exception as exc:  # piq needs torchvision at import time
        return {"fsim_skipped": f"piq not importable: {exc}"}
    if pred.ndim == 2:
        pred, real, mask = pred[None], real[None], mask[None]
    scale = (hi - lo) if hi > lo else 1.0
    rows = [k for k in range(mask.shape[0]) if mask[k].any()]
    p = np.where(mask[rows], (pred[rows] - lo) / scale, 0.0).clip(0.0, 1.0)
    r = np.where(mask[rows], (real[rows] - lo) / scale, 0.0).clip(0.0, 1.0)
    values = []
    with torch.no_grad():
        for start in range(0, len(rows), FSIM_BATCH):  # bounded memory for 512² slices
            chunk = slice(start, start + FSIM_BATCH)
            out = piq.fsim(
                torch.from_numpy(p[chunk].astype(np.float32))[:, None],
                torch.from_numpy(r[chunk].astype(np.float32))[:, None],
                data_range=1.0,
                reduction="none",
                chromatic=False,
            )
            values.append(torch.as_tensor(out).float().reshape(-1))
    return {"fsim": float(torch.cat(values).mean())}


def dice_per_label(a: np.ndarray, b: np.ndarray, names: Mapping[int, str]) -> dict[str, float]:
    """Dice ``2|A∩B| / (|A|+|B|)`` of each label id in ``names`` between label maps ``a`` and ``b``.

    Labels absent from both maps are left out (their Dice is undefined); a label in only one map gets 0.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise Seg2MedError(f"label maps have different shapes: {a.shape} vs {b.shape}")
    for name, arr in (("first", a), ("second", b)):
        if arr.size and (arr.min() < 0 or not np.issubdtype(arr.dtype, np.integer)):
            raise Seg2MedError(f"{name} label map must hold non-negative integers, got dtype {arr.dtype}, min {arr.min()}")
    n = int(max(a.max(initial=0), b.max(initial=0), max(names, default=0))) + 1
    count_a = np.bincount(a.ravel(), minlength=n)
    count_b = np.bincount(b.ravel(), minlength=n)
    inter = np.bincount(a[a == b].ravel(), minlength=n)
    out: dict[str, float] = {}
    for label, name in names.items():
        total = int(count_a[label] + count_b[label])
        if label == 0 or total == 0:
            continue
        out[name] = 2.0 * float(inter[label]) / total
    return out


def _check_pair(pred: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    if pred.shape != real.shape:
        raise Seg2MedError(f"synthetic and real images have different shapes: {pred.shape} vs {real.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(real).all()):
        raise Seg2MedError("images contain NaN or infinite values")
    return pred, real


# ------------------------------------------------------------------------------ slice consistency
#: Soft-tissue HU window of the banding metric: voxels of the real CT inside the body with values in it
#: (fat, muscle, organs, blood) are measured in both images; bone, air and gas are left out.
SOFT_TISSUE_HU = (-100.0, 200.0)
#: A slice takes part in the per-slice profile only with at least this many soft-tissue voxels.
MIN_SLICE_VOXELS = 50
BANDING_KEYS = ("max_jump", "mean_jump", "gradient_ratio")


def slice_profile(volume: np.ndarray, mask: np.ndarray, min_voxels: int = MIN_SLICE_VOXELS) -> np.ndarray:
    """Mean of ``volume`` inside ``mask`` for every slice along axis 0; NaN for slices with too few voxels."""
    vol = np.asarray(volume, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if vol.ndim != 3 or mask.shape != vol.shape:
        raise Seg2MedError(f"slice profile needs a 3D volume and a mask of the same shape, got {vol.shape} and {mask.shape}")
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    sums = np.where(mask, vol, 0.0).reshape(vol.shape[0], -1).sum(axis=1)
    out = np.full(vol.shape[0], np.nan)
    ok = counts >= max(1, int(min_voxels))
    out[ok] = sums[ok] / counts[ok]
    return out


def banding_metrics(
    volume: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    min_voxels: int = MIN_SLICE_VOXELS,
) -> dict[str, float]:
    """Slice-to-slice consistency of one volume (axis 0 = the slice axis, as the 2D model generates it).

    * ``max_jump`` / ``mean_jump``: the largest and the mean absolute difference of the per-slice mean
      inside ``mask`` (:func:`slice_profile`) between adjacent slices (pairs where both slices have at
      least ``min_voxels`` mask voxels); the volume's unit (HU for CT). Anatomy changes the mean too, so
      compare with the real image's numbers (:func:`banding_comparison`).
    * ``gradient_ratio``: mean |∂I/∂z| over mean |∂I/∂(y, x)| (finite differences per mm, ``spacing`` =
      (z, y, x) mm) over voxel pairs inside ``mask``; stripes between slices raise it.

    A volume with no usable slice pair gives NaN for the jumps (and for the ratio without pairs).
    """
    vol = np.asarray(volume, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    profile = slice_profile(vol, mask, min_voxels)
    jumps = np.abs(np.diff(profile))
    jumps = jumps[np.isfinite(jumps)]
    sz, sy, sx = (float(s) for s in spacing)
    if min(sz, sy, sx) <= 0:
        raise Seg2MedError(f"spacing must be positive, got {spacing}")

    def mean_abs_diff(axis: int, step: float) -> tuple[float, int]:
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        both = mask[tuple(a)] & mask[tuple(b)]
        n = int(both.sum())
        if n == 0:
            return math.nan, 0
        return float(np.abs(vol[tuple(a)] - vol[tuple(b)])[both].mean() / step), n

    gz, nz = mean_abs_diff(0, sz)
    gy, ny = mean_abs_diff(1, sy)
    gx, nx = mean_abs_diff(2, sx)
    in_plane = (gy * ny + gx * nx) / (ny + nx) if ny + nx else math.nan
    if not nz or not math.isfinite(in_plane):
        ratio = math.nan
    elif in_plane == 0:
        ratio = math.inf if gz > 0 else math.nan
    else:
        ratio = gz / in_plane
    return {
        "max_jump": float(jumps.max()) if jumps.size else math.nan,
        "mean_jump": float(jumps.mean()) if jumps.size else math.nan,
        "gradient_ratio": float(ratio),
        "slices": int(np.isfinite(profile).sum()),
    }


def soft_tissue_mask(real: np.ndarray, body: np.ndarray, modality: str) -> np.ndarray:
    """Voxels the banding metric measures: CT: inside ``body`` with the real HU in :data:`SOFT_TISSUE_HU`;
    MR: inside ``body`` (no fixed scale to choose tissue by)."""
    body = np.asarray(body, dtype=bool)
    if str(modality).lower() == "ct":
        real = np.asarray(real)
        return body & (real >= SOFT_TISSUE_HU[0]) & (real <= SOFT_TISSUE_HU[1])
    return body.copy()


def banding_comparison(
    synthetic: np.ndarray,
    real: np.ndarray,
    body: np.ndarray,
    modality: str,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tissue: np.ndarray | None = None,
    min_voxels: int = MIN_SLICE_VOXELS,
) -> dict[str, Any]:
    """:func:`banding_metrics` of the synthetic and of the real volume on the same voxels, and their ratio.

    Arrays are (slice, y, x) with axis 0 the generated (axial) slice axis; CT in HU. ``tissue`` (default
    :func:`soft_tissue_mask` of the real image) selects the voxels; for CT the synthetic values are clipped
    to :data:`SOFT_TISSUE_HU` so a few voxels of invented bone or gas do not dominate a slice mean.
    Returns ``{"synthetic": {...}, "real": {...}, "ratio": {key: synthetic / real}, "voxels": n}``.
    """
    pred, ref = _check_pair(synthetic, real)
    mask = soft_tissue_mask(ref, body, modality) if tissue is None else np.asarray(tissue, dtype=bool) & np.asarray(body, dtype=bool)
    if mask.shape != pred.shape:
        raise Seg2MedError(f"mask shape {mask.shape} does not match the images {pred.shape}")
    if not mask.any():
        raise Seg2MedError("no soft-tissue voxels inside the body to measure banding on")
    if str(modality).lower() == "ct":
        pred = np.clip(pred, *SOFT_TISSUE_HU)
    syn = banding_metrics(pred, mask, spacing, min_voxels)
    rea = banding_metrics(ref, mask, spacing, min_voxels)
    ratio = {}
    for key in BANDING_KEYS:
        a, b = syn[key], rea[key]
        ratio[key] = a / b if (math.isfinite(a) and math.isfinite(b) and b > 0) else math.nan
    return {"synthetic": syn, "real": rea, "ratio": ratio, "voxels": int(mask.sum()),
            "window": list(SOFT_TISSUE_HU) if str(modality).lower() == "ct" else None}


def banding_line(banding: Mapping[str, Any], unit: str = "") -> str:
    """``largest slice jump 12.3 HU (real 4.4, x2.8)   mean jump ...   through/in-plane gradient ...``."""
    syn, rea, ratio = banding["synthetic"], banding["real"], banding["ratio"]
    u = f" {unit}" if unit else ""

    def part(label: str, key: str, digits: int) -> str:
        return f"{label} {syn[key]:.{digits}f}{u if key != 'gradient_ratio' else ''} (real {rea[key]:.{digits}f}, x{ratio[key]:.2f})"

    return "   ".join((part("largest slice jump", "max_jump", 1), part("mean jump", "mean_jump", 2),
                       part("through/in-plane gradient", "gradient_ratio", 2)))


def banding_for_image(
    synthetic: np.ndarray, real: np.ndarray, body: np.ndarray, modality: str, reference: Any
) -> dict[str, Any]:
    """:func:`banding_comparison` of (z, y, x) arrays in the geometry of ``reference`` (a ``sitk.Image``):
    the arrays are first turned to canonical LPS order so axis 0 is the axial (generated) slice axis, and
    the canonical (z, y, x) spacing is used for the gradients."""
    from seg2med_core.preprocess import SliceGrid

    grid = SliceGrid.from_image(reference, None, 1)
    reo = grid.reorientation
    spacing = tuple(float(s) for s in reversed(grid.canonical.spacing))
    return banding_comparison(reo.forward(np.asarray(synthetic)), reo.forward(np.asarray(real)),
                              reo.forward(np.asarray(body, dtype=bool)), modality, spacing)  # type: ignore[arg-type]
