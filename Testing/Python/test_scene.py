"""Scene plumbing (INRReconLib.scene) on a real MRML scene from `slicer-core`, driven by scripted
worker events (FakeRunner): preview geometry, convergence table, output node, cancel, errors,
series -> Sequence, comparison layout, tumour table, measurement display."""

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")

from INRReconLib.io.measurement import Measurement, write_measurement  # noqa: E402
from INRReconLib.io.volume import write_volume  # noqa: E402
from INRReconLib.physics.ct_geometry import parallel_geometry  # noqa: E402
from INRReconLib.physics.grid import ImageGrid  # noqa: E402
from INRReconLib.physics.mr_geometry import MRGeometry  # noqa: E402
from INRReconLib.scene import volumes as V  # noqa: E402
from INRReconLib.scene.compare import VIEW_TAGS, setup_comparison, tumour_statistics  # noqa: E402
from INRReconLib.scene.measurement_display import load_measurement_nodes  # noqa: E402
from INRReconLib.scene.series import SeriesSession  # noqa: E402
from INRReconLib.scene.session import ReconstructionSession  # noqa: E402
from INRReconLib.worker.events import preview_payload  # noqa: E402
from INRReconLib.worker.runner import FakeRunner  # noqa: E402

# An oblique, off-centre grid: a wrong LPS/RAS flip or a lost direction shows up in the matrices.
_c, _s = np.cos(0.3), np.sin(0.3)
DIRECTION = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, 1.0)


def new_scene():
    scene = slicer.vtkMRMLScene()
    # Slicer's Sequences module registers the browser class; a bare scene needs it done by hand.
    scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    return scene


def make_grid(shape_zyx=(1, 24, 20)):
    nz, ny, nx = shape_zyx
    return ImageGrid((nx, ny, nz), (1.5, 1.25, 2.0), (-14.0, 7.5, 3.0), DIRECTION)


def phantom(grid, scale=1.0):
    nz, ny, nx = grid.shape
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    r2 = ((x - nx / 2) / (nx / 3)) ** 2 + ((y - ny / 2) / (ny / 3)) ** 2
    return (scale * 0.02 * (r2 < 1) + 0.001 * x).astype(np.float32)


def write_ct_measurement(path, grid, n_views=12, fraction=None):
    angles = np.linspace(0, np.pi, n_views, endpoint=False)
    geometry = parallel_geometry(angles, n_cols=32, col_spacing_mm=1.0, n_rows=1, row_spacing_mm=grid.spacing[2])
    data = np.random.default_rng(0).random((n_views, 1, 32)).astype(np.float32)
    attrs = {"description": "test scan"} if fraction is None else {"fraction": fraction}
    write_measurement(Measurement("CT", data, grid, geometry, attrs), path)
    return path


def scripted_factory(grid, n_progress=5, with_preview=True, final="result", made=None, progress=None,
                     result_extra=None):
    """runner_factory for ReconstructionSession: writes the files a worker would (previews, the
    output on the measurement grid) and returns a FakeRunner that plays the matching events.
    progress: the progress events to play instead of one n_progress-step "recon" stage;
    result_extra: more keys for the result event."""

    def factory(job_dir):
        job = json.loads((job_dir / "job.json").read_text())
        events = [{"event": "started", "device": "cpu"}] + list(progress or [])
        truth = phantom(grid, 1.2)
        for it in range(1, 0 if progress else n_progress + 1):
            events.append({"event": "progress", "stage": "recon", "iteration": it, "total": n_progress,
                           "loss": 1.0 / it, "psnr": 20.0 + it, "elapsed": 0.1 * it, "eta": 0.1 * (n_progress - it)})
            if with_preview and it % 2 == 0:
                array, fields = preview_payload(truth * it / n_progress)
                path = job_dir / f"preview-{it}.npy"
                np.save(path, array)
                events.append({"event": "preview", "path": str(path), "grid": grid.to_dict(), **fields})
        if final == "result":
            write_volume(job["output"], truth, grid)
            events.append({"event": "result", "output": job["output"], "metrics": {"seconds": 0.5},
                           "cancelled": False, **(result_extra or {})})
        else:
            events.append({"event": "error", "kind": "bad-input", "message": "prior: wrong grid. Fix: resample"})
        runner = FakeRunner(events, per_poll=2, job_dir=job_dir)
        if made is not None:
            made.append((job, runner))
        return runner

    return factory


