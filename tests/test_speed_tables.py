"""The speed README's generated tables: they are what the committed JSON renders to, and they follow the JSON."""

import json
import shutil
from pathlib import Path

import pytest

from pdd.errors import PddError
from pdd.speed_tables import regenerate, update_readme

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_committed_readme_holds_what_the_committed_json_renders_to():
    text = (BENCHMARKS / "README.md").read_text()
    assert text.count("<!-- generated: ") == text.count("<!-- end generated -->") >= 4
    assert regenerate(text, BENCHMARKS) == text, "run `pdd bench --tables benchmarks` and commit the README"


def test_the_whole_trial_table_adds_the_phases_and_divides_the_totals():
    text = (BENCHMARKS / "README.md").read_text()
    assert ("| (1,10), 1,000 epochs | 88.6 + 205.0 = 293.6 s | 49.4 + 99.4 = 148.8 s | **0.51** | 153 s → 1.8 s | "
            "65.1 M → 0.13 M | 18.89 ± 0.23 → 19.00 ± 0.30 |") in text
    assert "| dm / reference | 0.41 | 0.35 | 0.54 | 0.36 |" in text  # 56/138, 231/664, 366/674, 1366/3813
    assert "| (1,10) | 127 / 122 | 93 | 98 | **0.79** |" in text  # 97.9 / mean(126.7, 122.1)


def test_a_changed_json_figure_changes_its_block_and_nothing_else(tmp_path):
    directory = tmp_path / "benchmarks"
    shutil.copytree(BENCHMARKS, directory, ignore=shutil.ignore_patterns("*.py"))
    record = json.loads((directory / "whole-trials-amd-epyc-zen5.json").read_text())
    record["trials"][0]["after"]["seconds_evaluate"] = 50.6
    (directory / "whole-trials-amd-epyc-zen5.json").write_text(json.dumps(record))
    before = (directory / "README.md").read_text()
    assert update_readme(directory) is True
    after = (directory / "README.md").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "49.4 + 50.6 = 100.0 s | **0.34** |" in changed[0][1]
    assert update_readme(directory) is False


def test_a_block_inside_a_list_item_keeps_its_indentation(tmp_path):
    text = ("- checks:\n\n  <!-- generated: eval-precision from whole-trials-amd-epyc-zen5.json by hand -->\n  stale\n"
            "  <!-- end generated -->\n")
    rendered = regenerate(text, BENCHMARKS).splitlines()
    assert rendered[3] == "  | set | epochs | fp32 test | bf16 test | time, fp32 → bf16 |"
    assert rendered[-1] == "  <!-- end generated -->" and "stale" not in rendered


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- generated: nosuch -->\n<!-- end generated -->", "no generated table is called 'nosuch'"),
    ("<!-- generated: whole-trials from x.json by hand -->\n| old |", "has no '<!-- end generated -->'"),
    ("<!-- generated: whole-trials -->\n<!-- end generated -->", "names no JSON"),
    ("<!-- generated: distillation from a.json by hand -->\n<!-- end generated -->", "reads 3 JSON file"),
])
def test_a_bad_block_is_one_clear_error(text, message):
    with pytest.raises(PddError, match=message):
        regenerate(text, BENCHMARKS)
