"""Training: config, data discovery/caching, CPU smoke training, exact resume, 2-process gloo DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from seg2med_core.errors import Seg2MedError
from seg2med_core.training import ddp
from seg2med_core.training.config import TrainConfig
from seg2med_core.training.dataset import (
    CaseSpec,
    PreparedCase,
    PreparedDataset,
    PrepSettings,
    discover_cases,
    holdout_block,
    prepare_dataset,
    split_slices,
)
from seg2med_core.training.train import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {
    "spatial_dims": 2,
    "in_channels": 2,
    "out_channels": 1,
    "channels": [8, 8],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 4,
}


def tiny_config(**changes) -> TrainConfig:
    values = dict(
        modality="ct", spacing_xy=6.0, image_size=16, network=TINY_NET, batch_size=2, max_steps=6, epochs=None,
        val_every=0, val_slices=2, val_steps=2, log_every=1, checkpoint_every=3, mixed_precision="none",
    )
    values.update(changes)
    return TrainConfig(**values)


def write_synthetic_case(folder: Path, name: str = "case", shift: int = 0) -> tuple[Path, Path]:
    """A small CT (body cylinder at 40 HU with a 'liver' block at 60 HU) and its label map."""
    z, y, x = np.mgrid[0:6, 0:20, 0:20]
    body = (y - 10) ** 2 + (x - 10) ** 2 <= 64
    liver = body & (abs(y - 9 - shift) <= 3) & (abs(x - 8) <= 3)
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct[liver] = 60
    labels = np.where(liver, 5, 0).astype(np.uint8)  # 5 = liver in TotalSegmentator "total"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arr, suffix in ((ct, "image"), (labels, "seg")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((6.0, 6.0, 6.0))
        path = folder / f"{name}_{suffix}.nii.gz"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths[0], paths[1]


def synthetic_dataset(n_cases: int = 1, n_slices: int = 10, size: int = 16, seed: int = 0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        target = rng.random((n_slices, size, size)).astype(np.float16)
        cases.append(
            PreparedCase(
                spec=CaseSpec(f"c{i}", Path(f"c{i}.nii.gz"), Path(f"c{i}_seg.nii.gz"), dataset="synthetic"),
                target=target,
                prior=np.clip(target + 0.1, 0, 1).astype(np.float16),
                body=np.ones((n_slices, size, size), dtype=bool),
                slice_index=np.arange(n_slices, dtype=np.int32),
                n_total=n_slices,
                info={"label_set": "total"},
            )
        )
    return PreparedDataset(cases, [])


CPU = ddp.DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# ------------------------------------------------------------------------------------------ config
def test_config_from_json_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"modality": "mr", "sequence": "vibe_in", "batch_size": 3, "betas": [0.5, 0.9]}), encoding="utf-8")
    cfg = TrainConfig.from_json(path)
    assert (cfg.modality, cfg.batch_size, cfg.betas, cfg.lr) == ("mr", 3, (0.5, 0.9), 2e-4)
    assert cfg.effective_loss == "mse"
    path.write_text(json.dumps({"modality": "ct", "batch_sise": 3}), encoding="utf-8")
    with pytest.raises(Seg2MedError, match="batch_sise"):
        TrainConfig.from_json(path)
    with pytest.raises(Seg2MedError, match="holdout_fraction"):
        TrainConfig(holdout_fraction=1.5)
    regression = TrainConfig(model_kind="regression")
    regression.default_network_for_kind()
    assert regression.network["class"] == "AttentionUnet" and regression.effective_loss == "l1"


def test_shipped_configs_are_valid() -> None:
    names = sorted(p.name for p in (REPO / "configs").glob("*.json"))
    assert {"demo_ct.json", "demo_mr.json"} <= set(names)
    for name in names:
        cfg = TrainConfig.from_json(REPO / "configs" / name)
        from seg2med_core.network import build_network

        build_network(cfg.network)


# ------------------------------------------------------------------------------------------ data
def test_discover_layouts(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    for name in ("a_image.nii.gz", "a_seg.nii.gz", "b_image.nii.gz", "b_seg.nii.gz", "b_tissue.nii.gz", "c_image.nii.gz"):
        (flat / name).parent.mkdir(parents=True, exist_ok=True)
        (flat / name).touch()
    cases = discover_cases(flat)
    assert [(c.case_id, c.tissue_segmentation is not None, c.dataset) for c in cases] == [("a", False, "flat"), ("b", True, "flat")]

    nested = tmp_path / "root"
    for ds in ("pelvis", "abdomen"):
        case = nested / ds / "p1"
        case.mkdir(parents=True)
        (case / "ct.nii.gz").touch()
        (case / "segmentations").mkdir()
    cases = discover_cases(nested)
    assert sorted((c.dataset, c.case_id, c.segmentation.name) for c in cases) == [
        ("abdomen", "p1", "segmentations"),
        ("pelvis", "p1", "segmentations"),
    ]

    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("image,segmentation,split\nflat/a_image.nii.gz,flat/a_seg.nii.gz,test\n", encoding="utf-8")
    (case,) = discover_cases(csv_path)
    assert case.split == "test" and case.image == tmp_path / "flat" / "a_image.nii.gz"
    csv_path.write_text("image,segmentation,split\nx.nii.gz,y.nii.gz,holdout\n", encoding="utf-8")
    with pytest.raises(Seg2MedError, match="holdout"):
        discover_cases(csv_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Seg2MedError, match="no cases found"):
        discover_cases(tmp_path / "empty")


def test_prepare_reports_skips_and_caches(tmp_path: Path) -> None:
    image, seg = write_synthetic_case(tmp_path / "data", "good")
    bad_img = sitk.GetImageFromArray(np.zeros((6, 20, 21), np.int16))
    bad_img.SetSpacing((6.0, 6.0, 6.0))
    sitk.WriteImage(bad_img, str(tmp_path / "data" / "bad_image.nii.gz"))
    cases = [CaseSpec("good", image, seg, dataset="d"), CaseSpec("bad", tmp_path / "data" / "bad_image.nii.gz", seg, dataset="d")]
    settings = PrepSettings("ct", None, "total", 6.0, 16, 0.02)
    messages: list[str] = []
    data = prepare_dataset(cases, settings, tmp_path / "cache", log=messages.append)
    assert [c.spec.case_id for c in data.cases] == ["good"]
    assert data.skipped[0][0] == "bad" and "geometry" in data.skipped[0][1] and "bad" in messages[0]
    case = data.cases[0]
    assert case.target.shape == (6, 16, 16) and case.n_total == 6
    # background outside the body is 0 (-1000 HU); the liver block is brighter than the body in the prior
    assert float(case.target.min()) == 0.0 and float(case.prior.max()) > float(np.median(case.prior[case.body]))
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1
    again = prepare_dataset(cases[:1], settings, tmp_path / "cache")
    assert isinstance(again.cases[0].target, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.cases[0].target), np.asarray(case.target))
    os.utime(image, ns=(1, 1))  # a changed file gets a new cache entry
    prepare_dataset(cases[:1], settings, tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_holdout_block_and_split() -> None:
    assert holdout_block(112, 0.15, 0.5) == (48, 65)
    assert holdout_block(20, 0.15, 1.0) == (17, 20)
    assert holdout_block(20, 0.0, 0.5) == (0, 0)
    split = split_slices(synthetic_dataset(n_slices=10), 0.2, 0.5)
    assert split.holdout == {"c0": (4, 6)} and [r.row for r in split.val] == [4, 5] and len(split.train) == 8


# ------------------------------------------------------------------------------------------ training
def test_smoke_training_on_real_slices_writes_loadable_bundle(tmp_path: Path, examples: Path) -> None:
    from seg2med_core.bundle import load_bundle

    spec = CaseSpec("ex", examples / "example_ct_sm.nii.gz", examples / "example_seg.nii.gz", dataset="examples")
    data = prepare_dataset([spec], PrepSettings("ct", None, None, 12.0, 32, 0.02), tmp_path / "cache")
    cfg = tiny_config(image_size=32, spacing_xy=12.0, max_steps=4, holdout_fraction=0.2, val_every=4)
    result = Trainer(cfg, data, tmp_path / "run", CPU).run()
    bundle = load_bundle(result.bundle)
    meta = bundle.metadata
    assert (meta.modality, meta.image_size, meta.spacing_xy, meta.model_kind) == ("ct", 32, 12.0, "diffusion")
    assert meta.metrics["holdout_slices"] == {"ex": [12, 18]} and "ssim" in meta.metrics["validation"]
    assert "1 case(s)" in meta.training_data
    for name in ("train_log.csv", "val_log.csv", "loss_curve.png", "config.json", "data.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").is_file()


class _Kill(Exception):
    pass


def test_resume_after_kill_continues_exactly(tmp_path: Path) -> None:
    data = synthetic_dataset(n_slices=10)
    full = Trainer(tiny_config(max_steps=7), data, tmp_path / "full", CPU).run()

    def kill_at_5(info) -> None:
        if info.step == 5:
            raise _Kill()

    with pytest.raises(_Kill):
        Trainer(tiny_config(max_steps=7), data, tmp_path / "killed", CPU, on_step=kill_at_5).run()
    latest = json.loads((tmp_path / "killed" / "checkpoints" / "latest" / "info.json").read_text(encoding="utf-8"))
    assert latest["step"] == 3  # the checkpoint before the kill (checkpoint_every=3)
    with pytest.raises(Seg2MedError, match="--resume"):
        Trainer(tiny_config(max_steps=7), data, tmp_path / "killed", CPU).run()

    trainer = Trainer(tiny_config(max_steps=7), data, tmp_path / "killed", CPU)
    resumed = trainer.run(resume=True)
    assert resumed.steps == full.steps == 7
    a = load_file(str(tmp_path / "full" / "bundle" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "bundle" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a = torch.load(tmp_path / "full" / "checkpoints" / "latest" / "state.pt", weights_only=True)["optimizer"]
    opt_b = torch.load(tmp_path / "killed" / "checkpoints" / "latest" / "state.pt", weights_only=True)["optimizer"]
    for key, state in opt_a["state"].items():
        assert torch.equal(state["exp_avg"], opt_b["state"][key]["exp_avg"]) and int(state["step"]) == int(opt_b["state"][key]["step"]) == 7
    steps = [int(line.split(",")[0]) for line in (tmp_path / "killed" / "train_log.csv").read_text(encoding="utf-8").splitlines()[1:]]
    assert steps == list(range(1, 8))


def test_time_budget_stops_cleanly_with_bundle(tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=None, epochs=None, max_minutes=1e-4)
    result = Trainer(cfg, synthetic_dataset(), tmp_path / "run", CPU).run()
    assert result.stopped_by == "time" and result.steps >= 1 and (result.bundle / "metadata.json").is_file()


def test_regression_baseline_via_cli(tmp_path: Path) -> None:
    from seg2med_core.bundle import load_bundle
    from seg2med_core.training.cli import main

    image, seg = write_synthetic_case(tmp_path / "data", "p1")
    args = [
        "train", "--baseline", "attention-unet", "--image", str(image), "--segmentation", str(seg), "--modality", "ct",
        "--out", str(tmp_path / "run"), "--image-size", "16", "--spacing", "6", "--channels", "4,8",
        "--max-steps", "2", "--batch-size", "2", "--val-every", "0", "--device", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--progress-format", "none",
    ]
    assert main(args) == 0
    bundle = load_bundle(tmp_path / "run" / "bundle")
    assert bundle.metadata.model_kind == "regression" and bundle.metadata.network["class"] == "AttentionUnet"
    assert main(args[:-2] + ["--progress-format", "none", "--channels", "x"]) == 2


def test_ddp_two_processes_gloo_write_one_bundle(tmp_path: Path) -> None:
    image, seg = write_synthetic_case(tmp_path / "data", "p1")
    write_synthetic_case(tmp_path / "data", "p2", shift=2)
    cfg = tiny_config(max_steps=3, val_every=3, holdout_fraction=0.3)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "seg2med_core.training.cli", "train", "--data", str(tmp_path / "data"), "--modality", "ct",
        "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "run"), "--device", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--progress-format", "none",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote bundle") == 1
    meta = json.loads((tmp_path / "run" / "bundle" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["metrics"]["steps"] == 3
    steps = [line.split(",")[0] for line in (tmp_path / "run" / "train_log.csv").read_text(encoding="utf-8").splitlines()[1:]]
    assert steps == ["1", "2", "3"]
    assert not list(tmp_path.glob("run/.bundle*"))


# ------------------------------------------------------------- full disks, leftovers, resume refusals (issue 13)
def test_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that fails mid-way with ENOSPC (as torch.save does on a full disk) at the second checkpoint."""
    import errno

    from seg2med_core.training import checkpoint

    cpu = CPU
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] >= 2:
            Path(f).write_bytes(b"\0" * 100)  # half-written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(Seg2MedError) as info:
        Trainer(tiny_config(max_steps=7), synthetic_dataset(), tmp_path / "run", cpu).run()
    message = str(info.value)
    assert "\n" not in message and "cannot write checkpoint" in message and "no space left on device" in message
    assert "previous checkpoint is intact" in message
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest"]  # no .latest.tmp-* left
    assert json.loads((ckpts / "latest" / "info.json").read_text(encoding="utf-8"))["step"] == 3
    torch.load(ckpts / "latest" / "state.pt", weights_only=True)  # still a complete, readable checkpoint


