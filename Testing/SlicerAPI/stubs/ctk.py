"""Stand-in for PythonQt's `ctk` module: the CTK widgets the INRRecon .ui and Slicer's connectors name."""

from qt import QCheckBox, QComboBox, QDoubleSpinBox, QPushButton, QWidget, signal


class ctkCollapsibleButton(QPushButton):
    contentsCollapsed = signal("contentsCollapsed(bool)")

    def __init__(self, parent=None):
        super().__init__("", parent)
        self.collapsed = False


class ctkPathLineEdit(QWidget):
    currentPathChanged = signal("currentPathChanged(QString)")
    Files, Dirs, Executable, Readable = 0x2, 0x1, 0x80, 0x20

    def __init__(self, parent=None):
        super().__init__(parent)
        self._path = ""
        self.filters = 0
        self.nameFilters = []
        self.settingKey = ""
        self.showHistoryButton = True

    @property
    def currentPath(self):
        return self._path

    @currentPath.setter
    def currentPath(self, path):
        if path != self._path:
            self._path = path
            self.currentPathChanged.emit(path)

    def setCurrentPath(self, path):
        self.currentPath = path


class ctkDirectoryButton(QWidget):
    directoryChanged = signal("directoryChanged(QString)")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.directory = ""


class ctkCheckBox(QCheckBox):
    pass


class ctkComboBox(QComboBox):
    pass


class ctkDoubleSpinBox(QDoubleSpinBox):
    pass


class ctkSliderWidget(QDoubleSpinBox):
    pass


class ctkDoubleSlider(QDoubleSpinBox):
    pass


class ctkRangeWidget(QWidget):
    valuesChanged = signal("valuesChanged(double,double)")


class ctkDoubleRangeSlider(ctkRangeWidget):
    pass


class ctkCheckablePushButton(QPushButton):
    pass


class ctkColorPickerButton(QPushButton):
    colorChanged = signal("colorChanged(QColor)")


class ctkMenuButton(QPushButton):
    pass


class ctkWidgetsUtils:
    pass
