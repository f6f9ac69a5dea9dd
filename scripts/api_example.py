#!/usr/bin/env python
"""seg2med's Python API end to end: read → synthesise → write, convert, phantom (see README "Python API").

    python scripts/api_example.py --out api_demo/                      # procedural phantom, shipped demo models
    python scripts/api_example.py --out api_demo/ --seg SEG --image CT # your own segmentation (+ its image)

Writes into --out: phantom.nii.gz, phantom_maisi.nii.gz, sct.nii.gz, sct_dicom/ (DICOM series),
smr_from_sct.nii.gz (CT → MR conversion) and report.txt. Uses the command line's defaults (DPM-Solver++,
20 steps, seed 0, device auto) unless --steps / --device say otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from seg2med_core import api


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--seg", default=None, help="a 'total' segmentation (default: a procedural phantom)")
    p.add_argument("--image", default=None, help="the CT the segmentation came from (body contour, metrics)")
    p.add_argument("--ct-model", default="demo_ct", help="CT bundle folder or registry name")
    p.add_argument("--mr-model", default="demo_mr", help="MR bundle folder or registry name ('none': skip MR)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: SamplerConfig()'s, as the CLI)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise api.Seg2MedError(f"--out folder '{out}' is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    # 1. a segmentation: a procedural phantom, or the user's file (read exactly as the CLI reads --seg)
    if args.seg:
        seg = api.read_segmentation(args.seg, info=lines.append)
    else:
        seg = api.make_phantom(seed=0)
        api.write_segmentation(seg, out / "phantom.nii.gz")
    image = api.read_image(args.image) if args.image else None

    # 2. the same labels in MAISI's label set (ids 1-132, unlabelled body = 200)
    maisi, report = api.export_segmentation(seg, "maisi")
    api.write_segmentation(maisi, out / "phantom_maisi.nii.gz")
    lines.append(report.summary())

    # 3. read → synthesise → write (NIfTI and a DICOM series)
    sampler = api.SamplerConfig() if args.steps is None else api.SamplerConfig(steps=args.steps)
    ct_model = api.load_model(args.ct_model, device=args.device)
    start = time.perf_counter()
    result = api.synthesize(seg, ct_model, image=image, sampler=sampler, device=args.device, info=lines.append)
    lines.append(f"synthetic CT: {result.slices_sampled} slices in {time.perf_counter() - start:.1f} s")
    if result.metrics:
        lines.append(f"metrics inside the body: {result.metrics}")
    api.write_image(result.image, out / "sct.nii.gz")
    api.write_dicom_series(result.image, out / "sct_dicom", "ct", info=lines.append)

    # 4. convert: CT → MR (labels to total_mr, body contour from the CT, MR synthesis)
    if args.mr_model != "none":
        mr_model = api.load_model(args.mr_model, device=args.device)
        smr, conversion = api.convert(result.image, seg, "mr", mr_model, sampler=sampler, device=args.device)
        api.write_image(smr.image, out / "smr_from_sct.nii.gz")
        lines.append("labels converted: " + (conversion.summary() if conversion else "none needed"))

    (out / "report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except api.Seg2MedError as exc:
        print(f"seg2med: error: {exc}", file=sys.stderr)
        sys.exit(2)
