"""Leave-one-patient-out evaluation of a CT model on a patient it never saw (issue 14).

    python benchmarks/bench_lopo.py --model RUN/bundle --patient /tmp/lopo/all/lidc-idri-0001 \
        --phase arterial --steps 20 --out benchmarks/results/lopo-train-example_ct-on-lidc.json

(the patient folders come from ``benchmarks/lopo_data.py``). One synthesis through the product's pipeline
(:func:`seg2med_core.pipeline.synthesize`, what ``seg2med synthesize --image ... --metrics`` runs) and the
prior alone (the same prior the model was conditioned on), both compared with the real image by
:func:`seg2med_core.pipeline.compare_to_real` inside the body:

* ``whole``: every slice;
* ``overlap``: the slices from the lowest to the highest slice holding vertebrae T11–L3, the only anatomy
  the two labelled CT patients share (the issue's targets apply here);
* per organ (liver, spleen, kidneys, aorta): mean HU of real, synthetic and prior inside the label.

Prints a table and writes the JSON (and ``--volume``: the synthetic CT). Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg2med_core import io  # noqa: E402
from seg2med_core.bundle import load_bundle  # noqa: E402
from seg2med_core.labels import names_for  # noqa: E402
from seg2med_core.pipeline import compare_to_real, synthesize  # noqa: E402
from seg2med_core.preprocess import normalise_ct  # noqa: E402
from seg2med_core.sampler import SamplerConfig  # noqa: E402

OVERLAP_VERTEBRAE = ("vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3")
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "aorta")
METRICS = ("ssim", "mae", "psnr", "histcc")


def overlap_slices(labels: np.ndarray, names: dict[int, str]) -> tuple[int, int]:
    """``[start, stop)`` axial (array z) range spanned by the T11–L3 labels."""
    ids = [i for i, n in names.items() if n in OVERLAP_VERTEBRAE]
    z = np.flatnonzero(np.isin(labels, ids).any(axis=(1, 2)))
    if z.size == 0:
        raise SystemExit("bench_lopo: the segmentation has no T11-L3 vertebra labels")
    return int(z.min()), int(z.max()) + 1


def pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in METRICS if k in metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--patient", required=True, help="folder with image.nii.gz + segmentation.nii.gz (total v2)")
    ap.add_argument("--phase", default=None, choices=("native", "arterial", "portal-venous"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON file")
    ap.add_argument("--volume", default=None, help="also write the synthetic CT here")
    args = ap.parse_args()

    folder = Path(args.patient)
    image = io.read_image(folder / "image.nii.gz")
    seg = io.read_segmentation(folder / "segmentation.nii.gz", label_set="total")
    bundle = load_bundle(args.model)
    t0 = time.perf_counter()
    result = synthesize(seg, bundle, image=image, phase=args.phase,
                        sampler=SamplerConfig(kind=args.sampler, steps=args.steps, seed=args.seed),
                        info=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - t0
    synthetic01 = normalise_ct(sitk.GetArrayFromImage(result.image).astype(np.float32))
    prior01 = normalise_ct(sitk.GetArrayFromImage(result.prior).astype(np.float32))
    labels = sitk.GetArrayFromImage(seg.image)
    names = names_for("total")
    z0, z1 = overlap_slices(labels, names)
    slab = np.zeros_like(result.body)
    slab[z0:z1] = True
    out: dict = {
        "model": str(args.model),
        "model_training_data": bundle.metadata.training_data,
        "patient": str(folder),
        "phase": args.phase or "native",
        "sampler": f"{args.sampler}, {args.steps} steps, seed {args.seed}",
        "seconds": round(seconds, 1),
        "overlap_slices": [z0, z1],
        "overlap_definition": "array z range spanned by the vertebrae_T11..vertebrae_L3 labels",
    }
    for region, mask in (("whole", result.body), ("overlap", result.body & slab)):
        out[region] = {
            "model": pick(compare_to_real(synthetic01, image, mask, "ct")),
            "prior": pick(compare_to_real(prior01, image, mask, "ct")),
        }
    real_hu = sitk.GetArrayFromImage(image).astype(np.float32)
    synth_hu = sitk.GetArrayFromImage(result.image).astype(np.float32)
    prior_hu = sitk.GetArrayFromImage(result.prior).astype(np.float32)
    organs = {}
    for organ in ORGANS:
        ids = [i for i, n in names.items() if n == organ]
        mask = np.isin(labels, ids) & result.body
        if mask.any():
            organs[organ] = {
                "real": round(float(real_hu[mask].mean()), 1),
                "model": round(float(synth_hu[mask].mean()), 1),
                "prior": round(float(prior_hu[mask].mean()), 1),
                "voxels": int(mask.sum()),
            }
    out["organs_mean_hu"] = organs
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    io.write_json(args.out, out)
    if args.volume:
        io.write_image(result.image, args.volume)
    print(f"{'region':8s} {'':6s} " + " ".join(f"{m:>8s}" for m in METRICS))
    for region in ("whole", "overlap"):
        for who in ("model", "prior"):
            print(f"{region:8s} {who:6s} " + " ".join(f"{out[region][who].get(m, float('nan')):8.3f}" for m in METRICS))
    for organ, v in organs.items():
        print(f"{organ:14s} real {v['real']:7.1f}  model {v['model']:7.1f}  prior {v['prior']:7.1f} HU")
    print(json.dumps({"overlap_slices": [z0, z1], "seconds": out["seconds"]}))


if __name__ == "__main__":
    main()
