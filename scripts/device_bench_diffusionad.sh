#!/usr/bin/env bash
# One 10-minute device call (the `device` tool of this workplace) that measures DiffusionAD's
# norm-guided inference on the lent GPU for issue 5 — not yet run: no GPU was lent when it was
# written (2026-11-23). Every step has its own time limit so the call ends inside 10 minutes and
# whatever finished comes back under $OUT.
#
#   here, once: bash scripts/device_wheels.sh (issue 16's first call is scripts/device_gpu_pass.sh; this plan is the
#   deeper dive: breakdown, coordinate descent, max-autotune); then device run, carry [".whl"]:
#       python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash scripts/device_bench_diffusionad.sh
#
# A dry run on a CPU: BENCH_ARGS="--device cpu --preset small --seg-preset tiny --image-size 64"
#
# 1. the fastest path measured so far (bf16 weights, inductor freezing) with --breakdown: the UNet
#    alone at batch 2B and the segmentation net alone at B, so the note can say where the time goes;
# 2. the same with inductor's coordinate-descent tuning of the generated GroupNorm/pointwise kernels;
# 3. max-autotune without CUDA graphs at batch 128 only (convolutions are 98 % of the FLOPs and
#    stay on cuDNN unless Triton's templates win), cut off after its time limit.
source "$(dirname "$0")/device_bench_common.sh"
step 300 purebf16_frozen lib.bench diffusionad --json "$OUT/purebf16_frozen.json" --pure-bf16 --freeze --batches 1,128 --breakdown
step 120 purebf16_frozen_cdt lib.bench diffusionad --json "$OUT/purebf16_frozen_cdt.json" --pure-bf16 --freeze --coordinate-descent --batches 128 --eager-batch 8
step 120 purebf16_frozen_autotune lib.bench diffusionad --json "$OUT/purebf16_frozen_autotune.json" --pure-bf16 --freeze --compile-mode max-autotune-no-cudagraphs \
  --batches 128 --eager-batch 8
finish
