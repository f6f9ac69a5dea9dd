"""MRML ↔ SimpleITK geometry, segmentation nodes, tables and the scene logic, with slicer-core (no GUI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
from slicer_fixtures import oblique_labels  # noqa: E402

from Seg2MedLib import nodes, tables  # noqa: E402


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def test_ijk_to_ras_maps_voxels_like_sitk(scene) -> None:
    image = oblique_labels()
    node = nodes.add_volume_node(scene, sitk.Cast(image, sitk.sitkFloat32), "v")
    import vtk

    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    for index in [(0, 0, 0), (23, 19, 5), (4, 7, 2)]:
        ras = ijk_to_ras.MultiplyPoint((*index, 1.0))[:3]
        lps = image.TransformIndexToPhysicalPoint(index)
        assert np.allclose(ras, (-lps[0], -lps[1], lps[2]), atol=1e-9)
    assert np.allclose(nodes.ijk_to_ras_from_sitk(image)[:3, :3].ravel(),
                       [ijk_to_ras.GetElement(r, c) for r in range(3) for c in range(3)])


def test_volume_roundtrip_exact(scene) -> None:
    image = sitk.Cast(oblique_labels(), sitk.sitkFloat32) * 3.5 - 7
    back = nodes.volume_node_to_sitk(nodes.add_volume_node(scene, image, "v"))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.allclose(back.GetSpacing(), image.GetSpacing())
    assert np.allclose(back.GetDirection(), image.GetDirection())


def test_empty_volume_node_raises(scene) -> None:
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="empty"):
        nodes.volume_node_to_sitk(node)


@pytest.mark.parametrize("with_reference", [True, False])
def test_segmentation_roundtrip_keeps_ids_names_and_grid(scene, with_reference: bool) -> None:
    labels = oblique_labels()
    names = {5: "liver", 1: "spleen", 3: "kidney_left"}
    seg_node = nodes.labelmap_to_segmentation_node(scene, labels, names)
    assert seg_node.GetSegmentation().GetNumberOfSegments() == 3
    reference = nodes.add_volume_node(scene, sitk.Cast(labels, sitk.sitkFloat32), "ref") if with_reference else None
    back, back_names = nodes.segmentation_node_to_labelmap(scene, seg_node, reference)
    assert back_names == names
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))
    assert np.allclose(back.GetOrigin(), labels.GetOrigin()) and np.allclose(back.GetDirection(), labels.GetDirection())


def test_renamed_segment_uses_label_set_id_and_unknown_name_fails(scene) -> None:
    seg_node = nodes.labelmap_to_segmentation_node(scene, oblique_labels(), {5: "liver", 1: "spleen", 3: "kidney_left"})
    back, _ = nodes.segmentation_node_to_labelmap(scene, seg_node, None, {"liver": 50, "spleen": 1, "kidney_left": 3})
    assert set(np.unique(sitk.GetArrayFromImage(back))) == {0, 1, 3, 50}
    new_id = seg_node.GetSegmentation().AddEmptySegment("", "my tumour")
    assert new_id
    with pytest.raises(ValueError, match="my tumour"):
        nodes.segmentation_node_to_labelmap(scene, seg_node, None, {"liver": 5})


def test_metrics_and_dice_tables(scene) -> None:
    node = tables.metrics_table_node(scene, {"ssim": 0.91, "psnr": 28.5, "mae": 61.0})
    assert [node.GetCellText(r, 0) for r in range(3)] == ["SSIM", "PSNR", "MAE"]
    assert float(node.GetCellText(1, 1)) == pytest.approx(28.5)
    rows = tables.dice_rows({"liver": 0.95, "spleen": 0.4, "aorta": 0.85, "gone": math.nan}, worst_n=1, threshold=0.8)
    assert [r[0] for r in rows] == ["gone", "spleen", "aorta", "liver"]
    assert [r[2] for r in rows] == ["worst", "worst", "", ""]
    dice = tables.dice_table_node(scene, {"liver": 0.95, "spleen": 0.4})
    assert dice.GetNumberOfColumns() == 3 and dice.GetCellText(0, 0) == "spleen"
    with pytest.raises(ValueError):
        tables.metrics_table_node(scene, {})


def test_loss_curve_plot_nodes(scene) -> None:
    curve = tables.LossCurve(scene)
    for step, loss in [(1, 0.9), (2, 0.5), (3, float("inf")), (4, 0.2)]:
        curve.append(step, loss)
    assert curve.points == [(1.0, 0.9), (2.0, 0.5), (4.0, 0.2)]
    assert curve.chart_node.GetPlotSeriesNodeID() == curve.series_node.GetID()
    assert curve.series_node.GetTableNodeID() == curve.table_node.GetID()


def test_logic_segmentation_conversion_and_roundtrip(scene) -> None:
    from Seg2MedLib.logic import Seg2MedLogic

    logic = Seg2MedLogic(scene)
    labels = oblique_labels()
    seg_node = nodes.labelmap_to_segmentation_node(scene, labels, {5: "liver", 1: "spleen", 3: "kidney_left"})
    assert logic.guess_label_set(seg_node) == "total"
    seg = logic.segmentation_from_node(seg_node)
    assert seg.label_set == "total" and np.array_equal(seg.array(), sitk.GetArrayFromImage(labels))
    mr_node, report = logic.convert_segmentation_node(seg_node, None, "total_mr")
    mr = logic.segmentation_from_node(mr_node, None, "total_mr")
    from seg2med_core import labels as core_labels

    mr_ids = {v: k for k, v in core_labels.names_for("total_mr").items()}
    assert mr.array()[sitk.GetArrayFromImage(labels) == 5].tolist() == [mr_ids["liver"]] * int((sitk.GetArrayFromImage(labels) == 5).sum())
    assert "liver" in report.mapped
    with pytest.raises(ValueError, match="already"):
        logic.convert_segmentation_node(seg_node, None, "total")
    # round trip: MR labels of the "synthetic" are converted back before Dice; a shrunken spleen scores lower
    dice, table = logic.roundtrip_dice(seg_node, mr_node, None)
    assert dice["liver"] == pytest.approx(1.0) and dice["spleen"] == pytest.approx(1.0)
    arr = sitk.GetArrayFromImage(labels)
    arr[arr == 1] = 0
    eroded = sitk.GetImageFromArray(arr)
    eroded.CopyInformation(labels)
    worse = nodes.labelmap_to_segmentation_node(scene, eroded, {5: "liver", 3: "kidney_left"})
    dice2, table2 = logic.roundtrip_dice(seg_node, worse, None)
    assert dice2["spleen"] == 0.0 and table2.GetCellText(0, 0) == "spleen" and table2.GetCellText(0, 2) == "worst"


def test_logic_compare_and_load_result(scene, tmp_path) -> None:
    from seg2med_core import io as core_io

    from Seg2MedLib.logic import Seg2MedLogic

    logic = Seg2MedLogic(scene)
    rng = np.random.default_rng(0)
    real_arr = np.full((4, 32, 32), -1000.0, np.float32)
    real_arr[:, 6:26, 6:26] = 40.0 + rng.normal(0, 20, (4, 20, 20))
    real = sitk.GetImageFromArray(real_arr)
    real.SetSpacing((2.0, 2.0, 5.0))
    real_node = nodes.add_volume_node(scene, real, "real CT")
    synth = sitk.GetImageFromArray(real_arr + np.where(real_arr > -500, 25.0, 0.0).astype(np.float32))
    synth.CopyInformation(real)
    path = core_io.write_image(synth, tmp_path / "synthetic.nii.gz")
    synth_node = logic.load_result(path, "synthetic", real_node)
    mask = real_arr > -500
    metrics, table, ssim_node = logic.compare(synth_node, real_node, "ct", mask=mask)
    assert metrics["mae"] == pytest.approx(25.0, abs=1e-3)
    assert table.GetCellText(0, 0) == "SSIM"
    ssim = slicer.util.arrayFromVolume(ssim_node)
    assert ssim.shape == real_arr.shape and np.all(ssim[~mask] == 0) and 0 < ssim[mask].mean() <= 1
    other = sitk.GetImageFromArray(real_arr[:3])
    bad_path = core_io.write_image(other, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError):
        logic.load_result(bad_path, "bad", real_node)


def test_estimate_scales_and_flags_unmeasured_devices() -> None:
    from Seg2MedLib import estimate

    small = estimate.estimate_seconds(100, 20, "cuda", 256)
    assert estimate.estimate_seconds(200, 20, "cuda", 256) - estimate.STARTUP_SECONDS["cuda"] == pytest.approx(
        2 * (small - estimate.STARTUP_SECONDS["cuda"]))
    assert estimate.estimate_seconds(100, 20, "cpu") > small
    assert estimate.seconds_per_slice_step("cuda", 256) == estimate.SECONDS_PER_SLICE_STEP["cuda"][256]
    assert "not measured" in estimate.describe_estimate(10, 10, "mps")
    assert estimate.format_duration(61) == "2 min" and estimate.format_duration(3700) == "1 h 2 min"
    with pytest.raises(ValueError):
        estimate.estimate_seconds(0, 10, "cpu")


def test_estimate_uses_the_bundles_own_timing(tmp_path: Path) -> None:
    import json

    from Seg2MedLib import estimate

    (tmp_path / "metadata.json").write_text(
        json.dumps({"image_size": 128, "metrics": {"seconds_per_slice_step": {"cpu": 0.05}}}), encoding="utf-8"
    )
    timing = estimate.model_timing(tmp_path)
    assert timing == {"cpu": 0.05}
    seconds = estimate.estimate_seconds(40, 20, "cpu", 128, timing)
    assert seconds == pytest.approx(estimate.STARTUP_SECONDS["cpu"] + 0.05 * 40 * 20)
    assert "measured for this model" in estimate.describe_estimate(40, 20, "cpu", 128, timing)
    # a device the bundle was not timed on falls back to the paper-network constants
    assert estimate.estimate_seconds(40, 20, "cuda", 128, timing) == estimate.estimate_seconds(40, 20, "cuda", 128)
    assert estimate.model_timing(tmp_path / "missing") == {}


def test_shipped_demo_models_carry_their_measured_cpu_timing() -> None:
    """The Slicer estimate for the shipped models uses their own measured CPU figure (model card: bench_demo_slice_step.py),
    not the paper network's constant, which overestimated a demo phantom as more than an hour."""
    from Seg2MedLib import estimate

    from seg2med_core.registry import shipped_data_dir

    for name in ("demo_ct", "demo_mr"):
        bundle = shipped_data_dir() / "models" / name
        if not bundle.is_dir():
            pytest.skip("shipped demo models not installed")
        timing = estimate.model_timing(bundle)
        assert 0 < timing.get("cpu", 0) < estimate.seconds_per_slice_step("cpu", estimate.model_image_size(bundle))
        assert "measured for this model" in estimate.describe_estimate(73, 20, "cpu", estimate.model_image_size(bundle), timing)
