"""MR forward model: adjoint tests, a direct non-uniform DFT reference, autograd, sampling helpers."""

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_geometry import MRGeometry
from INRReconLib.physics.mr_operator import MROperator
from INRReconLib.physics.mr_sampling import (birdcage_coil_maps, cartesian_mask, density_compensation,
                                             golden_angle_radial)

torch.set_num_threads(1)  # torchkbnufft forks per thread; one is fastest on a busy 2-core CI box
NUFFTS = ["torchkbnufft", pytest.param("finufft", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("finufft") is None, reason="finufft not installed (pip install -e '.[nufft]')"))]


def _randc(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.complex64)


def _adjoint_mismatch(op):
    x, y = _randc(op.image_shape, 1), _randc(op.data_shape, 2)
    lhs = torch.vdot(op(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    return float(abs(lhs - rhs) / abs(lhs))


def test_cartesian_2d_multicoil_adjoint_and_padding():
    grid = ImageGrid.centred((1, 32, 24), (1.0, 1.0, 1.0))
    mask = cartesian_mask((32, 24), 3, 6, seed=0, n_frames=2)
    mask[1, :, :5] = False  # frame 1 samples fewer points: padded
    op = MROperator(MRGeometry("cartesian", mask=mask, coil_maps=birdcage_coil_maps(4, (32, 24))), grid)
    assert op.data_shape == (2, 4, int(mask[0].sum()))
    assert _adjoint_mismatch(op) < 1e-5
    x = _randc(op.image_shape, 3)
    y = op(x)
    assert torch.all(y[1, :, int(mask[1].sum()):] == 0)
    assert float((op.normal(x) - op.adjoint(y)).abs().max()) < 1e-5


def test_cartesian_matches_format_definition():
    grid = ImageGrid.centred((1, 16, 16), (1.0, 1.0, 1.0))
    mask = cartesian_mask((16, 16), 2, 4, seed=1)[None]
    maps = birdcage_coil_maps(2, (16, 16))
    op = MROperator(MRGeometry("cartesian", mask=mask, coil_maps=maps), grid)
    x = _randc(op.image_shape, 4)
    coil = x[0, 0].numpy()[None] * maps
    k = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(coil, axes=(-2, -1)), axes=(-2, -1), norm="ortho"), axes=(-2, -1))
    ref = k[:, mask[0]]  # boolean indexing is C order
    np.testing.assert_allclose(op(x)[0].numpy(), ref, atol=1e-5)


def test_cartesian_3d_adjoint_and_full_mask_is_unitary():
    grid = ImageGrid.centred((8, 12, 10), (1.0, 1.0, 2.0))
    maps = birdcage_coil_maps(3, (8, 12, 10))
    mask = cartesian_mask((8, 12, 10), 2, 4, seed=2)[None]
    op = MROperator(MRGeometry("cartesian", mask=mask, coil_maps=maps), grid)
    assert _adjoint_mismatch(op) < 1e-5
    full = MROperator(MRGeometry("cartesian", mask=np.ones((1, 8, 12, 10), bool), coil_maps=maps), grid)
    x = _randc(full.image_shape, 5)
    # Σ|S|² = 1 and an orthonormal FFT: AᴴA = I
    assert float((full.normal(x) - x).abs().max()) < 1e-4


@pytest.mark.parametrize("nufft", NUFFTS)
def test_nufft_2d_multiframe_adjoint_toeplitz_and_autograd(nufft):
    grid = ImageGrid.centred((1, 24, 24), (1.0, 1.0, 1.0))
    traj = golden_angle_radial(6, 48, n_frames=2)
    op = MROperator(MRGeometry("noncartesian", trajectory=traj, coil_maps=birdcage_coil_maps(4, (24, 24))), grid,
                    nufft=nufft)
    assert op.nufft == nufft and op.adjoint_test() < 1e-5
    assert op.data_shape == (2, 4, 6 * 48)
    assert _adjoint_mismatch(op) < 1e-5
    x = _randc(op.image_shape, 6)
    direct = op.adjoint(op(x))
    assert float((op.normal(x) - direct).norm() / direct.norm()) < 1e-3
    dcf = torch.as_tensor(density_compensation(traj, (24, 24)))
    weighted = op.adjoint(op(x) * dcf[:, None, :])
    assert float((op.normal(x, dcf=dcf) - weighted).norm() / weighted.norm()) < 1e-3
    # autograd: the gradient of ½‖Ax − y‖² is Aᴴ(Ax − y)
    y = _randc(op.data_shape, 7)
    xg = x.clone().requires_grad_()
    (0.5 * (op(xg) - y).abs().pow(2).sum()).backward()
    expect = op.adjoint(op(x) - y)
    assert float((xg.grad - expect).norm() / expect.norm()) < 1e-5
    yg = y.clone().requires_grad_()
    op.adjoint(yg).abs().pow(2).sum().backward()
    assert float((yg.grad - 2 * op(op.adjoint(y))).norm() / yg.grad.norm()) < 1e-5


