# Sourced by scripts/device_*.sh: the shared preamble of a one-call GPU plan (the `device` tool: one command of at
# most 10 minutes, at most 8 files back from $OUT).
#   DEADLINE=<s>   seconds after the start by which every step must end (default 570: the call's tar and listing fit)
#   BENCH_ARGS=... appended to every step's command (a dry run on a CPU)
# After sourcing: $OUT exists and holds gpu.txt (GPU, driver, versions, date); `step SECONDS NAME MODULE ARGS...` runs
# `python3 -m MODULE ARGS` with its own limit, cut to what the deadline leaves, writes its log to /tmp/fig/logs/,
# a line to $OUT/summary.txt, and packs the tables written so far and the logs into $OUT/tables.tar.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-build/device_out}
mkdir -p "$OUT" /tmp/fig/logs
export KIT_FIGURES_DIR=/tmp/fig
T0=$(date +%s)
DEADLINE=${DEADLINE:-570}
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv 2>&1
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)" 2>&1 | tail -1
  date -u; } | tee "$OUT/gpu.txt"

elapsed() { echo $(( $(date +%s) - T0 )); }

step() {  # step SECONDS NAME MODULE ARGS...
  local secs=$1 name=$2 module=$3; shift 3
  local left=$(( DEADLINE - $(elapsed) ))
  if (( secs > left )); then secs=$left; fi
  if (( secs < 15 )); then
    echo "== $name skipped: ${left} s left before the plan's deadline" | tee -a "$OUT/summary.txt"
    return
  fi
  echo "== $name (limit ${secs} s, at $(elapsed) s)" | tee -a "$OUT/summary.txt"
  # shellcheck disable=SC2086
  timeout "$secs" python3 -m "$module" "$@" ${BENCH_ARGS:-} 2>&1 | tee "/tmp/fig/logs/$name.log" \
    | grep -v "it/s\]\|s/it\]\|^W1\|UserWarning\|FutureWarning\|kept in float32" | tail -25
  echo "   $name: exit ${PIPESTATUS[0]} at $(elapsed) s" | tee -a "$OUT/summary.txt"
  finish
}

finish() {  # the tables written so far and the logs, in one file
  tar cf "$OUT/tables.tar" -C /tmp/fig tables logs 2>/dev/null
}
