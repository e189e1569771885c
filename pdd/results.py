"""Trial results as a Parquet dataset: one row per evaluation of a trial's set, an explicit versioned schema,
atomic writes.

A trial distils one set and judges it under each protocol on each architecture its config lists: one row each,
together in `<trial_id>.parquet` (trial_id = sweep, cell, method and config hash), so a rerun or a resumed sweep
overwrites its own rows instead of adding more, and a crash leaves no half-written file. `pdd evaluate` judges a
trial's saved set again later (another protocol, architecture or epoch count) and writes that row beside them, as
`<trial_id>.<evaluation>.parquet`, marked scored_by "evaluate". pandas, duckdb and polars read the directory as one
table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pdd import __version__
from pdd.audit import SUMMARY_COLUMNS as AUDIT_COLUMNS
from pdd.config import cell_name
from pdd.errors import ResultsError
from pdd.io import atomic_path

if TYPE_CHECKING:
    from pdd.config import Evaluation, TrialConfig

SCHEMA_VERSION = 3
# Per-trial files (synthetic sets, grids, checkpoints) live beside the rows; the leading underscore makes
# pyarrow, pandas, duckdb and polars skip them when they read the directory as one Parquet dataset.
ARTIFACTS = "_artifacts"


class Stage(StrEnum):
    """Why a trial ran; a StrEnum, so rows store and compare as the plain strings."""

    TRIAL = "trial"  # a local `pdd trial`
    SEARCH = "search"  # a sweep's hyperparameter search, scored on validation accuracy
    CONFIRM = "confirm"  # a sweep's chosen config, rerun over several subset seeds
    TEACHER = "teacher"  # the sweep trial that trains `teacher: auto`; it writes no row


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"


class ScoredBy(StrEnum):
    """Who judged the row's set: the trial itself (its config's evaluations) or a later `pdd evaluate`."""

    TRIAL = "trial"
    EVALUATE = "evaluate"


ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64()}


def _list(item: pa.DataType) -> pa.DataType:
    # Parquet names list items "element"; naming them so here makes a read-back schema equal SCHEMA.
    return pa.list_(pa.field("element", item))


SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("trial_id", pa.string()),
    ("sweep_id", pa.string()),
    ("cell", pa.string()),              # "ipc=1,pipc=50"
    ("stage", pa.string()),             # Stage: "trial" | "search" | "confirm"
    ("status", pa.string()),            # Status: "ok" | "failed"
    ("reason", pa.string()),            # why a trial failed; null when ok
    ("method", pa.string()),
    ("ipc", pa.int32()),
    ("pipc", pa.int32()),               # null = all
    ("alpha", pa.float64()),
    ("gamma", pa.float64()),
    ("init", pa.string()),
    ("budget", pa.string()),
    ("protocol", pa.string()),          # how the set was judged: Evaluation.protocol (paper | dc)
    ("eval_model", pa.string()),        # on which network: Evaluation.arch
    ("eval_epochs", pa.int64()),
    ("eval_config", pa.string()),       # JSON of the Evaluation
    ("scored_by", pa.string()),         # ScoredBy: "trial" | "evaluate"
    ("seed", pa.int64()),
    ("subset_seed", pa.int64()),
    ("eval_seeds", _list(pa.int64())),
    ("val_acc", _list(pa.float64())),
    ("test_acc", _list(pa.float64())),
    ("val_mean", pa.float64()),
    ("val_std", pa.float64()),
    ("test_mean", pa.float64()),
    ("test_std", pa.float64()),
    ("final_losses", pa.string()),      # JSON: last iteration's loss terms and mean lambda
    ("teacher_agreement", pa.float64()),  # share of S the teacher assigns to its own class (primal feasibility)
    ("seconds_load", pa.float64()),
    ("seconds_distill", pa.float64()),
    ("seconds_evaluate", pa.float64()),
    ("seconds_audit", pa.float64()),
    ("flops_distill", pa.float64()),    # the FLOP model's count (pdd.bench, as `pdd sweep estimate`)
    ("flops_evaluate", pa.float64()),   # this evaluation's: training its models, then scoring val and test
    ("config", pa.string()),            # JSON of the full TrialConfig
    ("config_hash", pa.string()),
    ("pdd_version", pa.string()),
    ("git_commit", pa.string()),
    ("dataset_name", pa.string()),
    ("dataset_hash", pa.string()),
    ("teacher_hash", pa.string()),
    ("pipc_indices", _list(pa.int64())),  # which real images left the edge device
    ("synthetic_path", pa.string()),
    ("device", pa.string()),
    ("finished_at", pa.timestamp("ms", tz="UTC")),
    # the leakage audit of the set (pdd.audit): its settings, thresholds, distances and near copies
    *((name, ARROW_TYPES[kind]) for name, (kind, _) in AUDIT_COLUMNS.items()),
], metadata={"pdd_schema_version": str(SCHEMA_VERSION)})


# The columns that describe a trial's set rather than one judgement of it: every row of the trial repeats them.
SET_COLUMNS = ("dataset_name", "dataset_hash", "teacher_hash", "pipc_indices", "synthetic_path", "final_losses",
               "teacher_agreement", "seconds_load", "seconds_distill", "flops_distill", "seconds_audit",
               *AUDIT_COLUMNS)

# The TrialConfig fields a row repeats as columns, so tables filter and group by them without parsing `config`.
CONFIG_COLUMNS = ("method", "ipc", "pipc", "alpha", "gamma", "init", "budget", "seed", "subset_seed")


def trial_row(cfg: TrialConfig, trial_id: str, sweep_id: str, stage: Stage, status: Status, evaluation: Evaluation,
              scored_by: ScoredBy = ScoredBy.TRIAL, **fields: Any) -> dict[str, Any]:
    """One evaluation's row of a trial: who it is (ids, its config's columns, pdd's version), how the set was judged,
    `fields` (scores, timings, provenance) and when it finished, to the millisecond the schema stores."""
    now = datetime.now(UTC)
    return {"trial_id": trial_id, "sweep_id": sweep_id, "cell": cell_name(cfg.ipc, cfg.pipc), "stage": stage,
            "status": status, **{name: getattr(cfg, name) for name in CONFIG_COLUMNS}, "config": cfg.model_dump_json(),
            "protocol": evaluation.protocol, "eval_model": evaluation.arch, "eval_epochs": evaluation.epochs,
            "eval_config": evaluation.model_dump_json(), "scored_by": scored_by,
            "config_hash": cfg.hash(), "pdd_version": __version__,
            "finished_at": now.replace(microsecond=now.microsecond // 1000 * 1000)} | fields


def is_primary(row: dict[str, Any]) -> bool:
    """Whether the row is its trial's primary evaluation (its config's first protocol on its first network): the
    score a search maximised."""
    evaluation = json.loads(row["config"])["eval"]
    return (row["scored_by"] == ScoredBy.TRIAL and row["protocol"] == evaluation["protocols"][0]
            and row["eval_model"] == evaluation["models"][0])


def write_rows(directory: str | Path, rows: list[dict[str, Any]], evaluation: str | None = None) -> Path:
    """Write one trial's rows as <directory>/<trial_id>.parquet (or a later evaluation's as
    <trial_id>.<evaluation>.parquet), replacing an older file of the same name."""
    for row in rows:
        unknown = set(row) - set(SCHEMA.names)
        if unknown:
            raise ValueError(f"fields not in results schema v{SCHEMA_VERSION}: {sorted(unknown)}")
    if len({row["trial_id"] for row in rows}) != 1:
        raise ValueError("write_rows takes the rows of one trial")
    full = [{name: row.get(name) for name in SCHEMA.names} | {"schema_version": SCHEMA_VERSION} for row in rows]
    table = pa.Table.from_pylist(full, schema=SCHEMA)
    name = _safe(rows[0]["trial_id"]) + ("" if evaluation is None else f".{_safe(evaluation)}")
    path = Path(directory) / f"{name}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_results(directory: str | Path) -> pa.Table:
    """All rows of a results directory; a clear error for a missing directory or a foreign or newer schema."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultsError(f"no results directory at {directory}")
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return SCHEMA.empty_table()
    tables = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise ResultsError(f"cannot read results file {file}: {error}") from None
        version = (table.schema.metadata or {}).get(b"pdd_schema_version")
        if version is None:
            raise ResultsError(f"{file} is not a pdd results file (no pdd_schema_version)")
        if int(version) != SCHEMA_VERSION:
            raise ResultsError(f"{file} has results schema v{int(version)}; this pdd reads v{SCHEMA_VERSION}"
                               + (" (upgrade pdd)" if int(version) > SCHEMA_VERSION else ""))
        missing = set(SCHEMA.names) - set(table.column_names)
        if missing:
            raise ResultsError(f"{file} lacks columns of results schema v{SCHEMA_VERSION}: {sorted(missing)}")
        tables.append(table.select(SCHEMA.names).cast(SCHEMA))
    return pa.concat_tables(tables)


def final_losses_json(losses: dict[str, float]) -> str:
    return json.dumps(losses, sort_keys=True)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in name)


def read_rows(directory: str | Path, trial_id: str, evaluation: str | None = None) -> list[dict[str, Any]]:
    """The stored rows of one trial (or of one later evaluation of it); empty if it has not finished yet."""
    name = _safe(trial_id) + ("" if evaluation is None else f".{_safe(evaluation)}")
    path = Path(directory) / f"{name}.parquet"
    if not path.exists():
        return []
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as error:
        raise ResultsError(f"cannot read results file {path}: {error}") from None
    if not rows:
        raise ResultsError(f"results file {path} holds no rows")
    return rows
