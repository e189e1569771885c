"""Leakage audit of a synthetic set: how close each synthetic image sits to the private data, against the test split.

Private images are every image of the dataset's train split, validation images included (all stay on the edge
device), except T': the pipc images per class a trial was allowed to take off the device. For each synthetic image
the audit finds its nearest private image and its nearest test image in two spaces:

- pixel: L2 distance between the normalised images, flattened (the units of `Normalization.normalize`);
- feature: cosine distance, 1 - cos, between embeddings (`embed`) of a feature net: a fixed random ConvNet
  (ModelConfig(), weights drawn from a torch.Generator seeded with `feature_seed`), or the teacher.

Threshold, per space: a seeded sample of `threshold_sample` train-split images (Generator seeded with `seed`) each
gets its distance to its nearest *distinct* train-split image (another image whose pixels differ: a dataset's exact
duplicates say nothing about how far apart different images lie); the threshold is the `threshold_quantile`
quantile (linear interpolation) of those distances. With the default 0.01, an image within the threshold of a
private image is closer to it than 99 in 100 real images are to any other real image. It does not depend on T', so
every method and trial of a dataset is held to the same threshold.

Near copy: a synthetic image whose nearest private image is within the threshold (<=) in *both* spaces. Each space
alone has a false alarm of its own: pixel L2 finds smooth, low-contrast images close to any flat photograph
(sky, fog), and the random ConvNet's features are what DM itself matches (class means of random ConvNets'
embeddings), so a DM image can sit close to real images there without reproducing one. A copy is close in both: it
looks the same pixel by pixel and the network responds to it the same. The counts per space are in the summary too.

Ratio, per space: the median nearest-private distance over the median nearest-test distance. A set that copies its
training data scores far below 1; one unrelated to both splits scores a little below 1, since nearest neighbours
come closer as a pool grows and the private pool is the larger (CIFAR-10: 50,000 against 10,000).

Cost: a CPU spends about a minute (bf16) embedding CIFAR-10's 60,000 images and some seconds on the threshold's
nearest neighbours, so both are cached under `<cache>/audit/` (default data.default_cache_dir()), keyed by the
dataset's content hash and statistics, the feature net, its precision and the sample, and written atomically;
embeddings are stored in bfloat16. The cache does not name the device: embeddings from a GPU and a CPU agree to
bfloat16 rounding, far below any threshold. Nearest neighbours are chunked matmuls; pixel distances are re-ranked
exactly among each image's CANDIDATES best by the expanded-square formula, which loses digits near zero.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pdd.config import Strict, config_hash
from pdd.data import ImageDataset, Normalization, default_cache_dir
from pdd.errors import DataError, PddError
from pdd.io import atomic_path, read_cache_file
from pdd.models import GPU_EVAL_BATCH, ModelConfig, autocast, build_model, chunk_size
from pdd.runtime import keep_freed_memory

RANDOM_NET = ModelConfig()
# Pixel candidates re-ranked exactly per query. The expanded formula |q|^2 + |x|^2 - 2 q.x is off by up to 0.02 in
# float32 on CIFAR-10's squared distances (about 9,000): it would put a copy 0.15 away, not 0, and may swap near-ties.
CANDIDATES = 8
CACHE_FORMAT = 1
STORED = torch.bfloat16  # the embeddings' dtype, on disk and for synthetic images alike, so copies match exactly
PAIRS = 8

# The summary's keys, ready to be result-row columns: (type, meaning). Distances are pixel L2 on normalised images
# or cosine distances (1 - cos) in the feature space; medians are over the synthetic images.
SUMMARY_COLUMNS: dict[str, tuple[type, str]] = {
    "audit_features": (str, "the feature space: random-convnet-<net>-seed<k> or teacher-<sha256 prefix>"),
    "audit_images": (int, "synthetic images audited"),
    "audit_private": (int, "private images: the train split (validation included) minus T'"),
    "audit_excluded": (int, "train-split images of T', not counted as private"),
    "audit_threshold_quantile": (float, "the quantile of real nearest-other distances that sets each threshold"),
    "audit_threshold_pixel": (float, "near-copy threshold in pixel L2"),
    "audit_threshold_feature": (float, "near-copy threshold in cosine distance"),
    "audit_pixel_median": (float, "median pixel L2 to the nearest private image"),
    "audit_pixel_min": (float, "smallest pixel L2 to a private image"),
    "audit_pixel_test_median": (float, "median pixel L2 to the nearest test image"),
    "audit_pixel_ratio": (float, "audit_pixel_median / audit_pixel_test_median: far below 1 for a copying set"),
    "audit_feature_median": (float, "median cosine distance to the nearest private image"),
    "audit_feature_min": (float, "smallest cosine distance to a private image"),
    "audit_feature_test_median": (float, "median cosine distance to the nearest test image"),
    "audit_feature_ratio": (float, "audit_feature_median / audit_feature_test_median"),
    "audit_near_pixel": (int, "synthetic images within the pixel threshold of a private image"),
    "audit_near_feature": (int, "synthetic images within the feature threshold of a private image"),
    "audit_near_copies": (int, "near copies: within both thresholds of their nearest private images"),
}


PAIRS_FILE = "audit-pairs.pt"  # a trial's closest pairs, beside its synthetic set, for the report's figure


class AuditConfig(Strict):
    features: Literal["random-convnet", "teacher"] = Field(
        "random-convnet", description="the feature space: a fixed random ConvNet, or the teacher (pass it)")
    feature_seed: int = Field(0, ge=0, description="seed of the random ConvNet's weights")
    # bf16 moved CIFAR-10 cosines by at most 0.001, against a near-copy threshold of 0.031, and embedded 2.8x faster
    # on a CPU.
    precision: Literal["fp32", "bf16"] = Field("bf16", description="the feature net's forwards")
    threshold_quantile: float = Field(0.01, gt=0, lt=1, description="quantile of real nearest-other distances")
    threshold_sample: int = Field(1000, ge=2, description="train-split images whose spacing sets the thresholds")
    seed: int = Field(0, ge=0, description="the draw of the threshold sample")
    batch: int = Field(2048, ge=1, description="pool images per distance matmul")


@dataclass(frozen=True, eq=False)
class FeatureNet:
    net: nn.Module  # with .embed(x) -> [N, F], on the audit's device
    key: str  # names the weights in the cache and the row: one key, one set of weights


def random_convnet(dataset: ImageDataset, seed: int, device: torch.device) -> FeatureNet:
    generator = torch.Generator().manual_seed(seed)
    net = build_model(RANDOM_NET, dataset.channels, dataset.num_classes, dataset.image_size, generator)
    return FeatureNet(net.to(device).eval(), f"random-convnet-{config_hash(RANDOM_NET)[:8]}-seed{seed}")


def teacher_features(teacher: nn.Module, teacher_hash: str) -> FeatureNet:
    """The teacher as feature net, already on the audit's device (pdd.teacher.load_teacher gives both)."""
    return FeatureNet(teacher.eval(), f"teacher-{teacher_hash[:16]}")


