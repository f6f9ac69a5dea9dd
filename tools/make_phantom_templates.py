"""Build the shipped phantom templates (seg2med_core/phantoms/data/) from two real labelled CT scans.

    python tools/make_phantom_templates.py [--data ../shared/data] [--out seg2med_core/phantoms/data]

Templates (TotalSegmentator ``total`` v2 ids + tissue ids 201-203, LPS identity direction, NIfTI with names):

* ``abdomen_pelvis.nii.gz``: the TotalSegmentator example segmentation
  (``totalsegmentator-examples/example_seg_fast_force_split.nii.gz``, Apache-2.0), 3 mm, T11 → femoral heads.
* ``thorax.nii.gz``: the LIDC-IDRI-0001 label map (``lidc-idri-0001/labels_totalseg.nii.gz``, CC BY 3.0),
  neck → L3, relabelled by *name* with its own ``structures.csv`` (its 117/118 are not ``total`` v2's) and
  downsampled from 0.70 × 0.70 × 2.5 mm to 3 mm with SimpleITK's label-Gaussian interpolator.

Neither label map has the tissue classes, so they are derived from the matching CT (HU thresholds, in the
template grid): body = CT > -400 HU (largest component, holes filled per slice, opened by 4 mm to drop the
table) ∪ labels; fat = unlabelled body voxels in [-190, -30] HU, split per axial slice into
``subcutaneous_fat`` (fat connected to the skin) and ``torso_fat`` (the rest); ``skeletal_muscle`` =
unlabelled voxels in (-30, 150] HU within 25 mm of the skin or the subcutaneous fat (body-wall muscles);
the one-voxel skin band that is still unlabelled becomes ``subcutaneous_fat`` so that the body contour
derived from the labels is the skin. The CTs themselves are not shipped.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg2med_core import io  # noqa: E402
from seg2med_core.labels import TISSUE_OFFSET, names_for  # noqa: E402

SUBCUT, TORSO_FAT, MUSCLE = TISSUE_OFFSET + 1, TISSUE_OFFSET + 2, TISSUE_OFFSET + 3


def _lps(img: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(img, "LPS")


def _remap_by_name(arr: np.ndarray, file_names: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    ids = {n: i for i, n in names_for("total", include_tissue=False).items()}
    lut = np.zeros(int(arr.max()) + 1, np.uint16)
    dropped = []
    for i in np.unique(arr):
        i = int(i)
        if i == 0:
            continue
        name = file_names.get(i)
        if name in ids:
            lut[i] = ids[name]
        else:
            dropped.append(f"{i}={name}")
    return lut[arr], dropped


def _tissues(labels: np.ndarray, ct: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    sp = np.array(spacing_xyz[::-1])
    body = ct > -400.0
    body = ndimage.binary_opening(body, ndimage.generate_binary_structure(3, 1), iterations=max(1, int(round(4.0 / sp[1]))))
    lab, n = ndimage.label(body)
    if n:
        sizes = ndimage.sum(body, lab, range(1, n + 1))
        body = lab == (1 + int(np.argmax(sizes)))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    body |= labels > 0
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    out = labels.astype(np.uint16).copy()
    free = body & (out == 0)
    # distance to the outside, in-plane (per slice)
    dist = np.stack([ndimage.distance_transform_edt(body[k], sampling=sp[1:]) for k in range(body.shape[0])])
    fat = free & (ct >= -190.0) & (ct <= -30.0)
    skin_band = dist <= 1.5 * sp[1]
    subcut = np.zeros_like(fat)
    for k in range(fat.shape[0]):
        lab2, n2 = ndimage.label(fat[k])
        if n2:
            touching = np.unique(lab2[skin_band[k] & fat[k]])
            subcut[k] = np.isin(lab2, touching[touching > 0])
    out[subcut] = SUBCUT
    out[fat & ~subcut] = TORSO_FAT
    outer = ~body | subcut
    d_outer = np.stack([ndimage.distance_transform_edt(~outer[k], sampling=sp[1:]) for k in range(body.shape[0])])
    muscle = free & (ct > -30.0) & (ct <= 150.0) & (d_outer <= 25.0)
    out[muscle] = MUSCLE
    out[body & (out == 0) & skin_band & (dist <= 1.0 * sp[1] + 1e-6)] = SUBCUT
    return out


def _write(labels: np.ndarray, ref: sitk.Image, path: Path) -> None:
    img = sitk.GetImageFromArray(labels.astype(np.uint16))
    img.CopyInformation(ref)
    io.write_segmentation(io.Segmentation(img, names_for("total"), "total"), path)
    print(f"wrote {path}: size {img.GetSize()}, spacing {img.GetSpacing()}, {path.stat().st_size / 1e6:.3f} MB")


def build_abdomen_pelvis(data: Path, out: Path) -> None:
    folder = data / "totalsegmentator-examples"
    seg_path = folder / "example_seg_fast_force_split.nii.gz"
    seg = _lps(sitk.ReadImage(str(seg_path)))
    ct = _lps(sitk.ReadImage(str(folder / "example_ct.nii.gz")))
    names = io.nifti_label_names(seg_path) or names_for("total", include_tissue=False)
    arr, dropped = _remap_by_name(sitk.GetArrayFromImage(seg), names)
    print("abdomen_pelvis: dropped", dropped or "nothing")
    labels = _tissues(arr, sitk.GetArrayFromImage(ct).astype(np.float32), seg.GetSpacing())
    _write(labels, seg, out / "abdomen_pelvis.nii.gz")


def build_thorax(data: Path, out: Path, spacing: float) -> None:
    folder = data / "lidc-idri-0001"
    seg = _lps(sitk.ReadImage(str(folder / "labels_totalseg.nii.gz")))
    ct = _lps(sitk.ReadImage(str(folder / "ct.nii.gz")))
    with open(folder / "structures.csv", newline="", encoding="utf-8") as f:
        names = {int(r["id"]): r["structure"].strip() for r in csv.DictReader(f)}
    arr, dropped = _remap_by_name(sitk.GetArrayFromImage(seg), names)
    print("thorax: dropped", dropped or "nothing")
    remapped = sitk.GetImageFromArray(arr)
    remapped.CopyInformation(seg)
    size_mm = np.array(seg.GetSize()) * np.array(seg.GetSpacing())
    new_size = [int(round(s / spacing)) for s in size_mm]
    ref = sitk.Image(new_size, sitk.sitkUInt16)
    ref.SetSpacing((spacing,) * 3)
    ref.SetDirection(seg.GetDirection())
    # keep the physical extent centred: first voxel centre moves by half the change of voxel size
    origin = np.array(seg.GetOrigin()) - 0.5 * np.array(seg.GetSpacing()) + 0.5 * spacing
    ref.SetOrigin(tuple(float(v) for v in origin))
    lab = sitk.Resample(remapped, ref, sitk.Transform(), sitk.sitkLabelGaussian, 0, sitk.sitkUInt16)
    ct_small = sitk.Resample(sitk.SmoothingRecursiveGaussian(sitk.Cast(ct, sitk.sitkFloat32), 0.6), ref, sitk.Transform(),
                             sitk.sitkLinear, -2048.0, sitk.sitkFloat32)
    labels = _tissues(sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(ct_small), ref.GetSpacing())
    _write(labels, ref, out / "thorax.nii.gz")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "seg2med_core" / "phantoms" / "data"))
    ap.add_argument("--thorax-spacing", type=float, default=3.0)
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_abdomen_pelvis(data, out)
    build_thorax(data, out, args.thorax_spacing)
    shutil.copyfile(data / "totalsegmentator-examples" / "LICENSE", out / "LICENSE-TotalSegmentator-Apache-2.0.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
