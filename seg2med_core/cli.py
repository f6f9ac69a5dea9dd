"""The ``seg2med`` command line (also ``python -m seg2med_core``).

Subcommands: prior, synthesize, convert, labels, bundle, train, evaluate, phantom, demo. Bad input ends
with one line ``seg2med: error: <what and where>`` on stderr and exit code 2; no output file is left.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from seg2med_core import __version__
from seg2med_core.cli_common import add_progress_argument, emit_json, make_reporter
from seg2med_core.errors import Cancelled, Seg2MedError

#: Sampler defaults when the user gives none: DDIM, fewer steps on the CPU so a 3 mm abdomen finishes in minutes.
DEFAULT_STEPS = {"cuda": 50, "mps": 50, "cpu": 20}


# --------------------------------------------------------------------------------------------- helpers
def _add_seg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seg", required=True, help="segmentation: multilabel NIfTI, folder of masks, or .seg.nrrd")
    p.add_argument(
        "--label-set",
        default=None,
        help="label set of --seg (total, total_v1, total_v3, total_mr, ...); guessed from names/ids when omitted",
    )
    p.add_argument("--tissue-seg", default=None, help="tissue_types(_mr) segmentation merged into --seg (paper, II.E)")
    p.add_argument("--tissue-table", default=None, help="your own copy of the tissue table CSV (HU or T1/T2/PD)")


def _add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model bundle folder (metadata.json + model.safetensors) or registry name")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim", help="ddim (default, few steps) or ddpm (paper)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50 on GPU, 20 on CPU; paper: 1000 DDPM)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same volume")
    p.add_argument("--device", default="auto", help="auto (cuda → mps → cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: fits the device memory)")
    p.add_argument("--no-fast", action="store_true", help="GPU: disable bf16/channels-last/SDPA fast path")
    p.add_argument("--compile", action="store_true", help="GPU: torch.compile the network (slow first run)")


def _read_seg(args: argparse.Namespace):
    from seg2med_core import io, labels

    seg = io.read_segmentation(args.seg, label_set=args.label_set)
    if getattr(args, "tissue_seg", None):
        tissue = io.read_segmentation(args.tissue_seg, label_set=None)
        io.check_same_geometry(seg.image, tissue.image, f"segmentation '{args.seg}'", f"tissue segmentation '{args.tissue_seg}'")
        merged = labels.merge_segmentations(sitk.GetArrayFromImage(seg.image), sitk.GetArrayFromImage(tissue.image))
        img = sitk.GetImageFromArray(merged.astype(np.uint16))
        img.CopyInformation(seg.image)
        seg = io.Segmentation(image=img, names=labels.names_for(seg.label_set), label_set=seg.label_set)
    return seg


def _sampler_config(args: argparse.Namespace, device) -> "SamplerConfig":  # noqa: F821
    from seg2med_core.sampler import SamplerConfig

    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(device.type, 20)
    if steps < 1:
        raise Seg2MedError(f"--steps must be at least 1, got {steps}")
    return SamplerConfig(
        kind=args.sampler,
        steps=steps,
        seed=args.seed,
        batch_size=args.batch_size,
        fast=not args.no_fast,
        compile=args.compile,
    )


def _check_out(path: str, what: str = "--out") -> Path:
    out = Path(path)
    if not out.parent.exists():
        raise Seg2MedError(f"{what} folder '{out.parent}' does not exist")
    return out


def _write_json(path: Path, data: dict) -> None:
    from seg2med_core.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, default=float) + "\n")


# ------------------------------------------------------------------------------------------ commands
def cmd_prior(args: argparse.Namespace) -> int:
    from seg2med_core import io
    from seg2med_core.pipeline import _body_mask
    from seg2med_core.prior import prior_image

    out = _check_out(args.out)
    seg = _read_seg(args)
    image = io.read_image(args.image) if args.image else None
    if image is not None:
        io.check_same_geometry(seg.image, image, f"segmentation '{args.seg}'", f"image '{args.image}'")
    body = _body_mask(seg, image, args.image_modality)
    prior = prior_image(seg, args.modality, sequence=args.sequence, body=body, table_path=args.tissue_table)
    io.write_image(prior, out)
    print(f"wrote {out}")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from seg2med_core import io
    from seg2med_core.registry import resolve_bundle
    from seg2med_core.device import pick_device
    from seg2med_core.pipeline import synthesize

    out = _check_out(args.out)
    reporter = make_reporter(args)
    seg = _read_seg(args)
    image = io.read_image(args.image) if args.image else None
    device = pick_device(args.device)
    bundle = resolve_bundle(args.model, device=device)
    config = _sampler_config(args, device)
    reporter.info(f"model {bundle.metadata.name} ({bundle.metadata.modality}), {config.kind} {config.steps} steps on {device}")
    try:
        result = synthesize(
            seg,
            bundle,
            image=image,
            image_modality=args.image_modality,
            sampler=config,
            device=device,
            tissue_table=args.tissue_table,
            progress=reporter.progress,
        )
    finally:
        reporter.close()
    _write_outputs(args, out, result, image, bundle.metadata.modality, seg)
    reporter.done(output=str(out), metrics=result.metrics)
    return 0


def _write_outputs(args, out: Path, result, image, modality: str, seg) -> None:
    from seg2med_core import io

    if getattr(args, "preview", None):
        _write_preview(Path(args.preview), result, image, modality)
    if getattr(args, "metrics", None):
        if image is None:
            raise Seg2MedError("--metrics needs --image (the real image to compare with)")
        _write_json(Path(args.metrics), result.metrics)
    if getattr(args, "prior_out", None):
        io.write_image(result.prior, Path(args.prior_out))
    io.write_image(result.image, out)
    if result.metrics:
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if isinstance(v, (int, float))))
    print(f"wrote {out}")


def _write_preview(path: Path, result, image, modality: str) -> None:
    from seg2med_core.preview import save_preview

    window = (-160.0, 240.0) if modality == "ct" else None
    prior = sitk.GetArrayFromImage(result.prior)
    columns = [("prior", prior, window), (f"synthetic {modality.upper()}", sitk.GetArrayFromImage(result.image), window)]
    if image is not None:
        columns.append((f"real {modality.upper()}", sitk.GetArrayFromImage(image), window))
    save_preview(path, columns, result.metrics or None, body=result.body)


def cmd_convert(args: argparse.Namespace) -> int:
    from seg2med_core import io
    from seg2med_core.registry import resolve_bundle
    from seg2med_core.device import pick_device
    from seg2med_core.pipeline import convert

    out = _check_out(args.out)
    reporter = make_reporter(args)
    seg = _read_seg(args)
    image = io.read_image(args.image)
    device = pick_device(args.device)
    bundle = resolve_bundle(args.model, device=device)
    config = _sampler_config(args, device)
    try:
        result, report = convert(
            image, seg, args.to, bundle, sampler=config, device=device, tissue_table=args.tissue_table, progress=reporter.progress
        )
    finally:
        reporter.close()
    if report is not None:
        reporter.info(f"labels converted: {len(report.mapped)} mapped; no counterpart for: {', '.join(report.unmapped) or 'none'}")
    _write_outputs(args, out, result, None, bundle.metadata.modality, seg)
    reporter.done(output=str(out), unmapped=list(report.unmapped) if report else [])
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from seg2med_core import io, labels
    from seg2med_core.pipeline import convert_segmentation

    if args.labels_command == "list":
        for idx, name in sorted(labels.names_for(args.label_set).items()):
            print(f"{idx}\t{name}")
        return 0
    out = _check_out(args.out)
    seg = io.read_segmentation(args.seg, label_set=args.label_set)
    converted, report = convert_segmentation(seg, args.to)
    io.write_segmentation(converted, out)
    print(f"mapped {len(report.mapped)} classes; no counterpart in {args.to}: {', '.join(report.unmapped) or 'none'}")
    print(f"wrote {out}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from seg2med_core import bundle as bundle_mod

    if args.bundle_command == "info":
        from seg2med_core.registry import resolve_bundle

        print(bundle_mod.bundle_summary(resolve_bundle(args.path)))
        return 0
    metadata = json.loads(Path(args.metadata).read_text()) if args.metadata else {}
    metadata.setdefault("modality", args.modality)
    out = bundle_mod.import_monai_generative_checkpoint(args.checkpoint, args.out, metadata)
    print(f"wrote bundle {out}")
    return 0


# -------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg2med",
        description="Synthetic CT and MR volumes from TotalSegmentator segmentations (conditional diffusion).",
    )
    parser.add_argument("--version", action="version", version=f"seg2med {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prior", help="prior image only (simulated CT/MR from the labels)")
    _add_seg_arguments(p)
    p.add_argument("--modality", choices=("ct", "mr"), required=True)
    p.add_argument("--sequence", default=None, help="MR sequence: vibe_in, vibe_opp, t1_gre, t2_space, t2_fse, dixon_water, or custom:TR,TE,FLIP")
    p.add_argument("--image", default=None, help="real image: the body contour is taken from it")
    p.add_argument("--image-modality", choices=("ct", "mr"), default=None, help="modality of --image (default: the label set's)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prior)

    p = sub.add_parser("synthesize", help="synthetic volume in the segmentation's geometry")
    _add_seg_arguments(p)
    _add_sampler_arguments(p)
    p.add_argument("--image", default=None, help="real image: body contour, and metrics when it has the model's modality")
    p.add_argument("--image-modality", choices=("ct", "mr"), default=None, help="modality of --image (default: the label set's)")
    p.add_argument("--out", required=True)
    p.add_argument("--prior-out", default=None, help="also write the prior image")
    p.add_argument("--preview", default=None, help="side-by-side PNG (prior | synthetic | real) with metrics")
    p.add_argument("--metrics", default=None, help="JSON with SSIM/PSNR/MAE/HistCC inside the body (needs --image)")
    add_progress_argument(p)
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("convert", help="MR→CT or CT→MR: label conversion, body from the source image, synthesis")
    _add_seg_arguments(p)
    _add_sampler_arguments(p)
    p.add_argument("--image", required=True, help="source image (MR for --to ct, CT for --to mr)")
    p.add_argument("--to", choices=("ct", "mr"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prior-out", default=None)
    p.add_argument("--preview", default=None)
    add_progress_argument(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("labels", help="list label sets or convert a segmentation between CT and MR label sets")
    lsub = p.add_subparsers(dest="labels_command", required=True)
    q = lsub.add_parser("list", help="ids and names of a label set")
    q.add_argument("label_set")
    q = lsub.add_parser("convert", help="relabel total ↔ total_mr")
    q.add_argument("--seg", required=True)
    q.add_argument("--label-set", default=None)
    q.add_argument("--to", required=True, choices=("total", "total_mr"))
    q.add_argument("--out", required=True)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("bundle", help="inspect a model bundle or import a MONAI-Generative checkpoint")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    q = bsub.add_parser("info")
    q.add_argument("path")
    q = bsub.add_parser("import", help="MONAI-Generative state dict (.pt/.pth) → bundle folder")
    q.add_argument("checkpoint")
    q.add_argument("--out", required=True)
    q.add_argument("--modality", choices=("ct", "mr"), required=True)
    q.add_argument("--metadata", default=None, help="JSON with metadata fields (network config, spacing, ...)")
    p.set_defaults(func=cmd_bundle)

    for module in _subcommand_modules():
        module.add_subcommands(sub)
    return parser


def _subcommand_modules() -> list:
    from seg2med_core import demo, phantom_cli
    from seg2med_core.training import cli as training_cli

    return [training_cli, phantom_cli, demo]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    json_mode = getattr(args, "progress_format", "tqdm") == "json"
    try:
        return int(args.func(args) or 0)
    except Seg2MedError as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        if json_mode:
            emit_json("error", message=message)
        print(f"seg2med: error: {message}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        if json_mode:
            emit_json("cancelled", message=str(exc))
        print(f"seg2med: cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("seg2med: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
