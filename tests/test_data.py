"""Data sets resolve offline; augmentation touches the training split only; splits are seeded."""

import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from superconverge.batches import BatchLayout, EpochPlan, RankSampler
from superconverge.config import DataConfig
from superconverge.data import FASHION_MNIST_SYSTEM_DIR, DataError, build_data, holds_tensors


def test_digits_split_is_seeded_disjoint_and_complete():
    a, b = build_data(DataConfig(name="digits", val_fraction=0.2)), build_data(DataConfig(name="digits", val_fraction=0.2))
    assert torch.equal(a.train.indices, b.train.indices) and torch.equal(a.val.indices, b.val.indices)
    assert set(a.train.indices.tolist()).isdisjoint(a.val.indices.tolist())
    assert len(a.train) + len(a.val) == len(a.train.raw.labels) and len(a.test) == 1797 // 5
    assert a.num_classes == 10 and a.in_channels == 1 and a.image_size == 8
    other = build_data(DataConfig(name="digits", val_fraction=0.2, split_seed=1))
    assert not torch.equal(a.val.indices, other.val.indices)


def test_limit_train_is_a_seeded_stratified_random_subset():
    full = build_data(DataConfig(name="digits", val_fraction=0.0)).train.raw
    bundle = build_data(DataConfig(name="digits", limit_train=300, val_fraction=0.1))
    assert len(bundle.train) + len(bundle.val) == 300
    kept = bundle.train.raw
    assert not torch.equal(kept.images, full.images[:300])  # not the first rows
    share = torch.bincount(kept.labels, minlength=10) / 300
    assert torch.allclose(share, torch.bincount(full.labels, minlength=10) / len(full.labels), atol=0.01)  # each class's share kept
    again = build_data(DataConfig(name="digits", limit_train=300, val_fraction=0.1)).train.raw
    assert torch.equal(again.images, kept.images)
    other = build_data(DataConfig(name="digits", limit_train=300, val_fraction=0.1, split_seed=1)).train.raw
    assert not torch.equal(other.images, kept.images)


def test_limit_train_on_a_folder_listed_class_by_class_keeps_both_classes(tmp_path):
    make_folder(tmp_path, {"cats": 30, "dogs": 30})  # ImageFolder lists every cat before the first dog
    bundle = build_data(DataConfig(name="imagefolder", root=tmp_path, limit_train=20, val_fraction=0.25, image_size=16))
    assert len(bundle.train) == 15 and len(bundle.val) == 5
    assert {bundle.train[i][1] for i in range(15)} == {0, 1} and {bundle.val[i][1] for i in range(5)} == {0, 1}


def test_a_training_split_without_classes_the_others_have_is_warned(capsys):
    build_data(DataConfig(name="digits", limit_train=5, val_fraction=0.2))
    warning = capsys.readouterr().err
    assert "digits's training split has no sample of class(es)" in warning and "its test split has" in warning
    build_data(DataConfig(name="digits", limit_train=500))
    assert "warning" not in capsys.readouterr().err


def test_augmentation_only_on_training_batches():
    bundle = build_data(DataConfig(name="fashion_mnist" if FASHION_MNIST_SYSTEM_DIR.is_dir() else "digits", limit_train=256,
                                   crop_padding=2))  # fmt: skip
    batch = torch.stack([bundle.train[i][0] for i in range(64)])
    g = torch.Generator()
    augmented = [bundle.train_transform(batch, g.manual_seed(s)) for s in (1, 2, 1)]
    assert not torch.equal(augmented[0], augmented[1]) and torch.equal(augmented[0], augmented[2])
    evaluated = bundle.eval_transform(batch), bundle.eval_transform(batch)
    assert torch.equal(*evaluated)
    assert evaluated[0].mean().abs() < 0.5 and 0.5 < evaluated[0].std() < 2  # normalised with the split's statistics
    assert augmented[0].shape == evaluated[0].shape == batch.shape


def test_fashion_mnist_comes_from_the_debian_package(tmp_path):
    if not FASHION_MNIST_SYSTEM_DIR.is_dir():
        assert not os.environ.get("CI"), "CI installs dataset-fashion-mnist; it must be there"
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    bundle = build_data(DataConfig(name="fashion_mnist", root=tmp_path))
    assert len(bundle.train) + len(bundle.val) == 60000 and len(bundle.test) == 10000
    assert bundle.num_classes == 10 and bundle.image_size == 28
    assert sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir())[0] == "t10k-images-idx3-ubyte"


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="mnist.*not found"):
        build_data(DataConfig(name="mnist", root=tmp_path))


def make_folder(root: Path, classes: dict[str, int], size=(12, 10)) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", size, color=(i * 20, 0, 0)).save(root / name / f"{i}.png")


def test_imagefolder_split_by_fraction(tmp_path):
    make_folder(tmp_path, {"cobra": 6, "python": 4, "viper": 5})
    bundle = build_data(DataConfig(name="imagefolder", root=tmp_path, val_fraction=0.2, image_size=16))
    assert bundle.num_classes == 3 and len(bundle.train) + len(bundle.val) == 15 and bundle.test is None
    image, label = bundle.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and 0 <= label < 3


