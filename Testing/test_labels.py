"""Label sets, merging, guessing, conversion and tissue tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from seg2med_core import labels, tables
from seg2med_core.errors import Seg2MedError
from seg2med_core.labels import TISSUE_OFFSET, convert_labels, get_label_set, names_for

REPO = Path(__file__).resolve().parents[1]


def test_label_set_sizes_and_known_ids() -> None:
    sizes = {s: len(get_label_set(s)) for s in labels.LABEL_SETS}
    assert sizes["total"] == 117 and sizes["total_v1"] == 104 and sizes["total_mr"] == 50
    assert sizes["tissue_types"] == 3 and sizes["tissue_types_mr"] == 3 and sizes["total_v3"] == 117
    assert get_label_set("total")[5] == "liver" and get_label_set("total_mr")[19] == "vertebrae"
    assert get_label_set("total_v1")[7] == "aorta" and get_label_set("total_v3")[26] == "vertebrae_L6"


def test_vendored_json_matches_package() -> None:
    """The fallback copy must equal TotalSegmentator's class map (regenerate with tools/vendor_label_sets.py)."""
    pytest.importorskip("totalsegmentator.map_to_binary")
    labels._vendored.cache_clear()
    vendored = labels._vendored()
    for name in labels.LABEL_SETS:
        assert vendored[name] == get_label_set(name), name


def test_works_without_totalsegmentator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "totalsegmentator.map_to_binary", None)  # import now fails
    labels._label_set.cache_clear()
    try:
        assert get_label_set("total_mr")[10] == "lung_left"
        assert len(get_label_set("total")) == 117
    finally:
        labels._label_set.cache_clear()


def test_vendor_tool_writes_same_json(tmp_path: Path) -> None:
    pytest.importorskip("totalsegmentator.map_to_binary")
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import vendor_label_sets
    finally:
        sys.path.remove(str(REPO / "tools"))
    out = tmp_path / "sets.json"
    assert vendor_label_sets.main(["--out", str(out)]) == 0
    packaged = json.loads((REPO / "seg2med_core" / "data" / "label_sets.json").read_text(encoding="utf-8"))
    assert json.loads(out.read_text(encoding="utf-8"))["label_sets"] == packaged["label_sets"]


def test_unknown_label_set() -> None:
    with pytest.raises(Seg2MedError, match="unknown label set 'totl'"):
        get_label_set("totl")


def test_names_for_adds_tissue_at_offset() -> None:
    names = names_for("total_mr")
    assert names[201] == "subcutaneous_fat" and names[203] == "skeletal_muscle" and names[50] == "brain"
    assert 201 not in names_for("total_mr", include_tissue=False)
    assert labels.class_names_to_ids(["liver", "torso_fat"], "total") == {"liver": 5, "torso_fat": 202}
    with pytest.raises(Seg2MedError, match="lung_left"):
        labels.class_names_to_ids(["lung_left"], "total")


def test_merge_organs_win() -> None:
    main = np.array([[0, 5, 5, 0]], dtype=np.uint8)
    tissue = np.array([[1, 3, 0, 2]], dtype=np.uint8)
    merged = labels.merge_segmentations(main, tissue)
    assert merged.dtype == np.uint16
    assert merged.tolist() == [[TISSUE_OFFSET + 1, 5, 5, TISSUE_OFFSET + 2]]
    with pytest.raises(Seg2MedError, match="shape"):
        labels.merge_segmentations(main, tissue[:, :2])


def test_guess_label_set() -> None:
    assert labels.guess_label_set({5}, names_for("total_mr")) == "total_mr"
    assert labels.guess_label_set({1, 10}, {1: "spleen", 10: "lung_upper_lobe_left"}) == "total"
    assert labels.guess_label_set({7}, {7: "aorta", 44: "heart_myocardium"}) == "total_v1"
    assert labels.guess_label_set({26}, {26: "vertebrae_L6"}) == "total_v3"
    assert labels.guess_label_set({1, 2}, {1: "subcutaneous_fat", 2: "torso_fat"}) == "tissue_types"
    assert labels.guess_label_set({5, 117}) == "total"
    assert labels.guess_label_set({5, 19, 201}) == "total_mr"
    with pytest.raises(Seg2MedError, match="fit no supported"):
        labels.guess_label_set({150})


def test_ct_to_mr_conversion_maps_known_classes() -> None:
    ids = {n: i for i, n in names_for("total").items()}
    mr = {n: i for i, n in names_for("total_mr").items()}
    src = ["liver", "vertebrae_L3", "vertebrae_C1", "lung_upper_lobe_left", "lung_middle_lobe_right", "rib_left_3",
           "kidney_cyst_left", "atrial_appendage_left", "skeletal_muscle"]
    arr = np.array([[ids[n] for n in src] + [0]])
    out, report = convert_labels(arr, "total", "total_mr")
    expected = ["liver", "vertebrae", "vertebrae", "lung_left", "lung_right", None, "kidney_left", "heart", "skeletal_muscle"]
    assert out[0].tolist() == [mr[e] if e else 0 for e in expected] + [0]
    assert report.unmapped == ["rib_left_3"] and report.unmapped_voxels == 1
    assert report.mapped["vertebrae_C1"] == "vertebrae" and "rib_left_3" in report.summary()


