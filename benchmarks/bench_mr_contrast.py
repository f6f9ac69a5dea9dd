"""Does one MR model's output contrast follow the prior of any sequence? (issue 14)

    python benchmarks/bench_mr_contrast.py --model demo_mr --out benchmarks/results/mr-contrast.json \
        [--sequences vibe_in,vibe_opp,t2_fse,custom:500,15,70]

For each sequence: one synthesis of the example MR's segmentation through the product's pipeline
(:func:`seg2med_core.pipeline.synthesize` with ``sequence=...``, what ``seg2med synthesize --sequence`` runs),
then per organ (every ``total_mr`` class with at least ``--min-voxels`` voxels inside the body) the mean of the
prior and of the output in model space [0, 1], and the Spearman rank correlation between the two (target ≥ 0.8).
NOTE: the shipped MR model was trained on this very MR (the only labelled MR here) — these numbers are on
training data; they measure whether the contrast follows the prior, not generalisation to other patients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg2med_core import io  # noqa: E402
from seg2med_core.bundle import load_bundle  # noqa: E402
from seg2med_core.cli import parse_sequence  # noqa: E402
from seg2med_core.pipeline import MR_OUTPUT_SCALE, synthesize  # noqa: E402
from seg2med_core.prior import normalise_prior  # noqa: E402
from seg2med_core.registry import resolve_bundle_path  # noqa: E402
from seg2med_core.sampler import SamplerConfig  # noqa: E402

DEFAULT_SEQUENCES = "vibe_in,vibe_opp,t2_fse,custom:500,15,70"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo_mr")
    ap.add_argument("--data", default="../shared/data/totalsegmentator-examples")
    ap.add_argument("--sequences", default=DEFAULT_SEQUENCES, help="comma list; custom:TR,TE,FLIP counts as one")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--min-voxels", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = Path(args.data)
    seg = io.read_segmentation(data / "example_seg_mr.nii.gz")
    image = io.read_image(data / "example_mr_sm.nii.gz")
    bundle = load_bundle(resolve_bundle_path(args.model))
    labels = sitk.GetArrayFromImage(seg.image)
    parts = args.sequences.split(",")
    names: list[str] = []
    while parts:  # custom:TR,TE,FLIP has commas of its own
        head = parts.pop(0)
        if head.startswith("custom:"):
            head = ",".join([head, parts.pop(0), parts.pop(0)])
        names.append(head)
    results = {}
    for name in names:
        sequence = parse_sequence(name)
        # no image: the output stays in model units × MR_OUTPUT_SCALE (not rescaled to the real MR's range)
        body = io.read_image(data / "example_mr_sm.nii.gz")
        from seg2med_core.pipeline import body_mask

        mask = body_mask(seg, body, "mr")
        result = synthesize(seg, bundle, body=mask, sequence=sequence, sampler=SamplerConfig(steps=args.steps, seed=0))
        out01 = sitk.GetArrayFromImage(result.image) / MR_OUTPUT_SCALE
        prior01 = normalise_prior(sitk.GetArrayFromImage(result.prior), "mr", sequence)
        organs = {}
        for i, organ in seg.names.items():
            m = (labels == i) & result.body
            if m.sum() >= args.min_voxels:
                organs[organ] = {"prior": round(float(prior01[m].mean()), 4), "output": round(float(out01[m].mean()), 4),
                                 "voxels": int(m.sum())}
        rho = spearmanr([v["prior"] for v in organs.values()], [v["output"] for v in organs.values()]).statistic
        results[name] = {"spearman": round(float(rho), 3), "n_organs": len(organs), "organs": organs}
        print(f"{name:22s} Spearman(prior, output) over {len(organs)} organs = {rho:.3f}", flush=True)
    payload = {"model": args.model, "training_data": bundle.metadata.training_data, "image": str(data / "example_mr_sm.nii.gz"),
               "note": "per-organ means of prior and output (model space); the model was trained on this MR",
               "sampler": f"dpmpp_2m, {args.steps} steps, seed 0", "sequences": results}
    io.write_json(args.out, payload)


if __name__ == "__main__":
    main()
