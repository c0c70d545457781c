"""Dynamic results in the scene: a volume Sequence with a browser (cine playback in the slice
views), and the time–intensity curve of a region across its frames (contrast uptake, motion).

Works with Slicer's scene and with slicer-core: vtkMRMLSequenceNode is in MRML core, the browser
(vtkMRMLSequenceBrowserNode) only where Slicer's Sequences module is loaded; without it the
sequence is still built and the browser is None. The proxy volume that the views show is made
by Slicer's Sequences logic (the module's Logic calls it: INRRecon.py).
"""

from __future__ import annotations

import numpy as np

from ..io.sequence import time_index
from .volumes import array_from_volume, get_ijk_to_ras, update_volume_from_array


def add_volume_sequence(scene, frames, ijk_to_ras: np.ndarray, times_s, name: str):
    """(sequence node, browser node or None): one volume per frame [n_frames, nz, ny, nx] at its
    time (s). The frames are deep-copied into the sequence; no per-frame nodes stay in the scene."""
    frames = np.asarray(frames)
    times = [float(t) for t in times_s]
    if len(times) != frames.shape[0]:
        raise ValueError(f"{frames.shape[0]} frames but {len(times)} times")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    unit, values = time_index(times)  # as the .seq.nrrd file: ms for finely spaced frames
    sequence.SetIndexName("time")
    sequence.SetIndexUnit(unit)
    sequence.SetIndexType(sequence.NumericIndex)
    frame_node = scene.CreateNodeByClass("vtkMRMLScalarVolumeNode")  # a template, never added
    for frame, value in zip(frames, values):
        update_volume_from_array(frame_node, frame, ijk_to_ras)
        sequence.SetDataNodeAtValue(frame_node, f"{value:.6f}")
    browser = None
    if scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return sequence, browser


def sequence_frames(sequence) -> tuple[np.ndarray, list]:
    """The frames [n_frames, nz, ny, nx] and their times (s) of a volume sequence."""
    factor = 1e-3 if sequence.GetIndexUnit() == "ms" else 1.0
    frames, times = [], []
    for i in range(sequence.GetNumberOfDataNodes()):
        frames.append(np.array(array_from_volume(sequence.GetNthDataNode(i))))
        times.append(float(sequence.GetNthIndexValue(i)) * factor)
    return np.stack(frames), times


def region_mask(region_node, ijk_to_ras: np.ndarray, shape_zyx) -> np.ndarray:
    """bool [nz, ny, nx]: the voxels of the frames' grid inside a region, a labelmap volume on the
    same grid (non-zero voxels) or a markups ROI (box, in RAS)."""
    if region_node.IsA("vtkMRMLLabelMapVolumeNode"):
        labels = array_from_volume(region_node)
        if labels.shape != tuple(shape_zyx) or not np.allclose(get_ijk_to_ras(region_node), ijk_to_ras, atol=1e-4):
            raise ValueError(f"the label map {region_node.GetName()!r} is not on the frames' grid; "
                             "resample it onto the result first")
        return labels != 0
    if region_node.IsA("vtkMRMLMarkupsROINode"):
        nz, ny, nx = shape_zyx
        k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        ras = ijk_to_ras @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
        radius = [0.0] * 3
        region_node.GetRadiusXYZ(radius)
        # voxel centres in the ROI's own frame (its centre and orientation): inverse object-to-world
        m = region_node.GetObjectToWorldMatrix()
        object_to_world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
        local = np.linalg.solve(object_to_world, ras)[:3]
        inside = np.all(np.abs(local) <= np.asarray(radius)[:, None] + 1e-6, axis=0)
        return inside.reshape(shape_zyx)
    raise ValueError(f"{region_node.GetClassName()} is not a region: use a label map or a markups ROI")


def time_intensity_curve(scene, sequence, region_node, name: str):
    """The mean of every frame inside the region, as a table (time_s, mean) plotted in a chart.
    Returns (table node, chart node, means)."""
    import vtk

    frames, times = sequence_frames(sequence)
    mask = region_mask(region_node, get_ijk_to_ras(sequence.GetNthDataNode(0)), frames.shape[1:])
    if not mask.any():
        raise ValueError(f"the region {region_node.GetName()!r} holds no voxel of the frames")
    means = [float(frame[mask].mean()) for frame in frames]
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} curve"))
    table = table_node.GetTable()
    for column, values in (("time_s", times), ("mean", means)):
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        for v in values:
            array.InsertNextValue(v)
        table.AddColumn(array)
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} mean"))
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName("time_s")
    series.SetYColumnName("mean")
    series.SetPlotType(series.PlotTypeScatter)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{name} time-intensity"))
    chart.SetTitle(f"{name}: mean in {region_node.GetName()}")
    chart.SetXAxisTitle("time (s)")
    chart.SetYAxisTitle("mean intensity")
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table_node, chart, means

