#!/usr/bin/env bash
# One 10-minute device call that trains every version-3 quick-profile checkpoint (scripts/train_v3_checkpoints.sh:
# 9 DDPMs, each followed by its learned map, and 9 DiffusionAD models, all in parallel) on the lent GPU and
# returns them in $OUT (device tool only):
#   1. python3 gets diffusers from build/whl if it lacks it; CUDA MPS if the machine has it; the v3 benchmark;
#   2. calibration: the first CAL_STEPS steps of all 18 trainings in parallel -- the very runs (same names, same
#      state folder, exports to a scratch folder), which the real run then resumes (0 -> a -> b equals 0 -> b) --
#      and each learned map on CAL_PAIRS pairs after its DDPM; a failure ends the call here, within minutes;
#   3. step counts from the slowest seconds per step of each kind, the fixed costs (start-up, anomaly pool, the
#      learned maps scaled to PAIRS) and the time left until BUDGET_S after the start (x SAFETY; multiples of
#      QUANTUM=500 in MIN_STEPS..MAX_STEPS = 500..8000); with both DDPM_STEPS and AD_STEPS given in the environment,
#      steps 2 and 3 are skipped;
#   4. train_v3_checkpoints.sh with them; at HARD_S after the start whatever still runs is stopped;
#   5. the manifests of the new exports get "device"; the exports go into $OUT as tars of < 15 MB each (the tool
#      returns at most 8 files of 16 MiB, 64 MiB in all); logs.tar holds the trimmed logs and summary.txt.
#
#   run(command="bash scripts/device_train_v3.sh", carry=["build/whl"], timeout_s=600)
#   # build/whl (the H200 image has no diffusers): python3 -m pip download --no-deps --only-binary=:all: \
#   #     --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 diffusers==0.42.1 -d build/whl
#
# Then unpack the tars into data/checkpoints. Environment: PRESET (lean), PAIRS (1024), CAL_STEPS (100),
# CAL_PAIRS (64), BUDGET_S (480), HARD_S (550), SAFETY (1.15), CATEGORIES (all nine), DEVICE (cuda), EXPORT_DIR /
# STATE_DIR, LOG_DIR (unset: data/checkpoints, build/train, build/logs; set them, DEVICE=cpu and tiny step limits
# to try the script on a CPU without touching those).
# States of these runs left in STATE_DIR by an earlier call are deleted first, unless KEEP_STATES=1 (a rerun on a
# warm machine with DDPM_STEPS and AD_STEPS given then resumes them).
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHON=python3
cd "$(dirname "$0")/.."
t0=$(date +%s)
since() { echo $(( $(date +%s) - t0 )); }
PRESET=${PRESET:-lean}; PAIRS=${PAIRS:-1024}; CAL_STEPS=${CAL_STEPS:-100}; CAL_PAIRS=${CAL_PAIRS:-64}
BUDGET_S=${BUDGET_S:-480}; HARD_S=${HARD_S:-550}; SAFETY=${SAFETY:-1.15}; DEVICE=${DEVICE:-cuda}
read -r -a CATS <<<"${CATEGORIES:-}"
GIVEN_DDPM=${DDPM_STEPS:-}; GIVEN_AD=${AD_STEPS:-}
EXPORTS=${EXPORT_DIR:-data/checkpoints}; STATES=${STATE_DIR:-build/train}; LOGS=${LOG_DIR:-build/logs}
MIN_STEPS=${MIN_STEPS:-500}; MAX_STEPS=${MAX_STEPS:-8000}; QUANTUM=${QUANTUM:-500}
export PRESET PAIRS CAL_STEPS CAL_PAIRS BUDGET_S SAFETY MIN_STEPS MAX_STEPS QUANTUM
OUTDIR=${OUT:-/tmp/v3out}; mkdir -p "$OUTDIR"
CAL=/tmp/v3cal; rm -rf "$CAL"; mkdir -p "$CAL/export" "$CAL/logs" "$LOGS"
echo "commit $(git rev-parse HEAD 2>&1 | head -1)," \
     "$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l) tracked files modified"
