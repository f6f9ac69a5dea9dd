"""Public dataset layouts (seg2med_core.datasets): tiny layout-faithful copies built here, a few voxels each.

Checked per layout: detection, case lists, the dataset's own splits, image/label pairing, label tables
mapped by name, and the one-line errors for incomplete cases; then the CLI end to end (dataset list,
train, evaluate with an SynthRAD conversion).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core.datasets import LayoutOptions, assign_splits, detect_format, discover
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import names_for
from seg2med_core.training.dataset import read_case_segmentation

SHAPE = (6, 20, 20)  # z, y, x


def _ids(label_set: str) -> dict[str, int]:
    return {name: i for i, name in names_for(label_set).items()}


def _body() -> np.ndarray:
    z, y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]]
    return (y - 10) ** 2 + (x - 10) ** 2 <= 64


def _organ(shift: int = 0) -> np.ndarray:
    z, y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]]
    return _body() & (abs(y - 9 - shift) <= 3) & (abs(x - 8) <= 3)


def _write(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((6.0, 6.0, 6.0))
    sitk.WriteImage(img, str(path))
    return path


def ct_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ct = np.where(_body(), 40 + rng.normal(0, 10, SHAPE), -1000).astype(np.int16)
    ct[_organ()] = 60
    return ct


def mr_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mr = np.where(_body(), 300 + rng.normal(0, 20, SHAPE), 0).astype(np.float32)
    mr[_organ()] = 500
    return mr


def labels(value: int, shift: int = 0) -> np.ndarray:
    return np.where(_organ(shift), value, 0).astype(np.uint8)


# --------------------------------------------------------------------------------------- layouts
def make_totalsegmentator(root: Path, n: int = 3, mri: bool = False, meta: str | None = None) -> Path:
    """s0000.. with ct.nii.gz (mri.nii.gz) + segmentations/<class>.nii.gz, and a ';'-separated meta.csv."""
    for i in range(n):
        subject = root / f"s{i:04d}"
        _write(mr_array(i) if mri else ct_array(i), subject / ("mri.nii.gz" if mri else "ct.nii.gz"))
        _write(labels(1), subject / "segmentations" / "liver.nii.gz")
        _write(np.zeros(SHAPE, np.uint8), subject / "segmentations" / "spleen.nii.gz")
    splits = ["train", "val", "test"]
    text = meta if meta is not None else "image_id;age;gender;institute;study_type;split\n" + "".join(
        f"s{i:04d};60;m;A;ct abdomen;{splits[i % 3]}\n" for i in range(n)
    )
    (root / "meta.csv").write_text(text, encoding="utf-8")
    return root


def make_synthrad(root: Path, patients=("1PA001", "1PA002", "1PA003"), ext: str = ".nii.gz", segs=("ct", "mr")) -> Path:
    """Task1/pelvis/<patient>/{mr,ct,mask}<ext> + the user's TotalSegmentator outputs <modality>_seg."""
    for i, patient in enumerate(patients):
        folder = root / patient
        _write(ct_array(i), folder / f"ct{ext}")
        _write(mr_array(i) if patient[0] == "1" else ct_array(i + 10), folder / (f"mr{ext}" if patient[0] == "1" else f"cbct{ext}"))
        _write(_body().astype(np.uint8), folder / f"mask{ext}")
        if "ct" in segs:
            _write(labels(_ids("total")["liver"]), folder / "ct_seg.nii.gz")
        if "mr" in segs:
            _write(labels(_ids("total_mr")["liver"]), folder / "mr_seg.nii.gz")
    (root / "overview").mkdir(parents=True, exist_ok=True)
    return root


AMOS_LABELS = {
    "0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gall bladder", "5": "esophagus",
    "6": "liver", "7": "stomach", "8": "arota", "9": "postcava", "10": "pancreas", "11": "right adrenal gland",
    "12": "left adrenal gland", "13": "duodenum", "14": "bladder", "15": "prostate/uterus",
}


