"""Showing a measurement file (docs/measurement-format.md) in the scene, so a physicist can inspect it before a run.

CT: the sinogram as a volume, array (n_views, n_rows, n_cols): scroll through views on the slice
axis (2D scans: one image, views down, detector columns across).
MR: the sampling pattern as an image on the k-space grid (Cartesian: fraction of frames that sample
each k-space point; non-Cartesian: trajectory sample density), with a text summary (frames, coils,
samples, acceleration) in the node's description.

Reads the HDF5 file directly with h5py: this is a viewer of raw arrays, the full validation happens
in the worker (`INRReconLib.io.measurement`), which reports problems with their fixes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..physics.grid import ImageGrid
from .volumes import add_volume, ijk_to_ras_from_grid

FORMAT_NAME = "inrrecon-measurement"


def _attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def is_measurement_file(path) -> bool:
    """True for an HDF5 file whose root says `format = "inrrecon-measurement"` (cheap check)."""
    try:
        import h5py

        with h5py.File(str(path), "r") as f:
            return _attr(f.attrs.get("format")) == FORMAT_NAME
    except (OSError, ImportError):
        return False


def read_measurement_header(path) -> dict:
    """modality, grid (ImageGrid), geometry type and root attributes of a measurement file,
    without its data."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError("measurement", f"file {str(path)!r} does not exist.", "Choose an existing .h5 measurement file.")
    try:
        with h5py.File(str(path), "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            if attrs.get("format") != FORMAT_NAME:
                raise InputError("/ format", f"{path.name} is not an INRRecon measurement file.",
                                 "Write it with `inrrecon simulate` or an importer (see docs/measurement-format.md).")
            if "grid" not in f:
                raise InputError("/grid", f"{path.name} has no /grid group.", "Add the image grid (see docs/measurement-format.md).")
            g = {k: np.asarray(v).tolist() for k, v in f["grid"].attrs.items()}
            geometry = str(_attr(f["geometry"].attrs.get("type", ""))) if "geometry" in f else ""
    except OSError as exc:
        raise InputError("measurement", f"cannot read {path.name} as HDF5 ({exc}).") from exc
    grid = ImageGrid.from_dict(g)
    return {"modality": str(attrs.get("modality", "")), "grid": grid, "geometry": geometry, "attrs": attrs}


def describe_measurement(path) -> str:
    """The `inrrecon info` summary of a measurement file (validates it while reading)."""
    from ..io.measurement import describe_measurement as describe, read_measurement

    return f"INRRecon measurement: {Path(path).name}\n" + describe(read_measurement(path))


def sinogram_array(path) -> tuple[np.ndarray, np.ndarray]:
    """(array (n_views, n_rows, n_cols) float32, IJK->RAS) for viewing a CT sinogram.

    Columns and rows are spaced by the detector pixel size (|u|, |v| of the first view); views are
    1 mm apart so that the stack has a sane aspect in slice views (there is no physical view axis).
    """
    import h5py

    with h5py.File(str(path), "r") as f:
        data = np.asarray(f["data"], dtype=np.float32)
        vectors = np.asarray(f["geometry/vectors"], dtype=float) if "vectors" in f["geometry"] else None
    if data.ndim != 3:
        raise InputError("/data", f"a CT sinogram must be [n_views, n_rows, n_cols], got shape {data.shape}.")
    du = dv = 1.0
    if vectors is not None and vectors.shape[-1] == 12 and len(vectors):
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


def sampling_density(path) -> tuple[np.ndarray, np.ndarray]:
    """(density image on the grid shape, IJK->RAS) for an MR measurement's sampling pattern.

    Cartesian: the fraction of frames sampling each k-space point. Non-Cartesian: log(1 + samples)
    per k-space cell, trajectory (rad/voxel in [-pi, pi)) binned onto the image grid.
    """
    import h5py

    header = read_measurement_header(path)
    grid = header["grid"]
    shape = grid.shape
    with h5py.File(str(path), "r") as f:
        geometry = f["geometry"]
        if "mask" in geometry:
            mask = np.asarray(geometry["mask"], dtype=np.float32)
            density = mask.mean(axis=0).reshape(shape)
        elif "trajectory" in geometry:
            traj = np.asarray(geometry["trajectory"], dtype=np.float64)  # [frames, ndim, samples]
            ndim = traj.shape[1]
            dims = shape[-ndim:]
            points = np.moveaxis(traj, 1, -1).reshape(-1, ndim)
            edges = [np.linspace(-np.pi, np.pi, n + 1) for n in dims]
            counts, _ = np.histogramdd(points, bins=edges)
            density = np.log1p(counts).astype(np.float32).reshape(shape)
        else:
            raise InputError("/geometry", "has neither mask nor trajectory.", "See docs/measurement-format.md, MR part.")
    return density.astype(np.float32), ijk_to_ras_from_grid(grid)


def load_measurement_nodes(scene, path, name: str | None = None) -> list:
    """Add the nodes that show a measurement file; returns them (first = the main one).

    The node's description holds `describe_measurement`; its attribute `INRRecon.measurement` holds the
    file path, so the module can preselect the file for a run.
    """
    path = Path(path)
    header = read_measurement_header(path)
    name = name or path.name.split(".")[0]
    if header["modality"] == "CT":
        array, ijk_to_ras = sinogram_array(path)
        node = add_volume(scene, array, ijk_to_ras, f"{name} sinogram")
    elif header["modality"] == "MR":
        array, ijk_to_ras = sampling_density(path)
        node = add_volume(scene, array, ijk_to_ras, f"{name} k-space sampling")
    else:
        raise InputError("/ modality", f"must be 'CT' or 'MR', got {header['modality']!r}.")
    node.SetDescription(describe_measurement(path))
    node.SetAttribute("INRRecon.measurement", str(path.resolve()))
    node.SetAttribute("INRRecon.modality", header["modality"])
    return [node]
