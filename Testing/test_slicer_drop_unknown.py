"""Seg2Med module, segments whose names are no class of the label set (issue 11 item 2, Slicer part), through
the widget: by default Synthesize / Convert labels stop with one error naming the segments and the label set;
the check box "Drop segments that are not classes of the label set" (parameter ``dropUnknownSegments``, bound
with connectGui) lets them go on without those segments and reports which were dropped."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
from slicer_fixtures import oblique_labels  # noqa: E402
from slicerharness import fakes  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401
from test_slicer_gui import add_result_from_labels, errors, fake_totalsegmentator, log_text, make_phantom, open_seg2med  # noqa: E402

ERROR = ("segmentation 'painted' has segments whose names are no class of label set 'total': Tumour, scar; rename "
         "them to class names (e.g. 'liver') or drop them (tick 'Drop segments that are not classes of the label "
         "set' to go on without them)")


def painted_node(harness):  # noqa: ANN001, ANN201
    """A segmentation as painted in Segment Editor: names only (no Seg2Med label tags), two of them no class."""
    from Seg2MedLib import nodes

    arr = np.zeros((4, 40, 40), np.uint16)  # big enough in the tiny model's 12 mm pixels
    arr[:, 4:24, 4:24] = 5
    arr[:, 24:36, 20:36] = 1
    arr[1:3, 6:12, 26:34] = 3
    arr[0, 30:34, 4:8] = 9
    arr[3, 10:14, 30:34] = 11
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((6.0, 6.0, 6.0))
    image.SetOrigin((-120.0, 40.0, 10.0))
    image.SetDirection(oblique_labels().GetDirection())
    node = nodes.labelmap_to_segmentation_node(harness.scene, image, {5: "Liver", 1: "spleen", 3: "Left kidney",
                                                                     9: "Tumour", 11: "scar"}, name="painted")
    segmentation = node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segmentation.GetNthSegment(i).RemoveTag(nodes.LABEL_TAG)
    return node, arr


def status(harness) -> str:  # noqa: ANN001
    return harness.app.mainWindow().statusBar().currentMessage()


def test_check_box_is_bound_to_the_parameter_node(harness) -> None:
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    assert ui.dropUnknownCheckBox.text == "Drop segments that are not classes of the label set"
    assert not ui.dropUnknownCheckBox.checked and p.dropUnknownSegments is False
    ui.dropUnknownCheckBox.checked = True
    assert p.dropUnknownSegments is True
    p.dropUnknownSegments = False
    assert not ui.dropUnknownCheckBox.checked


def test_synthesis_names_unknown_segments_or_goes_on_without_them(harness, tiny_bundle) -> None:
    widget, ui = open_seg2med(harness, [tiny_bundle])
    p = widget.logic.getParameterNode()
    node, arr = painted_node(harness)
    p.segmentation = node
    ui.modelComboBox.currentText = "tiny_ct"
    ui.stepsSpinBox.value = 1
    ui.deviceComboBox.currentText = "cpu"
    ui.synthesizeButton.click()
    assert errors(harness) == [ERROR]
    assert "$ " not in log_text(ui) and not widget.controller.busy() and p.result is None

    harness.dialogs.clear()
    ui.dropUnknownCheckBox.checked = True
    ui.synthesizeButton.click()
    assert "Note: segments left out (no class of 'total'): Tumour, scar" in log_text(ui), log_text(ui)
    assert status(harness) == "Seg2Med: segments left out (no class of 'total'): Tumour, scar"
    command = shlex.split(next(line for line in log_text(ui).splitlines() if line.startswith("$ "))[2:])
    from seg2med_core import io

    exported = io.read_segmentation(command[command.index("--seg") + 1]).array()
    assert exported.shape == arr.shape
    assert (exported[(arr == 9) | (arr == 11)] == 0).all()  # the dropped segments' voxels are background
    np.testing.assert_array_equal(exported == 5, arr == 5)  # "Liver" is liver (id 5 of 'total')
    np.testing.assert_array_equal(exported == 3, arr == 3)  # "Left kidney" is kidney_left
    assert harness.process_events_until(lambda: not widget.controller.busy(), timeout_s=240)
    assert p.result is not None, log_text(ui)
    assert not errors(harness), harness.dialogs


def test_label_conversion_names_unknown_segments_or_goes_on_without_them(harness) -> None:
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    node, _arr = painted_node(harness)
    p.segmentation = node
    ui.targetModalityComboBox.currentText = "MR"
    ui.convertLabelsButton.click()
    assert errors(harness) == [ERROR] and p.segmentation is node
    harness.dialogs.clear()
    p.dropUnknownSegments = True  # the parameter node, not the widget, holds the state
    ui.convertLabelsButton.click()
    assert not errors(harness), harness.dialogs
    converted = p.segmentation
    assert converted is not node and "total_mr" in converted.GetName()
    names = {converted.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(converted.GetSegmentation().GetNumberOfSegments())}
    assert {"liver", "spleen", "kidney_left"} <= names and not names & {"Tumour", "scar"}
    assert "Note: segments left out (no class of 'total'): Tumour, scar" in log_text(ui)


def test_compose_names_unknown_segments_or_goes_on_without_them(harness) -> None:
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=2, region="abdomen")
    donor = p.segmentation
    node, _arr = painted_node(harness)
    p.segmentation = node
    p.organSource = donor
    ui.organNamesLineEdit.text = "spleen"
    ui.composeButton.click()
    assert errors(harness) == [ERROR] and p.segmentation is node
    harness.dialogs.clear()
    ui.dropUnknownCheckBox.checked = True
    ui.composeButton.click()
    assert not errors(harness), harness.dialogs
    assert p.segmentation is not node and "Composite" in p.segmentation.GetName()
    assert "Note: segments left out (no class of 'total'): Tumour, scar" in log_text(ui)


def test_round_trip_names_unknown_segments_before_segmenting(harness, tmp_path) -> None:
    logic_class = fake_totalsegmentator(harness, "main", tmp_path / "ts")
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    make_phantom(ui, seed=3)
    phantom = p.segmentation
    p.result = add_result_from_labels(harness, phantom)
    p.result.SetAttribute("Seg2Med.Modality", "ct")
    from Seg2MedLib import nodes
    from seg2med_core.labels import names_for

    labels, names = nodes.segmentation_node_to_labelmap(harness.scene, phantom, p.result)  # before the Tumour
    logic_class.truth = lambda _volume, _task: (labels, {k: v for k, v in names_for("total").items() if k in names})
    phantom.GetSegmentation().AddEmptySegment("tumour", "Tumour")  # painted on top of the phantom, no class
    ui.roundTripButton.click()
    assert errors(harness) == [ERROR.replace("'painted'", f"'{phantom.GetName()}'").replace("Tumour, scar; rename them",
                                                                                          "Tumour; rename them")]
    assert not logic_class.instances or not logic_class.instances[-1].calls  # TotalSegmentator did not run
    harness.dialogs.clear()
    ui.dropUnknownCheckBox.checked = True
    ui.roundTripButton.click()
    assert not errors(harness), harness.dialogs
    assert "Note: segments left out (no class of 'total'): Tumour" in log_text(ui)
    assert "Round-trip Dice, worst organs: " in log_text(ui) and " 1.00" in log_text(ui), log_text(ui)
