#!/usr/bin/env bash
# GPU correctness smoke for the training path (not a speed benchmark): the LR range test and
# one-cycle training on CUDA in bf16 and fp16 (real GradScaler), then resnet9 in bf16 +
# channels_last. Writes a summary table to $OUT (default benchmarks/results/).
# Usage on a GPU machine with PyTorch, from the repository root: bash benchmarks/speed/gpu_smoke.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=src WANDB_MODE=disabled
if [ -d .gpuwheels ]; then $PY -m pip install -q --no-deps --no-index .gpuwheels/*.whl; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu_smoke_device.txt"
$PY -c "import torch, torchvision, accelerate; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu_smoke_device.txt"
run() {  # name, then train.py overrides
  local name=$1; shift
  local dir="$OUT/runs/$name"
  rm -rf "$dir"
  $PY train.py "$@" output_dir="$dir" > "$OUT/$name.log" 2>&1
  echo "$name exit=$?" | tee -a "$OUT/gpu_smoke_device.txt"
}
run digits_bf16 --config configs/digits.yaml trainer.mixed_precision=bf16 trainer.epochs=4
run digits_fp16 --config configs/digits.yaml trainer.mixed_precision=fp16 trainer.epochs=4
run fake_resnet9_bf16_cl --config configs/cifar10_resnet9.yaml data.name=fake data.fake_train_size=20000 \
    data.batch_size=512 trainer.epochs=2 trainer.mixed_precision=bf16 data.num_workers=8 lr_finder.num_iter=30 \
    lr_finder.skip_start=3 lr_finder.skip_end=2 lr_finder.fallback_max_lr=0.1
$PY - "$OUT" <<'PY' | tee "$OUT/gpu_smoke.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | device | precision | max_lr | policy | LR test s | steps | planned | final_lr | test_acc | img/s | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted((out / "runs").iterdir()):
    s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    if s is None:
        print(f"| {d.name} | failed: see {d.name}.log |"); continue
    print(f"| {d.name} | {s['device']} | {s['mixed_precision']} | {s['max_lr']:.3g} | {s['lr_policy']} | {s['lr_finder_seconds']:.1f} | "
          f"{s['optimizer_steps']} | {s['total_optimizer_steps']} | {s['final_lr']:.3g} | {s['test_acc']} | {s['train_images_per_second']:.0f} | {s['wall_seconds']:.1f} |")
PY
rm -rf "$OUT/runs"
