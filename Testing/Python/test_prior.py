"""Priors: onto the measurement grid in physics units, and a prior volume's slices for 2D data."""

from pathlib import Path

import numpy as np
import pytest

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement
from INRReconLib.io.prior import PriorSlices, load_prior, load_prior_slices
from INRReconLib.io.volume import MU_WATER_PER_MM, hu_to_mu, read_volume, write_volume
from INRReconLib.physics.ct_geometry import parallel_geometry
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_geometry import MRGeometry

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def ct_measurement(grid, mu_water=None):
    geom = parallel_geometry(np.linspace(0, np.pi, 4, endpoint=False), 8, 1.0)
    attrs = {} if mu_water is None else {"mu_water_per_mm": mu_water}
    return Measurement("CT", np.zeros((4, 1, 8), np.float32), grid, geom, attrs)


def test_load_prior_ct_from_file_on_another_grid(tmp_path):
    dst = ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (-19.0, -19.0, 0.0))
    src = ImageGrid((50, 50, 1), (1.0, 1.0, 2.0), (-22.0, -27.0, 8.0))  # shifted, finer, other z
    hu = np.full(src.shape, -1000.0, np.float32)
    hu[:, 10:40, 10:40] = 0.0  # water square from x = -12..17, y = -17..12 mm
    write_volume(tmp_path / "prior.nrrd", hu, src)
    out = load_prior(tmp_path / "prior.nrrd", ct_measurement(dst, mu_water=0.02))
    assert out.shape == dst.shape and out.dtype == np.float32
    assert out[0, 10, 10] == pytest.approx(0.02)  # (x, y) = (1, 1) mm: inside the square
    assert out[0, 0, 0] == pytest.approx(0.0)  # (-19, -19): air
    assert out.min() >= 0.0
    # default μ_water without the attribute; units stated explicitly
    out2 = load_prior((hu, src), ct_measurement(dst), units="HU")
    assert out2[0, 10, 10] == pytest.approx(MU_WATER_PER_MM)
    # μ input passes through unchanged on the same grid
    mu = np.full(dst.shape, 0.01, np.float32)
    np.testing.assert_array_equal(load_prior(mu, ct_measurement(dst)), mu)


def test_load_prior_errors():
    dst = ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (-19.0, -19.0, 0.0))
    far = ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (300.0, 0.0, 0.0))
    with pytest.raises(InputError) as info:
        load_prior((np.zeros(far.shape) - 1000, far), ct_measurement(dst))
    assert info.value.field == "prior" and "Register" in str(info.value)
    with pytest.raises(InputError, match="neither HU"):
        load_prior((np.full(dst.shape, 1500.0), dst), ct_measurement(dst))  # HU + 1024 stored raw
    with pytest.raises(InputError, match="2D image but the measurement is 3D"):
        dst3 = ImageGrid((20, 20, 4), (2.0, 2.0, 2.0))
        load_prior((np.zeros(dst.shape), dst), ct_measurement(dst3))
    with pytest.raises(InputError, match="no grid was given"):
        load_prior(np.zeros((5, 5)), ct_measurement(dst))


def test_load_prior_mr_normalised():
    grid = ImageGrid((64, 64, 1), (1.0, 1.0, 1.0))
    meas = Measurement("MR", np.zeros((1, 1, 4096), np.complex64), grid,
                       MRGeometry("cartesian", mask=np.ones((1, 64, 64), bool)), {})
    img = np.random.default_rng(0).random(grid.shape) * 3000 * np.exp(1j)
    img[0, 0, 0] = 1e6  # one hot voxel must not squash the rest
    out = load_prior((img, grid), meas)
    assert out.max() == 1.0 and out.min() >= 0.0
    assert np.median(out) > 0.4


def test_real_ct_prior_3d_to_2d_slice():
    path = DATA / "ct_thorax" / "ct_thorax_hu_256x256x141.nrrd"
    if not path.exists():
        pytest.skip("shared real data absent")
    arr, grid = read_volume(path)
    assert arr.shape == (141, 256, 256) and grid.spacing[2] == pytest.approx(2.0)
    # a 2D grid through slice 62 (z = 124 mm), half the in-plane resolution
    dst = ImageGrid((128, 128, 1), (3.90625, 3.90625, 2.0), (0.9765625, 0.9765625, 124.0))
    prior = load_prior(path, ct_measurement(dst))
    assert prior.shape == (1, 128, 128)
    ref = hu_to_mu(arr[62].reshape(128, 2, 128, 2).mean(axis=(1, 3)))
    # linear interpolation at the 2x2 block centres = block mean of a bilinear surface
    assert np.abs(prior[0] - np.clip(ref, 0, None)).mean() < 1e-3
    assert 0.015 < np.median(prior[0][prior[0] > 0.01]) < 0.025  # soft tissue near water


