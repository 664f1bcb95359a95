#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels the GPU machine's image lacks into .whl/ (git-ignored), for
# the `device` tool's `carry`. The image has torch, transformers, accelerate, huggingface-hub, safetensors, pandas,
# scikit-learn, scikit-image, matplotlib, seaborn, tabulate and tqdm; it lacks diffusers and torchsde (and its
# trampoline), which DPM++ SDE Karras, the report's img2img sampler, needs. diffusers lists importlib_metadata but
# imports the standard library's on Python >= 3.8 (and importlib_metadata 10 would need lazy_importer, also absent).
# Versions follow constraints-reproduce.txt where it pins them.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { local v; v=$(grep -i "^$1==" constraints-reproduce.txt | head -1 || true); echo "${v:-$1}"; }
mkdir -p .whl
rm -f .whl/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "$(pin diffusers)" "$(pin torchsde)" "$(pin trampoline)" 2>&1 \
  | grep -v "^WARNING: Location" || true
ls -la .whl
du -sh .whl
