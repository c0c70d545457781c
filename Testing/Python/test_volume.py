"""Volumes on disk, LPS/RAS, HU/μ and resampling."""

import numpy as np
import pytest

from INRReconLib.errors import InputError
from INRReconLib.io.volume import (MU_WATER_PER_MM, hu_to_mu, ijk_to_ras_matrix, lps_to_ras, mu_to_hu, ras_to_lps,
                                   read_volume, resample_to_grid, write_volume)
from INRReconLib.physics.grid import ImageGrid

# 30 degrees about z, a non-trivial direction
C, S = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROTATED = (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("name", ["v.nrrd", "v.nii.gz", "v.mha", "v.nii"])
def test_volume_round_trip_keeps_geometry(tmp_path, name):
    grid = ImageGrid((7, 5, 3), (0.7, 1.1, 2.5), (-10.0, 20.5, 3.25), ROTATED)
    arr = np.random.default_rng(0).random(grid.shape).astype(np.float32)
    write_volume(tmp_path / name, arr, grid)
    back, g = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back, arr)
    assert g.size == grid.size
    np.testing.assert_allclose(g.spacing, grid.spacing, rtol=1e-6)
    np.testing.assert_allclose(g.origin, grid.origin, atol=1e-5)
    np.testing.assert_allclose(g.direction, grid.direction, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_2d_volume_and_errors(tmp_path):
    grid = ImageGrid((6, 4, 1), (1.0, 2.0, 3.0))
    write_volume(tmp_path / "s.nrrd", np.ones((4, 6)), grid)
    back, g = read_volume(tmp_path / "s.nrrd")
    assert back.shape == (1, 4, 6) and g.is_2d
    with pytest.raises(InputError, match="does not match the grid"):
        write_volume(tmp_path / "t.nrrd", np.ones((4, 5)), grid)
    with pytest.raises(InputError, match="complex"):
        write_volume(tmp_path / "t.nrrd", np.ones((1, 4, 6), np.complex64), grid)
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.nrrd")


def test_ijk_to_ras_on_a_known_point():
    grid = ImageGrid((10, 10, 10), (2.0, 3.0, 4.0), (5.0, -7.0, 11.0), ROTATED)
    m = ijk_to_ras_matrix(grid)
    # voxel (i, j, k) = (1, 2, 3): LPS = origin + D (1*2, 2*3, 3*4)
    lps = np.array([5.0, -7.0, 11.0]) + np.array(ROTATED).reshape(3, 3) @ np.array([2.0, 6.0, 12.0])
    ras = m @ np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]])
    np.testing.assert_allclose(lps_to_ras(lps), ras[:3])
    np.testing.assert_allclose(ras_to_lps(lps_to_ras([[1, 2, 3], [4, 5, 6]])), [[1, 2, 3], [4, 5, 6]])
    # identity grid: Slicer shows voxel 0 of an LPS-origin (10, 20, 30) image at RAS (-10, -20, 30)
    m0 = ijk_to_ras_matrix(ImageGrid((2, 2, 2), (1, 1, 1), (10, 20, 30)))
    np.testing.assert_allclose(m0[:3, 3], [-10, -20, 30])
    np.testing.assert_allclose(m0[:3, :3], np.diag([-1, -1, 1]))


def test_hu_mu():
    # water's linear attenuation at CT effective energies (NIST XCOM, density 1 g/cm^3):
    # 0.0206 /mm at 60 keV, 0.0184 /mm at 80 keV
    assert 0.0184 <= MU_WATER_PER_MM <= 0.0206
    np.testing.assert_allclose(mu_to_hu([0.0, MU_WATER_PER_MM]), [-1000.0, 0.0])
    np.testing.assert_allclose(hu_to_mu([-1000, 0, 1000]), [0.0, 0.0195, 0.039])
    np.testing.assert_allclose(mu_to_hu(hu_to_mu([-1000.0, -500.0, 40.0, 1500.0], 0.02), 0.02),
                               [-1000, -500, 40, 1500], atol=1e-9)


def linear_image(grid):
    """f = 0.01 x_LPS + 0.02 y_LPS + 1: reproduced exactly by linear interpolation."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    d = np.asarray(grid.direction).reshape(3, 3)
    idx = np.stack([i * grid.spacing[0], j * grid.spacing[1], k * grid.spacing[2]], -1)
    lps = idx @ d.T + np.asarray(grid.origin)
    return (0.01 * lps[..., 0] + 0.02 * lps[..., 1] + 1.0).astype(np.float32), lps


def test_resample_shifted_and_rescaled_grid():
    src = ImageGrid((60, 60, 6), (1.0, 1.0, 2.0), (-30.0, -30.0, -5.0))
    dst = ImageGrid((16, 12, 3), (1.7, 2.3, 3.0), (-9.3, -8.1, -2.0), ROTATED)
    f, _ = linear_image(src)
    out = resample_to_grid(f, src, dst, default=-1.0)
    expected, _ = linear_image(dst)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # a dst grid partly outside gets the default there
    far = ImageGrid((10, 10, 1), (1.0, 1.0, 1.0), (25.0, 0.0, 0.0))
    out = resample_to_grid(f, src, far, default=-7.0)
    assert np.all(out[..., 5:] == -7.0) and np.all(out[..., :4] > 0)


def test_resample_2d_slices_ignore_z():
    src = ImageGrid((30, 30, 1), (1.0, 1.0, 2.0), (-15.0, -15.0, 40.0))
    dst = ImageGrid((10, 10, 1), (2.0, 2.0, 2.0), (-9.0, -9.0, 36.0))
    f, _ = linear_image(src)
    expected, _ = linear_image(dst)
    np.testing.assert_allclose(resample_to_grid(f, src, dst), expected, atol=1e-5)
