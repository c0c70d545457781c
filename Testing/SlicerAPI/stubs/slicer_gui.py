"""The parts of Slicer's GUI layer that slicer-core lacks: qMRML widgets, `slicer.app`, and a
`.ui` loader that builds the stand-in widgets of `qt`/`ctk` from the module's Designer file
(properties, dynamic properties such as SlicerParameterName, and the file's signal/slot
connections). `install(slicer, scene)` puts them on the `slicer` package.
"""

import os
import tempfile
import xml.etree.ElementTree as ET

import ctk
import qt
from qt import QWidget, signal


class qMRMLWidget(QWidget):
    mrmlSceneChanged = signal("mrmlSceneChanged(vtkMRMLScene*)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):
    """Lists the scene's nodes of `nodeTypes`; `currentNodeChanged` fires when the choice changes,
    also when the chosen node leaves the scene."""

    currentNodeChanged = signal("currentNodeChanged(vtkMRMLNode*)")
    currentNodeIDChanged = signal("currentNodeIDChanged(QString)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes = []
        self.noneEnabled = False
        self.addEnabled = self.removeEnabled = self.renameEnabled = True
        self.showChildNodeTypes = True
        self.showHidden = False
        self.baseName = ""
        self._current = None
        self._observer = None

    def _accepts(self, node):
        if node is None:
            return True
        if self._scene is not None and self._scene.GetNodeByID(node.GetID()) is not node:
            return False
        if self.showChildNodeTypes:
            return any(node.IsA(t) for t in self.nodeTypes)
        return node.GetClassName() in self.nodeTypes

    def nodes(self):
        if self._scene is None:
            return []
        found = []
        for n in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(n)
            if self._accepts(node) and (self.showHidden or not node.GetHideFromEditors()):
                found.append(node)
        return found

    def setMRMLScene(self, scene):
        if self._scene is not None and self._observer is not None:
            self._scene.RemoveObserver(self._observer)
        super().setMRMLScene(scene)
        if scene is not None:
            self._observer = scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)
            if not self.noneEnabled and self._current is None and self.nodes():
                self.setCurrentNode(self.nodes()[0])

    def _onNodeRemoved(self, caller, event):
        if self._current is not None and self._scene.GetNodeByID(self._current.GetID()) is not self._current:
            self._set(None)

    def currentNode(self):
        return self._current

    def currentNodeID(self):
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node):
        if node is not None and not self._accepts(node):
            return  # Qt ignores a node it does not list
        self._set(node)

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if node_id else None)

    def _set(self, node):
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(self.currentNodeID())


class qMRMLSliderWidget(ctk.ctkSliderWidget):
    pass


class qMRMLSpinBox(ctk.ctkDoubleSpinBox):
    pass


class qMRMLRangeWidget(ctk.ctkRangeWidget):
    pass


class qMRMLSegmentSelectorWidget(qMRMLWidget):
    pass


class _ModuleManager:
    def connect(self, *args):
        return True


class _ReaderParent:
    """What qSlicerScriptedFileReader hands a Python reader as `parent`."""

    def __init__(self):
        self.loadedNodes = []


class _TransformsReader:
    """Slicer's Transforms reader claims *.h5 with the default confidence 0.5 + 0.01 per matched
    extension character (qSlicerFileReader::canLoadFileConfidence)."""

    def canLoadFileConfidence(self, path):
        return 0.5 + 0.01 * len(".h5") if str(path).lower().endswith(".h5") else 0.0


class CoreIOManager:
    """`slicer.app.coreIOManager()`: readers by file type, the most confident one for a file."""

    def __init__(self, scene_getter):
        self.readers = {"TransformFile": _TransformsReader}
        self._scene = scene_getter

    def registerReader(self, file_type, reader_class):
        self.readers[file_type] = reader_class

    def fileType(self, path):
        confidences = {t: float(cls(_ReaderParent()).canLoadFileConfidence(path)) if t != "TransformFile"
                       else cls().canLoadFileConfidence(path) for t, cls in self.readers.items()}
        best = max(confidences, key=confidences.get)
        return best if confidences[best] > 0 else ""

    def loadNodes(self, file_type, properties, loaded=None, messages=None):
        if file_type not in self.readers or file_type == "TransformFile":
            return False
        parent = _ReaderParent()
        ok = bool(self.readers[file_type](parent).load(dict(properties)))
        for node_id in parent.loadedNodes:
            if loaded is not None:
                loaded.AddItem(self._scene().GetNodeByID(node_id))
        return ok


class _LayoutManager:
    """No views are drawn here: the layout node in the scene says what Slicer would show."""

    def sliceViewNames(self):
        return []

    threeDViewCount = 0

    def setLayout(self, layout_id):
        pass

    def resetSliceViews(self):
        pass


