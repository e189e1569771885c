"""Judge a synthetic set: train fresh networks on it under a named protocol, then score them on val and test.

paper (supplement A): SAM over SGD, lr 0.1, rho 0.001, momentum 0.9, weight decay 5e-4, 5000 epochs; the
learning rate drops tenfold at half the epochs, as in the DM reference.
dc (the DC/DM reference's `evaluate_synset`): plain SGD, lr 0.01, momentum 0.9, weight decay 5e-4, epochs + 1
passes, then after pass epochs // 2 + 1 a new SGD at lr 0.001, as that loop does.
Both: batches of 256, DSA with independent per-image parameters on every batch. Model k is initialised,
shuffled and augmented from its own generator seeded eval.seed + k, on the set's device (no host round trip per
batch on a GPU). pdd.full_data trains the same way on a whole train split.

eval.batched trains a set's models together as one network (train_together): their weights stacked along a
leading model dimension, one vmapped forward over all of them. Each model keeps its own generator, drawn from in
the order the one-by-one path draws, so the two give the same weights to float tolerance.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdd import augment
from pdd.hooks import CheckpointStore, MemoryStore, NullReporter, Reporter
from pdd.models import GPU_EVAL_BATCH, autocast, build_model, chunk_size
from pdd.runtime import keep_freed_memory

if TYPE_CHECKING:
    from pdd.config import Evaluation
    from pdd.data import Normalization
    from pdd.models import ModelConfig


class SAM:
    """Sharpness-Aware Minimisation (Foret et al. 2021) around a base optimiser.

    first_step moves the weights to w + rho g/||g|| (the norm over all parameters at once); second_step
    puts them back and lets the base optimiser step with the gradient taken at the perturbed point.
    """

    def __init__(self, params: list[nn.Parameter], base: torch.optim.Optimizer, rho: float):
        self.params = [p for p in params if p.requires_grad]
        self.base = base
        self.rho = rho
        self._offsets: list[Tensor] = []

    @torch.no_grad()
    def first_step(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self._offsets = [g * scale for g, scale in zip(grads, self.scales(grads))]
        for p, offset in zip(self.params, self._offsets):
            p.add_(offset)

    def scales(self, grads: list[Tensor]) -> list[Tensor]:
        """rho / ||g||, the factor on each gradient."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return [self.rho / (norm + 1e-12)] * len(grads)

    @torch.no_grad()
    def second_step(self) -> None:
        for p, offset in zip(self.params, self._offsets):
            p.sub_(offset)
        self.base.step()

    def step(self, loss: Callable[[], Tensor]) -> None:
        """One SAM update on one batch; `loss` recomputes the batch's loss at the current weights."""
        loss().backward()
        self.first_step()
        self.base.zero_grad(set_to_none=True)
        loss().backward()
        self.second_step()
        self.base.zero_grad(set_to_none=True)


class StackedSAM(SAM):
    """SAM over the stacked weights of several models (leading dimension: the model): each model's perturbation
    has radius rho under the norm of its own gradient, as its own SAM would give it."""

    def scales(self, grads: list[Tensor]) -> list[Tensor]:
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (tensors, models)
        per_model = self.rho / (torch.linalg.vector_norm(norms, dim=0) + 1e-12)
        return [per_model.view(-1, *[1] * (g.dim() - 1)) for g in grads]


