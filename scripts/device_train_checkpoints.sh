#!/usr/bin/env bash
# What trained the committed quick-profile checkpoints of notebooks 03/04 on the lent H100 (one
# 10-minute device call): a 100-step calibration of all 12 trainings in parallel sets the step
# counts so the whole set fits the call (it chose DDPM_STEPS=3000, AD_STEPS=4000), then
# train_quick_checkpoints.sh runs them and the results are tarred into $OUT (device-tool only).
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
git rev-parse HEAD 2>&1 | head -1
nvidia-cuda-mps-control -d 2>&1 && echo "MPS daemon started" || echo "no MPS"
python3 -c "from lib.data import embedded_benchmark as e; print(e(64))"
t0=$(date +%s)
for c in brick grass gravel fabric display_panel metal_strip; do
  python3 -m lib.methods.ddpm --category $c --image-size 64 --preset small --schedule sigmoid --steps 100 --batch-size 32 --val-fraction 0.2 --name cal_$c --device cuda --state-dir /tmp/st --export-dir /tmp/ex > /tmp/cal_ddpm_$c.log 2>&1 &
  python3 -m lib.methods.diffusionad --category $c --name cal_$c --steps 100 --device cuda --state-dir /tmp/st2 --export-dir /tmp/ex2 > /tmp/cal_ad_$c.log 2>&1 &
done
wait
echo "calibration wall $(( $(date +%s) - t0 )) s"
per() { cat /tmp/cal_$1_*.log | tr '\r' '\n' | grep "trained to step" | sed -E 's/.* in ([0-9.]+) s.*/\1/' | sort -n | tail -1; }
D=$(per ddpm); A=$(per ad); echo "slowest 100 steps: ddpm $D s, diffusionad $A s"
DDPM_STEPS=$(python3 -c "print(max(500, min(8000, int(300/($D/100))//500*500)))")
AD_STEPS=$(python3 -c "print(max(500, min(8000, int(360/($A/100))//500*500)))")
echo "DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS"
DDPM_STEPS=$DDPM_STEPS AD_STEPS=$AD_STEPS bash scripts/train_quick_checkpoints.sh cuda
cd data/checkpoints
tar cf $OUT/nb03_a.tar ddpm_small_sigmoid_{brick,grass,gravel}64.* learnedmap_{brick,grass,gravel}64.* 2>&1
tar cf $OUT/nb03_b.tar ddpm_small_sigmoid_{fabric,display_panel,metal_strip}64.* learnedmap_{fabric,display_panel,metal_strip}64.* 2>&1
tar cf $OUT/nb04_a.tar diffusionad_small_{brick,grass,gravel}64.* 2>&1
tar cf $OUT/nb04_b.tar diffusionad_small_{fabric,display_panel,metal_strip}64.* 2>&1
cd ../.. && mkdir -p /tmp/logs && for f in build/logs/*.log; do tr '\r' '\n' < $f | grep -v "it/s" | tail -6 > /tmp/logs/$(basename $f); done
tar cf $OUT/logs.tar -C /tmp logs
ls -la $OUT
