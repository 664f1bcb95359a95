# Sourced by scripts/device_bench_*.sh: the shared preamble of a one-call GPU benchmark plan.
#   BENCH=<what>   the `python -m lib.bench <what>` benchmark that `step` runs
# After sourcing: $OUT exists and holds gpu.txt; `step SECONDS NAME ARGS...` runs one bench with its own time limit
# and writes its log and JSON into $OUT; `finish` packs the tables and lists $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-build/device_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv 2>&1 | tee "$OUT/gpu.txt"
export KIT_FIGURES_DIR=/tmp/fig
step() {  # step SECONDS NAME ARGS...: one bench run, its log and JSON into $OUT
  local secs=$1 name=$2; shift 2
  timeout "$secs" python3 -m lib.bench "$BENCH" --json "$OUT/$name.json" "$@" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/$name.log" | grep -v "^W1\|UserWarning\|FutureWarning" | tail -20
}
finish() {
  tar cf "$OUT/tables.tar" -C /tmp/fig tables 2>/dev/null
  ls -la "$OUT"
}
