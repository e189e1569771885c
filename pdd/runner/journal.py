"""The sweep's Optuna journal: a copy of every study, written by the driver as trials end, for `pdd sweep dashboard`.

    <sweep dir>/_optuna-journal.log      (an s3:// sweep's is in the driver's local mirror, results/<name>/)

It is a mirror, not the storage behind OptunaSearch: those studies live in memory inside the searcher, which Tune
pickles with its experiment so that Tuner.restore brings them back. A Tune callback in the driver adds each search
or confirm trial as it ends (ok, failed, or given up on after its retries), and every driver run first adds the
sweep's rows that the journal lacks, so `pdd sweep resume` also gives a journal to a sweep run before there was one.

One Optuna study per pdd study, named by its key ("pdd ipc=1,pipc=10"), with the searched parameters and their
distributions, maximising val_mean; and one per (method entry, cell) for the confirm stage ("pdd ipc=1,pipc=10
confirm"), whose trials have the confirmed config's parameters and the subset seed. Each trial carries pdd's trial
id (user attr pdd_trial_id) and is added once per outcome: a failed trial may be followed by its ok rerun (a resumed
sweep retries trials that errored), never by a second failure, and nothing follows an ok one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune import Callback

from pdd.config import cell_name
from pdd.results import Stage, Status, is_primary
from pdd.runner.searcher import METRIC, distributions
from pdd.runner.storage import JOURNAL_FILE, local_dir, mirror_dir
from pdd.sweep import SweepSpec, study_key

ID_ATTR = "pdd_trial_id"  # also the key of pdd's trial id in a trial's Tune results (runner.trainable)


@dataclass(frozen=True)
class Finished:
    """A search or confirm trial that has ended, as the journal records it."""

    trial_id: str  # pdd's
    stage: Stage
    values: dict[str, Any]  # its TrialConfig values, or its row: method, ipc, pipc, alpha, gamma, init, subset_seed
    val_mean: float | None  # None unless it ended ok
    val_std: float | None = None
    reason: str | None = None
    started: datetime | None = None  # naive local time, as Optuna keeps its own
    ended: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Finished:
        ok = row["status"] == Status.OK
        ended = row["finished_at"].astimezone().replace(tzinfo=None) if row["finished_at"] else None
        took = sum(row[phase] or 0.0 for phase in ("seconds_load", "seconds_distill", "seconds_evaluate"))
        return cls(row["trial_id"], Stage(row["stage"]), row, row["val_mean"] if ok else None,
                   row["val_std"] if ok else None, row["reason"], ended and ended - timedelta(seconds=took), ended)

    @classmethod
    def from_tune(cls, config: dict[str, Any], result: dict[str, Any]) -> Finished | None:
        """From a Tune trial's config and last result; None for the teacher trial and for a trial that failed
        before it knew its pdd trial id (its data could not be read: Tune's error file has why)."""
        if config.get("stage") not in (Stage.SEARCH, Stage.CONFIRM) or ID_ATTR not in result:
            return None
        ok = result.get("status") == Status.OK and METRIC in result
        times = result.get("trial_function", {})
        started, ended = (datetime.fromtimestamp(times[name]) if name in times else None
                          for name in ("started_at", "ended_at"))
        return cls(result[ID_ATTR], Stage(config["stage"]), config["trial"], result[METRIC] if ok else None,
                   result.get("val_std") if ok else None, None, started, ended)


def confirm_name(key: str) -> str:
    return f"{key} confirm"


class Journal:
    """The journal of one sweep, open in the driver. Every study is created up front, so the dashboard lists them
    all before their first trial ends."""

    def __init__(self, path: Path, spec: SweepSpec):
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(path)))
        self.spec = spec
        existing = {study.study_name for study in self.storage.get_all_studies()}
        self.studies: dict[str, tuple[optuna.Study, dict[str, BaseDistribution]]] = {}
        seeds = {"subset_seed": CategoricalDistribution(spec.confirm.subset_seeds)}
        for study in spec.studies():
            self._open(existing, study.key, Stage.SEARCH, study.label, study.cell, distributions(study.space))
        confirmed = [(study.label, study.cell, study.space) for study in spec.studies()]
        confirmed += [(label, cell_name(values["ipc"], values["pipc"]), {}) for label, values in spec.unsearched()]
        for label, cell, space in confirmed:
            self._open(existing, confirm_name(study_key(label, cell)), Stage.CONFIRM, label, cell,
                       distributions(space) | seeds)

    def _open(self, existing: set[str], name: str, stage: Stage, label: str, cell: str,
              space: dict[str, BaseDistribution]) -> None:
        # create_study(load_if_exists=True) would log an attempt to create it again with every driver run
        if name in existing:
            self.studies[name] = (optuna.load_study(study_name=name, storage=self.storage), space)
            return
        study = optuna.create_study(storage=self.storage, study_name=name, direction="maximize")
        for attr, value in {"sweep": self.spec.name, "stage": str(stage), "method": label, "cell": cell}.items():
            study.set_user_attr(attr, value)
        with warnings.catch_warnings():  # "experimental since 3.2": the dashboard then names the objective
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])
        self.studies[name] = (study, space)

    def record(self, finished: Finished) -> bool:
        """Add a finished trial to its study; False when no study here has it, or it is recorded already."""
        key = study_key(self.spec.label_of(finished.values),
                        cell_name(finished.values["ipc"], finished.values["pipc"]))
        name = key if finished.stage == Stage.SEARCH else confirm_name(key)
        if name not in self.studies:
            return False
        study, space = self.studies[name]
        state = TrialState.COMPLETE if finished.val_mean is not None else TrialState.FAIL
        recorded = {trial.state for trial in study.get_trials(deepcopy=False)
                    if trial.user_attrs.get(ID_ATTR) == finished.trial_id}
        if recorded & {state, TrialState.COMPLETE}:
            return False
        attrs = {ID_ATTR: finished.trial_id, "val_std": finished.val_std, "reason": finished.reason}
        trial = optuna.trial.create_trial(
            state=state, value=finished.val_mean, params={param: finished.values[param] for param in space},
            distributions=space, user_attrs={attr: value for attr, value in attrs.items() if value is not None})
        if finished.started and finished.ended:
            trial.datetime_start, trial.datetime_complete = finished.started, finished.ended
        study.add_trial(trial)
        return True

    def record_rows(self, rows: list[dict[str, Any]]) -> int:
        """Add the sweep's search and confirm trials that the journal lacks, by their primary rows, oldest first;
        returns how many."""
        mine = [row for row in rows if row["sweep_id"] == self.spec.name and row["stage"] in (Stage.SEARCH,
                                                                                               Stage.CONFIRM)
                and is_primary(row)]
        mine.sort(key=lambda row: (row["finished_at"] is None, row["finished_at"] or 0, row["trial_id"]))
        return sum(self.record(Finished.from_row(row)) for row in mine)


