"""Data-pipeline headroom: images/s the training loader delivers (with its augmentation) against
images/s one training process consumes, per process, on one thread each (as `make train` runs).

    .venv/bin/python benchmarks/data_pipeline.py            # writes benchmarks/results/data_pipeline.md
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from superconverge.config import load_config  # noqa: E402
from superconverge.data import build_data  # noqa: E402
from superconverge.models import build_model  # noqa: E402
from superconverge.schedule import build_optimizer  # noqa: E402

CONFIGS = ["configs/fashion_mnist.yaml", "configs/digits.yaml"]
SECONDS = 8.0


def timed(step, seconds: float = SECONDS) -> float:
    """Images per second of ``step`` (which returns how many images it handled), after a warm-up."""
    for _ in range(3):
        step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        count += step()
    return count / (time.perf_counter() - started)


def loader_rate(cfg, data) -> float:
    loader = DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True, num_workers=data.workers)
    generator = torch.Generator().manual_seed(0)
    batches = iter(())

    def step() -> int:
        nonlocal batches
        try:
            images, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, _ = next(batches)
        if data.train_transform is not None:
            images = data.train_transform(images, generator)
        return images.shape[0]

    return timed(step)


def training_rate(cfg, data) -> float:
    model = build_model(cfg.model, data.num_classes, data.in_channels)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model, lr=1e-3)
    images = torch.randn(cfg.data.batch_size, data.in_channels, data.image_size, data.image_size)
    if cfg.trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, data.num_classes, (cfg.data.batch_size,))

    def step() -> int:
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return cfg.data.batch_size

    return timed(step)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for path in CONFIGS:
        cfg = load_config(ROOT / path, [f"data.root={ROOT / 'data'}"])
        data = build_data(cfg.data)
        delivered, consumed = loader_rate(cfg, data), training_rate(cfg, data)
        rows.append(
            f"| {path} | {cfg.model.name} | {cfg.data.batch_size} | {delivered:,.0f} | {consumed:,.0f} | {delivered / consumed:.1f}x |"
        )
        print(rows[-1], flush=True)
    header = [
        "# Data-pipeline headroom",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} thread per process (as in `make train`), "
        f"Python {platform.python_version()}, torch {torch.__version__}. Each rate is measured for {SECONDS:.0f} s after warm-up. "
        "Loader = the training DataLoader with the training augmentation (batched, on uint8 tensors); "
        "training = forward, backward and optimizer step of the config's model on batches already in memory.",
        "",
        "| config | model | batch per process | loader images/s | training images/s | headroom |",
        "|---|---|---|---|---|---|",
    ]
    out = ROOT / "benchmarks" / "results" / "data_pipeline.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