@pytest.fixture
def ct_case(tmp_path):
    grid = make_grid()
    scene = new_scene()
    prior = V.add_volume(scene, phantom(grid), V.ijk_to_ras_from_grid(grid), "planning CT")
    measurement = write_ct_measurement(tmp_path / "fraction1.h5", grid)
    return scene, grid, prior, measurement, tmp_path


def test_session_names_the_prior_slice_nerp_embedded(ct_case):
    """NeRP picked a slice of the prior volume (2D data): the aligned prior node carries its
    offset from the measured plane, and the status line says which slice it was."""
    scene, grid, prior, measurement, tmp = ct_case
    aligned = tmp / "aligned.nrrd"
    write_volume(aligned, phantom(grid), grid)
    extra = {"prior_aligned": str(aligned), "prior_slice_offset_mm": -4.0}
    session = ReconstructionSession(scene, scripted_factory(grid, result_extra=extra), tmp / "job", measurement,
                                    prior_node=prior, method="nerp", iterations=5, device="cpu")
    session.start()
    while not session.state.finished:
        session.poll()
    node = scene.GetNodeByID(session.output_node.GetAttribute("INRRecon.alignedPrior"))
    assert node.GetAttribute("INRRecon.priorSliceOffsetMm") == "-4.0"
    assert session.state.summary() == "Done. Prior: its slice -4.0 mm from the measured plane matched the data."


def test_grid_ras_round_trip_matches_sitk_file(tmp_path):
    grid = make_grid((3, 6, 5))
    m = V.ijk_to_ras_from_grid(grid)
    # LPS -> RAS flips x and y; z, spacing and the oblique rotation survive.
    assert np.allclose(m[:3, 3], [14.0, -7.5, 3.0])
    assert np.allclose(np.linalg.norm(m[:3, :3], axis=0), grid.spacing)
    back = V.grid_from_ijk_to_ras(m, grid.shape)
    assert np.allclose(back.origin, grid.origin) and np.allclose(back.direction, grid.direction)
    scene = new_scene()
    node = V.add_volume(scene, phantom(grid), m, "v")
    V.write_volume_node(node, tmp_path / "v.nrrd")
    loaded = V.load_volume_file(scene, tmp_path / "v.nrrd")
    assert np.allclose(V.get_ijk_to_ras(loaded), m, atol=1e-6)
    assert np.array_equal(V.array_from_volume(loaded), phantom(grid))


def test_session_hands_the_prior_only_to_a_method_that_reads_it(ct_case):
    """FBP/TV do not read a prior: the session does not export it for them (seconds for a large
    volume); NeRP gets it as prior.nrrd."""
    scene, grid, prior, measurement, tmp = ct_case
    for method, handed in (("tv", False), ("nerp", True)):
        made = []
        job_dir = tmp / f"job-{method}"
        ReconstructionSession(scene, scripted_factory(grid, made=made), job_dir, measurement, prior_node=prior,
                              method=method, iterations=5, device="cpu").start()
        assert (made[0][0]["prior"] is not None) == handed and (job_dir / "prior.nrrd").exists() == handed


def test_session_streams_preview_plot_and_output(ct_case):
    scene, grid, prior, measurement, tmp = ct_case
    prior_before = V.array_from_volume(prior).copy()
    made = []
    session = ReconstructionSession(scene, scripted_factory(grid, made=made), tmp / "job", measurement,
                                    prior_node=prior, method="nerp", iterations=5, device="cpu", preview_every=2)
    session.start()
    job = made[0][0]
    assert job["method"] == "nerp" and job["iterations"] == 5 and job["prior"].endswith("prior.nrrd")

    seen_preview_values, preview_ids = [], set()
    while not session.state.finished:
        session.poll()
        if session.preview_node is not None:
            preview_ids.add(session.preview_node.GetID())
            seen_preview_values.append(float(V.array_from_volume(session.preview_node).max()))
            last_preview = V.array_from_volume(session.preview_node).copy()
            last_preview_matrix = V.get_ijk_to_ras(session.preview_node)
    state = session.state
    assert state.status == "done" and state.percent == 100.0 and state.loss == pytest.approx(0.2)
    # Preview: one node updated in place as the run goes on, on the measurement grid (overlays the
    # prior), removed once the result is in the scene.
    assert len(set(seen_preview_values)) >= 2 and seen_preview_values[0] < seen_preview_values[-1]
    assert len(preview_ids) == 1 and session.preview_node is None
    assert all(scene.GetNodeByID(i) is None for i in preview_ids)
    assert np.allclose(last_preview_matrix, V.get_ijk_to_ras(prior))
    assert np.allclose(last_preview, phantom(grid, 1.2)[0] * 4 / 5, atol=1e-6)
    # Convergence table: one row per iteration, loss and PSNR as reported; a chart with two series.
    rows = session.plot.rows()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1][1] == pytest.approx(0.2) and rows[-1][2] == pytest.approx(25.0)
    assert session.plot.chart_node.GetNumberOfPlotSeriesNodes() == 2
    # Output: a new node named after the measurement, the prior's geometry, the prior untouched.
    out = scene.GetNodeByID(state.output_node_id)
    assert out.GetName() == "fraction1" and out is not prior
    assert np.allclose(V.get_ijk_to_ras(out), V.get_ijk_to_ras(prior), atol=1e-6)
    assert np.allclose(V.array_from_volume(out), phantom(grid, 1.2)[0], atol=1e-6)
    assert np.array_equal(V.array_from_volume(prior), prior_before)
    assert out.GetAttribute("INRRecon.method") == "nerp"


