"""What a report holds, independent of its format: sections of provenance, tables, figures, and footnotes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TableCell:
    text: str                                         # "28.31 ± 0.52", "0.01", or "—" where there is no value
    bold: bool = False
    note: str = ""                                    # a second, smaller line: a reference value and the difference
    footnotes: list[int] = field(default_factory=list)
    sort: float | str | None = None                   # what a sortable column orders by; None sorts last


@dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[list[TableCell]]
    caption: str = ""


@dataclass
class Figure:
    file: str        # the PNG's file name in a Markdown report's figures/ folder
    title: str
    caption: str
    png: bytes


@dataclass
class Section:
    """One results directory: where its numbers come from, its tables and its figures."""

    title: str
    provenance: list[tuple[str, str]]
    tables: list[Table]
    figures: list[Figure]
    remarks: list[str]  # figures that could not be drawn, and why


class Footnotes:
    """Numbered notes shared by all tables of a report; the same text gets the same number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


@dataclass
class Report:
    title: str
    generated: str
    sections: list[Section]
    footnotes: Footnotes
