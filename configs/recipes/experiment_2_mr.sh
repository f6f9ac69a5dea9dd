#!/usr/bin/env bash
# Paper Experiment II (Table IV) on public data: one MR DDPM per dataset (the paper trained and tested the
# two MR datasets separately because their sequences differ), conditioned on total_mr + tissue_types_mr.
# SynthRAD2023 pelvis MR: 40 patients held out (the paper's MR test count); the 10 CT test patients of
# experiment_1_ct.sh are among them (same folder, same --split-seed), which experiment_4 relies on.
# TotalSegmentator MRI dataset (its own split) stands in for the paper's non-public M2OLIE abdomen MR.
#   SYNTHRAD2023=/data/synthRAD2023 TOTALSEG_MRI=/data/TotalsegmentatorMRI_dataset bash configs/recipes/experiment_2_mr.sh
set -euo pipefail
: "${SYNTHRAD2023:?set SYNTHRAD2023 (holds Task1/pelvis with mr_seg.nii.gz + mr_tissue.nii.gz: segment_synthrad.sh)}"
: "${TOTALSEG_MRI:?set TOTALSEG_MRI to the TotalSegmentator MRI dataset (s0000/mri.nii.gz, meta.csv)}"
RUNS=${RUNS:-runs}
EVAL=${EVAL:-eval}

seg2med train --config configs/paper_mr.json --data "$SYNTHRAD2023/Task1/pelvis" --test-cases 40 --out "$RUNS/exp2_mr_pelvis"
seg2med train --config configs/paper_mr.json --data "$TOTALSEG_MRI" --out "$RUNS/exp2_mr_abdomen"
seg2med evaluate --model "$RUNS/exp2_mr_pelvis/bundle" --data "$SYNTHRAD2023/Task1/pelvis" --test-cases 40 --split test --out "$EVAL/exp2_pelvis"
seg2med evaluate --model "$RUNS/exp2_mr_abdomen/bundle" --data "$TOTALSEG_MRI" --split test --out "$EVAL/exp2_abdomen"
seg2med evaluate --results "$EVAL/exp2_pelvis" "$EVAL/exp2_abdomen" --table iv --out "$EVAL/exp2_table"