@dataclass(frozen=True, eq=False)
class Nearest:
    index: Tensor  # int64 [N]: into the pool's split (train or test arrays of the dataset)
    distance: Tensor  # float32 [N]


@dataclass(frozen=True, eq=False)
class SpaceAudit:
    private: Nearest  # nearest private image
    test: Nearest  # nearest test image
    threshold: float


@dataclass(frozen=True, eq=False)
class Audit:
    pixel: SpaceAudit
    feature: SpaceAudit
    near_copy: Tensor  # bool [N]
    summary: dict[str, float | int | str]  # SUMMARY_COLUMNS

    def closest(self, k: int) -> Tensor:
        """Indices of the k synthetic images nearest a private image in pixel L2, nearest first."""
        return torch.argsort(self.pixel.private.distance, stable=True)[:k]


@torch.no_grad()
def audit(images: Tensor, dataset: ImageDataset, exclude_train_idx: Tensor | Sequence[int], cfg: AuditConfig,
          device: torch.device, features: FeatureNet | None = None, cache_dir: Path | None = None) -> Audit:
    """Audit normalised synthetic images [N, C, H, W] against `dataset`, T' (`exclude_train_idx`) not private.

    `features` is the feature net: built from cfg for 'random-convnet', required (teacher_features) for 'teacher'.
    """
    keep_freed_memory()
    check_images(images, dataset)
    net = _feature_net(cfg, dataset, device, features)
    excluded = _excluded(exclude_train_idx, len(dataset.train_images))
    private = _private_pool(len(dataset.train_images), excluded)
    test = torch.arange(len(dataset.test_images))
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "audit"
    embedded = dataset_features(dataset, net, cfg, device, cache)
    spacing = _spacing(dataset, net, embedded, cfg, device, cache)
    thresholds = {space: _quantile(spacing[space], cfg.threshold_quantile) for space in ("pixel", "feature")}

    queries = images.to(device).float().flatten(1)
    pixel_rows = _pixel_rows(dataset.normalization, device)
    train_px, test_px = pixel_rows(dataset.train_images), pixel_rows(dataset.test_images)
    pixel = SpaceAudit(_nearest_pixel(queries, train_px, private, cfg.batch),
                       _nearest_pixel(queries, test_px, test, cfg.batch), thresholds["pixel"])
    units = _unit(_embed(net, images, lambda x: x.float(), device, cfg.precision).to(device).float())
    train_ft, test_ft = _feature_rows(embedded["train"], device), _feature_rows(embedded["test"], device)
    feature = SpaceAudit(_nearest_feature(units, train_ft, private, cfg.batch),
                         _nearest_feature(units, test_ft, test, cfg.batch), thresholds["feature"])
    near_pixel = (pixel.private.distance <= pixel.threshold).cpu()
    near_feature = (feature.private.distance <= feature.threshold).cpu()
    near = near_pixel & near_feature
    summary: dict[str, float | int | str] = {
        "audit_features": net.key, "audit_images": len(images), "audit_private": len(private),
        "audit_excluded": len(excluded), "audit_threshold_quantile": cfg.threshold_quantile,
        "audit_threshold_pixel": pixel.threshold, "audit_threshold_feature": feature.threshold,
        **_space_summary("pixel", pixel), **_space_summary("feature", feature),
        "audit_near_pixel": int(near_pixel.sum()), "audit_near_feature": int(near_feature.sum()),
        "audit_near_copies": int(near.sum()),
    }
    return Audit(pixel, feature, near, summary)


