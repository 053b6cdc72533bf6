"""The default job in this launcher and in what users would reach for instead, on the same data.

Every system trains small_cnn on the product's Fashion-MNIST split (the same train/validation/test
images, the same batched flips and normalisation) with AdamW (weight decay 0.05), a global batch of
256 and one cycle over 10 epochs, choosing max_lr with its own range test:

- superconverge: `accelerate launch` on 2 CPU processes (the `make train` job);
- Lightning: `Tuner.lr_find` suggestion, OneCycleLR stepped per step, DDP on 2 CPU processes;
- fastai: `lr_find` valley, `fit_one_cycle` (1 process, 2 threads);
- the seed blog's plain loop: torch-lr-finder's steepest suggestion, OneCycleLR per batch (1 process, 2 threads);
- `bare_loop.py` at superconverge's max_lr (no range test; 1 process, 2 threads).

Wall and CPU seconds (the system's whole process tree) over alternated rounds. Lightning and fastai
come from the optional `[peers]` extra, in any environment that has them:

    pip install -e '.[peers]'
    python -m benchmarks.speed.peers --rounds 2        # writes benchmarks/results/peers.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, ROOT
from superconverge.config import load_config
from superconverge.data import build_data
from superconverge.models import build_model

CONFIG = ROOT / "configs" / "fashion_mnist.yaml"
GLOBAL_BATCH, WEIGHT_DECAY, PCT_START = 256, 0.05, 0.25
EPOCHS = int(os.environ.get("PEERS_EPOCHS", "10"))  # fewer only to check the script quickly
SYSTEMS = ("superconverge", "lightning", "fastai", "seed_loop", "bare_loop")


def job_data():
    cfg = load_config(CONFIG, [f"data.root={ROOT / 'data'}"])
    return build_data(cfg.data), cfg


def new_model(data) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(CONFIG).model, data.num_classes, data.in_channels).module


def loaders(data, batch: int, shuffle_seed: int = 0):
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(shuffle_seed)
    train = DataLoader(data.train, batch_size=batch, shuffle=True, generator=generator)
    return train, DataLoader(data.val, batch_size=512), DataLoader(data.test, batch_size=512)


def accuracy(model, loader, data) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(data.eval_transform(images)).argmax(1) == labels).sum().item()
            total += len(labels)
    return correct / total


def steepest(lrs, losses, skip_start: int = 10, skip_end: int = 5) -> float:
    """torch-lr-finder's own suggestion (what its plot() marks), from its history."""
    import numpy as np

    lrs, losses = lrs[skip_start:-skip_end], losses[skip_start:-skip_end]
    return float(lrs[int(np.gradient(np.array(losses)).argmin())])


# ---- the systems (each runs in its own process tree; the driver measures it) ----