[[ $DEVICE == cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site build/whl/*.whl ||
    exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import diffusers, torch; print('diffusers', diffusers.__version__, 'torch', torch.__version__)" || exit 1
MPS=""
if [[ $DEVICE == cuda ]] && nvidia-cuda-mps-control -d 2>/dev/null; then MPS=" under CUDA MPS"; fi
echo "MPS:${MPS:- none}"
if [[ ${KEEP_STATES:-0} != 1 ]]; then
  rm -f "$STATES"/ddpm_"$PRESET"_sigmoid_*64.{pt,json} "$STATES"/diffusionad_"$PRESET"_*64.{pt,json}
fi

cal_rc=skipped
if [[ -z $GIVEN_DDPM || -z $GIVEN_AD ]]; then
  # 2. calibration: the first CAL_STEPS steps of the real runs
  echo "[$(since) s] calibration: $CAL_STEPS steps of each training, learned maps on $CAL_PAIRS pairs"
  DDPM_STEPS=$CAL_STEPS AD_STEPS=$CAL_STEPS PAIRS=$CAL_PAIRS EXPORT_DIR=$CAL/export LOG_DIR=$CAL/logs \
    bash scripts/train_v3_checkpoints.sh "$DEVICE" "${CATS[@]}" > "$CAL/calibration.log" 2>&1
  cal_rc=$?
  tail -n 40 "$CAL/calibration.log"
  if (( cal_rc )); then echo "[$(since) s] calibration failed (rc $cal_rc): see the log tails above"; exit 1; fi
  # 3. step counts that fit BUDGET_S
  read -r DDPM_STEPS AD_STEPS < <(python3 - "$CAL/logs" "$(since)" <<'PYEOF'
import os, re, sys
from math import ceil
from pathlib import Path
logs, elapsed = Path(sys.argv[1]), float(sys.argv[2])
cal, cal_pairs, pairs = int(os.environ["CAL_STEPS"]), int(os.environ["CAL_PAIRS"]), int(os.environ["PAIRS"])
budget, safety = float(os.environ["BUDGET_S"]), float(os.environ["SAFETY"])
lo, hi, quantum = int(os.environ["MIN_STEPS"]), int(os.environ["MAX_STEPS"]), int(os.environ["QUANTUM"])

def read(path):
    """(Trainer times, wall times, pair times) in the order the log prints them."""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return ([float(x) for x in re.findall(r"trained to step \d+/\d+ in ([0-9.]+) s", text)],
            [float(x) for x in re.findall(r"wall ([0-9.]+) s:", text)],
            [float(x) for x in re.findall(r"\d+ pairs in ([0-9.]+) s", text)])

d_step = d_fix = a_step = a_fix = lm = 0.0
scale_pairs = ceil(pairs / 64) / ceil(cal_pairs / 64)                # make_pairs reconstructs 64 at a time
scale_seg = max(1, pairs // 32) / max(1, cal_pairs // 32)            # 50 epochs of pairs // 32 steps
for f in sorted(logs.glob("v3_nb03_*.log")):                          # DDPM, then its learned map
    (t_ddpm, t_seg), (w_ddpm, w_lm), (t_pairs,) = read(f)
    d_step, d_fix = max(d_step, t_ddpm / cal), max(d_fix, w_ddpm - t_ddpm)
    lm = max(lm, (w_lm - t_pairs - t_seg) + t_pairs * scale_pairs + t_seg * scale_seg)
for f in sorted(logs.glob("v3_nb04_*.log")):                          # DiffusionAD
    (t_ad,), (w_ad,), _ = read(f)
    a_step, a_fix = max(a_step, t_ad / cal), max(a_fix, w_ad - t_ad)
left = budget - elapsed

def steps(per_step, fixed):
    n = cal + (left - fixed) / (per_step * safety)                    # the calibration's steps are done
    return int(max(lo, min(hi, n // quantum * quantum)))

D, A = steps(d_step, d_fix + lm), steps(a_step, a_fix)
print(f"slowest: DDPM {d_step:.3f} s/step + {d_fix:.0f} s start-up, learned map about {lm:.0f} s for {pairs} pairs; "
      f"DiffusionAD {a_step:.3f} s/step + {a_fix:.0f} s start-up and pool; {left:.0f} s left -> "
      f"DDPM_STEPS={D} AD_STEPS={A} (safety x{safety})", file=sys.stderr)
print(D, A)
PYEOF
)
fi
DDPM_STEPS=${GIVEN_DDPM:-${DDPM_STEPS:-}}; AD_STEPS=${GIVEN_AD:-${AD_STEPS:-}}
[[ -n $DDPM_STEPS && -n $AD_STEPS ]] || { echo "could not read the calibration logs"; exit 1; }
echo "[$(since) s] DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS"

# 4. the training (it resumes the calibration's states), stopped at HARD_S
DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS LOG_DIR=$LOGS setsid bash scripts/train_v3_checkpoints.sh "$DEVICE" \
  "${CATS[@]}" > "$LOGS/v3_train.log" 2>&1 &
tp=$!
while kill -0 "$tp" 2>/dev/null && (( $(since) < HARD_S )); do sleep 2; done
if kill -0 "$tp" 2>/dev/null; then
  echo "[$(since) s] HARD_S=$HARD_S reached: stopping the trainings"; kill -- "-$tp"; sleep 3
fi
wait "$tp"; train_rc=$?
tail -n 60 "$LOGS/v3_train.log"
echo "[$(since) s] training rc $train_rc"
[[ -n $MPS ]] && echo quit | nvidia-cuda-mps-control

# 5. "device" in the new manifests, tars into $OUT
python3 - "$OUTDIR" "$t0" "$MPS" "$DDPM_STEPS" "$AD_STEPS" "$EXPORTS" "$DEVICE" "${CATS[@]}" <<'PYEOF'
import json, os, sys, tarfile, tempfile
from pathlib import Path
import torch
out, t0, mps, d_steps, a_steps, ck, device = sys.argv[1:8]
out, t0, ck, n = Path(out), float(t0), Path(ck), len(sys.argv[8:]) or 9
where = f"cuda: {torch.cuda.get_device_name(0)}" if device == "cuda" and torch.cuda.is_available() else device
label = (f"{where} (torch {torch.__version__}), {2 * n} trainings in parallel ({n} DDPM -> learned map, "
         f"{n} DiffusionAD){mps}")
done = []
for p in sorted(ck.glob("*.pt")):                      # the exports this call wrote (not the committed ones)
    j = p.with_suffix(".json")
    if p.stat().st_mtime < t0 or not j.exists():
        continue
    m = json.loads(j.read_text())
    if not m.get("final"):
        continue
    m["device"] = label
    fd, tmp = tempfile.mkstemp(dir=ck, prefix=j.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(m, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, j)                                  # atomic, like lib.io.checkpoints.write_manifest
    done.append(p)
limit, tars, cur, size = 15_000_000, [], [], 0
for p in done:
    b = p.stat().st_size + p.with_suffix(".json").stat().st_size
    if cur and size + b > limit:
        tars.append(cur)
        cur, size = [], 0
    cur.append(p)
    size += b
tars += [cur] if cur else []
if len(tars) > 7:
    print(f"warning: {len(tars)} tars; the tool returns 8 files (with logs.tar), the last ones will be missing")
for i, group in enumerate(tars, 1):
    with tarfile.open(out / f"v3_checkpoints_{i}.tar", "w") as t:
        for p in group:
            for q in (p, p.with_suffix(".json")):
                t.add(q, arcname=q.name)
    print(f"v3_checkpoints_{i}.tar: {len(group)} models, {(out / f'v3_checkpoints_{i}.tar').stat().st_size} bytes")
print(f"{len(done)} finished exports (DDPM_STEPS={d_steps}, AD_STEPS={a_steps}) on {label}")
PYEOF
rm -rf /tmp/v3logs; mkdir -p /tmp/v3logs
for f in "$LOGS"/v3_nb0*.log "$CAL"/logs/v3_nb0*.log; do
  [[ -f $f ]] || continue
  dest=/tmp/v3logs/$( [[ $f == "$CAL"* ]] && echo cal_ )$(basename "$f")
  tr '\r' '\n' < "$f" | grep -Ev '[0-9.]+(it/s|s/it)' | grep . | tail -n 8 > "$dest"
done
cp "$LOGS/v3_train.log" /tmp/v3logs/ 2>/dev/null; cp "$CAL/calibration.log" /tmp/v3logs/ 2>/dev/null
echo "DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS calibration rc $cal_rc training rc $train_rc total $(since) s" \
  > /tmp/v3logs/summary.txt
tar cf "$OUTDIR/logs.tar" -C /tmp v3logs
ls -la "$OUTDIR"
echo "[$(since) s] done"
exit $train_rc
