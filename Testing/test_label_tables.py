"""Label tables (--label-names, --drop-unknown-labels), other datasets' label schemes, and export to MAISI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io, label_tables
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for

LIDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc-idri-0001"
TOTAL = names_for("total")
TOTAL_ID = {v: k for k, v in TOTAL.items()}


def _image(arr: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint16))
    img.SetSpacing((3.0, 3.0, 3.0))
    img.SetOrigin((-60.0, -45.0, 0.0))
    return img


def _write_map(path: Path, arr: np.ndarray) -> Path:
    io.write_image(_image(arr), path)  # plain label map, no names in the header
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ------------------------------------------------------------------------------------------ table formats
TABLES = {
    "ids.csv": "id,name\n1,spleen\n2,Kidney Right\n",
    "structures.csv": "group,original_idx,structure,id\norgans,1,spleen,1\norgans,2,kidney_right,2\n",
    "noheader.csv": "1,spleen\n2,kidney_right\n",
    "table.tsv": "label\tname\n1\tspleen\n2\tkidney_right\n",
    "slicer_colours.csv": "LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n0,Background,0,0,0,0\n1,spleen,157,108,162,255\n"
                          "2,kidney_right,185,102,83,255\n",
    "by_id.json": json.dumps({"1": "spleen", "2": "kidney_right"}),
    "by_name.json": json.dumps({"background": 0, "spleen": 1, "kidney_right": 2}),
    "msd_dataset.json": json.dumps({"name": "x", "labels": {"0": "background", "1": "spleen", "2": "kidney right"}}),
    "nnunet_dataset.json": json.dumps({"labels": {"background": 0, "spleen": 1, "kidney_right": 2}}),
    "list.json": json.dumps([{"id": 1, "name": "spleen"}, {"id": 2, "name": "kidney_right"}]),
    "itksnap.txt": '# ITK-SnAP Label Description File\n    0     0    0    0        0  0  0    "Clear Label"\n'
                   '    1   255    0    0        1  1  1    "spleen"\n    2     0  255    0        1  1  1    "Kidney right"\n',
    "slicer.ctbl": "# Color table file\n# 3 values\n0 Background 0 0 0 0\n1 spleen 157 108 162 255\n2 kidney_right 185 102 83 255\n",
    "slicer.txt": "# Color table file\n1 spleen 157 108 162 255\n2 kidney_right 185 102 83 255\n",
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_format_reads_the_same_ids(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(TABLES[name])
    table = label_tables.read_label_table(path)
    assert set(table) == {1, 2}
    assert label_tables.table_to_label_set(table, "total") == {1: "spleen", 2: "kidney_right"}


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("id,name\n1,spleen\nx,liver\n", ".csv", "line 3: id 'x' is not a number"),
        ("id,name\n1,spleen\n1,liver\n", ".csv", "line 3: id 1 is named twice ('spleen' and 'liver')"),
        ("colour,size\nred,1\n", ".csv", "needs an id column and a name column"),
        ("{not json", ".json", "is not valid JSON"),
        ('1 0 0 0 1 1 "spleen\n', ".txt", "line 1: not an ITK-SNAP label line"),
        ("0,background\n", ".csv", "names no label"),
    ],
)
def test_bad_tables_name_the_file_and_line(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    path = tmp_path / f"t{suffix}"
    path.write_text(text)
    with pytest.raises(Seg2MedError) as err:
        label_tables.read_label_table(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(Seg2MedError, match="does not exist"):
        label_tables.read_label_table(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Left Kidney", "kidney_left"), ("kidney-left", "kidney_left"), ("left rib 1", "rib_left_1"),
     ("right lung middle lobe", "lung_middle_lobe_right"), ("vertebrae l1", "vertebrae_L1"), ("Bladder", "urinary_bladder"),
     ("postcava", "inferior_vena_cava"), ("gall bladder", "gallbladder"), ("banana", None), ("carpal", None)],
)
def test_match_class_name(name: str, expected: str | None) -> None:
    assert label_tables.match_class_name(name, frozenset(TOTAL.values())) == expected


# ----------------------------------------------------------------------------- the LIDC numbering, in code
def _lidc_like(tmp_path: Path, extra: dict[int, str] | None = None) -> tuple[Path, Path]:
    """A label map numbered like lidc-idri-0001 (1-116 as total v2, 117 carpal, 118 costal_cartilages) and its
    structures.csv; ``extra`` adds present ids with their table names."""
    arr = np.zeros((4, 10, 12), np.uint16)
    arr[1:3, 2:5, 2:5] = 5  # liver
    arr[1:3, 2:5, 7:10] = 118  # costal_cartilages in this file's numbering
    rows = ["group,original_idx,structure,id"] + [f"organs,{i},{n},{i}" for i, n in TOTAL.items() if i <= 116]
    rows += ["test,1,carpal,117", "ribs,26,costal_cartilages,118"]
    for k, (i, n) in enumerate((extra or {}).items()):
        arr[0, k, 0] = i
        rows.append(f"other,{k},{n},{i}")
    table = tmp_path / "structures.csv"
    table.write_text("\n".join(rows) + "\n")
    return _write_map(tmp_path / "labels.nii.gz", arr), table


def test_lidc_numbering_without_table_names_the_file_and_the_offending_id(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    seg, _ = _lidc_like(tmp_path)
    out = tmp_path / "out.nii.gz"
    rc, _, err = run(capsys, "labels", "convert", "--seg", seg, "--to", "total", "--out", out)
    assert rc == 2 and err.count("\n") == 1
    assert f"'{seg}'" in err and "fit no supported label set: 118 (not in 'total'" in err and "--label-names" in err
    assert not out.exists()


def test_lidc_numbering_with_its_table_maps_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg, table = _lidc_like(tmp_path)
    out = tmp_path / "out.nii.gz"
    rc, stdout, err = run(capsys, "labels", "convert", "--seg", seg, "--label-names", table, "--to", "total", "--out", out)
    assert rc == 0, err
    assert "117 (carpal)" in stdout  # in the table, no counterpart in total: reported
    back = io.read_segmentation(out)
    arr = back.array()
    assert set(np.unique(arr)) == {0, TOTAL_ID["liver"], TOTAL_ID["costal_cartilages"]} and TOTAL_ID["costal_cartilages"] == 117


def test_unknown_table_names_error_lists_them_and_drop_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg, table = _lidc_like(tmp_path, {150: "banana", 151: "carpal_bone", 152: "cherry"})
    out = tmp_path / "out.nii.gz"
    args = ["labels", "convert", "--seg", seg, "--label-names", table, "--to", "total", "--out", out]
    rc, _, err = run(capsys, *args)
    assert rc == 2 and err.count("\n") == 1 and not out.exists()
    assert str(seg) in err and str(table) in err and "label set 'total'" in err
    assert "150 (banana), 151 (carpal_bone), 152 (cherry)" in err and "--drop-unknown-labels" in err
    rc, stdout, err = run(capsys, *args, "--drop-unknown-labels")
    assert rc == 0, err
    assert "dropped label ids without a class in 'total': 150 (banana), 151 (carpal_bone), 152 (cherry) (3 voxels set to 0)" in stdout
    assert 150 not in np.unique(io.read_segmentation(out).array())


def test_many_unknown_ids_are_listed_up_to_the_limit_with_a_count(tmp_path: Path) -> None:
    arr = np.zeros((2, 8, 30), np.uint16)
    arr[0, 0, :30] = np.arange(300, 330)
    arr[1, 0, 0] = 5
    seg = _write_map(tmp_path / "many.nii.gz", arr)
    with pytest.raises(Seg2MedError) as err:
        io.read_segmentation(seg, "total")
    msg = str(err.value)
    assert "300, 301" in msg and "311 (+18 more)" in msg


def test_drop_unknown_without_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg, _ = _lidc_like(tmp_path)
    out = tmp_path / "out.nii.gz"
    rc, stdout, err = run(capsys, "prior", "--seg", seg, "--modality", "ct", "--drop-unknown-labels", "--out", out,
                          "--progress-format", "none")
    assert rc == 0, err
    assert "dropped label ids not in 'total': 118" in err


def test_mask_folder_with_other_names_and_dropped_structures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "segmentations"  # AbdomenAtlas names its masks like this
    folder.mkdir()
    for k, name in enumerate(["gall_bladder", "postcava", "Left Kidney", "celiac_trunk"]):
        arr = np.zeros((3, 8, 8), np.uint8)
        arr[1, k, 1:3] = 1
        io.write_image(_image(arr), folder / f"{name}.nii.gz")
    with pytest.raises(Seg2MedError, match="structures not in label set 'total': celiac_trunk; add `--drop-unknown-labels`"):
        io.read_segmentation(folder)
    lines: list[str] = []
    seg = io.read_segmentation(folder, drop_unknown=True, info=lines.append)
    assert {TOTAL[i] for i in np.unique(seg.array()) if i} == {"gallbladder", "inferior_vena_cava", "kidney_left"}
    assert "celiac_trunk" in lines[0]


@pytest.mark.data
def test_real_lidc_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (LIDC / "structures.csv").exists():
        pytest.skip(f"lidc-idri-0001 not found at {LIDC}")
    out = tmp_path / "lidc_total.nii.gz"
    rc, stdout, err = run(capsys, "labels", "convert", "--seg", LIDC / "labels_totalseg.nii.gz",
                          "--label-names", LIDC / "structures.csv", "--to", "total", "--out", out)
    assert rc == 0, err
    assert "117 (carpal)" in stdout
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(LIDC / "labels_totalseg.nii.gz")))
    dst = io.read_segmentation(out).array()
    assert np.all(dst[src == 118] == TOTAL_ID["costal_cartilages"])
    np.testing.assert_array_equal(dst[src < 117], src[src < 117])


# ------------------------------------------------------------------------------------------ schemes
#: Ids and names as the datasets publish them (sources in each scheme file).
PUBLISHED = {
    "amos": {1: "spleen", 4: "gall bladder", 8: "arota", 9: "postcava", 14: "bladder", 15: "prostate/uterus"},
    "btcv": {1: "spleen", 9: "inferior vena cava", 10: "portal vein and splenic vein", 13: "left adrenal gland"},
    "abdomenatlas_1_1": {1: "aorta", 7: "postcava", 13: "celiac_trunk", 25: "rectum"},
    "maisi": {1: "liver", 2: "dummy1", 3: "spleen", 114: "costal cartilages", 132: "airway", 200: "body"},
    "kits23": {1: "kidney", 2: "tumor", 3: "cyst"},
    "msd_task07_pancreas": {1: "pancreas", 2: "cancer"},
}


def test_schemes_load_with_sources_and_published_ids() -> None:
    names = label_tables.scheme_names()
    assert {"amos", "btcv", "abdomenatlas_1_0", "abdomenatlas_1_1", "maisi", "kits23"} <= set(names)
    assert sum(n.startswith("msd_task") for n in names) == 10
    for name in names:
        scheme = label_tables.load_scheme(name)
        assert scheme.source and ("http" in scheme.source) and scheme.names
    for name, ids in PUBLISHED.items():
        scheme = label_tables.load_scheme(name)
        assert {i: scheme.names[i] for i in ids} == ids
    assert len(label_tables.load_scheme("amos").names) == 15 and len(label_tables.load_scheme("btcv").names) == 13
    assert len([i for i in label_tables.load_scheme("maisi").names if i <= 132]) == 132


def test_amos_label_map_reads_as_total_and_reports_classes_without_counterpart(tmp_path: Path) -> None:
    arr = np.zeros((3, 8, 16), np.uint16)
    arr[1, 1, :16] = np.arange(0, 16)  # every AMOS id
    seg_path = _write_map(tmp_path / "amos_0001.nii.gz", arr)
    lines: list[str] = []
    seg = io.read_segmentation(seg_path, "amos", info=lines.append)
    assert seg.label_set == "total"
    out = seg.array()[1, 1]
    assert TOTAL[out[8]] == "aorta" and TOTAL[out[9]] == "inferior_vena_cava" and TOTAL[out[14]] == "urinary_bladder"
    assert out[15] == 0 and any("15 (prostate/uterus)" in ln for ln in lines)


def test_kits_kidney_is_split_by_side(tmp_path: Path) -> None:
    arr = np.zeros((4, 10, 20), np.uint16)
    arr[1:3, 3:6, 2:5] = 1  # low x index: patient's right in LPS (x grows to the left)
    arr[1:3, 3:6, 14:17] = 1
    arr[2, 4, 15] = 2  # tumour in the left kidney
    arr[1, 4, 3] = 3  # cyst in the right kidney
    seg = io.read_segmentation(_write_map(tmp_path / "case_00000.nii.gz", arr), "kits23")
    out = seg.array()
    assert TOTAL[out[1, 4, 2]] == "kidney_right" and TOTAL[out[1, 4, 16]] == "kidney_left"
    assert out[2, 4, 15] == 0 and TOTAL[out[1, 4, 3]] == "kidney_cyst_right"


def test_phantom_exported_to_maisi_and_read_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = tmp_path / "phantom.nii.gz"
    assert cli.main(["phantom", "--out", str(phantom), "--spacing", "6", "6", "6", "--progress-format", "none"]) == 0
    maisi = tmp_path / "phantom_maisi.nii.gz"
    rc, stdout, err = run(capsys, "labels", "convert", "--seg", phantom, "--to", "maisi", "--out", maisi)
    assert rc == 0, err
    assert "total -> maisi" in stdout and "labelled body" in stdout
    src = io.read_segmentation(phantom).array()
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(maisi)))
    assert np.all(out[src == TOTAL_ID["liver"]] == 1) and np.all(out[src == TOTAL_ID["spleen"]] == 3)
    assert np.all(out[src == TOTAL_ID["urinary_bladder"]] == 15)
    assert (out == 200).any()
    assert np.all((src[out == 200] == 0) | (src[out == 200] > 200))  # body label only where no organ was
    names = io.nifti_label_names(maisi)
    assert names is not None and names[1] == "liver" and names[200] == "body"
    back = io.read_segmentation(maisi, "maisi")
    organs = src < 200
    np.testing.assert_array_equal(back.array()[organs], src[organs])  # every organ survives the round trip


def test_export_reports_classes_without_counterpart() -> None:
    arr = np.array([[[TOTAL_ID["liver"], TOTAL_ID["spleen"]]]], np.uint16)
    out, report = label_tables.export_to_scheme(arr, label_tables.load_scheme("btcv"))
    assert out.tolist() == [[[6, 1]]] and report.unmapped == []
    arr = np.array([[[TOTAL_ID["brain"], TOTAL_ID["spleen"]]]], np.uint16)
    out, report = label_tables.export_to_scheme(arr, label_tables.load_scheme("btcv"))
    assert out.tolist() == [[[0, 1]]] and report.unmapped == ["brain"] and "brain" in report.summary()
