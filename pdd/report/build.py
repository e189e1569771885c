"""A report from results directories: one section per directory, the first beside the paper, the others beside
the first (`pdd report A B`: B's table with its deltas to A)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pdd.paper import DATASET, PAPER, PAPER_BUDGET
from pdd.report.figures import figures
from pdd.report.model import Footnotes, Report, Section
from pdd.report.outcomes import CONFIRM, TRIAL, Sweep, load_sweep
from pdd.report.tables import Reference, configs_table, main_table, paper_reference, sweep_reference, trials_table
from pdd.sources import dataset_named

SOURCE = {
    CONFIRM: "the confirm stage ({rows} rows over subset seeds {subset_seeds}); each value pools the test accuracies "
             "of every evaluation model of the confirmed config",
    TRIAL: "no confirm-stage rows, so the table falls back to the {rows} rows of stage 'trial' (local `pdd trial` "
           "runs), not a confirmed sweep; each value pools the evaluation models of the config with the best "
           "validation accuracy",
}
SELECTION = ("hyperparameters (α, γ, init) were chosen on validation accuracy (training images held out from the "
             "teacher and from T'), never on test accuracy, which is only reported")


def build_report(directories: Sequence[str | Path]) -> Report:
    sweeps = [load_sweep(directory) for directory in directories]
    footnotes = Footnotes()
    base = sweeps[0]
    datasets = base.values("dataset_name")
    dataset = dataset_named(datasets)
    if dataset is not None and dataset.key == DATASET:
        title, compared_with = "Test accuracy (%) beside the paper's Table 1", f"the paper: {PAPER}"
    else:
        shown = ", ".join(datasets) or "an unrecorded dataset"
        title = f"Test accuracy (%) on {shown}"
        compared_with = f"nothing: the paper ({PAPER}) reports no numbers on {shown}"
    sections = [section(0, base, paper_reference(datasets), title, compared_with, footnotes)]
    sections += [section(index, sweep, sweep_reference(base), f"Test accuracy (%) with deltas to {base.name}",
                         f"{base.directory} (Δ = this directory − that one)", footnotes)
                 for index, sweep in enumerate(sweeps[1:], start=1)]
    title = "pdd report: " + " vs ".join(sweep.name for sweep in sweeps)
    return Report(title, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sections, footnotes)


def section(index: int, sweep: Sweep, reference: Reference, title: str, compared_with: str,
            footnotes: Footnotes) -> Section:
    tables = [main_table(sweep, reference, footnotes, f"s{index}-main", title),
              configs_table(sweep, footnotes, f"s{index}-configs"),
              trials_table(sweep, footnotes, f"s{index}-trials")]
    drawn, remarks = figures(sweep, prefix=f"{index}-")
    return Section(sweep.name, provenance(sweep, compared_with), tables, drawn, remarks)


def provenance(sweep: Sweep, compared_with: str) -> list[tuple[str, str]]:
    staged = [row for row in sweep.rows if row["stage"] == sweep.stage]
    subset_seeds = ", ".join(str(seed) for seed in sorted({row["subset_seed"] for row in staged}))
    return [
        ("Results", str(sweep.directory)),
        ("Sweep", ", ".join(sweep.values("sweep_id"))),
        ("Budget", ", ".join(sweep.values("budget"))),
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
        if row["method"] != "random":  # random distils nothing
            iterations.setdefault(row["method"], set()).add(config["iterations"])
    per_method = ", ".join(f"{method} {'/'.join(f'{n:,}' for n in sorted(counts))}"
                           for method, counts in sorted(iterations.items())) or "none"
    epochs = ", ".join(f"{n:,}" for n in sorted({config["eval"]["epochs"] for config in configs}))
    models = ", ".join(str(n) for n in sorted({config["eval"]["seeds"] for config in configs}))
    subsets = len({row["subset_seed"] for row in rows})
    return (f"distillation iterations: {per_method} (paper: {PAPER_BUDGET['iterations']}); "
            f"SAM evaluation epochs: {epochs} (paper: {PAPER_BUDGET['eval_epochs']}); "
            f"evaluation models per synthetic set: {models} (paper: {PAPER_BUDGET['eval_models']}), "
            f"over {subsets} draw(s) of T'")


def date_range(times: list[datetime]) -> str:
    if not times:
        return "not recorded"
    first, last = (moment.strftime("%Y-%m-%d %H:%M UTC") for moment in (min(times), max(times)))
    return first if first == last else f"{first} to {last}"
