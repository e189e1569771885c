"""Atomic writes: a crash leaves either the old file or the new one, never half of one; and reading back a
cache file that may be missing, truncated or foreign."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; results on shared storage must stay readable
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_cache_file(path: Path, cache_format: int) -> dict[str, Any] | None:
    """A torch cache file's payload (memory-mapped), or None when it is missing, unreadable or of another format:
    the caller then computes it again."""
    import torch

    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True, mmap=True)
    except Exception:  # torch raises many types for a truncated or foreign file; all mean "compute again"
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == cache_format else None
