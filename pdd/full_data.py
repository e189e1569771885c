"""The evaluation network trained on the whole train split: the full-data accuracy that HLR (full-data minus
synthetic-set accuracy, same network and protocol) and DD-Ranking's label-robust score compare a set with.

    pdd baseline full-data --data ../shared/datasets/cifar10-jpeg.tar.gz --results results/local --protocol dc

Each model trains as a set's evaluation models do (pdd.evaluate.score: the protocol's optimiser, DSA on every
batch of 256, the learning rate a tenth from half way), on the train split with the trials' validation images
held out, for FullDataConfig.epochs; the images stay uint8 and each batch is normalised. Model k is seeded
seed + k. Each finished model's scores are checkpointed, so a killed run resumes with the next model. The record
is one JSON file per dataset and evaluation, RESULTS/_full_data/<dataset hash, 12>-<Evaluation.key>.json.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError

from pdd import __version__
from pdd.config import Evaluation, FullDataConfig, format_validation_error
from pdd.data import ImageDataset, split_train_val
from pdd.errors import PddError, ResultsError
from pdd.evaluate import schedule, score
from pdd.hooks import DirStore, NullReporter, Reporter
from pdd.io import atomic_path
from pdd.models import ModelConfig, eval_model_config
from pdd.trial import evaluation_splits, git_commit

# The leading underscore keeps Parquet readers of the results directory out of it, as with _artifacts.
FULL_DATA = "_full_data"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class FullData:
    """One full-data record: accuracies in percent, one per model."""

    dataset_name: str
    dataset_hash: str
    evaluation: Evaluation  # its epochs are the full-data epochs
    epochs: int
    passes: int  # over the train split per model: epochs, or epochs + 1 under dc (pdd.evaluate.schedule)
    val_per_class: int
    split_seed: int
    train_images: int
    seeds: tuple[int, ...]
    val_acc: tuple[float, ...]
    test_acc: tuple[float, ...]
    val_mean: float
    val_std: float
    test_mean: float
    test_std: float
    seconds: float  # this run's training and scoring; a resumed run's leaves out the models it reused
    device: str
    git_commit: str
    pdd_version: str
    finished_at: str  # ISO 8601, UTC


_RECORD = TypeAdapter(FullData)


def record_path(results: Path, dataset_hash: str, evaluation: Evaluation) -> Path:
    return Path(results) / FULL_DATA / f"{dataset_hash[:12]}-{evaluation.key}.json"


def stored_full_data(cfg: FullDataConfig, dataset: ImageDataset, results: Path) -> FullData | None:
    """The stored record of this config on this dataset, if there is one; one over another validation split is
    an error rather than silently another number."""
    path = record_path(results, dataset.content_hash, cfg.evaluation)
    if not path.exists():
        return None
    record = read_record(path)
    if (record.val_per_class, record.split_seed) != (cfg.data.val_per_class, cfg.data.split_seed):
        raise PddError(f"{path} holds models trained with val_per_class {record.val_per_class}, split_seed "
                       f"{record.split_seed}, not {cfg.data.val_per_class}, {cfg.data.split_seed}: pass --force "
                       f"to replace it, or another --results")
    return record


def train_full_data(cfg: FullDataConfig, dataset: ImageDataset, device: torch.device, results: Path,
                    reporter: Reporter = NullReporter()) -> FullData:
    """Train and score cfg.seeds models on the whole train split, resuming the models a killed run finished, and
    write the record atomically (replacing a stored one)."""
    began = time.perf_counter()
    evaluation = cfg.evaluation
    path = record_path(results, dataset.content_hash, evaluation)
    split = split_train_val(dataset.train_labels, cfg.data.val_per_class, cfg.data.split_seed,
                            classes=dataset.classes)
    val, test = evaluation_splits(dataset, split.val_idx, evaluation.max_images, cfg.data.split_seed, device)
    checkpoints = path.parent / f".{path.stem}.checkpoints"
    # The split is in the label: models trained with other validation images held out are not this run's.
    scored = score(dataset.train_images[split.train_idx].to(device), dataset.train_labels[split.train_idx].to(device),
                   evaluation, eval_model_config(ModelConfig(), evaluation.arch), dataset.num_classes, val, test,
                   dataset.normalization, reporter, DirStore(checkpoints),
                   label=f"full-data-val{cfg.data.val_per_class}-split{cfg.data.split_seed}",
                   title=f"full data {evaluation.name}")
    record = FullData(
        dataset_name=dataset.name, dataset_hash=dataset.content_hash, evaluation=evaluation,
        epochs=evaluation.epochs, passes=schedule(evaluation)[0], val_per_class=cfg.data.val_per_class,
        split_seed=cfg.data.split_seed, train_images=len(split.train_idx), seeds=tuple(scored.seeds),
        val_acc=tuple(scored.val), test_acc=tuple(scored.test), **scored.summary(),
        seconds=time.perf_counter() - began, device=str(device), git_commit=git_commit(), pdd_version=__version__,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"format": RECORD_FORMAT} | _RECORD.dump_python(record, mode="json"), indent=2))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the record holds every model's scores now
    return record


def read_record(path: Path) -> FullData:
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"cannot read full-data record {path}: {error}") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise ResultsError(f"{path} is not a pdd full-data record (no format field)")
    if payload["format"] != RECORD_FORMAT:
        raise ResultsError(f"{path} is full-data record format {payload['format']!r}; this pdd reads "
                           f"{RECORD_FORMAT}")
    try:
        return _RECORD.validate_python(payload)
    except ValidationError as error:
        raise ResultsError(f"{path} is a malformed full-data record: {format_validation_error(error)}") from None


def read_full_data(results: Path) -> list[FullData]:
    """Every full-data record in a results directory, in file-name order; none when it has no _full_data/."""
    return [read_record(path) for path in sorted((Path(results) / FULL_DATA).glob("*.json"))]


def full_data_accuracy(records: list[FullData], dataset_hash: str, protocol: str, arch: str) -> FullData | None:
    """The record a report sets beside a set's accuracy: same dataset, protocol and network; of several, the one
    trained longest (epochs, then models), then the latest."""
    matching = [r for r in records if r.dataset_hash == dataset_hash and r.evaluation.protocol == protocol
                and r.evaluation.arch == arch]
    return max(matching, key=lambda r: (r.epochs, len(r.seeds), r.finished_at), default=None)
