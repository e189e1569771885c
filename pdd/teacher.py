"""The edge model Phi(.; theta*): trained once on the train split, then loaded by every DKKT trial.

Training: SGD momentum 0.9 (or Adam) with a one-cycle schedule, weight decay, random crop (pad 4) and
flips, on the train split with the validation images held out; then, optionally, a final phase at a
constant small lr without augmentation, which brings theta* near the stationary point of the clean
objective that L_stat assumes. The checkpoint holds the weights and plain metadata (dataset hash and
normalisation, architecture, recipe, accuracies, stationarity over the whole training split), so it loads
with torch.load(weights_only=True) and a trial can refuse a teacher made for another dataset or architecture.

    pdd teacher train --budget cpu --out teachers/cifar10.pt
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdd import __version__, losses
from pdd.config import TeacherConfig, config_hash
from pdd.data import ImageDataset, Normalization, default_cache_dir, split_train_val
from pdd.errors import DivergedError, TeacherError
from pdd.evaluate import accuracy
from pdd.hooks import CheckpointStore, DirStore, MemoryStore, NullReporter, Reporter
from pdd.io import atomic_path
from pdd.models import ModelConfig, build_model
from pdd.runtime import keep_freed_memory


def train_teacher(cfg: TeacherConfig, dataset: ImageDataset, device: torch.device,
                  reporter: Reporter = NullReporter(), store: CheckpointStore | None = None) -> dict[str, Any]:
    keep_freed_memory()
    store = store or MemoryStore()  # a fresh one per call: a shared default would resume another teacher
    split = split_train_val(dataset.train_labels, cfg.data.val_per_class, cfg.data.split_seed,
                            classes=dataset.classes)
    train_idx = split.train_idx
    if cfg.train_max_images is not None:  # a random sample: the split is ordered by class, so a prefix is one class
        order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed))
        train_idx = train_idx[order[: cfg.train_max_images]]
    images = dataset.train_images[train_idx].to(device)
    labels = dataset.train_labels[train_idx].to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes, dataset.image_size, generator).to(device)
    init = _start_from(cfg, dataset, model, device) if cfg.init_from is not None else None
    main = _optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)
    # The final phase keeps the one-cycle phase's optimizer (and its momentum) unless it names another.
    switch = cfg.final_optimizer not in (None, cfg.optimizer)
    last = _optimizer(cfg.final_optimizer, model, cfg.final_lr, cfg.weight_decay) if switch else main
    steps_per_epoch = -(-len(images) // cfg.batch)
    schedule = (torch.optim.lr_scheduler.OneCycleLR(main, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
                if cfg.epochs else None)
    start_epoch, seconds = 0, 0.0
    settings = config_hash(cfg)
    state = store.load("teacher")
    # A checkpoint left by a run with other settings (same --out, new --weight-decay) is not this run's to resume.
    if state is not None and state.get("config_hash") == settings:
        model.load_state_dict(state["model"])
        (last if int(state["epoch"]) > cfg.epochs else main).load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        start_epoch, seconds = int(state["epoch"]), float(state["seconds"])

    total_epochs = cfg.epochs + cfg.final_epochs
    reporter.start("teacher", total_epochs)
    for epoch in range(start_epoch, total_epochs):
        final = epoch >= cfg.epochs
        optimizer = last if final else main
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), generator=generator).to(device)
        for step, batch in enumerate(order.split(cfg.batch)):
            if final:
                _hold(optimizer, _final_lr(cfg, (epoch - cfg.epochs) * steps_per_epoch + step, steps_per_epoch))
            x = dataset.normalization.normalize(images[batch])
            if cfg.augment and not final:
                x = _crop_flip(x, generator)
            loss = F.cross_entropy(model(x), labels[batch])
            if not torch.isfinite(loss):
                flag, value = ("--final-lr", cfg.final_lr) if final else ("--lr", cfg.lr)
                raise DivergedError(f"teacher training diverged in epoch {epoch + 1} (loss {loss.item()}): "
                                    f"lower {flag} (now {value}) or --weight-decay")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not final:
                schedule.step()
        seconds += time.perf_counter() - began
        store.save("teacher", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "schedule": schedule.state_dict() if schedule is not None else None,
                               "generator": generator.get_state(),
                               "epoch": epoch + 1, "seconds": seconds, "config_hash": settings})
        reporter.update("teacher", epoch + 1, {"loss": loss.item()})

    val = (dataset.train_images[split.val_idx].to(device), dataset.train_labels[split.val_idx].to(device))
    test = (dataset.test_images.to(device), dataset.test_labels.to(device))
    meta = {
        "dataset_hash": dataset.content_hash,
        "dataset_name": dataset.name,
        "normalization": {"mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std)},
        "model": cfg.model.model_dump(),
        "num_classes": dataset.num_classes,
        "image_shape": [dataset.channels, dataset.image_size, dataset.image_size],
        "config": cfg.model_dump(mode="json"),
        "epochs": cfg.epochs,
        "final_epochs": cfg.final_epochs,
        "weight_decay": cfg.weight_decay,
        "init": init,
        "train_images": len(images),
        "train_classes": int(labels.unique().numel()),
        "train_seconds": seconds,
        "val_accuracy": accuracy(model, *val, dataset.normalization),
        "test_accuracy": accuracy(model, *test, dataset.normalization),
        "pdd_version": __version__,
    } | stationarity(model, images, labels, dataset.normalization, cfg.weight_decay)
    return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "meta": meta}


def _optimizer(kind: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # weight_decay adds wd*theta to the gradient in both: the fixed point is that of mean L + wd/2 |theta|^2.
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS, weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=weight_decay, nesterov=True)


MOMENTUM = 0.9
BETAS = (0.9, 0.999)


def _final_lr(cfg: TeacherConfig, step: int, steps_per_epoch: int) -> float:
    """final_lr, or with final_anneal final_lr falling linearly to zero at the last step of the final phase."""
    if not cfg.final_anneal:
        return cfg.final_lr
    return cfg.final_lr * (1 - step / (cfg.final_epochs * steps_per_epoch))


def _hold(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The final phase's lr, with the momentum the one-cycle schedule had cycled set back."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = BETAS
        else:
            group["momentum"] = MOMENTUM


def _start_from(cfg: TeacherConfig, dataset: ImageDataset, model: nn.Module,
                device: torch.device) -> dict[str, Any]:
    """Load init_from's weights into model; refuses a teacher whose held-out images were others."""
    source, meta, digest = load_teacher(cfg.init_from, cfg.model, dataset, device)
    data = meta.get("config", {}).get("data", {})
    theirs = (data.get("val_per_class"), data.get("split_seed"))
    if theirs != (cfg.data.val_per_class, cfg.data.split_seed):
        raise TeacherError(f"teacher {cfg.init_from} held out val_per_class, split_seed = {theirs}, this run "
                           f"{(cfg.data.val_per_class, cfg.data.split_seed)}: its weights have seen this "
                           "run's validation images")
    model.load_state_dict(source.state_dict())
    return {"path": str(cfg.init_from), "sha256": digest, "config": meta.get("config"),
            "train_seconds": meta.get("train_seconds")}


