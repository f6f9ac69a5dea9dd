"""README figure of template phantoms: labels and prior CT/MR, coronal and axial, for a few seeds and regions.

    python tools/phantom_figure.py [--out docs/phantoms.png]

No model is needed: the priors are ``prior.prior_image`` (tissue tables), so the figure shows the anatomy the
synthesis starts from. Radiological display (patient right on the left), head up in the coronal planes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg2med_core.labels import names_for  # noqa: E402
from seg2med_core.phantoms.template import make_template_phantom  # noqa: E402
from seg2med_core.pipeline import body_mask, convert_segmentation  # noqa: E402
from seg2med_core.prior import prior_image  # noqa: E402

CASES = [  # (title, seed, sex, height, bmi, region)
    ("torso, female, 165 cm, BMI 27 (seed 1)", 1, "female", 165.0, 27.0, "torso"),
    ("torso, male, 185 cm, BMI 22 (seed 2)", 2, "male", 185.0, 22.0, "torso"),
    ("abdomen-pelvis, male, 175 cm, BMI 32 (seed 0)", 0, "male", 175.0, 32.0, "abdomen-pelvis"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "docs" / "phantoms.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(7)
    palette = rng.uniform(0.25, 1.0, (300, 3))
    palette[0] = 0.0
    palette[201], palette[202], palette[203] = (0.95, 0.85, 0.45), (0.8, 0.65, 0.25), (0.65, 0.2, 0.2)
    ids = {n: i for i, n in names_for("total").items()}
    fig, axes = plt.subplots(len(CASES), 5, figsize=(17, 4.3 * len(CASES)),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.25, 1.25]})
    for row, (title, seed, sex, height, bmi, region) in enumerate(CASES):
        seg = make_template_phantom(seed, sex=sex, height_cm=height, bmi=bmi, region=region)
        arr = seg.array()
        body = body_mask(seg)
        ct = sitk.GetArrayFromImage(prior_image(seg, "ct", body=body))
        mr_seg, _ = convert_segmentation(seg, "total_mr")
        mr = sitk.GetArrayFromImage(prior_image(mr_seg, "mr", body=body))
        sp = seg.image.GetSpacing()
        y = int(np.argwhere(arr == ids["vertebrae_L1"])[:, 1].mean()) - int(25 / sp[1])  # through the kidneys/liver
        cor = [a[::-1, y, :] for a in (arr, ct, mr)]
        aspect = sp[2] / sp[0]
        axes[row, 0].imshow(palette[cor[0]], aspect=aspect, interpolation="nearest")
        axes[row, 1].imshow(cor[1], cmap="gray", vmin=-160, vmax=240, aspect=aspect)
        axes[row, 2].imshow(cor[2], cmap="gray", vmin=0, vmax=np.percentile(mr[body], 99), aspect=aspect)
        k = int(np.argwhere(arr == ids["vertebrae_L1"])[:, 0].mean())
        axes[row, 3].imshow(palette[arr[k]], aspect=sp[1] / sp[0], interpolation="nearest")
        axes[row, 4].imshow(ct[k], cmap="gray", vmin=-160, vmax=240, aspect=sp[1] / sp[0])
        for ax, t in zip(axes[row], ("labels, coronal", "prior CT, coronal", "prior MR (vibe_in), coronal",
                                     "labels, axial at L1", "prior CT, axial at L1")):
            ax.set_title(t if row == 0 else "", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title, fontsize=10)
    fig.suptitle("Template phantoms (seg2med phantom): deformed TotalSegmentator example + LIDC-IDRI-0001 label maps. "
                 "LIDC: Armato SG III et al., Med Phys 2011; TCIA", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
