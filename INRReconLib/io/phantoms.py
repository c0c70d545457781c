"""Generated test images, for demos and tests when the real scans (shared/data) are absent.

- `shepp_logan_2d`: the modified Shepp–Logan head (Toft's contrast), values in [0, 1].
- `smooth_phantom_3d`: a thorax-like volume of soft-edged ellipsoids (body, two lungs, spine,
  heart, a lung nodule), values are relative attenuation (water = 1), so `MU_WATER_PER_MM *
  phantom` gives μ in 1/mm. Soft edges keep it band-limited, which suits INR fitting tests.
- `ct_phantom_mu` / `mr_phantom`: ready-made 2D images in physics units.
"""

from __future__ import annotations

import numpy as np

# Modified Shepp–Logan (Toft 1996): intensity, semi-axes a, b, centre x0, y0, rotation (deg),
# in the unit square [-1, 1]^2 with y pointing up in the classical figure.
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan_2d(n: int) -> np.ndarray:
    """Modified Shepp–Logan phantom, float32 [n, n] (rows = y from top, cols = x), in [0, 1]."""
    c = (np.arange(n) - (n - 1) / 2.0) / (n / 2.0)
    x, y = np.meshgrid(c, -c)  # row 0 is the top of the classical figure
    img = np.zeros((n, n))
    for value, a, b, x0, y0, phi in _SHEPP_LOGAN:
        t = np.radians(phi)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1.0] += value
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _soft_ellipsoid(z, y, x, centre, axes, edge):
    """1 inside, 0 outside, logistic edge of width ~`edge` (in the same normalised units)."""
    r = np.sqrt(((z - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
                + ((x - centre[2]) / axes[2]) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) * min(axes) / edge, -50, 50)))


def smooth_phantom_3d(shape_zyx, nodule_radius: float = 0.08, edge: float = 0.015) -> np.ndarray:
    """Thorax-like phantom, float32 [nz, ny, nx], relative attenuation (air 0, soft tissue ~1,
    lung ~0.25, bone ~1.8). Coordinates are normalised to [-1, 1] per axis; `nodule_radius`
    (normalised units) sets the lung nodule, the feature whose change longitudinal tests look for.
    A 2D slice: shape (1, ny, nx) gives the central axial slice."""
    nz, ny, nx = shape_zyx

    def axis(n):
        return np.zeros(1) if n == 1 else np.linspace(-1.0, 1.0, n)

    z, y, x = np.meshgrid(axis(nz), axis(ny), axis(nx), indexing="ij")
    body = _soft_ellipsoid(z, y, x, (0.0, 0.0, 0.0), (1.6, 0.62, 0.85), edge)
    lungs = (_soft_ellipsoid(z, y, x, (0.0, -0.05, -0.4), (1.3, 0.42, 0.3), edge)
             + _soft_ellipsoid(z, y, x, (0.0, -0.05, 0.4), (1.3, 0.42, 0.3), edge))
    heart = _soft_ellipsoid(z, y, x, (0.1, 0.1, 0.08), (0.5, 0.25, 0.22), edge)
    spine = _soft_ellipsoid(z, y, x, (0.0, 0.45, 0.0), (1.6, 0.09, 0.09), edge)
    nodule = _soft_ellipsoid(z, y, x, (0.0, -0.15, 0.45), (nodule_radius * 1.5, nodule_radius, nodule_radius), edge)
    img = 1.0 * body - 0.75 * lungs * (1.0 - heart) + 0.05 * heart + 0.8 * spine + 0.75 * nodule * lungs
    return np.clip(img, 0.0, None).astype(np.float32)


def ct_phantom_mu(n: int = 128, mu_water_per_mm: float = 0.0195) -> np.ndarray:
    """2D CT test image in μ (1/mm), float32 [1, n, n]: the central slice of `smooth_phantom_3d`."""
    return (mu_water_per_mm * smooth_phantom_3d((1, n, n))).astype(np.float32)


def mr_phantom(n: int = 128) -> np.ndarray:
    """2D MR test image, complex64 [1, n, n]: Shepp–Logan magnitude with a smooth phase ramp, as
    MR images have (field inhomogeneity), so tests do not silently assume real images."""
    mag = shepp_logan_2d(n)
    c = np.linspace(-1, 1, n)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    phase = 0.4 * xx + 0.2 * yy ** 2
    return (mag * np.exp(1j * phase)).astype(np.complex64)[None]
