"""A small sparse-view CT case with a longitudinal prior (the lesion grew), for the INR tests."""

import numpy as np
import torch

from INRReconLib.io.measurement import Measurement
from INRReconLib.physics import ImageGrid, operator_for, parallel_geometry
from INRReconLib.methods.metrics import psnr  # noqa: F401 (the tests import it from here)


def thorax_phantom(n: int, lesion_radius: float) -> np.ndarray:
    """Ellipse body (water μ 0.02/mm), two lungs, a bone, a soft-tissue lesion in the right lung.
    Shape (1, n, n); lesion_radius in units of the half width."""
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    img = np.zeros((n, n), np.float32)
    img[(x / 0.85) ** 2 + (y / 0.7) ** 2 < 1] = 0.020
    img[((x + 0.35) / 0.25) ** 2 + (y / 0.4) ** 2 < 1] = 0.005
    img[((x - 0.35) / 0.25) ** 2 + (y / 0.4) ** 2 < 1] = 0.005
    img[(x ** 2 + (y + 0.5) ** 2) < 0.08 ** 2] = 0.04
    img[((x + 0.35) ** 2 + (y - 0.1) ** 2) < lesion_radius ** 2] = 0.021
    return img[None]


def sparse_ct_case(n=64, views=15, spacing=2.0):
    """(measurement, truth, prior): parallel beam over 180°, the prior's lesion half as large."""
    grid = ImageGrid.centred((1, n, n), (spacing,) * 3)
    geo = parallel_geometry(np.linspace(0, np.pi, views, endpoint=False), int(n * 1.5), spacing,
                            row_spacing_mm=spacing)
    truth, prior = thorax_phantom(n, 0.12), thorax_phantom(n, 0.06)
    op = operator_for(Measurement("CT", np.zeros(geo.sinogram_shape, np.float32), grid, geo))
    sino = op.forward(torch.as_tensor(truth)).numpy().astype(np.float32)
    return Measurement("CT", sino, grid, geo), truth, prior


def sparse_cone_case(n=24, nz=12, views=12, spacing=2.0):
    """(measurement, truth, prior) in 3D: the thorax phantom extruded along z (ends cut off) with a
    spherical lesion, circular cone beam over 360°; the prior's lesion half as large."""
    from INRReconLib.physics import cone_geometry

    z = np.linspace(-1, 1, nz)[:, None, None]
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]

    def volume(lesion_radius):
        vol = np.repeat(thorax_phantom(n, 0.0), nz, axis=0) * (np.abs(z) < 0.8)
        ball = (x + 0.35) ** 2 + (y - 0.1) ** 2 + (0.5 * z) ** 2 < lesion_radius ** 2
        return np.where(ball, 0.021, vol).astype(np.float32)

    grid = ImageGrid.centred((nz, n, n), (spacing,) * 3)
    geo = cone_geometry(np.linspace(0, 2 * np.pi, views, endpoint=False), int(n * 2), spacing, 200.0, 200.0,
                        n_rows=int(nz * 2), row_spacing_mm=spacing)
    truth, prior = volume(0.25), volume(0.12)
    op = operator_for(Measurement("CT", np.zeros(geo.sinogram_shape, np.float32), grid, geo))
    sino = op.forward(torch.as_tensor(truth)).numpy().astype(np.float32)
    return Measurement("CT", sino, grid, geo), truth, prior
