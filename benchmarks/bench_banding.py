#!/usr/bin/env python
"""Slice banding of synthetic CT vs the real CT, with and without training-free slice coupling.

Prints, per CT patient and sampler setting, the slice-consistency metric of ``seg2med_core.metrics``
(largest and mean jump of the per-slice mean soft-tissue HU between adjacent axial slices, and the
through-plane / in-plane gradient ratio) for the synthetic and the real image and their ratio, next to
SSIM / MAE inside the body and the sampling time. Issue 14's target: largest jump ≤ 2× the real image's.

Two modes::

    # measure an existing pair (any synthetic volume in the real image's geometry)
    python benchmarks/bench_banding.py --synthetic sct.nii.gz --image ct.nii.gz
    # synthesise both CT patients of ../shared/data with a model for several settings
    # (slice coupling W : noise correlation R), write reformat PNGs and a JSON
    python benchmarks/bench_banding.py --model demo_ct --settings 0:0,1:0,0:0.9,1:0.9 --png-dir /tmp/bands

Patients: ``example_ct`` (TotalSegmentator example, 3 mm) and ``lidc-idri-0001`` (0.7 mm × 2.5 mm; its label
map is renumbered to ``total`` v2 by name first, see ``benchmarks/ct_patients.py``). Results go to
``benchmarks/results/banding-<model>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ct_patients import example_ct, lidc_total_v2  # noqa: E402

from seg2med_core.metrics import banding_for_image, banding_line  # noqa: E402


def measure_pair(synthetic: sitk.Image, real: sitk.Image, modality: str = "ct") -> dict[str, Any]:
    """Banding of ``synthetic`` vs ``real`` inside the real image's body contour."""
    from seg2med_core.preprocess import body_mask_from_image

    body = body_mask_from_image(real, modality)
    real_arr = sitk.GetArrayFromImage(real).astype(np.float32)
    if modality == "ct":
        real_arr = np.clip(real_arr, -1000.0, 1000.0)
    return banding_for_image(sitk.GetArrayFromImage(synthetic).astype(np.float32), real_arr, body, modality, real)


def parse_settings(text: str) -> list[tuple[float, float]]:
    out = []
    for part in text.split(","):
        w, _, r = part.partition(":")
        out.append((float(w), float(r or 0.0)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", default=None, help="existing synthetic volume (with --image): measure only")
    parser.add_argument("--image", default=None, help="real image for --synthetic")
    parser.add_argument("--model", default="demo_ct", help="bundle folder or registry name (default demo_ct)")
    parser.add_argument("--patients", default="example_ct,lidc-idri-0001", help="comma list of patients")
    parser.add_argument("--settings", default="0:0,0.5:0,1:0,0:0.9,1:0.9",
                        help="comma list of slice_coupling:noise_correlation (default 0:0,0.5:0,1:0,0:0.9,1:0.9)")
    parser.add_argument("--sampler", default=None, help="sampler kind (default: the CLI default)")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: the CLI default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--png-dir", default=None, help="write coronal/sagittal reformats (synthetic | real) here")
    parser.add_argument("--out", default=None, help="result JSON")
    args = parser.parse_args(argv)

    if args.synthetic:
        if not args.image:
            parser.error("--synthetic needs --image")
        result = measure_pair(sitk.ReadImage(args.synthetic), sitk.ReadImage(args.image))
        print(banding_line(result, "HU"))
        return 0

    from seg2med_core import io
    from seg2med_core.registry import resolve_bundle
    from seg2med_core.pipeline import synthesize
    from seg2med_core.sampler import SamplerConfig

    bundle = resolve_bundle(args.model, device=args.device)
    base = SamplerConfig(seed=args.seed)
    kind = args.sampler or base.kind
    steps = args.steps or base.steps
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="seg2med-banding-") as tmp:
        cases = {"example_ct": example_ct, "lidc-idri-0001": lambda: lidc_total_v2(Path(tmp))}
        for patient in args.patients.split(","):
            case = cases[patient]()
            seg = io.read_segmentation(case["seg"])
            image = io.read_image(case["image"])
            for coupling, rho in parse_settings(args.settings):
                config = SamplerConfig(kind=kind, steps=steps, seed=args.seed, slice_coupling=coupling, noise_correlation=rho)
                start = time.perf_counter()
                result = synthesize(seg, bundle, image=image, sampler=config, device=args.device)
                seconds = time.perf_counter() - start
                banding = result.metrics["banding"]
                row = {"patient": patient, "sampler": kind, "steps": steps, "slice_coupling": coupling,
                       "noise_correlation": rho, "seconds": round(seconds, 1),
                       "ssim": result.metrics["ssim"], "mae": result.metrics["mae"], "banding": banding}
                rows.append(row)
                print(f"{patient:15s} coupling {coupling:4.2f} noise-corr {rho:4.2f}: SSIM {row['ssim']:.3f} MAE "
                      f"{row['mae']:.1f} HU  {banding_line(banding, 'HU')}  ({seconds:.0f} s)", flush=True)
                if args.png_dir:
                    from seg2med_core.cli import CT_PREVIEW_WINDOW
                    from seg2med_core.preview import save_reformats

                    png = Path(args.png_dir) / f"{patient}_w{coupling:g}_r{rho:g}.png"
                    save_reformats(png, [("synthetic CT", sitk.GetArrayFromImage(result.image), CT_PREVIEW_WINDOW),
                                         ("real CT", sitk.GetArrayFromImage(image), CT_PREVIEW_WINDOW)],
                                   result.image, body=result.body,
                                   title=f"{patient}: {kind} {steps} steps, slice coupling {coupling:g}, noise correlation {rho:g}",
                                   footer="slice consistency: " + banding_line(banding, "HU"))
    print("\nlargest adjacent-slice jump of the mean soft-tissue HU, synthetic / real (target <= 2):")
    for row in rows:
        ratio = row["banding"]["ratio"]["max_jump"]
        print(f"  {row['patient']:15s} W={row['slice_coupling']:g} R={row['noise_correlation']:g}: x{ratio:.2f} "
              f"({'met' if ratio <= 2 else 'NOT met'})")
    from seg2med_core.cli_common import _json_safe
    from seg2med_core.io import write_json

    name = Path(str(args.model)).name
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"banding-{name}-{_dt.date.today()}.json"
    write_json(path, _json_safe({"benchmark": "banding", "model": str(args.model), "host": platform.node(),
                                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "rows": rows}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
