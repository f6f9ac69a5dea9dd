#!/usr/bin/env bash
# SynthRAD ships no organ labels: run TotalSegmentator once per patient, next to the images, with the file
# names the synthrad2023 / synthrad2025 layouts look for (ct_seg, mr_seg, mr_tissue). Needs a GPU for
# reasonable speed; tissue_types_mr needs a TotalSegmentator licence key (totalseg_set_license). SynthRAD2025's
# MetaImage files are converted to a temporary NIfTI first (TotalSegmentator reads NIfTI or DICOM).
#   SYNTHRAD_TASK=/data/synthRAD2023/Task1/pelvis bash configs/recipes/segment_synthrad.sh
set -euo pipefail
: "${SYNTHRAD_TASK:?set SYNTHRAD_TASK to a SynthRAD Task1 anatomy folder, e.g. .../Task1/pelvis}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nifti() {  # $1 = patient folder, $2 = ct|mr: path of a NIfTI copy of that image, or nothing
  if [ -f "$1/$2.nii.gz" ]; then echo "$1/$2.nii.gz"
  elif [ -f "$1/$2.mha" ]; then
    python -c "import SimpleITK as s, sys; s.WriteImage(s.ReadImage(sys.argv[1]), sys.argv[2])" "$1/$2.mha" "$tmp/$2.nii.gz"
    echo "$tmp/$2.nii.gz"
  fi
}

for patient in "$SYNTHRAD_TASK"/*/; do
  patient=${patient%/}
  ct=$(nifti "$patient" ct)
  [ -n "$ct" ] || continue
  [ -f "$patient/ct_seg.nii.gz" ] || TotalSegmentator -i "$ct" -o "$patient/ct_seg.nii.gz" --ml
  mr=$(nifti "$patient" mr)
  if [ -n "$mr" ]; then
    [ -f "$patient/mr_seg.nii.gz" ] || TotalSegmentator -i "$mr" -o "$patient/mr_seg.nii.gz" --ml -ta total_mr
    [ -f "$patient/mr_tissue.nii.gz" ] || TotalSegmentator -i "$mr" -o "$patient/mr_tissue.nii.gz" --ml -ta tissue_types_mr
  fi
done
