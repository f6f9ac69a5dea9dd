"""Stand-ins for the qMRML widgets (``slicer.qMRMLWidget``, ``slicer.qMRMLNodeComboBox``, ...) on real MRML.

``qMRMLNodeComboBox`` lists the nodes of a real ``vtkMRMLScene`` the way Slicer's does: ``nodeTypes`` match
with ``IsA`` (subclasses included unless ``showChildNodeTypes`` is off), ``hideChildNodeTypes`` removes
subclasses, hidden nodes are left out, the list follows node added/removed/renamed and scene close, and
``currentNodeChanged`` fires with the node (or ``None``).
"""

from __future__ import annotations

from typing import Any

import vtk
from PyQt5 import QtWidgets
from PyQt5.QtCore import pyqtProperty, pyqtSignal, pyqtSlot

from . import ctk
from . import pythonqt as qt
from .uiloader import CUSTOM_CLASSES


class qMRMLWidget(qt.QWidget):  # noqa: N801
    mrmlSceneChanged = pyqtSignal(object)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._scene = None

    @pyqtSlot(object)
    def setMRMLScene(self, scene: Any) -> None:  # noqa: N802
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self) -> Any:  # noqa: N802
        return self._scene


class qMRMLNodeComboBox(qt.QWidget):  # noqa: N801
    currentNodeChanged = pyqtSignal([object], [bool])
    currentNodeIDChanged = pyqtSignal(str)
    nodeAdded = pyqtSignal(object)
    nodeAboutToBeRemoved = pyqtSignal(object)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._scene = None
        self._observations: list[int] = []
        self._node_observations: dict[str, tuple[Any, int]] = {}
        self._nodeTypes: list[str] = []
        self._hideChildNodeTypes: list[str] = []
        self._flags = {"noneEnabled": False, "addEnabled": True, "removeEnabled": True, "renameEnabled": False,
                       "showHidden": False, "showChildNodeTypes": True, "editEnabled": False,
                       "selectNodeUponCreation": True}
        self._ids: list[str | None] = []
        self._current: str | None = None
        with qt.pyqt_semantics():
            layout = QtWidgets.QHBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            self._combo = QtWidgets.QComboBox(self)
            layout.addWidget(self._combo)
            self._combo.activated.connect(self._onActivated)

    # -- properties ------------------------------------------------------------------------------
    def getNodeTypes(self) -> list[str]:
        return list(self._nodeTypes)

    def setNodeTypes(self, types: Any) -> None:
        self._nodeTypes = [str(t) for t in types]
        self._refresh()

    nodeTypes = pyqtProperty("QStringList", fget=getNodeTypes, fset=setNodeTypes)

    def getHideChildNodeTypes(self) -> list[str]:
        return list(self._hideChildNodeTypes)

    def setHideChildNodeTypes(self, types: Any) -> None:
        self._hideChildNodeTypes = [str(t) for t in types]
        self._refresh()

    hideChildNodeTypes = pyqtProperty("QStringList", fget=getHideChildNodeTypes, fset=setHideChildNodeTypes)

    def _flag(name: str):  # noqa: N805  (property factory used in the class body)
        def fget(self: qMRMLNodeComboBox) -> bool:
            return self._flags[name]

        def fset(self: qMRMLNodeComboBox, value: bool) -> None:
            self._flags[name] = bool(value)
            self._refresh()

        return fget, fset

    _g, _s = _flag("noneEnabled")
    noneEnabled = pyqtProperty(bool, fget=_g, fset=_s)
    setNoneEnabled = _s
    _g, _s = _flag("addEnabled")
    addEnabled = pyqtProperty(bool, fget=_g, fset=_s)
    setAddEnabled = _s
    _g, _s = _flag("removeEnabled")
    removeEnabled = pyqtProperty(bool, fget=_g, fset=_s)
    setRemoveEnabled = _s
    _g, _s = _flag("renameEnabled")
    renameEnabled = pyqtProperty(bool, fget=_g, fset=_s)
    setRenameEnabled = _s
    _g, _s = _flag("editEnabled")
    editEnabled = pyqtProperty(bool, fget=_g, fset=_s)
    setEditEnabled = _s
    _g, _s = _flag("showHidden")
    showHidden = pyqtProperty(bool, fget=_g, fset=_s)
    setShowHidden = _s
    _g, _s = _flag("showChildNodeTypes")
    showChildNodeTypes = pyqtProperty(bool, fget=_g, fset=_s)
    setShowChildNodeTypes = _s
    _g, _s = _flag("selectNodeUponCreation")
    selectNodeUponCreation = pyqtProperty(bool, fget=_g, fset=_s)
    setSelectNodeUponCreation = _s
    del _g, _s, _flag

    def getCurrentNodeID(self) -> str:
        return self._current or ""

    currentNodeID = pyqtProperty(str, fget=getCurrentNodeID, fset=lambda self, i: self.setCurrentNodeID(i))

    # -- scene -------------------------------------------------------------------------------------
    @pyqtSlot(object)
    def setMRMLScene(self, scene: Any) -> None:  # noqa: N802
        if self._scene is not None:
            for tag in self._observations:
                self._scene.RemoveObserver(tag)
        self._observations = []
        self._scene = scene
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndBatchProcessEvent):
                self._observations.append(scene.AddObserver(event, self._onSceneEvent))
        self._refresh()

    def mrmlScene(self) -> Any:  # noqa: N802
        return self._scene

    def _onSceneEvent(self, caller: Any, event: str) -> None:
        if self._scene is not None and self._scene.IsBatchProcessing():
            return
        self._refresh(added=event == "NodeAddedEvent")

    def _accepts(self, node: Any) -> bool:
        if node is None:
            return False
        if node.GetHideFromEditors() and not self._flags["showHidden"]:
            return False
        cls = node.GetClassName()
        if self._flags["showChildNodeTypes"]:
            matches = any(node.IsA(t) for t in self._nodeTypes)
        else:
            matches = cls in self._nodeTypes
        if not matches:
            return False
        return not any(node.IsA(t) and cls not in self._nodeTypes for t in self._hideChildNodeTypes)

    def nodes(self) -> list[Any]:
        if self._scene is None:
            return []
        found = []
        for i in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(i)
            if self._accepts(node):
                found.append(node)
        return found

    def nodeCount(self) -> int:  # noqa: N802
        return len(self.nodes())

    def nodeFromIndex(self, index: int) -> Any:  # noqa: N802
        listed = self.nodes()
        return listed[index] if 0 <= index < len(listed) else None

    def _refresh(self, added: bool = False) -> None:
        nodes = self.nodes()
        for node_id, (node, tag) in list(self._node_observations.items()):
            node.RemoveObserver(tag)
        self._node_observations = {n.GetID(): (n, n.AddObserver(vtk.vtkCommand.ModifiedEvent, self._onNodeModified))
                                   for n in nodes}
        before = self._current
        ids = ([None] if self._flags["noneEnabled"] else []) + [n.GetID() for n in nodes]
        if self._current not in ids:
            self._current = None
        if self._current is None and not self._flags["noneEnabled"] and nodes:
            self._current = nodes[0].GetID() if not added else nodes[-1].GetID()
        self._ids = ids
        self._combo.blockSignals(True)
        self._combo.clear()
        for node_id in ids:
            self._combo.addItem("None" if node_id is None else self._scene.GetNodeByID(node_id).GetName())
        self._combo.setCurrentIndex(ids.index(self._current) if self._current in ids else -1)
        self._combo.blockSignals(False)
        if self._current != before:
            self._emit()

    def _onNodeModified(self, caller: Any, event: str) -> None:
        if caller.GetID() in self._ids:
            self._combo.setItemText(self._ids.index(caller.GetID()), caller.GetName())

    def _onActivated(self, index: int) -> None:
        self.setCurrentNodeID(self._ids[index] if 0 <= index < len(self._ids) else None)

    def _emit(self) -> None:
        node = self.currentNode()
        self.currentNodeChanged[object].emit(node)
        self.currentNodeChanged[bool].emit(node is not None)
        self.currentNodeIDChanged.emit(self._current or "")

    # -- selection ----------------------------------------------------------------------------------
    def currentNode(self) -> Any:  # noqa: N802
        if self._current is None or self._scene is None:
            return None
        return self._scene.GetNodeByID(self._current)

    @pyqtSlot(object)
    def setCurrentNode(self, node: Any) -> None:  # noqa: N802
        self.setCurrentNodeID(node.GetID() if node is not None else None)

    @pyqtSlot(str)
    def setCurrentNodeID(self, node_id: str | None) -> None:  # noqa: N802
        node_id = node_id or None
        if node_id is not None and node_id not in self._ids:
            self._refresh()
            if node_id not in self._ids:
                node_id = None
        if node_id is None and not self._flags["noneEnabled"] and self._ids:
            return
        if node_id == self._current:
            return
        self._current = node_id
        self._combo.blockSignals(True)
        self._combo.setCurrentIndex(self._ids.index(node_id) if node_id in self._ids else -1)
        self._combo.blockSignals(False)
        self._emit()

    def listedNames(self) -> list[str]:  # noqa: N802  (harness helper: what the user sees in the list)
        return [self._combo.itemText(i) for i in range(QtWidgets.QComboBox.count(self._combo))]


class qMRMLSliderWidget(ctk.ctkSliderWidget):  # noqa: N801
    pass


class qMRMLSpinBox(ctk.ctkDoubleSpinBox):  # noqa: N801
    pass


class qMRMLRangeWidget(ctk.ctkRangeWidget):  # noqa: N801
    pass


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):  # noqa: N801
    pass


class qMRMLSubjectHierarchyTreeView(qt.QWidget):  # noqa: N801
    pass


for _name, _value in list(globals().items()):
    if _name.startswith("qMRML") and isinstance(_value, type):
        CUSTOM_CLASSES[_name] = _value
