"""``seg2med demo``: the one-command demo that needs no data and no downloads.

template phantom (a deformed real TotalSegmentator label map, ``phantoms.template``; ``--kind procedural``
for the primitive-based one) → prior CT → synthetic CT (shipped demo CT model) → labels converted to ``total_mr`` →
synthetic MR (shipped demo MR model) → NIfTI volumes, side-by-side PNGs (axial ``demo.png``, coronal and
sagittal ``demo_coronal.png``) and a short report (JSON + Markdown) that names what the phantom is made from.
Both models are resolved before any work starts, so a missing model is reported at once in one line;
``--mr-model none`` skips the MR part. Files are written only after every synthesis has succeeded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from seg2med_core.cli_common import Reporter, SilentReporter, add_progress_argument, make_reporter
from seg2med_core.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from seg2med_core.errors import Seg2MedError
from seg2med_core.io import atomic_path, write_json

DEMO_CT_MODEL = "demo_ct"
DEMO_MR_MODEL = "demo_mr"
DEMO_REGIONS = ("abdomen", "pelvis", "abdomen-pelvis", "thorax", "torso")
PHANTOM_KINDS = ("template", "procedural")
#: Soft-tissue window (W400/L40) for the CT panels.
CT_WINDOW = (-160.0, 240.0)
DISCLAIMER = "Demonstration models trained on two public CT patients and one public MR; images are not for clinical use."


def add_subcommands(subparsers: Any) -> None:
    """Add ``demo`` to the ``seg2med`` parser."""
    p = subparsers.add_parser(
        "demo",
        help="phantom -> synthetic CT and MR with the shipped demo models; no data or downloads needed",
    )
    p.add_argument("--out", required=True, help="output folder (created when missing)")
    p.add_argument("--seed", type=int, default=0, help="phantom and sampling seed")
    # no argparse choices: a bad value gets the one-line ``seg2med: error:`` of every other bad input
    p.add_argument("--region", default="abdomen",
                   help=f"phantom region: {', '.join(DEMO_REGIONS)} (default abdomen; thorax, torso: template only)")
    p.add_argument("--kind", default="template",
                   help="template (default: deformed real anatomy) or procedural phantom")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"{DEFAULT_SAMPLER} steps (default {DEFAULT_STEPS})")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--ct-model", default=DEMO_CT_MODEL, help="CT bundle folder or registry name")
    p.add_argument("--mr-model", default=DEMO_MR_MODEL, help="MR bundle folder or registry name ('none' to skip MR)")
    add_progress_argument(p)
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    """CLI handler: run the demo and print where the report is."""
    reporter = make_reporter(args)
    report = run_demo(
        Path(args.out),
        seed=args.seed,
        region=args.region,
        kind=args.kind,
        steps=args.steps,
        device_name=args.device,
        ct_model=args.ct_model,
        mr_model=None if str(args.mr_model).lower() == "none" else args.mr_model,
        reporter=reporter,
    )
    reporter.message(f"demo finished in {report['seconds_total']:.1f} s; see {Path(args.out) / 'report.md'}")
    reporter.done(output=str(args.out), files=report["files"])
    return 0


def _load(model: str | Path, modality: str, device: Any) -> Any:
    """Resolve and load a demo bundle; a missing one gets a message that says how to proceed."""
    from seg2med_core.bundle import check_modality
    from seg2med_core.registry import resolve_bundle

    try:
        bundle = resolve_bundle(model, device=device)
    except Seg2MedError as exc:
        hint = " (or add `--mr-model none` to skip MR)" if modality == "mr" else ""
        raise Seg2MedError(f"demo {modality.upper()} model '{model}' is not available: {exc}{hint}") from exc
    check_modality(bundle, modality)
    return bundle


def run_demo(
    out_dir: Path,
    *,
    seed: int = 0,
    region: str = "abdomen",
    kind: str = "template",
    steps: int = DEFAULT_STEPS,
    device_name: str = "auto",
    ct_model: str | Path = DEMO_CT_MODEL,
    mr_model: str | Path | None = DEMO_MR_MODEL,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return the report dict (also written as report.json/.md)."""
    from seg2med_core import io
    from seg2med_core.device import pick_device
    from seg2med_core.phantom import make_phantom
    from seg2med_core.pipeline import convert_segmentation, synthesize
    from seg2med_core.sampler import SamplerConfig

    reporter = reporter or SilentReporter()
    if steps < 1:
        raise Seg2MedError(f"--steps must be at least 1, got {steps}")
    if seed < 0:
        raise Seg2MedError(f"--seed must be a non-negative integer, got {seed}")
    if kind not in PHANTOM_KINDS:
        raise Seg2MedError(f"--kind must be one of {', '.join(PHANTOM_KINDS)}, got '{kind}'")
    if region not in DEMO_REGIONS:
        raise Seg2MedError(f"--region must be one of {', '.join(DEMO_REGIONS)}, got '{region}'")
    if kind == "procedural" and region in ("thorax", "torso"):
        raise Seg2MedError(f"region '{region}' needs the template phantom (--kind template)")
    if out_dir.exists() and not out_dir.is_dir():
        raise Seg2MedError(f"--out '{out_dir}' exists and is not a folder")
    device = pick_device(device_name)
    ct_bundle = _load(ct_model, "ct", device)
    mr_bundle = _load(mr_model, "mr", device) if mr_model is not None else None

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if kind == "template":
        from seg2med_core.phantoms.template import TEMPLATE_CREDITS, make_template_phantom

        seg, info = make_template_phantom(seed=seed, region=region, return_info=True)
        made_from = f"template phantom from '{info.template}' ({TEMPLATE_CREDITS})"
    else:
        seg = make_phantom(seed=seed, region=region)
        made_from = "procedural phantom (smooth primitives, seg2med_core/phantom.py)"
    timings["phantom_s"] = time.perf_counter() - t0
    n_labels = len(np.unique(sitk.GetArrayViewFromImage(seg.image))) - 1
    reporter.info(f"phantom: {seg.image.GetSize()} voxels at {seg.image.GetSpacing()} mm, {n_labels} labels")

    config = SamplerConfig(kind=DEFAULT_SAMPLER, steps=steps, seed=seed)
    t0 = time.perf_counter()
    ct = synthesize(seg, ct_bundle, sampler=config, device=device, progress=reporter.progress, info=reporter.info)
    timings["synthetic_ct_s"] = time.perf_counter() - t0
    reporter.close()

    mr = None
    conversion = None
    if mr_bundle is not None:
        mr_seg, conversion = convert_segmentation(seg, "total_mr")
        reporter.info("labels for MR: " + conversion.summary())
        t0 = time.perf_counter()
        mr = synthesize(mr_seg, mr_bundle, body=ct.body, sampler=config, device=device, progress=reporter.progress, info=reporter.info)
        timings["synthetic_mr_s"] = time.perf_counter() - t0
        reporter.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "segmentation": out_dir / "phantom_seg.nii.gz",
        "prior_ct": out_dir / "prior_ct.nii.gz",
        "synthetic_ct": out_dir / "synthetic_ct.nii.gz",
    }
    io.write_segmentation(seg, files["segmentation"])
    io.write_image(ct.prior, files["prior_ct"])
    io.write_image(ct.image, files["synthetic_ct"])
    if mr is not None:
        files["prior_mr"] = out_dir / "prior_mr.nii.gz"
        files["synthetic_mr"] = out_dir / "synthetic_mr.nii.gz"
        io.write_image(mr.prior, files["prior_mr"])
        io.write_image(mr.image, files["synthetic_mr"])
    files["preview"] = out_dir / "demo.png"
    _save_demo_png(files["preview"], seg, ct, mr)
    files["preview_coronal"] = out_dir / "demo_coronal.png"
    _save_demo_png(files["preview_coronal"], seg, ct, mr, coronal=True)

    timings["total_s"] = time.perf_counter() - t_start
    report: dict[str, Any] = {
        "seed": seed,
        "region": region,
        "phantom": made_from,
        "device": str(device),
        "sampler": f"{DEFAULT_SAMPLER}, {steps} steps",
        "ct_model": ct_bundle.metadata.name,
        "mr_model": None if mr_bundle is None else mr_bundle.metadata.name,
        "mr_sequence": None if mr_bundle is None else mr_bundle.metadata.sequence,
        "volume_size": list(seg.image.GetSize()),
        "spacing_mm": list(seg.image.GetSpacing()),
        "slices_sampled_ct": ct.slices_sampled,
        "slices_sampled_mr": None if mr is None else mr.slices_sampled,
        "unmapped_mr_labels": [] if conversion is None else list(conversion.unmapped),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "seconds_total": timings["total_s"],
        "disclaimer": DISCLAIMER,
    }
    files["report_json"] = out_dir / "report.json"
    files["report_md"] = out_dir / "report.md"
    report["files"] = {k: v.name for k, v in files.items()}
    write_json(files["report_json"], report)
    _write_text(files["report_md"], _report_markdown(report))
    return report


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _save_demo_png(path: Path, seg: Any, ct: Any, mr: Any, coronal: bool = False) -> None:
    """labels | prior CT | synthetic CT (| prior MR | synthetic MR), radiological display: three axial slices, or
    (``coronal``) a coronal and a sagittal plane through the body centre at the physical aspect ratio."""
    from seg2med_core.preview import save_preview, save_reformats

    columns: list[tuple[str, np.ndarray, Any]] = [
        ("phantom labels", sitk.GetArrayFromImage(seg.image), "labels"),
        ("prior CT", sitk.GetArrayFromImage(ct.prior), CT_WINDOW),
        ("synthetic CT", sitk.GetArrayFromImage(ct.image), CT_WINDOW),
    ]
    if mr is not None:
        columns.append(("prior MR", sitk.GetArrayFromImage(mr.prior), None))
        columns.append(("synthetic MR", sitk.GetArrayFromImage(mr.image), None))
    if coronal:
        save_reformats(path, columns, seg.image, body=ct.body, title="seg2med demo, coronal and sagittal (not for clinical use)")
    else:
        save_preview(path, columns, None, body=ct.body, reference=seg.image, title="seg2med demo (not for clinical use)")


def _report_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# seg2med demo",
        "",
        f"- phantom: seed {r['seed']}, region {r['region']}, {r['volume_size']} voxels at {r['spacing_mm']} mm",
        f"- made from: {r['phantom']}",
        f"- device: {r['device']}; sampler: {r['sampler']}",
        f"- CT model: {r['ct_model']}; MR model: {r['mr_model'] or 'none'}"
        + (f" (sequence {r['mr_sequence']})" if r.get("mr_sequence") else ""),
        f"- slices sampled: CT {r['slices_sampled_ct']}" + (f", MR {r['slices_sampled_mr']}" if r["slices_sampled_mr"] else ""),
        f"- CT labels without an MR counterpart: {', '.join(r['unmapped_mr_labels']) or 'none'}",
        "- timings (s): " + ", ".join(f"{k} {v}" for k, v in r["timings"].items()),
        "",
        "Files: " + ", ".join(r["files"].values()),
        "",
        f"**{r['disclaimer']}**",
        "",
    ]
    return "\n".join(lines)