def test_plot_puts_stages_side_by_side(ct_case):
    """NeRP's stages each count from 1; the plot's x axis keeps counting. The registration stage
    ends before its planned total (its optimizers converged), so the next stage follows its last
    iteration, not the total: no empty stretch in the chart."""
    scene, grid, prior, measurement, tmp = ct_case
    stages = [("prior-registration", 3, 800), ("prior-embedding", 2, 2), ("fitting", 2, 2)]
    progress = [{"event": "progress", "stage": name, "iteration": it, "total": total, "loss": 1.0}
                for name, n, total in stages for it in range(1, n + 1)]
    made = []
    session = ReconstructionSession(scene, scripted_factory(grid, progress=progress, made=made), tmp / "job",
                                    measurement, prior_node=prior, method="nerp", iterations=2, device="cpu",
                                    upsample=2)
    session.start()
    assert made[0][0]["upsample"] == 2  # the module's Output upsampling reaches the job
    while not session.state.finished:
        session.poll()
    assert session.state.status == "done"
    assert [r[0] for r in session.plot.rows()] == [1, 2, 3, 4, 5, 6, 7]


def test_3d_preview_slices_land_on_central_planes(tmp_path):
    grid = make_grid((9, 10, 12))
    scene = new_scene()
    measurement = write_ct_measurement(tmp_path / "m3d.h5", grid)
    session = ReconstructionSession(scene, scripted_factory(grid, n_progress=2), tmp_path / "job", measurement,
                                    method="inr", iterations=2)
    session.start()
    session.poll()
    session.poll()  # progress 2 + preview
    truth = phantom(grid, 1.2)
    preview = V.array_from_volume(session.preview_node)
    assert preview.shape == grid.shape
    assert np.allclose(preview[4], truth[4]) and np.allclose(preview[:, 5, :], truth[:, 5, :])
    assert np.allclose(preview[:, :, 6], truth[:, :, 6])
    assert np.count_nonzero(preview[1, 1:4, 1:4]) == 0  # off the planes: empty
    assert np.allclose(V.get_ijk_to_ras(session.preview_node), V.ijk_to_ras_from_grid(grid))


def test_cancel_keeps_scene_consistent(ct_case):
    scene, grid, prior, measurement, tmp = ct_case
    n_nodes_prior = V.array_from_volume(prior).copy()
    session = ReconstructionSession(scene, scripted_factory(grid, n_progress=20), tmp / "job", measurement,
                                    prior_node=prior, iterations=20)
    session.start()
    session.poll()
    session.poll()
    session.cancel()
    session.wait(timeout_s=5)
    assert session.state.status == "cancelled"
    assert not session.runner.running
    out = scene.GetNodeByID(session.state.output_node_id)
    assert out.GetName() == "fraction1 (partial)"
    assert np.array_equal(V.array_from_volume(prior), n_nodes_prior)
    rows_after = session.plot.n_rows
    assert session.poll() == [] and session.plot.n_rows == rows_after  # nothing moves after the end
    assert "Cancelled" in session.state.summary()


def test_error_event_reaches_state(ct_case):
    scene, grid, prior, measurement, tmp = ct_case
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    session = ReconstructionSession(scene, scripted_factory(grid, n_progress=1, with_preview=False, final="error"),
                                    tmp / "job", measurement, prior_node=prior).start()
    session.wait(timeout_s=5)
    assert session.state.status == "error" and "wrong grid" in session.state.message
    assert session.state.summary().startswith("Failed:")
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes  # no output node


