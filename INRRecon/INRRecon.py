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
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import (
    Choice,
    Default,
    GuiConnector,
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

# What exists comes from the library's registry and options (no torch is imported for it).
from INRReconLib.methods import options as _options  # noqa: E402
from INRReconLib.methods.presets import preset_names as _preset_names  # noqa: E402
from INRReconLib.methods.registry import METHODS as METHOD_SPECS  # noqa: E402
from INRReconLib.io import readers as _readers  # noqa: E402

METHODS = tuple(METHOD_SPECS)
FIELD_METHODS = tuple(n for n, spec in METHOD_SPECS.items() if spec.field)  # output can be written on a finer grid
PRESETS = tuple(_preset_names())
LOSSES = ("preset",) + _options.LOSSES
PRIOR_ALIGNMENTS = ("preset",) + _options.PRIOR_REGISTRATIONS
# A prior that does not look like the data: stop, or go on and warn.
PRIOR_MISMATCH = ("preset",) + next(o.choices for o in _options.INR if o.key == "prior_mismatch")
# Settings that are config keys of some methods: enabled only for a method that has the key.
SETTING_KEYS = {
    "preset": "preset", "embedIterations": "embed_iterations", "embedLearningRate": "embed_lr",
    "learningRate": "lr", "networkWidth": "field", "networkDepth": "field", "fourierFeatures": "field",
    "fourierSigma": "field", "hashLevels": "field", "hashTableLog2": "field", "loss": "loss",
    "priorRegistration": "prior_registration", "priorMismatch": "prior_mismatch",
    "priorSliceSearch": "prior_slice_search_mm", "tvWeight": "tv_weight", "coarseToFine": "coarse_to_fine",
    "useADMM": "optimizer", "admmAdamSteps": "admm", "admmCGLSSteps": "admm", "admmRho": "admm",
}
DEVICES = ("auto", "cpu", "cuda")
# The interpreter for the worker is an application setting, never a scene parameter: a scene file
# someone sends must not be able to choose the executable that Apply starts.
WORKER_PYTHON_SETTING = "INRRecon/WorkerPython"
MEASUREMENT_EXTENSIONS = _readers.SUFFIXES  # INRRecon .h5 and the scanner formats io/readers.py reads
DOCUMENTATION_URL = "https://github.com/inrrecon/SlicerINRRecon#in-3d-slicer"


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
        self.parent.contributors = ["INRRecon developers (INRRecon project)"]
        self.parent.helpText = _(
            "Reconstruct CT and MRI images from sparse measurements (few CT views, undersampled k-space) "
            "with implicit neural representations: a small network maps coordinates to intensity and is "
            "fitted so that the scanner's forward model reproduces the measurement. "
            "Pick an earlier scan of the patient as the <b>prior</b> (NeRP), load the new measurement "
            "(<code>.h5</code>, see docs/measurement-format.md in the project, or Siemens raw data <code>.dat</code>), press <b>Apply</b> and watch the reconstruction "
            "converge in the slice views. Several fractions can be reconstructed as a series, each using the "
            "previous result as prior (DisINR: pre-trained on the earlier fractions' raw data), and compared side by side. Classical baselines (FBP/FDK, SIRT, CGLS, "
            "TV, adjoint NUFFT, CG-SENSE) are included for reference. "
            f"<a href=\"{DOCUMENTATION_URL}\">Documentation</a>."
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
    """Every user setting of a run that a scene may keep. 0 in a numeric setting means "the
    preset's value". Node references may be None (nothing selected): the wrapper writes None as
    the default of each, so every node or node-union type must allow it."""

    priorVolume: Optional[vtkMRMLScalarVolumeNode]
    measurementPath: str  # "" = none chosen (a pathlib.Path would show an unset path as ".")
    seriesPaths: str  # extra fractions, one measurement file per line
    modelFolder: str  # DisINR: the pre-trained model's folder ("" = none)
    chainPriors: Annotated[bool, Default(True)]
    method: Annotated[str, Choice(list(METHODS)), Default("nerp")]
    preset: Annotated[str, Choice(list(PRESETS)), Default("hash-ct")]
    iterations: Annotated[int, WithinRange(0, 100000), Default(0)]
    embedIterations: Annotated[int, WithinRange(-1, 100000), Default(-1)]
    embedLearningRate: Annotated[float, WithinRange(0.0, 1.0), Default(0.0)]
    learningRate: Annotated[float, WithinRange(0.0, 1.0), Default(0.0)]
    networkWidth: Annotated[int, WithinRange(0, 1024), Default(0)]
    networkDepth: Annotated[int, WithinRange(0, 16), Default(0)]
    fourierFeatures: Annotated[int, WithinRange(0, 1024), Default(0)]
    fourierSigma: Annotated[float, WithinRange(0.0, 100.0), Default(0.0)]
    hashLevels: Annotated[int, WithinRange(0, 32), Default(0)]
    hashTableLog2: Annotated[int, WithinRange(0, 24), Default(0)]
    loss: Annotated[str, Choice(list(LOSSES)), Default("preset")]
    priorRegistration: Annotated[str, Choice(list(PRIOR_ALIGNMENTS)), Default("preset")]
    priorMismatch: Annotated[str, Choice(list(PRIOR_MISMATCH)), Default("preset")]
    priorSliceSearch: Annotated[float, WithinRange(-1.0, 50.0), Default(-1.0)]  # mm; -1: preset, 0: off
    tvWeight: Annotated[float, WithinRange(-1.0, 10.0), Default(-1.0)]  # -1: preset
    coarseToFine: Annotated[float, WithinRange(-1.0, 1.0), Default(-1.0)]  # -1: preset
    useADMM: Annotated[bool, Default(False)]
    admmAdamSteps: Annotated[int, WithinRange(0, 10000), Default(0)]
    admmCGLSSteps: Annotated[int, WithinRange(0, 10000), Default(0)]
    admmRho: Annotated[float, WithinRange(0.0, 100.0), Default(0.0)]
    device: Annotated[str, Choice(list(DEVICES)), Default("auto")]
    previewEvery: Annotated[int, WithinRange(0, 10000), Default(10)]
    outputUpsampling: Annotated[int, WithinRange(1, 4), Default(1)]  # INR methods: output N× finer
    outputVolume: Optional[vtkMRMLScalarVolumeNode]
    tumourSegmentation: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]  # for Compare
    curveRegion: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsROINode]]  # dynamic: time-intensity curve


