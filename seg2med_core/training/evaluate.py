"""Evaluation of a model (or a baseline) on test cases, as in the paper's Sec. III–IV.

For every case the synthetic volume is made in the case's own geometry (the same path as
``seg2med synthesize``) and compared with the real image inside the body: SSIM, PSNR, MAE (HU for CT,
model space [0, 1] for MR), HistCC and FSIM (when piq works) per case; FID over all slices per dataset
and overall (when torch-fidelity and the Inception weights are available); Dice per organ by
re-segmenting the synthetic CT with TotalSegmentator (when it and its weights are installed). Whatever
cannot be computed is recorded as ``skipped: <reason>`` in ``eval.json`` and the tables, never silently.

Every case also gets the slice-consistency (banding) columns of :data:`BANDING_METRICS` and, with images,
a coronal / sagittal reformat PNG (synthetic | real, physical aspect) in ``reformats/``.

Outputs in ``EVAL_DIR``: ``per_case.csv``, ``summary.csv``, ``summary.md`` (paper Table II layout),
``eval.json``, ``<metric>_cases.png`` / ``<metric>_box.png`` (Fig. 4), optional ``images/``, and with
``compare`` also ``compare.csv`` / ``compare.md`` (Mann–Whitney U, Table III).

``slices=(start, stop)`` restricts the evaluation to canonical (LPS) axial slices ``start..stop-1``
(the index space of a training run's ``holdout_slices``); only those slices are synthesised.
"""

from __future__ import annotations

import csv

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk

from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.training import plots, stats
from seg2med_core.training.baselines import Method
from seg2med_core.training.dataset import CaseSpec, read_case_segmentation

IMAGE_METRICS = ("ssim", "psnr", "mae", "histcc", "fsim")
#: Slice-consistency columns (``seg2med_core.metrics.banding_comparison``): largest / mean jump of the per-slice
#: soft-tissue mean between adjacent axial slices and the through-plane / in-plane gradient ratio, for the
#: synthetic image, the real one (``_real``) and synthetic / real (``_x``).
BANDING_METRICS = ("jump_max", "jump_max_real", "jump_max_x", "jump_mean", "jump_mean_real", "jump_mean_x",
                   "grad_ratio", "grad_ratio_real", "grad_ratio_x")
_BANDING_SOURCE = {"jump_max": "max_jump", "jump_mean": "mean_jump", "grad_ratio": "gradient_ratio"}
LogFn = Callable[[str], None]
ProgressFn = Callable[[int, int, str], None]


@dataclass
class EvalOptions:
    slices: tuple[int, int] | None = None
    label_set: str | None = None
    fid: bool = True
    dice: bool = True
    save_images: bool = True
    dice_device: str = "gpu"


@dataclass
class EvalResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    summaries: list[stats.Summary]
    notes: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fid: dict[str, float] = field(default_factory=dict)


def parse_slices(text: str | None) -> tuple[int, int] | None:
    """``"START:STOP"`` (canonical axial indices, STOP exclusive) → tuple; None/"" → None."""
    if not text:
        return None
    try:
        start_s, stop_s = text.split(":")
        start, stop = int(start_s), int(stop_s)
    except ValueError:
        raise Seg2MedError(f"--slices must look like START:STOP (e.g. 40:57), got {text!r}") from None
    if start < 0 or stop <= start:
        raise Seg2MedError(f"--slices {text!r} must have 0 <= START < STOP")
    return (start, stop)


# ------------------------------------------------------------------------------------------ per case
def _reorientation(image: sitk.Image):
    from seg2med_core.preprocess import SliceGrid

    return SliceGrid.from_image(image, spacing_xy=None, size=1).reorientation


def _metric_space_real(image: sitk.Image, modality: str) -> np.ndarray:
    if modality == "ct":
        return sitk.GetArrayFromImage(image).astype(np.float32)
    from seg2med_core.pipeline import normalise_image

    return normalise_image(image, "mr")


