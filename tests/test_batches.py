"""The training data's order does not depend on the process count (unit level; real resumes in test_elastic.py)."""

import itertools

import pytest
import torch

from superconverge.batches import BatchLayout, EpochPlan, LayoutError, RankSampler
from superconverge.data import BatchTransform

LAYOUTS = [BatchLayout(12, 1, 1), BatchLayout(6, 2, 1), BatchLayout(6, 1, 2), BatchLayout(3, 2, 2), BatchLayout(4, 1, 3),
           BatchLayout(1, 4, 3)]  # fmt: skip


def global_batches(plan: EpochPlan, epoch: int, first: int = 0) -> list[list[int]]:
    """Every rank's micro-batches put back into global batches, in the order a global batch is laid out."""
    world, accum = plan.layout.world, plan.layout.accum
    per_rank = [list(plan.micro_batches(epoch, first, rank)) for rank in range(world)]
    batches = []
    for k in range(len(per_rank[0]) // accum):
        rows: list[int] = []
        for m, rank in itertools.product(range(accum), range(world)):
            micro = per_rank[rank][k * accum + m]
            assert micro.batch == first + k
            rows += plan.indices(micro) if micro.size else []
        batches.append(rows)
    return batches


@pytest.mark.parametrize("size", [120, 100, 7 * 12 + 5, 12 * 3 + 1])
def test_global_batches_are_the_same_for_every_layout(size):
    reference = global_batches(EpochPlan(size, LAYOUTS[0], seed=3, drop_last=False), epoch=1)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(3 + 1)).tolist()
    assert [i for batch in reference for i in batch] == order  # the whole epoch once, in the seeded permutation's order
    for layout in LAYOUTS[1:]:
        assert global_batches(EpochPlan(size, layout, seed=3, drop_last=False), epoch=1) == reference, layout


@pytest.mark.parametrize(("before", "after"), list(itertools.permutations(LAYOUTS[:4], 2)))
def test_the_rest_of_an_interrupted_epoch_is_seen_once(before, after):
    size, stop = 12 * 9 + 7, 4
    first = global_batches(EpochPlan(size, before, 0, False), epoch=2)[:stop]
    rest = global_batches(EpochPlan(size, after, 0, False), epoch=2, first=stop)
    seen = [i for batch in first + rest for i in batch]
    assert sorted(seen) == list(range(size))


def test_short_last_batch_weights_and_placeholders():
    plan = EpochPlan(12 + 2, BatchLayout(2, 2, 3), seed=0, drop_last=False)  # a last global batch of 2 rows over 6 slots
    last = [micro for rank in range(3) for micro in plan.micro_batches(0, 1, rank)]
    assert sorted(m.size for m in last) == [0, 0, 0, 0, 1, 1]
    # DDP and accumulation average the six micro-batches evenly: weights make that the mean over the batch's rows.
    assert sum(m.weight for m in last) / len(last) == pytest.approx(1.0)
    assert all(m.weight == 0 for m in last if m.size == 0)
    assert all(len(plan.indices(m)) == max(m.size, 1) for m in last)
    full = list(plan.micro_batches(0, 0, 1))
    assert all(m.weight == 1.0 and m.size == 2 for m in full[:2])


def test_drop_last_drops_the_short_global_batch():
    assert EpochPlan(100, BatchLayout(6, 2, 1), 0, drop_last=True).batches_per_epoch == 8
    assert EpochPlan(100, BatchLayout(6, 2, 1), 0, drop_last=False).batches_per_epoch == 9
    with pytest.raises(Exception, match="fewer than one global batch of 128"):
        EpochPlan(100, BatchLayout(64, 1, 2), 0, drop_last=True)


def test_the_rank_sampler_follows_the_plan_and_starts_mid_epoch():
    plan = EpochPlan(50, BatchLayout(4, 2, 2), seed=1, drop_last=False)
    sampler = RankSampler(plan, rank=1)
    sampler.start(epoch=3, first=2)
    assert list(sampler) == [plan.indices(m) for m in plan.micro_batches(3, 2, 1)]
    assert len(sampler) == len(list(sampler)) == (4 - 2) * 2
    endless = RankSampler(plan, rank=0, endless=True)
    taken = list(itertools.islice(endless.micro_batches(), 3 * 4 * 2))
    assert [m.epoch for m in taken[::8]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("global_batch", "world", "max_micro", "accum", "expected"),
    [
        (256, 1, 128, 1, BatchLayout(128, 2, 1)),  # 2 processes -> 1: accumulate instead
        (256, 2, 128, 2, BatchLayout(128, 1, 2)),  # 1 -> 2: the configured accumulation would give 512
        (256, 4, 128, 1, BatchLayout(64, 1, 4)),  # never a micro-batch above data.batch_size, never an odd spread
        (256, 1, 128, 2, BatchLayout(128, 2, 1)),  # the configured spread, when it keeps the global batch
        (96, 1, 40, 1, BatchLayout(32, 3, 1)),
    ],
)
def test_layout_keeps_the_global_batch(global_batch, world, max_micro, accum, expected):
    layout = BatchLayout.keeping(global_batch, world, max_micro, accum)
    assert layout == expected and layout.global_batch == global_batch and layout.micro <= max_micro


def test_a_global_batch_that_cannot_be_split_is_refused_naming_the_numbers():
    with pytest.raises(LayoutError, match="global batch of 256 samples cannot be split over 3 processes"):
        BatchLayout.keeping(256, 3, 128, 1)


def test_augmentation_of_a_global_batch_does_not_depend_on_its_split():
    transform = BatchTransform((0.5,), (0.25,), size=8, crop_padding=2, flip=True)
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    whole = transform(images, torch.Generator().manual_seed(7))
    for cuts in ([0, 5, 10], [0, 3, 4, 10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]):
        parts = [transform(images[a:b], torch.Generator().manual_seed(7), (a, 10)) for a, b in itertools.pairwise(cuts)]
        assert torch.equal(torch.cat(parts), whole), cuts
