"""The background worker, end to end: real `python -m INRReconLib.worker` processes on tiny CT/MR
cases (event order and content, previews, output grid, cancel, SIGKILL, bad input) and
`run_job` in-process for the method/units/error variants (cheaper: no interpreter start-up)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import INRReconLib.worker.run as worker_run
from INRReconLib.errors import DeviceError
from INRReconLib.io.measurement import Measurement, write_measurement
from INRReconLib.io.volume import mu_to_hu, read_volume, write_volume
from INRReconLib.physics import ImageGrid, operator_for, parallel_geometry
from INRReconLib.physics.mr_geometry import MRGeometry
from INRReconLib.worker import WorkerRunner, run_job, unpack_preview, write_job
from INRReconLib.worker.events import parse_event_line

torch.set_num_threads(1)

MU_WATER = 0.02
CT_GRID = ImageGrid((32, 32, 1), (1.5, 1.5, 2.0), (-20.0, 10.0, 5.0))  # non-trivial origin/spacing
MR_GRID = ImageGrid((32, 32, 1), (2.0, 2.0, 5.0), (3.0, -7.0, 1.0))
IS_POSIX = os.name == "posix"


def _disks(grid, values=((18.0, 0.0, 0.02), (5.0, 5.0, 0.01))):
    nz, ny, nx = grid.shape
    x = (np.arange(nx) - (nx - 1) / 2) * grid.spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * grid.spacing[1]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    image = np.zeros((ny, nx), np.float32)
    for radius, shift, value in values:
        image += np.where((xx - shift) ** 2 + yy ** 2 < radius ** 2, value, 0.0).astype(np.float32)
    return image[None]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    """A 32² parallel-beam CT (24 views) with its truth in HU, and a 32² Cartesian MR (single
    coil, 1 and 3 frames); data simulated with the project's own operators."""
    folder = tmp_path_factory.mktemp("worker_cases")
    ct_truth = _disks(CT_GRID)
    ct = Measurement("CT", np.zeros((24, 1, 48), np.float32), CT_GRID,
                     parallel_geometry(np.linspace(0, np.pi, 24, endpoint=False), 48, 1.5, row_spacing_mm=2.0),
                     {"mu_water_per_mm": MU_WATER})
    ct.data = operator_for(ct).forward(torch.from_numpy(ct_truth)).numpy().astype(np.float32)
    write_measurement(ct, folder / "ct.h5")
    write_volume(folder / "ct_truth_hu.nrrd", mu_to_hu(ct_truth, MU_WATER).astype(np.float32), CT_GRID)

    out = {"dir": folder, "ct": folder / "ct.h5", "ct_truth": ct_truth, "ct_truth_hu": folder / "ct_truth_hu.nrrd"}
    rng = np.random.default_rng(0)
    for frames in (1, 3):
        mag = _disks(MR_GRID, ((25.0, 0.0, 0.6), (8.0, 6.0, 0.4)))[0]
        images = np.stack([np.roll(mag, f, axis=1) for f in range(frames)])[:, None].astype(np.complex64)
        lines = rng.random(32) < 0.4
        lines[12:20] = True  # fully sampled centre
        # the file format wants the same number of samples in every frame: roll the same pattern
        mask = np.stack([np.broadcast_to(np.roll(lines, 3 * f)[:, None], (32, 32)) for f in range(frames)])
        mr = Measurement("MR", np.zeros((frames, 1, 1), np.complex64), MR_GRID, MRGeometry("cartesian", mask=mask))
        mr.data = operator_for(mr).forward(torch.from_numpy(images)).numpy().astype(np.complex64)
        write_measurement(mr, folder / f"mr{frames}.h5")
        out[f"mr{frames}"] = folder / f"mr{frames}.h5"
        out[f"mr{frames}_truth"] = np.abs(images[:, 0])
    return out


