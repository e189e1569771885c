"""The sweep as one Tune queue: search trials routed to one Optuna TPE study per (cell, method entry), then
confirm trials, and the teacher trial first when `teacher: auto` is not cached."""

import pickle
from collections import Counter
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pdd.config import TeacherConfig, TrialConfig
from pdd.method_spec import needs_teacher
from pdd.results import Stage, Status, is_primary
from pdd.sweep import Study, SweepSpec

METRIC = "val_mean"  # what every study maximises; test accuracy never reaches Tune


def distributions(space: dict[str, Any]) -> dict[str, BaseDistribution]:
    """A study's space (pdd.sweep.Study.space) as Optuna distributions: log-uniform weights, categorical init."""
    return {name: CategoricalDistribution(domain) if isinstance(domain, list)
            else FloatDistribution(domain["low"], domain["high"], log=True) for name, domain in space.items()}


def searched_rows(study: Study, rows: Iterable[dict[str, Any]], teacher_hash: str | None) -> list[dict[str, Any]]:
    """The ok search rows this study would produce now, oldest first: the config its base and the row's searched
    values give hashes as the row's did, from the same teacher (so rows of an earlier teacher are not its own)."""
    mine = []
    for row in rows:
        if row["stage"] != Stage.SEARCH or row["status"] != Status.OK or not is_primary(row):
            continue
        values = study.base | {name: row[name] for name in study.space}
        cfg = TrialConfig.model_validate(values)
        if cfg.hash() == row["config_hash"] and row["teacher_hash"] == (teacher_hash if needs_teacher(cfg) else None):
            mine.append(row)
    return sorted(mine, key=lambda row: (row["finished_at"], row["trial_id"]))


def _needs_teacher(values: dict[str, Any]) -> bool:
    """Whether a trial with these TrialConfig values needs the sweep's teacher."""
    return needs_teacher(TrialConfig.model_validate(values))


class SweepSearcher(Searcher):
    """The whole sweep as one Tune queue: search trials routed to one Optuna study each, and confirm trials.

    Search first: the least-tried study with room goes next, so all cells progress together, and a study has at
    most max_concurrent trials in flight, so TPE suggests from finished results. A slot that no study can use
    takes a confirm trial: an unsearched entry's (random) at any time, a study's once all its search trials have
    ended, with the config of its best val_mean (test accuracy never reaches Tune). So no slot waits for the
    slowest study at a stage barrier, and actors carry over from search to confirm. Confirm trials go draw by draw
    (every queued entry's subset seed 0, then 1, ...), so a sweep stopped early holds complete paired draws.
    A `teacher: auto` that is not cached trains as the first trial, in one slot; trials that need it wait in the
    queue until it is stored, so teacher-free ones (dm, random) fill the other slots. If it fails, they never start.
    The searcher has no metric of its own: progress results carry none, and each OptunaSearch reads val_mean.

    A searcher made for a sweep directory that already holds rows (Tune's saved experiment is gone: the directory
    was copied to another machine, or committed and checked out) starts each study from its stored search rows:
    Optuna is told their results, they count against the study's trials, and the paper's point is not run again if
    it is among them. A study whose search is complete goes straight to its confirm trials, which return their
    stored rows at once where they exist.
    """

    def __init__(self, spec: SweepSpec, teacher_to_train: TeacherConfig | None = None,
                 rows: Iterable[dict[str, Any]] = (), teacher_hash: str | None = None):
        super().__init__()
        self.to_train = teacher_to_train
        self.teacher = "ready" if teacher_to_train is None else "to train"  # then training, then ready or failed
        self.teacher_trial: str | None = None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study created
        studies = spec.studies()
        self.spec = spec
        self.studies = {study.key: study for study in studies}
        self.budgets = {study.key: study.budget(spec.search.trials) for study in studies}
        self.needs_teacher = {study.key: _needs_teacher(study.base) for study in studies}
        self.running: dict[str, tuple[str, dict[str, Any]]] = {}  # Tune trial id -> (study key, trial values)
        self.best: dict[str, tuple[float, dict[str, Any]]] = {}  # study key -> (val_mean, trial values)
        self.to_confirm = [confirmed for _, values in spec.unsearched() for confirmed in spec.confirm_values(values)]
        rows = [row for row in rows if row["sweep_id"] == spec.name]
        self.optuna: dict[str, OptunaSearch] = {}
        self.started: dict[str, int] = {}
        for k, study in enumerate(studies):
            stored = searched_rows(study, rows, teacher_hash)[:self.budgets[study.key]]
            tried = [{name: row[name] for name in study.space} for row in stored]
            search = OptunaSearch(space=distributions(study.space), metric=METRIC, mode="max",
                                  points_to_evaluate=[point for point in study.points() if point not in tried],
                                  seed=spec.search.seed + k)
            for params, row in zip(tried, stored, strict=True):
                search.add_evaluated_point(params, row[METRIC])
                self._note_result(study.key, row[METRIC], study.base | params)
            self.optuna[study.key], self.started[study.key] = search, len(stored)
            self._confirm_if_searched(study.key)
        # every search trial, and one confirm trial per subset seed for each study and unsearched entry
        self.most_trials = sum(self.budgets.values()) + len(spec.confirm.subset_seeds) * (
            len(studies) + len(spec.unsearched())) + (teacher_to_train is not None)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.teacher == "to train":
            self.teacher = "training"
            self.teacher_trial = trial_id
            return {"stage": Stage.TEACHER, "teacher": self.to_train.model_dump()}
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
            return {"stage": Stage.SEARCH, "trial": values}
        if self.teacher == "failed":  # the driver says why once Tune's run is over
            self.to_confirm = [values for values in self.to_confirm if not _needs_teacher(values)]
        startable = [k for k, values in enumerate(self.to_confirm) if teacher_ready or not _needs_teacher(values)]
        if startable:
            k = min(startable, key=lambda k: self.to_confirm[k]["subset_seed"])
            return {"stage": Stage.CONFIRM, "trial": self.to_confirm.pop(k)}
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
        if not error and result and METRIC in result:
            self._note_result(key, result[METRIC], values)
        self._confirm_if_searched(key)

    def _note_result(self, key: str, value: float, values: dict[str, Any]) -> None:
        if key not in self.best or value > self.best[key][0]:
            self.best[key] = (value, values)

    def _confirm_if_searched(self, key: str) -> None:
        """Once every search trial of a study has ended, queue its best config's confirm trials (none without an
        ok one)."""
        searched = self.started[key] == self.budgets[key] and all(other != key for other, _ in self.running.values())
        if searched and key in self.best:
            self.to_confirm += self.spec.confirm_values(self.best[key][1])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