class App:
    """`slicer.app`: settings, a temporary folder, the launcher's start-up environment."""

    def __init__(self, startup_env=None):
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer-app-")
        self._settings = qt.QSettings()
        self._startup_env = dict(os.environ if startup_env is None else startup_env)
        self.commandOptions = lambda: type("Options", (), {"testingEnabled": True})()
        self._io = None

    def coreIOManager(self):
        import slicer

        if self._io is None:
            self._io = CoreIOManager(lambda: slicer.mrmlScene)
        return self._io

    def setOverrideCursor(self, *args):
        pass

    def restoreOverrideCursor(self, *args):
        pass

    def userSettings(self):
        return self._settings

    def settings(self):
        return self._settings

    def moduleManager(self):
        return _ModuleManager()

    def startupEnvironment(self):
        return qt.QProcessEnvironment(self._startup_env)

    def processEvents(self, *args):
        pass

    def translate(self, context, text):
        return text

    def layoutManager(self):
        return _LayoutManager()


_BY_NAME = {}
for _module in (qt, ctk):
    for _name in dir(_module):
        _obj = getattr(_module, _name)
        if isinstance(_obj, type) and issubclass(_obj, qt.QObject):
            _BY_NAME[_name] = _obj
for _cls in (qMRMLWidget, qMRMLNodeComboBox, qMRMLSliderWidget, qMRMLSpinBox, qMRMLRangeWidget,
             qMRMLSegmentSelectorWidget):
    _BY_NAME[_cls.__name__] = _cls


def _property_value(prop):
    value = list(prop)[0]
    tag, text = value.tag, value.text
    if tag == "bool":
        return text == "true"
    if tag == "number":
        return int(text)
    if tag == "double":
        return float(text)
    if tag == "stringlist":
        return [s.text or "" for s in value.findall("string")]
    if tag in ("string", "cstring", "enum", "set"):
        return text or ""
    return None  # geometry, size policies, fonts: not modelled


def _build(element, parent):
    cls = _BY_NAME.get(element.get("class"))
    if cls is None:
        raise TypeError(f"the .ui uses {element.get('class')!r}, which the stand-in Qt does not model")
    widget = cls()
    widget.setParent(parent)
    widget.setObjectName(element.get("name"))
    for prop in element.findall("property"):
        name, value = prop.get("name"), _property_value(prop)
        if value is None:
            continue
        if prop.get("stdset") == "0" or not hasattr(widget, name):
            widget.setProperty(name, value)
        else:
            setattr(widget, name, value)
    _build_children(element, widget)
    return widget


def _build_children(element, widget):
    """Widgets nested directly or through layouts and their items belong to `widget`."""
    for child in element:
        if child.tag == "widget":
            _build(child, widget)
        elif child.tag in ("layout", "item"):
            _build_children(child, widget)


def loadUI(path):
    """What slicer.util.loadUI returns: the .ui's top widget with all its children."""
    root = ET.parse(path).getroot()
    top = _build(root.find("widget"), None)
    widgets = {w.objectName: w for w in [top] + top.findChildren(qt.QObject)}
    for connection in root.iter("connection"):
        sender, receiver = widgets[connection.findtext("sender")], widgets[connection.findtext("receiver")]
        slot = getattr(receiver, connection.findtext("slot").split("(")[0])
        getattr(sender, connection.findtext("signal").split("(")[0]).connect(slot)
    return top


class _PlotsLogic:
    """slicer.modules.plots.logic() (vtkSlicerPlotsLogic): records the charts it was asked to show."""

    def __init__(self):
        self.shown = []

    def ShowChartInLayout(self, chart):
        self.shown.append(chart)


class _SequencesLogic:
    """slicer.modules.sequences.logic() (vtkSlicerSequencesLogic), the one call the module makes:
    a proxy volume per browser showing the selected item, as Slicer's logic creates it."""

    def UpdateProxyNodesFromSequences(self, browser):
        sequence = browser.GetMasterSequenceNode()
        if browser.GetProxyNode(sequence) is None:
            scene = browser.GetScene()
            proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", sequence.GetName())
            item = sequence.GetNthDataNode(max(0, browser.GetSelectedItemNumber()))
            proxy.CopyContent(item)
            browser.AddProxyNode(proxy, sequence, False)


class _SequencesToolBar:
    def __init__(self):
        self.active = None

    def setActiveBrowserNode(self, browser):
        self.active = browser


class _SequencesModule:
    def __init__(self):
        self._logic, self._toolbar, self.toolbar_visible = _SequencesLogic(), _SequencesToolBar(), False

    def logic(self):
        return self._logic

    def toolBar(self):
        return self._toolbar

    def setToolBarVisible(self, visible):
        self.toolbar_visible = bool(visible)


class _Module:
    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


def install(slicer, scene, startup_env=None):
    """Put the GUI stand-ins on the `slicer` package (slicer-core provides MRML and util)."""
    for cls in (qMRMLWidget, qMRMLNodeComboBox, qMRMLSliderWidget, qMRMLSpinBox, qMRMLRangeWidget,
                qMRMLSegmentSelectorWidget):
        setattr(slicer, cls.__name__, cls)
    slicer.mrmlScene = scene
    slicer.app = App(startup_env)
    slicer.modules = type("modules", (), {})()
    slicer.modules.plots = _Module(_PlotsLogic())
    slicer.modules.sequences = _SequencesModule()
    slicer.selfTests = {}
    slicer.util.loadUI = loadUI
    slicer.util.mainWindow = lambda: None
    return slicer
