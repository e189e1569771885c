"""`pdd bench`: the speed benchmark as a table, and as JSON for the record.

    pdd bench --out benchmarks/cpu.json --data ../shared/datasets/cifar10-jpeg.tar.gz
    pdd bench --out benchmarks/cpu.json --sweep results/smoke    # with the overhead of a finished sweep
    pdd bench --tables benchmarks          # the README's generated tables from the committed JSON; times nothing
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from pdd.cli.common import app, console
from pdd.cli.sweep import overhead_report, print_overhead, sweep_dir
from pdd.io import atomic_path


@app.command()
def bench(
    out: Path | None = typer.Option(None, help="write the results as JSON here"),
    precision: str | None = typer.Option(
        None, help="bf16 (distillation forwards and scoring in bfloat16) or fp32 (plain); default: a trial's"),
    iterations: int = typer.Option(4, min=1, help="timed repeats per figure (after a warm-up)"),
    rounds: int = typer.Option(3, min=1, help="interleaved passes over the distillation settings; each figure "
                               "is its median pass"),
    data: str | None = typer.Option(None, help="time every figure on this dataset's shapes (default: CIFAR-10's) "
                                    "and trial start-up on it, cold and warm"),
    teacher: Path | None = typer.Option(None, help="a teacher for the start-up timing (else a dm trial)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    sweep: str | None = typer.Option(None, help="also report the trial-slot overhead of this finished sweep "
                                     "directory's last driver run (as `pdd sweep overhead`)"),
    tables: Path | None = typer.Option(None, help="only rewrite the generated tables of DIR/README.md from the "
                                       "benchmark JSON in DIR (pdd.speed_tables), timing nothing"),
) -> None:
    """Time distillation, evaluation and start-up; compare each step with this machine's FLOP ceiling."""
    if tables is not None:
        from pdd.speed_tables import update_readme

        changed = update_readme(tables)
        console.print(f"{tables / 'README.md'}: {'tables rewritten' if changed else 'tables already current'}")
        return
    from pdd import bench as benchmark
    from pdd.config import TrialConfig
    from pdd.trial import resolve_device

    # The config's own rule validates the flag; without one, the benchmark times what a trial runs by default.
    precision = TrialConfig.model_validate({} if precision is None else {"precision": precision}).precision
    overhead = None
    if sweep is not None:  # read first: a wrong directory should fail at once, not after minutes of timing
        from pdd.runner import driver_log  # imports Ray, so only when asked

        overhead = overhead_report(*driver_log.overhead(sweep_dir(sweep)))
    options = benchmark.Options(resolve_device(device), precision, iterations, rounds=rounds)
    report = benchmark.run(options, data, teacher)
    if overhead is not None:
        report["sweep_overhead"] = overhead
    print_report(report)
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {out}")


def print_report(report: dict) -> None:
    rates = report["matmul_gflops"]
    console.print(f"{report['device']} ({report['cpu']}), {report['threads']} threads, torch {report['torch']}, "
                  f"precision {report['precision']}; matmul {rates['fp32']:.0f} GFLOP/s fp32, "
                  f"{rates['bf16']:.0f} GFLOP/s bf16")
    precision = report["precision"]
    distill = Table("method", "ipc", "pipc", "ms/iter", "GFLOP/iter", f"of {precision} ceiling", "where the time goes",
                    title="Distillation")
    for row in report["distill"]:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(row["shares"].items(), key=lambda kv: -kv[1]))
        distill.add_row(row["method"], str(row["ipc"]), str(row["pipc"]), f"{row['ms_per_iteration']:.0f}",
                        f"{row['gflop_per_iteration']:.1f}", f"{row['fraction_of_ceiling']:.0%}", shares)
    console.print(distill)
    evaluation = Table("ipc", "batch", "ms/SAM step", "GFLOP/step", f"of {precision} ceiling",
                       title=f"Evaluation (SAM with DSA, {precision})")
    for row in report["sam_step"]:
        evaluation.add_row(str(row["ipc"]), str(row["batch"]), f"{row['ms_per_step']:.1f}",
                           f"{row['gflop_per_step']:.2f}", f"{row['fraction_of_ceiling']:.0%}")
    console.print(evaluation)
    test = report["test_pass"]
    console.print(f"test pass: {test['images_per_second']:.0f} images/s "
                  f"({test['fraction_of_ceiling']:.0%} of the {precision} ceiling)")
    trials = Table("method", "ipc", "pipc", "ms/iter", "component", "ratio", "steady", "ms/epoch", "component",
                   "ratio", "steady", title="Whole trials (run_trial on generated data) against the component "
                   "figures timed beside them; steady: the loops' medians, without set-up, warm-up and scoring")
    for row in report["trials"]:
        parts, ratio = row["components"], row["trial_over_components"]
        trials.add_row(row["method"], str(row["ipc"]), row["pipc"], f"{row['ms_per_iteration']:.0f}",
                       f"{parts['ms_per_iteration']:.0f}", f"{ratio['iteration']:.2f}",
                       f"{ratio['steady_iteration']:.2f}", f"{row['ms_per_epoch']:.0f}",
                       f"{parts['ms_per_epoch']:.0f}", f"{ratio['epoch']:.2f}", f"{ratio['steady_epoch']:.2f}")
    console.print(trials)
    if "startup" in report:
        start = report["startup"]
        console.print(f"trial start-up to first iteration: {start['warm_seconds']:.2f} s warm, "
                      f"{start['cold_seconds']:.1f} s cold")
    if "sweep_overhead" in report:
        print_overhead(report["sweep_overhead"])