def make_amos(root: Path) -> Path:
    """imagesTr/labelsTr (CT amos_0001, amos_0004; MR amos_0507), imagesVa/labelsVa (CT amos_0008), imagesTs unlabelled."""
    for folder, case, mr in (("Tr", "amos_0001", False), ("Tr", "amos_0004", False), ("Tr", "amos_0507", True), ("Va", "amos_0008", False)):
        _write(mr_array() if mr else ct_array(), root / f"images{folder}" / f"{case}.nii.gz")
        lab = labels(6)  # AMOS 6 = liver
        lab[0] = np.where(_organ(2)[0], 15, 0)  # AMOS 15 = prostate/uterus (no counterpart)
        _write(lab, root / f"labels{folder}" / f"{case}.nii.gz")
    _write(ct_array(), root / "imagesTs" / "amos_0010.nii.gz")
    meta = {"name": "AMOS", "labels": AMOS_LABELS, "modality": {"0": "CT"}, "numTraining": 3}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def make_nnunet(root: Path, v2: bool = True, channel: str = "CT") -> Path:
    for case in ("case_001", "case_002"):
        _write(ct_array() if channel == "CT" else mr_array(), root / "imagesTr" / f"{case}_0000.nii.gz")
        _write(labels(1) + (_organ(3) & ~_organ()).astype(np.uint8) * 2, root / "labelsTr" / f"{case}.nii.gz")
    labels_table = {"background": 0, "liver": 1, "Spleen": 2} if v2 else {"0": "background", "1": "liver", "2": "Spleen"}
    key = "channel_names" if v2 else "modality"
    meta = {key: {"0": channel}, "labels": labels_table, "numTraining": 2, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------- TotalSegmentator
def test_totalsegmentator_ct_detection_cases_and_own_split(tmp_path: Path) -> None:
    root = make_totalsegmentator(tmp_path / "Totalsegmentator_dataset_v201")
    assert detect_format(root) == "totalsegmentator"
    cases = discover(root)
    assert [(c.case_id, c.split) for c in cases] == [("s0000", "train"), ("s0001", "val"), ("s0002", "test")]
    assert cases[0].image.name == "ct.nii.gz" and cases[0].segmentation.name == "segmentations"
    assert {c.dataset for c in cases} == {"totalsegmentator"}
    seg = read_case_segmentation(cases[0], None)
    assert seg.label_set == "total" and set(np.unique(sitk.GetArrayFromImage(seg.image))) == {0, _ids("total")["liver"]}


def test_totalsegmentator_errors_name_the_case(tmp_path: Path) -> None:
    root = make_totalsegmentator(tmp_path / "ts")
    (root / "s0001" / "ct.nii.gz").unlink()
    with pytest.raises(Seg2MedError, match=r"TotalSegmentator CT subject 's0001' .* has no ct.nii.gz"):
        discover(root, "totalsegmentator")
    bad = make_totalsegmentator(tmp_path / "ts2", meta="image_id;split\ns0000;training\n")
    with pytest.raises(Seg2MedError, match=r"meta.csv' line 2: split 'training' must be one of"):
        discover(bad)
    with pytest.raises(Seg2MedError, match="has no MR images"):
        discover(make_totalsegmentator(tmp_path / "ts3"), options=LayoutOptions(modality="mr"))
    with pytest.raises(Seg2MedError, match="does not have the TotalSegmentator MRI layout"):
        discover(make_totalsegmentator(tmp_path / "ts4"), "totalsegmentator-mri")


def test_totalsegmentator_mri(tmp_path: Path) -> None:
    root = make_totalsegmentator(tmp_path / "TotalsegmentatorMRI_dataset", mri=True, n=2)
    assert detect_format(root) == "totalsegmentator-mri"
    cases = discover(root, options=LayoutOptions(modality="mr"))
    assert [c.image.name for c in cases] == ["mri.nii.gz", "mri.nii.gz"] and cases[0].dataset == "totalsegmentator-mri"
    assert read_case_segmentation(cases[0], None).label_set == "total_mr"


# --------------------------------------------------------------------------------------- SynthRAD
def test_synthrad2023_pairs_ct_and_mr_by_modality(tmp_path: Path) -> None:
    task1 = tmp_path / "Task1"
    make_synthrad(task1 / "pelvis")
    for root in (task1, task1 / "pelvis"):
        assert detect_format(root) == "synthrad2023"
    ct_cases = discover(task1, options=LayoutOptions(modality="ct"))
    assert [c.case_id for c in ct_cases] == ["1PA001", "1PA002", "1PA003"]
    assert {(c.image.name, c.segmentation.name, c.split, c.dataset) for c in ct_cases} == {("ct.nii.gz", "ct_seg.nii.gz", None, "synthrad2023-pelvis")}
    mr_cases = discover(task1, options=LayoutOptions(modality="mr"))
    assert {(c.image.name, c.segmentation.name) for c in mr_cases} == {("mr.nii.gz", "mr_seg.nii.gz")}
    # Experiment IV: MR labels into a CT model, compared with the paired CT; body from the MR
    conv = discover(task1, options=LayoutOptions(modality="ct", seg_from="mr"))
    assert {(c.image.name, c.segmentation.name, c.source_image.name, c.source_modality) for c in conv} == {
        ("ct.nii.gz", "mr_seg.nii.gz", "mr.nii.gz", "mr")
    }
    assert all(c.source_image is None for c in ct_cases)


def test_synthrad_errors(tmp_path: Path) -> None:
    root = make_synthrad(tmp_path / "pelvis")
    (root / "1PA002" / "ct.nii.gz").unlink()
    with pytest.raises(Seg2MedError, match=r"SynthRAD2023 patient '1PA002' .* has no ct image"):
        discover(root)
    root = make_synthrad(tmp_path / "p2", segs=("ct",))
    with pytest.raises(Seg2MedError, match=r"patient '1PA001' has no mr segmentation .*run TotalSegmentator -i .*mr.nii.gz -o .*mr_seg.nii.gz --ml -ta total_mr"):
        discover(root, options=LayoutOptions(modality="mr"))
    task2 = make_synthrad(tmp_path / "Task2" / "pelvis", patients=("2PA001",))
    assert [c.image.name for c in discover(task2)] == ["ct.nii.gz"]  # CBCT task: CT cases
    with pytest.raises(Seg2MedError, match="Task 2 \\(CBCT\\): it has no MR image"):
        discover(task2, options=LayoutOptions(modality="mr"))


def test_synthrad2025_mha(tmp_path: Path) -> None:
    root = make_synthrad(tmp_path / "Task1" / "AB", patients=("1ABA005", "1ABC012"), ext=".mha")
    assert detect_format(tmp_path / "Task1") == "synthrad2025"
    cases = discover(tmp_path / "Task1")
    assert [c.case_id for c in cases] == ["1ABA005", "1ABC012"]
    assert {(c.image.name, c.dataset) for c in cases} == {("ct.mha", "synthrad2025-abdomen")}
    with pytest.raises(Seg2MedError, match="does not have the SynthRAD2023 layout"):
        discover(root, "synthrad2023")


# --------------------------------------------------------------------------------------- AMOS / nnU-Net
def test_amos_ct_and_mr_ids_splits_and_label_names(tmp_path: Path) -> None:
    root = make_amos(tmp_path / "amos22")
    assert detect_format(root) == "amos22"
    with pytest.raises(Seg2MedError, match="has CT and MR images: give --modality"):
        discover(root)
    ct = discover(root, options=LayoutOptions(modality="ct"))
    assert [(c.case_id, c.split) for c in ct] == [("amos_0001", "train"), ("amos_0004", "train"), ("amos_0008", "val")]
    mr = discover(root, options=LayoutOptions(modality="mr"))
    assert [(c.case_id, c.dataset, c.label_set) for c in mr] == [("amos_0507", "amos22-mr", "total_mr")]
    seg = read_case_segmentation(ct[0], None)
    found = set(np.unique(sitk.GetArrayFromImage(seg.image)).tolist())
    # AMOS 6 (liver) -> total 5; AMOS 15 (prostate/uterus) has no counterpart -> background
    assert seg.label_set == "total" and found == {0, _ids("total")["liver"]}
    assert read_case_segmentation(mr[0], None).label_set == "total_mr"


def test_amos_missing_label_is_an_error(tmp_path: Path) -> None:
    root = make_amos(tmp_path / "amos22")
    (root / "labelsTr" / "amos_0004.nii.gz").unlink()
    with pytest.raises(Seg2MedError, match=r"AMOS22 case 'amos_0004' .* has no label file labelsTr/amos_0004.nii.gz"):
        discover(root, options=LayoutOptions(modality="ct"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "amos_0001.nii.gz")))
    lab[0, 0, 0] = 42
    _write(lab, root / "labelsTr" / "amos_0001.nii.gz")
    (root / "labelsTr" / "amos_0004.nii.gz").write_bytes((root / "labelsTr" / "amos_0001.nii.gz").read_bytes())
    case = discover(root, options=LayoutOptions(modality="ct"))[0]
    with pytest.raises(Seg2MedError, match=r"ids \[42\] that its dataset.json label table does not list"):
        read_case_segmentation(case, None)


