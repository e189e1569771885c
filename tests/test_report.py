"""`pdd report` on fixture results: the numbers are parsed back out of the Markdown and HTML tables and checked
against values worked out by hand from tests/report_fixtures.py (pooled mean = base, std sqrt(7.5/8) = 0.97)."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from report_fixtures import write_local_trials, write_sweep
from rich.console import Console

from pdd.cli import main
from pdd.paper import TABLE_1
from pdd.report import build_report, render_terminal
from pdd.report.figures import mean_spectrum, radial_profile
from pdd.report.outcomes import read_sweep_results
from pdd.report.render import md
from pdd.results import SCHEMA_VERSION, write_rows

DASH = "—"
SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
PAPER_TEXT = (Path(os.environ.get("PDD_SHARED") or Path(__file__).parents[1] / "../shared")
              / "paper" / "practical-dataset-distillation-dsv.md")

MAIN_HEADERS = ["ipc", "pipc", "ratio %", "DM", "DSV (noise)", "DSV (real)", "PDD", "random"]
# (ipc, pipc) -> method -> (text, bold, note) or (DASH, the footnote's text).
EXPECTED_MAIN = {
    ("1", "10"): {"ratio %": "0.2",
                  "DM": ("22.00 ± 0.97", False, "paper 22.42, Δ -0.42"),
                  "DSV (noise)": (DASH, "no trials of this method in this cell"),
                  "DSV (real)": (DASH, "no trials of this method in this cell"),
                  # subset seed 2 failed: 6 models; ▲: +4.00 over DM on both shared draws
                  "PDD": ("25.50 ± 0.71 ▲", True, "paper 25.53, Δ -0.03"),
                  "random": ("15.00 ± 0.97", False, "paper —")},
    ("1", "50"): {"ratio %": "1",
                  "DM": ("24.00 ± 0.97", False, "paper 24.42, Δ -0.42"),  # not the decoy's 30.00
                  "DSV (noise)": ("25.50 ± 0.97", False, "paper 25.30, Δ +0.20"),
                  "DSV (real)": ("17.00 ± 0.97", False, "paper 16.68, Δ +0.32"),
                  "PDD": ("28.00 ± 0.97 ▲", True, "paper 28.20, Δ -0.20"),  # +2.50 over DSV (noise) on each draw
                  "random": ("16.00 ± 0.97", False, "paper —")},
    ("1", "all"): {"ratio %": "100",
                   "DM": (DASH, "no trials of this method in this cell"),
                   "DSV (noise)": (DASH, "no trials of this method in this cell"),
                   "DSV (real)": (DASH, "no trials of this method in this cell"),
                   "PDD": ("30.00 ± 0.97", True, "paper 29.95, Δ +0.05"),
                   "random": ("30.00 ± 0.97", True, "paper —")},  # a tie: both bold
    ("10", "50"): {"ratio %": "1",
                   "DM": (DASH, "not confirmed yet: 6 search trials, 1 of them failed"),
                   "DSV (noise)": (DASH, "all 3 confirm trials failed: loss_stat is nan at iteration 40 | primal 2.31"),
                   "DSV (real)": ("36.00 ± 0.97", False, "paper 36.39, Δ -0.39"),
                   "PDD": ("45.00 ± 0.97 ▲", True, "paper 44.51, Δ +0.49"),
                   "random": (DASH, "no trials of this method in this cell")},
}


# ---------------------------------------------------------------------------------------------------------------
# Parsing the reports back: both formats give {title: [{header: Cell}]} and {number: footnote text}


class Cell(dict):
    """text, bold, note and footnote numbers of one table cell, whichever format it came from."""


def markdown_report(text: str) -> tuple[list[tuple[str, list[dict[str, Cell]]]], dict[int, str]]:
    tables, title, lines = [], "", text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### "):
            title = line[4:]
        elif line.startswith("|") and not lines[i - 1].startswith("|"):
            headers = [unescape(cell) for cell in split_row(line)]
            assert set(lines[i + 1].replace("|", "")) == {"-"}, "a pipe table needs its separator line"
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                cells = split_row(body)
                assert len(cells) == len(headers), body
                rows.append(dict(zip(headers, map(markdown_cell, cells), strict=True)))
            tables.append((title, rows))
    notes_part = text.split("\n## Notes\n", 1)[1]
    notes = {int(number): unescape(note) for number, note in re.findall(r"^(\d+)\. (.*)$", notes_part, re.M)}
    return tables, notes


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def markdown_cell(raw: str) -> Cell:
    main_part, _, note = raw.partition("<br>")
    marks = re.search(f"[{SUPERSCRIPTS}˒]*$", main_part).group()
    main_part = main_part[: len(main_part) - len(marks)]
    bold = main_part.startswith("**") and main_part.endswith("**")
    return Cell(text=unescape(main_part[2:-2] if bold else main_part), bold=bold, note=unescape(note),
                footnotes=[int(n.translate(str.maketrans(SUPERSCRIPTS, "0123456789"))) for n in marks.split("˒") if n])


class HTMLReport(HTMLParser):
    """Tables by id as [{header: Cell}], footnotes by number, and every URL the page refers to."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, Cell]]] = {}
        self.notes: dict[int, str] = {}
        self.urls: list[str] = []
        self.scripts_with_src = 0
        self._headers: list[str] = []
        self._table: str | None = None
        self._row: list[Cell] | None = None
        self._cell: Cell | None = None
        self._part = "text"
        self._note: int | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self.scripts_with_src += tag == "script" and "src" in attributes
        if tag == "table":
            self._table, self._headers = attributes["id"], []
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = Cell(text="", bold=False, note="", footnotes=[], sort=attributes.get("data-sort"))
            self._part = "text"
        elif self._cell is not None and tag in ("small", "sup"):
            self._part = {"small": "note", "sup": "sup"}[tag]
            self._cell.setdefault("sup", "")
        elif self._cell is not None and tag == "strong":
            self._cell["bold"] = True
        elif tag == "li" and (attributes.get("id") or "").startswith("note-"):
            self._note = int(attributes["id"].removeprefix("note-"))
            self.notes[self._note] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None:
            if tag == "th":
                self._headers.append(self._cell["text"].strip())
            else:
                self._row.append(self._cell)
            self._cell = None
        elif tag in ("small", "sup") and self._cell is not None:
            if tag == "sup":
                self._cell["footnotes"].append(int(self._cell.pop("sup")))
            self._part = "text"
        elif tag == "tr" and self._table and self._row:
            self.tables[self._table].append(dict(zip(self._headers, self._row, strict=True)))
        elif tag == "table":
            self._table = None
        elif tag == "li":
            self._note = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[self._part] = self._cell.get(self._part, "") + data
        elif self._note is not None:
            self.notes[self._note] += data


