"""The paper's result tables, built from per-case rows (``per_case.csv`` of ``seg2med evaluate``).

* **Table II** (``--table ii``, Experiment I): one block per metric — (a) SSIM, (b) PSNR, (c) MAE, (d) FID —
  rows = test datasets + overall, columns = methods (e.g. UNet, CycleGAN, pix2pix, DDPM), mean ± sd over
  cases; followed by **Table III**: Mann–Whitney U p-values (two-sided) of the first method against each other
  one over all test cases.
* **Table IV** (``--table iv``, Experiment II): rows = datasets, columns = SSIM, PSNR, MAE, FID (one MR model
  per dataset, as in the paper).
* **Table VI** (``--table vi``, Experiment IV): rows = conversion directions (MR-to-CT, CT-to-MR), columns
  = SSIM, PSNR, MAE over the cases of each run.

MAE is in HU for CT. For MR the tables give MAE on the paper's [0, 255] scale (model-space [0, 1] MAE × 255,
a linear rescaling; SSIM and PSNR do not change with it). p-values are printed only when each group has at
least :data:`seg2med_core.training.stats.MIN_CASES_FOR_TEST` cases, otherwise ``n/a (too few cases: n=...)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from seg2med_core.errors import Seg2MedError
from seg2med_core.training import stats

TABLES = ("ii", "iv", "vi")
IMAGE_METRICS = ("ssim", "psnr", "mae")
MR_MAE_SCALE = 255.0
DIGITS = 2


@dataclass
class Run:
    """One evaluation: its name (column / row label), per-case rows, FID per dataset and settings."""

    name: str
    rows: list[dict[str, Any]]
    fid: dict[str, float | str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    modality: str | None = None

    @property
    def label(self) -> str:
        """``MR-to-CT`` for a conversion run (``--seg-from``), else the method name."""
        source, target = self.settings.get("seg_from"), self.modality
        if source and target and source != target:
            return f"{source.upper()}-to-{target.upper()}"
        return self.name


def load_run(folder: str | Path) -> Run:
    """A run from an evaluation folder (``per_case.csv`` + ``eval.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Seg2MedError(f"evaluation folder '{folder}' does not exist")
    rows = stats.read_rows_csv(folder / "per_case.csv")
    try:
        meta = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        meta = {}
    except (OSError, ValueError) as exc:
        raise Seg2MedError(f"'{folder / 'eval.json'}' cannot be read: {exc}") from None
    fid: dict[str, float | str] = {}
    for key, value in (meta.get("fid") or {}).items():
        try:
            fid[key] = float(value)
        except (TypeError, ValueError):
            fid[key] = str(value)
    if not fid and "fid" in (meta.get("notes") or {}):
        fid = {stats.OVERALL: "skipped"}
    modality = meta.get("modality") or next((r.get("modality") for r in rows if r.get("modality")), None)
    return Run(str(meta.get("method") or folder.name), rows, fid, dict(meta.get("settings") or {}), modality)


def merge_runs(runs: Sequence[Run]) -> list[Run]:
    """Runs with the same label (one method evaluated dataset by dataset) become one column / row."""
    merged: dict[str, Run] = {}
    for run in runs:
        if run.label not in merged:
            merged[run.label] = Run(run.name, list(run.rows), dict(run.fid), dict(run.settings), run.modality)
            continue
        into = merged[run.label]
        seen = {(r.get("dataset"), r.get("case")) for r in into.rows}
        twice = [r.get("case") for r in run.rows if (r.get("dataset"), r.get("case")) in seen]
        if twice:
            raise Seg2MedError(f"evaluations of '{run.label}' both hold case '{twice[0]}': give each case once")
        into.rows.extend(run.rows)
        # the overall FID is computed over the pooled slices of one evaluation: merged parts have none
        both_skipped = into.fid.get(stats.OVERALL) == "skipped" and run.fid.get(stats.OVERALL) == "skipped"
        into.fid = {k: v for k, v in {**into.fid, **run.fid}.items() if k != stats.OVERALL}
        if both_skipped:
            into.fid[stats.OVERALL] = "skipped"
    return list(merged.values())


def _scaled(run: Run) -> list[dict[str, Any]]:
    """Rows with MR MAE on the paper's [0, 255] scale."""
    if run.modality != "mr":
        return list(run.rows)
    out = []
    for row in run.rows:
        row = dict(row)
        if row.get("mae") not in (None, ""):
            row["mae"] = float(row["mae"]) * MR_MAE_SCALE
        out.append(row)
    return out


def _cell(summary: stats.Summary | None) -> str:
    return "–" if summary is None else summary.formatted(DIGITS)


def _summaries(run: Run, metric: str) -> dict[str, stats.Summary]:
    return {s.dataset: s for s in stats.summarise(_scaled(run), [metric])}


def _fid_cell(run: Run, dataset: str) -> str:
    value = run.fid.get(dataset)
    if value is None:
        return "skipped" if run.fid.get(stats.OVERALL) == "skipped" else "–"
    return value if isinstance(value, str) else f"{value:.{DIGITS}f}"


def _ordered(datasets: set[str]) -> list[str]:
    return sorted(d for d in datasets if d != stats.OVERALL) + ([stats.OVERALL] if stats.OVERALL in datasets else [])


def _units(runs: Sequence[Run]) -> str:
    modalities = {r.modality for r in runs}
    parts = []
    if "ct" in modalities or None in modalities:
        parts.append("CT MAE in HU")
    if "mr" in modalities:
        parts.append("MR MAE on the paper's [0, 255] scale (model-space MAE × 255)")
    return "; ".join(parts) + "; metrics inside the body, mean ± sd over cases."


def table_ii(runs: Sequence[Run]) -> str:
    """Paper Table II (metric blocks × datasets × methods) and Table III (Mann–Whitney, first vs. others)."""
    if not runs:
        raise Seg2MedError("Table II needs at least one evaluation")
    names = [r.label for r in runs]
    lines = ["Table II layout: " + _units(runs), ""]
    blocks = [m for m in IMAGE_METRICS if any(m in row for r in runs for row in r.rows)]
    letters = "abcdefgh"
    for i, metric in enumerate(blocks + ["fid"]):
        header = "mean ± std" if metric != "fid" else ""
        better = "higher is better" if stats.HIGHER_IS_BETTER[metric] else "lower is better"
        lines += [f"({letters[i]}) {metric.upper()} ({better})", "", f"| {header} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        if metric == "fid":
            datasets = _ordered({k for r in runs for k in r.fid} | {str(row.get("dataset", "")) for r in runs for row in r.rows} | {stats.OVERALL})
            for dataset in datasets:
                lines.append(f"| {dataset} | " + " | ".join(_fid_cell(r, dataset) for r in runs) + " |")
        else:
            per_run = [_summaries(r, metric) for r in runs]
            for dataset in _ordered(set().union(*per_run)):
                lines.append(f"| {dataset} | " + " | ".join(_cell(s.get(dataset)) for s in per_run) + " |")
        lines.append("")
    if len(runs) > 1:
        lines += table_iii(runs, blocks)
    return "\n".join(lines).rstrip() + "\n"


def table_iii(runs: Sequence[Run], metrics: Sequence[str] = IMAGE_METRICS) -> list[str]:
    """Mann–Whitney U (two-sided p) of the first run against each other run, over all their cases."""
    first = runs[0]
    lines = [
        f"Table III layout: Mann–Whitney U test, two-sided p (p < 0.05 is significant), {first.label} vs. each other method",
        "",
        "| Model | " + " | ".join(m.upper() for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    any_na = False
    for other in runs[1:]:
        tests = {t.metric: t for t in stats.compare_runs(_scaled(first), _scaled(other), metrics, first.label, other.label)}
        cells = []
        for metric in metrics:
            t = tests.get(metric)
            cells.append("–" if t is None else t.p_text())
            any_na |= t is not None and not t.tested
        lines.append(f"| {first.label} vs. {other.label} | " + " | ".join(cells) + " |")
    if any_na:
        lines += ["", stats.too_few_footnote()]
    return lines + [""]


def table_iv(runs: Sequence[Run]) -> str:
    """Paper Table IV: one row per dataset (of every run), columns SSIM, PSNR, MAE, FID."""
    if not runs:
        raise Seg2MedError("Table IV needs at least one evaluation")
    lines = ["Table IV layout: " + _units(runs), "", "| | SSIM | PSNR | MAE | FID |", "|---|---|---|---|---|"]
    labels_seen: set[str] = set()
    for run in runs:
        per_metric = {m: _summaries(run, m) for m in IMAGE_METRICS}
        datasets = _ordered(set().union(*per_metric.values()))
        if len(datasets) == 2 and stats.OVERALL in datasets:
            datasets = [d for d in datasets if d != stats.OVERALL]  # one dataset: its row is the overall row
        for dataset in datasets:
            label = dataset if dataset not in labels_seen else f"{dataset} ({run.label})"
            labels_seen.add(label)
            fid = _fid_cell(run, dataset)
            if fid == "–" and dataset != stats.OVERALL and len(datasets) == 1:
                fid = _fid_cell(run, stats.OVERALL)
            lines.append(f"| {label} | " + " | ".join(_cell(per_metric[m].get(dataset)) for m in IMAGE_METRICS) + f" | {fid} |")
    return "\n".join(lines) + "\n"


def table_vi(runs: Sequence[Run]) -> str:
    """Paper Table VI: one row per run (conversion direction), columns SSIM, PSNR, MAE over all its cases."""
    if not runs:
        raise Seg2MedError("Table VI needs at least one evaluation")
    lines = ["Table VI layout: " + _units(runs), "", "| | SSIM | PSNR | MAE | n |", "|---|---|---|---|---|"]
    for run in runs:
        per_metric = {m: _summaries(run, m).get(stats.OVERALL) for m in IMAGE_METRICS}
        n = max((s.n for s in per_metric.values() if s is not None), default=0)
        lines.append(f"| {run.label} | " + " | ".join(_cell(per_metric[m]) for m in IMAGE_METRICS) + f" | {n} |")
    return "\n".join(lines) + "\n"


def render(table: str, runs: Sequence[Run]) -> str:
    """The chosen table (``ii``, ``iv`` or ``vi``) as Markdown text."""
    builders = {"ii": table_ii, "iv": table_iv, "vi": table_vi}
    if table not in builders:
        raise Seg2MedError(f"--table must be one of {', '.join(TABLES)}, got {table!r}")
    return builders[table](merge_runs(runs))

