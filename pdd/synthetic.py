"""Synthetic set files: what a trial saves and what `pdd evaluate` and `blend` read.

Two formats are read, so sets made elsewhere compare on equal terms:
- a tensor file (.pt): {"images": float [N,C,H,W] normalised with the dataset's mean/std, "labels": int64 [N]};
  a trial's file also records that mean and std in "meta", so a report can show its images without the dataset;
- a folder of PNGs per class: <dir>/<class index or class name>/*.png, pixel values in [0, 1], grayscale for a
  one-channel dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pdd.data import Normalization
from pdd.errors import PddError
from pdd.io import atomic_path


def save_synthetic(path: Path, images: Tensor, labels: Tensor, meta: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"images": images.detach().cpu(), "labels": labels.cpu(), "meta": meta}, tmp)


def save_grid(path: Path, images: Tensor, labels: Tensor, normalization: Normalization) -> None:
    """One row per class, as the paper's Fig. 2."""
    from torchvision.utils import make_grid

    order = torch.argsort(labels.cpu(), stable=True)
    per_class = int(torch.bincount(labels.cpu()).max())
    grid = make_grid(normalization.denormalize(images.detach().cpu()[order]), nrow=per_class, padding=2,
                     pad_value=1.0)
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels.squeeze()).save(tmp, format="PNG")


def load_synthetic(path: str | os.PathLike, image_shape: tuple[int, int, int], normalization: Normalization,
                   classes: tuple[str, ...] | None = None) -> tuple[Tensor, Tensor]:
    """(normalised images, labels) from a tensor file or a PNG folder, checked against the dataset's shape.

    PNGs are normalised with the dataset's `normalization`, as a tensor file's images already are."""
    path = Path(path)
    if not path.exists():
        raise PddError(f"synthetic set not found: {path}")
    if path.is_dir():
        images, labels = _load_png_folder(path, classes, image_shape[0], normalization)
    else:
        images, labels = read_synthetic_file(path)[:2]
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise PddError(f"synthetic set {path} has images of shape {tuple(images.shape[1:])}, "
                       f"the dataset's are {tuple(image_shape)}")
    if len(images) != len(labels) or len(images) == 0:
        raise PddError(f"synthetic set {path} has {len(images)} images and {len(labels)} labels")
    if not torch.isfinite(images).all():
        raise PddError(f"synthetic set {path} contains NaN or infinite pixels")
    return images.float(), labels.long()


def read_synthetic_file(path: Path) -> tuple[Tensor, Tensor, dict]:
    """(images, labels, meta) of a tensor file as stored, unchecked; meta is {} for a set made elsewhere."""
    expected = f"cannot read synthetic set {path}: expected a torch file of a dict with 'images' and 'labels'"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a foreign or truncated file
        raise PddError(f"{expected} ({type(error).__name__})") from None
    if not isinstance(payload, dict) or not {"images", "labels"} <= payload.keys():
        raise PddError(f"{expected}, found {type(payload).__name__}"
                       + (f" with keys {', '.join(map(str, payload))}" if isinstance(payload, dict) else ""))
    return payload["images"], payload["labels"], payload.get("meta", {})


def _load_png_folder(path: Path, classes: tuple[str, ...] | None, channels: int,
                     normalization: Normalization) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        label = _class_index(folder.name, classes, path)
        for file in sorted(folder.glob("*.png")):
            try:
                pixels = np.asarray(Image.open(file).convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
            except OSError as error:
                raise PddError(f"cannot decode {file}: {error}") from None
            images.append(torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1).copy()).permute(2, 0, 1))
            labels.append(label)
    if not images:
        raise PddError(f"no PNG images in class folders under {path}")
    return normalization.normalize(torch.stack(images)), torch.tensor(labels)


def _class_index(name: str, classes: tuple[str, ...] | None, root: Path) -> int:
    if name.isdigit():
        return int(name)
    if classes is not None and name in classes:
        return classes.index(name)
    raise PddError(f"class folder '{name}' in {root} is neither a class index nor one of the dataset's classes")
