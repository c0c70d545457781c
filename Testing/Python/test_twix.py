"""Siemens raw data (io/twix.py) on the real Skyra GRE file of ../shared/data/mr_raw: import,
the fully sampled image against an independent path (twixtools' own mapping, FFT, root sum of
squares), retrospective undersampling reconstructed with CG-SENSE and the INR on maps estimated
from the undersampled data, direct use by `reconstruct`/`info`, and one-line errors for
truncated and foreign files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

pytest.importorskip("twixtools", reason="twixtools (the raw extra) is not installed")

from INRReconLib.cli import main  # noqa: E402
from INRReconLib.errors import InputError  # noqa: E402
from INRReconLib.io.measurement import Measurement  # noqa: E402
from INRReconLib.io.readers import read_measurement  # noqa: E402
from INRReconLib.io.twix import read_twix  # noqa: E402
from INRReconLib.methods.metrics import image_metrics, scale_to_reference  # noqa: E402
from INRReconLib.methods.registry import reconstruct  # noqa: E402


@pytest.fixture(scope="module")
def twix_file(shared_data):
    path = shared_data / "mr_raw" / "siemens_skyra_gre_phantom.dat"
    if not path.is_file():
        pytest.skip("mr_raw/siemens_skyra_gre_phantom.dat not in ../shared/data")
    return path


@pytest.fixture(scope="module")
def full(twix_file):
    return read_twix(twix_file)


def _independent_rss(path) -> np.ndarray:
    """twixtools' own k-space array (oversampling removed by twixtools), centred 2D FFT, RSS."""
    import twixtools

    with contextlib.redirect_stdout(io.StringIO()):
        image = twixtools.map_twix(str(path))[-1]["image"]
    image.flags["remove_os"] = True
    k = np.asarray(image[:]).squeeze()  # [lines, coils, columns]
    x = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(0, 2)), axes=(0, 2)), axes=(0, 2))
    return np.sqrt(np.sum(np.abs(x) ** 2, axis=1))


def test_import_reads_the_real_file(twix_file, full, tmp_path):
    assert full.data.shape == (1, 2, 160 * 160)  # 2 coils, fully sampled, readout oversampling removed
    assert full.grid.size == (160, 160, 1) and full.grid.spacing == (1.25, 1.25, 4.0)
    d = np.asarray(full.grid.direction).reshape(3, 3)
    assert np.allclose(np.abs(np.linalg.det(d)), 1) and d[2, 2] > 0.99  # a transversal slice, normal along S
    source = json.loads(full.attrs["source"])
    assert source["importer"] == "siemens-twix" and source["files"][0]["name"] == twix_file.name
    assert len(source["files"][0]["sha256"]) == 64 and source["header"]["flReadoutOSFactor"] == 2.0
    assert source["coil_maps"]["method"] == "espirit" and source["readout_oversampling_removed"]
    out = tmp_path / "gre.h5"
    assert main(["import", "twix", str(twix_file), "--out", str(out), "--coil-maps", "lowres"]) == 0
    again = read_measurement(out)
    assert json.loads(again.attrs["source"])["coil_maps"]["method"] == "lowres"
    assert np.array_equal(again.data, full.data)


def test_fully_sampled_image_matches_an_independent_path(twix_file, full):
    combined = np.abs(np.asarray(reconstruct(full, "adjoint").image)).reshape(160, 160)
    rss = _independent_rss(twix_file)
    a, b = combined / np.linalg.norm(combined), rss / np.linalg.norm(rss)
    assert float(np.sum(a * b)) > 0.995
    assert float(np.sum(a * b[::-1])) < 0.9  # and not merely similar in any orientation


