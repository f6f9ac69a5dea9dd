"""Stand-ins for the CTK widgets (``import ctk``) that Slicer's framework and the modules' ``.ui`` files use.

Widgets the modules instantiate behave like CTK's (properties, signals); the others only exist so that the
parameterNodeWrapper's ``type(widget) in (qt.X, ctk.Y)`` checks can be evaluated, as in Slicer.
"""

from __future__ import annotations

from typing import Any

from PyQt5 import QtCore, QtWidgets
from PyQt5.QtCore import pyqtProperty, pyqtSignal

from . import pythonqt as qt
from .uiloader import CUSTOM_CLASSES

#: Every message box shown (text, windowTitle, detailedText, standardButtons) and the answers to give, in order.
DIALOGS: list[dict[str, Any]] = []
ANSWERS: list[int] = []


class ctkCollapsibleButton(qt.QGroupBox):  # noqa: N801 (CTK names)
    """Titled container whose contents hide when collapsed (CTK draws it as a button; a group box here)."""

    contentsCollapsed = pyqtSignal(bool)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._collapsed = False

    def getText(self) -> str:
        with qt.pyqt_semantics():
            return self.title()

    def setText(self, text: str) -> None:
        with qt.pyqt_semantics():
            self.setTitle(text)

    text = pyqtProperty(str, fget=getText, fset=setText)

    def getCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = bool(collapsed)
        with qt.pyqt_semantics():
            for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                child.setVisible(not self._collapsed)
        self.contentsCollapsed.emit(self._collapsed)

    collapsed = pyqtProperty(bool, fget=getCollapsed, fset=setCollapsed)


class ctkPathLineEdit(qt.QWidget):  # noqa: N801
    """Path entry: ``currentPath`` property, ``currentPathChanged(QString)`` signal, ``filters`` flags."""

    Dirs, Files, Drives, NoDot, NoDotDot, Readable, Writable, Executable = 0x1, 0x2, 0x4, 0x2000, 0x4000, 0x10, 0x20, 0x40
    currentPathChanged = pyqtSignal(str)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._filters = self.Files
        with qt.pyqt_semantics():
            layout = QtWidgets.QHBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            self._edit = QtWidgets.QLineEdit(self)
            self._button = QtWidgets.QToolButton(self)
            self._button.setText("...")
            layout.addWidget(self._edit)
            layout.addWidget(self._button)
            self._edit.textChanged.connect(self.currentPathChanged.emit)

    def getCurrentPath(self) -> str:
        return QtWidgets.QLineEdit.text(self._edit)

    def setCurrentPath(self, path: str) -> None:
        self._edit.setText(str(path))

    currentPath = pyqtProperty(str, fget=getCurrentPath, fset=setCurrentPath)

    def getFilters(self) -> int:
        return int(self._filters)

    def setFilters(self, filters: int) -> None:
        self._filters = int(filters)

    filters = pyqtProperty(int, fget=getFilters, fset=setFilters)


class ctkMessageBox(qt.QMessageBox):  # noqa: N801
    """``exec_()`` records the box and returns the next answer from :data:`ANSWERS` instead of blocking."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._dontShowAgainSettingsKey = ""

    def getDontShowAgainSettingsKey(self) -> str:
        return self._dontShowAgainSettingsKey

    def setDontShowAgainSettingsKey(self, key: str) -> None:
        self._dontShowAgainSettingsKey = key

    dontShowAgainSettingsKey = pyqtProperty(str, fget=getDontShowAgainSettingsKey, fset=setDontShowAgainSettingsKey)

    def exec_(self) -> int:
        with qt.pyqt_semantics():
            buttons = int(self.standardButtons())
            record = {"text": self.text(), "windowTitle": self.windowTitle().strip(),
                      "detailedText": self.detailedText(), "standardButtons": buttons}
        DIALOGS.append(record)
        if ANSWERS:
            return ANSWERS.pop(0)
        for default in (qt.QMessageBox.Ok, qt.QMessageBox.Yes):
            if buttons & int(default):
                return int(default)
        return int(qt.QMessageBox.Ok)

    exec = exec_


class ctkWidgetsUtils:  # noqa: N801
    @staticmethod
    def grabWidget(widget: Any) -> Any:  # noqa: N802
        with qt.pyqt_semantics():
            return widget.grab().toImage()


# Classes that only need to exist (type checks in parameterNodeWrapper/guiConnectors.py).
class ctkCheckBox(qt.QCheckBox):  # noqa: N801
    pass


class ctkComboBox(qt.QComboBox):  # noqa: N801
    pass


class ctkCheckablePushButton(qt.QPushButton):  # noqa: N801
    pass


class ctkColorPickerButton(qt.QPushButton):  # noqa: N801
    pass


class ctkDoubleSpinBox(qt.QDoubleSpinBox):  # noqa: N801
    pass


class ctkSliderWidget(qt.QWidget):  # noqa: N801
    pass


class ctkDoubleSlider(qt.QWidget):  # noqa: N801
    pass


class ctkRangeWidget(qt.QWidget):  # noqa: N801
    pass


class ctkDoubleRangeSlider(qt.QWidget):  # noqa: N801
    pass


class ctkDirectoryButton(qt.QWidget):  # noqa: N801
    pass


for _name, _value in list(globals().items()):
    if _name.startswith("ctk") and isinstance(_value, type) and issubclass(_value, QtCore.QObject):
        CUSTOM_CLASSES[_name] = _value
