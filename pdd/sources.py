"""The named datasets distillation papers report on: each one's facts and how its own files are read.

One ``Dataset`` entry per name carries what pdd needs to know before reading a pixel (channels, size, class names,
test-set size, normalisation statistics) and its file layout: the four MNIST-style idx files, SVHN's .mat files or
CIFAR's python batches. ``--data NAME`` reads the first complete local copy (the dataset's system folders, such as
Debian's ``dataset-fashion-mnist`` package, then torchvision's folder in the cache) and downloads with torchvision
only when there is none. ``--data DIR`` reads a folder holding one layout's files; a folder of idx files of unknown
origin (not named after MNIST or Fashion-MNIST) gets digit class names and the statistics of its training split.

Files are parsed here with numpy (idx), scipy.io (SVHN) and pickle (CIFAR) rather than through torchvision's
dataset classes, which refuse any copy whose md5 differs from the release's.
"""

from __future__ import annotations

import gzip
import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdd.data import CACHE_FORMAT, SPLITS, ImageSpec, Normalization, _hash_files, _one_line
from pdd.errors import DataError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 [N, C, H, W], int64 [N])


@dataclass(frozen=True)
class Layout:
    """How one family of datasets stores its splits in a folder."""

    kind: str  # for messages: "idx", "SVHN .mat", "CIFAR python"
    files: tuple[str, ...]  # what must be present (an idx file may also be gzipped)
    read: Callable[[Path], Arrays]

    def find(self, folder: Path, name: str) -> Path | None:
        candidates = (name, f"{name}.gz") if self.kind == "idx" else (name,)
        return next((folder / c for c in candidates if (folder / c).is_file()), None)

    def missing(self, folder: Path) -> list[str]:
        return [name for name in self.files if self.find(folder, name) is None]

    def paths(self, folder: Path) -> list[Path]:
        return [path for name in self.files if (path := self.find(folder, name)) is not None]


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format: 0, 0, type 0x08 = uint8, rank, big-endian int32 sizes, data), maybe
    gzipped."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read idx file {path}: {_one_line(e)}") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    rank = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">i4", count=rank, offset=4))
    offset = 4 + 4 * rank
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"idx file {path} holds {len(data) - offset} bytes of data, its header promises {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()  # writable, as torch wants


