"""The training step: one micro-batch, the same code for the training loop and the LR range test.

Augmentation (keyed, so a resumed run draws what the uninterrupted one drew), memory layout, the
forward under Accelerate's autocast (patched into the prepared model), the task's loss, backward
through Accelerate's scaler inside ``accelerator.accumulate`` (DDP skips the all-reduce on
accumulation micro-steps), gradient clipping and the optimizer step. Only the caller differs: the
loop takes its LR from OneCycleLR, the range test from torch-lr-finder's sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer

from superconverge.batches import MicroBatch
from superconverge.config import Config, TrainerConfig
from superconverge.task import Task


@dataclass
class StepOutput:
    loss: torch.Tensor  # the micro-batch's mean loss, detached, on the device (no host sync)
    outputs: torch.Tensor  # detached


class TrainStep:
    def __init__(self, cfg: TrainerConfig, accelerator: Accelerator, task: Task, model: torch.nn.Module,
                 optimizer: AcceleratedOptimizer, seed: int) -> None:  # fmt: skip
        self.cfg, self.accelerator, self.task, self.model, self.optimizer, self.seed = cfg, accelerator, task, model, optimizer, seed
        self.generator = torch.Generator(accelerator.device)

    def train_inputs(self, inputs: torch.Tensor, micro: MicroBatch) -> torch.Tensor:
        transform = self.task.data.train_transform
        if transform is not None:
            # Augmentation randomness is a pure function of (seed, epoch, global batch), drawn for the whole global
            # batch: not of what a loader prefetched, nor of how many processes share the batch.
            self.generator.manual_seed(hash((self.seed, *micro.key)) & 0x7FFF_FFFF_FFFF_FFFF)
            inputs = transform(inputs, self.generator, micro.rows)
        return self.layout(inputs)

    def eval_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        transform = self.task.data.eval_transform
        return self.layout(transform(inputs) if transform is not None else inputs)

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, micro: MicroBatch) -> StepOutput:
        acc = self.accelerator
        inputs = self.train_inputs(inputs, micro)
        with acc.accumulate(self.model):
            outputs = self.model(inputs).float()
            loss = self.task.loss(outputs, targets)
            # Only a short last global batch has weights other than 1: its gradient is still its mean's.
            acc.backward(loss if micro.weight == 1 else loss * micro.weight)
            if acc.sync_gradients and self.cfg.grad_clip_norm:
                # Accelerate's clip_grad_norm_ unscales only the optimizers it prepared; the range test's is
                # wrapped, not prepared (it must not enter the checkpoint), so this step names its own.
                acc.unscale_gradients(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(loss.detach().reshape(()), outputs.detach())

    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        outputs = self.model(self.eval_inputs(inputs)).float()
        return StepOutput(self.task.loss(outputs, targets).detach().reshape(()), outputs)


def unprepared_step(cfg: Config, accelerator: Accelerator, task: Task, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> TrainStep:  # fmt: skip
    """The training step over an optimizer of its own (the range test's, the probe's), wrapped as Accelerate wraps the
    trainer's (scaler, accumulation) but not prepared: it must not enter the checkpoint."""
    wrapped = AcceleratedOptimizer(optimizer, device_placement=False, scaler=accelerator.scaler)
    return TrainStep(cfg.trainer, accelerator, task, model, wrapped, cfg.seed)
