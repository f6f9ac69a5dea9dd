"""``seg2med`` end to end: outputs, progress formats, and the one-line error for every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import cli, io
from seg2med_core.labels import names_for
from seg2med_core.pipeline import body_mask

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("prior", "synthesize", "convert", "labels", "bundle", "train", "evaluate", "phantom", "demo")


def run_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "seg2med_core", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def geometry(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------------------------------ parser
def test_help_lists_every_subcommand() -> None:
    proc = run_subprocess("--help")
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        assert f"    {name}" in proc.stdout, name
    sub = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(SUBCOMMANDS) <= set(sub)


@pytest.mark.parametrize("command", ["", "prior", "synthesize", "convert", "labels", "bundle", "demo"])
def test_help_is_ascii_for_subprocess_consumers(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Front-ends may decode our output with an ASCII locale (3D Slicer on some systems)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    capsys.readouterr().out.encode("ascii")


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def synthesized(examples: Path, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One CLI run on the 3 mm example with metrics, preview and prior outputs."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("synth")
    paths = {"out": out / "sct.nii.gz", "metrics": out / "m.json", "preview": out / "p.png", "prior": out / "prior.nii.gz",
             "reformat": out / "r.png"}
    rc = cli.main([
        "synthesize", "--seg", str(examples / "example_seg.nii.gz"), "--model", str(tiny_bundle),
        "--image", str(examples / "example_ct_sm.nii.gz"), "--steps", "2", "--seed", "5",
        "--out", str(paths["out"]), "--metrics", str(paths["metrics"]), "--preview", str(paths["preview"]),
        "--prior-out", str(paths["prior"]), "--reformat", str(paths["reformat"]), "--progress-format", "none",
    ])  # fmt: skip
    assert rc == 0
    return paths


def test_synthesize_writes_ct_in_the_segmentation_geometry(examples: Path, synthesized: dict[str, Path]) -> None:
    seg = io.read_segmentation(examples / "example_seg.nii.gz")
    sct = sitk.ReadImage(str(synthesized["out"]))
    assert geometry(sct) == geometry(seg.image)
    assert geometry(sitk.ReadImage(str(synthesized["prior"]))) == geometry(seg.image)
    arr = sitk.GetArrayFromImage(sct)
    assert arr.min() >= -1024 and arr.max() <= 3071
    body = body_mask(seg, io.read_image(examples / "example_ct_sm.nii.gz"))
    assert (arr[~body] == -1000).all()
    assert arr[body].std() > 0  # the body was really sampled


def test_synthesize_writes_metrics_and_preview(synthesized: dict[str, Path]) -> None:
    metrics = json.loads(synthesized["metrics"].read_text(encoding="utf-8"))
    assert {"ssim", "psnr", "mae"} <= set(metrics)
    assert -1 <= metrics["ssim"] <= 1 and metrics["mae"] > 0
    png = synthesized["preview"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    banding = metrics["banding"]  # slice consistency of the synthetic and the real image, and their ratio
    for key in ("max_jump", "mean_jump", "gradient_ratio"):
        assert banding["synthetic"][key] >= 0 and banding["real"][key] >= 0
    assert banding["ratio"]["max_jump"] == pytest.approx(banding["synthetic"]["max_jump"] / banding["real"]["max_jump"])
    assert synthesized["reformat"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p.name for p in synthesized["out"].parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_same_seed_same_volume_and_another_sampler_differs(
    capsys: pytest.CaptureFixture[str], examples: Path, tiny_bundle: Path, synthesized: dict[str, Path], tmp_path: Path
) -> None:
    base = ["synthesize", "--seg", str(examples / "example_seg.nii.gz"), "--model", str(tiny_bundle),
            "--image", str(examples / "example_ct_sm.nii.gz"), "--progress-format", "none"]  # fmt: skip
    again, one_step = tmp_path / "again.nii.gz", tmp_path / "one.nii.gz"
    rc, out, _ = run_main(capsys, *base, "--steps", "2", "--seed", "5", "--batch-size", "7", "--out", str(again))
    assert rc == 0
    assert "metrics (inside the body): SSIM" in out and "MAE" in out
    assert "slice consistency (soft tissue): largest slice jump" in out
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(synthesized["out"])))
    np.testing.assert_array_equal(first, sitk.GetArrayFromImage(sitk.ReadImage(str(again))))
    # the default sampler (dpmpp_2m, 2 steps) vs DDIM with 2 steps: same seed, different volume
    rc, _, _ = run_main(capsys, *base, "--sampler", "ddim", "--steps", "2", "--seed", "5", "--out", str(one_step))
    assert rc == 0
    assert not np.array_equal(first, sitk.GetArrayFromImage(sitk.ReadImage(str(one_step))))


def test_progress_format_json_prints_only_json_lines(synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.nii.gz"
    proc = run_subprocess(
        "synthesize", "--seg", str(synthetic_case["seg"]), "--image", str(synthetic_case["ct"]), "--model", str(tiny_bundle),
        "--steps", "3", "--batch-size", "2", "--out", str(out), "--progress-format", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == progress[-1]["total"] == 3 * 3
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    assert any(e["event"] == "log" and e["message"].startswith("estimated sampling time") for e in events)
    assert events[-1]["event"] == "done" and events[-1]["output"] == str(out)
    assert {"ssim", "psnr", "mae"} <= set(events[-1]["metrics"])
    assert out.exists()


def test_prior_ct_and_mr_keep_geometry(capsys: pytest.CaptureFixture[str], examples: Path, tmp_path: Path) -> None:
    seg_ct = io.read_segmentation(examples / "example_seg.nii.gz")
    rc, _, err = run_main(capsys, "prior", "--seg", str(examples / "example_seg.nii.gz"), "--modality", "ct",
                          "--image", str(examples / "example_ct_sm.nii.gz"), "--out", str(tmp_path / "p_ct.nii.gz"))  # fmt: skip
    assert rc == 0, err
    prior_ct = sitk.ReadImage(str(tmp_path / "p_ct.nii.gz"))
    assert geometry(prior_ct) == geometry(seg_ct.image)
    arr = sitk.GetArrayFromImage(prior_ct)
    assert arr.min() == -1000 and arr.max() > 300  # air outside, bone inside

    seg_mr = io.read_segmentation(examples / "example_seg_mr.nii.gz")
    for seq in ("t1_gre", "custom:7.5,2.4,12"):
        out = tmp_path / f"p_mr_{seq.replace(':', '_').replace(',', '_')}.nii.gz"
        rc, _, err = run_main(capsys, "prior", "--seg", str(examples / "example_seg_mr.nii.gz"), "--modality", "mr",
                              "--sequence", seq, "--out", str(out))  # fmt: skip
        assert rc == 0, err
        prior_mr = sitk.ReadImage(str(out))
        assert geometry(prior_mr) == geometry(seg_mr.image)
        assert sitk.GetArrayFromImage(prior_mr).max() > 0


def test_convert_mr_to_ct_writes_sct_in_mr_geometry(
    capsys: pytest.CaptureFixture[str], examples: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    out, preview = tmp_path / "sct.nii.gz", tmp_path / "conv.png"
    rc, stdout, err = run_main(
        capsys, "convert", "--seg", str(examples / "example_seg_mr.nii.gz"), "--image", str(examples / "example_mr_sm.nii.gz"),
        "--to", "ct", "--model", str(tiny_bundle), "--steps", "1", "--out", str(out), "--preview", str(preview),
        "--progress-format", "none",
    )  # fmt: skip
    assert rc == 0, err
    mr = sitk.ReadImage(str(examples / "example_mr_sm.nii.gz"))
    sct = sitk.ReadImage(str(out))
    assert geometry(sct) == geometry(mr)
    assert np.allclose(np.array(mr.GetDirection()).reshape(3, 3), np.eye(3))  # the MR example is LPS
    assert "total_mr -> total" in err and preview.exists()
    arr = sitk.GetArrayFromImage(sct)
    assert arr.min() >= -1024 and arr.max() <= 3071


def test_labels_list_and_convert(capsys: pytest.CaptureFixture[str], examples: Path, tmp_path: Path) -> None:
    rc, out, _ = run_main(capsys, "labels", "list", "total_mr")
    assert rc == 0
    rows = dict(line.split("\t") for line in out.splitlines())
    assert rows == {str(k): v for k, v in names_for("total_mr").items()}
    rc, out, _ = run_main(capsys, "labels", "list")
    assert rc == 0 and "total_mr" in out and "tissue_types" in out

    dst = tmp_path / "seg_mr.nii.gz"
    rc, out, _ = run_main(capsys, "labels", "convert", "--seg", str(examples / "example_seg.nii.gz"), "--to", "total_mr",
                          "--out", str(dst))  # fmt: skip
    assert rc == 0 and "total -> total_mr" in out
    converted = io.read_segmentation(dst)
    original = io.read_segmentation(examples / "example_seg.nii.gz")
    assert converted.label_set == "total_mr"
    assert geometry(converted.image) == geometry(original.image)
    a, b = sitk.GetArrayFromImage(original.image), sitk.GetArrayFromImage(converted.image)
    liver_ct = {v: k for k, v in original.names.items()}["liver"]
    liver_mr = {v: k for k, v in converted.names.items()}["liver"]
    np.testing.assert_array_equal(a == liver_ct, b == liver_mr)


def test_bundle_info_shows_the_metadata(capsys: pytest.CaptureFixture[str], tiny_mr_bundle: Path) -> None:
    rc, out, _ = run_main(capsys, "bundle", "info", str(tiny_mr_bundle))
    assert rc == 0
    assert "tiny_mr" in out and "sequence t1_gre" in out and "32x32 px at 12 mm" in out


# ------------------------------------------------------------------------------------ bad inputs
def _write(img: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(img, str(path))
    return path


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


@pytest.fixture()
def bad(tmp_path: Path, synthetic_case: dict[str, Path], tiny_bundle: Path) -> dict[str, Path]:
    """Bad inputs next to a good case; each test case names which ones it uses."""
    seg = sitk.ReadImage(str(synthetic_case["seg"]))
    ct = sitk.ReadImage(str(synthetic_case["ct"]))
    labels = sitk.GetArrayFromImage(seg)
    p: dict[str, Path] = {"seg": synthetic_case["seg"], "ct": synthetic_case["ct"], "model": tiny_bundle}
    p["garbage"] = tmp_path / "garbage.nii.gz"
    p["garbage"].write_bytes(b"this is not a NIfTI file" * 10)
    p["float_seg"] = _write(_like(np.where(labels == 5, 1.5, labels).astype(np.float32), seg), tmp_path / "float_seg.nii.gz")
    p["unknown_ids"] = _write(_like(np.where(labels > 0, 150, 0).astype(np.uint16), seg), tmp_path / "unknown_ids.nii.gz")
    p["empty_seg"] = _write(_like(np.zeros_like(labels), seg), tmp_path / "empty_seg.nii.gz")
    moved = sitk.Image(ct)
    moved.SetOrigin((0.0, 0.0, 0.0))
    p["moved_ct"] = _write(moved, tmp_path / "moved_ct.nii.gz")
    p["flat"] = _write(sitk.GetImageFromArray(labels[0]), tmp_path / "flat.nii.gz")
    p["four_d"] = _write(sitk.JoinSeries([seg, seg]), tmp_path / "four_d.nii.gz")
    nan_ct = sitk.GetArrayFromImage(ct).astype(np.float32)
    nan_ct[2, 10, 10] = np.nan
    p["nan_ct"] = _write(_like(nan_ct, ct), tmp_path / "nan_ct.nii.gz")
    p["truncated_model"] = tmp_path / "truncated_model"
    shutil.copytree(tiny_bundle, p["truncated_model"])
    weights = p["truncated_model"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    p["bad_json_model"] = tmp_path / "bad_json_model"
    shutil.copytree(tiny_bundle, p["bad_json_model"])
    (p["bad_json_model"] / "metadata.json").write_text('{"name": "x", "modality": ', encoding="utf-8")
    p["out"] = tmp_path / "out.nii.gz"
    return p


# (argument overrides, expected text in the error); {name} is replaced by the path of bad[name]
BAD_INPUTS = {
    "missing file": ({"--seg": "{tmp}/nope.nii.gz"}, "nope.nii.gz' does not exist"),
    "unreadable file": ({"--seg": "{garbage}"}, "garbage.nii.gz' cannot be read"),
    "non-integer labels": ({"--seg": "{float_seg}"}, "float_seg.nii.gz' has non-integer labels (e.g. 1.5)"),
    "ids not in label set": ({"--seg": "{unknown_ids}", "--label-set": "total_mr"}, "label ids not in label set 'total_mr': 150"),
    "geometry mismatch": ({"--image": "{moved_ct}"}, "are on different voxel grids (origin ("),
    "empty segmentation": ({"--seg": "{empty_seg}"}, "empty_seg.nii.gz' is empty"),
    "2D input": ({"--seg": "{flat}"}, "flat.nii.gz' is 2D"),
    "4D input": ({"--seg": "{four_d}"}, "four_d.nii.gz' is 4D"),
    "NaN in image": ({"--image": "{nan_ct}"}, "nan_ct.nii.gz' has 1 NaN/infinite voxel(s)"),
    "bundle missing": ({"--model": "{tmp}/no_model"}, "model bundle '{tmp}/no_model' does not exist"),
    "bundle truncated": ({"--model": "{truncated_model}"}, "model.safetensors' are unreadable or corrupt"),
    "bundle bad json": ({"--model": "{bad_json_model}"}, "metadata.json' is not valid JSON"),
    "bundle other modality": ({"--model": "{mr_model}"}, "is for CT but model 'tiny_mr' makes MR"),
    "output folder missing": ({"--out": "{tmp}/no_dir/out.nii.gz"}, "--out folder '{tmp}/no_dir' does not exist"),
    "preview not png": ({"--preview": "{tmp}/p.jpg"}, "--preview '{tmp}/p.jpg' must end with .png"),
    "reformat not png": ({"--reformat": "{tmp}/r.jpg"}, "--reformat '{tmp}/r.jpg' must end with .png"),
    "metrics without image": ({"--image": None, "--metrics": "{tmp}/m.json"}, "--metrics needs --image"),
    "zero steps": ({"--steps": "0"}, "--steps must be at least 1, got 0"),
    "coupling too large": ({"--slice-coupling": "2"}, "--slice-coupling must be in [0, 1], got 2"),
    "noise correlation 1": ({"--noise-correlation": "1"}, "--noise-correlation must be in [0, 0.99], got 1"),
    "anchor above 1": ({"--anchor": "1.5"}, "--anchor must be in [0, 1], got 1.5"),
    "anchor nan": ({"--anchor": "nan"}, "--anchor must be in [0, 1], got nan"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_error_and_no_output(
    case: str, bad: dict[str, Path], tiny_mr_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, expected = BAD_INPUTS[case]
    names = {**{k: str(v) for k, v in bad.items()}, "tmp": str(tmp_path), "mr_model": str(tiny_mr_bundle)}
    args = {"--seg": str(bad["seg"]), "--image": str(bad["ct"]), "--model": str(bad["model"]), "--steps": "1",
            "--out": str(bad["out"]), "--progress-format": "none"}  # fmt: skip
    for key, value in overrides.items():
        args[key] = None if value is None else value.format(**names)
    argv = ["synthesize"] + [x for k, v in args.items() if v is not None for x in (k, v)]
    before = set(tmp_path.rglob("*"))
    rc, out, err = run_main(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seg2med: error: "), err
    assert expected.format(**names) in lines[0]
    if case == "geometry mismatch":  # what differs, with both values
        assert "vs (0, 0, 0)" in lines[0] and "size" not in lines[0] and "spacing" not in lines[0]
    assert not bad["out"].exists()
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file


def test_errors_in_a_real_process(synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.nii.gz"
    proc = run_subprocess("synthesize", "--seg", str(tmp_path / "missing.nii.gz"), "--model", str(tiny_bundle), "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"seg2med: error: segmentation '{tmp_path / 'missing.nii.gz'}' does not exist"]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "metadata.json").write_text("not json", encoding="utf-8")
    proc = run_subprocess("synthesize", "--seg", str(synthetic_case["seg"]), "--model", str(broken), "--out", str(out),
                          "--progress-format", "json")  # fmt: skip
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("seg2med: error: ") and "metadata.json' is not valid JSON" in line
    assert json.loads(proc.stdout.strip().splitlines()[-1])["event"] == "error"
    assert not out.exists()


def test_convert_refuses_a_model_of_the_wrong_modality(
    capsys: pytest.CaptureFixture[str], synthetic_case: dict[str, Path], tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "smr.nii.gz"
    rc, _, err = run_main(capsys, "convert", "--seg", str(synthetic_case["seg"]), "--image", str(synthetic_case["ct"]),
                          "--to", "mr", "--model", str(tiny_bundle), "--out", str(out))  # fmt: skip
    assert rc == 2 and "produces CT images but MR was requested" in err and not out.exists()


def test_tissue_segmentation_is_merged_into_the_prior(
    capsys: pytest.CaptureFixture[str], synthetic_case: dict[str, Path], tmp_path: Path
) -> None:
    from seg2med_core.tables import load_ct_table

    seg = sitk.ReadImage(str(synthetic_case["seg"]))
    labels = sitk.GetArrayFromImage(seg)
    tissue = np.zeros_like(labels)
    tissue[:, :, :] = 1  # subcutaneous_fat everywhere: organs must win, the rest of the body becomes fat
    tissue_img = sitk.GetImageFromArray(tissue)
    tissue_img.CopyInformation(seg)
    tissue_path = io.write_segmentation(io.Segmentation(tissue_img, names_for("tissue_types"), "tissue_types"), tmp_path / "t.nii.gz")
    out = tmp_path / "prior.nii.gz"
    rc, _, err = run_main(capsys, "prior", "--seg", str(synthetic_case["seg"]), "--tissue-seg", str(tissue_path),
                          "--modality", "ct", "--image", str(synthetic_case["ct"]), "--out", str(out))  # fmt: skip
    assert rc == 0, err
    prior = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    table = load_ct_table()
    body = body_mask(io.read_segmentation(synthetic_case["seg"]), io.read_image(synthetic_case["ct"]))
    assert np.allclose(prior[body & (labels == 0)], table["subcutaneous_fat"])
    assert np.allclose(prior[labels == 5], table["liver"])
    assert np.allclose(prior[~body], -1000)
