"""Bodies of the Seg2Med self-test (``Seg2MedTest`` in the module file), on generated data."""

from __future__ import annotations

from typing import Any


def roundtrip_and_tables(test: Any, scene: Any) -> None:
    import numpy as np
    import SimpleITK as sitk

    from . import nodes
    from .logic import Seg2MedLogic as SceneLogic

    test.delayDisplay("Generating a two-organ label map")
    labels = np.zeros((8, 20, 24), np.uint16)
    labels[2:6, 4:12, 4:12] = 5  # liver in 'total'
    labels[2:6, 12:18, 14:20] = 1  # spleen
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((-20.0, 10.0, 5.0))
    logic = SceneLogic(scene)
    seg_node = nodes.labelmap_to_segmentation_node(scene, image, {5: "liver", 1: "spleen"})
    seg = logic.segmentation_from_node(seg_node, None, "total")
    test.assertTrue((seg.array() == labels).all())
    test.assertEqual(seg.image.GetOrigin(), image.GetOrigin())
    dice, table = logic.roundtrip_dice(seg_node, seg_node, None)
    test.assertAlmostEqual(dice["liver"], 1.0)
    test.assertEqual(table.GetNumberOfRows(), 2)
    test.delayDisplay("Test passed")

def phantom_composite(test: Any, scene: Any) -> None:
    from .logic import Seg2MedLogic as SceneLogic

    test.delayDisplay("Composite of two procedural phantoms")
    logic = SceneLogic(scene)
    body = logic.phantom_node(seed=0, region="abdomen", spacing_mm=8.0)
    donor = logic.phantom_node(seed=1, region="abdomen", spacing_mm=8.0)
    node, report = logic.build_composite(body, [(donor, ["liver"])])
    test.assertEqual([o.name for o in report.organs], ["liver"])
    test.assertIn("liver", [node.GetSegmentation().GetNthSegment(i).GetName()
                            for i in range(node.GetSegmentation().GetNumberOfSegments())])
    test.delayDisplay("Test passed")
