"""The module on Slicer's own Python layer (parameterNodeWrapper, ScriptedLoadableModule), real
MRML (slicer-core) and stand-ins for PythonQt's widgets. Run in its own process by
Testing/Python/test_slicer_api.py when INRRECON_SLICER_SOURCE names a Slicer source tree:

    INRRECON_SLICER_SOURCE=~/src/Slicer python -m pytest Testing/SlicerAPI -p no:cacheprovider
"""

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boot as _boot  # noqa: E402

if _boot.slicer_python_dir() is None:
    pytest.skip(f"set {_boot.SOURCE_VARIABLE} to a Slicer source checkout", allow_module_level=True)


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_import_warnings = _Recorder()
logging.getLogger().addHandler(_import_warnings)
slicer, INRRecon = _boot.boot()
logging.getLogger().removeHandler(_import_warnings)
import qt  # noqa: E402  (the stand-in, as Slicer's code sees it)

from INRReconLib.io.measurement import write_measurement  # noqa: E402
from INRReconLib.scene.volumes import add_volume, ijk_to_ras_from_grid  # noqa: E402
from INRReconLib.worker.runner import FakeRunner  # noqa: E402

sys.path.insert(0, str(_boot.REPO / "Testing" / "Python"))
from inr_cases import sparse_cone_case, sparse_ct_case  # noqa: E402

slicer.util.delayDisplay = lambda message, *args, **kwargs: logging.info(message)


@pytest.fixture(autouse=True)
def clean_scene():
    slicer.mrmlScene.Clear()
    qt.QSettings._store.clear()
    yield


@pytest.fixture
def widget():
    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    w = INRRecon.INRReconWidget(parent)
    w.setup()
    w.parent.isEntered = True
    yield w
    w.cleanup()


def ct_file(tmp_path, name="slice.h5", cone=False):
    return str(write_measurement((sparse_cone_case() if cone else sparse_ct_case())[0], tmp_path / name))


def test_the_parameter_node_is_built_with_every_default():
    assert not [m for m in _import_warnings.messages if "nused annotation" in m], _import_warnings.messages
    p = INRRecon.INRReconLogic().getParameterNode()
    assert p.method == "nerp" and p.preset == "hash-ct" and p.chainPriors is True
    assert p.measurementPath == "" and p.seriesPaths == ""
    for name in ("priorVolume", "outputVolume", "tumourSegmentation"):
        assert getattr(p, name) is None
    assert "pythonExecutable" not in p.allParameters  # never chosen by a scene


def test_every_parameter_round_trips_through_the_node():
    p = INRRecon.INRReconLogic().getParameterNode()
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    lab = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    vol = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    values = dict(priorVolume=vol, measurementPath="/data/f1.h5", seriesPaths="/data/f2.h5\n/data/f3.h5",
                  chainPriors=False, method="tv", preset="nerp-ct", iterations=12, embedIterations=0,
                  embedLearningRate=0.000123, learningRate=0.0005, loss="fls", priorRegistration="deformable", priorMismatch="warn",
                  priorSliceSearch=4.5, tvWeight=0.0, coarseToFine=0.25, useADMM=True, admmRho=0.5, device="cpu",
                  outputUpsampling=2, outputVolume=vol, tumourSegmentation=seg)
    for key, value in values.items():
        setattr(p, key, value)
    again = INRRecon.INRReconParameterNode(p.parameterNode)
    for key, value in values.items():
        assert getattr(again, key) == value, key
    again.tumourSegmentation = lab
    assert again.tumourSegmentation is lab
    again.tumourSegmentation = None
    assert again.tumourSegmentation is None


def test_settings_survive_leaving_and_entering_the_module(widget):
    p = widget._parameterNode
    p.method, p.preset, p.loss, p.priorRegistration, p.device = "tv", "nerp-ct", "fls", "deformable", "cpu"
    for _ in range(3):
        widget.exit()
        widget.enter()
    assert (p.method, p.preset, p.loss, p.priorRegistration, p.device) == ("tv", "nerp-ct", "fls", "deformable", "cpu")
    assert widget.ui.methodComboBox.currentText == "tv" and widget.ui.deviceComboBox.currentText == "cpu"
    # one connection per widget: a change in the GUI reaches the node, and only the live connector writes it
    assert len(widget.ui.methodComboBox.currentIndexChanged.slots) == 1
    widget.ui.lossComboBox.currentIndex = widget.ui.lossComboBox.findText("l1")
    assert p.loss == "l1"


def test_settings_loaded_from_a_scene_are_shown(widget):
    p = widget._parameterNode
    p.method, p.iterations = "cgls", 77  # as a scene file sets them
    widget.exit()
    widget.enter()
    assert widget.ui.methodComboBox.currentText == "cgls" and widget.ui.iterationsSpinBox.value == 77


