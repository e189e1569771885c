"""What one results directory says about each (cell, method): the chosen config, its pooled accuracies, its trials.

A sweep searches each cell × method on validation accuracy (stage "search"), then reruns the best config over
several subset seeds (stage "confirm"). The report reads the confirm rows; a directory without any (local
`pdd trial` runs, stage "trial") falls back to the trial rows. Where rows of the read stage hold several configs,
the one with the best validation accuracy is chosen, so test accuracy never picks anything.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdd.errors import ResultsError
from pdd.method_spec import SPECS, method_label
from pdd.results import ScoredBy, Stage, Status, read_results

Row = dict[str, Any]
CellKey = tuple[int, int | None]  # (ipc, pipc); pipc None = all

STAGE_ORDER = (Stage.SEARCH, Stage.CONFIRM, Stage.TRIAL)
STAGE_TRIALS = {Stage.SEARCH: "search trials", Stage.CONFIRM: "confirm trials", Stage.TRIAL: "local trials"}

LABEL_ORDER = tuple(label for spec in SPECS.values() for label in spec.labels)  # the main table's columns

# The network of the main tables, as in the paper's Table 1; rows on other networks go to the cross-architecture table.
MAIN_MODEL = "convnet"

# The fields that tell one config of a cell and method from another; seeds only repeat a config. A set distilled
# from another teacher is another config, so a teacher ablation's rows never pool with the study's.
CONFIG_FIELDS = ("budget", "alpha", "gamma", "init", "teacher_hash")


def stage_trials(stage: str) -> str:
    return STAGE_TRIALS.get(stage, f"{stage} trials")


def cell_order(cell: CellKey) -> tuple[int, bool, int]:
    ipc, pipc = cell
    return ipc, pipc is None, pipc or 0


@dataclass
class CellResult:
    """Every row of one cell and method label, and the ok rows of its chosen config."""

    cell: CellKey
    label: str
    rows: list[Row]
    stage: Stage        # the stage the chosen config is read from
    chosen: list[Row]   # empty when no ok row of that stage exists
    # The search stage's rows under whichever protocol scored them: a search under one protocol chose the config
    # that every protocol's section reports.
    search: list[Row] = field(default_factory=list)

    @property
    def test(self) -> list[float]:
        """All evaluation models' test accuracies of the chosen config, pooled over subset seeds."""
        return [acc for row in self.chosen for acc in row["test_acc"]]

    @property
    def val(self) -> list[float]:
        return [acc for row in self.chosen for acc in row["val_acc"]]

    @property
    def per_draw(self) -> dict[int, float]:
        """Test mean per subset seed (draw of T') of the chosen config: what paired comparisons pair on."""
        return {row["subset_seed"]: row["test_mean"] for row in self.chosen}

    @property
    def subset_means(self) -> list[float]:
        """One test mean per chosen row, i.e. per subset seed: how much the draw of T' moves the result."""
        return [row["test_mean"] for row in self.chosen]

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row["status"] != Status.OK]

    @property
    def config(self) -> Row | None:
        return self.chosen[0] if self.chosen else None

    def chosen_failures(self) -> list[Row]:
        """Failed rows of the chosen config in its stage, e.g. one subset seed that diverged."""
        key = config_key(self.chosen[0]) if self.chosen else None
        return [row for row in self.failed if row["stage"] == self.stage and config_key(row) == key]

    def missing_reason(self) -> str:
        """Why this cell and method has no value, in words a reader of the table can act on."""
        staged = [row for row in self.rows if row["stage"] == self.stage]
        if staged:
            return f"all {len(staged)} {stage_trials(self.stage)} failed: {failure_reasons(staged)}"
        if self.search and self.stage == Stage.CONFIRM:
            failed = sum(row["status"] != Status.OK for row in self.search)
            return f"not confirmed yet: {len(self.search)} search trials, {failed} of them failed"
        if self.rows:
            return f"no {stage_trials(self.stage)}, only {len(self.rows)} of other stages"
        return "no trials of this method in this cell"


