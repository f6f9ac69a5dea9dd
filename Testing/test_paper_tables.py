"""The paper's Table II / III / IV / VI layouts from tiny fake per-case results, and the CLI that prints them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seg2med_core.training import stats
from seg2med_core.training.paper_tables import Run, load_run, render, table_ii, table_iv, table_vi


def rows(dataset: str, ssim: list[float], psnr: list[float], mae: list[float], modality: str = "ct") -> list[dict]:
    return [
        {"case": f"{dataset}{i}", "dataset": dataset, "ssim": s, "psnr": p, "mae": m, "modality": modality}
        for i, (s, p, m) in enumerate(zip(ssim, psnr, mae))
    ]


def five(dataset: str, base: float, modality: str = "ct") -> list[dict]:
    return rows(dataset, [base + 0.01 * i for i in range(5)], [25.0 + i for i in range(5)], [40.0 + 2 * i for i in range(5)], modality)


def test_table_ii_blocks_rows_columns_and_table_iii() -> None:
    ddpm = Run("DDPM", five("pelvis", 0.90) + five("abdomen", 0.92), {"pelvis": 4.46, "abdomen": 5.30, "overall": 3.62})
    unet = Run("UNet", [dict(r, ssim=r["ssim"] - 0.1, mae=r["mae"] + 30) for r in ddpm.rows], {"pelvis": 8.56})
    text = table_ii([ddpm, unet])
    lines = text.splitlines()
    # (a)..(d) blocks in the paper's order, columns = methods, rows = datasets then overall
    heads = [line for line in lines if line.startswith("(")]
    assert heads == ["(a) SSIM (higher is better)", "(b) PSNR (higher is better)", "(c) MAE (lower is better)", "(d) FID (lower is better)"]
    assert "| mean ± std | DDPM | UNet |" in lines
    assert "| abdomen | 0.94 ± 0.02 | 0.84 ± 0.02 |" in lines and "| pelvis | 0.92 ± 0.02 | 0.82 ± 0.02 |" in lines
    block_a = lines[lines.index(heads[0]) : lines.index(heads[1])]
    assert [line.split("|")[1].strip() for line in block_a if line.startswith("| ") and "±" in line][1:] == ["abdomen", "pelvis", "overall"]
    assert "| pelvis | 4.46 | 8.56 |" in lines and "| overall | 3.62 | – |" in lines
    assert "| mean ± std | DDPM | UNet |" in lines
    # Table III: DDPM vs. UNet over all 10 cases; equal PSNR -> p = 1
    row = next(line for line in lines if line.startswith("| DDPM vs. UNet |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ssim_p = stats.mann_whitney([r["ssim"] for r in ddpm.rows], [r["ssim"] for r in unet.rows], "ssim").p_two_sided
    assert cells == ["DDPM vs. UNet", stats.format_p(ssim_p), "1.00000", cells[3]] and float(cells[3]) < 0.05
    assert "| Model | SSIM | PSNR | MAE |" in lines and "too few" not in text


def test_table_iii_too_few_cases_says_so() -> None:
    a = Run("DDPM", rows("pelvis", [0.9], [30.0], [20.0]))
    b = Run("UNet", rows("pelvis", [0.8], [28.0], [25.0]))
    text = table_ii([a, b])
    assert "| DDPM vs. UNet | n/a (too few cases: n=1) | n/a (too few cases: n=1) | n/a (too few cases: n=1) |" in text
    assert "at least 5 cases in each group" in text and "1.00000" not in text
    assert "| pelvis | 0.90 | 0.80 |" in text  # one case: the mean alone, no "± 0.00"


def test_table_iv_datasets_by_metrics_mr_scale() -> None:
    pelvis = Run("DDPM-MR pelvis", rows("synthrad2023-pelvis", [0.89, 0.91], [20.0, 21.0], [0.04, 0.05], "mr"), {"synthrad2023-pelvis": 4.64}, modality="mr")
    abdomen = Run("DDPM-MR abdomen", rows("amos22-mr", [0.56], [22.0], [0.07], "mr"), {}, modality="mr")
    text = table_iv([pelvis, abdomen])
    lines = text.splitlines()
    assert "| | SSIM | PSNR | MAE | FID |" in lines
    # MR MAE on the paper's [0, 255] scale: 0.045 * 255 = 11.475 (float: 11.4750..01)
    assert "| synthrad2023-pelvis | 0.90 ± 0.01 | 20.50 ± 0.71 | 11.48 ± 1.80 | 4.64 |" in lines
    assert "| amos22-mr | 0.56 | 22.00 | 17.85 | – |" in lines
    assert "[0, 255] scale" in text and not any(line.startswith("| overall") for line in lines)


def test_table_vi_conversion_rows() -> None:
    mr_to_ct = Run("tiny_ct", rows("synthrad2023-pelvis", [0.9, 0.92], [22.0, 23.0], [47.0, 49.0]), settings={"seg_from": "mr"}, modality="ct")
    ct_to_mr = Run("tiny_mr", rows("synthrad2023-pelvis", [0.77, 0.77], [15.0, 16.0], [0.06, 0.07], "mr"), settings={"seg_from": "ct"}, modality="mr")
    lines = table_vi([mr_to_ct, ct_to_mr]).splitlines()
    assert "| | SSIM | PSNR | MAE | n |" in lines
    assert "| MR-to-CT | 0.91 ± 0.01 | 22.50 ± 0.71 | 48.00 ± 1.41 | 2 |" in lines
    assert "| CT-to-MR | 0.77 ± 0.00 | 15.50 ± 0.71 | 16.57 ± 1.80 | 2 |" in lines
    with pytest.raises(Exception, match="--table must be one of"):
        render("v", [mr_to_ct])


def _fake_eval(folder: Path, run_rows: list[dict], method: str, modality: str = "ct", settings: dict | None = None, fid=None) -> Path:
    folder.mkdir(parents=True)
    stats.write_rows_csv(folder / "per_case.csv", run_rows)
    payload = {"method": method, "modality": modality, "settings": settings or {}, "fid": fid or {}, "notes": {} if fid else {"fid": "FID skipped: disabled"}}
    (folder / "eval.json").write_text(json.dumps(payload), encoding="utf-8")
    return folder


def test_cli_results_prints_tables_and_bad_input(tmp_path: Path, capsys) -> None:
    from seg2med_core.cli import main

    a = _fake_eval(tmp_path / "ddpm", five("pelvis", 0.9), "DDPM", fid={"pelvis": 4.0})
    b = _fake_eval(tmp_path / "unet", [dict(r, ssim=r["ssim"] - 0.2) for r in five("pelvis", 0.9)], "UNet")
    assert load_run(a).fid == {"pelvis": 4.0} and load_run(b).fid == {"overall": "skipped"}
    out = tmp_path / "tables"
    assert main(["evaluate", "--results", str(a), str(b), "--table", "ii", "--out", str(out), "--progress-format", "none"]) == 0
    printed = capsys.readouterr().out
    assert "| mean ± std | DDPM | UNet |" in printed and "| DDPM vs. UNet |" in printed and "| pelvis | 4.00 | skipped |" in printed
    assert (out / "table_ii.md").read_text(encoding="utf-8") in printed + "\n"
    c = _fake_eval(tmp_path / "conv", five("pelvis", 0.9), "tiny_ct", settings={"seg_from": "mr"})
    assert main(["evaluate", "--results", str(c), "--table", "vi", "--run-names", "MR->CT", "--progress-format", "none"]) == 0
    assert "| MR->CT |" in capsys.readouterr().out
    # bad input: one line, exit 2, nothing written
    bad_out = tmp_path / "bad"
    assert main(["evaluate", "--results", str(tmp_path / "missing"), "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seg2med: error: evaluation folder '{tmp_path / 'missing'}' does not exist"] and not bad_out.exists()
    assert main(["evaluate", "--results", str(a), str(b), "--run-names", "only-one", "--out", str(bad_out)]) == 2
    assert "--run-names needs 2 non-empty name(s)" in capsys.readouterr().err and not bad_out.exists()


def test_runs_of_one_method_per_dataset_are_merged() -> None:
    pelvis = Run("DDPM", five("pelvis", 0.9), {"pelvis": 4.0})
    amos = Run("DDPM", five("amos22-ct", 0.8), {"amos22-ct": 9.0, "overall": 9.0})
    unet = Run("UNet", five("pelvis", 0.7) + five("amos22-ct", 0.6), {"overall": "skipped"})
    text = render("ii", [pelvis, amos, unet])
    assert "| mean ± std | DDPM | UNet |" in text and "| amos22-ct | 9.00 | skipped |" in text
    assert "| overall | – | skipped |" in text  # pooled-slice FID cannot be rebuilt from per-dataset runs
    assert "| overall | 0.87 ± 0.05 | 0.67 ± 0.05 |" in text
    with pytest.raises(Exception, match="both hold case 'pelvis0'"):
        render("ii", [pelvis, pelvis])


def test_split_auto_is_chosen_per_dataset() -> None:
    from seg2med_core.training.cli import _select_split
    from seg2med_core.training.dataset import CaseSpec

    cases = [
        CaseSpec("s1", Path("i"), Path("s"), split="train", dataset="totalsegmentator"),
        CaseSpec("s2", Path("i"), Path("s"), split="test", dataset="totalsegmentator"),
        CaseSpec("a1", Path("i"), Path("s"), split="train", dataset="amos22-ct"),
        CaseSpec("a2", Path("i"), Path("s"), split="val", dataset="amos22-ct"),
        CaseSpec("n1", Path("i"), Path("s"), dataset="Dataset501"),
    ]
    assert [c.case_id for c in _select_split(cases, "auto")] == ["s2", "a2", "n1"]
    assert [c.case_id for c in _select_split(cases, "test")] == ["s2"]
