"""Whole `pdd trial` runs at two commits, one after the other, as the speed issue's targets measure them.

    python benchmarks/whole_trials.py OUT.json [--before b785de2] [--after HEAD] [--compile] [--budget smoke]

Each commit is checked out in a temporary git worktree and run with this checkout's Python environment (its
dependencies are the same), under `/usr/bin/time -v`, with one results directory and one dataset cache per
commit. Per trial and commit: `seconds_distill` and `seconds_evaluate` as the trial's row records them, the
process's system seconds and minor page faults, and the test accuracy (the same seeds, so a speed change that
moved accuracy shows). `--compile` adds the after commit with `--compile`, its Inductor cache filled first by a
short trial of the same shapes, as every trial after a node's first finds it. Run it on an otherwise idle
machine: the ratios between commits measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TRIALS = {  # the speed issue's two targets
    "(1,10), 1,000 epochs": ["--method", "dm", "--ipc", "1", "--pipc", "10", "--init", "real", "--iterations",
                             "1000", "--eval-epochs", "1000", "--eval-seeds", "3"],
    "(10,50), 300 epochs": ["--method", "dm", "--ipc", "10", "--pipc", "50", "--init", "real", "--iterations",
                            "1000", "--eval-epochs", "300", "--eval-seeds", "3"],
}
SMOKE = ["--iterations", "20", "--eval-epochs", "5", "--eval-seeds", "1"]  # wiring only: overrides the counts


def resolve(revision: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{revision}: not a commit of this repository")
    return done.stdout.strip()


def worktree(commit: str, parent: Path) -> Path:
    path = parent / commit
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True,
                   capture_output=True)
    return path


def run(code: Path, flags: list[str], scratch: Path, data: str) -> dict:
    scratch = scratch.with_name(re.sub(r"\W+", "-", scratch.name))  # Inductor's compiler calls take no spaces
    results = scratch / "results"
    env = os.environ | {"PYTHONPATH": str(code), "PDD_CACHE": str(scratch / "cache"), "PDD_DATA": data,
                        "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor")}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "pdd", "trial", *flags, "--results", str(results),
               "--device", "cpu", "--force"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
    if done.returncode:
        own = done.stderr.split("\tCommand being timed")[0].strip().splitlines() or ["(no output)"]
        sys.exit(f"{code.name}: pdd trial {' '.join(flags)} failed: {own[-1]}")
    newest = max(results.glob("*.parquet"), key=lambda path: path.stat().st_mtime)
    row = pq.read_table(newest).to_pylist()[0]
    usage = {key: float(value) for key, value in re.findall(r"^\s*(System time \(seconds\)|Minor \(reclaiming a "
                                                            r"frame\) page faults): ([\d.]+)$", done.stderr, re.M)}
    return {"seconds_distill": row["seconds_distill"], "seconds_evaluate": row["seconds_evaluate"],
            "system_seconds": usage["System time (seconds)"],
            "minor_page_faults_millions": usage["Minor (reclaiming a frame) page faults"] / 1e6,
            "test_mean": row["test_mean"], "test_std": row["test_std"], "git_commit": row["git_commit"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--before", default="b785de2")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--compile", action="store_true", help="also the after commit with --compile")
    parser.add_argument("--budget", choices=["cpu", "smoke"], default="cpu", help="smoke: a wiring check")
    parser.add_argument("--data", default=os.environ.get("PDD_DATA", str(ROOT.parent / "shared" / "datasets" /
                                                                         "cifar10-jpeg.tar.gz")))
    args = parser.parse_args()
    import torch

    from pdd.bench import cpu_name, matmul_gflops

    torch.set_num_threads(1)  # the rates a one-thread trial can reach
    with tempfile.TemporaryDirectory(prefix="pdd-whole-") as parent:
        parent = Path(parent)
        before, after = resolve(args.before), resolve(args.after)
        sides = {"before": (before, []), "after": (after, [])}
        if args.compile:
            sides["after, compiled"] = (after, ["--compile"])
        codes = {commit: worktree(commit, parent) for commit in {before, after}}
        record = {"cpu": cpu_name(), "threads": 1, "budget": args.budget, "before": before, "after": after,
                  "matmul_gflops": {str(dtype).removeprefix("torch."): matmul_gflops(torch.device("cpu"), dtype, 1024)
                                    for dtype in (torch.bfloat16, torch.float32)}, "trials": []}
        try:
            for trial, flags in TRIALS.items():
                entry = {"trial": trial, "command": "pdd trial " + " ".join(flags)}
                for side, (commit, extra) in sides.items():
                    if "--compile" in extra:  # fill the Inductor cache, as a node's first trial does for the rest
                        run(codes[commit], [*flags, *SMOKE, "--seed", "1", *extra], parent / side, args.data)
                    entry[side] = run(codes[commit], [*flags, *(SMOKE if args.budget == "smoke" else []), *extra],
                                      parent / side, args.data)
                    print(trial, side, entry[side], flush=True)
                record["trials"].append(entry)
                args.out.write_text(json.dumps(record, indent=2, default=str))
        finally:
            for code in codes.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(code)], cwd=ROOT, capture_output=True)
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
