#!/usr/bin/env bash
# Paper Experiment IV (Table VI): CT <-> MR conversion on 10 paired SynthRAD2023 pelvis patients that neither
# model saw (the --test-cases 10 of experiment_1_ct.sh, a subset of experiment_2_mr.sh's 40). MR labels
# (total_mr) go into the CT model and CT labels (total) into the MR model: the labels are converted by
# name, the body contour comes from the source image, and the result is compared with the paired image.
#   SYNTHRAD2023=/data/synthRAD2023 bash configs/recipes/experiment_4_conversion.sh   (after experiments 1 and 2)
set -euo pipefail
: "${SYNTHRAD2023:?set SYNTHRAD2023 (holds Task1/pelvis with ct_seg and mr_seg per patient)}"
RUNS=${RUNS:-runs}
EVAL=${EVAL:-eval}

seg2med evaluate --model "$RUNS/exp1_ddpm_ct/bundle" --data "$SYNTHRAD2023/Task1/pelvis" --seg-from mr --test-cases 10 --split test --out "$EVAL/exp4_mr_to_ct"
seg2med evaluate --model "$RUNS/exp2_mr_pelvis/bundle" --data "$SYNTHRAD2023/Task1/pelvis" --seg-from ct --test-cases 10 --split test --out "$EVAL/exp4_ct_to_mr"
seg2med evaluate --results "$EVAL/exp4_mr_to_ct" "$EVAL/exp4_ct_to_mr" --table vi --out "$EVAL/exp4_table"