def by_cell(rows: list[dict[str, Cell]]) -> dict[tuple[str, str], dict[str, Cell]]:
    return {(row["ipc"]["text"], row["pipc"]["text"]): row for row in rows}


def check_main_table(rows: list[dict[str, Cell]], notes: dict[int, str]) -> None:
    assert list(rows[0]) == MAIN_HEADERS
    table = by_cell(rows)
    assert list(table) == list(EXPECTED_MAIN)
    for cell, expected in EXPECTED_MAIN.items():
        assert table[cell]["ratio %"]["text"] == expected["ratio %"]
        for method in MAIN_HEADERS[3:]:
            got, want = table[cell][method], expected[method]
            if want[0] == DASH:
                assert (got["text"], len(got["footnotes"])) == (DASH, 1), (cell, method, got)
                assert notes[got["footnotes"][0]] == want[1], (cell, method)
            else:
                assert (got["text"], got["bold"], got["note"]) == want, (cell, method)
    partial = table["1", "10"]["PDD"]["footnotes"]
    assert len(partial) == 1 and notes[partial[0]].startswith("1 of the chosen config's 3 confirm trials failed")


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: one sweep, a second one for comparing, each report rendered once


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("results")
    return write_sweep(root / "fixture-a"), write_sweep(root / "fixture-b", "fixture-b", shift=1.0)


