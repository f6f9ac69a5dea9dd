"""The ``seg2med`` command line (also ``python -m seg2med_core``).

Subcommands: prior, synthesize, convert, labels, bundle, train, evaluate, phantom, demo. Bad input ends
with one line ``seg2med: error: <what and where>`` on stderr and exit code 2, and no output file is
written: every input and output location is checked before the (slow) sampling starts, and results are
written atomically only after every computation has succeeded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import SimpleITK as sitk

from seg2med_core import __version__
from seg2med_core.cli_common import Reporter, add_progress_argument, emit_json, make_reporter
from seg2med_core.defaults import (
    DEFAULT_ANCHOR,
    DEFAULT_NOISE_CORRELATION,
    DEFAULT_SAMPLER,
    DEFAULT_SLICE_COUPLING,
    DEFAULT_STEPS,
    SAMPLER_KINDS,
)
from seg2med_core.errors import Cancelled, Seg2MedError, Terminated

if TYPE_CHECKING:
    import torch

    from seg2med_core.io import Segmentation
    from seg2med_core.mrsignal import Sequence as MRSequence
    from seg2med_core.pipeline import SynthesisResult
    from seg2med_core.sampler import SamplerConfig

#: Soft-tissue window (W400/L40) for CT previews.
CT_PREVIEW_WINDOW = (-160.0, 240.0)
#: Modules that add their own subcommands (``add_subcommands(subparsers)``).
SUBCOMMAND_MODULES = ("seg2med_core.training.cli", "seg2med_core.datasets.cli", "seg2med_core.phantom_cli", "seg2med_core.demo")


# --------------------------------------------------------------------------------------------- helpers
def _add_seg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seg", required=True, help="segmentation: multilabel NIfTI, folder of masks, or .seg.nrrd")
    p.add_argument(
        "--label-set",
        default=None,
        help="label set of --seg (total, total_v1, total_v3, total_mr, ...) or a scheme mapped onto total "
             "(amos, btcv, maisi, kits23, msd_task09_spleen, ...: seg2med labels list); guessed from names/ids when omitted",
    )
    p.add_argument("--tissue-seg", default=None, help="tissue_types(_mr) segmentation merged into --seg (paper, II.E)")
    p.add_argument("--tissue-table", default=None, help="your own copy of the tissue table CSV (HU or T1/T2/PD)")
    _add_label_table_arguments(p)
    p.add_argument("--resample-seg", action="store_true",
                   help="resample --seg onto the --image grid (nearest neighbour) when the grids differ; grids that "
                        "differ only in axis order or flips are reoriented exactly without this option")
    p.add_argument("--phase", choices=("native", "arterial", "portal-venous"), default=None,
                   help="CT contrast phase of the prior (packaged tables; default native); not with --tissue-table")


def _check_phase(args: argparse.Namespace, modality: str) -> str | None:
    """``--phase`` is for CT priors only and excludes ``--tissue-table`` (which sets every value itself)."""
    phase = getattr(args, "phase", None)
    if phase is None:
        return None
    if modality != "ct":
        raise Seg2MedError(f"--phase {phase} is for CT only (MR contrast is set by --sequence)")
    if args.tissue_table:
        raise Seg2MedError(f"--phase {phase} and --tissue-table '{args.tissue_table}': give one (the table sets every value)")
    return phase


def _add_sampler_arguments(p: argparse.ArgumentParser, several: bool = False) -> None:
    if several:
        p.add_argument("--model", required=True, action="append",
                       help="model bundle folder (metadata.json + model.safetensors) or registry name; give a CT and an "
                            "MR model (--model demo_ct --model demo_mr) for a paired CT + MR from one segmentation")
    else:
        p.add_argument("--model", required=True, help="model bundle folder (metadata.json + model.safetensors) or registry name")
    p.add_argument("--sequence", default=None,
                   help="MR output: sequence of the prior (vibe_in, vibe_opp, t1_gre, t2_space, t2_fse, dixon_water or "
                        "custom:TR,TE,FLIP); default: the model's own (vibe_in when it names none)")
    p.add_argument(
        "--sampler",
        choices=SAMPLER_KINDS,
        default=DEFAULT_SAMPLER,
        help=f"{DEFAULT_SAMPLER} (default: DPM-Solver++(2M), deterministic, few steps), ddim, or ddpm (the paper's ancestral sampler)",
    )
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps (default {DEFAULT_STEPS}; paper: 500-1000 DDPM)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same volume (default 0)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps; a comma list (cuda:0,cuda:1) splits the slices over the devices")
    p.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: what fits the device memory)")
    p.add_argument("--slice-coupling", type=float, default=DEFAULT_SLICE_COUPLING, metavar="W",
                   help="blend each slice's x0 prediction with its adjacent slices' at every step, weight W x noise level, "
                        f"0..1 (training-free 2.5D consistency; default {DEFAULT_SLICE_COUPLING:g})")
    p.add_argument("--noise-correlation", type=float, default=DEFAULT_NOISE_CORRELATION, metavar="R",
                   help=f"correlation of adjacent slices' starting noise, 0..0.99 (default {DEFAULT_NOISE_CORRELATION:g})")
    p.add_argument("--anchor", type=float, default=DEFAULT_ANCHOR, metavar="S",
                   help="class anchoring after sampling, 0..1: shift each labelled class by S x the median of (output - "
                        "prior) inside it, so the tissue table / --phase sets each organ's level and the model its "
                        f"texture (1: class medians equal the prior's; default {DEFAULT_ANCHOR:g})")
    p.add_argument("--no-fast", action="store_true", help="disable the fast path (SDPA, channels_last, bf16 where native): MONAI's plain fp32")
    compiling = p.add_mutually_exclusive_group()
    compiling.add_argument("--compile", dest="compile", action="store_true", default=None,
                           help="torch.compile the network (default: automatic on GPU for volumes big enough to pay "
                                "for the ~40 s first compilation, which is cached on disk)")
    compiling.add_argument("--no-compile", dest="compile", action="store_false", help="never torch.compile")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                   help="torch.compile mode with --compile; reduce-overhead adds CUDA graphs")


def _scheme_names() -> tuple[str, ...]:
    from seg2med_core.label_tables import scheme_names

    return scheme_names()


def _add_label_table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-names", default=None, metavar="FILE",
                   help="id -> name table of --seg (CSV id,name; JSON; ITK-SNAP label file; Slicer colour table): "
                        "classes are mapped by name onto the label set")
    p.add_argument("--drop-unknown-labels", action="store_true",
                   help="leave out label ids / structures that fit no class of the label set (reported) instead of refusing")


def _read_seg(args: argparse.Namespace, info: "Any | None" = None) -> "Segmentation":
    """``--seg`` (+ ``--tissue-seg`` merged in, organs win) as a Segmentation."""
    from seg2med_core import grids, io, labels

    seg = io.read_segmentation(args.seg, label_set=args.label_set, label_names=args.label_names,
                               drop_unknown=args.drop_unknown_labels, info=info)
    if getattr(args, "tissue_seg", None):
        tissue = io.read_segmentation(args.tissue_seg, label_set=None)
        tissue_img = grids.match_to_grid(tissue.image, seg.image, f"tissue segmentation '{args.tissue_seg}'",
                                         f"segmentation '{args.seg}'", resample_option=None, info=info)
        merged = labels.merge_segmentations(sitk.GetArrayFromImage(seg.image), sitk.GetArrayFromImage(tissue_img))
        img = sitk.GetImageFromArray(merged.astype(np.uint16))
        img.CopyInformation(seg.image)
        seg = io.Segmentation(image=img, names=labels.names_for(seg.label_set), label_set=seg.label_set)
    return seg


def _inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The input files of a command (for :func:`check_distinct`)."""
    return {opt: getattr(args, attr, None) for opt, attr in
            (("--seg", "seg"), ("--image", "image"), ("--tissue-seg", "tissue_seg"), ("--tissue-table", "tissue_table"))}  # fmt: skip


