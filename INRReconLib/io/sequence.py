"""A series of frames as one 4D NRRD file that 3D Slicer opens as a volume Sequence (`.seq.nrrd`).

Layout, as Slicer's vtkMRMLVolumeSequenceStorageNode reads it in 5.8 and 5.10: four axes with the
frame ("list") axis first — `kinds: list domain domain domain`, `space directions: none (…) (…)
(…)` — a 2D image as one slice (Slicer refuses 3-axis sequences), and the frame times in the
key/value fields `axis 0 index type:=numeric` and `axis 0 index values:=t0 t1 …` with the label
and unit of axis 0 ("time", "s"). Slicer merges numeric index values closer than 0.001, so times
spaced more finely are written in milliseconds. Written atomically (temporary file, rename).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..physics.grid import ImageGrid
from .atomic import atomic_target

MAGIC = b"NRRD0004"


def _vector(v) -> str:
    return "(" + ",".join(f"{float(c):.17g}" for c in v) + ")"


def time_index(times_s) -> tuple:
    """(unit, values) for a Sequence's numeric index: seconds, or milliseconds when frames lie
    closer than 2 ms (Slicer merges index values closer than 0.001)."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if times.size > 1 and np.min(np.abs(np.diff(times))) < 2e-3:
        return "ms", times * 1e3
    return "s", times


def write_sequence(path, frames, grid: ImageGrid, times_s) -> Path:
    """frames [n_frames, nz, ny, nx] (real; magnitude for MR) on `grid`, one time (s) per frame."""
    frames = np.asarray(frames)
    if np.iscomplexobj(frames):
        raise InputError("frames", "are complex.", "Write the magnitude (np.abs) or the real part.")
    frames = frames.reshape((-1,) + tuple(grid.shape)).astype(np.float32)
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if times.shape != (frames.shape[0],) or not np.all(np.isfinite(times)):
        raise InputError("frame times", f"need one finite time per frame ({frames.shape[0]}), got {times.shape[0]}.")
    unit, values = time_index(times)
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    axes = [direction[:, i] * grid.spacing[i] for i in range(3)]  # x, y, z index axes in LPS mm
    nx, ny, nz = grid.size
    header = "\n".join([
        MAGIC.decode(),
        "type: float",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {frames.shape[0]} {nx} {ny} {nz}",
        "space directions: none " + " ".join(_vector(a) for a in axes),
        "kinds: list domain domain domain",
        'labels: "time" "" "" ""',
        f'units: "{unit}" "" "" ""',
        "endian: little",
        "encoding: gzip",
        f"space origin: {_vector(grid.origin)}",
        "axis 0 index type:=numeric",
        "axis 0 index values:=" + " ".join(f"{v:.9g}" for v in values),
        "DataNodeClassName:=vtkMRMLScalarVolumeNode",
    ]) + "\n\n"
    # NRRD's first axis is the fastest: frames vary fastest, then x, y, z.
    payload = gzip.compress(np.ascontiguousarray(np.moveaxis(frames, 0, -1)).astype("<f4").tobytes(), 6)
    path = Path(path)
    with atomic_target(path) as tmp:
        tmp.write_bytes(header.encode("ascii") + payload)
    return path


def read_sequence(path):
    """(frames float32 [n_frames, nz, ny, nx], grid, times_s) of a file written by write_sequence
    (list axis first, float, gzip or raw)."""
    raw = Path(path).read_bytes()
    end = raw.find(b"\n\n")
    if not raw.startswith(b"NRRD") or end < 0:
        raise InputError("sequence", f"{path} is not an NRRD file.")
    fields, keyvals = {}, {}
    for line in raw[:end].decode("ascii").splitlines()[1:]:
        if line.startswith("#") or not line.strip():
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            keyvals[key.strip()] = value.strip()
        else:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    sizes = [int(v) for v in fields["sizes"].split()]
    if len(sizes) != 4 or fields.get("kinds", "").split()[0] != "list":
        raise InputError("sequence", f"{path}: expected 4 axes with the list axis first, got sizes {sizes}.")
    data = raw[end + 2:]
    if fields.get("encoding") == "gzip":
        data = gzip.decompress(data)
    frames = np.frombuffer(data, dtype="<f4").reshape(sizes[::-1])  # [nz, ny, nx, F]
    frames = np.ascontiguousarray(np.moveaxis(frames, -1, 0))
    vectors = [np.array([float(c) for c in v.strip("()").split(",")])
               for v in fields["space directions"].replace("none", "").split()]
    spacing = tuple(float(np.linalg.norm(v)) for v in vectors)
    direction = tuple(np.stack([v / s for v, s in zip(vectors, spacing)], axis=1).reshape(-1))
    origin = tuple(float(c) for c in fields["space origin"].strip("()").split(","))
    grid = ImageGrid(tuple(sizes[1:]), spacing, origin, direction)
    times = np.array([float(v) for v in keyvals["axis 0 index values"].split()])
    if fields.get("units", "").split()[0].strip('"') == "ms":
        times = times / 1e3
    return frames, grid, times