@pytest.mark.parametrize("v2", [True, False])
def test_nnunet_raw_v2_and_v1_label_tables(tmp_path: Path, v2: bool) -> None:
    root = make_nnunet(tmp_path / "Dataset501_Abdomen", v2=v2)
    assert detect_format(root) == "nnunet"
    cases = discover(root)
    assert [(c.case_id, c.image.name, c.segmentation.name, c.split) for c in cases] == [
        ("case_001", "case_001_0000.nii.gz", "case_001.nii.gz", None),
        ("case_002", "case_002_0000.nii.gz", "case_002.nii.gz", None),
    ]
    assert dict(cases[0].label_table) == {0: "background", 1: "liver", 2: "Spleen"} and cases[0].dataset == "Dataset501_Abdomen"
    ids = set(np.unique(sitk.GetArrayFromImage(read_case_segmentation(cases[0], None).image)).tolist())
    assert ids == {0, _ids("total")["liver"], _ids("total")["spleen"]}


def test_nnunet_errors_and_mr_channel(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "Dataset502_MR", channel="T2")
    assert {c.label_set for c in discover(root)} == {"total_mr"}
    with pytest.raises(Seg2MedError, match="has no CT images"):
        discover(root, options=LayoutOptions(modality="ct"))
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(Seg2MedError, match=r"nnU-Net case 'case_002' .* has no label file labelsTr/case_002.nii.gz"):
        discover(root)
    root = make_nnunet(tmp_path / "Dataset503")
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with pytest.raises(Seg2MedError, match=r"label '.*case_001.nii.gz' has no image imagesTr/case_001_0000.nii.gz"):
        discover(root)
    root = make_nnunet(tmp_path / "Dataset504")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole": [1, 2]}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(Seg2MedError, match="region-based labels are not supported"):
        discover(root)