def _read_image_matching(
    args: argparse.Namespace, seg: "Segmentation", info: "Any | None" = None
) -> tuple["Segmentation", sitk.Image]:
    """Read ``--image`` and bring the segmentation onto its voxel grid: unchanged when the grids agree,
    reordered exactly when they differ only in axis order (one info line), resampled (nearest neighbour)
    with ``--resample-seg``; otherwise the one-line error naming what differs."""
    from seg2med_core import grids, io

    from seg2med_core.preprocess import check_not_constant

    image = io.read_image(args.image)
    check_not_constant(image, f"image '{args.image}'")
    seg = grids.match_segmentation(seg, image, f"segmentation '{args.seg}'", f"image '{args.image}'",
                                   resample=bool(getattr(args, "resample_seg", False)), info=info)
    return seg, image


def parse_sequence(text: str | None) -> "str | MRSequence | None":
    """``--sequence``: a preset name, or ``custom:TR,TE,FLIP`` (ms, ms, degrees) for a spoiled GRE."""
    if text is None or not text.startswith("custom:"):
        return text
    from seg2med_core.mrsignal import custom_sequence

    parts = text.removeprefix("custom:").split(",")
    try:
        tr, te, flip = (float(v) for v in parts)
    except ValueError:
        raise Seg2MedError(f"--sequence '{text}' must look like custom:TR,TE,FLIP (e.g. custom:7.5,4.8,10)") from None
    return custom_sequence(tr, te, flip)


def _sampler_config(args: argparse.Namespace) -> "SamplerConfig":
    from seg2med_core.sampler import SamplerConfig

    steps = args.steps
    if steps < 1:
        raise Seg2MedError(f"--steps must be at least 1, got {steps}")
    if args.seed is not None and args.seed < 0:
        raise Seg2MedError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.batch_size is not None and args.batch_size < 1:
        raise Seg2MedError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.slice_coupling <= 1.0:
        raise Seg2MedError(f"--slice-coupling must be in [0, 1], got {args.slice_coupling:g}")
    if not 0.0 <= args.noise_correlation <= 0.99:
        raise Seg2MedError(f"--noise-correlation must be in [0, 0.99], got {args.noise_correlation:g}")
    if not 0.0 <= args.anchor <= 1.0:  # also refuses nan
        raise Seg2MedError(f"--anchor must be in [0, 1], got {args.anchor:g}")
    return SamplerConfig(
        kind=args.sampler,
        steps=steps,
        seed=args.seed,
        batch_size=args.batch_size,
        fast=not args.no_fast,
        compile=args.compile,
        compile_mode=None if args.compile_mode == "default" else args.compile_mode,  # as SamplerConfig()
        slice_coupling=args.slice_coupling,
        noise_correlation=args.noise_correlation,
    )


