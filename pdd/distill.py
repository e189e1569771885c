"""The optimisation loop that turns initial images into a synthetic set S.

Each iteration computes the enabled terms of L_total = L_primal + alpha L_stat + gamma L_DM:
- DM: a fresh random embedder (re-initialised from the trial's generator), T' and S augmented with the
  same DSA parameters per class (Siamese), real embeddings without gradients.
- DKKT: the frozen teacher (eval mode, never stepped) on the clean synthetic images.
Images follow SGD with momentum 0.5 as in the DM reference, or Adam as in the DSV paper (optimizer_images);
the multipliers lambda = scale * softplus(u)
(dual feasibility by construction) follow Adam on u. The loop checkpoints its whole state, including the
generator's, so a killed trial resumes at the iteration it reached and continues the same random stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdd import augment, losses
from pdd.errors import DivergedError
from pdd.hooks import CheckpointStore, MemoryStore, NullReporter, NullTimer, Reporter, SectionTimer
from pdd.models import autocast, build_model, reset_parameters

if TYPE_CHECKING:
    from pdd.config import TrialConfig

SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) == 1
# Real images are embedded in chunks: on a CPU, 32 images' activations stay in cache and the no-gradient
# forward ran 1.9x faster than one batch of 500 (pdd bench). Each image's features do not depend on the chunk.
REAL_CHUNK = 32


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
    teacher: nn.Module | None = None
    teacher_weight_decay: float = 0.0
    reporter: Reporter = field(default_factory=NullReporter)
    store: CheckpointStore = field(default_factory=MemoryStore)
    checkpoint_every: int = 100
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


@dataclass(frozen=True)
class Terms:
    dkkt: bool
    dm: bool


@dataclass
class Distilled:
    images: Tensor
    labels: Tensor
    lambdas: Tensor | None
    final: dict[str, float]
    history: list[dict[str, float]]


def distill(problem: Problem, terms: Terms, images: Tensor, labels: Tensor, name: str) -> Distilled:
    cfg = problem.cfg
    device = problem.device
    generator = torch.Generator().manual_seed(cfg.seed)
    images = images.detach().clone().to(device).requires_grad_(True)
    free_lambdas = torch.full((len(images),), SOFTPLUS_ONE, device=device, requires_grad=True)
    opt_images = IMAGE_OPTIMIZERS[cfg.optimizer_images]([images], cfg)
    opt_lambdas = torch.optim.Adam([free_lambdas], lr=cfg.lr_lambda)
    scale = problem.lambda_scale(len(images))
    history: list[dict[str, float]] = []
    start = 0

    state = problem.store.load(name)
    if state is not None:
        with torch.no_grad():
            images.copy_(state["images"])
            free_lambdas.copy_(state["free_lambdas"])
        opt_images.load_state_dict(state["opt_images"])
        opt_lambdas.load_state_dict(state["opt_lambdas"])
        generator.set_state(state["generator"])
        history = list(state["history"])
        start = int(state["iteration"])

    embedder = _embedder(problem) if terms.dm else None
    real_by_class = [torch.nonzero(problem.real_labels == c).squeeze(1) for c in range(problem.num_classes)]
    teacher_params = [p for p in problem.teacher.parameters()] if terms.dkkt else []
    # L_stat when the weighted gradients vanish (mean |theta*| for l1): where a naive DKKT term stalls.
    stat_floor = losses.stat_floor(teacher_params, cfg.distance) if terms.dkkt else math.nan

    masked = cfg.primal == "misclassified"
    dm_weight = cfg.gamma if terms.dkkt else 1.0  # eq. 5 weighs DM by gamma; DM alone is plain eq. 2
    timer = problem.timer
    problem.reporter.start(name, cfg.iterations)
    metrics: dict[str, float] = {}
    for iteration in range(start, cfg.iterations):
        lambdas = scale * F.softplus(free_lambdas)
        parts: dict[str, Tensor] = {}
        if terms.dkkt:
            with timer.section("dkkt"):
                logits = problem.teacher(images)
                parts["primal"] = losses.l_primal(logits, labels, masked)
                parts["stat"] = losses.l_stat(teacher_params, logits, labels, lambdas, cfg.distance)
                if cfg.manifold_weight > 0:
                    # The DSV paper's manifold condition: augmented copies must satisfy the KKT terms too.
                    moved = augment.augment(images, generator, siamese=False)
                    moved_logits = problem.teacher(moved)
                    parts["manifold"] = losses.l_primal(moved_logits, labels, masked) + cfg.alpha * losses.l_stat(
                        teacher_params, moved_logits, labels, lambdas, cfg.distance)
        if terms.dm:
            parts["dm"] = _dm_term(problem, embedder, real_by_class, images, labels, generator)
        zero = images.new_zeros(())
        total = losses.l_total(parts.get("primal", zero), parts.get("stat", zero), parts.get("dm", zero),
                               cfg.alpha, dm_weight) + cfg.manifold_weight * parts.get("manifold", zero)
        metrics = {f"loss_{k}": v.item() for k, v in parts.items()} | {"loss_total": total.item()}
        if not all(math.isfinite(v) for v in metrics.values()):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            raise DivergedError(f"{name}: loss is not finite at iteration {iteration} ({shown})")

        opt_images.zero_grad(set_to_none=True)
        opt_lambdas.zero_grad(set_to_none=True)
        # One backward per term group sums to the gradient of L_total and lets the benchmark attribute time;
        # inputs= keeps gradients out of the frozen teacher's parameters.
        if terms.dm:
            with timer.section("synthetic"):
                (dm_weight * parts["dm"]).backward(inputs=[images])
        if terms.dkkt:
            with timer.section("dkkt"):
                dkkt = parts["primal"] + cfg.alpha * parts["stat"] + cfg.manifold_weight * parts.get("manifold", zero)
                dkkt.backward(inputs=[images, free_lambdas])
        with timer.section("step"):
            opt_images.step()
            if terms.dkkt:
                opt_lambdas.step()

        done = iteration + 1
        if terms.dkkt:
            metrics["lambda_mean"] = lambdas.mean().item()
            metrics["stat_floor"] = stat_floor
        if done % max(1, cfg.iterations // 50) == 0 or done == cfg.iterations:
            history.append({"iteration": float(done)} | metrics)
        problem.reporter.update(name, done, metrics)
        if done % problem.checkpoint_every == 0 and done < cfg.iterations:
            problem.store.save(name, {
                "iteration": done,
                "images": images.detach().cpu(),
                "free_lambdas": free_lambdas.detach().cpu(),
                "opt_images": opt_images.state_dict(),
                "opt_lambdas": opt_lambdas.state_dict(),
                "generator": generator.get_state(),
                "history": history,
            })

    final_lambdas = (scale * F.softplus(free_lambdas)).detach() if terms.dkkt else None
    return Distilled(images.detach(), labels, final_lambdas, metrics, history)


def _embedder(problem: Problem) -> nn.Module:
    channels, size, _ = problem.image_shape
    net = build_model(problem.cfg.model, channels, problem.num_classes, size).to(problem.device)
    net.requires_grad_(False)
    return net.train()  # as the DM reference: a BatchNorm embedder would use batch statistics


def _dm_term(problem: Problem, embedder: nn.Module, real_by_class: list[Tensor], images: Tensor,
             labels: Tensor, generator: torch.Generator) -> Tensor:
    """One DM step's loss with a fresh random embedder and one DSA draw shared by T' and S per class."""
    cfg, timer = problem.cfg, problem.timer
    with timer.section("augment"):
        reset_parameters(embedder, generator)
        picks = [idx[torch.randperm(len(idx), generator=generator)[: cfg.batch_real].to(idx.device)]
                 for idx in real_by_class]
        real_idx = torch.cat(picks)
        real, real_labels = problem.real[real_idx], problem.real_labels[real_idx]
        if cfg.dsa:
            # One transform kind per iteration, one parameter set per class, shared by real and synthetic images.
            transform = augment.sample_transform(generator, problem.num_classes, real.shape[-1])
            real = augment.apply_transform(real, transform, group=real_labels)
            images = augment.apply_transform(images, transform, group=labels)
    # bf16 for the real-image embeddings only: they carry no gradient, so rounding there cannot bias S's update.
    with timer.section("embed_real"), torch.no_grad(), autocast(cfg.precision, real.device):
        real_features = torch.cat([embedder.embed(chunk).float() for chunk in real.split(REAL_CHUNK)])
    with timer.section("synthetic"):
        syn_features = embedder.embed(images)
    return losses.l_dm(real_features, real_labels, syn_features, labels, problem.num_classes)
