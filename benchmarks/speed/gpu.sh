#!/usr/bin/env bash
# GPU speed benchmark for a lent GPU machine, under 5 minutes on an H100: resnet9 images/s in
# fp32, bf16, bf16 + channels_last and with torch.compile, product against a bare loop, plus the
# LR range test's seconds (benchmarks/speed/gpu_speed.py). Writes benchmarks/results/gpu_speed.md
# (and copies it to $OUT when set).
#   bash benchmarks/speed/gpu.sh                # with the project's .venv: PY=.venv/bin/python bash benchmarks/speed/gpu.sh
# A machine whose PyTorch is preinstalled but lacks this project's small dependencies can get them
# from wheels downloaded beforehand into .gpuwheels/ (no network there).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
if [ -d .gpuwheels ]; then "$PY" -m pip install -q --no-deps --no-index .gpuwheels/*.whl; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -m benchmarks.speed.gpu_speed
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_speed.md "$OUT/"; fi
