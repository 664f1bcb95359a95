#!/usr/bin/env bash
# Issue 16's GPU pass as ONE call of the `device` tool (at most 10 minutes; the session has about 15 minutes of
# device time, the machine's start included). Prepared 2026-12-07 and dry-run on a CPU (see below); not yet run on a
# GPU: no machine was lent when it was written.
#
#   here, once:   bash scripts/device_wheels.sh                 # diffusers, torchsde, ... into .whl/ (git-ignored)
#   device run, carry [".whl"], timeout_s 600:
#       python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash scripts/device_gpu_pass.sh
#   then: copy $OUT's *.json and tables.tar (figures/tables/timing/) into the repository, give the machine back.
#
# A dry run on a CPU (every step's code path, small sizes; about 3 minutes here):
#   DRY=1 OUT=build/device_dry bash scripts/device_gpu_pass.sh
#
# Steps, each with its own time limit so the call ends inside 10 minutes and whatever finished comes back:
#   0. in the background on the CPUs: the embedded data the later steps read (~1 min; the GPU is not idle meanwhile);
#   1. DIAG's SDXL inpainting, random weights of the real architecture, 1024², 30 steps, guidance 20, fp16: DIAG's
#      one-image call vs the kit's batch of 4, eager (fp16, and bf16) and torch.compile (target ≤ 0.8 s per image);
#   2. DiffusionAD's norm-guided inference, paper UNet at 256², bf16 weights, channels-last, inductor freezing:
#      batch 1 with CUDA graphs (latency, target ≤ 15 ms) and batch 128 compiled (target ≥ 300 images/s), each checked
#      against the fp32 path (max |Δ| of the maps, AUROC), with TFLOP/s and the fraction of the measured bf16 ceiling;
#   3. every notebook's paper profile: 5 training steps of each model at paper size, one generation / scoring pass,
#      s/step, one epoch and the full training extrapolated (python -m lib.tools.paper_smoke).
# Deeper dives for a later call: scripts/device_bench_diffusionad.sh (breakdown, coordinate descent, max-autotune)
# and scripts/device_bench_diag.sh (batches 8 and 16).
if [ "${DRY:-0}" = 1 ]; then
  DIAG_ARGS="--device cpu --size 64 --steps 2 --images 2 --batches 2 --also-dtypes bfloat16"
  AD_ARGS="--device cpu --preset tiny --seg-preset tiny --image-size 32 --batches 2 --eager-batch 2"
  SMOKE_ARGS="--device cpu --image-scale 8 --batch-size 2 --preset tiny --sd-arch tiny --steps 3"
  PREP_ARGS="--image-scale 8"
else
  DIAG_ARGS="--images 4 --batches 4 --also-dtypes bfloat16 --warmup 0"
  AD_ARGS="--batches 1,128 --eager-batch 8"
  SMOKE_ARGS=""
  PREP_ARGS=""
fi
source "$(dirname "$0")/device_bench_common.sh"

timeout 300 python3 -m lib.tools.paper_smoke --prepare-data $PREP_ARGS > /tmp/fig/logs/prepare_data.log 2>&1 &
PREP=$!
step 200 diag lib.bench diag $DIAG_ARGS --json "$OUT/diag.json"
wait $PREP; echo "   data: exit $? at $(elapsed) s" | tee -a "$OUT/summary.txt"
step 210 diffusionad lib.bench diffusionad --pure-bf16 --freeze $AD_ARGS --json "$OUT/diffusionad.json"
step 170 paper_smoke lib.tools.paper_smoke $SMOKE_ARGS --json "$OUT/paper_smoke.json"
finish
echo "total $(elapsed) s" | tee -a "$OUT/summary.txt"
ls -la "$OUT"
