"""Commands for sweeps: run one on an embedded Ray or a cluster, submit it as a Ray job, follow it, resume it.

    pdd sweep run sweeps/smoke.yaml                        # embedded Ray on 127.0.0.1, shut down after
    pdd sweep submit sweeps/table1.yaml --address http://127.0.0.1:8265 --storage s3://bucket/pdd
    pdd sweep status results/smoke                         # or a job id
    pdd sweep resume results/smoke
    pdd sweep logs raysubmit_XXXX --follow

The sweep file is validated before anything starts; Ray is imported only once a command needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

import pdd
from pdd.cli.common import RichReporter, app, console, progress_bars
from pdd.errors import PddError
from pdd.sweep import load_sweep

sweep_app = typer.Typer(no_args_is_help=True, help="Optuna searches over (ipc, pipc) cells, run by Ray Tune.")
app.add_typer(sweep_app, name="sweep")

STORAGE_HELP = ("where sweep directories go: a path (on a cluster, one every node sees, e.g. NFS) or an s3:// URI "
                "[env PDD_STORAGE; default results]")
CLUSTER_HELP = "a running Ray cluster (host:port, or auto); default: an embedded Ray on 127.0.0.1 for this run"
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
    """Run a sweep (search, then confirm) and print its progress per cell; rerunning it continues it."""
    spec = load_sweep(file)
    from pdd import tune as sweeps  # Ray loads in seconds: only once the file is known to be good

    _execute(sweeps.prepare(spec, _storage(storage)), address)


@sweep_app.command("resume")
def resume(
    directory: str = typer.Argument(..., help="a sweep directory, e.g. results/smoke, or its URI"),
    address: str | None = typer.Option(None, help=CLUSTER_HELP),
) -> None:
    """Continue a sweep whose driver died: Tune restores its experiments, errored trials resume too."""
    _execute(_sweep_dir(directory), address)


def _sweep_dir(target: str) -> str:
    from pdd.tune import is_uri

    return target if is_uri(target) else str(Path(target).resolve())


def _execute(root: str, address: str | None) -> None:
    from pdd import tune as sweeps

    with progress_bars() as progress:  # the teacher's training, when the sweep needs one trained
        made = sweeps.materials(root, RichReporter(progress))
    outcome = sweeps.execute(root, made, address)
    print_progress(root)
    for key in outcome.unconfirmed:
        console.print(f"[yellow]{key}: no search trial finished, so nothing was confirmed[/yellow]")
    if outcome.errored:
        console.print(f"[red]{outcome.errored} trials failed after all retries; their rows hold the reason[/red]")
        raise typer.Exit(1)


@sweep_app.command("submit")
def submit(
    file: Path = typer.Argument(..., help="a sweep file, e.g. sweeps/table1.yaml"),
    address: str | None = typer.Option(None, help=JOBS_HELP + " [env RAY_API_SERVER_ADDRESS]"),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Submit a sweep to a running cluster as a Ray job (the project is its working_dir); prints the job id."""
    spec = load_sweep(file)
    from pdd import tune as sweeps

    project = Path(pdd.__file__).resolve().parents[1]
    if not (project / "pyproject.toml").is_file():
        raise PddError(f"submit uploads pdd's source tree, but pdd is installed at {project} without one; "
                       f"install it with `pip install -e .` from a checkout")
    root = sweeps.prepare(spec, _storage(storage))
    job_id = sweeps.submit(root, _job_server(address), project)
    console.print(job_id)
    console.print(f"follow it with `pdd sweep status {job_id}` or `pdd sweep logs {job_id} --follow`; "
                  f"results go to {root}", style="dim")


@sweep_app.command("status")
def status(
    target: str = typer.Argument(..., help="a sweep directory (or its URI), or a Ray job id"),
    address: str | None = typer.Option(None, help=JOBS_HELP + " (for a job id)"),
) -> None:
    """Progress per cell: search trials done, running and failed, the best val accuracy so far, confirm rows."""
    from pdd import tune as sweeps

    if sweeps.is_uri(target) or os.sep in target or Path(target).is_dir():  # job ids hold no slash
        print_progress(_sweep_dir(target))
        return
    info = sweeps.job_info(target, _job_server(address))
    console.print(f"job {target}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    sweep = info["sweep"]
    if sweep and (sweeps.is_uri(sweep) or Path(sweep).is_dir()):
        print_progress(sweep)


@sweep_app.command("logs")
def logs(
    job_id: str = typer.Argument(..., help="a Ray job id from `pdd sweep submit`"),
    address: str | None = typer.Option(None, help=JOBS_HELP),
    follow: bool = typer.Option(False, help="keep printing until the job ends"),
) -> None:
    """Print a submitted sweep's output."""
    from pdd import tune as sweeps

    for chunk in sweeps.job_logs(job_id, _job_server(address), follow):
        console.out(chunk, end="", highlight=False)


def print_progress(root: str) -> None:
    from pdd import tune as sweeps

    table = Table(title=f"sweep {root}")
    for column in ("method", "cell"):
        table.add_column(column, no_wrap=True)
    for column in ("search", "running", "failed", "best val", "confirmed"):
        table.add_column(column, justify="right", no_wrap=True)
    for cell in sweeps.progress(root):
        table.add_row(cell.label, cell.cell, f"{cell.done}/{cell.budget}" if cell.budget else "-", str(cell.running),
                      str(cell.failed), "-" if cell.best_val is None else f"{cell.best_val:.2f}",
                      f"{cell.confirmed}/{cell.to_confirm}")
    console.print(table)
