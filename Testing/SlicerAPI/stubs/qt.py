"""A small pure-Python stand-in for PythonQt's `qt` module, for running Slicer's own Python code
(parameterNodeWrapper, ScriptedLoadableModule, slicer.util) against the INRRecon module without
Slicer. It models the Qt behaviour that Slicer's GUI connectors depend on and nothing else:

- signals are attributes with connect/disconnect, emitted only when a value really changes;
- QComboBox.clear() emits currentIndexChanged(-1), the first addItem() emits (0);
- spin boxes clamp to their range, QDoubleSpinBox rounds to `decimals` (default 2, step 1.0);
- QTextEdit.setPlainText() always emits textChanged and puts the cursor at the start, and
  `typeText()` inserts at the cursor as a keyboard would.

Anything not modelled raises AttributeError, so the module cannot silently call what Qt lacks.
"""

import inspect


class Signal:
    """One signal of one object. Slots receive as many of the emitted arguments as they take."""

    def __init__(self, name):
        self.name = name
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)
        return True

    def disconnect(self, slot=None):
        if slot is None:
            self.slots.clear()
            return True
        if slot not in self.slots:
            raise RuntimeError(f"disconnect: slot not connected to {self.name}")  # PythonQt reports it too
        self.slots.remove(slot)
        return True

    def emit(self, *args):
        for slot in list(self.slots):
            slot(*args[:_arity(slot, len(args))])


def _arity(fn, available):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return available
    return min(available, sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)))


class _SignalDescriptor:
    def __init__(self, signature):
        self.signature = signature
        self.attr = signature.split("(")[0]

    def __get__(self, obj, owner):
        if obj is None:
            return self
        signals = obj.__dict__.setdefault("_signals", {})
        if self.attr not in signals:
            signals[self.attr] = Signal(self.signature)
        return signals[self.attr]


def signal(signature):
    return _SignalDescriptor(signature)


class QObject:
    destroyed = signal("destroyed()")

    def __init__(self, parent=None):
        self._parent = None
        self._children = []
        self._properties = {}
        self.objectName = ""
        if parent is not None:
            self.setParent(parent)

    # PythonQt exposes objectName also as `name`
    @property
    def name(self):
        return self.objectName

    def setObjectName(self, name):
        self.objectName = name

    def parent(self):
        return self._parent

    def setParent(self, parent):
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def children(self):
        return list(self._children)

    def findChildren(self, cls=None, name=None):
        found = []
        for child in self._children:
            if (cls is None or isinstance(child, cls)) and (name is None or child.objectName == name):
                found.append(child)
            found.extend(child.findChildren(cls, name))
        return found

    def findChild(self, cls, name):
        matches = self.findChildren(cls, name)
        return matches[0] if matches else None

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value
        return True

    def isWidgetType(self):
        return False

    def connect(self, signature, slot):
        """Old-style PythonQt connection: obj.connect("clicked(bool)", slot)."""
        getattr(self, signature.split("(")[0]).connect(slot)
        return True

    def disconnect(self, signature, slot=None):
        getattr(self, signature.split("(")[0]).disconnect(slot)
        return True

    def blockSignals(self, block):
        return False

    def deleteLater(self):
        if self._parent is not None:
            self.setParent(None)


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.statusTip = ""
        self._layout = None

    def isWidgetType(self):
        return True

    def setLayout(self, layout):
        self._layout = layout
        layout._owner = self

    def layout(self):
        return self._layout

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setVisible(self, visible):
        self.visible = bool(visible)

    def setEnabled(self, enabled):
        self.enabled = bool(enabled)

    def setToolTip(self, text):
        self.toolTip = text

    def setSizePolicy(self, *args):
        pass

    def setMRMLScene(self, scene):  # qMRMLWidget's slot; plain QWidget children in .ui files do not have it
        raise AttributeError("setMRMLScene")


class QLayout(QObject):
    def __init__(self, parent=None):
        super().__init__(None)
        self._owner = None
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def _adopt(self, item):
        if isinstance(item, QWidget) and self._owner is not None:
            item.setParent(self._owner)

    def addWidget(self, widget, *args):
        self._adopt(widget)

    def addLayout(self, layout, *args):
        pass

    def addRow(self, *items):
        for item in items:
            self._adopt(item)

    def addStretch(self, *args):
        pass

    def setContentsMargins(self, *args):
        pass


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QLabel(QWidget):
    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.wordWrap = False


