"""Classical MR reconstructions on small simulated cases: quality ordering, scale, cancellation,
bad input."""

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement
from INRReconLib.methods import classical_mr
from INRReconLib.methods.monitor import Monitor
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_geometry import MRGeometry
from INRReconLib.physics.mr_operator import MROperator
from INRReconLib.physics.mr_sampling import birdcage_coil_maps, cartesian_mask, golden_angle_radial

torch.set_num_threads(1)  # torchkbnufft forks per thread; one is fastest on a busy 2-core CI box
N = 64

# (value, a, b, x0, y0, angle_deg) of the modified Shepp–Logan head, in units of the half FOV
_ELLIPSES = [(1.0, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0), (-.2, .11, .31, .22, 0, -18),
             (-.2, .16, .41, -.22, 0, 18), (.1, .21, .25, 0, .35, 0), (.1, .046, .046, 0, .1, 0),
             (.1, .046, .046, 0, -.1, 0), (.1, .046, .023, -.08, -.605, 0), (.1, .023, .023, 0, -.606, 0),
             (.1, .023, .046, .06, -.605, 0)]


def shepp_logan(n):
    y, x = np.meshgrid((np.arange(n) - (n - 1) / 2) / (n / 2), (np.arange(n) - (n - 1) / 2) / (n / 2), indexing="ij")
    img = np.zeros((n, n))
    for v, a, b, x0, y0, ang in _ELLIPSES:
        t = np.deg2rad(ang)
        xr, yr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t), -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += v
    return img.astype(np.float32)


TRUTH = shepp_logan(N)


def psnr(image):
    mag = np.abs(image[0, 0])
    return 10 * np.log10(TRUTH.max() ** 2 / np.mean((mag - TRUTH) ** 2))


def simulate(geometry, noise=0.01, seed=0):
    grid = ImageGrid.centred((1, N, N), (1.0, 1.0, 1.0))
    op = MROperator(geometry, grid)
    # a smooth phase, so complex handling is exercised
    yy, xx = np.meshgrid(np.linspace(-1, 1, N), np.linspace(-1, 1, N), indexing="ij")
    x = (TRUTH * np.exp(1j * 0.5 * (xx + yy))).astype(np.complex64)
    y = op(torch.as_tensor(x[None, None])).numpy()
    rng = np.random.default_rng(seed)
    sigma = noise * np.sqrt(np.mean(np.abs(y) ** 2))
    y = y + sigma * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)) / np.sqrt(2)
    return Measurement("MR", y.astype(np.complex64), grid, geometry)


def run(name, m, **kw):
    return getattr(classical_mr, name)(m, prior=None, config=kw.pop("config", {}), iterations=kw.pop("iterations", None),
                                       device=torch.device("cpu"), monitor=kw.pop("monitor", Monitor()))


@pytest.mark.parametrize("n_coils", [1, 4])
def test_radial_quality_ordering(n_coils):
    maps = birdcage_coil_maps(n_coils, (N, N)) if n_coils > 1 else None
    m = simulate(MRGeometry("noncartesian", trajectory=golden_angle_radial(32, 2 * N), coil_maps=maps))
    adj = run("adjoint", m)
    cg = run("cgsense", m, config={"iterations": 30})
    tv = run("tv", m, iterations=150)
    cg_auto = run("cgsense", m)  # stopped where the residual reaches the k-space noise
    p_adj, p_cg, p_tv = psnr(adj.image), psnr(cg.image), psnr(tv.image)
    print(f"radial {n_coils} coils: adjoint {p_adj:.2f} cgsense {p_cg:.2f} tv {p_tv:.2f}")
    assert adj.image.shape == (1, 1, N, N) and adj.image.dtype == np.complex64
    assert p_adj > 15.0  # least-squares scaled: magnitude comparable to the truth
    assert p_cg > p_adj + 0.5
    assert p_tv >= p_cg
    # with lambda: auto the 150 iterations run at the chosen weight, after the search
    assert cg.iterations == 30 and tv.iterations == tv.extra["auto_lambda"]["stages"][-1]["iteration"] + 150
    assert cg_auto.extra["auto_iterations"]["reached"] and cg_auto.iterations < 30
    assert psnr(cg_auto.image) > p_adj + 0.5


