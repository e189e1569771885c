"""Paired comparisons over draws of T': a claim "A beats B" is a claim over the real images that left the device.

Two methods of one cell that share subset seeds were scored on the same draws, so their per-draw differences
remove the draw's own effect (which real images were picked moves every method alike). The interval is the
paired t interval of the mean difference (scipy's `ttest_rel`), the sign count is how many draws A won.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Paired:
    """A − B over the draws both have, in subset-seed order."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float  # the interval's ends; nan with fewer than two draws
    high: float
    confidence: float

    @property
    def draws(self) -> int:
        return len(self.differences)

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def losses(self) -> int:
        return sum(d < 0 for d in self.differences)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (on either side)."""
        return self.low > 0 or self.high < 0


def paired(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Paired | None:
    """A − B over the subset seeds both were scored on; None when they share none."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    differences = tuple(a[seed] - b[seed] for seed in seeds)
    mean = statistics.fmean(differences)
    if len(seeds) < 2:
        low = high = math.nan
    elif len(set(differences)) == 1:  # no spread: t's interval collapses onto the mean (scipy would give nan)
        low = high = mean
    else:
        interval = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).confidence_interval(confidence)
        low, high = float(interval.low), float(interval.high)
    return Paired(seeds, differences, mean, low, high, confidence)