def test_imagefolder_with_its_own_val_and_test(tmp_path):
    make_folder(tmp_path / "train", {"cobra": 3, "viper": 3})
    make_folder(tmp_path / "val", {"cobra": 1, "viper": 2})
    make_folder(tmp_path / "test", {"cobra": 2, "viper": 2})
    bundle = build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 3, 4)
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])  # evaluation transform is deterministic


def test_fake_data():
    bundle = build_data(DataConfig(name="fake", fake_train_size=50, fake_image_size=16, val_fraction=0.2))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 10)
    assert bundle.train[0][0].shape == (3, 16, 16)


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def noisy_folder(root: Path, suffix: str) -> None:
    for name in ("cobra", "viper"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.effect_noise((32, 32), 60 + i).convert("RGB").save(root / name / f"{i}{suffix}")


def augmented_epoch(train: Dataset, layout: BatchLayout, epoch: int, first: int = 0, workers: int = 0) -> dict[int, torch.Tensor]:
    """The augmented inputs every rank of ``layout`` trains on in ``epoch`` from global batch ``first``, by sample index."""
    plan = EpochPlan(len(train), layout, seed=7, drop_last=False)
    seen = {}
    for rank in range(layout.world):
        torch.manual_seed(7)  # each rank's process is seeded alike, as accelerate's set_seed does
        sampler = RankSampler(plan, rank)
        sampler.start(epoch, first)
        for indices, (images, _) in zip(sampler, DataLoader(train, batch_sampler=sampler, num_workers=workers), strict=True):
            seen.update(zip(map(int, indices), images, strict=True))
    return seen


def test_imagefolder_augmentation_is_keyed_by_seed_epoch_and_sample_not_by_process(tmp_path):
    noisy_folder(tmp_path, ".png")
    train = build_data(DataConfig(name="imagefolder", root=tmp_path, val_fraction=0, image_size=16)).train
    on_two = augmented_epoch(train, BatchLayout(micro=2, accum=1, world=2), epoch=1)
    resumed_on_one = augmented_epoch(train, BatchLayout(micro=2, accum=2, world=1), epoch=1, first=1, workers=2)
    assert len(resumed_on_one) == 8 and all(torch.equal(image, on_two[i]) for i, image in resumed_on_one.items())
    next_epoch = augmented_epoch(train, BatchLayout(micro=2, accum=1, world=2), epoch=2)
    assert sum(not torch.equal(image, on_two[i]) for i, image in next_epoch.items()) >= 6  # other draws in another epoch


def test_a_truncated_png_is_refused_before_any_work_naming_the_file(tmp_path, capsys):
    noisy_folder(tmp_path, ".png")
    bad = truncate(tmp_path / "viper" / "3.png")
    with pytest.raises(DataError, match="data.bad_images=skip") as caught:
        build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16))
    assert str(bad) in str(caught.value) and "1 unreadable image" in str(caught.value)
    skipping = build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16, bad_images="skip"))
    assert len(skipping.train) + len(skipping.val) == 11
    assert f"skipping 1 unreadable image(s) under {tmp_path}: {bad}" in capsys.readouterr().err


def test_an_image_that_fails_only_when_decoded_is_named_or_replaced(tmp_path, capsys):
    noisy_folder(tmp_path, ".jpg")  # a truncated JPEG passes PIL's structural check: it fails in the loader
    bad = truncate(tmp_path / "cobra" / "2.jpg")
    for policy in ("error", "skip"):
        bundle = build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16, val_fraction=0.0, bad_images=policy))
        position = bundle.train.subset.indices.index(2)  # cobra/2.jpg is sample 2 (classes, then files, sorted)
        assert bundle.train.subset.dataset.samples[2][0] == str(bad)
        if policy == "error":
            with pytest.raises(DataError, match="data.bad_images=skip") as caught:
                bundle.train[position]
            assert str(bad) in str(caught.value)
        else:
            image, label = bundle.train[position]
            assert image.shape == (3, 16, 16) and bundle.train.skipped == [str(bad)]
            assert f"skipping unreadable image {bad}" in capsys.readouterr().err


def test_auto_workers_only_for_images_decoded_one_by_one(tmp_path, monkeypatch):
    assert build_data(DataConfig(name="digits")).workers == 0  # in memory: a worker would only copy tensors
    assert build_data(DataConfig(name="digits", num_workers=3)).workers == 3
    rows = TensorDataset(torch.zeros(4, 2), torch.zeros(4))
    assert holds_tensors(Subset(Subset(rows, [0, 1]), [1])) and not holds_tensors(list(zip(rows.tensors[0], rows.tensors[1], strict=True)))
    make_folder(tmp_path, {"cobra": 2, "viper": 2})
    cores = len(os.sched_getaffinity(0))
    assert build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16)).workers == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 2))  # more processes than cores: still one each
    assert build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16)).workers == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the cores this process may use, not the machine's
    try:
        assert build_data(DataConfig(name="imagefolder", root=tmp_path, image_size=16)).workers == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_a_mirrored_cifar_batch_may_not_run_code(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unpickled code ran",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}))
    from superconverge.data import _read_cifar_batches

    with pytest.raises(pickle.UnpicklingError, match="posix.system is not allowed"):
        _read_cifar_batches(folder, [["data_batch_1", "md5"]])
