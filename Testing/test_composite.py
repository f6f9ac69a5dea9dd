"""Composite phantom (body of one subject, organs of others) and the ``seg2med phantom`` subcommand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import io
from seg2med_core.composite import compose
from seg2med_core.errors import Seg2MedError
from seg2med_core.phantom import make_phantom
from seg2med_core.phantom_cli import add_subcommands, parse_organ_spec
from seg2med_core.preprocess import body_mask_from_segmentation

SP = (5.0, 5.0, 5.0)


def _ids(seg: io.Segmentation) -> dict[str, int]:
    return {n: i for i, n in seg.names.items()}


def _moved_copy(seg: io.Segmentation, shift_mm: tuple[float, float, float], flip_x: bool = True) -> io.Segmentation:
    """Same anatomy stored with the x axis flipped (other direction matrix) and shifted in space."""
    arr = seg.array()
    d = np.array(seg.image.GetDirection()).reshape(3, 3)
    sp = np.array(seg.image.GetSpacing())
    origin = np.array(seg.image.GetOrigin())
    if flip_x:
        origin = origin + d[:, 0] * sp[0] * (arr.shape[2] - 1)
        arr = arr[:, :, ::-1].copy()
        d[:, 0] *= -1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(sp))
    img.SetDirection(tuple(d.ravel()))
    img.SetOrigin(tuple(origin + np.array(shift_mm)))
    return io.Segmentation(img, dict(seg.names), seg.label_set)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_moved_copy_is_realigned_exactly() -> None:
    body = make_phantom(0, region="abdomen", spacing=SP)
    donor = _moved_copy(make_phantom(0, region="abdomen", spacing=SP), (25.0, -15.0, 40.0))
    seg, report = compose(body, [(donor, ["liver", "spleen", "kidney_left"])])
    ids = _ids(body)
    ref, out = body.array(), seg.array()
    for organ in ("liver", "spleen", "kidney_left"):
        assert _dice(ref == ids[organ], out == ids[organ]) > 0.97, organ
    assert report.alignments[0].method.startswith("landmarks")
    assert report.alignments[0].rms_residual_mm < 1.0
    # the body source's other organs are dropped, its skeleton and tissues kept
    assert not (out == ids["stomach"]).any()
    assert np.array_equal(out == ids["vertebrae_L1"], ref == ids["vertebrae_L1"])
    assert (out == ids["subcutaneous_fat"]).sum() == (ref == ids["subcutaneous_fat"]).sum()


def test_organs_from_another_subject_stay_inside_the_body_and_conflicts_are_reported() -> None:
    body = make_phantom(1, sex="female", height_cm=158, region="abdomen", spacing=SP)
    donor = make_phantom(2, sex="male", height_cm=195, region="abdomen-pelvis", spacing=SP)
    seg, report = compose(body, [(donor, ["liver", "spleen", "kidney_left", "kidney_right", "stomach"])], keep_skeleton=True)
    out = seg.array()
    inside = body_mask_from_segmentation(body)
    ids = _ids(seg)
    for placement in report.organs:
        mask = out == ids[placement.name]
        assert mask.any(), placement.name
        assert not (mask & ~inside).any(), placement.name
        assert placement.voxels_final == int(mask.sum())
        assert 0.0 <= placement.fraction_outside_body <= 1.0
        assert placement.voxels_in_conflict == sum(placement.conflicts.values())
    # the taller donor's organs collide with the smaller body's bones: conflicts are counted, bones win
    assert sum(p.voxels_in_conflict for p in report.organs) > 0
    assert np.array_equal(out == ids["vertebrae_L2"], body.array() == ids["vertebrae_L2"])
    # left/right kept in patient space
    c = {n: np.argwhere(out == ids[n])[:, 2].mean() for n in ("kidney_left", "kidney_right")}
    assert c["kidney_left"] > c["kidney_right"]  # phantom x index grows toward patient left


def test_no_skeleton_and_bad_requests() -> None:
    body = make_phantom(3, region="abdomen", spacing=SP)
    donor = make_phantom(4, region="abdomen", spacing=SP)
    seg, _ = compose(body, [(donor, ["liver"])], keep_skeleton=False)
    assert not (seg.array() == _ids(body)["vertebrae_L1"]).any()
    with pytest.raises(Seg2MedError, match="prostate"):
        compose(body, [(make_phantom(4, sex="female", region="abdomen", spacing=SP), ["prostate"])])
    with pytest.raises(Seg2MedError, match="requested twice"):
        compose(body, [(donor, ["liver"]), (donor, ["liver"])])
    with pytest.raises(Seg2MedError, match="at least one"):
        compose(body, [])


def test_report_prints_and_saves_json(tmp_path: Path) -> None:
    body = make_phantom(5, region="abdomen", spacing=SP)
    _, report = compose(body, [(make_phantom(6, region="abdomen", spacing=SP), ["spleen", "pancreas"])])
    text = str(report)
    assert "spleen" in text and "pancreas" in text and "landmarks" in text
    doc = json.loads(report.save_json(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {o["name"] for o in doc["organs"]} == {"spleen", "pancreas"}
    assert doc["alignments"][0]["landmarks"]


@pytest.mark.data
def test_real_examples_ct_body_with_mr_and_shifted_ct_organs(examples: Path) -> None:
    ct = io.read_segmentation(examples / "example_seg_fast_force_split.nii.gz")
    mr = io.read_segmentation(examples / "example_seg_mr.nii.gz")
    assert (ct.label_set, mr.label_set) == ("total", "total_mr")
    shifted = _moved_copy(ct, (12.0, 20.0, -18.0))
    seg, report = compose(ct, [(shifted, ["liver", "kidney_left"]), (mr, ["kidney_right", "stomach"])], source_names=["ct-shifted", "mr"])
    ids = _ids(seg)
    out, ref = seg.array(), ct.array()
    body = body_mask_from_segmentation(ct)
    for organ in ("liver", "kidney_left"):  # the shifted/flipped CT copy lands back on itself
        assert _dice(out == ids[organ], ref == ids[organ]) > 0.97
    for placement in report.organs:
        assert not ((out == ids[placement.name]) & ~body).any()
    mr_alignment = report.alignments[1]
    assert "common structure" in mr_alignment.method or "bounding box" in mr_alignment.method
    assert {o.name for o in report.organs} == {"liver", "kidney_left", "kidney_right", "stomach"}


# --------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg2med")
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_phantom_with_names(tmp_path: Path) -> None:
    out = tmp_path / "ph.nii.gz"
    args = _parser().parse_args(
        ["phantom", "--kind", "procedural", "--out", str(out), "--seed", "3", "--sex", "female", "--height", "160",
         "--spacing", "6", "6", "6", "--region", "pelvis", "--progress-format", "none"]
    )
    assert args.func(args) == 0
    seg = io.read_segmentation(out)
    assert seg.label_set == "total"
    assert np.array_equal(seg.array(), make_phantom(3, sex="female", height_cm=160, spacing=(6, 6, 6), region="pelvis").array())
    assert io.nifti_label_names(out)[_ids(seg)["urinary_bladder"]] == "urinary_bladder"
    assert not list(tmp_path.glob("*.tmp*"))


def test_cli_compose_with_report(tmp_path: Path) -> None:
    body, donor = tmp_path / "body.nii.gz", tmp_path / "donor.nii.gz"
    io.write_segmentation(make_phantom(0, region="abdomen", spacing=SP), body)
    io.write_segmentation(make_phantom(1, region="abdomen", spacing=SP), donor)
    out, rep = tmp_path / "comp.nii.gz", tmp_path / "rep.json"
    args = _parser().parse_args(
        ["phantom", "--compose", "--body", str(body), "--organs", f"{donor}:liver,spleen", "--report", str(rep),
         "--out", str(out), "--progress-format", "none"]
    )
    assert args.func(args) == 0
    seg = io.read_segmentation(out)
    assert (seg.array() == _ids(seg)["liver"]).any()
    assert {o["name"] for o in json.loads(rep.read_text(encoding="utf-8"))["organs"]} == {"liver", "spleen"}


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--compose", "--organs", "x.nii.gz:liver"], "--body"),
        (["--compose", "--body", "b.nii.gz"], "--organs"),
        (["--body", "b.nii.gz"], "need --compose"),
        (["--height", "99"], "height"),
    ],
)
def test_cli_bad_inputs(tmp_path: Path, argv: list[str], fragment: str) -> None:
    args = _parser().parse_args(["phantom", "--out", str(tmp_path / "o.nii.gz"), "--progress-format", "none", *argv])
    with pytest.raises(Seg2MedError, match=fragment):
        args.func(args)
    assert not (tmp_path / "o.nii.gz").exists()


def test_parse_organ_spec() -> None:
    assert parse_organ_spec("C:/data/s.nii.gz:liver, spleen") == ("C:/data/s.nii.gz", ["liver", "spleen"])
    with pytest.raises(Seg2MedError, match="SEG:organ"):
        parse_organ_spec("liver")
