"""One trial end to end: load, distil S with the configured method, judge it, write one result row per evaluation.

    pdd trial --method pdd --ipc 1 --pipc 50 --teacher teachers/cifar10.pt --budget cpu --protocol paper --protocol dc

Before it is judged, the set is audited for copies of private training images (pdd.audit), and the rows carry
the audit. The rows land in <results>/<trial_id>.parquet, the synthetic set, its PNG grid and its closest pairs in
<results>/_artifacts/<trial_id>/. Distillation and evaluation checkpoint into that folder, so running the
same trial again resumes where a killed run stopped, and a finished trial is not run twice.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from pdd.audit import PAIRS_FILE, AuditConfig, audit, closest_pairs, save_pairs
from pdd.bench import evaluation_flops, trial_flops
from pdd.config import DataConfig, Evaluation, TrialConfig, pipc_text
from pdd.data import ImageDataset, default_cache_dir, load_dataset, practical_subset, split_train_val
from pdd.distill import Problem
from pdd.errors import DivergedError, PddError, TeacherError
from pdd.evaluate import Scored, score
from pdd.hooks import CheckpointStore, DirStore, MirroredStore, NullReporter, Reporter
from pdd.method_spec import needs_teacher
from pdd.methods import MAKE
from pdd.models import ModelConfig, eval_model_config
from pdd.results import (
    ARTIFACTS,
    SET_COLUMNS,
    ScoredBy,
    Stage,
    Status,
    final_losses_json,
    read_rows,
    trial_row,
    write_rows,
)
from pdd.synthetic import save_grid, save_synthetic
from pdd.teacher import load_teacher


@dataclass
class TrialOptions:
    """How and where a trial runs; none of it changes the result, so none of it is in the config hash."""

    results: Path = Path("results/local")
    teacher: Path | None = None
    device: str = "auto"
    sweep_id: str = "local"
    stage: Stage = Stage.TRIAL
    checkpoint_every: int = 100
    checkpoint_seconds: float = 0.0
    force: bool = False  # run again even if the results already hold this trial's row
    reporter: Reporter = field(default_factory=NullReporter)
    store: CheckpointStore | None = None  # default: files in the trial's artifact folder
    cache_dir: Path | None = None  # the decoded-dataset cache; default data.default_cache_dir() ($PDD_CACHE)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PddError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PddError(f"device '{name}' requested but no CUDA GPU is visible")
    return device


def cached_dataset(source: str, cache_dir: Path | None = None) -> ImageDataset:
    """Trials in one process (a Tune worker, a test session) share one decoded copy of each source and cache dir.

    cache_dir defaults to data.default_cache_dir() ($PDD_CACHE), resolved here so that the copy's key holds it.
    """
    return _decoded(source, cache_dir if cache_dir is not None else default_cache_dir())


@lru_cache(maxsize=2)
def _decoded(source: str, cache_dir: Path) -> ImageDataset:
    return load_dataset(source, cache_dir)


def forget_datasets() -> None:
    """Drop the decoded copies, so the next load reads the cache dir as a fresh process would (pdd bench)."""
    _decoded.cache_clear()


def git_commit() -> str:
    """HEAD of pdd's checkout, with '+dirty' when tracked files differ from it: then HEAD alone is not the code."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                 capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def trial_id(cfg: TrialConfig, sweep_id: str, stage: Stage, dataset_hash: str, teacher_hash: str | None,
             device: torch.device) -> str:
    """Same config, data, teacher and kind of device give the same id, so a rerun replaces (or resumes) its own
    rows. A GPU computes other (not bitwise equal) numbers than a CPU, so its run is another trial, not a resume."""
    inputs = f"{cfg.hash()}|{dataset_hash}|{teacher_hash}|{device.type}"
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    return f"{sweep_id}_{stage}_{cfg.method}_ipc{cfg.ipc}_pipc{pipc_text(cfg.pipc)}_{digest}"