@dataclass(frozen=True)
class Scored:
    """Accuracies in percent, one per evaluation model."""

    seeds: list[int]
    val: list[float]
    test: list[float]
    carried_seconds: float = 0.0  # what earlier runs spent on the models this one found checkpointed

    def summary(self) -> dict[str, float]:
        (val_mean, val_std), (test_mean, test_std) = mean_std(self.val), mean_std(self.test)
        return {"val_mean": val_mean, "val_std": val_std, "test_mean": test_mean, "test_std": test_std}

    def fields(self) -> dict[str, object]:
        """The row columns of these scores."""
        return self.summary() | {"eval_seeds": self.seeds, "val_acc": self.val, "test_acc": self.test}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std of accuracies, std 0 for a single value: how results and reports state them."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def schedule(cfg: Evaluation) -> tuple[int, int]:
    """(passes over the training images, the pass from which the learning rate is a tenth) under cfg.protocol.

    dc follows evaluate_synset's loop exactly: epochs + 1 passes, and once pass epochs // 2 + 1 is over a fresh
    SGD (its momentum dropped) at a tenth of the rate.
    """
    return (cfg.epochs, cfg.epochs // 2) if cfg.protocol == "paper" else (cfg.epochs + 1, cfg.epochs // 2 + 2)


def train_on_synthetic(images: Tensor, labels: Tensor, cfg: Evaluation, model_cfg: ModelConfig,
                       num_classes: int, seed: int, reporter: Reporter = NullReporter(),
                       phase: str = "evaluate", normalization: Normalization | None = None) -> nn.Module:
    """Train one fresh model on the set under cfg.protocol (module docstring).

    images: normalised float, or uint8 with the `normalization` each batch is normalised with, so that a whole
    train split stays one byte a pixel (45,000 CIFAR-10 images as float32 are 550 MB).
    """
    _check_images(images, normalization)
    generator = torch.Generator(images.device).manual_seed(seed)
    channels, size = images.shape[1], images.shape[-1]
    model = build_model(model_cfg, channels, num_classes, size, generator=generator).to(images.device)
    model.train()
    _fit(list(model.parameters()), SAM, [generator], lambda xs, ys: loss(model, xs[0], ys[0], cfg.train_precision),
         images, labels, cfg, reporter, phase, normalization)
    return model.eval()


def train_together(images: Tensor, labels: Tensor, cfg: Evaluation, model_cfg: ModelConfig, num_classes: int,
                   seeds: Sequence[int], reporter: Reporter = NullReporter(), phase: str = "evaluate",
                   normalization: Normalization | None = None) -> list[nn.Module]:
    """Train one fresh model per seed as train_on_synthetic does, all at once: their weights stacked, one vmapped
    forward and backward per batch, one optimiser over the stacks.

    SGD's update, momentum and weight decay act element by element, so torch.optim.SGD over the stacks is each
    model's own SGD; SAM's norm is taken per model (StackedSAM). Each model's batch is drawn and augmented from its
    own generator outside vmap, in the order train_on_synthetic draws them.
    """
    _check_images(images, normalization)
    generators = [torch.Generator(images.device).manual_seed(seed) for seed in seeds]
    channels, size = images.shape[1], images.shape[-1]
    models = [build_model(model_cfg, channels, num_classes, size, generator=g).to(images.device).train()
              for g in generators]
    weights, buffers = torch.func.stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")  # the architecture only; the stacks are passed in
    forward = torch.func.vmap(lambda w, b, x: torch.func.functional_call(template, (w, b), (x,)))

    def stacked_loss(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
        # The sum of the models' mean losses: its gradient in each model's slice is that model's own.
        with autocast(cfg.train_precision, images.device):
            logits = forward(weights, buffers, torch.stack(xs))
        per_image = F.cross_entropy(logits.float().flatten(0, 1), torch.cat(ys), reduction="none")
        return per_image.view(len(xs), -1).mean(1).sum()

    _fit(list(weights.values()), StackedSAM, generators, stacked_loss, images, labels, cfg, reporter, phase,
         normalization)
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_((weights | buffers)[name][k])
    return [model.eval() for model in models]


def _check_images(images: Tensor, normalization: Normalization | None) -> None:
    if (images.dtype == torch.uint8) != (normalization is not None):
        raise TypeError(f"{images.dtype} images with normalization {normalization}: uint8 images need one, "
                        f"normalised ones none")


def _fit(params: list[Tensor], sam_type: type[SAM], generators: list[torch.Generator],
         batch_loss: Callable[[list[Tensor], list[Tensor]], Tensor], images: Tensor, labels: Tensor,
         cfg: Evaluation, reporter: Reporter, phase: str, normalization: Normalization | None) -> None:
    """The protocol's epochs over the set for one model or a stack of them: every epoch each generator shuffles
    its model's order, and batch_loss gets each model's batch (images, labels), drawn and augmented from it."""
    optimizer = _sgd(params, cfg, cfg.lr)
    sam = sam_type(params, optimizer, cfg.rho) if cfg.protocol == "paper" else None
    epochs, drop_at = schedule(cfg)
    reporter.start(phase, epochs)
    for epoch in range(epochs):
        if epoch == drop_at:
            if sam:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * 0.1
            else:
                optimizer = _sgd(params, cfg, cfg.lr * 0.1)
        orders = [torch.randperm(len(images), generator=g, device=g.device).split(cfg.batch) for g in generators]
        for batches in zip(*orders):
            xs = [_training_batch(images, batch, g, cfg.dsa, normalization) for g, batch in zip(generators, batches)]
            ys = [labels[batch] for batch in batches]
            if sam:
                sam.step(lambda xs=xs, ys=ys: batch_loss(xs, ys))
            else:
                batch_loss(xs, ys).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        reporter.update(phase, epoch + 1, {})


def _training_batch(images: Tensor, batch: Tensor, generator: torch.Generator, dsa: bool,
                    normalization: Normalization | None) -> Tensor:
    x = images[batch]
    if normalization is not None:
        x = normalization.normalize(x)
    return augment.augment(x, generator, siamese=False) if dsa else x


def loss(model: nn.Module, x: Tensor, y: Tensor, precision: str) -> Tensor:
    """Cross-entropy of the batch; bf16 runs the forward under autocast and takes the loss of fp32 logits."""
    with autocast(precision, x.device):
        logits = model(x)
    return F.cross_entropy(logits.float(), y)


def _sgd(params: list[Tensor], cfg: Evaluation, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@torch.inference_mode()
def accuracy(model: nn.Module, images_uint8: Tensor, labels: Tensor, normalization: Normalization,
             precision: str = "fp32", batch: int | None = None) -> float:
    """Percent correct; images stay uint8 until their batch is normalised (the dataset's statistics), to keep
    memory flat.

    precision "bf16" runs the forward under bfloat16 autocast (logits compared in float32). batch: images per
    forward, by default models.chunk_size on a CPU and GPU_EVAL_BATCH on a GPU.
    """
    model.eval()
    batch = batch or chunk_size(images_uint8.device) or GPU_EVAL_BATCH
    correct = 0
    with autocast(precision, images_uint8.device):
        for start in range(0, len(images_uint8), batch):
            x = normalization.normalize(images_uint8[start:start + batch])
            correct += int((model(x).float().argmax(1) == labels[start:start + batch]).sum())
    return 100.0 * correct / max(1, len(images_uint8))


def score(images: Tensor, labels: Tensor, cfg: Evaluation, model_cfg: ModelConfig, num_classes: int,
          val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], normalization: Normalization,
          reporter: Reporter = NullReporter(), store: CheckpointStore | None = None, label: str = "evaluate",
          title: str = "evaluate") -> Scored:
    """Train cfg.seeds models and score each on uint8 val and test images normalised with `normalization`;
    finished models are checkpointed under `label` so a resume skips them; progress shows as `title` k/n.

    cfg.batched trains the models not yet checkpointed together (train_together), then scores and checkpoints them
    one by one; a resumed run trains the rest together again, each from its own seed.

    images: a normalised synthetic set, or uint8 real images (a whole train split), normalised per batch with
    `normalization` as val and test are."""
    keep_freed_memory()
    store = store or MemoryStore()  # a fresh one per call: a shared default would carry seeds across calls
    scored = store.load(label) or {"seeds": [], "val": [], "test": [], "seconds": []}
    carried = sum(scored.get("seconds", []))  # a checkpoint older than the seconds field carries none
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    per_batch = normalization if images.dtype == torch.uint8 else None
    pending = [k for k, seed in enumerate(seeds) if seed not in scored["seeds"]]
    groups = [pending] if cfg.batched and pending else [[k] for k in pending]
    for group in groups:
        began = time.perf_counter()
        span = f"{group[0] + 1}" if len(group) == 1 else f"{group[0] + 1}-{group[-1] + 1}"
        phase = f"{title} {span}/{len(seeds)}"
        if cfg.batched:
            models = train_together(images, labels, cfg, model_cfg, num_classes, [seeds[k] for k in group],
                                    reporter, phase, per_batch)
        else:
            models = [train_on_synthetic(images, labels, cfg, model_cfg, num_classes, seeds[group[0]], reporter,
                                         phase, per_batch)]
        for k, model in zip(group, models):
            val_acc = accuracy(model, *val, normalization, cfg.precision)
            test_acc = accuracy(model, *test, normalization, cfg.precision)
            finished = time.perf_counter()  # a model trained together with others takes the group's time so far
            scored = {"seeds": scored["seeds"] + [seeds[k]], "val": scored["val"] + [val_acc],
                      "test": scored["test"] + [test_acc],
                      "seconds": scored.get("seconds", []) + [finished - began]}
            began = finished
            store.save(label, scored)
    order = [scored["seeds"].index(s) for s in seeds]
    return Scored(seeds, [scored["val"][i] for i in order], [scored["test"][i] for i in order], carried)
