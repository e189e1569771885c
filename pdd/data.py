"""Datasets: loading from four kinds of source, a uint8 cache, normalisation, the train/val split and T'.

A source is one string:
- a named dataset (``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``; pdd.sources): read from a
  local copy of its files, else downloaded by torchvision into the cache dir;
- a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive holding one ImageFolder tree (``<root>/{train,test}/<class>/<image>``),
  read in place without extracting it;
- a directory that is such a tree: ``<dir>/train/<class>/*.{png,jpg,jpeg}`` and ``<dir>/test/<class>/...``;
- a directory holding one named dataset's files in their own layout (the four MNIST-style idx files, SVHN's
  .mat files, CIFAR's python batches).

Classes are the sorted class folder names, which for CIFAR-10 is its label order. Images within a class are
taken in file-name order. Grayscale images (PIL modes L, 1, LA) keep one channel, all others become RGB; every
image of a dataset must then have the same channel count and the same square size.

Each dataset normalises with its own per-channel statistics: a named dataset's published constants, those of
the dataset a known copy holds (KNOWN_NAMES), else the mean and std of its training split, computed once and
cached with the pixels.

Decoded images are cached as uint8 tensors in ``<cache>/images-<sha256>.pt``, keyed by the sha256 of the source's
content, so an edited dataset never reuses stale pixels; a source that reads the same bytes as a named dataset
(its class names and statistics) adds that name, ``images-<sha256>-<name>.pt``. Hashing the content costs about
as much as reading it, so the hash is memoised in ``<cache>/content-hashes.json`` under a cheap stat signature
(sizes and mtimes) of the source; a warm load is then a few stats plus a memory-mapped ``torch.load``. The cache
dir is the ``cache_dir`` argument, else ``$PDD_CACHE``, else ``~/.cache/pdd``.

All randomness (split, subset) comes from local ``torch.Generator``s seeded by the caller; the global RNG is
never touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from pdd.errors import DataError
from pdd.io import atomic_path, read_cache_file

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Well-known copies, matched against the start of the folder or archive name: their human name and the named
# dataset whose published statistics they normalise with.
KNOWN_NAMES = {"cifar10-jpeg": ("CIFAR-10 (JPEG copy)", "cifar10")}
GRAYSCALE_MODES = ("L", "1", "LA")

# Bump when the cached payload changes meaning; older files are then rebuilt in place.
CACHE_FORMAT = 2
HASH_INDEX = "content-hashes.json"

# split -> class -> [(where, encoded image bytes)], each list in file-name order; "where" names the file in errors.
_Tree = dict[str, dict[str, list[tuple[str, bytes]]]]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of pixel values in [0, 1]: x -> (x/255 - mean)/std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: torch.Tensor, chunk: int = 4096) -> Normalization:
        """The statistics of uint8 images [N, C, H, W], summed in float64 chunks to keep memory flat."""
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for start in range(0, len(images), chunk):
            x = images[start:start + chunk].double() / 255
            total += x.sum(dim=(0, 2, 3))
            squares += x.square().sum(dim=(0, 2, 3))
        count = images.numel() / images.shape[1]
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a constant channel: no blow-up
        return cls(tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist()))

    def _tensors(self, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if channels != len(self.mean):
            raise DataError(f"images have {channels} channels, the normalisation {len(self.mean)}")
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)  # noqa: E731
        return as_tensor(self.mean), as_tensor(self.std)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [..., C, H, W] -> float32 (x/255 - mean)/std on the images' device."""
        if images.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
        mean, std = self._tensors(images.shape[-3], images.device)
        return (images.float() / 255 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of normalize, as float in [0, 1] (clamped: optimised images may leave the valid range)."""
        mean, std = self._tensors(x.shape[-3], x.device)
        return (x.float() * std + mean).clamp(0, 1)


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors would raise, identity is what makes sense
class ImageDataset:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    classes: tuple[str, ...]
    content_hash: str  # sha256 hex of the source content
    name: str  # human name for reports
    normalization: Normalization

    def __post_init__(self) -> None:
        for split in SPLITS:
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != images.shape[:1]:
                raise DataError(
                    f"{self.name}: {split} images must be uint8 [N, C, H, W] with one label each, "
                    f"got {images.dtype} {list(images.shape)} and {list(labels.shape)} labels"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(f"{self.name}: train and test images differ in shape")
        height, width = self.train_images.shape[2:]
        if height != width:
            raise DataError(f"{self.name}: images are {height}x{width}; pdd needs square images")
        if len(self.normalization.mean) != self.channels:
            raise DataError(f"{self.name}: {self.channels}-channel images with statistics for "
                            f"{len(self.normalization.mean)} channels")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[2]

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(self.channels, self.image_size, self.num_classes, len(self.test_images))


@dataclass(frozen=True)
class ImageSpec:
    """The shapes a dataset gives every network and cost estimate."""

    channels: int
    image_size: int
    num_classes: int
    test_images: int


@dataclass(frozen=True, eq=False)
class Split:
    train_idx: torch.Tensor  # indices into the dataset's train arrays used for training: all but val
    val_idx: torch.Tensor  # validation images carved from train


# ---------------------------------------------------------------------------------------------------------------
# Loading


def default_cache_dir() -> Path:
    return Path(os.environ.get("PDD_CACHE") or Path.home() / ".cache" / "pdd").expanduser()


def load_dataset(source: str | os.PathLike, cache_dir: Path | None = None) -> ImageDataset:
    """Load a dataset from any source (module docstring), through the cache."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache dir {cache}: {_one_line(e)}; set PDD_CACHE to a writable dir") from e
    src = _open_source(source, cache)
    digest = _content_hash(src, cache)
    cache_file = cache / f"images-{digest}{'-' if src.reading else ''}{src.reading}.pt"
    payload = _read_cache(cache_file)
    if payload is None:
        payload = src.decode()
        stats = src.normalization or Normalization.of(payload["train_images"])
        payload |= {"mean": list(stats.mean), "std": list(stats.std)}
        _write_cache_file(cache_file, lambda tmp: torch.save(payload, tmp))
    return ImageDataset(
        train_images=payload["train_images"],
        train_labels=payload["train_labels"],
        test_images=payload["test_images"],
        test_labels=payload["test_labels"],
        classes=tuple(payload["classes"]),
        content_hash=digest,
        name=src.name,
        normalization=Normalization(tuple(payload["mean"]), tuple(payload["std"])),
    )


