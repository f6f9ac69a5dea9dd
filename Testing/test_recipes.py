"""The paper-protocol recipes in configs/recipes/: every seg2med command in them parses with the real CLI,
the configs they name load, Experiment IV runs end to end on a tiny SynthRAD copy with tiny bundles, and
segment_synthrad.sh writes the file names the SynthRAD layout looks for."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_bundle
from test_datasets import labels, make_synthrad

from seg2med_core.datasets import LayoutOptions, discover
from seg2med_core.training import stats
from seg2med_core.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "recipes"


def seg2med_commands(script: Path, env: dict[str, str]) -> list[list[str]]:
    """The ``seg2med ...`` command lines of a recipe (continuations joined, $VARS and ${VARS} expanded)."""
    text = script.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("seg2med "):
            continue
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], line)
        commands.append(shlex.split(line)[1:])
    return commands


def recipe_env(tmp_path: Path) -> dict[str, str]:
    return {
        "SYNTHRAD2023": str(tmp_path / "synthRAD2023"),
        "TOTALSEG": str(tmp_path / "ts"),
        "TOTALSEG_MRI": str(tmp_path / "tsmri"),
        "AMOS": str(tmp_path / "amos"),
        "RUNS": str(tmp_path / "runs"),
        "EVAL": str(tmp_path / "eval"),
        "model": "ddpm",
    }


@pytest.mark.parametrize("name", ["experiment_1_ct.sh", "experiment_2_mr.sh", "experiment_4_conversion.sh"])
def test_recipe_commands_parse_and_configs_exist(name: str, tmp_path: Path) -> None:
    from seg2med_core.cli import build_parser

    commands = seg2med_commands(RECIPES / name, recipe_env(tmp_path))
    assert commands, name
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # SystemExit (fails the test) on any unknown or malformed option
        assert callable(args.func)
        if getattr(args, "config", None):
            TrainConfig.from_json(REPO / args.config)
    tables = [a[a.index("--table") + 1] for a in commands if "--table" in a and "--results" in a]
    assert tables == [{"experiment_1_ct.sh": "ii", "experiment_2_mr.sh": "iv", "experiment_4_conversion.sh": "vi"}[name]]


@pytest.mark.slow  # 20 syntheses with tiny bundles: about 2 minutes on the shared 2-core VM
def test_experiment_4_recipe_end_to_end_on_tiny_synthrad(tmp_path: Path, capsys) -> None:
    """The exact commands of experiment_4_conversion.sh with tiny random bundles: 10 unseen patients each way
    (the same conversion path runs fast with the prior baseline in test_datasets.py)."""
    from seg2med_core.cli import main

    env = recipe_env(tmp_path)
    make_synthrad(Path(env["SYNTHRAD2023"]) / "Task1" / "pelvis", patients=tuple(f"1PA{i:03d}" for i in range(1, 13)))
    make_tiny_bundle(Path(env["RUNS"]) / "exp1_ddpm_ct" / "bundle", "ct")
    make_tiny_bundle(Path(env["RUNS"]) / "exp2_mr_pelvis" / "bundle", "mr", sequence="vibe_in")
    for argv in seg2med_commands(RECIPES / "experiment_4_conversion.sh", env):
        argv += ["--progress-format", "none"] + (["--no-fid", "--no-dice", "--no-images", "--steps", "2", "--device", "cpu"] if "--model" in argv else [])
        assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    mr_to_ct = stats.read_rows_csv(Path(env["EVAL"]) / "exp4_mr_to_ct" / "per_case.csv")
    ct_to_mr = stats.read_rows_csv(Path(env["EVAL"]) / "exp4_ct_to_mr" / "per_case.csv")
    assert len(mr_to_ct) == len(ct_to_mr) == 10
    assert {r["case"] for r in mr_to_ct} == {r["case"] for r in ct_to_mr}  # the same unseen patients both ways
    assert {r["conversion"] for r in mr_to_ct} == {"mr-to-ct"} and {r["conversion"] for r in ct_to_mr} == {"ct-to-mr"}
    table = (Path(env["EVAL"]) / "exp4_table" / "table_vi.md").read_text(encoding="utf-8")
    assert "| MR-to-CT |" in table and "| CT-to-MR |" in table and "| 10 |" in table and table.strip() in printed
    # the 10 are among the 40 MR test patients of experiment_2 (same folder, same default --split-seed)
    from seg2med_core.datasets import assign_splits

    forty = assign_splits(discover(Path(env["SYNTHRAD2023"]) / "Task1" / "pelvis", options=LayoutOptions("mr")), test=11)
    assert {r["case"] for r in mr_to_ct} < {c.case_id for c in forty if c.split == "test"}


@pytest.mark.skipif(sys.platform == "win32", reason="bash recipe")
def test_segment_synthrad_writes_the_names_the_layout_reads(tmp_path: Path) -> None:
    task = make_synthrad(tmp_path / "Task1" / "pelvis", patients=("1PA001", "1PA002"), segs=())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    label = tmp_path / "label.nii.gz"
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(labels(5))
    img.SetSpacing((6.0, 6.0, 6.0))
    sitk.WriteImage(img, str(label))
    fake = bin_dir / "TotalSegmentator"  # stands in for the real tool: records its arguments, writes a label map
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$@" >> "{tmp_path / "calls.txt"}"\n'
        'while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out=$2; shift; done\n'
        f'cp "{label}" "$out"\n',
        encoding="utf-8",
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SYNTHRAD_TASK=str(task))
    subprocess.run(["bash", str(RECIPES / "segment_synthrad.sh")], check=True, env=env, timeout=120)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 6 and sum("-ta total_mr" in c for c in calls) == 2 and sum("-ta tissue_types_mr" in c for c in calls) == 2
    conv = discover(task, options=LayoutOptions(modality="ct", seg_from="mr"))
    assert [(c.segmentation.name, c.tissue_segmentation.name) for c in conv] == [("mr_seg.nii.gz", "mr_tissue.nii.gz")] * 2
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(conv[0].segmentation))), labels(5))
    subprocess.run(["bash", str(RECIPES / "segment_synthrad.sh")], check=True, env=env, timeout=120)
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 6  # second run: nothing is redone