def test_only_the_methods_own_settings_are_enabled(widget):
    """The registry says which config keys a method has: FBP has no network or learning rate, NeRP
    has both; the settings follow the method as it changes."""
    p = widget._parameterNode
    inr = ("networkWidthSpinBox", "learningRateSpinBox", "useADMMCheckBox")
    prior = ("priorRegistrationComboBox", "embedIterationsSpinBox")
    p.method = "fbp"
    assert not any(getattr(widget.ui, name).enabled for name in inr + prior)
    assert not widget.ui.iterationsSpinBox.enabled  # FBP is not iterative
    p.method = "inr"  # the INR without prior has no prior settings
    assert all(getattr(widget.ui, name).enabled for name in inr)
    assert not any(getattr(widget.ui, name).enabled for name in prior)
    p.method = "nerp"
    assert all(getattr(widget.ui, name).enabled for name in inr + prior) and widget.ui.iterationsSpinBox.enabled


def test_typing_in_the_series_box_keeps_the_order(widget):
    widget.ui.seriesPathsTextEdit.typeText("abc.h5")
    assert widget._parameterNode.seriesPaths == "abc.h5"
    assert widget.ui.seriesPathsTextEdit.toPlainText() == "abc.h5"


def test_an_unset_path_shows_empty(widget):
    assert widget.ui.measurementPathLineEdit.currentPath == ""
    widget.ui.measurementPathLineEdit.currentPath = "/data/x.h5"
    assert widget._parameterNode.measurementPath == "/data/x.h5"


def test_learning_rates_take_small_steps(widget):
    for name in ("learningRateSpinBox", "embedLearningRateSpinBox"):
        box = getattr(widget.ui, name)
        assert box.decimals >= 5 and box.singleStep <= 1e-3, name
        box.value = 0.00025
        assert box.value == pytest.approx(0.00025)
    assert widget._parameterNode.embedLearningRate == pytest.approx(0.00025)


def test_choosing_a_measurement_before_h5py_is_installed(widget, tmp_path, monkeypatch):
    path = ct_file(tmp_path, cone=True)
    widget._parameterNode.method = "fbp"
    import h5py

    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ModuleNotFoundError
    widget.ui.measurementPathLineEdit.currentPath = path  # no exception out of the observer
    assert widget.ui.applyButton.enabled and widget._parameterNode.preset == "hash-ct"
    monkeypatch.setitem(sys.modules, "h5py", h5py)
    widget._checkCanApply()  # what Apply does after installing it
    assert widget._parameterNode.preset == "hash-cone"


def test_the_prior_is_not_a_labelmap_or_a_sinogram(widget, tmp_path):
    from INRReconLib.scene.measurement_display import load_measurement_nodes

    grid = sparse_ct_case()[0].grid
    load_measurement_nodes(slicer.mrmlScene, ct_file(tmp_path))
    add_volume(slicer.mrmlScene, np.zeros(grid.shape, np.uint8), ijk_to_ras_from_grid(grid), "tumour",
               class_name="vtkMRMLLabelMapVolumeNode")
    ct = add_volume(slicer.mrmlScene, np.ones(grid.shape, np.float32), ijk_to_ras_from_grid(grid), "planning CT")
    widget.logic.getParameterNode().priorVolume = None
    widget.enter()
    assert widget._parameterNode.priorVolume is ct


def test_the_worker_python_is_an_application_setting(widget, monkeypatch):
    widget.ui.pythonExecutableLineEdit.currentPath = sys.executable
    assert INRRecon.workerPythonSetting() == sys.executable
    assert "pythonExecutable" not in widget._parameterNode.allParameters
    monkeypatch.setattr(slicer.app, "_startup_env", {"PATH": os.environ.get("PATH", ""), "PYTHONHOME": "/slicer",
                                                     "PYTHONNOUSERSITE": "1", "HOME": "/home/u"})
    env = INRRecon._foreignPythonEnvironment()
    assert "PYTHONHOME" not in env and "PYTHONNOUSERSITE" not in env and env["HOME"] == "/home/u"
    runner = widget.logic._factory()("/tmp/job")
    assert runner.python == sys.executable and "PYTHONHOME" not in runner.child_env()
    with pytest.raises(RuntimeError, match="lacks"):
        monkeypatch.setattr("INRReconLib.worker.packages.REQUIRED", ("no_such_package_xyz",))
        widget.logic.ensureDependencies()