@pytest.fixture()
def small_tmpfs(tmp_path: Path):  # noqa: ANN201
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_checkpoint_on_a_real_full_tmpfs(small_tmpfs: Path) -> None:
    cpu = CPU

    def fill_disk(info) -> None:  # noqa: ANN001
        if info.step == 4:  # after the first checkpoint (step 3): leave no room for the next one
            with open(small_tmpfs / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                except OSError:
                    pass

    with pytest.raises(Seg2MedError) as info:
        Trainer(tiny_config(max_steps=7), synthetic_dataset(), small_tmpfs / "run", cpu, on_step=fill_disk).run()
    assert "\n" not in str(info.value) and "step" in str(info.value), info.value
    ckpts = small_tmpfs / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest"]
    assert json.loads((ckpts / "latest" / "info.json").read_text(encoding="utf-8"))["step"] == 3


def test_leftover_checkpoint_temp_folders_are_removed_on_resume(tmp_path: Path) -> None:
    cpu = CPU
    data = synthetic_dataset()

    class Kill(Exception):
        pass

    def kill_at_4(info) -> None:  # noqa: ANN001
        if info.step == 4:
            raise Kill()

    with pytest.raises(Kill):
        Trainer(tiny_config(max_steps=6), data, tmp_path / "run", cpu, on_step=kill_at_4).run()
    ckpts = tmp_path / "run" / "checkpoints"
    # what kill -9 during a checkpoint write leaves: a half-written temp folder (and one of a user's own)
    for name in (".latest.tmp-ab12cd34", ".best.tmp-zz99yy88"):
        (ckpts / name).mkdir()
        (ckpts / name / "state.pt").write_bytes(b"half")
    (ckpts / ".latest.tmp-mine").mkdir()  # not seg2med's name pattern: kept
    Trainer(tiny_config(max_steps=6), data, tmp_path / "run", cpu).run(resume=True)
    assert sorted(p.name for p in ckpts.iterdir()) == [".latest.tmp-mine", "latest"]
