"""Frames of a dynamic radial acquisition: per-spoke times, binning into frames, frame times.

A continuous golden-angle acquisition is stored as it was measured: each frame's samples are its
spokes one after the other (n_samples = n_spokes × n_readout) and `/geometry/spoke_times_s`
[n_frames, n_spokes] gives each spoke's acquisition time (docs/measurement-format.md). The
temporal resolution is then chosen at reconstruction time: `bin_spokes` regroups the spokes, in
acquisition order, into frames of N spokes each. A file with one frame of all spokes and one
with 20 frames of 13 spokes bin the same way.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from ..errors import InputError

SPOKE_TIMES = "/geometry/spoke_times_s"


def check_spoke_times(times, n_frames: int, n_samples: int) -> np.ndarray:
    """Validated spoke times, float64 [n_frames, n_spokes]: finite, one row per frame, a whole
    number of samples per spoke, and non-decreasing in acquisition order (frame by frame)."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != n_frames or t.shape[1] < 1:
        raise InputError(SPOKE_TIMES, f"must have shape [n_frames, n_spokes] with n_frames = {n_frames}, "
                         f"got {list(t.shape)}.", "Give one acquisition time (s) per spoke, row by frame.")
    if n_samples % t.shape[1]:
        raise InputError(SPOKE_TIMES, f"has {t.shape[1]} spokes per frame, which does not divide the "
                         f"{n_samples} samples per frame.",
                         "Store each frame's samples spoke by spoke (n_samples = n_spokes × n_readout).")
    if not np.all(np.isfinite(t)):
        raise InputError(SPOKE_TIMES, "contains NaN or Inf.", "Give a finite time (s) for every spoke.")
    steps = np.diff(t.reshape(-1))
    if steps.size and steps.min() < 0:
        bad = int(np.argmin(steps)) + 1
        raise InputError(SPOKE_TIMES, f"goes back in time at spoke {bad} (frame {bad // t.shape[1]}): "
                         f"{t.reshape(-1)[bad - 1]:.6g} s then {t.reshape(-1)[bad]:.6g} s.",
                         "Store spokes in acquisition order with non-decreasing times.")
    return t


def frame_times(geometry) -> np.ndarray:
    """Seconds of each frame, float64 [n_frames]: the stored frame times, else the mean time of
    its spokes, else the frame index (a file without times: one second per frame)."""
    if geometry.frame_times_s is not None:
        return np.asarray(geometry.frame_times_s, dtype=np.float64).reshape(-1)
    if geometry.spoke_times_s is not None:
        return np.asarray(geometry.spoke_times_s, dtype=np.float64).mean(axis=1)
    return np.arange(geometry.n_frames, dtype=np.float64)


