"""GPU speed options: resnet9 throughput on CIFAR-shaped random data, product against a bare loop.

Variants fp32, bf16, bf16 + channels_last, bf16 + channels_last + torch.compile, each trained by
the product (train.py, one process) and by bare_loop.py with the same settings; then the
LR range test's seconds. Throughput is the last epoch's training images/s (after compilation and
warm-up); "whole run" includes the first epoch's compilation. Run through benchmarks/speed/gpu.sh.
Sizes come from the environment so the same script can be checked on a CPU in seconds:
GPU_BENCH_IMAGES (default 25000), GPU_BENCH_EPOCHS (3), GPU_BENCH_BATCH (512), GPU_BENCH_WORKERS (8),
GPU_BENCH_MODEL (resnet9).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from benchmarks.common import RESULTS, ROOT, SCRATCH, machine_header, read_json, timed

IMAGES = int(os.environ.get("GPU_BENCH_IMAGES", 25000))
EPOCHS = int(os.environ.get("GPU_BENCH_EPOCHS", 3))
BATCH = int(os.environ.get("GPU_BENCH_BATCH", 512))
WORKERS = int(os.environ.get("GPU_BENCH_WORKERS", 8))
MODEL = os.environ.get("GPU_BENCH_MODEL", "resnet9")
MAX_LR = 0.1
COMMON = ["--config", "configs/cifar10_resnet9.yaml", "data.name=fake", f"data.fake_train_size={IMAGES}", f"data.batch_size={BATCH}",
          f"data.num_workers={WORKERS}", f"trainer.epochs={EPOCHS}", f"model.name={MODEL}"]  # fmt: skip
BF16 = ["trainer.mixed_precision=bf16"]
VARIANTS = {
    "fp32": ["trainer.mixed_precision=no"],
    "bf16": BF16,
    "bf16 + channels_last": [*BF16, "trainer.channels_last=true"],
    "bf16 + channels_last + compile": [*BF16, "trainer.channels_last=true", "trainer.compile=true"],
}
WORK = SCRATCH / "gpu_speed"


def call(command: list[str]) -> float:
    return timed(command, WANDB_MODE="disabled", PYTHONPATH=str(ROOT / "src"))


def product(name: str, overrides: list[str]) -> dict:
    run_dir = WORK / f"product-{name.replace(' ', '')}"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall = call([sys.executable, "train.py", *COMMON, *overrides, f"output_dir={run_dir}", f"schedule.max_lr={MAX_LR}",
                 "trainer.resume=none", "console.mode=quiet"])  # fmt: skip
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    whole = read_json(run_dir / "summary.json")["train_images_per_second"]
    return {"steady": epochs[-1]["train_images_per_second"], "whole": whole, "wall": wall}


def bare(name: str, overrides: list[str]) -> dict:
    out = WORK / f"bare-{name.replace(' ', '')}.json"
    wall = call([sys.executable, "-m", "benchmarks.speed.bare_loop", "--config", COMMON[1], "--max-lr", str(MAX_LR), "--out", str(out),
                 *COMMON[2:], *overrides])  # fmt: skip
    found = read_json(out)
    last = found["epochs"][-1]
    return {"steady": last["images"] / last["train_seconds"], "whole": found["train_images_per_second"], "wall": wall}


def range_test() -> dict:
    run_dir = WORK / "lr_find"
    shutil.rmtree(run_dir, ignore_errors=True)
    # Random labels give a curve with no descent: the fallback keeps the command succeeding; only its seconds matter here.
    wall = call([sys.executable, "lr_find.py", *COMMON, *VARIANTS["bf16 + channels_last"], f"output_dir={run_dir}",
                 f"lr_finder.fallback_max_lr={MAX_LR}", "console.mode=quiet"])  # fmt: skip
    return {**read_json(run_dir / "lr_finder.json"), "wall": wall}


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in VARIANTS.items():
        mine, theirs = product(name, overrides), bare(name, overrides)
        rows.append(
            f"| {name} | {theirs['steady']:,.0f} | {mine['steady']:,.0f} | {theirs['steady'] / mine['steady']:.3f} | "
            f"{theirs['whole']:,.0f} | {mine['whole']:,.0f} | {theirs['wall']:.0f} | {mine['wall']:.0f} |"
        )
        print(rows[-1], flush=True)
    found = range_test()
    lines = [
        f"# GPU speed: {MODEL} on CIFAR-shaped random data",
        "",
        machine_header(),
        "",
        f"{IMAGES} random 32x32 images (`data.name=fake`, in memory, batched augmentation on the device), batch {BATCH}, "
        f"{EPOCHS} epochs, {WORKERS} loader workers, one process. Last epoch = steady-state training images/s; whole run = "
        "all epochs including compilation. Ratio = bare / product (> 1: the product is slower).",
        "",
        "| variant | bare img/s (last epoch) | product img/s (last epoch) | ratio | bare img/s (whole run) | "
        "product img/s (whole run) | bare wall s | product wall s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"LR range test (bf16 + channels_last, effective batch {found['effective_batch_size']}): {found['iterations']} iterations "
        f"in {found['seconds']:.1f} s; the whole `lr_find.py` command {found['wall']:.0f} s.",
        "",
    ]
    import torch

    out = RESULTS / "gpu_speed.md" if torch.cuda.is_available() else WORK / "gpu_speed_cpu_check.md"  # a CPU check is not a result
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