IDX_FILES = {split: (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
             for split, prefix in (("train", "train"), ("test", "t10k"))}


def _read_idx_folder(folder: Path) -> Arrays:
    arrays = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images_path, labels_path = (IDX.find(folder, name) for name in (images_name, labels_name))
        images, labels = _read_idx(images_path), _read_idx(labels_path)  # type: ignore[arg-type]  # checked present
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{images_path} must hold images [N, H, W] and {labels_path} labels [N]")
        if len(labels) != len(images):
            raise DataError(f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images")
        arrays[split] = (images[:, None], labels.astype(np.int64))
    return arrays


def _read_svhn(folder: Path) -> Arrays:
    """SVHN's cropped digits: X [32, 32, 3, N] and y [N, 1] with 10 for the digit 0 (remapped, as torchvision does)."""
    import scipy.io

    arrays = {}
    for split in SPLITS:
        path = folder / f"{split}_32x32.mat"
        try:
            mat = scipy.io.loadmat(str(path))
            images, labels = mat["X"], mat["y"]
        except (OSError, ValueError, KeyError, NotImplementedError) as e:
            raise DataError(f"cannot read SVHN file {path}: {_one_line(e)}") from e
        labels = labels.astype(np.int64).reshape(-1) % 10
        if images.ndim != 4 or images.shape[-1] != len(labels):
            raise DataError(f"{path}: X must be [H, W, C, N] with one label each in y")
        arrays[split] = (np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels)
    return arrays


def _cifar_reader(batches: dict[str, tuple[str, ...]], label_key: bytes) -> Callable[[Path], Arrays]:
    """CIFAR's python release: pickled dicts with b"data" [N, 3072] (R, G, B planes of 32x32) and the labels."""

    def read(folder: Path) -> Arrays:
        arrays = {}
        for split, names in batches.items():
            images, labels = [], []
            for name in names:
                try:
                    with (folder / name).open("rb") as f:
                        batch = pickle.load(f, encoding="bytes")
                    images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    labels.append(np.asarray(batch[label_key], dtype=np.int64))
                except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
                    raise DataError(f"cannot read CIFAR batch {folder / name}: {_one_line(e)}") from e
                if len(labels[-1]) != len(images[-1]):
                    raise DataError(f"{folder / name} has {len(labels[-1])} labels for {len(images[-1])} images")
            arrays[split] = (np.concatenate(images), np.concatenate(labels))
        return arrays

    return read


IDX = Layout("idx", tuple(name for pair in IDX_FILES.values() for name in pair), _read_idx_folder)
SVHN = Layout("SVHN .mat", ("train_32x32.mat", "test_32x32.mat"), _read_svhn)
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10 = Layout("CIFAR-10 python", (*CIFAR10_BATCHES["train"], "test_batch"),
                 _cifar_reader(CIFAR10_BATCHES, b"labels"))
CIFAR100 = Layout("CIFAR-100 python", ("train", "test"),
                  _cifar_reader({"train": ("train",), "test": ("test",)}, b"fine_labels"))

CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm""".split())
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Dataset:
    """One named dataset: its facts, its layout, and where its files live."""

    key: str  # the --data name
    name: str  # human name for reports
    channels: int
    size: int
    classes: tuple[str, ...]
    test_images: int
    train_per_class: int | None  # training images of each class (None: they differ), for Table 1's ratio column
    normalization: Normalization
    layout: Layout
    torchvision: str  # the torchvision.datasets class that downloads it
    subdir: str  # where that download leaves the files, under torchvision's root <cache>/torchvision
    system: tuple[Path, ...] = ()  # folders an OS package installs it to, searched first
    hint: str = ""  # how else to get it offline

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(self.channels, self.size, len(self.classes), self.test_images)

    def download(self, root: Path) -> None:
        import torchvision  # only downloads need it; keeps plain loads light

        cls = getattr(torchvision.datasets, self.torchvision)
        if self.torchvision == "SVHN":
            for split in SPLITS:
                cls(str(root), split=split, download=True)
        else:
            cls(str(root), train=True, download=True)  # the others fetch both splits at once


# Normalisation constants as published and used by the DC/DM reference (utils.get_dataset); for Fashion-MNIST the
# widely quoted 0.2860 (the reference rounds the same mean to 0.2861).
SOURCES: dict[str, Dataset] = {entry.key: entry for entry in (
    Dataset("cifar10", "CIFAR-10", 3, 32,
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), 10_000, 5000,
            Normalization((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), CIFAR10, "CIFAR10",
            "cifar-10-batches-py"),
    Dataset("cifar100", "CIFAR-100", 3, 32, CIFAR100_CLASSES, 10_000, 500,
            Normalization((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)), CIFAR100, "CIFAR100",
            "cifar-100-python"),
    Dataset("svhn", "SVHN", 3, 32, DIGITS, 26_032, None,
            Normalization((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)), SVHN, "SVHN", "."),
    Dataset("mnist", "MNIST", 1, 28, DIGITS, 10_000, None, Normalization((0.1307,), (0.3081,)), IDX, "MNIST",
            "MNIST/raw"),
    Dataset("fashion-mnist", "Fashion-MNIST", 1, 28,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            10_000, 6000, Normalization((0.2860,), (0.3530,)), IDX, "FashionMNIST", "FashionMNIST/raw",
            system=(Path("/usr/share/datasets/fashion-mnist"),),
            hint="; on Debian or Ubuntu: apt-get install dataset-fashion-mnist"),
)}
LAYOUTS = (IDX, SVHN, CIFAR10, CIFAR100)


class FileSource:
    """A dataset read from one folder in its layout; `dataset` None: idx files of unknown origin."""

    def __init__(self, folder: Path, layout: Layout, dataset: Dataset | None):
        self.folder, self.layout, self.dataset = folder, layout, dataset
        self.name = dataset.name if dataset else folder.name
        self.key = f"{layout.kind}:{folder}"
        self.normalization = dataset.normalization if dataset else None
        self.reading = dataset.key if dataset else ""

    def _files(self) -> list[tuple[str, Path]]:
        return [(path.name, path) for path in self.layout.paths(self.folder)]

    def stat_signature(self) -> str:
        stats = [(rel, path.stat()) for rel, path in self._files()]
        return ";".join(f"{rel}:{st.st_size}:{st.st_mtime_ns}" for rel, st in stats)

    def content_hash(self) -> str:
        return _hash_files(self._files())

    def decode(self) -> dict[str, Any]:
        arrays = self.layout.read(self.folder)
        if not all(len(labels) for _, labels in arrays.values()):
            raise DataError(f"{self.name} in {self.folder}: a split holds no images")
        num_classes = len(self.dataset.classes) if self.dataset else int(arrays["train"][1].max(initial=-1)) + 1
        classes = self.dataset.classes if self.dataset else tuple(str(c) for c in range(num_classes))
        payload: dict[str, Any] = {"format": CACHE_FORMAT, "classes": list(classes)}
        for split, (images, labels) in arrays.items():
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise DataError(f"{self.name} in {self.folder}: {split} labels must lie in 0..{num_classes - 1}")
            if self.dataset and images.shape[1:] != (self.dataset.channels, self.dataset.size, self.dataset.size):
                raise DataError(f"{self.name} in {self.folder}: {split} images are {list(images.shape[1:])}, "
                                f"expected [{self.dataset.channels}, {self.dataset.size}, {self.dataset.size}]")
            payload[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(images))
            payload[f"{split}_labels"] = torch.from_numpy(labels)
        return payload


class NamedSource(FileSource):
    """A named dataset: its first complete local folder, else a torchvision download into the cache."""

    def __init__(self, dataset: Dataset, cache: Path):
        root = cache / "torchvision"
        folders = [*dataset.system, root / dataset.subdir]
        folder = next((f for f in folders if not dataset.layout.missing(f)), None)
        if folder is None:
            try:
                dataset.download(root)
            except (OSError, RuntimeError) as e:
                where = " or ".join(str(f) for f in folders)
                raise DataError(
                    f"cannot download {dataset.name} (no internet?); pass a local copy with --data PATH or PDD_DATA, "
                    f"or put {', '.join(dataset.layout.files)} in {where}{dataset.hint}"
                ) from e
            folder = root / dataset.subdir
            if dataset.layout.missing(folder):
                raise DataError(f"torchvision's {dataset.name} download left no "
                                f"{', '.join(dataset.layout.missing(folder))} in {folder}")
        super().__init__(folder, dataset.layout, dataset)


def dataset_named(names: Iterable[str]) -> Dataset | None:
    """The named dataset that all these report names are (a copy's qualifier, as in "CIFAR-10 (JPEG copy)",
    dropped); None for data of unknown origin or a mix."""
    bases = {name.split(" (", 1)[0] for name in names}
    base = bases.pop() if len(bases) == 1 else None
    return next((entry for entry in SOURCES.values() if entry.name == base), None)


def folder_source(folder: Path) -> FileSource:
    """A folder holding one layout's files; the dataset is the only one of that layout or the one it is named after."""
    for layout in LAYOUTS:
        missing = layout.missing(folder)
        if not missing:
            return FileSource(folder, layout, _dataset_of(folder, layout))
        if len(missing) < len(layout.files):
            raise DataError(f"{folder} holds only some of the {layout.kind} files: {', '.join(missing)} "
                            f"{'(or .gz) ' if layout.kind == 'idx' else ''}missing")
    raise DataError(f"no train/ and test/ folders in {folder}, nor the files of a named dataset "
                    f"({', '.join(layout.kind for layout in LAYOUTS)})")


def _dataset_of(folder: Path, layout: Layout) -> Dataset | None:
    candidates = [entry for entry in SOURCES.values() if entry.layout is layout]
    if len(candidates) == 1:
        return candidates[0]
    # torchvision keeps idx files in <Name>/raw; Debian in .../fashion-mnist
    name = _plain(folder.parent.name if folder.name == "raw" else folder.name)
    return next((entry for entry in candidates if name in {_plain(entry.key), _plain(entry.torchvision)}), None)


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())