def test_every_ct_class_with_a_counterpart_is_mapped() -> None:
    mr_names = set(names_for("total_mr").values())
    for src in ("total", "total_v1", "total_v3"):
        table = labels.conversion_table(src, "total_mr")
        assert set(table) == set(names_for(src).values())
        for name, target in table.items():
            if name in mr_names:
                assert target == name
            if name.startswith("vertebrae_") or name.startswith("lung_"):
                assert target is not None, name
        unmapped = {n for n, t in table.items() if t is None}
        assert not any(n.startswith(("kidney", "vertebrae", "heart", "gluteus")) for n in unmapped), unmapped


def test_mr_to_ct_reverses_to_representatives() -> None:
    arr = np.array([19, 10, 11, 20, 22, 5, 203], dtype=np.uint16)  # vertebrae, lungs, discs, heart, liver, muscle
    out, report = convert_labels(arr, "total_mr", "total")
    total = names_for("total")
    assert [total.get(int(i)) for i in out] == ["vertebrae_L3", "lung_upper_lobe_left", "lung_upper_lobe_right",
                                                None, "heart", "liver", "skeletal_muscle"]
    assert report.unmapped == ["intervertebral_discs"]
    out_v1, rep_v1 = convert_labels(np.array([22, 21]), "total_mr", "total_v1")
    assert names_for("total_v1")[int(out_v1[0])] == "heart_myocardium" and rep_v1.unmapped == ["spinal_cord"]
    # the representative classes have the same CT value as what they stand for
    ct = tables.load_ct_table()
    assert ct["vertebrae_L3"] == ct["vertebrae"] and ct["lung_upper_lobe_left"] == ct["lung_left"]


def test_conversion_errors() -> None:
    with pytest.raises(Seg2MedError, match="not in label set 'total_mr'"):
        convert_labels(np.array([99]), "total_mr", "total")
    with pytest.raises(Seg2MedError, match="no label conversion"):
        convert_labels(np.array([1]), "tissue_types", "total_mr")


# ---------------------------------------------------------------------------------------------- tables


def test_tables_cover_every_name() -> None:
    ct = tables.load_ct_table()
    mr = tables.load_mr_table()
    for name in tables.required_names():
        assert name in ct and name in mr, name
    assert ct["background"] == -1000 and ct["liver"] == 50 and ct["subcutaneous_fat"] == -100
    assert mr["subcutaneous_fat"].fat_fraction >= 0.8 and mr["liver"].fat_fraction < 0.1
    assert all(t.t2star_ms <= t.t2_ms for t in mr.values())


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_user_table_validation(tmp_path: Path) -> None:
    good = _write(tmp_path / "ct.csv", "name,hu\nliver,60\nbody,0\nbackground,-1000\n")
    assert tables.load_ct_table(good, required=["liver"])["liver"] == 60
    with pytest.raises(Seg2MedError, match="lacks class name.*spleen"):
        tables.load_ct_table(good, required=["liver", "spleen"])
    with pytest.raises(Seg2MedError, match="lacks class name"):
        tables.load_ct_table(good)  # default: every supported class
    bad = _write(tmp_path / "bad.csv", "name,hu\nliver,abc\n")
    with pytest.raises(Seg2MedError, match="row 2 \\('liver'\\) column 'hu': 'abc' is not a number"):
        tables.load_ct_table(bad, required=[])
    with pytest.raises(Seg2MedError, match="lacks column.*t2star_ms"):
        tables.load_mr_table(_write(tmp_path / "mr.csv", "name,t1_ms,t2_ms,pd\nliver,800,34,0.9\n"), required=[])
    with pytest.raises(Seg2MedError, match="'t1_ms': -5 must be > 0"):
        tables.load_mr_table(_write(tmp_path / "mr2.csv", "name,t1_ms,t2_ms,t2star_ms,pd\nliver,-5,34,20,0.9\n"), required=[])
    with pytest.raises(Seg2MedError, match="does not exist"):
        tables.load_ct_table(tmp_path / "nope.csv")
    mr = tables.load_mr_table(_write(tmp_path / "mr3.csv", "name,t1_ms,t2_ms,t2star_ms,pd\nliver,800,34,20,0.9\n"), required=[])
    assert mr["liver"] == tables.MRTissue(800, 34, 20, 0.9, 0.0)


def test_resolve_overlaps_smaller_wins() -> None:
    big = np.zeros((4, 4), bool)
    big[:3, :3] = True
    small = np.zeros((4, 4), bool)
    small[1:4, 1:2] = True  # overlaps big at 2 voxels, sticks out at one
    out = tables.resolve_overlaps({"kidney_left": big, "kidney_cyst_left": small}, {"kidney_left": 3, "kidney_cyst_left": 23})
    assert out[1, 1] == 23 and out[2, 1] == 23 and out[3, 1] == 23 and out[0, 0] == 3 and out[3, 3] == 0
    assert np.count_nonzero(out == 3) == 9 - 2
    # order of the dict does not matter
    out2 = tables.resolve_overlaps({"kidney_cyst_left": small, "kidney_left": big}, {"kidney_left": 3, "kidney_cyst_left": 23})
    np.testing.assert_array_equal(out, out2)
