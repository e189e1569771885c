"""Does torch.compile pay for a trial once Inductor's on-disk cache holds its graphs? (the speed issue's question)

    python benchmarks/compile_cache.py OUT.json [--iterations 40] [--ipc 1 --pipc 10]

Each variant runs in a fresh process, as every trial of a sweep does: the dm distillation loop of `pdd.bench`
(random data, bf16), eager, then with `compile: true` (DM's embedder compiled) twice over one TORCHINDUCTOR_CACHE_DIR:
first empty (a cold compile, as a sweep's first trial on a node), then holding what that run left (as every later
trial). Per variant: the seconds before the steady loop (set-up, two warm-up iterations and any compilation) and
the steady ms per iteration (the median after them). Whether it pays: the compile a warm trial still pays,
against what it saves over a cpu-budget trial's 1,000 iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL_ITERATIONS = 1000  # a cpu-budget trial's distillation


def child(variant: str, iterations: int, ipc: int, pipc: int) -> dict:
    """One variant in this process: pdd.bench's dm loop, with TrialConfig.compile unless eager."""
    import torch

    from pdd import bench

    opts = bench.Options(device=torch.device("cpu"), precision="bf16", iterations=iterations - 2, warmup=2,
                         compile=variant != "eager")
    began = time.perf_counter()
    figure = bench.bench_distill("dm", ipc, pipc, opts)
    seconds = time.perf_counter() - began
    steady = figure["ms_per_iteration"] / 1000
    # Everything but the steady iterations: set-up, the warm-up iterations and, compiled, the compilation.
    return {"variant": variant, "before_steady_s": seconds - steady * (iterations - 2),
            "ms_per_iteration": figure["ms_per_iteration"], "iterations": iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--pipc", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.iterations, args.ipc, args.pipc)))
        return
    from pdd.bench import cpu_name

    results = []
    with tempfile.TemporaryDirectory(prefix="pdd-inductor-") as cache:
        for variant in ("eager", "compiled-cold", "compiled-warm", "eager"):
            env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
            began = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, str(args.out), "--child", variant,
                                  "--iterations", str(args.iterations), "--ipc", str(args.ipc),
                                  "--pipc", str(args.pipc)], capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode:
                sys.exit(f"{variant} failed: {out.stderr.strip().splitlines()[-1]}")
            result = json.loads(out.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - began}
            print(result, flush=True)
            results.append(result)
    eager = statistics.mean(r["ms_per_iteration"] for r in results if r["variant"] == "eager")
    warm = next(r for r in results if r["variant"] == "compiled-warm")
    eager_before = statistics.mean(r["before_steady_s"] for r in results if r["variant"] == "eager")
    report = {"cpu": cpu_name(), "python": platform.python_version(), "threads": 1, "ipc": args.ipc,
              "pipc": args.pipc, "variants": results, "eager_ms_per_iteration": eager,
              "warm_over_eager": warm["ms_per_iteration"] / eager,
              "seconds_saved_per_trial": TRIAL_ITERATIONS * (eager - warm["ms_per_iteration"]) / 1000,
              "warm_compile_overhead_s": warm["before_steady_s"] - eager_before,
              "command": " ".join(["python benchmarks/compile_cache.py", str(args.out), "--iterations",
                                   str(args.iterations), "--ipc", str(args.ipc), "--pipc", str(args.pipc)])}
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "variants"}, indent=2))


if __name__ == "__main__":
    main()
