"""Ray Tune and Optuna glue, the only module that imports them: runs a SweepSpec as one Tune experiment.

    pdd sweep run sweeps/smoke.yaml                                   # an embedded Ray, started for the run
    pdd sweep submit sweeps/table1.yaml --address http://127.0.0.1:8265 --storage s3://bucket/pdd

Two stages share one queue. Search: the searcher routes every suggestion to one Optuna TPE study per (cell,
method entry); each study evaluates the paper's point first and maximises validation accuracy. Confirm: each
study's best validation config, once its search is over, and every unsearched entry (random), rerun once per
subset seed with the sweep's evaluation seeds; reports show these rows.

A sweep directory, `<storage>/<name>/`, holds everything: one Parquet row per trial (pdd.results) and, skipped by
Parquet readers, `_sweep.json` (the validated spec, so a sweep resumes without its file), `_teacher.pt`,
`_artifacts/` and Tune's experiment under `_tune/`. Multi-node runs need it on storage every node reaches: a
shared filesystem path or an s3:// URI (rows are then written on the node and uploaded, and the driver mirrors
them to results/<name>/).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
import ray
import torch
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pdd import __version__
from pdd.config import TeacherConfig, TrialConfig
from pdd.data import ImageDataset, default_cache_dir
from pdd.errors import PddError, SweepError
from pdd.io import atomic_path
from pdd.methods import METHODS
from pdd.overhead import Overhead, sweep_overhead, trial_slots, tune_window
from pdd.results import read_results, write_row
from pdd.sweep import SweepSpec, study_key
from pdd.teacher import cached_teacher_path, ensure_teacher, file_hash
from pdd.trial import TrialOptions, cached_dataset, cell_name, resolve_device, run_trial, trial_id

METRIC = "val_mean"  # what every study maximises; test accuracy never reaches Tune
TEACHER_STAGE = "teacher"  # the trial that trains a `teacher: auto` nobody has cached
# Beside the rows, so with a leading underscore: Parquet readers of the directory skip them (as _artifacts/).
SPEC_FILE = "_sweep.json"
TEACHER_FILE = "_teacher.pt"
DRIVER_FILE = "_driver.json"  # the last driver run's start, end, stage times and trial slots (pdd sweep overhead)
TUNE_DIR = "_tune"
EXPERIMENT = "sweep"  # the Tune experiment in TUNE_DIR
# Not uploaded with a submitted job: environments, outputs and caches.
JOB_EXCLUDES = [".venv", ".git", "results", "runs", "teachers", ".cache", "**/__pycache__", ".pytest_cache",
                ".ruff_cache", "*.egg-info"]


# ---------------------------------------------------------------------------------------------------------------
# Search: one queue, one TPE study per (cell, method entry)


def suggest_space(trial: optuna.Trial, space: dict[str, Any]) -> None:
    """Optuna's define-by-run space: log-uniform weights, categorical init (module level, so it pickles)."""
    for name, domain in space.items():
        if isinstance(domain, list):
            trial.suggest_categorical(name, domain)
        else:
            trial.suggest_float(name, domain["low"], domain["high"], log=True)


def needs_teacher(values: dict[str, Any]) -> bool:
    """Whether a trial with these TrialConfig values needs the sweep's teacher."""
    cfg = TrialConfig.model_validate(values)
    return METHODS[cfg.method].needs_teacher(cfg)


