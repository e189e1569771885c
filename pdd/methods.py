"""The method registry: each name maps to how a synthetic set S is made from a Problem.

dm     : DM alone (eq. 2), no teacher.
dsv    : DKKT alone (eq. 4): Deep Support Vectors from the teacher, no real data (unless init is 'real').
pdd    : DKKT + gamma DM (eq. 5), the paper's method.
random : the first ipc images per class of T'; the baseline every distillation must beat.
blend  : the paper's Fig. 3, the image-by-image average of a DSV set and a DM set. The DSV set is
         distilled from the teacher, or read from a file (cfg.dsv_set) when only pre-extracted DSVs exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pdd.distill import Distilled, Problem, Terms, distill
from pdd.errors import PddError
from pdd.synthetic import load_synthetic

if TYPE_CHECKING:
    from pdd.config import TrialConfig


DM_ONLY = Terms(dkkt=False, dm=True)
DKKT_ONLY = Terms(dkkt=True, dm=False)
BOTH = Terms(dkkt=True, dm=True)


@dataclass(frozen=True)
class Method:
    name: str
    make: Callable[[Problem], Distilled]
    needs_teacher: Callable[[TrialConfig], bool]
    runs: tuple[Terms, ...]  # the distillation loops it runs, for cost estimates (pdd sweep estimate)


METHODS: dict[str, Method] = {}


def register(name: str, needs_teacher: bool | Callable[[TrialConfig], bool], runs: tuple[Terms, ...]):
    def add(make: Callable[[Problem], Distilled]) -> Callable[[Problem], Distilled]:
        rule = needs_teacher if callable(needs_teacher) else (lambda cfg, fixed=needs_teacher: fixed)
        METHODS[name] = Method(name, make, rule, runs)
        return make
    return add


def synthetic_labels(num_classes: int, ipc: int, device: torch.device) -> Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def first_per_class(problem: Problem, count: int) -> Tensor:
    """T' is stored grouped by class in draw order, so its first `count` per class are a random draw too."""
    picks = [torch.nonzero(problem.real_labels == c).squeeze(1)[:count] for c in range(problem.num_classes)]
    return problem.real[torch.cat(picks)]


def initial_images(problem: Problem, init: str) -> Tensor:
    cfg = problem.cfg
    if init == "real":
        return first_per_class(problem, cfg.ipc)
    generator = torch.Generator().manual_seed(cfg.seed)
    shape = (problem.num_classes * cfg.ipc, *problem.image_shape)
    return torch.randn(shape, generator=generator).to(problem.device)


def _distill_with(problem: Problem, terms: Terms, name: str, init: str | None = None) -> Distilled:
    labels = synthetic_labels(problem.num_classes, problem.cfg.ipc, problem.device)
    return distill(problem, terms, initial_images(problem, init or problem.cfg.init), labels, name)


@register("dm", needs_teacher=False, runs=(DM_ONLY,))
def make_dm(problem: Problem) -> Distilled:
    return _distill_with(problem, DM_ONLY, "dm")


@register("dsv", needs_teacher=True, runs=(DKKT_ONLY,))
def make_dsv(problem: Problem) -> Distilled:
    return _distill_with(problem, DKKT_ONLY, "dsv")


@register("pdd", needs_teacher=True, runs=(BOTH,))
def make_pdd(problem: Problem) -> Distilled:
    return _distill_with(problem, BOTH, "pdd")


@register("random", needs_teacher=False, runs=())
def make_random(problem: Problem) -> Distilled:
    labels = synthetic_labels(problem.num_classes, problem.cfg.ipc, problem.device)
    return Distilled(first_per_class(problem, problem.cfg.ipc), labels, None, {}, [])


@register("blend", needs_teacher=lambda cfg: cfg.dsv_set is None, runs=(DKKT_ONLY, DM_ONLY))
def make_blend(problem: Problem) -> Distilled:
    cfg = problem.cfg
    if cfg.dsv_set is not None:
        dsv_images, dsv_labels = load_synthetic(cfg.dsv_set, problem.image_shape, problem.normalization)
        dsv_images, dsv_labels = dsv_images.to(problem.device), dsv_labels.to(problem.device)
    else:
        # Fig. 3 blends DSVs extracted from noise, i.e. without real data.
        dsv = _distill_with(problem, DKKT_ONLY, "blend-dsv", init="noise")
        dsv_images, dsv_labels = dsv.images, dsv.labels
    dm = _distill_with(problem, DM_ONLY, "blend-dm")
    if not torch.equal(dsv_labels, dm.labels):
        raise PddError(f"the DSV set's labels are not ipc={cfg.ipc} x {problem.num_classes} classes in class order")
    return Distilled((dsv_images + dm.images) / 2, dm.labels, None, dm.final, dm.history)

