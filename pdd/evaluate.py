"""Judge a synthetic set: train fresh networks on it under a named protocol, then score them on val and test.

paper (supplement A): SAM over SGD, lr 0.1, rho 0.001, momentum 0.9, weight decay 5e-4, 5000 epochs; the
learning rate drops tenfold at half the epochs, as in the DM reference.
dc (the DC/DM reference's `evaluate_synset`): plain SGD, lr 0.01, momentum 0.9, weight decay 5e-4, epochs + 1
passes, then after pass epochs // 2 + 1 a new SGD at lr 0.001, as that loop does.
Both: batches of 256, DSA with independent per-image parameters on every batch. Model k is initialised,
shuffled and augmented from its own generator seeded eval.seed + k. pdd.full_data trains the same way on a whole
train split.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
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
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = self.rho / (norm + 1e-12)
        self._offsets = [g * scale for g in grads]
        for p, offset in zip(self.params, self._offsets):
            p.add_(offset)

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


@dataclass(frozen=True)
class Scored:
    """Accuracies in percent, one per evaluation model."""

    seeds: list[int]
    val: list[float]
    test: list[float]

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
    if (images.dtype == torch.uint8) != (normalization is not None):
        raise TypeError(f"{images.dtype} images with normalization {normalization}: uint8 images need one, "
                        f"normalised ones none")
    generator = torch.Generator().manual_seed(seed)
    channels, size = images.shape[1], images.shape[-1]
    model = build_model(model_cfg, channels, num_classes, size, generator=generator).to(images.device)
    optimizer = _sgd(model, cfg, cfg.lr)
    sam = SAM(list(model.parameters()), optimizer, cfg.rho) if cfg.protocol == "paper" else None
    epochs, drop_at = schedule(cfg)
    model.train()
    reporter.start(phase, epochs)
    for epoch in range(epochs):
        if epoch == drop_at:
            if sam:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * 0.1
            else:
                optimizer = _sgd(model, cfg, cfg.lr * 0.1)
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for batch in order.split(cfg.batch):
            x, y = images[batch], labels[batch]
            if normalization is not None:
                x = normalization.normalize(x)
            if cfg.dsa:
                x = augment.augment(x, generator, siamese=False)
            if sam:
                sam.step(lambda x=x, y=y: loss(model, x, y, cfg.train_precision))
            else:
                loss(model, x, y, cfg.train_precision).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        reporter.update(phase, epoch + 1, {})
    return model.eval()


def loss(model: nn.Module, x: Tensor, y: Tensor, precision: str) -> Tensor:
    """Cross-entropy of the batch; bf16 runs the forward under autocast and takes the loss of fp32 logits."""
    with autocast(precision, x.device):
        logits = model(x)
    return F.cross_entropy(logits.float(), y)


def _sgd(model: nn.Module, cfg: Evaluation, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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

    images: a normalised synthetic set, or uint8 real images (a whole train split), normalised per batch with
    `normalization` as val and test are."""
    keep_freed_memory()
    store = store or MemoryStore()  # a fresh one per call: a shared default would carry seeds across calls
    scored = store.load(label) or {"seeds": [], "val": [], "test": []}
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    for k, seed in enumerate(seeds):
        if seed in scored["seeds"]:
            continue
        phase = f"{title} {k + 1}/{len(seeds)}"
        model = train_on_synthetic(images, labels, cfg, model_cfg, num_classes, seed, reporter, phase,
                                   normalization if images.dtype == torch.uint8 else None)
        scored = {"seeds": scored["seeds"] + [seed],
                  "val": scored["val"] + [accuracy(model, *val, normalization, cfg.precision)],
                  "test": scored["test"] + [accuracy(model, *test, normalization, cfg.precision)]}
        store.save(label, scored)
    order = [scored["seeds"].index(s) for s in seeds]
    return Scored(seeds, [scored["val"][i] for i in order], [scored["test"][i] for i in order])
