"""How the core loops talk to the outside: progress goes to a Reporter, resumable state to a CheckpointStore.

The CLI implements them with rich progress bars and files, the Tune glue with tune.report and
tune.Checkpoint, and tests with the in-memory versions below. Core modules never print.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from pdd.io import atomic_path


class Reporter(Protocol):
    """Where progress goes: rich bars in the CLI, tune.report in a sweep, nothing in tests."""

    def start(self, phase: str, total: int) -> None: ...

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None: ...


class CheckpointStore(Protocol):
    """Named state dicts of plain tensors and numbers, loadable with torch.load(weights_only=True)."""

    def load(self, name: str) -> dict[str, Any] | None: ...

    def save(self, name: str, state: dict[str, Any]) -> None: ...


class NullReporter:
    def start(self, phase: str, total: int) -> None:
        pass

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        pass


class MemoryStore:
    """Keeps checkpoints in memory: for tests, and for runs nobody needs to resume."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def load(self, name: str) -> dict[str, Any] | None:
        return self.states.get(name)

    def save(self, name: str, state: dict[str, Any]) -> None:
        # A snapshot, as a file would be: optimiser state dicts hold references to live buffers.
        self.states[name] = copy.deepcopy(state)


class MirroredStore:
    """Saves to every store and loads from the first that holds the name: a sweep trial checkpoints to Tune and to
    its artifact folder, which `pdd sweep export` carries, so another machine resumes it where it was."""

    def __init__(self, *stores: CheckpointStore) -> None:
        self.stores = stores

    def load(self, name: str) -> dict[str, Any] | None:
        return next((state for state in (store.load(name) for store in self.stores) if state is not None), None)

    def save(self, name: str, state: dict[str, Any]) -> None:
        for store in self.stores:
            store.save(name, state)


class DirStore:
    """One file per name in a directory, written atomically: what a local trial resumes from."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.directory / f"{name}.ckpt"
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable, e.g. from another torch version: redo that phase rather than fail
            return None

    def save(self, name: str, state: dict[str, Any]) -> None:
        with atomic_path(self.directory / f"{name}.ckpt") as tmp:
            torch.save(state, tmp)

    def discard(self, name: str | None = None) -> None:
        """Forget one phase's checkpoint, or every one: a forced rerun starts afresh instead of resuming."""
        for path in [self.directory / f"{name}.ckpt"] if name else self.directory.glob("*.ckpt"):
            path.unlink(missing_ok=True)


class NullTimer:
    def section(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


class SectionTimer:
    """Wall time per named section of a loop, summed: the benchmark's breakdown of an iteration.

    CUDA work is asynchronous, so each boundary synchronises; that costs time, which is why only the
    benchmark uses this and trials use NullTimer.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