def test_series_builds_sequence_with_chained_priors(ct_case):
    scene, grid, prior, _, tmp = ct_case
    paths = [write_ct_measurement(tmp / f"fx{n}.h5", grid, fraction=n) for n in (1, 2, 3)]
    series = SeriesSession(scene, scripted_factory(grid, n_progress=2), tmp / "series", paths, prior_node=prior,
                           chain=True, name="patient A", method="nerp", iterations=2)
    series.start()
    assert series.wait(timeout_s=10) == "done"
    assert len(series.outputs) == 3
    assert series.sessions[0].prior_node is prior
    assert series.sessions[1].prior_node is series.outputs[0]
    assert series.sessions[2].prior_node is series.outputs[1]
    seq = series.sequence_node
    assert seq.GetNumberOfDataNodes() == 3 and seq.GetNthIndexValue(2) == "3"
    assert series.browser_node.GetMasterSequenceNode() is seq
    assert np.allclose(V.array_from_volume(seq.GetNthDataNode(1)), phantom(grid, 1.2)[0], atol=1e-6)
    # Previews are dropped once each fraction's output exists.
    assert all(s.preview_node is None for s in series.sessions)


def test_a_disinr_series_pretrains_each_fraction_on_the_earlier_ones(ct_case):
    """Chain mode with a model method: fraction n+1's job pre-trains on fractions 1..n's raw data
    (the first uses the config's model); no prior image is handed over."""
    import json

    scene, grid, prior, _, tmp = ct_case
    paths = [write_ct_measurement(tmp / f"fx{n}.h5", grid, fraction=n) for n in (1, 2, 3)]
    series = SeriesSession(scene, scripted_factory(grid, n_progress=2), tmp / "dseries", paths, prior_node=prior,
                           chain=True, method="disinr", config={"model": str(tmp / "population")}, iterations=2)
    series.start()
    assert series.wait(timeout_s=10) == "done" and len(series.outputs) == 3
    jobs = [json.loads((tmp / "dseries" / f"fraction-0{n}" / "job.json").read_text()) for n in (1, 2, 3)]
    assert [j.get("pretrain_on") for j in jobs] == [None, [str(paths[0])], [str(paths[0]), str(paths[1])]]
    assert all(j["prior"] is None for j in jobs)
    unchained = SeriesSession(scene, scripted_factory(grid, n_progress=2), tmp / "useries", paths[:2], chain=False,
                              method="disinr", config={"model": str(tmp / "population")}, iterations=2)
    unchained.start()
    assert unchained.wait(timeout_s=10) == "done"
    assert json.loads((tmp / "useries" / "fraction-02" / "job.json").read_text()).get("pretrain_on") is None


def test_comparison_layout_and_tumour_table(ct_case):
    scene, grid, prior, _, _ = ct_case
    m = V.ijk_to_ras_from_grid(grid)
    recon = V.add_volume(scene, phantom(grid, 1.5), m, "fraction1")
    later = V.add_volume(scene, phantom(grid, 1.8), m, "fraction2")
    comparison = setup_comparison(scene, prior, recon, next_fraction=later)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == comparison.layout_id
    assert all(f'singletontag="{t}"' in layout.GetCurrentLayoutDescription() for t in VIEW_TAGS)
    for tag, volume in comparison.views.items():
        composite = next(scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                         for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
                         if scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName() == tag)
        assert composite.GetBackgroundVolumeID() == volume.GetID() and composite.GetLinkedControl() == 1
    diff = V.array_from_volume(comparison.difference_node)
    assert np.allclose(diff, phantom(grid, 1.5) - phantom(grid), atol=1e-6)
    windows = {t: (v.GetDisplayNode().GetWindow(), v.GetDisplayNode().GetLevel()) for t, v in comparison.views.items()}
    assert windows["INRPrior"] == windows["INRRecon"] == windows["INRNext"]
    assert windows["INRDifference"][1] == pytest.approx(0.0)  # symmetric about zero

    # Tumour: a 4x5-voxel box inside the disc; voxel volume 1.5*1.25*2 mm^3.
    labels = np.zeros(grid.shape, np.uint8)
    labels[0, 10:14, 8:13] = 1
    labelmap = V.add_volume(scene, labels, m, "tumour", class_name="vtkMRMLLabelMapVolumeNode")
    table, rows = tumour_statistics(scene, labelmap, [prior, recon, later])
    assert table.GetTable().GetNumberOfRows() == 3
    assert rows[0]["volume_ml"] == pytest.approx(20 * 1.5 * 1.25 * 2.0 / 1000.0)
    expected = [phantom(grid, s)[labels == 1].mean() for s in (1.0, 1.5, 1.8)]
    assert [r["mean"] for r in rows] == pytest.approx(expected, rel=1e-5)
    assert rows[2]["mean"] > rows[1]["mean"] > rows[0]["mean"]


