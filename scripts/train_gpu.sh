#!/usr/bin/env bash
# Train the paper-size network (channels 64,128,256,256, 2 res blocks, attention at the last level) with the
# issue-14 recipe (prior randomisation, 2.5D neighbours, prior residual, 1.5 mm / 256² slices) on ALL the
# labelled data in ../shared/data, within 15 minutes on one H100/H200:
#   CT: example_ct + lidc-idri-0001 (configs/paper_ct_gpu.json, CT_MINUTES, default 9 min of training)
#   MR: example_mr_sm (configs/paper_mr_gpu.json, MR_MINUTES, default 3 min), trained after the CT
# plus data preparation (about a minute). Bundles: $WORK/ct/bundle and $WORK/mr/bundle (copy them over
# seg2med_core/data/models/demo_ct|demo_mr, with their MODEL_CARD.md, to ship them).
#
#   scripts/train_gpu.sh                      # on the GPU machine, from the repository root
#   DATA=../shared/data WORK=/tmp/gpu_train DEVICE=cuda scripts/train_gpu.sh
#   TINY=1 DEVICE=cpu scripts/train_gpu.sh    # CPU check of the whole chain with a tiny network, a few steps
#
# LOPO=1 additionally trains the two leave-one-patient-out CT models (CT_MINUTES each; then the script takes
# longer than 15 minutes) and evaluates them with benchmarks/bench_lopo.py on the patient each never saw.
set -euo pipefail
DATA=${DATA:-../shared/data}
WORK=${WORK:-/tmp/seg2med_gpu_train}
DEVICE=${DEVICE:-cuda}
CT_MINUTES=${CT_MINUTES:-9}
MR_MINUTES=${MR_MINUTES:-3}
PY=${PYTHON:-python}
mkdir -p "$WORK"
extra=()
if [ "${TINY:-0}" = 1 ]; then
  extra=(--channels 32,32,32,32 --max-steps 2 --batch-size 2 --val-every 0 --checkpoint-every 0)
fi
T0=$SECONDS
$PY benchmarks/lopo_data.py --data "$DATA" --out "$WORK/data" > "$WORK/data.json"
train() {  # name config minutes args...
  local name=$1 config=$2 minutes=$3; shift 3
  $PY -m seg2med_core train --config "$config" --max-minutes "$minutes" --device "$DEVICE" --out "$WORK/$name" \
    --cache-dir "$WORK/cache" --progress-format none --name "seg2med-$name" "${extra[@]}" "$@" 2>&1 | tee "$WORK/$name.log"
}
train ct configs/paper_ct_gpu.json "$CT_MINUTES" --data "$WORK/data/all" --modality ct
train mr configs/paper_mr_gpu.json "$MR_MINUTES" --modality mr \
  --image "$DATA/totalsegmentator-examples/example_mr_sm.nii.gz" --seg "$DATA/totalsegmentator-examples/example_seg_mr.nii.gz"
echo "## all-data training took $((SECONDS - T0)) s; bundles: $WORK/ct/bundle $WORK/mr/bundle"
if [ "${LOPO:-0}" = 1 ]; then
  steps=${STEPS:-20}
  [ "${TINY:-0}" = 1 ] && steps=2
  train lopo_example_ct configs/paper_ct_gpu.json "$CT_MINUTES" --data "$WORK/data/train_example_ct" --modality ct
  train lopo_lidc configs/paper_ct_gpu.json "$CT_MINUTES" --data "$WORK/data/train_lidc-idri-0001" --modality ct
  $PY benchmarks/bench_lopo.py --model "$WORK/lopo_example_ct/bundle" --patient "$WORK/data/all/lidc-idri-0001" \
    --phase arterial --steps "$steps" --out "$WORK/lopo-train-example_ct-on-lidc.json"
  $PY benchmarks/bench_lopo.py --model "$WORK/lopo_lidc/bundle" --patient "$WORK/data/all/example_ct" \
    --phase native --steps "$steps" --out "$WORK/lopo-train-lidc-on-example_ct.json"
  echo "## with leave-one-patient-out: $((SECONDS - T0)) s"
fi
