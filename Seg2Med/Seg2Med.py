"""Seg2Med: synthetic CT/MR from TotalSegmentator segmentations inside 3D Slicer.

This file is deliberately thin (module class, parameter node, widget shell, self-test); the MRML logic,
the subprocess runner and the GUI behaviour live in ``Seg2MedLib``. The heavy work runs in a child
``PythonSlicer -m seg2med_core`` process, so torch is never imported into Slicer itself.
"""

from __future__ import annotations

from typing import Annotated

import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class Seg2Med(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Seg2Med"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []  # the PyTorch extension is an EXTENSION_DEPENDS (CMakeLists.txt), not a module
        self.parent.contributors = ["seg2med contributors"]
        self.parent.helpText = (
            "Turn a TotalSegmentator segmentation into a synthetic CT or MR volume with a conditional "
            "diffusion model (after Seg2Med). See <a href='https://github.com/seg2med/seg2med'>the seg2med documentation</a>."
        )
        self.parent.acknowledgementText = (
            "Uses TotalSegmentator (Wasserthal et al.), MONAI and PyTorch. Demo models are for demonstration only, "
            "not for clinical use."
        )


@parameterNodeWrapper
class Seg2MedParameterNode:
    """GUI state saved with the scene: inputs, result and the sampler settings bound to widgets."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    organSource: slicer.vtkMRMLSegmentationNode
    realImage: slicer.vtkMRMLScalarVolumeNode
    result: slicer.vtkMRMLScalarVolumeNode
    fast: bool = True
    show3D: bool = False
    keepSkeleton: bool = True
    dropUnknownSegments: bool = False  # leave out segments whose names are no class of the label set
    phantomSeed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    sampler: Annotated[str, Choice(["dpmpp_2m", "ddim", "ddpm"])] = "dpmpp_2m"
    steps: Annotated[int, WithinRange(1, 1000)] = 20
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0


class Seg2MedLogic(ScriptedLoadableModuleLogic):
    """Slicer logic: the parameter node plus the scene-level ``Seg2MedLib.logic.Seg2MedLogic``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from Seg2MedLib.logic import Seg2MedLogic as SceneLogic

        self.scene_logic = SceneLogic(slicer.mrmlScene)

    def getParameterNode(self) -> Seg2MedParameterNode:
        return Seg2MedParameterNode(super().getParameterNode())


class Seg2MedWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads the .ui file and hands over to ``Seg2MedLib.widget.Seg2MedController``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.controller = None
        self._parameterNode: Seg2MedParameterNode | None = None
        self._guiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Seg2Med.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Seg2MedLogic()
        from Seg2MedLib.widget import Seg2MedController

        self.controller = Seg2MedController(self.ui, self.logic.scene_logic, self.parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def parameterNode(self) -> Seg2MedParameterNode | None:
        return self._parameterNode

    def cleanup(self) -> None:
        self.removeObservers()
        if self.controller is not None:
            self.controller.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None and self._guiTag is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None
        self._unobserve()

    def _unobserve(self) -> None:
        if self._parameterNode is not None and self.hasObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        if self.controller is not None:
            self.controller.onSceneClosed()

    def onReload(self) -> None:
        """Developer Reload: the Lib package too (Slicer reloads only this file)."""
        from Seg2MedLib.commands import forget_modules

        forget_modules("Seg2MedLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        # pre-select a volume only for a fresh start: with a segmentation chosen (e.g. a phantom, which has no
        # input volume on purpose) an automatic pick would attach an unrelated image to it
        p = self._parameterNode
        if not p.inputVolume and not p.segmentation:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume is not None and not volume.IsA("vtkMRMLLabelMapVolumeNode"):
                p.inputVolume = volume

    def setParameterNode(self, node: Seg2MedParameterNode | None) -> None:
        """Bind the GUI to ``node`` (connectGui) and observe it so buttons and the estimate follow it."""
        if self._parameterNode is not None:
            if self._guiTag is not None:
                self._parameterNode.disconnectGui(self._guiTag)
                self._guiTag = None
            self._unobserve()
        self._parameterNode = node
        if node is not None:
            self._guiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self.controller is not None:
            self.controller.onParameterNodeModified()


class Seg2MedTest(ScriptedLoadableModuleTest):
    """Self-test on generated data: label map → segmentation node → label map, result loading, tables."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        from Seg2MedLib import dependencies

        dependencies.ensure()  # a clean Slicer lacks nibabel, scikit-image, ...: asks, then installs
        self.setUp()
        self.test_roundtrip_and_tables()
        self.test_phantom_composite()

    def test_roundtrip_and_tables(self) -> None:
        from Seg2MedLib import selftest

        selftest.roundtrip_and_tables(self, slicer.mrmlScene)

    def test_phantom_composite(self) -> None:
        from Seg2MedLib import selftest

        selftest.phantom_composite(self, slicer.mrmlScene)