def image_spec(source: str | os.PathLike, cache_dir: Path | None = None) -> ImageSpec:
    """A source's shapes: a named dataset's from its facts (nothing is read or downloaded), others from loading."""
    from pdd.sources import SOURCES

    if isinstance(source, str) and source in SOURCES:
        return SOURCES[source].spec
    return load_dataset(source, cache_dir).spec


class _Source(Protocol):
    name: str
    key: str  # identity of the source in the hash index, so that an edited source replaces its old entry
    normalization: Normalization | None  # None: computed from the training split
    reading: str  # the named dataset whose facts it applies to the bytes (pdd.sources key), "" for none

    def stat_signature(self) -> str:
        """Cheap to compute; changes whenever the content may have changed."""

    def content_hash(self) -> str:
        """sha256 hex of the content; costs a full read."""

    def decode(self) -> dict[str, Any]:
        """The cache payload: train/test images and labels, and the class names."""


def _open_source(source: str | os.PathLike, cache: Path) -> _Source:
    from pdd import sources  # it builds on this module's helpers

    if isinstance(source, str) and source in sources.SOURCES:
        return sources.NamedSource(sources.SOURCES[source], cache)
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DataError(f"dataset not found: {path} (named datasets: {', '.join(sources.SOURCES)})")
    if path.is_dir():
        if all((path / split).is_dir() for split in SPLITS):
            return _FolderSource(path)
        return sources.folder_source(path)
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return _ArchiveSource(path)
    raise DataError(
        f"unsupported dataset {path}: expected a directory, a {'/'.join(ARCHIVE_SUFFIXES)} archive "
        f"or one of: {', '.join(sources.SOURCES)}"
    )