def test_measurement_display_ct_and_mr(tmp_path):
    scene = new_scene()
    grid = make_grid()
    ct = write_ct_measurement(tmp_path / "ct.h5", grid, n_views=12)
    (node,) = load_measurement_nodes(scene, ct)
    assert V.array_from_volume(node).shape == (1, 12, 32)  # one image: views x detector columns
    assert "12 views" in node.GetDescription() and node.GetAttribute("INRRecon.modality") == "CT"

    mask = np.zeros((2, 24, 20), bool)
    mask[0, ::2] = True  # rows 0, 2, ..., 22
    mask[1, ::4] = True  # rows 0, 4, ..., 20
    mask[1, 1:12:2] = True  # rows 1, 3, ..., 11: both frames sample 12 rows
    data = np.ones((2, 1, int(mask[0].sum())), np.complex64)
    write_measurement(Measurement("MR", data, grid, MRGeometry("cartesian", mask=mask)), tmp_path / "mr.h5")
    (mr_node,) = load_measurement_nodes(scene, tmp_path / "mr.h5")
    density = V.array_from_volume(mr_node)
    assert density.shape == grid.shape
    assert density[0, 0, 0] == pytest.approx(1.0) and density[0, 2, 0] == pytest.approx(0.5)
    assert density[0, 1, 0] == pytest.approx(0.5) and density[0, 13, 0] == 0.0
    assert "acceleration" in mr_node.GetDescription()


def test_series_state_names_the_fraction_once_and_the_plot_does_not_jump(ct_case):
    scene, grid, prior, _, tmp = ct_case
    paths = [write_ct_measurement(tmp / f"fx{n}.h5", grid, fraction=n) for n in (1, 2)]
    series = SeriesSession(scene, scripted_factory(grid, n_progress=4, with_preview=False), tmp / "series", paths,
                           prior_node=prior, method="tv")
    series.start()
    stages = []
    while not series.finished:
        series.poll()
        stages.append(series.state.stage)  # read often, as the widget's timer does
        stages.append(series.state.stage)
    running = [s for s in stages if s.startswith("fraction")]
    assert running and all(s.count("fraction") == 1 for s in running), running[:4]
    # each fraction's plot counts its own iterations 1..4: no offset from a stage that seemed to change
    for session in series.sessions:
        assert [row[0] for row in session.plot.rows()] == [1.0, 2.0, 3.0, 4.0]


def test_layouts_show_the_plot_and_the_tumour_table(ct_case):
    from INRReconLib.scene.compare import PLOT_TAG, TABLE_TAG, show_progress_layout, show_table
    from INRReconLib.scene.progress_plot import ProgressPlot

    scene, grid, prior, _, _ = ct_case
    plot = ProgressPlot(scene, "fraction1")
    plot_view = show_progress_layout(scene, plot.chart_node)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    xml = layout.GetCurrentLayoutDescription()
    assert f'class="vtkMRMLPlotViewNode" singletontag="{PLOT_TAG}"' in xml
    assert all(f'singletontag="{t}"' in xml for t in ("Red", "Yellow", "Green"))
    assert plot_view.GetPlotChartNodeID() == plot.chart_node.GetID()

    recon = V.add_volume(scene, phantom(grid, 1.5), V.ijk_to_ras_from_grid(grid), "fraction1")
    setup_comparison(scene, prior, recon)
    xml = layout.GetCurrentLayoutDescription()
    assert f'class="vtkMRMLTableViewNode" singletontag="{TABLE_TAG}"' in xml
    labels = np.zeros(grid.shape, np.uint8)
    labels[0, 10:14, 8:13] = 1
    labelmap = V.add_volume(scene, labels, V.ijk_to_ras_from_grid(grid), "tumour", class_name="vtkMRMLLabelMapVolumeNode")
    table, _rows = tumour_statistics(scene, labelmap, [prior, recon])
    assert show_table(scene, table).GetTableNodeID() == table.GetID()
    # the comparison views carry their colours and labels however they were created
    view = next(scene.GetNthNodeByClass(i, "vtkMRMLSliceNode") for i in range(scene.GetNumberOfNodesByClass(
        "vtkMRMLSliceNode")) if scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetLayoutName() == "INRDifference")
    assert view.GetLayoutLabel() == "D" and view.GetLayoutColor() == pytest.approx((0xCC / 255, 0x79 / 255, 0xA7 / 255))