@pytest.mark.parametrize("nufft", NUFFTS)
def test_nufft_3d_multiframe_adjoint(nufft):
    grid = ImageGrid.centred((8, 10, 12), (1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    traj = rng.uniform(-np.pi, np.pi, size=(2, 3, 300)).astype(np.float32)
    op = MROperator(MRGeometry("noncartesian", trajectory=traj, coil_maps=birdcage_coil_maps(2, (8, 10, 12))), grid,
                    nufft=nufft)
    assert op.image_shape == (2, 8, 10, 12) and op.data_shape == (2, 2, 300)
    assert _adjoint_mismatch(op) < 1e-5


@pytest.mark.parametrize("nufft", NUFFTS)
def test_nufft_matches_direct_nudft(nufft):
    n = 16
    grid = ImageGrid.centred((1, n, n), (1.0, 1.0, 1.0))
    traj = golden_angle_radial(7, 2 * n, 1)
    op = MROperator(MRGeometry("noncartesian", trajectory=traj), grid, nufft=nufft)
    x = _randc(op.image_shape, 8)
    idx = np.arange(n) - n // 2  # torchkbnufft's default shift puts the origin at index n // 2
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    phase = traj[0, 0][:, None] * yy.ravel()[None] + traj[0, 1][:, None] * xx.ravel()[None]
    # norm="ortho" scales by 1/sqrt(prod grid size), grid = 2 x im_size
    ref = np.exp(-1j * phase) @ x.numpy().ravel() / np.sqrt((2 * n) ** 2)
    out = op(x).numpy().ravel()
    # measured: torchkbnufft 7e-4 (its 6-point kernel), finufft 1e-5 (FINUFFT_EPS)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < (1e-3 if nufft == "torchkbnufft" else 5e-5)


@pytest.mark.skipif(__import__("importlib").util.find_spec("finufft") is None, reason="finufft not installed")
@pytest.mark.parametrize("shape, coils, frames", [((1, 32, 28), 4, 3), ((6, 10, 12), 2, 1)])
def test_the_two_nufft_backends_compute_the_same_model(shape, coils, frames):
    """finufft and torchkbnufft: the same scale, phase origin and axis order (within 1e-3, the
    Kaiser-Bessel kernel's accuracy), forward, adjoint and the Toeplitz normal alike."""
    grid = ImageGrid.centred(shape, (1.0, 1.0, 1.0))
    ndim = 2 if shape[0] == 1 else 3
    if ndim == 2:
        traj = golden_angle_radial(8, 2 * shape[1], n_frames=frames)
    else:
        traj = np.random.default_rng(1).uniform(-np.pi, np.pi, size=(frames, 3, 500)).astype(np.float32)
    maps = birdcage_coil_maps(coils, shape[1:] if ndim == 2 else shape)
    geo = MRGeometry("noncartesian", trajectory=traj, coil_maps=maps)
    kb, fi = (MROperator(geo, grid, nufft=name) for name in ("torchkbnufft", "finufft"))
    x, y = _randc(kb.image_shape, 11), _randc(kb.data_shape, 12)

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    assert rel(fi(x), kb(x)) < 1e-3  # measured 7e-4
    assert rel(fi.adjoint(y), kb.adjoint(y)) < 1e-3
    assert rel(fi.normal(x), kb.normal(x)) < 2e-3
    assert rel(fi.normal(x), fi.adjoint(fi(x))) < 1e-4  # its own Toeplitz kernel: measured 8e-6


def test_nufft_choice_is_checked_and_auto_is_recorded(monkeypatch):
    import INRReconLib.physics.mr_nufft as mr_nufft

    grid = ImageGrid.centred((1, 16, 16), (1.0, 1.0, 1.0))
    geo = MRGeometry("noncartesian", trajectory=golden_angle_radial(4, 32, 1))
    with pytest.raises(InputError, match="nufft.*torchkbnufft"):
        MROperator(geo, grid, nufft="bart")
    monkeypatch.setattr(mr_nufft, "finufft_available", lambda device: False)
    with pytest.raises(InputError, match="pip install finufft"):
        MROperator(geo, grid, nufft="finufft")
    assert MROperator(geo, grid, nufft="auto").nufft == "torchkbnufft"  # auto falls back when it is missing
    monkeypatch.setattr(mr_nufft, "finufft_available", lambda device: True)
    assert MROperator(geo, grid, nufft="auto").nufft == mr_nufft.AUTO_NUFFT["cpu"]
    cart = MRGeometry("cartesian", mask=np.ones((1, 16, 16), bool))
    assert MROperator(cart, grid).nufft is None  # no NUFFT for Cartesian data
    with pytest.raises(InputError, match="nufft"):
        MROperator(cart, grid, nufft="bart")


def test_bad_shapes_raise_input_errors_naming_both_shapes():
    grid = ImageGrid.centred((1, 16, 16), (1.0, 1.0, 1.0))
    op = MROperator(MRGeometry("noncartesian", trajectory=golden_angle_radial(4, 32)), grid)
    with pytest.raises(InputError, match=r"\[1, 16, 15\].*\[1, 1, 16, 16\]"):
        op(torch.zeros(1, 16, 15, dtype=torch.complex64))
    with pytest.raises(InputError, match=r"\[1, 2, 128\].*\[1, 1, 128\]"):
        op.adjoint(torch.zeros(1, 2, 128, dtype=torch.complex64))
    with pytest.raises(InputError, match="trajectory"):
        MROperator(MRGeometry("noncartesian", trajectory=np.zeros((1, 3, 10), np.float32)), grid)
    with pytest.raises(InputError, match="rad/voxel"):
        MROperator(MRGeometry("noncartesian", trajectory=np.full((1, 2, 10), 5.0, np.float32)), grid)
    with pytest.raises(InputError, match="coil_maps"):
        MROperator(MRGeometry("cartesian", mask=np.ones((1, 16, 16), bool),
                              coil_maps=np.ones((2, 8, 8), np.complex64)), grid)
    with pytest.raises(InputError, match="mask"):
        MROperator(MRGeometry("cartesian", mask=np.ones((1, 16, 8), bool)), grid)


def test_golden_angle_trajectory_properties():
    traj = golden_angle_radial(5, 64, n_frames=3)
    assert traj.shape == (3, 2, 5 * 64) and traj.dtype == np.float32
    assert traj.min() >= -np.pi and traj.max() < np.pi
    spokes = traj.transpose(0, 2, 1).reshape(15, 64, 2)
    # each spoke passes through k = 0 at sample n/2, with the radius spacing 2π/n
    assert np.allclose(spokes[:, 32], 0.0, atol=1e-6)
    radius = np.linalg.norm(spokes, axis=2)
    assert np.allclose(radius[0], np.abs(np.arange(64) - 32) * 2 * np.pi / 64, atol=1e-5)
    # consecutive spokes, also across frames, advance by the golden angle (mod π)
    ang = np.arctan2(spokes[:, 40, 0], spokes[:, 40, 1])
    step = np.mod(np.diff(ang), np.pi)
    assert np.allclose(step, np.mod(np.deg2rad(111.24611797), np.pi), atol=1e-5)
    later = golden_angle_radial(5, 64, n_frames=1, first_spoke=10)
    assert np.allclose(later[0], traj[2], atol=1e-6)


def test_cartesian_mask_properties():
    m = cartesian_mask((64, 48), 4, 8, seed=3)
    assert m.shape == (64, 48) and m.dtype == bool
    lines = m.all(axis=1)
    assert np.array_equal(lines, m.any(axis=1))  # whole readout lines
    assert lines[28:36].all() and lines.sum() == 16
    assert np.array_equal(m, cartesian_mask((64, 48), 4, 8, seed=3))
    m3 = cartesian_mask((16, 20, 12), 3, 4, seed=1, n_frames=2)
    assert m3.shape == (2, 16, 20, 12) and m3[0, 6:10, 8:12].all()
    assert not np.array_equal(m3[0], m3[1])


def test_birdcage_maps_are_smooth_and_normalised():
    maps = birdcage_coil_maps(8, (64, 64))
    assert maps.shape == (8, 64, 64) and maps.dtype == np.complex64
    assert np.allclose((np.abs(maps) ** 2).sum(0), 1.0, atol=1e-5)
    # each coil is brightest on its own side of the image
    mag = np.abs(maps)
    assert mag[0, 32, 63] > 2 * mag[0, 32, 0]
    assert np.abs(np.diff(maps, axis=-1)).max() < 0.2
    assert birdcage_coil_maps(4, (6, 16, 16)).shape == (4, 6, 16, 16)


def test_density_compensation_sanity():
    traj = golden_angle_radial(16, 64, n_frames=2)
    dcf = density_compensation(traj, (32, 32))
    assert dcf.shape == (2, 16 * 64) and dcf.dtype == np.float32 and np.all(dcf > 0)
    radius = np.linalg.norm(traj[0], axis=0)
    inner = dcf[0][(radius > 0.2) & (radius < 0.6)].mean()
    outer = dcf[0][(radius > 1.8) & (radius < 2.4)].mean()
    assert 2.0 < outer / inner < 8.0  # radial density falls ~1/|k|: weights grow with |k|
    # unit gain on a smooth image: the density-compensated adjoint keeps the magnitude
    grid = ImageGrid.centred((1, 32, 32), (1.0, 1.0, 1.0))
    op = MROperator(MRGeometry("noncartesian", trajectory=traj), grid)
    yy, xx = np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij")
    blob = np.exp(-(yy ** 2 + xx ** 2) / (2 * 5.0 ** 2)).astype(np.complex64)
    x = torch.as_tensor(np.stack([blob, blob])[:, None])
    back = op.adjoint(op(x) * torch.as_tensor(dcf)[:, None, :])
    assert abs(float(back[0, 0, 16, 16].real) - 1.0) < 0.1


def test_nufft_bench_times_every_installed_backend(monkeypatch, capsys):
    """`inrrecon bench --cases nufft` (small cases here): one row per backend and case, with the
    ratio to torchkbnufft, printed as a table."""
    import INRReconLib.bench_nufft as bn
    from INRReconLib.physics.mr_nufft import finufft_available

    monkeypatch.setattr(bn, "NUFFT_CASES", (("tiny static", 16, 2, 4, 1), ("tiny dynamic", 16, 2, 3, 2)))
    monkeypatch.setattr(bn, "MIN_SECONDS", 0.0)
    rows = bn.nufft_timings("cpu")
    backends = ["torchkbnufft"] + (["finufft"] if finufft_available("cpu") else [])
    assert [(r["case"], r["backend"]) for r in rows] == [(c, b) for c in ("tiny static", "tiny dynamic") for b in backends]
    for r in rows:
        assert all(r[k] > 0 for k in ("forward", "adjoint", "normal"))
        if r["backend"] == "torchkbnufft":
            assert r["forward_ratio"] == r["adjoint_ratio"] == r["normal_ratio"] == 1.0
    bn.print_nufft_table(rows)
    assert "ratio to torchkbnufft" in capsys.readouterr().out


@pytest.mark.parametrize("nufft", NUFFTS)
def test_toeplitz_kernel_follows_new_weights(nufft):
    """Weights handed over as fresh arrays every call (NumPy, float64): each call uses its own
    weights, never a kernel cached for earlier ones at a reused address."""
    grid = ImageGrid.centred((1, 16, 16), (1.0, 1.0, 1.0))
    traj = golden_angle_radial(5, 32, 1)
    op = MROperator(MRGeometry("noncartesian", trajectory=traj), grid, nufft=nufft)
    x = _randc(op.image_shape, 13)
    for value in (1.0, 3.0, 5.0, 3.0):
        dcf = np.full((1, op.n_samples), value)  # float64, converted inside
        expect = op.adjoint(op(x) * float(value))
        assert float((op.normal(x, dcf=dcf) - expect).norm() / expect.norm()) < 1e-3, value
