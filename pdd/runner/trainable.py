"""One trial inside Tune: the trainable, its progress reports, its checkpoints, and the row of a failed trial."""

import hashlib
import io
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray import tune

from pdd.config import TeacherConfig, TrialConfig
from pdd.data import default_cache_dir
from pdd.errors import PddError, SweepError
from pdd.io import atomic_path
from pdd.method_spec import needs_teacher
from pdd.results import Stage, Status, trial_row, write_rows
from pdd.runner.storage import TEACHER_FILE, is_uri, read, write
from pdd.teacher import ensure_teacher, file_hash
from pdd.trial import TrialOptions, cached_dataset, resolve_device, run_trial, trial_id


@dataclass(frozen=True)
class SweepContext:
    """What every trial of the sweep shares; sent once through the object store, so each node fetches it once."""

    sweep_id: str
    root: str  # the sweep directory: a path every node sees, or a URI
    teacher: bytes | None  # None while a teacher trial trains it: trials then read it from the sweep directory
    gpu: float
    checkpoint_every: int
    checkpoint_seconds: float


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
    if config["stage"] == Stage.TEACHER:
        _train_teacher(TeacherConfig.model_validate(config["teacher"]), context.root)
        tune.report({"trial_function": {"started_at": started_at, "ended_at": time.time()}})
        return
    cfg = TrialConfig.model_validate(config["trial"])
    teacher = _node_teacher(context) if needs_teacher(cfg) else None
    if context.gpu > 0 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(context.gpu, 1.0))  # the trial's share of its GPU
    store = TuneStore()
    remote = is_uri(context.root)
    rows = Path(tempfile.mkdtemp(prefix="pdd-rows-")) if remote else Path(context.root)
    # Ray 2.60 no longer hides GPUs from workers that asked for none: a CPU trial says so, or "auto" would put it
    # on GPU 0, uncapped, beside the trials that asked for a share of it. A GPU trial takes the GPU where one is.
    device = "auto" if context.gpu > 0 else "cpu"
    options = TrialOptions(results=rows, teacher=teacher, device=device, sweep_id=context.sweep_id,
                           stage=Stage(config["stage"]), checkpoint_every=context.checkpoint_every,
                           checkpoint_seconds=context.checkpoint_seconds,
                           reporter=TuneReporter(), store=store)
    try:
        row = run_trial(cfg, options)[0]  # the primary evaluation: what the study maximises
    except Exception as error:
        failed = record_failure(cfg, options, error)
        if failed is not None:  # the driver's journal names the trial by it if Tune gives up on it
            tune.report({"pdd_trial_id": failed, "status": Status.FAILED})
        raise  # FailureConfig(max_failures) retries it from its last checkpoint
    finally:
        if remote:
            pafs.copy_files(str(rows), context.root)
            shutil.rmtree(rows)
    metrics = {"pdd_trial_id": row["trial_id"], "status": row["status"], "resumed_iteration": store.resumed_iteration}
    if row["status"] == Status.OK:
        metrics |= {"val_mean": row["val_mean"], "val_std": row["val_std"]}
    # The last report's round trip to the driver counts as outside the function: it is Tune's time. Nested, so
    # Tune's progress table (the first four numbers of a result) keeps showing val_mean instead of a timestamp.
    tune.report(metrics | {"trial_function": {"started_at": started_at, "ended_at": time.time()}})


def _train_teacher(cfg: TeacherConfig, root: str) -> None:
    """The teacher trial: trains (or finds in this node's cache) `teacher: auto`, then stores it in the sweep
    directory as a given teacher would be."""
    dataset = cached_dataset(cfg.data.source)
    write(root, TEACHER_FILE, ensure_teacher(cfg, dataset, resolve_device("auto")).read_bytes())


def _node_teacher(context: SweepContext) -> Path:
    """The sweep's teacher as a file in this node's cache, written by the node's first trial."""
    teacher = context.teacher if context.teacher is not None else read(context.root, TEACHER_FILE)
    if teacher is None:
        raise SweepError(f"{context.root}/{TEACHER_FILE} is missing, but the sweep's teacher trial has ended")
    path = default_cache_dir() / "teachers" / f"sweep-{hashlib.sha256(teacher).hexdigest()[:16]}.pt"
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_bytes(teacher)
    return path


def record_failure(cfg: TrialConfig, options: TrialOptions, error: Exception) -> str | None:
    """Rows with status failed and the reason, one per evaluation; the retry's rows replace them (same trial id).
    Returns that id."""
    try:
        dataset_hash = cached_dataset(cfg.data.source).content_hash
        device = resolve_device(options.device)
    except PddError:
        return None  # without the data or device there is no trial id to file the row under; Tune's log has why
    teacher_hash = file_hash(options.teacher) if options.teacher is not None else None
    tid = trial_id(cfg, options.sweep_id, options.stage, dataset_hash, teacher_hash, device)
    write_rows(options.results, [trial_row(cfg, tid, options.sweep_id, options.stage, Status.FAILED, evaluation,
                                           reason=f"{type(error).__name__}: {error}", dataset_hash=dataset_hash,
                                           teacher_hash=teacher_hash) for evaluation in cfg.eval.runs()])
    return tid
