"""Commands for sweeps: run one on an embedded Ray or a cluster, submit it as a Ray job, follow it, resume it.

    pdd sweep run sweeps/smoke.yaml                        # embedded Ray on 127.0.0.1, shut down after
    ray job submit --working-dir . -- python -m pdd sweep run sweeps/smoke.yaml --storage /shared   # its cluster
    pdd sweep submit sweeps/table1.yaml --address http://127.0.0.1:8265 --storage s3://bucket/pdd
    pdd sweep status results/smoke                         # or a job id
    pdd sweep resume results/smoke
    pdd sweep export results/smoke reports/smoke            # rows, spec, teacher, sets: resumable on any machine
    pdd sweep logs raysubmit_XXXX --follow
    pdd sweep overhead results/smoke --out overhead.json   # slot utilisation of the last driver run
    pdd sweep estimate sweeps/table1.yaml --tflops 10       # FLOPs and GPU-hours, from the layer shapes
    pdd sweep dashboard results/smoke --port 8080           # optuna-dashboard on 127.0.0.1, behind a fresh token

The sweep file is validated before anything starts; Ray is imported only once a command needs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

import pdd
from pdd.cli.common import app, console
from pdd.errors import PddError
from pdd.io import atomic_path
from pdd.overhead import Overhead
from pdd.sweep import load_sweep

sweep_app = typer.Typer(no_args_is_help=True, help="Optuna searches over (ipc, pipc) cells, run by Ray Tune.")
app.add_typer(sweep_app, name="sweep")

STORAGE_HELP = ("where sweep directories go: a path (on a cluster, one every node sees, e.g. NFS) or an s3:// URI "
                "[env PDD_STORAGE; default results]")
CLUSTER_HELP = ("a running Ray cluster (host:port, or auto) [env RAY_ADDRESS, which Ray sets for a job's driver]; "
                "default: an embedded Ray on 127.0.0.1, with a token only this run knows")
JOBS_HELP = "the cluster's job server (dashboard) address, e.g. http://127.0.0.1:8265 over an ssh tunnel"


def _storage(storage: str | None) -> str:
    return storage or os.environ.get("PDD_STORAGE", "results")


def _job_server(address: str | None) -> str:
    return address or os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")


@sweep_app.command("run")
def run(
    file: Path = typer.Argument(..., help="a sweep file, e.g. sweeps/smoke.yaml"),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    address: str | None = typer.Option(None, help=CLUSTER_HELP),
) -> None:
    """Run a sweep (search and confirm trials share one queue) and print its progress per cell; rerun to continue."""
    started_at = time.time()  # the driver's start for `pdd sweep overhead`: Ray's import and start-up are its cost
    spec = load_sweep(file)
    from pdd.runner.storage import prepare  # Ray loads in seconds: only once the file is known to be good

    _execute(prepare(spec, _storage(storage)), address, started_at)


@sweep_app.command("resume")
def resume(
    directory: str = typer.Argument(..., help="a sweep directory, e.g. results/smoke, or its URI"),
    address: str | None = typer.Option(None, help=CLUSTER_HELP),
) -> None:
    """Continue a sweep whose driver died (Tune restores its experiment; errored trials resume too), or an export of
    one on another machine (each study starts from its stored rows)."""
    _execute(sweep_dir(directory), address, time.time())


def sweep_dir(target: str) -> str:
    from pdd.runner.storage import is_uri

    return target if is_uri(target) else str(Path(target).resolve())


def _execute(root: str, address: str | None, started_at: float) -> None:
    from pdd.runner.session import cluster_environment  # before Ray's first import, which reads what it sets

    with cluster_environment(address) as cluster:
        from pdd.runner import driver, driver_log

        made = driver.materials(root)
        materials_ready = time.time()
        if made.teacher_to_train is not None:
            console.print("teacher: auto, and none is cached here: the first trial trains it, in one slot, while "
                          "the trials that need no teacher run", style="dim")
        outcome = driver.execute(root, made, cluster)
    driver_log.save_driver_run(root, {"started_at": started_at, "ended_at": time.time(), "slots": outcome.slots,
                                      "marks": {"materials_ready": materials_ready} | outcome.marks})
    print_progress(root)
    for key in outcome.unconfirmed:
        console.print(f"[yellow]{key}: no search trial finished, so nothing was confirmed[/yellow]")
    if outcome.errored:
        trials = "1 trial" if outcome.errored == 1 else f"{outcome.errored} trials"
        console.print(f"{trials} failed after all retries: the reasons are in their rows (status failed) and in "
                      f"Tune's error files, {driver.error_files(root)}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1)


@sweep_app.command("export")
def export(
    directory: Path = typer.Argument(..., help="a sweep directory on this machine, e.g. results/smoke"),
    dest: Path = typer.Argument(..., help="where its copy goes, e.g. reports/cifar10/smoke (created; files replaced)"),
) -> None:
    """Copy a sweep's rows, spec, teacher, journal and sets (not Tune's state or checkpoints), to commit or move:
    `pdd report DEST` reports on the copy and `pdd sweep resume DEST` continues the sweep from it, on any machine."""
    from pdd.runner.storage import export as export_sweep

    copied = export_sweep(str(directory), dest)
    console.print(f"copied {copied} files to {dest}")


@sweep_app.command("submit")
def submit(
    file: Path = typer.Argument(..., help="a sweep file, e.g. sweeps/table1.yaml"),
    address: str | None = typer.Option(None, help=JOBS_HELP + " [env RAY_API_SERVER_ADDRESS]"),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Submit a sweep to a running cluster as a Ray job (the project is its working_dir); prints the job id."""
    spec = load_sweep(file)
    from pdd.runner import jobs
    from pdd.runner.storage import prepare

    project = Path(pdd.__file__).resolve().parents[1]
    if not (project / "pyproject.toml").is_file():
        raise PddError(f"submit uploads pdd's source tree, but pdd is installed at {project} without one; "
                       f"install it with `pip install -e .` from a checkout")
    root = prepare(spec, _storage(storage))
    job_id = jobs.submit(root, _job_server(address), project)
    console.print(job_id)
    console.print(f"follow it with `pdd sweep status {job_id}` or `pdd sweep logs {job_id} --follow`; "
                  f"results go to {root}", style="dim")


