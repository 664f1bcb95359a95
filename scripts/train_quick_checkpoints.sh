#!/usr/bin/env bash
# Train every quick-profile checkpoint of notebooks 03 and 04 — the exact commands that the
# manifests in data/checkpoints/*.json record (their "command"; "command_at_training" is the same run
# under the module names of the time). One category per process, all in parallel. Each command also
# runs data-parallel on several GPUs: `accelerate launch --multi_gpu --num_processes N -m lib.methods.ddpm ...`.
#
#   bash scripts/train_quick_checkpoints.sh [DEVICE] [CATEGORIES...]
#
# DEVICE defaults to cuda. On one H100 the whole set took the time printed at the end (see the
# closing note of the issue that added it); on a 2-core CPU expect hours.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cuda}; shift || true
CATS=${*:-"display_panel metal_strip brick grass gravel fabric"}
DDPM_STEPS=${DDPM_STEPS:-6000}
AD_STEPS=${AD_STEPS:-6000}
mkdir -p build/logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # 12 processes share the CPU: one thread each
python -c "from lib.data import embedded_benchmark; print(embedded_benchmark(size=64))"
start=$(date +%s)
pids=()
for c in $CATS; do
  ( python -m lib.methods.ddpm --category "$c" --image-size 64 --preset small --schedule sigmoid \
        --steps "$DDPM_STEPS" --batch-size 32 --val-fraction 0.2 --export-half \
        --name "ddpm_small_sigmoid_${c}64" --device "$DEV" &&
    python -m lib.methods.learned_map --ddpm "data/checkpoints/ddpm_small_sigmoid_${c}64.pt" --category "$c" \
        --name "learnedmap_${c}64" --num-steps 10 --t-stride 10 --pairs 1024 --device "$DEV"
  ) > "build/logs/nb03_${c}.log" 2>&1 &
  pids+=($!)
  python -m lib.methods.diffusionad --category "$c" --name "diffusionad_small_${c}64" --steps "$AD_STEPS" \
      --device "$DEV" > "build/logs/nb04_${c}.log" 2>&1 &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
echo "all trainings finished in $(( $(date +%s) - start )) s (fail=$fail)"
tail -n 2 build/logs/nb0*.log
exit $fail
