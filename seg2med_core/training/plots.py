"""Evaluation figures in the style of the paper's Fig. 4: per-case line charts (cases on x, one line per
run, datasets as background bands) and box plots (runs on x, cases as points coloured by dataset).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from seg2med_core.io import atomic_path

_COLOURS = ("tab:blue", "tab:green", "tab:pink", "tab:orange", "tab:purple", "tab:brown", "tab:gray", "tab:olive")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def metric_figures(
    runs: dict[str, Sequence[dict[str, Any]]], metric: str, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write ``<metric>_cases.png`` (line chart) and ``<metric>_box.png`` (box plot); returns the paths.

    ``runs`` maps a run name to its per-case rows (``case``, ``dataset``, metric values); the first run's
    case order defines the x axis of the line chart.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    first = next(iter(runs.values()))
    cases = [str(r["case"]) for r in first]
    datasets = sorted({str(r.get("dataset", "")) for rows in runs.values() for r in rows})
    colour = {d: _COLOURS[i % len(_COLOURS)] for i, d in enumerate(datasets)}
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(cases) + 3), 3.6), dpi=100)
    try:
        start = 0
        for i in range(1, len(first) + 1):
            if i == len(first) or first[i].get("dataset") != first[start].get("dataset"):
                ax.axvspan(start - 0.5, i - 0.5, color=colour[str(first[start].get("dataset", ""))], alpha=0.12, lw=0)
                start = i
        for name, rows in runs.items():
            by_case = {str(r["case"]): _float(r.get(metric)) for r in rows}
            ax.plot(range(len(cases)), [by_case.get(c, math.nan) for c in cases], "o-", ms=3, label=name)
        ax.set_xlabel("case index")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()} per case (background: dataset)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save_png(fig, out_dir / f"{metric}_cases.png"))
    finally:
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(runs) + 2), 3.6), dpi=100)
    try:
        names = list(runs)
        data = [[v for v in (_float(r.get(metric)) for r in runs[n]) if math.isfinite(v)] for n in names]
        ax.boxplot([d if d else [math.nan] for d in data], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
        for i, name in enumerate(names, start=1):
            for j, row in enumerate(runs[name]):
                value = _float(row.get(metric))
                if math.isfinite(value):
                    jitter = ((j * 7919) % 100 / 100.0 - 0.5) * 0.3
                    ax.plot(i + jitter, value, "o", ms=3, color=colour[str(row.get("dataset", ""))], alpha=0.8)
        for d in datasets:
            ax.plot([], [], "o", color=colour[d], label=d or "(no dataset)")
        ax.legend(fontsize=8)
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()} by run")
        fig.tight_layout()
        written.append(_save_png(fig, out_dir / f"{metric}_box.png"))
    finally:
        plt.close(fig)
    return written
