"""``slicer.app`` stand-in: the Qt application, a layout manager on real MRML layout/slice logics, settings.

The layout manager does what qSlicerLayoutManager does to MRML: it sets the layout node's view arrangement
(``vtkMRMLLayoutLogic`` then creates the view nodes with their *default* orientations: Red axial, Yellow
sagittal, Green coronal) and gives every slice view a ``vtkMRMLSliceLogic`` (which creates its slice
composite node). Nothing is rendered.
"""

from __future__ import annotations

from typing import Any

from PyQt5 import QtCore, QtGui, QtWidgets
from PyQt5.QtCore import pyqtSignal

from . import pythonqt as qt


class SliceWidget:
    """``layoutManager().sliceWidget(name)``: the MRML side of a slice view."""

    def __init__(self, logic: Any) -> None:
        self._logic = logic

    def sliceLogic(self) -> Any:  # noqa: N802
        return self._logic

    def mrmlSliceNode(self) -> Any:  # noqa: N802
        return self._logic.GetSliceNode()

    def mrmlSliceCompositeNode(self) -> Any:  # noqa: N802
        return self._logic.GetSliceCompositeNode()


class LayoutManager:
    def __init__(self, harness: Any, app_logic: Any) -> None:
        import slicer

        self.harness = harness
        self.scene = harness.scene
        self.layout_logic = slicer.vtkMRMLLayoutLogic()
        self.layout_logic.SetMRMLScene(self.scene)
        self.app_logic = app_logic
        self.slice_logics: dict[str, Any] = {}
        self.layout_logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        self._sync()

    @property
    def layout(self) -> int:
        return self.layout_logic.GetLayoutNode().GetViewArrangement()

    @layout.setter
    def layout(self, value: int) -> None:
        self.setLayout(value)

    def setLayout(self, arrangement: int) -> None:  # noqa: N802
        node = self.layout_logic.GetLayoutNode()
        if node is None:  # scene was closed: the layout logic re-creates its node
            self.layout_logic.SetMRMLScene(self.scene)
            node = self.layout_logic.GetLayoutNode()
        node.SetViewArrangement(int(arrangement))
        self._sync()

    def _sync(self) -> None:
        """A slice logic for every slice node of the scene (qMRMLLayoutManager creates one per slice view)."""
        import slicer
        import vtk

        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            name = node.GetLayoutName()
            logic = self.slice_logics.get(name)
            if logic is None or logic.GetSliceNode() is not node:
                logic = slicer.vtkMRMLSliceLogic()
                logic.SetMRMLApplicationLogic(self.app_logic)
                logic.SetMRMLScene(self.scene)
                logic.SetSliceNode(node)
                self.slice_logics[name] = logic
        collection = vtk.vtkCollection()
        for logic in self.slice_logics.values():
            collection.AddItem(logic)
        self.app_logic.SetSliceLogics(collection)

    def sliceViewNames(self) -> list[str]:  # noqa: N802
        self._sync()
        return list(self.slice_logics)

    def sliceWidget(self, name: str) -> SliceWidget | None:  # noqa: N802
        self._sync()
        logic = self.slice_logics.get(name)
        return SliceWidget(logic) if logic is not None else None

    def mrmlSliceLogics(self) -> Any:  # noqa: N802
        import vtk

        self._sync()
        collection = vtk.vtkCollection()
        for logic in self.slice_logics.values():
            collection.AddItem(logic)
        return collection

    def resetSliceViews(self) -> None:  # noqa: N802
        for logic in self.slice_logics.values():
            logic.FitSliceToBackground()

    def threeDViewCount(self) -> int:  # noqa: N802
        return 1


class ModuleManager(qt.QObject):
    moduleAboutToBeUnloaded = pyqtSignal(str)


