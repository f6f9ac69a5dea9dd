"""``seg2med demo``: every file with tiny bundles, ``--mr-model none``, and a clear error for missing models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io
from seg2med_core.registry import shipped_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def test_demo_writes_every_file(tmp_path: Path, tiny_bundle: Path, tiny_mr_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--ct-model", str(tiny_bundle), "--mr-model", str(tiny_mr_bundle),
                   "--steps", "2", "--device", "cpu", "--progress-format", "none"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    expected = {"phantom_seg.nii.gz", "prior_ct.nii.gz", "synthetic_ct.nii.gz", "prior_mr.nii.gz", "synthetic_mr.nii.gz",
                "demo.png", "demo_coronal.png", "report.json", "report.md"}  # fmt: skip
    assert {p.name for p in out.iterdir()} == expected
    seg = io.read_segmentation(out / "phantom_seg.nii.gz")
    assert seg.label_set == "total"
    ct = sitk.ReadImage(str(out / "synthetic_ct.nii.gz"))
    mr = sitk.ReadImage(str(out / "synthetic_mr.nii.gz"))
    assert _geometry(ct) == _geometry(seg.image) == _geometry(mr)
    ct_arr = sitk.GetArrayFromImage(ct)
    assert ct_arr.min() == -1000 and ct_arr.max() <= 3071
    # outside the body contour of the phantom both synthetic volumes are background
    from seg2med_core.pipeline import body_mask

    outside = ~body_mask(seg)
    assert outside.any() and (ct_arr[outside] == -1000).all() and (sitk.GetArrayFromImage(mr)[outside] == 0).all()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["ct_model"] == "tiny_ct" and report["mr_model"] == "tiny_mr" and report["mr_sequence"] == "t1_gre"
    assert report["slices_sampled_ct"] == seg.image.GetSize()[2]
    assert set(report["files"].values()) == expected
    assert "rib_left_8" in report["unmapped_mr_labels"]  # total_mr has no individual ribs
    report_md = (out / "report.md").read_text(encoding="utf-8")
    assert "not for clinical use" in report_md
    assert "template phantom" in report_md and "Armato SG III" in report_md and "TotalSegmentator" in report_md
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert "demo finished" in capsys.readouterr().out


def test_demo_without_mr(tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--ct-model", str(tiny_bundle), "--mr-model", "none", "--steps", "1",
                   "--region", "pelvis", "--seed", "3", "--progress-format", "none"])  # fmt: skip
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert "synthetic_ct.nii.gz" in names and not any("mr" in n for n in names)
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["mr_model"] is None


def test_demo_seed_is_reproducible(tmp_path: Path, tiny_bundle: Path) -> None:
    from seg2med_core.demo import run_demo

    a = run_demo(tmp_path / "a", ct_model=tiny_bundle, mr_model=None, steps=1, seed=4, device_name="cpu")
    b = run_demo(tmp_path / "b", ct_model=tiny_bundle, mr_model=None, steps=1, seed=4, device_name="cpu")
    assert a["volume_size"] == b["volume_size"]
    va = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / "synthetic_ct.nii.gz")))
    vb = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / "synthetic_ct.nii.gz")))
    np.testing.assert_array_equal(va, vb)


def test_missing_model_is_one_line_error_and_nothing_written(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--ct-model", str(tiny_bundle), "--mr-model", str(tmp_path / "no_mr")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("seg2med: error: demo MR model") and "no_mr' does not exist" in err[0]
    assert "--mr-model none" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [(["--region", "neck"], "--region must be one of"), (["--kind", "xcat"], "--kind must be one of"),
     (["--kind", "procedural", "--region", "torso"], "needs the template phantom"), (["--seed", "-1"], "--seed")],
)
def test_bad_demo_options_are_one_line_errors_and_nothing_written(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str], argv: list, fragment: str
) -> None:
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--ct-model", str(tiny_bundle), "--mr-model", "none",
                   "--progress-format", "none", *argv])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("seg2med: error:") and fragment in err[0], err
    assert not out.exists()


@pytest.mark.skipif((shipped_data_dir() / "models" / "demo_ct").exists(), reason="shipped demo CT model is installed")
def test_demo_defaults_name_the_missing_shipped_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["demo", "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("seg2med: error: demo CT model 'demo_ct' is not available") and "demo_ct" in err[0]
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (shipped_data_dir() / "models" / "demo_ct").exists(), reason="shipped demo models not installed")
def test_demo_with_shipped_models(tmp_path: Path) -> None:
    rc = cli.main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu", "--progress-format", "none"])
    assert rc == 0
    assert (tmp_path / "demo" / "synthetic_ct.nii.gz").exists() and (tmp_path / "demo" / "demo.png").exists()