def run_trial(cfg: TrialConfig, options: TrialOptions) -> list[dict[str, Any]]:
    """Run (or resume) one trial and write its rows, one per evaluation, the primary first; a diverged loss gives
    rows with status 'failed'.

    A trial whose rows are already stored with status 'ok' is returned as stored unless options.force.
    """
    began = time.perf_counter()
    device = resolve_device(options.device)
    dataset = cached_dataset(cfg.data.source, options.cache_dir)
    split = split_train_val(dataset.train_labels, cfg.data.val_per_class, cfg.data.split_seed,
                            classes=dataset.classes)
    subset = practical_subset(dataset.train_labels, split.train_idx, cfg.pipc, cfg.subset_seed,
                              classes=dataset.classes)

    teacher, teacher_meta, teacher_hash = None, {}, None
    if needs_teacher(cfg):
        if options.teacher is None:
            raise TeacherError(f"method '{cfg.method}' needs a teacher: pass --teacher PATH "
                               f"(train one with `pdd teacher train`)")
        teacher, teacher_meta, teacher_hash = load_teacher(options.teacher, cfg.teacher_model, dataset, device)

    tid = trial_id(cfg, options.sweep_id, options.stage, dataset.content_hash, teacher_hash, device)
    stored = read_rows(options.results, tid)
    if stored and all(row["status"] == Status.OK for row in stored) and not options.force:
        return stored
    artifacts = Path(options.results) / ARTIFACTS / tid
    local = DirStore(artifacts / "checkpoints")
    if options.force:
        local.discard()  # else the rerun would return the evaluation scores its last run checkpointed
    store = local if options.store is None else MirroredStore(options.store, local)
    problem = Problem(
        cfg=cfg,
        real=dataset.normalization.normalize(dataset.train_images[subset].to(device)),
        real_labels=dataset.train_labels[subset].to(device),
        num_classes=dataset.num_classes,
        normalization=dataset.normalization,
        teacher=teacher,
        teacher_weight_decay=float(teacher_meta.get("weight_decay", 0.0)),
        reporter=options.reporter,
        store=store,
        checkpoint_every=options.checkpoint_every,
        checkpoint_seconds=options.checkpoint_seconds,
    )
    provenance = {"git_commit": git_commit(), "dataset_name": dataset.name, "dataset_hash": dataset.content_hash,
                  "teacher_hash": teacher_hash, "pipc_indices": subset.tolist(), "device": str(device)}

    def finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        write_rows(options.results, rows)
        local.discard()  # a trial with rows is returned as stored: nothing is left to resume
        return rows

    def row(status: Status, evaluation: Evaluation, **fields: Any) -> dict[str, Any]:
        return trial_row(cfg, tid, options.sweep_id, options.stage, status, evaluation, **provenance, **fields)

    seconds_load = time.perf_counter() - began

    began = time.perf_counter()
    try:
        distilled = MAKE[cfg.method](problem)
    except DivergedError as error:
        seconds = time.perf_counter() - began
        return finish([row(Status.FAILED, evaluation, reason=str(error), seconds_load=seconds_load,
                           seconds_distill=seconds) for evaluation in cfg.eval.runs()])
    seconds_distill = time.perf_counter() - began + distilled.carried_seconds  # a resumed trial's runs, summed

    agreement = None if teacher is None else teacher_agreement(teacher, distilled.images, distilled.labels)
    synthetic_path = artifacts / "synthetic.pt"
    save_synthetic(synthetic_path, distilled.images, distilled.labels,
                   {"trial_id": tid, "config": cfg.model_dump(mode="json"), "classes": list(dataset.classes),
                    "mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std),
                    "lambdas": None if distilled.lambdas is None else distilled.lambdas.cpu().tolist()})
    save_grid(artifacts / "synthetic.png", distilled.images, distilled.labels, dataset.normalization)
    (artifacts / "history.json").write_text(json.dumps(distilled.history))
    began = time.perf_counter()
    leakage = audit(distilled.images, dataset, subset, AuditConfig(), device, cache_dir=options.cache_dir)
    save_pairs(artifacts / PAIRS_FILE, closest_pairs(leakage, dataset))
    seconds_audit = time.perf_counter() - began

    spec = dataset.spec
    set_fields = {"final_losses": final_losses_json(distilled.final), "teacher_agreement": agreement,
                  "synthetic_path": str(synthetic_path), "seconds_load": seconds_load,
                  "seconds_distill": seconds_distill, "flops_distill": trial_flops(cfg, spec)[0],
                  "seconds_audit": seconds_audit, **leakage.summary}
    rows = []
    for evaluation in cfg.eval.runs():
        began = time.perf_counter()
        scored = score_on_dataset(distilled.images, distilled.labels, evaluation, cfg.model, cfg.data, dataset,
                                  device, options.reporter, problem.store)
        rows.append(row(Status.OK, evaluation, **scored.fields(), **set_fields,
                        seconds_evaluate=time.perf_counter() - began + scored.carried_seconds,
                        flops_evaluate=evaluation.seeds * evaluation_flops(cfg, evaluation, spec)))
    return finish(rows)