def stationarity(model: nn.Module, images_uint8: Tensor, labels: Tensor, normalization: Normalization,
                 weight_decay: float, batch: int = 500) -> dict[str, float]:
    """How far theta* is from the stationarity the KKT condition assumes, over all the given images (fp32
    forward, gradients summed in float64, no augmentation: the objective L_stat assumes).

    At a minimum of mean_i L_i + wd/2 |theta|^2, theta* = -(1/wd) mean_i grad L_i =: implied.
    stationarity_gap: the l1 distance between the two sides (L_stat's D); stat_floor: theta*'s l1 distance to
    zero, L_stat with all multipliers zero; stationarity_cosine: cos(theta*, implied);
    stationarity_relative_gap: |theta* - implied| / |theta*| (l2); stationarity_grad_norm: |mean grad + wd
    theta*|, the gradient of the whole objective; stationarity_train_loss: mean_i L_i.
    """
    params = list(model.parameters())
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    loss_sum = 0.0
    model.eval()
    for start in range(0, len(images_uint8), batch):
        x = normalization.normalize(images_uint8[start:start + batch])
        loss = F.cross_entropy(model(x).float(), labels[start:start + batch], reduction="sum")
        for acc, grad in zip(total, torch.autograd.grad(loss, params), strict=True):
            acc += grad
        loss_sum += loss.item()
    theta = losses.flatten([p.detach().double() for p in params])
    mean_grad = losses.flatten(total) / len(images_uint8)
    implied = -mean_grad / max(weight_decay, 1e-12)
    return {"stationarity_images": len(images_uint8),
            "stationarity_train_loss": loss_sum / len(images_uint8),
            "stationarity_gap": losses.DISTANCES["l1"](theta, implied).item(),
            "stationarity_cosine": F.cosine_similarity(theta, implied, dim=0).item(),
            "stationarity_relative_gap": ((theta - implied).norm() / theta.norm()).item(),
            "stationarity_grad_norm": (mean_grad + weight_decay * theta).norm().item(),
            "stat_floor": losses.stat_floor(params, "l1")}


