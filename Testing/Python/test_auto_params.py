"""`auto` parameters of the classical methods: the noise estimates (physics/noise.py), the
discrepancy rules (methods/auto_params.py), the preconditioned CT TV against the scalar-step PDHG
it replaced, and the documented fallback when the data show no noise."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from ct_phantoms import blob_sinogram, disk_image, disk_sinogram, psnr
from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement
from INRReconLib.io.phantoms import mr_phantom
from INRReconLib.methods import auto_params, classical_ct, options
from INRReconLib.methods.registry import reconstruct
from INRReconLib.numerics import finite_diff
from INRReconLib.physics.ct_geometry import parallel_geometry
from INRReconLib.physics.ct_projector import CTProjector
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_geometry import MRGeometry
from INRReconLib.physics.noise import ct_noise, mr_noise
from INRReconLib.simulate import simulate_mr

torch.set_num_threads(2)
I0 = 2e4


@pytest.fixture(scope="module")
def noisy_ct():
    grid = ImageGrid.centred((1, 64, 64), (1.0, 1.0, 1.0))
    geo = parallel_geometry(np.linspace(0, np.pi, 30, endpoint=False), 96, 1.0)
    clean = disk_sinogram(geo).astype(np.float64)
    counts = np.random.default_rng(3).poisson(I0 * np.exp(-clean))
    sino = (-np.log(np.maximum(counts, 1) / I0)).astype(np.float32)
    return Measurement("CT", sino, grid, geo), disk_image(grid)


def test_ct_noise_recovers_the_photon_count(noisy_ct):
    """On smooth projections (Gaussian blobs); the disks' sharp edges read σ 11 % high."""
    m, _ = noisy_ct
    geo = parallel_geometry(np.linspace(0, np.pi, 60, endpoint=False), 128, 0.8)
    clean = blob_sinogram(geo, True).astype(np.float64)
    counts = np.random.default_rng(4).poisson(I0 * np.exp(-clean))
    est = ct_noise(Measurement("CT", (-np.log(np.maximum(counts, 1) / I0)).astype(np.float32), m.grid, geo))
    assert est.rule.startswith("estimated")
    # σ per ray ∝ 1/√I0: within 10 % means I0 within about ±20 %
    assert abs(math.sqrt(I0 / est.detail["photons_per_pixel"]) - 1) < 0.1, est.detail
    stated = ct_noise(dataclasses.replace(m, attrs={"photons_per_pixel": 5e3}))
    assert stated.rule.startswith("stated") and stated.detail["photons_per_pixel"] == 5e3
    assert stated.total == pytest.approx(float(np.exp(np.asarray(m.data, np.float64)).sum() / 5e3), rel=1e-6)
    with pytest.raises(InputError, match="photons_per_pixel"):
        ct_noise(dataclasses.replace(m, attrs={"photons_per_pixel": -1}))


@pytest.mark.parametrize("coils", [1, 4])
def test_mr_noise_recovers_sigma(coils):
    grid = ImageGrid.centred((1, 64, 64), (1.0, 1.0, 1.0))
    img = mr_phantom(64)
    clean = simulate_mr(img, grid, n_spokes=32, n_coils=coils, seed=1)
    noisy = simulate_mr(img, grid, n_spokes=32, n_coils=coils, noise_std=0.02, seed=1)
    sigma2 = float(np.mean(np.abs(np.asarray(noisy.data) - np.asarray(clean.data)) ** 2))  # the noise added
    est = mr_noise(noisy)
    assert abs(math.sqrt(est.variance / sigma2) - 1) < 0.1, (est.variance, sigma2)


def test_twix_noise_from_the_readout_oversampling_band():
    from INRReconLib.io.readout import oversampling_noise
    from INRReconLib.physics.mr_coil_maps import centred_fft

    rng = np.random.default_rng(0)
    ny, nx = 48, 64
    obj = np.zeros((1, 2, ny, 2 * nx), complex)
    obj[..., nx // 2 + 4:nx // 2 + nx - 4] = rng.standard_normal((1, 2, ny, nx - 8)) + 3.0  # inside the FOV
    sigma2 = 0.5
    noise = np.sqrt(sigma2 / 2) * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))
    kspace = centred_fft(obj, axes=(-1,)) + noise
    counts = np.ones((1, ny))
    assert abs(math.sqrt(oversampling_noise(kspace, counts, nx) / sigma2) - 1) < 0.1
    # lines averaged twice carry half the variance
    assert oversampling_noise(kspace / np.sqrt(2), 2 * counts, nx) == pytest.approx(
        oversampling_noise(kspace, counts, nx) / 2, rel=1e-9)