def check_output(path: str | None, option: str, suffixes: tuple[str, ...] = ()) -> Path | None:
    """Fail before any work when an output cannot be written: missing folder, wrong suffix, a folder in the
    way, a folder without write permission or on a read-only or full disk (a file is created and removed
    there to find out). Temporary files left in that folder by killed seg2med runs are cleaned up."""
    from seg2med_core import io
    from seg2med_core.filecheck import free_bytes, suffix_of

    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise Seg2MedError(f"{option} '{out}' is a folder; give a file name")
    if not out.parent.is_dir():
        raise Seg2MedError(f"{option} folder '{out.parent}' does not exist")
    if suffixes and not out.name.lower().endswith(suffixes):
        raise Seg2MedError(f"{option} '{out}' must end with {' or '.join(suffixes)}")
    if suffix_of(out.name) == ".mhd" and not out.name.endswith(".mhd"):
        raise Seg2MedError(f"{option} '{out}': give .mhd outputs a lower-case suffix (the header names its data file)")
    if out.exists() and not out.is_file():
        raise Seg2MedError(f"{option} '{out}' exists and is not a regular file")
    io.clean_stale_temp_files(out.parent)
    probe = io._temp_name(out)
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise Seg2MedError(f"{option} '{out}' cannot be written: {exc.strerror} (folder '{out.parent}')") from None
    free = free_bytes(out.parent)
    if free is not None and free < MIN_FREE_BYTES:
        raise Seg2MedError(f"{option} '{out}' cannot be written: its disk is full ({free} bytes free)")
    return out


#: An output folder with less free space than this is reported as full before any work starts.
MIN_FREE_BYTES = 64 * 1024


def _file_key(path: str | Path) -> tuple:
    """Identity of a path: (device, inode) when it exists, else its resolved spelling (symlinks followed)."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))


def check_distinct(inputs: dict[str, str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output (through a symlink,
    a hard link or another spelling such as ``./a/../a/x.nii.gz``): it would be replaced or lost."""
    seen: dict[tuple, tuple[str, str]] = {}
    for option, value in inputs.items():
        if value is not None:
            seen.setdefault(_file_key(value), (option, str(value)))
            seen.setdefault(("path", os.path.normcase(os.path.realpath(value))), (option, str(value)))
    for option, value in outputs.items():
        if value is None:
            continue
        keys = {_file_key(value), ("path", os.path.normcase(os.path.realpath(value)))}
        for key in keys:
            if key in seen:
                other, other_value = seen[key]
                role = "input" if other in inputs else "output"
                raise Seg2MedError(
                    f"{option} '{value}' is the same file as {role} {other} '{other_value}': choose another output name"
                )
        for key in keys:
            seen[key] = (option, str(value))


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def check_volume_output(args: argparse.Namespace) -> tuple[Path, bool]:
    """``--out`` of synthesize/convert: an image file, or (a folder: existing and empty, or a path ending with
    '/') a DICOM series; ``--dicom-source`` is read now so a bad one fails before sampling."""
    from seg2med_core.dicom_out import is_dicom_output, read_source_attributes

    if not is_dicom_output(args.out):
        if args.dicom_source:
            raise Seg2MedError("--dicom-source needs a DICOM --out folder (end it with '/')")
        out = check_output(args.out, "--out", IMAGE_SUFFIXES)
        assert out is not None
        return out, False
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise Seg2MedError(f"--out folder '{out}' is not empty; give a new or empty folder for the DICOM series")
    if not out.parent.is_dir():
        raise Seg2MedError(f"--out folder '{out.parent}' does not exist")
    if args.dicom_source:
        read_source_attributes(args.dicom_source)
    return out, True


def write_volume(img: sitk.Image, out: Path, dicom: bool, modality: str, args: argparse.Namespace,
                 info: Any = None) -> None:
    """Write the synthetic volume: image file, or DICOM series (``dicom_out.write_dicom_series``)."""
    from seg2med_core import io
    from seg2med_core.dicom_out import write_dicom_series

    if dicom:
        write_dicom_series(img, out, modality, source=args.dicom_source, info=info)
    else:
        io.write_image(img, out)


def _add_volume_output_arguments(p: argparse.ArgumentParser, help_out: str) -> None:
    p.add_argument("--out", required=True,
                   help=help_out + "; a folder (existing and empty, or ending with '/') gets a DICOM series")
    p.add_argument("--dicom-source", default=None, metavar="DICOM",
                   help="with a DICOM --out: copy patient, study and frame-of-reference attributes from this DICOM "
                        "file or folder (default: anonymous patient, new study)")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from seg2med_core.cli_common import _json_safe
    from seg2med_core.io import write_json

    write_json(path, _json_safe(data))


def metrics_line(metrics: dict[str, Any], modality: str) -> str:
    """One-line summary such as ``SSIM 0.912   PSNR 27.31 dB   MAE 35.2 HU   HistCC 0.951``."""
    from seg2med_core.preview import format_metrics

    return format_metrics(metrics, "HU" if modality == "ct" else "")


