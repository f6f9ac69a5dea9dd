"""Result tables: mean ± sd per dataset and overall (paper Table II) and Mann–Whitney U tests (Table III).

Inputs are plain per-case rows (``dict`` with a ``dataset`` key and one float per metric), so the tables
can be rebuilt from any ``per_case.csv``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import mannwhitneyu

from seg2med_core.errors import Seg2MedError

#: Metrics where a larger value is better (for one-sided tests and the table legend).
HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "mae": False, "histcc": True, "fsim": True, "fid": False, "dice": True}
OVERALL = "overall"


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one metric over ``n`` cases."""

    metric: str
    dataset: str
    n: int
    mean: float
    sd: float

    def formatted(self, digits: int = 2) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if self.n == 1 or not math.isfinite(self.sd):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def _values(rows: Sequence[dict[str, Any]], metric: str) -> np.ndarray:
    out = []
    for row in rows:
        value = row.get(metric)
        if value in (None, ""):
            continue
        value = float(value)
        if not math.isnan(value):
            out.append(value)
    return np.asarray(out, dtype=float)


def summarise(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[Summary]:
    """One :class:`Summary` per (metric, dataset) plus an ``overall`` row per metric."""
    datasets = sorted({str(r.get("dataset", "")) for r in rows})
    out: list[Summary] = []
    for metric in metrics:
        groups = [(d, [r for r in rows if str(r.get("dataset", "")) == d]) for d in datasets]
        if len(datasets) != 1 or datasets[0] != OVERALL:
            groups.append((OVERALL, list(rows)))
        for name, group in groups:
            values = _values(group, metric)
            with np.errstate(invalid="ignore"):  # PSNR of identical images is inf
                mean = float(values.mean()) if values.size else float("nan")
                sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            out.append(Summary(metric=metric, dataset=name, n=int(values.size), mean=mean, sd=sd))
    return out


def table_markdown(
    runs: dict[str, Sequence[Summary]],
    metrics: Sequence[str],
    extra: dict[str, dict[str, dict[str, float | str]]] | None = None,
    digits: dict[str, int] | None = None,
) -> str:
    """Paper Table II layout: one block per metric, rows = datasets + overall, columns = runs.

    ``extra[metric][dataset][run]`` adds single-number metrics (e.g. FID) or skip notes.
    """
    digits = digits or {}
    lines: list[str] = []
    names = list(runs)
    for metric in list(metrics) + [m for m in (extra or {}) if m not in metrics]:
        better = HIGHER_IS_BETTER.get(metric.split(":")[0])
        hint = "" if better is None else (" (higher is better)" if better else " (lower is better)")
        lines += [f"### {metric.upper()}{hint}", "", "| mean ± sd | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        by_dataset: dict[str, dict[str, str]] = {}
        for run, summaries in runs.items():
            for s in summaries:
                if s.metric == metric:
                    by_dataset.setdefault(s.dataset, {})[run] = s.formatted(digits.get(metric, 2))
        for dataset, cells in ((extra or {}).get(metric, {})).items():
            for run, value in cells.items():
                by_dataset.setdefault(dataset, {})[run] = value if isinstance(value, str) else f"{value:.{digits.get(metric, 2)}f}"
        order = sorted(d for d in by_dataset if d != OVERALL) + ([OVERALL] if OVERALL in by_dataset else [])
        for dataset in order:
            lines.append(f"| {dataset} | " + " | ".join(by_dataset[dataset].get(n, "–") for n in names) + " |")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided U test of ``metric`` between runs ``a`` and ``b`` (+ one-sided "a is better")."""

    metric: str
    a: str
    b: str
    n_a: int
    n_b: int
    u: float
    p_two_sided: float
    p_a_better: float


def mann_whitney(a_values: Sequence[float], b_values: Sequence[float], metric: str, a: str = "a", b: str = "b") -> MannWhitney:
    """``scipy.stats.mannwhitneyu`` between two samples of a metric (the paper's Table III test).

    ``p_a_better`` is the one-sided p-value for "``a`` is better" (greater for SSIM/PSNR, less for MAE),
    matching the paper's null hypothesis "the DDPM did not improve the metric".
    """
    x = np.asarray([v for v in a_values if not math.isnan(float(v))], dtype=float)
    y = np.asarray([v for v in b_values if not math.isnan(float(v))], dtype=float)
    if x.size == 0 or y.size == 0:
        raise Seg2MedError(f"Mann–Whitney test of {metric} needs values in both runs (got {x.size} and {y.size})")
    two = mannwhitneyu(x, y, alternative="two-sided")
    alternative = "greater" if HIGHER_IS_BETTER.get(metric, True) else "less"
    one = mannwhitneyu(x, y, alternative=alternative)
    return MannWhitney(metric, a, b, int(x.size), int(y.size), float(two.statistic), float(two.pvalue), float(one.pvalue))


def compare_runs(
    rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], metrics: Sequence[str], a: str, b: str
) -> list[MannWhitney]:
    """Mann–Whitney per metric for every metric present in both runs."""
    results = []
    for metric in metrics:
        x, y = _values(rows_a, metric), _values(rows_b, metric)
        if x.size and y.size:
            results.append(mann_whitney(x, y, metric, a, b))
    return results


def format_p(p: float) -> str:
    return "<0.00001" if p < 1e-5 else f"{p:.5f}"


def comparison_markdown(results: Sequence[MannWhitney]) -> str:
    """Table III layout: one row per metric with U, two-sided p and one-sided p ("a better")."""
    if not results:
        return "No metric is present in both runs.\n"
    a, b = results[0].a, results[0].b
    lines = [
        f"Mann–Whitney U test, {a} vs. {b} (p < 0.05 is significant)",
        "",
        "| metric | n (a/b) | U | p two-sided | p one-sided (a better) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.metric.upper()} | {r.n_a}/{r.n_b} | {r.u:.1f} | {format_p(r.p_two_sided)} | {format_p(r.p_a_better)} |")
    return "\n".join(lines) + "\n"


def write_rows_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> None:
    """CSV with the union of keys (first-seen order) as header, written atomically."""
    from seg2med_core.io import atomic_path

    if fields is None:
        seen: dict[str, None] = {}
        for row in rows:
            for key in row:
                seen.setdefault(key, None)
        fields = list(seen)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_rows_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise Seg2MedError(f"per-case results '{path}' do not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
