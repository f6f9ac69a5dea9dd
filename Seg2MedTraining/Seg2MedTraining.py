"""Seg2MedTraining: train a Seg2Med model on your own CT/MR + segmentation pairs from inside Slicer.

Thin module file; the logic is in ``Seg2MedTrainingLib`` and the process runner is shared with Seg2Med.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class Seg2MedTraining(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Seg2Med Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Seg2Med"]
        self.parent.contributors = ["seg2med contributors"]
        self.parent.helpText = "Train a Seg2Med diffusion model on image + segmentation pairs; the result is added to the model registry."
        self.parent.acknowledgementText = "Uses MONAI and PyTorch."


@parameterNodeWrapper
class Seg2MedTrainingParameterNode:
    pairVolume: slicer.vtkMRMLScalarVolumeNode
    pairSegmentation: slicer.vtkMRMLSegmentationNode
    steps: Annotated[int, WithinRange(1, 10_000_000)] = 20000
    batchSize: Annotated[int, WithinRange(1, 512)] = 8
    imageSize: Annotated[int, WithinRange(16, 1024)] = 256  # a multiple of 16: TrainingOptions.validate says so


class Seg2MedTrainingLogic(ScriptedLoadableModuleLogic):
    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from Seg2MedTrainingLib.logic import TrainingLogic

        self.training = TrainingLogic(slicer.mrmlScene)

    def getParameterNode(self) -> Seg2MedTrainingParameterNode:
        return Seg2MedTrainingParameterNode(super().getParameterNode())


class Seg2MedTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Seg2MedTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Seg2MedTrainingLogic()
        self.param = self.logic.getParameterNode()
        self._guiTag = self.param.connectGui(self.ui)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.pairs: list[tuple] = []
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.onTick)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.startButton.connect("clicked(bool)", lambda _=False: self.run(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda _=False: self.run(resume=True))
        self.ui.stopButton.connect("clicked(bool)", lambda _=False: self.logic.training.stop(spin=slicer.app.processEvents))

    def cleanup(self) -> None:
        self.removeObservers()
        self.logic.training.stop()

    def onSceneStartClose(self, caller, event) -> None:
        self.param.disconnectGui(self._guiTag)
        self.logic.training.stop(spin=slicer.app.processEvents)
        self.pairs.clear()
        self.ui.pairsListWidget.clear()
        self.logic.training.curve = None  # its nodes belong to the closed scene

    def onSceneEndClose(self, caller, event) -> None:
        self.param = self.logic.getParameterNode()
        self._guiTag = self.param.connectGui(self.ui)

    def onAddPair(self) -> None:
        if self.param.pairVolume is None or self.param.pairSegmentation is None:
            slicer.util.errorDisplay("Choose a volume and its segmentation first.")
            return
        self.pairs.append((self.param.pairVolume, self.param.pairSegmentation))
        self.ui.pairsListWidget.addItem(f"{self.param.pairVolume.GetName()} + {self.param.pairSegmentation.GetName()}")

    def run(self, resume: bool) -> None:
        from Seg2MedLib.commands import TrainingOptions

        try:
            with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
                from Seg2MedLib import dependencies

                dependencies.ensure()  # first use: asks, then installs what a clean Slicer lacks
                if resume:
                    options = self.logic.training.resume_options()
                else:
                    data = self.ui.dataFolderLineEdit.currentPath or str(self.logic.training.export_pairs(self.pairs))
                    out = self.ui.outputFolderLineEdit.currentPath or str(Path.home() / ".seg2med" / "runs" / "my_model")
                    options = TrainingOptions(
                        data=Path(data), out=Path(out), modality=self.ui.modalityComboBox.currentText.lower(),
                        sequence=self.ui.sequenceComboBox.currentText or None, steps=self.param.steps,
                        batch_size=self.param.batchSize, image_size=self.param.imageSize,
                        device=self.ui.deviceComboBox.currentText)
                self.logic.training.start(options, on_event=self.onEvent)
        except Exception:  # noqa: BLE001  (already shown by tryWithErrorDisplay)
            return
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView)
        slicer.modules.plots.logic().ShowChartInLayout(self.logic.training.curve.chart_node)
        self.timer.start()

    def onEvent(self, event) -> None:
        if event.kind == "progress":
            self.ui.progressBar.maximum = max(int(event.data.get("total", 1)), 1)
            self.ui.progressBar.value = int(event.data.get("done", 0))
            loss = event.data.get("loss")
            self.ui.progressBar.setFormat(f"{event.message} %v/%m" + (f", loss {loss}" if loss is not None else ""))
        elif event.kind in ("log", "stderr", "error"):
            self.ui.logTextEdit.appendPlainText(event.message)

    def onTick(self) -> None:
        from Seg2MedLib.process import RunState

        runner = self.logic.training.runner
        runner.poll()
        if runner.running:
            return
        self.timer.stop()
        if runner.state == RunState.SUCCEEDED:
            with slicer.util.tryWithErrorDisplay("Could not register the trained model."):
                entry = self.logic.training.register()
                slicer.util.infoDisplay(f"Model '{entry.name}' added to the registry; Seg2Med lists it now.")
        elif runner.state == RunState.CANCELLED:
            self.ui.logTextEdit.appendPlainText("Stopped; press Resume to continue from the last checkpoint.")
        else:
            slicer.util.errorDisplay(f"Training failed: {runner.error}")


class Seg2MedTrainingTest(ScriptedLoadableModuleTest):
    def runTest(self) -> None:
        from Seg2MedLib import dependencies

        dependencies.ensure()
        slicer.mrmlScene.Clear()
        self.test_export_and_curve()

    def test_export_and_curve(self) -> None:
        import tempfile

        import numpy as np

        from Seg2MedTrainingLib.logic import TrainingLogic

        volume = slicer.util.addVolumeFromArray(np.full((4, 16, 16), -1000.0, np.float32), name="ct")
        labels = slicer.util.addVolumeFromArray(np.pad(np.full((2, 8, 8), 5, np.uint8), ((1, 1), (4, 4), (4, 4))),
                                                nodeClassName="vtkMRMLLabelMapVolumeNode")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labels, seg)
        seg.GetSegmentation().GetNthSegment(0).SetName("liver")
        logic = TrainingLogic(slicer.mrmlScene)
        folder = logic.export_pairs([(volume, seg)], Path(tempfile.mkdtemp()))
        self.assertEqual(len(list(folder.glob("*/image.nii.gz"))), 1)
        self.delayDisplay("Test passed")
