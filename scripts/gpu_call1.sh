#!/usr/bin/env bash
# device call 1: DiffusionAD inference benchmark, then a short training-speed calibration
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
python3 -c "from lib.data import embedded_benchmark as e; print(e(image_size=64)); print(e(image_size=256))"
KIT_FIGURES_DIR=$OUT/figs timeout 400 python3 -m lib.bench diffusionad --json $OUT/bench.json 2>&1 | grep -v Warning | tee $OUT/bench.log
cp $OUT/figs/tables/timing/*.md $OUT/ 2>/dev/null
t0=$(date +%s)
for c in brick grass gravel fabric display_panel metal_strip; do
  timeout 150 python3 -m lib.train --category $c --image-size 64 --preset small --schedule sigmoid --steps 300 --batch-size 32 --val-fraction 0.2 --export-half --name cal_ddpm_$c --device cuda --state-dir /tmp/st --export-dir /tmp/ex > /tmp/cal_ddpm_$c.log 2>&1 &
  timeout 150 python3 -m lib.diffusionad --category $c --name cal_ad_$c --steps 300 --device cuda --state-dir /tmp/st --export-dir /tmp/ex > /tmp/cal_ad_$c.log 2>&1 &
done
wait
echo "calibration: 12 parallel trainings of 300 steps took $(( $(date +%s) - t0 )) s"
for f in /tmp/cal_*.log; do echo "$f: $(tr '\r' '\n' < $f | grep -E 'trained to|Error|error' | tail -2)"; done
