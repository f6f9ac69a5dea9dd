"""The documented Python API: CLI defaults (seed 0), identical output to the CLI, help texts, the example script."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import api, cli

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def test_sampler_defaults_are_the_command_lines() -> None:
    args = cli.build_parser().parse_args(["synthesize", "--seg", "s.nii.gz", "--model", "m", "--out", "o.nii.gz"])
    assert dataclasses.asdict(cli._sampler_config(args)) == dataclasses.asdict(api.SamplerConfig())
    assert api.SamplerConfig().seed == 0 == args.seed


def test_api_and_cli_give_the_same_volume_with_defaults(synthetic_case: dict[str, Path], tiny_bundle: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "cli.nii.gz"
    assert cli.main(["synthesize", "--seg", str(synthetic_case["seg"]), "--image", str(synthetic_case["ct"]),
                     "--model", str(tiny_bundle), "--out", str(out), "--progress-format", "none"]) == 0
    seg = api.read_segmentation(synthetic_case["seg"])
    result = api.synthesize(seg, api.load_model(tiny_bundle), image=api.read_image(synthetic_case["ct"]))
    from_cli = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(from_cli))
    assert result.image.GetOrigin() == from_cli.GetOrigin() and result.image.GetDirection() == from_cli.GetDirection()
    again = api.synthesize(seg, api.load_model(tiny_bundle), image=api.read_image(synthetic_case["ct"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.image), sitk.GetArrayFromImage(result.image))


def test_every_api_call_explains_itself() -> None:
    assert "read_segmentation" in (api.__doc__ or "") and "synthesize" in (api.__doc__ or "")
    for name in api.__all__:
        obj = getattr(api, name)
        if callable(obj) and not isinstance(obj, tuple):
            doc = obj.__doc__ or ""
            assert len(doc.split()) >= 5, f"api.{name} has no help text"


def test_example_script_runs(tiny_bundle: Path, tiny_mr_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "api_demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "api_example.py"), "--out", str(out),
                           "--ct-model", str(tiny_bundle), "--mr-model", str(tiny_mr_bundle), "--steps", "2",
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("phantom.nii.gz", "phantom_maisi.nii.gz", "sct.nii.gz", "smr_from_sct.nii.gz", "report.txt"):
        assert (out / name).is_file(), name
    sct = api.read_image(out / "sct.nii.gz")
    dicom = api.read_image(out / "sct_dicom")
    assert dicom.GetSize() == sct.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(sct))
    assert "total -> maisi" in (out / "report.txt").read_text()
