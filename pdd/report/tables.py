"""The report's tables as format-neutral cells: Table 1's layout, the chosen configs, and the trials per cell."""

from __future__ import annotations

import math
from collections.abc import Callable

from pdd.config import pipc_text
from pdd.evaluate import mean_std
from pdd.method_spec import SPECS
from pdd.paper import paper_value
from pdd.report.model import Footnotes, Table, TableCell
from pdd.report.outcomes import STAGE_ORDER, CellKey, CellResult, Sweep, failure_reasons, stage_trials
from pdd.results import Status
from pdd.sources import dataset_named
from pdd.stats import Paired, paired

DASH = "—"

# A value to set beside ours: (whose, mean), (whose, None) where that source has no number for the cell, or None
# where nothing is compared.
Reference = Callable[[CellKey, str], tuple[str, float | None] | None]


def paper_reference(datasets: list[str]) -> Reference:
    """The paper's Table 1 as the reference for rows on these datasets: "—" wherever it has no number, e.g. on
    every cell of a dataset it never ran."""
    dataset = dataset_named(datasets)
    key = dataset.key if dataset else None

    def reference(cell: CellKey, label: str) -> tuple[str, float | None]:
        value = paper_value(key, cell[0], cell[1], label)
        return "paper", None if value is None else value[0]
    return reference


def no_reference(cell: CellKey, label: str) -> None:
    return None


def sweep_reference(base: Sweep) -> Reference:
    """Another sweep's values as the reference, for `pdd report A B`."""
    def reference(cell: CellKey, label: str) -> tuple[str, float] | None:
        test = base.result(cell, label).test
        return (base.name, round(mean_std(test)[0], 2)) if test else None
    return reference


def main_table(sweep: Sweep, reference: Reference, footnotes: Footnotes, table_id: str, title: str) -> Table:
    """Rows ipc × pipc, a column per method; mean ± std of test accuracy, the best of each row in bold, and ▲ where
    the best beats the row's runner-up, paired over shared draws, with an interval above 0."""
    datasets = sweep.values("dataset_name")
    rows = []
    for cell in sweep.cells:
        results = [sweep.result(cell, label) for label in sweep.labels]
        # Compare what is shown: two methods that print the same mean are both best.
        best = max((round(mean_std(r.test)[0], 2) for r in results if r.test), default=None)
        winner = significant_winner(results)
        rows.append([*cell_heads(cell), ratio_cell(cell[1], datasets),
                     *(accuracy_cell(result, best, result is winner, reference, footnotes) for result in results)])
    caption = (f"Test accuracy (%) on {', '.join(datasets) or 'an unrecorded dataset'} of the chosen config under the "
               f"{sweep.protocol} protocol: mean ± std over all its evaluation models ({sweep.stage} stage). Bold: the "
               f"best of the row. ▲: the best beats the row's runner-up, paired over the draws of T' with a 95% "
               f"interval above 0 (see the paired table).")
    return Table(table_id, title, ["ipc", "pipc", "ratio %", *sweep.labels], rows, caption)


def by_test_mean(results: list[CellResult]) -> list[CellResult]:
    """The results that have test accuracies, the highest mean first."""
    return sorted((r for r in results if r.test), key=lambda r: mean_std(r.test)[0], reverse=True)


def significant_winner(results: list[CellResult]) -> CellResult | None:
    """The row's best, if its paired interval against the runner-up lies above 0."""
    ranked = by_test_mean(results)
    if len(ranked) < 2:
        return None
    comparison = paired(ranked[0].per_draw, ranked[1].per_draw)
    return ranked[0] if comparison is not None and comparison.low > 0 else None


def accuracy_cell(result: CellResult, best: float | None, win: bool, reference: Reference,
                  footnotes: Footnotes) -> TableCell:
    if not result.test:
        return missing(result, footnotes)
    mean, std = mean_std(result.test)
    shown = round(mean, 2)
    failed = result.chosen_failures()
    tried = len(failed) + len(result.chosen)
    notes = [footnotes.add(f"{len(failed)} of the chosen config's {tried} {stage_trials(result.stage)} failed (left "
                           f"out of the mean): {failure_reasons(failed)}")] if failed else []
    ref = reference(result.cell, result.label)
    note = ("" if ref is None else f"{ref[0]} {DASH}" if ref[1] is None else
            f"{ref[0]} {ref[1]:.2f}, Δ {round(shown - ref[1], 2) or 0.0:+.2f}")
    return TableCell(f"{mean:.2f} ± {std:.2f}" + (" ▲" if win else ""), bold=shown == best, note=note,
                     footnotes=notes, sort=mean)