# ------------------------------------------------------------------------------------------ commands
def cmd_prior(args: argparse.Namespace) -> int:
    from seg2med_core import io

    out = check_output(args.out, "--out", IMAGE_SUFFIXES)
    assert out is not None
    check_distinct(_inputs(args), {"--out": out})
    reporter = make_reporter(args)
    sequence = parse_sequence(args.sequence)
    if sequence is not None and args.modality != "mr":
        raise Seg2MedError(f"--sequence '{args.sequence}' is only for --modality mr")
    seg = _read_seg(args, reporter.info)
    image = None
    if args.image:
        seg, image = _read_image_matching(args, seg, reporter.info)
    phase = _check_phase(args, args.modality)
    from seg2med_core.pipeline import body_mask  # torch is imported only once the inputs are known to be good
    from seg2med_core.prior import prior_image

    body = body_mask(seg, image, args.image_modality)
    prior = prior_image(seg, args.modality, sequence=sequence, body=body, table_path=args.tissue_table, phase=phase)
    io.write_image(prior, out)
    reporter.message(f"wrote {out}")
    reporter.done(output=str(out))
    return 0


def _load_model(args: argparse.Namespace, reporter: Reporter) -> tuple[Any, Any]:
    """The bundle on the first ``--device``, and the ``--device`` list (several devices share the slices)."""
    from seg2med_core.bundle import load_bundle
    from seg2med_core.device import parse_devices
    from seg2med_core.registry import resolve_bundle_path

    devices = parse_devices(args.device)
    path = resolve_bundle_path(args.model, progress=reporter.progress)
    return load_bundle(path, device=devices[0]), devices


def cmd_synthesize(args: argparse.Namespace) -> int:
    from seg2med_core import io

    if isinstance(args.model, list):
        if len(args.model) > 2:
            raise Seg2MedError(f"--model may be given once, or twice (one CT and one MR model), not {len(args.model)} times")
        if len(args.model) == 2:
            return _synthesize_pair(args)
        args.model = args.model[0]
    out, dicom = check_volume_output(args)
    preview = check_output(args.preview, "--preview", (".png",))
    metrics_path = check_output(args.metrics, "--metrics", (".json",))
    prior_out = check_output(args.prior_out, "--prior-out", IMAGE_SUFFIXES)
    reformat = check_output(args.reformat, "--reformat", (".png",))
    check_distinct(_inputs(args), {"--out": out, "--prior-out": prior_out, "--preview": preview, "--metrics": metrics_path,
                                   "--reformat": reformat})
    if metrics_path is not None and not args.image:
        raise Seg2MedError("--metrics needs --image (the real image to compare with)")
    reporter = make_reporter(args)
    seg = _read_seg(args, reporter.info)
    image = None
    if args.image:
        seg, image = _read_image_matching(args, seg, reporter.info)
    from seg2med_core.pipeline import check_compatible, synthesize  # torch: only once the inputs are known to be good

    bundle, devices = _load_model(args, reporter)
    check_compatible(seg, bundle, relabel_hint=_relabel_command(args, bundle.metadata.modality))
    modality = bundle.metadata.modality
    image_modality = args.image_modality or _seg_modality(seg)
    if metrics_path is not None and image_modality != modality:
        raise Seg2MedError(f"--metrics needs a real {modality.upper()} --image; '{args.image}' is {image_modality.upper()}")
    config = _sampler_config(args)
    phase = _check_phase(args, modality)
    sequence = _check_sequence(args, modality)
    try:
        result = synthesize(
            seg,
            bundle,
            image=image,
            image_modality=image_modality,
            sampler=config,
            device=devices,
            tissue_table=args.tissue_table,
            phase=phase,
            sequence=sequence,
            anchor=args.anchor,
            progress=reporter.progress,
            info=reporter.info,
        )
    finally:
        reporter.close()
    with io.output_group():  # all outputs or none (the volume last: a DICOM folder is moved into place at once)
        if prior_out is not None:
            io.write_image(result.prior, prior_out)
        if metrics_path is not None:
            _write_json(metrics_path, result.metrics)
        if preview is not None:
            _write_preview(preview, result, seg, modality, image, f"real {modality.upper()}")
        if reformat is not None:
            _write_reformat(reformat, result, modality, image if image_modality == modality else None, f"real {modality.upper()}")
        write_volume(result.image, out, dicom, modality, args, reporter.info)
    if result.metrics:
        reporter.message("metrics (inside the body): " + metrics_line(result.metrics, modality))
        banding = result.metrics.get("banding") or {}
        if "synthetic" in banding:
            from seg2med_core.metrics import banding_line

            reporter.message("slice consistency (soft tissue): " + banding_line(banding, "HU" if modality == "ct" else ""))
    reporter.message(f"wrote {out} ({result.slices_sampled} slices sampled in {result.seconds_sampling:.1f} s)")
    reporter.done(output=str(out), metrics=result.metrics, seconds_sampling=round(result.seconds_sampling, 3))
    return 0


def _check_sequence(args: argparse.Namespace, modality: str) -> "str | MRSequence | None":
    """``--sequence`` of synthesize/convert: MR only (``None``: the model's own sequence, else vibe_in)."""
    text = getattr(args, "sequence", None)
    if text is None:
        return None
    if modality != "mr":
        raise Seg2MedError(f"--sequence '{text}' is only for MR output")
    return parse_sequence(text)


