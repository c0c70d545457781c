"""Classical CT methods: FBP/FDK accuracy and scale, SIRT/CGLS/TV on a sparse-view case."""

import numpy as np
import pytest
import torch

from ct_phantoms import BLOBS, blob_image, blob_sinogram, disk_image, disk_sinogram, psnr
from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement
from INRReconLib.methods import classical_ct
from INRReconLib.methods.monitor import Monitor
from INRReconLib.physics.ct_geometry import cone_geometry, fan_geometry, parallel_geometry
from INRReconLib.physics.grid import ImageGrid

torch.set_num_threads(2)


def _ct(geo, grid, sino):
    return Measurement("CT", sino, grid, geo)


def test_fbp_parallel_dense_smooth_phantom():
    grid = ImageGrid.centred((1, 96, 96), (0.6, 0.6, 1.0))
    ref = blob_image(grid)
    geo = parallel_geometry(np.linspace(0, np.pi, 360, endpoint=False), 144, 0.6)
    res = classical_ct.fbp(_ct(geo, grid, blob_sinogram(geo, True)), config={})
    assert res.image.shape == grid.shape
    assert psnr(res.image, ref) > 35
    assert abs(res.image.mean() / ref.mean() - 1) < 0.02  # absolute scale
    # a 360-degree scan gives the same image (redundancy weighting)
    geo2 = parallel_geometry(np.linspace(0, 2 * np.pi, 360, endpoint=False), 144, 0.6)
    res2 = classical_ct.fbp(_ct(geo2, grid, blob_sinogram(geo2, True)), config={"filter": "hann"})
    assert psnr(res2.image, ref) > 35


@pytest.mark.parametrize("arc", [2 * np.pi, np.pi + 0.8])
def test_fbp_fan_full_and_short_scan(arc):
    grid = ImageGrid.centred((1, 96, 96), (0.6, 0.6, 1.0))
    ref = blob_image(grid)
    angles = np.linspace(0, arc, 240, endpoint=arc > 6)
    geo = fan_geometry(angles, 200, 0.8, 200.0, 100.0, detector_offset_mm=1.0)
    res = classical_ct.fbp(_ct(geo, grid, blob_sinogram(geo, True)), config={})
    assert psnr(res.image, ref) > 35
    assert res.extra["scan"] == ("full" if arc > 6 else "short (Parker weights)")


def test_fdk_cone():
    grid = ImageGrid.centred((24, 48, 48), (1.5, 1.5, 1.5))
    blobs = [(tuple(1.2 * np.asarray(c)), 1.0 * s, a) for c, s, a in BLOBS]
    blobs[0] = ((0.0, 0.0, 0.0), 10.0, 0.02)
    ref = blob_image(grid, blobs)
    geo = cone_geometry(np.linspace(0, 2 * np.pi, 90, endpoint=False), 96, 1.5, 300.0, 200.0, n_rows=48,
                        row_spacing_mm=1.5)
    res = classical_ct.fbp(_ct(geo, grid, blob_sinogram(geo, False, blobs)), config={})
    assert psnr(res.image, ref) > 30
    assert abs(res.image.mean() / ref.mean() - 1) < 0.05


@pytest.fixture(scope="module")
def sparse_case():
    grid = ImageGrid.centred((1, 64, 64), (1.0, 1.0, 1.0))
    geo = parallel_geometry(np.linspace(0, np.pi, 20, endpoint=False), 96, 1.0)
    return _ct(geo, grid, disk_sinogram(geo)), disk_image(grid)


def test_sparse_view_ranking(sparse_case):
    m, ref = sparse_case
    scores = {}
    for name, its in (("fbp", None), ("cgls", 30), ("sirt", 100), ("tv", 150)):
        res = getattr(classical_ct, name)(m, config={}, iterations=its, monitor=Monitor())
        assert res.image.shape == ref.shape and res.image.dtype == np.float32
        scores[name] = psnr(res.image, ref)
    # measured: fbp 25.9, cgls 28.5, sirt 33.7, tv 36.3 dB
    assert scores["fbp"] > 23
    assert scores["cgls"] > scores["fbp"] + 1
    assert scores["sirt"] > scores["fbp"] + 3
    assert scores["tv"] > scores["sirt"] + 2
    assert scores["tv"] > 34


def test_iterations_report_and_stop(sparse_case):
    m, _ = sparse_case

    class StopAt(Monitor):
        def stop_requested(self):
            return len(self.history) >= 5

    for name in ("sirt", "cgls", "tv"):
        mon = StopAt()
        res = getattr(classical_ct, name)(m, config={}, iterations=50, monitor=mon)
        assert res.cancelled and res.iterations == 5
        assert [h["iteration"] for h in mon.history] == [1, 2, 3, 4, 5]
        assert all(h["total"] == 50 and "loss" in h for h in mon.history)
    # the data loss decreases
    mon = Monitor()
    classical_ct.sirt(m, config={}, iterations=20, monitor=mon)
    assert mon.history[-1]["loss"] < 0.2 * mon.history[0]["loss"]


def test_bad_inputs(sparse_case):
    m, _ = sparse_case
    with pytest.raises(InputError, match="filter"):
        classical_ct.fbp(m, config={"filter": "shepp"})
    with pytest.raises(InputError, match="tv has no option .lamda"):
        classical_ct.tv(m, config={"lamda": 0.1})
    bad = Measurement("CT", np.zeros((20, 1, 90), np.float32), m.grid, m.geometry)
    with pytest.raises(InputError, match=r"\[20, 1, 90\]"):
        classical_ct.sirt(bad, config={})


def test_every_ct_method_records_the_projector_it_used(sparse_case):
    """`projector` is a config key of every CT method (INR ones too); "auto" is resolved in the
    result's config, and astra without CUDA is refused with the fix."""
    import torch

    from INRReconLib.methods.registry import reconstruct

    m, _ = sparse_case
    for method in ("fbp", "sirt", "cgls", "tv", "inr"):
        assert reconstruct(m, method, iterations=2).config["projector"] == "torch", method
        assert reconstruct(m, method, config={"projector": "torch"}, iterations=2).config["projector"] == "torch"
    if not torch.cuda.is_available():
        for method in ("fbp", "inr"):
            with pytest.raises(InputError, match="projector.*astra.*CUDA"):
                reconstruct(m, method, config={"projector": "astra"}, iterations=2)
    with pytest.raises(InputError, match="projector"):
        reconstruct(m, "tv", config={"projector": "rtk"}, iterations=2)
