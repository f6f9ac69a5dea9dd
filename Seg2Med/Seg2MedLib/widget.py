"""Qt side of the Seg2Med module: button handlers, QTimer-driven process polling, confirmations, layout.

Only this file (and the module file) show dialogs; the logic it calls raises ``ValueError`` whose message
is shown as is. Requires Slicer's ``qt``/``slicer`` (not importable in plain Python).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import qt
import slicer

from . import segment
from .commands import SynthesisOptions, child_environment, ensure_core_importable
from .process import ProcessRunner, RunEvent, RunState

ensure_core_importable()
from seg2med_core import registry  # noqa: E402

POLL_MS = 200


class QtRunnerAdapter:
    """Polls a :class:`ProcessRunner` from a QTimer and forwards events to a callback on the GUI thread."""

    def __init__(self, on_event: Callable[[RunEvent], None], on_finished: Callable[[ProcessRunner], None]) -> None:
        self.runner = ProcessRunner(on_event=on_event)
        self.on_finished = on_finished
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._tick)

    def start(self, command: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.runner.start(command, env=env, cwd=cwd)
        self.timer.start()

    def cancel(self) -> None:
        self.runner.cancel()

    def _tick(self) -> None:
        self.runner.poll()
        if self.runner.state != RunState.RUNNING:
            self.timer.stop()
            self.on_finished(self.runner)


class Seg2MedController:
    """Connects the .ui widgets to the scene logic; ``parameterNode()`` returns the wrapped parameter node."""

    def __init__(self, ui: Any, logic: Any, parameterNode: Callable[[], Any]) -> None:
        self.ui, self.logic, self.parameterNode = ui, logic, parameterNode
        self.adapter: QtRunnerAdapter | None = None
        self.pending: Callable[[ProcessRunner], None] | None = None
        self.entries: list[registry.RegistryEntry] = []
        for button, slot in [
            (ui.segmentButton, self.onSegment), (ui.phantomButton, self.onPhantom),
            (ui.editSegmentationButton, self.onEdit), (ui.composeButton, self.onCompose),
            (ui.convertLabelsButton, self.onConvertLabels), (ui.addModelButton, self.onAddModel),
            (ui.downloadModelButton, self.onDownload), (ui.synthesizeButton, self.onSynthesize),
            (ui.cancelButton, self.cancel), (ui.compareButton, self.onCompare), (ui.roundTripButton, self.onRoundTrip),
        ]:
            button.connect("clicked(bool)", lambda _checked=False, s=slot: self._guarded(s))
        for widget in (ui.stepsSpinBox, ui.deviceComboBox, ui.segmentationSelector, ui.modelComboBox):
            signal = "valueChanged(int)" if widget is ui.stepsSpinBox else (
                "currentNodeChanged(vtkMRMLNode*)" if widget is ui.segmentationSelector else "currentIndexChanged(int)")
            widget.connect(signal, lambda *_: self.updateEstimate())
        ui.targetModalityComboBox.connect("currentIndexChanged(int)", lambda *_: self.refreshModels())
        self.refreshModels()
        self.updateButtons()

    # -- helpers --------------------------------------------------------------------------------------
    def _guarded(self, slot: Callable[[], None]) -> None:
        """Run a handler; ValueError (incl. Seg2MedError) becomes an error box with its one-line message."""
        try:
            with slicer.util.tryWithErrorDisplay("Seg2Med failed.", waitCursor=True):
                slot()
        finally:
            self.updateButtons()

    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def busy(self) -> bool:
        return self.adapter is not None and self.adapter.runner.running

    def updateButtons(self) -> None:
        p = self.parameterNode()
        has_seg = p is not None and p.segmentation is not None
        self.ui.synthesizeButton.enabled = has_seg and not self.busy() and bool(self.entries)
        self.ui.cancelButton.enabled = self.busy()
        self.ui.segmentButton.enabled = p is not None and p.inputVolume is not None and not self.busy()
        self.ui.compareButton.enabled = p is not None and p.result is not None and p.realImage is not None
        self.ui.roundTripButton.enabled = p is not None and p.result is not None and has_seg and not self.busy()

    def targetModality(self) -> str:
        return self.ui.targetModalityComboBox.currentText.lower()

    def options(self) -> SynthesisOptions:
        return SynthesisOptions(steps=self.ui.stepsSpinBox.value, sampler=self.ui.samplerComboBox.currentText,
                                seed=self.ui.seedSpinBox.value, device=self.ui.deviceComboBox.currentText)

    def refreshModels(self) -> None:
        self.entries = [e for e in registry.load_registry() if e.modality == self.targetModality()]
        self.ui.modelComboBox.clear()
        for entry in self.entries:
            self.ui.modelComboBox.addItem(f"{entry.name}{'' if entry.path else ' (download)'}")
        self.updateEstimate()

    def selectedEntry(self) -> registry.RegistryEntry:
        index = self.ui.modelComboBox.currentIndex
        if not 0 <= index < len(self.entries):
            raise ValueError(f"no {self.targetModality().upper()} model in the registry: add a bundle folder first")
        return self.entries[index]

    def updateEstimate(self) -> None:
        p = self.parameterNode()
        if p is None or p.segmentation is None:
            self.ui.estimateLabel.text = "-"
            return
        image_data = p.inputVolume.GetImageData() if p.inputVolume is not None else None
        n_slices = image_data.GetDimensions()[2] if image_data is not None else 100
        self.ui.estimateLabel.text = self.logic.estimate(n_slices, self.options())

    def runProcess(self, command: list[str], env: dict[str, str], workdir: Path,
                   done: Callable[[ProcessRunner], None]) -> None:
        if self.busy():
            raise ValueError("another Seg2Med process is still running: wait or press Cancel")
        self.ui.progressBar.value = 0
        self.log("$ " + " ".join(command))
        self.pending = done
        self.adapter = QtRunnerAdapter(self.onEvent, self.onFinished)
        self.adapter.start(command, env, str(workdir))
        self.updateButtons()

    def onEvent(self, event: RunEvent) -> None:
        if event.kind == "progress":
            done, total = int(event.data.get("done", 0)), int(event.data.get("total", 0))
            self.ui.progressBar.maximum = max(total, 1)
            self.ui.progressBar.value = done
            self.ui.progressBar.setFormat(f"{event.message} %v/%m")
        elif event.kind in ("log", "stderr", "error"):
            self.log(event.message)
        elif event.kind == "metric":
            self.log(", ".join(f"{k}={v}" for k, v in event.data.items()))

    def onFinished(self, runner: ProcessRunner) -> None:
        self.updateButtons()
        if runner.state == RunState.SUCCEEDED and self.pending is not None:
            self._guarded(lambda: self.pending(runner))
        elif runner.state == RunState.CANCELLED:
            self.log("Cancelled.")
        else:
            self.log(f"Failed: {runner.error}")
            slicer.util.errorDisplay(f"Seg2Med failed: {runner.error}")

    def cancel(self) -> None:
        if self.adapter is not None:
            self.adapter.cancel()

    # -- input and segmentation --------------------------------------------------------------------------
    def onSegment(self) -> None:
        p = self.parameterNode()
        modality = self.ui.inputModalityComboBox.currentText.lower()
        tasks = segment.tasks_for(modality)
        if any(t in segment.LICENSED_TASKS for t in tasks):
            self.log(f"Note: {', '.join(t for t in tasks if t in segment.LICENSED_TASKS)} needs a TotalSegmentator "
                     "licence (free for academic use): run 'totalseg_set_license -l KEY' once.")
        seg_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{p.inputVolume.GetName()} segmentation")
        extension = segment.slicer_totalsegmentator_logic()
        if extension is not None:
            for task in tasks:
                target = seg_node if task == tasks[0] else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
                segment.run_with_slicer_extension(extension, p.inputVolume, target, task, p.fast, cpu=False)
                if target is not seg_node:
                    self.logic.merge_tissue_node(seg_node, target, p.inputVolume)
            self.finishSegmentation(seg_node)
            return
        if not segment.totalsegmentator_installed() and not self.installTotalSegmentator():
            return
        workdir = Path(tempfile.mkdtemp(prefix="seg2med-ts-"))
        from Seg2MedLib import nodes
        from seg2med_core import io as core_io

        image = workdir / "image.nii.gz"
        core_io.write_image(nodes.volume_node_to_sitk(p.inputVolume), image)
        outputs = [workdir / f"{task}.nii.gz" for task in tasks]
        device = "gpu" if self.ui.deviceComboBox.currentText in ("auto", "cuda") else "cpu"
        commands = [segment.segment_command(image, out, task, p.fast, device) for task, out in zip(tasks, outputs)]

        def next_step(runner: ProcessRunner | None = None) -> None:
            if commands:
                self.runProcess(commands.pop(0), child_environment(), workdir, next_step)
                return
            self.logic.load_task_outputs(outputs, segment.LABEL_SET_FOR_MODALITY[modality], seg_node)
            self.finishSegmentation(seg_node)

        next_step()

    def installTotalSegmentator(self) -> bool:
        steps = segment.install_steps()
        if not slicer.util.confirmOkCancelDisplay(
            "TotalSegmentator is not installed. Install it now into Slicer's Python?\n\n"
            + "\n".join(f"pip install {s}" for s in steps)
            + "\n\nfury is left out on purpose (it would replace Slicer's VTK). PyTorch comes from the PyTorch extension."
        ):
            return False
        try:
            import PyTorchUtils  # noqa: F401  (PyTorch extension)

            torch_logic = PyTorchUtils.PyTorchUtilsLogic()
            if not torch_logic.torchInstalled():
                torch_logic.installTorch(askConfirmation=True)
        except ImportError:
            self.log("PyTorch extension not found: torch must already be installed in Slicer's Python.")
        with slicer.util.displayPythonShell(), slicer.util.WaitCursor():
            for step in steps:
                slicer.util.pip_install(step)
        return segment.totalsegmentator_installed()

    def finishSegmentation(self, seg_node: Any) -> None:
        self.parameterNode().segmentation = seg_node
        seg_node.CreateClosedSurfaceRepresentation()
        self.ui.labelSetLabel.text = self.logic.guess_label_set(seg_node)
        self.log(f"Segmentation ready: {seg_node.GetName()}")

    def onPhantom(self) -> None:
        seg_node = self.logic.phantom_node(seed=self.ui.seedSpinBox.value)
        self.finishSegmentation(seg_node)

    def onEdit(self) -> None:
        p = self.parameterNode()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.segmentation)
        if p.inputVolume is not None:
            editor.setSourceVolumeNode(p.inputVolume)

    def onCompose(self) -> None:
        p = self.parameterNode()
        organs = [o.strip() for o in self.ui.organNamesLineEdit.text.split(",") if o.strip()]
        if p.organSource is None or not organs:
            raise ValueError("choose an organ source segmentation and type the organ names to take from it")
        node, report = self.logic.compose_segmentation_nodes((p.segmentation, p.inputVolume),
                                                             [(p.organSource, None, organs)])
        self.log(str(report))
        self.finishSegmentation(node)

    def onConvertLabels(self) -> None:
        p = self.parameterNode()
        target = "total" if self.targetModality() == "ct" else "total_mr"
        node, report = self.logic.convert_segmentation_node(p.segmentation, p.inputVolume, target)
        self.log(report.summary())
        self.finishSegmentation(node)

    # -- models ---------------------------------------------------------------------------------------
    def onAddModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Model bundle folder (metadata.json + model.safetensors)")
        if folder:
            entry = registry.register_bundle(folder)
            self.log(f"Added model {entry.name} ({entry.modality}) to {registry.user_registry_path()}")
            self.refreshModels()

    def onDownload(self) -> None:
        entry = self.selectedEntry()
        if entry.path:
            self.log(f"{entry.name} is a local bundle: nothing to download")
            return
        if not slicer.util.confirmOkCancelDisplay(f"Download model '{entry.name}' from {entry.url}?\nLicence: {entry.licence or 'not stated'}"):
            return
        state: dict[str, Any] = {"progress": (0, 0), "error": None, "path": None}

        def work() -> None:
            try:
                state["path"] = registry.download_entry(entry, lambda d, t, _m: state.__setitem__("progress", (d, t)))
            except ValueError as exc:
                state["error"] = str(exc)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive():
            done, total = state["progress"]
            self.ui.progressBar.maximum, self.ui.progressBar.value = max(total, 1), done
            slicer.app.processEvents()
            thread.join(0.1)
        if state["error"]:
            raise ValueError(state["error"])
        self.log(f"Downloaded and verified {entry.name} → {state['path']}")

    # -- synthesis and evaluation -------------------------------------------------------------------------
    def onSynthesize(self) -> None:
        p = self.parameterNode()
        entry = self.selectedEntry()
        job = self.logic.prepare_synthesis(p.segmentation, p.inputVolume, entry.path or entry.name, self.options(),
                                           image_node=p.inputVolume)
        self.log(self.logic.estimate(job.n_slices, self.options()))

        def loaded(runner: ProcessRunner) -> None:
            name = f"Synthetic {self.targetModality().upper()} ({entry.name}, seed {self.options().seed})"
            node = self.logic.load_result(job.output, name, p.inputVolume)
            p.result = node
            self.showSideBySide(p.inputVolume, node)

        self.runProcess(job.command, job.env, job.workdir, loaded)

    def showSideBySide(self, left: Any, right: Any) -> None:
        layout = slicer.app.layoutManager()
        layout.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for name, node in (("Red", left), ("Yellow", right)):
            if node is not None:
                composite = layout.sliceWidget(name).mrmlSliceCompositeNode()
                composite.SetBackgroundVolumeID(node.GetID())
                composite.SetLinkedControl(True)
                composite.SetHotLinkedControl(True)
        slicer.util.resetSliceViews()

    def onCompare(self) -> None:
        p = self.parameterNode()
        metrics, table, ssim_node = self.logic.compare(p.result, p.realImage, self.targetModality())
        ssim_node.CreateDefaultDisplayNodes()
        slicer.util.setSliceViewerLayers(foreground=ssim_node, foregroundOpacity=0.5)
        ssim_node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        self.log("Metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    def onRoundTrip(self) -> None:
        p = self.parameterNode()
        resegmented = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{p.result.GetName()} re-segmented")
        extension = segment.slicer_totalsegmentator_logic()
        task = segment.tasks_for(self.targetModality())[0]
        if extension is None:
            raise ValueError("the round-trip check needs the TotalSegmentator extension (Extensions Manager)")
        segment.run_with_slicer_extension(extension, p.result, resegmented, task, fast=True, cpu=False)
        dice, table = self.logic.roundtrip_dice(p.segmentation, resegmented, p.inputVolume)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        worst = sorted(dice.items(), key=lambda kv: kv[1])[:5]
        self.log("Worst organs: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))
