"""The training loop for the conditional DDPM (paper) and the AttentionUnet regression baseline.

Diffusion step (paper, Sec. II): the target slice ``x0`` and its prior ``c`` are mapped to [-1, 1]; a
random timestep ``t`` and Gaussian noise ``ε`` give ``x_t = DDPMScheduler.add_noise(x0, ε, t)``; the
denoiser sees ``cat(x_t, c)`` and is trained with MSE against ``ε``. Regression step: the network maps
``c`` to ``x0`` (L1 by default). Adam, lr 2e-4, betas (0.9, 0.999); bf16 autocast on CUDA.

Determinism and resuming: the slice order of epoch ``e`` is the ``DistributedSampler`` permutation for
``seed + e``, and the noise/timesteps/augmentation of step ``s`` come from a generator seeded with
``(seed, s, rank)``. A checkpoint stores the step, the position in the epoch, the optimiser state and the
RNG states, so ``--resume`` continues exactly where the checkpoint was taken (on the CPU the resumed run's
weights equal those of an uninterrupted run).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.network import build_network, build_scheduler, conditioning
from seg2med_core.training import ddp
from seg2med_core.training.checkpoint import (
    STATE,
    WEIGHTS,
    TrainState,
    find_checkpoint,
    load_checkpoint,
    read_checkpoint_payload,
    remove_leftovers,
    save_checkpoint,
    set_rng_state,
)
from seg2med_core.training.config import TrainConfig
from seg2med_core.training.dataset import PreparedDataset, PriorRandomiser, Split, TrainingBatcher, split_slices
from seg2med_core.training.runlog import TRAIN_FIELDS, VAL_FIELDS, CsvLog, plot_loss_curve

LogFn = Callable[[str], None]


@dataclass
class StepInfo:
    """What the progress display needs after each optimiser step."""

    step: int
    total: int | None
    epoch: int
    loss: float


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Path | None
    steps: int
    stopped_by: str
    best_score: float | None
    validation: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers
def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 8191 + rank * 131) % (2**63 - 1))


def diffusion_target(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict, by the scheduler's ``prediction_type`` (MONAI's names):
    ``epsilon`` (the paper: the noise), ``sample`` (the clean image x0) or ``v_prediction``."""
    kind = scheduler.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise Seg2MedError(f"unknown prediction_type {kind!r} in the scheduler config")


