"""What every `pdd` command shares: the app, the console, progress bars, config merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pdd.config import merge_nested
from pdd.errors import PddError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Practical dataset distillation: DM + Deep-KKT, one trial locally or sweeps on Ray.")
console = Console()


class RichReporter:
    """One progress bar per phase (distillation, each evaluation model), with the latest losses.

    Without a terminal (a log file, a Ray job) bars cannot redraw, so every tenth of a phase prints a line.
    """

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}

    def start(self, phase: str, total: int) -> None:
        self.tasks[phase] = self.progress.add_task(phase, total=total, metrics="")
        self.totals[phase] = total

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k.removeprefix('loss_')} {v:.4g}" for k, v in metrics.items())
        self.progress.update(self.tasks[phase], completed=done, metrics=shown)
        total = self.totals[phase]
        if not self.progress.console.is_terminal and (done * 10 // total) != ((done - 1) * 10 // total):
            self.progress.console.print(f"{phase}: {done}/{total}  {shown}", highlight=False)


def progress_bars() -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), console=console, transient=False)


def parse_pipc(value: str | None) -> int | None | str:
    """'all' means every training image of a class; returns the sentinel 'unset' when the flag is absent."""
    if value is None:
        return "unset"
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise PddError(f"--pipc must be a positive integer or 'all', got {value!r}") from None


def load_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PddError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PddError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise PddError(f"config file {path} must hold a mapping of config fields")
    return loaded


def merged(base: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """Flags the user gave override the config file; dotted keys reach nested sections."""
    given: dict[str, Any] = {}
    for key, value in flags.items():
        if value is not None:
            section, _, name = key.rpartition(".")
            (given.setdefault(section, {}) if section else given)[name] = value
    return merge_nested(base, given)
