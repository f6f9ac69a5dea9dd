"""Run logs: ``train_log.csv`` (loss per logged step), ``val_log.csv`` (validation metrics) and
``loss_curve.png``. Rows are appended and flushed as training goes, so a killed run keeps its history;
on resume the rows after the checkpoint's step are dropped so the log never holds a step twice.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from seg2med_core.io import atomic_path

TRAIN_FIELDS = ("step", "epoch", "loss", "lr", "elapsed_s")
VAL_FIELDS = ("step", "ssim", "mae", "psnr", "n_slices")


class CsvLog:
    """Append-only CSV with a fixed header; :meth:`truncate_after` supports resuming."""

    def __init__(self, path: str | os.PathLike[str], fields: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.fields = fields
        if not self.path.exists():
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(fields)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_fmt(row.get(f, "")) for f in self.fields])

    def rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (they belong to the part of a killed run that is redone)."""
        kept = [r for r in self.rows() if r.get("step", "") != "" and int(float(r["step"])) <= step]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(self.fields))
                writer.writeheader()
                writer.writerows(kept)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows if r.get(name, "") not in ("", "nan")], dtype=float)


def plot_loss_curve(train_rows: list[dict[str, str]], val_rows: list[dict[str, str]], path: str | os.PathLike[str]) -> None:
    """Loss (raw and smoothed, log scale) and validation SSIM over steps, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train_rows:
            steps, loss = column(train_rows, "step"), column(train_rows, "loss")
            ax.plot(steps, loss, color="tab:blue", alpha=0.35, lw=0.8, label="loss")
            window = max(1, len(loss) // 20)
            if window > 1:
                smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1 :], smooth, color="tab:blue", lw=1.6, label=f"loss (mean of {window})")
            if np.all(loss > 0):
                ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        if val_rows:
            ax2 = ax.twinx()
            ax2.plot(column(val_rows, "step"), column(val_rows, "ssim"), "o-", color="tab:orange", label="validation SSIM")
            ax2.set_ylabel("validation SSIM")
            ax2.legend(loc="upper right")
        ax.legend(loc="upper left")
        ax.set_title("seg2med training")
        fig.tight_layout()
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
