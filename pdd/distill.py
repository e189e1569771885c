"""The optimisation loop that turns initial images into a synthetic set S.

Each iteration computes the enabled terms of L_total = L_primal + alpha L_stat + gamma L_DM:
- DM: a fresh random embedder (re-initialised from the trial's generator), T' and S augmented with the
  same DSA parameters per class (Siamese), real embeddings without gradients.
- DKKT: the frozen teacher (eval mode, never stepped) on the clean synthetic images.
precision 'bf16' runs every forward (real, synthetic, teacher) under bfloat16 autocast; losses stay float32.
Images follow SGD with momentum 0.5 as in the DM reference, or Adam as in the DSV paper (optimizer_images);
the multipliers lambda = scale * softplus(u)
(dual feasibility by construction) follow Adam on u. The loop checkpoints its whole state, including the
generator's, so a killed trial resumes at the iteration it reached and continues the same random stream. The
generator lives on the trial's device, so a GPU re-initialises embedders and draws real picks and DSA parameters
without a host round trip; the stream then depends on the device, which the trial id records.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdd import augment, losses
from pdd.data import indices_by_class
from pdd.errors import DivergedError
from pdd.hooks import CheckpointStore, MemoryStore, NullReporter, NullTimer, Reporter, SectionTimer
from pdd.method_spec import Terms
from pdd.models import autocast, build_model, chunk_size, reset_parameters
from pdd.runtime import keep_freed_memory

if TYPE_CHECKING:
    from pdd.config import TrialConfig
    from pdd.data import Normalization

SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) == 1


IMAGE_OPTIMIZERS: dict[str, Callable[[list[Tensor], TrialConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr_images, momentum=cfg.momentum_images),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr_images),
}


@dataclass
class Problem:
    """What distillation may see: T' (normalised, on the device), the teacher if any, and the config."""

    cfg: TrialConfig
    real: Tensor
    real_labels: Tensor
    num_classes: int
    normalization: Normalization  # how real was normalised; S lives in the same space
    teacher: nn.Module | None = None
    teacher_weight_decay: float = 0.0
    reporter: Reporter = field(default_factory=NullReporter)
    store: CheckpointStore = field(default_factory=MemoryStore)
    checkpoint_every: int = 100
    checkpoint_seconds: float = 0.0  # at least this long between checkpoints, as well as checkpoint_every iterations
    timer: SectionTimer | NullTimer = field(default_factory=NullTimer)

    @property
    def device(self) -> torch.device:
        return self.real.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.real.shape[1:])  # type: ignore[return-value]

    def lambda_scale(self, num_images: int) -> float:
        """At a minimum of mean L + wd/2 |theta|^2, theta* = -(1/wd) mean grad L: n images need lambda ~ 1/(wd n)."""
        if self.cfg.lambda_init != "auto":
            return float(self.cfg.lambda_init)
        if self.teacher_weight_decay <= 0:
            return 1.0
        return 1.0 / (self.teacher_weight_decay * num_images)


@dataclass
class Distilled:
    images: Tensor
    labels: Tensor
    lambdas: Tensor | None
    final: dict[str, float]
    history: list[dict[str, float]]
    carried_seconds: float = 0.0  # what earlier runs spent up to the checkpoint this one resumed from


