"""Table, plot and overlay nodes for results: image metrics, per-organ Dice, training loss curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import vtk

WORST_FLAG = "worst"


def _table(scene: Any, name: str, node: Any | None) -> Any:
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    node.RemoveAllColumns()
    return node


def _string_column(name: str, values: list[str]) -> vtk.vtkStringArray:
    column = vtk.vtkStringArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(value)
    return column


def _double_column(name: str, values: list[float]) -> vtk.vtkDoubleArray:
    column = vtk.vtkDoubleArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(float(value))
    return column


def metrics_table_node(scene: Any, metrics: Mapping[str, float], name: str = "Seg2Med metrics",
                       node: Any | None = None) -> Any:
    """Two-column table ``Metric | Value`` (e.g. SSIM, PSNR, MAE from ``seg2med_core.metrics``)."""
    if not metrics:
        raise ValueError("no metrics to show (the metrics dictionary is empty)")
    node = _table(scene, name, node)
    keys = list(metrics)
    table = node.GetTable()
    table.AddColumn(_string_column("Metric", [k.upper() if len(k) <= 6 else k for k in keys]))
    table.AddColumn(_double_column("Value", [float(metrics[k]) for k in keys]))
    node.Modified()
    return node


def dice_rows(dice: Mapping[str, float], worst_n: int = 5, threshold: float = 0.8) -> list[tuple[str, float, str]]:
    """Rows ``(organ, dice, flag)`` sorted worst first; the ``worst_n`` lowest or any below ``threshold``
    are flagged ``worst`` so they stand out in the table (NaN = organ missing in one of the two)."""
    def key(item: tuple[str, float]) -> float:
        return -1.0 if math.isnan(item[1]) else item[1]

    ordered = sorted(((k, float(v)) for k, v in dice.items()), key=key)
    rows = []
    for rank, (organ, value) in enumerate(ordered):
        bad = rank < worst_n or math.isnan(value) or value < threshold
        rows.append((organ, value, WORST_FLAG if bad else ""))
    return rows


def dice_table_node(scene: Any, dice: Mapping[str, float], name: str = "Seg2Med round-trip Dice",
                    worst_n: int = 5, threshold: float = 0.8, node: Any | None = None) -> Any:
    """Per-organ Dice of the round-trip check (original labels vs. labels of the synthetic volume)."""
    if not dice:
        raise ValueError("no Dice values to show (no label in common)")
    rows = dice_rows(dice, worst_n, threshold)
    node = _table(scene, name, node)
    table = node.GetTable()
    table.AddColumn(_string_column("Organ", [r[0] for r in rows]))
    table.AddColumn(_double_column("Dice", [r[1] for r in rows]))
    table.AddColumn(_string_column("Flag", [r[2] for r in rows]))
    node.Modified()
    return node


class LossCurve:
    """A live loss plot: table node (step, loss) + plot series + chart, appended to as metric events arrive."""

    def __init__(self, scene: Any, name: str = "Seg2Med training loss") -> None:
        self.table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name + " table"))
        table = self.table_node.GetTable()
        table.AddColumn(_double_column("step", []))
        table.AddColumn(_double_column("loss", []))
        self.series_node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(name))
        self.series_node.SetAndObserveTableNodeID(self.table_node.GetID())
        self.series_node.SetXColumnName("step")
        self.series_node.SetYColumnName("loss")
        self.series_node.SetPlotType(self.series_node.PlotTypeScatter)
        self.series_node.SetMarkerStyle(self.series_node.MarkerStyleNone)
        self.chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name + " chart"))
        self.chart_node.AddAndObservePlotSeriesNodeID(self.series_node.GetID())
        self.chart_node.SetTitle("Training loss")
        self.chart_node.SetXAxisTitle("step")
        self.chart_node.SetYAxisTitle("loss")
        self.chart_node.SetYAxisLogScale(True)

    def append(self, step: float, loss: float) -> None:
        """Add one point (non-finite losses are skipped: a log axis cannot show them)."""
        if not math.isfinite(loss) or loss <= 0:
            return
        table = self.table_node.GetTable()
        row = table.InsertNextBlankRow()
        table.SetValue(row, 0, vtk.vtkVariant(float(step)))
        table.SetValue(row, 1, vtk.vtkVariant(float(loss)))
        table.Modified()
        self.table_node.Modified()

    @property
    def points(self) -> list[tuple[float, float]]:
        table = self.table_node.GetTable()
        return [(table.GetValue(r, 0).ToDouble(), table.GetValue(r, 1).ToDouble()) for r in range(table.GetNumberOfRows())]
