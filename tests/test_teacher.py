"""The teacher: its recipe, its checkpoint, and its stationarity diagnostics (small at a minimum of the
regularised loss, large away from it)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdd.config import TeacherConfig
from pdd.data import ImageDataset, Normalization
from pdd.hooks import MemoryStore
from pdd.sources import SOURCES
from pdd.teacher import stationarity, train_teacher

CPU = torch.device("cpu")
TINY = {"width": 4, "depth": 1, "norm": "none"}


def generated_dataset(per_class: int = 40, classes: int = 3, size: int = 8) -> ImageDataset:
    """One-channel images: a fixed pattern per class under uniform noise, so a tiny ConvNet learns them."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(classes, 1, size, size, generator=generator)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(count)
        noise = torch.rand(len(labels), 1, size, size, generator=generator)
        return (patterns[labels] * 160 + noise * 95).to(torch.uint8), labels

    return ImageDataset(*draw(per_class), *draw(10), tuple("abc"[:classes]), "0" * 64, "generated",
                        Normalization((0.5,), (0.25,)))


def tiny_config(**values) -> TeacherConfig:
    """Full-batch steps (batch > 105 training images) and a strong weight decay: a well-conditioned objective."""
    return TeacherConfig(**{"batch": 512, "lr": 0.05, "weight_decay": 0.05, "model": TINY,
                            "data": {"source": "generated", "val_per_class": 5}} | values)


def test_stationarity_gap_vanishes_at_the_regularised_minimum():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(3).repeat(20)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    cifar = SOURCES["cifar10"].normalization
    x = cifar.normalize(images)
    before = stationarity(model, images, labels, cifar, weight_decay=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=0.1)
    for _ in range(600):  # strongly convex: full-batch gradient descent converges
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    after = stationarity(model, images, labels, cifar, weight_decay=0.1)
    assert after["stationarity_gap"] < 0.01 * after["stat_floor"]
    assert before["stationarity_gap"] > 0.5 * before["stat_floor"]


def test_a_checkpoint_from_other_settings_is_not_resumed(cifar_slice):
    """Same --out, new weight decay: training starts over instead of finishing the old run's schedule."""
    from pdd.config import TeacherConfig
    from pdd.hooks import MemoryStore
    from pdd.teacher import train_teacher
    from pdd.trial import cached_dataset

    dataset = cached_dataset(str(cifar_slice))
    values = {"budget": "smoke", "epochs": 2, "data": {"source": str(cifar_slice), "val_per_class": 5}}
    store = MemoryStore()
    train_teacher(TeacherConfig(**values), dataset, torch.device("cpu"), store=store)
    assert store.load("teacher")["epoch"] == 2

    resumed = MemoryStore()
    resumed.save("teacher", store.load("teacher"))
    fresh = train_teacher(TeacherConfig(**values, weight_decay=0.01), dataset, torch.device("cpu"), store=resumed)
    alone = train_teacher(TeacherConfig(**values, weight_decay=0.01), dataset, torch.device("cpu"))
    assert fresh["meta"]["train_seconds"] > 0
    for name, weights in alone["state_dict"].items():
        assert torch.equal(fresh["state_dict"][name], weights), name


def test_a_capped_teacher_sees_every_class(cifar_slice):
    from pdd.config import TeacherConfig
    from pdd.teacher import train_teacher
    from pdd.trial import cached_dataset

    cfg = TeacherConfig(budget="smoke", train_max_images=60, data={"source": str(cifar_slice), "val_per_class": 5})
    checkpoint = train_teacher(cfg, cached_dataset(str(cifar_slice)), torch.device("cpu"))
    assert checkpoint["meta"]["train_classes"] == 10


def test_a_diverging_teacher_stops_with_one_line(cifar_slice):
    import pytest

    from pdd.config import TeacherConfig
    from pdd.errors import DivergedError
    from pdd.teacher import train_teacher
    from pdd.trial import cached_dataset

    cfg = TeacherConfig(budget="smoke", lr=1e30, data={"source": str(cifar_slice), "val_per_class": 5})
    with pytest.raises(DivergedError, match="diverged in epoch 1.*lower --lr"):
        train_teacher(cfg, cached_dataset(str(cifar_slice)), torch.device("cpu"))


