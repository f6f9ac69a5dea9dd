#!/usr/bin/env bash
# One GPU lease (device tool, one call of about 9 minutes of its 15): the measurements issue 6 still needs.
# Run from the repository root on the GPU machine with the wheels in .whl/ and the example data in
# .gpu_data/ (both carried; see benchmarks/README.md). Everything worth keeping is written under $OUT.
#   1) the paper network at 512²: fp32 eager baseline vs SDPA/bf16/channels_last (with and without cuDNN
#      autotuning) vs torch.compile (default and reduce-overhead = CUDA graphs; COMPILE_MODES=... adds
#      e.g. max-autotune-no-cudagraphs, whose Triton autotuning takes minutes) at several batch sizes,
#      and a real (not extrapolated) 300-slice volume with DPM-Solver++ 5 steps on the fastest variant
#      (targets: <= 3.5 ms/slice-step, <= 30 s per volume, >= 100x the 500-step DDPM baseline);
#   2) the shipped demo CT model on the GPU: DPM-Solver++ 3/5/10/20 steps on the fast path (bf16) vs
#      the 1000-step and the MONAI-default 500-step fp32 DDPM with seed-matched noise, and SSIM/MAE of all
#      of them vs the real CT (quality target: <= 5 HU);
#   3) a kernel-level profile of one step (bench_profile.py): what the next lever has to speed up;
#   4) torch.compile with a cold and a warm on-disk cache (what a user's first and second run pay).
# TRAIN=1 first retrains the demo models (tools/train_demo_models.sh), as the first lease did.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHON=python3 MPLBACKEND=Agg
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, monai, SimpleITK; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.get_device_name(0))"
T0=$SECONDS
if [ "${TRAIN:-0}" = 1 ]; then
  bash tools/train_demo_models.sh .gpu_data --device cuda --work-dir /tmp/demo_runs \
    --ct-minutes "${CT_MINUTES:-2.0}" --mr-minutes "${MR_MINUTES:-0.75}"
  tar -cf /tmp/models.tar -C seg2med_core/data models && split -b 15M /tmp/models.tar "$OUT/models.tar.part-"
  echo "## demo training + evaluation took $((SECONDS - T0)) s"
fi
# The steps share SESSION_S seconds (default 520, one device call of at most 600 s), most important first;
# each gets what is left, and a step that would not fit is skipped with a line saying so.
left() { echo $(( ${SESSION_S:-520} - (SECONDS - T0) )); }
cap() { local l; l=$(( $(left) - $2 )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
# 1) speed of the paper network at 512², compile modes, and one real 300-slice volume (the issue's targets)
python3 benchmarks/bench_sampling.py --batch-sizes 8,16,32,64 --fast-steps 5,10,20 \
  --compile-modes "${COMPILE_MODES:-default,reduce-overhead}" --budget-s "$(cap "${PAPER_BENCH_S:-280}" 150)" \
  --out "$OUT/bench_paper_512.json"
echo "## paper network done at $((SECONDS - T0)) s"
# 2) quality of the fast samplers with the trained demo model (real priors, 128²) vs the 1000- and 500-step DDPM
if [ "$(left)" -gt 60 ]; then
  python3 benchmarks/bench_sampling.py --model seg2med_core/data/models/demo_ct \
    --seg .gpu_data/example_seg_fast_force_split.nii.gz --image .gpu_data/example_ct.nii.gz \
    --quality-slices 8 --fast-steps 3,5,10,20 --batch-sizes 8,32 --no-volume-run \
    --budget-s "$(cap "${DEMO_BENCH_S:-90}" 60)" --out "$OUT/bench_demo_ct.json"
else echo "## skipped the demo quality run: $(left) s left"; fi
echo "## demo quality done at $((SECONDS - T0)) s"
# 3) where the step's time goes (kernel categories) on the plain, fast and compiled paths, batch 32
if [ "$(left)" -gt 50 ]; then
  timeout "$(cap 120 20)" python3 benchmarks/bench_profile.py --device cuda --batch 32 --out "$OUT/profile_paper_512.json"
else echo "## skipped the profile: $(left) s left"; fi
# 4) what --compile costs a user: cold vs warm on-disk inductor cache, paper network at 512², batch 32
if [ "$(left)" -gt 90 ]; then
  timeout "$(cap 150 5)" python3 benchmarks/bench_compile_cache.py --device cuda --batch 32 --out "$OUT/compile_cache.json"
else echo "## skipped the compile-cache run: $(left) s left"; fi
echo "## total $((SECONDS - T0)) s"
