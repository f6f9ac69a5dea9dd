"""Batch script (case discovery, CSV, a real run with a fake core) and the training logic (export, loss curve,
resume options, registration) without Slicer's GUI."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
from slicer_fixtures import ROOT, oblique_labels  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import seg2med_batch  # noqa: E402

from Seg2MedLib import nodes  # noqa: E402
from Seg2MedLib.commands import TrainingOptions  # noqa: E402
from Seg2MedLib.process import RunEvent, RunState  # noqa: E402

FAKE_CORE = textwrap.dedent(
    """
    import json, sys
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    seg = args[args.index("--seg") + 1]
    if "broken" in seg:
        print("seg2med: error: segmentation '%s' is empty" % seg, file=sys.stderr); sys.exit(2)
    print(json.dumps({"event": "progress", "done": 1, "total": 1, "message": "sampling"}), flush=True)
    open(out, "w", encoding="utf-8").write("volume")
    if "--metrics" in args:
        json.dump({"ssim": 0.8, "psnr": 25.0, "mae": 50.0, "histcc": 0.9}, open(args[args.index("--metrics") + 1], "w"))
    print(json.dumps({"event": "done", "output": out}), flush=True)
    """
)


def test_find_cases_layouts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "segmentation.nii.gz").write_text("x", encoding="utf-8")
    (tmp_path / "a" / "image.nii.gz").write_text("x", encoding="utf-8")
    (tmp_path / "b.nii.gz").write_text("x", encoding="utf-8")
    (tmp_path / "empty_folder").mkdir()
    cases = seg2med_batch.find_cases(tmp_path)
    assert [(c.name, c.seg is not None, c.image is not None) for c in cases] == [("a", True, True), ("b", True, False), ("empty_folder", False, False)]
    assert "has no segmentation" in cases[2].problem
    with pytest.raises(ValueError, match="no cases"):
        seg2med_batch.find_cases(tmp_path / "empty_folder")


def test_batch_run_writes_outputs_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake_core.py"
    fake.write_text(FAKE_CORE, encoding="utf-8")
    monkeypatch.setattr(seg2med_batch, "synthesize_command",
                        lambda seg, model, out, options, image=None: [sys.executable, str(fake), "--seg", str(seg), "--out", str(out)])
    inp = tmp_path / "in"
    for case in ("case1", "broken"):
        (inp / case).mkdir(parents=True)
        (inp / case / "segmentation.nii.gz").write_text("x", encoding="utf-8")
    (inp / "case1" / "image.nii.gz").write_text("x", encoding="utf-8")
    code = seg2med_batch.main(["--input-dir", str(inp), "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert code == 1  # one case failed
    rows = list(csv.DictReader(open(tmp_path / "out" / "seg2med_batch.csv")))
    by_case = {r["case"]: r for r in rows}
    assert by_case["case1"]["status"] == "ok" and float(by_case["case1"]["ssim"]) == pytest.approx(0.8)
    assert Path(by_case["case1"]["output"]).exists()
    assert by_case["broken"]["status"] == "failed" and "is empty" in by_case["broken"]["error"]
    assert seg2med_batch.main(["--input-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 2


def test_batch_checks_the_device_before_any_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from Seg2MedLib.commands import check_device

    for good in ("auto", "cpu", "cuda", "cuda:1", "mps", "cuda:0,cuda:1", "cuda:0, cuda:2"):
        check_device(good)
    for bad in ("tpu", "cpu,cuda", "cuda:0,cuda:0", "cuda:x", ""):
        with pytest.raises(ValueError, match="is not one of"):
            check_device(bad)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.nii.gz").write_text("x", encoding="utf-8")
    code = seg2med_batch.main(["--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "o"), "--device", "tpu"])
    assert code == 2 and "device 'tpu'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_training_export_curve_resume_and_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from Seg2MedTrainingLib.logic import SEG_FILE, TrainingLogic

    scene = slicer.vtkMRMLScene()
    labels = oblique_labels()
    volume = nodes.add_volume_node(scene, sitk.Cast(labels, sitk.sitkFloat32) * 20 - 1000, "patient 1")
    seg_node = nodes.labelmap_to_segmentation_node(scene, labels, {5: "liver", 1: "spleen", 3: "kidney_left"})
    logic = TrainingLogic(scene)
    folder = logic.export_pairs([(volume, seg_node)], tmp_path / "data")
    case = next(folder.iterdir())
    written = sitk.ReadImage(str(case / SEG_FILE))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(labels))
    assert np.allclose(written.GetDirection(), labels.GetDirection(), atol=1e-6)
    with pytest.raises(ValueError, match="no training pairs"):
        logic.export_pairs([])

    # a fake trainer: metric events feed the curve, and it writes a bundle folder
    fake = tmp_path / "fake_train.py"
    fake.write_text(textwrap.dedent(
        """
        import json, sys, os
        out = sys.argv[sys.argv.index("--out") + 1]
        for step, loss in [(10, 0.9), (20, 0.4), (30, float("nan"))]:
            print(json.dumps({"event": "metric", "step": step, "loss": loss}), flush=True)
        os.makedirs(out, exist_ok=True)
        print(json.dumps({"event": "done", "output": out}), flush=True)
        """))
    import Seg2MedTrainingLib.logic as training_module

    monkeypatch.setattr(training_module, "train_command", lambda options: [sys.executable, str(fake), "--out", str(options.out)])
    runner = logic.start(TrainingOptions(data=folder, out=tmp_path / "bundle", modality="ct", steps=30))
    runner.wait(timeout_s=30)
    assert runner.state == RunState.SUCCEEDED
    assert logic.curve.points == [(10.0, 0.9), (20.0, 0.4)]
    assert logic.resume_options().resume is True
    logic.handle_event(RunEvent("metric", {"step": "x", "loss": "bad"}))  # ignored, no crash
    with pytest.raises(ValueError, match="metadata.json"):
        logic.register()  # the fake bundle has no metadata
    registered = []
    import seg2med_core.registry

    monkeypatch.setattr(seg2med_core.registry, "register_bundle",
                        lambda path, name=None, registry=None: registered.append(Path(path)) or "entry")
    (tmp_path / "bundle" / "metadata.json").write_text(json.dumps({"name": "x"}), encoding="utf-8")
    assert logic.register(registry_path=tmp_path / "reg.json") == "entry" and registered == [tmp_path / "bundle"]


def test_loss_curve_follows_the_trainers_real_json_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child prints with the core's own ``emit_json`` exactly what ``seg2med_core.training.cli`` prints with
    ``--progress-format json``: progress with ``loss`` while training, progress without it while preparing
    the slices, NaN as the string "nan"; all of it reaches the live loss curve correctly."""
    from Seg2MedTrainingLib.logic import TrainingLogic, loss_point

    fake = tmp_path / "fake_train.py"
    fake.write_text(textwrap.dedent(
        """
        import os, sys
        from seg2med_core.cli_common import emit_json
        out = sys.argv[sys.argv.index("--out") + 1]
        emit_json("progress", done=1, total=2, message="preparing slices")
        emit_json("log", message="training on 2 cases")
        for step, loss in [(10, 0.8), (20, float("nan")), (30, 0.3)]:
            emit_json("progress", done=step, total=30, message="training", loss=loss)
        emit_json("metric", step=30, loss=0.25)
        os.makedirs(out, exist_ok=True)
        emit_json("done", output=out, steps=30, stopped_by="max_steps")
        """))
    import Seg2MedTrainingLib.logic as training_module

    monkeypatch.setattr(training_module, "train_command", lambda options: [sys.executable, str(fake), "--out", str(options.out)])
    scene = slicer.vtkMRMLScene()
    logic = TrainingLogic(scene)
    seen: list[RunEvent] = []
    runner = logic.start(TrainingOptions(data=tmp_path, out=tmp_path / "run"), on_event=seen.append)
    runner.wait(timeout_s=60)
    assert runner.state == RunState.SUCCEEDED, runner.stderr_text[-1000:]
    assert logic.curve.points == [(10.0, 0.8), (30.0, 0.3), (30.0, 0.25)]
    assert runner.result["output"] == str(tmp_path / "run")
    assert [e.kind for e in seen].count("progress") == 4  # the caller still gets every event
    assert loss_point(RunEvent("progress", {"done": 5, "total": 9, "message": "preparing"})) is None
    assert loss_point(RunEvent("log", {"message": "step 10: loss 0.1"})) is None
    assert loss_point(RunEvent("metric", {"step": 4, "loss": "0.5"})) == (4.0, 0.5)