def test_full_split_diagnostics_equal_a_direct_computation():
    """Batched fp32 sums (37 images in batches of 10) against one float64 pass of the whole objective."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (37, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (37,), generator=generator)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5), nn.ReLU(), nn.Linear(5, 3))
    cifar = SOURCES["cifar10"].normalization
    wd = 0.01
    got = stationarity(model, images, labels, cifar, wd, batch=10)

    exact = nn.Sequential(nn.Flatten(), nn.Linear(48, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    exact.load_state_dict(model.state_dict())
    params = list(exact.parameters())
    loss = F.cross_entropy(exact(cifar.normalize(images).double()), labels)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    implied = -grad / wd
    want = {"stationarity_images": 37, "stationarity_train_loss": loss.item(),
            "stationarity_gap": (theta - implied).abs().mean().item(),
            "stationarity_cosine": (theta @ implied / (theta.norm() * implied.norm())).item(),
            "stationarity_relative_gap": ((theta - implied).norm() / theta.norm()).item(),
            "stationarity_grad_norm": (grad + wd * theta).norm().item(),
            "stat_floor": theta.abs().mean().item()}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


def test_the_final_phase_settles_the_teacher_at_its_stationary_point():
    """Same 203 epochs: one-cycle with augmentation is far from stationary, one-cycle without augmentation
    near it, and 3 one-cycle epochs plus 200 at a constant lr without augmentation nearest."""
    dataset = generated_dataset()
    augmented = train_teacher(tiny_config(epochs=203), dataset, CPU)["meta"]
    clean = train_teacher(tiny_config(epochs=203, augment=False), dataset, CPU)["meta"]
    final = train_teacher(tiny_config(epochs=3, final_epochs=200, final_lr=0.2), dataset, CPU)["meta"]
    assert final["stationarity_images"] == 105 and final["final_epochs"] == 200
    assert final["stationarity_cosine"] > 0.9999
    assert final["stationarity_relative_gap"] < 0.02
    assert final["stationarity_gap"] < 0.02 * final["stat_floor"]
    assert clean["stationarity_relative_gap"] > 5 * final["stationarity_relative_gap"]
    assert augmented["stationarity_cosine"] < 0.5


def test_adam_with_coupled_weight_decay_reaches_the_same_kind_of_point():
    """Coupled L2 (not AdamW): Adam's fixed point is the KKT point, so its annealed end is near-stationary."""
    meta = train_teacher(tiny_config(epochs=303, optimizer="adam", lr=0.01, augment=False),
                         generated_dataset(), CPU)["meta"]
    assert meta["config"]["optimizer"] == "adam"
    assert meta["stationarity_cosine"] > 0.99


@pytest.mark.parametrize("final_optimizer", [None, "adam"])
def test_a_teacher_resumed_in_its_final_phase_ends_where_an_uninterrupted_one_does(final_optimizer):
    class StopAfter(MemoryStore):
        def save(self, name, state):
            super().save(name, state)
            if state["epoch"] == 4:
                raise KeyboardInterrupt

    dataset = generated_dataset()
    cfg = tiny_config(epochs=2, batch=16, final_epochs=4, final_lr=0.01, final_optimizer=final_optimizer)
    store = StopAfter()
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg, dataset, CPU, store=store)
    resumed = MemoryStore()
    resumed.save("teacher", store.load("teacher"))
    finished = train_teacher(cfg, dataset, CPU, store=resumed)["state_dict"]
    alone = train_teacher(cfg, dataset, CPU)["state_dict"]
    for name, weights in alone.items():
        assert torch.equal(finished[name], weights), name


def test_the_checkpoint_records_full_split_diagnostics_and_normalisation(cifar_slice, tmp_path):
    from pdd.data import split_train_val
    from pdd.teacher import load_teacher, save_teacher
    from pdd.trial import cached_dataset

    dataset = cached_dataset(str(cifar_slice))
    cfg = TeacherConfig(budget="smoke", train_max_images=None, data={"source": str(cifar_slice), "val_per_class": 5})
    path = tmp_path / "teacher.pt"
    save_teacher(path, train_teacher(cfg, dataset, CPU))
    model, meta, _ = load_teacher(path, cfg.model, dataset, CPU)
    assert meta["normalization"] == {"mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std)}
    train_idx = split_train_val(dataset.train_labels, 5, cfg.data.split_seed).train_idx
    assert meta["stationarity_images"] == meta["train_images"] == len(train_idx) == 250
    again = stationarity(model, dataset.train_images[train_idx], dataset.train_labels[train_idx],
                         dataset.normalization, cfg.weight_decay)
    for key, value in again.items():
        assert meta[key] == pytest.approx(value, rel=1e-6), key


def test_init_from_starts_from_a_teachers_weights_and_records_it(tmp_path):
    from pdd.errors import TeacherError
    from pdd.teacher import file_hash, save_teacher

    dataset = generated_dataset()
    first = train_teacher(tiny_config(epochs=2), dataset, CPU)
    path = tmp_path / "first.pt"
    digest = save_teacher(path, first)
    measured = train_teacher(tiny_config(epochs=0, init_from=str(path)), dataset, CPU)
    for name, weights in first["state_dict"].items():
        assert torch.equal(measured["state_dict"][name], weights), name
    assert measured["meta"]["init"]["sha256"] == digest == file_hash(path)
    assert measured["meta"]["stationarity_gap"] == pytest.approx(first["meta"]["stationarity_gap"], rel=1e-9)
    settled = train_teacher(tiny_config(epochs=0, final_epochs=50, final_lr=0.2, init_from=str(path)), dataset, CPU)
    assert settled["meta"]["stationarity_relative_gap"] < 0.5 * first["meta"]["stationarity_relative_gap"]

    other_split = tiny_config(epochs=0, init_from=str(path), data={"source": "generated", "val_per_class": 6})
    with pytest.raises(TeacherError, match="validation images"):
        train_teacher(other_split, dataset, CPU)


def test_a_run_that_neither_trains_nor_starts_from_weights_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="epochs \\+ final_epochs must be at least 1"):
        tiny_config(epochs=0)


def test_an_annealed_final_phase_ends_nearer_stationarity_than_a_constant_one():
    """Minibatches of 16: at a constant lr the last iterate carries SGD's noise; annealed to 0 it fades."""
    dataset = generated_dataset()
    runs = {anneal: train_teacher(tiny_config(epochs=3, batch=16, final_epochs=10, final_lr=0.1,
                                              final_anneal=anneal), dataset, CPU)["meta"]
            for anneal in (False, True)}
    assert runs[True]["stationarity_cosine"] > 0.9 > runs[False]["stationarity_cosine"]
    assert runs[True]["stationarity_relative_gap"] < 0.5 * runs[False]["stationarity_relative_gap"]
