#!/usr/bin/env bash
# Paper Experiment I (Table II + III) on public data: CT DDPM and the AttentionUnet baseline trained on
# SynthRAD2023 pelvis (10 patients held out, as the paper) pooled with the TotalSegmentator CT dataset
# (its own meta.csv train/val/test split; stands in for the paper's non-public internal abdomen CT), both
# tested on those held-out cases and on AMOS22 CT (never trained on; stands in for M2OLIE abdomen CT).
#   SYNTHRAD2023=/data/synthRAD2023 TOTALSEG=/data/Totalsegmentator_dataset_v201 AMOS=/data/amos22 \
#     bash configs/recipes/experiment_1_ct.sh
set -euo pipefail
: "${SYNTHRAD2023:?set SYNTHRAD2023 (holds Task1/pelvis with ct_seg.nii.gz per patient: segment_synthrad.sh)}"
: "${TOTALSEG:?set TOTALSEG to the TotalSegmentator CT dataset (s0000/..., meta.csv)}"
: "${AMOS:?set AMOS to the AMOS22 folder (imagesTr, labelsTr, imagesVa, labelsVa, dataset.json)}"
RUNS=${RUNS:-runs}
EVAL=${EVAL:-eval}

seg2med dataset list "$SYNTHRAD2023/Task1/pelvis" "$TOTALSEG" --modality ct --test-cases 10
seg2med train --config configs/paper_ct.json --data "$SYNTHRAD2023/Task1/pelvis" "$TOTALSEG" --test-cases 10 --out "$RUNS/exp1_ddpm_ct"
seg2med train --config configs/attention_unet_ct.json --baseline attention-unet --data "$SYNTHRAD2023/Task1/pelvis" "$TOTALSEG" --test-cases 10 --out "$RUNS/exp1_unet_ct"

for model in ddpm unet; do
  seg2med evaluate --model "$RUNS/exp1_${model}_ct/bundle" --data "$SYNTHRAD2023/Task1/pelvis" "$TOTALSEG" --test-cases 10 --split test --out "$EVAL/exp1_${model}_seen"
  seg2med evaluate --model "$RUNS/exp1_${model}_ct/bundle" --data "$AMOS" --modality ct --split all --out "$EVAL/exp1_${model}_amos"
done
seg2med evaluate --results "$EVAL/exp1_ddpm_seen" "$EVAL/exp1_ddpm_amos" "$EVAL/exp1_unet_seen" "$EVAL/exp1_unet_amos" \
  --run-names DDPM,DDPM,UNet,UNet --table ii --out "$EVAL/exp1_table"
