"""The real Seg2Med module (Seg2Med.py + Seg2Med.ui) clicked through as a user would, under the harness
(PyQt5 offscreen standing in for PythonQt, slicer-core MRML, Slicer's own framework files of v5.8.1 and
v5.12.3). Skipped with a reason when ../shared/slicer-python or PyQt5 is absent."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
from slicerharness import fakes  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401


def open_seg2med(harness, bundles=()):  # noqa: ANN001, ANN201
    from seg2med_core import registry

    for bundle in bundles:
        registry.register_bundle(bundle)
    module = harness.load_module("Seg2Med")
    widget = module.enter()
    return widget, widget.ui


def log_text(ui) -> str:  # noqa: ANN001
    return ui.logTextEdit.plainText


def errors(harness) -> list[str]:  # noqa: ANN001
    return [d["text"] for d in harness.dialogs if d["standardButtons"] == int(harness.qt.QMessageBox.Ok)]


def make_phantom(ui, seed: int = 0, region: str = "abdomen") -> None:  # noqa: ANN001
    ui.phantomSeedSpinBox.value = seed
    ui.phantomRegionComboBox.currentText = region
    ui.phantomButton.click()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_spin_box_ranges_come_from_the_parameter_node(harness) -> None:
    _w, ui = open_seg2med(harness)
    assert (ui.stepsSpinBox.minimum, ui.stepsSpinBox.maximum) == (1, 1000)
    assert ui.seedSpinBox.minimum == 0 and ui.phantomSeedSpinBox.minimum == 0
    training = harness.load_module("Seg2MedTraining").enter().ui
    assert training.stepsSpinBox.minimum == 1
    assert (training.batchSizeSpinBox.minimum, training.batchSizeSpinBox.maximum) == (1, 512)
    assert (training.imageSizeSpinBox.minimum, training.imageSizeSpinBox.maximum) == (16, 1024)
    ui.stepsSpinBox.value = -5  # what a user can type is clamped by the range
    assert ui.stepsSpinBox.value == 1


def test_volume_selectors_do_not_list_label_maps(harness) -> None:
    slicer = harness.slicer
    _w, ui = open_seg2med(harness)
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    for selector in (ui.inputVolumeSelector, ui.realImageSelector, ui.resultSelector):
        assert "CT" in selector.listedNames() and "labels" not in selector.listedNames()


def test_phantom_compose_synthesize_compare(harness, tiny_bundle) -> None:
    slicer = harness.slicer
    widget, ui = open_seg2med(harness, [tiny_bundle])
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=1)
    body = p.segmentation
    assert body is not None and body.GetSegmentation().GetNumberOfSegments() > 10
    assert not body.GetSegmentation().ContainsRepresentation("Closed surface")  # 3D is opt-in
    make_phantom(ui, seed=2)
    donor = p.segmentation
    ui.segmentationSelector.setCurrentNode(body)
    ui.organSourceSelector.setCurrentNode(donor)
    ui.organNamesLineEdit.text = "liver, spleen"
    ui.addOrganSourceButton.click()
    assert ui.organSourcesListWidget.count == 1
    ui.composeButton.click()
    composite = p.segmentation
    assert composite not in (body, donor) and "Composite" in composite.GetName()
    # the result goes next to its input in the subject hierarchy
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    sh.SetItemParent(sh.GetItemByDataNode(composite), study)

    ui.modelComboBox.currentText = "tiny_ct"
    assert ui.modelComboBox.currentText == "tiny_ct"
    ui.stepsSpinBox.value = 2
    ui.deviceComboBox.currentText = "cpu"
    ui.synthesizeButton.click()
    assert ui.cancelButton.enabled and not ui.synthesizeButton.enabled
    assert harness.process_events_until(lambda: p.result is not None, timeout_s=240), log_text(ui)
    result = p.result
    assert sh.GetItemParent(sh.GetItemByDataNode(result)) == study
    layout = slicer.app.layoutManager()
    assert layout.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    for view in ("Red", "Yellow"):
        assert layout.sliceWidget(view).mrmlSliceNode().GetOrientation() == "Axial"
        assert layout.sliceWidget(view).mrmlSliceCompositeNode().GetLinkedControl()
    assert layout.sliceWidget("Yellow").mrmlSliceCompositeNode().GetBackgroundVolumeID() == result.GetID()
    # the launcher → python-real pair really ran, and both are gone
    assert harness.launcher_children() and not any(alive(c) for _l, c in harness.launcher_children())

    from Seg2MedLib import nodes

    real = sitk.GetArrayFromImage(nodes.volume_node_to_sitk(result)).astype(np.float32) + 25.0
    image = sitk.GetImageFromArray(real)
    image.CopyInformation(nodes.volume_node_to_sitk(result))
    real_node = nodes.add_volume_node(slicer.mrmlScene, image, "real CT")
    ui.realImageSelector.setCurrentNode(real_node)
    assert ui.compareButton.enabled
    ui.compareButton.click()
    assert "Metrics: " in log_text(ui) and "mae=" in log_text(ui).lower(), log_text(ui)
    assert not errors(harness), harness.dialogs


def fake_totalsegmentator(harness, branch: str, folder):  # noqa: ANN001, ANN201
    """The fake SlicerTotalSegmentator of ``branch`` (its real ``process`` signature) installed in the harness;
    the test is skipped when that branch's reference copy is absent."""
    if fakes.real_process_arguments(branch) is None:
        pytest.skip(f"SlicerTotalSegmentator {branch} reference not found under {fakes.REFERENCE}")
    return fakes.install_fake_totalsegmentator(harness, branch, folder)