def _run(job: dict, job_dir: Path, stop=None):
    job_dir.mkdir(parents=True, exist_ok=True)
    events = []
    final = run_job(job, job_dir, events.append, stop or threading.Event())
    assert events[-1] is final
    json.dumps(events)  # every event is plain JSON
    return events, final


def _collect(runner: WorkerRunner, until=None, timeout=60.0) -> list:
    """Poll until the runner has finished (or `until(events)` is true); returns all events."""
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = runner.poll()
        events.extend(new)
        if until is not None and until(events):
            return events
        if runner.final_event is not None and runner.finished:
            return events + runner.poll()
        time.sleep(0.01)
    runner.kill()
    raise AssertionError(f"worker did not finish in {timeout} s; events: {[e['event'] for e in events]}")


# --- real worker processes -------------------------------------------------------------------

CHATTER = '''
import os, warnings
from INRReconLib.methods import registry
_real = registry.reconstruct
def reconstruct(*args, **kwargs):
    print("chatter from a library's print")
    os.write(1, b"chatter written by C code to fd 1\\n")
    warnings.warn("chatter as a warning")
    return _real(*args, **kwargs)
registry.reconstruct = reconstruct
'''


def test_worker_process_sirt_events_previews_and_output(cases, tmp_path):
    # A sitecustomize makes the method print to stdout (Python and fd level) and warn: none of it
    # may reach the event stream.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CHATTER)
    env = dict(os.environ, PYTHONPATH=str(site))
    job_dir = tmp_path / "job"
    write_job(job_dir, measurement=str(cases["ct"]), method="sirt", iterations=30, device="auto",
              output=str(tmp_path / "sirt.nrrd"), preview_every=10, reference=str(cases["ct_truth_hu"]),
              meta={"fraction": 3})
    runner = WorkerRunner(job_dir, env=env).start()
    previews_on_arrival = []

    def check_previews(events):
        for e in events[len(previews_on_arrival):]:
            previews_on_arrival.append(np.load(e["path"]) if e["event"] == "preview" else None)
        return False

    events = _collect(runner, until=check_previews)
    check_previews(events)
    assert runner.wait(10) == 0
    assert runner.malformed == [], runner.malformed
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and kinds.count("result") == 1
    assert "error" not in kinds

    started = events[0]
    assert started["protocol"] == 1 and started["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert started["versions"]["torch"] == torch.__version__ and "astra" in started["versions"]
    if not torch.cuda.is_available():
        assert started["cpu_fallback"] is True and "CPU" in started["note"]

    progress = [e for e in events if e["event"] == "progress"]
    assert [p["iteration"] for p in progress] == sorted(p["iteration"] for p in progress)
    assert progress[0]["iteration"] == 1 and progress[-1]["iteration"] == 30
    assert all(p["stage"] == "sirt" and p["total"] == 30 and p["loss"] > 0 for p in progress)
    assert progress[-1]["eta"] == 0 and progress[-1]["elapsed"] >= progress[0]["elapsed"]
    assert progress[-1]["loss"] < progress[0]["loss"]

    previews = [(e, a) for e, a in zip(events, previews_on_arrival) if e["event"] == "preview"]
    assert [e["iteration"] for e, _ in previews] == [10, 20, 30]
    for e, array in previews:
        assert e["kind"] == "axial" and e["dtype"] == "float32" and e["units"] == "HU"
        assert array.dtype == np.float32 and array.shape == (32, 32) and np.all(np.isfinite(array))
        assert ImageGrid.from_dict(e["grid"]) == CT_GRID
    # the last preview is the final image, in HU like the output
    last_preview = previews[-1][1]

    result = events[-1]
    assert result["cancelled"] is False and result["iterations"] == 30 and result["units"] == "HU"
    assert result["meta"] == {"fraction": 3}
    image, grid = read_volume(result["output"])
    assert grid.size == CT_GRID.size and np.allclose(grid.spacing, CT_GRID.spacing)
    assert np.allclose(grid.origin, CT_GRID.origin)
    np.testing.assert_allclose(image[0], last_preview, atol=1e-3)
    truth_hu = mu_to_hu(cases["ct_truth"], MU_WATER)
    assert abs(np.median(image[0, 12:20, 8:14]) - np.median(truth_hu[0, 12:20, 8:14])) < 150  # water disk ~0 HU
    assert result["metrics"]["psnr"] > 18 and 0 < result["metrics"]["final_loss"] < progress[0]["loss"]

    config = json.loads(Path(result["config"]).read_text())
    assert result["config"] == str(tmp_path / "sirt.config.json") and config["iterations"] == "auto"  # method default; 30 passed
    saved = json.loads(Path(result["metrics_path"]).read_text())
    assert saved["metrics"]["psnr"] == pytest.approx(result["metrics"]["psnr"])
    assert len(saved["history"]) == 30
    log = (job_dir / "worker.log").read_text()
    assert "chatter from a library's print" in "\n".join(runner.stderr_tail) + log
    assert np.load(job_dir / "checkpoint.npy").shape == CT_GRID.shape


@pytest.mark.parametrize("how", ["stdin", pytest.param("sigterm", marks=pytest.mark.skipif(not IS_POSIX,
                                                                                          reason="SIGTERM is POSIX"))])
def test_worker_process_cancel_keeps_partial_result(cases, tmp_path, how):
    job_dir = tmp_path / "job"
    write_job(job_dir, measurement=str(cases["ct"]), method="sirt", iterations=100000, device="cpu",
              output=str(tmp_path / "partial.nrrd"), preview_every=0)
    runner = WorkerRunner(job_dir).start()
    events = _collect(runner, until=lambda ev: any(e["event"] == "progress" and e["iteration"] >= 3 for e in ev))
    t_cancel = time.monotonic()
    if how == "stdin":
        runner.cancel()
    else:
        os.kill(runner.process.pid, signal.SIGTERM)
    events += _collect(runner, until=lambda ev: any(e["event"] in ("result", "error") for e in ev))
    latency = time.monotonic() - t_cancel
    result = events[-1]
    assert result["event"] == "result", result
    print(f"cancel ({how}) -> result event: {latency:.3f} s")  # a measurement, not a limit: CI is shared
    assert result["cancelled"] is True and 3 <= result["iterations"] < 100000
    image, grid = read_volume(result["output"])
    assert grid == CT_GRID and np.all(np.isfinite(image)) and image.max() > -500  # not an empty (air) image
    assert runner.wait(10) == 0


@pytest.mark.skipif(not IS_POSIX, reason="SIGKILL is POSIX")
def test_worker_process_sigkill_reported_as_worker_died(cases, tmp_path):
    job_dir = tmp_path / "job"
    write_job(job_dir, measurement=str(cases["ct"]), method="sirt", iterations=100000, device="cpu",
              output=str(tmp_path / "never.nrrd"), preview_every=2)
    runner = WorkerRunner(job_dir).start()
    events = _collect(runner, until=lambda ev: any(e["event"] == "preview" for e in ev))
    os.kill(runner.process.pid, signal.SIGKILL)
    events += _collect(runner)
    died = events[-1]
    assert died["event"] == "error" and died["kind"] == "worker-died"
    assert died["returncode"] == -signal.SIGKILL and "signal 9" in died["message"]
    assert [e for e in events if e["event"] == "result"] == []
    # partial work survives: the checkpoint (physics units) and the last preview
    checkpoint = np.load(job_dir / "checkpoint.npy")
    assert checkpoint.shape == CT_GRID.shape and checkpoint.max() > 0.005
    info = json.loads((job_dir / "checkpoint.json").read_text())
    assert info["stage"] == "sirt" and info["iteration"] >= 2
    last_preview = [e for e in events if e["event"] == "preview"][-1]
    assert Path(last_preview["path"]).is_file()
    assert not (tmp_path / "never.nrrd").exists()


def test_worker_process_missing_measurement_is_bad_input(tmp_path):
    job_dir = tmp_path / "job"
    write_job(job_dir, measurement="nowhere/scan.h5", method="fbp", output=str(tmp_path / "x.nrrd"))
    runner = WorkerRunner(job_dir).start()
    events = _collect(runner)
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["kind"] == "bad-input" and "scan.h5" in events[0]["message"]
    assert "not found" in events[0]["message"] and events[0]["field"] == "measurement"
    assert runner.wait(10) == 2 and runner.malformed == []


# --- run_job in this process -------------------------------------------------------------------

def test_fbp_output_in_mu_on_the_measurement_grid(cases, tmp_path):
    events, final = _run({"measurement": str(cases["ct"]), "method": "fbp", "output": str(tmp_path / "fbp.nii.gz"),
                          "output_units": "mu", "preview_every": 1, "device": "cpu"}, tmp_path / "job")
    assert [e["event"] for e in events][0] == "started" and final["event"] == "result"
    assert final["units"] == "1/mm" and final["metrics"] == {}
    image, grid = read_volume(final["output"])
    assert grid == CT_GRID
    err = np.abs(image - cases["ct_truth"])[0, 4:-4, 4:-4]
    assert np.median(err) < 0.002  # μ about 0.02 inside: FBP of clean 24-view data is close
    assert (tmp_path / "fbp.config.json").is_file() and (tmp_path / "fbp.metrics.json").is_file()


def test_a_method_without_prior_does_not_read_the_prior(cases, tmp_path, caplog):
    """FBP neither reads nor records a job's prior, and warns that it is unused: a prior NeRP
    would refuse (here not an image at all) cannot fail a baseline run."""
    prior_path = tmp_path / "prior.nrrd"
    prior_path.write_bytes(b"not an image\n")
    with caplog.at_level("WARNING"):
        _, final = _run({"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "fbp",
                         "output": str(tmp_path / "fbp.nrrd"), "device": "cpu"}, tmp_path / "job")
    assert final["event"] == "result", final.get("message")
    assert json.loads(Path(final["metrics_path"]).read_text())["prior"] is None
    assert "prior.nrrd is not used: method fbp" in caplog.text and "used by: nerp" in caplog.text
    _, final = _run({"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "nerp",
                     "output": str(tmp_path / "nerp.nrrd"), "device": "cpu"}, tmp_path / "job2")
    assert final["kind"] == "bad-input" and "prior.nrrd" in final["message"]


def test_inr_few_iterations_streams_stage_and_writes_result(cases, tmp_path):
    config = {"field": {"encoding": {"otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 10,
                                     "base_resolution": 4},
                        "network": {"otype": "ReLU", "n_neurons": 16, "n_hidden_layers": 1}}}
    events, final = _run({"measurement": str(cases["ct"]), "method": "inr", "iterations": 3, "config": config,
                          "output": str(tmp_path / "inr.nrrd"), "preview_every": 3, "device": "cpu"}, tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    progress = [e for e in events if e["event"] == "progress"]
    # an INR without prior has one stage, the fitting, which runs to the iterations asked for
    assert {e["stage"] for e in progress} == {"fitting"} and progress[-1]["iteration"] == progress[-1]["total"] == 3
    assert [e["iteration"] for e in events if e["event"] == "preview"][-1] == 3
    image, grid = read_volume(final["output"])
    assert grid == CT_GRID and np.all(np.isfinite(image))
    saved = json.loads(Path(final["config"]).read_text())
    assert saved["field"]["network"]["n_neurons"] == 16 and saved["iterations"] == 3


def test_nerp_writes_the_aligned_prior_next_to_the_result(cases, tmp_path, monkeypatch):
    """The prior lies 3 mm off along x; NeRP registers it to the data and the worker writes it, in
    HU on the measurement grid, as <output>.prior_aligned.nrrd. The registration stage reports
    no time left (its steps differ in cost and its total is a budget); the fitting does."""
    monkeypatch.setattr(worker_run, "PROGRESS_MIN_INTERVAL_S", 0.0)  # every step emits progress
    shifted = _disks(CT_GRID, ((18.0, 3.0, 0.02), (5.0, 8.0, 0.01)))
    prior_path = tmp_path / "prior_hu.nrrd"
    write_volume(prior_path, mu_to_hu(shifted, MU_WATER).astype(np.float32), CT_GRID)
    config = {"embed_iterations": 3, "prior_registration": "rigid", "registration_reference_iterations": 50}
    events, final = _run({"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "nerp",
                          "iterations": 3, "config": config, "output": str(tmp_path / "nerp.nrrd"),
                          "preview_every": 0, "device": "cpu"}, tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    assert final["prior_aligned"] == str(tmp_path / "nerp.prior_aligned.nrrd")
    aligned, grid = read_volume(final["prior_aligned"])
    assert grid == CT_GRID
    truth_hu = mu_to_hu(cases["ct_truth"], MU_WATER)
    error = lambda image: float(np.abs(image - truth_hu).mean())  # noqa: E731
    print(f"mean |HU error|: shifted prior {error(mu_to_hu(shifted, MU_WATER)):.1f}, aligned {error(aligned):.1f}")
    assert error(aligned) < 0.5 * error(mu_to_hu(shifted, MU_WATER))
    saved = json.loads(Path(final["metrics_path"]).read_text())
    assert saved["prior_aligned"] == final["prior_aligned"]
    assert saved["extra"]["prior_registration"]["mode"] == "rigid"
    progress = [e for e in events if e["event"] == "progress"]
    registration = [e for e in progress if e["stage"] == "prior-registration"]
    assert len(registration) > 2 and all(e["eta"] is None for e in registration)
    fitting = [e for e in progress if e["stage"] == "fitting"]
    assert fitting[-1]["iteration"] == 3 and fitting[-1]["eta"] == 0


def test_nerp_with_a_prior_volume_and_2d_data_picks_its_slice(cases, tmp_path):
    """A prior volume (HU file) for 2D data: the worker hands NeRP the prior's slices near the
    plane, and NeRP embeds the one that matches the data (4 mm from the plane), not the plane's."""
    other = _disks(CT_GRID, ((10.0, -8.0, 0.02), (4.0, 6.0, 0.03)))
    volume = np.concatenate([cases["ct_truth"], other, other])  # slices at z = 1, 3, 5 mm; the plane is z = 5
    vgrid = ImageGrid(CT_GRID.size[:2] + (3,), CT_GRID.spacing, CT_GRID.origin[:2] + (CT_GRID.origin[2] - 4.0,))
    prior_path = tmp_path / "prior_volume_hu.nrrd"
    write_volume(prior_path, mu_to_hu(volume, MU_WATER).astype(np.float32), vgrid)
    config = {"embed_iterations": 3, "prior_registration": "rigid", "registration_reference_iterations": 50}
    _, final = _run({"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "nerp", "iterations": 3,
                     "config": config, "output": str(tmp_path / "nerp.nrrd"), "preview_every": 0, "device": "cpu"},
                    tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    search = json.loads(Path(final["metrics_path"]).read_text())["extra"]["prior_registration"]["slice_search"]
    assert search["offsets_mm"] == [-4.0, -2.0, 0.0] and search["offset_mm"] == -4.0
    assert final["prior_slice_offset_mm"] == -4.0
    aligned, _ = read_volume(final["prior_aligned"])
    truth_hu = mu_to_hu(cases["ct_truth"], MU_WATER)
    assert np.abs(aligned - truth_hu).mean() < 0.2 * np.abs(mu_to_hu(other, MU_WATER) - truth_hu).mean()


def test_upsample_writes_the_field_on_a_finer_grid_or_keeps_the_result(cases, tmp_path):
    """upsample 2: the output file (and the result event's grid) is the measurement grid refined
    2x in-plane; a run stopped before its field existed still writes its image, on the
    measurement grid, and says so."""
    config = {"embed_iterations": 3, "prior_registration": "rigid", "registration_reference_iterations": 5}
    prior_path = tmp_path / "prior_hu.nrrd"
    write_volume(prior_path, mu_to_hu(cases["ct_truth"], MU_WATER).astype(np.float32), CT_GRID)
    job = {"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "nerp", "iterations": 3,
           "config": config, "preview_every": 0, "device": "cpu", "upsample": 2}
    _, final = _run({**job, "output": str(tmp_path / "fine.nrrd")}, tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    image, grid = read_volume(final["output"])
    assert grid == CT_GRID.refined(2) and image.shape == (1, 2 * CT_GRID.size[1], 2 * CT_GRID.size[0])
    assert final["grid"] == grid.to_dict() and "warnings" not in final
    # The aligned prior is the image NeRP embedded: it stays on the measurement grid.
    assert read_volume(final["prior_aligned"])[1] == CT_GRID

    stop = threading.Event()
    stop.set()  # noticed during the registration's TV reference, before the field is built
    _, final = _run({**job, "output": str(tmp_path / "early.nrrd")}, tmp_path / "job2", stop)
    assert final["cancelled"] is True
    assert read_volume(final["output"])[1] == CT_GRID and final["grid"] == CT_GRID.to_dict()
    assert "measurement grid" in final["warnings"][0]
    assert json.loads(Path(final["metrics_path"]).read_text())["warnings"] == final["warnings"]


@pytest.mark.parametrize("method,iterations", [("adjoint", None), ("cgsense", 5)])
def test_mr_static_magnitude_output(cases, tmp_path, method, iterations):
    events, final = _run({"measurement": str(cases["mr1"]), "method": method, "iterations": iterations,
                          "output": str(tmp_path / f"{method}.nrrd"), "preview_every": 1, "device": "cpu"},
                         tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    assert final["units"] == "magnitude" and "frames" not in final
    image, grid = read_volume(final["output"])
    assert grid == MR_GRID and image.dtype == np.float32 and image.min() >= 0
    truth = cases["mr1_truth"][0]
    corr = np.corrcoef(image.ravel(), truth.ravel())[0, 1]
    assert corr > 0.9, corr
    preview = [e for e in events if e["event"] == "preview"][-1]
    assert np.load(preview["path"]).shape == (32, 32)


def test_dynamic_mr_writes_a_sequence_the_mean_and_frames_on_request(cases, tmp_path):
    from INRReconLib.io.sequence import read_sequence

    events, final = _run({"measurement": str(cases["mr3"]), "method": "adjoint", "frame_files": True,
                          "output": str(tmp_path / "dyn.nrrd"), "preview_every": 1}, tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    assert [Path(p).name for p in final["frames"]] == ["dyn_frame000.nrrd", "dyn_frame001.nrrd", "dyn_frame002.nrrd"]
    frames = np.stack([read_volume(p)[0][0] for p in final["frames"]])
    mean, grid = read_volume(final["output"])
    assert grid == MR_GRID
    np.testing.assert_allclose(mean[0], frames.mean(axis=0), rtol=1e-5, atol=1e-6)
    series, series_grid, times = read_sequence(final["sequence"])
    assert Path(final["sequence"]).name == "dyn.seq.nrrd" and series_grid == MR_GRID
    np.testing.assert_array_equal(series[:, 0], frames)
    np.testing.assert_allclose(times, final["frame_times_s"])
    # without frame_files: the sequence and the mean only
    _, final = _run({"measurement": str(cases["mr3"]), "method": "adjoint", "output": str(tmp_path / "d2.nrrd")},
                    tmp_path / "job2")
    assert "frames" not in final and Path(final["sequence"]).is_file()
    # frames differ as the truth does (the object moves one voxel per frame)
    truth = cases["mr3_truth"]
    assert np.corrcoef(frames[2].ravel(), truth[2].ravel())[0, 1] > np.corrcoef(frames[2].ravel(), truth[0].ravel())[0, 1]


def test_3d_preview_has_three_central_slices(tmp_path):
    grid = ImageGrid((12, 10, 8), (1.0, 1.0, 1.0))
    volume = np.random.default_rng(1).random(grid.shape).astype(np.float32)
    from INRReconLib.worker.events import preview_payload

    array, fields = preview_payload(volume)
    assert fields["kind"] == "slices" and array.shape == (3, 10, 12)
    planes = unpack_preview(array, fields)
    np.testing.assert_array_equal(planes["axial"], volume[4])
    np.testing.assert_array_equal(planes["coronal"], volume[:, 5, :])
    np.testing.assert_array_equal(planes["sagittal"], volume[:, :, 6])
    whole, fields = preview_payload(volume, "volume")
    assert fields["kind"] == "volume" and whole.shape == grid.shape


def test_bad_inputs_name_the_problem(cases, tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5\n" * 10)
    _, final = _run({"measurement": str(garbage), "method": "fbp", "output": str(tmp_path / "o.nrrd")}, tmp_path / "j1")
    assert final["kind"] == "bad-input" and "garbage.h5" in final["message"] and "HDF5" in final["message"]

    _, final = _run({"measurement": str(cases["ct"]), "method": "cgsense", "output": str(tmp_path / "o.nrrd")},
                    tmp_path / "j2")
    assert final["kind"] == "bad-input" and "cgsense" in final["message"] and "CT" in final["message"]

    _, final = _run({"measurement": str(cases["ct"]), "method": "nerp", "output": str(tmp_path / "o.nrrd")},
                    tmp_path / "j3")
    assert final["kind"] == "bad-input" and "prior" in final["message"]

    _, final = _run({"measurement": str(cases["ct"]), "method": "fbp", "output": str(tmp_path / "no" / "o.nrrd")},
                    tmp_path / "j4")
    assert final["kind"] == "bad-input" and "does not exist" in final["message"]
    assert not (tmp_path / "no").exists()

    # A finer output grid: only for methods with a field, and only what fits in memory.
    _, final = _run({"measurement": str(cases["ct"]), "method": "sirt", "upsample": 2,
                     "output": str(tmp_path / "o.nrrd")}, tmp_path / "j5")
    assert final["kind"] == "bad-input" and final["field"] == "upsample" and "inr" in final["message"] and "nerp" in final["message"]
    _, final = _run({"measurement": str(cases["ct"]), "method": "inr", "upsample": 10**4,
                     "output": str(tmp_path / "o.nrrd")}, tmp_path / "j6")
    assert final["kind"] == "bad-input" and final["field"] == "upsample" and "smaller factor" in final["message"]
    assert not (tmp_path / "o.nrrd").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu_is_no_gpu(cases, tmp_path):
    events, final = _run({"measurement": str(cases["ct"]), "method": "fbp", "device": "cuda",
                          "output": str(tmp_path / "o.nrrd")}, tmp_path / "job")
    assert events == [final] and final["kind"] == "no-gpu" and "'cpu'" in final["message"]


@pytest.mark.parametrize("exc,kind,words", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out-of-memory", "Reduce"),
    (DeviceError("out-of-memory", "The GPU ran out of memory."), "out-of-memory", "smaller image grid"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory"), "out-of-memory", "computer ran out"),
    (ZeroDivisionError("oops"), "internal", "ZeroDivisionError"),
])
def test_failures_are_classified(cases, tmp_path, monkeypatch, exc, kind, words):
    from INRReconLib.methods import registry

    def failing(*args, **kwargs):
        raise exc

    monkeypatch.setattr(registry, "reconstruct", failing)
    _, final = _run({"measurement": str(cases["ct"]), "method": "sirt", "output": str(tmp_path / "o.nrrd")},
                    tmp_path / "job")
    assert final["event"] == "error" and final["kind"] == kind and words in final["message"]
    assert "Traceback" in final["detail"] and type(exc).__name__ in final["detail"]


def test_stop_before_start_returns_cancelled_result(cases, tmp_path):
    stop = threading.Event()
    stop.set()
    _, final = _run({"measurement": str(cases["ct"]), "method": "sirt", "iterations": 500,
                     "output": str(tmp_path / "o.nrrd")}, tmp_path / "job", stop)
    assert final["cancelled"] is True and final["iterations"] <= 1
    assert parse_event_line(json.dumps(final)) == final


def test_mr_reference_metrics_use_the_bench_convention(cases, tmp_path):
    """The worker scores an MR result as `inrrecon bench` does: its magnitude after the
    least-squares scale onto the reference (methods.metrics.scale_to_reference)."""
    from INRReconLib.methods.metrics import image_metrics, scale_to_reference

    truth = cases["mr1_truth"][0]
    write_volume(tmp_path / "truth.nrrd", (7.0 * truth).astype(np.float32), MR_GRID)  # any scale
    _, final = _run({"measurement": str(cases["mr1"]), "method": "adjoint", "output": str(tmp_path / "adj.nrrd"),
                     "reference": str(tmp_path / "truth.nrrd"), "device": "cpu"}, tmp_path / "job")
    assert final["event"] == "result", final
    image, _ = read_volume(final["output"])
    reference = truth / np.percentile(truth, 99.9)  # how the reference is read (load_prior)
    expected = image_metrics(scale_to_reference(image.reshape(truth.shape), reference), reference)
    assert final["metrics"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-3)
    assert final["metrics"]["ssim"] == pytest.approx(expected["ssim"], abs=1e-4)


def test_nerp_writes_a_change_map_that_finds_the_changed_lesion(cases, tmp_path):
    """The prior lacks the small disc the data show: the change map next to the result is high
    there and low elsewhere (AUC against that region, in the metrics with an ROI)."""
    from INRReconLib.methods.change import CHANGE_THRESHOLD

    truth = cases["ct_truth"]
    small = _disks(CT_GRID, ((18.0, 0.0, 0.02),))  # the body without the lesion disc
    lesion = np.abs(truth - small) > 1e-4
    prior_path, roi_path = tmp_path / "prior_hu.nrrd", tmp_path / "roi.nrrd"
    write_volume(prior_path, mu_to_hu(small, MU_WATER).astype(np.float32), CT_GRID)
    write_volume(roi_path, lesion.astype(np.uint8), CT_GRID)
    config = {"embed_iterations": 60, "iterations": 60, "prior_registration": "rigid",
              "registration_reference_iterations": 50, "prior_min_correlation": -1}
    _, final = _run({"measurement": str(cases["ct"]), "prior": str(prior_path), "method": "nerp", "config": config,
                     "output": str(tmp_path / "nerp.nrrd"), "preview_every": 0, "device": "cpu",
                     "reference": str(cases["ct_truth_hu"]), "roi": str(roi_path)}, tmp_path / "job")
    assert final["event"] == "result", final.get("detail")
    assert final["change_map"] == str(tmp_path / "nerp.change.nrrd")
    change, grid = read_volume(final["change_map"])
    assert grid == CT_GRID
    print(f"change AUC {final['metrics']['change_auc']:.3f}; inside {float(np.median(change[lesion])):.1f}, "
          f"outside {float(np.median(change[~lesion])):.1f}")
    assert final["metrics"]["change_auc"] > 0.9
    assert np.median(change[lesion]) > CHANGE_THRESHOLD > np.percentile(change[~lesion], 90)