def paired_outputs(out: str, preview: str | None) -> dict[str, Path]:
    """Output files of a paired CT + MR run: ``--out`` is a folder (existing, or ending with '/') or a prefix."""
    target = Path(out)
    if out.endswith(("/", "\\")) or target.is_dir():
        names = {"ct": target / "synthetic_ct.nii.gz", "mr": target / "synthetic_mr.nii.gz", "preview": target / "preview_ct_mr.png"}
        folder = target
    else:
        if target.name.lower().endswith(IMAGE_SUFFIXES):
            raise Seg2MedError(f"--out '{out}' names one volume; with a CT and an MR --model give a folder (DIR/) or a "
                               "file-name prefix (the files become PREFIX_ct.nii.gz, PREFIX_mr.nii.gz, PREFIX_preview.png)")
        names = {k: target.with_name(f"{target.name}_{k}{ext}") for k, ext in
                 (("ct", ".nii.gz"), ("mr", ".nii.gz"), ("preview", ".png"))}
        folder = target.parent
    if not folder.is_dir() and not (folder.parent.is_dir() and out.endswith(("/", "\\"))):
        raise Seg2MedError(f"--out folder '{folder}' does not exist")
    if preview is not None:
        names["preview"] = check_output(preview, "--preview", (".png",))  # type: ignore[assignment]
    return names


def _synthesize_pair(args: argparse.Namespace) -> int:
    """One segmentation → synthetic CT and MR (labels converted for each model, one body contour, one preview)."""
    from seg2med_core import io
    from seg2med_core.bundle import load_bundle
    from seg2med_core.device import parse_devices
    from seg2med_core.pipeline import convert_segmentation, synthesize
    from seg2med_core.registry import resolve_bundle_path

    for option in ("metrics", "prior_out", "reformat", "dicom_source"):
        if getattr(args, option, None):
            raise Seg2MedError(f"--{option.replace('_', '-')} is for one --model (a CT and an MR model write two NIfTI "
                               "volumes and one preview)")
    files = paired_outputs(args.out, args.preview)
    check_distinct(_inputs(args), {"--out (CT)": files["ct"], "--out (MR)": files["mr"], "--preview": files["preview"]})
    reporter = make_reporter(args)
    seg = _read_seg(args, reporter.info)
    image = None
    if args.image:
        seg, image = _read_image_matching(args, seg, reporter.info)
    devices = parse_devices(args.device)
    bundles = [load_bundle(resolve_bundle_path(m, progress=reporter.progress), device=devices[0]) for m in args.model]
    modalities = sorted(b.metadata.modality for b in bundles)
    if modalities != ["ct", "mr"]:
        raise Seg2MedError(f"two --model must be one CT and one MR model, got {' and '.join(m.upper() for m in modalities)}")
    if args.tissue_table:
        raise Seg2MedError("--tissue-table is for one --model (one table cannot hold both HU and T1/T2/PD)")
    bundles.sort(key=lambda b: b.metadata.modality)  # CT first: its body contour is shared with the MR
    config = _sampler_config(args)
    phase = _check_phase(args, "ct")
    sequence = _check_sequence(args, "mr")
    results: dict[str, Any] = {}
    body = None
    try:
        for bundle in bundles:
            modality = bundle.metadata.modality
            s = seg
            if seg.label_set != bundle.metadata.label_set:
                s, report = convert_segmentation(seg, bundle.metadata.label_set)
                reporter.info(f"labels for {modality.upper()}: " + report.summary())
            extra = {"phase": phase} if modality == "ct" else {"sequence": sequence}

            def progress(done: int, total: int, message: str, _half: str = modality.upper()) -> None:
                reporter.progress(done, total, f"{_half}: {message}")  # which half the bar is in (Slicer, tqdm)

            result = synthesize(s, bundle, image=image, image_modality=args.image_modality or _seg_modality(seg),
                                body=body, sampler=config, device=devices, progress=progress,
                                info=reporter.info, anchor=args.anchor, **extra)
            body = result.body
            results[modality] = result
    finally:
        reporter.close()
    files["ct"].parent.mkdir(exist_ok=True)  # a new DIR/ (its parent was checked before the sampling)
    with io.output_group():  # all three files or none
        _write_pair_preview(files["preview"], seg, results["ct"], results["mr"])
        io.write_image(results["ct"].image, files["ct"])
        io.write_image(results["mr"].image, files["mr"])
    for m in ("ct", "mr"):
        reporter.message(f"wrote {files[m]} ({results[m].slices_sampled} slices sampled in {results[m].seconds_sampling:.1f} s)")
    reporter.message(f"wrote {files['preview']}")
    reporter.done(output={k: str(v) for k, v in files.items()})
    return 0


def _write_pair_preview(path: Path, seg: "Segmentation", ct: "SynthesisResult", mr: "SynthesisResult") -> None:
    """labels | prior CT | synthetic CT | prior MR | synthetic MR, one body contour."""
    from seg2med_core.preview import save_preview

    columns: list[tuple[str, np.ndarray, Any]] = [
        ("segmentation", sitk.GetArrayFromImage(seg.image), "labels"),
        ("prior CT", sitk.GetArrayFromImage(ct.prior), CT_PREVIEW_WINDOW),
        ("synthetic CT", sitk.GetArrayFromImage(ct.image), CT_PREVIEW_WINDOW),
        ("prior MR", sitk.GetArrayFromImage(mr.prior), None),
        ("synthetic MR", sitk.GetArrayFromImage(mr.image), None),
    ]
    save_preview(path, columns, None, body=ct.body, reference=seg.image)


