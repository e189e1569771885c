"""How each method makes its synthetic set S from a Problem: the make functions of the specs in pdd.method_spec."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pdd.data import indices_by_class
from pdd.distill import Distilled, Problem, distill
from pdd.errors import PddError
from pdd.method_spec import BOTH, DKKT_ONLY, DM_ONLY, Terms
from pdd.synthetic import load_synthetic

Make = Callable[[Problem], Distilled]

MAKE: dict[str, Make] = {}  # method name -> its make function; the names are those of SPECS


def register(name: str) -> Callable[[Make], Make]:
    def add(make: Make) -> Make:
        MAKE[name] = make
        return make
    return add


def synthetic_labels(num_classes: int, ipc: int, device: torch.device) -> Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def first_per_class(problem: Problem, count: int) -> Tensor:
    """T' is stored grouped by class in draw order, so its first `count` per class are a random draw too."""
    picks = [idx[:count] for idx in indices_by_class(problem.real_labels, problem.num_classes)]
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


@register("dm")
def make_dm(problem: Problem) -> Distilled:
    return _distill_with(problem, DM_ONLY, "dm")


@register("dsv")
def make_dsv(problem: Problem) -> Distilled:
    return _distill_with(problem, DKKT_ONLY, "dsv")


@register("pdd")
def make_pdd(problem: Problem) -> Distilled:
    return _distill_with(problem, BOTH, "pdd")


@register("random")
def make_random(problem: Problem) -> Distilled:
    labels = synthetic_labels(problem.num_classes, problem.cfg.ipc, problem.device)
    return Distilled(first_per_class(problem, problem.cfg.ipc), labels, None, {}, [])


@register("blend")
def make_blend(problem: Problem) -> Distilled:
    cfg = problem.cfg
    if cfg.dsv_set is not None:
        dsv_images, dsv_labels = load_synthetic(cfg.dsv_set, problem.image_shape, problem.normalization)
        dsv_images, dsv_labels = dsv_images.to(problem.device), dsv_labels.to(problem.device)
        carried = 0.0
    else:
        # Fig. 3 blends DSVs extracted from noise, i.e. without real data.
        dsv = _distill_with(problem, DKKT_ONLY, "blend-dsv", init="noise")
        dsv_images, dsv_labels, carried = dsv.images, dsv.labels, dsv.carried_seconds
    dm = _distill_with(problem, DM_ONLY, "blend-dm")
    if not torch.equal(dsv_labels, dm.labels):
        raise PddError(f"the DSV set's labels are not ipc={cfg.ipc} x {problem.num_classes} classes in class order")
    return Distilled((dsv_images + dm.images) / 2, dm.labels, None, dm.final, dm.history,
                     carried + dm.carried_seconds)