def _content_hash(src: _Source, cache: Path) -> str:
    index_file = cache / HASH_INDEX
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = None
    if not isinstance(index, dict):
        index = {}  # no index yet, or a damaged one: start afresh
    # Taken before hashing: if the source changes meanwhile, the stored signature is stale and forces a rehash.
    signature = src.stat_signature()
    entry = index.get(src.key)
    if isinstance(entry, dict) and entry.get("stat") == signature and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = src.content_hash()
    index[src.key] = {"stat": signature, "sha256": digest}
    _write_cache_file(index_file, lambda tmp: tmp.write_bytes(json.dumps(index, indent=1, sort_keys=True).encode()))
    return digest


def _read_cache(path: Path) -> dict[str, Any] | None:
    """The cached payload, or None if it is missing or unusable (which just means decoding again)."""
    payload = read_cache_file(path, CACHE_FORMAT)
    valid = (
        payload is not None
        and isinstance(payload.get("classes"), list)
        and all(isinstance(payload.get(key), list) for key in ("mean", "std"))
        and all(isinstance(payload.get(f"{s}_images"), torch.Tensor) for s in SPLITS)
        and all(isinstance(payload.get(f"{s}_labels"), torch.Tensor) for s in SPLITS)
    )
    return payload if valid else None


def _write_cache_file(path: Path, write: Callable[[Path], object]) -> None:
    """Write through pdd.io.atomic_path, so readers never see a partial file; a failure names the way out."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as e:
        raise DataError(f"cannot write cache file {path}: {_one_line(e)}; set PDD_CACHE to a writable dir") from e


class _ArchiveSource:
    def __init__(self, path: Path):
        self.path = path
        self.name = _human_name(path.name, strip=ARCHIVE_SUFFIXES)
        self.key = f"archive:{path}"
        self.reading = _known_key(path.name)
        self.normalization = _known_normalization(path.name)

    def stat_signature(self) -> str:
        st = self.path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as e:
            raise DataError(f"cannot read {self.path}: {_one_line(e)}") from e
        return digest.hexdigest()

    def decode(self) -> dict[str, Any]:
        files = _read_archive_images(self.path)
        root, layout = _archive_layout(files, self.path)
        tree = {
            split: {cls: [(f"{n} in {self.path}", files[n]) for n in names] for cls, names in classes.items()}
            for split, classes in layout.items()
        }
        return _decode_tree(tree, f"{root} in {self.path}")


def _read_archive_images(path: Path) -> dict[str, bytes]:
    """All image files of a tar archive by member name, in one sequential pass (seeking in gzip is slow)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return {
                m.name: tar.extractfile(m).read()  # type: ignore[union-attr]  # isfile() members always extract
                for m in tar
                if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)
            }
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"corrupt dataset archive {path}: {_one_line(e)}") from e