def paired_table(sweep: Sweep, table_id: str) -> Table:
    """Every two methods of a cell scored on shared draws of T': A − B per draw, its mean, 95% interval, signs."""
    headers = ["ipc", "pipc", "A − B", "draws", "per draw (subset seeds)", "mean", "95% interval", "A wins"]
    rows = []
    for cell in sweep.cells:
        ranked = by_test_mean([sweep.result(cell, label) for label in sweep.labels])
        for k, a in enumerate(ranked):
            for b in ranked[k + 1:]:
                comparison = paired(a.per_draw, b.per_draw)
                if comparison is not None:
                    rows.append([*cell_heads(cell), TableCell(f"{a.label} − {b.label}", sort=f"{a.label} {b.label}"),
                                 *paired_cells(comparison)])
    caption = (f"Paired differences of test accuracy ({sweep.protocol} protocol): for each draw of T' (subset seed) "
               f"both were scored on, the difference of the two configs' test means; the interval is the paired t "
               f"interval of the mean difference (none with one draw). Bold: an interval that excludes 0.")
    return Table(table_id, "Paired over draws of T'", headers, rows, caption)


def paired_against_table(sweep: Sweep, base: Sweep, table_id: str) -> Table:
    """Each method of this directory against each of the base directory's in the same cell, over the draws of T'
    both were scored on: what an ablation claims (the same draws, one thing changed) and whether it beats another
    method of the base."""
    headers = ["ipc", "pipc", "A (this) − B (base)", "draws", "per draw (subset seeds)", "mean", "95% interval",
               "A wins"]
    rows = []
    for cell in sweep.cells:
        for a in by_test_mean([sweep.result(cell, label) for label in sweep.labels]):
            for b in by_test_mean([base.result(cell, label) for label in base.labels]):
                comparison = paired(a.per_draw, b.per_draw)
                if comparison is not None:
                    rows.append([*cell_heads(cell), TableCell(f"{a.label} − {b.label} of {base.name}",
                                                              sort=f"{a.label} {b.label}"),
                                 *paired_cells(comparison)])
    caption = (f"Paired differences of test accuracy ({sweep.protocol} protocol) between this directory's configs "
               f"and {base.directory}'s: for each draw of T' (subset seed) both were scored on, A's test mean minus "
               f"B's; the interval is the paired t interval of the mean difference (none with one draw). Bold: an "
               f"interval that excludes 0.")
    return Table(table_id, f"Paired against {base.name}", headers, rows, caption)


def paired_cells(comparison: Paired) -> list[TableCell]:
    per_draw = ", ".join(f"{d:+.2f} ({seed})" for seed, d in zip(comparison.seeds, comparison.differences,
                                                                 strict=True))
    no_interval = math.isnan(comparison.low)
    interval = DASH if no_interval else f"[{comparison.low:+.2f}, {comparison.high:+.2f}]"
    return [count_cell(comparison.draws), TableCell(per_draw),
            TableCell(f"{comparison.mean:+.2f}", bold=comparison.significant, sort=comparison.mean),
            TableCell(interval, bold=comparison.significant, sort=None if no_interval else comparison.low),
            TableCell(f"{comparison.wins}/{comparison.draws}", sort=comparison.wins)]


def configs_table(sweep: Sweep, footnotes: Footnotes, table_id: str) -> Table:
    """Per cell and method: how many Optuna trials searched, the chosen α, γ and init, and what they scored."""
    headers = ["ipc", "pipc", "method", "Optuna trials", "α", "γ", "init", "val acc %", "test over subset seeds",
               "teacher agreement"]
    rows = []
    for cell in sweep.cells:
        for label in sweep.labels:
            if (cell, label) not in sweep.results:
                continue  # no row at all: the main table already says so
            result = sweep.results[cell, label]
            rows.append([*cell_heads(cell), TableCell(label, sort=label), count_cell(len(result.search)),
                         *chosen_cells(result, footnotes)])
    searched_under = sorted({row["protocol"] for result in sweep.results.values() for row in result.search})
    search_note = (f" Optuna trials: the search stage's, scored under the {' and '.join(searched_under)} protocol"
                   f"{'s' if len(searched_under) > 1 else ''}." if searched_under else "")
    caption = ("Hyperparameters chosen on validation accuracy." + search_note +
               " Test over subset seeds: mean ± std of the test means "
               "of the chosen config's draws of T' (n draws). Teacher agreement: the share of a set's images the "
               "teacher assigns to their own class (primal feasibility), the lowest over the draws; a dash for a "
               "method without a teacher.")
    return Table(table_id, "Chosen configurations", headers, rows, caption)


