"""The teacher's stationarity diagnostic: small at a minimum of the regularised loss, large away from it."""

import torch
import torch.nn.functional as F
from torch import nn

from pdd.data import normalize
from pdd.teacher import stationarity


def test_stationarity_gap_vanishes_at_the_regularised_minimum():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(3).repeat(20)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x = normalize(images)
    before = stationarity(model, images, labels, weight_decay=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=0.1)
    for _ in range(600):  # strongly convex: full-batch gradient descent converges
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    after = stationarity(model, images, labels, weight_decay=0.1)
    assert after["stationarity_gap"] < 0.01 * after["stat_floor"]
    assert before["stationarity_gap"] > 0.5 * before["stat_floor"]
