"""Renderers: Markdown (GitHub tables and PNG files), one self-contained HTML file, and rich tables for the terminal.

The Markdown and HTML layouts live in the Jinja templates beside this module; the filters here format one cell.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table as RichTable
from rich.text import Text

from pdd.io import atomic_path
from pdd.report.model import Report, Table, TableCell

SUPERSCRIPTS = str.maketrans("0123456789,", "⁰¹²³⁴⁵⁶⁷⁸⁹˒")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|$])")


def markers(cell: TableCell) -> str:
    """Footnote numbers as superscripts, so they survive plain text and need no markup."""
    return ",".join(str(number) for number in cell.footnotes).translate(SUPERSCRIPTS)


def md(text: str) -> str:
    """Escape what GitHub Markdown would read as markup, on one line: `|` or a newline would end a table cell."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def md_cell(cell: TableCell) -> str:
    text = f"**{md(cell.text)}**" if cell.bold else md(cell.text)
    note = f"<br>{md(cell.note)}" if cell.note else ""
    return f"{text}{markers(cell)}{note}"


def html_cell(cell: TableCell) -> Markup:
    text = Markup("<strong>{}</strong>").format(cell.text) if cell.bold else escape(cell.text)
    note = Markup("<br><small>{}</small>").format(cell.note) if cell.note else ""
    links = Markup("").join(Markup('<sup><a href="#note-{0}">{0}</a></sup>').format(n) for n in cell.footnotes)
    return text + links + note


def sort_key(cell: TableCell) -> str:
    """The data-sort attribute: JSON numbers parse in JavaScript (json writes inf as Infinity); empty sorts last."""
    if cell.sort is None:
        return ""
    return cell.sort if isinstance(cell.sort, str) else json.dumps(cell.sort)


ENVIRONMENT = Environment(loader=PackageLoader("pdd.report", "templates"), undefined=StrictUndefined,
                          autoescape=select_autoescape(enabled_extensions=("html.j2",)),
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENVIRONMENT.filters |= {"md": md, "md_cell": md_cell, "html_cell": html_cell, "sort_key": sort_key,
                        "b64": lambda data: base64.b64encode(data).decode("ascii")}


def markdown_files(report: Report) -> dict[str, bytes]:
    text = ENVIRONMENT.get_template("report.md.j2").render(report=report)
    figures = {f"figures/{figure.file}": figure.png for section in report.sections for figure in section.figures}
    return {"report.md": text.encode()} | figures


def html_files(report: Report) -> dict[str, bytes]:
    return {"report.html": ENVIRONMENT.get_template("report.html.j2").render(report=report).encode()}


FILE_RENDERERS: dict[str, Callable[[Report], dict[str, bytes]]] = {"md": markdown_files, "html": html_files}


def write_report(report: Report, fmt: str, out: Path) -> Path:
    """Write the report's files under `out`; returns the report file (the first one)."""
    files = FILE_RENDERERS[fmt](report)
    for name, content in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(content)
            tmp.chmod(0o644)  # the temporary file is private (0600); a report is made to be shared
    return out / next(iter(files))


def render_terminal(report: Report) -> RenderableType:
    parts: list[RenderableType] = [Rule(report.title)]
    for section in report.sections:
        parts.append(Rule(section.title, style="dim"))
        provenance = RichTable.grid(padding=(0, 2))
        for key, value in section.provenance:
            provenance.add_row(Text(key, style="bold"), value)
        parts += [provenance, *(rich_table(table) for table in section.tables)]
        parts += [Text(remark, style="dim") for remark in section.remarks]
        if section.figures:
            parts.append(Text(f"{len(section.figures)} figures: see --format md or html", style="dim"))
    if report.footnotes.texts:
        parts.append(Rule("Notes", style="dim"))
    parts += [Text(f"{number}. {text}") for number, text in enumerate(report.footnotes.texts, start=1)]
    return Group(*parts)


def rich_table(table: Table) -> RichTable:
    out = RichTable(title=table.title, caption=table.caption, title_justify="left")
    for index, header in enumerate(table.headers):
        text = any(isinstance(row[index].sort, str) for row in table.rows)
        out.add_column(header, justify="left" if text else "right")
    for row in table.rows:
        out.add_row(*(rich_cell(cell) for cell in row))
    return out


def rich_cell(cell: TableCell) -> Text:
    text = Text(cell.text + markers(cell), style="bold" if cell.bold else "")
    if cell.note:
        text.append(f"\n{cell.note}", style="dim")
    return text