class SweepSearcher(Searcher):
    """The whole sweep as one Tune queue: search trials routed to one Optuna study each, and confirm trials.

    Search first: the least-tried study with room goes next, so all cells progress together, and a study has at
    most max_concurrent trials in flight, so TPE suggests from finished results. A slot that no study can use
    takes a confirm trial: an unsearched entry's (random) at any time, a study's once all its search trials have
    ended, with the config of its best val_mean (test accuracy never reaches Tune). So no slot waits for the
    slowest study at a stage barrier, and actors carry over from search to confirm.
    A `teacher: auto` that is not cached trains as the first trial, in one slot; trials that need it wait in the
    queue until it is stored, so teacher-free ones (dm, random) fill the other slots. If it fails, they never start.
    The searcher has no metric of its own: progress results carry none, and each OptunaSearch reads val_mean.
    """

    def __init__(self, spec: SweepSpec, teacher_to_train: TeacherConfig | None = None):
        super().__init__()
        self.to_train = teacher_to_train
        self.teacher = "ready" if teacher_to_train is None else "to train"  # then training, then ready or failed
        self.teacher_trial: str | None = None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study created
        studies = spec.studies()
        self.spec = spec
        self.studies = {study.key: study for study in studies}
        self.optuna = {study.key: OptunaSearch(space=partial(suggest_space, space=study.space), metric=METRIC,
                                               mode="max", points_to_evaluate=study.points(), seed=spec.search.seed + k)
                       for k, study in enumerate(studies)}
        self.budgets = {study.key: study.budget(spec.search.trials) for study in studies}
        self.needs_teacher = {study.key: needs_teacher(study.base) for study in studies}
        self.started = dict.fromkeys(self.studies, 0)
        self.running: dict[str, tuple[str, dict[str, Any]]] = {}  # Tune trial id -> (study key, trial values)
        self.best: dict[str, tuple[float, dict[str, Any]]] = {}  # study key -> (val_mean, trial values)
        self.to_confirm = [confirmed for _, values in spec.unsearched() for confirmed in spec.confirm_values(values)]
        # every search trial, and one confirm trial per subset seed for each study and unsearched entry
        self.most_trials = sum(self.budgets.values()) + len(spec.confirm.subset_seeds) * (
            len(studies) + len(spec.unsearched())) + (teacher_to_train is not None)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.teacher == "to train":
            self.teacher = "training"
            self.teacher_trial = trial_id
            return {"stage": TEACHER_STAGE, "teacher": self.to_train.model_dump()}
        teacher_ready = self.teacher == "ready"
        in_flight = Counter(key for key, _ in self.running.values())
        to_search = [key for key in self.studies if self.started[key] < self.budgets[key]
                     and not (self.teacher == "failed" and self.needs_teacher[key])]
        ready = [key for key in to_search if in_flight[key] < self.spec.search.max_concurrent
                 and (teacher_ready or not self.needs_teacher[key])]
        if ready:
            key = min(ready, key=self.started.__getitem__)
            values = self.studies[key].base | self.optuna[key].suggest(trial_id)
            self.started[key] += 1
            self.running[trial_id] = (key, values)
            return {"stage": "search", "trial": values}
        if self.teacher == "failed":  # the driver says why once Tune's run is over
            self.to_confirm = [values for values in self.to_confirm if not needs_teacher(values)]
        for k, values in enumerate(self.to_confirm):
            if teacher_ready or not needs_teacher(values):
                return {"stage": "confirm", "trial": self.to_confirm.pop(k)}
        if self.running or to_search or self.to_confirm:
            return None  # Tune asks again on its next step
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id == self.teacher_trial:
            self.teacher = "failed" if error else "ready"
            return
        entry = self.running.pop(trial_id, None)
        if entry is None:  # a confirm trial, or an errored one resumed after its study already heard of its end
            return
        key, values = entry
        self.optuna[key].on_trial_complete(trial_id, result, error)
        if not error and result and METRIC in result and (key not in self.best or result[METRIC] > self.best[key][0]):
            self.best[key] = (result[METRIC], values)
        searched = self.started[key] == self.budgets[key] and all(other != key for other, _ in self.running.values())
        if searched and key in self.best:
            self.to_confirm += self.spec.confirm_values(self.best[key][1])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


# ---------------------------------------------------------------------------------------------------------------
# One trial inside Tune


@dataclass(frozen=True)
class SweepContext:
    """What every trial of the sweep shares; sent once through the object store, so each node fetches it once."""

    sweep_id: str
    root: str  # the sweep directory: a path every node sees, or a URI
    teacher: bytes | None  # None while a teacher trial trains it: trials then read it from the sweep directory
    gpu: float
    checkpoint_every: int