def test_batch_keeps_dotted_case_ids_ignores_stale_metrics_reports_folders_and_csv_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    fake = tmp_path / "fake_core.py"
    fake.write_text(FAKE_CORE, encoding="utf-8")
    monkeypatch.setattr(seg2med_batch, "synthesize_command",
                        lambda seg, model, out, options, image=None: [sys.executable, str(fake), "--seg", str(seg), "--out", str(out)])
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for name in ("dup.v1.nii.gz", "dup.v2.nii.gz"):
        (inp / name).write_text(name, encoding="utf-8")
    (inp / "no_seg_here").mkdir()
    (inp / "no_seg_here" / "image.nii.gz").write_text("x", encoding="utf-8")
    out.mkdir()
    (out / "dup.v1_metrics.json").write_text(json.dumps({"ssim": 0.99}), encoding="utf-8")  # from an earlier run
    old_umask = os.umask(0o022)
    try:
        code = seg2med_batch.main(["--input-dir", str(inp), "--output-dir", str(out), "--quiet"])
    finally:
        os.umask(old_umask)
    assert code == 1  # a case was skipped
    rows = {r["case"]: r for r in csv.DictReader(open(out / "seg2med_batch.csv", encoding="utf-8"))}
    assert set(rows) == {"dup.v1", "dup.v2", "no_seg_here"}
    assert (out / "dup.v1_synthetic.nii.gz").read_text(encoding="utf-8") == "volume"
    assert (out / "dup.v2_synthetic.nii.gz").exists()
    assert rows["dup.v1"]["status"] == "ok" and rows["dup.v1"]["ssim"] == ""  # the stale 0.99 is not reported
    assert rows["no_seg_here"]["status"] == "skipped" and "has no segmentation" in rows["no_seg_here"]["error"]
    assert stat.S_IMODE((out / "seg2med_batch.csv").stat().st_mode) == 0o644
    assert sorted(p.name for p in out.iterdir() if ".tmp-" in p.name) == []
