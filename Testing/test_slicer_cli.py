"""End to end with the real core CLI: segmentation node → files → ``python -m seg2med_core synthesize``
(tiny untrained bundle, 2 DDIM steps) → new volume node in the input's geometry; then cancel a run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
from slicer_fixtures import oblique_labels  # noqa: E402

from Seg2MedLib import nodes  # noqa: E402
from Seg2MedLib.commands import SynthesisOptions  # noqa: E402
from Seg2MedLib.process import RunState  # noqa: E402

TINY = dict(spatial_dims=2, in_channels=2, out_channels=1, channels=(8, 16), attention_levels=(False, True),
            num_res_blocks=1, num_head_channels=8, norm_num_groups=8)


@pytest.fixture(scope="module", autouse=True)
def core_cli_works() -> None:
    """Skip (with the reason) while the core CLI cannot even build its parser (modules still missing)."""
    from Seg2MedLib.commands import child_environment

    done = subprocess.run([sys.executable, "-m", "seg2med_core", "synthesize", "--help"], capture_output=True, text=True,
                          env={**os.environ, **child_environment()}, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"core CLI not usable yet: {done.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = pytest.importorskip("seg2med_core.bundle")
    from seg2med_core.network import PAPER_SCHEDULER, build_network, to_json_config

    meta = bundle.BundleMetadata(
        name="tiny-ct", version="0.0.1", modality="ct", sequence=None, label_set="total",
        network=to_json_config(TINY), scheduler=dict(PAPER_SCHEDULER), spacing_xy=2.0, image_size=32,
        intensity={"kind": "ct_window", "level": 0, "width": 2000}, training_data="none (untrained test bundle)",
        licence="Apache-2.0")
    path = tmp_path_factory.mktemp("bundles") / "tiny_ct"
    bundle.save_bundle(path, build_network(TINY), meta)
    return path


def test_synthesis_through_logic_and_real_cli(tiny_bundle: Path, tmp_path: Path) -> None:
    from Seg2MedLib.logic import Seg2MedLogic

    scene = slicer.vtkMRMLScene()
    logic = Seg2MedLogic(scene)
    labels = oblique_labels((4, 20, 24))
    reference = nodes.add_volume_node(scene, sitk.Cast(labels, sitk.sitkFloat32) * 10 - 1000, "input CT")
    seg_node = nodes.labelmap_to_segmentation_node(scene, labels, {5: "liver", 1: "spleen", 3: "kidney_left"})
    job = logic.prepare_synthesis(seg_node, reference, tiny_bundle, SynthesisOptions(steps=2, sampler="ddim", seed=1,
                                                                                      device="cpu"), workdir=tmp_path)
    assert job.label_set == "total" and job.n_slices == 4 and job.inputs["seg"].exists()
    assert "estimate" not in logic.estimate(job.n_slices, SynthesisOptions(steps=2, device="cpu"))
    runner = logic.start(job)
    events = runner.wait(timeout_s=240)
    assert runner.state == RunState.SUCCEEDED, f"{runner.error}\n{runner.stderr_text[-2000:]}"
    assert any(e.kind == "progress" for e in events)
    node = logic.load_result(job.output, "Synthetic CT", reference)
    result = nodes.volume_node_to_sitk(node)
    assert result.GetSize() == labels.GetSize()
    assert np.allclose(result.GetOrigin(), labels.GetOrigin()) and np.allclose(result.GetDirection(), labels.GetDirection())
    assert np.isfinite(slicer.util.arrayFromVolume(node)).all()


def test_cli_error_reaches_the_runner(tiny_bundle: Path, tmp_path: Path) -> None:
    from Seg2MedLib.commands import child_environment, synthesize_command
    from Seg2MedLib.process import ProcessRunner

    bad_seg = tmp_path / "bad.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 8, 8), 1.5, np.float32)), str(bad_seg))
    runner = ProcessRunner()
    runner.start(synthesize_command(bad_seg, tiny_bundle, tmp_path / "o.nii.gz", SynthesisOptions(steps=1, device="cpu")),
                 env=child_environment())
    runner.wait(timeout_s=120)
    assert runner.state == RunState.FAILED
    assert "bad.nii.gz" in (runner.error or ""), runner.stderr_text[-1000:]
    assert not (tmp_path / "o.nii.gz").exists()


def test_cancel_real_cli(tiny_bundle: Path, tmp_path: Path) -> None:
    from seg2med_core import io as core_io

    from Seg2MedLib.commands import child_environment, synthesize_command
    from Seg2MedLib.process import ProcessRunner

    labels = np.zeros((40, 32, 32), np.uint16)
    labels[:, 8:24, 8:24] = 5
    seg = core_io.Segmentation(image=sitk.GetImageFromArray(labels), names={5: "liver"}, label_set="total")
    seg_path = core_io.write_segmentation(seg, tmp_path / "seg.nii.gz")
    runner = ProcessRunner()
    runner.start(synthesize_command(Path(seg_path), tiny_bundle, tmp_path / "o.nii.gz",
                                    SynthesisOptions(steps=500, sampler="ddpm", device="cpu")), env=child_environment())
    deadline = time.monotonic() + 120
    while runner.running and runner.progress[0] < 1 and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    assert runner.running, f"finished before cancel: {runner.state} {runner.error}"
    runner.cancel(grace_s=5)
    runner.wait(timeout_s=30)
    assert runner.state == RunState.CANCELLED
    assert not (tmp_path / "o.nii.gz").exists()
