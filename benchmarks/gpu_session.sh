#!/usr/bin/env bash
# One GPU lease (device tool, ~8 minutes): train + evaluate the demo bundles, then the sampling benchmarks.
# Run from the repository root on the GPU machine with the wheels in .whl/ and the example data in
# .gpu_data/ (both carried; see benchmarks/README.md). Everything worth keeping is written under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHON=python3 MPLBACKEND=Agg
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, monai, SimpleITK; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.get_device_name(0))"
T0=$SECONDS
# 1) demo models: CT then MR, each evaluated against the prior-only baseline on its held-out slices
bash tools/train_demo_models.sh .gpu_data --device cuda --work-dir /tmp/demo_runs \
  --ct-minutes "${CT_MINUTES:-2.0}" --mr-minutes "${MR_MINUTES:-0.75}"
echo "## demo training + evaluation took $((SECONDS - T0)) s"
tar -cf /tmp/models.tar -C seg2med_core/data models && split -b 15M /tmp/models.tar "$OUT/models.tar.part-"
tar -czf "$OUT/runs.tar.gz" -C /tmp --exclude='*/cache*' --exclude='*.safetensors' --exclude='*.pt' demo_runs
# 2) quality of the fast samplers with the trained demo model (real priors, 128²)
python3 benchmarks/bench_sampling.py --model seg2med_core/data/models/demo_ct \
  --seg .gpu_data/example_seg_fast_force_split.nii.gz --image .gpu_data/example_ct.nii.gz \
  --quality-slices 8 --fast-steps 10,20,50 --budget-s "${DEMO_BENCH_S:-60}" --out "$OUT/bench_demo_ct.json"
# 3) speed of the paper network at 512² (baseline fp32 eager vs fast paths, torch.compile)
python3 benchmarks/bench_sampling.py --budget-s "${PAPER_BENCH_S:-150}" --out "$OUT/bench_paper_512.json"
echo "## total $((SECONDS - T0)) s"