class TuneReporter:
    """Progress as Tune results: at most one every `every` seconds, since each is a round trip to the driver.

    Keys avoid Tune's reserved result names (done, trial_id, ...): `done` would end the trial.
    """

    def __init__(self, every: float = 10.0):
        self.every = every
        self.totals: dict[str, int] = {}
        self.last = 0.0

    def start(self, phase: str, total: int) -> None:
        self.totals[phase] = total

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if done < self.totals[phase] and now - self.last < self.every:
            return
        self.last = now
        tune.report({"phase": phase, "step": done, "steps": self.totals[phase]} | metrics)


class TuneStore:
    """A CheckpointStore on tune.Checkpoint: every save reports all named states as one checkpoint.

    States are kept serialised, because a live state dict (an optimiser's) changes after it was saved. A trial
    that Tune restarts (node lost, retry) starts from the checkpoint Tune hands back, at the iteration it reached.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                self.blobs = {file.stem: file.read_bytes() for file in Path(folder).glob("*.ckpt")}
        iterations = [int(state["iteration"]) for state in map(self.load, self.blobs) if "iteration" in state]
        self.resumed_iteration = max(iterations, default=0)

    def load(self, name: str) -> dict[str, Any] | None:
        blob = self.blobs.get(name)
        return None if blob is None else torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)

    def save(self, name: str, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.blobs[name] = buffer.getvalue()
        with tempfile.TemporaryDirectory(prefix="pdd-checkpoint-") as folder:
            for stem, blob in self.blobs.items():
                (Path(folder) / f"{stem}.ckpt").write_bytes(blob)
            # report() persists the checkpoint to the run's storage before it returns
            progress = {"iteration": int(state["iteration"])} if "iteration" in state else {}
            tune.report({"checkpointed": name} | progress, checkpoint=tune.Checkpoint.from_directory(folder))


def run_sweep_trial(config: dict[str, Any], context: SweepContext) -> None:
    """Tune's trainable: one pdd trial, whose row goes to the sweep directory and val_mean to the study; or the
    teacher trial, which stores the sweep's teacher there.

    Its final result also carries when the function started and ended (UTC epoch seconds, wall clock so that
    trials on other nodes compare): `pdd sweep overhead` charges the time around them to Ray and Tune.
    """
    started_at = time.time()
    if config["stage"] == TEACHER_STAGE:
        _train_teacher(TeacherConfig.model_validate(config["teacher"]), context.root)
        tune.report({"trial_function": {"started_at": started_at, "ended_at": time.time()}})
        return
    cfg = TrialConfig.model_validate(config["trial"])
    teacher = _node_teacher(context) if METHODS[cfg.method].needs_teacher(cfg) else None
    if context.gpu > 0 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(context.gpu, 1.0))  # the trial's share of its GPU
    store = TuneStore()
    remote = is_uri(context.root)
    rows = Path(tempfile.mkdtemp(prefix="pdd-rows-")) if remote else Path(context.root)
    options = TrialOptions(results=rows, teacher=teacher, sweep_id=context.sweep_id, stage=config["stage"],
                           checkpoint_every=context.checkpoint_every, reporter=TuneReporter(), store=store)
    try:
        row = run_trial(cfg, options)
    except Exception as error:
        record_failure(cfg, options, error)
        raise  # FailureConfig(max_failures) retries it from its last checkpoint
    finally:
        if remote:
            pafs.copy_files(str(rows), context.root)
            shutil.rmtree(rows)
    metrics = {"pdd_trial_id": row["trial_id"], "status": row["status"], "resumed_iteration": store.resumed_iteration}
    if row["status"] == "ok":
        metrics |= {"val_mean": row["val_mean"], "val_std": row["val_std"]}
    # The last report's round trip to the driver counts as outside the function: it is Tune's time. Nested, so
    # Tune's progress table (the first four numbers of a result) keeps showing val_mean instead of a timestamp.
    tune.report(metrics | {"trial_function": {"started_at": started_at, "ended_at": time.time()}})


def _train_teacher(cfg: TeacherConfig, root: str) -> None:
    """The teacher trial: trains (or finds in this node's cache) `teacher: auto`, then stores it in the sweep
    directory as a given teacher would be."""
    dataset = cached_dataset(cfg.data.source)
    _write(root, TEACHER_FILE, ensure_teacher(cfg, dataset, resolve_device("auto")).read_bytes())


def _node_teacher(context: SweepContext) -> Path:
    """The sweep's teacher as a file in this node's cache, written by the node's first trial."""
    teacher = context.teacher if context.teacher is not None else _read(context.root, TEACHER_FILE)
    if teacher is None:
        raise SweepError(f"{context.root}/{TEACHER_FILE} is missing, but the sweep's teacher trial has ended")
    path = default_cache_dir() / "teachers" / f"sweep-{hashlib.sha256(teacher).hexdigest()[:16]}.pt"
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_bytes(teacher)
    return path


def record_failure(cfg: TrialConfig, options: TrialOptions, error: Exception) -> None:
    """A row with status failed and the reason; the retry's row replaces it (same trial id)."""
    try:
        dataset_hash = cached_dataset(cfg.data.source).content_hash
    except PddError:
        return  # without the data there is no trial id to file the row under; Tune's error log has the reason
    teacher_hash = file_hash(options.teacher) if options.teacher is not None else None
    tid = trial_id(cfg, options.sweep_id, options.stage, dataset_hash, teacher_hash)
    identity = {name: getattr(cfg, name) for name in
                ("method", "ipc", "pipc", "alpha", "gamma", "init", "budget", "seed", "subset_seed")}
    write_row(options.results, identity | {
        "trial_id": tid, "sweep_id": options.sweep_id, "cell": cell_name(cfg), "stage": options.stage,
        "status": "failed", "reason": f"{type(error).__name__}: {error}", "config": cfg.model_dump_json(),
        "config_hash": cfg.hash(), "pdd_version": __version__, "dataset_hash": dataset_hash,
        "teacher_hash": teacher_hash, "finished_at": datetime.now(UTC).replace(microsecond=0),
    })


# ---------------------------------------------------------------------------------------------------------------
# The sweep directory


def is_uri(location: str) -> bool:
    return "://" in location


def sweep_root(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if is_uri(storage) else str(Path(storage).resolve() / name)


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(root) if is_uri(root) else (pafs.LocalFileSystem(), root)


def _read(root: str, name: str) -> bytes | None:
    fs, base = _filesystem(root)
    if fs.get_file_info(f"{base}/{name}").type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(f"{base}/{name}") as stream:
        return stream.read()


def _write(root: str, name: str, data: bytes) -> None:
    """Write a sweep-directory file: atomically on a local path; an object store replaces an object in one step."""
    if not is_uri(root):
        with atomic_path(Path(root) / name) as tmp:
            tmp.write_bytes(data)
        return
    fs, base = _filesystem(root)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{name}") as stream:
        stream.write(data)


def rows_dir(root: str) -> Path:
    """Where this machine reads a sweep's rows: the directory itself, or a mirror of a remote one."""
    if not is_uri(root):
        return Path(root)
    mirror = Path("results") / root.rstrip("/").rsplit("/", 1)[-1]
    mirror.mkdir(parents=True, exist_ok=True)
    fs, base = _filesystem(root)
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.endswith(".parquet"):
            pafs.copy_files(info.path, str(mirror / info.base_name), source_filesystem=fs)
    return mirror


def prepare(spec: SweepSpec, storage: str) -> str:
    """Create the sweep directory with its spec, or accept the existing one if it holds the same spec."""
    root = sweep_root(storage, spec.name)
    saved = _read(root, SPEC_FILE)
    if saved is not None and SweepSpec.model_validate_json(saved) != spec:
        raise SweepError(f"{root} holds sweep '{spec.name}' with a different spec; rename the sweep, or continue "
                         f"the stored one with `pdd sweep resume {root}`")
    if saved is None:
        _write(root, SPEC_FILE, spec.model_dump_json(indent=1).encode())
    return root


def load_saved(root: str) -> SweepSpec:
    saved = _read(root, SPEC_FILE)
    if saved is None:
        raise SweepError(f"no sweep at {root} (no {SPEC_FILE}); start one with `pdd sweep run FILE`")
    return SweepSpec.model_validate_json(saved)


# ---------------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class Outcome:
    root: str
    errored: int  # trials that failed after all retries
    unconfirmed: list[str]  # studies without a single ok search trial, so nothing to confirm
    slots: int  # trials the cluster fits at once, from the resources each asks for
    marks: dict[str, float]  # when Ray was up and the trials started and ended (UTC epoch seconds)


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to a cluster, or start an embedded Ray on loopback for this run and shut it down after."""
    if address:
        ray.init(address=address)
    else:
        # The embedded Ray lives for one run and is reached on 127.0.0.1, but Ray's gRPC ports listen on every
        # interface: on a machine others can reach, start pdd with RAY_AUTH_MODE=token (the token comes from
        # RAY_AUTH_TOKEN or ~/.ray/auth_token). Ray reads the mode when it is imported, so it is set there or not
        # at all; unset, Ray 2.60 would switch a new local cluster to token auth and write ~/.ray/auth_token.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)  # never a running one
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Materials:
    """What every trial shares, made once by the driver before any trial starts."""

    spec: SweepSpec
    teacher: bytes | None  # the stored, given or cached teacher, when a trial needs one
    teacher_to_train: TeacherConfig | None  # `teacher: auto` that this machine has not cached: a trial trains it


def materials(root: str) -> Materials:
    """The stored spec and teacher, with the dataset decoded into the cache."""
    spec = load_saved(root)
    dataset = cached_dataset(spec.data.source)  # decode once into the node's uint8 cache; trials map it
    return _sweep_teacher(spec, root, dataset)


def execute(root: str, made: Materials, address: str | None = None) -> Outcome:
    """Run, or continue, the sweep stored at root as one Tune experiment. Finished trials are never rerun."""
    spec = made.spec
    marks: dict[str, float] = {}
    with ray_session(address):
        marks["ray_ready"] = time.time()
        if not address:
            _check_fits(spec)
        slots = trial_slots(ray.cluster_resources(), spec.resources.cpu, spec.resources.gpu)
        # With a searcher, Tune keeps one trial pending at a time, so it fills its slots one worker start after
        # another (seconds each, measured by `pdd sweep overhead`); one pending trial per slot starts them all at
        # once. A user's own setting wins.
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(slots, 1)))
        # Keeping one checkpoint per trial makes Tune save its experiment state at each checkpoint, and warn that
        # this may slow it down; the time between trials (`pdd sweep overhead`) shows it does not.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        marks["trials_started"] = time.time()
        results = _fit(spec, root, made)
        marks["trials_ended"] = time.time()
    for result in results:
        if result.error is not None and result.config.get("stage") == TEACHER_STAGE:
            raise SweepError(f"training the sweep's teacher failed, so no trial that needs it ran: {result.error}; "
                             f"the other trials' rows are kept, and `pdd sweep resume` tries again")
    unconfirmed = unconfirmed_studies(spec, read_results(rows_dir(root)).to_pylist())
    return Outcome(root, len(results.errors), unconfirmed, slots, marks)


def _check_fits(spec: SweepSpec) -> None:
    """On the embedded Ray, a trial asking for more than this machine has would wait forever."""
    available = ray.cluster_resources()
    for resource, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        if need > available.get(resource, 0):
            raise SweepError(f"a trial asks for {need:g} {resource} (resources.{resource.lower()}) but this machine "
                             f"has {available.get(resource, 0):g}; lower it or run on a cluster (--address)")


def _sweep_teacher(spec: SweepSpec, root: str, dataset: ImageDataset) -> Materials:
    """The sweep's teacher, copied into the sweep directory once so a resumed sweep uses the very same file."""
    stored = _read(root, TEACHER_FILE)
    if stored is not None:
        return Materials(spec, stored, None)
    values = [study.base for study in spec.studies()] + [values for _, values in spec.unsearched()]
    needing = [cfg for cfg in map(TrialConfig.model_validate, values) if METHODS[cfg.method].needs_teacher(cfg)]
    if not needing:
        return Materials(spec, None, None)
    if spec.teacher == "auto":
        teacher_cfg = TeacherConfig(budget=spec.budget, data=spec.data, model=needing[0].teacher_model)
        path = cached_teacher_path(teacher_cfg, dataset)
        if not path.exists():
            return Materials(spec, None, teacher_cfg)
    else:
        path = Path(spec.teacher)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SweepError(f"cannot read the sweep's teacher {path}: {error.strerror}") from None
    _write(root, TEACHER_FILE, data)
    return Materials(spec, data, None)


def _fit(spec: SweepSpec, root: str, made: Materials) -> tune.ResultGrid:
    """Run the sweep's Tune experiment, or continue it if a previous driver started it."""
    context = SweepContext(spec.name, root, made.teacher, spec.resources.gpu, spec.checkpoint_every)
    trainable = tune.with_resources(tune.with_parameters(run_sweep_trial, context=context),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    path = f"{root}/{TUNE_DIR}/{EXPERIMENT}"
    if tune.Tuner.can_restore(path) and _teacher_trial_failed(root):
        # Its searcher gave up on the trials that need the teacher and finished, so the stored experiment can never
        # run them. A new one replays the rest: seeds are explicit, so every trial already run has its row and
        # returns it at once.
        fs, base = _filesystem(path)
        fs.delete_dir(base)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        searcher = SweepSearcher(spec, made.teacher_to_train)
        run_config = tune.RunConfig(
            name=EXPERIMENT, storage_path=f"{root}/{TUNE_DIR}",
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Each checkpoint holds every named state of its trial, so only the latest is worth its disk.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1)
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=searcher.most_trials, reuse_actors=True))
    return tuner.fit()


def _teacher_trial_failed(root: str) -> bool:
    return any(trial["status"] == "ERROR" and trial["config"]["stage"] == TEACHER_STAGE
               for trial in _saved_trials(root))


def unconfirmed_studies(spec: SweepSpec, rows: list[dict[str, Any]]) -> list[str]:
    """Keys of the studies without an ok search row: they had nothing to confirm."""
    searched = {study_key(spec.label_of(row), row["cell"]) for row in rows
                if row["sweep_id"] == spec.name and row["stage"] == "search" and row["status"] == "ok"}
    return [study.key for study in spec.studies() if study.key not in searched]


# ---------------------------------------------------------------------------------------------------------------
# Progress of a sweep directory


@dataclass
class CellProgress:
    label: str
    cell: str
    budget: int  # search trials planned; 0 for an entry with nothing to search
    done: int
    running: int
    failed: int
    best_val: float | None
    confirmed: int
    to_confirm: int


def progress(root: str) -> list[CellProgress]:
    """Per (method entry, cell): search trials done, running and failed, the best val accuracy, confirm rows."""
    spec = load_saved(root)
    rows = [row for row in read_results(rows_dir(root)).to_pylist() if row["sweep_id"] == spec.name]
    running = Counter(study_key(spec.label_of(config["trial"]), cell_name(TrialConfig.model_validate(config["trial"])))
                      for config in _running_configs(root) if config["stage"] != TEACHER_STAGE)
    entries = [(study.label, study.base, study.budget(spec.search.trials)) for study in spec.studies()]
    entries += [(label, values, 0) for label, values in spec.unsearched()]
    table = []
    for label, values, budget in entries:
        cell = cell_name(TrialConfig.model_validate(values))
        mine = [row for row in rows if study_key(spec.label_of(row), row["cell"]) == study_key(label, cell)]
        vals = [row[METRIC] for row in mine if row["stage"] == "search" and row["status"] == "ok"]
        table.append(CellProgress(
            label, cell, budget, done=len(vals), running=running[study_key(label, cell)],
            failed=sum(row["status"] != "ok" for row in mine), best_val=max(vals, default=None),
            confirmed=sum(row["stage"] == "confirm" and row["status"] == "ok" for row in mine),
            to_confirm=len(spec.confirm.subset_seeds)))
    return table


def _saved_trials(root: str) -> list[dict[str, Any]]:
    """Each trial (its status and config, among others) as Tune last saved its experiment state (every few seconds).

    Read from the state file itself: tune.ExperimentAnalysis loads a RUNNING trial as PENDING, as a restore would,
    and reads every trial's results besides.
    """
    fs, base = _filesystem(f"{root}/{TUNE_DIR}/{EXPERIMENT}")
    states = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                    if info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json"))
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as stream:
        return [json.loads(trial) for trial, _ in json.loads(stream.read())["trial_data"]]


def _running_configs(root: str) -> list[dict[str, Any]]:
    return [trial["config"] for trial in _saved_trials(root) if trial["status"] == "RUNNING"]


def teacher_training(root: str) -> bool:
    """Whether the trial that trains the sweep's `teacher: auto` is running."""
    return any(config["stage"] == TEACHER_STAGE for config in _running_configs(root))


# ---------------------------------------------------------------------------------------------------------------
# Overhead of the last driver run


def save_driver_run(root: str, record: dict[str, Any]) -> None:
    """The driver's start, end, marks and slots, so the overhead can be worked out after the fact."""
    _write(root, DRIVER_FILE, json.dumps(record, indent=1).encode())


def load_driver_run(root: str) -> dict[str, Any]:
    saved = _read(root, DRIVER_FILE)
    if saved is None:
        raise SweepError(f"no finished driver run recorded at {root} (no {DRIVER_FILE}); `pdd sweep run` or "
                         f"`pdd sweep resume` writes it when it ends")
    try:
        return json.loads(saved)
    except json.JSONDecodeError as error:
        raise SweepError(f"{root}/{DRIVER_FILE} is not valid JSON: {error}") from None


def trial_intervals(root: str) -> list[tuple[float, float]]:
    """(start, end) of the trial function for every trial whose final result Tune recorded."""
    fs, base = _filesystem(root)
    selector = pafs.FileSelector(f"{base}/{TUNE_DIR}", recursive=True, allow_not_found=True)
    intervals = []
    for info in fs.get_file_info(selector):
        if info.base_name != "result.json":
            continue
        with fs.open_input_stream(info.path) as stream:
            lines = stream.read().decode().splitlines()
        for line in reversed(lines):  # the final result is the last line; an older pdd's trials have none
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line Tune was still writing
            if "trial_function" in result:
                intervals.append((result["trial_function"]["started_at"], result["trial_function"]["ended_at"]))
                break
    return intervals


def overhead(root: str) -> tuple[Overhead, Overhead | None, dict[str, Any]]:
    """The last driver run's overhead, the same over Tune's run alone, and its record (for the marks)."""
    record = load_driver_run(root)
    intervals = trial_intervals(root)
    window = tune_window(record["marks"])
    in_tune = None if window is None else sweep_overhead(intervals, *window, record["slots"])
    return sweep_overhead(intervals, record["started_at"], record["ended_at"], record["slots"]), in_tune, record


# ---------------------------------------------------------------------------------------------------------------
# Ray Jobs


def submit(root: str, address: str, project: Path) -> str:
    """Submit `pdd sweep resume ROOT` as a Ray job with the project as working_dir; returns the job id."""
    return _job_call(address, lambda client: client.submit_job(
        entrypoint=f"python -m pdd sweep resume {shlex.quote(root)} --address auto",
        runtime_env={"working_dir": str(project), "excludes": JOB_EXCLUDES},
        metadata={"pdd_sweep": root}))


def job_info(job_id: str, address: str) -> dict[str, Any]:
    """The job's status and message, and the sweep directory it runs."""
    info = _job_call(address, lambda client: client.get_job_info(job_id))
    return {"status": info.status.value, "message": info.message, "sweep": (info.metadata or {}).get("pdd_sweep")}


def job_logs(job_id: str, address: str, follow: bool) -> Iterator[str]:
    """The job's output so far, or (follow) its output as it comes until the job ends."""
    if not follow:
        yield _job_call(address, lambda client: client.get_job_logs(job_id))
        return
    tail = _job_call(address, lambda client: client.tail_job_logs(job_id))
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(tail))
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def _job_call(address: str, call: Any) -> Any:
    """A Jobs API call whose failure (no server, unknown job) is one line."""
    from ray.job_submission import JobSubmissionClient

    try:
        return call(JobSubmissionClient(address))
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepError(f"Ray job server at {address}: {first}") from None
