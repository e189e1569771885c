"""SAM's steps by the numbers, and evaluation's reproducibility."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdd.config import Evaluation
from pdd.evaluate import SAM, accuracy, score, train_on_synthetic
from pdd.hooks import MemoryStore
from pdd.models import ModelConfig
from pdd.sources import SOURCES

CIFAR = SOURCES["cifar10"].normalization


def quadratic_model():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.1, -0.1]))
    return model.double()  # float64, so "exactly" can be checked to 1e-12


def test_sam_first_step_perturbs_by_rho_g_over_norm_g():
    model = quadratic_model()
    x, y = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64), torch.tensor([0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    sam = SAM(list(model.parameters()), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
    sam.first_step()
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach() - p0, 0.05 * g / norm, rtol=1e-12, atol=1e-14)
    moved = torch.sqrt(sum(((p.detach() - p0) ** 2).sum() for p, p0 in zip(model.parameters(), before)))
    assert moved.item() == pytest.approx(0.05, rel=1e-12)


def test_sam_second_step_restores_weights_and_steps_with_the_perturbed_gradient():
    model = quadratic_model()
    x, y = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), torch.tensor([1])
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(x), y).backward()
    sam = SAM(list(model.parameters()), torch.optim.SGD(model.parameters(), lr=0.5), rho=0.1)
    sam.first_step()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    perturbed_grads = [p.grad.clone() for p in model.parameters()]
    sam.second_step()
    for p, p0, g in zip(model.parameters(), before, perturbed_grads):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * g)


def test_training_is_reproducible_per_seed_and_learns_a_separable_set():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 16, 16, generator=generator).repeat_interleave(5, 0)
    labels = torch.arange(4).repeat_interleave(5)
    cfg = Evaluation(epochs=30, seeds=1, batch=20, dsa=False)
    model_cfg = ModelConfig(width=8, depth=2)
    first = train_on_synthetic(images, labels, cfg, model_cfg, 4, seed=1)
    second = train_on_synthetic(images, labels, cfg, model_cfg, 4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    uint8 = ((images * 0.2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    assert accuracy(first, uint8, labels, CIFAR) == 100.0


def test_score_resumes_from_finished_seeds():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 8, 8, generator=generator)
    labels = torch.arange(4)
    held_out = (torch.randint(0, 255, (8, 3, 8, 8), dtype=torch.uint8, generator=generator), torch.arange(4).repeat(2))
    cfg = Evaluation(epochs=2, seeds=3, dsa=True)
    store = MemoryStore()
    full = score(images, labels, cfg, ModelConfig(width=4, depth=1), 4, held_out, held_out, CIFAR, store=store)
    assert full.seeds == [0, 1, 2] and len(full.val) == 3
    store.states["evaluate"]["test"][1] = -1.0  # a marker: a resumed run must reuse, not recompute, seed 1
    again = score(images, labels, cfg, ModelConfig(width=4, depth=1), 4, held_out, held_out, CIFAR, store=store)
    assert again.test[1] == -1.0 and again.test[0] == full.test[0]


def test_score_never_reuses_another_calls_results(monkeypatch):
    import pdd.evaluate as evaluate_module

    trained = []
    real_train = evaluate_module.train_on_synthetic
    monkeypatch.setattr(evaluate_module, "train_on_synthetic", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    images, labels = torch.randn(2, 3, 8, 8), torch.arange(2)
    held_out = (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    cfg = Evaluation(epochs=1, seeds=2, dsa=False)
    for _ in range(2):
        score(images, labels, cfg, ModelConfig(width=4, depth=1), 2, held_out, held_out, CIFAR)
    assert len(trained) == 4


def test_bf16_scoring_agrees_with_fp32_on_a_trained_net():
    """The bf16 path must score the same model to within a point; a broken cast would drop it to chance."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)
    # Four classes told apart by which colour channel is bright: a few SGD steps learn it.
    images = torch.randint(0, 100, (200, 3, 8, 8), dtype=torch.uint8, generator=generator)
    for channel in range(3):
        images[labels == channel, channel] += 120
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(CIFAR.normalize(images)), labels).backward()
        optimizer.step()
    plain = accuracy(model, images, labels, CIFAR, "fp32")
    assert plain > 90
    assert accuracy(model, images, labels, CIFAR, "bf16") == pytest.approx(plain, abs=1.0)


def test_uint8_images_normalised_per_batch_train_the_same_model_as_normalised_ones():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(4).repeat(10)
    cfg = Evaluation(protocol="dc", epochs=2, seeds=1, batch=16)
    model_cfg = ModelConfig(width=4, depth=1)
    per_batch = train_on_synthetic(images, labels, cfg, model_cfg, 4, seed=3, normalization=CIFAR)
    whole = train_on_synthetic(CIFAR.normalize(images), labels, cfg, model_cfg, 4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(per_batch.parameters(), whole.parameters()))
    with pytest.raises(TypeError, match="uint8 images need one"):
        train_on_synthetic(images, labels, cfg, model_cfg, 4, seed=3)