def _relabel_command(args: argparse.Namespace, modality: str) -> str:
    """The ``seg2med labels convert`` command (in backticks) that relabels ``--seg`` for a ``modality`` model,
    with the reading options given to this command and an output next to the segmentation."""
    import shlex

    from seg2med_core.io import MASK_SUFFIXES

    target = "total_mr" if modality == "mr" else "total"
    seg = Path(args.seg)
    stem = seg.name
    for suffix in (".seg.nrrd", *MASK_SUFFIXES):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    out = seg.with_name(f"{stem}_{target}.nii.gz")
    parts = ["seg2med", "labels", "convert", "--seg", str(seg)]
    if args.label_set:
        parts += ["--label-set", args.label_set]
    if getattr(args, "label_names", None):
        parts += ["--label-names", str(args.label_names)]
    if getattr(args, "drop_unknown_labels", False):
        parts.append("--drop-unknown-labels")
    parts += ["--to", target, "--out", str(out)]
    return "`" + shlex.join(parts) + "`"


def _seg_modality(seg: "Segmentation") -> str:
    from seg2med_core.pipeline import segmentation_modality

    return segmentation_modality(seg)


def _write_preview(
    path: Path, result: "SynthesisResult", seg: "Segmentation", modality: str, image: sitk.Image | None, image_title: str
) -> None:
    """PNG: labels | prior | synthetic (| real or source image), with the metrics underneath."""
    from seg2med_core.preview import save_preview

    window = CT_PREVIEW_WINDOW if modality == "ct" else None
    columns: list[tuple[str, np.ndarray, Any]] = [
        ("segmentation", sitk.GetArrayFromImage(seg.image), "labels"),
        (f"prior {modality.upper()}", sitk.GetArrayFromImage(result.prior), window),
        (f"synthetic {modality.upper()}", sitk.GetArrayFromImage(result.image), window),
    ]
    if image is not None:
        real_window = CT_PREVIEW_WINDOW if image_title.endswith("CT") else None
        columns.append((image_title, sitk.GetArrayFromImage(image), real_window))
    save_preview(
        path,
        columns,
        result.metrics or None,
        body=result.body,
        reference=seg.image,
        mae_unit="HU" if modality == "ct" else "",
    )


def _write_reformat(path: Path, result: "SynthesisResult", modality: str, image: sitk.Image | None, image_title: str) -> None:
    """PNG: coronal and sagittal planes of synthetic (| real) at the physical aspect ratio, banding underneath."""
    from seg2med_core.metrics import banding_line
    from seg2med_core.preview import save_reformats

    window = CT_PREVIEW_WINDOW if modality == "ct" else None
    columns: list[tuple[str, np.ndarray, Any]] = [(f"synthetic {modality.upper()}", sitk.GetArrayFromImage(result.image), window)]
    if image is not None:
        columns.append((image_title, sitk.GetArrayFromImage(image), window))
    banding = (result.metrics or {}).get("banding") or {}
    footer = ("slice consistency: " + banding_line(banding, "HU" if modality == "ct" else "")) if "synthetic" in banding else None
    save_reformats(path, columns, result.image, body=result.body, footer=footer)


