"""The plain-Python process runner: JSON-line parsing, progress, errors, cancel — with real subprocesses."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from slicer_fixtures import ROOT  # noqa: F401  (puts the module folders on sys.path)

from Seg2MedLib.commands import (SynthesisOptions, TrainingOptions, child_environment, paired_synthesize_command,
                                 synthesize_command, train_command)
from Seg2MedLib.process import ProcessRunner, RunState, error_from_stderr, parse_line

FAKE_CLI = textwrap.dedent(
    """
    import json, sys, time
    mode = sys.argv[1]
    def emit(**kw):
        print(json.dumps(kw), flush=True)
    if mode == "ok":
        print("plain text line", flush=True)
        for i in range(1, 4):
            emit(event="progress", done=i, total=3, message="sampling")
        emit(event="metric", step=3, loss=0.25)
        emit(event="future_kind", x=1)
        emit(event="done", output="out.nii.gz")
    elif mode == "fail":
        emit(event="progress", done=1, total=3, message="sampling")
        print("Traceback noise", file=sys.stderr)
        print("seg2med: error: segmentation 'x.nii.gz' has non-integer labels (e.g. 1.5)", file=sys.stderr)
        sys.exit(2)
    elif mode == "slow":
        for i in range(1000):
            emit(event="progress", done=i, total=1000, message="sampling")
            time.sleep(0.05)
    """
)


@pytest.fixture()
def fake_cli(tmp_path: Path) -> Path:
    path = tmp_path / "fake_cli.py"
    path.write_text(FAKE_CLI, encoding="utf-8")
    return path


def test_parse_line_kinds() -> None:
    assert parse_line('{"event":"progress","done":3,"total":50,"message":"sampling"}\n').data["done"] == 3
    assert parse_line("hello").kind == "log" and parse_line("hello").message == "hello"
    assert parse_line('{"not_an_event": 1}').kind == "log"
    assert parse_line("{broken json").kind == "log"
    assert parse_line('{"event":"metric","step":5,"loss":0.1}').data == {"step": 5, "loss": 0.1}
    assert error_from_stderr("a\nseg2med: error: bad thing\n") == "bad thing"
    assert error_from_stderr("nothing") is None


def test_successful_run_reports_progress_result_and_unknown_events(fake_cli: Path) -> None:
    seen = []
    runner = ProcessRunner(on_event=seen.append)
    runner.start([sys.executable, str(fake_cli), "ok"])
    events = runner.wait(timeout_s=30)
    assert runner.state == RunState.SUCCEEDED and runner.returncode == 0
    assert runner.progress == (3, 3, "sampling")
    assert runner.result == {"output": "out.nii.gz"}
    kinds = [e.kind for e in events]
    assert kinds.count("progress") == 3 and "metric" in kinds and "future_kind" in kinds and "log" in kinds
    assert seen == events


def test_failed_run_shows_the_cli_error_line(fake_cli: Path) -> None:
    runner = ProcessRunner()
    runner.start([sys.executable, str(fake_cli), "fail"])
    runner.wait(timeout_s=30)
    assert runner.state == RunState.FAILED and runner.returncode == 2
    assert runner.error == "segmentation 'x.nii.gz' has non-integer labels (e.g. 1.5)"


def test_cancel_stops_a_running_process(fake_cli: Path) -> None:
    runner = ProcessRunner()
    runner.start([sys.executable, str(fake_cli), "slow"])
    deadline = time.monotonic() + 20
    while runner.progress[0] < 2 and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    assert runner.progress[0] >= 2
    with pytest.raises(ValueError, match="already running"):
        runner.start([sys.executable, str(fake_cli), "ok"])
    runner.cancel(grace_s=5)
    runner.wait(timeout_s=10)
    assert runner.state == RunState.CANCELLED and runner.progress[0] < 999
    runner.start([sys.executable, str(fake_cli), "ok"])  # reusable after a cancel
    runner.wait(timeout_s=30)
    assert runner.state == RunState.SUCCEEDED and runner.error is None


def test_missing_program_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot start"):
        ProcessRunner().start([str(tmp_path / "no-such-program")])


def test_command_builders_validate_and_include_json_progress(tmp_path: Path) -> None:
    cmd = synthesize_command(Path("s.nii.gz"), Path("m"), Path("o.nii.gz"), SynthesisOptions(steps=5, seed=3), image=Path("i.nii.gz"))
    assert cmd[1:4] == ["-m", "seg2med_core", "synthesize"] and cmd[-2:] == ["--progress-format", "json"]
    assert cmd[cmd.index("--seed") + 1] == "3" and "--image" in cmd
    for bad in (SynthesisOptions(sampler="euler"), SynthesisOptions(steps=0), SynthesisOptions(device="tpu")):
        with pytest.raises(ValueError):
            synthesize_command(Path("s"), Path("m"), Path("o"), bad)
    train = train_command(TrainingOptions(data=tmp_path, out=tmp_path / "b", resume=True))
    assert "--resume" in train and "train" in train and train[train.index("--max-steps") + 1] == "1000"
    with pytest.raises(ValueError, match="does not exist"):
        train_command(TrainingOptions(data=tmp_path / "missing", out=tmp_path / "b"))
    assert child_environment()["PYTHONPATH"].split(":")[0] == str(ROOT)


def test_synthesize_command_passes_label_set_and_image_modality() -> None:
    cmd = synthesize_command(Path("s.nii.gz"), Path("m"), Path("o.nii.gz"), SynthesisOptions(sampler="dpmpp_2m"),
                             image=Path("i.nii.gz"), label_set="total_mr", image_modality="mr")
    assert cmd[cmd.index("--label-set") + 1] == "total_mr" and cmd[cmd.index("--image-modality") + 1] == "mr"
    assert cmd[cmd.index("--sampler") + 1] == "dpmpp_2m"
    no_image = synthesize_command(Path("s"), Path("m"), Path("o"), SynthesisOptions(), image_modality="mr")
    assert "--image-modality" not in no_image and "--label-set" not in no_image
    with pytest.raises(ValueError, match="'pet'"):
        synthesize_command(Path("s"), Path("m"), Path("o"), SynthesisOptions(), image=Path("i"), image_modality="pet")


def test_paired_synthesize_command_gives_both_models_a_folder_and_the_sequence(tmp_path: Path) -> None:
    cmd = paired_synthesize_command(Path("s.nii.gz"), Path("ct"), Path("mr"), tmp_path / "out", SynthesisOptions(seed=2),
                                    label_set="total", sequence="t1_gre")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"] == ["ct", "mr"]
    out = cmd[cmd.index("--out") + 1]
    assert out.endswith(os.sep) and Path(out) == tmp_path / "out"  # a folder for the CLI's paired outputs
    assert cmd[cmd.index("--sequence") + 1] == "t1_gre" and cmd[-2:] == ["--progress-format", "json"]
    assert "--sequence" not in synthesize_command(Path("s"), Path("m"), Path("o"), SynthesisOptions())
    with pytest.raises(ValueError, match="steps"):
        paired_synthesize_command(Path("s"), Path("ct"), Path("mr"), tmp_path, SynthesisOptions(steps=0))


def test_auto_device_guess_never_imports_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from Seg2MedLib import estimate

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(estimate.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert estimate.guess_auto_device() == ("cuda", "NVIDIA driver found")
    monkeypatch.setattr(estimate.shutil, "which", lambda name: None)
    monkeypatch.setattr(estimate.sys, "platform", "linux")
    assert estimate.guess_auto_device()[0] == "cpu"
    assert "torch" not in sys.modules
    (tmp_path / "metadata.json").write_text('{"image_size": 128}', encoding="utf-8")
    assert estimate.model_image_size(tmp_path) == 128
    assert estimate.model_image_size(tmp_path / "missing") == 256 and estimate.model_image_size(None) == 256
    from Seg2MedLib.logic import Seg2MedLogic

    text = Seg2MedLogic.estimate(40, SynthesisOptions(steps=10, device="auto"), model_dir=tmp_path)
    assert text.startswith("≈") and "on cpu" in text and "128²" in text and "[auto: no GPU driver found]" in text
