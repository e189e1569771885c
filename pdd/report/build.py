"""A report from results directories: one section per directory, the first beside the paper, the others beside
the first (`pdd report A B`: B's table with its deltas to A)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pdd.full_data import full_data_accuracy, read_full_data
from pdd.method_spec import SPECS
from pdd.paper import DATASET, PAPER, PAPER_BUDGET
from pdd.report.figures import figures
from pdd.report.judgements import FullDataLookup, audit_table, cross_architecture_table, gain_table
from pdd.report.model import Footnotes, Report, Section
from pdd.report.outcomes import Sweep, read_sweep_results
from pdd.report.tables import (
    Reference,
    configs_table,
    main_table,
    no_reference,
    paired_against_table,
    paired_table,
    paper_reference,
    sweep_reference,
    trials_table,
)
from pdd.results import Stage
from pdd.sources import dataset_named

SOURCE = {
    Stage.CONFIRM: "the confirm stage ({rows} rows over subset seeds {subset_seeds}); each value pools the test "
                   "accuracies of every evaluation model of the confirmed config",
    Stage.TRIAL: "no confirm-stage rows, so the table falls back to the {rows} rows of stage 'trial' (local `pdd "
                 "trial` runs), not a confirmed sweep; each value pools the evaluation models of the config with the "
                 "best validation accuracy",
}
PROTOCOL_TEXT = {
    "paper": "paper: each evaluation model trained with SAM (rho 0.001) over SGD lr 0.1, as the paper's supplement",
    "dc": "dc: each evaluation model trained with plain SGD lr 0.01 as the DC/DM reference's evaluate_synset, the "
          "protocol of published DM, DC, DSA, MTT and DD-Ranking numbers",
}
SELECTION = ("hyperparameters (α, γ, init) were chosen on validation accuracy (training images held out from the "
             "teacher and from T'), never on test accuracy, which is only reported")


def build_report(directories: Sequence[str | Path]) -> Report:
    """A section per directory and protocol; the paper is the reference of the first directory's paper-protocol
    section (its Table 1 was measured that way), and each later directory is set beside the first, protocol by
    protocol."""
    per_directory = [{sweep.protocol: sweep for sweep in read_sweep_results(directory)} for directory in directories]
    footnotes = Footnotes()
    base = per_directory[0]
    datasets = next(iter(base.values())).values("dataset_name")
    on_papers_data = (dataset := dataset_named(datasets)) is not None and dataset.key == DATASET
    shown = ", ".join(datasets) or "an unrecorded dataset"
    sections = []
    for protocol, sweep in base.items():
        if not on_papers_data:
            title, reference = f"Test accuracy (%) on {shown}", paper_reference(datasets)
            compared = f"nothing: the paper ({PAPER}) reports no numbers on {shown}"
        elif protocol == "paper":
            title, reference, compared = "Test accuracy (%) beside the paper's Table 1", paper_reference(datasets), \
                f"the paper: {PAPER}"
        else:
            title, reference = f"Test accuracy (%), {protocol} protocol", no_reference
            compared = "nothing: the paper's Table 1 was measured under the paper protocol"
        sections.append(section(len(sections), sweep, reference, title, compared, footnotes))
    for later in per_directory[1:]:
        for protocol, sweep in later.items():
            first = base.get(protocol)
            reference = no_reference if first is None else sweep_reference(first)
            compared = (f"{first.directory}, {protocol} protocol (Δ = this directory − that one)" if first else
                        f"nothing: {base_name(base)} has no {protocol}-protocol rows")
            title = f"Test accuracy (%) with deltas to {base_name(base)}" + \
                ("" if protocol == "paper" else f", {protocol} protocol")
            sections.append(section(len(sections), sweep, reference, title, compared, footnotes, first))
    title = "pdd report: " + " vs ".join(base_name(sweeps) for sweeps in per_directory)
    return Report(title, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sections, footnotes)


def base_name(sweeps: dict[str, Sweep]) -> str:
    return next(iter(sweeps.values())).name


def section(index: int, sweep: Sweep, reference: Reference, title: str, compared_with: str,
            footnotes: Footnotes, base: Sweep | None = None) -> Section:
    """base: the first directory's sweep under the same protocol, which a later directory is paired against."""
    tables = [main_table(sweep, reference, footnotes, f"s{index}-main", title),
              configs_table(sweep, footnotes, f"s{index}-configs"),
              trials_table(sweep, footnotes, f"s{index}-trials"),
              paired_table(sweep, f"s{index}-paired")]
    if base is not None:
        tables.append(paired_against_table(sweep, base, f"s{index}-paired-base"))
    tables.append(gain_table(sweep, recorded_full_data(sweep), f"s{index}-gain"))
    tables += [table for table in (cross_architecture_table(sweep, f"s{index}-networks"),
                                   audit_table(sweep, f"s{index}-audit")) if table is not None]
    drawn, remarks = figures(sweep, prefix=f"{index}-")
    return Section(f"{sweep.name}, {sweep.protocol} protocol", provenance(sweep, compared_with), tables, drawn,
                   remarks)


