"""Simulated CT and MR measurements: shapes, physics, noise statistics, reproducibility."""

from pathlib import Path

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import validate_measurement, write_measurement
from INRReconLib.io.readers import read_measurement
from INRReconLib.io.phantoms import ct_phantom_mu, mr_phantom, shepp_logan_2d, smooth_phantom_3d
from INRReconLib.io.volume import hu_to_mu, read_volume
from INRReconLib.physics.ct_projector import CTProjector
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_operator import MROperator
from INRReconLib.simulate import simulate_ct, simulate_mr

torch.set_num_threads(2)
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def blob_image(grid, centre_xy=(0.0, 0.0), sigma=12.0, mu=0.02):
    """Gaussian blob in the grid frame (mm); its parallel line integral is mu sigma sqrt(2 pi) at the peak."""
    xs, ys, _ = grid.voxel_centres()
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    r2 = (xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2
    return (mu * np.exp(-r2 / (2 * sigma ** 2))).astype(np.float32)[None]


GRID2D = ImageGrid.centred((1, 64, 64), (2.0, 2.0, 2.0))


def test_parallel_physics_and_defaults():
    img = blob_image(GRID2D, centre_xy=(10.0, 0.0))
    m = simulate_ct(img, GRID2D, geometry="parallel", n_views=8)
    g = m.geometry
    assert m.data.shape == (8, 1, g.n_cols) and m.data.dtype == np.float32
    assert g.n_cols * 2.0 >= np.hypot(128, 128) and g.n_cols % 2 == 0  # covers the FOV diagonal
    np.testing.assert_allclose(np.degrees(g.circular["angles_rad"][[0, -1]]), [0.0, 157.5])
    peak = 0.02 * 12.0 * np.sqrt(2 * np.pi)
    assert m.data.max() == pytest.approx(peak, rel=5e-3)
    col = np.argmax(m.data[0, 0])  # view 0: detector u = +x
    assert (col - g.n_cols / 2 + 0.5) * 2.0 == pytest.approx(10.0, abs=1.0)
    assert m.attrs["mu_water_per_mm"] == pytest.approx(0.0195) and "parallel-beam" in m.attrs["description"]


def test_upsample_one_is_the_operator_and_two_is_close_but_not_equal():
    img = ct_phantom_mu(64)
    exact = simulate_ct(img, GRID2D, geometry="fan", n_views=10, upsample=1)
    op = CTProjector(exact.geometry, GRID2D)
    np.testing.assert_allclose(exact.data, op.forward(torch.as_tensor(img)).numpy(), rtol=1e-6, atol=1e-6)
    fine = simulate_ct(img, GRID2D, geometry="fan", n_views=10, upsample=2)
    rel = np.linalg.norm(fine.data - exact.data) / np.linalg.norm(exact.data)
    assert 1e-4 < rel < 0.03, rel
    mag = (500 + 500) / 500
    assert np.linalg.norm(fine.geometry.vectors[0, 6:9]) == pytest.approx(2.0 * mag)


def test_poisson_noise_statistics_and_seed():
    img = blob_image(GRID2D)
    clean = simulate_ct(img, GRID2D, n_views=40, upsample=1)
    a = simulate_ct(img, GRID2D, n_views=40, upsample=1, photons=2e4, seed=3)
    b = simulate_ct(img, GRID2D, n_views=40, upsample=1, photons=2e4, seed=3)
    c = simulate_ct(img, GRID2D, n_views=40, upsample=1, photons=2e4, seed=4)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    z = (a.data - clean.data) / np.sqrt(np.exp(clean.data) / 2e4)  # var(-ln(N/I0)) ~ 1/(I0 e^-p)
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    assert "Poisson" in a.attrs["description"]


def test_recon_grid_honours_centre_offset():
    fine = ImageGrid.centred((1, 128, 128), (1.0, 1.0, 2.0))
    blob_lps = (10.0, -6.0)
    img = blob_image(fine, centre_xy=blob_lps, sigma=8.0)
    # reconstruction grid centred at LPS (5, 0): the blob sits at (5, -6) in its frame
    coarse = ImageGrid((48, 48, 1), (2.0, 2.0, 2.0), (5.0 - 47.0, -47.0, 0.0))
    m = simulate_ct(img, fine, geometry="fan", n_views=4, recon_grid=coarse, source_to_isocenter_mm=300)
    assert m.grid == coarse
    ref = simulate_ct(blob_image(coarse, centre_xy=(5.0, -6.0), sigma=8.0), coarse, geometry="fan", n_views=4,
                      upsample=1, source_to_isocenter_mm=300)
    assert np.linalg.norm(m.data - ref.data) / np.linalg.norm(ref.data) < 0.01
    with pytest.raises(InputError, match="beyond the source"):
        big = ImageGrid.centred((1, 100, 100), (2.0, 2.0, 2.0))
        simulate_ct(img, fine, n_views=4, recon_grid=big)


def test_cone_3d_and_round_trip(tmp_path):
    grid = ImageGrid.centred((8, 24, 24), (4.0, 4.0, 4.0))
    vol = 0.0195 * smooth_phantom_3d(grid.shape)
    m = simulate_ct(vol, grid, geometry="cone", n_views=6, source_to_isocenter_mm=400,
                    isocenter_to_detector_mm=200)
    g = m.geometry
    assert g.type == "cone" and m.data.shape == (6, g.n_rows, g.n_cols) and g.n_rows > 1
    mag = 600 / 400
    assert np.linalg.norm(g.vectors[0, 9:12]) == pytest.approx(4.0 * mag)
    assert g.n_rows * 4.0 * mag >= 32 * mag  # rows cover the slab (with divergence)
    assert m.data[:, 0].max() < 0.1 * m.data.max()  # edge rows only graze the slab corners
    back = read_measurement(write_measurement(m, tmp_path / "cone.h5"))
    assert back.geometry.circular["source_to_isocenter_mm"] == 400
    np.testing.assert_array_equal(back.data, m.data)


def test_ct_input_errors():
    with pytest.raises(InputError, match="hu_to_mu"):
        simulate_ct(np.full(GRID2D.shape, 40.0), GRID2D)
    with pytest.raises(InputError, match="cone"):
        simulate_ct(np.zeros((4, 8, 8)), ImageGrid.centred((4, 8, 8), (1, 1, 1)), geometry="fan")
    with pytest.raises(InputError, match="inside the image field of view"):
        simulate_ct(np.zeros(GRID2D.shape), GRID2D, geometry="fan", source_to_isocenter_mm=50)
    with pytest.raises(InputError, match="shape"):
        simulate_ct(np.zeros((3, 3)), GRID2D)


# ------------------------------------------------------------------------------------ MR

MRGRID = ImageGrid.centred((1, 48, 48), (2.0, 2.0, 5.0))


def smooth_complex(grid):
    xs, ys, _ = grid.voxel_centres()
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return (np.exp(-((xx - 6) ** 2 + (yy + 4) ** 2) / 300.0) * np.exp(0.02j * xx)).astype(np.complex64)[None]


@pytest.mark.parametrize("trajectory", ["radial", "cartesian"])
def test_mr_fine_grid_encoding_matches_operator_for_smooth_images(trajectory):
    """The FFT phase origin and scale of the fine grid are corrected: for a band-limited image the
    upsampled encoding agrees with the reconstruction grid's own operator."""
    img = smooth_complex(MRGRID)
    kw = dict(trajectory=trajectory, n_spokes=12, n_coils=4, acceleration=3, acs_lines=8, dcf=False)
    exact = simulate_mr(img, MRGRID, upsample=1, **kw)
    fine = simulate_mr(img, MRGRID, upsample=2, **kw)
    from INRReconLib.simulate import SIMULATION_NUFFT

    op = MROperator(exact.geometry, MRGRID, nufft=SIMULATION_NUFFT)  # the simulation's fixed NUFFT
    np.testing.assert_allclose(exact.data, op.forward(torch.as_tensor(img[None])).numpy(), atol=1e-6)
    assert np.linalg.norm(fine.data - exact.data) / np.linalg.norm(exact.data) < 1e-3
    # a sharp image is no longer encoded exactly (no inverse crime)
    sharp = shepp_logan_2d(48)[None]
    a = simulate_mr(sharp, MRGRID, upsample=1, **kw)
    b = simulate_mr(sharp, MRGRID, upsample=2, **kw)
    assert np.linalg.norm(a.data - b.data) / np.linalg.norm(a.data) > 1e-3


def test_mr_shapes_attrs_and_dcf(tmp_path):
    m = simulate_mr(mr_phantom(48), MRGRID, trajectory="radial", n_spokes=10, n_coils=3, n_frames=2)
    g = m.geometry
    assert m.data.shape == (2, 3, 10 * 96) and g.trajectory.shape == (2, 2, 960)
    assert g.coil_maps.shape == (3, 48, 48) and g.dcf.shape == (2, 960)
    assert m.attrs["n_spokes"] == 10 and "golden-angle radial" in m.attrs["description"]
    # density-compensated adjoint has about unit gain (smooth image)
    img = smooth_complex(MRGRID)
    m1 = simulate_mr(img, MRGRID, n_spokes=40, upsample=1)
    back = MROperator(m1.geometry, MRGRID).adjoint(torch.as_tensor(m1.data * m1.geometry.dcf[:, None])).numpy()
    assert np.vdot(img, back[0]).real / np.vdot(img, img).real == pytest.approx(1.0, abs=0.05)
    back_m = read_measurement(write_measurement(m, tmp_path / "mr.h5"))
    np.testing.assert_array_equal(back_m.geometry.dcf, g.dcf)
    c = simulate_mr(mr_phantom(48), MRGRID, trajectory="cartesian", acceleration=4, acs_lines=8, n_frames=3, seed=1)
    assert c.geometry.mask.shape == (3, 48, 48) and c.data.shape[:2] == (3, 1)
    assert c.geometry.mask.sum() == 3 * c.data.shape[2] and c.geometry.coil_maps is None
    assert not np.array_equal(c.geometry.mask[0], c.geometry.mask[1])  # a new draw per frame


def test_mr_noise_statistics_and_seed():
    img = mr_phantom(48)
    kw = dict(trajectory="cartesian", acceleration=2, acs_lines=8, upsample=1, mask_seed=0)
    clean = simulate_mr(img, MRGRID, **kw)
    a = simulate_mr(img, MRGRID, noise_std=0.05, seed=7, **kw)
    b = simulate_mr(img, MRGRID, noise_std=0.05, seed=7, **kw)
    np.testing.assert_array_equal(a.data, b.data)
    noise = a.data - clean.data
    rms = np.sqrt(np.mean(np.abs(clean.data) ** 2))
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(0.05 * rms, rel=0.05)
    assert np.std(noise.real) == pytest.approx(np.std(noise.imag), rel=0.1)


def test_mr_dynamic_and_3d():
    frames = np.stack([np.roll(mr_phantom(48), s, axis=-1) for s in range(3)])  # [3, 1, 48, 48]
    m = simulate_mr(frames, MRGRID, n_spokes=5, n_frames=3, dcf=False)
    assert m.data.shape == (3, 1, 5 * 96)
    with pytest.raises(InputError, match="frames"):
        simulate_mr(frames, MRGRID, n_frames=2)
    grid3 = ImageGrid.centred((4, 16, 16), (2.0, 2.0, 4.0))
    vol = smooth_phantom_3d(grid3.shape)
    m3 = simulate_mr(vol, grid3, n_spokes=6, n_coils=2)
    assert m3.geometry.trajectory.shape == (1, 3, 4 * 6 * 32) and m3.geometry.coil_maps.shape == (2, 4, 16, 16)
    validate_measurement(m3)
    c3 = simulate_mr(vol, grid3, trajectory="cartesian", acceleration=2, acs_lines=4)
    assert c3.geometry.mask.shape == (1, 4, 16, 16)


def test_refined_grid_keeps_centre_and_extent():
    from INRReconLib.io.volume import grid_centre_lps

    g = ImageGrid((10, 6, 3), (2.0, 3.0, 4.0), (7.0, -1.0, 2.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
    f = g.refined(2, in_plane=True)  # the simulation's finer grid: in-plane only
    assert f.size == (20, 12, 3) and f.spacing == (1.0, 1.5, 4.0)
    np.testing.assert_allclose(grid_centre_lps(f), grid_centre_lps(g))
    f3 = g.refined(2)  # a 3D grid: every axis
    assert f3.size == (20, 12, 6) and f3.spacing == (1.0, 1.5, 2.0) and f3.direction == g.direction
    np.testing.assert_allclose(grid_centre_lps(f3), grid_centre_lps(g))
    np.testing.assert_allclose(f3.extent_mm, g.extent_mm)
    flat = ImageGrid((10, 6, 1), (2.0, 3.0, 4.0), (7.0, -1.0, 2.0))
    assert flat.refined(3).size == (30, 18, 1)  # a 2D grid stays one slice
    assert g.refined(1) == g
    with pytest.raises(InputError, match="upsample"):
        g.refined(0)


def test_real_thorax_slice_from_finer_scan():
    """The 512^2 slice projected onto a 256^2 reconstruction grid agrees with projecting its 2x2
    mean (the 256^2 image) to within the discretisation difference."""
    path = DATA / "ct_thorax" / "ct_thorax_hu_512x512_slices055-085.nrrd"
    if not path.exists():
        pytest.skip("shared real data absent")
    hu, grid = read_volume(path)
    k = 7  # slice 62, through the nodule
    fine = ImageGrid((512, 512, 1), grid.spacing, (grid.origin[0], grid.origin[1], grid.origin[2] + 2.0 * k))
    mu = np.clip(hu_to_mu(hu[k]), 0, None).astype(np.float32)[None]
    # coarse grid with the fine grid's centre (the 2x2 block centres)
    coarse = ImageGrid((256, 256, 1), (2 * fine.spacing[0], 2 * fine.spacing[1], 2.0),
                       (fine.origin[0] + fine.spacing[0] / 2, fine.origin[1] + fine.spacing[1] / 2, fine.origin[2]))
    m = simulate_ct(mu, fine, geometry="fan", n_views=8, recon_grid=coarse, photons=1e5)
    pooled = mu[0].reshape(256, 2, 256, 2).mean(axis=(1, 3))[None]
    ref = simulate_ct(pooled, coarse, geometry="fan", n_views=8, upsample=1)
    assert m.data.shape == ref.data.shape == (8, 1, m.geometry.n_cols)
    rel = np.linalg.norm(m.data - ref.data) / np.linalg.norm(ref.data)
    assert rel < 0.02, rel
    assert 5 < ref.data.max() < 15  # thorax line integrals (mu * ~300 mm)