def check_images(images: Tensor, dataset: ImageDataset) -> None:
    shape = (dataset.channels, dataset.image_size, dataset.image_size)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
        raise PddError(f"the audit needs normalised images [N, {', '.join(map(str, shape))}] for {dataset.name}, "
                       f"got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise PddError(f"the audit needs normalised float images, got {images.dtype}")
    if not torch.isfinite(images).all():
        raise PddError("the synthetic images contain NaN or infinite pixels")


def _feature_net(cfg: AuditConfig, dataset: ImageDataset, device: torch.device,
                 features: FeatureNet | None) -> FeatureNet:
    if features is not None:
        return features
    if cfg.features == "teacher":
        raise PddError("the audit's 'teacher' feature space needs the teacher: pass --teacher PATH")
    return random_convnet(dataset, cfg.feature_seed, device)


def _excluded(indices: Tensor | Sequence[int], train_size: int) -> Tensor:
    excluded = torch.as_tensor(indices, dtype=torch.int64).flatten().unique()
    if len(excluded) and (int(excluded.min()) < 0 or int(excluded.max()) >= train_size):
        raise PddError(f"T' indices must lie in 0..{train_size - 1} (the train split), got "
                       f"{int(excluded.min())}..{int(excluded.max())}: are they from another dataset?")
    return excluded


def _private_pool(train_size: int, excluded: Tensor) -> Tensor:
    keep = torch.ones(train_size, dtype=torch.bool)
    keep[excluded] = False
    if not keep.any():
        raise PddError("every train-split image is excluded as T': nothing private is left to audit against")
    return torch.nonzero(keep).squeeze(1)


def _space_summary(space: str, result: SpaceAudit) -> dict[str, float]:
    private, test = _median(result.private.distance), _median(result.test.distance)
    return {f"audit_{space}_median": private, f"audit_{space}_min": float(result.private.distance.min()),
            f"audit_{space}_test_median": test, f"audit_{space}_ratio": _ratio(private, test)}


def _median(values: Tensor) -> float:
    return float(torch.quantile(values.double().cpu(), 0.5))


def _ratio(numerator: float, denominator: float) -> float:
    """inf when only the test side is 0 (a set of test images), nan when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return numerator / denominator


def _quantile(distances: Tensor, q: float) -> float:
    finite = distances[torch.isfinite(distances)]
    if len(finite) == 0:
        raise DataError("the train split has no two distinct images to set the near-copy threshold")
    return float(torch.quantile(finite.double(), q))


# ---------------------------------------------------------------------------------------------------------------
# Nearest neighbours: a pool is a sorted index tensor into one split; rows(idx) gives its vectors on the device.

Rows = Callable[[Tensor], Tensor]


def _pixel_rows(normalization: Normalization, device: torch.device) -> Callable[[Tensor], Rows]:
    def of(split: Tensor) -> Rows:
        return lambda idx: normalization.normalize(split[idx].to(device)).flatten(1)
    return of


def _feature_rows(embedded: Tensor, device: torch.device) -> Rows:
    return lambda idx: _unit(embedded[idx].to(device).float())


def _unit(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _smallest(score: Callable[[Tensor], Tensor], pool: Tensor, batch: int, k: int,
              skip: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per query, the k pool entries of smallest score(chunk) [N, len(chunk)] and their scores, scanned in chunks;
    `skip` [N] names a pool entry each query must not match (itself)."""
    best_index = best_score = None
    for chunk in pool.split(batch):
        scores = score(chunk)
        index = chunk.to(scores.device).expand(len(scores), -1)
        if skip is not None:
            scores = scores.masked_fill(index == skip.to(scores.device)[:, None], float("inf"))
        if best_score is not None:
            scores, index = torch.cat([best_score, scores], 1), torch.cat([best_index, index], 1)
        best_score, position = scores.topk(min(k, scores.shape[1]), dim=1, largest=False)
        best_index = index.gather(1, position)
    assert best_index is not None and best_score is not None, "pools are never empty"
    return best_index, best_score


def _nearest_pixel(queries: Tensor, rows: Rows, pool: Tensor, batch: int, skip: Tensor | None = None,
                   distinct: bool = False) -> Nearest:
    """Nearest pool image by L2 to flattened queries [N, D]; `distinct`: one with identical pixels does not count."""
    squares = queries.square().sum(1, keepdim=True)

    def expanded(chunk: Tensor) -> Tensor:
        x = rows(chunk)
        return squares + x.square().sum(1) - 2 * queries @ x.T

    candidates, approximate = _smallest(expanded, pool, batch, CANDIDATES, skip)
    exact = (queries[:, None] - rows(candidates.flatten().cpu()).view(*candidates.shape, -1)).norm(dim=2)
    void = torch.isinf(approximate)
    if distinct:
        void |= exact == 0
    exact = exact.masked_fill(void, float("inf"))
    distance, position = exact.min(1)
    return Nearest(candidates.gather(1, position[:, None]).squeeze(1).cpu(), distance.cpu())


def _nearest_feature(units: Tensor, rows: Rows, pool: Tensor, batch: int, skip: Tensor | None = None,
                     same_pixels: Callable[[Tensor], Tensor] | None = None) -> Nearest:
    """Nearest pool embedding by cosine distance to unit queries [N, F]; `same_pixels(candidates)` [N, k] marks
    candidates that are pixel-identical to their query, which then do not count."""
    k = 1 if same_pixels is None else CANDIDATES
    candidates, distances = _smallest(lambda chunk: 1 - units @ rows(chunk).T, pool, batch, k, skip)
    if same_pixels is not None:
        distances = distances.masked_fill(same_pixels(candidates.cpu()).to(distances.device), float("inf"))
    distance, position = distances.min(1)
    return Nearest(candidates.gather(1, position[:, None]).squeeze(1).cpu(), distance.clamp_min(0).cpu())


# ---------------------------------------------------------------------------------------------------------------
# The dataset's embeddings and spacing, cached


def dataset_features(dataset: ImageDataset, net: FeatureNet, cfg: AuditConfig, device: torch.device,
                     cache: Path) -> dict[str, Tensor]:
    """{"train", "test"}: bfloat16 embeddings of both splits, from the cache or computed and cached."""
    key = _cache_key(dataset, net.key, cfg.precision)
    sizes = {"train": len(dataset.train_images), "test": len(dataset.test_images)}

    def compute() -> dict[str, Tensor]:
        normalize = dataset.normalization.normalize
        return {split: _embed(net, getattr(dataset, f"{split}_images"), normalize, device, cfg.precision)
                for split in sizes}

    return _cached(cache / f"features-{dataset.content_hash[:12]}-{key}.pt", sizes, compute)


def _spacing(dataset: ImageDataset, net: FeatureNet, embedded: dict[str, Tensor], cfg: AuditConfig,
             device: torch.device, cache: Path) -> dict[str, Tensor]:
    """Each sampled train image's distance to its nearest distinct train image, per space (the module docstring)."""
    train = dataset.train_images
    size = min(cfg.threshold_sample, len(train))
    sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:size].sort().values
    pool = torch.arange(len(train))
    pixel_key = _cache_key(dataset, "pixel-spacing", size, cfg.seed)
    feature_key = _cache_key(dataset, "feature-spacing", net.key, cfg.precision, size, cfg.seed)
    stem = f"spacing-{dataset.content_hash[:12]}"

    def pixel() -> dict[str, Tensor]:
        rows = _pixel_rows(dataset.normalization, device)(train)
        return {"pixel": _nearest_pixel(rows(sample), rows, pool, cfg.batch, skip=sample, distinct=True).distance}

    def feature() -> dict[str, Tensor]:
        rows = _feature_rows(embedded["train"], device)

        def same_pixels(candidates: Tensor) -> Tensor:
            return (train[candidates] == train[sample][:, None]).flatten(2).all(2)

        nearest = _nearest_feature(rows(sample), rows, pool, cfg.batch, skip=sample, same_pixels=same_pixels)
        return {"feature": nearest.distance}

    return (_cached(cache / f"{stem}-{pixel_key}.pt", {"pixel": size}, pixel)
            | _cached(cache / f"{stem}-{feature_key}.pt", {"feature": size}, feature))