Labelled = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def teacher_agreement(teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((teacher(images).argmax(1) == labels).float().mean())


def score_on_dataset(images: torch.Tensor, labels: torch.Tensor, evaluation: Evaluation, model_cfg: ModelConfig,
                     data_cfg: DataConfig, dataset: ImageDataset, device: torch.device,
                     reporter: Reporter | None = None, store: CheckpointStore | None = None) -> Scored:
    """One evaluation on this dataset's validation split and test set; `pdd evaluate` uses it too.

    model_cfg is the trial's ConvNet; an evaluation on another architecture builds that one instead."""
    split = split_train_val(dataset.train_labels, data_cfg.val_per_class, data_cfg.split_seed, classes=dataset.classes)
    val, test = evaluation_splits(dataset, split.val_idx, evaluation.max_images, data_cfg.split_seed, device)
    return score(images.to(device), labels.to(device), evaluation, eval_model_config(model_cfg, evaluation.arch),
                 dataset.num_classes, val, test, dataset.normalization, reporter or NullReporter(), store,
                 label=checkpoint_label(evaluation), title=f"evaluate {evaluation.name}")


def checkpoint_label(evaluation: Evaluation) -> str:
    """The name an evaluation's finished models are checkpointed under, beside the trial's distillation."""
    return f"evaluate-{evaluation.key}"


def evaluation_splits(dataset: ImageDataset, val_idx: torch.Tensor, max_images: int | None, seed: int,
                      device: torch.device) -> tuple[Labelled, Labelled]:
    """uint8 (images, labels) for validation and test; a cap keeps a random, not class-ordered, sample."""
    generator = torch.Generator().manual_seed(seed)

    def take(images: torch.Tensor, labels: torch.Tensor) -> Labelled:
        if max_images is not None and max_images < len(images):
            keep = torch.randperm(len(images), generator=generator)[:max_images]
            images, labels = images[keep], labels[keep]
        return images.to(device), labels.to(device)

    return (take(dataset.train_images[val_idx], dataset.train_labels[val_idx]),
            take(dataset.test_images, dataset.test_labels))


@dataclass(frozen=True)
class SavedTrial:
    """The trial a saved set came from: its results directory, its own rows and its config."""

    results: Path
    trial_id: str
    rows: list[dict[str, Any]]
    cfg: TrialConfig


def saved_trial(set_path: Path) -> SavedTrial | None:
    """The trial behind RESULTS/_artifacts/TRIAL_ID/synthetic.pt, if RESULTS still holds its rows."""
    artifacts = set_path.resolve().parent
    if set_path.name != "synthetic.pt" or artifacts.parent.name != ARTIFACTS:
        return None
    results, tid = artifacts.parent.parent, artifacts.name
    rows = read_rows(results, tid)
    if not rows:
        return None
    return SavedTrial(results, tid, rows, TrialConfig.model_validate_json(rows[0]["config"]))


def rescore(saved: SavedTrial, images: torch.Tensor, labels: torch.Tensor, evaluation: Evaluation,
            dataset: ImageDataset, device: torch.device, reporter: Reporter | None = None,
            force: bool = False) -> dict[str, Any]:
    """Judge a trial's saved set once more and store that row beside the trial's (scored_by 'evaluate'); an
    evaluation already stored is returned as stored unless `force`. Its models checkpoint with the trial's, so a
    killed run resumes."""
    stored = read_rows(saved.results, saved.trial_id, evaluation.key)
    if stored and stored[0]["status"] == Status.OK and not force:
        return stored[0]
    template = saved.rows[0]
    if template["dataset_hash"] != dataset.content_hash:
        raise PddError(f"the set was distilled from {template['dataset_name']} (content "
                       f"{template['dataset_hash'][:12]}), not from {dataset.name} (content "
                       f"{dataset.content_hash[:12]}): pass the trial's --data")
    began = time.perf_counter()
    store = DirStore(saved.results / ARTIFACTS / saved.trial_id / "checkpoints")
    if force:
        store.discard(checkpoint_label(evaluation))
    scored = score_on_dataset(images, labels, evaluation, saved.cfg.model, saved.cfg.data, dataset, device,
                              reporter, store)
    row = trial_row(saved.cfg, saved.trial_id, template["sweep_id"], Stage(template["stage"]), Status.OK,
                    evaluation, ScoredBy.EVALUATE, **{name: template[name] for name in SET_COLUMNS},
                    **scored.fields(), git_commit=git_commit(), device=str(device),
                    seconds_evaluate=time.perf_counter() - began + scored.carried_seconds,
                    flops_evaluate=evaluation.seeds * evaluation_flops(saved.cfg, evaluation, dataset.spec))
    write_rows(saved.results, [row], evaluation.key)
    store.discard(checkpoint_label(evaluation))
    return row
