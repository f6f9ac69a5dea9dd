"""``seg2med train`` and ``seg2med evaluate`` (also ``python -m seg2med_core.training.cli``).

Training under ``torchrun --nproc_per_node N`` uses DDP automatically (see :mod:`.ddp`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from seg2med_core.cli_common import SilentReporter, add_progress_argument, make_reporter
from seg2med_core.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLER_KINDS
from seg2med_core.errors import Cancelled, Seg2MedError



# ------------------------------------------------------------------------------------------ arguments
def _format_names() -> tuple[str, ...]:
    from seg2med_core.datasets import format_names

    return format_names()


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", nargs="+", action="extend", default=None, metavar="PATH",
        help="data folder(s) or CSV: a public dataset layout (TotalSegmentator CT/MRI, SynthRAD2023/2025, AMOS22, nnU-Net raw; "
        "see --format), one sub-folder per case, <case>_image/<case>_seg files, or a CSV (image,segmentation[,tissue_segmentation][,split][,dataset])",
    )
    p.add_argument("--format", dest="data_format", default="auto", metavar="FORMAT", help="layout of --data: auto (detect; default), " + ", ".join(_format_names()[1:]))
    p.add_argument("--seg-from", choices=("ct", "mr"), default=None, help="paired layouts (SynthRAD): take the segmentation of this modality's image (the paper's Exp. IV conversion); default: the target modality")
    p.add_argument("--test-cases", type=int, default=0, metavar="N", help="datasets without their own split: hold out N cases per dataset as test (fixed by --split-seed)")
    p.add_argument("--val-cases", type=int, default=0, metavar="N", help="likewise N validation cases per dataset")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the --test-cases/--val-cases split (default 0)")
    p.add_argument("--image", default=None, help="one case: the real image (instead of --data)")
    p.add_argument("--segmentation", "--seg", dest="segmentation", default=None, help="one case: its segmentation")
    p.add_argument("--tissue-segmentation", default=None, help="one case: tissue_types(_mr) segmentation merged in")
    p.add_argument("--dataset-name", default=None, help="dataset name for a single --image case (default: the image's folder)")
    p.add_argument("--modality", choices=("ct", "mr"), default=None, help="modality of the images")
    p.add_argument("--sequence", default=None, help="MR sequence of the prior (vibe_in, t1_gre, ...)")
    p.add_argument("--label-set", default=None, help="label set of the segmentations (guessed when omitted)")
    p.add_argument("--tissue-table", default=None, help="your own tissue table CSV for the prior")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``evaluate`` to the ``seg2med`` parser."""
    p = subparsers.add_parser("train", help="train a conditional DDPM (or the AttentionUnet baseline) on your data")
    _add_data_arguments(p)
    p.add_argument("--out", required=True, help="run folder: config, logs, checkpoints, bundle/")
    p.add_argument("--config", default=None, help="JSON training config (see configs/); flags override it")
    p.add_argument("--model-kind", choices=("diffusion", "regression"), default=None)
    p.add_argument("--baseline", choices=("attention-unet",), default=None, help="train the paper's supervised AttentionUnet baseline")
    p.add_argument("--name", default=None, help="model name stored in the bundle")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--spacing", dest="spacing_xy", type=float, default=None, help="in-plane spacing of the slices (mm)")
    p.add_argument("--channels", default=None, help="network channels, e.g. 32,64,128,128 (attention on the last level)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget: stop cleanly and write the bundle")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--holdout-fraction", type=float, default=None, help="hold out this fraction of each case's slices (contiguous block)")
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--augment", action="store_true", default=None, help="small random affine augmentation")
    p.add_argument("--mixed-precision", choices=("auto", "bf16", "none"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/latest")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (under torchrun: one GPU per process)")
    p.add_argument("--cache-dir", default=None, help="where prepared slices are cached (default ~/.seg2med/cache/slices)")
    add_progress_argument(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="metrics tables and plots of a model or baseline on test cases")
    _add_data_arguments(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", default=None, help="model bundle folder or registry name")
    who.add_argument("--baseline", choices=("prior",), default=None, help="prior: the prior image itself (no network)")
    who.add_argument(
        "--results", nargs="+", default=None, metavar="EVAL_DIR",
        help="no synthesis: print the --table from earlier evaluation folders (e.g. UNet, CycleGAN, pix2pix, DDPM for Table II; the first is compared with the others)",
    )
    p.add_argument("--out", default=None, help="evaluation folder (required unless --results; with --results the table is also written there)")
    p.add_argument(
        "--table", choices=("ii", "iv", "vi"), default="ii",
        help="paper table layout printed at the end: ii = datasets x methods per metric + Mann-Whitney (Exp. I), iv = datasets x metrics (Exp. II), vi = conversions x metrics (Exp. IV)",
    )
    p.add_argument("--run-names", default=None, help="comma-separated column/row labels for the runs of the table (default: method names, MR-to-CT for conversions)")
    p.add_argument("--split", default="auto", help="which split to evaluate: auto (per dataset: its test cases, else val, else all), all, train, val, test")
    p.add_argument("--slices", default=None, help="START:STOP canonical axial slices to evaluate (e.g. a training hold-out)")
    p.add_argument("--sampler", choices=SAMPLER_KINDS, default=DEFAULT_SAMPLER)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--compare", default=None, help="another evaluation folder: Mann–Whitney U per metric (Table III)")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--no-dice", action="store_true")
    p.add_argument("--no-images", action="store_true", help="do not write the synthetic volumes")
    add_progress_argument(p)
    p.set_defaults(func=cmd_evaluate)


# ------------------------------------------------------------------------------------------ helpers
def _cases(args: argparse.Namespace, modality: str | None = None):
    """The cases of ``--data`` (any layout, see :mod:`seg2med_core.datasets`) or of one ``--image``/``--segmentation``."""
    from seg2med_core.datasets import LayoutOptions, assign_splits, discover, label_notes
    from seg2med_core.training.dataset import CaseSpec

    if args.data and (args.image or args.segmentation):
        raise Seg2MedError("give either --data or --image/--segmentation, not both")
    if args.data:
        options = LayoutOptions(modality=modality, seg_from=args.seg_from)
        cases = discover(args.data, args.data_format, options)
        for note in label_notes(cases):
            print(note, file=sys.stderr, flush=True)
        return assign_splits(cases, args.test_cases, args.val_cases, args.split_seed)
    if not (args.image and args.segmentation):
        raise Seg2MedError("give --data FOLDER|CSV, or --image and --segmentation for one case")
    if args.seg_from is not None and args.seg_from != modality:
        raise Seg2MedError("--seg-from needs --data with a paired layout (SynthRAD)")
    image = Path(args.image)
    for path in (image, Path(args.segmentation)):
        if not path.exists():
            raise Seg2MedError(f"'{path}' does not exist")
    tissue = Path(args.tissue_segmentation) if args.tissue_segmentation else None
    case_id = image.name.split(".")[0]
    return [CaseSpec(case_id, image, Path(args.segmentation), tissue, None, args.dataset_name or image.parent.name)]


def _channels(text: str, network: dict[str, Any]) -> dict[str, Any]:
    try:
        channels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise Seg2MedError(f"--channels must be comma-separated integers, got {text!r}") from None
    if not channels or min(channels) < 1:
        raise Seg2MedError(f"--channels must be positive integers, got {text!r}")
    network = dict(network, channels=channels)
    if "attention_levels" in network and len(network["attention_levels"]) != len(channels):
        network["attention_levels"] = [False] * (len(channels) - 1) + [True]
    if "strides" in network and len(network["strides"]) != len(channels) - 1:
        network["strides"] = [2] * (len(channels) - 1)
    return network


def build_config(args: argparse.Namespace):
    """Config file (or defaults) with the command-line flags applied on top."""
    from seg2med_core.training.config import TrainConfig

    base = TrainConfig.from_json(args.config) if args.config else None
    values: dict[str, Any] = base.to_dict() if base else {}
    kind = "regression" if args.baseline else args.model_kind
    overrides = {
        "modality": args.modality,
        "sequence": args.sequence,
        "label_set": args.label_set,
        "model_kind": kind,
        "name": args.name,
        "image_size": args.image_size,
        "spacing_xy": args.spacing_xy,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "max_minutes": args.max_minutes,
        "lr": args.lr,
        "holdout_fraction": args.holdout_fraction,
        "val_every": args.val_every,
        "checkpoint_every": args.checkpoint_every,
        "augment": args.augment,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
    }
    if base is None and args.modality is None:
        raise Seg2MedError("give --modality ct|mr (or a --config that sets it)")
    if args.max_steps is not None and args.epochs is None:
        values["epochs"] = None  # an explicit step count replaces the default epoch count
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig.from_dict(values, source="training settings")
    config.default_network_for_kind()
    if args.channels:
        config.network = _channels(args.channels, config.network)
    return config


class _TrainDisplay:
    """tqdm bar with the running loss (people) or JSON progress lines (Slicer) for rank 0."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.bar = None

    def __call__(self, info) -> None:
        if self.fmt == "tqdm":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=info.total, desc="training", file=sys.stderr, dynamic_ncols=True, initial=info.step - 1)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info.loss:.4f}", epoch=info.epoch, refresh=False)
        elif self.fmt == "json" and (info.step % 10 == 0 or info.step == info.total):
            from seg2med_core.cli_common import emit_json

            emit_json("progress", done=info.step, total=info.total or 0, message="training", loss=round(info.loss, 6))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------ commands
def cmd_train(args: argparse.Namespace) -> int:
    from seg2med_core.device import pick_device
    from seg2med_core.training import ddp
    from seg2med_core.training.dataset import PrepSettings, prepare_dataset
    from seg2med_core.training.train import Trainer, check_run_folder

    config = build_config(args)
    check_run_folder(args.out, args.resume)  # before any data is prepared or anything written
    ctx = ddp.init_distributed(pick_device(args.device))
    reporter = make_reporter(args) if ctx.is_main else SilentReporter()
    display = _TrainDisplay(args.progress_format if ctx.is_main else "none")
    try:
        if args.seg_from is not None and args.seg_from != config.modality:
            raise Seg2MedError(
                f"--seg-from {args.seg_from} with a {config.modality.upper()} model is a conversion: evaluate it with seg2med evaluate, train on same-modality labels"
            )
        cases = _cases(args, config.modality)
        held_out = [c for c in cases if c.split == "test"]
        if held_out:
            cases = [c for c in cases if c.split != "test"]
            reporter.info(f"{len(held_out)} test case(s) are left out of training ({', '.join(c.case_id for c in held_out[:5])}{', ...' if len(held_out) > 5 else ''})")
            if not cases:
                raise Seg2MedError("every case has split 'test': nothing is left to train on")
        settings = PrepSettings(
            modality=config.modality,
            sequence=config.sequence,
            label_set=config.label_set,
            spacing_xy=config.spacing_xy,
            image_size=config.image_size,
            min_body_fraction=config.min_body_fraction,
            tissue_table=args.tissue_table,
        )
        data = None
        for turn in ("main", "others"):  # rank 0 fills the cache, the other ranks then read it
            if (turn == "main") == ctx.is_main:
                data = prepare_dataset(cases, settings, args.cache_dir, progress=reporter.progress, log=reporter.info)
            ddp.barrier(ctx)
        assert data is not None
        reporter.close()
        if not data.cases:
            raise Seg2MedError(f"no usable case among {len(cases)} ({'; '.join(f'{c}: {r}' for c, r in data.skipped[:3])})")
        description = ", ".join(args.data) if args.data else args.image
        trainer = Trainer(config, data, args.out, ctx, log=reporter.info, on_step=display, data_description=str(description))
        result = trainer.run(resume=args.resume)
    finally:
        display.close()
        reporter.close()
        ddp.shutdown(ctx)
    if ctx.is_main:
        reporter.message(f"wrote bundle {result.bundle}")
        reporter.done(output=str(result.bundle), steps=result.steps, stopped_by=result.stopped_by)
    return 0


def _select_split(cases, split: str):
    """Cases of ``split``; ``auto`` chooses per dataset: its test cases, else its val cases, else all of them
    (a dataset never trained on, e.g. AMOS as the paper's unseen M2OLIE, is evaluated whole or on its val split)."""
    if split == "all":
        return list(cases)
    if split == "auto":
        chosen = []
        for dataset in dict.fromkeys(c.dataset for c in cases):
            mine = [c for c in cases if c.dataset == dataset]
            for wanted in ("test", "val", None):
                picked = [c for c in mine if wanted is None or c.split == wanted]
                if picked:
                    chosen.extend(picked)
                    break
        return chosen
    if split not in ("train", "val", "test"):
        raise Seg2MedError(f"--split must be auto, all, train, val or test, got {split!r}")
    chosen = [c for c in cases if c.split == split]
    if not chosen:
        raise Seg2MedError(f"no case has split '{split}'")
    return chosen


def _print_table(args: argparse.Namespace, runs, reporter) -> str:
    from seg2med_core.training.paper_tables import render

    if args.run_names:
        names = [n.strip() for n in args.run_names.split(",")]
        if len(names) != len(runs) or not all(names):
            raise Seg2MedError(f"--run-names needs {len(runs)} non-empty name(s), got {args.run_names!r}")
        for run, name in zip(runs, names):
            run.name = name
            run.settings = {k: v for k, v in run.settings.items() if k != "seg_from"}  # the given name wins
    text = render(args.table, runs)
    reporter.message(text.rstrip())
    return text


def _write_table(out: Path, table: str, text: str) -> Path:
    from seg2med_core.io import atomic_path

    path = out / f"table_{table}.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def cmd_results(args: argparse.Namespace) -> int:
    """``seg2med evaluate --results DIR ...``: the paper table from earlier evaluations (nothing is synthesised)."""
    from seg2med_core.training.paper_tables import load_run

    reporter = make_reporter(args)
    runs = [load_run(folder) for folder in args.results]
    text = _print_table(args, runs, reporter)
    if args.out:
        path = _write_table(Path(args.out), args.table, text)
        reporter.message(f"wrote {path}")
        reporter.done(output=str(path))
    else:
        reporter.done(output=None)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seg2med_core.device import pick_device
    from seg2med_core.sampler import SamplerConfig
    from seg2med_core.training.baselines import PriorBaseline, load_bundle_method
    from seg2med_core.training.evaluate import EvalOptions, evaluate, parse_slices
    from seg2med_core.training.paper_tables import load_run

    if args.results:
        return cmd_results(args)
    if not args.out:
        raise Seg2MedError("give --out EVAL_DIR for the evaluation (only --results works without it)")
    if args.steps < 1:
        raise Seg2MedError(f"--steps must be at least 1, got {args.steps}")
    if args.baseline and not args.modality:
        raise Seg2MedError("--baseline prior needs --modality ct|mr")
    if args.run_names and len(args.run_names.split(",")) != 1 + bool(args.compare):
        raise Seg2MedError(f"--run-names needs {1 + bool(args.compare)} name(s) (this run{' and --compare' if args.compare else ''}), got {args.run_names!r}")
    reporter = make_reporter(args)
    device = pick_device(args.device)
    settings: dict[str, Any] = {"split": args.split, "slices": args.slices, "seg_from": args.seg_from, "format": args.data_format}
    if args.model:
        sampler = SamplerConfig(kind=args.sampler, steps=args.steps, seed=args.seed, batch_size=args.batch_size)
        method = load_bundle_method(args.model, sampler, device, args.tissue_table)
        if args.modality and args.modality != method.modality:
            raise Seg2MedError(f"--modality {args.modality} but model '{args.model}' makes {method.modality.upper()}")
        settings.update(model=str(args.model), sampler=args.sampler, steps=args.steps, seed=args.seed, device=str(device))
    else:
        method = PriorBaseline(args.modality, args.sequence, args.tissue_table)
        settings.update(baseline=args.baseline)
    cases = _select_split(_cases(args, method.modality), args.split)
    options = EvalOptions(
        slices=parse_slices(args.slices),
        label_set=args.label_set,
        fid=not args.no_fid,
        dice=not args.no_dice,
        save_images=not args.no_images,
        dice_device="gpu" if device.type == "cuda" else "cpu",
    )
    try:
        result = evaluate(
            cases, method, args.out, options, compare=args.compare, progress=reporter.progress, log=reporter.info, settings=settings
        )
    finally:
        reporter.close()
    for s in result.summaries:
        if s.dataset == "overall":
            reporter.message(f"{s.metric}: {s.formatted(4)} (n={s.n})")
    runs = [load_run(result.out_dir)] + ([load_run(args.compare)] if args.compare else [])
    table = _write_table(Path(args.out), args.table, _print_table(args, runs, reporter))
    reporter.message(f"wrote {Path(args.out) / 'summary.md'} and {table}")
    reporter.done(output=str(result.out_dir), cases=len(result.rows), skipped=len(result.skipped))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with the same error handling as ``seg2med``."""
    parser = argparse.ArgumentParser(prog="seg2med")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Seg2MedError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if getattr(args, "progress_format", "") == "json":
            print(json.dumps({"event": "error", "message": message}), flush=True)
        print(f"seg2med: error: {message}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"seg2med: cancelled: {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