def open_journal(root: str, spec: SweepSpec) -> Journal:
    return Journal(local_dir(root) / JOURNAL_FILE, spec)


def mirror_rows(root: str, spec: SweepSpec, rows: list[dict[str, Any]]) -> int:
    """What a driver run does before its trials start: add the sweep directory's rows (read by the caller, which
    also starts the searcher from them)."""
    return open_journal(root, spec).record_rows(rows)


class JournalCallback(Callback):
    """Adds each search or confirm trial to the journal as Tune hears of its end, in the driver process.

    Tune pickles its callbacks with the experiment, and a resumed sweep runs with this one as it was pickled, so it
    keeps no path: a trial's own, <sweep dir>/_tune/sweep/<trial>, says where the sweep directory is now, since
    Tune moves the trials of a restored experiment to where it was restored from.
    """

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.journals: dict[Path, Journal] = {}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"journals": {}}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial)

    def _record(self, trial: Any) -> None:
        finished = Finished.from_tune(trial.config, trial.last_result)
        if finished is None:
            return
        local = isinstance(trial.storage.storage_filesystem, pafs.LocalFileSystem)
        path = (Path(trial.path).parents[2] if local else mirror_dir(self.spec.name)) / JOURNAL_FILE
        if path not in self.journals:
            self.journals[path] = Journal(path, self.spec)
        self.journals[path].record(finished)
