"""The allocator setting pdd runs under: freed blocks are reused instead of faulted in afresh."""

import subprocess
import sys

# A 64 MiB block, above glibc's largest dynamic mmap threshold (32 MiB), as a ConvNet activation is: written, freed
# and allocated again, straight through libc, so the count depends on the setting and not on torch's heap history.
PROBE = """
import ctypes, ctypes.util, resource, sys
from pdd.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # once per process, then a no-op
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 << 20

def cycle():
    block = libc.malloc(size)
    libc.memset(block, 1, size)
    libc.free(block)

cycle()  # the first one grows the heap either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

APPLIED = """
import torch
from pdd import bench
from pdd.runtime import keep_freed_memory
bench.bench_distill("dm", 1, 10, bench.Options(device=torch.device("cpu"), iterations=1, warmup=0))
print(keep_freed_memory.cache_info().misses)
"""


def run(probe: str, *args: str) -> int:
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_freed_blocks_stop_faulting_in_fresh_pages():
    # Page-fault counts, not times: a mapped-and-freed block costs one fault per 4-KiB page it touches (16,384 here).
    assert run(PROBE, "keep") * 5 < run(PROBE, "default")


def test_distillation_applies_the_setting_itself():
    assert run(APPLIED) == 1  # distill raised the thresholds once, with no call by its user