def _archive_layout(names: Iterable[str], path: Path) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """Find the single dir with train/ and test/ among member names; return it and split -> class -> sorted names."""
    by_root: dict[tuple[str, ...], dict[str, dict[str, list[str]]]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        # Hidden entries are macOS resource forks and the like; this also rules out ".." escapes.
        if len(parts) < 3 or parts[-3] not in SPLITS or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        *root, split, cls, _ = parts
        by_root.setdefault(tuple(root), {}).setdefault(split, {}).setdefault(cls, []).append(name)
    complete = {root: layout for root, layout in by_root.items() if set(layout) == set(SPLITS)}
    if not complete:
        raise DataError(f"no train/ and test/ folders in {path}")
    if len(complete) > 1:
        roots = ", ".join(sorted("/".join(r) or "." for r in complete))
        raise DataError(f"several datasets in {path} ({roots}); pack one train/+test/ tree per archive")
    root, layout = complete.popitem()
    for classes in layout.values():
        for names_of_class in classes.values():
            names_of_class.sort()
    return "/".join(root) or ".", layout


class _FolderSource:
    def __init__(self, path: Path):
        self.path = path
        self.name = _human_name(path.name)
        self.key = f"folder:{path}"
        self.reading = _known_key(path.name)
        self.normalization = _known_normalization(path.name)

    def _files(self) -> dict[str, dict[str, list[os.DirEntry[str]]]]:
        """split -> class folder -> its image files sorted by name; empty class folders are kept (and rejected)."""
        tree: dict[str, dict[str, list[os.DirEntry[str]]]] = {split: {} for split in SPLITS}
        try:
            for split in SPLITS:
                with os.scandir(self.path / split) as classes:
                    for cls in classes:
                        if cls.is_dir() and not cls.name.startswith("."):
                            with os.scandir(cls.path) as entries:
                                images = (e for e in entries if _is_image_file(e))
                                tree[split][cls.name] = sorted(images, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"cannot list dataset folder {self.path}: {_one_line(e)}") from e
        return tree

    def _sorted_files(self) -> list[tuple[str, os.DirEntry[str]]]:
        files = [
            (f"{split}/{cls}/{e.name}", e)
            for split, classes in self._files().items()
            for cls, entries in classes.items()
            for e in entries
        ]
        return sorted(files, key=lambda item: item[0])

    def stat_signature(self) -> str:
        digest = hashlib.sha256()
        for rel, entry in self._sorted_files():
            st = entry.stat()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def content_hash(self) -> str:
        return _hash_files((rel, Path(e.path)) for rel, e in self._sorted_files())

    def decode(self) -> dict[str, Any]:
        tree = {
            split: {cls: [(e.path, _read_bytes(Path(e.path))) for e in entries] for cls, entries in classes.items()}
            for split, classes in self._files().items()
        }
        return _decode_tree(tree, str(self.path))


def _is_image_file(entry: os.DirEntry[str]) -> bool:
    return entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_SUFFIXES)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {_one_line(e)}") from e


def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    """sha256 over (relative path, bytes) pairs, length-prefixed so that no two file sets hash alike."""
    digest = hashlib.sha256()
    for rel, path in files:
        data = _read_bytes(path)
        name = rel.encode()
        digest.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _known(filename: str) -> tuple[str, str] | None:
    return next((known for prefix, known in KNOWN_NAMES.items() if filename.lower().startswith(prefix)), None)


def _human_name(filename: str, strip: Sequence[str] = ()) -> str:
    stem = next((filename[: -len(s)] for s in strip if filename.lower().endswith(s)), filename)
    known = _known(stem)
    return stem if known is None else known[0]


def _known_key(filename: str) -> str:
    known = _known(filename)
    return "" if known is None else known[1]


def _known_normalization(filename: str) -> Normalization | None:
    from pdd.sources import SOURCES

    key = _known_key(filename)
    return SOURCES[key].normalization if key else None


def _decode_tree(tree: _Tree, where: str) -> dict[str, Any]:
    classes = sorted(tree["train"])
    if not classes:
        raise DataError(f"no class folders in train/ of {where}")
    if sorted(tree["test"]) != classes:
        raise DataError(f"test/ classes differ from train/ classes in {where}")
    for split in SPLITS:
        for cls in classes:
            if not tree[split][cls]:
                raise DataError(f"no images in {split}/{cls} of {where}")

    first_file, first_data = tree["train"][classes[0]][0]
    shape = _decode_image(first_data, first_file).shape  # every image must match the first
    payload: dict[str, Any] = {"format": CACHE_FORMAT, "classes": classes}
    for split in SPLITS:
        files = [(label, *item) for label, cls in enumerate(classes) for item in tree[split][cls]]
        pixels = np.empty((len(files), *shape), dtype=np.uint8)  # filled in place: no list of 60k small arrays
        for i, (_, file, data) in enumerate(files):
            image = _decode_image(data, file)
            if image.shape != shape:
                raise DataError(
                    f"image {file} is {_shape_text(image.shape)} but earlier images are {_shape_text(shape)}; "
                    "all images must share one size and channel count"
                )
            pixels[i] = image
        payload[f"{split}_images"] = torch.from_numpy(pixels)
        payload[f"{split}_labels"] = torch.tensor([label for label, _, _ in files], dtype=torch.int64)
    return payload