def chosen_cells(result: CellResult, footnotes: Footnotes) -> list[TableCell]:
    """α, γ, init, validation accuracy and the spread over subset seeds of the chosen config."""
    config = result.config
    if config is None:
        return [missing(result, footnotes), *(TableCell(DASH) for _ in range(5))]
    val_mean, val_std = mean_std(result.val)
    seeds_mean, seeds_std = mean_std(result.subset_means)
    unused = SPECS[config["method"]].unused  # a weight its loss leaves out is no choice: a dash, not its default
    return [TableCell(DASH) if "alpha" in unused else TableCell(f"{config['alpha']:.3g}", sort=config["alpha"]),
            TableCell(DASH) if "gamma" in unused else TableCell(f"{config['gamma']:.3g}", sort=config["gamma"]),
            TableCell(DASH) if "init" in unused else TableCell(str(config["init"]), sort=str(config["init"])),
            TableCell(f"{val_mean:.2f} ± {val_std:.2f}", sort=val_mean),
            TableCell(f"{seeds_mean:.2f}" + (f" ± {seeds_std:.2f}" if len(result.subset_means) > 1 else "")
                      + f" (n={len(result.subset_means)})", sort=seeds_mean),  # one draw has no spread to show
            agreement_cell(result)]


def agreement_cell(result: CellResult) -> TableCell:
    shares = [row["teacher_agreement"] for row in result.chosen if row["teacher_agreement"] is not None]
    if not shares:
        return TableCell(DASH)
    return TableCell(f"{min(shares):.1%}", sort=min(shares))


def trials_table(sweep: Sweep, footnotes: Footnotes, table_id: str) -> Table:
    """Per cell: trials per stage, how many finished and how many failed, with the reasons as a footnote."""
    present = {row["stage"] for row in sweep.rows}
    stages = [stage for stage in STAGE_ORDER if stage in present] + sorted(present - set(STAGE_ORDER))
    rows = []
    for cell in sweep.cells:
        in_cell = [row for row in sweep.rows if (row["ipc"], row["pipc"]) == cell]
        failed = [row for row in in_cell if row["status"] != Status.OK]
        notes = [footnotes.add(failures_by_method(sweep, cell))] if failed else []
        rows.append([*cell_heads(cell),
                     *(count_cell(sum(row["stage"] == stage for row in in_cell)) for stage in stages),
                     count_cell(len(in_cell) - len(failed)),
                     TableCell(str(len(failed)), footnotes=notes, sort=len(failed))])
    headers = ["ipc", "pipc", *map(stage_trials, stages), Status.OK, Status.FAILED]
    return Table(table_id, "Trials per cell", headers, rows, "Every row of the results directory, by stage and status.")


def failures_by_method(sweep: Sweep, cell: CellKey) -> str:
    parts = []
    for label in sweep.labels:
        failed = sweep.result(cell, label).failed
        if failed:
            parts.append(f"{label} {len(failed)} failed ({failure_reasons(failed)})")
    return "; ".join(parts)


def cell_heads(cell: CellKey) -> list[TableCell]:
    ipc, pipc = cell
    return [TableCell(str(ipc), sort=ipc),
            TableCell(pipc_text(pipc), sort=math.inf if pipc is None else pipc)]


def ratio_cell(pipc: int | None, datasets: list[str]) -> TableCell:
    ratio = ratio_percent(pipc, datasets)
    return TableCell("n/a" if ratio is None else f"{ratio:.3g}", sort=ratio)


def ratio_percent(pipc: int | None, datasets: list[str]) -> float | None:
    """pipc as a share of a class's training images, as Table 1's ratio column; None for an unknown dataset."""
    if pipc is None:
        return 100.0
    dataset = dataset_named(datasets)
    per_class = dataset.train_per_class if dataset else None
    return None if per_class is None else 100 * pipc / per_class


def count_cell(count: int) -> TableCell:
    return TableCell(str(count), sort=count)


def missing(result: CellResult, footnotes: Footnotes) -> TableCell:
    return TableCell(DASH, footnotes=[footnotes.add(result.missing_reason())])
