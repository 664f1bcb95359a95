#!/usr/bin/env bash
# Train every quick-profile checkpoint of benchmark version 3 (nine categories, notebooks 03 and 04): per
# category a DDPM, then the learned map that reconstructs with it, and a DiffusionAD model. One process per
# training, all in parallel, one thread each; every model trains on data/embedded/v3_size64_seed0 (passed as
# --data, so the manifests' "command" and "data_fingerprint" record it). Each command also runs data-parallel
# on several GPUs: `accelerate launch --multi_gpu --num_processes N -m lib.methods.ddpm ...`.
#
#   bash scripts/train_v3_checkpoints.sh [DEVICE] [CATEGORIES...]
#
# DEVICE defaults to cuda, CATEGORIES to all nine of version 3. DiffusionAD runs with --mode object for the
# object categories (lib.data.benchmark.category_kind: screw, pill, cable), which then train on the shipped
# foreground masks. Environment overrides:
#   DDPM_STEPS, AD_STEPS   training steps of the DDPMs / DiffusionAD models (default 6000 each)
#   PRESET                 UNet preset of both (default lean, lib.core.nets.UNET_PRESETS)
#   PAIRS                  training pairs of each learned map (default 1024)
#   EXPORT_DIR, STATE_DIR  --export-dir / --state-dir of the commands (unset: the CLIs' data/checkpoints and
#                          build/train; the commands then are the manifests' -- and, once lib.methods' profiles
#                          train on version 3, what pretrained() prints -- plus --device)
#   LOG_DIR                where the logs go (default build/logs): v3_nb03_<category>.log (DDPM, learned map),
#                          v3_nb04_<category>.log (DiffusionAD); each ends with the command's wall time
#   PRINT_ONLY=1           print the commands (one a line, in the order DDPM, learned map, DiffusionAD per
#                          category) instead of running them
# A training whose state in STATE_DIR has the same config resumes it (steps may grow): scripts/device_train_v3.sh
# calibrates with the first steps of these very runs. On a 2-core CPU the full set takes days; on one GPU see
# the manifests' "device".
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cuda}; shift || true
DDPM_STEPS=${DDPM_STEPS:-6000}
AD_STEPS=${AD_STEPS:-6000}
PRESET=${PRESET:-lean}
PAIRS=${PAIRS:-1024}
LOG_DIR=${LOG_DIR:-build/logs}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # up to 18 processes share the CPU: one thread each
PY=${PYTHON:-python}

# the version-3 benchmark (generated on first use) and each category's kind, from lib.data
plan=$("$PY" - "$@" <<'EOF'
import sys
from lib.core.paths import REPO
from lib.data import embedded_benchmark
from lib.data.benchmark import categories, category_kind
root = embedded_benchmark(size=64, version=3)
print(root.relative_to(REPO) if root.resolve().is_relative_to(REPO.resolve()) else root)
known = categories(3)
for c in sys.argv[1:] or known:
    if c not in known:
        sys.exit(f"unknown category {c!r}: benchmark version 3 has {' '.join(known)}")
    print(c, category_kind(c, 3))
EOF
)
DATA=$(head -n 1 <<<"$plan")
echo "benchmark version 3: $DATA; preset $PRESET, DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS PAIRS=$PAIRS," \
     "device $DEV" >&2
EXPORT=(); STATE=()
[[ -n ${EXPORT_DIR:-} ]] && EXPORT=(--export-dir "$EXPORT_DIR")
[[ -n ${STATE_DIR:-} ]] && STATE=(--state-dir "$STATE_DIR")
DDPM_DIR=${EXPORT_DIR:-data/checkpoints}
mkdir -p "$LOG_DIR"

timed() {   # run a command, then print its wall time (the calibration of device_train_v3.sh reads it)
  local t0 dt; t0=$(date +%s%N)
  "$@" || return
  dt=$(( ($(date +%s%N) - t0) / 100000000 ))
  printf 'wall %d.%d s: %s\n' $((dt / 10)) $((dt % 10)) "$3"
}

start=$(date +%s)
pids=(); logs=()
while read -r c kind; do
  mode=(); [[ $kind == object ]] && mode=(--mode object)
  ddpm="ddpm_${PRESET}_sigmoid_${c}64"
  ddpm_cmd=("$PY" -m lib.methods.ddpm --data "$DATA" --category "$c" --preset "$PRESET" --image-size 64
            --schedule sigmoid --steps "$DDPM_STEPS" --batch-size 32 --val-fraction 0.2 --export-half
            --name "$ddpm" "${EXPORT[@]}" "${STATE[@]}" --device "$DEV")
  map_cmd=("$PY" -m lib.methods.learned_map --data "$DATA" --ddpm "$DDPM_DIR/$ddpm.pt" --category "$c"
           --image-size 64 --num-steps 10 --t-stride 10 --pairs "$PAIRS" --noise-seed 0 --name "learnedmap_${c}64"
           "${EXPORT[@]}" --device "$DEV")
  ad_cmd=("$PY" -m lib.methods.diffusionad --data "$DATA" --category "$c" --preset "$PRESET" --image-size 64
          --steps "$AD_STEPS" "${mode[@]}" --name "diffusionad_${PRESET}_${c}64" "${EXPORT[@]}" "${STATE[@]}"
          --device "$DEV")
  if [[ ${PRINT_ONLY:-0} == 1 ]]; then
    for cmd in ddpm_cmd map_cmd ad_cmd; do declare -n a=$cmd; printf '%q ' "${a[@]}"; echo; unset -n a; done
    continue
  fi
  ( timed "${ddpm_cmd[@]}" && timed "${map_cmd[@]}" ) < /dev/null > "$LOG_DIR/v3_nb03_${c}.log" 2>&1 &
  pids+=($!)
  timed "${ad_cmd[@]}" < /dev/null > "$LOG_DIR/v3_nb04_${c}.log" 2>&1 &
  pids+=($!)
  logs+=("$LOG_DIR/v3_nb03_${c}.log" "$LOG_DIR/v3_nb04_${c}.log")
done < <(tail -n +2 <<<"$plan")
[[ ${PRINT_ONLY:-0} == 1 ]] && exit 0
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
echo "all trainings finished in $(( $(date +%s) - start )) s (fail=$fail)"
for f in "${logs[@]}"; do
  echo "== $f"; tr '\r' '\n' < "$f" | grep -Ev '[0-9.]+(it/s|s/it)' | grep . | tail -n 3 || true
done
exit $fail