def _stack_volume(n_slices=9, z0=-8.0):
    """A mu volume whose slice k holds 0.001 (k + 1) inside a square; 2 mm slices from z0."""
    grid = ImageGrid((20, 20, n_slices), (2.0, 2.0, 2.0), (-19.0, -19.0, z0))
    vol = np.zeros(grid.shape, np.float32)
    for k in range(n_slices):
        vol[k, 5:15, 5:15] = 0.001 * (k + 1)
    return vol, grid


def test_prior_slices_of_a_volume_for_2d_data():
    """The prior's own slices near the plane, each on the 2D grid, with their distance from it;
    the plane (1 mm off two slices) is what load_prior gives."""
    vol, src = _stack_volume()
    dst = ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (-19.0, -19.0, 1.0))
    meas = ct_measurement(dst)
    slices = load_prior_slices((vol, src), meas, units="mu")
    assert isinstance(slices, PriorSlices)
    assert slices.offsets_mm == tuple(float(v) for v in range(-9, 8, 2))
    assert slices.images.shape == (9, 20, 20)
    for k, image in enumerate(slices.images):
        assert image[10, 10] == pytest.approx(0.001 * (k + 1)) and image[0, 0] == 0.0
    np.testing.assert_array_equal(slices.plane, load_prior((vol, src), meas, units="mu"))
    assert slices.plane[0, 10, 10] == pytest.approx(0.0055)  # halfway between slices 4 and 5
    images, offsets = slices.within(2.0)
    assert offsets == (-1.0, 1.0) and [round(float(i[10, 10]), 4) for i in images] == [0.005, 0.006]


def test_prior_slices_only_for_a_parallel_volume_and_2d_data():
    vol, src = _stack_volume()
    dst = ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (-19.0, -19.0, 1.0))
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    tilted = ImageGrid(src.size, src.spacing, src.origin, (1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c))
    assert load_prior_slices((vol, tilted), ct_measurement(dst), units="mu").images.shape == (0, 20, 20)
    flat = load_prior_slices((vol[4:5], ImageGrid((20, 20, 1), (2.0, 2.0, 2.0), (-19.0, -19.0, 0.0))),
                             ct_measurement(dst), units="mu")
    assert flat.offsets_mm == () and flat.plane[0, 10, 10] == pytest.approx(0.005)
    dst3 = ImageGrid((20, 20, 4), (2.0, 2.0, 2.0), (-19.0, -19.0, -3.0))
    assert load_prior_slices((vol, src), ct_measurement(dst3), units="mu").offsets_mm == ()


def _centred_volume(path, slice_index=None):
    """A scan as a user loads it next to another: in-plane centred on the same origin."""
    from INRReconLib.io.volume import read_volume
    from INRReconLib.physics.grid import ImageGrid

    array, grid = read_volume(path)
    z = array.shape[0] // 2 if slice_index is None else slice_index
    centred = ImageGrid.centred(array.shape, grid.spacing)
    return np.asarray(array, np.float32), ImageGrid(grid.size, grid.spacing, centred.origin[:2] + (-z * grid.spacing[2],),
                                                    grid.direction)


QUICK_NERP = {"preset": "hash-ct", "iterations": 1, "embed_iterations": 1}


def test_a_prior_of_another_patient_or_modality_is_caught(shared_data):
    """Real mismatched pairs: another patient's chest CT as the prior of the thorax CT, a chest CT
    as the prior of a brain MR. NeRP stops naming the mismatch; prior_mismatch 'warn' goes on and
    says so in the result; the patient's own earlier scan passes."""
    from INRReconLib.cases import ct2d_case, mr2d_case
    from INRReconLib.errors import InputError
    from INRReconLib.io.prior import load_prior_slices
    from INRReconLib.methods.presets import load_config
    from INRReconLib.methods.registry import reconstruct

    case = ct2d_case("parallel", 20, size=64, prior_volume=True, source="embedded")
    own = reconstruct(case.measurement, "nerp", prior=case.prior, config=load_config(QUICK_NERP), device="cpu")
    assert own.extra["prior_registration"]["match_correlation"] > 0.9 and not own.extra.get("warnings")

    other = load_prior_slices(_centred_volume(shared_data / "ct_lung1" / "lung1_image.nrrd"), case.measurement)
    with pytest.raises(InputError, match="does not match the new data") as info:
        reconstruct(case.measurement, "nerp", prior=other, config=load_config(QUICK_NERP), device="cpu")
    assert "prior_mismatch" in str(info.value)
    warned = reconstruct(case.measurement, "nerp", prior=other, device="cpu",
                         config=load_config({**QUICK_NERP, "prior_mismatch": "warn"}))
    assert warned.extra["prior_registration"]["match_correlation"] < 0.85
    assert any("does not match" in w for w in warned.extra["warnings"])

    mr = mr2d_case(40, 1, size=64)
    chest = load_prior_slices(_centred_volume(shared_data / "ct_thorax" / "ct_thorax_hu_256x256x141.nrrd", 62),
                              mr.measurement)
    with pytest.raises(InputError, match="does not match the new data"):
        reconstruct(mr.measurement, "nerp", prior=chest, device="cpu",
                    config=load_config({**QUICK_NERP, "preset": "hash-mr"}))
