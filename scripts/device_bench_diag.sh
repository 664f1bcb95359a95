#!/usr/bin/env bash
# One 10-minute device call (the `device` tool of this workplace) that measures DIAG's SDXL inpainting on the lent
# GPU for issue 14 — not yet run: no GPU was lent when it was written (2026-12-03). Every step has its own time
# limit so the call ends inside 10 minutes and whatever finished comes back under $OUT.
#
#   here, once: bash scripts/device_wheels.sh; then device run, carry [".whl"]:
#       python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash scripts/device_bench_diag.sh
# (issue 16's first call is scripts/device_gpu_pass.sh; this one is a deeper dive at batches 8 and 16)
#
# A dry run on a CPU: BENCH_ARGS="--device cpu --size 64 --steps 2 --images 2 --batches 2"
#
# 1. SDXL's architecture with random weights, 1024², 30 steps, fp16: DIAG's one-image call, the kit's batched call
#    at batch 4 and 8, eager and torch.compile (default mode) with channels-last;
# 2. batch 16, eager, no warm-up, if time is left (DIAG's one-image row is timed again; the largest batch that fits
#    decides the best rate).
source "$(dirname "$0")/device_bench_common.sh"
step 420 sdxl_random_b4_b8 lib.bench diag --json "$OUT/sdxl_random_b4_b8.json" --images 8 --batches 4,8
step 170 sdxl_random_b16 lib.bench diag --json "$OUT/sdxl_random_b16.json" --images 16 --batches 16 --no-compile --warmup 0
finish
