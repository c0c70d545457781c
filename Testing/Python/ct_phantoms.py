"""Small CT phantoms with analytic line integrals, for the projector and reconstruction tests.

Gaussian blobs are smooth (FBP accuracy tests); disks are piecewise constant (TV tests). The line
integrals are computed from the geometry's vectors directly, independently of any projector.
"""

from __future__ import annotations

import numpy as np

from INRReconLib.physics.ct_geometry import CTGeometry
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.methods.metrics import psnr  # noqa: F401 (the tests import it from here)

# (centre x, y, z mm, sigma or radius mm, value μ 1/mm); sized for grids of about 60 mm.
BLOBS = [((0.0, 0.0, 0.0), 12.0, 0.02), ((8.0, -5.0, 2.0), 4.0, 0.015), ((-9.0, 6.0, -3.0), 5.0, -0.008),
         ((4.0, 10.0, 1.0), 3.0, 0.01)]
DISKS = [((0.0, 0.0, 0.0), 26.0, 0.02), ((9.0, -6.0, 0.0), 7.0, 0.01), ((-10.0, 5.0, 0.0), 5.0, -0.01),
         ((3.0, 14.0, 0.0), 3.0, 0.015)]


def ray_lines(geometry: CTGeometry):
    """Origin and unit direction [n_views, n_rows, n_cols, 3] of the ray through each pixel centre."""
    vec = geometry.vectors
    cols = np.arange(geometry.n_cols) - geometry.n_cols / 2 + 0.5
    rows = np.arange(geometry.n_rows) - geometry.n_rows / 2 + 0.5
    pix = (vec[:, None, None, 3:6] + cols[None, None, :, None] * vec[:, None, None, 6:9]
           + rows[None, :, None, None] * vec[:, None, None, 9:12])
    if geometry.type == "cone":
        d = pix - vec[:, None, None, 0:3]
        return np.broadcast_to(vec[:, None, None, 0:3], pix.shape), d / np.linalg.norm(d, axis=-1, keepdims=True)
    return pix, np.broadcast_to(vec[:, None, None, 0:3], pix.shape)


def _distance_to_lines(origin, direction, centre, planar):
    rel = np.asarray(centre) - origin
    if planar:
        rel = rel.copy()
        rel[..., 2] = 0.0
    along = (rel * direction).sum(-1, keepdims=True)
    return np.linalg.norm(rel - along * direction, axis=-1)


def blob_image(grid: ImageGrid, blobs=BLOBS) -> np.ndarray:
    """Sum of isotropic Gaussians (value at the centre, sigma mm); 2D grids use only x, y."""
    x, y, z = grid.voxel_centres()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    img = np.zeros(grid.shape)
    for (cx, cy, cz), s, a in blobs:
        dz2 = 0.0 if grid.is_2d else (zz - cz) ** 2
        img += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2 + dz2) / (2 * s * s))
    return img.astype(np.float32)


def blob_sinogram(geometry: CTGeometry, planar: bool, blobs=BLOBS) -> np.ndarray:
    """Exact line integrals of `blob_image` (untruncated Gaussians); planar = 2D (ignore z)."""
    origin, direction = ray_lines(geometry)
    sino = np.zeros(geometry.sinogram_shape)
    for centre, s, a in blobs:
        c = (centre[0], centre[1], 0.0) if planar else centre
        rho = _distance_to_lines(origin, direction, c, planar)
        sino += a * np.sqrt(2 * np.pi) * s * np.exp(-rho ** 2 / (2 * s * s))
    return sino.astype(np.float32)


def disk_image(grid: ImageGrid, disks=DISKS, supersample: int = 4) -> np.ndarray:
    """2D disks (value added inside radius), area-averaged over each pixel."""
    x, y, _ = grid.voxel_centres()
    sx, sy = grid.spacing[0], grid.spacing[1]
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    img = np.zeros((grid.shape[1], grid.shape[2]))
    for ox in off:
        for oy in off:
            yy, xx = np.meshgrid(y + oy * sy, x + ox * sx, indexing="ij")
            for (cx, cy, _), r, a in disks:
                img += a * (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r)
    return (img / supersample ** 2)[None].astype(np.float32)


def disk_sinogram(geometry: CTGeometry, disks=DISKS) -> np.ndarray:
    """Exact line integrals of the disks (chord length times value)."""
    origin, direction = ray_lines(geometry)
    sino = np.zeros(geometry.sinogram_shape)
    for (cx, cy, _), r, a in disks:
        rho = _distance_to_lines(origin, direction, (cx, cy, 0.0), True)
        sino += a * 2 * np.sqrt(np.clip(r * r - rho ** 2, 0, None))
    return sino.astype(np.float32)




def rel_rms(a, b) -> float:
    """RMS of (a - b) relative to the RMS of b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))
