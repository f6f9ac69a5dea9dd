"""``seg2med synthesize --model CT --model MR``: both volumes from one segmentation, one body, one preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io
from seg2med_core.phantoms.template import make_template_phantom

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantom_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pair") / "phantom.nii.gz"
    io.write_segmentation(make_template_phantom(0, region="pelvis", spacing=(8.0, 8.0, 8.0)), path)
    return path


def _geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


@pytest.mark.parametrize("out_kind", ["folder", "prefix"])
def test_pair_writes_ct_mr_and_preview(tmp_path: Path, phantom_path: Path, tiny_bundle: Path, tiny_mr_bundle: Path,
                                       capsys: pytest.CaptureFixture[str], out_kind: str) -> None:
    out = str(tmp_path / "res") + "/" if out_kind == "folder" else str(tmp_path / "case1")
    rc = cli.main(["synthesize", "--seg", str(phantom_path), "--model", str(tiny_mr_bundle), "--model", str(tiny_bundle),
                   "--out", out, "--steps", "1", "--device", "cpu", "--progress-format", "none"])
    assert rc == 0, capsys.readouterr().err
    if out_kind == "folder":
        files = [tmp_path / "res" / n for n in ("synthetic_ct.nii.gz", "synthetic_mr.nii.gz", "preview_ct_mr.png")]
    else:
        files = [tmp_path / n for n in ("case1_ct.nii.gz", "case1_mr.nii.gz", "case1_preview.png")]
    assert all(f.exists() for f in files)
    seg = io.read_segmentation(phantom_path)
    ct, mr = (sitk.ReadImage(str(f)) for f in files[:2])
    assert _geometry(ct) == _geometry(mr) == _geometry(seg.image)
    # the same body contour: background outside it in both, and both cover the same voxels
    ct_a, mr_a = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(mr)
    from seg2med_core.pipeline import body_mask

    outside = ~body_mask(seg)
    assert outside.any() and (ct_a[outside] == -1000).all() and (mr_a[outside] == 0).all()
    assert files[2].read_bytes()[:4] == b"\x89PNG"
    assert "labels for MR: total -> total_mr" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--out", "x.nii.gz"], "names one volume"), (["--out", "OUT/", "--metrics", "m.json"], "--metrics is for one --model"),
     (["--out", "nofolder/sub/p"], "does not exist")],
)
def test_pair_bad_inputs(tmp_path: Path, phantom_path: Path, tiny_bundle: Path, tiny_mr_bundle: Path,
                         capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["synthesize", "--seg", str(phantom_path), "--model", str(tiny_bundle), "--model", str(tiny_mr_bundle),
                   "--steps", "1", "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and fragment in err[0], err
    assert not list(tmp_path.iterdir())


def test_two_ct_models_are_refused(tmp_path: Path, phantom_path: Path, tiny_bundle: Path, capsys) -> None:
    rc = cli.main(["synthesize", "--seg", str(phantom_path), "--model", str(tiny_bundle), "--model", str(tiny_bundle),
                   "--out", str(tmp_path / "p"), "--steps", "1", "--device", "cpu"])
    assert rc == 2 and "one CT and one MR model" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