class QAbstractButton(QWidget):
    clicked = signal("clicked(bool)")
    toggled = signal("toggled(bool)")

    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self._checked = False

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        value = bool(value) and (self.checkable or isinstance(self, QCheckBox))
        if value != self._checked:
            self._checked = value
            self.toggled.emit(value)
            self._checkStateChanged()

    def _checkStateChanged(self):
        pass

    def setChecked(self, value):
        self.checked = value

    def isChecked(self):
        return self.checked

    def click(self):
        if self.checkable or isinstance(self, QCheckBox):
            self.checked = not self.checked
        self.clicked.emit(self.checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    stateChanged = signal("stateChanged(int)")

    def _checkStateChanged(self):
        self.stateChanged.emit(2 if self._checked else 0)


class QRadioButton(QAbstractButton):
    pass


class _AbstractSpinBox(QWidget):
    valueChanged = signal("valueChanged(double)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._minimum, self._maximum = 0, 99
        self._value = 0
        self.singleStep = 1
        self.specialValueText = ""
        self.suffix = ""
        self.prefix = ""

    def _fit(self, value):
        return min(max(value, self._minimum), self._maximum)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        value = self._fit(value)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def setValue(self, value):
        self.value = value

    @property
    def minimum(self):
        return self._minimum

    @minimum.setter
    def minimum(self, value):
        self._minimum = self._round(value)
        self._maximum = max(self._maximum, self._minimum)
        self.value = self._value

    @property
    def maximum(self):
        return self._maximum

    @maximum.setter
    def maximum(self, value):
        self._maximum = self._round(value)
        self._minimum = min(self._minimum, self._maximum)
        self.value = self._value

    def setMinimum(self, value):
        self.minimum = value

    def setMaximum(self, value):
        self.maximum = value

    def setRange(self, minimum, maximum):
        self.minimum = minimum
        self.maximum = maximum

    def _round(self, value):
        return value

    def stepUp(self):
        self.value = self._value + self.singleStep


class QSpinBox(_AbstractSpinBox):
    valueChanged = signal("valueChanged(int)")

    def _fit(self, value):
        return int(round(super()._fit(int(value))))

    def _round(self, value):
        return int(value)


class QDoubleSpinBox(_AbstractSpinBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._decimals = 2
        self._minimum, self._maximum = 0.0, 99.99
        self._value = 0.0
        self.singleStep = 1.0

    @property
    def decimals(self):
        return self._decimals

    @decimals.setter
    def decimals(self, value):
        # Qt re-rounds the range and the value to the new precision
        self._decimals = int(value)
        self._minimum, self._maximum = self._round(self._minimum), self._round(self._maximum)
        self.value = self._value

    def _round(self, value):
        return round(float(value), self._decimals) if abs(float(value)) != float("inf") else float(value)

    def _fit(self, value):
        return self._round(super()._fit(float(value)))


class QSlider(QSpinBox):
    pass


class QComboBox(QWidget):
    currentIndexChanged = signal("currentIndexChanged(int)")
    currentTextChanged = signal("currentTextChanged(QString)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items = []
        self._current = -1

    def addItem(self, text, userData=None):
        self._items.append((str(text), userData))
        if self._current == -1:
            self._setIndex(0)

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        had = bool(self._items)
        self._items = []
        if had:
            self._setIndex(-1)

    def _setIndex(self, index):
        if index != self._current:
            self._current = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    @property
    def count(self):
        return len(self._items)

    @property
    def currentIndex(self):
        return self._current

    @currentIndex.setter
    def currentIndex(self, index):
        index = int(index)
        self._setIndex(index if 0 <= index < len(self._items) else -1)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    @property
    def currentText(self):
        return self._items[self._current][0] if self._current >= 0 else ""

    def findText(self, text):
        return next((n for n, (t, _d) in enumerate(self._items) if t == text), -1)

    def itemText(self, index):
        return self._items[index][0]


class QLineEdit(QWidget):
    textChanged = signal("textChanged(QString)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self.placeholderText = ""
        self.readOnly = False

    @property
    def text(self):
        return self._text

    @text.setter
    def text(self, value):
        if value != self._text:
            self._text = value
            self.textChanged.emit(value)


class QTextEdit(QWidget):
    textChanged = signal("textChanged()")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self.cursorPosition = 0
        self.placeholderText = ""
        self.readOnly = False
        self.acceptRichText = True
        self.lineWrapMode = 0

    def toPlainText(self):
        return self._text

    def setPlainText(self, text):
        self._text = str(text)
        self.cursorPosition = 0
        self.textChanged.emit()

    def clear(self):
        self.setPlainText("")

    def typeText(self, text):
        """The user typing `text`, one key at a time, at the cursor."""
        for char in text:
            self._text = self._text[:self.cursorPosition] + char + self._text[self.cursorPosition:]
            self.cursorPosition += 1
            self.textChanged.emit()


class QPlainTextEdit(QTextEdit):
    pass


class QProgressBar(QWidget):
    valueChanged = signal("valueChanged(int)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.value = 0
        self.minimum, self.maximum = 0, 100
        self.format = "%p%"
        self.textVisible = True

    def setValue(self, value):
        self.value = int(value)


class QFrame(QWidget):
    pass


class QGroupBox(QWidget):
    pass


class QTimer(QObject):
    timeout = signal("timeout()")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.interval = 0
        self.singleShot = False
        self._active = False

    def setInterval(self, ms):
        self.interval = int(ms)

    def start(self, ms=None):
        if ms is not None:
            self.interval = int(ms)
        self._active = True

    def stop(self):
        self._active = False

    def isActive(self):
        return self._active

    @property
    def active(self):
        return self._active

    def fire(self):
        """Test helper: one tick of the timer."""
        if self._active:
            self.timeout.emit()


class QSettings:
    _store = {}  # application-wide, as QSettings() in one application

    def __init__(self, *args):
        pass

    def value(self, key, default=None):
        return QSettings._store.get(key, default)

    def setValue(self, key, value):
        QSettings._store[key] = value

    def contains(self, key):
        return key in QSettings._store

    def remove(self, key):
        QSettings._store.pop(key, None)


class QProcessEnvironment:
    def __init__(self, values=None):
        self._values = dict(values or {})

    def keys(self):
        return list(self._values)

    def value(self, key, default=""):
        return self._values.get(key, default)

    @staticmethod
    def systemEnvironment():
        import os

        return QProcessEnvironment(os.environ)


class QSize:
    def __init__(self, w=0, h=0):
        self.w, self.h = w, h


class QSizePolicy:
    Fixed, Minimum, Maximum, Preferred, Expanding, MinimumExpanding, Ignored = range(7)

    def __init__(self, *args):
        pass


class QIcon:
    def __init__(self, *args):
        pass


class QUrl:
    def __init__(self, url=""):
        self.url = url


class QCursor:
    def __init__(self, *args):
        pass


class Qt:
    WaitCursor = 3
    AlignLeft, AlignRight, AlignTop = 1, 2, 32
    Checked, Unchecked = 2, 0


class QFileDialog:
    """Returns what a test put in `nextFiles` (no dialog can be shown)."""

    nextFiles = []

    @staticmethod
    def getOpenFileNames(*args):
        files, QFileDialog.nextFiles = list(QFileDialog.nextFiles), []
        return files

    @staticmethod
    def getOpenFileName(*args):
        files = QFileDialog.getOpenFileNames()
        return files[0] if files else ""


class QMessageBox:
    Ok, Cancel, Yes, No = 0x400, 0x400000, 0x4000, 0x10000
    answer = Ok  # what a test makes the user press


class QApplication:
    @staticmethod
    def setOverrideCursor(*args):
        pass

    @staticmethod
    def restoreOverrideCursor(*args):
        pass

    @staticmethod
    def processEvents(*args):
        pass


QDialog = QWidget


class QColor:
    def __init__(self, *args):
        self._args = args

    def name(self, *args):
        return "#000000"
