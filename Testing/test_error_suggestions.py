"""Every fix an error message suggests works: each `seg2med ...` command it names, and each `--option` it says
to add, is run on the same input and must succeed.

Convention for messages: a runnable command is written in backticks starting with ``seg2med``; options to add
to the failing command are written in backticks starting with ``--`` (``add `--drop-unknown-labels```).
``test_every_suggestion_in_the_source_is_exercised`` fails when a message gains a suggestion no scenario runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io
from seg2med_core.labels import names_for

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
SUGGESTION = re.compile(r"(?<!`)`((?:seg2med |--)[^`]+)`(?!`)")
TOTAL = names_for("total")


def _image(arr: np.ndarray, spacing=(3.0, 3.0, 3.0), origin=(-60.0, -45.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def _labels() -> np.ndarray:
    arr = np.zeros((4, 30, 40), np.uint16)
    arr[1:3, 8:20, 6:18] = 5  # liver
    arr[1:3, 10:18, 24:32] = 1  # spleen
    return arr


def _ct(path: Path) -> Path:
    ct = np.full((4, 30, 40), -1000, np.int16)
    ct[:, 4:26, 3:37] = 40
    io.write_image(_image(ct), path)
    return path


def _seg(path: Path, arr: np.ndarray, **geometry) -> Path:  # noqa: ANN003
    io.write_segmentation(io.Segmentation(_image(arr, **geometry), TOTAL, "total"), path)
    return path


def _prior(seg: Path, out: Path, *extra: str) -> list[str]:
    return ["prior", "--seg", str(seg), "--modality", "ct", "--out", str(out), "--progress-format", "none", *extra]


# ----------------------------------------------------------------------------------------------- scenarios
def phantom_for_mr_model(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    phantom = tmp / "phantom.nii.gz"
    assert cli.main(["phantom", "--out", str(phantom), "--spacing", "8", "8", "8", "--progress-format", "none"]) == 0
    return ["synthesize", "--seg", str(phantom), "--model", str(bundles["mr"]), "--steps", "1",
            "--out", str(tmp / "smr.nii.gz"), "--progress-format", "none"]


def renumbered_map_beside_its_table(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    arr = _labels()
    arr[1, 22:25, 6:9] = 118  # costal_cartilages in this file's numbering (v2: 117)
    folder = tmp / "case"
    folder.mkdir()
    io.write_image(_image(arr), folder / "labels.nii.gz")  # no names in the header
    rows = ["structure,id", *(f"{n},{i}" for i, n in TOTAL.items() if i <= 116), "carpal,117", "costal_cartilages,118"]
    (folder / "structures.csv").write_text("\n".join(rows) + "\n")
    return _prior(folder / "labels.nii.gz", tmp / "prior.nii.gz")


def ids_outside_the_label_set(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    arr = _labels()
    arr[2, 24:27, 30:33] = 150
    seg = tmp / "seg.nii.gz"
    io.write_image(_image(arr), seg)
    return _prior(seg, tmp / "prior.nii.gz", "--label-set", "total")


def table_with_unknown_names(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    arr = _labels()
    arr[2, 24:27, 30:33] = 7
    seg = tmp / "seg.nii.gz"
    io.write_image(_image(arr), seg)
    (tmp / "names.json").write_text('{"5": "Liver", "1": "Spleen", "7": "tumour"}')
    return ["labels", "convert", "--seg", str(seg), "--label-names", str(tmp / "names.json"), "--to", "total",
            "--out", str(tmp / "out.nii.gz")]


def mask_folder_with_unknown_structure(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    folder = tmp / "masks"
    folder.mkdir()
    for k, name in enumerate(["liver", "celiac_trunk"]):
        mask = np.zeros((4, 30, 40), np.uint8)
        mask[1:3, 5 + 10 * k : 12 + 10 * k, 5:15] = 1
        io.write_image(_image(mask), folder / f"{name}.nii.gz")
    return _prior(folder, tmp / "prior.nii.gz")


def overlapping_other_grid(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    seg = _seg(tmp / "coarse.nii.gz", _labels()[::2].copy(), spacing=(3.0, 3.0, 6.0))
    return [*_prior(seg, tmp / "prior.nii.gz"), "--image", str(_ct(tmp / "ct.nii.gz"))]


def training_run_exists(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    seg = _seg(tmp / "seg.nii.gz", _labels())
    ct = _ct(tmp / "ct.nii.gz")

    def args(steps: int) -> list[str]:
        return ["train", "--baseline", "attention-unet", "--image", str(ct), "--segmentation", str(seg), "--modality",
                "ct", "--out", str(tmp / "run"), "--image-size", "16", "--spacing", "6", "--channels", "4,8",
                "--max-steps", str(steps), "--batch-size", "2", "--val-every", "0", "--device", "cpu",
                "--cache-dir", str(tmp / "cache"), "--progress-format", "none"]

    assert cli.main(args(1)) == 0
    return args(2)


def demo_without_mr_model(tmp: Path, bundles: dict[str, Path]) -> list[str]:
    return ["demo", "--out", str(tmp / "demo"), "--ct-model", str(bundles["ct"]), "--mr-model", str(tmp / "no_mr"),
            "--steps", "1", "--device", "cpu"]


#: scenario -> the suggestions its error must make (each is then run)
SCENARIOS: dict[Callable[..., list[str]], set[str]] = {
    phantom_for_mr_model: {"seg2med labels convert"},
    renumbered_map_beside_its_table: {"--label-names", "--drop-unknown-labels"},
    ids_outside_the_label_set: {"--drop-unknown-labels"},
    table_with_unknown_names: {"--drop-unknown-labels"},
    mask_folder_with_unknown_structure: {"--drop-unknown-labels"},
    overlapping_other_grid: {"--resample-seg"},
    training_run_exists: {"--resume"},
    demo_without_mr_model: {"--mr-model"},
}


def _key(suggestion: str) -> str:
    words = suggestion.split()
    return " ".join(words[:3]) if words[0] == "seg2med" else words[0]


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=lambda f: f.__name__)
def test_suggested_fix_succeeds(scenario: Callable[..., list[str]], tiny_bundle: Path, tiny_mr_bundle: Path,
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = scenario(tmp_path, {"ct": tiny_bundle, "mr": tiny_mr_bundle})
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg2med: error: ") and "\n" not in err
    suggestions = SUGGESTION.findall(err)
    assert {_key(s) for s in suggestions} == SCENARIOS[scenario], err
    for suggestion in suggestions:
        words = shlex.split(suggestion)
        if words[0] == "seg2med":
            rc = cli.main(words[1:])
        else:
            rc = cli.main([*argv, *words])
        assert rc == 0, f"`{suggestion}` failed: {capsys.readouterr().err}"
        capsys.readouterr()
    if scenario is phantom_for_mr_model:  # and synthesising from the relabelled file works too
        relabelled = shlex.split(suggestions[0])[-1]
        assert cli.main([*argv[:2], relabelled, *argv[3:]]) == 0


def test_every_suggestion_in_the_source_is_exercised() -> None:
    found: set[str] = set()
    for path in [*(REPO / "seg2med_core").rglob("*.py"), *(REPO / "scripts").glob("*.py")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("  #", 1)[0] if not line.lstrip().startswith("#") else ""
            found |= {_key(s) for s in SUGGESTION.findall(code) if not s.endswith("{")}
    # built at run time: grids.match_to_grid's resample option and cli._relabel_command
    found |= {"--resample-seg", "seg2med labels convert"}
    exercised = set().union(*SCENARIOS.values())
    assert found <= exercised, f"suggestions no scenario runs: {sorted(found - exercised)}"