def test_generic_layouts_and_unknown_format(tmp_path: Path) -> None:
    _write(ct_array(), tmp_path / "mine" / "c1" / "image.nii.gz")
    _write(labels(5), tmp_path / "mine" / "c1" / "segmentation.nii.gz")
    assert detect_format(tmp_path / "mine") == "folder"
    assert [c.case_id for c in discover(tmp_path / "mine")] == ["c1"]
    with pytest.raises(Seg2MedError, match="unknown --format 'kits'"):
        discover(tmp_path / "mine", "kits")
    with pytest.raises(Seg2MedError, match="does not exist"):
        discover(tmp_path / "absent")
    with pytest.raises(Seg2MedError, match="found twice"):
        discover([tmp_path / "mine", tmp_path / "mine"])


def test_assign_splits_fixed_nested_and_own_splits_kept(tmp_path: Path) -> None:
    from seg2med_core.training.dataset import CaseSpec

    cases = [CaseSpec(f"1PA{i:03d}", Path("i"), Path("s"), dataset="synthrad2023-pelvis") for i in range(1, 21)]
    own = [CaseSpec("s0000", Path("i"), Path("s"), split="val", dataset="totalsegmentator")]
    a = assign_splits(cases + own, test=3, val=2, seed=0)
    b = assign_splits(list(reversed(cases)) + own, test=3, val=2, seed=0)
    test_a = {c.case_id for c in a if c.split == "test"}
    assert len(test_a) == 3 and test_a == {c.case_id for c in b if c.split == "test"}
    assert sum(c.split == "val" for c in a if c.dataset != "totalsegmentator") == 2 and a[-1].split == "val"
    bigger = {c.case_id for c in assign_splits(cases, test=8, seed=0) if c.split == "test"}
    assert test_a < bigger  # 10 CT test patients are among the 40 MR test patients of the same folder
    assert {c.case_id for c in assign_splits(cases, test=3, seed=1) if c.split == "test"} != test_a
    with pytest.raises(Seg2MedError, match="leave none to train on"):
        assign_splits(cases, test=15, val=5)