@dataclass
class Sweep:
    """The rows of one results directory scored under one evaluation protocol."""

    directory: Path
    protocol: str
    rows: list[Row]
    stage: Stage
    results: dict[tuple[CellKey, str], CellResult]
    others: list[Row]  # this protocol's rows on other networks, and later re-evaluations

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def cells(self) -> list[CellKey]:
        return sorted({(row["ipc"], row["pipc"]) for row in self.rows}, key=cell_order)

    @property
    def labels(self) -> list[str]:
        present = {label for _, label in self.results}
        return [label for label in LABEL_ORDER if label in present] + sorted(present - set(LABEL_ORDER))

    def result(self, cell: CellKey, label: str) -> CellResult:
        """The result of a cell and label, an empty one where the directory has no row for it."""
        return self.results.get((cell, label)) or CellResult(cell, label, [], self.stage, [])

    def values(self, key: str) -> list[str]:
        """The distinct values of a column, in order of first appearance."""
        return list(dict.fromkeys(str(row[key]) for row in self.rows if row[key] is not None))


def config_key(row: Row) -> tuple:
    return tuple(row[name] for name in CONFIG_FIELDS)


def failure_reasons(rows: list[Row], limit: int = 160) -> str:
    reasons = dict.fromkeys((row["reason"] or "no reason recorded")[:limit]
                            for row in rows if row["status"] != Status.OK)
    return "; ".join(reasons)


def read_sweep_results(directory: str | Path) -> list[Sweep]:
    """Read a results directory and choose, per protocol, cell and method, the config the main table reports.

    One Sweep per evaluation protocol, the paper's first: numbers from two protocols are never pooled or compared.
    A Sweep's rows are the ConvNet rows the trials scored themselves; its `others` are the rest of that protocol's
    rows: other networks, and later `pdd evaluate` judgements (e.g. other epoch counts).
    """
    directory = Path(directory)
    every = read_rows_of(directory)
    protocols = sorted({row["protocol"] for row in every}, key=lambda protocol: (protocol != "paper", protocol))
    searched = grouped_by_cell(row for row in every if is_main(row) and row["stage"] == Stage.SEARCH)
    sweeps = []
    for protocol in protocols:
        rows = [row for row in every if row["protocol"] == protocol]
        main = [row for row in rows if is_main(row)]
        if main:
            sweeps.append(_sweep(directory, main, protocol, [row for row in rows if not is_main(row)], searched))
    if not sweeps:
        raise ResultsError(f"no ConvNet rows scored by trials in {directory}, only other networks' or later ones")
    return sweeps


def is_main(row: Row) -> bool:
    return row["scored_by"] == ScoredBy.TRIAL and row["eval_model"] == MAIN_MODEL


def read_rows_of(directory: str | Path) -> list[Row]:
    """Every row of a results directory, in trial order."""
    rows = sorted(read_results(directory).to_pylist(), key=lambda row: (row["trial_id"], row["eval_config"]))
    if not rows:
        raise ResultsError(f"no results in {directory} (no .parquet files)")
    return rows


def grouped_by_cell(rows: Iterable[Row]) -> dict[tuple[CellKey, str], list[Row]]:
    grouped: dict[tuple[CellKey, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row["ipc"], row["pipc"]), method_label(row["method"], row["init"])].append(row)
    return grouped


def _sweep(directory: Path, rows: list[Row], protocol: str, others: list[Row],
           searched: dict[tuple[CellKey, str], list[Row]]) -> Sweep:
    stage = Stage.CONFIRM if any(row["stage"] == Stage.CONFIRM for row in rows) else Stage.TRIAL
    results = {key: CellResult(key[0], key[1], group, stage, choose(group, stage), searched.get(key, []))
               for key, group in grouped_by_cell(rows).items()}
    return Sweep(directory, protocol, rows, stage, results, others)


def choose(rows: list[Row], stage: Stage) -> list[Row]:
    """The ok (and scored) rows of the stage's config with the best pooled validation accuracy."""
    configs: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if row["stage"] == stage and row["status"] == Status.OK and row["val_acc"] and row["test_acc"]:
            configs[config_key(row)].append(row)
    if not configs:
        return []
    best = max(configs.values(), key=lambda group: statistics.fmean(acc for row in group for acc in row["val_acc"]))
    return sorted(best, key=lambda row: row["subset_seed"])
