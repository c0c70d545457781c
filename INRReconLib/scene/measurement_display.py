"""Showing a measurement file (docs/measurement-format.md) in the scene, so a physicist can inspect it before a run.

CT: the sinogram as a volume, array (n_views, n_rows, n_cols): scroll through views on the slice
axis (2D scans: one image, views down, detector columns across).
MR: the sampling pattern as an image on the k-space grid (Cartesian: fraction of frames that sample
each k-space point; non-Cartesian: trajectory sample density), with a text summary (frames, coils,
samples, acceleration) in the node's description.

Reads through io.readers.read_measurement: the file is validated here
as in the worker, and any format a reader is registered for can be shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.readers import read_measurement
from ..physics.grid import ImageGrid
from .volumes import add_volume, ijk_to_ras_from_grid

def sinogram_array(measurement) -> tuple[np.ndarray, np.ndarray]:
    """(array (n_views, n_rows, n_cols) float32, IJK->RAS) for viewing a CT sinogram.

    Columns and rows are spaced by the detector pixel size (|u|, |v| of the first view); views are
    1 mm apart so that the stack has a sane aspect in slice views (there is no physical view axis).
    """
    data = np.asarray(measurement.data, dtype=np.float32)
    vectors = measurement.geometry.vectors
    du = float(np.linalg.norm(vectors[0, 6:9])) or 1.0
    dv = float(np.linalg.norm(vectors[0, 9:12])) or 1.0
    n_views, n_rows, n_cols = data.shape
    if n_rows == 1:
        array = data[:, 0, :][np.newaxis]  # (1, views, cols): one image
        spacing = (du, 1.0, 1.0)
    else:
        array = data
        spacing = (du, dv, 1.0)
    grid = ImageGrid.centred(array.shape, spacing)
    return array, ijk_to_ras_from_grid(grid)


def sampling_density(measurement) -> tuple[np.ndarray, np.ndarray]:
    """(density image on the grid shape, IJK->RAS) for an MR measurement's sampling pattern.

    Cartesian: the fraction of frames sampling each k-space point. Non-Cartesian: log(1 + samples)
    per k-space cell, trajectory (rad/voxel in [-pi, pi)) binned onto the image grid.
    """
    grid, geometry = measurement.grid, measurement.geometry
    shape = grid.shape
    if geometry.type == "cartesian":
        density = np.asarray(geometry.mask, dtype=np.float32).mean(axis=0).reshape(shape)
    else:
        traj = np.asarray(geometry.trajectory, dtype=np.float64)  # [frames, ndim, samples]
        ndim = traj.shape[1]
        dims = shape[-ndim:]
        points = np.moveaxis(traj, 1, -1).reshape(-1, ndim)
        edges = [np.linspace(-np.pi, np.pi, n + 1) for n in dims]
        counts, _ = np.histogramdd(points, bins=edges)
        density = np.log1p(counts).astype(np.float32).reshape(shape)
    return density.astype(np.float32), ijk_to_ras_from_grid(grid)


def load_measurement_nodes(scene, path, name: str | None = None) -> list:
    """Add the nodes that show a measurement file; returns them (first = the main one).

    The node's description holds io.measurement.describe_measurement; its attribute `INRRecon.measurement` holds the
    file path, so the module can preselect the file for a run.
    """
    from ..io.measurement import describe_measurement as describe

    path = Path(path)
    measurement = read_measurement(path)
    name = name or path.name.split(".")[0]
    if measurement.modality == "CT":
        array, ijk_to_ras = sinogram_array(measurement)
        node = add_volume(scene, array, ijk_to_ras, f"{name} sinogram")
    else:
        array, ijk_to_ras = sampling_density(measurement)
        node = add_volume(scene, array, ijk_to_ras, f"{name} k-space sampling")
    node.SetDescription(f"INRRecon measurement: {path.name}\n" + describe(measurement))
    node.SetAttribute("INRRecon.measurement", str(path.resolve()))
    node.SetAttribute("INRRecon.modality", measurement.modality)
    return [node]
