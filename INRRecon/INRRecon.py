"""INRRecon: reconstruct sparse CT / MRI measurements with implicit neural representations.

The module file is thin on purpose: the Module holds metadata, the ParameterNode declares every
setting once, the Widget wires the GUI, the Logic drives `INRReconLib.scene` (Qt-free, tested
without Slicer), the Test is the self-test. The reconstruction itself runs in a separate worker
process (`python -m INRReconLib.worker`), so Slicer stays responsive and a crash cannot take it down.
"""

import logging
import os
import pathlib
import sys
import tempfile
import time
from typing import Annotated, Optional, Union

import qt
import vtk

import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import (
    Choice,
    Decimals,
    Default,
    WithinRange,
    parameterNodeWrapper,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _ensureLibraryOnPath():
    """Running from a source checkout: INRReconLib sits next to the INRRecon folder."""
    try:
        import INRReconLib  # noqa: F401 (only checks that it is importable)
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_ensureLibraryOnPath()

METHODS = ("nerp", "inr", "fbp", "sirt", "cgls", "tv", "adjoint", "cgsense")
FIELD_METHODS = ("nerp", "inr")  # their result is a field: the output can be written on a finer grid
PRESETS = ("hash-ct", "hash-cone", "nerp-ct", "hash-mr", "nerp-mr")
LOSSES = ("preset", "l2", "l1", "fls", "rel_l2")
PRIOR_ALIGNMENTS = ("preset", "none", "rigid", "deformable")
DEVICES = ("auto", "cpu", "cuda")
# Packages the worker needs besides torch (which comes from the PyTorch extension).
WORKER_PACKAGES = ("h5py", "scipy", "torchkbnufft", "astra-toolbox", "safetensors", "PyYAML")


#
# Module
#


class INRRecon(ScriptedLoadableModule):
    """Module metadata; see Slicer's ScriptedLoadableModule."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("INR Reconstruction")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Tomographic Reconstruction")]
        self.parent.dependencies = []
        self.parent.contributors = ["INRRecon developers"]
        self.parent.helpText = _(
            "Reconstruct CT and MRI images from sparse measurements (few CT views, undersampled k-space) "
            "with implicit neural representations: a small network maps coordinates to intensity and is "
            "fitted so that the scanner's forward model reproduces the measurement. "
            "Pick an earlier scan of the patient as the <b>prior</b> (NeRP), load the new measurement "
            "(<code>.h5</code>, see the project's FORMAT.md), press <b>Apply</b> and watch the reconstruction "
            "converge in the slice views. Several fractions can be reconstructed as a series, each using the "
            "previous result as prior, and compared side by side. Classical baselines (FBP/FDK, SIRT, CGLS, "
            "TV, adjoint NUFFT, CG-SENSE) are included for reference."
        )
        self.parent.acknowledgementText = _(
            "Methods from: L. Shen, J. Pauly, L. Xing, \"NeRP: Implicit Neural Representation Learning with "
            "Prior Embedding for Sparsely Sampled Image Reconstruction\", IEEE TNNLS 2022; DisINR "
            "(disentangled, cohort-pretrained INR fitted from raw measurements); spatiotemporal INR for "
            "dynamic golden-angle radial MRI; accelerated INR reconstruction with filtered least squares and "
            "ADMM. Multiresolution hash encoding after Mueller et al., Instant-NGP (2022)."
        )


#
# Parameter node
#


@parameterNodeWrapper
class INRReconParameterNode:
    """Every user setting of a run. 0 in a numeric setting means "the preset's value"."""

    priorVolume: vtkMRMLScalarVolumeNode
    measurementPath: pathlib.Path
    seriesPaths: str  # extra fractions, one measurement file per line
    chainPriors: Annotated[bool, Default(True)]
    method: Annotated[str, Choice(list(METHODS)), Default("nerp")]
    preset: Annotated[str, Choice(list(PRESETS)), Default("hash-ct")]
    iterations: Annotated[int, WithinRange(0, 100000), Default(0)]
    embedIterations: Annotated[int, WithinRange(-1, 100000), Default(-1)]
    embedLearningRate: Annotated[float, WithinRange(0.0, 1.0), Decimals(6), Default(0.0)]
    learningRate: Annotated[float, WithinRange(0.0, 1.0), Decimals(6), Default(0.0)]
    networkWidth: Annotated[int, WithinRange(0, 1024), Default(0)]
    networkDepth: Annotated[int, WithinRange(0, 16), Default(0)]
    fourierFeatures: Annotated[int, WithinRange(0, 1024), Default(0)]
    fourierSigma: Annotated[float, WithinRange(0.0, 100.0), Decimals(2), Default(0.0)]
    hashLevels: Annotated[int, WithinRange(0, 32), Default(0)]
    hashTableLog2: Annotated[int, WithinRange(0, 24), Default(0)]
    loss: Annotated[str, Choice(list(LOSSES)), Default("preset")]
    priorRegistration: Annotated[str, Choice(list(PRIOR_ALIGNMENTS)), Default("preset")]
    priorSliceSearch: Annotated[float, WithinRange(-1.0, 50.0), Decimals(1), Default(-1.0)]  # mm; -1: preset, 0: off
    tvWeight: Annotated[float, WithinRange(-1.0, 10.0), Decimals(4), Default(-1.0)]  # -1: preset
    coarseToFine: Annotated[float, WithinRange(-1.0, 1.0), Decimals(2), Default(-1.0)]  # -1: preset
    useADMM: Annotated[bool, Default(False)]
    admmAdamSteps: Annotated[int, WithinRange(0, 10000), Default(0)]
    admmCGLSSteps: Annotated[int, WithinRange(0, 10000), Default(0)]
    admmRho: Annotated[float, WithinRange(0.0, 100.0), Decimals(4), Default(0.0)]
    device: Annotated[str, Choice(list(DEVICES)), Default("auto")]
    pythonExecutable: pathlib.Path
    previewEvery: Annotated[int, WithinRange(0, 10000), Default(10)]
    outputUpsampling: Annotated[int, WithinRange(1, 4), Default(1)]  # INR methods: output N× finer
    outputVolume: vtkMRMLScalarVolumeNode
    tumourSegmentation: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]  # for Compare


#
# Widget
#


class INRReconWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: bound to the parameter node, Apply <-> Cancel, progress from a QTimer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._presetChosenFor = ""  # the measurement the preset was last matched to

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/INRRecon.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = INRReconLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)  # ms; previews are written every few iterations anyway
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.addSeriesFilesButton.connect("clicked(bool)", self.onAddSeriesFiles)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = ""

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module closing: stop a running reconstruction, drop observers."""
        if self.logic is not None:
            self.logic.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        # The scene's nodes are about to go: a run must not write into them any more.
        if self.logic is not None:
            self.logic.cancel()
            self.logic.abandon()
        self._showIdle()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.priorVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.priorVolume = first

    def setParameterNode(self, inputParameterNode: Optional[INRReconParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if self.logic.running:
            self.ui.applyButton.enabled = True
            return
        path = str(p.measurementPath) if p and p.measurementPath else ""
        ok = bool(path) and os.path.isfile(path)
        if ok and path != self._presetChosenFor:
            self._matchPresetToMeasurement(path)
        needsPrior = p is not None and p.method == "nerp"
        if ok and needsPrior and not p.priorVolume:
            self.ui.applyButton.toolTip = _("NeRP needs a prior: select an earlier scan of the patient.")
            self.ui.applyButton.enabled = False
        elif ok and p.outputUpsampling > 1 and p.method not in FIELD_METHODS:
            self.ui.applyButton.toolTip = _("Only the INR methods (inr, nerp) can write a finer output grid: "
                                            "set Output upsampling to 1.")
            self.ui.applyButton.enabled = False
        elif ok:
            self.ui.applyButton.toolTip = _("Start the reconstruction")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select a measurement file (.h5)")
            self.ui.applyButton.enabled = False
        self.ui.compareButton.enabled = bool(p and p.priorVolume and p.outputVolume)

    def _matchPresetToMeasurement(self, path: str) -> None:
        """A new measurement switches between the fast presets (hash-cone for 3D cone beam,
        hash-ct, hash-mr), once per file, so the user can still pick another one afterwards."""
        from INRReconLib.scene.settings import preset_for_measurement

        self._presetChosenFor = path
        preset = preset_for_measurement(path, self._parameterNode.preset)
        if preset != self._parameterNode.preset:
            self._parameterNode.preset = preset  # re-enters _checkCanApply with the same path

    def onAddSeriesFiles(self) -> None:
        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Measurements of later fractions"), "", _("INRRecon measurement (*.h5)"))
        if paths:
            current = self._parameterNode.seriesPaths.strip()
            self._parameterNode.seriesPaths = "\n".join(([current] if current else []) + list(paths))

    def onInstallButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to install the reconstruction packages."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            self.ui.statusLabel.text = _("Packages are installed.")

    def onApplyButton(self) -> None:
        if self.logic.running:
            self.logic.cancel()
            self.ui.statusLabel.text = _("Cancelling: the partial result is kept...")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the reconstruction."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            self.logic.start(self._parameterNode)
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop at the next iteration and keep the partial result")
            self._timer.start()
            self._showPreviewInViews()

    def onTimer(self) -> None:
        state = self.logic.poll()
        if state is None:
            self._timer.stop()
            return
        self.ui.progressBar.setValue(int(round(state.percent)))
        self.ui.statusLabel.text = state.summary()
        self._showPreviewInViews()
        if not self.logic.running:
            self._timer.stop()
            self._showIdle()
            if state.status == "error":
                slicer.util.errorDisplay(_("Reconstruction failed: {message}").format(message=state.message))
            output = self.logic.outputNode()
            if output is not None:
                self._parameterNode.outputVolume = output
                slicer.util.setSliceViewerLayers(background=output, foreground=None, fit=True)

    def _showPreviewInViews(self) -> None:
        """Prior in the background, live preview blended on top, so one sees the change converge."""
        preview = self.logic.previewNode()
        if preview is not None and preview.GetImageData() is not None:
            prior = self._parameterNode.priorVolume
            slicer.util.setSliceViewerLayers(background=prior or preview, foreground=preview if prior else None,
                                             foregroundOpacity=0.5)

    def _showIdle(self) -> None:
        self.ui.applyButton.text = _("Apply")
        self._checkCanApply()

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to set up the comparison."), waitCursor=True):
            p = self._parameterNode
            comparison, table = self.logic.compare(p.priorVolume, p.outputVolume, p.tumourSegmentation)
            slicer.util.resetSliceViews()
            if table is not None:
                slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
                slicer.app.applicationLogic().PropagateTableSelection()


#
# Logic
#


class INRReconLogic(ScriptedLoadableModuleLogic):
    """Runs reconstructions without any GUI: `process(...)` or `start()` + `poll()` + `cancel()`.

    The scene work is in INRReconLib.scene (Qt-free, tested with slicer-core); this class picks the
    runner, the job folder and the settings, and remembers the current session or series.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None  # ReconstructionSession or SeriesSession
        self.runnerFactory = None  # tests may set a factory (job_dir -> runner), e.g. FakeRunner
        self.lastSeries = None

    def getParameterNode(self):
        return INRReconParameterNode(super().getParameterNode())

    # --- dependencies ----------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = False) -> None:
        """torch from the PyTorch extension when it is there; other packages with pip, at first use."""
        try:
            import torch  # noqa: F401 (only checks that it is importable)
        except ImportError:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(_("PyTorch is missing. Install the 'PyTorch' extension from the Extensions "
                                     "Manager, restart Slicer, then press Apply again."))
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                if torchLogic.installTorch(askConfirmation=askConfirmation) is None:
                    raise RuntimeError(_("PyTorch was not installed; the reconstruction needs it."))
        import importlib.util

        missing = [p for p in WORKER_PACKAGES if importlib.util.find_spec(_importName(p)) is None]
        if missing:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    _("INRRecon needs these Python packages: {packages}. Install them now?").format(
                        packages=", ".join(missing))):
                raise RuntimeError(_("Required packages were not installed."))
            slicer.util.pip_install(missing)

    # --- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.session is not None and not _finished(self.session)

    def _factory(self, pythonExecutable):
        if self.runnerFactory is not None:
            return self.runnerFactory
        from INRReconLib.worker.runner import WorkerRunner

        python = str(pythonExecutable) if pythonExecutable and str(pythonExecutable) not in ("", ".") else None
        python = python or _slicerPython()
        return lambda jobDir: WorkerRunner(jobDir, python=python)

    def config(self, p: INRReconParameterNode, modality: str = "CT") -> dict:
        from INRReconLib.scene.settings import build_config

        return build_config(
            p.preset, modality, embed_iterations=p.embedIterations, embed_lr=p.embedLearningRate,
            lr=p.learningRate, loss="" if p.loss == "preset" else p.loss, tv_weight=p.tvWeight,
            coarse_to_fine=p.coarseToFine, use_admm=p.useADMM,
            prior_registration="" if p.priorRegistration == "preset" else p.priorRegistration,
            prior_slice_search_mm=p.priorSliceSearch,
            admm_adam_steps=p.admmAdamSteps, admm_cgls_steps=p.admmCGLSSteps, admm_rho=p.admmRho,
            network_width=p.networkWidth, network_depth=p.networkDepth, fourier_features=p.fourierFeatures,
            fourier_sigma=p.fourierSigma, hash_levels=p.hashLevels, hash_log2_table=p.hashTableLog2)

    def start(self, p: INRReconParameterNode):
        """Start a run (one file, or a series when seriesPaths lists more); returns the session."""
        from INRReconLib.scene.measurement_display import read_measurement_header
        from INRReconLib.scene.series import SeriesSession
        from INRReconLib.scene.session import ReconstructionSession

        if self.running:
            raise RuntimeError(_("A reconstruction is already running; cancel it first."))
        measurement = str(p.measurementPath)
        modality = read_measurement_header(measurement)["modality"]
        config = self.config(p, modality) if p.method in ("nerp", "inr") else None
        jobRoot = pathlib.Path(tempfile.mkdtemp(prefix="INRRecon-", dir=slicer.app.temporaryPath))
        common = dict(method=p.method, config=config, iterations=p.iterations or None, device=p.device,
                      preview_every=p.previewEvery, upsample=p.outputUpsampling)
        extra = [line.strip() for line in (p.seriesPaths or "").splitlines() if line.strip()]
        factory = self._factory(p.pythonExecutable)
        if extra:
            self.session = SeriesSession(slicer.mrmlScene, factory, jobRoot, [measurement] + extra,
                                         prior_node=p.priorVolume, chain=p.chainPriors, **common)
            self.lastSeries = self.session
        else:
            self.session = ReconstructionSession(slicer.mrmlScene, factory, jobRoot / "job", measurement,
                                                 prior_node=p.priorVolume, **common)
        self.session.start()
        logging.info(f"INRRecon: started {p.method} on {measurement} (jobs in {jobRoot})")
        return self.session

    def poll(self):
        """Drain worker events into the scene (call from the main thread); returns the state."""
        if self.session is None:
            return None
        self.session.poll()
        return self.session.state

    def cancel(self) -> None:
        if self.running:
            self.session.cancel()

    def abandon(self) -> None:
        """Forget the run (scene closing): its nodes are gone, nothing more is written."""
        self.session = None
        self.lastSeries = None

    def previewNode(self):
        current = getattr(self.session, "current", self.session)
        return getattr(current, "preview_node", None) if current is not None else None

    def outputNode(self):
        if self.session is None:
            return None
        if hasattr(self.session, "outputs"):
            return self.session.outputs[-1] if self.session.outputs else None
        return self.session.output_node

    def process(self, priorVolume, measurementPath, method="nerp", preset="hash-ct", iterations=0,
                device="auto", previewEvery=0, waitForCompletion=True, timeoutSeconds=3600, **settings):
        """Reconstruct without the GUI. Returns the output volume node (waitForCompletion=True) or
        the running session (False; call poll() from a timer)."""
        p = self.getParameterNode()
        p.priorVolume = priorVolume
        p.measurementPath = pathlib.Path(measurementPath)
        p.method, p.preset, p.iterations, p.device, p.previewEvery = method, preset, iterations, device, previewEvery
        for key, value in settings.items():
            setattr(p, key, value)
        startTime = time.time()
        session = self.start(p)
        if not waitForCompletion:
            return session
        session.wait(timeout_s=timeoutSeconds, interval_s=0.1)
        state = session.state
        if state.status == "error" or getattr(session, "status", "") == "error":
            raise RuntimeError(state.message or getattr(session, "message", ""))
        logging.info(f"INRRecon: finished in {time.time() - startTime:.1f} s")
        return self.outputNode()

    # --- comparison ------------------------------------------------------------------------

    def compare(self, priorVolume, reconstruction, tumour=None):
        """Prior | reconstruction | difference (| next fraction) in linked views; with a tumour
        segmentation or labelmap, a table of its volume (mL) and mean intensity per fraction."""
        from INRReconLib.scene.compare import setup_comparison, tumour_statistics

        if priorVolume is None or reconstruction is None:
            raise ValueError(_("Select a prior and a reconstruction to compare."))
        fractions = list(getattr(self.lastSeries, "outputs", []) or [])
        nextFraction = None
        if reconstruction in fractions and fractions.index(reconstruction) + 1 < len(fractions):
            nextFraction = fractions[fractions.index(reconstruction) + 1]
        comparison = setup_comparison(slicer.mrmlScene, priorVolume, reconstruction, next_fraction=nextFraction)
        table = None
        if tumour is not None:
            labelmap = self._labelmapFor(tumour, priorVolume)
            volumes = [priorVolume] + (fractions or [reconstruction])
            table, _rows = tumour_statistics(slicer.mrmlScene, labelmap, volumes)
        return comparison, table

    @staticmethod
    def _labelmapFor(node, referenceVolume):
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
        if node.IsA("vtkMRMLSegmentationNode"):
            labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", node.GetName() + " label")
            slicer.modules.segmentations.logic().ExportVisibleSegmentsToLabelmapNode(node, labelmap, referenceVolume)
            return labelmap
        raise ValueError(_("The tumour must be a segmentation or a labelmap volume."))


def _finished(session) -> bool:
    """SeriesSession has `finished`; a single ReconstructionSession keeps it in its state."""
    return session.finished if hasattr(session, "finished") else session.state.finished


def _importName(package: str) -> str:
    return {"astra-toolbox": "astra", "PyYAML": "yaml"}.get(package, package)


def _slicerPython() -> str:
    """Slicer's own Python launcher: PythonSlicer is on PATH inside Slicer (as pip_install uses it)."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


#
# File reader: .h5 measurements
#


class INRReconFileReader:
    """Loads an INRRecon measurement file (.h5) as nodes a person can inspect: a CT sinogram as a
    volume (views x detector), MR sampling as an image, both with a text summary."""

    def __init__(self, parent):
        self.parent = parent

    def description(self):
        return _("INRRecon measurement")

    def fileType(self):
        return "INRReconMeasurement"

    def extensions(self):
        return [_("INRRecon measurement") + " (*.h5)"]

    def canLoadFile(self, filePath):
        from INRReconLib.scene.measurement_display import is_measurement_file

        return is_measurement_file(filePath)

    def load(self, properties):
        from INRReconLib.scene.measurement_display import load_measurement_nodes

        try:
            path = properties["fileName"]
            name = properties.get("name") or pathlib.Path(path).name.split(".")[0]
            nodes = load_measurement_nodes(slicer.mrmlScene, path, name)
        except Exception as exc:
            logging.error(f"INRRecon: cannot load {properties.get('fileName')}: {exc}")
            self.parent.loadedNodes = []
            return False
        # Preselect the file for the next run: loading it is how most users will pick it.
        INRReconLogic().getParameterNode().measurementPath = pathlib.Path(path)
        self.parent.loadedNodes = [node.GetID() for node in nodes]
        return True


#
# Self-test
#


class INRReconTest(ScriptedLoadableModuleTest):
    """Makes a small volume, simulates a sparse CT measurement, reconstructs it, checks the output."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ReconstructSimulatedCT()
        self.setUp()
        self.test_LoadMeasurementFile()

    def _makeCase(self):
        import numpy as np

        from INRReconLib.io.measurement import Measurement, write_measurement
        from INRReconLib.physics.ct_geometry import parallel_geometry
        from INRReconLib.physics.grid import ImageGrid
        from INRReconLib.scene.volumes import add_volume, ijk_to_ras_from_grid

        grid = ImageGrid.centred((1, 32, 32), (1.0, 1.0, 1.0))
        y, x = np.mgrid[0:32, 0:32]
        disc = ((x - 16) ** 2 + (y - 16) ** 2 < 10 ** 2).astype(np.float32) * 0.02
        truth = disc + 0.01 * ((x - 12) ** 2 + (y - 18) ** 2 < 3 ** 2)
        prior = add_volume(slicer.mrmlScene, disc[np.newaxis], ijk_to_ras_from_grid(grid), "INRRecon test prior")
        angles = np.linspace(0, np.pi, 24, endpoint=False)
        geometry = parallel_geometry(angles, n_cols=48, col_spacing_mm=1.0)
        try:
            from INRReconLib.simulate import simulate_ct

            measurement = simulate_ct(truth[np.newaxis], grid, n_views=24)
        except ImportError:
            import torch

            from INRReconLib.physics import operator_for

            measurement = Measurement("CT", np.zeros((24, 1, 48), np.float32), grid, geometry, {})
            with torch.no_grad():
                measurement.data = operator_for(measurement, "cpu").forward(
                    torch.from_numpy(truth[np.newaxis])).numpy().astype(np.float32)
        path = os.path.join(slicer.app.temporaryPath, "INRReconTest.h5")
        write_measurement(measurement, path)
        return prior, path, truth

    def test_ReconstructSimulatedCT(self):
        import numpy as np

        self.delayDisplay("Simulating a 24-view CT of a small phantom")
        logic = INRReconLogic()
        logic.ensureDependencies(askConfirmation=False)
        prior, path, truth = self._makeCase()
        self.delayDisplay("Reconstructing (SIRT, 30 iterations)")
        output = logic.process(prior, path, method="sirt", iterations=30, device="cpu", previewEvery=10,
                               waitForCompletion=True, timeoutSeconds=300)
        self.assertIsNotNone(output)
        self.assertNotEqual(output.GetID(), prior.GetID())
        recon = slicer.util.arrayFromVolume(output)
        self.assertEqual(recon.shape, (1, 32, 32))
        self.assertGreater(np.corrcoef(recon.ravel(), truth.ravel())[0, 1], 0.8)
        ijkToRas = vtk.vtkMatrix4x4()
        output.GetIJKToRASMatrix(ijkToRas)
        priorIjkToRas = vtk.vtkMatrix4x4()
        prior.GetIJKToRASMatrix(priorIjkToRas)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(ijkToRas.GetElement(r, c), priorIjkToRas.GetElement(r, c), places=4)
        self.delayDisplay("Comparing")
        comparison, _table = logic.compare(prior, output)
        self.assertIsNotNone(comparison.difference_node)
        self.delayDisplay("Test passed")

    def test_LoadMeasurementFile(self):
        _prior, path, _truth = self._makeCase()
        node = slicer.util.loadNodeFromFile(path, "INRReconMeasurement")
        self.assertIsNotNone(node)
        self.assertIn("24 views", node.GetDescription())
        self.delayDisplay("Test passed")
