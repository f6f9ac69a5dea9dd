"""``seg2med demo``: the one-command demo that needs no data and no downloads.

procedural phantom → prior CT → synthetic CT (shipped demo CT model) → labels converted to ``total_mr`` →
synthetic MR (shipped demo MR model, if present) → NIfTI volumes, a side-by-side PNG and a short report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from seg2med_core.cli_common import add_progress_argument, make_reporter
from seg2med_core.errors import Seg2MedError

DEMO_CT_MODEL = "demo_ct"
DEMO_MR_MODEL = "demo_mr"
#: CPU default: enough DDIM steps for the demo models to give clean images in about a minute on 2 cores.
DEMO_STEPS = 20


def add_subcommands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="phantom → synthetic CT (and MR) with the shipped demo models; no data or downloads needed",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="phantom and sampling seed")
    p.add_argument("--region", default="abdomen", choices=("abdomen", "pelvis", "abdomen-pelvis"))
    p.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"DDIM steps (default {DEMO_STEPS})")
    p.add_argument("--device", default="auto")
    p.add_argument("--ct-model", default=DEMO_CT_MODEL, help="CT bundle folder or registry name")
    p.add_argument("--mr-model", default=DEMO_MR_MODEL, help="MR bundle folder or registry name ('none' to skip MR)")
    add_progress_argument(p)
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    report = run_demo(
        Path(args.out),
        seed=args.seed,
        region=args.region,
        steps=args.steps,
        device_name=args.device,
        ct_model=args.ct_model,
        mr_model=None if str(args.mr_model).lower() == "none" else args.mr_model,
        reporter=make_reporter(args),
    )
    print(f"demo finished in {report['seconds_total']:.1f} s; see {Path(args.out) / 'report.md'}")
    return 0


def run_demo(
    out_dir: Path,
    *,
    seed: int = 0,
    region: str = "abdomen",
    steps: int = DEMO_STEPS,
    device_name: str = "auto",
    ct_model: str | Path = DEMO_CT_MODEL,
    mr_model: str | Path | None = DEMO_MR_MODEL,
    reporter: Any = None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return the report dict (also written as report.json/.md)."""
    from seg2med_core import io
    from seg2med_core.cli_common import SilentReporter
    from seg2med_core.device import pick_device
    from seg2med_core.phantom import make_phantom
    from seg2med_core.pipeline import convert_segmentation, synthesize
    from seg2med_core.registry import resolve_bundle
    from seg2med_core.sampler import SamplerConfig

    reporter = reporter or SilentReporter()
    if steps < 1:
        raise Seg2MedError(f"--steps must be at least 1, got {steps}")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(device_name)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    seg = make_phantom(seed=seed, region=region)
    timings["phantom_s"] = time.perf_counter() - t0
    reporter.info(f"phantom: {seg.image.GetSize()} voxels at {seg.image.GetSpacing()} mm, {len(np.unique(sitk.GetArrayViewFromImage(seg.image))) - 1} labels")

    config = SamplerConfig(kind="ddim", steps=steps, seed=seed)
    ct_bundle = resolve_bundle(ct_model, device=device)
    t0 = time.perf_counter()
    ct = synthesize(seg, ct_bundle, sampler=config, device=device, progress=reporter.progress)
    timings["synthetic_ct_s"] = time.perf_counter() - t0
    reporter.close()

    mr = None
    mr_seg = None
    conversion = None
    if mr_model is not None:
        try:
            mr_bundle = resolve_bundle(mr_model, device=device)
        except Seg2MedError as exc:
            reporter.info(f"no MR demo model ({exc}); skipping synthetic MR")
        else:
            mr_seg, conversion = convert_segmentation(seg, "total_mr")
            t0 = time.perf_counter()
            mr = synthesize(mr_seg, mr_bundle, body=ct.body, sampler=config, device=device, progress=reporter.progress)
            timings["synthetic_mr_s"] = time.perf_counter() - t0
            reporter.close()

    files = {
        "segmentation": out_dir / "phantom_seg.nii.gz",
        "prior_ct": out_dir / "prior_ct.nii.gz",
        "synthetic_ct": out_dir / "synthetic_ct.nii.gz",
    }
    io.write_segmentation(seg, files["segmentation"])
    io.write_image(ct.prior, files["prior_ct"])
    io.write_image(ct.image, files["synthetic_ct"])
    if mr is not None:
        files["synthetic_mr"] = out_dir / "synthetic_mr.nii.gz"
        io.write_image(mr.image, files["synthetic_mr"])
    files["preview"] = out_dir / "demo.png"
    _save_demo_png(files["preview"], seg, ct, mr)

    timings["total_s"] = time.perf_counter() - t_start
    report: dict[str, Any] = {
        "seed": seed,
        "region": region,
        "device": str(device),
        "sampler": f"ddim, {steps} steps",
        "ct_model": ct_bundle.metadata.name,
        "mr_model": None if mr is None else mr_bundle.metadata.name,
        "volume_size": list(seg.image.GetSize()),
        "spacing_mm": list(seg.image.GetSpacing()),
        "slices_sampled_ct": ct.slices_sampled,
        "unmapped_mr_labels": [] if conversion is None else list(conversion.unmapped),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "seconds_total": timings["total_s"],
        "files": {k: v.name for k, v in files.items()},
        "disclaimer": "Demonstration models trained on one public case; images are not for clinical use.",
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(_report_markdown(report))
    return report


def _save_demo_png(path: Path, seg, ct, mr) -> None:
    from seg2med_core.preview import save_preview

    labels = sitk.GetArrayFromImage(seg.image)
    columns: list[tuple[str, np.ndarray, Any]] = [
        ("segmentation", labels, "labels"),
        ("prior CT", sitk.GetArrayFromImage(ct.prior), (-160.0, 240.0)),
        ("synthetic CT", sitk.GetArrayFromImage(ct.image), (-160.0, 240.0)),
    ]
    if mr is not None:
        columns.append(("synthetic MR", sitk.GetArrayFromImage(mr.image), None))
    save_preview(path, columns, None, body=ct.body)


def _report_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# seg2med demo",
        "",
        f"- phantom: seed {r['seed']}, region {r['region']}, {r['volume_size']} voxels at {r['spacing_mm']} mm",
        f"- device: {r['device']}; sampler: {r['sampler']} (chosen so the demo finishes in minutes on 2 CPU cores)",
        f"- CT model: {r['ct_model']}; MR model: {r['mr_model'] or 'none'}",
        f"- slices sampled (CT): {r['slices_sampled_ct']}",
        f"- MR labels without a CT counterpart: {', '.join(r['unmapped_mr_labels']) or 'none'}",
        "- timings (s): " + ", ".join(f"{k} {v}" for k, v in r["timings"].items()),
        "",
        "Files: " + ", ".join(r["files"].values()),
        "",
        f"**{r['disclaimer']}**",
        "",
    ]
    return "\n".join(lines)
