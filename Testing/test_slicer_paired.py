"""Seg2Med module, target "CT + MR" (issue 12 item 4): one click synthesises a CT and an MR from one segmentation
(labels converted for the MR model, one body contour), loads both and shows them side by side; Cancel ends the
run; metrics and the round-trip check follow the modality of the chosen result. The real module files run
under the harness on both Slicer framework versions."""

from __future__ import annotations

import shlex
import time

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
from slicerharness import fakes  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401
from test_slicer_gui import add_result_from_labels, alive, errors, fake_totalsegmentator, log_text, make_phantom, open_seg2med, truth_from  # noqa: E402


def choose_pair(ui) -> None:  # noqa: ANN001
    ui.targetModalityComboBox.currentText = "CT + MR"
    assert ui.targetModalityComboBox.currentText == "CT + MR"
    ui.sequenceComboBox.currentText = "t1_gre"  # the tiny MR bundle's sequence
    ui.modelComboBox.currentText = "tiny_ct"
    ui.mrModelComboBox.currentText = "tiny_mr"
    assert (ui.modelComboBox.currentText, ui.mrModelComboBox.currentText) == ("tiny_ct", "tiny_mr")
    ui.deviceComboBox.currentText = "cpu"


def command_line(ui) -> list[str]:  # noqa: ANN001
    lines = [line for line in log_text(ui).splitlines() if line.startswith("$ ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0][2:])


def array(node):  # noqa: ANN001, ANN201
    from Seg2MedLib import nodes

    return sitk.GetArrayFromImage(nodes.volume_node_to_sitk(node))


def test_ct_plus_mr_one_click_loads_both_side_by_side(harness, tiny_bundle, tiny_mr_bundle, monkeypatch) -> None:
    slicer = harness.slicer
    widget, ui = open_seg2med(harness, [tiny_bundle, tiny_mr_bundle])
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=1, region="abdomen")
    assert ui.mrModelComboBox.isHidden() and not ui.sequenceComboBox.enabled  # CT target: no MR half
    choose_pair(ui)
    assert not ui.mrModelComboBox.isHidden() and ui.sequenceComboBox.enabled and ui.label_2_3.text == "CT model:"
    mr_models = [ui.mrModelComboBox.itemText(i) for i in range(ui.mrModelComboBox.count)]
    ct_models = [ui.modelComboBox.itemText(i) for i in range(ui.modelComboBox.count)]
    assert "tiny_mr" in mr_models and "tiny_ct" not in mr_models and "tiny_mr" not in ct_models
    assert not ui.convertLabelsButton.enabled  # CT + MR converts the labels itself
    assert "CT ≈" in ui.estimateLabel.text and "then MR ≈" in ui.estimateLabel.text, ui.estimateLabel.text
    ui.stepsSpinBox.value = 1
    compared = []
    compare = widget.logic.scene_logic.compare
    monkeypatch.setattr(widget.logic.scene_logic, "compare",
                        lambda synthetic, real, modality: compared.append(modality) or compare(synthetic, real, modality))
    ui.synthesizeButton.click()
    assert ui.cancelButton.enabled and not ui.synthesizeButton.enabled
    assert harness.process_events_until(lambda: p.result is not None, timeout_s=300), log_text(ui)
    assert not errors(harness), harness.dialogs
    command = command_line(ui)
    models = [command[i + 1] for i, a in enumerate(command) if a == "--model"]
    assert models == [str(tiny_bundle), str(tiny_mr_bundle)], command
    assert command[command.index("--sequence") + 1] == "t1_gre" and command[command.index("--out") + 1].endswith("/")
    text = log_text(ui)
    assert "labels for MR: total -> total_mr" in text, text  # the label conversion happened in the child
    assert ui.progressBar.format.startswith("MR: "), ui.progressBar.format  # the bar says which half it is in

    ct = p.result
    results = [slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
               for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    by_modality = {n.GetAttribute("Seg2Med.Modality"): n for n in results if n.GetAttribute("Seg2Med.Modality")}
    assert set(by_modality) == {"ct", "mr"} and by_modality["ct"] is ct, [n.GetName() for n in results]
    mr = by_modality["mr"]
    assert "tiny_mr" in mr.GetName() and "t1_gre" in mr.GetName() and "tiny_ct" in ct.GetName()
    # one body contour: the exported segmentation's body, background outside it in both volumes
    from Seg2MedLib import nodes
    from seg2med_core import io
    from seg2med_core.pipeline import body_mask

    seg = io.read_segmentation(command[command.index("--seg") + 1])
    outside = ~body_mask(seg)
    ct_a, mr_a = array(ct), array(mr)
    assert ct_a.shape == mr_a.shape == outside.shape
    assert outside.any() and (ct_a[outside] == -1000).all() and (mr_a[outside] == 0).all()
    assert (ct_a[~outside] > -1000).any() and (mr_a[~outside] != 0).any()
    # both side by side: CT left, MR right, axial and linked
    layout = slicer.app.layoutManager()
    assert layout.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    for view, node in (("Red", ct), ("Yellow", mr)):
        assert layout.sliceWidget(view).mrmlSliceNode().GetOrientation() == "Axial"
        composite = layout.sliceWidget(view).mrmlSliceCompositeNode()
        assert composite.GetLinkedControl() and composite.GetBackgroundVolumeID() == node.GetID()
    assert harness.launcher_children() and not any(alive(c) for _l, c in harness.launcher_children())

    # metrics follow the chosen result's modality: the CT first, then the MR chosen under Result
    for node, shift, modality in ((ct, 25.0, "ct"), (mr, 5.0, "mr")):
        image = sitk.GetImageFromArray(array(node).astype(np.float32) + shift)
        image.CopyInformation(nodes.volume_node_to_sitk(node))
        ui.realImageSelector.setCurrentNode(nodes.add_volume_node(slicer.mrmlScene, image, f"real {modality}"))
        ui.resultSelector.setCurrentNode(node)
        ui.compareButton.click()
        assert compared[-1] == modality and f"({modality.upper()}: {node.GetName()} vs real {modality})" in log_text(ui)
    assert not errors(harness), harness.dialogs


def test_cancel_of_ct_plus_mr_kills_the_launcher_and_its_child(harness, tiny_bundle, tiny_mr_bundle) -> None:
    widget, ui = open_seg2med(harness, [tiny_bundle, tiny_mr_bundle])
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=6, region="abdomen")
    choose_pair(ui)
    ui.stepsSpinBox.value = 1000
    ui.synthesizeButton.click()
    assert harness.process_events_until(lambda: bool(harness.launcher_children()), timeout_s=60)
    launcher, child = harness.launcher_children()[-1]
    assert harness.process_events_until(lambda: ui.progressBar.format.startswith("CT: "), timeout_s=120), log_text(ui)
    ui.cancelButton.click()
    deadline = time.monotonic() + 30
    while widget.controller.busy() and time.monotonic() < deadline:
        harness.qapp.processEvents()
        time.sleep(0.02)
    assert not widget.controller.busy()
    assert harness.process_events_until(lambda: not alive(launcher) and not alive(child), timeout_s=10)
    assert "Cancelled." in log_text(ui) and p.result is None
    assert ui.synthesizeButton.enabled and not errors(harness), harness.dialogs


def test_ct_plus_mr_needs_an_mr_model(harness, tiny_bundle, monkeypatch) -> None:
    widget, ui = open_seg2med(harness, [tiny_bundle])
    make_phantom(ui, seed=2, region="abdomen")
    ui.targetModalityComboBox.currentText = "CT + MR"
    ui.sequenceComboBox.currentText = "t2_space"  # no model of that sequence: switched to one that has one
    assert ui.sequenceComboBox.currentText == "vibe_in" and ui.mrModelComboBox.currentText == "demo_mr"
    assert ui.synthesizeButton.enabled
    from seg2med_core import registry

    every = registry.load_registry
    monkeypatch.setattr(registry, "load_registry", lambda *a: [e for e in every(*a) if e.modality == "ct"])
    ui.targetModalityComboBox.currentText = "MR"
    ui.targetModalityComboBox.currentText = "CT + MR"  # a registry without MR models
    assert ui.modelComboBox.count >= 1 and ui.mrModelComboBox.count == 0 and not ui.synthesizeButton.enabled
    widget.controller.onClicked(widget.controller.onSynthesize)  # what a click would do if it were enabled
    assert errors(harness) == ["no MR (vibe_in) model in the registry for CT + MR: add a bundle folder or choose "
                               "another MR sequence"]
    assert "$ " not in log_text(ui)


@pytest.mark.parametrize("modality, task", [("ct", "total"), ("mr", "total_mr")])
def test_round_trip_after_ct_plus_mr_follows_the_result(harness, tmp_path, modality, task) -> None:
    logic_class = fake_totalsegmentator(harness, "main", tmp_path / "ts")
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=3)
    if modality == "mr":  # the fake TotalSegmentator 'finds' what the result was made from: MR labels here
        ui.targetModalityComboBox.currentText = "MR"
        ui.convertLabelsButton.click()
    logic_class.truth = truth_from(harness, p.segmentation)
    ui.targetModalityComboBox.currentText = "CT + MR"
    assert ui.targetModalityComboBox.currentText == "CT + MR"
    result = add_result_from_labels(harness, p.segmentation)
    result.SetAttribute("Seg2Med.Modality", modality)
    p.result = result
    ui.roundTripButton.click()
    assert not errors(harness), harness.dialogs
    assert logic_class.instances[-1].calls[0]["task"] == task
    assert "Round-trip Dice, worst organs: " in log_text(ui)