def _crop_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random 4-pixel translation (zero padded) and horizontal flip, one draw per batch for speed."""
    size = x.shape[-1]
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=generator))
    x = F.pad(x, (4, 4, 4, 4))[..., 4 + dy: 4 + dy + size, 4 + dx: 4 + dx + size]
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def save_teacher(path: Path, checkpoint: dict[str, Any]) -> str:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return file_hash(path)


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_teacher(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, weights) of a teacher file as save_teacher wrote it, unchecked against any dataset."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint not found: {path} (train one with `pdd teacher train`)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return checkpoint["meta"], checkpoint["state_dict"]
    except Exception as error:  # torch raises many types for a foreign or truncated file
        raise TeacherError(f"cannot read teacher checkpoint {path}: not a pdd teacher file "
                           f"({type(error).__name__})") from None


def load_teacher(path: str | Path, model_cfg: ModelConfig, dataset: ImageDataset,
                 device: torch.device) -> tuple[nn.Module, dict[str, Any], str]:
    """(frozen teacher in eval mode, its metadata, sha256 of the file); refuses a teacher for other data or nets."""
    meta, state_dict = read_teacher(path)
    if meta.get("dataset_hash") != dataset.content_hash:
        raise TeacherError(f"teacher {path} was trained on dataset {meta.get('dataset_name')!r} "
                           f"(hash {str(meta.get('dataset_hash'))[:12]}), not on {dataset.name!r} "
                           f"(hash {dataset.content_hash[:12]})")
    if meta.get("model") != model_cfg.model_dump():
        raise TeacherError(f"teacher {path} is a {_describe(meta.get('model'))}, the trial asks for "
                           f"{_describe(model_cfg.model_dump())}")
    model = build_model(model_cfg, dataset.channels, dataset.num_classes, dataset.image_size)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise TeacherError(f"teacher {path}: weights do not fit {_describe(model_cfg.model_dump())}") from None
    return model.to(device).eval(), meta, file_hash(path)


def _describe(model: Any) -> str:
    if not isinstance(model, dict):
        return "network of unknown architecture"
    return f"{model.get('arch')} (depth {model.get('depth')}, width {model.get('width')}, norm {model.get('norm')})"


def cached_teacher_path(cfg: TeacherConfig, dataset: ImageDataset) -> Path:
    """Where this machine keeps the teacher `--teacher auto` trains for this dataset and config."""
    return default_cache_dir() / "teachers" / f"{dataset.content_hash[:16]}-{config_hash(cfg)}.pt"


def ensure_teacher(cfg: TeacherConfig, dataset: ImageDataset, device: torch.device,
                   reporter: Reporter = NullReporter()) -> Path:
    """The cached teacher for this dataset and config, trained first if there is none (`--teacher auto`)."""
    path = cached_teacher_path(cfg, dataset)
    if not path.exists():
        store = DirStore(path.parent / f".{path.stem}.checkpoints")
        save_teacher(path, train_teacher(cfg, dataset, device, reporter, store))
    return path