def _decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode one image to uint8 [C, H, W], C being 1 for grayscale and 3 otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("L", "RGB"):
                image = image.convert("L" if image.mode in GRAYSCALE_MODES else "RGB")
            pixels = np.asarray(image, dtype=np.uint8)
    # PIL signals undecodable bytes with all of these, depending on the format and where the data breaks.
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {where}: {_one_line(e)}") from e
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _shape_text(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{width}x{height} with {channels} channel{'s' if channels > 1 else ''}"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def write_image_folder_slice(
    source_archive: str | os.PathLike, dest_dir: str | os.PathLike, train_per_class: int, test_per_class: int
) -> Path:
    """Copy the first N train and M test images per class (by file name) of an archive into an ImageFolder dir.

    The encoded bytes are copied verbatim, so the slice decodes to exactly the archive's pixels. For tests and
    small local runs; ``dest_dir`` must not exist or be empty. Returns ``dest_dir``.
    """
    archive, dest = Path(source_archive), Path(dest_dir)
    if not archive.is_file():
        raise DataError(f"dataset not found: {archive}")
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"slice destination {dest} is not empty")
    files = _read_archive_images(archive)
    _, layout = _archive_layout(files, archive)
    for split, count in zip(SPLITS, (train_per_class, test_per_class)):
        for cls, names in layout[split].items():
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            for name in names[:count]:
                (dest / split / cls / PurePosixPath(name).name).write_bytes(files[name])
    return dest


# ---------------------------------------------------------------------------------------------------------------
# Splits and the practical subset


def _class_name(c: int, classes: Sequence[str] | None) -> str:
    return classes[c] if classes is not None else str(c)


def _num_classes(labels: torch.Tensor, classes: Sequence[str] | None) -> int:
    if classes is not None:
        return len(classes)
    return int(labels.max()) + 1 if labels.numel() else 0


def indices_by_class(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Per class 0..num_classes-1, the positions of its labels in increasing order."""
    return [torch.nonzero(labels == c).squeeze(1) for c in range(num_classes)]


def split_train_val(
    labels: torch.Tensor, val_per_class: int, seed: int, *, classes: Sequence[str] | None = None
) -> Split:
    """Carve val_per_class random images of every class out of the training set; both index sets sorted.

    ``classes`` (the dataset's class names) only makes error messages name the class.
    """
    if val_per_class < 0:
        raise DataError(f"val_per_class must be >= 0, got {val_per_class}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c, members in enumerate(indices_by_class(labels, _num_classes(labels, classes))):
        if len(members) <= val_per_class:
            raise DataError(
                f"val_per_class={val_per_class} leaves no training images for class "
                f"'{_class_name(c, classes)}' (it has {len(members)})"
            )
        drawn = members[torch.randperm(len(members), generator=generator)]
        val.append(drawn[:val_per_class])
        train.append(drawn[val_per_class:])
    return Split(train_idx=torch.cat(train).sort().values, val_idx=torch.cat(val).sort().values)


def practical_subset(
    labels: torch.Tensor,
    pool_idx: torch.Tensor,
    pipc: int | None,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> torch.Tensor:
    """T': pipc random images per class from pool_idx (the train split), as indices into the train arrays.

    Grouped by class in class order, in draw order within a class. Each class's draw is a full permutation of its
    pool cut to pipc, so for one seed a smaller pipc gives a prefix of a larger one (T' nests), and the first k
    of a class are a random k-subset. ``pipc=None`` takes the whole pool, still in draw order. ``classes`` only
    makes error messages name the class.
    """
    if pipc is not None and pipc < 1:
        raise DataError(f"pipc must be >= 1 or None (all), got {pipc}")
    generator = torch.Generator().manual_seed(seed)
    pool_labels = labels[pool_idx]
    chosen = []
    for c, in_pool in enumerate(indices_by_class(pool_labels, _num_classes(labels, classes))):
        # Sorted so the draw depends on the pool as a set, not on the order the caller happened to list it in.
        members = pool_idx[in_pool].sort().values
        if pipc is not None and pipc > len(members):
            raise DataError(
                f"pipc={pipc} exceeds the {len(members)} training images of class '{_class_name(c, classes)}'"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)][:pipc])
    return torch.cat(chosen)
