"""Dynamic MRI: per-spoke times and binning, the regularisers, the spatiotemporal INR (stinr),
rendering at any time, GRASP and L+S, and the errors on bad dynamic input."""

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import validate_measurement, write_measurement
from INRReconLib.io.readers import read_measurement
from INRReconLib.methods.losses import low_rank_loss, temporal_tv_loss
from INRReconLib.methods.metrics import psnr, scale_to_reference
from INRReconLib.methods.registry import METHODS, reconstruct
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_frames import bin_spokes, frame_times, select_frames
from INRReconLib.simulate import simulate_mr

N, FRAMES, SPOKES = 32, 8, 5


def _moving_disc(n=N, frames=FRAMES):
    """A large disc with a small bright disc moving left and right, and a static dot."""
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    out = []
    for f in range(frames):
        c = 0.12 * np.sin(2 * np.pi * f / frames)
        out.append(0.4 * ((xx ** 2 + yy ** 2) < 0.16) + 0.6 * (((xx - c) ** 2 + yy ** 2) < 0.01)
                   + 0.2 * (((xx + 0.2) ** 2 + (yy - 0.1) ** 2) < 0.003))
    return np.stack(out)[:, None].astype(np.complex64)


@pytest.fixture(scope="module")
def dynamic():
    truth = _moving_disc()
    grid = ImageGrid.centred((1, N, N), (2.0, 2.0, 2.0))
    m = simulate_mr(truth, grid, n_spokes=SPOKES, n_coils=4, n_frames=FRAMES, noise_std=0.01,
                    spoke_interval_s=0.005)
    return m, np.abs(truth)


def _score(image, truth):
    return psnr(scale_to_reference(image, truth), truth)


# ---- regularisers ---------------------------------------------------------------------------
def test_temporal_tv_value_and_gradient():
    frames = torch.tensor([[0.0, 1.0], [3.0, 1.0], [3.0, -1.0]], dtype=torch.float64).reshape(3, 1, 1, 2)
    # differences 3, 0 (frame 0->1) and 0, -2 (1->2): mean of |d| = 5 / 4
    assert float(temporal_tv_loss(frames, eps=0.0)) == pytest.approx(1.25)
    x = (torch.randn(4, 1, 3, 3, dtype=torch.complex128)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: temporal_tv_loss(v, eps=1e-3), (x,))


