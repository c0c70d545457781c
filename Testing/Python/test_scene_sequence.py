"""Dynamic MR in the scene (slicer-core): the real worker's result becomes a volume Sequence with
its frame times, previews stream one frame after the other, and a region's time–intensity curve
fills a table and a chart."""

import sys
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
pytest.importorskip("torch")

from INRReconLib.io.measurement import write_measurement  # noqa: E402
from INRReconLib.physics.grid import ImageGrid  # noqa: E402
from INRReconLib.scene import volumes as V  # noqa: E402
from INRReconLib.scene.sequence import add_volume_sequence, sequence_frames, time_intensity_curve  # noqa: E402
from INRReconLib.scene.session import ReconstructionSession  # noqa: E402
from INRReconLib.simulate import simulate_mr  # noqa: E402
from INRReconLib.worker.runner import WorkerRunner  # noqa: E402
from test_scene import new_scene  # noqa: E402

N, FRAMES = 16, 4


def _series():
    """A square whose brightness rises frame by frame (contrast uptake) in a static disc."""
    yy, xx = np.mgrid[:N, :N] / N - 0.5
    disc = 0.3 * ((xx ** 2 + yy ** 2) < 0.16)
    frames = [disc + (0.2 + 0.2 * f) * ((np.abs(xx - 0.1) < 0.1) & (np.abs(yy) < 0.1)) for f in range(FRAMES)]
    return np.stack(frames)[:, None].astype(np.float32)


def test_sequence_and_curve_from_arrays():
    scene = new_scene()
    grid = ImageGrid.centred((1, N, N), (2.0, 2.0, 5.0))
    frames = _series()
    ijk = V.ijk_to_ras_from_grid(grid)
    sequence, browser = add_volume_sequence(scene, frames, ijk, [0.0, 0.5, 1.0, 1.5], "uptake")
    assert sequence.GetNumberOfDataNodes() == FRAMES and sequence.GetIndexUnit() == "s"
    back, times = sequence_frames(sequence)
    np.testing.assert_array_equal(back, frames)
    assert times == [0.0, 0.5, 1.0, 1.5]
    # finely spaced times: the index in ms (Slicer merges values closer than 0.001), read back in s
    fine, _ = add_volume_sequence(scene, frames, ijk, [0.0, 0.0005, 0.001, 0.0015], "fast")
    assert fine.GetIndexUnit() == "ms" and sequence_frames(fine)[1] == pytest.approx([0.0, 0.0005, 0.001, 0.0015])
    # slicer-core has no Sequences module: no browser there (Slicer makes one: Testing/SlicerAPI)
    assert browser is None or browser.GetMasterSequenceNode() is sequence
    # the region: a label map on the frames' grid over the rising square
    labels = (frames[-1] > frames[0] + 0.1).astype(np.int16)
    label_node = V.add_volume(scene, labels, ijk, "enhancing", class_name="vtkMRMLLabelMapVolumeNode")
    table, chart, means = time_intensity_curve(scene, sequence, label_node, "uptake")
    np.testing.assert_allclose(means, [frames[f][labels > 0].mean() for f in range(FRAMES)], rtol=1e-6)
    assert np.all(np.diff(means) > 0.15)  # the uptake the curve is for
    assert table.GetTable().GetNumberOfRows() == FRAMES and chart.GetNumberOfPlotSeriesNodes() == 1
    # a markups ROI box around the same square (RAS)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    centre_lps = np.array(grid.centre_mm) + np.array([0.1 * N * 2.0, 0.0, 0.0])
    roi.SetCenter(-centre_lps[0], -centre_lps[1], centre_lps[2])
    roi.SetRadiusXYZ(0.08 * N * 2.0, 0.08 * N * 2.0, 10.0)
    _, _, box_means = time_intensity_curve(scene, sequence, roi, "uptake box")
    assert np.all(np.diff(box_means) > 0.1), box_means


def test_real_worker_result_becomes_a_sequence(tmp_path):
    scene = new_scene()
    grid = ImageGrid.centred((1, N, N), (2.0, 2.0, 5.0))
    m = simulate_mr(_series().astype(np.complex64), grid, n_spokes=8, n_frames=FRAMES, spoke_interval_s=0.01)
    path = write_measurement(m, tmp_path / "dynamic.h5")
    session = ReconstructionSession(scene, lambda d: WorkerRunner(d, python=sys.executable), tmp_path / "job",
                                    path, method="stinr", iterations=8, device="cpu", preview_every=2)
    session.start()
    frames_seen = []
    deadline = time.time() + 240
    while not session.state.finished and time.time() < deadline:
        for event in session.poll():
            if event.get("event") == "preview":
                frames_seen.append(event.get("frame"))
        time.sleep(0.05)
    assert session.state.status == "done", session.state.message
    assert frames_seen[:2] == [0, 1]  # previews step through the frames
    sequence = scene.GetNodeByID(session.state.sequence_node_id)
    assert sequence is not None and sequence.GetNumberOfDataNodes() == FRAMES
    times = [float(sequence.GetNthIndexValue(i)) for i in range(FRAMES)]
    np.testing.assert_allclose(times, m.geometry.frame_times_s, atol=1e-6)
    assert session.output_node.GetAttribute("INRRecon.sequence") == sequence.GetID()
    assert "frames" in session.state.message
