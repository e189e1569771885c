"""Progress of a sweep directory, per (method entry, cell), from its rows and Tune's saved trial states."""

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from pdd.config import cell_name
from pdd.results import Stage, Status, is_primary, read_results
from pdd.runner.searcher import METRIC
from pdd.runner.storage import EXPERIMENT, TUNE_DIR, filesystem, load_saved, rows_dir
from pdd.sweep import study_key


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
    trials = [config["trial"] for config in running_configs(root) if config["stage"] != Stage.TEACHER]
    running = Counter(study_key(spec.label_of(trial), cell_name(trial["ipc"], trial["pipc"])) for trial in trials)
    entries = [(study.label, study.base, study.budget(spec.search.trials)) for study in spec.studies()]
    entries += [(label, values, 0) for label, values in spec.unsearched()]
    table = []
    for label, values, budget in entries:
        cell = cell_name(values["ipc"], values["pipc"])
        # a trial has a row per protocol and network, and later `pdd evaluate` rows: count its primary one
        mine = [row for row in rows if study_key(spec.label_of(row), row["cell"]) == study_key(label, cell)
                and is_primary(row)]
        vals = [row[METRIC] for row in mine if row["stage"] == Stage.SEARCH and row["status"] == Status.OK]
        table.append(CellProgress(
            label, cell, budget, done=len(vals), running=running[study_key(label, cell)],
            failed=sum(row["status"] != Status.OK for row in mine), best_val=max(vals, default=None),
            confirmed=sum(row["stage"] == Stage.CONFIRM and row["status"] == Status.OK for row in mine),
            to_confirm=len(spec.confirm.subset_seeds)))
    return table


def saved_trials(root: str) -> list[dict[str, Any]]:
    """Each trial (its status and config, among others) as Tune last saved its experiment state (every few seconds).

    Read from the state file itself: tune.ExperimentAnalysis loads a RUNNING trial as PENDING, as a restore would,
    and reads every trial's results besides.
    """
    fs, base = filesystem(f"{root}/{TUNE_DIR}/{EXPERIMENT}")
    states = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                    if info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json"))
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as stream:
        return [json.loads(trial) for trial, _ in json.loads(stream.read())["trial_data"]]


def running_configs(root: str) -> list[dict[str, Any]]:
    return [trial["config"] for trial in saved_trials(root) if trial["status"] == "RUNNING"]


def teacher_training(root: str) -> bool:
    """Whether the trial that trains the sweep's `teacher: auto` is running."""
    return any(config["stage"] == Stage.TEACHER for config in running_configs(root))
