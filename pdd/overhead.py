"""Sweep overhead: how much of the trial slots' time a sweep spends outside the trial function.

    pdd sweep overhead results/smoke --out benchmarks/smoke-overhead.json

A slot is room for one trial (resources per trial against the cluster's). Busy slot-seconds are the wall time
spent inside the trial function, summed over trials (the trial that trains a `teacher: auto` among them);
available slot-seconds are slots x the driver's wall time, from `pdd sweep run` starting to it ending.
Utilisation is their ratio. The rest is idle slot time, and each trial is charged the idle time of its slot just
before it began: the driver's start-up (Ray, the first worker) for a slot's first trial, Tune's turnaround
(scheduling, actor start or reset) for the others. What no later trial claims is the tail: slots left idle until
the driver ended.

The same accounting over Tune's run alone (from its start to its end) leaves out the driver's one-off
start-up, mostly starting Ray: what remains is the cost that grows with the number of trials.

Pure arithmetic on timestamps (UTC epoch seconds), so it is testable without Ray; pdd.runner.driver_log gathers them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Overhead:
    slots: int
    trials: int
    wall_seconds: float  # driver start to driver end
    busy_slot_seconds: float  # inside the trial function, summed over trials
    available_slot_seconds: float  # slots x wall_seconds
    utilisation: float  # busy / available
    outside_median: float  # idle slot seconds charged to one trial (see the module docstring)
    outside_mean: float
    # available - busy, split by where it falls on each slot; the three add up to it exactly unless trials overlap
    startup_slot_seconds: float  # driver start to each slot's first trial (or to the end, for a slot never used)
    between_slot_seconds: float  # between consecutive trials on a slot
    tail_slot_seconds: float  # each slot's last trial to the driver's end
    outside: list[float] = field(repr=False)  # per trial, in start order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_slots(available: dict[str, float], cpu: float, gpu: float) -> int:
    """How many trials fit at once: the scarcest resource a trial asks for, in whole trials."""
    needs = {"CPU": cpu, "GPU": gpu}
    # A hair of tolerance: Ray reports fractional resources as floats (3 x 0.1 GPU is not quite 0.3).
    counts = [math.floor(available.get(name, 0.0) / need + 1e-9) for name, need in needs.items() if need > 0]
    return min(counts) if counts else 0


def slot_overhead(intervals: list[tuple[float, float]], started_at: float, ended_at: float,
                   slots: int) -> Overhead:
    """Overhead of one driver run from its trials' (start, end) times inside the trial function.

    Only trials that ran within [started_at, ended_at] count: a resumed sweep's earlier drivers are not this one.
    Trials are put on slots in start order, each on the free slot that freed up last (the one Tune would have
    handed on to it); if timestamps overlap more than the slots allow (clock skew between nodes), the trial takes
    the slot that freed up first and is charged nothing.
    """
    if slots < 1:
        raise ValueError(f"a sweep needs at least one trial slot, got {slots}")
    if ended_at < started_at:
        raise ValueError(f"the driver ended ({ended_at}) before it started ({started_at})")
    mine = sorted((start, end) for start, end in intervals if started_at <= start <= end <= ended_at)

    free_since = [started_at] * slots  # when each slot last became free
    used = [False] * slots
    outside, startup, between = [], 0.0, 0.0
    for start, end in mine:
        free = [k for k in range(slots) if free_since[k] <= start]
        k = max(free, key=free_since.__getitem__) if free else min(range(slots), key=free_since.__getitem__)
        idle = max(0.0, start - free_since[k])
        outside.append(idle)
        if used[k]:
            between += idle
        else:
            startup += idle
        used[k], free_since[k] = True, end
    # A slot no trial ever used was idle from start to end: that is start-up that never finished, not a tail.
    startup += sum(ended_at - started_at for k in range(slots) if not used[k])
    tail = sum(ended_at - free_since[k] for k in range(slots) if used[k])

    wall = ended_at - started_at
    busy = sum(end - start for start, end in mine)
    available = slots * wall
    return Overhead(
        slots=slots, trials=len(mine), wall_seconds=wall, busy_slot_seconds=busy, available_slot_seconds=available,
        utilisation=busy / available if available > 0 else 0.0,
        outside_median=statistics.median(outside) if outside else 0.0,
        outside_mean=statistics.fmean(outside) if outside else 0.0,
        startup_slot_seconds=startup, between_slot_seconds=between, tail_slot_seconds=tail, outside=outside)


def tune_window(marks: dict[str, float]) -> tuple[float, float] | None:
    """Tune's run, from the driver's "trials_started" mark to its "trials_ended" one; None if it has not both."""
    if "trials_started" in marks and "trials_ended" in marks:
        return marks["trials_started"], marks["trials_ended"]
    return None
