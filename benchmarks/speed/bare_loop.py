"""The hand-written baseline of the overhead and GPU benchmarks: what a user would write without a launcher.

Same model, in-memory data, batched augmentation, optimizer, one-cycle schedule, batch size and
epochs as the product's run, in a plain PyTorch loop on one device: no Accelerate, metrics across
ranks, checkpoints, console or tracking. It validates every epoch and tests at the end, as the
product does.

    python -m benchmarks.speed.bare_loop --config configs/fashion_mnist.yaml --max-lr 0.01 --out bare.json trainer.epochs=2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks import common  # noqa: F401  (the product on the path)
from superconverge.config import load_config
from superconverge.data import build_data
from superconverge.models import build_model
from superconverge.schedule import build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--max-lr", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="the same key=value overrides train.py takes")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.trainer.cpu else "cpu")
    bf16 = cfg.trainer.mixed_precision == "bf16"
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.num_classes, data.in_channels).module.to(device)
    layout = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = build_optimizer(cfg.optimizer, model, lr=args.max_lr / cfg.schedule.div_factor)
    forward = torch.compile(model) if cfg.trainer.compile else model
    pin = device.type == "cuda"
    train = DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True, num_workers=data.workers, pin_memory=pin)
    val, test = (DataLoader(split, batch_size=cfg.data.batch_size, pin_memory=pin) for split in (data.val, data.test))
    steps = cfg.trainer.epochs * len(train)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.max_lr, total_steps=steps, pct_start=cfg.schedule.pct_start, div_factor=cfg.schedule.div_factor
    )
    generator = torch.Generator(device).manual_seed(cfg.seed)

    def batches(loader):
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def accuracy(loader) -> float:
        model.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), autocast():
            for images, labels in batches(loader):
                images = data.eval_transform(images).contiguous(memory_format=layout)
                correct += (forward(images).argmax(1) == labels).sum()
        return correct.item() / len(loader.dataset)

    epochs = []
    for _ in range(cfg.trainer.epochs):
        model.train()
        began, seen = time.perf_counter(), 0
        for images, labels in batches(train):
            images = data.train_transform(images, generator).contiguous(memory_format=layout)
            with autocast():
                loss = F.cross_entropy(forward(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epochs.append({"train_seconds": time.perf_counter() - began, "images": seen, "val_acc": accuracy(val)})
        print(json.dumps(epochs[-1]), flush=True)
    seconds, images = sum(e["train_seconds"] for e in epochs), sum(e["images"] for e in epochs)
    result = {"train_images_per_second": images / seconds, "epochs": epochs, "test_acc": accuracy(test), "device": device.type}
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