def run_seed_loop(out: Path, epochs: int = EPOCHS) -> dict:
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    data, _ = job_data()
    model = new_model(data)
    train, _, test = loaders(data, GLOBAL_BATCH)
    generator = torch.Generator().manual_seed(0)

    class Augmented(TrainDataLoaderIter):  # the flips and normalisation ride along in the range test
        def inputs_labels_from_batch(self, batch):
            return data.train_transform(batch[0], generator), batch[1]

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7, weight_decay=WEIGHT_DECAY)
    started = time.perf_counter()
    finder = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss())
    finder.range_test(Augmented(train), end_lr=10, num_iter=100)
    max_lr = steepest(finder.history["lr"], finder.history["loss"])
    finder.reset()
    range_seconds = time.perf_counter() - started
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, epochs=epochs, steps_per_epoch=len(train), pct_start=PCT_START)
    for _ in range(epochs):
        model.train()
        for images, labels in train:
            F.cross_entropy(model(data.train_transform(images, generator)), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
    return {"max_lr": max_lr, "range_test_seconds": range_seconds, "test_acc": accuracy(model, test, data)}


def run_fastai(out: Path) -> dict:
    from fastai.callback.core import Callback
    from fastai.callback.schedule import valley
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import OptimWrapper

    data, _ = job_data()
    train, val, test = loaders(data, GLOBAL_BATCH)
    generator = torch.Generator().manual_seed(0)

    class BatchTransforms(Callback):
        def before_batch(self):
            transform = (lambda x: data.train_transform(x, generator)) if self.training else data.eval_transform
            self.learn.xb = (transform(self.xb[0]),)

    def adamw(params, lr):  # torch's AdamW, as the other systems use (fastai's own Adam has other defaults)
        return OptimWrapper(params, torch.optim.AdamW, lr=lr)

    learn = Learner(
        DataLoaders(train, val),
        new_model(data),
        loss_func=F.cross_entropy,
        opt_func=adamw,
        wd=WEIGHT_DECAY,
        cbs=[BatchTransforms()],
        path=out.parent,
    )  # fmt: skip  (lr_find saves a temporary model under path)
    started = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        max_lr = float(learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley)
    range_seconds = time.perf_counter() - started
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(EPOCHS, lr_max=max_lr, pct_start=PCT_START)
    return {"max_lr": max_lr, "range_test_seconds": range_seconds, "test_acc": accuracy(learn.model, test, data)}


def run_lightning(out: Path, max_time: float | None = None) -> dict:
    """``max_time`` (seconds): Lightning's own stop (its Timer, counted from the training loop's start, so without the start-up
    and the range test), with the cycle still sized for EPOCHS epochs: it stops mid-cycle, not annealed."""
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    data, _ = job_data()

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.lr = new_model(data), 1e-3
            self.generator = torch.Generator().manual_seed(0)

        def training_step(self, batch, _):
            images, labels = batch
            return F.cross_entropy(self.model(data.train_transform(images, self.generator)), labels)

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
            steps = self.trainer.estimated_stepping_batches
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.lr, total_steps=steps, pct_start=PCT_START)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

        def train_dataloader(self):
            return loaders(data, GLOBAL_BATCH // 2)[0]  # per process: 2 DDP processes make the global batch

    module = Module()
    trainer = L.Trainer(max_epochs=EPOCHS, max_time=None if max_time is None else {"seconds": max_time}, accelerator="cpu", devices=2,
                        strategy="ddp", enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)  # fmt: skip
    started = time.perf_counter()
    Tuner(trainer).lr_find(module, update_attr=True)  # as its docs show: the suggestion goes into module.lr
    range_seconds = time.perf_counter() - started
    max_lr = module.lr
    trainer.fit(module)
    if trainer.global_rank != 0:
        sys.exit(0)
    return {"max_lr": max_lr, "range_test_seconds": range_seconds, "test_acc": accuracy(module.model, loaders(data, 512)[2], data),
            "optimizer_steps": trainer.global_step, "total_optimizer_steps": trainer.estimated_stepping_batches,
            "final_lr": trainer.optimizers[0].param_groups[0]["lr"]}  # fmt: skip


RUNNERS = {"seed_loop": run_seed_loop, "fastai": run_fastai, "lightning": run_lightning}


# ---- the driver ----


def measured(command: list[str], env: dict, log: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of a command's whole process tree; its output to ``log`` (else a temporary file).

    Polled, because not every launcher waits for its children (RUSAGE_CHILDREN would miss them):
    the last CPU times seen for each process of the tree are summed. The output goes to a file, not a
    pipe nobody reads until the end (a chatty run would fill the pipe and block).
    """
    import psutil

    with open(log, "w+") if log is not None else tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        root, seen = psutil.Process(proc.pid), {}
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for member in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = member.cpu_times()
                        seen[member.pid] = times.user + times.system
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            output.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{output.read()[-3000:]}")
    return wall, sum(seen.values())


def run_system(name: str, work: Path, launcher_max_lr: float | None) -> dict:
    out = work / f"{name}.json"
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}, "WANDB_MODE": "disabled"}
    py = sys.executable
    if name == "superconverge":
        run_dir = work / "run"
        command = [py, "-m", "accelerate.commands.launch", "--config_file", "launch/cpu.yaml", "train.py", "--config", str(CONFIG),
                   f"output_dir={run_dir}", "trainer.resume=none", "console.mode=quiet", f"trainer.epochs={EPOCHS}"]  # fmt: skip
        wall, cpu = measured(command, {**env, "OMP_NUM_THREADS": "1"})
        found = json.loads((run_dir / "summary.json").read_text())
        result = {"max_lr": found["max_lr"], "range_test_seconds": found["lr_finder_seconds"], "test_acc": found["test_acc"]}
    elif name == "bare_loop":
        command = [py, "-m", "benchmarks.speed.bare_loop", "--config", str(CONFIG), "--max-lr", str(launcher_max_lr), "--out", str(out),
                   "data.batch_size=256", f"trainer.epochs={EPOCHS}"]  # fmt: skip
        wall, cpu = measured(command, {**env, "OMP_NUM_THREADS": "2"})
        found = json.loads(out.read_text())
        result = {"max_lr": launcher_max_lr, "range_test_seconds": 0.0, "test_acc": found["test_acc"]}
    else:  # 2 threads in one process, or 1 thread in each of Lightning's 2 DDP processes (as accelerate launch sets)
        threads = "1" if name == "lightning" else "2"
        wall, cpu = measured([py, "-m", "benchmarks.speed.peers", "--system", name, "--out", str(out)], {**env, "OMP_NUM_THREADS": threads})
        result = json.loads(out.read_text())
    return {**result, "wall": wall, "cpu": cpu}


def report(results: dict[str, list[dict]], rounds: int) -> str:
    names = {"superconverge": "superconverge (2 processes)", "lightning": f"Lightning {version('lightning')} (DDP, 2 processes)",
             "fastai": f"fastai {version('fastai')}", "seed_loop": f"seed loop (torch-lr-finder {version('torch-lr-finder')})",
             "bare_loop": "bare loop at superconverge's max_lr"}  # fmt: skip
    rows = [
        "# The default job in superconverge and its peers",
        "",
        f"Fashion-MNIST (the product's split), small_cnn, AdamW (wd {WEIGHT_DECAY}), global batch {GLOBAL_BATCH}, one cycle over "
        f"{EPOCHS} epochs (pct_start {PCT_START}), flips; each system picks max_lr with its own range test. {rounds} alternated "
        f"rounds on {os.cpu_count()} cores; torch {torch.__version__}. Wall and CPU seconds are the minimum over rounds; max_lr and "
        "test accuracy are listed per round.",
        "",
        "| system | wall s | CPU s | range test s | max_lr per round | test acc per round |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        lrs = ", ".join(f"{r['max_lr']:.2e}" for r in runs)
        accs = ", ".join(f"{100 * r['test_acc']:.2f} %" for r in runs)
        wall, cpu, finder = (min(r[key] for r in runs) for key in ("wall", "cpu", "range_test_seconds"))
        rows.append(f"| {names[name]} | {wall:.1f} | {cpu:.1f} | {finder:.1f} | {lrs} | {accs} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    parser.add_argument("--system", help=argparse.SUPPRESS)  # internal: run one peer in this process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)  # internal: the seed loop's epochs (time_to_accuracy)
    parser.add_argument("--max-time", type=float, help=argparse.SUPPRESS)  # internal: Lightning's max_time seconds (time_to_accuracy)
    args = parser.parse_args()
    if args.system:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        options = {"epochs": args.epochs, "max_time": args.max_time}
        result = RUNNERS[args.system](args.out, **{key: value for key, value in options.items() if value is not None})
        args.out.write_text(json.dumps(result))
        return
    results: dict[str, list[dict]] = {name: [] for name in args.systems}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            launcher_max_lr = None
            for name in args.systems if round_index % 2 == 0 else [*args.systems[:1], *reversed(args.systems[1:])]:
                if name == "bare_loop" and launcher_max_lr is None:
                    launcher_max_lr = results["superconverge"][-1]["max_lr"]
                work = Path(scratch) / f"{name}-{round_index}"
                work.mkdir()
                results[name].append(run_system(name, work, launcher_max_lr))
                print(name, results[name][-1], flush=True)
    out = RESULTS / "peers.md"
    out.write_text(report(results, args.rounds))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