def recorded_full_data(sweep: Sweep) -> FullDataLookup:
    """The full-data accuracies `pdd baseline full-data` recorded in the sweep's directory for its dataset."""
    records = read_full_data(sweep.directory)
    hashes = sweep.values("dataset_hash")

    def lookup(protocol: str, arch: str) -> float | None:
        found = [record for digest in hashes if (record := full_data_accuracy(records, digest, protocol, arch))]
        return found[0].test_mean if len(hashes) == 1 and found else None
    return lookup


def provenance(sweep: Sweep, compared_with: str) -> list[tuple[str, str]]:
    staged = [row for row in sweep.rows if row["stage"] == sweep.stage]
    subset_seeds = ", ".join(str(seed) for seed in sorted({row["subset_seed"] for row in staged}))
    return [
        ("Results", str(sweep.directory)),
        ("Sweep", ", ".join(sweep.values("sweep_id"))),
        ("Budget", ", ".join(sweep.values("budget"))),
        ("Protocol", PROTOCOL_TEXT.get(sweep.protocol, sweep.protocol)),
        ("Budget against the paper", budget_against_paper(staged)),
        ("Dataset", ", ".join(sweep.values("dataset_name")) or "not recorded"),
        ("Commit", ", ".join(commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
                             for commit in sweep.values("git_commit")) or "not recorded"),
        ("Date", date_range([row["finished_at"] for row in sweep.rows if row["finished_at"] is not None])),
        ("Main table", SOURCE[sweep.stage].format(rows=len(staged), subset_seeds=subset_seeds)),
        ("Selection", SELECTION),
        ("Compared with", compared_with),
    ]


def budget_against_paper(rows: list[dict]) -> str:
    """Iterations, evaluation epochs and models of the main table's rows, each beside what the paper used."""
    if not rows:
        return "no rows"
    configs = [json.loads(row["config"]) for row in rows]
    iterations: dict[str, set[int]] = {}
    for row, config in zip(rows, configs, strict=True):
        if row["method"] not in SPECS or SPECS[row["method"]].runs:  # a method that distils nothing has no count
            iterations.setdefault(row["method"], set()).add(config["iterations"])
    per_method = ", ".join(f"{method} {'/'.join(f'{n:,}' for n in sorted(counts))}"
                           for method, counts in sorted(iterations.items())) or "none"
    epochs = ", ".join(f"{n:,}" for n in sorted({row["eval_epochs"] for row in rows}))
    models = ", ".join(str(n) for n in sorted({json.loads(row["eval_config"])["seeds"] for row in rows}))
    subsets = len({row["subset_seed"] for row in rows})
    return (f"distillation iterations: {per_method} (paper: {PAPER_BUDGET['iterations']}); "
            f"evaluation epochs: {epochs} (paper: {PAPER_BUDGET['eval_epochs']}); "
            f"evaluation models per synthetic set: {models} (paper: {PAPER_BUDGET['eval_models']}), "
            f"over {subsets} draw(s) of T'")


def date_range(times: list[datetime]) -> str:
    if not times:
        return "not recorded"
    first, last = (moment.strftime("%Y-%m-%d %H:%M UTC") for moment in (min(times), max(times)))
    return first if first == last else f"{first} to {last}"
