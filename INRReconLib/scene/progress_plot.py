"""The live convergence plot: a table node (iteration, loss, psnr) shown by plot series + chart nodes."""

from __future__ import annotations

import math

COLUMNS = ("iteration", "loss", "psnr")


class ProgressPlot:
    """Owns one table node and the chart that draws loss (and PSNR when the worker reports it)."""

    def __init__(self, scene, name: str):
        import vtk

        self.scene = scene
        self.table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} progress"))
        table = self.table_node.GetTable()
        for column in COLUMNS:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            table.AddColumn(array)
        self.chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{name} convergence"))
        self.chart_node.SetTitle(f"{name}: convergence")
        self.chart_node.SetXAxisTitle("iteration")
        self.chart_node.SetYAxisTitle("loss / PSNR (dB)")
        self.series_nodes = {}
        for column in COLUMNS[1:]:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} {column}"))
            series.SetAndObserveTableNodeID(self.table_node.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            self.chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series_nodes[column] = series
        self._last_iteration = None

    @property
    def n_rows(self) -> int:
        return self.table_node.GetTable().GetNumberOfRows()

    def add(self, iteration, loss=None, psnr=None) -> bool:
        """Append a row; repeated reports of the same iteration are skipped. True when added."""
        if iteration is None or iteration == self._last_iteration:
            return False
        self._last_iteration = iteration
        table = self.table_node.GetTable()
        values = (iteration, loss, psnr)
        for column, value in zip(COLUMNS, values):
            v = float("nan") if value is None else float(value)
            table.GetColumnByName(column).InsertNextValue(v if math.isfinite(v) else float("nan"))
        table.Modified()
        self.table_node.Modified()
        return True

    def rows(self) -> list[tuple[float, float, float]]:
        table = self.table_node.GetTable()
        cols = [table.GetColumnByName(c) for c in COLUMNS]
        return [tuple(c.GetValue(r) for c in cols) for r in range(table.GetNumberOfRows())]