def test_auto_lambda_is_near_the_best_swept_one(noisy_ct):
    m, ref = noisy_ct
    sweep = {lam: psnr(classical_ct.tv(m, config={"lambda": lam}).image, ref)
             for lam in (0.001, 0.003, 0.01, 0.03, 0.1)}
    best = max(sweep, key=sweep.get)
    res = classical_ct.tv(m, config={})
    chosen = res.config["lambda"]
    record = res.extra["auto_lambda"]
    assert record["rule"].startswith("discrepancy principle") and record["reached"]
    assert best / 4 <= chosen <= best * 4, (chosen, sweep)
    assert psnr(res.image, ref) > sweep[best] - 1.0, (psnr(res.image, ref), sweep)
    # the chosen value is in the config: a rerun with it is a fixed-λ run near the same image
    again = classical_ct.tv(m, config=res.config)
    assert "auto_lambda" not in again.extra and psnr(again.image, res.image) > 35


def test_noise_free_ct_holds_the_weight_at_the_floor(noisy_ct, monkeypatch):
    """A noise-free sinogram: its noise estimate is the disks' edges, the residual keeps falling
    as the weight drops, and without a floor the discrepancy principle ends far below the best
    swept weight; the floor keeps it near, and the record says why it stopped."""
    m, ref = noisy_ct
    clean = dataclasses.replace(m, data=disk_sinogram(m.geometry).astype(np.float32))
    res = classical_ct.tv(clean, config={})
    record = res.extra["auto_lambda"]
    assert res.config["lambda"] >= auto_params.LAMBDA_FLOOR_CT and not record["reached"]
    assert "at the floor" in record["rule"] and "warning" not in record
    best = max(psnr(classical_ct.tv(clean, config={"lambda": lam}).image, ref) for lam in (0.001, 0.003, 0.01))
    assert psnr(res.image, ref) > best - 1.0
    floor = auto_params.LAMBDA_FLOOR_CT
    monkeypatch.setattr(auto_params, "LAMBDA_FLOOR_CT", auto_params.LAMBDA_FLOOR)
    unfloored = classical_ct.tv(clean, config={})
    assert unfloored.config["lambda"] < floor / 10
    assert psnr(res.image, ref) > psnr(unfloored.image, ref) + 3.0


def test_auto_iterations_stop_at_the_noise_level(noisy_ct):
    """SIRT and CGLS stop where their residual reaches what a least-squares fit leaves of the
    noise: nothing when the voxels outnumber the rays (SIRT then runs to its cap, CGLS until the
    residual levels off), ‖noise‖² (m − n)/m otherwise."""
    m, ref = noisy_ct  # 30 views × 96 columns < the voxels the rays cross
    sirt = classical_ct.sirt(m, config={})
    assert sirt.iterations == classical_ct.MAX_AUTO_ITERATIONS["sirt"]
    assert "more unknowns than data" in sirt.extra["auto_iterations"]["rule"]
    cgls = classical_ct.cgls(m, config={})
    record = cgls.extra["auto_iterations"]
    assert "levelled off" in record["rule"] and cgls.config["iterations"] == cgls.iterations == record["iterations"]
    # where it stopped is no worse than running far past it (semi-convergence)
    longer = classical_ct.cgls(m, config={}, iterations=4 * cgls.iterations)
    assert psnr(cgls.image, ref) > psnr(longer.image, ref) - 0.5
    # more rays than voxels: the residual target is reached
    geo = parallel_geometry(np.linspace(0, np.pi, 180, endpoint=False), 96, 1.0)
    counts = np.random.default_rng(5).poisson(I0 * np.exp(-disk_sinogram(geo).astype(np.float64)))
    dense = Measurement("CT", (-np.log(np.maximum(counts, 1) / I0)).astype(np.float32), m.grid, geo)
    for name in ("sirt", "cgls"):
        res = getattr(classical_ct, name)(dense, config={})
        assert res.extra["auto_iterations"]["reached"] and "warning" not in res.extra["auto_iterations"], name
        assert res.iterations < classical_ct.MAX_AUTO_ITERATIONS[name], name