def test_the_prior_candidate_is_a_patient_image(ct_case, tmp_path):
    scene = new_scene()
    grid = make_grid()
    m = V.ijk_to_ras_from_grid(grid)
    assert V.candidate_prior(scene) is None
    load_measurement_nodes(scene, write_ct_measurement(tmp_path / "f.h5", grid))  # a sinogram shown as a volume
    V.add_volume(scene, np.zeros(grid.shape, np.uint8), m, "tumour", class_name="vtkMRMLLabelMapVolumeNode")
    preview = V.add_volume(scene, phantom(grid), m, "preview")
    preview.SetAttribute(V.PREVIEW_ATTRIBUTE, "1")
    assert V.candidate_prior(scene) is None
    ct = V.add_volume(scene, phantom(grid), m, "planning CT")
    assert V.candidate_prior(scene) is ct
    recon = V.add_volume(scene, phantom(grid), m, "fraction 1")
    recon.SetAttribute("INRRecon.measurement", "/x/f1.h5")
    recon.SetAttribute("INRRecon.method", "nerp")
    assert V.is_patient_image(recon)  # a result can be the next fraction's prior


def test_previews_go_to_the_standard_views_only(ct_case):
    from INRReconLib.scene.compare import ensure_slice_view_nodes

    scene, grid, prior, _, _ = ct_case
    for tag in ("Red", "Yellow", "Green", "INRPrior"):
        ensure_slice_view_nodes(scene, tag)[1].SetBackgroundVolumeID(None)
    preview = V.add_volume(scene, phantom(grid), V.ijk_to_ras_from_grid(grid), "preview")
    assert V.show_in_standard_views(scene, background=prior, foreground=preview) == 3
    composites = {scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName():
                  scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))}
    assert composites["Red"].GetForegroundVolumeID() == preview.GetID()
    assert composites["INRPrior"].GetBackgroundVolumeID() is None


def test_the_change_map_comes_in_as_a_colour_overlay(ct_case):
    from INRReconLib.methods.change import CHANGE_THRESHOLD

    scene, grid, prior, measurement, tmp = ct_case
    change_path = tmp / "change.nrrd"
    write_volume(change_path, np.full(grid.shape, 5.0, np.float32), grid)
    session = ReconstructionSession(scene, scripted_factory(grid, n_progress=2, with_preview=False,
                                                            result_extra={"change_map": str(change_path)}),
                                    tmp / "job", measurement, prior_node=prior, method="nerp")
    session.start()
    session.wait(timeout_s=10)
    node = session.change_node
    assert node is not None and session.output_node.GetAttribute("INRRecon.changeMap") == node.GetID()
    display = node.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(CHANGE_THRESHOLD)
    assert "change map" in session.state.summary()
    assert np.allclose(V.get_ijk_to_ras(node), V.get_ijk_to_ras(prior))


def test_a_bad_later_fraction_ends_the_series_with_an_error(ct_case):
    from INRReconLib.errors import InputError

    scene, grid, prior, _, tmp = ct_case
    paths = [write_ct_measurement(tmp / f"fx{n}.h5", grid, fraction=n) for n in (1, 2)]
    missing = tmp / "fx3.h5"
    with pytest.raises(InputError, match="fx3.h5"):  # checked before anything runs
        SeriesSession(scene, scripted_factory(grid, n_progress=2), tmp / "s0", paths + [missing],
                      prior_node=prior).start()
    series = SeriesSession(scene, scripted_factory(grid, n_progress=2), tmp / "s1", paths, prior_node=prior)
    series.start()
    paths[1].unlink()  # the file goes away while fraction 1 runs
    assert series.wait(timeout_s=10) == "error"  # no exception out of poll(), no endless "running"
    assert "fraction 2" in series.message and "fx2.h5" in series.message
    assert series.state.status == "error" and len(series.outputs) == 1
    assert series.poll() == []