def check_frame_times(times) -> np.ndarray:
    """Frame times must increase strictly: a time axis that stands still or runs back is an error."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise InputError("/geometry/frame_times_s", "contains NaN or Inf.", "Give a finite time (s) per frame.")
    if t.size > 1 and np.diff(t).min() <= 0:
        bad = int(np.argmin(np.diff(t))) + 1
        raise InputError("/geometry/frame_times_s", f"does not increase at frame {bad} ({t[bad - 1]:.6g} s then "
                         f"{t[bad]:.6g} s).", "Frame times must increase strictly, in acquisition order.")
    return t


def bin_spokes(measurement, spokes_per_frame: int):
    """(measurement, info): the measurement regrouped into frames of `spokes_per_frame`
    consecutive spokes, as a new Measurement (the input is left as it is), and what was done
    (spokes_per_frame, frames, dropped_spokes: trailing spokes that fill no whole frame). Density compensation is recomputed per new frame
    (a stored one belongs to the old frames); frame times are the mean times of their spokes."""
    from .mr_sampling import density_compensation

    geo = measurement.geometry
    whole = isinstance(spokes_per_frame, numbers.Real) and not isinstance(spokes_per_frame, bool) \
        and float(spokes_per_frame).is_integer()
    n = int(spokes_per_frame) if whole else 0
    if n < 1:
        raise InputError("config spokes_per_frame", f"must be a positive integer, got {spokes_per_frame!r}.",
                         "Give the number of spokes per frame (0 keeps the file's frames).")
    if geo.type != "noncartesian":
        raise InputError("config spokes_per_frame", "regroups radial spokes; this acquisition is Cartesian.",
                         "Leave spokes_per_frame at 0 (the file's frames).")
    if not measurement.grid.is_2d:
        raise InputError("config spokes_per_frame", "regroups the spokes of 2D radial data; this grid is 3D "
                         "(a stack of stars orders its samples by partition, not by spoke).",
                         "Leave spokes_per_frame at 0 (the file's frames).")
    if geo.spoke_times_s is None:
        raise InputError(SPOKE_TIMES, "is missing: the file does not say which samples belong to which spoke "
                         "or when they were measured.",
                         "Store per-spoke times (docs/measurement-format.md), or leave spokes_per_frame at 0.")
    data = np.asarray(measurement.data)
    n_frames, n_coils, n_samples = data.shape
    times = check_spoke_times(geo.spoke_times_s, n_frames, n_samples)
    per_frame = times.shape[1]
    n_read = n_samples // per_frame
    total = n_frames * per_frame
    if n > total:
        raise InputError("config spokes_per_frame", f"is {n} but the acquisition has only {total} spokes: "
                         "every frame would have no spokes.", f"Use at most {total} spokes per frame.")
    frames = total // n
    kept = frames * n
    # spoke-major layout: [spoke, coil, readout] and [spoke, ndim, readout] in acquisition order
    spokes = data.reshape(n_frames, n_coils, per_frame, n_read).transpose(0, 2, 1, 3).reshape(total, n_coils, n_read)
    ndim = geo.trajectory.shape[1]
    traj = geo.trajectory.reshape(n_frames, ndim, per_frame, n_read).transpose(0, 2, 1, 3).reshape(total, ndim, n_read)
    new_data = spokes[:kept].reshape(frames, n, n_coils, n_read).transpose(0, 2, 1, 3).reshape(frames, n_coils, -1)
    new_traj = traj[:kept].reshape(frames, n, ndim, n_read).transpose(0, 2, 1, 3).reshape(frames, ndim, -1)
    new_times = times.reshape(-1)[:kept].reshape(frames, n)
    grid = measurement.grid
    im_size = (grid.shape[1], grid.shape[2]) if grid.is_2d else tuple(grid.shape)
    dcf = None if geo.dcf is None else density_compensation(new_traj, im_size)
    new_geo = dataclasses.replace(geo, trajectory=np.ascontiguousarray(new_traj, dtype=np.float32), dcf=dcf,
                                  spoke_times_s=new_times, frame_times_s=new_times.mean(axis=1))
    info = {"spokes_per_frame": n, "frames": frames, "dropped_spokes": total - kept}
    return dataclasses.replace(measurement, data=np.ascontiguousarray(new_data, dtype=np.complex64),
                               geometry=new_geo, attrs=dict(measurement.attrs)), info


def select_frames(measurement, frames):
    """A new Measurement with only the given frames (indices, in order) and their times: e.g.
    every second frame, to fit on those and render the others (temporal super-resolution)."""
    idx = [int(f) for f in frames]
    geo = measurement.geometry
    if not idx or min(idx) < 0 or max(idx) >= geo.n_frames:
        raise InputError("frames", f"must be indices in [0, {geo.n_frames}), got {idx}.")

    def pick(a):
        return None if a is None else np.ascontiguousarray(np.asarray(a)[idx])
    new_geo = dataclasses.replace(geo, mask=pick(geo.mask), trajectory=pick(geo.trajectory), dcf=pick(geo.dcf),
                                  spoke_times_s=pick(geo.spoke_times_s), frame_times_s=frame_times(geo)[idx])
    return dataclasses.replace(measurement, data=pick(measurement.data), geometry=new_geo,
                               attrs=dict(measurement.attrs))
