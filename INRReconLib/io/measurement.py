"""The measurement file (docs/measurement-format.md, version 1): one acquisition in one HDF5 file.

`read_v1` (behind io.readers.read_measurement) validates everything and fails with an
`InputError` that names the HDF5 field and the fix; `write_measurement` validates first and writes atomically (temporary file in the
same folder, then `os.replace`), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import InputError
from ..physics.ct_geometry import CTGeometry
from ..physics.grid import ImageGrid
from ..physics.mr_frames import check_spoke_times
from ..physics.mr_geometry import MRGeometry

FORMAT_NAME = "inrrecon-measurement"
FORMAT_VERSION = 1

# Root attributes with a meaning in docs/measurement-format.md; any other root attribute round-trips as is.
_RESERVED_ROOT = ("format", "version", "modality")
_CIRCULAR_ATTRS = ("angles_rad", "source_to_isocenter_mm", "isocenter_to_detector_mm", "detector_offset_mm")
_MR_DATASETS = ("mask", "trajectory", "coil_maps", "dcf", "frame_times_s", "spoke_times_s")
# HDF5 keeps attributes in the object header (64 KiB unless dense storage); long per-view arrays
# go to a dataset of the same name instead. Readers accept both.
_MAX_ATTR_ELEMENTS = 4096

# Line integrals of real objects are >= 0; noise makes air rays slightly negative (about
# 1/sqrt(photons)). Anything below this is a sign error or intensities stored instead of -ln(I/I0).
_NEGATIVE_TOLERANCE_ABS = 0.5
_NEGATIVE_TOLERANCE_REL = 0.1


@dataclass
class Measurement:
    """modality: "CT" or "MR".
    data: CT float32 [n_views, n_rows, n_cols] line integrals; MR complex64 [n_frames, n_coils, n_samples].
    attrs: optional root attributes (description, patient_id, acquired, fraction, mu_water_per_mm).
    """

    modality: str
    data: np.ndarray
    grid: ImageGrid
    geometry: Union[CTGeometry, MRGeometry]
    attrs: dict = field(default_factory=dict)

    @property
    def mu_water_per_mm(self):
        v = self.attrs.get("mu_water_per_mm")
        return None if v is None else float(v)


# --------------------------------------------------------------------------------------------
# validation


def validate_measurement(m: Measurement, *, maps_optional: bool = False) -> None:
    """Check a Measurement against docs/measurement-format.md v1; raise InputError naming the field and the fix.
    maps_optional: multi-coil MR data without coil maps pass (a reader is about to estimate them)."""
    if m.modality not in ("CT", "MR"):
        raise InputError("/ modality", f"must be 'CT' or 'MR', got {m.modality!r}.",
                         "Set the root attribute modality to CT (line integrals) or MR (k-space).")
    if not isinstance(m.grid, ImageGrid):
        raise InputError("/grid", f"must be an ImageGrid, got {type(m.grid).__name__}.")
    data = np.asarray(m.data)
    if data.ndim != 3:
        layout = "[n_views, n_rows, n_cols]" if m.modality == "CT" else "[n_frames, n_coils, n_samples]"
        raise InputError("/data", f"must be 3-D {layout} for {m.modality}, got shape {list(data.shape)}.",
                         "Add singleton axes (n_rows = 1 for 2D CT, n_frames = 1 for static MR).")
    if m.modality == "CT":
        _validate_ct(data, m.grid, m.geometry)
    else:
        _validate_mr(data, m.grid, m.geometry, maps_optional)
    _validate_root_attrs(m.attrs)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(name, f"contains {bad} NaN or Inf values.",
                         "Replace them (e.g. mark missing detector pixels by interpolation) before writing.")


def _validate_ct(data, grid: ImageGrid, geometry) -> None:
    if not isinstance(geometry, CTGeometry):
        raise InputError("/geometry", f"a CT measurement needs a CT geometry (parallel/cone), got {_geom_name(geometry)}.",
                         "Write /geometry with type 'parallel' or 'cone' and /geometry/vectors.")
    if data.dtype.kind != "f":
        raise InputError("/data", f"CT data must be real floating point (float32 line integrals), got {data.dtype}.",
                         "Store -ln(I/I0) as float32; convert raw counts/intensities first.")
    n_views, n_rows, n_cols = data.shape
    if geometry.vectors.shape[0] != n_views:
        raise InputError("/geometry/vectors", f"has {geometry.vectors.shape[0]} views but /data has {n_views} "
                         f"(shape {list(data.shape)}).", "Write one 12-vector per projection view.")
    if (geometry.n_rows, geometry.n_cols) != (n_rows, n_cols):
        raise InputError("/data", f"detector is {n_rows}x{n_cols} (rows x cols) but the geometry says "
                         f"{geometry.n_rows}x{geometry.n_cols}.", "Make the geometry match the data's detector size.")
    if grid.is_2d:
        if n_rows != 1:
            raise InputError("/data", f"a 2D grid (nz = 1) needs n_rows = 1, got {n_rows}.",
                             "Use a 3D grid for multi-row data, or keep the central detector row.")
        z_parts = geometry.vectors[:, [2, 5, 8]]
        if np.any(np.abs(z_parts) > 1e-6 * max(1.0, float(np.abs(geometry.vectors).max()))):
            raise InputError("/geometry/vectors", "a 2D scan must have zero z components in the ray/source, "
                             "detector centre and u vectors.", "Build the geometry in the image plane (z = 0).")
    _check_finite(data, "/data")
    if data.size:
        lo, hi = float(data.min()), float(data.max())
        limit = -max(_NEGATIVE_TOLERANCE_ABS, _NEGATIVE_TOLERANCE_REL * max(hi, 0.0))
        if lo < limit:
            raise InputError("/data", f"has line integrals down to {lo:.3g} (max {hi:.3g}); CT data must be "
                             "-ln(I/I0) >= 0 up to noise.",
                             "Store -ln(I/I0), not ln(I/I0) or raw intensities; check the sign convention.")


def _geom_name(geometry) -> str:
    return f"{type(geometry).__name__} type {getattr(geometry, 'type', '?')!r}"


def _spatial_shape(grid: ImageGrid) -> tuple:
    """MR spatial shape per docs/measurement-format.md: (ny, nx) for 2D grids, (nz, ny, nx) for 3D."""
    return grid.shape[1:] if grid.is_2d else grid.shape


def _on_grid(shape, lead: int, grid: ImageGrid) -> bool:
    """`shape` is [lead, (nz,) ny, nx] on the grid; a 2D grid also takes an explicit nz = 1 axis
    ([lead, 1, ny, nx]), which the MR operator accepts too."""
    shape, spatial = tuple(shape), tuple(_spatial_shape(grid))
    return shape == (lead,) + spatial or (grid.is_2d and shape == (lead, 1) + spatial)


def _validate_mr(data, grid: ImageGrid, geometry, maps_optional: bool = False) -> None:
    if not isinstance(geometry, MRGeometry):
        raise InputError("/geometry", f"an MR measurement needs an MR geometry (cartesian/noncartesian), got "
                         f"{_geom_name(geometry)}.", "Write /geometry with type 'cartesian' or 'noncartesian'.")
    if data.dtype.kind != "c":
        raise InputError("/data", f"MR k-space must be complex (complex64), got {data.dtype}.",
                         "Store complex64 [n_frames, n_coils, n_samples].")
    n_frames, n_coils, n_samples = data.shape
    spatial = _spatial_shape(grid)
    dims = "[n_frames, ny, nx]" if grid.is_2d else "[n_frames, nz, ny, nx]"
    if geometry.type == "cartesian":
        mask = np.asarray(geometry.mask)
        if not _on_grid(mask.shape, n_frames, grid):
            raise InputError("/geometry/mask", f"must have shape {dims} = {[n_frames, *spatial]} (frames from /data, "
                             f"grid from /grid), got {list(mask.shape)}.",
                             "Store one bool sampling mask per frame on the image grid.")
        counts = mask.reshape(n_frames, -1).sum(axis=1)
        if np.any(counts != n_samples):
            raise InputError("/geometry/mask", f"has {sorted(set(counts.tolist()))} true entries per frame but /data "
                             f"has {n_samples} samples per frame.",
                             "data[f, c, :] must hold the k-space values at the mask's true entries (C order).")
    else:
        traj = np.asarray(geometry.trajectory)
        ndim = 2 if grid.is_2d else 3
        if traj.ndim != 3 or traj.shape != (n_frames, ndim, n_samples):
            raise InputError("/geometry/trajectory", f"must have shape [n_frames, ndim, n_samples] = "
                             f"{[n_frames, ndim, n_samples]} (ndim {ndim} for a {'2D' if grid.is_2d else '3D'} grid), "
                             f"got {list(traj.shape)}.", "Store one k-space position per sample, axes ([z,] y, x).")
        _check_finite(traj, "/geometry/trajectory")
        # float32 pi is slightly above numpy's pi; only clearly out-of-range values are errors.
        if traj.size and float(np.abs(traj).max()) > np.pi * (1 + 1e-3):
            raise InputError("/geometry/trajectory", f"values reach {float(np.abs(traj).max()):.3g} but must lie in "
                             "[-pi, pi) radians per voxel.",
                             "Scale k-space positions to rad/voxel: k_rad = 2*pi * k_cycles_per_fov / n.")
    if geometry.coil_maps is None:
        if n_coils != 1 and not maps_optional:
            raise InputError("/geometry/coil_maps", f"is missing but /data has {n_coils} coils.",
                             "Store coil sensitivities complex64 [n_coils, (nz,) ny, nx], or combine to one coil.")
    else:
        maps = np.asarray(geometry.coil_maps)
        if not _on_grid(maps.shape, n_coils, grid):
            raise InputError("/geometry/coil_maps", f"must have shape [n_coils, {'' if grid.is_2d else 'nz, '}ny, nx] = "
                             f"{[n_coils, *spatial]}, got {list(maps.shape)}.",
                             "One sensitivity map per coil of /data, on the image grid.")
        _check_finite(maps, "/geometry/coil_maps")
    if geometry.dcf is not None:
        dcf = np.asarray(geometry.dcf)
        if dcf.shape != (n_frames, n_samples):
            raise InputError("/geometry/dcf", f"must have shape [n_frames, n_samples] = {[n_frames, n_samples]}, "
                             f"got {list(dcf.shape)}.", "One density weight per sample, or leave /geometry/dcf out.")
        _check_finite(dcf, "/geometry/dcf")
        if dcf.size and float(dcf.min()) < 0:
            raise InputError("/geometry/dcf", "has negative weights.", "Density compensation weights must be >= 0.")
    if geometry.frame_times_s is not None:
        times = np.asarray(geometry.frame_times_s, dtype=np.float64)
        if times.shape != (n_frames,):
            raise InputError("/geometry/frame_times_s", f"must have shape [n_frames] = [{n_frames}], got "
                             f"{list(times.shape)}.", "Give one acquisition time (s) per frame, or leave it out.")
        _check_finite(times, "/geometry/frame_times_s")
    if geometry.spoke_times_s is not None:
        if geometry.type != "noncartesian" or not grid.is_2d:
            raise InputError("/geometry/spoke_times_s", "applies to 2D radial (non-Cartesian) spokes only.",
                             "Leave it out for Cartesian or 3D data.")
        check_spoke_times(geometry.spoke_times_s, n_frames, n_samples)
    _check_finite(data, "/data")


def _validate_root_attrs(attrs: dict) -> None:
    mu = attrs.get("mu_water_per_mm")
    if mu is not None:
        try:
            mu = float(mu)
        except (TypeError, ValueError):
            mu = float("nan")
        if not np.isfinite(mu) or mu <= 0:
            raise InputError("/ mu_water_per_mm", f"must be a positive number (1/mm), got {attrs.get('mu_water_per_mm')!r}.",
                             "Use about 0.0195 /mm for water at ~70 keV effective energy, or leave it out.")
    frac = attrs.get("fraction")
    if frac is not None:
        try:
            ok = float(frac) == int(frac)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError("/ fraction", f"must be an integer, got {frac!r}.")


# --------------------------------------------------------------------------------------------
# writing


def _attr_value(value):
    """Python/NumPy value -> something h5py stores as a plain attribute."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    arr = np.asarray(value)
    if arr.dtype.kind == "U":  # lists of strings: HDF5 variable-length UTF-8
        import h5py

        return np.array([str(v) for v in arr.ravel()], dtype=h5py.string_dtype()).reshape(arr.shape)
    if arr.dtype == object:
        raise InputError("attrs", f"attribute value {value!r} cannot be stored in HDF5.",
                         "Use strings, numbers or numeric arrays.")
    return arr if arr.ndim else arr[()]