def _to01(arr: np.ndarray, modality: str) -> np.ndarray:
    if modality == "ct":
        from seg2med_core.preprocess import normalise_ct

        return normalise_ct(arr)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def evaluate_case(
    spec: CaseSpec,
    method: Method,
    options: EvalOptions,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    reformat: Path | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], sitk.Image, Any]:
    """Synthesise one case and compare it with its real image.

    Returns (row of metrics, canonical evaluated arrays ``pred01``/``real01``/``body`` for FID, the
    synthetic image in the case's geometry, the segmentation). ``reformat``: also write a PNG with the
    coronal and sagittal planes (synthetic | real) of the evaluated slices there.
    """
    from seg2med_core import io
    from seg2med_core.metrics import image_metrics
    from seg2med_core.preprocess import body_mask_from_image

    modality = method.modality
    image = io.read_image(spec.image)
    seg = read_case_segmentation(spec, options.label_set)
    io.check_same_geometry(seg.image, image, f"segmentation '{spec.segmentation}'", f"image '{spec.image}'")
    conversion = None
    if spec.source_image is not None:
        # paper Exp. IV: labels of the source modality converted to the target's label set, body contour
        # from the source image; compared with the paired real image of the target modality
        from seg2med_core.pipeline import convert_segmentation, segmentation_modality

        source = io.read_image(spec.source_image)
        io.check_same_geometry(source, image, f"source image '{spec.source_image}'", f"image '{spec.image}'")
        source_modality = spec.source_modality or segmentation_modality(seg)
        body = body_mask_from_image(source, source_modality)
        if segmentation_modality(seg) != modality:
            seg, report = convert_segmentation(seg, "total_mr" if modality == "mr" else "total")
            conversion = f"{source_modality}-to-{modality}"
            if report.unmapped:
                conversion += f" ({len(report.unmapped)} classes without counterpart)"
    else:
        body = body_mask_from_image(image, modality)
    reo = _reorientation(image)
    body_can = reo.forward(body)
    start, stop = options.slices if options.slices is not None else (0, body_can.shape[0])
    if start >= body_can.shape[0]:
        raise Seg2MedError(f"slices {start}:{stop} lie outside the volume of {body_can.shape[0]} axial slices")
    stop = min(stop, body_can.shape[0])
    restricted = np.zeros_like(body_can)
    restricted[start:stop] = body_can[start:stop]
    if not restricted.any():
        raise Seg2MedError(f"no body in axial slices {start}:{stop}")
    body_eval = np.ascontiguousarray(reo.inverse(restricted))

    pred = method.predict(seg, image, body_eval, progress, cancel)
    real = _metric_space_real(image, modality)
    pred_c = reo.forward(pred)[start:stop]
    real_c = reo.forward(real)[start:stop]
    mask_c = restricted[start:stop]
    data_range = 2000.0 if modality == "ct" else 1.0
    m = image_metrics(pred_c, real_c, mask_c, modality, data_range)
    row: dict[str, Any] = {
        "case": spec.case_id,
        "dataset": spec.dataset,
        "method": method.name,
        "slices": f"{start}:{stop}",
        "n_slices": int(mask_c.reshape(mask_c.shape[0], -1).any(axis=1).sum()),
        "modality": modality,
    }
    if conversion is not None:
        row["conversion"] = conversion
    row.update({k: float(v) for k, v in m.items() if k in IMAGE_METRICS})
    if "fsim_skipped" in m:
        row["fsim_skipped"] = str(m["fsim_skipped"])
    banding = _banding(pred_c, real_c, mask_c, modality, image)
    row.update(banding_columns(banding))
    if reformat is not None:
        _write_reformat(reformat, pred_c, real_c, mask_c, modality, image, spec.case_id, banding)
    pred01 = np.where(mask_c, _to01(pred_c, modality), 0.0).astype(np.float32)
    real01 = np.where(mask_c, _to01(real_c, modality), 0.0).astype(np.float32)
    keep = mask_c.reshape(mask_c.shape[0], -1).any(axis=1)
    out_img = sitk.GetImageFromArray(pred.astype(np.int16 if modality == "ct" else np.float32))
    out_img.CopyInformation(image)
    return row, {"pred01": pred01[keep], "real01": real01[keep]}, out_img, (seg, body_eval)


def _banding(pred_c: np.ndarray, real_c: np.ndarray, mask_c: np.ndarray, modality: str, image: sitk.Image) -> dict[str, Any]:
    from seg2med_core.metrics import banding_comparison
    from seg2med_core.preprocess import SliceGrid

    spacing = tuple(float(v) for v in reversed(SliceGrid.from_image(image, None, 1).canonical.spacing))
    try:
        return banding_comparison(pred_c, real_c, mask_c, modality, spacing)  # type: ignore[arg-type]
    except Seg2MedError as exc:  # e.g. no soft tissue in the evaluated slices
        return {"skipped": str(exc)}


