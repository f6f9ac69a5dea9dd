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

#: Fewest cases per group for which a Mann–Whitney U test is reported. With 5 against 5 the smallest
#: possible two-sided exact p is 2/252 = 0.0079, so a difference can reach p < 0.05; with 3 against 3 it
#: is 0.1 and with 4 against 4 0.029 only for complete separation, and with a single case per group the
#: test always gives p = 1.0. Below this the tables print ``n/a (too few cases: n=...)`` instead of a p.
MIN_CASES_FOR_TEST = 5


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
    """Two-sided U test of ``metric`` between runs ``a`` and ``b`` (+ one-sided "a is better").

    ``u`` and the p-values are None when a group has fewer than :data:`MIN_CASES_FOR_TEST` cases; ``note``
    then says why (``n/a (too few cases: n=1)``)."""

    metric: str
    a: str
    b: str
    n_a: int
    n_b: int
    u: float | None
    p_two_sided: float | None
    p_a_better: float | None
    note: str = ""

    @property
    def tested(self) -> bool:
        return self.p_two_sided is not None

    def p_text(self, one_sided: bool = False) -> str:
        p = self.p_a_better if one_sided else self.p_two_sided
        return self.note if p is None else format_p(p)


def too_few_note(n_a: int, n_b: int, minimum: int = MIN_CASES_FOR_TEST) -> str | None:
    """``"n/a (too few cases: n=1)"`` when a group has fewer than ``minimum`` cases, else None."""
    if min(n_a, n_b) >= minimum:
        return None
    n = f"{n_a}" if n_a == n_b else f"{n_a} and {n_b}"
    return f"n/a (too few cases: n={n})"


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
    rows_a: Sequence[dict[str, Any]],
    rows_b: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    a: str,
    b: str,
    minimum: int = MIN_CASES_FOR_TEST,
) -> list[MannWhitney]:
    """Mann–Whitney per metric for every metric present in both runs; groups with fewer than ``minimum``
    cases get no p-value but a note (see :data:`MIN_CASES_FOR_TEST`)."""
    results = []
    for metric in metrics:
        x, y = _values(rows_a, metric), _values(rows_b, metric)
        if not (x.size and y.size):
            continue
        note = too_few_note(int(x.size), int(y.size), minimum)
        if note is not None:
            results.append(MannWhitney(metric, a, b, int(x.size), int(y.size), None, None, None, note))
        else:
            results.append(mann_whitney(x, y, metric, a, b))
    return results


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.00001" if p < 1e-5 else f"{p:.5f}"


def comparison_markdown(results: Sequence[MannWhitney]) -> str:
    """Table III layout: one row per metric with U, two-sided p and one-sided p ("a better")."""
    if not results:
        return "No metric is present in both runs.\n"
    a, b = results[0].a, results[0].b
    lines = [
        f"Mann–Whitney U test, {a} vs. {b} (p < 0.05 is significant; reported only with at least {MIN_CASES_FOR_TEST} cases per group)",
        "",
        "| metric | n (a/b) | U | p two-sided | p one-sided (a better) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        u = "–" if r.u is None else f"{r.u:.1f}"
        lines.append(f"| {r.metric.upper()} | {r.n_a}/{r.n_b} | {u} | {r.p_text()} | {r.p_text(one_sided=True)} |")
    if any(not r.tested for r in results):
        lines += ["", too_few_footnote()]
    return "\n".join(lines) + "\n"


def too_few_footnote(minimum: int = MIN_CASES_FOR_TEST) -> str:
    return (
        f"n/a: Mann–Whitney U is reported only with at least {minimum} cases in each group "
        "(with fewer the test cannot reach p < 0.05; with one case per group it always gives p = 1.0)."
    )


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
