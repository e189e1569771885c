"""Does pdd run on a CUDA GPU, and how well? A check for a machine that has one; CI never runs it.

    python benchmarks/gpu_check.py OUT_DIR [--budget-seconds 420]
    python benchmarks/gpu_check.py OUT_DIR --device cpu   # the same wiring on a CPU, before a GPU is lent

Runs, each section timed and written to OUT_DIR/gpu-check.json as soon as it ends (a killed run keeps what it got):
1. a smoke trial of every registered method on generated CIFAR-10-shaped data, with the teacher `auto` trains,
   counting the host-device synchronisations each one makes (torch.cuda.set_sync_debug_mode);
2. the tests that need CUDA (they skip on a CPU);
3. five evaluation models trained one after another and together (eval.batched) at ipc 1, 10 and 50, bf16 and
   fp32 (expected under a minute);
4. `pdd bench --device cuda` (JSON beside this one);
5. four dm trials packed on the GPU at once, each capped at a quarter of its memory, against one alone;
6. a dm iteration eager and with `compile: true`, at (1,10) and (10,50).
Sections past the time budget are skipped and say so. Needs pdd's dependencies without Ray or Optuna.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def save(out: Path, report: dict[str, Any]) -> None:
    tmp = out / "gpu-check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out / "gpu-check.json")


def smoke_trials(data: Path, results: Path, device: str) -> list[dict[str, Any]]:
    import torch

    from pdd.cli.trial import resolve_teacher
    from pdd.config import TrialConfig
    from pdd.method_spec import SPECS
    from pdd.trial import TrialOptions, run_trial

    rows = []
    for method in SPECS:
        cfg = TrialConfig(method=method, ipc=1, pipc=10, budget="smoke", data={"source": str(data), "val_per_class": 5})
        teacher = resolve_teacher("auto", cfg, device, _Quiet())
        on_gpu = device.startswith("cuda")
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            row = run_trial(cfg, TrialOptions(results=results, teacher=teacher, device=device, force=True))[0]
        if on_gpu:
            torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        rows.append({"method": method, "status": row["status"], "reason": row.get("reason"),
                     "test_mean": row.get("test_mean"), "seconds": time.perf_counter() - started,
                     "seconds_distill": row.get("seconds_distill"), "syncs": syncs,
                     "syncs_per_iteration": syncs / max(cfg.iterations, 1), "device": row["device"]})
    return rows


class _Quiet:
    def start(self, phase: str, total: int) -> None:
        pass

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        pass


def packed_trials(data: Path, out: Path, device: str, count: int = 4) -> dict[str, Any]:
    """Wall time of `count` dm trials at once, each under a 1/count memory cap on a GPU, against one alone."""
    cap = f"torch.cuda.set_per_process_memory_fraction({1 / count});" if device.startswith("cuda") else ""
    peak = "torch.cuda.max_memory_allocated()" if device.startswith("cuda") else "0"
    script = (f"import sys, torch; sys.path.insert(0, {str(ROOT)!r}); {cap}"
              "from pdd.config import TrialConfig; from pdd.trial import TrialOptions, run_trial;"
              "cfg = TrialConfig(method='dm', ipc=10, pipc=50, budget='smoke', iterations=60,"
              f" eval={{'epochs': 20, 'seeds': 1}}, data={{'source': {str(data)!r}, 'val_per_class': 5}});"
              f"row = run_trial(cfg, TrialOptions(results=sys.argv[1], device={device!r}, force=True))[0];"
              f"print(row['status'], {peak})")

    def run(n: int) -> tuple[float, list[str]]:
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", script,
                                   str(out / f"packed-{n}-{k}")], stdout=subprocess.PIPE, text=True)
                 for k in range(n)]
        lines = [proc.communicate()[0].strip() for proc in procs]
        return time.perf_counter() - started, lines

    alone, alone_out = run(1)
    packed, packed_out = run(count)
    return {"one_seconds": alone, "packed": count, "packed_seconds": packed,
            "throughput_gain": count * alone / packed, "outputs": alone_out + packed_out}


def batched_evaluation(device: str) -> list[dict[str, Any]]:
    """Seconds for the paper budget's five evaluation models one by one and together; on a CPU the batched path
    was the slower one (benchmarks/README.md), on a GPU one small ConvNet leaves the device idle."""
    import torch

    from pdd.bench import Options, bench_batched

    return bench_batched(Options(torch.device(device), rounds=3), ipcs=(1, 10, 50), models=5, epochs=30)


def compiled_distillation(device: str) -> list[dict[str, Any]]:
    """ms per dm iteration eager and with compile: true (DM's embedder through torch.compile), at (1,10) and (10,50):
    on a GPU each DM iteration launches many small kernels, which Inductor fuses."""
    import torch

    from pdd.bench import Options, bench_distill

    figures = []
    for ipc, pipc in ((1, 10), (10, 50)):
        for compile_embedder in (False, True):
            opts = Options(torch.device(device), precision="bf16", iterations=20, warmup=3, compile=compile_embedder)
            figure = bench_distill("dm", ipc, pipc, opts)
            figures.append({"ipc": ipc, "pipc": pipc, "compile": compile_embedder,
                            "ms_per_iteration": figure["ms_per_iteration"]})
    return figures


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    budget = float(sys.argv[sys.argv.index("--budget-seconds") + 1]) if "--budget-seconds" in sys.argv else 420.0
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    import torch

    from pdd.bench import DEFAULT_SPEC, generated_image_folder

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    report: dict[str, Any] = {"torch": torch.__version__, "device": name,
                              "python": sys.version.split()[0], "sections": {}}
    save(out, report)
    scratch = Path(tempfile.mkdtemp(prefix="pdd-gpu-"))
    os.environ.setdefault("PDD_CACHE", str(scratch / "cache"))
    data = generated_image_folder(scratch / "data", 60, DEFAULT_SPEC)
    sections = {
        "smoke_trials": lambda: smoke_trials(data, scratch / "results", device),
        "cuda_tests": lambda: subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", str(ROOT / "tests" /
             "test_augment.py"), str(ROOT / "tests" / "test_distill.py"), str(ROOT / "tests" / "test_evaluate.py")],
            capture_output=True, text=True, cwd=ROOT).stdout.strip().splitlines()[-1],
        "batched_evaluation": lambda: batched_evaluation(device),
        "bench": lambda: subprocess.run(
            [sys.executable, "-m", "pdd", "bench", "--device", device, "--rounds", "1", "--out",
             str(out / "bench-cuda.json")], capture_output=True, text=True, cwd=ROOT).returncode,
        "packed_trials": lambda: packed_trials(data, scratch, device),
        "compiled_distillation": lambda: compiled_distillation(device),
    }
    for name, section in sections.items():
        if time.perf_counter() - began > budget:
            report["sections"][name] = {"skipped": "past the time budget"}
            continue
        started = time.perf_counter()
        try:
            result = section()
        except Exception as error:  # one section's failure is a finding, not the end of the check
            result = {"error": f"{type(error).__name__}: {error}"}
        report["sections"][name] = {"seconds": time.perf_counter() - started, "result": result}
        save(out, report)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