def test_a_result_of_unknown_modality_is_refused_for_ct_plus_mr(harness) -> None:
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=4)
    ui.targetModalityComboBox.currentText = "CT + MR"
    assert ui.targetModalityComboBox.currentText == "CT + MR"
    p.result = add_result_from_labels(harness, p.segmentation, name="loaded from disk")
    p.realImage = add_result_from_labels(harness, p.segmentation, name="real")
    ui.compareButton.click()
    assert errors(harness) == ["volume 'loaded from disk' is not a Seg2Med result of known modality: choose the "
                               "target modality (CT or MR) it has"]
    ui.targetModalityComboBox.currentText = "CT"  # then it is taken as a CT
    ui.compareButton.click()
    assert "Metrics: " in log_text(ui) and "(CT: loaded from disk vs real)" in log_text(ui)


def geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def test_ct_plus_mr_from_an_input_volume_keeps_its_exact_grid(harness, tiny_bundle, tiny_mr_bundle,
                                                              synthetic_case) -> None:
    """A real CT with a permuted, flipped direction as the input: both results have its grid exactly and go
    next to it in the subject hierarchy; the CT body contour comes from the image (--image, --image-modality)."""
    slicer = harness.slicer
    widget, ui = open_seg2med(harness, [tiny_bundle, tiny_mr_bundle])
    from Seg2MedLib import nodes  # importable once the module is loaded
    from seg2med_core import io

    p = widget.logic.getParameterNode()
    ct_image = io.read_image(synthetic_case["ct"])
    seg = io.read_segmentation(synthetic_case["seg"])
    volume = nodes.add_volume_node(slicer.mrmlScene, ct_image, "patient CT")
    p.inputVolume = volume
    p.segmentation = nodes.labelmap_to_segmentation_node(slicer.mrmlScene, seg.image, seg.names, name="patient seg")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    sh.SetItemParent(sh.GetItemByDataNode(volume), study)
    choose_pair(ui)
    ui.stepsSpinBox.value = 1
    ui.synthesizeButton.click()
    assert harness.process_events_until(lambda: not widget.controller.busy(), timeout_s=300)
    assert p.result is not None and not errors(harness), (log_text(ui), harness.dialogs)
    command = command_line(ui)
    assert command[command.index("--image-modality") + 1] == "ct" and "--image" in command
    results = [n for n in (slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                           for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
               if n.GetAttribute("Seg2Med.Modality")]
    assert sorted(n.GetAttribute("Seg2Med.Modality") for n in results) == ["ct", "mr"]
    for node in results:
        assert geometry(nodes.volume_node_to_sitk(node)) == geometry(nodes.volume_node_to_sitk(volume))
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study


def test_mr_target_passes_its_sequence_and_marks_the_result(harness, tiny_mr_bundle) -> None:
    widget, ui = open_seg2med(harness, [tiny_mr_bundle])
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=5, region="abdomen")
    ui.targetModalityComboBox.currentText = "MR"
    ui.convertLabelsButton.click()
    ui.sequenceComboBox.currentText = "t1_gre"
    assert ui.modelComboBox.currentText == "tiny_mr"
    ui.stepsSpinBox.value = 1
    ui.deviceComboBox.currentText = "cpu"
    ui.synthesizeButton.click()
    assert harness.process_events_until(lambda: not widget.controller.busy(), timeout_s=300)
    assert p.result is not None and not errors(harness), (log_text(ui), harness.dialogs)
    command = command_line(ui)
    assert command[command.index("--sequence") + 1] == "t1_gre" and command.count("--model") == 1
    assert p.result.GetAttribute("Seg2Med.Modality") == "mr"
    ui.targetModalityComboBox.currentText = "CT"  # the result stays an MR for metrics and the round trip
    assert widget.logic.scene_logic.result_modality(p.result, default="ct") == "mr"