class _PathLineEditToStrConnector(GuiConnector):
    """ctkPathLineEdit <-> str, "" for no file. Slicer's own connector takes pathlib.Path, which
    shows an unset path as "."."""

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return False  # only used where the module hands it over explicitly

    @staticmethod
    def create(widget, datatype):
        return None

    def __init__(self, widget):
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return self._widget.currentPath

    def write(self, value: str) -> None:
        if value != self._widget.currentPath:
            self._widget.currentPath = value


class _TextEditToStrConnector(_PathLineEditToStrConnector):
    """QTextEdit <-> str that leaves the text alone when it is unchanged. Slicer's connector sets the
    text on every parameter change, also the one the keystroke itself caused, which moves the cursor
    to the start: typing "abc" came out as "cba"."""

    def _connect(self):
        self._widget.textChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.textChanged.disconnect(self.changed)

    def read(self) -> str:
        return self._widget.toPlainText()

    def write(self, value: str) -> None:
        if value != self._widget.toPlainText():
            self._widget.setPlainText(value)


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
        self._presetChosenFor = ("", "")  # the measurement and method the preset was last matched to
        self._shownPreview = None  # the preview node last put in the views
        self._shownPlot = None  # the convergence plot last put in the plot view
        self._settingWidgets = {}  # parameter name -> widget, for the settings in SETTING_KEYS

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/INRRecon.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._uiWidget = uiWidget
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = INRReconLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)  # ms; previews are written every few iterations anyway
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.curveButton.connect("clicked(bool)", self.onCurveButton)
        self.ui.addSeriesFilesButton.connect("clicked(bool)", self.onAddSeriesFiles)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        # Not a scene parameter (see WORKER_PYTHON_SETTING): kept in the application settings.
        self.ui.pythonExecutableLineEdit.currentPath = workerPythonSetting()
        self.ui.pythonExecutableLineEdit.connect("currentPathChanged(QString)", setWorkerPythonSetting)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = ""

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module closing: stop a running reconstruction, drop observers."""
        if self.logic is not None:
            self.logic.terminate()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectGui()

    def onSceneStartClose(self, caller, event) -> None:
        # The scene's nodes are about to go: a run must not write into them any more.
        if self.logic is not None:
            self.logic.terminate()
            self.logic.abandon()
        self._showIdle()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.priorVolume:
            from INRReconLib.scene.volumes import candidate_prior

            self._parameterNode.priorVolume = candidate_prior(slicer.mrmlScene)

    def setParameterNode(self, inputParameterNode: Optional[INRReconParameterNode]) -> None:
        self._disconnectGui()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # connectParametersToGui returns the tag in Slicer 5.8 too (connectGui returns None
            # there, and a connection that cannot be undone writes stale values back later)
            mapping = self._guiMapping()
            self._settingWidgets = {name: w for name, w in mapping.items() if name in SETTING_KEYS}
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(mapping)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _disconnectGui(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNodeGuiTag = None

    def _guiMapping(self) -> dict:
        """Parameter name -> widget (by the .ui's SlicerParameterName) or connector."""
        mapping = {}
        for widget in self._uiWidget.findChildren(qt.QWidget):
            name = widget.property("SlicerParameterName")
            if name:
                mapping[name] = widget
        mapping["measurementPath"] = _PathLineEditToStrConnector(self.ui.measurementPathLineEdit)
        mapping["seriesPaths"] = _TextEditToStrConnector(self.ui.seriesPathsTextEdit)
        mapping["modelFolder"] = _PathLineEditToStrConnector(self.ui.modelPathLineEdit)
        return mapping

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if self.logic.running:
            self.ui.applyButton.enabled = True
            return
        path = p.measurementPath if p else ""
        ok = bool(path) and os.path.isfile(path)
        if ok and (path, p.method) != self._presetChosenFor:
            self._matchPresetToMeasurement(path)
        spec = METHOD_SPECS.get(p.method) if p is not None else None
        self._enableSettingsOf(spec)
        needsPrior = spec is not None and spec.uses_prior
        needsModel = spec is not None and "model" in spec.reads
        self.ui.modelPathLineEdit.enabled = needsModel
        if ok and needsPrior and not p.priorVolume:
            self.ui.applyButton.toolTip = _("NeRP needs a prior: select an earlier scan of the patient.")
            self.ui.applyButton.enabled = False
        elif ok and needsModel and not os.path.isdir(p.modelFolder or ""):
            self.ui.applyButton.toolTip = _("DisINR needs a pre-trained model: choose the folder inrrecon pretrain "
                                            "wrote (Population model).")
            self.ui.applyButton.enabled = False
        elif ok and p.outputUpsampling > 1 and p.method not in FIELD_METHODS:
            self.ui.applyButton.toolTip = _("Only the INR methods (inr, nerp, stinr) can write a finer output grid: "
                                            "set Output upsampling to 1.")
            self.ui.applyButton.enabled = False
        elif ok:
            self.ui.applyButton.toolTip = _("Start the reconstruction")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select a measurement file (.h5, or Siemens raw data .dat)")
            self.ui.applyButton.enabled = False
        self.ui.compareButton.enabled = bool(p and p.priorVolume and p.outputVolume)

    def _enableSettingsOf(self, spec) -> None:
        """Only the settings the chosen method has (its options in the registry) can be edited."""
        keys = set(spec.option_keys()) if spec is not None else set()
        for name, key in SETTING_KEYS.items():
            widget = self._settingWidgets.get(name)
            if widget is not None:
                widget.enabled = key in keys
        self.ui.iterationsSpinBox.enabled = spec is None or spec.iterative

    def _matchPresetToMeasurement(self, path: str) -> None:
        """A new measurement switches between the fast presets (hash-cone for 3D cone beam,
        hash-ct, hash-mr), once per file, so the user can still pick another one afterwards."""
        from INRReconLib.scene.settings import preset_for_measurement

        p = self._parameterNode
        try:
            preset = preset_for_measurement(path, p.preset, p.method)
        except ImportError:
            # h5py is installed by the first Apply; match the preset once it is there
            return
        self._presetChosenFor = (path, p.method)
        if preset != self._parameterNode.preset:
            self._parameterNode.preset = preset  # re-enters _checkCanApply with the same path

    def onAddSeriesFiles(self) -> None:
        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Measurements of later fractions"), "", _("INRRecon measurement (*.h5);;Siemens raw data (*.dat)"))
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
            self._checkCanApply()  # the preset can be matched now that h5py is there
            self.logic.start(self._parameterNode)
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop at the next iteration and keep the partial result")
            self._shownPreview = self._shownPlot = None  # the first timer tick shows them
            self._timer.start()

    def onTimer(self) -> None:
        state = self.logic.poll()
        if state is None:
            self._timer.stop()
            return
        self.ui.progressBar.setValue(int(round(state.percent)))
        self.ui.statusLabel.text = state.summary()
        self._showPreviewInViews()
        plot = self.logic.currentPlot()
        if plot is not None and plot is not self._shownPlot:  # the run's plot; in a series, each fraction's
            self._shownPlot = plot
            self.logic.showProgressLayout()
        if not self.logic.running:
            self._timer.stop()
            self._showIdle()
            if state.status == "error":
                slicer.util.errorDisplay(_("Reconstruction failed: {message}").format(message=state.message))
            elif state.warnings:
                slicer.util.warningDisplay("\n\n".join(state.warnings), windowTitle=_("INRRecon: check the result"))
            output = self.logic.outputNode()
            if output is not None:
                from INRReconLib.scene.volumes import show_in_standard_views

                self._parameterNode.outputVolume = output
                change = self.logic.changeNode()  # NeRP: where the data changed the prior, in colour
                show_in_standard_views(slicer.mrmlScene, background=output, foreground=change, foreground_opacity=0.6)
                self.logic.showSequence()  # dynamic MR: play the frames instead of the mean
                slicer.util.resetSliceViews()

    def _showPreviewInViews(self) -> None:
        """Prior in the background, live preview blended on top, so one sees the change converge.
        Once per preview node: the views are not reset on every tick, and the comparison views
        are left alone."""
        from INRReconLib.scene.volumes import show_in_standard_views

        preview = self.logic.previewNode()
        if preview is None or preview is self._shownPreview or preview.GetImageData() is None:
            return
        self._shownPreview = preview
        prior = self._parameterNode.priorVolume
        show_in_standard_views(slicer.mrmlScene, background=prior or preview, foreground=preview if prior else None,
                               foreground_opacity=0.5)

    def _showIdle(self) -> None:
        self.ui.applyButton.text = _("Apply")
        self._checkCanApply()

    def onCurveButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to plot the time-intensity curve."), waitCursor=True):
            p = self._parameterNode
            self.logic.timeIntensityCurve(p.outputVolume, p.curveRegion)

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to set up the comparison."), waitCursor=True):
            p = self._parameterNode
            comparison, table = self.logic.compare(p.priorVolume, p.outputVolume, p.tumourSegmentation)
            slicer.util.resetSliceViews()


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
        self.jobRoot = None
        self._comparisonNodes = []  # what the last Compare made; the next one replaces them

    def getParameterNode(self):
        return INRReconParameterNode(super().getParameterNode())

    # --- dependencies ----------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = False) -> None:
        """The packages the worker needs, in the interpreter that will run it: Slicer's own (torch
        from the PyTorch extension, the rest with pip at first use) or the custom one, which is
        asked by running it and never installed into."""
        from INRReconLib.worker.packages import (FOREIGN_PYTHON_PACKAGES, REQUIRED, SLICER_SIDE_PACKAGES, missing_here,
                                                 missing_in, worker_packages)

        python = workerPythonSetting()
        if python:
            # Slicer bundles numpy, scipy and SimpleITK; another interpreter must have them itself.
            # astra-toolbox stays optional there (the torch projector works without it).
            missing = missing_in(python, FOREIGN_PYTHON_PACKAGES + REQUIRED, env=_foreignPythonEnvironment())
            if missing:
                raise RuntimeError(_("The Python for the worker ({python}) lacks {packages}. Install them there "
                                     "(\"{python}\" -m pip install {packages}), or clear Advanced > Python for "
                                     "the worker to use Slicer's own.").format(python=python,
                                                                              packages=" ".join(missing)))
            packages = SLICER_SIDE_PACKAGES  # Slicer itself still reads the measurement headers
        else:
            self._ensureTorch(askConfirmation)
            packages = worker_packages()
        missing = missing_here(packages)
        if missing:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    _("INRRecon needs these Python packages: {packages}. Install them now?").format(
                        packages=", ".join(missing))):
                raise RuntimeError(_("Required packages were not installed."))
            slicer.util.pip_install(missing)

    @staticmethod
    def _ensureTorch(askConfirmation: bool) -> None:
        """torch in Slicer's Python, from the PyTorch extension."""
        from INRReconLib.worker.packages import missing_here

        if not missing_here(["torch"]):
            return
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("PyTorch is missing. Install the 'PyTorch' extension from the Extensions "
                                 "Manager, restart Slicer, then press Apply again."))
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=askConfirmation) is None:
                raise RuntimeError(_("PyTorch was not installed; the reconstruction needs it."))

    # --- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.session is not None and not _finished(self.session)

    def _factory(self):
        if self.runnerFactory is not None:
            return self.runnerFactory
        from INRReconLib.worker.runner import WorkerRunner

        python = workerPythonSetting()
        if python:
            env = _foreignPythonEnvironment()
            return lambda jobDir: WorkerRunner(jobDir, python=python, env=env)
        return lambda jobDir: WorkerRunner(jobDir, python=_slicerPython())

    def config(self, p: INRReconParameterNode, modality: str = "CT") -> dict:
        from INRReconLib.scene.settings import build_config

        return build_config(
            p.preset, modality, embed_iterations=p.embedIterations, embed_lr=p.embedLearningRate,
            lr=p.learningRate, loss="" if p.loss == "preset" else p.loss, tv_weight=p.tvWeight,
            coarse_to_fine=p.coarseToFine, use_admm=p.useADMM,
            prior_registration="" if p.priorRegistration == "preset" else p.priorRegistration,
            prior_slice_search_mm=p.priorSliceSearch,
            prior_mismatch="" if p.priorMismatch == "preset" else p.priorMismatch,
            admm_adam_steps=p.admmAdamSteps, admm_cgls_steps=p.admmCGLSSteps, admm_rho=p.admmRho,
            network_width=p.networkWidth, network_depth=p.networkDepth, fourier_features=p.fourierFeatures,
            fourier_sigma=p.fourierSigma, hash_levels=p.hashLevels, hash_log2_table=p.hashTableLog2,
            model_folder=p.modelFolder if "model" in METHOD_SPECS[p.method].reads else "")

    def start(self, p: INRReconParameterNode):
        """Start a run (one file, or a series when seriesPaths lists more); returns the session."""
        from INRReconLib.io.readers import read_measurement_header
        from INRReconLib.scene.series import SeriesSession
        from INRReconLib.scene.session import ReconstructionSession

        if self.running:
            raise RuntimeError(_("A reconstruction is already running; cancel it first."))
        measurement = p.measurementPath
        header = read_measurement_header(measurement)
        modality = header["modality"]
        config = self.config(p, modality) if p.method in FIELD_METHODS else None
        self._removeFinishedJobs()
        self.jobRoot = pathlib.Path(tempfile.mkdtemp(prefix="INRRecon-", dir=slicer.app.temporaryPath))
        common = dict(method=p.method, config=config, iterations=p.iterations or None, device=p.device,
                      preview_every=p.previewEvery, upsample=p.outputUpsampling)
        extra = [line.strip() for line in (p.seriesPaths or "").splitlines() if line.strip()]
        factory = self._factory()
        if extra:
            self.session = SeriesSession(slicer.mrmlScene, factory, self.jobRoot, [measurement] + extra,
                                         prior_node=p.priorVolume, chain=p.chainPriors, **common)
            self.lastSeries = self.session
        else:
            self.session = ReconstructionSession(slicer.mrmlScene, factory, self.jobRoot / "job", measurement,
                                                 prior_node=p.priorVolume, header=header, **common)
        self.session.start()
        logging.info(f"INRRecon: started {p.method} on {measurement} (jobs in {self.jobRoot})")
        return self.session

    def poll(self):
        """Drain worker events into the scene (call from the main thread); returns the state."""
        if self.session is None:
            return None
        self.session.poll()
        if not self.running:
            self._removeFinishedJobs()
        return self.session.state

    def _removeFinishedJobs(self) -> None:
        """A finished run's job folder goes once its result is in the scene; a failed run's stays
        (worker.log, checkpoint.npy and the last preview keep the work done), and the error names it."""
        if self.jobRoot is None or self.running:
            return
        if self.session is not None and _status(self.session) == "error":
            return
        import shutil

        shutil.rmtree(self.jobRoot, ignore_errors=True)
        self.jobRoot = None

    def cancel(self) -> None:
        """Stop at the next iteration and keep the partial result (poll() brings it in)."""
        if self.running:
            self.session.cancel()

    def terminate(self) -> None:
        """Stop the worker and every process it started now, when nothing will poll any more."""
        if self.running:
            self.session.terminate()

    def abandon(self) -> None:
        """Forget the run (scene closing): its nodes are gone, nothing more is written."""
        self.session = None
        self.lastSeries = None
        self._comparisonNodes = []

    def _current(self):
        """The running ReconstructionSession (of a series: its current fraction), or None."""
        return getattr(self.session, "current", self.session)

    def previewNode(self):
        return getattr(self._current(), "preview_node", None)

    def outputNode(self):
        if self.session is None:
            return None
        if hasattr(self.session, "outputs"):
            return self.session.outputs[-1] if self.session.outputs else None
        return self.session.output_node

    def changeNode(self):
        """The change map of the last NeRP result (see INRReconLib.methods.change), or None."""
        return getattr(self._current(), "change_node", None)

    def currentPlot(self):
        """The convergence plot of the running reconstruction (of a series: its current fraction)."""
        return getattr(self._current(), "plot", None)

    def showSequence(self) -> None:
        """A dynamic result: the sequence browser's proxy volume in the slice views and the browser
        toolbar shown, so the frames play as a cine (Slicer's Sequences module makes the proxy)."""
        browser = getattr(self._current(), "browser_node", None)
        sequence = getattr(self._current(), "sequence_node", None)
        if browser is None or sequence is None:
            return
        from INRReconLib.scene.volumes import show_in_standard_views

        slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
        proxy = browser.GetProxyNode(sequence)
        slicer.modules.sequences.toolBar().setActiveBrowserNode(browser)
        slicer.modules.sequences.setToolBarVisible(True)
        if proxy is not None:
            show_in_standard_views(slicer.mrmlScene, background=proxy)

    def timeIntensityCurve(self, output, region):
        """The mean of `region` (a label map on the result's grid or a markups ROI) in every frame
        of a dynamic result, as a table and a chart shown in the plot view; returns the means."""
        from INRReconLib.scene.sequence import time_intensity_curve

        if output is None or region is None:
            raise ValueError(_("Choose a dynamic result (Output) and a region (label map or ROI) first."))
        sequence = slicer.mrmlScene.GetNodeByID(output.GetAttribute("INRRecon.sequence") or "")
        if sequence is None:
            raise ValueError(_("{name} is not a dynamic result: it has no frames.").format(name=output.GetName()))
        table, chart, means = time_intensity_curve(slicer.mrmlScene, sequence, region, output.GetName())
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        return means

    def showProgressLayout(self) -> None:
        """Slice views and the convergence plot of the running reconstruction side by side."""
        from INRReconLib.scene.compare import show_progress_layout

        plot = self.currentPlot()
        show_progress_layout(slicer.mrmlScene, plot.chart_node if plot is not None else None)

    def process(self, priorVolume, measurementPath, method="nerp", preset="hash-ct", iterations=0,
                device="auto", previewEvery=0, waitForCompletion=True, timeoutSeconds=3600, **settings):
        """Reconstruct without the GUI. Returns the output volume node (waitForCompletion=True) or
        the running session (False; call poll() from a timer). Waiting keeps Slicer's event loop
        running, so the views and the progress stay live."""
        p = self.getParameterNode()
        p.priorVolume = priorVolume
        p.measurementPath = str(measurementPath)
        p.method, p.preset, p.iterations, p.device, p.previewEvery = method, preset, iterations, device, previewEvery
        for key, value in settings.items():
            setattr(p, key, value)
        startTime = time.time()
        session = self.start(p)
        if not waitForCompletion:
            return session
        deadline = time.monotonic() + timeoutSeconds
        while self.running:
            self.poll()
            slicer.app.processEvents()
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"reconstruction did not finish within {timeoutSeconds} s")
            time.sleep(0.01)
        self.poll()
        if _status(session) == "error":
            raise RuntimeError(session.state.message or getattr(session, "message", ""))
        logging.info(f"INRRecon: finished in {time.time() - startTime:.1f} s")
        return self.outputNode()

    # --- comparison ------------------------------------------------------------------------

    def compare(self, priorVolume, reconstruction, tumour=None):
        """Prior | reconstruction | difference (| next fraction) in linked views, the tumour table
        below them; with a tumour segmentation or labelmap, a table of its volume (mL) and mean
        intensity per fraction. The nodes of the previous Compare are replaced, not piled up."""
        from INRReconLib.scene.compare import setup_comparison, show_table, tumour_statistics

        if priorVolume is None or reconstruction is None:
            raise ValueError(_("Select a prior and a reconstruction to compare."))
        for node in self._comparisonNodes:
            if slicer.mrmlScene.IsNodePresent(node):
                slicer.mrmlScene.RemoveNode(node)
        self._comparisonNodes = []
        fractions = list(getattr(self.lastSeries, "outputs", []) or [])
        nextFraction = None
        if reconstruction in fractions and fractions.index(reconstruction) + 1 < len(fractions):
            nextFraction = fractions[fractions.index(reconstruction) + 1]
        comparison = setup_comparison(slicer.mrmlScene, priorVolume, reconstruction, next_fraction=nextFraction)
        self._comparisonNodes.append(comparison.difference_node)
        table = None
        if tumour is not None:
            labelmap = self._labelmapFor(tumour, priorVolume)
            if labelmap is not tumour:
                self._comparisonNodes.append(labelmap)
            volumes = [priorVolume] + (fractions or [reconstruction])
            table, _rows = tumour_statistics(slicer.mrmlScene, labelmap, volumes)
            self._comparisonNodes.append(table)
            show_table(slicer.mrmlScene, table)
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


