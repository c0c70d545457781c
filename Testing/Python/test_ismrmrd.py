"""ISMRMRD raw data (io/ismrmrd_reader.py) on files written with the `ismrmrd` package from
k-space simulated from a slice of the bundled thorax scan (no real ISMRMRD file is available
offline): Cartesian multi-coil with readout oversampling and noise scans, and golden-angle radial,
each reconstructed against the same case written directly in INRRecon's format; prewhitening of
correlated noise; slices, repetitions, the CLI, sniffing, and one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

ismrmrd = pytest.importorskip("ismrmrd", reason="the ismrmrd package (raw/test extras) is not installed")
from ismrmrd import xsd  # noqa: E402

from INRReconLib.cases import thorax_slices  # noqa: E402
from INRReconLib.cli import main  # noqa: E402
from INRReconLib.errors import InputError  # noqa: E402
from INRReconLib.io.ismrmrd_reader import is_ismrmrd_file, read_ismrmrd  # noqa: E402
from INRReconLib.io.measurement import Measurement, is_v1_file, write_measurement  # noqa: E402
from INRReconLib.io.readers import read_measurement, reader_for  # noqa: E402
from INRReconLib.methods.metrics import image_metrics, scale_to_reference  # noqa: E402
from INRReconLib.methods.registry import reconstruct  # noqa: E402
from INRReconLib.physics.grid import ImageGrid  # noqa: E402
from INRReconLib.physics.mr_coil_maps import centred_fft, centred_ifft  # noqa: E402
from INRReconLib.physics.mr_geometry import MRGeometry  # noqa: E402
from INRReconLib.simulate import simulate_mr  # noqa: E402

torch.set_num_threads(1)
N, COILS, FOV = 64, 8, 250.0
SPACING = (FOV / N, FOV / N, 5.0)
# an oblique slice: read along (cos, sin, 0), phase along (-sin·cos t, cos·cos t, sin t) in LPS
_A, _T = np.deg2rad(20.0), np.deg2rad(10.0)
READ = np.array([np.cos(_A), np.sin(_A), 0.0])
PHASE = np.array([-np.sin(_A) * np.cos(_T), np.cos(_A) * np.cos(_T), np.sin(_T)])
SLICE = np.cross(READ, PHASE)
POSITION = np.array([12.0, -30.0, 45.0])
CG = {"iterations": 12}


def _grid(position=POSITION) -> ImageGrid:
    d = np.stack([READ, PHASE, SLICE], axis=1)
    origin = position - d @ (np.array(SPACING) * np.array([N // 2, N // 2, 0]))
    return ImageGrid((N, N, 1), SPACING, tuple(origin), tuple(d.ravel()))


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """Thorax slice of the bundled scan, 256² mean-pooled to 64², as a positive image with a smooth
    phase (complex [1, 64, 64])."""
    s = thorax_slices("embedded")
    f = 256 // N
    mag = np.clip((s.hu[s.nodule_slice] + 1000.0) / 1400.0, 0, 1).reshape(N, f, N, f).mean(axis=(1, 3))
    yy, xx = np.meshgrid(np.linspace(-1, 1, N), np.linspace(-1, 1, N), indexing="ij")
    return (mag * np.exp(0.6j * (xx - 0.5 * yy)))[None].astype(np.complex64)


def _psnr(m: Measurement, truth: np.ndarray, method="cgsense", config=CG) -> float:
    image = np.asarray(reconstruct(m, method, config=dict(config)).image).reshape(truth.shape)
    ref = np.abs(truth)
    return image_metrics(scale_to_reference(image, ref), ref)["psnr"]


# --------------------------------------------------------------------------------------------
# writing ISMRMRD files with the ismrmrd package


def _space(matrix, fov):
    return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=matrix[2]),
                                 fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]))


def _header(*, encoded=(2 * N, N, 1), encoded_fov=(2 * FOV, FOV, 5.0), recon=(N, N, 1), recon_fov=(FOV, FOV, 5.0),
            trajectory="cartesian", centre=N // 2, slices=1, calibration_mode=None, drop=()) -> str:
    limits = xsd.encodingLimitsType(kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=encoded[1] - 1,
                                                                         center=centre),
                                    slice=xsd.limitType(minimum=0, maximum=slices - 1, center=0))
    parallel = None if calibration_mode is None else xsd.parallelImagingType(
        accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=2, kspace_encoding_step_2=1),
        calibrationMode=xsd.calibrationModeType(calibration_mode))
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        encoding=[xsd.encodingType(encodedSpace=_space(encoded, encoded_fov), reconSpace=_space(recon, recon_fov),
                                   encodingLimits=limits, trajectory=xsd.trajectoryType(trajectory),
                                   parallelImaging=parallel)])
    text = xsd.ToXML(header)
    for tag in drop:  # elements the test removes, e.g. a schema-required one we do not need
        text = re.sub(rf"\s*<{tag}>.*?</{tag}>", "", text, flags=re.S)
    return text


def _acq(data, *, traj=None, step1=0, slice_=0, repetition=0, phase=0, flags=(), dwell_us=10.0, centre=None,
         position=POSITION):
    data = np.ascontiguousarray(data, np.complex64)
    extra = {} if centre is None else {"center_sample": centre}
    acq = ismrmrd.Acquisition.from_array(data, None if traj is None else np.ascontiguousarray(traj, np.float32),
                                         sample_time_us=dwell_us, **extra)
    acq.idx.kspace_encode_step_1 = step1
    acq.idx.slice = slice_
    acq.idx.repetition = repetition
    acq.idx.phase = phase
    for flag in flags:
        acq.set_flag(flag)
    acq.position[:] = position
    acq.read_dir[:], acq.phase_dir[:], acq.slice_dir[:] = READ, PHASE, SLICE
    return acq


def _write(path, header: str, acquisitions) -> None:
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(header.encode())
        for acq in acquisitions:
            ds.append_acquisition(acq)


def _noise(rng, shape, sigma=1.0, mixing=None):
    n = sigma / np.sqrt(2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return n if mixing is None else np.einsum("cd,d...->c...", mixing, n)


def _noise_scans(rng, n_scans=32, n_samples=4 * N, sigma=1.0):
    """Noise-adjustment acquisitions: 8192 samples per coil, so the estimated whitening is within
    about 1% of the true one (fewer mix the coils measurably: 1024 samples cost 0.15 dB radial)."""
    return [_acq(_noise(rng, (COILS, n_samples), sigma), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
            for _ in range(n_scans)]


def _oversample(k):
    """[..., nx] Cartesian lines → 2× readout oversampling (the object in the central half)."""
    img = centred_ifft(k, axes=(-1,))
    pad = [(0, 0)] * (k.ndim - 1) + [(k.shape[-1] // 2, k.shape[-1] // 2)]
    return centred_fft(np.pad(img, pad), axes=(-1,))


def _crop(k):
    """The inverse of _oversample: the direct file's readout."""
    n = k.shape[-1] // 2
    return centred_fft(centred_ifft(k, axes=(-1,))[..., n // 2:n // 2 + n], axes=(-1,))


def _cartesian_lines(truth, seed=0, n_frames=1):
    """Noise-free Cartesian k-space [F, C, ny, nx] (R = 2, 24 ACS lines), its mask and the true maps."""
    m = simulate_mr(truth, _grid(), trajectory="cartesian", acceleration=2.0, acs_lines=24, n_coils=COILS,
                    n_frames=n_frames, seed=seed)
    k = np.zeros((n_frames, COILS, N, N), np.complex128)
    for f in range(n_frames):
        k[f][:, m.geometry.mask[f]] = m.data[f]
    return k, m.geometry.mask, m.geometry.coil_maps


def _cartesian_file(path, k_os, mask, *, header=None, noise=(), acs=range(N // 2 - 12, N // 2 + 12), **kw):
    acqs = list(noise)
    for f in range(k_os.shape[0]):
        for y in np.flatnonzero(mask[f].any(axis=-1)):
            flags = [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING] if y in acs else []
            acqs.append(_acq(k_os[f, :, y], step1=int(y), repetition=f, flags=flags, centre=k_os.shape[-1] // 2, **kw))
    _write(path, header or _header(), acqs)


@pytest.fixture(scope="module")
def cartesian(truth, tmp_path_factory):
    """The Cartesian case: ISMRMRD file (2× oversampled readouts, white noise, noise scans) and the
    same k-space written directly (readout cropped, no maps: estimated on reading as for the import)."""
    rng = np.random.default_rng(1)
    k, mask, maps = _cartesian_lines(truth)
    k_os = _oversample(k)
    sigma = 0.02 * float(np.sqrt(np.mean(np.abs(k_os[:, :, mask[0].any(-1)]) ** 2)))
    k_os = np.where(mask[:, None].any(-1, keepdims=True), k_os + _noise(rng, k_os.shape, sigma), 0)
    folder = tmp_path_factory.mktemp("cartesian")
    mrd = folder / "cartesian.mrd"
    _cartesian_file(mrd, k_os, mask, noise=_noise_scans(rng, sigma=sigma))
    data = _crop(k_os)[0][:, mask[0]][None].astype(np.complex64)
    direct = Measurement("MR", data, _grid(), MRGeometry("cartesian", mask=mask))
    v1 = write_measurement(direct, folder / "direct.h5")
    known = Measurement("MR", data, _grid(), MRGeometry("cartesian", mask=mask, coil_maps=maps))
    return {"mrd": mrd, "v1": v1, "known_maps": known, "sigma": sigma}


@pytest.fixture(scope="module")
def radial(truth, tmp_path_factory):
    """Golden-angle radial, 48 spokes of 128 samples (2× along the spoke), noise scans, trajectory
    in cycles per voxel (kx, ky): the ISMRMRD convention."""
    rng = np.random.default_rng(2)
    m = simulate_mr(truth, _grid(), trajectory="radial", n_spokes=48, n_coils=COILS, seed=2)
    sigma = 0.02 * float(np.sqrt(np.mean(np.abs(m.data) ** 2)))
    data = (m.data + _noise(rng, m.data.shape, sigma)).astype(np.complex64)
    traj = m.geometry.trajectory  # [1, (ky, kx), S] rad/voxel
    n_read = 2 * N
    folder = tmp_path_factory.mktemp("radial")
    files = {}
    for units, scale in (("cycles_per_voxel", 1 / (2 * np.pi)), ("per_fov", N / (2 * np.pi))):
        acqs = list(_noise_scans(rng, sigma=sigma))
        for s in range(48):
            sl = slice(s * n_read, (s + 1) * n_read)
            kxy = np.stack([traj[0, 1, sl], traj[0, 0, sl]], axis=1) * scale  # columns (kx, ky)
            acqs.append(_acq(data[0][:, sl], traj=kxy))
        files[units] = folder / f"radial_{units}.h5"
        _write(files[units], _header(encoded=(N, N, 1), encoded_fov=(FOV, FOV, 5.0), trajectory="radial"), acqs)
    direct = dataclasses.replace(m, data=data, geometry=dataclasses.replace(m.geometry, coil_maps=None))
    v1 = write_measurement(direct, folder / "direct.h5")
    return {**files, "v1": v1, "known_maps": dataclasses.replace(m, data=data), "traj": traj}


# --------------------------------------------------------------------------------------------
# the two paths agree


def test_cartesian_import_matches_the_direct_file(cartesian, truth):
    imported = read_ismrmrd(cartesian["mrd"])
    direct = read_measurement(cartesian["v1"])
    assert imported.data.shape == direct.data.shape == (1, COILS, N * N // 2)
    assert np.array_equal(imported.geometry.mask, direct.geometry.mask)
    g = imported.grid
    assert g.size == (N, N, 1) and np.allclose(g.spacing, SPACING)
    assert np.allclose(g.origin, _grid().origin, atol=1e-3) and np.allclose(g.direction, _grid().direction, atol=1e-6)
    source = json.loads(imported.attrs["source"])
    assert source["importer"] == "ismrmrd" and source["readout_oversampling_removed"]
    assert source["noise_prewhitening"]["noise_acquisitions"] == 32 and source["acquisitions"]["noise"] == 32
    assert source["coil_maps"]["method"] == "espirit"
    assert source["header_schema"].startswith("accepted")
    # whitened by the noise scans of the same sigma: white noise of unit variance per sample
    assert imported.attrs["noise_variance"] == pytest.approx(1.0)
    residual = imported.data - direct.data / cartesian["sigma"]
    assert np.linalg.norm(residual) < 0.1 * np.linalg.norm(imported.data)  # ≈ 1/sigma, small coil mixing
    p_imported, p_direct = _psnr(imported, truth), _psnr(direct, truth)
    assert abs(p_imported - p_direct) < 0.1, (p_imported, p_direct)
    assert p_imported > 20.0


def test_radial_import_matches_the_direct_file(radial, truth):
    direct = read_measurement(radial["v1"])
    for units in ("cycles_per_voxel", "per_fov"):
        imported = read_measurement(radial[units])
        assert imported.geometry.type == "noncartesian"
        assert imported.data.shape == direct.data.shape
        # rows (ky, kx) from ISMRMRD's columns (kx, ky), rad/voxel; +π wrapped to -π as the direct one
        assert np.allclose(imported.geometry.trajectory, radial["traj"], atol=1e-5)
        source = json.loads(imported.attrs["source"])
        assert source["trajectory_units"]["assumed"].startswith("cycles per voxel" if units == "cycles_per_voxel"
                                                                else "cycles per encoded FOV")
        assert source["samples_dropped_beyond_pi"] == 0
    assert imported.attrs["noise_variance"] == pytest.approx(1.0)
    p_imported, p_direct = _psnr(imported, truth), _psnr(direct, truth)
    assert abs(p_imported - p_direct) < 0.1, (p_imported, p_direct)
    assert p_imported > 20.0


def test_correlated_noise_is_whitened(truth, tmp_path):
    """Noise scans at half the image's dwell time, coils mixed by a matrix (correlation ~0.6):
    the imported image noise (the same file minus its noise-free twin) is white with variance
    dwell_noise / dwell_image = 0.5, as the root attribute says."""
    rng = np.random.default_rng(3)
    mixing = np.eye(COILS) + 0.6 * rng.standard_normal((COILS, COILS)) + 0.3j * rng.standard_normal((COILS, COILS))
    k, mask, _ = _cartesian_lines(truth)
    k_os = _oversample(k)
    sampled = mask[:, None].any(-1, keepdims=True)
    noise = np.where(sampled, np.sqrt(0.5) * _noise(rng, k_os.shape[1:], mixing=mixing)[None], 0)
    scans = [_acq(_noise(rng, (COILS, 2 * N), mixing=mixing), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT], dwell_us=5.0)
             for _ in range(64)]
    _cartesian_file(tmp_path / "noisy.h5", k_os + noise, mask, noise=scans, dwell_us=10.0)
    _cartesian_file(tmp_path / "clean.h5", k_os, mask, noise=scans, dwell_us=10.0)
    noisy, clean = (read_ismrmrd(tmp_path / f"{n}.h5", coil_maps=None) for n in ("noisy", "clean"))
    raw = np.einsum("cd,de->ce", mixing, mixing.conj().T)
    raw_corr = np.abs(raw) / np.sqrt(np.outer(np.diag(raw).real, np.diag(raw).real))
    assert raw_corr[~np.eye(COILS, dtype=bool)].max() > 0.5
    n = (noisy.data - clean.data)[0]
    cov = n @ n.conj().T / n.shape[1]
    assert np.allclose(np.diag(cov).real, 0.5, rtol=0.12)
    assert np.abs(cov[~np.eye(COILS, dtype=bool)]).max() < 0.06  # decorrelated: was > 0.5 x 0.5 variance
    assert noisy.attrs["noise_variance"] == pytest.approx(0.5)
    whitening = json.loads(noisy.attrs["source"])["noise_prewhitening"]
    assert whitening["noise_dwell_us"] == 5.0 and whitening["image_dwell_us"] == 10.0
    assert whitening["max_coil_correlation"] > 0.5


def test_radial_samples_beyond_the_grid_band_are_dropped(radial, tmp_path):
    """Spokes reaching twice the recon grid's Nyquist (1/FOV units up to N): the outer samples are
    dropped, the rest kept at their positions."""
    traj = radial["traj"]
    acqs = []
    for s in range(8):
        sl = slice(s * 2 * N, (s + 1) * 2 * N)
        kxy = np.stack([traj[0, 1, sl], traj[0, 0, sl]], axis=1) * (2 * N / (2 * np.pi))  # up to ±N per FOV
        acqs.append(_acq(np.ones((COILS, 2 * N)), traj=kxy))
    path = tmp_path / "wide.h5"
    _write(path, _header(encoded=(N, N, 1), encoded_fov=(FOV, FOV, 5.0), trajectory="radial"), acqs)
    m = read_ismrmrd(path, coil_maps=None)
    dropped = json.loads(m.attrs["source"])["samples_dropped_beyond_pi"]
    assert dropped + m.data.shape[-1] == 8 * 2 * N and 0.4 < dropped / (16 * N) < 0.7
    assert float(np.abs(m.geometry.trajectory).max()) <= np.pi * (1 + 1e-3)


def test_cartesian_3d(tmp_path):
    """A 3D slab: kspace_encode_step_2 → z, the mask of (kz, ky) phase encodes as simulated."""
    nz, n, coils = 8, 16, 2
    vol = np.random.default_rng(4).random((nz, n, n)).astype(np.float32)
    d = np.stack([READ, PHASE, SLICE], axis=1)
    spacing = (4.0, 4.0, 3.0)
    origin = POSITION - d @ (np.array(spacing) * np.array([n // 2, n // 2, nz // 2]))
    grid = ImageGrid((n, n, nz), spacing, tuple(origin), tuple(d.ravel()))
    m = simulate_mr(vol, grid, trajectory="cartesian", acceleration=2.0, acs_lines=4, n_coils=coils, upsample=1)
    mask = m.geometry.mask[0]
    k = np.zeros((coils, nz, n, n), np.complex64)
    k[:, mask] = m.data[0]
    k_os = _oversample(k)
    acqs = []
    for z, y in zip(*np.nonzero(mask.any(-1))):
        acq = _acq(k_os[:, z, y], step1=int(y), centre=n)
        acq.idx.kspace_encode_step_2 = int(z)
        acqs.append(acq)
    path = tmp_path / "slab.h5"
    header = _header(encoded=(2 * n, n, nz), encoded_fov=(8.0 * n, 4.0 * n, 3.0 * nz), recon=(n, n, nz),
                     recon_fov=(4.0 * n, 4.0 * n, 3.0 * nz), centre=n // 2)
    header = header.replace("</kspace_encoding_step_1>", "</kspace_encoding_step_1><kspace_encoding_step_2>"
                            f"<minimum>0</minimum><maximum>{nz - 1}</maximum><center>{nz // 2}</center>"
                            "</kspace_encoding_step_2>")
    _write(path, header, acqs)
    imported = read_ismrmrd(path, coil_maps=None)
    assert imported.grid.size == (n, n, nz) and np.allclose(imported.grid.origin, origin, atol=1e-3)
    assert np.array_equal(imported.geometry.mask[0], mask)
    assert np.allclose(imported.data, m.data, atol=1e-4 * float(np.abs(m.data).max()))


@pytest.mark.parametrize("mode", ["embedded", "separate"])
def test_pure_calibration_lines(truth, tmp_path, mode):
    """Lines flagged ACQ_IS_PARALLEL_CALIBRATION alone (a reference scan): data in embedded mode,
    coil-map calibration only in separate mode."""
    k, _, _ = _cartesian_lines(truth)
    k_os = _oversample(k)
    imaging = np.arange(0, N, 2)  # R = 2, no fully sampled centre
    reference = np.arange(N // 2 - 12, N // 2 + 12)
    acqs = [_acq(k_os[0, :, y], step1=int(y), centre=N) for y in imaging]
    acqs += [_acq(k_os[0, :, y], step1=int(y), centre=N, flags=[ismrmrd.ACQ_IS_PARALLEL_CALIBRATION])
             for y in reference]
    path = tmp_path / f"{mode}.h5"
    _write(path, _header(calibration_mode=mode), acqs)
    m = read_ismrmrd(path)
    rows = m.geometry.mask[0].any(-1)
    source = json.loads(m.attrs["source"])
    if mode == "embedded":
        assert rows.sum() == len(set(imaging) | set(reference)) and source["calibration_lines"] == "data"
    else:
        assert rows.sum() == len(imaging) and source["coil_maps"]["from"] == "separate calibration lines"
    assert m.geometry.coil_maps.shape == (COILS, N, N)


# --------------------------------------------------------------------------------------------
# slices, frames, the CLI, sniffing


def test_several_slices_need_slice(truth, tmp_path):
    k, mask, _ = _cartesian_lines(truth)
    acqs = []
    for s, z in ((0, 0.0), (1, 6.0)):
        for y in np.flatnonzero(mask[0].any(-1)):
            acqs.append(_acq(_oversample(k)[0, :, y], step1=int(y), slice_=s, position=POSITION + z * SLICE))
    path = tmp_path / "slices.h5"
    _write(path, _header(slices=2), acqs)
    with pytest.raises(InputError, match=r"2 slices \[0, 1\].*--slice") as err:
        read_measurement(path)
    assert "\n" not in str(err.value) and err.value.field == "ismrmrd slice"
    with pytest.raises(InputError, match="slice 5 is not in"):
        read_ismrmrd(path, slice_index=5)
    second = read_ismrmrd(path, slice_index=1, coil_maps=None)
    assert np.allclose(second.grid.centre_mm - _grid().centre_mm, 6.0 * SLICE, atol=1e-3)


def test_repetitions_are_frames(truth, tmp_path):
    k, mask, _ = _cartesian_lines(truth, n_frames=3)  # a new mask draw per repetition, the same count
    path = tmp_path / "dynamic.h5"
    _cartesian_file(path, _oversample(k), mask)
    m = read_ismrmrd(path)
    assert m.data.shape == (3, COILS, N * N // 2) and np.array_equal(m.geometry.mask, mask)
    assert [f["repetition"] for f in json.loads(m.attrs["source"])["frames"]] == [0, 1, 2]
    assert "noise_variance" in m.attrs  # no noise scans: from the readout-oversampling band
    # frames with different numbers of lines
    bad = mask.copy()
    bad[2, 1] = ~bad[2, 1]
    _cartesian_file(tmp_path / "uneven.h5", _oversample(k), bad)
    with pytest.raises(InputError, match="same number in every frame") as err:
        read_ismrmrd(tmp_path / "uneven.h5")
    assert err.value.field == "ismrmrd frames"


def test_cli_import_info_reconstruct(cartesian, tmp_path, capsys):
    out = tmp_path / "imported.h5"
    assert main(["import", "ismrmrd", str(cartesian["mrd"]), "--out", str(out), "--coil-maps", "lowres"]) == 0
    assert main(["info", str(out)]) == 0
    assert main(["info", str(cartesian["mrd"])]) == 0
    assert f"{COILS} coil(s)" in capsys.readouterr().out
    assert json.loads(read_measurement(out).attrs["source"])["coil_maps"]["method"] == "lowres"
    image = tmp_path / "cg.nrrd"
    assert main(["reconstruct", str(cartesian["mrd"]), "--method", "cgsense", "--device", "cpu",
                 "--out", str(image)]) == 0
    assert image.is_file()
    assert main(["import", "twix", str(cartesian["mrd"]), "--dataset", "x", "--out", str(out)]) == 2


def test_sniffing(cartesian, radial):
    for path in (cartesian["mrd"], radial["per_fov"]):
        assert is_ismrmrd_file(path) and not is_v1_file(path) and reader_for(path).name == "ismrmrd"
    for path in (cartesian["v1"], radial["v1"]):
        assert is_v1_file(path) and not is_ismrmrd_file(path) and reader_for(path).name == "inrrecon-h5"


# --------------------------------------------------------------------------------------------
# bad inputs: one line naming the field


def _one_line(err, field):
    text = str(err.value)
    assert "\n" not in text and "Fix:" in text and err.value.field.startswith(field), text


def test_truncated_file(cartesian, tmp_path):
    whole = cartesian["mrd"].read_bytes()
    for size in (200, len(whole) // 2):
        cut = tmp_path / "cut.mrd"
        cut.write_bytes(whole[:size])
        with pytest.raises(InputError) as err:
            read_measurement(cut)
        _one_line(err, "ismrmrd")
        assert "cut.mrd" in str(err.value)


def test_no_imaging_acquisitions(tmp_path):
    path = tmp_path / "noise_only.h5"
    _write(path, _header(), _noise_scans(np.random.default_rng(0)))
    with pytest.raises(InputError, match="no imaging acquisitions.*32 noise") as err:
        read_measurement(path)
    _one_line(err, "ismrmrd acquisitions")


@pytest.mark.parametrize("drop, field", [(("encoding",), "ismrmrd header encoding"),
                                         (("fieldOfView_mm",), "ismrmrd header encoding.encodedSpace.fieldOfView_mm")])
def test_header_without_encoding_or_fov(truth, tmp_path, drop, field):
    k, mask, _ = _cartesian_lines(truth)
    path = tmp_path / "bad_header.h5"
    _cartesian_file(path, _oversample(k), mask, header=_header(drop=drop))
    with pytest.raises(InputError) as err:
        read_ismrmrd(path)
    _one_line(err, field)


def test_header_the_package_rejects_still_imports(truth, tmp_path):
    """No experimentalConditions or encodingLimits (schema-required, the ismrmrd 1.15 parser
    raises) and a vendor element the schema does not know (every version's parser raises): the
    fields needed are read with xml.etree, the rejection is recorded."""
    k, mask, _ = _cartesian_lines(truth)
    header = _header(drop=("experimentalConditions", "encodingLimits"))
    header = header.replace("<trajectory>", "<vendorSequenceNote>fl2d</vendorSequenceNote><trajectory>")
    with pytest.raises(Exception):
        xsd.CreateFromDocument(header)
    path = tmp_path / "lean_header.h5"
    _cartesian_file(path, _oversample(k), mask, header=header)
    m = read_ismrmrd(path, coil_maps=None)
    assert m.data.shape == (1, COILS, N * N // 2) and np.array_equal(m.geometry.mask, mask)
    assert json.loads(m.attrs["source"])["header_schema"].startswith("rejected")


def test_unsupported_trajectory_dimensions(radial, tmp_path):
    traj = np.zeros((2 * N, 4), np.float32)
    acqs = [_acq(np.zeros((COILS, 2 * N)), traj=traj) for _ in range(4)]
    path = tmp_path / "traj4.h5"
    _write(path, _header(encoded=(N, N, 1), encoded_fov=(FOV, FOV, 5.0), trajectory="spiral"), acqs)
    with pytest.raises(InputError, match=r"\[4\]") as err:
        read_measurement(path)
    _one_line(err, "ismrmrd trajectory_dimensions")


def test_radial_frames_with_different_sample_counts(radial, tmp_path):
    traj = radial["traj"]
    acqs = []
    for rep, spokes in ((0, 10), (1, 9)):
        for s in range(spokes):
            sl = slice(s * 2 * N, (s + 1) * 2 * N)
            acqs.append(_acq(np.ones((COILS, 2 * N)), traj=np.stack([traj[0, 1, sl], traj[0, 0, sl]], 1) / (2 * np.pi),
                             repetition=rep))
    path = tmp_path / "uneven_radial.h5"
    _write(path, _header(encoded=(N, N, 1), encoded_fov=(FOV, FOV, 5.0), trajectory="radial"), acqs)
    with pytest.raises(InputError, match=r"\[1152, 1280\]") as err:
        read_ismrmrd(path, coil_maps=None)
    _one_line(err, "ismrmrd frames")


# --------------------------------------------------------------------------------------------
# measured (printed with -s): PSNR of both paths and the coil-map gap


def test_report_psnr_and_coil_map_gap(cartesian, radial, truth):
    import time

    rows = []
    for name, case, path in (("cartesian", cartesian, cartesian["mrd"]),
                             ("radial", radial, radial["cycles_per_voxel"])):
        t = time.perf_counter()
        imported = read_ismrmrd(path)
        seconds = time.perf_counter() - t
        p_imp, p_dir, p_known = (_psnr(m, truth) for m in (imported, read_measurement(case["v1"]), case["known_maps"]))
        rows.append((name, p_imp, p_dir, p_known, seconds))
        assert p_known - p_imp < 4.0  # estimated maps cost a few dB at most on this case
    for name, p_imp, p_dir, p_known, seconds in rows:
        print(f"{name}: imported {p_imp:.2f} dB, direct {p_dir:.2f} dB, true maps {p_known:.2f} dB "
              f"(gap {p_known - p_imp:.2f} dB), import {seconds:.2f} s")