@pytest.mark.skipif(__import__("importlib").util.find_spec("finufft") is None, reason="finufft not installed")
def test_every_mr_method_takes_the_nufft_backend_and_records_it():
    """`nufft` is a config key of every MR method; the result's config names the backend that ran
    (auto resolved), and both backends give the same reconstruction."""
    from INRReconLib.methods.registry import reconstruct
    from INRReconLib.physics.mr_nufft import AUTO_NUFFT

    m = simulate(MRGeometry("noncartesian", trajectory=golden_angle_radial(24, 2 * N), coil_maps=birdcage_coil_maps(4, (N, N))))
    for method, iterations in (("adjoint", None), ("cgsense", 30), ("tv", 40), ("inr", 20)):
        images = {}
        for nufft in ("torchkbnufft", "finufft"):
            res = reconstruct(m, method, config={"nufft": nufft}, iterations=iterations)
            assert res.config["nufft"] == nufft, method
            images[nufft] = res.image
        p_fi, p_kb = psnr(images["finufft"]), psnr(images["torchkbnufft"])
        print(method, f"finufft {p_fi:.2f} dB, torchkbnufft {p_kb:.2f} dB")
        # The models agree to 7e-4; the unregularised iterations amplify that, but not the quality.
        assert abs(p_fi - p_kb) < 0.1, method
        assert reconstruct(m, method, iterations=iterations).config["nufft"] == AUTO_NUFFT["cpu"]
    with pytest.raises(InputError, match="nufft"):
        reconstruct(m, "cgsense", config={"nufft": "gpuNUFFT"})


def test_cartesian_quality_ordering_and_rss():
    maps = birdcage_coil_maps(4, (N, N))
    mask = cartesian_mask((N, N), 3, 8, seed=0)[None]
    m = simulate(MRGeometry("cartesian", mask=mask, coil_maps=maps))
    p_adj, p_cg, p_tv = (psnr(run(k, m).image) for k in ("adjoint", "cgsense", "tv"))
    print(f"cartesian 4 coils: adjoint {p_adj:.2f} cgsense {p_cg:.2f} tv {p_tv:.2f}")
    assert p_cg > p_adj + 1.0 and p_tv >= p_cg
    # the same data without coil maps: root-sum-of-squares adjoint, estimated maps for CG-SENSE
    bare = Measurement("MR", m.data, m.grid, MRGeometry("cartesian", mask=mask))
    rss = run("adjoint", bare)
    assert np.allclose(rss.image.imag, 0) and abs(psnr(rss.image) - p_adj) < 2.0
    cg_est = run("cgsense", bare)
    assert cg_est.extra["estimated_coil_maps"] and psnr(cg_est.image) > p_adj


class _StopAfter(Monitor):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def stop_requested(self):
        return len(self.history) >= self.n


def test_cancel_and_progress():
    m = simulate(MRGeometry("noncartesian", trajectory=golden_angle_radial(12, 2 * N)))
    res = run("tv", m, monitor=_StopAfter(3))
    assert res.cancelled and res.iterations == 3 and res.image.shape == (1, 1, N, N)
    mon = Monitor()
    res = run("cgsense", m, iterations=5, monitor=mon)
    assert not res.cancelled and [h["iteration"] for h in mon.history] == [1, 2, 3, 4, 5]
    assert all(h["stage"] == "cgsense" and "loss" in h for h in mon.history)


def test_dynamic_tv_with_temporal_weight():
    frames = 3
    traj = golden_angle_radial(8, 2 * N, n_frames=frames)
    geo = MRGeometry("noncartesian", trajectory=traj, coil_maps=birdcage_coil_maps(4, (N, N)))
    grid = ImageGrid.centred((1, N, N), (1.0, 1.0, 1.0))
    op = MROperator(geo, grid)
    y = op(torch.as_tensor(np.repeat(TRUTH[None, None], frames, 0).astype(np.complex64)))
    m = Measurement("MR", y.numpy(), grid, geo)
    adj = run("adjoint", m)
    tv = run("tv", m, iterations=100)
    assert tv.image.shape == (frames, 1, N, N) and tv.extra["temporal_weight"] == 1.0
    err = lambda im: np.mean((np.abs(im[:, 0]) - TRUTH) ** 2)
    assert err(tv.image) < 0.5 * err(adj.image)


def test_bad_input_errors():
    geo = MRGeometry("noncartesian", trajectory=golden_angle_radial(4, 2 * N), coil_maps=birdcage_coil_maps(2, (N, N)))
    grid = ImageGrid.centred((1, N, N), (1.0, 1.0, 1.0))
    bad = Measurement("MR", np.zeros((1, 3, 4 * 2 * N), np.complex64), grid, geo)
    with pytest.raises(InputError, match=r"\[1, 3, 512\].*\[1, 2, 512\]"):
        run("cgsense", bad)
    good = Measurement("MR", np.zeros((1, 2, 4 * 2 * N), np.complex64), grid, geo)
    with pytest.raises(InputError, match="has no option"):
        run("tv", good, config={"lamda": 1e-3})
    geo.dcf = np.ones((1, 10), np.float32)
    with pytest.raises(InputError, match="dcf"):
        run("adjoint", good)