def _status(session) -> str:
    return session.status if hasattr(session, "finished") else session.state.status


def workerPythonSetting() -> str:
    """The interpreter the user chose for the worker ("" = Slicer's own), from the application
    settings: a scene cannot set it."""
    return str(qt.QSettings().value(WORKER_PYTHON_SETTING, "") or "").strip()


def setWorkerPythonSetting(path: str) -> None:
    qt.QSettings().setValue(WORKER_PYTHON_SETTING, str(path or "").strip())


def _foreignPythonEnvironment() -> dict:
    """The environment Slicer itself was started in: without the launcher's PYTHONHOME,
    PYTHONPATH and PYTHONNOUSERSITE, which point another interpreter at Slicer's library."""
    env = dict(slicer.util.startupEnvironment())
    for key in ("PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONPATH", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    return env


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
        return [_("INRRecon measurement or scanner raw data") + " (" + " ".join("*" + e for e in MEASUREMENT_EXTENSIONS) + ")"]

    def canLoadFile(self, filePath):
        return self.canLoadFileConfidence(filePath) > 0.0

    def canLoadFileConfidence(self, filePath):
        """0.6 for an INRRecon measurement: above Slicer's default 0.5 (+0.01 per extension
        character) with which the Transforms reader claims every *.h5 file. The extension is
        checked first, so files dropped into Slicer are not all opened with h5py."""
        from INRReconLib.io.readers import is_measurement_file

        if not str(filePath).lower().endswith(MEASUREMENT_EXTENSIONS):
            return 0.0
        return 0.6 if is_measurement_file(filePath) else 0.0

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
        INRReconLogic().getParameterNode().measurementPath = str(path)
        self.parent.loadedNodes = [node.GetID() for node in nodes]
        return True


#
# Self-test
#


class INRReconTest(ScriptedLoadableModuleTest):
    """Runs in Slicer's CI with no network, no GPU and none of the worker's packages, on the real
    thorax slices that ship with INRReconLib: the parameter node, the scene side of a run driven by
    a scripted worker (preview, plot, result, prior kept), the comparison and the measurement
    reader (when h5py is there). A real reconstruction in a
    worker process is opt-in: set INRRECON_SELFTEST_FULL=1 (it may pip-install packages)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ParameterNode()
        self.setUp()
        self.test_ScriptedRunAndCompare()
        self.setUp()
        self.test_LoadMeasurementFile()
        if os.environ.get("INRRECON_SELFTEST_FULL") == "1":
            self.setUp()
            self.test_ReconstructSimulatedCT()

    @staticmethod
    def _phantom():
        """(grid, prior, truth) in 1/mm on a 64² grid from the real thorax slices that ship with
        INRReconLib: the nodule's slice is the truth, the slice 4 mm away the prior."""
        import numpy as np

        from INRReconLib.cases import EMBEDDED_CT, EMBEDDED_NODULE_SLICE
        from INRReconLib.io.volume import hu_to_mu, read_volume
        from INRReconLib.physics.grid import ImageGrid

        hu, grid256 = read_volume(EMBEDDED_CT)
        nz = hu.shape[0]
        pooled = np.asarray(hu, np.float32).reshape(nz, 64, 4, 64, 4).mean(axis=(2, 4))  # 256² -> 64²
        mu = np.clip(hu_to_mu(pooled), 0, None).astype(np.float32)
        grid = ImageGrid.centred((1, 64, 64), (4 * grid256.spacing[0], 4 * grid256.spacing[1], grid256.spacing[2]))
        return grid, mu[EMBEDDED_NODULE_SLICE + 2][np.newaxis], mu[EMBEDDED_NODULE_SLICE][np.newaxis]

    def test_ParameterNode(self):
        self.delayDisplay("Parameter node: defaults, node references that may be empty")
        p = INRReconLogic().getParameterNode()
        self.assertEqual((p.method, p.preset, p.measurementPath, p.seriesPaths), ("nerp", "hash-ct", "", ""))
        self.assertIsNone(p.tumourSegmentation)
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        p.tumourSegmentation = labelmap
        self.assertIs(p.tumourSegmentation, labelmap)
        p.tumourSegmentation = None
        self.assertNotIn("pythonExecutable", p.allParameters)  # an application setting, not the scene's
        self.delayDisplay("Test passed")

    def test_ScriptedRunAndCompare(self):
        import numpy as np

        from INRReconLib.scene.session import ReconstructionSession
        from INRReconLib.scene.volumes import add_volume, get_ijk_to_ras, ijk_to_ras_from_grid, write_volume_node
        from INRReconLib.worker.runner import FakeRunner

        self.delayDisplay("A run driven by a scripted worker")
        grid, disc, truth = self._phantom()
        prior = add_volume(slicer.mrmlScene, disc, ijk_to_ras_from_grid(grid), "INRRecon test prior")
        priorVoxels = slicer.util.arrayFromVolume(prior).copy()
        jobDir = pathlib.Path(tempfile.mkdtemp(prefix="INRReconTest-", dir=slicer.app.temporaryPath))
        truthNode = add_volume(slicer.mrmlScene, truth, ijk_to_ras_from_grid(grid), "INRRecon test truth")
        write_volume_node(truthNode, str(jobDir / "output.nrrd"))
        slicer.mrmlScene.RemoveNode(truthNode)
        np.save(jobDir / "preview-1.npy", truth[0] * 0.5)
        script = [{"event": "started", "device": "cpu"}]
        script += [{"event": "progress", "stage": "fitting", "iteration": i, "total": 3, "loss": 1.0 / i}
                   for i in (1, 2, 3)]
        script += [{"event": "preview", "path": str(jobDir / "preview-1.npy"), "kind": "axial",
                    "grid": grid.to_dict()},
                   {"event": "result", "output": str(jobDir / "output.nrrd"), "cancelled": False, "metrics": {}}]
        session = ReconstructionSession(
            slicer.mrmlScene, lambda d: FakeRunner(script, job_dir=d), jobDir, jobDir / "fraction1.h5",
            prior_node=prior, method="tv", job_writer=lambda d, **job: None,
            header={"modality": "CT", "grid": grid})
        session.start()
        state = session.wait(timeout_s=60)
        self.assertEqual(state.status, "done")
        output = session.output_node
        self.assertIsNotNone(output)
        self.assertNotEqual(output.GetID(), prior.GetID())
        self.assertTrue(np.allclose(slicer.util.arrayFromVolume(output), truth))
        self.assertTrue(np.allclose(get_ijk_to_ras(output), get_ijk_to_ras(prior)))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(prior), priorVoxels))  # never modified
        self.assertEqual(session.plot.n_rows, 3)
        self.assertIsNone(session.preview_node)  # removed once the result is in
        self.delayDisplay("Comparing")
        comparison, _table = INRReconLogic().compare(prior, output)
        self.assertIsNotNone(comparison.difference_node)
        self.delayDisplay("Test passed")

    def test_LoadMeasurementFile(self):
        import importlib.util

        if importlib.util.find_spec("h5py") is None:
            self.delayDisplay("Measurement reader: skipped, h5py is not installed (the first Apply installs it)")
            return
        import numpy as np

        from INRReconLib.io.measurement import Measurement, write_measurement
        from INRReconLib.physics.ct_geometry import parallel_geometry

        grid, _disc, _truth = self._phantom()
        geometry = parallel_geometry(np.linspace(0, np.pi, 24, endpoint=False), n_cols=96, col_spacing_mm=4.0)
        data = np.random.default_rng(0).random((24, 1, 96)).astype(np.float32)
        path = os.path.join(slicer.app.temporaryPath, "INRReconTest.h5")
        write_measurement(Measurement("CT", data, grid, geometry, {}), path)
        self.assertGreater(INRReconFileReader(None).canLoadFileConfidence(path), 0.5)
        node = slicer.util.loadNodeFromFile(path, "INRReconMeasurement")
        self.assertIsNotNone(node)
        self.assertIn("24 views", node.GetDescription())
        self.delayDisplay("Test passed")

    def test_ReconstructSimulatedCT(self):
        """Opt-in: a real SIRT run in a worker process (packages are installed if missing)."""
        import numpy as np

        from INRReconLib.io.measurement import write_measurement
        from INRReconLib.scene.volumes import add_volume, ijk_to_ras_from_grid
        from INRReconLib.simulate import simulate_ct

        logic = INRReconLogic()
        logic.ensureDependencies(askConfirmation=False)
        grid, disc, truth = self._phantom()
        prior = add_volume(slicer.mrmlScene, disc, ijk_to_ras_from_grid(grid), "INRRecon test prior")
        path = os.path.join(slicer.app.temporaryPath, "INRReconTestFull.h5")
        write_measurement(simulate_ct(truth, grid, n_views=48), path)
        self.delayDisplay("Reconstructing (SIRT, 30 iterations) in a worker process")
        output = logic.process(prior, path, method="sirt", iterations=30, device="cpu", previewEvery=10,
                               waitForCompletion=True, timeoutSeconds=300)
        recon = slicer.util.arrayFromVolume(output)
        self.assertEqual(recon.shape, (1, 64, 64))
        self.assertGreater(np.corrcoef(recon.ravel(), truth.ravel())[0, 1], 0.8)
        self.delayDisplay("Test passed")
