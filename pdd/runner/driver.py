"""The driver: connects to (or starts) Ray, runs or continues the sweep's one Tune experiment."""

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from pdd.config import TeacherConfig, TrialConfig
from pdd.data import ImageDataset
from pdd.errors import SweepError
from pdd.method_spec import needs_teacher
from pdd.overhead import trial_slots
from pdd.results import Stage, Status, read_results
from pdd.runner.journal import JournalCallback, mirror_rows
from pdd.runner.progress import saved_trials
from pdd.runner.searcher import SweepSearcher
from pdd.runner.session import ray_session
from pdd.runner.storage import EXPERIMENT, TEACHER_FILE, TUNE_DIR, filesystem, load_saved, read, rows_dir, write
from pdd.runner.trainable import SweepContext, run_sweep_trial
from pdd.sweep import SweepSpec, study_key
from pdd.teacher import cached_teacher_path
from pdd.trial import cached_dataset


@dataclass
class DriverResult:
    root: str
    errored: int  # trials that failed after all retries
    unconfirmed: list[str]  # studies without a single ok search trial, so nothing to confirm
    slots: int  # trials the cluster fits at once, from the resources each asks for
    marks: dict[str, float]  # when Ray was up and the trials started and ended (UTC epoch seconds)


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


def execute(root: str, made: Materials, address: str | None) -> DriverResult:
    """Run, or continue, the sweep stored at root as one Tune experiment on the cluster at address, or on the
    embedded Ray (None) inside `session.cluster_environment`. Finished trials are never rerun. The sweep's Optuna
    journal gets the rows it lacks first, then each trial as it ends."""
    spec = made.spec
    marks: dict[str, float] = {}
    stored = read_results(rows_dir(root)).to_pylist()
    mirror_rows(root, spec, stored)
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
        results = _fit(spec, root, made, stored)
        marks["trials_ended"] = time.time()
    if _teacher_trial_failed(root):  # from Tune's saved state: a result without a report has no config
        raise SweepError(f"training the sweep's teacher failed, so no trial that needs it ran (its error is in "
                         f"{error_files(root)}); the other trials' rows are kept, and `pdd sweep resume` tries again")
    unconfirmed = unconfirmed_studies(spec, read_results(rows_dir(root)).to_pylist())
    return DriverResult(root, results.num_errors, unconfirmed, slots, marks)


def error_files(root: str) -> str:
    """Where Tune writes each failed trial's error (a glob)."""
    return f"{root}/{TUNE_DIR}/{EXPERIMENT}/*/error.txt"


def _check_fits(spec: SweepSpec) -> None:
    """On the embedded Ray, a trial asking for more than this machine has would wait forever."""
    available = ray.cluster_resources()
    for resource, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        if need > available.get(resource, 0):
            raise SweepError(f"a trial asks for {need:g} {resource} (resources.{resource.lower()}) but this machine "
                             f"has {available.get(resource, 0):g}; lower it or run on a cluster (--address)")


def _sweep_teacher(spec: SweepSpec, root: str, dataset: ImageDataset) -> Materials:
    """The sweep's teacher, copied into the sweep directory once so a resumed sweep uses the very same file."""
    stored = read(root, TEACHER_FILE)
    if stored is not None:
        return Materials(spec, stored, None)
    values = [study.base for study in spec.studies()] + [values for _, values in spec.unsearched()]
    needing = [cfg for cfg in map(TrialConfig.model_validate, values) if needs_teacher(cfg)]
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
    write(root, TEACHER_FILE, data)
    return Materials(spec, data, None)


def _fit(spec: SweepSpec, root: str, made: Materials, stored: list[dict[str, Any]]) -> tune.ResultGrid:
    """Run the sweep's Tune experiment, or continue it if a previous driver started it; `stored` is the sweep
    directory's rows."""
    context = SweepContext(spec.name, root, made.teacher, spec.resources.gpu, spec.checkpoint_every,
                           spec.checkpoint_seconds)
    trainable = tune.with_resources(tune.with_parameters(run_sweep_trial, context=context),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    path = f"{root}/{TUNE_DIR}/{EXPERIMENT}"
    if tune.Tuner.can_restore(path) and _teacher_trial_failed(root):
        # Its searcher gave up on the trials that need the teacher and finished, so the stored experiment can never
        # run them. A new one replays the rest: seeds are explicit, so every trial already run has its row and
        # returns it at once.
        fs, base = filesystem(path)
        fs.delete_dir(base)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        # A directory without Tune's state but with rows (copied from another machine) continues from its rows
        teacher_hash = hashlib.sha256(made.teacher).hexdigest() if made.teacher is not None else None
        searcher = SweepSearcher(spec, made.teacher_to_train, stored, teacher_hash)
        run_config = tune.RunConfig(
            name=EXPERIMENT, storage_path=f"{root}/{TUNE_DIR}",
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Each checkpoint holds every named state of its trial, so only the latest is worth its disk; but Tune
            # deletes the one before it ahead of saving the experiment state that names the new one, and a driver
            # killed in between was restored onto a deleted checkpoint. Keeping two closes that window.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2), callbacks=[JournalCallback(spec)], verbose=1)
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=searcher.most_trials, reuse_actors=True))
    return tuner.fit()


def _teacher_trial_failed(root: str) -> bool:
    return any(trial["status"] == "ERROR" and trial["config"]["stage"] == Stage.TEACHER
               for trial in saved_trials(root))


def unconfirmed_studies(spec: SweepSpec, rows: list[dict[str, Any]]) -> list[str]:
    """Keys of the studies without an ok search row: they had nothing to confirm."""
    searched = {study_key(spec.label_of(row), row["cell"]) for row in rows
                if row["sweep_id"] == spec.name and row["stage"] == Stage.SEARCH and row["status"] == Status.OK}
    return [study.key for study in spec.studies() if study.key not in searched]
