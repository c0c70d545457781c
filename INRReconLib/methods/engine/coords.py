"""Coordinates in physical units and their normalisation to the field's input range.

A field sees coordinates in (-1, 1). They come from millimetres in the grid frame of the
reconstruction grid the model was fitted on (origin at its centre, axes along its index axes),
divided by the grid's largest half extent: the frame stays isotropic (a circle stays a circle for
the Fourier features) and every voxel centre lies inside (-1, 1). Time, for dynamic data, is
seconds mapped linearly from the acquisition's time span onto [-1, 1]. The frame is stored with
the model, so rendering on another grid (finer, or shifted) uses the same normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ...errors import InputError


@dataclass(frozen=True)
class CoordinateFrame:
    """centre_mm: the fitted grid's centre (LPS); direction: its 3x3 direction, row-major;
    half_extent_mm: the divisor; spatial_dims: 2 (x, y) or 3; time_span_s: (t0, t1) for a
    spatiotemporal field, else None; time_extent e: the span maps onto [-e, e] (e < 1: every
    resolution level of the field sees fewer cells along time than along space, so neighbouring
    frames share more of it)."""

    centre_mm: tuple
    direction: tuple
    half_extent_mm: float
    spatial_dims: int
    time_span_s: Optional[tuple] = None
    time_extent: float = 1.0

    @classmethod
    def of_grid(cls, grid, time_span_s=None, time_extent: float = 1.0,
                half_extent_mm: Optional[float] = None) -> "CoordinateFrame":
        """The frame of `grid`: centred on it, along its axes, divided by its largest half extent
        or by `half_extent_mm` (a population model's fixed frame: every scan in millimetres,
        whatever its field of view)."""
        if time_span_s is not None:
            t0, t1 = (float(t) for t in time_span_s)
            if not t1 > t0:
                raise InputError("time span", f"must run forward in time, got [{t0}, {t1}] s.")
            time_span_s = (t0, t1)
        half = grid_half_extent_mm(grid) if half_extent_mm is None else float(half_extent_mm)
        if not 0 < float(time_extent) <= 1:
            raise InputError("config temporal_extent", f"must be in (0, 1], got {time_extent!r}.")
        return cls(tuple(float(c) for c in grid.centre_mm), tuple(grid.direction), half,
                   2 if grid.is_2d else 3, time_span_s, float(time_extent))

    @property
    def n_dims(self) -> int:
        """The field's input dimension: space, plus one for time."""
        return self.spatial_dims + (1 if self.time_span_s is not None else 0)

    def spatial_axes(self, grid, upsample: int = 1, device="cpu") -> list:
        """Normalised coordinates of the voxel centres of `grid` along x, y (, z): 1D tensors whose
        product is the grid (fields.lattice_points). `upsample` u samples u times finer in every
        axis (in-plane only for 2D), over the same extent. `grid` may differ from the fitted one in
        size, spacing and origin (in plane, for a 2D field), not in direction or dimension."""
        u = int(upsample)
        if u < 1:
            raise InputError("upsample", f"must be a positive integer, got {upsample}.")
        if not np.allclose(grid.direction, self.direction, atol=1e-6):
            raise InputError("grid direction", "differs from the grid the field was fitted on.",
                             "Render on a grid with the same orientation (resample the result afterwards).")
        if grid.is_2d != (self.spatial_dims == 2):
            raise InputError("grid", f"is {'2D' if grid.is_2d else '3D'}, the field was fitted on a "
                             f"{self.spatial_dims}D grid.", "Render it on a grid of the same dimension.")
        # The grid's centre in the fitted frame, per index axis (mm).
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        offset = d.T @ (grid.centre_mm - np.asarray(self.centre_mm))
        if self.spatial_dims == 2 and abs(offset[2]) > 1e-3:
            raise InputError("grid", f"lies {offset[2]:.3g} mm out of the plane the 2D field was fitted in.",
                             "Render a 2D field in its own plane (same z position).")
        axes = []
        for axis, (n, s) in enumerate(zip(grid.size, grid.spacing)):
            if axis == self.spatial_dims:
                break
            m = n * u
            step = n * s / m
            mm = (torch.arange(m, dtype=torch.float64) - (m - 1) / 2.0) * step + float(offset[axis])
            axes.append((mm / self.half_extent_mm).float().to(device))
        return axes

    def time_axis(self, times_s, device="cpu") -> torch.Tensor:
        """Normalised times: t0 -> -e, t1 -> +e (e = time_extent; times outside the span extrapolate)."""
        if self.time_span_s is None:
            raise InputError("times", "this field has no time axis.", "Render it without times.")
        t0, t1 = self.time_span_s
        t = torch.as_tensor(np.asarray(times_s, dtype=np.float64).reshape(-1))
        return ((2.0 * (t - t0) / (t1 - t0) - 1.0) * self.time_extent).float().to(device)


def grid_half_extent_mm(grid) -> float:
    """Half the largest extent of `grid` (mm): the divisor of its own frame."""
    return max(n * s for n, s in zip(grid.size, grid.spacing)) / 2.0