def test_low_rank_value_and_gradient():
    static = torch.full((5, 1, 2, 2), 0.5, dtype=torch.float64)
    assert float(low_rank_loss(static)) == pytest.approx(0.5)  # rank 1: the RMS value
    # two orthonormal frames: singular values 1, 1 over sqrt(2 x 2 voxels)
    assert float(low_rank_loss(torch.eye(2, dtype=torch.float64).reshape(2, 1, 1, 2))) == pytest.approx(1.0)
    x = torch.randn(4, 1, 3, 3, dtype=torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(low_rank_loss, (x,))


def test_regulariser_only_on_several_frames():
    from INRReconLib.methods.engine.fitting import regulariser

    class P:
        grid = ImageGrid.centred((1, 8, 8), (1.0, 1.0, 1.0))
        mr, n_coils, n_frames, n_views = True, 1, 1, 0

    cfg = {"tv_weight": 0.0, "temporal_tv_weight": 0.5, "low_rank_weight": 0.0}
    assert regulariser(cfg, P) is None
    P.n_frames = 3
    x = torch.randn(3, 1, 8, 8, dtype=torch.complex64)
    assert float(regulariser(cfg, P)(x)) == pytest.approx(0.5 * float(temporal_tv_loss(x)))


# ---- spoke times and binning ----------------------------------------------------------------
def test_spoke_times_round_trip_and_binning(dynamic, tmp_path):
    m, _ = dynamic
    times = m.geometry.spoke_times_s
    assert times.shape == (FRAMES, SPOKES)
    path = write_measurement(m, tmp_path / "dyn.h5")
    back = read_measurement(path)
    np.testing.assert_array_equal(back.geometry.spoke_times_s, times)

    binned, info = bin_spokes(back, 12)  # 40 spokes -> 3 frames of 12, 4 dropped
    assert info == {"spokes_per_frame": 12, "frames": 3, "dropped_spokes": 4}
    n_read = m.data.shape[2] // SPOKES
    assert binned.data.shape == (3, 4, 12 * n_read)
    # frame 1 of the new series starts with spoke 12 = old frame 2, spoke 2
    np.testing.assert_array_equal(binned.data[1, :, :n_read], m.data[2, :, 2 * n_read:3 * n_read])
    np.testing.assert_array_equal(binned.geometry.trajectory[1, :, :n_read],
                                  m.geometry.trajectory[2, :, 2 * n_read:3 * n_read])
    np.testing.assert_allclose(frame_times(binned.geometry), times.reshape(-1)[:36].reshape(3, 12).mean(axis=1))
    assert binned.geometry.dcf.shape == (3, 12 * n_read)
    validate_measurement(binned)
    assert m.data.shape[0] == FRAMES  # the input is untouched


def test_binning_errors(dynamic):
    m, _ = dynamic
    with pytest.raises(InputError, match="no spokes"):
        bin_spokes(m, FRAMES * SPOKES + 1)
    with pytest.raises(InputError, match="positive integer"):
        bin_spokes(m, 0)
    with pytest.raises(InputError, match="positive integer"):
        bin_spokes(m, True)
    assert bin_spokes(m, 10.0)[1]["frames"] == 4  # a whole number from JSON/YAML
    import dataclasses

    backwards = m.geometry.spoke_times_s.copy()
    backwards[3, 1] = backwards[3, 0] - 1.0
    with pytest.raises(InputError, match="spoke_times_s.*back in time"):
        validate_measurement(dataclasses.replace(m, geometry=dataclasses.replace(m.geometry,
                                                                                 spoke_times_s=backwards)))
    with pytest.raises(InputError, match="spoke_times_s.*shape"):
        validate_measurement(dataclasses.replace(m, geometry=dataclasses.replace(
            m.geometry, spoke_times_s=m.geometry.spoke_times_s[:4])))
    with pytest.raises(InputError, match="spoke_times_s.*does not divide"):
        validate_measurement(dataclasses.replace(m, geometry=dataclasses.replace(
            m.geometry, spoke_times_s=m.geometry.spoke_times_s[:, :3])))
    untimed = dataclasses.replace(m, geometry=dataclasses.replace(m.geometry, spoke_times_s=None))
    with pytest.raises(InputError, match="spoke_times_s.*missing"):
        bin_spokes(untimed, 4)
    # through the registry, as --spokes-per-frame does it
    res = reconstruct(m, "adjoint", config={"spokes_per_frame": 10})
    assert res.image.shape[0] == 4 and res.extra["binning"]["frames"] == 4


# ---- stinr ----------------------------------------------------------------------------------
def test_stinr_registered():
    spec = METHODS["stinr"]
    assert spec.modalities == ("MR",) and "frames" in spec.reads and "time series" in spec.returns
    assert "temporal_tv_weight" in spec.option_keys() and "prior_registration" not in spec.option_keys()
    assert "temporal_tv_weight" not in METHODS["nerp"].option_keys()


def test_stinr_beats_adjoint_and_grasp(dynamic):
    m, truth = dynamic
    res = reconstruct(m, "stinr")
    assert res.image.shape == (FRAMES, 1, N, N)
    assert res.config["preset"] == "stinr-fast" and res.config["nufft"] in ("torchkbnufft", "finufft")
    np.testing.assert_allclose(res.extra["frame_times_s"], frame_times(m.geometry))
    grasp = reconstruct(m, "grasp")
    adjoint = reconstruct(m, "adjoint")
    scores = {name: _score(r.image, truth) for name, r in (("stinr", res), ("grasp", grasp), ("adjoint", adjoint))}
    # measured: stinr 33.4, grasp 31.2 (its weight then fixed at 5e-4; auto not measured here), adjoint 22.3 dB
    # (stinr-fast, 400 steps; 34 s on one busy core)
    assert scores["stinr"] > scores["adjoint"] + 5, scores
    assert scores["stinr"] > scores["grasp"], scores

    # rendering at any time: the fitted frames again, and between them
    from INRReconLib.methods.engine.render import render

    times = res.extra["frame_times_s"]
    again = render(res.field, m.grid, times_s=times[2:4])
    np.testing.assert_allclose(again, res.image[2:4], rtol=0, atol=1e-6 * np.abs(res.image).max())
    between = render(res.field, m.grid, times_s=[0.5 * (times[2] + times[3])])
    assert between.shape == (1, 1, N, N) and np.all(np.isfinite(between))


def test_stinr_frames_out_and_super_resolution(dynamic):
    m, truth = dynamic
    every_other = select_frames(m, range(0, FRAMES, 2))
    all_times = frame_times(m.geometry)
    res = reconstruct(every_other, "stinr", config={"times_out_s": all_times.tolist(), "iterations": 60})
    assert res.image.shape == (FRAMES, 1, N, N)
    np.testing.assert_allclose(res.extra["frame_times_s"], all_times)
    res = reconstruct(every_other, "stinr", config={"frames_out": 7, "iterations": 5})
    assert res.image.shape[0] == 7
    t = res.extra["frame_times_s"]
    assert t[0] == pytest.approx(all_times[0]) and t[-1] == pytest.approx(all_times[-2])


def test_stinr_bad_input(dynamic):
    m, _ = dynamic
    static = select_frames(m, [0])
    with pytest.raises(InputError, match="/data.*one frame"):
        reconstruct(static, "stinr")
    import dataclasses

    frozen = dataclasses.replace(m, geometry=dataclasses.replace(m.geometry, spoke_times_s=None,
                                                                 frame_times_s=np.zeros(FRAMES)))
    with pytest.raises(InputError, match="frame_times_s.*increase"):
        reconstruct(frozen, "stinr")
    with pytest.raises(InputError, match="spokes_per_frame"):
        reconstruct(m, "stinr", config={"spokes_per_frame": 10_000})
    with pytest.raises(InputError, match="times_out_s"):
        reconstruct(m, "stinr", config={"times_out_s": ["soon"]})
    bad_traj = dataclasses.replace(m, geometry=dataclasses.replace(m.geometry, trajectory=m.geometry.trajectory[:, :1]))
    with pytest.raises(InputError, match="trajectory"):
        validate_measurement(bad_traj)


# ---- GRASP and L+S ------------------------------------------------------------------------
def test_grasp_and_lps_on_dynamic_data(dynamic):
    m, truth = dynamic
    adjoint = _score(reconstruct(m, "adjoint").image, truth)
    for name in ("grasp", "lps"):
        res = reconstruct(m, name)
        assert res.image.shape == (FRAMES, 1, N, N)
        assert _score(res.image, truth) > adjoint + 1.0, name
        if name == "grasp":  # its weight is chosen from the k-space noise by default
            record = res.extra["auto_lambda"]
            assert record["rule"].startswith("discrepancy principle") and res.config["lambda"] == record["lambda"]
    static = select_frames(m, [0])
    for name in ("grasp", "lps"):
        with pytest.raises(InputError, match="one frame"):
            reconstruct(static, name)


# ---- the 4D output ----------------------------------------------------------------------------
def test_sequence_file_round_trip_with_frame_times(tmp_path):
    from INRReconLib.io.sequence import read_sequence, write_sequence

    grid = ImageGrid((6, 5, 1), (1.5, 1.25, 4.0), (10.0, -3.0, 7.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    frames = np.random.default_rng(0).random((4, 1, 5, 6)).astype(np.float32)
    times = [0.0, 0.1, 0.25, 0.4]
    path = write_sequence(tmp_path / "s.seq.nrrd", frames, grid, times)
    header = path.read_bytes()[:600].decode("ascii", "replace")
    # what Slicer 5.8 and 5.10 need to open it as a Sequence with these times (io/sequence.py)
    assert "dimension: 4" in header and "kinds: list domain domain domain" in header
    assert "space directions: none (" in header and "axis 0 index values:=0 0.1 0.25 0.4" in header
    back, back_grid, back_times = read_sequence(path)
    np.testing.assert_array_equal(back, frames)
    assert back_grid.size == grid.size and np.allclose(back_grid.spacing, grid.spacing)
    assert np.allclose(back_grid.direction, grid.direction) and np.allclose(back_grid.origin, grid.origin)
    np.testing.assert_allclose(back_times, times)
    # finely spaced times go to milliseconds (Slicer merges index values closer than 0.001)
    fine = write_sequence(tmp_path / "f.seq.nrrd", frames, grid, [0.0, 0.0005, 0.001, 0.0015])
    assert 'units: "ms"' in fine.read_bytes()[:600].decode("ascii", "replace")
    np.testing.assert_allclose(read_sequence(fine)[2], [0.0, 0.0005, 0.001, 0.0015])
    with pytest.raises(InputError, match="frame times"):
        write_sequence(tmp_path / "x.seq.nrrd", frames, grid, [0.0, 0.1])


def test_cli_bins_spokes_and_renders_more_frames(dynamic, tmp_path):
    from INRReconLib.cli import main
    from INRReconLib.io.sequence import read_sequence

    m, _ = dynamic
    path = write_measurement(m, tmp_path / "dyn.h5")
    assert main(["reconstruct", str(path), "--method", "adjoint", "--spokes-per-frame", "10", "--device", "cpu",
                 "--out", str(tmp_path / "a.nrrd")]) == 0
    frames, _, times = read_sequence(tmp_path / "a.seq.nrrd")
    assert frames.shape == (4, 1, N, N)
    np.testing.assert_allclose(times, m.geometry.spoke_times_s.reshape(4, 10).mean(axis=1))
    assert main(["reconstruct", str(path), "--method", "stinr", "--iterations", "3", "--frames-out", "11",
                 "--device", "cpu", "--out", str(tmp_path / "s.nrrd")]) == 0
    frames, _, times = read_sequence(tmp_path / "s.seq.nrrd")
    assert frames.shape[0] == 11 and times[0] == pytest.approx(frame_times(m.geometry)[0])
    assert main(["reconstruct", str(path), "--method", "stinr", "--times-out", "soon", "--device", "cpu",
                 "--out", str(tmp_path / "x.nrrd")]) == 2
    # a flag the method would ignore is refused, not dropped
    assert main(["reconstruct", str(path), "--method", "inr", "--spokes-per-frame", "10", "--device", "cpu",
                 "--out", str(tmp_path / "y.nrrd")]) == 2
    assert main(["reconstruct", str(path), "--method", "grasp", "--frames-out", "9", "--device", "cpu",
                 "--out", str(tmp_path / "z.nrrd")]) == 2