@pytest.fixture(scope="module")
def markdown(sweeps, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("md")
    assert main(["report", str(sweeps[0]), "-o", str(out)]) == 0
    return out / "report.md"


@pytest.fixture(scope="module")
def html(sweeps, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    assert main(["report", str(sweeps[0]), "--format", "html", "-o", str(out)]) == 0
    return out / "report.html"


# ---------------------------------------------------------------------------------------------------------------
# The tables


def test_markdown_main_table_has_the_expected_cells_and_numbers(markdown):
    tables, notes = markdown_report(markdown.read_text())
    titles = [title for title, _ in tables]
    assert titles == ["Test accuracy (%) beside the paper's Table 1", "Chosen configurations", "Trials per cell",
                      "Paired over draws of T'", "Gain over random and cost"]
    check_main_table(tables[0][1], notes)


def test_html_main_table_has_the_expected_cells_and_numbers(html):
    page = HTMLReport(html.read_text())
    check_main_table(page.tables["s0-main"], page.notes)
    pdd_column = [row["PDD"]["sort"] for row in page.tables["s0-main"]]
    assert [float(value) for value in pdd_column] == [25.5, 28.0, 30.0, 45.0]  # what the sortable column orders by
    assert by_cell(page.tables["s0-main"])["10", "50"]["DM"]["sort"] == ""    # "—" sorts last


def test_chosen_configs_are_picked_on_validation_and_listed_with_their_search(markdown):
    tables, notes = markdown_report(markdown.read_text())
    configs = {(row["ipc"]["text"], row["pipc"]["text"], row["method"]["text"]): row for row in tables[1][1]}
    shown = {key: [row[name]["text"] for name in ("Optuna trials", "α", "γ", "init", "val acc %",
                                                  "test over subset seeds", "teacher agreement")]
             for key, row in configs.items()}
    assert shown["1", "50", "PDD"] == ["6", "0.02", "0.003", "noise", "30.00 ± 0.97", "28.00 ± 1.00 (n=3)", "90.0%"]
    assert shown["1", "50", "DSV (noise)"] == ["6", "0.02", DASH, "noise", "27.50 ± 0.97", "25.50 ± 1.00 (n=3)",
                                               "90.0%"], "a weight the method's loss leaves out is a dash"
    assert shown["1", "50", "DM"][1:3] == [DASH, DASH]
    assert shown["1", "50", "DM"][-2:] == ["24.00 ± 1.00 (n=3)", DASH], "not the decoy (better test, worse val)"
    assert shown["1", "10", "PDD"][-2:] == ["25.50 ± 0.71 (n=2)", "100.0%"], "the lowest over the chosen draws"
    unconfirmed = configs["10", "50", "DM"]
    assert shown["10", "50", "DM"] == ["6", DASH, DASH, DASH, DASH, DASH, DASH]
    assert notes[unconfirmed["α"]["footnotes"][0]] == "not confirmed yet: 6 search trials, 1 of them failed"
    assert ("1", "all", "DM") not in configs  # no row at all: only the main table shows it


def test_trial_counts_and_failures_per_cell(markdown):
    tables, notes = markdown_report(markdown.read_text())
    trials = by_cell(tables[2][1])
    counts = {cell: [row[name]["text"] for name in ("search trials", "confirm trials", "ok", "failed")]
              for cell, row in trials.items()}
    assert counts == {("1", "10"): ["0", "9", "8", "1"], ("1", "50"): ["12", "18", "28", "2"],
                      ("1", "all"): ["0", "6", "6", "0"], ("10", "50"): ["12", "9", "16", "5"]}
    note = notes[trials["10", "50"]["failed"]["footnotes"][0]]
    assert note.startswith("DM 1 failed (loss_stat is nan") and "DSV (noise) 3 failed" in note
    assert trials["1", "all"]["failed"]["footnotes"] == []


def test_provenance_states_sweep_budget_dataset_commit_date_and_validation_selection(markdown):
    text = markdown.read_text()
    provenance = dict(re.findall(r"^- \*\*(.+?):\*\* (.*)$", text, re.M))
    assert provenance["Sweep"] == "fixture-a"
    assert provenance["Budget"] == "cpu"
    assert provenance["Dataset"] == "CIFAR-10 (JPEG copy)"
    assert provenance["Commit"] == "0123456789ab"
    assert provenance["Date"] == "2025-11-24 08:30 UTC to 2025-11-24 08:32 UTC"
    assert "chosen on validation accuracy" in provenance["Selection"]
    assert "never on test accuracy" in provenance["Selection"]
    assert provenance["Main table"].startswith("the confirm stage (42 rows over subset seeds 0, 1, 2)")


def test_a_directory_without_confirm_rows_falls_back_to_trial_rows_and_says_so(tmp_path):
    directory = write_local_trials(tmp_path / "local")
    report = build_report([directory])
    provenance = dict(report.sections[0].provenance)
    assert provenance["Main table"].startswith("no confirm-stage rows, so the table falls back to the 3 rows")
    rows = {row[0].text + "/" + row[1].text: [cell.text for cell in row[3:]]
            for row in report.sections[0].tables[0].rows}
    assert rows == {"1/10": ["20.00 ± 0.50", "26.00 ± 0.50"]}  # DM; PDD at α 0.01, the better validation score
    assert report.sections[0].tables[2].headers == ["ipc", "pipc", "local trials", "ok", "failed"]
    remarks = " ".join(report.sections[0].remarks)
    assert "Synthetic images: not drawn, no readable synthetic set" in remarks
    assert "Hyperparameter search: not drawn, no search-stage rows" in remarks


def test_comparing_two_sweeps_gives_the_same_table_with_deltas(sweeps, tmp_path):
    assert main(["report", str(sweeps[0]), str(sweeps[1]), "-o", str(tmp_path)]) == 0
    tables, notes = markdown_report((tmp_path / "report.md").read_text())
    mains = [rows for title, rows in tables if title.startswith("Test accuracy")]
    assert len(mains) == 2
    first, second = by_cell(mains[0]), by_cell(mains[1])
    assert list(second) == list(first)
    compared = 0
    for cell, row in second.items():
        for method in MAIN_HEADERS[3:]:
            if row[method]["text"] == DASH:
                assert first[cell][method]["text"] == DASH
                continue
            mean, base = (float(r[method]["text"].split(" ± ")[0]) for r in (row, first[cell]))
            assert mean == pytest.approx(base + 1.0)
            assert row[method]["note"] == f"fixture-a {base:.2f}, Δ +1.00"
            compared += 1
    assert compared == 12
    assert (tmp_path / "figures" / "1-spectra.png").is_file()  # each directory gets its figures


def test_terminal_report_shows_the_tables(sweeps):
    console = Console(record=True, width=220, color_system=None)
    console.print(render_terminal(build_report([sweeps[0]])))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "28.00 ± 0.97" in line)
    assert re.findall(r"\d+\.\d\d ± \d+\.\d\d", row) == ["24.00 ± 0.97", "25.50 ± 0.97", "17.00 ± 0.97",
                                                         "28.00 ± 0.97", "16.00 ± 0.97"]
    assert "all 3 confirm trials failed" in text


def test_terminal_format_through_the_cli(sweeps, capsys):
    assert main(["report", str(sweeps[0]), "--format", "term"]) == 0
    assert "Chosen configurations" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Formats: GitHub Markdown, a self-contained HTML file, figures


def test_markdown_figures_are_pngs_beside_the_report(markdown):
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", markdown.read_text())
    assert linked == ["figures/0-synthetic-images.png", "figures/0-spectra.png", "figures/0-accuracy-vs-pipc.png",
                      "figures/0-search.png"]
    for name in linked:
        with Image.open(markdown.parent / name) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 200
            assert len(image.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 20  # not a blank canvas


def test_html_is_one_file_that_fetches_nothing(html):
    page = HTMLReport(html.read_text())
    images = [url for url in page.urls if url.startswith("data:image/png;base64,")]
    assert len(images) == 4
    assert all(url.startswith(("data:", "#")) for url in page.urls), [u[:60] for u in page.urls]
    assert page.scripts_with_src == 0
    assert [path.name for path in html.parent.iterdir()] == ["report.html"]  # nothing written beside it


def test_markdown_escapes_markup_and_keeps_cells_on_one_line(markdown):
    # The failure reason holds a "|": unescaped, it would split the notes and break table rows.
    assert "nan at iteration 40 \\| primal 2.31" in markdown.read_text()
    assert md("a | b\n  c *d* $x$") == "a \\| b c \\*d\\* \\$x\\$"


def test_spectrum_separates_smooth_from_noisy_images():
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(8, 3, 32, 32))
    smooth = np.repeat(np.repeat(rng.normal(size=(8, 3, 4, 4)), 8, axis=-1), 8, axis=-2)
    high_share = {name: (profile := radial_profile(mean_spectrum(images)))[8:].sum() / profile.sum()
                  for name, images in (("noisy", noisy), ("smooth", smooth))}
    assert high_share["smooth"] < 0.5 * high_share["noisy"]
    assert np.isnan(mean_spectrum(noisy)[16, 16])  # frequency zero is left out


# ---------------------------------------------------------------------------------------------------------------
# Errors: one line, never a traceback


def one_error_line(capsys, *args: str) -> str:
    code = main(["report", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdd: error: "), err
    return lines[0]


def test_newer_schema_gets_one_line(sweeps, capsys, tmp_path):
    directory = tmp_path / "newer"
    directory.mkdir()
    table = pq.read_table(next(sweeps[0].glob("*.parquet")))
    newer = SCHEMA_VERSION + 1
    pq.write_table(table.replace_schema_metadata({"pdd_schema_version": str(newer)}), directory / "row.parquet")
    line = one_error_line(capsys, str(directory))
    assert f"schema v{newer}" in line and "upgrade pdd" in line


def test_foreign_parquet_gets_one_line(capsys, tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    assert "not a pdd results file" in one_error_line(capsys, str(tmp_path))


@pytest.mark.parametrize("make, fragment", [(lambda path: None, "no results directory"),
                                            (lambda path: path.mkdir(), "no results in")])
def test_missing_or_empty_directory_gets_one_line(capsys, tmp_path, make, fragment):
    make(tmp_path / "sweep")
    assert fragment in one_error_line(capsys, str(tmp_path / "sweep"))


def test_the_paired_table_pairs_methods_on_the_draws_both_were_scored_on(sweeps):
    paired = next(table for table in build_report([sweeps[0]]).sections[0].tables if table.id.endswith("paired"))
    rows = {(row[0].text, row[1].text, row[2].text): [cell.text for cell in row[3:]] for row in paired.rows}
    # PDD's draw 2 failed, so it meets DM on draws 0 and 1 only: +4.00 on each, although the pooled means (DM's
    # including its draw 2) differ by 3.50; the fixture shifts every method alike per draw
    assert rows["1", "10", "PDD − DM"] == ["2", "+4.00 (0), +4.00 (1)", "+4.00", "[+4.00, +4.00]", "2/2"]
    assert rows["1", "all", "PDD − random"][2:] == ["+0.00", "[+0.00, +0.00]", "0/3"]  # a tie wins nothing


def test_a_later_directory_is_paired_draw_by_draw_against_the_first(sweeps):
    report = build_report([sweeps[0], sweeps[1]])
    assert not any(table.id.endswith("paired-base") for table in report.sections[0].tables)
    against = next(table for table in report.sections[1].tables if table.id.endswith("paired-base"))
    rows = {(row[0].text, row[1].text, row[2].text): [cell.text for cell in row[3:]] for row in against.rows}
    # fixture-b is fixture-a shifted by +1 on every draw: the same method gains exactly 1 on each shared draw, and
    # against the base's DM it keeps the +4 the paired table shows within one directory, plus that 1
    assert rows["1", "10", "PDD − PDD of fixture-a"] == ["2", "+1.00 (0), +1.00 (1)", "+1.00", "[+1.00, +1.00]",
                                                         "2/2"]
    assert rows["1", "10", "PDD − DM of fixture-a"][2:] == ["+5.00", "[+5.00, +5.00]", "2/2"]
    assert rows["1", "10", "DM − DM of fixture-a"][0] == "3"


def test_read_sweep_results_labels_dsv_by_init(sweeps):
    [sweep] = read_sweep_results(sweeps[0])  # one protocol
    assert sweep.labels == ["DM", "DSV (noise)", "DSV (real)", "PDD", "random"]


# ---------------------------------------------------------------------------------------------------------------
# The paper's numbers as shipped


def test_paper_table_matches_the_paper():
    if not PAPER_TEXT.is_file():
        pytest.fail(f"the paper's text is not at {PAPER_TEXT}; put ../shared beside the repo or set PDD_SHARED")
    lines = PAPER_TEXT.read_text().split("Img/Cls\t", 1)[1].split("\n\nTable 1.", 1)[0].splitlines()
    columns = lines[0].split("\t")[2:]  # after "Practical Img/Cls" and "ratio %" come the methods
    parsed, ipc = {}, None
    for line in lines[1:]:
        fields = line.split("\t")
        ipc = int(fields[0]) if fields[0] else ipc
        pipc = None if fields[1] == "all" else int(fields[1])
        parsed[ipc, pipc] = {column: tuple(float(part) for part in value.split("±"))
                             for column, value in zip(columns, fields[3:], strict=True) if value}
    assert parsed == TABLE_1


@pytest.mark.parametrize("dataset, ratio", [("Fashion-MNIST", "0.167"), ("CIFAR-100", "2"), ("my-images", "n/a")])
def test_a_dataset_the_paper_never_ran_has_no_paper_numbers_and_is_named(tmp_path, dataset, ratio):
    directory = write_local_trials(tmp_path / "local", dataset_name=dataset)
    report = build_report([directory])
    section = report.sections[0]
    main_table = section.tables[0]
    assert main_table.title == f"Test accuracy (%) on {dataset}"
    assert f"on {dataset} of the chosen config" in main_table.caption
    assert dict(section.provenance)["Dataset"] == dataset
    assert "reports no numbers on " + dataset in dict(section.provenance)["Compared with"]
    (row,) = main_table.rows
    assert row[2].text == ratio  # pipc 10 over the training images per class, where they are all alike
    assert [cell.text for cell in row[3:]] == ["20.00 ± 0.50", "26.00 ± 0.50"]
    assert all(cell.note == "paper —" for cell in row[3:])  # no paper value to set beside ours


def test_the_paper_is_looked_up_by_dataset():
    from pdd.paper import paper_value

    assert paper_value("cifar10", 1, 10, "PDD") == (25.53, 0.45)
    assert paper_value("cifar100", 1, 10, "PDD") is None
    assert paper_value(None, 1, 10, "PDD") is None


def test_a_config_confirmed_on_one_draw_shows_no_spread_over_draws(tmp_path):
    directory = write_sweep(tmp_path / "fixture-a")
    for path in directory.glob("*.parquet"):
        [row] = pq.read_table(path, columns=["stage", "method", "pipc", "subset_seed"]).to_pylist()[:1]
        if (row["stage"], row["method"], row["pipc"]) == ("confirm", "dm", 50) and row["subset_seed"] > 0:
            path.unlink()
    [sweep] = read_sweep_results(directory)
    [report] = build_report([directory]).sections[:1]
    chosen = next(table for table in report.tables if table.title == "Chosen configurations")
    dm = next(row for row in chosen.rows if [cell.text for cell in row[:3]] == ["1", "50", "DM"])
    assert dm[-2].text == "23.00 (n=1)", "draw 0 alone: base 24 shifted by -1, no ± over one draw"
    assert len(sweep.result((1, 50), "DM").subset_means) == 1


def test_a_search_scored_under_one_protocol_is_counted_in_every_protocols_section(tmp_path):
    """A study searches under dc and confirms under paper and dc: the paper section still names its search."""
    directory = write_sweep(tmp_path / "fixture-a")
    for path in directory.glob("*.parquet"):
        rows = pq.read_table(path).to_pylist()
        if rows[0]["stage"] == "search":
            write_rows(directory, [row | {"protocol": "dc"} for row in rows])
    [paper, _] = read_sweep_results(directory)
    assert paper.protocol == "paper"
    assert len(paper.result((1, 50), "PDD").search) == 6
    assert all(row["protocol"] == "paper" for result in paper.results.values() for row in result.rows)
    [report] = build_report([directory]).sections[:1]
    chosen = next(table for table in report.tables if table.title == "Chosen configurations")
    pdd = next(row for row in chosen.rows if [cell.text for cell in row[:3]] == ["1", "50", "PDD"])
    assert pdd[3].text == "6"
    assert "scored under the dc protocol" in chosen.caption
