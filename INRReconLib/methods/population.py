"""What DisINR's pre-training and adaptation share: the population's coordinate frame and the
field built from a model description.

The frame is physical: every scan's coordinates are millimetres from the centre of its own image
grid, along its grid axes, divided by one half extent fixed for the whole model. A scan with
another field of view or voxel size therefore sees the shared encoder at the same anatomical
scale, not stretched to fill (-1, 1).
"""

from __future__ import annotations

import math

from ..errors import InputError
from ..fields import build_field
from .engine.coords import CoordinateFrame, grid_half_extent_mm

# The model's frame reaches this far beyond the largest scan of the cohort, so a new scan a little
# larger than any of them still lies inside the encoders' (-1, 1) (outside, coordinates clamp).
FRAME_MARGIN = 1.1


def frame_record(grids) -> dict:
    """The model's coordinate frame for a cohort on these ImageGrids (model.json "frame")."""
    dims = {2 if g.is_2d else 3 for g in grids}
    if len(dims) != 1:
        raise InputError("cohort", "mixes 2D slices and 3D volumes.", "Pre-train on scans of one kind.")
    half = FRAME_MARGIN * max(grid_half_extent_mm(g) for g in grids)
    return {"units": "mm", "origin": "the centre of each scan's image grid", "axes": "each scan's grid axes",
            "half_extent_mm": round(half, 6), "spatial_dims": dims.pop(),
            "finest_spacing_mm": min(min(g.spacing[:2] if g.is_2d else g.spacing) for g in grids)}


def resolution_shape(frame: dict) -> tuple:
    """The grid shape that per_level_scale "auto" resolves against: the frame's extent in voxels of
    the cohort's finest spacing (the finest hash level then has one vertex per such voxel)."""
    n = int(math.ceil(2.0 * frame["half_extent_mm"] / float(frame["finest_spacing_mm"])))
    return (n,) * frame["spatial_dims"]


def scan_frame(frame: dict, grid) -> CoordinateFrame:
    """Where `grid` sits in the model's frame; a grid of another dimension is refused."""
    dims = 2 if grid.is_2d else 3
    if dims != int(frame["spatial_dims"]):
        raise InputError("model", f"was pre-trained on {frame['spatial_dims']}D scans; this measurement is {dims}D.",
                         f"Use a model pre-trained on {dims}D scans.")
    return CoordinateFrame.of_grid(grid, half_extent_mm=float(frame["half_extent_mm"]))


def outside_frame(frame: dict, grid) -> bool:
    """True when part of `grid` lies outside the model's frame (its coordinates would clamp)."""
    return grid_half_extent_mm(grid) > float(frame["half_extent_mm"]) * (1 + 1e-6)


def population_field(field_config: dict, frame: dict, modality: str, device, subject_ids=(0,)):
    """The disentangled field of a model description, with a fresh subject encoder for each of
    `subject_ids` (cohort indices, which seed them)."""
    network = field_config.get("network", {})
    if network.get("otype") != "Disentangled":
        raise InputError("config field.network.otype", f"is {network.get('otype')!r}; DisINR needs 'Disentangled'.",
                         "Use a disinr preset (disinr-ct, disinr-ct-fast, disinr-mr, disinr-mr-fast).")
    return build_field(field_config, int(frame["spatial_dims"]), 2 if modality == "MR" else 1, device,
                       subject_ids=subject_ids)
