"""Composite phantoms and procedural phantoms through the module logic, on real MRML scenes (slicer-core).

The body comes from one segmentation node, the organs from others (real TotalSegmentator examples, a
procedural phantom); the result must be a new segmentation node on the body's exact grid with a report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
from slicer_fixtures import ROOT  # noqa: E402,F401  (puts the module folders on sys.path)

from Seg2MedLib import nodes  # noqa: E402
from Seg2MedLib.logic import COMPOSITE_REPORT_ATTRIBUTE, Seg2MedLogic  # noqa: E402
from seg2med_core import io as core_io  # noqa: E402
from seg2med_core.phantom import make_phantom  # noqa: E402
from seg2med_core.preprocess import body_mask_from_segmentation  # noqa: E402

PHANTOM_SPACING = (6.0, 6.0, 6.0)


def _node(scene, seg: core_io.Segmentation, name: str):  # noqa: ANN001, ANN202
    present = {int(i) for i in np.unique(seg.array()) if i}
    return nodes.labelmap_to_segmentation_node(scene, seg.image, {i: seg.names[i] for i in present}, name=name)


def _ids(seg: core_io.Segmentation) -> dict[str, int]:
    return {n: i for i, n in seg.names.items()}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.fixture(scope="module")
def real_segs(examples: Path) -> dict[str, core_io.Segmentation]:
    return {"ct": core_io.read_segmentation(examples / "example_seg_fast.nii.gz"),
            "mr": core_io.read_segmentation(examples / "example_seg_mr.nii.gz")}


def test_composite_of_two_patients_from_real_examples(real_segs: dict[str, core_io.Segmentation]) -> None:
    scene = slicer.vtkMRMLScene()
    logic = Seg2MedLogic(scene)
    ct, mr = real_segs["ct"], real_segs["mr"]
    body_node = _node(scene, ct, "CT patient")
    mr_node = _node(scene, mr, "MR patient")
    assert (logic.guess_label_set(body_node), logic.guess_label_set(mr_node)) == ("total", "total_mr")
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")

    node, report = logic.build_composite(body_node, [(mr_node, ["kidney_right", "stomach"])], keep_skeleton=True)

    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_before + 1
    assert node.GetID() not in (body_node.GetID(), mr_node.GetID())
    composite = logic.segmentation_from_node(node)
    _same_grid(composite.image, ct.image)  # on the body's grid, exactly
    assert composite.label_set == "total"
    out, ref, ids = composite.array(), ct.array(), _ids(composite)
    body = body_mask_from_segmentation(ct)
    for organ in ("kidney_right", "stomach"):  # moved in from the MR patient, clipped to the CT body
        assert (out == ids[organ]).sum() > 50 and not ((out == ids[organ]) & ~body).any()
    assert not (out == ids["liver"]).any()  # the body patient's own organs are dropped
    vertebra = next(n for n in ("vertebrae_L1", "vertebrae_T12", "vertebrae_L2") if (ref == ids[n]).any())
    assert _dice(out == ids[vertebra], ref == ids[vertebra]) > 0.9  # skeleton kept (overlaps may nibble at it)
    assert {o.name for o in report.organs} == {"kidney_right", "stomach"}
    assert report.body_source == "CT patient" and report.alignments[0].source == "MR patient"
    stored = json.loads(node.GetAttribute(COMPOSITE_REPORT_ATTRIBUTE))
    assert {o["name"] for o in stored["organs"]} == {"kidney_right", "stomach"}


def test_composite_with_phantom_donor_and_reference_grid(real_segs: dict[str, core_io.Segmentation]) -> None:
    scene = slicer.vtkMRMLScene()
    logic = Seg2MedLogic(scene)
    ct = real_segs["ct"]
    body_node = _node(scene, ct, "CT patient")
    reference = nodes.add_volume_node(scene, sitk.Cast(ct.image, sitk.sitkFloat32), "CT image")
    phantom_node = logic.phantom_node(seed=3, region="abdomen", spacing_mm=6.0)

    node, report = logic.build_composite(body_node, [(phantom_node, ["liver", "spleen"])], reference=reference,
                                         name="CT body + phantom organs")

    assert node.GetName() == "CT body + phantom organs"
    composite = logic.segmentation_from_node(node, reference)
    _same_grid(composite.image, ct.image)
    ids, out = _ids(composite), composite.array()
    for placement in report.organs:
        assert placement.voxels_final == int((out == ids[placement.name]).sum()) > 0
    assert report.alignments[0].source == phantom_node.GetName()
    assert report.alignments[0].method  # landmarks (shared vertebrae) or the bounding-box fallback


def test_composite_errors_name_the_problem() -> None:
    scene = slicer.vtkMRMLScene()
    logic = Seg2MedLogic(scene)
    body = logic.phantom_node(seed=0, region="abdomen", spacing_mm=8.0)
    donor = logic.phantom_node(seed=1, region="abdomen", spacing_mm=8.0)
    with pytest.raises(ValueError, match="at least one organ source"):
        logic.build_composite(body, [])
    with pytest.raises(ValueError, match="no organ names"):
        logic.build_composite(body, [(donor, [])])
    with pytest.raises(ValueError, match="heart_ventricle_x"):
        logic.build_composite(body, [(donor, ["heart_ventricle_x"])])
    with pytest.raises(ValueError, match="body of the composite"):
        logic.build_composite(None, [(donor, ["liver"])])


def test_phantom_node_has_the_phantoms_exact_geometry_and_labels() -> None:
    scene = slicer.vtkMRMLScene()
    logic = Seg2MedLogic(scene)
    node = logic.phantom_node(seed=7, region="abdomen", sex="female", spacing_mm=PHANTOM_SPACING[0])
    expected = make_phantom(seed=7, sex="female", spacing=PHANTOM_SPACING, region="abdomen")
    assert node.IsA("vtkMRMLSegmentationNode") and "seed 7" in node.GetName()
    seg = logic.segmentation_from_node(node)
    assert seg.label_set == "total"
    _same_grid(seg.image, expected.image)
    assert np.array_equal(seg.array(), expected.array())
    # the slice count used for the estimate comes from the node's reference geometry alone (no export)
    assert logic.axial_slice_count(node) == expected.image.GetSize()[2]
    present = {int(i) for i in np.unique(expected.array()) if i}
    assert node.GetSegmentation().GetNumberOfSegments() == len(present)


def test_axial_slice_count_follows_the_superior_axis() -> None:
    scene = slicer.vtkMRMLScene()
    arr = np.zeros((5, 7, 9), np.float32)  # (z, y, x) sizes 5, 7, 9 → index sizes (9, 7, 5)
    image = sitk.GetImageFromArray(arr)
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0))  # index j runs superior: 7 axial slices
    volume = nodes.add_volume_node(scene, image, "sagittal-ish")
    assert Seg2MedLogic.axial_slice_count(None, volume) == 7
    assert Seg2MedLogic.axial_slice_count(None, None) is None
