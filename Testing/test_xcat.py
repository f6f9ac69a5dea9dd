"""XCAT import: small XCAT-format raw volumes and parameter files generated here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for
from seg2med_core.phantoms.xcat import load_mapping, read_xcat

IDS = {n: i for i, n in names_for("total").items()}
N, NZ = 16, 6
PAR = """# XCAT-style parameter file
mode = 0                # program mode
pixel_width = 0.3       # pixel width (cm)
slice_width = 0.5       # slice width (cm)
array_size = 16         # array size
subvoxel_index = 1
startslice = 101        # start_slice
endslice = 106          # end_slice
body_activity = 1       # body_activity (background)
liver_activity = 3
spleen_activity = 7
rib_activity = 9
sinus_activity = 11
pancreas_activity = 13
"""


def _volume() -> np.ndarray:
    vol = np.zeros((NZ, N, N), np.float32)
    vol[:, 2:14, 2:14] = 1
    vol[1:5, 4:9, 3:7] = 3  # liver: low columns = patient right
    vol[1:4, 5:8, 10:13] = 7  # spleen: patient left
    vol[2:4, 11:13, 2:14] = 9  # a rib band across the midline
    vol[3, 3, 3] = 11  # sinus: no total class
    return vol


@pytest.fixture()
def xcat(tmp_path: Path) -> tuple[Path, Path]:
    raw, par = tmp_path / "phantom_act_1.bin", tmp_path / "phantom.par"
    _volume().astype("<f4").tofile(raw)
    par.write_text(PAR, encoding="utf-8")
    return raw, par


def test_import_maps_organs_and_geometry(xcat) -> None:
    raw, par = xcat
    seg, report = read_xcat(raw, par)
    arr = seg.array()
    assert seg.label_set == "total" and arr.shape == (NZ, N, N)
    assert seg.image.GetSpacing() == (3.0, 3.0, 5.0)
    assert seg.image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    # first slice is XCAT slice 101 at z = -(101 - 1) * 5 mm; column/row centre at x = y = 0
    assert np.allclose(seg.image.TransformContinuousIndexToPhysicalPoint(((N - 1) / 2, (N - 1) / 2, 0)), (0, 0, -500.0))
    vol = _volume()
    assert (arr[vol == 3] == IDS["liver"]).all() and (arr[vol == 7] == IDS["spleen"]).all()
    assert (arr[vol == 1] == IDS["torso_fat"]).all()
    assert arr[3, 3, 3] == 0 and report.unmapped == ["sinus_activity"] and report.unmapped_voxels == 1
    assert report.absent == ["pancreas_activity"]
    # the rib is split at the midline into the left and right class (patient left = larger x)
    rib = vol == 9
    left = seg.image.TransformIndexToPhysicalPoint((13, 11, 2))[0] > 0
    assert left and arr[2, 11, 13] == IDS["rib_left_7"] and arr[2, 11, 2] == IDS["rib_right_7"]
    assert set(np.unique(arr[rib]).tolist()) == {IDS["rib_left_7"], IDS["rib_right_7"]}
    c_liver = np.argwhere(arr == IDS["liver"]).mean(0)[::-1]
    c_spleen = np.argwhere(arr == IDS["spleen"]).mean(0)[::-1]
    x = [seg.image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c))[0] for c in (c_liver, c_spleen)]
    assert x[0] < 0 < x[1]


def test_edited_mapping_and_orientation(xcat, tmp_path: Path) -> None:
    raw, par = xcat
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"organs": {"liver_activity": "kidney_right", "body_activity": "skeletal_muscle"}}), encoding="utf-8")
    seg, report = read_xcat(raw, par, mapping, orientation="RAS")
    arr = seg.array()
    assert (arr[_volume() == 3] == IDS["kidney_right"]).all() and (arr[_volume() == 1] == IDS["skeletal_muscle"]).all()
    assert set(report.unmapped) == {"spleen_activity", "rib_activity", "sinus_activity"}
    assert seg.image.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def test_shipped_mapping_names_total_classes() -> None:
    organs, _ = load_mapping()
    assert organs["liver_activity"] == "liver" and organs["sinus_activity"] is None and len(organs) > 60


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda par, raw: par.write_text("pixel_width = 0.3\nslice_width = 0.5\narray_size = 16\nendslice = 6\n"), "no organ table"),
        (lambda par, raw: par.write_text(PAR.replace("array_size = 16", "array_size = 32")), "need 24576"),
        (lambda par, raw: par.write_text(PAR.replace("pixel_width = 0.3       # pixel width (cm)\n", "")), "no 'pixel_width'"),
        (lambda par, raw: raw.write_bytes(raw.read_bytes()[:-4]), "has 6140 bytes"),
        (lambda par, raw: par.write_text(PAR.replace("spleen_activity = 7", "spleen_activity = 8")), "values no organ"),
        (lambda par, raw: par.write_text(PAR + "gall_bladder_activity = 3\n"), "share the activity value 3"),
        (lambda par, raw: (_volume() + 0.5).astype("<f4").tofile(raw), "non-integer"),
        (lambda par, raw: par.write_text(PAR.replace("endslice = 106", "endslice = 99")), "before startslice"),
    ],
)
def test_bad_inputs(xcat, edit, fragment: str) -> None:
    raw, par = xcat
    edit(par, raw)
    with pytest.raises(Seg2MedError, match=fragment):
        read_xcat(raw, par)


def test_bad_mapping_class(xcat, tmp_path: Path) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"organs": {"liver_activity": "lever"}}), encoding="utf-8")
    with pytest.raises(Seg2MedError, match="'lever' is not a 'total' class"):
        read_xcat(*xcat, mapping)
    with pytest.raises(Seg2MedError, match="orientation"):
        read_xcat(*xcat, orientation="LLI")


def test_cli_import_with_report(xcat, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, par = xcat
    out, rep = tmp_path / "xcat_seg.nii.gz", tmp_path / "xcat.json"
    rc = cli.main(["phantom", "--from-xcat", str(raw), "--xcat-par", str(par), "--out", str(out), "--report", str(rep),
                   "--progress-format", "none"])
    assert rc == 0, capsys.readouterr().err
    seg = io.read_segmentation(out)
    assert seg.label_set == "total" and seg.image.GetSpacing() == (3.0, 3.0, 5.0)
    assert json.loads(rep.read_text(encoding="utf-8"))["unmapped"] == ["sinus_activity"]
    assert sitk.ReadImage(str(out)).GetSize() == (N, N, NZ)


def test_cli_errors_are_one_line_and_write_nothing(xcat, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, par = xcat
    out = tmp_path / "o.nii.gz"
    par.write_text("array_size = 16\n", encoding="utf-8")
    for argv in (["--from-xcat", str(raw), "--xcat-par", str(par)], ["--from-xcat", str(raw)]):
        rc = cli.main(["phantom", *argv, "--out", str(out), "--progress-format", "none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("seg2med: error:")
    assert not out.exists()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        # the issue's bad inputs through the CLI: a parameter file without its organ table, sizes that do not match
        (lambda par, raw: par.write_text(PAR.split("body_activity")[0], encoding="utf-8"), "no organ table"),
        (lambda par, raw: raw.write_bytes(raw.read_bytes()[:-4]), "has 6140 bytes"),
        (lambda par, raw: par.write_text(PAR.replace("array_size = 16", "array_size = 32"), encoding="utf-8"), "need 24576"),
        (lambda par, raw: par.write_text(PAR.replace("endslice = 106", "endslice = 110"), encoding="utf-8"), "need"),
    ],
)
def test_cli_issue_bad_inputs_one_line_exit_2_nothing_written(xcat, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              edit, fragment: str) -> None:
    raw, par = xcat
    edit(par, raw)
    before = sorted(p.name for p in tmp_path.iterdir())
    out, rep = tmp_path / "o.nii.gz", tmp_path / "o.json"
    rc = cli.main(["phantom", "--from-xcat", str(raw), "--xcat-par", str(par), "--out", str(out), "--report", str(rep),
                   "--progress-format", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("seg2med: error:") and fragment in err[0], err
    assert str(par.name) in err[0] or str(raw.name) in err[0]  # the message names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == before