def augment_pair(target: torch.Tensor, prior: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same small random affine (±5°, ±5 % scale, ±4 % shift) on target and prior (zero padding =
    background in model space). No flips: left and right differ anatomically."""
    b = target.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(5)
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.05
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.08
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    theta = theta.to(target.device, target.dtype)  # parameters from the CPU generator, warping on the device
    grid = F.affine_grid(theta, list(target.shape), align_corners=False)
    both = F.grid_sample(torch.cat([target, prior], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return both[:, :1], both[:, 1:]


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.mixed_precision == "none":
        return None
    if config.mixed_precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _intensity(modality: str) -> dict[str, Any]:
    from seg2med_core.preprocess import CT_WINDOW_LEVEL, CT_WINDOW_WIDTH

    if modality == "ct":
        return {"kind": "ct_window", "level": CT_WINDOW_LEVEL, "width": CT_WINDOW_WIDTH}
    return {"kind": "mr_percentile", "p_lo": 10.0, "p_hi": 90.0}


def _steps_per_epoch(n_train: int, batch_size: int, world_size: int) -> int:
    per_rank = math.ceil(n_train / world_size)
    return max(1, math.ceil(per_rank / batch_size))


def total_steps(config: TrainConfig, n_train: int, world_size: int = 1) -> int | None:
    """Steps the run will take (None when only a time budget limits it)."""
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.epochs is not None:
        limits.append(config.epochs * _steps_per_epoch(n_train, config.batch_size, world_size))
    return min(limits) if limits else None


def check_run_folder(run_dir: str | Path, resume: bool) -> None:
    """Refuse to start in a way that would lose or mix up an earlier run; reads only, writes nothing.

    Without ``resume`` the folder must hold neither a checkpoint nor a training log; with ``resume`` it must
    hold a complete checkpoint whose ``state.pt`` is a valid seg2med training state (checked without
    building the network, so the ``train`` command can refuse before preparing any data).
    """
    run_dir = Path(run_dir)
    latest = run_dir / "checkpoints" / "latest"
    found = find_checkpoint(latest)
    if found is not None and not resume:
        raise Seg2MedError(f"run folder '{run_dir}' already holds a checkpoint: add `--resume` or choose another --out")
    if resume and found is None:
        if latest.is_dir():
            missing = [f for f in (STATE, WEIGHTS) if not (latest / f).is_file()]
            raise Seg2MedError(
                f"cannot resume '{run_dir}': checkpoint '{latest}' is incomplete (no {' and no '.join(missing)}); "
                "start a new run with another --out"
            )
        raise Seg2MedError(f"cannot resume '{run_dir}': there is no checkpoint at '{latest}' (run without --resume)")
    if not resume and (run_dir / "train_log.csv").exists():
        raise Seg2MedError(
            f"run folder '{run_dir}' already holds a training log (train_log.csv) but no checkpoint to resume "
            "from: choose another --out (or delete the folder)"
        )
    if found is not None:
        read_checkpoint_payload(found)


# ------------------------------------------------------------------------------------------ trainer
class Trainer:
    """One training run in ``run_dir`` (``config.json``, logs, ``checkpoints/``, ``bundle/``)."""

    def __init__(
        self,
        config: TrainConfig,
        data: PreparedDataset,
        run_dir: str | Path,
        ctx: ddp.DistContext,
        *,
        log: LogFn | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        data_description: str = "",
    ) -> None:
        config.default_network_for_kind()
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.log = log or (lambda message: None)
        self.on_step = on_step
        self.cancel = cancel
        self.data_description = data_description
        self.split: Split = split_slices(data, config.holdout_fraction, config.holdout_position)
        neighbours, _ = conditioning(config.network)
        self.neighbours = neighbours
        randomiser = None
        if config.prior_randomisation:
            randomiser = PriorRandomiser(
                modality=config.modality,
                jitter=config.prior_jitter / 2000.0 if config.modality == "ct" else config.prior_jitter,
                shift=config.intensity_shift_hu / 2000.0,
                shift_probability=config.shift_probability,
                random_sequences=config.random_sequences,
            )
        self.train_batcher = TrainingBatcher(data, self.split.train, neighbours, randomiser, config.crop_size)
        self.val_batcher = TrainingBatcher(data, self.split.val, neighbours)
        self.val_indices = self._pick_val_indices()
        torch.manual_seed(config.seed)
        self.network = build_network(config.network).to(ctx.device)
        self.network.train()
        if ctx.device.type == "cuda":
            from seg2med_core.fast import set_sdpa

            set_sdpa(self.network, True)  # PyTorch SDPA attention kernels (same weights, much less memory)
            torch.backends.cudnn.benchmark = True  # fixed slice size: let cuDNN pick the fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = ddp.wrap_model(self.network, ctx)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr, betas=config.betas)
        self.scheduler = build_scheduler(config.scheduler, "ddpm") if config.model_kind == "diffusion" else None
        self.amp_dtype = _autocast_dtype(config, ctx.device)
        self.state = TrainState()
        self.total = total_steps(config, len(self.split.train), ctx.world_size)
        self._epoch_batches: tuple[int, list[list[int]]] | None = None

    # -- data order ------------------------------------------------------------------------------
    def _pick_val_indices(self) -> list[int]:
        n = len(self.val_batcher)
        if n == 0 or self.config.val_slices <= 0:
            return []
        k = min(self.config.val_slices, n)
        return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_batches is not None and self._epoch_batches[0] == epoch:
            return self._epoch_batches[1]
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            range(len(self.train_batcher)),
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            shuffle=True,
            seed=self.config.seed,
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        bs = self.config.batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        self._epoch_batches = (epoch, batches)
        return batches

    # -- one step --------------------------------------------------------------------------------
    def _loss(self, indices: list[int], step: int) -> torch.Tensor:
        gen = _step_generator(self.config.seed, step, self.ctx.rank)
        rng = np.random.default_rng([self.config.seed, step, self.ctx.rank])  # randomisation and crops of this step
        target_np, prior_np = self.train_batcher.conditioned(indices, rng)
        device = self.ctx.device
        target = torch.from_numpy(target_np).to(device, non_blocking=True)
        prior = torch.from_numpy(prior_np).to(device, non_blocking=True)
        if self.config.augment:
            target, prior = augment_pair(target, prior, gen)
        x0, cond = target * 2 - 1, prior * 2 - 1
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            if self.scheduler is not None:
                noise = torch.randn(x0.shape, generator=gen).to(device, non_blocking=True)
                t = torch.randint(0, self.scheduler.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
                noisy = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
                pred = self.model(torch.cat([noisy, cond], dim=1), timesteps=t)
                goal = diffusion_target(self.scheduler, x0, noise, t)
            else:
                pred, goal = self.model(cond), x0
        pred = pred.float()
        return F.mse_loss(pred, goal) if self.config.effective_loss == "mse" else F.l1_loss(pred, goal)

    def _train_step(self) -> float:
        batches = self._batches(self.state.epoch)
        indices = batches[self.state.batch_in_epoch]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(indices, self.state.step)
        if not torch.isfinite(loss):
            raise Seg2MedError(f"training loss became {loss.item()} at step {self.state.step} (lower the learning rate?)")
        loss.backward()
        self.optimizer.step()
        self.state.step += 1
        self.state.batch_in_epoch += 1
        if self.state.batch_in_epoch >= len(batches):
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
        return float(loss.detach().item())

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Synthesise the held-out validation slices (DDIM, ``val_steps``) and compare inside the body."""
        from seg2med_core.metrics import image_metrics
        from seg2med_core.preprocess import denormalise_ct
        from seg2med_core.sampler import SamplerConfig, predict_regression, sample_slices

        if not self.val_indices:
            return {}
        target, prior = self.val_batcher.conditioned(self.val_indices)
        body = self.val_batcher.body(self.val_indices)
        sampler = SamplerConfig(kind="ddim", steps=self.config.val_steps, seed=self.config.seed, batch_size=len(self.val_indices))
        self.network.eval()
        try:
            if self.scheduler is not None:
                pred = sample_slices(self.network, self.config.scheduler, prior, sampler, self.ctx.device)
            else:
                pred = predict_regression(self.network, prior[:, self.neighbours], sampler, self.ctx.device)
        finally:
            self.network.train()
        real = target[:, 0]
        if self.config.modality == "ct":
            m = image_metrics(denormalise_ct(pred), denormalise_ct(real), body, "ct", 2000.0)
        else:
            m = image_metrics(pred, real, body, "mr", 1.0)
        return {"ssim": float(m["ssim"]), "mae": float(m["mae"]), "psnr": float(m["psnr"]), "n_slices": len(self.val_indices)}

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _save(self, which: str) -> None:
        save_checkpoint(self.checkpoint_dir / which, self.network, self.optimizer, self.state, self.config.to_dict())

    def resume(self) -> bool:
        """Load ``checkpoints/latest`` (weights, optimiser, step, RNG); False when there is none."""
        folder = find_checkpoint(self.checkpoint_dir / "latest")
        if folder is None:
            return False
        state, rng, saved = load_checkpoint(folder, self.network, self.optimizer, map_location=self.ctx.device)
        for key in ("network", "scheduler", "model_kind", "image_size", "spacing_xy", "modality", "batch_size", "seed"):
            if saved.get(key) != self.config.to_dict().get(key):
                raise Seg2MedError(
                    f"cannot resume '{self.run_dir}': {key} was {saved.get(key)!r} in the checkpoint, now {self.config.to_dict().get(key)!r}"
                )
        self.state = state
        set_rng_state(rng)
        return True

    # -- main loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        """Train (from scratch, or from ``checkpoints/latest`` with ``resume``); full disks give one-line errors."""
        try:
            return self._run(resume)
        except OSError as exc:
            what = f"'{exc.filename}'" if exc.filename else f"in '{self.run_dir}'"
            raise Seg2MedError(f"training stopped at step {self.state.step}: cannot write {what}: {exc.strerror or exc}") from None

    def _run(self, resume: bool) -> TrainResult:
        cfg, ctx = self.config, self.ctx
        check_run_folder(self.run_dir, resume)
        ddp.barrier(ctx)  # every rank checks before rank 0 writes anything (else a slower rank sees rank 0's log)
        resumed = self.resume() if resume else False
        if ctx.is_main:
            for leftover in remove_leftovers(self.checkpoint_dir) + remove_leftovers(self.run_dir):
                self.log(f"removed {leftover.name}, left by an interrupted checkpoint")
        main = ctx.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
            self._write_data_json()
        train_log = CsvLog(self.run_dir / "train_log.csv", TRAIN_FIELDS) if main else None
        val_log = CsvLog(self.run_dir / "val_log.csv", VAL_FIELDS) if main else None
        if resumed and main and train_log is not None and val_log is not None:
            train_log.truncate_after(self.state.step)
            val_log.truncate_after(self.state.step)
            self.log(f"resumed from step {self.state.step} (epoch {self.state.epoch})")
        self.log(
            f"training {cfg.model_kind} {cfg.modality.upper()} model on {len(self.split.train)} slices "
            f"({len(self.split.val)} held out) on {ctx.device} x{ctx.world_size}, "
            f"{'bf16 autocast' if self.amp_dtype else 'fp32'}, batch {cfg.batch_size}, "
            f"{self.total if self.total is not None else '?'} steps"
            + (f", at most {cfg.max_minutes:g} min" if cfg.max_minutes else "")
        )
        t0 = time.monotonic()
        elapsed_before = self.state.elapsed_s
        losses: list[float] = []
        stopped_by = ""
        last_val: dict[str, float] = {}
        last_val_step = -1  # the same on every rank (only rank 0 computes the metrics)
        while True:
            if self.total is not None and self.state.step >= self.total:
                stopped_by = "max_steps" if cfg.max_steps is not None and self.state.step >= cfg.max_steps else "epochs"
                break
            loss = self._train_step()
            losses.append(loss)
            self.state.elapsed_s = elapsed_before + time.monotonic() - t0
            step = self.state.step
            if cfg.log_every and (step % cfg.log_every == 0 or step == 1):
                mean_loss = ddp.mean_over_ranks(ctx, float(np.mean(losses)))
                losses = []
                if train_log is not None:
                    lr = self.optimizer.param_groups[0]["lr"]
                    train_log.append({"step": step, "epoch": self.state.epoch, "loss": mean_loss, "lr": lr, "elapsed_s": self.state.elapsed_s})
            if self.on_step is not None:
                self.on_step(StepInfo(step, self.total, self.state.epoch, loss))
            if cfg.val_every and step % cfg.val_every == 0:
                last_val, last_val_step = self._validate_and_track(val_log), step
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self._checkpoint(train_log, val_log)
            if ddp.any_flag(ctx, self.cancel is not None and self.cancel()):
                self._checkpoint(train_log, val_log)
                raise Cancelled(f"training cancelled at step {self.state.step} (resume with --resume)")
            if cfg.max_minutes is not None and ddp.any_flag(ctx, time.monotonic() - t0 >= cfg.max_minutes * 60):
                stopped_by = "time"
                break
        if losses and train_log is not None:
            train_log.append({"step": self.state.step, "epoch": self.state.epoch, "loss": float(np.mean(losses)),
                              "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": self.state.elapsed_s})
        if cfg.val_every and last_val_step != self.state.step:
            last_val = self._validate_and_track(val_log)
        self._checkpoint(train_log, val_log)
        bundle = self._write_bundle(last_val, stopped_by) if main else None
        ddp.barrier(ctx)
        self.log(f"stopped after {self.state.step} steps ({stopped_by}); bundle: {bundle}")
        return TrainResult(self.run_dir, bundle, self.state.step, stopped_by, self.state.best_score, last_val)

    def _validate_and_track(self, val_log: CsvLog | None) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.ctx.is_main and self.val_indices:
            metrics = self.validate()
            if val_log is not None:
                val_log.append({"step": self.state.step, **metrics})
            self.state.metrics = metrics
            score = metrics["ssim"]
            if self.state.best_score is None or score > self.state.best_score:
                self.state.best_score, self.state.best_step = score, self.state.step
                self._save("best")
            self.log(f"step {self.state.step}: validation SSIM {metrics['ssim']:.4f}, MAE {metrics['mae']:.4g}")
        ddp.barrier(self.ctx)
        return metrics

    def _checkpoint(self, train_log: CsvLog | None, val_log: CsvLog | None) -> None:
        if self.ctx.is_main:
            self._save("latest")
            if train_log is not None and val_log is not None:
                plot_loss_curve(train_log.rows(), val_log.rows(), self.run_dir / "loss_curve.png")
        ddp.barrier(self.ctx)

    # -- outputs ---------------------------------------------------------------------------------
    def _write_data_json(self) -> None:
        cases = [
            {
                "case": c.spec.case_id,
                "dataset": c.spec.dataset,
                "split": c.spec.split,
                "image": str(c.spec.image),
                "segmentation": str(c.spec.segmentation),
                "slices": len(c),
                "n_total": c.n_total,
            }
            for c in self.data.cases
        ]
        payload = {
            "cases": cases,
            "skipped": [{"case": c, "reason": r} for c, r in self.data.skipped],
            "holdout_slices": {k: list(v) for k, v in self.split.holdout.items()},
            "slice_index": "canonical (LPS) axial index, [start, stop)",
            "train_slices": len(self.split.train),
            "val_slices": len(self.split.val),
        }
        (self.run_dir / "data.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    def _label_set(self) -> str:
        if self.config.label_set:
            return self.config.label_set
        found = [str(c.info.get("label_set")) for c in self.data.cases if c.info.get("label_set")]
        return max(set(found), key=found.count) if found else ("total_mr" if self.config.modality == "mr" else "total")

    def _write_bundle(self, last_val: dict[str, float], stopped_by: str) -> Path:
        from seg2med_core.bundle import BundleMetadata, save_bundle

        cfg = self.config
        source = "last"
        best = find_checkpoint(self.checkpoint_dir / "best")
        network = self.network
        device = self.ctx.device
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        metrics: dict[str, Any] = {
            "steps": self.state.step,
            "stopped_by": stopped_by,
            "train_minutes": round(self.state.elapsed_s / 60, 2),
            "device": f"{device_name} x{self.ctx.world_size}" if self.ctx.world_size > 1 else device_name,
        }
        if cfg.bundle_from == "best" and best is not None:
            network = build_network(cfg.network)
            best_state, _, _ = load_checkpoint(best, network, None)
            metrics["validation"] = best_state.metrics
            metrics["bundle_step"] = best_state.step
            source = f"best (step {best_state.step})"
        else:
            metrics["validation"] = last_val
            metrics["bundle_step"] = self.state.step
        holdout = {k: list(v) for k, v in self.split.holdout.items()}
        if holdout:
            metrics["holdout_slices"] = holdout
        description = self.data_description or ", ".join(sorted({c.spec.dataset for c in self.data.cases}))
        training_data = (
            f"{description}: {len(self.data.cases)} case(s), {len(self.split.train)} training slices, "
            f"{len(self.split.val)} held-out slices"
        )
        metadata = BundleMetadata(
            name=cfg.name or f"seg2med-{cfg.modality}-{cfg.model_kind}",
            version="1",
            modality=cfg.modality,
            sequence=cfg.sequence,
            label_set=self._label_set(),
            network=cfg.network,
            scheduler=cfg.scheduler if cfg.model_kind == "diffusion" else {},
            spacing_xy=float(cfg.spacing_xy),
            image_size=int(cfg.image_size),
            intensity=_intensity(cfg.modality),
            training_data=training_data,
            metrics=metrics,
            model_kind=cfg.model_kind,
        )
        path = save_bundle(self.run_dir / "bundle", network, metadata)
        self.log(f"bundle written from the {source} weights: {path}")
        return path
