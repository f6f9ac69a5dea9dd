"""The real Seg2MedTraining module under the harness: Start, Stop (the trainer and the launcher's child are
gone before Stop returns), Resume (one trainer at a time, with --resume), and scene close."""

from __future__ import annotations

import time

import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
from slicer_fixtures import oblique_labels  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401
from test_slicer_gui import alive  # noqa: E402


def add_pair(harness, widget):  # noqa: ANN001, ANN201
    from Seg2MedLib import nodes

    labels = oblique_labels((8, 24, 24))
    volume = nodes.add_volume_node(harness.scene, sitk.Cast(labels, sitk.sitkFloat32) * 10 - 1000, "ct")
    seg = nodes.labelmap_to_segmentation_node(harness.scene, labels, {5: "liver", 1: "spleen", 3: "kidney_left"})
    widget.ui.pairVolumeSelector.setCurrentNode(volume)
    widget.ui.pairSegmentationSelector.setCurrentNode(seg)
    widget.ui.addPairButton.click()
    return volume, seg


def test_stop_kills_the_trainer_and_resume_starts_one(harness, tmp_path) -> None:
    widget = harness.load_module("Seg2MedTraining").enter()
    ui = widget.ui
    add_pair(harness, widget)
    assert ui.pairsListWidget.count == 1
    ui.outputFolderLineEdit.currentPath = str(tmp_path / "run")
    ui.stepsSpinBox.value = 100000
    ui.batchSizeSpinBox.value = 1
    ui.imageSizeSpinBox.value = 16
    ui.deviceComboBox.currentText = "cpu"
    ui.startButton.click()
    training = widget.logic.training
    assert training.runner is not None and training.runner.running, harness.dialogs
    assert harness.process_events_until(lambda: bool(harness.launcher_children()), timeout_s=60)
    launcher, child = harness.launcher_children()[-1]
    ui.stopButton.click()
    assert not training.runner.running
    assert not alive(launcher) and not alive(child), "Stop left the trainer running"
    ui.resumeButton.click()
    assert training.runner.running and "--resume" in training.runner.command
    assert harness.process_events_until(lambda: len(harness.launcher_children()) == 2, timeout_s=60)
    launcher2, child2 = harness.launcher_children()[-1]
    assert alive(child2) and not alive(child)  # never two trainers on one run folder
    t0 = time.monotonic()
    ui.stopButton.click()
    assert time.monotonic() - t0 < 30 and not alive(launcher2) and not alive(child2)


def test_scene_close_resets_the_training_panel(harness) -> None:
    widget = harness.load_module("Seg2MedTraining").enter()
    add_pair(harness, widget)
    assert widget.ui.pairsListWidget.count == 1 and widget.pairs
    harness.scene.Clear(0)
    assert widget.ui.pairsListWidget.count == 0 and widget.pairs == []
    widget.ui.batchSizeSpinBox.value = 3  # bound to the new scene's parameter node
    assert widget.logic.getParameterNode().batchSize == 3
