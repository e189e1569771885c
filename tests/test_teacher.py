"""The teacher's stationarity diagnostic: small at a minimum of the regularised loss, large away from it."""

import torch
import torch.nn.functional as F
from torch import nn

from pdd.sources import SOURCES
from pdd.teacher import stationarity


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