@sweep_app.command("status")
def status(
    target: str = typer.Argument(..., help="a sweep directory (or its URI), or a Ray job id"),
    address: str | None = typer.Option(None, help=JOBS_HELP + " (for a job id)"),
) -> None:
    """Progress per cell: search trials done, running and failed, the best val accuracy so far, confirm rows."""
    from pdd.runner import jobs
    from pdd.runner.storage import is_uri

    if is_uri(target) or os.sep in target or Path(target).is_dir():  # job ids hold no slash
        print_progress(sweep_dir(target))
        return
    info = jobs.job_info(target, _job_server(address))
    console.print(f"job {target}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    sweep = info["sweep"]
    if sweep and (is_uri(sweep) or Path(sweep).is_dir()):
        print_progress(sweep)


@sweep_app.command("logs")
def logs(
    job_id: str = typer.Argument(..., help="a Ray job id from `pdd sweep submit`"),
    address: str | None = typer.Option(None, help=JOBS_HELP),
    follow: bool = typer.Option(False, help="keep printing until the job ends"),
) -> None:
    """Print a submitted sweep's output."""
    from pdd.runner import jobs

    for chunk in jobs.job_logs(job_id, _job_server(address), follow):
        console.out(chunk, end="", highlight=False)


@sweep_app.command("estimate")
def estimate(
    file: Path = typer.Argument(..., help="a sweep file, e.g. sweeps/table1.yaml"),
    tflops: float = typer.Option(10.0, min=1e-6, help="effective TFLOP/s one GPU (or node) sustains on these nets"),
) -> None:
    """FLOPs a sweep needs (from the layer shapes, as `pdd bench` counts them) and the GPU-hours at --tflops."""
    from pdd.bench import sweep_flops

    rows = sweep_flops(load_sweep(file))
    table = Table("method", "stage", "trials", "distill PFLOP", "evaluate PFLOP", "GPU-hours",
                  title=f"{file}: cost at {tflops:g} effective TFLOP/s")
    hours = lambda flops: flops / (tflops * 1e12) / 3600  # noqa: E731
    for row in rows:
        total = row["distill_flops"] + row["eval_flops"]
        table.add_row(row["method"], row["stage"], str(row["trials"]), f"{row['distill_flops'] / 1e15:,.1f}",
                      f"{row['eval_flops'] / 1e15:,.1f}", f"{hours(total):,.1f}")
    total = sum(row["distill_flops"] + row["eval_flops"] for row in rows)
    table.add_row("total", "", str(sum(row["trials"] for row in rows)),
                  f"{sum(row['distill_flops'] for row in rows) / 1e15:,.1f}",
                  f"{sum(row['eval_flops'] for row in rows) / 1e15:,.1f}", f"{hours(total):,.1f}", style="bold")
    console.print(table)


@sweep_app.command("overhead")
def overhead(
    directory: str = typer.Argument(..., help="a finished sweep directory, e.g. results/smoke, or its URI"),
    out: Path | None = typer.Option(None, help="also write the figures as JSON here"),
) -> None:
    """How busy the trial slots were during the last driver run, and the time each trial waited outside."""
    from pdd.runner import driver_log

    report = overhead_report(*driver_log.overhead(sweep_dir(directory)))
    print_overhead(report)
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {out}")


@sweep_app.command("dashboard")
def dashboard(
    directory: str = typer.Argument(..., help="a sweep directory, e.g. results/smoke (an s3:// sweep's journal is "
                                    "in the driver's local mirror, results/<name>/)"),
    port: int = typer.Option(8080, min=0, max=65535, help="where it listens; 0 picks a free port"),
    host: str = typer.Option("127.0.0.1", help="the address it listens on; a non-loopback one needs --allow-remote"),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="listen on a non-loopback --host: whoever reaches it may try the token"),
) -> None:
    """optuna-dashboard on the sweep's Optuna journal (every study, trials added as they end), read-only, behind a
    token made for this start and printed in its URL; Ctrl-C stops it."""
    from pdd.runner import dashboard as board
    from pdd.runner.storage import JOURNAL_FILE, SPEC_FILE, is_uri, local_dir

    root = sweep_dir(directory)
    if not is_uri(root) and not (Path(root) / SPEC_FILE).is_file():  # say so, not that a journal is missing
        raise PddError(f"no sweep at {root} (no {SPEC_FILE}); start one with `pdd sweep run FILE`")
    journal = local_dir(root) / JOURNAL_FILE
    if not journal.is_file():
        raise PddError(f"no Optuna journal at {journal}: a sweep's driver writes it as trials end, and `pdd sweep "
                       f"resume {directory}` writes one from the rows of a sweep run without it")
    if not board.is_loopback(host):
        if not allow_remote:
            raise PddError(f"--host {host} is not a loopback address, so others could reach the dashboard; pass "
                           f"--allow-remote to listen there anyway")
        console.print(f"warning: listening on {host}: anyone who reaches it can try the token, which travels "
                      f"unencrypted (plain HTTP)", style="yellow", markup=False, soft_wrap=True)
    # A job started in the background by a shell inherits SIGINT ignored; the dashboard is stopped by it all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server, url = board.open_dashboard(journal, host, port)
    console.print(f"optuna-dashboard for {root}: {url}", markup=False, soft_wrap=True, highlight=False)
    console.print("the token is new with each start; Ctrl-C stops it", style="dim")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    finally:
        server.server_close()


