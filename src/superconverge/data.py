"""Datasets by name, offline-first, with train-only augmentation and a seeded validation split.

Small datasets (digits, MNIST, Fashion-MNIST, CIFAR, FakeData) are decoded once into a uint8 tensor
and augmented a whole batch at a time; folders of images go through PIL, image by image. The
built-ins are registered in ``registry.DATASETS`` and read the typed ``data.*`` keys; a user's
factory gets ``data.root`` and ``data.kwargs`` and brings its own transforms. Both end as the same
``DataBundle``.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive, extract_archive
from torchvision.transforms import v2

from superconverge import registry
from superconverge.batches import SampleKey
from superconverge.config import DataConfig
from superconverge.downloads import one_at_a_time
from superconverge.errors import UserError, say

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = datasets.folder.IMG_EXTENSIONS
PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)  # what PIL raises for a bad file
USER_KEYS = ("train", "val", "test", "num_classes", "in_channels")  # what a user's data set factory may return


class DataError(UserError):
    """The data set cannot be found or is malformed."""


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int  # the model's output width
    in_channels: int
    image_size: int | None  # None for a user's data set (its inputs are its own)
    # Set for in-memory data sets, whose loaders yield uint8 batches: the trainer applies these.
    train_transform: BatchTransform | None = None
    eval_transform: BatchTransform | None = None
    workers: int = 0  # DataLoader workers per process (data.num_workers, auto resolved)


@dataclass
class RawImages:
    """A whole split decoded into memory: uint8 images (N, C, H, W) and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor


class TensorImageDataset(Dataset):
    """Selected rows of an in-memory uint8 image tensor; transforms run per batch in BatchTransform."""

    def __init__(self, raw: RawImages, indices: torch.Tensor | None) -> None:
        self.raw = raw
        self.indices = indices if indices is not None else torch.arange(len(raw.labels))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        row = int(self.indices[index])
        return self.raw.images[row], int(self.raw.labels[row])


class BatchTransform:
    """Augment and normalise a whole uint8 batch at once, on whatever device it is on.

    torchvision's transforms work per image (about 0.3 ms each for 28x28 on a CPU core, as much as
    the small CNN's training step); on a stacked batch the same crop and flip cost microseconds an
    image, and on a GPU they run there. Randomness comes from the generator the caller passes, so
    the trainer can make it a pure function of (seed, epoch, batch) and resume mid-epoch exactly.
    """

    def __init__(self, mean, std, size: int, crop_padding: int = 0, flip: bool = False) -> None:
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.size, self.crop_padding, self.flip = size, crop_padding, flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """``rows=(first, total)``: these images are rows ``first...`` of a batch of ``total``; the draws are made for the
        whole batch and these rows' are kept, so a batch split any way over processes is augmented the same."""
        x = images.float().div_(255)
        first, total = rows or (0, x.shape[0])
        if x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        if self.crop_padding:
            x = self._random_crop(x, generator, first, total)
        if self.flip:
            flipped = torch.rand(total, generator=generator, device=x.device)[first : first + x.shape[0]] < 0.5
            x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _random_crop(self, x: torch.Tensor, generator: torch.Generator | None, first: int, total: int) -> torch.Tensor:
        p, size, n = self.crop_padding, self.size, x.shape[0]
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
        dy, dx = torch.randint(0, 2 * p + 1, (2, total, 1), generator=generator, device=x.device)[:, first : first + n]
        span = torch.arange(size, device=x.device)
        rows, cols = (span + dy)[:, :, None], (span + dx)[:, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


class UnreadableImage(Exception):
    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"{path} ({type(cause).__name__}: {cause})")
        self.path = path