def write_measurement(m: Measurement, path) -> Path:
    """Validate `m` and write it to `path` (HDF5, docs/measurement-format.md v1) atomically. Returns the path.
    Multi-coil MR data may come without coil maps: the reader estimates them."""
    import h5py

    validate_measurement(m, maps_optional=True)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError("output", f"folder {str(folder)!r} does not exist.", "Create it or choose another path.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["version"] = np.int64(FORMAT_VERSION)
            f.attrs["modality"] = m.modality
            for key, value in m.attrs.items():
                if key in _RESERVED_ROOT or value is None:
                    continue
                f.attrs[key] = _attr_value(value)
            g = f.create_group("grid")
            g.attrs["size"] = np.asarray(m.grid.size, dtype=np.int64)
            g.attrs["spacing_mm"] = np.asarray(m.grid.spacing, dtype=np.float64)
            g.attrs["origin_mm"] = np.asarray(m.grid.origin, dtype=np.float64)
            g.attrs["direction"] = np.asarray(m.grid.direction, dtype=np.float64)
            dtype = np.float32 if m.modality == "CT" else np.complex64
            f.create_dataset("data", data=np.asarray(m.data, dtype=dtype))
            geo = f.create_group("geometry")
            geo.attrs["type"] = m.geometry.type
            if m.modality == "CT":
                geo.create_dataset("vectors", data=np.asarray(m.geometry.vectors, dtype=np.float64))
                for key, value in m.geometry.circular.items():
                    if value is None:
                        continue
                    arr = np.asarray(value)
                    if arr.size > _MAX_ATTR_ELEMENTS:
                        geo.create_dataset(key, data=arr)
                    else:
                        geo.attrs[key] = _attr_value(value)
            else:
                dtypes = {"mask": bool, "trajectory": np.float32, "coil_maps": np.complex64, "dcf": np.float32,
                          "frame_times_s": np.float64, "spoke_times_s": np.float64}
                for key in _MR_DATASETS:
                    value = getattr(m.geometry, key)
                    if value is not None:
                        geo.create_dataset(key, data=np.asarray(value, dtype=dtypes[key]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# --------------------------------------------------------------------------------------------
# reading


def _plain(value):
    """h5py attribute -> plain Python (str, int, float, bool) or a NumPy array."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("S", "O", "U"):
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _require(group, name: str, where: str, fix: str):
    if name not in group:
        raise InputError(where, "is missing.", fix)
    return group[name]


def _read_dataset(group, name: str, where: str):
    import h5py

    obj = group[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(where, "must be a dataset, found a group.")
    return obj[()]


def _read_grid(f) -> ImageGrid:
    import h5py

    g = _require(f, "grid", "/grid", "Add a /grid group with attributes size, spacing_mm, origin_mm, direction.")
    if not isinstance(g, h5py.Group):
        raise InputError("/grid", "must be a group with attributes, found a dataset.")
    values = {}
    for key, n, default in (("size", 3, None), ("spacing_mm", 3, None), ("origin_mm", 3, None),
                            ("direction", 9, (1, 0, 0, 0, 1, 0, 0, 0, 1))):
        if key not in g.attrs:
            if default is None:
                raise InputError(f"/grid {key}", "attribute is missing.",
                                 f"Write {n} numbers ({'[nx, ny, nz]' if key == 'size' else key}).")
            values[key] = default
            continue
        arr = np.asarray(g.attrs[key]).ravel()
        if arr.size != n or arr.dtype.kind not in "iuf":
            raise InputError(f"/grid {key}", f"must be {n} numbers, got {arr.tolist()!r}.")
        values[key] = arr
    size = values["size"]
    if np.any(np.asarray(size, dtype=float) != np.round(np.asarray(size, dtype=float))):
        raise InputError("/grid size", f"must be integers [nx, ny, nz], got {list(size)}.")
    return ImageGrid(tuple(int(v) for v in size), tuple(values["spacing_mm"]), tuple(values["origin_mm"]),
                     tuple(values["direction"]))


def _read_ct_geometry(geo, data_shape) -> CTGeometry:
    if "vectors" not in geo:
        raise InputError("/geometry/vectors", "is missing.",
                         "Write float64 [n_views, 12] per-view vectors (ASTRA parallel3d_vec / cone_vec meaning).")
    vectors = np.asarray(_read_dataset(geo, "vectors", "/geometry/vectors"))
    if vectors.dtype.kind not in "iuf":
        raise InputError("/geometry/vectors", f"must be real numbers, got {vectors.dtype}.",
                         "Store float64 [n_views, 12].")
    if vectors.ndim != 2 or vectors.shape[1] != 12:
        raise InputError("/geometry/vectors", f"must have shape [n_views, 12], got {list(vectors.shape)}.",
                         "Per view: ray direction or source (3), detector centre (3), u (3), v (3).")
    circular = {}
    for key in _CIRCULAR_ATTRS:
        if key in geo.attrs:
            circular[key] = _plain(geo.attrs[key])
        elif key in geo:
            circular[key] = np.asarray(_read_dataset(geo, key, f"/geometry/{key}"))
    for key, value in geo.attrs.items():  # other readable attributes round-trip too
        if key != "type" and key not in circular:
            circular[key] = _plain(value)
    if "angles_rad" in circular:
        circular["angles_rad"] = np.atleast_1d(np.asarray(circular["angles_rad"], dtype=np.float64))
    n_rows, n_cols = (data_shape[1], data_shape[2]) if len(data_shape) == 3 else (1, 1)
    return CTGeometry(_plain(geo.attrs["type"]), vectors, n_rows, n_cols, circular)


def _read_mr_geometry(geo) -> MRGeometry:
    kwargs = {}
    for key in _MR_DATASETS:
        if key in geo:
            kwargs[key] = np.asarray(_read_dataset(geo, key, f"/geometry/{key}"))
    mask = kwargs.get("mask")
    if mask is not None and mask.dtype != bool:
        if mask.dtype.kind not in "iu" or not np.all((mask == 0) | (mask == 1)):
            raise InputError("/geometry/mask", f"must be bool (or 0/1 integers), got {mask.dtype}.",
                             "Store the sampling mask as bool.")
    traj = kwargs.get("trajectory")
    if traj is not None and traj.dtype.kind not in "iuf":
        raise InputError("/geometry/trajectory", f"must be real (float32 rad/voxel), got {traj.dtype}.",
                         "Store k-space positions as float32 [n_frames, ndim, n_samples].")
    maps = kwargs.get("coil_maps")
    if maps is not None and maps.dtype.kind not in "fc":
        raise InputError("/geometry/coil_maps", f"must be complex64, got {maps.dtype}.")
    dcf = kwargs.get("dcf")
    if dcf is not None and dcf.dtype.kind not in "iuf":
        raise InputError("/geometry/dcf", f"must be real float32, got {dcf.dtype}.")
    return MRGeometry(_plain(geo.attrs["type"]), **kwargs)


def is_v1_file(path) -> bool:
    """True for an HDF5 file whose root says format = "inrrecon-measurement" (a cheap sniff)."""
    try:
        import h5py

        with h5py.File(str(path), "r") as f:
            return _plain(f.attrs.get("format")) == FORMAT_NAME
    except (OSError, ImportError):
        return False


@contextlib.contextmanager
def _open_v1(path):
    """The open file and its modality, after the root checks (format, version, modality)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError("measurement", f"file {str(path)!r} does not exist.", "Check the path.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError("measurement", f"{str(path)!r} is not a readable HDF5 file ({exc}).",
                         "Give an INRRecon measurement file (.h5), e.g. one written by `inrrecon simulate`.") from None
    with f:
        fmt = _plain(f.attrs.get("format"))
        if fmt != FORMAT_NAME:
            raise InputError("/ format", f"must be {FORMAT_NAME!r}, got {fmt!r}.",
                             "This is not an INRRecon measurement file; convert it with an importer.")
        version = _plain(f.attrs.get("version"))
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise InputError("/ version", f"must be an integer, got {version!r}.") from None
        if version > FORMAT_VERSION:
            raise InputError("/ version", f"is {version}, newer than this INRRecon reads ({FORMAT_VERSION}).",
                             "Update INRRecon to a version that reads this file.")
        if version < 1:
            raise InputError("/ version", f"must be >= 1, got {version}.")
        modality = _plain(f.attrs.get("modality"))
        if modality not in ("CT", "MR"):
            raise InputError("/ modality", f"must be 'CT' or 'MR', got {modality!r}.",
                             "Set the root attribute modality.")
        yield f, modality


def read_v1_header(path) -> dict:
    """modality, grid (ImageGrid), geometry type and root attributes, without reading the data."""
    with _open_v1(path) as (f, modality):
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        grid = _read_grid(f)
        geometry = str(_plain(f["geometry"].attrs.get("type", ""))) if "geometry" in f else ""
    return {"modality": modality, "grid": grid, "geometry": geometry, "attrs": attrs}


def read_v1(path) -> Measurement:
    """Read and validate a measurement file (docs/measurement-format.md v1); callers use
    io.readers.read_measurement, which dispatches to this reader.

    Raises InputError naming the field (e.g. "/geometry/vectors") and the fix for anything that
    does not follow the format. CT data come back float32, MR data complex64.
    """
    with _open_v1(path) as (f, modality):
        attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in _RESERVED_ROOT}
        grid = _read_grid(f)
        if "data" not in f:
            raise InputError("/data", "is missing.",
                             "Write the measured data: CT float32 [views, rows, cols], MR complex64 [frames, coils, samples].")
        data = np.asarray(_read_dataset(f, "data", "/data"))
        if data.ndim != 3:
            validate_measurement(Measurement(modality, data, grid, None, attrs))  # raises the /data shape error
        geo = _require(f, "geometry", "/geometry", "Add a /geometry group describing the acquisition.")
        if "type" not in geo.attrs:
            raise InputError("/geometry type", "attribute is missing.",
                             "Set it to parallel/cone (CT) or cartesian/noncartesian (MR).")
        gtype = _plain(geo.attrs["type"])
        expected = ("parallel", "cone") if modality == "CT" else ("cartesian", "noncartesian")
        if gtype not in expected:
            raise InputError("/geometry type", f"must be one of {expected} for {modality}, got {gtype!r}.",
                             "Check the modality attribute and the geometry type.")
        geometry = _read_ct_geometry(geo, data.shape) if modality == "CT" else _read_mr_geometry(geo)
    m = Measurement(modality, data, grid, geometry, attrs)
    if modality == "MR" and geometry.coil_maps is None and data.shape[1] > 1:
        # Real multi-coil data come without maps: estimate them from the data (ESPIRiT), and say so.
        validate_measurement(m, maps_optional=True)
        from ..physics.mr_coil_maps import with_estimated_maps

        try:
            m, info = with_estimated_maps(m)
        except InputError as exc:
            raise InputError("/geometry/coil_maps", f"is missing for {data.shape[1]} coils and cannot be estimated from "
                             f"the data: {exc.problem}", "Store coil sensitivities complex64 [n_coils, (nz,) ny, nx], "
                             "or sample the k-space centre fully (ACS lines).") from None
        m.attrs["coil_maps_estimated"] = json.dumps(info)
    validate_measurement(m)
    if modality == "CT":
        m.data = np.ascontiguousarray(data, dtype=np.float32)
    else:
        m.data = np.ascontiguousarray(data, dtype=np.complex64)
    return m


# --------------------------------------------------------------------------------------------
# summary


def _fmt(values, digits=4) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def describe_measurement(m: Measurement) -> str:
    """A human summary (for `inrrecon info`): modality, data, geometry, grid, attributes."""
    g = m.grid
    lines = [f"modality: {m.modality}", f"data: {list(np.shape(m.data))} {np.asarray(m.data).dtype}"]
    geo = m.geometry
    if m.modality == "CT":
        circ = geo.circular
        kind = geo.type if geo.type == "parallel" else ("fan" if geo.n_rows == 1 else "cone")
        lines.append(f"geometry: {kind} beam, {geo.n_views} views, detector {geo.n_rows} x {geo.n_cols} "
                     f"(rows x cols), pixel {_fmt([np.linalg.norm(geo.vectors[0, 9:12]), np.linalg.norm(geo.vectors[0, 6:9])])} mm")
        if "angles_rad" in circ and np.size(circ["angles_rad"]) > 1:
            a = np.degrees(np.asarray(circ["angles_rad"], dtype=float))
            step = np.median(np.diff(a)) if a.size > 1 else 0.0
            lines.append(f"  angles: {a[0]:.1f} to {a[-1]:.1f} deg (arc {a[-1] - a[0] + step:.1f} deg, "
                         f"step {step:.2f} deg)")
        for key in ("source_to_isocenter_mm", "isocenter_to_detector_mm", "detector_offset_mm"):
            if key in circ:
                lines.append(f"  {key}: {float(circ[key]):.4g}")
    else:
        n_frames, n_coils, n_samples = np.shape(m.data)
        n_pix = int(np.prod(_spatial_shape(g)))
        lines.append(f"geometry: {geo.type}, {n_frames} frame(s), {n_coils} coil(s)"
                     f"{' (maps given)' if geo.coil_maps is not None else ''}, {n_samples} samples per frame")
        lines.append(f"  acceleration (pixels / samples per frame): {n_pix / max(n_samples, 1):.2f}")
        if "n_spokes" in m.attrs:
            lines.append(f"  spokes per frame: {m.attrs['n_spokes']}")
        if geo.dcf is not None:
            lines.append("  density compensation: given")
        if geo.frame_times_s is not None and n_frames > 1:
            t = np.asarray(geo.frame_times_s, dtype=float)
            lines.append(f"  frame times: {t[0]:.3g} to {t[-1]:.3g} s")
        if geo.spoke_times_s is not None:
            t = np.asarray(geo.spoke_times_s, dtype=float)
            lines.append(f"  spoke times: {t.size} spokes over {t.min():.3g} to {t.max():.3g} s "
                         "(bin them with spokes_per_frame)")
    lines.append(f"grid: {'2D' if g.is_2d else '3D'} {list(g.size)} (x, y, z) voxels, spacing {_fmt(g.spacing)} mm, "
                 f"FOV {_fmt(g.extent_mm)} mm")
    lines.append(f"  origin {_fmt(g.origin)} mm (LPS), direction {_fmt(g.direction, 3)}")
    for key, value in m.attrs.items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