def overhead_report(found: Overhead, in_tune: Overhead | None, record: dict) -> dict:
    """The overhead's figures, the same over Tune's run alone, and the driver's timeline (seconds after its start),
    as one JSON-ready dict."""
    start = record["started_at"]
    return found.as_dict() | {
        "tune_run": None if in_tune is None else in_tune.as_dict(),
        "driver_started": datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"),
        "timeline": {name: at - start for name, at in sorted(record["marks"].items(), key=lambda kv: kv[1])}}


def print_overhead(report: dict) -> None:
    table = Table("sweep overhead", "value", title=f"driver run of {report['driver_started']}")
    rows = [
        ("trial slots", str(report["slots"])),
        ("trials", str(report["trials"])),
        ("wall time", f"{report['wall_seconds']:.1f} s"),
        ("busy slot-seconds", f"{report['busy_slot_seconds']:.1f}"),
        ("available slot-seconds", f"{report['available_slot_seconds']:.1f}"),
        ("utilisation", f"{report['utilisation']:.1%}"),
        ("outside per trial, median", f"{report['outside_median']:.2f} s"),
        ("outside per trial, mean", f"{report['outside_mean']:.2f} s"),
        ("idle: before each slot's first trial", f"{report['startup_slot_seconds']:.1f} slot-s"),
        ("idle: between trials", f"{report['between_slot_seconds']:.1f} slot-s"),
        ("idle: after each slot's last trial", f"{report['tail_slot_seconds']:.1f} slot-s"),
    ]
    if report["tune_run"] is not None:  # without the driver's one-off start-up (mostly Ray's)
        tune_run = report["tune_run"]
        rows += [("Tune run: wall time", f"{tune_run['wall_seconds']:.1f} s"),
                 ("Tune run: utilisation", f"{tune_run['utilisation']:.1%}")]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("driver timeline: " + ", ".join(f"{name} {at:.1f} s" for name, at in report["timeline"].items()),
                  style="dim")


def print_progress(root: str) -> None:
    from pdd.runner import progress

    table = Table(title=f"sweep {root}")
    for column in ("method", "cell"):
        table.add_column(column, no_wrap=True)
    for column in ("search", "running", "failed", "best val", "confirmed"):
        table.add_column(column, justify="right", no_wrap=True)
    for cell in progress.progress(root):
        table.add_row(cell.label, cell.cell, f"{cell.done}/{cell.budget}" if cell.budget else "-", str(cell.running),
                      str(cell.failed), "-" if cell.best_val is None else f"{cell.best_val:.2f}",
                      f"{cell.confirmed}/{cell.to_confirm}")
    console.print(table)
    if progress.teacher_training(root):
        console.print("the teacher trial is training `teacher: auto`; trials that need it start once it is stored")
