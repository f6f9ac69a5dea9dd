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