@torch.no_grad()
def _embed(net: FeatureNet, images: Tensor, prepare: Callable[[Tensor], Tensor], device: torch.device,
           precision: str) -> Tensor:
    """STORED embeddings [N, F] on the CPU, in the chunks pdd.models prefers on this device.

    Written into one tensor allocated up front: a list of 60,000 / 16 small parts, allocated between the
    activations, fragmented the heap and doubled the peak memory on a CPU (2.0 against 1.0 GB for CIFAR-10)."""
    step = chunk_size(device) or GPU_EVAL_BATCH
    out: Tensor | None = None
    with autocast(precision, device):
        for start in range(0, len(images), step):
            part = net.net.embed(prepare(images[start:start + step].to(device)))
            if out is None:
                out = torch.empty((len(images), part.shape[1]), dtype=STORED)
            out[start:start + len(part)] = part.to("cpu", STORED)
    assert out is not None, "check_images and ImageDataset refuse empty image sets"
    return out


def _cache_key(dataset: ImageDataset, *parts: object) -> str:
    norm = dataset.normalization
    text = json.dumps([CACHE_FORMAT, dataset.content_hash, norm.mean, norm.std, *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(path: Path, sizes: dict[str, int], compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """The tensors named in `sizes` (with those lengths) from `path`, else computed and written there atomically."""
    stored = _read_cached(path, sizes)
    if stored is not None:
        return stored
    computed = compute()
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": CACHE_FORMAT, **computed}, tmp)
    except OSError as error:
        raise DataError(f"cannot write audit cache {path}: {error.strerror or error}; "
                        "set PDD_CACHE to a writable dir") from None
    return computed


def _read_cached(path: Path, sizes: dict[str, int]) -> dict[str, Tensor] | None:
    """None for a missing, truncated or foreign file: it is then computed again."""
    payload = read_cache_file(path, CACHE_FORMAT)
    if payload is None:
        return None
    tensors = {name: payload.get(name) for name in sizes}
    if not all(isinstance(t, Tensor) and len(t) == sizes[name] for name, t in tensors.items()):
        return None
    return tensors


# ---------------------------------------------------------------------------------------------------------------
# The closest pairs, kept beside a trial's set so a report can show them without the private data at hand


@dataclass(frozen=True, eq=False)
class Pairs:
    """The synthetic images nearest a private image (pixel L2), nearest first, each with that private image."""

    synthetic_index: Tensor  # int64 [k] into the synthetic set
    private_index: Tensor  # int64 [k] into the train split
    private_images: Tensor  # uint8 [k, C, H, W]
    private_labels: Tensor  # int64 [k]
    distance: Tensor  # pixel L2
    feature_distance: Tensor  # cosine distance to the nearest private image in the feature space
    near_copy: Tensor  # bool [k]
    threshold: float  # pixel


def closest_pairs(result: Audit, dataset: ImageDataset, k: int = PAIRS) -> Pairs:
    order = result.closest(k)
    private = result.pixel.private.index[order]
    return Pairs(order, private, dataset.train_images[private], dataset.train_labels[private],
                 result.pixel.private.distance[order], result.feature.private.distance[order],
                 result.near_copy[order], result.pixel.threshold)


def save_pairs(path: str | os.PathLike, pairs: Pairs) -> None:
    with atomic_path(path) as tmp:
        torch.save({field.name: getattr(pairs, field.name) for field in fields(Pairs)}, tmp)


def load_pairs(path: str | os.PathLike) -> Pairs:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return Pairs(**{field.name: payload[field.name] for field in fields(Pairs)})
    except Exception as error:  # torch raises many types for a foreign or truncated file
        raise PddError(f"cannot read audit pairs {path} ({type(error).__name__})") from None
