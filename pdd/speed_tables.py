"""The speed README's tables, rendered from the committed benchmark JSON so the two cannot drift.

    pdd bench --tables benchmarks      # rewrite every generated block of benchmarks/README.md

A block is the lines between `<!-- generated: NAME from FILES by ... -->` and `<!-- end generated -->`; NAME picks
its renderer in TABLES, FILES (names separated by ", " or " and ") are the JSON it reads, in the order it takes
them, and the block takes the indentation of its opening marker (a table inside a list item). Everything outside
the blocks is left as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdd.errors import PddError
from pdd.io import atomic_path

OPEN = re.compile(r"^(?P<indent>\s*)<!-- generated: (?P<name>[\w-]+)\b(?P<rest>.*)-->\s*$")
FILES = re.compile(r"\bfrom (?P<files>.+?) by\b")
CLOSE = "<!-- end generated -->"


def _load(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PddError(f"{path}: cannot read the benchmark JSON a README table is made from ({error})") from error


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _ms(value: float) -> str:
    return f"{value:,.0f}"


def _bench_row(report: dict[str, Any], method: str, settings: list[str]) -> list[str]:
    """A method's ms per iteration at each '(ipc,pipc)' setting of a `pdd bench` report."""
    by_setting = {f"({row['ipc']},{row['pipc']})": row["ms_per_iteration"] for row in report["distill"]
                  if row["method"] == method}
    return [_ms(by_setting[setting]) for setting in settings]


def distillation(directory: Path, files: list[str]) -> list[str]:
    """ms per distillation iteration: the reference before pdd, both `pdd bench` reports (bf16, fp32), the
    interleaved probe; FILES in that order."""
    bf16, fp32, probe = (_load(directory, name) for name in _exactly(files, 3))
    settings, interleaved = probe["settings"], probe["interleaved"]
    rows = [["DM reference, as measured here before pdd (issue 5)", *map(_ms, probe["before_pdd"]["reference"])],
            ["dm, bf16 (default), `pdd bench`", *_bench_row(bf16, "dm", settings)],
            ["pdd, bf16 (default), `pdd bench`", *_bench_row(bf16, "pdd", settings)],
            ["dm, fp32 (`--precision fp32`)", *_bench_row(fp32, "dm", settings)],
            ["pdd, fp32", *_bench_row(fp32, "pdd", settings)],
            ["*in one process, interleaved, 3 rounds:* DM reference", *map(_ms, interleaved["reference"])],
            ["dm, bf16", *map(_ms, interleaved["dm"])],
            ["pdd, bf16", *map(_ms, interleaved["pdd"])],
            ["dm / reference", *(f"{d / r:.2f}" for d, r in zip(interleaved["dm"], interleaved["reference"]))],
            ["pdd / dm", *(f"{p / d:.2f}" for p, d in zip(interleaved["pdd"], interleaved["dm"]))]]
    return _table(["(ipc, pipc)", *settings], rows)


def whole_trials(directory: Path, files: list[str]) -> list[str]:
    """Whole trials before and after (and after with --compile, where the run has it): seconds as the rows record
    them, each side's ratio to before, what /usr/bin/time -v saw."""
    record = _load(directory, _exactly(files, 1)[0])

    def seconds(side: dict[str, float]) -> str:
        total = side["seconds_distill"] + side["seconds_evaluate"]
        return f"{side['seconds_distill']:.1f} + {side['seconds_evaluate']:.1f} = {total:.1f} s"

    def total(side: dict[str, float]) -> float:
        return side["seconds_distill"] + side["seconds_evaluate"]

    def system(value: float) -> str:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"

    def faults(millions: float) -> str:
        return f"{millions:.1f} M" if millions >= 1 else f"{millions:.2f} M"

    sides = [side for side in ("after", "after, compiled") if side in record["trials"][0]]
    names = {"after": record["after"], "after, compiled": f"{record['after']} --compile"}
    rows = []
    for trial in record["trials"]:
        before, later = trial["before"], [trial[side] for side in sides]
        everyone = [before, *later]
        rows.append([trial["trial"], seconds(before), *(seconds(side) for side in later),
                     *(f"**{total(side) / total(before):.2f}**" for side in later),
                     " → ".join(system(side["system_seconds"]) for side in everyone),
                     " → ".join(faults(side["minor_page_faults_millions"]) for side in everyone),
                     " → ".join(_accuracy(side) for side in everyone)])
    return _table(["trial", f"{record['before']}: distill + evaluate",
                   *(f"{names[side]}: distill + evaluate" for side in sides),
                   *(f"ratio, {names[side]}" for side in sides), "system time", "minor page faults",
                   "test accuracy (same seeds)"], rows)


def eval_precision(directory: Path, files: list[str]) -> list[str]:
    """The paired fp32/bf16 evaluation-training checks: test accuracy over the same models, and their time."""
    record = _load(directory, _exactly(files, 1)[0])
    rows = []
    for check in record["eval_precision"]:
        fp32, bf16 = check["fp32"], check["bf16"]
        timed = fp32["seconds"] is not None and bf16["seconds"] is not None
        rows.append([check["set"], str(check["epochs"]), _accuracy(fp32), _accuracy(bf16),
                     f"{fp32['seconds']:.0f} s → {bf16['seconds']:.0f} s" if timed else "—"])
    return _table(["set", "epochs", "fp32 test", "bf16 test", "time, fp32 → bf16"], rows)