def cmd_convert(args: argparse.Namespace) -> int:
    from seg2med_core import io

    out, dicom = check_volume_output(args)
    preview = check_output(args.preview, "--preview", (".png",))
    prior_out = check_output(args.prior_out, "--prior-out", IMAGE_SUFFIXES)
    check_distinct(_inputs(args), {"--out": out, "--prior-out": prior_out, "--preview": preview})
    reporter = make_reporter(args)
    seg = _read_seg(args, reporter.info)
    seg, image = _read_image_matching(args, seg, reporter.info)
    from seg2med_core.bundle import check_modality  # torch: only once the inputs are known to be good
    from seg2med_core.pipeline import convert

    bundle, devices = _load_model(args, reporter)
    check_modality(bundle, args.to)
    config = _sampler_config(args)
    source = _seg_modality(seg)
    phase = _check_phase(args, args.to)
    sequence = _check_sequence(args, args.to)
    try:
        result, report = convert(
            image,
            seg,
            args.to,
            bundle,
            sampler=config,
            device=devices,
            tissue_table=args.tissue_table,
            phase=phase,
            sequence=sequence,
            anchor=args.anchor,
            progress=reporter.progress,
            info=reporter.info,
        )
    finally:
        reporter.close()
    if report is not None:
        reporter.info("labels converted: " + report.summary())
    with io.output_group():  # all outputs or none (the volume last: a DICOM folder is moved into place at once)
        if prior_out is not None:
            io.write_image(result.prior, prior_out)
        if preview is not None:
            _write_preview(preview, result, result.segmentation, args.to, image, f"source {source.upper()}")
        write_volume(result.image, out, dicom, args.to, args, reporter.info)
    reporter.message(f"wrote {out} ({result.slices_sampled} slices sampled in {result.seconds_sampling:.1f} s)")
    reporter.done(output=str(out), unmapped=list(report.unmapped) if report else [])
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from seg2med_core import io, label_tables, labels

    if args.labels_command == "list":
        if args.label_set is None:
            for name in labels.LABEL_SETS:
                print(f"{name}\t{len(labels.get_label_set(name))} classes")
            for name in label_tables.scheme_names():
                scheme = label_tables.load_scheme(name)
                print(f"{name}\t{len(scheme.names)} classes\t{scheme.title} (scheme, mapped onto total)")
            return 0
        if args.label_set in label_tables.scheme_names():
            scheme = label_tables.load_scheme(args.label_set)
            print(f"# {scheme.title}\n# source: {scheme.source}\n# id\tname\t-> total class")
            for idx, name in sorted(scheme.names.items()):
                target = scheme.to_total[idx] or "/".join(scheme.split_by_side.get(idx, ())) or "-"
                note = f"\t({scheme.notes[idx]})" if idx in scheme.notes else ""
                print(f"{idx}\t{name}\t{target}{note}")
            return 0
        if args.label_set not in labels.LABEL_SETS:
            raise Seg2MedError(f"unknown label set '{args.label_set}' (choose one of: {', '.join(labels.LABEL_SETS)}; "
                               f"or a label scheme: {', '.join(label_tables.scheme_names())})")
        for idx, name in sorted(labels.names_for(args.label_set).items()):
            print(f"{idx}\t{name}")
        return 0
    out = check_output(args.out, "--out", (".nii.gz", ".nii", ".seg.nrrd"))
    assert out is not None
    check_distinct({"--seg": args.seg}, {"--out": out})
    seg = io.read_segmentation(args.seg, label_set=args.label_set, label_names=args.label_names,
                               drop_unknown=args.drop_unknown_labels, info=print)
    from seg2med_core.pipeline import convert_segmentation, export_segmentation

    if args.to in label_tables.scheme_names():
        converted, export = export_segmentation(seg, args.to)
        summary = export.summary()
    else:
        converted, report = convert_segmentation(seg, args.to)
        summary = report.summary()
    io.write_segmentation(converted, out)
    print(summary)
    print(f"wrote {out}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from seg2med_core import bundle as bundle_mod
    from seg2med_core import io
    from seg2med_core import registry

    if args.bundle_command == "info":
        print(bundle_mod.bundle_info(registry.resolve_bundle_path(args.path)))
        return 0
    if args.bundle_command == "check":
        folder = registry.resolve_bundle_path(args.path)
        loaded = bundle_mod.load_bundle(folder)
        m = loaded.metadata
        n = sum(p.numel() for p in loaded.network.parameters())
        print(f"ok: '{folder}': {m.name} ({m.modality.upper()} {m.model_kind}), metadata valid, {n / 1e6:.2f} M finite weights match the network config")
        return 0
    if args.bundle_command == "list":
        for entry in registry.load_registry():
            where = entry.path or entry.url or "?"
            print(f"{entry.name}\t{entry.modality}{'/' + entry.sequence if entry.sequence else ''}\t{where}")
        return 0
    if args.bundle_command == "register":
        entry = registry.register_bundle(args.path, name=args.name)
        print(f"registered '{entry.name}' ({entry.modality}) -> {entry.path} in {registry.user_registry_path()}")
        return 0
    out = Path(args.out)
    if not out.parent.is_dir():
        raise Seg2MedError(f"--out folder '{out.parent}' does not exist")
    data: dict[str, Any] = {}
    if args.metadata:
        data = io.read_json(args.metadata, "metadata file")
    data = _import_metadata_defaults(data, args)
    metadata = bundle_mod.BundleMetadata.from_dict(data, source=f"'{args.metadata or '--metadata'}'")
    written = bundle_mod.import_monai_generative_checkpoint(args.checkpoint, out, metadata)
    print(f"wrote bundle {written}")
    return 0


def _import_metadata_defaults(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Fill what a MONAI-Generative checkpoint import needs but the user did not give: the paper's network."""
    from seg2med_core.network import PAPER_NETWORK, PAPER_SCHEDULER, to_json_config

    if not isinstance(data, dict):
        raise Seg2MedError(f"--metadata must hold a JSON object, got {type(data).__name__}")
    out = dict(data)
    out["modality"] = args.modality
    out.setdefault("name", Path(args.out).name)
    out.setdefault("version", "1")
    out.setdefault("sequence", "vibe_in" if args.modality == "mr" else None)
    out.setdefault("label_set", "total_mr" if args.modality == "mr" else "total")
    out.setdefault("network", to_json_config(PAPER_NETWORK))
    out.setdefault("scheduler", to_json_config(PAPER_SCHEDULER))
    out.setdefault("spacing_xy", 1.5)
    out.setdefault("image_size", 512)
    out.setdefault(
        "intensity",
        {"kind": "ct_window", "level": 0, "width": 2000} if args.modality == "ct" else {"kind": "mr_percentile", "p_lo": 10, "p_hi": 90},
    )
    out.setdefault("training_data", f"imported from {Path(args.checkpoint).name}")
    return out


# -------------------------------------------------------------------------------------------- parser
def _subcommand_modules() -> list[ModuleType]:
    """Modules that add their own subcommands through ``add_subcommands(subparsers)``."""
    return [importlib.import_module(name) for name in SUBCOMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """The full ``seg2med`` parser (core subcommands + those added by training, phantom and demo modules)."""
    parser = argparse.ArgumentParser(
        prog="seg2med",
        description="Synthetic CT and MR volumes from TotalSegmentator segmentations (conditional diffusion).",
    )
    parser.add_argument("--version", action="version", version=f"seg2med {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prior", help="prior image only (simulated CT/MR from the labels)")
    _add_seg_arguments(p)
    p.add_argument("--modality", choices=("ct", "mr"), required=True)
    p.add_argument("--sequence", default=None, help="MR sequence: vibe_in (default), vibe_opp, t1_gre, t2_space, t2_fse, dixon_water, or custom:TR,TE,FLIP")
    p.add_argument("--image", default=None, help="real image: the body contour is taken from it")
    p.add_argument("--image-modality", choices=("ct", "mr"), default=None, help="modality of --image (default: the label set's)")
    p.add_argument("--out", required=True)
    add_progress_argument(p)
    p.set_defaults(func=cmd_prior)

    p = sub.add_parser("synthesize", help="synthetic volume in the segmentation's geometry (or a CT + MR pair)")
    _add_seg_arguments(p)
    _add_sampler_arguments(p, several=True)
    p.add_argument("--image", default=None, help="real image: body contour, and metrics when it has the model's modality")
    p.add_argument("--image-modality", choices=("ct", "mr"), default=None, help="modality of --image (default: the label set's)")
    _add_volume_output_arguments(p, "output volume (.nii.gz, .nrrd, .mha); with a CT and an MR --model a folder "
                                    "(DIR/: synthetic_ct.nii.gz, synthetic_mr.nii.gz, preview_ct_mr.png) or a file-name prefix")
    p.add_argument("--prior-out", default=None, help="also write the prior image")
    p.add_argument("--preview", default=None, help="side-by-side PNG (labels | prior | synthetic | real) with metrics")
    p.add_argument("--metrics", default=None, help="JSON with SSIM/PSNR/MAE/HistCC inside the body and the slice banding metric (needs --image)")
    p.add_argument("--reformat", default=None,
                   help="PNG with coronal and sagittal reformats (synthetic | real) at the physical aspect ratio: "
                        "stripes between the generated axial slices show up there")
    add_progress_argument(p)
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("convert", help="MR->CT or CT->MR: label conversion, body from the source image, synthesis")
    _add_seg_arguments(p)
    _add_sampler_arguments(p)
    p.add_argument("--image", required=True, help="source image (MR for --to ct, CT for --to mr)")
    p.add_argument("--to", choices=("ct", "mr"), required=True)
    _add_volume_output_arguments(p, "output volume (.nii.gz, .nrrd, .mha)")
    p.add_argument("--prior-out", default=None)
    p.add_argument("--preview", default=None)
    add_progress_argument(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("labels", help="list label sets or convert a segmentation between CT and MR label sets")
    lsub = p.add_subparsers(dest="labels_command", required=True)
    q = lsub.add_parser("list", help="label sets, or the ids and names of one label set")
    q.add_argument("label_set", nargs="?", default=None)
    q = lsub.add_parser("convert", help="relabel total <-> total_mr, or into another scheme such as maisi (by class name)")
    q.add_argument("--seg", required=True)
    q.add_argument("--label-set", default=None, help="label set or scheme of --seg (guessed when omitted)")
    _add_label_table_arguments(q)
    q.add_argument("--to", required=True, choices=("total", "total_mr", *_scheme_names()),
                   help="total, total_mr, or a scheme (maisi: MAISI's 132 classes with body 200)")
    q.add_argument("--out", required=True)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("bundle", help="inspect, list, register or import model bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    q = bsub.add_parser("info", help="metadata and weight summary of a bundle folder or registry name")
    q.add_argument("path")
    q = bsub.add_parser("check", help="validate a bundle fully (metadata, weights vs network config, finite values), as loading does")
    q.add_argument("path", help="bundle folder or registry name")
    bsub.add_parser("list", help="models in the shipped and user registries")
    q = bsub.add_parser("register", help="add a local bundle folder to your registry (SEG2MED_REGISTRY)")
    q.add_argument("path")
    q.add_argument("--name", default=None, help="registry name (default: the bundle's name)")
    q = bsub.add_parser("import", help="MONAI-Generative state dict (.pt/.pth) -> bundle folder")
    q.add_argument("checkpoint")
    q.add_argument("--out", required=True)
    q.add_argument("--modality", choices=("ct", "mr"), required=True)
    q.add_argument("--metadata", default=None, help="JSON with metadata fields (network config, spacing, ...); default: the paper's network")
    p.set_defaults(func=cmd_bundle)

    for module in _subcommand_modules():
        module.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 cancelled / Ctrl-C, 143 SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    json_mode = getattr(args, "progress_format", "tqdm") == "json"
    with _sigterm_raises():
        return _run(args, json_mode)


#: Exit code after SIGTERM (128 + 15, as a shell reports it); Ctrl-C and cancel callbacks give 130.
EXIT_TERMINATED = 143


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("terminated by SIGTERM")


class _sigterm_raises:
    """SIGTERM raises :class:`Terminated` in the main thread, so writes are rolled back like on cancel."""

    def __enter__(self) -> None:
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _on_sigterm)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _run(args: argparse.Namespace, json_mode: bool) -> int:
    try:
        return int(args.func(args) or 0)
    except Terminated as exc:
        if json_mode:
            emit_json("cancelled", message=str(exc))
        print(f"seg2med: cancelled: {exc}", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        return 0
    except (Seg2MedError, OSError) as exc:
        message = _one_line(exc)
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


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, Seg2MedError) and exc.strerror:
        where = f" '{exc.filename}'" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