def banding_columns(banding: dict[str, Any]) -> dict[str, float]:
    """The :data:`BANDING_METRICS` columns of one :func:`seg2med_core.metrics.banding_comparison` result
    (none when it was skipped; non-finite values, e.g. a ratio to a real jump of 0, are left out)."""
    if "synthetic" not in banding:
        return {}
    out: dict[str, float] = {}
    for column, key in _BANDING_SOURCE.items():
        for suffix, part in (("", "synthetic"), ("_real", "real"), ("_x", "ratio")):
            value = float(banding[part][key])
            if math.isfinite(value):
                out[column + suffix] = value
    return out


def _write_reformat(path: Path, pred_c: np.ndarray, real_c: np.ndarray, mask_c: np.ndarray, modality: str,
                    image: sitk.Image, case_id: str, banding: dict[str, Any]) -> None:
    """Coronal / sagittal PNG of the evaluated canonical slices (an LPS image of that block gives the aspect)."""
    from seg2med_core.metrics import banding_line
    from seg2med_core.preprocess import SliceGrid
    from seg2med_core.preview import CT_SOFT_TISSUE, save_reformats

    spacing = SliceGrid.from_image(image, None, 1).canonical.spacing
    ref = sitk.Image([int(n) for n in pred_c.shape[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(tuple(float(v) for v in spacing))
    ref.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # the arrays are already LPS
    window = CT_SOFT_TISSUE if modality == "ct" else None
    footer = ("slice consistency: " + banding_line(banding, "HU" if modality == "ct" else "")) if "synthetic" in banding else None
    save_reformats(path, [("synthetic", pred_c, window), ("real", real_c, window)], ref, body=mask_c, title=case_id,
                   footer=footer)


# ------------------------------------------------------------------------------------------ FID / Dice
def fid_unavailable_reason() -> str | None:
    """None when torchmetrics' FID (torch-fidelity + Inception weights) can be built, else why not."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as exc:  # missing torch-fidelity, offline weight download, ...
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"FID skipped: {text}"
    return None


def compute_fid(fake: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> float:
    """FID between two sets of [0, 1] slices (duplicated to 3 channels, as in the paper)."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in range(0, len(images), 32):
            batch = torch.from_numpy(np.stack(images[chunk : chunk + 32]).astype(np.float32))[:, None].repeat(1, 3, 1, 1)
            fid.update(batch, real=is_real)
    return float(fid.compute())


def dice_unavailable_reason(modality: str) -> str | None:
    """None when TotalSegmentator can re-segment here (package, nnU-Net and weights), else why not."""
    try:
        import nnunetv2  # noqa: F401
        from totalsegmentator.config import get_weights_dir
        from totalsegmentator.python_api import totalsegmentator  # noqa: F401
    except Exception as exc:
        return f"Dice skipped: TotalSegmentator is not runnable here ({type(exc).__name__}: {exc})"
    weights = Path(get_weights_dir())
    if not weights.is_dir() or not any(weights.glob("Dataset*")):
        return f"Dice skipped: no TotalSegmentator weights in '{weights}' (run totalseg_download_weights)"
    return None


def resegment_dice(synthetic: sitk.Image, seg, body_eval: np.ndarray, modality: str, device: str) -> dict[str, float]:
    """Dice per organ between the input segmentation and TotalSegmentator run on the synthetic image."""
    from totalsegmentator.python_api import totalsegmentator

    from seg2med_core import io
    from seg2med_core.metrics import dice_per_label

    with tempfile.TemporaryDirectory(prefix="seg2med-dice-") as tmp:
        src, dst = Path(tmp) / "synthetic.nii.gz", Path(tmp) / "seg.nii.gz"
        io.write_image(synthetic, src)
        totalsegmentator(src, dst, ml=True, fast=True, task="total_mr" if modality == "mr" else "total", quiet=True, device=device)
        found = io.read_segmentation(dst, label_set=seg.label_set)
    ref = sitk.GetArrayFromImage(seg.image) * body_eval
    got = sitk.GetArrayFromImage(found.image) * body_eval
    return dice_per_label(ref, got, seg.names)


# ------------------------------------------------------------------------------------------ driver
def evaluate(
    cases: Sequence[CaseSpec],
    method: Method,
    out_dir: str | Path,
    options: EvalOptions | None = None,
    *,
    compare: str | Path | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    cancel: Callable[[], bool] | None = None,
    settings: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``method`` on ``cases`` and write the tables and figures to ``out_dir``."""
    from seg2med_core import io

    options = options or EvalOptions()
    log = log or (lambda message: None)
    if compare is not None:  # before any work and before anything is written
        _read_compare_rows(Path(compare))
    out = Path(out_dir)  # created by the first write: a run that evaluates nothing leaves no folder
    notes: dict[str, str] = {}
    fid_reason = fid_unavailable_reason() if options.fid else "FID skipped: disabled (--no-fid)"
    dice_reason = dice_unavailable_reason(method.modality) if options.dice else "Dice skipped: disabled (--no-dice)"
    if fid_reason:
        notes["fid"] = fid_reason
        log(fid_reason)
    if dice_reason:
        notes["dice"] = dice_reason
        log(dice_reason)

    rows: list[dict[str, Any]] = []
    dice_rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    slices: dict[str, dict[str, list[np.ndarray]]] = {}
    for i, spec in enumerate(cases):
        if cancel is not None and cancel():
            raise Cancelled("evaluation cancelled")
        log(f"case {i + 1}/{len(cases)}: {spec.case_id}")
        try:
            reformat = out / "reformats" / f"{spec.case_id}_{method.name}.png" if options.save_images else None
            row, arrays, synthetic, (seg, body_eval) = evaluate_case(spec, method, options, progress, cancel, reformat)
        except (Seg2MedError, RuntimeError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped.append((spec.case_id, reason))
            log(f"skipped case '{spec.case_id}': {reason}")
            continue
        if "fsim_skipped" in row:
            notes.setdefault("fsim", f"FSIM skipped: {row.pop('fsim_skipped')}")
        rows.append(row)
        per_dataset = slices.setdefault(spec.dataset, {"fake": [], "real": []})
        per_dataset["fake"].extend(arrays["pred01"])
        per_dataset["real"].extend(arrays["real01"])
        if options.save_images:
            io.write_image(synthetic, out / "images" / f"{spec.case_id}_{method.name}.nii.gz")
        if dice_reason is None:
            try:
                for organ, value in resegment_dice(synthetic, seg, body_eval, method.modality, options.dice_device).items():
                    dice_rows.append({"case": spec.case_id, "dataset": spec.dataset, "organ": organ, "dice": value})
            except Exception as exc:  # TotalSegmentator failing (download, GPU) must not lose the other metrics
                dice_reason = f"Dice skipped: TotalSegmentator failed ({type(exc).__name__}: {str(exc)[:200]})"
                notes["dice"] = dice_reason
                log(dice_reason)
    if not rows:
        details = "; ".join(f"{c}: {r}" for c, r in skipped[:3])
        raise Seg2MedError(f"no case could be evaluated ({details})")

    fid: dict[str, float] = {}
    if fid_reason is None:
        groups = dict(slices)
        if len(groups) > 1 or stats.OVERALL not in groups:
            groups[stats.OVERALL] = {
                "fake": [s for g in slices.values() for s in g["fake"]],
                "real": [s for g in slices.values() for s in g["real"]],
            }
        for name, group in groups.items():
            if len(group["fake"]) < 2:
                notes[f"fid_{name}"] = f"FID skipped for {name}: fewer than 2 slices"
                continue
            fid[name] = compute_fid(group["fake"], group["real"])

    metrics = [m for m in IMAGE_METRICS + BANDING_METRICS if any(m in r for r in rows)]
    summaries = stats.summarise(rows, metrics)
    result = EvalResult(out, rows, summaries, notes, skipped, fid)
    with io.output_group():  # every table and figure, or none
        _write_outputs(result, method.name, metrics, dice_rows, compare, settings or {}, log)
    return result


def _read_compare_rows(folder: Path) -> list[dict[str, str]]:
    """Per-case rows of the ``--compare`` evaluation folder; a one-line error when it is not one."""
    if not folder.is_dir():
        raise Seg2MedError(f"--compare folder '{folder}' does not exist")
    try:
        rows = stats.read_rows_csv(folder / "per_case.csv")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Seg2MedError(f"--compare results '{folder / 'per_case.csv'}' cannot be read: {exc}") from None
    except Seg2MedError:
        raise Seg2MedError(f"--compare folder '{folder}' is not an evaluation folder (no per_case.csv)") from None
    if not rows:
        raise Seg2MedError(f"--compare results '{folder / 'per_case.csv'}' have no cases")
    return rows


def _write_outputs(
    result: EvalResult,
    name: str,
    metrics: list[str],
    dice_rows: list[dict[str, Any]],
    compare: str | Path | None,
    settings: dict[str, Any],
    log: LogFn,
) -> None:
    from seg2med_core.io import atomic_path, write_json

    out = result.out_dir
    stats.write_rows_csv(out / "per_case.csv", result.rows)
    stats.write_rows_csv(
        out / "summary.csv",
        [{"method": name, **s.__dict__} for s in result.summaries]
        + [{"method": name, "metric": "fid", "dataset": d, "n": "", "mean": v, "sd": ""} for d, v in result.fid.items()],
    )
    runs: dict[str, list[stats.Summary]] = {name: result.summaries}
    case_rows: dict[str, Sequence[dict[str, Any]]] = {name: result.rows}
    extra: dict[str, dict[str, dict[str, float | str]]] = {}
    if result.fid or "fid" in result.notes:
        extra["fid"] = {d: {name: v} for d, v in result.fid.items()} or {stats.OVERALL: {name: "skipped"}}
    other_name = None
    if compare is not None:
        other_dir = Path(compare)
        other_rows = _read_compare_rows(other_dir)
        other_name = _run_name(other_dir)
        if other_name == name:
            other_name = f"{other_name} ({other_dir.name})"
        runs[other_name] = stats.summarise(other_rows, metrics)
        case_rows[other_name] = other_rows
        other_fid = _read_fid(other_dir)
        for dataset, value in other_fid.items():
            extra.setdefault("fid", {}).setdefault(dataset, {})[other_name] = value
        if not other_fid and "fid" in extra:
            for cells in extra["fid"].values():
                cells[other_name] = "skipped"
        tests = stats.compare_runs(result.rows, other_rows, [m for m in ("ssim", "psnr", "mae", "histcc", "fsim") if m in metrics], name, other_name)
        stats.write_rows_csv(out / "compare.csv", [t.__dict__ for t in tests])
        with atomic_path(out / "compare.md") as tmp:
            Path(tmp).write_text(stats.comparison_markdown(tests), encoding="utf-8")
        for t in tests:
            log(f"Mann–Whitney {t.metric}: {name} vs {other_name}: p = {t.p_text()}" + (" (two-sided)" if t.tested else ""))
    table = stats.table_markdown(runs, metrics, extra, digits={"mae": 2, "psnr": 2})
    notes = "\n".join(f"- {v}" for v in result.notes.values())
    skipped = "\n".join(f"- case `{c}` skipped: {r}" for c, r in result.skipped)
    text = f"# Evaluation: {name}\n\nUnits: MAE in HU for CT, in model space [0, 1] for MR; metrics inside the body.\n\n{table}"
    if notes or skipped:
        text += "\n## Notes\n\n" + "\n".join(x for x in (notes, skipped) if x) + "\n"
    with atomic_path(out / "summary.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    if dice_rows:
        stats.write_rows_csv(out / "dice_per_case.csv", dice_rows)
        organs = sorted({r["organ"] for r in dice_rows})
        dice_summary = [
            {"organ": o, **{k: v for k, v in s.__dict__.items() if k != "metric"}}
            for o in organs
            for s in stats.summarise([{"dataset": r["dataset"], "dice": r["dice"]} for r in dice_rows if r["organ"] == o], ["dice"])
        ]
        stats.write_rows_csv(out / "dice_summary.csv", dice_summary)
    for metric in metrics:
        plots.metric_figures(case_rows, metric, out)
    payload = {
        "method": name,
        "modality": next((r.get("modality") for r in result.rows if r.get("modality")), None),
        "settings": settings,
        "cases": len(result.rows),
        "skipped": [{"case": c, "reason": r} for c, r in result.skipped],
        "notes": result.notes,
        "fid": result.fid,
        "summary": {f"{s.metric}/{s.dataset}": {"mean": s.mean, "sd": s.sd, "n": s.n} for s in result.summaries},
        "compared_with": str(compare) if compare is not None else None,
    }
    write_json(out / "eval.json", payload, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def _run_name(folder: Path) -> str:
    try:
        return str(json.loads((folder / "eval.json").read_text(encoding="utf-8"))["method"])
    except (OSError, ValueError, KeyError):
        return folder.name


def _read_fid(folder: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads((folder / "eval.json").read_text(encoding="utf-8")).get("fid", {}).items()}
    except (OSError, ValueError):
        return {}