def batched_eval(directory: Path, files: list[str]) -> list[str]:
    """Evaluation models trained one by one against together (eval.batched), from `bench.bench_batched`: median
    seconds over the rounds, each round's ratio and their median."""
    record = _load(directory, _exactly(files, 1)[0])
    rows = []
    for row in record["batched"]:
        ratios = [b / a for a, b in zip(row["sequential_seconds_by_round"], row["batched_seconds_by_round"])]
        rows.append([str(row["ipc"]), row["precision"], f"{row['sequential_seconds']:.1f} s",
                     f"{row['batched_seconds']:.1f} s", ", ".join(f"{r:.2f}" for r in ratios),
                     f"**{row['batched_over_sequential']:.2f}**"])
    first = record["batched"][0]
    return _table(["ipc", "training precision", f"{first['models']} models one by one, {first['epochs']} epochs",
                   "together", "together / one by one, each round", "median"], rows)


def compile_cache(directory: Path, files: list[str]) -> list[str]:
    """DM's embedder eager against compiled with Inductor's cache empty and filled (benchmarks/compile_cache.py):
    ms per steady iteration, the seconds before the steady loop, and what a 1,000-iteration trial gains."""
    rows = []
    for name in files:
        record = _load(directory, name)
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for variant in record["variants"]:
            by_variant.setdefault(variant["variant"], []).append(variant)
        eager, cold, warm = by_variant["eager"], by_variant["compiled-cold"][0], by_variant["compiled-warm"][0]
        rows.append([f"({record['ipc']},{record['pipc']})", " / ".join(_ms(v["ms_per_iteration"]) for v in eager),
                     _ms(cold["ms_per_iteration"]), _ms(warm["ms_per_iteration"]),
                     f"**{record['warm_over_eager']:.2f}**",
                     f"{cold['before_steady_s']:.0f} s / {warm['before_steady_s']:.1f} s / "
                     + " / ".join(f"{v['before_steady_s']:.1f} s" for v in eager),
                     f"{record['seconds_saved_per_trial']:.0f} s"])
    return _table(["(ipc, pipc)", "eager, before / after (ms per iteration)", "compiled, cache empty",
                   "compiled, cache filled", "filled / eager", "before the steady loop: empty / filled / eager",
                   "saved over 1,000 iterations"], rows)


def trial_agreement(directory: Path, files: list[str]) -> list[str]:
    """`pdd bench`'s whole trials against the component figures timed beside them: the median round's ratios, whole
    and steady (the loops' medians), and where a whole epoch's excess goes (scoring after the last epoch)."""
    report = _load(directory, _exactly(files, 1)[0])
    rows = []
    for row in report["trials"]:
        ratio, inside, parts = row["trial_over_components"], row["inside"], row["components"]
        steady_epochs = ", ".join(f"{r['steady_epoch']:.2f}" for r in row["trial_over_components_by_round"])
        rows.append([row["method"], f"({row['ipc']},{row['pipc']})",
                     f"{row['ms_per_iteration']:.0f} / {parts['ms_per_iteration']:.0f}",
                     f"{ratio['iteration']:.2f}", f"**{ratio['steady_iteration']:.2f}**",
                     f"{row['ms_per_epoch']:.0f} / {parts['ms_per_epoch']:.0f}", f"{ratio['epoch']:.2f}",
                     f"**{ratio['steady_epoch']:.2f}** ({steady_epochs})",
                     f"{inside['evaluate_outside_epochs_s']:.2f} s"])
    first = report["trials"][0]
    return _table(["method", "(ipc, pipc)", "ms per iteration: trial / component", "ratio", "steady",
                   f"ms per epoch ({first['epochs']} epochs): trial / component", "ratio",
                   "steady (each round)", "scoring after the last epoch"], rows)


def _exactly(files: list[str], count: int) -> list[str]:
    if len(files) != count:
        raise PddError(f"this table reads {count} JSON file(s), the marker names {len(files)}: {', '.join(files)}")
    return files


def _accuracy(side: dict[str, float]) -> str:
    return f"{side['test_mean']:.2f} ± {side['test_std']:.2f}"


TABLES: dict[str, Callable[[Path, list[str]], list[str]]] = {
    "distillation": distillation,
    "whole-trials": whole_trials,
    "eval-precision": eval_precision,
    "batched-eval": batched_eval,
    "compile-cache": compile_cache,
    "trial-agreement": trial_agreement,
}


def regenerate(text: str, directory: Path) -> str:
    """`text` with every generated block rendered afresh from the JSON in `directory`."""
    lines, out = text.split("\n"), []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        opened = OPEN.match(line)
        if opened is None:
            continue
        name, indent = opened["name"], opened["indent"]
        if name not in TABLES:
            raise PddError(f"line {index}: no generated table is called '{name}'; known: {', '.join(TABLES)}")
        end = next((k for k in range(index, len(lines)) if lines[k].strip() == CLOSE), None)
        if end is None:
            raise PddError(f"line {index}: the generated block '{name}' has no '{CLOSE}'")
        named = FILES.search(opened["rest"])
        if named is None:
            raise PddError(f"line {index}: the generated block '{name}' names no JSON ('from FILE by ...')")
        files = re.split(r", | and ", named["files"])
        out += [indent + row for row in TABLES[name](directory, files)]
        index = end
    return "\n".join(out)


def update_readme(directory: Path) -> bool:
    """Rewrite directory/README.md's generated blocks from its JSON; True when that changed the file."""
    readme = Path(directory) / "README.md"
    if not readme.exists():
        raise PddError(f"{readme}: no README to render the speed tables into")
    text = readme.read_text()
    rendered = regenerate(text, Path(directory))
    if rendered == text:
        return False
    with atomic_path(readme) as tmp:
        tmp.write_text(rendered)
    return True