class ModuleSelector:
    """``mainWindow().moduleSelector()`` (what ``slicer.util.selectModule`` calls): like Slicer's, selecting a
    module exits the entered one and enters the new one (``slicer.modules.<name lower case>``); ``selected``
    records the names in order. An unknown name raises RuntimeError."""

    def __init__(self, harness: Any) -> None:
        self.harness = harness
        self.selected: list[str] = []
        self.current: Any = None

    def selectModule(self, name: str) -> None:  # noqa: N802
        module = getattr(self.harness.slicer.modules, name.lower(), None)
        if module is None or not hasattr(module, "enter"):
            raise RuntimeError(f"harness: no module {name!r} to select")
        for other in self.harness.loaded.values():
            if other is not module and other._panel is not None and other._panel.isEntered:
                other.exit()
        if self.current is not None and self.current is not module and self.current not in self.harness.loaded.values():
            self.current.exit()  # a fake module (e.g. the Segment Editor) selected before
        self.selected.append(name)
        self.current = module
        module.enter()


class MainWindow(qt.QMainWindow):
    def __init__(self, harness: Any = None) -> None:
        super().__init__()
        self.objectName = "qSlicerMainWindow"
        self._console = qt.QPlainTextEdit()
        self._selector = ModuleSelector(harness)

    def pythonConsole(self) -> Any:  # noqa: N802
        return self._console

    def moduleSelector(self) -> ModuleSelector:  # noqa: N802
        return self._selector


class SlicerApplication:
    """The parts of qSlicerApplication that Slicer's util.py, packaging.py and the modules call."""

    applicationName = "3D Slicer"

    def __init__(self, harness: Any) -> None:
        import slicer

        self.harness = harness
        self.majorVersion, self.minorVersion, self.patchVersion = harness.version
        self.applicationVersion = ".".join(str(v) for v in harness.version)
        self.testing = False
        self.restarts = 0
        self._app_logic = slicer.vtkSlicerApplicationLogic()
        self._app_logic.SetMRMLScene(harness.scene)
        self._layout = LayoutManager(harness, self._app_logic)
        self._modules = ModuleManager()
        self._main = MainWindow(harness)

    def shutdown(self) -> None:
        self._main.deleteLater()
        self._modules.deleteLater()

    def processEvents(self, *args: Any) -> None:  # noqa: N802
        QtWidgets.QApplication.processEvents()

    def translate(self, context: str, text: str) -> str:
        return QtCore.QCoreApplication.translate(context, text)

    def testingEnabled(self) -> bool:  # noqa: N802
        return self.testing

    def layoutManager(self) -> LayoutManager:  # noqa: N802
        return self._layout

    def applicationLogic(self) -> Any:  # noqa: N802
        return self._app_logic

    def moduleManager(self) -> ModuleManager:  # noqa: N802
        return self._modules

    def mainWindow(self) -> MainWindow:  # noqa: N802
        return self._main

    def topLevelWidgets(self) -> list[Any]:  # noqa: N802
        return [self._main]

    def pythonConsole(self) -> Any:  # noqa: N802
        return self._main.pythonConsole()

    def thread(self) -> Any:
        return QtWidgets.QApplication.instance().thread()

    def setOverrideCursor(self, cursor: Any) -> None:  # noqa: N802
        QtWidgets.QApplication.setOverrideCursor(QtGui.QCursor(cursor))

    def restoreOverrideCursor(self) -> None:  # noqa: N802
        QtWidgets.QApplication.restoreOverrideCursor()

    def settings(self) -> Any:
        return qt.QSettings()

    userSettings = settings

    def restart(self) -> None:
        self.restarts += 1

    def keyboardModifiers(self) -> Any:  # noqa: N802
        return QtCore.Qt.NoModifier

    def moduleDocumentationUrl(self, name: str) -> str:  # noqa: N802
        return f"https://slicer.readthedocs.io/en/{self.majorVersion}.{self.minorVersion}/user_guide/modules/{name.lower()}.html"

    documentationBaseUrl = "https://slicer.readthedocs.io/en/latest/"