def add_result_from_labels(harness, seg_node, name="synthetic"):  # noqa: ANN001, ANN201
    """A volume on the segmentation's grid standing in for a synthesis result (intensity = label id)."""
    from Seg2MedLib import nodes

    labels, _names = nodes.segmentation_node_to_labelmap(harness.scene, seg_node)
    return nodes.add_volume_node(harness.scene, sitk.Cast(labels, sitk.sitkFloat32), name)


def truth_from(harness, seg_node):  # noqa: ANN001, ANN201
    """What the fake TotalSegmentator 'finds': the segmentation the result was made from."""
    from Seg2MedLib import nodes
    from seg2med_core.labels import names_for

    def truth(volume, task):  # noqa: ANN001, ANN202
        label_set = "total" if task == "total" else "total_mr"
        labels, names = nodes.segmentation_node_to_labelmap(harness.scene, seg_node, volume)
        if task == "tissue_types_mr":
            return sitk.Cast(labels > 0, sitk.sitkUInt16) * 0 + 0, {}
        return labels, {k: v for k, v in names_for(label_set).items() if k in names}

    return truth


@pytest.mark.parametrize("branch", ["5.8", "main"])
def test_roundtrip_with_the_totalsegmentator_extension(harness, tmp_path, branch) -> None:
    logic_class = fake_totalsegmentator(harness, branch, tmp_path / "ts")
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=3)
    logic_class.truth = truth_from(harness, p.segmentation)
    p.result = add_result_from_labels(harness, p.segmentation)
    ui.fastCheckBox.checked = True
    assert ui.roundTripButton.enabled
    ui.roundTripButton.click()
    assert not errors(harness), harness.dialogs
    call = logic_class.instances[-1].calls[-1]
    if branch == "main":
        assert call["quality"] == "fast" and call["task"] == "total"
    else:
        assert call["fast"] is True and call["task"] == "total"
    text = log_text(ui)
    assert "Predicting part 10 of 10" in text  # the extension's log reaches the module's log
    assert "Round-trip Dice, worst organs: " in text and " 1.00" in text, text


def test_mr_segmentation_goes_on_without_the_tissue_licence(harness, tmp_path) -> None:
    logic_class = fake_totalsegmentator(harness, "main", tmp_path / "ts")
    logic_class.unlicensed_tasks = {"tissue_types_mr"}
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=4)
    ui.targetModalityComboBox.currentText = "MR"
    ui.convertLabelsButton.click()
    mr_labels = p.segmentation
    assert "total_mr" in mr_labels.GetName()
    logic_class.truth = truth_from(harness, mr_labels)
    p.result = add_result_from_labels(harness, mr_labels)
    ui.roundTripButton.click()
    text = log_text(ui)
    assert not errors(harness), harness.dialogs
    assert [c["task"] for c in logic_class.instances[-1].calls] == ["total_mr", "tissue_types_mr"]
    assert "continuing with the organs only" in text and "Round-trip Dice, worst organs: " in text, text