def _scalar_pdhg_objective(m, lam, n):
    """The CT TV solver before preconditioning (σ = τ = 0.99/√2 on [Â; ∇/‖∇‖], from zero), on the
    same normalised problem; returns its objective after n iterations."""
    op = CTProjector(m.geometry, m.grid, backend="torch")
    y = torch.as_tensor(np.asarray(m.data, np.float32))
    a = op.norm_estimate()
    s = float(y.sum() / op.forward(torch.ones(op.image_shape)).sum())
    y_hat, axes, gnorm, step = y / (a * s), [-2, -1], 2.0 * math.sqrt(2), 0.99 / math.sqrt(2)
    x = torch.zeros(op.image_shape)
    x_bar, p, q = x.clone(), torch.zeros(op.data_shape), torch.zeros((2,) + tuple(x[0].shape))
    for _ in range(n):
        p = (p + step * (op.forward(x_bar) / a - y_hat)) / (1 + step)
        q = q + step * finite_diff.gradient(x_bar[0], axes) / gnorm
        q = q * (lam * gnorm / q.pow(2).sum(0).sqrt().clamp(min=lam * gnorm))
        kt = op.adjoint(p) / a + (finite_diff.gradient_adjoint(q, axes) / gnorm).unsqueeze(0)
        x_new = (x - step * kt).clamp(min=0)
        x_bar, x = 2 * x_new - x, x_new
    return _objective(op, a, s, y_hat, x, lam)


def _objective(op, a, s, y_hat, x_hat, lam):
    r = op.forward(x_hat) / a - y_hat
    return 0.5 * float((r * r).sum()) + lam * float(finite_diff.gradient(x_hat[0], [-2, -1]).pow(2).sum(0).sqrt().sum())


def test_preconditioned_tv_reaches_the_scalar_pdhg_objective(noisy_ct):
    m, _ = noisy_ct
    lam = 0.01
    with torch.no_grad():
        old = _scalar_pdhg_objective(m, lam, 3000)
        res = classical_ct.tv(m, config={"lambda": lam})
        op = CTProjector(m.geometry, m.grid, backend="torch")
        y = torch.as_tensor(np.asarray(m.data, np.float32))
        a = op.norm_estimate()
        s = float(y.sum() / op.forward(torch.ones(op.image_shape)).sum())
        new = _objective(op, a, s, y / (a * s), torch.as_tensor(res.image) / s, lam)
    assert res.iterations < 3000 / 4
    assert new <= old * 1.005, (new, old)


def test_a_measurement_without_noise_information_falls_back_and_says_so():
    grid = ImageGrid.centred((1, 32, 32), (1.0, 1.0, 1.0))
    m = simulate_mr(mr_phantom(32), grid, n_spokes=16, noise_std=0.01, seed=0)
    # the samples in a random order: no three-and-more equally spaced samples along a readout
    order = np.random.default_rng(0).permutation(m.data.shape[-1])
    geo = MRGeometry("noncartesian", trajectory=m.geometry.trajectory[:, :, order], dcf=m.geometry.dcf[:, order])
    shuffled = dataclasses.replace(m, data=np.asarray(m.data)[:, :, order], geometry=geo)
    for method, key, value in (("tv", "lambda", 2e-4), ("cgsense", "iterations", 30)):
        res = reconstruct(shuffled, method)
        record = res.extra[f"auto_{key}"]
        assert record["rule"].startswith("fallback") and "no noise estimate" in record["warning"]
        assert res.config[key] == value
    # with the order of acquisition the same data have an estimate
    assert reconstruct(m, "tv").extra["auto_lambda"]["rule"].startswith("discrepancy")


def test_auto_is_a_valid_value_only_where_documented():
    assert options.check_config({"lambda": "auto"}, options.TV_CT, "tv")["lambda"] == "auto"
    with pytest.raises(InputError, match="'auto' or a number"):
        options.check_config({"lambda": "automatic"}, options.TV_CT, "tv")
    with pytest.raises(InputError, match="filter"):
        options.check_config({"filter": "auto"}, options.FBP, "fbp")


def test_the_auto_benchmark_table_compares_with_the_sweep_and_the_peer(capsys):
    from INRReconLib.bench_classical import peer_scores, print_classical_table

    assert peer_scores("ct2d_longitudinal_fan_v20_noisy_priorvolume", "tv") == (29.10, 0.8081)
    assert peer_scores("no_such_case", "sirt") is None
    row = {"case": "c", "method": "tv", "key": "lambda", "chosen": 0.0049, "peer": (29.1, 0.8081),
           "auto": {"psnr": 29.38, "ssim": 0.8371, "roi_psnr": 24.29, "iterations": 500, "seconds": 22.0},
           "sweep": [{"value": 0.002, "psnr": 28.94, "ssim": 0.822, "roi_psnr": 23.5, "seconds": 25.4},
                     {"value": 0.004, "psnr": 29.36, "ssim": 0.836, "roi_psnr": 24.22, "seconds": 23.9}]}
    print_classical_table([row])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "lambda 0.0049" in line and "lambda 0.004 " in line and "+0.02" in line and "29.10 / 0.8081" in line
