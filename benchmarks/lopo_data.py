"""Lay out the two labelled CT patients of ../shared/data as seg2med training folders (for leave-one-patient-out).

    python benchmarks/lopo_data.py --data ../shared/data --out /tmp/lopo

writes ``OUT/<patient>/image.nii.gz`` (a symlink to the real scan) and ``OUT/<patient>/segmentation.nii.gz``
(TotalSegmentator ``total`` v2 numbering) for

* ``example_ct``: totalsegmentator-examples/example_ct.nii.gz + example_seg_fast_force_split.nii.gz (v2 already)
* ``lidc-idri-0001``: its labels_totalseg.nii.gz relabelled **by name** through its own structures.csv (its ids
  117/118 are ``carpal``/``costal_cartilages``, v2's 117 is ``costal_cartilages``; names without a v2 class,
  i.e. ``carpal``, become background and are listed).

and one folder per direction, ``OUT/train_<a>/`` holding only patient a (symlinks), so that
``seg2med train --data OUT/train_example_ct`` never sees lidc-idri-0001. Nothing is written into ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from seg2med_core import labels

PATIENTS = ("example_ct", "lidc-idri-0001")


def relabel_by_name(label_path: Path, structures_csv: Path, label_set: str = "total") -> tuple[sitk.Image, list[str]]:
    """The label map with every id translated through its own id→name table into ``label_set`` ids."""
    v2 = {name: i for i, name in labels.names_for(label_set, include_tissue=False).items()}
    with open(structures_csv, newline="", encoding="utf-8") as handle:
        own = {int(r["id"]): r["structure"].strip() for r in csv.DictReader(handle)}
    img = sitk.ReadImage(str(label_path))
    arr = sitk.GetArrayFromImage(img).astype(np.int64)
    lut = np.zeros(max(int(arr.max()), max(own)) + 1, dtype=np.uint16)
    dropped = []
    for i, name in own.items():
        if name in v2:
            lut[i] = v2[name]
        elif (arr == i).any():
            dropped.append(name)
    out = sitk.GetImageFromArray(lut[arr])
    out.CopyInformation(img)
    return out, dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data, out = Path(args.data).resolve(), Path(args.out)
    ts = data / "totalsegmentator-examples"
    lidc = data / "lidc-idri-0001"
    files = {
        "example_ct": (ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz"),
        "lidc-idri-0001": (lidc / "ct.nii.gz", None),
    }
    report = {}
    for patient, (image, seg) in files.items():
        folder = out / "all" / patient
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("image.nii.gz", "segmentation.nii.gz"):
            if (folder / name).is_symlink() or (folder / name).exists():
                (folder / name).unlink()
        os.symlink(image, folder / "image.nii.gz")
        if seg is not None:
            os.symlink(seg, folder / "segmentation.nii.gz")
            report[patient] = {"segmentation": str(seg), "relabelled": False}
        else:
            img, dropped = relabel_by_name(lidc / "labels_totalseg.nii.gz", lidc / "structures.csv")
            sitk.WriteImage(img, str(folder / "segmentation.nii.gz"), useCompression=True)
            report[patient] = {"segmentation": str(lidc / "labels_totalseg.nii.gz"), "relabelled": True, "dropped": dropped}
    for patient in PATIENTS:
        train = out / f"train_{patient}"
        train.mkdir(parents=True, exist_ok=True)
        link = train / patient
        if not link.exists():
            os.symlink((out / "all" / patient).resolve(), link)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
