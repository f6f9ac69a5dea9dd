"""Load a Qt Designer ``.ui`` file as PythonQt-style widgets (``qt.QUiLoader`` of the harness).

PyQt5's ``uic`` parses the file; its object factory is pointed at the harness's ``qt`` classes and, for the
``<customwidgets>`` (ctk*, qMRML*), at the ``ctk`` / ``slicer`` stand-ins, so every widget the module code
sees is of the class the real Slicer would have created (the parameterNodeWrapper checks exact types).
Signal signatures with C++ pointer types (``mrmlSceneChanged(vtkMRMLScene*)``) are connected to the stand-in's
single-overload signal.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Any

from PyQt5.uic.Loader.loader import DynamicUILoader
from PyQt5.uic.Loader.qobjectcreator import LoaderCreatorPolicy

from . import pythonqt

#: Classes the ``.ui`` files may name that are not in ``qt``: filled by ctk / mrmlwidgets at import.
CUSTOM_CLASSES: dict[str, type] = {}


class _ModuleSearch:
    def __init__(self, lookup: Any) -> None:
        self.lookup = lookup

    def search(self, name: str) -> Any:
        return self.lookup(name)


class _CustomWidgets:
    def addCustomWidget(self, widgetClass: str, baseClass: str, module: str) -> None:  # noqa: N802 (uic API)
        if widgetClass not in CUSTOM_CLASSES:
            raise NameError(f"the harness has no stand-in for custom widget {widgetClass} (header {module})")

    def search(self, name: str) -> Any:
        return CUSTOM_CLASSES.get(name)


class _Policy(LoaderCreatorPolicy):
    def createQtGuiWidgetsWrappers(self):  # noqa: N802 (uic API)
        def lookup(name: str) -> Any:
            if name in CUSTOM_CLASSES:
                return CUSTOM_CLASSES[name]
            return getattr(pythonqt, name, None)

        return [_ModuleSearch(lookup)]

    def createCustomWidgetLoader(self):  # noqa: N802 (uic API)
        return _CustomWidgets()


class _Loader(DynamicUILoader):
    def __init__(self) -> None:
        from PyQt5 import QtCore, QtGui, QtWidgets
        from PyQt5.uic.uiparser import UIParser

        UIParser.__init__(self, QtCore, QtGui, QtWidgets, _Policy(""))


def _normalise_connections(text: str) -> str:
    root = ET.fromstring(text)
    for signal in root.iter("signal"):
        # pointer types (vtkMRMLScene*, vtkMRMLNode*) have one PyQt overload (object): connect that one
        if signal.text and "*" in signal.text:
            signal.text = re.sub(r"\(.*\)", "()", signal.text)
    return ET.tostring(root, encoding="unicode")


def load_ui(path: str, parent: Any = None) -> Any:
    with open(path, encoding="utf-8") as f:
        text = _normalise_connections(f.read())
    with pythonqt.pyqt_semantics():
        widget = _Loader().loadUi(io.StringIO(text), None, "_rc")
        if parent is not None:
            widget.setParent(parent)
    return widget