@dataclass
class LoopState:
    """What the loop changes, which is what a checkpoint holds: one field list for saving and loading alike."""

    images: Tensor  # the leaf the image optimiser steps
    free_lambdas: Tensor  # lambda = scale * softplus(free_lambdas)
    opt_images: torch.optim.Optimizer
    opt_lambdas: torch.optim.Optimizer
    generator: torch.Generator  # embedders, real picks and DSA draws: a resumed run continues the same stream
    iteration: int = 0  # iterations completed
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # the loop's time up to this state, over every run that reached it

    def state_dict(self) -> dict[str, Any]:
        return {item.name: _saved(getattr(self, item.name)) for item in fields(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for item in fields(self):
            if item.name in state:  # a field newer than the checkpoint keeps its start value
                setattr(self, item.name, _restored(getattr(self, item.name), state[item.name]))


def _saved(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, torch.optim.Optimizer):
        return value.state_dict()
    return copy.copy(value)


def _restored(current: Any, saved: Any) -> Any:
    """`current` with the saved state; tensors, optimisers and the generator are updated in place."""
    if isinstance(current, Tensor):
        with torch.no_grad():
            current.copy_(saved)
    elif isinstance(current, torch.Generator):
        current.set_state(saved)
    elif isinstance(current, torch.optim.Optimizer):
        current.load_state_dict(saved)
    else:
        return copy.copy(saved)
    return current


def _total(parts: dict[str, Tensor], cfg: TrialConfig, dm_weight: float) -> Tensor:
    """L_total over the terms computed (losses.l_total, DM weighed by dm_weight), plus the weighted manifold term."""
    zero = next(iter(parts.values())).new_zeros(())
    return losses.l_total(parts.get("primal", zero), parts.get("stat", zero), parts.get("dm", zero), cfg.alpha,
                          dm_weight) + cfg.manifold_weight * parts.get("manifold", zero)


def distill(problem: Problem, terms: Terms, images: Tensor, labels: Tensor, name: str) -> Distilled:
    keep_freed_memory()
    cfg = problem.cfg
    device = problem.device
    images = images.detach().clone().to(device).requires_grad_(True)
    free_lambdas = torch.full((len(images),), SOFTPLUS_ONE, device=device, requires_grad=True)
    state = LoopState(images, free_lambdas, IMAGE_OPTIMIZERS[cfg.optimizer_images]([images], cfg),
                      torch.optim.Adam([free_lambdas], lr=cfg.lr_lambda), torch.Generator(device).manual_seed(cfg.seed))
    saved = problem.store.load(name)
    if saved is not None:
        state.load_state_dict(saved)
    generator = state.generator
    scale = problem.lambda_scale(len(images))
    carried, began = state.seconds, time.perf_counter()

    embedder = _embedder(problem) if terms.dm else None
    real_by_class = indices_by_class(problem.real_labels, problem.num_classes)
    teacher_params = [p for p in problem.teacher.parameters()] if terms.dkkt else []
    # L_stat when the weighted gradients vanish (mean |theta*| for l1): where a naive DKKT term stalls.
    stat_floor = losses.stat_floor(teacher_params, cfg.distance) if terms.dkkt else math.nan

    masked = cfg.primal == "misclassified"
    dm_weight = cfg.gamma if terms.dkkt else 1.0  # eq. 5 weighs DM by gamma; DM alone is plain eq. 2
    class_groups = _class_groups(labels, problem.num_classes, chunk_size(device))
    timer = problem.timer
    problem.reporter.start(name, cfg.iterations)
    metrics: dict[str, float] = {}
    saved_at = time.monotonic()
    for iteration in range(state.iteration, cfg.iterations):
        lambdas = scale * F.softplus(free_lambdas)
        state.opt_images.zero_grad(set_to_none=True)
        state.opt_lambdas.zero_grad(set_to_none=True)
        # Each term group runs its own backward: their sum is the gradient of L_total, the DM term can go class
        # group by class group, and the benchmark can attribute time. inputs= keeps the frozen nets' grads empty.
        parts: dict[str, Tensor] = {}
        if terms.dkkt:
            with timer.section("dkkt"):
                dkkt = _dkkt_terms(problem, teacher_params, images, labels, lambdas, generator, masked)
                _total(dkkt, cfg, dm_weight).backward(inputs=[images, free_lambdas])
            parts |= {k: v.detach() for k, v in dkkt.items()}
        if terms.dm:
            parts["dm"] = _dm_step(problem, embedder, real_by_class, class_groups, images, labels, generator,
                                   dm_weight)
        total = _total(parts, cfg, dm_weight)
        named = {f"loss_{k}": v for k, v in parts.items()} | {"loss_total": total}
        if terms.dkkt:
            named["lambda_mean"] = lambdas.detach().mean()
        # one read of the device per iteration (on a GPU each read waits for every kernel queued before it)
        metrics = dict(zip(named, torch.stack([value.float() for value in named.values()]).tolist(), strict=True))
        if not all(math.isfinite(v) for v in metrics.values()):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            raise DivergedError(f"{name}: loss is not finite at iteration {iteration} ({shown})")
        with timer.section("step"):
            state.opt_images.step()
            if terms.dkkt:
                state.opt_lambdas.step()

        state.iteration = iteration + 1
        if terms.dkkt:
            metrics["stat_floor"] = stat_floor
        if state.iteration % max(1, cfg.iterations // 50) == 0 or state.iteration == cfg.iterations:
            state.history.append({"iteration": float(state.iteration)} | metrics)
        problem.reporter.update(name, state.iteration, metrics)
        if (state.iteration % problem.checkpoint_every == 0 and state.iteration < cfg.iterations
                and time.monotonic() - saved_at >= problem.checkpoint_seconds):
            state.seconds = carried + time.perf_counter() - began
            problem.store.save(name, state.state_dict())
            saved_at = time.monotonic()

    final_lambdas = (scale * F.softplus(free_lambdas)).detach() if terms.dkkt else None
    return Distilled(images.detach(), labels, final_lambdas, metrics, state.history, carried)


def _embedder(problem: Problem) -> nn.Module:
    channels, size, _ = problem.image_shape
    net = build_model(problem.cfg.model, channels, problem.num_classes, size).to(problem.device)
    net.requires_grad_(False)
    if problem.cfg.compile:
        # Fixed shapes (T' chunks, S's class groups) give a few static graphs; re-initialising the weights in place
        # each iteration changes their values, not the graphs.
        net.embed = torch.compile(net.embed, dynamic=False)
    return net.train()  # as the DM reference: a BatchNorm embedder would use batch statistics


def _class_groups(labels: Tensor, num_classes: int, chunk: int | None) -> list[Tensor]:
    """Indices of S in groups of whole classes, about `chunk` images each (DM's loss is a sum over classes)."""
    per_class = [idx for idx in indices_by_class(labels, num_classes) if len(idx)]
    size = len(per_class) if chunk is None else max(1, chunk // max(len(idx) for idx in per_class))
    return [torch.cat(per_class[i:i + size]) for i in range(0, len(per_class), size)]


def _dm_step(problem: Problem, embedder: nn.Module, real_by_class: list[Tensor], class_groups: list[Tensor],
             images: Tensor, labels: Tensor, generator: torch.Generator, weight: float) -> Tensor:
    """One DM step with a fresh random embedder and one DSA draw shared by T' and S per class.

    Adds weight * grad L_DM to images.grad and returns L_DM (detached).
    """
    cfg, timer = problem.cfg, problem.timer
    with timer.section("augment"):
        reset_parameters(embedder, generator)
        picks = [idx[torch.randperm(len(idx), generator=generator, device=generator.device)[: cfg.batch_real]]
                 for idx in real_by_class]
        real_idx = torch.cat(picks)
        real, real_labels = problem.real[real_idx], problem.real_labels[real_idx]
        moved = images
        if cfg.dsa:
            # One transform kind per iteration, one parameter set per class, shared by real and synthetic images.
            transform = augment.sample_transform(generator, problem.num_classes, real.shape[-1])
            real = augment.apply_transform(real, transform, group=real_labels)
            moved = augment.apply_transform(images, transform, group=labels)
    chunk = chunk_size(real.device) or len(real)
    with timer.section("embed_real"), torch.no_grad(), autocast(cfg.precision, real.device):
        real_features = torch.cat([embedder.embed(part).float() for part in real.split(chunk)])
    with timer.section("synthetic"):
        # The loss is a sum over classes, so each class group's forward and backward run while its activations
        # are still in cache; the augmentation's backward then runs once, on the summed gradient.
        leaf = moved.detach().requires_grad_(True)
        loss = images.new_zeros(())
        for group in class_groups:
            with autocast(cfg.precision, images.device):
                features = embedder.embed(leaf[group]).float()
            group_loss = losses.l_dm(real_features, real_labels, features, labels[group], problem.num_classes)
            (weight * group_loss).backward(inputs=[leaf])
            loss += group_loss.detach()
        moved.backward(leaf.grad, inputs=[images])  # without DSA, moved is images and this just accumulates
    return loss


def _dkkt_terms(problem: Problem, teacher_params: list[Tensor], images: Tensor, labels: Tensor, lambdas: Tensor,
                generator: torch.Generator, masked: bool) -> dict[str, Tensor]:
    """L_primal and L_stat of the teacher on clean S (and on augmented S if the manifold term is on), with graphs."""
    cfg = problem.cfg
    with autocast(cfg.precision, images.device):
        logits = problem.teacher(images).float()
        parts = {"primal": losses.l_primal(logits, labels, masked),
                 "stat": losses.l_stat(teacher_params, logits, labels, lambdas, cfg.distance)}
        if cfg.manifold_weight > 0:
            # The DSV paper's manifold condition: augmented copies must satisfy the KKT terms too.
            moved_logits = problem.teacher(augment.augment(images, generator, siamese=False)).float()
            parts["manifold"] = losses.l_primal(moved_logits, labels, masked) + cfg.alpha * losses.l_stat(
                teacher_params, moved_logits, labels, lambdas, cfg.distance)
    return parts