def test_the_reader_claims_measurement_files_over_transforms(tmp_path):
    reader = INRRecon.INRReconFileReader(None)
    path = ct_file(tmp_path)
    confidence = reader.canLoadFileConfidence(path)
    assert isinstance(confidence, float) and confidence > 0.5 + 0.01 * len(".h5")
    other = tmp_path / "transform.h5"
    other.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert reader.canLoadFileConfidence(str(other)) == 0.0
    assert reader.canLoadFileConfidence(str(tmp_path / "x.nrrd")) == 0.0
    # what Slicer does with a dropped file: the most confident reader wins, whatever the module order
    assert slicer.app.coreIOManager().fileType(path) == "INRReconMeasurement"
    assert slicer.app.coreIOManager().fileType(str(other)) == "TransformFile"


def test_a_cone_beam_scan_is_read_from_its_geometry_xml(widget, tmp_path):
    """A CBCT scan as RTK writes it (geometry XML + projections beside it): the module's reader
    claims the XML (and no other XML), and choosing it as the measurement picks the cone preset."""
    pytest.importorskip("itk")
    try:
        from INRReconLib.bench_import import rtk_geometry, rtk_project, rtk_volume, write_rtk_scan
        rtk_geometry([0.0])
    except Exception as exc:  # itk without RTK
        pytest.skip(f"itk-rtk is not usable: {exc}")
    mu = np.zeros((8, 16, 16), np.float32)
    mu[3:5, 6:10, 6:10] = 0.02
    g = rtk_geometry(np.linspace(0, 360, 12, endpoint=False))
    xml, _ = write_rtk_scan(tmp_path / "scan", g, rtk_project(rtk_volume(mu, (8.0, 8.0, 8.0)), g, 8, 32, 8.0))
    reader = INRRecon.INRReconFileReader(None)
    assert reader.canLoadFileConfidence(str(xml)) > 0.5 + 0.01 * len(".xml")
    other = tmp_path / "settings.xml"
    other.write_text("<settings><a>1</a></settings>")
    assert reader.canLoadFileConfidence(str(other)) == 0.0
    widget._parameterNode.method = "nerp"
    widget.ui.measurementPathLineEdit.currentPath = str(xml)
    assert widget._parameterNode.preset == "hash-cone"


def test_apply_runs_a_scripted_worker_and_cleans_up(widget, tmp_path):
    from INRReconLib.io.volume import write_volume

    case = sparse_ct_case()[0]
    path = ct_file(tmp_path)
    out = tmp_path / "out.nrrd"
    write_volume(out, np.ones(case.grid.shape, np.float32), case.grid)
    script = [{"event": "started"}, {"event": "progress", "stage": "sirt", "iteration": 1, "total": 2, "loss": 2.0},
              {"event": "progress", "stage": "sirt", "iteration": 2, "total": 2, "loss": 1.0},
              {"event": "result", "output": str(out), "cancelled": False, "metrics": {}}]
    jobs = []
    widget.logic.runnerFactory = lambda job_dir: jobs.append(job_dir) or FakeRunner(script, job_dir=job_dir)
    p = widget._parameterNode
    p.method, p.measurementPath = "sirt", path
    assert widget.ui.applyButton.enabled
    widget.ui.applyButton.click()
    assert widget.ui.applyButton.text == "Cancel"
    for _ in range(20):
        widget._timer.fire()
    assert widget.ui.applyButton.text == "Apply" and p.outputVolume is not None
    assert not Path(jobs[0]).parent.exists()  # the job folder went once the result was in the scene
    assert widget.ui.progressBar.value == 100


def test_disinr_takes_a_model_folder_that_the_job_records(widget, tmp_path):
    """The Population model selector is for disinr only; Apply waits for a folder; the job's config
    names it (the result's saved config then says which model made it)."""
    import json

    path = ct_file(tmp_path)
    p = widget._parameterNode
    p.method, p.measurementPath = "nerp", path
    assert not widget.ui.modelPathLineEdit.enabled
    p.method = "disinr"
    assert widget.ui.modelPathLineEdit.enabled and p.preset == "disinr-ct-fast"
    assert not widget.ui.applyButton.enabled and "pre-trained model" in widget.ui.applyButton.toolTip
    model = tmp_path / "model"
    model.mkdir()
    widget.ui.modelPathLineEdit.currentPath = str(model)
    assert p.modelFolder == str(model) and widget.ui.applyButton.enabled
    from INRReconLib.io.volume import write_volume

    case = sparse_ct_case()[0]
    out = tmp_path / "out.nrrd"
    write_volume(out, np.ones(case.grid.shape, np.float32), case.grid)
    jobs = []
    widget.logic.runnerFactory = lambda job_dir: jobs.append(job_dir) or FakeRunner(
        [{"event": "started"}, {"event": "result", "output": str(out), "cancelled": False, "metrics": {}}],
        job_dir=job_dir)
    widget.ui.applyButton.click()
    job = json.loads((Path(jobs[0]) / "job.json").read_text())  # read before the result clears the folder
    assert job["method"] == "disinr" and job["config"]["model"] == str(model)
    assert job["config"]["preset"] == "disinr-ct-fast"
    for _ in range(20):
        widget._timer.fire()
    assert p.outputVolume is not None


