"""SAM's steps by the numbers, evaluation's reproducibility, and models trained together matching one by one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdd.config import Evaluation
from pdd.evaluate import SAM, StackedSAM, accuracy, score, train_on_synthetic, train_together
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
    store.states["evaluate"]["seconds"] = [2.5, 4.0, 1.5]  # what the first run's three models took, by its clock
    again = score(images, labels, cfg, ModelConfig(width=4, depth=1), 4, held_out, held_out, CIFAR, store=store)
    assert again.test[1] == -1.0 and again.test[0] == full.test[0]
    assert (full.carried_seconds, again.carried_seconds) == (0.0, 8.0), "the resumed run counts the first one's time"


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


def _separable_set(n_per_class: int = 6, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(n_per_class)
    return torch.randn(len(labels), 3, size, size, generator=generator) + labels.view(-1, 1, 1, 1) * 0.5, labels


@pytest.mark.parametrize(("protocol", "norm"), [("paper", "instance"), ("dc", "instance"), ("dc", "batch")])
def test_models_trained_together_get_the_weights_trained_one_by_one_give(protocol, norm):
    """Three models, DSA on, three batches an epoch, past the learning rate's drop (dc: a fresh optimiser)."""
    images, labels = _separable_set()
    cfg = Evaluation(protocol=protocol, epochs=4, seeds=3, seed=7, batch=8, train_precision="fp32")
    model_cfg = ModelConfig(width=8, depth=1, norm=norm)
    together = train_together(images, labels, cfg, model_cfg, 4, [7, 8, 9])
    for seed, batched in zip([7, 8, 9], together, strict=True):
        alone = train_on_synthetic(images, labels, cfg, model_cfg, 4, seed)
        for name, tensor in alone.state_dict().items():
            torch.testing.assert_close(batched.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    first, second = (dict(model.named_parameters()) for model in together[:2])
    assert not torch.allclose(first["classifier.weight"], second["classifier.weight"], atol=1e-2)


@pytest.mark.parametrize("protocol", ["paper", "dc"])
def test_batched_scoring_gives_the_one_by_one_accuracies(protocol):
    images, labels = _separable_set(size=8)
    uint8 = ((images * 0.2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    held_out = (uint8, labels)
    runs = [Evaluation(protocol=protocol, epochs=6, seeds=3, batch=8, train_precision="fp32", precision="fp32",
                       batched=batched) for batched in (False, True)]
    alone, together = (score(images, labels, cfg, ModelConfig(width=8, depth=1), 4, held_out, held_out, CIFAR)
                       for cfg in runs)
    assert together == alone
    assert min(alone.test) > 50  # four classes: every model learned, chance is 25


def test_a_resumed_batched_score_trains_the_missing_models_together_from_their_own_seeds(monkeypatch):
    import pdd.evaluate as evaluate_module

    images, labels = _separable_set(size=8)
    held_out = (((images * 0.2 + 0.5).clamp(0, 1) * 255).to(torch.uint8), labels)
    cfg = Evaluation(epochs=3, seeds=3, batch=8, train_precision="fp32", precision="fp32", batched=True)
    model_cfg = ModelConfig(width=8, depth=1)
    full = score(images, labels, cfg, model_cfg, 4, held_out, held_out, CIFAR)
    store = MemoryStore()
    store.save("evaluate", {"seeds": [0], "val": [-1.0], "test": [-1.0]})  # as a run killed after its first model
    together = []
    real = evaluate_module.train_together
    monkeypatch.setattr(evaluate_module, "train_together", lambda *a, **k: together.append(a[5]) or real(*a, **k))
    resumed = score(images, labels, cfg, model_cfg, 4, held_out, held_out, CIFAR, store=store)
    assert together == [[1, 2]]
    assert resumed.seeds == [0, 1, 2] and resumed.test[0] == -1.0 and resumed.test[1:] == full.test[1:]
    assert store.load("evaluate")["seeds"] == [0, 1, 2]


def test_stacked_sam_perturbs_each_model_by_rho_over_its_own_gradient_norm():
    weights = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64, requires_grad=True)  # two models
    weights.grad = torch.tensor([[3.0, 4.0], [0.0, 0.5]], dtype=torch.float64)
    sam = StackedSAM([weights], torch.optim.SGD([weights], lr=0.1), rho=0.1)
    sam.first_step()
    offsets = weights.detach() - torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(offsets, torch.tensor([[0.06, 0.08], [0.0, 0.1]], dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_models_trained_together_on_cuda_get_the_one_by_one_weights():
    images, labels = (tensor.cuda() for tensor in _separable_set())
    cfg = Evaluation(epochs=3, seeds=3, batch=8, train_precision="fp32")
    model_cfg = ModelConfig(width=8, depth=1)
    together = train_together(images, labels, cfg, model_cfg, 4, [0, 1, 2])
    for seed, batched in enumerate(together):
        alone = train_on_synthetic(images, labels, cfg, model_cfg, 4, seed)
        for a, b in zip(alone.parameters(), batched.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