def _undersampled(full: Measurement, acceleration: float = 2, acs: int = 24) -> Measurement:
    """A variable-density random phase-encoding mask (mr_sampling.cartesian_mask) applied to the
    full data; the maps estimated again from what is left, as for a truly undersampled scan."""
    import dataclasses

    from INRReconLib.physics.mr_coil_maps import with_estimated_maps
    from INRReconLib.physics.mr_geometry import MRGeometry
    from INRReconLib.physics.mr_sampling import cartesian_mask

    mask = cartesian_mask(full.grid.shape[1:], acceleration, acs_lines=acs, seed=0)
    # the full mask is all True, so the samples are in C order of the grid
    m = dataclasses.replace(full, data=full.data[:, :, mask.ravel()], geometry=MRGeometry("cartesian", mask=mask[None]))
    return with_estimated_maps(m)[0]


def test_retrospective_undersampling_cgsense_and_inr(full):
    """R = 2 with 24 ACS lines. With two coils side by side and the phase encoding across them,
    SENSE unfolding is ill-conditioned in the middle of the image (measured: CG-SENSE without
    regularisation 14.4 dB after 30 iterations against the full image, zero-filled 26.2): its
    Tikhonov weight, `iterations: auto` (the residual never reaches the noise the reader measured
    in the readout-oversampling band; CG stops where it levels off, 19.3 dB) and the INR's implicit
    regularisation must recover most of that (25.8 dB; the INR 22.2 dB after 50 steps, 25.8 after
    80)."""
    from INRReconLib.methods.presets import load_config

    reference = np.abs(np.asarray(reconstruct(full, "adjoint").image)).reshape(1, 160, 160)
    sparse = _undersampled(full)
    assert 0.4 < sparse.data.shape[-1] / full.data.shape[-1] < 0.6
    scores = {}
    assert full.attrs["noise_variance"] > 0
    for name, method, kw in (("zero-filled", "adjoint", {}), ("cgsense", "cgsense", {"config": {"iterations": 30}}),
                             ("cgsense-auto", "cgsense", {}),
                             ("cgsense-tikhonov", "cgsense", {"config": {"lambda": 0.05}}),
                             ("inr", "inr", {"config": load_config("hash-mr"), "iterations": 50})):
        image = np.asarray(reconstruct(sparse, method, **kw).image).reshape(1, 160, 160)
        scores[name] = image_metrics(scale_to_reference(image, reference), reference)["psnr"]
    assert scores["cgsense-tikhonov"] > scores["cgsense"] + 8, scores
    # the residual levels off far above the noise (the maps fit about half the data): stopped there
    assert scores["cgsense-auto"] > scores["cgsense"] + 4, scores
    assert scores["inr"] > scores["cgsense"] + 6, scores
    assert scores["zero-filled"] > 22, scores


def test_reconstruct_and_info_take_the_dat_file(twix_file, tmp_path, capsys):
    assert main(["info", str(twix_file)]) == 0
    assert "2 coil(s)" in capsys.readouterr().out
    out = tmp_path / "adjoint.nrrd"
    assert main(["reconstruct", str(twix_file), "--method", "adjoint", "--out", str(out)]) == 0
    assert out.is_file()
    # the estimated coil maps are kept with the result, and the metrics file points to them
    maps = np.load(tmp_path / "adjoint.coil_maps.npy", allow_pickle=False)
    assert maps.shape == (2, 160, 160) and maps.dtype == np.complex64
    assert json.loads((tmp_path / "adjoint.metrics.json").read_text())["coil_maps"].endswith("adjoint.coil_maps.npy")


@pytest.mark.parametrize("size", [300, 900_000, 1_500_000])
def test_truncated_files_give_one_line_errors(twix_file, tmp_path, size):
    bad = tmp_path / "cut.dat"
    bad.write_bytes(twix_file.read_bytes()[:size])
    with pytest.raises(InputError) as err:
        read_measurement(bad)
    text = str(err.value)
    assert "\n" not in text and "cut.dat" in text and "Fix:" in text


def test_a_dat_file_that_is_not_twix(tmp_path):
    other = tmp_path / "numbers.dat"
    other.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(InputError, match="cannot be read as Siemens raw data"):  # the .dat reader's own error
        read_measurement(other)