def test_a_disinr_series_learns_from_the_earlier_fractions(widget, tmp_path):
    """Series mode with disinr and chaining: the second fraction's job pre-trains on the first
    fraction's file (the worker's pretrain_on); the first uses the Population model."""
    import json

    from INRReconLib.io.volume import write_volume

    first, second = ct_file(tmp_path, "f1.h5"), ct_file(tmp_path, "f2.h5")
    case = sparse_ct_case()[0]
    out = tmp_path / "out.nrrd"
    write_volume(out, np.ones(case.grid.shape, np.float32), case.grid)
    model = tmp_path / "model"
    model.mkdir()
    jobs = []

    def runner(job_dir):
        jobs.append(json.loads((Path(job_dir) / "job.json").read_text()))
        return FakeRunner([{"event": "started"}, {"event": "result", "output": str(out), "cancelled": False,
                            "metrics": {}}], job_dir=job_dir)

    widget.logic.runnerFactory = runner
    p = widget._parameterNode
    p.method, p.measurementPath, p.seriesPaths, p.chainPriors = "disinr", first, second, True
    widget.ui.modelPathLineEdit.currentPath = str(model)
    assert widget.ui.applyButton.enabled
    widget.ui.applyButton.click()
    for _ in range(40):
        widget._timer.fire()
    assert [j.get("pretrain_on") for j in jobs] == [None, [str(first)]]
    assert all(j["config"]["model"] == str(model) for j in jobs)


def test_a_dynamic_result_becomes_a_sequence_with_a_time_intensity_curve(widget, tmp_path):
    from INRReconLib.io.sequence import write_sequence
    from INRReconLib.io.volume import write_volume
    from INRReconLib.physics.grid import ImageGrid
    from INRReconLib.simulate import simulate_mr

    grid = ImageGrid.centred((1, 12, 12), (2.0, 2.0, 5.0))
    frames = np.stack([np.full(grid.shape, 0.1 * (f + 1), np.float32) for f in range(3)])
    m = simulate_mr(frames.astype(np.complex64), grid, n_spokes=6, n_frames=3, spoke_interval_s=0.01)
    path = str(write_measurement(m, tmp_path / "dynamic.h5"))
    mean, seq = tmp_path / "out.nrrd", tmp_path / "out.seq.nrrd"
    write_volume(mean, frames.mean(axis=0), grid)
    write_sequence(seq, frames, grid, [0.0, 0.5, 1.0])
    script = [{"event": "started"},
              {"event": "result", "output": str(mean), "sequence": str(seq), "frame_times_s": [0.0, 0.5, 1.0],
               "cancelled": False, "metrics": {}}]
    widget.logic.runnerFactory = lambda job_dir: FakeRunner(script, job_dir=job_dir)
    for view in ("Red", "Yellow", "Green"):  # the standard views' composite nodes, as Slicer's layout has them
        slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(view)
    p = widget._parameterNode
    p.method, p.measurementPath = "stinr", path
    assert p.preset == "stinr-fast"  # the dynamic method's own preset, once the file and method are chosen
    widget.ui.applyButton.click()
    for _ in range(20):
        widget._timer.fire()
    output = p.outputVolume
    sequence = slicer.mrmlScene.GetNodeByID(output.GetAttribute("INRRecon.sequence"))
    assert sequence.GetNumberOfDataNodes() == 3
    browser = slicer.mrmlScene.GetNodeByID(output.GetAttribute("INRRecon.sequenceBrowser"))
    assert browser.GetMasterSequenceNode() is sequence
    assert slicer.modules.sequences.toolBar().active is browser and slicer.modules.sequences.toolbar_visible
    proxy = browser.GetProxyNode(sequence)
    composites = [slicer.mrmlScene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
                  for n in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    shown = {c.GetBackgroundVolumeID() for c in composites if c.GetLayoutName() in ("Red", "Yellow", "Green")}
    assert shown == {proxy.GetID()}  # the views play the frames
    label = add_volume(slicer.mrmlScene, np.ones(grid.shape, np.int16), ijk_to_ras_from_grid(grid), "all",
                       class_name="vtkMRMLLabelMapVolumeNode")
    p.curveRegion = label
    widget.ui.curveButton.click()
    chart = slicer.modules.plots.logic().shown[-1]
    table = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable()
    np.testing.assert_allclose([table.GetValue(r, 1).ToDouble() for r in range(3)], [0.1, 0.2, 0.3], rtol=1e-5)


def test_the_self_test_passes():
    test = INRRecon.INRReconTest()
    test.runTest()