def test_cancel_stops_the_totalsegmentator_extension(harness, tmp_path) -> None:
    logic_class = fake_totalsegmentator(harness, "main", tmp_path / "ts")
    logic_class.seconds = 60.0
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=5)
    logic_class.truth = truth_from(harness, p.segmentation)
    p.result = add_result_from_labels(harness, p.segmentation)
    pressed = {}

    def press_cancel() -> None:
        pressed["enabled"] = ui.cancelButton.enabled
        ui.cancelButton.click()

    harness.qt.QTimer.singleShot(1500, press_cancel)
    start = time.monotonic()
    ui.roundTripButton.click()  # blocks like the real extension, but the log callback keeps events flowing
    assert time.monotonic() - start < 20
    assert pressed["enabled"], "Cancel was not enabled while the extension segmented"
    assert "Cancelled." in log_text(ui) and "Round-trip Dice" not in log_text(ui)
    assert not errors(harness), harness.dialogs


def test_cancel_during_synthesis_kills_the_launcher_and_its_child(harness, tiny_bundle) -> None:
    widget, ui = open_seg2med(harness, [tiny_bundle])
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=6, region="abdomen-pelvis")
    ui.modelComboBox.currentText = "tiny_ct"
    ui.stepsSpinBox.value = 1000
    ui.deviceComboBox.currentText = "cpu"
    ui.synthesizeButton.click()
    assert harness.process_events_until(lambda: bool(harness.launcher_children()), timeout_s=60)
    launcher, child = harness.launcher_children()[-1]
    assert alive(launcher) and alive(child)
    ui.cancelButton.click()
    slowest = 0.0
    deadline = time.monotonic() + 30
    while widget.controller.busy() and time.monotonic() < deadline:
        t0 = time.monotonic()
        harness.qapp.processEvents()  # the QTimer polls the runner here
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.02)
    assert not widget.controller.busy()
    assert harness.process_events_until(lambda: not alive(launcher) and not alive(child), timeout_s=10), \
        f"still running: launcher {alive(launcher)}, python-real child {alive(child)}"
    assert slowest < 1.0, f"the GUI thread was blocked for {slowest:.1f} s while cancelling"
    assert "Cancelled." in log_text(ui) and p.result is None


def test_double_click_on_synthesize_starts_one_run(harness, tiny_bundle) -> None:
    widget, ui = open_seg2med(harness, [tiny_bundle])
    make_phantom(ui, seed=7)
    ui.modelComboBox.currentText = "tiny_ct"
    ui.stepsSpinBox.value = 1000
    ui.deviceComboBox.currentText = "cpu"
    # the second click of a double click is delivered while the first one's handler processes events
    harness.qt.QTimer.singleShot(0, ui.synthesizeButton.click)
    ui.synthesizeButton.click()
    harness.process_events_until(lambda: False, timeout_s=0.5)
    assert widget.controller.busy()
    assert not errors(harness), harness.dialogs
    assert log_text(ui).count("$ ") == 1
    ui.cancelButton.click()
    assert harness.process_events_until(lambda: not widget.controller.busy(), timeout_s=30)


def test_mr_target_selects_a_sequence_that_has_a_model(harness) -> None:
    _w, ui = open_seg2med(harness)
    ui.targetModalityComboBox.currentText = "MR"
    assert ui.modelComboBox.count >= 1 and ui.sequenceComboBox.currentText == "vibe_in"


def test_scene_close_clears_the_organ_sources(harness) -> None:
    widget, ui = open_seg2med(harness)
    make_phantom(ui, seed=8)
    ui.organSourceSelector.setCurrentNode(widget.logic.getParameterNode().segmentation)
    ui.organNamesLineEdit.text = "liver"
    ui.addOrganSourceButton.click()
    assert ui.organSourcesListWidget.count == 1
    harness.scene.Clear(0)
    assert ui.organSourcesListWidget.count == 0 and widget.controller.organSources == []
    p = widget.logic.getParameterNode()
    ui.stepsSpinBox.value = 7  # the GUI is bound to the new scene's parameter node
    assert p.steps == 7


def test_self_test_runs_under_the_harness(harness) -> None:
    module = harness.load_module("Seg2Med")
    harness.slicer.selfTests["Seg2Med"](msec=0)
    training = harness.load_module("Seg2MedTraining")
    harness.slicer.selfTests["Seg2MedTraining"](msec=0)
    assert module.instance and training.instance


def test_reload_reloads_the_lib_package(harness, monkeypatch) -> None:
    widget, _ui = open_seg2med(harness)
    import sys

    before = sys.modules["Seg2MedLib.widget"]
    reloaded = []
    monkeypatch.setattr(harness.slicer.util, "reloadScriptedModule", lambda name: reloaded.append(name))
    widget.onReload()
    assert reloaded == ["Seg2Med"] and "Seg2MedLib.widget" not in sys.modules
    import Seg2MedLib.widget  # noqa: F401

    assert sys.modules["Seg2MedLib.widget"] is not before
