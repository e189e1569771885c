"""The allocator setting a trial runs under: freed activations are reused instead of faulted in afresh."""

import subprocess
import sys

PROBE = """
import resource, sys, torch
from pdd import bench
from pdd.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # once per process, then a no-op
opts = bench.Options(device=torch.device("cpu"), precision="bf16", iterations=1, warmup=2)
bench.bench_distill("dm", 1, 10, opts)  # the first iterations grow the heap to its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
bench.bench_distill("dm", 1, 10, bench.Options(device=torch.device("cpu"), precision="bf16", iterations=4, warmup=0))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_distillation_iterations_stop_faulting_in_fresh_pages():
    # Page-fault counts, not times: each mapped-and-freed activation costs one fault per 4-KiB page it touches.
    assert page_faults("keep") * 5 < page_faults("default")