# --------------------------------------------------------------------------------------- CLI
def test_cli_dataset_list_and_csv_round_trip(tmp_path: Path, capsys) -> None:
    from seg2med_core.cli import main

    root = make_amos(tmp_path / "amos22")
    out = tmp_path / "cases.csv"
    assert main(["dataset", "list", str(root), "--modality", "ct", "--csv", str(out), "--progress-format", "none"]) == 0
    printed = capsys.readouterr().out
    assert "amos22" in printed and "| amos22-ct | 3 | 2 | 1 | 0 | 0 |" in printed
    assert "amos22-ct: 14 classes mapped onto 'total'; without counterpart (set to background): prostate/uterus" in printed
    again = discover(out)
    first = discover(root, options=LayoutOptions(modality="ct"))
    assert [(c.case_id, c.split, c.label_table, c.label_set) for c in again] == [
        (c.case_id, c.split, c.label_table, c.label_set) for c in first
    ]
    # bad input: one line, exit 2, nothing written
    (root / "labelsVa" / "amos_0008.nii.gz").unlink()
    bad_out = tmp_path / "bad.csv"
    assert main(["dataset", "list", str(root), "--modality", "ct", "--csv", str(bad_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg2med: error: AMOS22 case 'amos_0008'") and not bad_out.exists()


@pytest.mark.parametrize("layout", ["totalsegmentator", "amos22"])
def test_cli_train_on_public_layouts(tmp_path: Path, capsys, layout: str) -> None:
    """TotalSegmentator: its meta.csv test subject is left out; AMOS: labels mapped by name, val split validated on."""
    from seg2med_core.cli import main

    root = make_totalsegmentator(tmp_path / "ts", n=3) if layout == "totalsegmentator" else make_amos(tmp_path / "amos22")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "modality": "ct", "spacing_xy": 6.0, "image_size": 16, "batch_size": 2, "max_steps": 2, "epochs": None,
        "val_every": 0, "checkpoint_every": 0, "mixed_precision": "none",
        "network": {"spatial_dims": 2, "in_channels": 2, "out_channels": 1, "channels": [8, 8], "attention_levels": [False, True],
                    "num_res_blocks": 1, "num_head_channels": 8, "norm_num_groups": 4},
    }), encoding="utf-8")
    run = tmp_path / "run"
    code = main(["train", "--data", str(root), "--config", str(config), "--out", str(run), "--cache-dir", str(tmp_path / "cache"),
                 "--device", "cpu", "--progress-format", "none"] + (["--modality", "ct"] if layout == "amos22" else []))
    assert code == 0, capsys.readouterr().err
    assert (run / "bundle" / "model.safetensors").is_file()
    err = capsys.readouterr().err
    if layout == "amos22":
        assert "amos22-ct: 14 classes mapped onto 'total'" in err and "test case" not in err
        return
    assert "1 test case(s) are left out of training (s0002)" in err
    # a paired-only option on a one-image layout: one line, exit 2, no run folder
    assert main(["train", "--data", str(root), "--config", str(config), "--out", str(tmp_path / "run2"), "--seg-from", "mr", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conversion" in err[0] and not (tmp_path / "run2").exists()


def test_cli_evaluate_synthrad_conversion_prints_table_vi(tmp_path: Path, capsys) -> None:
    from seg2med_core.cli import main
    from seg2med_core.training import stats

    root = make_synthrad(tmp_path / "Task1" / "pelvis")
    out = tmp_path / "mr_to_ct"
    args = ["evaluate", "--baseline", "prior", "--modality", "ct", "--data", str(tmp_path / "Task1"), "--seg-from", "mr",
            "--test-cases", "2", "--out", str(out), "--table", "vi", "--no-fid", "--no-dice", "--no-images", "--progress-format", "none"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    rows = stats.read_rows_csv(out / "per_case.csv")
    assert len(rows) == 2 and {r["conversion"] for r in rows} == {"mr-to-ct"} and {r["modality"] for r in rows} == {"ct"}
    assert "Table VI layout" in printed and "| MR-to-CT |" in printed and (out / "table_vi.md").is_file()
    assert root.is_dir()


# --------------------------------------------------------------------------------------- real scans
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.data
def test_real_scans_in_totalsegmentator_and_nnunet_layouts(tmp_path: Path, examples: Path, capsys) -> None:
    """Real CTs in two public layouts: the TotalSegmentator examples as a TotalSegmentator dataset (masks
    split out of the multilabel file, meta.csv split), evaluated with the prior baseline through the CLI; and
    lidc-idri-0001 as an nnU-Net raw dataset whose dataset.json is its own structures.csv numbering (117 =
    carpal, 118 = costal_cartilages), mapped by name onto total."""
    from seg2med_core import io
    from seg2med_core.cli import main
    from seg2med_core.training import stats

    root = tmp_path / "Totalsegmentator_dataset"
    for subject, ct, seg in (("s0000", "example_ct_sm.nii.gz", "example_seg.nii.gz"), ("s0001", "example_ct.nii.gz", "example_seg_fast_force_split.nii.gz")):
        (root / subject / "segmentations").mkdir(parents=True)
        (root / subject / "ct.nii.gz").symlink_to(examples / ct)
        labelled = io.read_segmentation(examples / seg)
        arr = sitk.GetArrayFromImage(labelled.image)
        for label_id in np.unique(arr[arr > 0]):
            mask = sitk.GetImageFromArray((arr == label_id).astype(np.uint8))
            mask.CopyInformation(labelled.image)
            sitk.WriteImage(mask, str(root / subject / "segmentations" / f"{labelled.names[int(label_id)]}.nii.gz"))
    (root / "meta.csv").write_text("image_id;age;gender;split\ns0000;60;m;train\ns0001;60;m;test\n", encoding="utf-8")
    cases = discover(root)
    assert [(c.case_id, c.split) for c in cases] == [("s0000", "train"), ("s0001", "test")]
    n_classes = len(np.unique(sitk.GetArrayFromImage(io.read_segmentation(examples / "example_seg_fast_force_split.nii.gz").image))) - 1
    assert len(list((root / "s0001" / "segmentations").iterdir())) == n_classes
    out = tmp_path / "eval"
    argv = ["evaluate", "--baseline", "prior", "--modality", "ct", "--data", str(root), "--out", str(out), "--table", "ii",
            "--no-fid", "--no-dice", "--no-images", "--progress-format", "none"]
    assert main(argv) == 0, capsys.readouterr().err
    row = stats.read_rows_csv(out / "per_case.csv")[0]
    assert row["case"] == "s0001" and row["dataset"] == "totalsegmentator"  # split auto: the test subject only
    assert 0.1 < float(row["ssim"]) < 0.9 and 10 < float(row["mae"]) < 300  # a prior: a rough CT (measured SSIM 0.29), not a blank
    assert "| totalsegmentator |" in capsys.readouterr().out

    lidc = SHARED / "lidc-idri-0001"
    if not (lidc / "ct.nii.gz").is_file():
        pytest.skip(f"{lidc} not found")
    raw = tmp_path / "Dataset901_LIDC"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "imagesTr" / "lidc0001_0000.nii.gz").symlink_to(lidc / "ct.nii.gz")
    (raw / "labelsTr" / "lidc0001.nii.gz").symlink_to(lidc / "labels_totalseg.nii.gz")
    table = {r["structure"]: int(r["id"]) for r in __import__("csv").DictReader(open(lidc / "structures.csv", encoding="utf-8"))}
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, **table}, "file_ending": ".nii.gz"}))
    case = discover(raw)[0]
    seg = read_case_segmentation(case, None)
    got = set(np.unique(sitk.GetArrayFromImage(seg.image)).tolist())
    raw_ids = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(lidc / "labels_totalseg.nii.gz")))).tolist())
    total = _ids("total")
    if 118 in raw_ids:  # its costal_cartilages (118) is total's 117
        assert total["costal_cartilages"] in got
    assert 118 not in got and len(got - {0}) == len([i for i in raw_ids if i != 0 and i != 117])


def test_cli_evaluate_bad_layout_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from seg2med_core.cli import main

    root = make_synthrad(tmp_path / "Task1" / "pelvis")
    (root / "1PA003" / "ct.nii.gz").unlink()
    out = tmp_path / "eval"
    base = ["evaluate", "--baseline", "prior", "--modality", "ct", "--data", str(root), "--out", str(out), "--no-fid"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg2med: error: SynthRAD2023 patient '1PA003'") and "has no ct image" in err[0]
    assert not out.exists()
    assert main(base[:-1] + ["--format", "kits"]) == 2
    assert "unknown --format 'kits'" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--format", "amos22"]) == 2
    assert "does not have the AMOS22 layout" in capsys.readouterr().err and not out.exists()
