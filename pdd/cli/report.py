"""The `pdd report` command.

    pdd report results/<sweep>                                 # Markdown and PNGs in reports/<sweep>/
    pdd report results/<sweep> --format html -o reports/<name> # one self-contained HTML file
    pdd report results/a results/b --format term               # b against a, with deltas, in the terminal
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from pdd.cli.common import app, console


class Format(StrEnum):
    md = "md"
    html = "html"
    term = "term"


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="results directories; the second and later are compared with "
                                                    "the first"),
    fmt: Format = typer.Option(Format.md, "--format", "-f", help="md (with PNG figures), html (one file) or term"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output directory (default: reports/ and the results "
                                                              "directory's name, names joined by -vs- when comparing)"),
) -> None:
    """Tables in the layout of the paper's Table 1, the chosen configs, trial counts and figures."""
    from pdd.report import build_report, render_terminal, write_report

    built = build_report(results)
    if fmt is Format.term:
        console.print(render_terminal(built))
        return
    target = out or Path("reports") / "-vs-".join(directory.name for directory in results)
    console.print(f"wrote {write_report(built, fmt.value, target)}", highlight=False)
