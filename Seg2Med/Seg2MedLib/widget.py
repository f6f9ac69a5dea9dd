"""Qt side of the Seg2Med module: button handlers, QTimer-driven process polling, confirmations, layout.

Only this file (and the module file) show dialogs; the logic it calls raises ``ValueError`` whose message
is shown as is. Requires Slicer's ``qt``/``slicer`` (not importable in plain Python). ``seg2med_core`` is
imported inside the handlers, so loading the module does not load the core (nor, ever, torch).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import qt
import slicer

from . import dependencies, segment
from .commands import SynthesisOptions, child_environment
from .process import ProcessRunner, RunEvent, RunState

POLL_MS = 200
#: The target combo box's "CT + MR" (lower case): a synthetic CT and MR from one segmentation in one run.
PAIR = "ct + mr"


class QtRunnerAdapter:
    """Polls a :class:`ProcessRunner` from a QTimer and forwards events to a callback on the GUI thread."""

    def __init__(self, on_event: Callable[[RunEvent], None], on_finished: Callable[[ProcessRunner], None]) -> None:
        self.runner = ProcessRunner(on_event=on_event)
        self.on_finished = on_finished
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self._tick)

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
        self.pendingFailure: Callable[[ProcessRunner], bool] | None = None
        self.extensionRun: segment.ExtensionRun | None = None  # a blocking SlicerTotalSegmentator call
        self.handling = False  # a button handler is running (its processEvents() may deliver more clicks)
        self.dependenciesReady = False
        self.entries: list[Any] = []  # seg2med_core.registry.RegistryEntry of the current modality/sequence
        self.mrEntries: list[Any] = []  # CT + MR: the MR models (of the sequence) offered in mrModelComboBox
        self.organSources: list[tuple[str, list[str]]] = []  # (segmentation node ID, organ names)
        for button, slot in [
            (ui.segmentButton, self.onSegment), (ui.phantomButton, self.onPhantom),
            (ui.editSegmentationButton, self.onEdit), (ui.addOrganSourceButton, self.onAddOrganSource),
            (ui.clearOrganSourcesButton, self.onClearOrganSources), (ui.composeButton, self.onCompose),
            (ui.convertLabelsButton, self.onConvertLabels), (ui.addModelButton, self.onAddModel),
            (ui.downloadModelButton, self.onDownload), (ui.synthesizeButton, self.onSynthesize),
            (ui.cancelButton, self.cancel), (ui.compareButton, self.onCompare), (ui.roundTripButton, self.onRoundTrip),
        ]:
            button.connect("clicked(bool)", lambda _checked=False, s=slot: self.onClicked(s))
        ui.stepsSpinBox.connect("valueChanged(int)", lambda *_: self.updateEstimate())
        for combo in (ui.deviceComboBox, ui.modelComboBox, ui.mrModelComboBox, ui.samplerComboBox):
            combo.connect("currentIndexChanged(int)", lambda *_: self.updateEstimate())
        for combo in (ui.targetModalityComboBox, ui.sequenceComboBox):
            combo.connect("currentIndexChanged(int)", lambda *_: self._guarded(self.refreshModels, wait=False))
        self._guarded(self.refreshModels, wait=False)

    # -- helpers --------------------------------------------------------------------------------------
    #: Handlers that work without the Python dependencies (no seg2med_core computation).
    NO_DEPENDENCIES = ("cancel", "onEdit", "onClearOrganSources")

    def onClicked(self, slot: Callable[[], None]) -> None:
        """A button click. While a handler runs, Slicer keeps processing events (wait cursor, extension log),
        so a second click of a double click arrives inside the first: it is ignored (Cancel always works)."""
        name = getattr(slot, "__name__", "")
        if name == "cancel":
            self._guarded(slot, wait=False)
            return
        if self.handling:
            return
        self.handling = True
        try:
            self._guarded(slot, needs_dependencies=name not in self.NO_DEPENDENCIES)
        finally:
            self.handling = False
            self.updateButtons()

    def ensureDependencies(self) -> None:
        """Install the Python packages Seg2Med needs (first use; asks first). Raises ValueError when declined."""
        if not self.dependenciesReady:
            installed = dependencies.ensure()
            if installed:
                self.log("Installed Python packages: " + ", ".join(installed))
            self.dependenciesReady = True

    def _guarded(self, slot: Callable[[], None], wait: bool = True, needs_dependencies: bool = False) -> None:
        """Run a handler; a ValueError (incl. Seg2MedError) becomes an error box with its one-line message,
        anything else an error box with the traceback under "Show details"."""
        error: tuple[str, str | None] | None = None
        try:
            if needs_dependencies:
                self.ensureDependencies()
            with slicer.util.WaitCursor(show=wait):
                slot()
        except ValueError as exc:
            error = (str(exc), None)
        except Exception as exc:  # noqa: BLE001  (a Qt slot must not leak exceptions)
            logging.exception("Seg2Med failed")
            error = (f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            self.updateButtons()
        if error is not None:
            self.log(f"Error: {error[0]}")
            extra = {"detailedText": error[1]} if error[1] else {}
            slicer.util.errorDisplay(error[0], windowTitle="Seg2Med", **extra)

    def onSceneClosed(self) -> None:
        """The scene is closing: its nodes go, and so do the organ sources that point at them."""
        self.onClearOrganSources()
        if self.extensionRun is not None:
            self.extensionRun.cancel()
        if self.adapter is not None:
            self.adapter.cancel()

    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def busy(self) -> bool:
        return self.extensionRun is not None or (self.adapter is not None and self.adapter.runner.running)

    def onParameterNodeModified(self) -> None:
        """Called by the module widget whenever the parameter node changes (node selections, bound values)."""
        p = self.parameterNode()
        if p is not None and p.segmentation is not None:
            try:
                self.ui.labelSetLabel.text = self.logic.guess_label_set(p.segmentation)
            except ValueError as exc:
                self.ui.labelSetLabel.text = str(exc)
        else:
            self.ui.labelSetLabel.text = "-"
        self.updateButtons()
        self.updateEstimate()

    def updateButtons(self) -> None:
        p = self.parameterNode()
        busy = self.busy()
        has_seg = p is not None and p.segmentation is not None
        has_result = p is not None and p.result is not None
        self.ui.segmentButton.enabled = p is not None and p.inputVolume is not None and not busy
        self.ui.phantomButton.enabled = p is not None and not busy
        self.ui.editSegmentationButton.enabled = has_seg
        self.ui.addOrganSourceButton.enabled = p is not None and p.organSource is not None
        self.ui.composeButton.enabled = has_seg and (bool(self.organSources) or (p is not None and p.organSource is not None))
        pair = self.targetModality() == PAIR
        self.ui.convertLabelsButton.enabled = has_seg and not pair  # CT + MR converts the labels for each model itself
        self.ui.synthesizeButton.enabled = has_seg and not busy and bool(self.entries) and (bool(self.mrEntries) or not pair)
        self.ui.cancelButton.enabled = busy
        self.ui.compareButton.enabled = has_result and p.realImage is not None
        self.ui.roundTripButton.enabled = has_result and has_seg and not busy
        self.ui.sequenceComboBox.enabled = self.targetModality() in ("mr", PAIR)
        self.ui.mrModelLabel.visible = self.ui.mrModelComboBox.visible = pair
        self.ui.label_2_3.text = "CT model:" if pair else "Model:"

    def targetModality(self) -> str:
        """"ct", "mr" or :data:`PAIR` ("ct + mr")."""
        return self.ui.targetModalityComboBox.currentText.lower()

    def inputModality(self) -> str:
        return self.ui.inputModalityComboBox.currentText.lower()

    def sequence(self) -> str | None:
        """The MR sequence (of the MR target, or of the MR half of CT + MR); None for a CT target."""
        return self.ui.sequenceComboBox.currentText if self.targetModality() in ("mr", PAIR) else None

    #: The check box of the parameter ``dropUnknownSegments`` (named in the error it avoids).
    DROP_UNKNOWN = "Drop segments that are not classes of the label set"

    @contextlib.contextmanager
    def unknownSegments(self) -> Iterator[dict[str, Any]]:
        """Around an export of the segmentation: yields the keyword arguments ``drop_unknown`` (the parameter
        node's ``dropUnknownSegments``) and ``info`` (the log); the error for segments that are no class of the
        label set then also names the check box that lets the work go on without them."""
        from .logic import UnknownSegmentsError

        def dropped(text: str) -> None:  # e.g. "segments left out (no class of 'total'): Tumour"
            self.log(f"Note: {text}")
            slicer.util.showStatusMessage(f"Seg2Med: {text}", 10000)

        p = self.parameterNode()
        try:
            yield {"drop_unknown": bool(p.dropUnknownSegments), "info": dropped}
        except UnknownSegmentsError as exc:
            raise ValueError(f"{exc} (tick '{self.DROP_UNKNOWN}' to go on without them)") from None

    def options(self) -> SynthesisOptions:
        p = self.parameterNode()
        return SynthesisOptions(steps=p.steps, sampler=p.sampler, seed=p.seed, device=self.ui.deviceComboBox.currentText)

    def refreshModels(self) -> None:
        """Registry models of the target modality (and, for MR, of the chosen sequence or sequence-agnostic);
        for CT + MR the CT models in the model combo box and the MR models in the MR model combo box."""
        from seg2med_core import registry

        target, sequence = self.targetModality(), self.sequence()
        every = registry.load_registry()
        available = [e for e in every if e.modality == "mr"]
        mr = [e for e in available if sequence is None or e.sequence in (None, sequence)]
        if not mr and sequence is not None:
            # no model for this sequence (the list's first entry, t1_gre, has none shipped): pick one that has
            sequences = [self.ui.sequenceComboBox.itemText(i) for i in range(self.ui.sequenceComboBox.count)]
            with_model = [q for q in sequences if any(e.sequence == q for e in available)]
            if with_model:
                self.log(f"No {sequence} model in the registry: MR sequence set to {with_model[0]}.")
                self.ui.sequenceComboBox.currentText = with_model[0]  # triggers refreshModels again
                return
        ct = [e for e in every if e.modality == "ct"]
        self.entries, self.mrEntries = (mr, []) if target == "mr" else (ct, mr if target == PAIR else [])
        for combo, entries in ((self.ui.modelComboBox, self.entries), (self.ui.mrModelComboBox, self.mrEntries)):
            combo.clear()
            for entry in entries:
                combo.addItem(f"{entry.name}{'' if entry.path else ' (download)'}")
        self.updateButtons()
        self.updateEstimate()

    def selectedEntry(self) -> Any:
        """The registry entry chosen in the model combo box (the CT model for CT + MR)."""
        index = self.ui.modelComboBox.currentIndex
        if not 0 <= index < len(self.entries):
            modality = "ct" if self.targetModality() == PAIR else self.targetModality()
            sequence = f" ({self.sequence()})" if self.sequence() and modality == "mr" else ""
            raise ValueError(f"no {modality.upper()}{sequence} model in the registry: add a bundle folder first")
        return self.entries[index]

    def selectedMrEntry(self) -> Any:
        """CT + MR: the registry entry chosen in the MR model combo box."""
        index = self.ui.mrModelComboBox.currentIndex
        if not 0 <= index < len(self.mrEntries):
            raise ValueError(f"no MR ({self.sequence()}) model in the registry for CT + MR: add a bundle folder "
                             "or choose another MR sequence")
        return self.mrEntries[index]

    def updateEstimate(self) -> None:
        p = self.parameterNode()
        if p is None or p.segmentation is None:
            self.ui.estimateLabel.text = "-"
            return
        n_slices = self.logic.axial_slice_count(p.segmentation, p.inputVolume)
        if n_slices is None:
            self.ui.estimateLabel.text = "unknown (the segmentation has no geometry yet)"
            return
        try:
            self.ui.estimateLabel.text = self.estimateText(n_slices)
        except ValueError as exc:
            self.ui.estimateLabel.text = str(exc)

    def estimateText(self, n_slices: int) -> str:
        """The estimate of one run; for CT + MR the two halves (they run one after the other)."""
        def model_dir(combo: Any, entries: list[Any]) -> str | None:
            index = combo.currentIndex
            return entries[index].path if 0 <= index < len(entries) else None

        options = self.options()
        ct = self.logic.estimate(n_slices, options, model_dir=model_dir(self.ui.modelComboBox, self.entries))
        if self.targetModality() != PAIR:
            return ct
        mr = self.logic.estimate(n_slices, options, model_dir=model_dir(self.ui.mrModelComboBox, self.mrEntries))
        return f"CT {ct}, then MR {mr}"

    def runProcess(self, command: list[str], env: dict[str, str], workdir: Path,
                   done: Callable[[ProcessRunner], None],
                   failed: Callable[[ProcessRunner], bool] | None = None) -> None:
        """Start ``command``; ``done(runner)`` on success. ``failed(runner)`` may handle a failure itself
        (returning True), e.g. an optional step that the work can go on without."""
        if self.busy():
            raise ValueError("another Seg2Med process is still running: wait or press Cancel")
        self.ui.progressBar.value = 0
        self.log("$ " + " ".join(command))
        self.pending = done
        self.pendingFailure = failed
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
            pending = self.pending
            self._guarded(lambda: pending(runner))
        elif runner.state == RunState.CANCELLED:
            self.log("Cancelled.")
        elif self.pendingFailure is not None and self.pendingFailure(runner):
            pass
        else:
            self.log(f"Failed: {runner.error}")
            slicer.util.errorDisplay(f"Seg2Med failed: {runner.error}", windowTitle="Seg2Med")

    def cancel(self) -> None:
        if self.extensionRun is not None:
            self.log("Cancelling TotalSegmentator...")
            self.extensionRun.cancel()
        if self.adapter is not None:
            self.adapter.cancel()

    # -- input and segmentation --------------------------------------------------------------------------
    def segmentVolume(self, volume: Any, modality: str, target: Any, done: Callable[[Any], None]) -> None:
        """TotalSegmentator on ``volume`` into segmentation node ``target``, then ``done(target)``.

        The SlicerTotalSegmentator extension is used when installed (its log goes to the module's log and
        Cancel stops it); otherwise the ``totalsegmentator`` package runs in a child process (installed first,
        after a confirmation). For MR the tissue types are merged in (organs win) when that task succeeds: it
        needs a licence, and without one the organs are used alone.
        """
        tasks = segment.tasks_for(modality)
        licensed = [t for t in tasks if t in segment.LICENSED_TASKS]
        if licensed:
            self.log(f"Note: {', '.join(licensed)} needs a TotalSegmentator licence (free for academic use): "
                     "run 'totalseg_set_license -l KEY' once; without it the organs are used alone.")
        cpu = self.ui.deviceComboBox.currentText == "cpu"
        fast = bool(self.ui.fastCheckBox.checked)
        extension = segment.slicer_totalsegmentator_logic()
        if extension is not None:
            if self.segmentWithExtension(extension, volume, tasks, target, fast, cpu):
                done(target)
            return
        if not segment.totalsegmentator_installed() and not self.installTotalSegmentator():
            slicer.mrmlScene.RemoveNode(target)
            return
        from seg2med_core import io as core_io

        from . import nodes

        workdir = Path(tempfile.mkdtemp(prefix="seg2med-ts-"))
        image = Path(core_io.write_image(nodes.volume_node_to_sitk(volume), workdir / "image.nii.gz"))
        outputs = [workdir / f"{task}.nii.gz" for task in tasks]
        device = "cpu" if cpu else "gpu"
        steps = [(task, segment.segment_command(image, out, task, fast, device)) for task, out in zip(tasks, outputs)]
        finished: list[Path] = []

        def next_step(_runner: ProcessRunner | None = None) -> None:
            if _runner is not None:
                finished.append(outputs[len(finished)])
            if len(finished) < len(steps):
                task, command = steps[len(finished)]
                optional = task in segment.LICENSED_TASKS
                self.runProcess(command, child_environment(), workdir, next_step,
                                failed=skip_optional if optional else None)
                return
            self.logic.load_task_outputs(finished, segment.LABEL_SET_FOR_MODALITY[modality], target)
            done(target)

        def skip_optional(runner: ProcessRunner) -> bool:
            task = steps[len(finished)][0]
            self.log(f"Warning: {task} failed ({runner.error}); continuing with the organs only.")
            steps.pop(len(finished))
            outputs.pop(len(finished))
            self._guarded(next_step)
            return True

        next_step()

    def segmentWithExtension(self, extension: Any, volume: Any, tasks: tuple[str, ...], target: Any, fast: bool,
                             cpu: bool) -> bool:
        """Blocking SlicerTotalSegmentator runs, one per task, with log lines and Cancel (then False)."""
        self.extensionRun = segment.ExtensionRun()
        self.updateButtons()

        def log(text: str) -> None:
            self.log(text)
            slicer.app.processEvents()  # keeps the panel alive: Cancel can be pressed

        try:
            for task in tasks:
                main = task == tasks[0]
                node = target if main else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
                try:
                    segment.run_with_slicer_extension(extension, volume, node, task, fast, cpu=cpu, log=log,
                                                      run=self.extensionRun)
                except segment.TaskFailed as exc:
                    if main or task not in segment.LICENSED_TASKS:
                        slicer.mrmlScene.RemoveNode(node)
                        raise ValueError(str(exc)) from None
                    slicer.mrmlScene.RemoveNode(node)
                    self.log(f"Warning: {exc}; continuing with the organs only.")
                    continue
                if not main:
                    self.logic.merge_tissue_node(target, node, volume)
            return True
        except segment.SegmentationCancelled:
            slicer.mrmlScene.RemoveNode(target)
            self.log("Cancelled.")
            return False
        finally:
            self.extensionRun = None
            self.updateButtons()

    def onSegment(self) -> None:
        p = self.parameterNode()
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{p.inputVolume.GetName()} segmentation")
        self.segmentVolume(p.inputVolume, self.inputModality(), target, self.finishSegmentation)

    def installTotalSegmentator(self) -> bool:
        """The fallback when the SlicerTotalSegmentator extension is missing: install the package the way that
        extension does (PyTorch through the PyTorch extension, no SimpleITK/requests/torch from PyPI)."""
        plan = segment.install_plan()
        if not slicer.util.confirmOkCancelDisplay(
            "TotalSegmentator is not installed (neither the SlicerTotalSegmentator extension nor the Python package). "
            "Install the package now into Slicer's Python? This needs a network connection and several minutes.",
            windowTitle="Seg2Med - Install TotalSegmentator",
            detailedText="\n".join(f"pip install {' '.join(args)}   # {what}" for what, args in plan)
            + "\n\nPackages Slicer provides (SimpleITK, requests) and PyTorch (PyTorch extension) are not replaced.",
        ):
            self.log("TotalSegmentator installation declined: install the SlicerTotalSegmentator extension "
                     "from the Extensions Manager, or press Segment again and accept.")
            return False
        dependencies.ensure_torch()
        with slicer.util.displayPythonShell():
            segment.install_totalsegmentator(slicer.util.pip_install, log=self.log)
        return segment.totalsegmentator_installed()

    def finishSegmentation(self, seg_node: Any) -> None:
        p = self.parameterNode()
        if p.show3D:  # a closed surface of a 117-class result takes long: only on request
            seg_node.CreateClosedSurfaceRepresentation()
        p.segmentation = seg_node
        self.log(f"Segmentation ready: {seg_node.GetName()} (label set {self.logic.guess_label_set(seg_node)})")

    def onPhantom(self) -> None:
        p = self.parameterNode()
        seg_node = self.logic.phantom_node(seed=self.ui.phantomSeedSpinBox.value,
                                           region=self.ui.phantomRegionComboBox.currentText)
        p.inputVolume = None  # the phantom has its own grid: no real image belongs to it
        self.finishSegmentation(seg_node)

    def onEdit(self) -> None:
        p = self.parameterNode()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.segmentation)
        if p.inputVolume is not None:
            editor.setSourceVolumeNode(p.inputVolume)

    def onAddOrganSource(self) -> None:
        p = self.parameterNode()
        organs = [o.strip() for o in self.ui.organNamesLineEdit.text.split(",") if o.strip()]
        if p.organSource is None or not organs:
            raise ValueError("choose an organ source segmentation and type the organ names to take from it")
        self.organSources.append((p.organSource.GetID(), organs))
        self.ui.organSourcesListWidget.addItem(f"{p.organSource.GetName()}: {', '.join(organs)}")
        self.ui.organNamesLineEdit.text = ""

    def onClearOrganSources(self) -> None:
        self.organSources.clear()
        self.ui.organSourcesListWidget.clear()

    def onCompose(self) -> None:
        p = self.parameterNode()
        if not self.organSources:
            self.onAddOrganSource()  # the current selection and names, when nothing was added yet
        sources = []
        for node_id, organs in self.organSources:
            node = slicer.mrmlScene.GetNodeByID(node_id)
            if node is None:
                raise ValueError(f"organ source {node_id} was removed from the scene: clear the organ sources")
            sources.append((node, organs))
        with self.unknownSegments() as drop:
            node, report = self.logic.build_composite(p.segmentation, sources, keep_skeleton=p.keepSkeleton,
                                                      reference=p.inputVolume, **drop)
        self.log(str(report))
        self.finishSegmentation(node)

    def onConvertLabels(self) -> None:
        p = self.parameterNode()
        if self.targetModality() == PAIR:
            raise ValueError("CT + MR converts the labels for each model itself: choose CT or MR to convert them here")
        target = "total" if self.targetModality() == "ct" else "total_mr"
        with self.unknownSegments() as drop:
            node, report = self.logic.convert_segmentation_node(p.segmentation, p.inputVolume, target, **drop)
        self.log(report.summary())
        self.finishSegmentation(node)

    # -- models ---------------------------------------------------------------------------------------
    def onAddModel(self) -> None:
        from seg2med_core import registry

        folder = qt.QFileDialog.getExistingDirectory(None, "Model bundle folder (metadata.json + model.safetensors)")
        if folder:
            entry = registry.register_bundle(folder)
            self.log(f"Added model {entry.name} ({entry.modality}) to {registry.user_registry_path()}")
            self.refreshModels()

    def onDownload(self) -> None:
        """Download the selected model (for CT + MR, each of the two that is not a local bundle)."""
        entries = [self.selectedEntry()] + ([self.selectedMrEntry()] if self.targetModality() == PAIR else [])
        for entry in entries:
            self.downloadEntry(entry)

    def downloadEntry(self, entry: Any) -> None:
        from seg2med_core import registry

        if entry.path:
            self.log(f"{entry.name} is a local bundle: nothing to download")
            return
        if not slicer.util.confirmOkCancelDisplay(
                f"Download model '{entry.name}' from {entry.url}?\nLicence: {entry.licence or 'not stated'}",
                windowTitle="Seg2Med"):
            return
        state: dict[str, Any] = {"progress": (0, 0), "error": None, "path": None}

        def work() -> None:
            try:
                state["path"] = registry.download_entry(entry, lambda d, t, _m: state.__setitem__("progress", (d, t)))
            except ValueError as exc:
                state["error"] = str(exc)

        def show_progress() -> None:
            done, total = state["progress"]
            self.ui.progressBar.maximum, self.ui.progressBar.value = max(total, 1), done

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive():  # keep the GUI responsive; the download runs on the worker thread
            show_progress()
            slicer.app.processEvents()
            thread.join(0.1)
        show_progress()  # the last bytes (a quick download ends before the first look)
        if state["error"]:
            raise ValueError(state["error"])
        self.log(f"Downloaded and verified {entry.name} → {state['path']}")

    # -- synthesis and evaluation -------------------------------------------------------------------------
    def onSynthesize(self) -> None:
        if self.targetModality() == PAIR:
            self.synthesizePair()
            return
        p = self.parameterNode()
        entry = self.selectedEntry()
        options = self.options()
        reference = p.inputVolume
        modality = self.targetModality()
        with self.unknownSegments() as drop:
            job = self.logic.prepare_synthesis(p.segmentation, reference, entry.path or entry.name, options,
                                               image_node=reference, image_modality=self.inputModality(),
                                               sequence=self.sequence(), **drop)
        self.log(self.logic.estimate(job.n_slices, options, model_dir=entry.path))

        def loaded(_runner: ProcessRunner) -> None:
            name = f"Synthetic {modality.upper()} ({entry.name}, seed {options.seed})"
            node = self.logic.load_result(job.output, name, reference, modality=modality)
            self.logic.place_in_subject_hierarchy(node, reference or p.segmentation)
            p.result = node
            self.showSideBySide(reference, node)

        self.runProcess(job.command, job.env, job.workdir, loaded)

    def synthesizePair(self) -> None:
        """CT + MR: one ``synthesize --model CT --model MR`` process (labels converted for the MR model, one body
        contour); both volumes are loaded, the CT becomes the Result (metrics, round-trip), the two are shown side by
        side (CT left, MR right, axial, linked)."""
        p = self.parameterNode()
        ct_entry, mr_entry = self.selectedEntry(), self.selectedMrEntry()
        options, sequence = self.options(), self.sequence()
        reference = p.inputVolume
        with self.unknownSegments() as drop:
            job = self.logic.prepare_paired_synthesis(p.segmentation, reference, ct_entry.path or ct_entry.name,
                                                      mr_entry.path or mr_entry.name, options, image_node=reference,
                                                      image_modality=self.inputModality(), sequence=sequence, **drop)
        self.log(f"CT + MR ({ct_entry.name}, {mr_entry.name}): {self.estimateText(job.n_slices)}")

        def loaded(_runner: ProcessRunner) -> None:
            results = {}
            for modality, entry, extra in (("ct", ct_entry, ""), ("mr", mr_entry, f", {sequence}")):
                name = f"Synthetic {modality.upper()} ({entry.name}{extra}, seed {options.seed})"
                results[modality] = self.logic.load_result(job.outputs[modality], name, reference, modality=modality)
                self.logic.place_in_subject_hierarchy(results[modality], reference or p.segmentation)
            p.result = results["ct"]
            self.showSideBySide(results["ct"], results["mr"], show_segmentation=reference is None)
            self.log(f"Synthetic CT and MR loaded ({results['ct'].GetName()}, {results['mr'].GetName()}); metrics and "
                     "the round-trip check use the volume chosen under Result (the CT; choose the MR there for the MR).")

        self.runProcess(job.command, job.env, job.workdir, loaded)

    def showSideBySide(self, left: Any | None, right: Any, show_segmentation: bool | None = None) -> None:
        """Input (or, for a phantom, the segmentation over the result) left, result right; views linked.
        CT + MR: the synthetic CT left and the MR right. ``show_segmentation`` (default: when there is no left
        volume) shows the segmentation over the views."""
        p = self.parameterNode()
        layout = slicer.app.layoutManager()
        layout.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for view, node in (("Red", left or right), ("Yellow", right)):
            widget = layout.sliceWidget(view)
            # orientations of the layout are only defaults for new views (Yellow is sagittal): set them
            widget.mrmlSliceNode().SetOrientation("Axial")
            composite = widget.mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(node.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            composite.SetHotLinkedControl(True)
        if show_segmentation is None:
            show_segmentation = left is None
        if show_segmentation and p is not None and p.segmentation is not None:
            p.segmentation.CreateDefaultDisplayNodes()
        slicer.util.resetSliceViews()

    def onCompare(self) -> None:
        p = self.parameterNode()
        modality = self.logic.result_modality(p.result, default=self.targetModality())
        metrics, table, ssim_node = self.logic.compare(p.result, p.realImage, modality)
        ssim_node.CreateDefaultDisplayNodes()
        display = ssim_node.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.util.setSliceViewerLayers(background=p.result, foreground=ssim_node, foregroundOpacity=0.5)
        self.showTable(table)
        self.log("Metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
                 + f" ({modality.upper()}: {p.result.GetName()} vs {p.realImage.GetName()})")

    def showTable(self, table: Any) -> None:
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onRoundTrip(self) -> None:
        """Re-segment the synthetic volume with TotalSegmentator and show per-organ Dice, worst first."""
        p = self.parameterNode()
        modality = self.logic.result_modality(p.result, default=self.targetModality())
        original, reference = p.segmentation, p.inputVolume
        with self.unknownSegments() as drop:  # before TotalSegmentator runs, not after
            self.logic.check_segment_names(original, **drop)
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{p.result.GetName()} re-segmented")

        def compare(resegmented: Any) -> None:
            dice, table = self.logic.roundtrip_dice(original, resegmented, reference, drop_unknown=drop["drop_unknown"])
            if slicer.app.layoutManager().layout != slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView:
                slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            self.showTable(table)
            worst = sorted(dice.items(), key=lambda kv: kv[1])[:5]
            self.log("Round-trip Dice, worst organs: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))

        self.segmentVolume(p.result, modality, target, compare)
