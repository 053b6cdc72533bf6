"""Data-pipeline headroom: images/s the training loader delivers (with its augmentation) against
images/s one training process consumes, per process, on one thread each (as `make train` runs);
and for an image folder of 224-px JPEGs (decoded by PIL, image by image), images/s per loader
worker and in total, against what a GPU consumes, so the README can say how many cores per GPU
an image-folder run needs.

    .venv/bin/python -m benchmarks.speed.data_pipeline      # ~1 min; writes benchmarks/results/data_pipeline.md
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.common import RESULTS, ROOT
from superconverge.config import load_config
from superconverge.data import build_data
from superconverge.models import build_model
from superconverge.schedule import build_optimizer

CONFIGS = ["configs/fashion_mnist.yaml", "configs/digits.yaml"]
SECONDS = 8.0
FOLDER_IMAGES, FOLDER_CLASSES = 1024, 8
# Published training consumption of one GPU, for scale (no GPU was lent when this was measured):
# - NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5, 1x A100 80GB, mixed precision, pytorch-21.03
#   NGC container: 2470 img/s (PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance").
# - timm (huggingface/pytorch-image-models) results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv:
#   train_samples_per_sec at 224 px, batch 512, AMP, one RTX 3090: mobilenetv2_100 1832.14, resnet50 826.06
#   (both models on the same GPU, so their ratio, 2.2x, carries to other GPUs).
GPU_CONSUMPTION = {
    "resnet50, 1x A100 80GB, mixed precision (NVIDIA DeepLearningExamples)": 2470,
    "resnet50, 1x RTX 3090, AMP (timm benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv)": 826,
    "mobilenet_v2, 1x RTX 3090, AMP (same timm file)": 1832,
}


def images_per_second(step, seconds: float = SECONDS) -> float:
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

    return images_per_second(step)


def training_rate(cfg, data) -> float:
    model = build_model(cfg.model, data.num_classes, data.in_channels).module
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

    return images_per_second(step)


def make_jpeg_folder(root: Path) -> None:
    """224-px JPEGs with photo-like content (smooth shapes plus grain), quality 90."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for index in range(FOLDER_IMAGES):
        coarse = torch.rand(3, 7, 7, generator=generator)
        smooth = F.interpolate(coarse[None], size=(224, 224), mode="bicubic", align_corners=False)[0]
        pixels = (smooth + 0.08 * torch.randn(3, 224, 224, generator=generator)).clamp(0, 1).mul(255).byte()
        folder = root / f"class{index % FOLDER_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / f"{index}.jpg", quality=90)


def image_folder_rows() -> tuple[list[str], float]:
    """Images/s of the product's imagefolder training loader (224 px, augmentation on) by worker count."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        make_jpeg_folder(Path(scratch))
        cfg = load_config(None, ["data.name=imagefolder", f"data.root={scratch}", "data.image_size=224", "data.normalize=imagenet",
                                 "data.batch_size=64", "data.val_fraction=0"])  # fmt: skip
        data = build_data(cfg.data)
        cores = len(os.sched_getaffinity(0))
        for workers in sorted({0, 1, cores}):
            data.workers = workers
            rate = loader_rate(cfg, data)
            per_worker = rate / max(workers, 1)
            rows.append(f"| {workers} | {rate:,.0f} | {per_worker:,.0f} |")
            print(rows[-1], flush=True)
    return rows, per_worker


def main() -> None:
    torch.set_num_threads(1)
    folder_rows, per_worker = image_folder_rows()
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
    folder = [
        "",
        "## Image folder: 224-px JPEGs decoded by PIL",
        "",
        f"{FOLDER_IMAGES} JPEGs of 224x224 (quality 90, smooth shapes plus grain), the product's `imagefolder` training loader "
        "(`data.image_size=224`, random crop with padding, flip, ImageNet normalisation), batch 64, one thread per worker; "
        "workers 0 means the loading process itself.",
        "",
        "| workers | images/s | images/s per worker |",
        "|---|---|---|",
        *folder_rows,
        "",
        "Cores a GPU needs for this pipeline alone (its consumption / images/s per worker of the widest row):",
        "",
        "| GPU consumption (source) | images/s | loader workers (cores) per GPU |",
        "|---|---|---|",
        *[f"| {name} | {rate:,} | {rate / per_worker:.0f} |" for name, rate in GPU_CONSUMPTION.items()],
    ]
    out = RESULTS / "data_pipeline.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + rows + folder) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
