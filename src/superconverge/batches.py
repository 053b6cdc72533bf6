"""The training data's order, independent of the process count.

Each epoch is one seeded permutation of the training set, cut into global batches; global batch
``k`` is spread over ``world`` processes x ``accum`` micro-steps, micro-batch ``j = m * world + rank``
taking its ``j``-th slice. What a run trains on is therefore a function of (seed, epoch, global
batch) alone: a run resumed on another number of processes sees the rest of its epoch exactly once,
at the same global batch, and keyed augmentation draws for the whole global batch and takes its rows.

Written here because Accelerate shards a loader's batches by rank (so a mid-epoch position and the
last batch's padding depend on the process count), and no library gives a map-style data set this
"elastic determinism" (Mosaic Streaming does it for its own format). For full batches the order is
the one Accelerate's seedable sampler gave: ``randperm(n)`` seeded with ``seed + epoch``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Sampler

from superconverge.config import Config
from superconverge.errors import UserError


class LayoutError(UserError):
    """A checkpoint's global batch cannot be kept on this number of processes."""


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is spread: ``world`` processes x ``accum`` micro-steps of ``micro`` samples."""

    micro: int
    accum: int
    world: int

    @property
    def global_batch(self) -> int:
        return self.micro * self.accum * self.world

    @property
    def slots(self) -> int:
        """Micro-batches per global batch, over every rank."""
        return self.accum * self.world

    def describe(self) -> str:
        return f"{self.world} process(es) x {self.accum} accumulation step(s) x micro-batch {self.micro}"

    @classmethod
    def configured(cls, cfg: Config, world: int) -> BatchLayout:
        return cls(cfg.data.batch_size, cfg.trainer.grad_accum_steps, world)

    @classmethod
    def from_record(cls, record: dict) -> BatchLayout:
        """One entry of a checkpoint's ``batch_layouts``."""
        return cls(record["micro"], record["accum"], record["world"])

    def record(self, from_step: int) -> dict:
        return {**asdict(self), "from_step": from_step}

    @classmethod
    def keeping(cls, global_batch: int, world: int, max_micro: int, accum: int) -> BatchLayout:
        """The configured spread (``max_micro`` x ``accum``) if it makes ``global_batch`` on ``world`` processes, else the
        fewest accumulation steps whose micro-batch is at most ``max_micro`` (so memory stays as configured)."""
        if global_batch % world:
            raise LayoutError(f"the checkpoint's global batch of {global_batch} samples cannot be split over {world} processes "
                              f"({global_batch} is not a multiple of {world}): resume on a process count that divides it")  # fmt: skip
        share = global_batch // world
        if max_micro * accum == share:
            return cls(max_micro, accum, world)
        accum = next(a for a in range(1, share + 1) if share % a == 0 and share // a <= max_micro)
        return cls(share // accum, accum, world)


@dataclass(frozen=True)
class MicroBatch:
    """One rank's part of one micro-step: rows ``[start, start + size)`` of global batch ``batch`` of ``epoch``."""

    epoch: int
    batch: int
    start: int
    size: int  # 0: this rank has no rows left in a short last batch and steps on a placeholder row of weight 0
    batch_rows: int  # rows in the whole global batch (the last one may be short)
    weight: float  # its mean loss's share of the global batch's mean, as DDP and accumulation average micro-batches evenly

    @property
    def key(self) -> tuple[int, int]:
        """What augmentation is keyed by: the same draws whatever the layout."""
        return self.epoch, self.batch

    @property
    def rows(self) -> tuple[int, int]:
        """(first row, rows of the global batch): a batch transform draws for all of them and keeps its own."""
        return self.start if self.size else 0, self.batch_rows  # a placeholder is the batch's first row


class SampleKey(int):
    """A training sample's index, which also keys its augmentation by (seed, epoch, index).

    A data set that decodes and augments image by image in the loader workers (an image folder) seeds
    its draws with ``draw_seed``: the same sample gets the same crop and flip in an epoch whatever the
    process count, the loader worker or the position of a resume. Everywhere else it is the int it is.
    """

    def __new__(cls, index: int, seed: int, epoch: int) -> SampleKey:
        key = super().__new__(cls, index)
        key.seed, key.epoch = seed, epoch
        return key

    def __reduce__(self):  # the loader sends indices to its worker processes pickled
        return SampleKey, (int(self), self.seed, self.epoch)

    @property
    def draw_seed(self) -> int:
        packed = struct.pack("<qqq", self.seed, self.epoch, int(self))
        return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


class EpochPlan:
    """Global batches of a seeded permutation per epoch; ``drop_last`` drops a short last one."""

    def __init__(self, size: int, layout: BatchLayout, seed: int, drop_last: bool) -> None:
        self.size, self.layout, self.seed = size, layout, seed
        batches = size // layout.global_batch if drop_last else math.ceil(size / layout.global_batch)
        if batches == 0:
            raise UserError(f"the training split has {size} samples, fewer than one global batch of {layout.global_batch} "
                            f"({layout.describe()}): lower data.batch_size or trainer.grad_accum_steps")  # fmt: skip
        self.batches_per_epoch = batches
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            self._order = epoch, torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        return self._order[1]

    def micro_batches(self, epoch: int, first: int, rank: int) -> Iterator[MicroBatch]:
        """This rank's micro-batches of ``epoch`` from global batch ``first`` on."""
        layout, g = self.layout, self.layout.global_batch
        for k in range(first, self.batches_per_epoch):
            rows = min(g, self.size - k * g)
            for m in range(layout.accum):
                j = m * layout.world + rank
                # An even split of the batch's rows over its slots: micro-sized slices, and in a short last batch
                # sizes that differ by at most one (a rank never waits on another's bigger share).
                start, stop = j * rows // layout.slots, (j + 1) * rows // layout.slots
                yield MicroBatch(epoch, k, start, stop - start, rows, (stop - start) * layout.slots / rows)

    def indices(self, micro: MicroBatch) -> list[SampleKey]:
        base = micro.batch * self.layout.global_batch
        order = self.order(micro.epoch)
        rows = [order[base]] if micro.size == 0 else order[base + micro.start : base + micro.start + micro.size]
        return [SampleKey(index, self.seed, micro.epoch) for index in rows]


class RankSampler(Sampler[list[int]]):
    """A DataLoader batch sampler: this rank's micro-batches from where ``start`` put it (``endless``: epoch after epoch)."""

    def __init__(self, plan: EpochPlan, rank: int, endless: bool = False) -> None:
        self.plan, self.rank, self.endless = plan, rank, endless
        self.epoch, self.first = 0, 0

    def start(self, epoch: int, first: int = 0) -> None:
        self.epoch, self.first = epoch, first

    def micro_batches(self) -> Iterator[MicroBatch]:
        epoch, first = self.epoch, self.first
        while True:
            yield from self.plan.micro_batches(epoch, first, self.rank)
            if not self.endless:
                return
            epoch, first = epoch + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        for micro in self.micro_batches():
            yield self.plan.indices(micro)

    def __len__(self) -> int:
        return (self.plan.batches_per_epoch - self.first) * self.plan.layout.accum
