"""Process settings under which pdd runs at the machine's speed, applied by distillation, evaluation and teachers.

glibc's malloc serves a block above its mmap threshold (dynamic, at most 32 MiB) with a fresh mapping and unmaps
it on free. A ConvNet's activations are such blocks (256 images x 128 x 32 x 32 in bf16 is 64 MiB), so every
iteration got new pages that the kernel had to zero-fill on first touch: page faults and system time that
`pdd bench`'s short loops barely showed but whole trials paid for (benchmarks/README.md). Raising the mmap and
trim thresholds keeps freed blocks in the heap for the next iteration. mallopt changes the running process, so
no environment variable has to be set before Python starts, and Ray's workers get it from the trial itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above every activation a trial allocates; the dynamic threshold never passes 32 MiB, below a single activation.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 30  # mallopt takes a C int


@cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
