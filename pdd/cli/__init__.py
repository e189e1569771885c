"""The `pdd` command. Commands parse flags, call the core, and print; bad input is one line, never a traceback.

Each module registers its commands on the shared app: trial (trial, evaluate, teacher), audit, bench, baseline
(baseline full-data), report, sweep.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from pydantic import ValidationError
from rich.console import Console

from pdd.cli import audit as _audit_commands  # noqa: F401  (importing registers the commands)
from pdd.cli import baseline as _baseline_commands  # noqa: F401
from pdd.cli import bench as _bench_commands  # noqa: F401
from pdd.cli import report as _report_commands  # noqa: F401
from pdd.cli import sweep as _sweep_commands  # noqa: F401
from pdd.cli import trial as _trial_commands  # noqa: F401
from pdd.cli.common import app
from pdd.config import format_validation_error
from pdd.errors import PddError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one line on stderr and a non-zero exit code."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        result = typer.main.get_command(app).main(args=argv, prog_name="pdd", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as done:
        return done.exit_code
    except typer.TyperException as error:  # bad flags and arguments (typer's vendored click errors)
        err.print(f"pdd: error: {error.format_message()}", markup=False)
        return 2
    except typer.Abort:
        err.print("pdd: interrupted; run the same command again to resume", markup=False)
        return 130
    except ValidationError as error:
        err.print(f"pdd: error: invalid config: {format_validation_error(error)}", markup=False)
        return 2
    except PddError as error:
        err.print(f"pdd: error: {error}", markup=False)
        return 2
    except KeyboardInterrupt:
        err.print("pdd: interrupted; run the same command again to resume", markup=False)
        return 130
    except Exception as error:  # the last line of defence: no traceback unless asked for
        if os.environ.get("PDD_DEBUG"):
            traceback.print_exc()
        err.print(f"pdd: internal error: {type(error).__name__}: {error} (PDD_DEBUG=1 shows the traceback)",
                  markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
