"""The scene plumbing with the REAL worker process (`python -m INRReconLib.worker`) on a tiny CT
case: previews stream into a preview node on the prior's grid, the plot table grows, the output
node has the prior's geometry; a second run is cancelled and leaves the scene consistent."""

import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
torch = pytest.importorskip("torch")

from INRReconLib.io.measurement import Measurement, write_measurement  # noqa: E402
from INRReconLib.physics.ct_geometry import parallel_geometry  # noqa: E402
from INRReconLib.scene import volumes as V  # noqa: E402
from INRReconLib.scene.session import ReconstructionSession  # noqa: E402
from INRReconLib.worker.runner import WorkerRunner  # noqa: E402
from test_scene import make_grid, new_scene, phantom  # noqa: E402


def simulate(grid, n_views=16, n_cols=40):
    """Line integrals of the phantom through the project's own projector (helper for a tiny case)."""
    try:
        from INRReconLib.simulate import simulate_ct

        return simulate_ct(phantom(grid, 1.0), grid, n_views=n_views)
    except ImportError:
        from INRReconLib.physics import operator_for

        angles = np.linspace(0, np.pi, n_views, endpoint=False)
        geometry = parallel_geometry(angles, n_cols=n_cols, col_spacing_mm=1.0, row_spacing_mm=grid.spacing[2])
        m = Measurement("CT", np.zeros((n_views, 1, n_cols), np.float32), grid, geometry, {})
        op = operator_for(m, "cpu")
        with torch.no_grad():
            m.data = op.forward(torch.from_numpy(phantom(grid, 1.0))).cpu().numpy().astype(np.float32)
        return m


@pytest.fixture
def real_case(tmp_path):
    torch.set_num_threads(1)
    grid = make_grid((1, 24, 20))
    scene = new_scene()
    prior = V.add_volume(scene, phantom(grid, 0.8), V.ijk_to_ras_from_grid(grid), "planning CT")
    path = tmp_path / "fraction1.h5"
    write_measurement(simulate(grid), path)
    return scene, grid, prior, path, tmp_path


def factory(job_dir):
    return WorkerRunner(job_dir, python=sys.executable)


def run_to_end(session, seconds):
    """Poll the session until its run finished or `seconds` passed."""
    import time

    deadline = time.monotonic() + seconds
    while not session.state.finished and time.monotonic() < deadline:
        session.poll()
        time.sleep(0.02)


def test_real_worker_streams_preview_and_output(real_case):
    scene, grid, prior, path, tmp = real_case
    before = V.array_from_volume(prior).copy()
    session = ReconstructionSession(scene, factory, tmp / "job", path, prior_node=prior, method="sirt",
                                    iterations=12, device="cpu", preview_every=3)
    session.start()

    # The preview node lives from the first preview to the result, and one poll may bring both
    # (the pipes are read in one go): record it as each preview is handled.
    previews = []
    handle_preview = session._on_preview

    def recording(event):
        handle_preview(event)
        if session.preview_node is not None:
            previews.append((float(np.abs(V.array_from_volume(session.preview_node)).sum()),
                             V.get_ijk_to_ras(session.preview_node)))

    session._on_preview = recording
    run_to_end(session, 60)
    assert session.state.status == "done", (session.state.message, session.log)
    assert previews, "no preview arrived"
    assert np.allclose(previews[-1][1], V.get_ijk_to_ras(prior), atol=1e-6)
    assert session.preview_node is None  # dropped once the output is in the scene
    assert session.plot.n_rows >= 3
    out = scene.GetNodeByID(session.state.output_node_id)
    assert out is not prior and out.GetName() == "fraction1"
    assert np.allclose(V.get_ijk_to_ras(out), V.get_ijk_to_ras(prior), atol=1e-5)
    assert V.array_from_volume(out).shape == grid.shape
    assert np.array_equal(V.array_from_volume(prior), before)
    # SIRT of 16 noise-free views: the disc is there, correlated with the truth.
    recon = V.array_from_volume(out).astype(float).ravel()
    truth = phantom(grid, 1.0).astype(float).ravel()
    assert np.corrcoef(recon, truth)[0, 1] > 0.8


def test_real_worker_nerp_adds_the_aligned_prior(real_case):
    """NeRP's registered prior arrives as its own volume on the prior's grid; the prior is untouched."""
    scene, grid, prior, path, tmp = real_case
    before = V.array_from_volume(prior).copy()
    config = {"embed_iterations": 2, "prior_registration": "rigid", "registration_reference_iterations": 10}
    session = ReconstructionSession(scene, factory, tmp / "job", path, prior_node=prior, method="nerp",
                                    config=config, iterations=2, device="cpu", preview_every=0)
    session.start()
    run_to_end(session, 60)
    assert session.state.status == "done", (session.state.message, session.log)
    out = scene.GetNodeByID(session.state.output_node_id)
    aligned = scene.GetNodeByID(out.GetAttribute("INRRecon.alignedPrior"))
    assert aligned is not None and aligned is not prior and aligned.GetName() == "fraction1 prior aligned"
    assert np.allclose(V.get_ijk_to_ras(aligned), V.get_ijk_to_ras(prior), atol=1e-5)
    # The prior was in place already: registered to the data it stays where it was (the output
    # is in HU, the prior node here in μ, hence a correlation).
    assert np.corrcoef(V.array_from_volume(aligned).ravel(), before.ravel())[0, 1] > 0.95
    assert np.array_equal(V.array_from_volume(prior), before)


def test_real_worker_cancel_leaves_scene_consistent(real_case):
    scene, grid, prior, path, tmp = real_case
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    session = ReconstructionSession(scene, factory, tmp / "job", path, prior_node=prior, method="sirt",
                                    iterations=100000, device="cpu", preview_every=50)
    session.start()
    import time

    deadline = time.monotonic() + 60
    while session.state.iteration < 2 and not session.state.finished and time.monotonic() < deadline:
        session.poll()
        time.sleep(0.02)
    session.cancel()
    session.wait(timeout_s=60)
    # 100000 SIRT iterations take minutes: only a cancel that works ends the run within the wait.
    assert session.state.status == "cancelled", (session.state.status, session.state.message)
    assert session.state.iteration < 100000
    assert session.runner.wait(timeout=20) is not None  # the process ends after its final event
    added = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") - n_volumes
    assert added in (1, 2)  # the partial output (+ the preview if one came)
    assert scene.GetNodeByID(session.state.output_node_id).GetName().endswith("(partial)")


def test_real_worker_shows_what_auto_chose(real_case):
    """`lambda: auto` (tv's default): the weight chosen from the data reaches the status line and
    the output node, as the result's config has it."""
    import json

    scene, grid, prior, path, tmp = real_case
    session = ReconstructionSession(scene, factory, tmp / "job", path, prior_node=prior, method="tv", device="cpu",
                                    preview_every=0)
    session.start()
    run_to_end(session, 120)
    assert session.state.status == "done", (session.state.message, session.log)
    out = scene.GetNodeByID(session.state.output_node_id)
    chosen = float(out.GetAttribute("INRRecon.auto.lambda"))
    config = json.loads(next((tmp / "job").glob("*.config.json")).read_text())
    assert config["lambda"] == pytest.approx(chosen)
    assert "Chosen from the data: lambda" in session.state.summary() and "discrepancy principle" in session.state.summary()
