"""Small generated copies of each named dataset in its own file format (idx, SVHN .mat, CIFAR python batches)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from pdd.sources import IDX_FILES, SOURCES, Dataset

# The folder name each layout's copy gets: for idx files the name tells MNIST from Fashion-MNIST.
FOLDER_NAMES = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "svhn": "svhn-copy",
                "mnist": "mnist", "fashion-mnist": "fashion-mnist"}


def pixels(dataset: Dataset, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, C, H, W] images whose brightness depends on the class, and their int64 labels, class-interleaved."""
    classes = len(dataset.classes)
    labels = np.tile(np.arange(classes), per_class)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 64, (len(labels), dataset.channels, dataset.size, dataset.size))
    images = (noise + (labels * 190 // max(classes - 1, 1))[:, None, None, None]).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_layout(key: str, folder: Path, train_per_class: int = 3, test_per_class: int = 2,
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write dataset `key`'s files into `folder`; returns split -> (images [N, C, H, W], labels) as written."""
    dataset = SOURCES[key]
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": pixels(dataset, train_per_class, 0), "test": pixels(dataset, test_per_class, 1)}
    if dataset.layout.kind == "idx":
        for split, (images, labels) in splits.items():
            images_name, labels_name = IDX_FILES[split]
            suffix = ".gz" if split == "train" else ""  # both forms are read
            write_idx(folder / f"{images_name}{suffix}", images[:, 0])
            write_idx(folder / f"{labels_name}{suffix}", labels.astype(np.uint8))
    elif key == "svhn":
        import scipy.io

        for split, (images, labels) in splits.items():
            y = np.where(labels == 0, 10, labels)[:, None]  # SVHN stores the digit 0 as 10
            scipy.io.savemat(str(folder / f"{split}_32x32.mat"), {"X": images.transpose(2, 3, 1, 0), "y": y})
    else:
        label_key = b"labels" if key == "cifar10" else b"fine_labels"
        batches = {"train": ["train"], "test": ["test"]}
        if key == "cifar10":
            batches = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        for split, names in batches.items():
            images, labels = splits[split]
            for part, name in zip(np.array_split(np.arange(len(labels)), len(names)), names, strict=True):
                batch = {b"data": images[part].reshape(len(part), -1), label_key: labels[part].tolist()}
                with (folder / name).open("wb") as f:
                    pickle.dump(batch, f)
    return splits


def write_gray_image_folder(root: Path, classes: int = 3, train: int = 4, test: int = 2, size: int = 28) -> Path:
    """An ImageFolder tree of 28x28 grayscale PNGs."""
    rng = np.random.default_rng(2)
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(count):
                pixels_ = (rng.integers(0, 80, (size, size)) + 80 * c).astype(np.uint8)
                Image.fromarray(pixels_, mode="L").save(root / split / f"class{c}" / f"{i}.png")
    return root
