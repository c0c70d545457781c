"""CT acquisition geometry as per-view vectors (docs/measurement-format.md `/geometry`, ASTRA `*_vec` meaning).

All positions are in the *grid frame*: millimetres along the image grid's index axes (x with i,
y with j, z with k), origin at the grid centre. The vectors are authoritative; the circular-scan
parameters kept next to them are for people and for tools (FDK, RTK) that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

GEOMETRY_TYPES = ("parallel", "cone")


@dataclass
class CTGeometry:
    """type: "parallel" or "cone" (a 2D cone is a fan beam).

    vectors: float64 [n_views, 12] per view:
      parallel: ray direction (unit, 3), detector centre (3), u (3), v (3)
      cone:     source position (3), detector centre (3), u (3), v (3)
    u steps one detector column, v one detector row; their lengths are the pixel sizes (mm).
    Pixel (row r, col c) centre = centre + (c - n_cols/2 + 0.5) u + (r - n_rows/2 + 0.5) v.
    """

    type: str
    vectors: np.ndarray
    n_rows: int
    n_cols: int
    circular: dict = field(default_factory=dict)  # angles_rad, source_to_isocenter_mm, ...

    def __post_init__(self):
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float64)
        if self.type not in GEOMETRY_TYPES:
            raise InputError("/geometry type", f"must be one of {GEOMETRY_TYPES}, got {self.type!r}.")
        if self.vectors.ndim != 2 or self.vectors.shape[1] != 12 or self.vectors.shape[0] < 1:
            raise InputError("/geometry/vectors", f"must have shape [n_views, 12], got {list(self.vectors.shape)}.")
        if not np.all(np.isfinite(self.vectors)):
            raise InputError("/geometry/vectors", "contains NaN or Inf.", "Rewrite the geometry with finite numbers.")
        if int(self.n_rows) < 1 or int(self.n_cols) < 1:
            raise InputError("/data", f"detector must have at least 1 row and 1 column, got {self.n_rows}x{self.n_cols}.")
        self.n_rows, self.n_cols = int(self.n_rows), int(self.n_cols)
        for name, sl in (("u", slice(6, 9)), ("v", slice(9, 12))):
            if np.any(np.linalg.norm(self.vectors[:, sl], axis=1) <= 0):
                raise InputError("/geometry/vectors", f"detector vector {name} has zero length in some view.",
                                 "u and v must have the detector pixel sizes (mm) as lengths.")
        if self.type == "parallel":
            norms = np.linalg.norm(self.vectors[:, 0:3], axis=1)
            if np.any(np.abs(norms - 1.0) > 1e-3):
                raise InputError("/geometry/vectors", "parallel-beam ray directions must be unit vectors.")

    @property
    def n_views(self) -> int:
        return self.vectors.shape[0]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        return (self.n_views, self.n_rows, self.n_cols)

    def subset(self, views) -> "CTGeometry":
        """The geometry restricted to some views (ordered subsets, mini-batches)."""
        views = np.asarray(views)
        circ = dict(self.circular)
        if "angles_rad" in circ:
            circ["angles_rad"] = np.asarray(circ["angles_rad"])[views]
        return CTGeometry(self.type, self.vectors[views], self.n_rows, self.n_cols, circ)


def _rotation_frame(angles):
    """Unit vectors of a gantry rotating about +z: e_ray points from source to detector."""
    a = np.asarray(angles, dtype=np.float64)
    e_ray = np.stack([np.sin(a), -np.cos(a), np.zeros_like(a)], axis=1)
    e_u = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)
    return e_ray, e_u


def parallel_geometry(angles_rad, n_cols, col_spacing_mm, n_rows=1, row_spacing_mm=1.0,
                      detector_offset_mm=0.0) -> CTGeometry:
    """Parallel beam rotating about z. For 2D (n_rows == 1) pass the grid's z spacing as
    `row_spacing_mm` (docs/measurement-format.md: v = (0, 0, sz))."""
    e_ray, e_u = _rotation_frame(angles_rad)
    n = len(e_ray)
    vec = np.zeros((n, 12))
    vec[:, 0:3] = e_ray
    vec[:, 3:6] = e_u * detector_offset_mm
    vec[:, 6:9] = e_u * col_spacing_mm
    vec[:, 11] = row_spacing_mm
    circ = {"angles_rad": np.asarray(angles_rad, dtype=np.float64), "detector_offset_mm": float(detector_offset_mm)}
    return CTGeometry("parallel", vec, n_rows, n_cols, circ)


def cone_geometry(angles_rad, n_cols, col_spacing_mm, source_to_isocenter_mm, isocenter_to_detector_mm,
                  n_rows=1, row_spacing_mm=1.0, detector_offset_mm=0.0) -> CTGeometry:
    """Circular cone beam (fan beam when n_rows == 1) rotating about z, flat detector.

    The source sits at distance SID on the side opposite the detector; `detector_offset_mm`
    shifts the detector along u (half-fan / offset-detector scans)."""
    e_ray, e_u = _rotation_frame(angles_rad)
    n = len(e_ray)
    vec = np.zeros((n, 12))
    vec[:, 0:3] = -e_ray * source_to_isocenter_mm
    vec[:, 3:6] = e_ray * isocenter_to_detector_mm + e_u * detector_offset_mm
    vec[:, 6:9] = e_u * col_spacing_mm
    vec[:, 11] = row_spacing_mm
    circ = {"angles_rad": np.asarray(angles_rad, dtype=np.float64),
            "source_to_isocenter_mm": float(source_to_isocenter_mm),
            "isocenter_to_detector_mm": float(isocenter_to_detector_mm),
            "detector_offset_mm": float(detector_offset_mm)}
    return CTGeometry("cone", vec, n_rows, n_cols, circ)


def fan_geometry(angles_rad, n_cols, col_spacing_mm, source_to_isocenter_mm, isocenter_to_detector_mm,
                 slice_thickness_mm=1.0, detector_offset_mm=0.0) -> CTGeometry:
    """2D fan beam: a one-row cone beam."""
    return cone_geometry(angles_rad, n_cols, col_spacing_mm, source_to_isocenter_mm, isocenter_to_detector_mm,
                         n_rows=1, row_spacing_mm=slice_thickness_mm, detector_offset_mm=detector_offset_mm)
