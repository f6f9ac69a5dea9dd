#!/usr/bin/env bash
# Train, evaluate and install the two demonstration bundles (demo_ct, demo_mr) from the public
# TotalSegmentator example case.
#
# usage: tools/train_demo_models.sh DATA_DIR [--quick] [--models-dir DIR] [--work-dir DIR]
#                                   [--device auto|cpu|cuda] [--ct-minutes M] [--mr-minutes M]
#
#   DATA_DIR      folder with example_ct.nii.gz, example_seg_fast_force_split.nii.gz,
#                 example_mr_sm.nii.gz and example_seg_mr.nii.gz
#   --quick       CPU smoke run (a few steps, few sampling steps); installs into WORK/models unless
#                 --models-dir is given, so the shipped bundles are not replaced by untrained ones
#   --models-dir  where demo_ct/ and demo_mr/ are installed (default seg2med_core/data/models)
#   --work-dir    run folders, evaluations and the slice cache (default ./demo_runs)
#   --ct-minutes / --mr-minutes   training time budgets (default: configs/demo_*.json)
#   --only ct|mr  train just one of the two models (e.g. to run both at once on two CPU cores)
#
# Each model: train with a contiguous 15 % block of axial slices held out, evaluate the model and the
# prior-only baseline on exactly those slices, write MODEL_CARD.md with the measured numbers, install.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
[[ "$1" == "-h" || "$1" == "--help" ]] && { usage; exit 0; }
DATA=$1; shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0; MODELS=""; WORK="$PWD/demo_runs"; DEVICE=auto; CT_MIN=""; MR_MIN=""; ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --models-dir) MODELS=$2; shift 2 ;;
    --work-dir) WORK=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --ct-minutes) CT_MIN=$2; shift 2 ;;
    --mr-minutes) MR_MIN=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for f in example_ct.nii.gz example_seg_fast_force_split.nii.gz example_mr_sm.nii.gz example_seg_mr.nii.gz; do
  [[ -f "$DATA/$f" ]] || { echo "missing $DATA/$f" >&2; exit 2; }
done
if [[ -z "$MODELS" ]]; then
  if [[ $QUICK == 1 ]]; then MODELS="$WORK/models"; else MODELS="$ROOT/seg2med_core/data/models"; fi
fi
mkdir -p "$WORK" "$MODELS"
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
S2M=("$PY" -m seg2med_core.training.cli)

TRAIN_EXTRA=(); EVAL_STEPS=50
if [[ $QUICK == 1 ]]; then
  TRAIN_EXTRA=(--max-steps 6 --batch-size 4 --val-every 0 --checkpoint-every 3 --max-minutes 3)
  EVAL_STEPS=2
fi

demo() {  # name modality image seg config minutes [extra args...]
  local name=$1 modality=$2 image=$3 seg=$4 config=$5 minutes=$6; shift 6
  local run="$WORK/${name}_run" evaldir="$WORK/${name}_eval" priordir="$WORK/${name}_prior"
  local budget=(); [[ -n "$minutes" ]] && budget=(--max-minutes "$minutes")
  rm -rf "$run" "$evaldir" "$priordir"
  echo "== training $name ($modality) =="
  "${S2M[@]}" train --image "$DATA/$image" --segmentation "$DATA/$seg" --modality "$modality" \
    --config "$ROOT/configs/$config" --out "$run" --device "$DEVICE" --cache-dir "$WORK/cache" \
    --progress-format none "${budget[@]}" "${TRAIN_EXTRA[@]}" "$@"
  local slices
  slices=$("$PY" -c 'import json,sys; h=json.load(open(sys.argv[1]))["holdout_slices"]; a,b=next(iter(h.values())); print(f"{a}:{b}")' "$run/data.json")
  echo "== evaluating $name on held-out slices $slices =="
  "${S2M[@]}" evaluate --baseline prior --modality "$modality" --image "$DATA/$image" --segmentation "$DATA/$seg" \
    --slices "$slices" --out "$priordir" --no-images --progress-format none "$@"
  "${S2M[@]}" evaluate --model "$run/bundle" --image "$DATA/$image" --segmentation "$DATA/$seg" \
    --slices "$slices" --steps "$EVAL_STEPS" --device "$DEVICE" --out "$evaldir" --compare "$priordir" \
    --progress-format none
  "$PY" -m seg2med_core.training.model_card --bundle "$run/bundle" --run "$run" --eval "$evaldir" \
    --baseline-eval "$priordir" --install "$MODELS/demo_$name" >/dev/null
  echo "installed $MODELS/demo_$name ($(du -sh "$MODELS/demo_$name" | cut -f1))"
  sed -n '/## Measured/,$p' "$MODELS/demo_$name/MODEL_CARD.md"
}

[[ -z "$ONLY" || "$ONLY" == ct ]] && demo ct ct example_ct.nii.gz example_seg_fast_force_split.nii.gz demo_ct.json "$CT_MIN"
[[ -z "$ONLY" || "$ONLY" == mr ]] && demo mr mr example_mr_sm.nii.gz example_seg_mr.nii.gz demo_mr.json "$MR_MIN" --sequence vibe_in
