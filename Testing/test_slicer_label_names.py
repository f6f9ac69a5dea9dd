"""Slicer module: painted segments whose names are not spelt like class names, and unknown segments (slicer-core)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
from slicer_fixtures import oblique_labels  # noqa: E402

from Seg2MedLib import nodes  # noqa: E402
from Seg2MedLib.logic import Seg2MedLogic  # noqa: E402


def _painted_node(scene, names: dict[int, str]):  # noqa: ANN001, ANN202
    """A segmentation node as painted in Segment Editor: segment names only, no Seg2Med label tags."""
    labels = oblique_labels()
    arr = sitk.GetArrayFromImage(labels)
    arr[0, 0:3, 0:3] = 9  # an extra structure
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(labels)
    node = nodes.labelmap_to_segmentation_node(scene, img, names)
    segmentation = node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segmentation.GetNthSegment(i).RemoveTag(nodes.LABEL_TAG)
    return node, arr


def test_segment_names_are_matched_like_label_tables() -> None:
    scene = slicer.vtkMRMLScene()
    node, arr = _painted_node(scene, {5: "Liver", 1: "Spleen", 3: "Left kidney", 9: "urinary bladder"})
    seg = Seg2MedLogic(scene).segmentation_from_node(node, label_set="total")
    out = seg.array()
    assert set(np.unique(out)) == {0, 1, 3, 5, 21}
    np.testing.assert_array_equal(out == 3, arr == 3)  # kidney_left keeps its voxels


def test_unknown_segments_are_named_or_dropped() -> None:
    scene = slicer.vtkMRMLScene()
    node, arr = _painted_node(scene, {5: "liver", 1: "spleen", 3: "kidney_left", 9: "Tumour"})
    logic = Seg2MedLogic(scene)
    with pytest.raises(ValueError, match=r"no class of label set 'total': Tumour; rename them"):
        logic.segmentation_from_node(node, label_set="total")
    lines: list[str] = []
    seg = logic.segmentation_from_node(node, label_set="total", drop_unknown=True, info=lines.append)
    out = seg.array()
    assert 9 not in np.unique(out) and np.all(out[arr == 9] == 0)
    assert lines == ["segments left out (no class of 'total'): Tumour"]
