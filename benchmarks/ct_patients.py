"""The two labelled CT patients of ``../shared/data`` for the benchmark scripts (not part of the package).

``example_ct`` (TotalSegmentator examples, abdomen + pelvis, 3 mm) has a ``total`` v2 label map.
``lidc-idri-0001`` (thorax + upper abdomen, 512² × 133, 0.70 × 0.70 × 2.5 mm) has its own id → name table
(``structures.csv``) whose ids differ from v2 at 117/118; :func:`lidc_total_v2` rewrites the label map into
the v2 numbering by *name* (classes v2 does not know, such as ``carpal``, become 0) in a folder of the
caller's choice, so the normal ``seg2med`` commands can read it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEG2MED_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
EXAMPLES = DATA / "totalsegmentator-examples"
LIDC = DATA / "lidc-idri-0001"


def example_ct() -> dict[str, Path]:
    """Image and ``total`` v2 segmentation of the TotalSegmentator example CT (3 mm)."""
    case = {"image": EXAMPLES / "example_ct.nii.gz", "seg": EXAMPLES / "example_seg_fast_force_split.nii.gz"}
    _check(case)
    return case


def lidc_total_v2(folder: Path) -> dict[str, Path]:
    """Image of lidc-idri-0001 and its label map renumbered to ``total`` v2 by name, written into ``folder``."""
    from seg2med_core import io, labels

    case = {"image": LIDC / "ct.nii.gz", "seg": LIDC / "labels_totalseg.nii.gz", "table": LIDC / "structures.csv"}
    _check(case)
    out = Path(folder) / "lidc-idri-0001_total_v2.nii.gz"
    if not out.exists():
        v2 = {name: idx for idx, name in labels.get_label_set("total").items()}
        with open(case["table"], newline="", encoding="utf-8") as fh:
            own = {int(row["id"]): row["structure"] for row in csv.DictReader(fh)}
        img = sitk.ReadImage(str(case["seg"]))
        arr = sitk.GetArrayFromImage(img).astype(np.int64)
        lut = np.zeros(max(int(arr.max()), max(own)) + 1, dtype=np.uint16)
        for idx, name in own.items():
            lut[idx] = v2.get(name, 0)
        seg = sitk.GetImageFromArray(lut[arr])
        seg.CopyInformation(img)
        names = {i: n for i, n in labels.get_label_set("total").items() if i in set(np.unique(lut[arr]).tolist())}
        io.write_segmentation(io.Segmentation(image=seg, names=names, label_set="total"), out)
    return {"image": case["image"], "seg": out}


def _check(case: dict[str, Path]) -> None:
    missing = [str(p) for p in case.values() if not p.exists()]
    if missing:
        raise SystemExit(f"data not found: {', '.join(missing)} (set SEG2MED_SHARED_DATA)")