def load_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader, with the file named when it cannot be decoded."""
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except PIL_ERRORS as exc:
        raise UnreadableImage(path, exc) from None


class TransformedSubset(Dataset):
    """A subset of a PIL-based dataset with its own transform (train and val differ).

    An image that passed the start-up check but cannot be decoded (a truncated JPEG) stops the
    run naming the file, or with ``bad_images: skip`` is replaced by the next image and counted.
    """

    def __init__(self, base: Dataset, indices: list[int], transform, bad_images: str = "error") -> None:
        self.subset = Subset(base, indices)
        self.transform, self.bad_images = transform, bad_images
        self.skipped: list[str] = []  # in this process (each loader worker keeps its own)

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, index: int):
        for offset in range(len(self.subset)):
            try:
                image, label = self.subset[(index + offset) % len(self.subset)]
                return self._transform(image, index), label
            except UnreadableImage as exc:
                if self.bad_images == "error":
                    raise DataError(f"imagefolder: cannot read image {exc}; remove it or set data.bad_images=skip") from None
                self.skipped.append(exc.path)
                say(f"warning: skipping unreadable image {exc} ({len(self.skipped)} skipped so far in this process); the next "
                    "image takes its place", every_rank=True)  # fmt: skip
        raise DataError("imagefolder: no image of this split can be read")

    def _transform(self, image: Image.Image, index: int) -> torch.Tensor:
        """Training samples come as SampleKeys: their crops and flips are a function of (seed, epoch, index)."""
        if not isinstance(index, SampleKey):
            return self.transform(image)  # validation and test: nothing is drawn
        # torchvision's transforms draw from the global CPU generator: seeded per sample, and put back after, so this
        # process's own stream (a loader worker's, or the model's dropout with no workers) goes on as it was.
        # (The generator itself, not torch.manual_seed, which also seeds every accelerator: 4 us, not 70.)
        rng = torch.default_generator
        state = rng.get_state()
        rng.manual_seed(index.draw_seed)
        try:
            return self.transform(image)
        finally:
            rng.set_state(state)


def _missing_data(name: str, where: list[Path], how: str) -> DataError:
    places = ", ".join(str(p) for p in where)
    return DataError(f"data set '{name}' not found (looked in {places}) and it could not be downloaded. {how}")


def install_fashion_mnist_from_system(raw_dir: Path) -> bool:
    """Decompress Debian's dataset-fashion-mnist files into torchvision's layout under data.root."""
    sources = sorted(FASHION_MNIST_SYSTEM_DIR.glob("*-ubyte.gz"))
    if len(sources) < 4:
        return False
    raw_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = raw_dir / source.name.removesuffix(".gz")
        if target.exists():
            continue
        # Every rank may do this at once: decompress privately, then rename atomically.
        with tempfile.TemporaryDirectory(dir=raw_dir) as scratch:
            extracted = Path(extract_archive(str(source), scratch))
            os.replace(extracted, target)
    return True


def _load_mnist_like(cls: type, cfg: DataConfig, train: bool) -> RawImages:
    root = Path(cfg.root)
    raw_dir = root / cls.__name__ / "raw"
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        with one_at_a_time(root):
            installed = cls is datasets.FashionMNIST and install_fashion_mnist_from_system(raw_dir)
            ds = _construct_or_download(cls, root, train, installed, cfg.name, raw_dir)
    return RawImages(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


def _construct_or_download(cls, root: Path, train: bool, installed: bool, name: str, raw_dir: Path):
    if installed:
        return cls(str(root), train=train, download=False)
    try:
        return cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means "not available here"
        if name == "fashion_mnist":
            hint, places = "Install Debian's package (apt-get install dataset-fashion-mnist)", [raw_dir, FASHION_MNIST_SYSTEM_DIR]
        else:
            hint, places = "Download it where there is internet access", [raw_dir]
        raise _missing_data(name, places, f"{hint} or put the idx files under {raw_dir} ({type(exc).__name__}).") from None


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's python batches are pickles. torchvision checks their md5 before unpickling them; a
    mirror's copy has no checksum to check, so it may build numpy arrays and plain containers only,
    never call anything else (no library offers this restriction for numpy pickles)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }  # fmt: skip  (protocol-2 pickles rebuild bytes with _codecs.encode)

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batches(folder: Path, files: list[list[str]]) -> tuple[np.ndarray, list[int]]:
    arrays, labels = [], []
    for name, _md5 in files:
        with open(folder / name, "rb") as handle:
            entry = _ArraysOnly(handle, encoding="latin1").load()
        arrays.append(entry["data"])
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return np.vstack(arrays).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar(cls: type, cfg: DataConfig, train: bool) -> RawImages:
    root = Path(cfg.root)
    url = cls.url if cfg.mirror is None else f"{cfg.mirror.rstrip('/')}/{cls.filename}"
    with one_at_a_time(root):
        try:
            if cfg.mirror is None:
                try:
                    ds = cls(str(root), train=train, download=False)  # one md5 pass over the batches
                except RuntimeError:
                    ds = cls(str(root), train=train, download=True)  # torchvision downloads and checks every md5
                pixels, labels = ds.data, ds.targets
            else:
                if not (root / cls.base_folder).is_dir():
                    download_and_extract_archive(url, str(root), filename=cls.filename)
                pixels, labels = _read_cifar_batches(root / cls.base_folder, cls.train_list if train else cls.test_list)
        except Exception as exc:  # noqa: BLE001 - any download or read failure means "not available here"
            raise _missing_data(
                cfg.name,
                [root / cls.base_folder],
                f"Tried {url} ({type(exc).__name__}: {exc}). Download the python version of {cfg.name.upper()} and unpack it "
                f"under data.root ({root}), or set data.mirror to a server that has {cls.filename}.",
            ) from None
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    return RawImages(images, torch.tensor(labels, dtype=torch.long))


def _load_digits(cfg: DataConfig, train: bool) -> RawImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    # scikit-learn ships one split: hold out a fixed 20% as the test set, whatever the run's seed.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    n_test = len(labels) // 5
    rows = order[n_test:] if train else order[:n_test]
    return RawImages(images[rows].contiguous(), labels[rows].contiguous())


def _load_fake(cfg: DataConfig, train: bool) -> RawImages:
    """Random images and labels (like torchvision's FakeData: no download, for speed tests and smoke runs).

    Drawn in one call: FakeData seeds and converts each image through PIL, ~1 ms an image.
    """
    size = cfg.fake_image_size
    count = cfg.fake_train_size if train else max(1, cfg.fake_train_size // 5)
    generator = torch.Generator().manual_seed(cfg.split_seed + (0 if train else 10**6))
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    labels = torch.randperm(count, generator=generator) % 10  # every class present from 10 images up
    return RawImages(images, labels)


def limited(labels: torch.Tensor | None, n: int, limit: int | None, seed: int) -> list[int]:
    """The rows ``data.limit_train`` keeps: a seeded random subset, stratified where the labels are known
    (scikit-learn's split keeps each class's share); all rows when there is no limit."""
    if not limit or limit >= n:
        return list(range(n))
    if labels is not None:
        from sklearn.model_selection import train_test_split

        try:
            keep, _ = train_test_split(np.arange(n), train_size=limit, stratify=labels.numpy(), random_state=seed)
            return sorted(keep.tolist())
        except ValueError:
            pass  # too few rows for every class (or a class of one): a plain random subset
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


def warn_missing_classes(name: str, train: torch.Tensor, **others: torch.Tensor | None) -> None:
    """A training split without classes that validation or test have (a small data.limit_train, a skewed split)."""
    have = set(train.unique().tolist())
    for split, labels in others.items():
        missing = sorted(set(labels.unique().tolist()) - have) if labels is not None and len(labels) else []
        if missing:
            say(
                f"warning: {name}'s training split has no sample of class(es) {missing[:10]} that its {split} split has "
                "(raise data.limit_train, or check the data)"
            )


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(n * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _crop_padding(cfg: DataConfig, size: int) -> int:
    return cfg.crop_padding if cfg.crop_padding is not None else max(1, size // 8)


def _transforms(cfg: DataConfig, size: int, mean, std, flip_ok: bool, from_pil: bool):
    head = [v2.PILToTensor()] if from_pil else []
    if cfg.image_size:
        head.append(v2.Resize((cfg.image_size, cfg.image_size), antialias=True))
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    augment = []
    if cfg.augment and _crop_padding(cfg, size):
        augment.append(v2.RandomCrop(size, padding=_crop_padding(cfg, size), padding_mode="reflect"))
    if cfg.augment and flip_ok:
        augment.append(v2.RandomHorizontalFlip())
    return v2.Compose(head + augment + tail), v2.Compose(head + tail)


def _stats(cfg: DataConfig, images: torch.Tensor | None, channels: int):
    if cfg.normalize == "imagenet" or images is None:
        if channels == 1:
            return (0.449,), (0.226,)
        return IMAGENET_MEAN, IMAGENET_STD
    pixels = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())


def _tensor_bundle(cfg: DataConfig, load: Callable[[DataConfig, bool], RawImages], flip: bool) -> DataBundle:
    train_raw, test_raw = load(cfg, True), load(cfg, False)
    if cfg.limit_train:
        keep = torch.tensor(limited(train_raw.labels, len(train_raw.labels), cfg.limit_train, cfg.split_seed))
        train_raw = RawImages(train_raw.images[keep], train_raw.labels[keep])
    channels, size = train_raw.images.shape[1], cfg.image_size or train_raw.images.shape[-1]
    mean, std = _stats(cfg, train_raw.images, channels)
    augment = dict(crop_padding=_crop_padding(cfg, size), flip=flip) if cfg.augment else {}
    train_idx, val_idx = _split_indices(len(train_raw.labels), cfg.val_fraction, cfg.split_seed)
    num_classes = int(max(train_raw.labels.max(), test_raw.labels.max())) + 1
    warn_missing_classes(cfg.name, train_raw.labels[train_idx], validation=train_raw.labels[val_idx], test=test_raw.labels)
    return DataBundle(
        train=TensorImageDataset(train_raw, torch.tensor(train_idx)),
        val=TensorImageDataset(train_raw, torch.tensor(val_idx)) if val_idx else None,
        test=TensorImageDataset(test_raw, None),
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        train_transform=BatchTransform(mean, std, size, **augment),
        eval_transform=BatchTransform(mean, std, size),
    )


def _readable(path: str, bad: list[str]) -> bool:
    """An image file whose structure PIL can walk without decoding (catches non-images and truncated PNGs)."""
    if not datasets.folder.has_file_allowed_extension(path, IMAGE_SUFFIXES):
        return False
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except PIL_ERRORS as exc:
        bad.append(f"{path} ({type(exc).__name__}: {exc})")
        return False


def _image_folder(path: Path, bad_images: str) -> datasets.ImageFolder:
    if not path.is_dir():
        raise DataError(f"imagefolder: directory not found: {path} (set data.root to a folder of class sub-folders)")
    empty = [d.name for d in sorted(path.iterdir()) if d.is_dir() and not any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.rglob("*"))]
    if empty:
        raise DataError(f"imagefolder: class folder(s) with no images under {path}: {', '.join(empty)}")
    bad: list[str] = []
    try:
        folder = datasets.ImageFolder(str(path), loader=load_rgb, is_valid_file=lambda f: _readable(f, bad))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"imagefolder: cannot read {path}: {exc}") from None
    if bad and bad_images == "error":
        raise DataError(f"imagefolder: {len(bad)} unreadable image(s) under {path}: {'; '.join(bad[:3])}. "
                        "Remove them, or set data.bad_images=skip to train without them")  # fmt: skip
    if bad:
        say(f"warning: skipping {len(bad)} unreadable image(s) under {path}: {'; '.join(bad[:3])}")
    return folder


def imagefolder(cfg: DataConfig) -> DataBundle:
    """A folder of class sub-folders (optionally train/ val/ test/), decoded by PIL image by image."""
    root = Path(cfg.root)
    has_splits = (root / "train").is_dir()
    full = _image_folder(root / "train" if has_splits else root, cfg.bad_images)
    val_dir = next((root / n for n in ("val", "valid", "validation") if (root / n).is_dir()), None) if has_splits else None
    val_dir_set = _image_folder(val_dir, cfg.bad_images) if val_dir else None
    test = _image_folder(root / "test", cfg.bad_images) if has_splits and (root / "test").is_dir() else None
    size = cfg.image_size or 224
    targets = torch.tensor(full.targets)
    keep = limited(targets, len(full), cfg.limit_train, cfg.split_seed)
    train_pos, val_pos = _split_indices(len(keep), 0.0 if val_dir_set else cfg.val_fraction, cfg.split_seed)
    train_idx, val_idx = [keep[i] for i in train_pos], [keep[i] for i in val_pos]
    val_labels = torch.tensor(val_dir_set.targets) if val_dir_set is not None else targets[val_idx]
    test_labels = torch.tensor(test.targets) if test is not None else None
    warn_missing_classes("imagefolder", targets[train_idx], validation=val_labels, test=test_labels)
    channels = 3
    mean, std = _stats(cfg, None, channels)
    sized = cfg.model_copy(update={"image_size": size})
    train_tf, eval_tf = _transforms(sized, size, mean, std, True, from_pil=True)
    subset = functools.partial(TransformedSubset, bad_images=cfg.bad_images)
    if val_dir_set is not None:
        val = subset(val_dir_set, list(range(len(val_dir_set))), eval_tf)
    else:
        val = subset(full, val_idx, eval_tf) if val_idx else None
    test_ds = subset(test, list(range(len(test))), eval_tf) if test is not None else None
    return DataBundle(subset(full, train_idx, train_tf), val, test_ds, len(full.classes), channels, size)


# The built-ins registered in registry.DATASETS: one function each, so a name cannot reach another's loader.
def fashion_mnist(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, functools.partial(_load_mnist_like, datasets.FashionMNIST), flip=True)


def mnist(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, functools.partial(_load_mnist_like, datasets.MNIST), flip=False)


def cifar10(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, functools.partial(_load_cifar, datasets.CIFAR10), flip=True)


def cifar100(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, functools.partial(_load_cifar, datasets.CIFAR100), flip=True)


def digits(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, _load_digits, flip=False)


def fake(cfg: DataConfig) -> DataBundle:
    return _tensor_bundle(cfg, _load_fake, flip=True)


def build_data(cfg: DataConfig) -> DataBundle:
    """Resolve the configured data set offline-first; raise DataError with a fix if it is missing."""
    if cfg.name in registry.DATASETS:
        if cfg.kwargs:
            raise DataError(f"data.kwargs: the built-in data set '{cfg.name}' takes its options from data.* keys, not data.kwargs")
        bundle = registry.resolve("data.name", cfg.name, registry.DATASETS)(cfg)
    else:
        factory = registry.resolve("data.name", cfg.name, registry.DATASETS)
        bundle = user_bundle(cfg, registry.call_factory("data.name", cfg.name, factory, {"root": cfg.root, **cfg.kwargs}))
    if len(bundle.train) == 0:
        raise DataError(f"data set '{cfg.name}' has no training samples after the validation split")
    bundle.workers = loader_workers(cfg.num_workers, holds_tensors(bundle.train))
    return bundle


def holds_tensors(split: Dataset) -> bool:
    """A split whose samples are rows of tensors already in memory (a TensorDataset, through any Subsets)."""
    while isinstance(split, Subset):
        split = split.dataset
    return isinstance(split, TensorDataset | TensorImageDataset)


def user_bundle(cfg: DataConfig, found: object) -> DataBundle:
    """A user's data set mapping, checked, as a DataBundle: val carved from train when it has none."""
    expected = "a mapping with 'train' (a Dataset of (input, target) pairs), 'num_classes', optional 'val', 'test', 'in_channels'"
    if not isinstance(found, Mapping) or "train" not in found or "num_classes" not in found:
        raise DataError(f"data.name: {cfg.name} returned {_describe(found)}, expected {expected}")
    unknown = sorted(set(found) - set(USER_KEYS))
    if unknown:
        raise DataError(f"data.name: {cfg.name} returned unknown key(s) {unknown}; expected {expected}")
    splits = {name: found.get(name) for name in ("train", "val", "test")}
    for name, split in splits.items():
        if split is not None and not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise DataError(f"data.name: {cfg.name} returned {_describe(split)} as '{name}', expected a torch Dataset")
    num_classes = found["num_classes"]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise DataError(f"data.name: {cfg.name} returned num_classes={num_classes!r}, expected a positive int (the model's output width)")
    train = splits["train"]
    if len(train) == 0:
        raise DataError(f"data.name: {cfg.name} returned an empty 'train' split")
    first = train[0]
    if not isinstance(first, tuple | list) or len(first) != 2:
        raise DataError(f"data.name: {cfg.name}'s train[0] is {_describe(first)}, expected an (input, target) pair")
    if cfg.limit_train:
        train = Subset(train, limited(None, len(train), cfg.limit_train, cfg.split_seed))  # labels unknown: random
    val = splits["val"]
    if val is None and cfg.val_fraction:
        train_idx, val_idx = _split_indices(len(train), cfg.val_fraction, cfg.split_seed)
        train, val = Subset(train, train_idx), Subset(train, val_idx)
    in_channels = found.get("in_channels")
    if in_channels is None:
        shape = torch.as_tensor(first[0]).shape
        in_channels = int(shape[0]) if len(shape) else 1
    return DataBundle(train, val, splits["test"], num_classes, int(in_channels), image_size=None)


def _describe(value: object) -> str:
    return f"a {type(value).__name__}" + (f" with keys {sorted(map(str, value))}" if isinstance(value, Mapping) else "")


def loader_workers(num_workers: int | str, in_memory: bool) -> int:
    """``data.num_workers``, with ``auto`` resolved for this process."""
    if num_workers != "auto":
        return int(num_workers)
    if in_memory:
        return 0  # a worker would only copy tensors that are already decoded
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // local_processes)
