"""Coil sensitivities estimated from k-space (physics/mr_coil_maps.py): ESPIRiT and low-resolution
maps recover simulated birdcage maps (up to the per-voxel phase every estimate is free to have),
from Cartesian ACS lines and from the gridded centre of radial data; a measurement file without
maps gets them on reading, and says so."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement, write_measurement
from INRReconLib.io.readers import read_measurement
from INRReconLib.physics import ImageGrid, operator_for
from INRReconLib.physics.mr_coil_maps import (centred_fft, cartesian_calibration, estimate_coil_maps,
                                              with_estimated_maps)
from INRReconLib.physics.mr_geometry import MRGeometry
from INRReconLib.physics.mr_sampling import birdcage_coil_maps, cartesian_mask, golden_angle_radial

N, COILS = 64, 6


def _object():
    yy, xx = np.mgrid[:N, :N] - N / 2
    body = ((xx / 26) ** 2 + (yy / 21) ** 2 < 1).astype(float)
    return body * (1 + 0.4 * np.sin(xx / 4)) * np.exp(0.4j * xx / N), body > 0


def _similarity(est, true, inside):
    """|⟨est, true⟩| / (‖est‖‖true‖) per voxel over the coils: 1 when equal up to a phase and scale."""
    num = np.abs(np.sum(est.conj() * true, 0))
    den = np.sqrt(np.sum(np.abs(est) ** 2, 0) * np.sum(np.abs(true) ** 2, 0)) + 1e-12
    return (num / den)[inside]


@pytest.mark.parametrize("method, floor", [("espirit", 0.999), ("lowres", 0.995)])
def test_cartesian_estimate_matches_the_true_maps(method, floor):
    image, inside = _object()
    true = birdcage_coil_maps(COILS, (N, N))
    kspace = centred_fft(true * image[None], (1, 2))
    mask = cartesian_mask((N, N), 3, acs_lines=20, seed=1)
    calibration = cartesian_calibration(kspace * mask[None], mask)
    assert calibration.shape[1] in (19, 21) and calibration.shape[2] == 25  # ACS rows x 24 + 1 columns
    maps, info = estimate_coil_maps(calibration, (N, N), method)
    sim = _similarity(maps, true, inside)
    assert sim.mean() > floor and sim.min() > floor - 0.01, (sim.mean(), sim.min())
    assert info["method"] == method
    if method == "espirit":
        # maps are zero outside the object (eigenvalue below the crop), unit-norm inside
        assert np.allclose(np.sum(np.abs(maps) ** 2, 0)[inside], 1, atol=0.02)
        assert np.mean(np.sum(np.abs(maps), 0)[~inside] == 0) > 0.5


def test_a_mirrored_estimate_would_fail_this_check():
    """The similarity above is not blind to orientation: mirrored maps score far lower."""
    image, inside = _object()
    true = birdcage_coil_maps(COILS, (N, N))
    mask = cartesian_mask((N, N), 3, acs_lines=20, seed=1)
    maps, _ = estimate_coil_maps(cartesian_calibration(centred_fft(true * image[None], (1, 2)) * mask[None], mask), (N, N))
    assert _similarity(maps[:, ::-1, ::-1], true, inside).mean() < 0.97


def test_narrow_calibration_falls_back_to_lowres_and_empty_centre_is_an_error():
    image, _ = _object()
    true = birdcage_coil_maps(COILS, (N, N))
    kspace = centred_fft(true * image[None], (1, 2))
    mask = np.zeros((N, N), bool)
    mask[N // 2 - 4:N // 2 + 5] = True
    maps, info = estimate_coil_maps(cartesian_calibration(kspace * mask[None], mask), (N, N), "espirit")
    assert info["method"] == "lowres" and "narrower" in info["fallback"]
    thin = np.zeros((N, N), bool)
    thin[N // 2 - 1:N // 2 + 2] = True  # three lines: no variation along y to estimate from
    with pytest.raises(InputError, match="too small"):
        estimate_coil_maps(cartesian_calibration(kspace * thin[None], thin), (N, N))
    hole = np.ones((N, N), bool)
    hole[N // 2, N // 2] = False
    with pytest.raises(InputError, match="centre is not sampled"):
        cartesian_calibration(kspace, hole)


def _radial_measurement(with_maps: bool):
    image, inside = _object()
    grid = ImageGrid((N, N, 1), (2.0, 2.0, 4.0))
    true = birdcage_coil_maps(COILS, (N, N)).astype(np.complex64)
    traj = golden_angle_radial(48, 2 * N)
    geometry = MRGeometry("noncartesian", trajectory=traj, coil_maps=true)
    m = Measurement("MR", np.zeros((1, COILS, traj.shape[-1]), np.complex64), grid, geometry)
    m.data = operator_for(m).forward(torch.from_numpy(image[None, None].astype(np.complex64))).numpy()
    if not with_maps:
        m.geometry = MRGeometry("noncartesian", trajectory=traj)
    return m, true, inside


def test_radial_estimate_and_a_file_without_maps(tmp_path):
    m, true, inside = _radial_measurement(with_maps=True)
    estimated, info = with_estimated_maps(m)
    assert info["method"] == "espirit"
    assert _similarity(estimated.geometry.coil_maps, true, inside).mean() > 0.995
    # A file written without maps is read with maps estimated from its data, and says so.
    bare, _, _ = _radial_measurement(with_maps=False)
    write_measurement(bare, tmp_path / "bare.h5")
    read = read_measurement(tmp_path / "bare.h5")
    assert read.geometry.coil_maps.shape == (COILS, N, N)
    assert json.loads(read.attrs["coil_maps_estimated"])["method"] == "espirit"
    assert _similarity(read.geometry.coil_maps, true, inside).mean() > 0.995


def test_nerp_with_estimated_maps_gives_the_magnitude_prior_the_data_phase():
    """Estimated maps leave the image a phase (the reference coil's), so a magnitude prior does
    not fit it as is (before: 'best-fit scale is not positive'); NeRP gives the prior the data's
    low-resolution phase and comes close to the same run with the true maps."""
    from INRReconLib.methods.metrics import psnr, scale_to_reference
    from INRReconLib.methods.registry import reconstruct

    m, true, inside = _radial_measurement(with_maps=True)
    image, _ = _object()
    truth = np.abs(image)[None]
    prior = truth * (1 + 0.05 * np.cos(np.mgrid[:N, :N][1] / 5))[None]  # an earlier scan, slightly different
    estimated, _ = with_estimated_maps(m)
    cfg = {"embed_iterations": 60, "prior_registration": "none"}
    scores = {}
    for name, meas in (("true", m), ("estimated", estimated)):
        r = reconstruct(meas, "nerp", prior=prior.astype(np.float32), config=cfg, iterations=60)
        scores[name] = psnr(scale_to_reference(np.asarray(r.image).reshape(truth.shape), truth), truth, mask=inside[None])
    assert scores["estimated"] > scores["true"] - 1.5, scores
