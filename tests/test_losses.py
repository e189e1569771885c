"""Each loss checked against a number, and the gradients against finite differences."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdd import augment, losses
from pdd.models import ModelConfig, build_model


def tiny_net(generator_seed: int = 0) -> nn.Module:
    torch_gen = torch.Generator().manual_seed(generator_seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=torch_gen) * 0.5)
    return net.double()


def test_l_dm_value_by_hand():
    real = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0]])
    real_labels = torch.tensor([0, 0, 1])
    syn = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    syn_labels = torch.tensor([0, 1])
    # class 0: mean real (2, 1) vs syn (1, 1) -> 1; class 1: (0, 0) vs (1, -1) -> 2
    assert losses.l_dm(real, real_labels, syn, syn_labels, num_classes=3).item() == pytest.approx(3.0)


def test_l_dm_is_exactly_zero_for_identical_sets_under_the_same_augmentation_and_net():
    generator = torch.Generator().manual_seed(3)
    net = build_model(ModelConfig(width=16), 3, 10, 32, generator).requires_grad_(False)
    real = torch.randn(20, 3, 32, 32, generator=generator)
    labels = torch.arange(10).repeat_interleave(2)
    transform = augment.sample_transform(generator, 10, 32)
    real_features = net.embed(augment.apply_transform(real, transform, group=labels))
    syn_features = net.embed(augment.apply_transform(real.clone(), transform, group=labels))
    assert losses.l_dm(real_features, labels, syn_features, labels, 10).item() == 0.0


def test_l_dm_gradient_matches_finite_differences():
    net = tiny_net()
    embed = net[:4]
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(6, 3, 8, 8, generator=generator, dtype=torch.float64)
    real_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    syn_labels = torch.tensor([0, 1, 2])

    def loss(syn):
        return losses.l_dm(embed(real), real_labels, embed(syn), syn_labels, 3)

    syn = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (syn,), eps=1e-6, atol=1e-5)


def test_l_primal_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert losses.l_primal(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_l_primal_masked_counts_only_misclassified_images():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])  # the first is right, the other two wrong
    expected = (math.log(1 + math.exp(3.0)) + math.log(1 + math.exp(1.0))) / 3
    assert losses.l_primal(logits, labels, only_misclassified=True).item() == pytest.approx(expected, rel=1e-6)


def test_distances_by_hand():
    a, b = torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert losses.DISTANCES["l1"](a, b).item() == pytest.approx((1 + 2 + 0 + 2) / 4)
    assert losses.DISTANCES["l2"](a, b).item() == pytest.approx((1 + 4 + 0 + 4) / 4)
    assert losses.DISTANCES["cosine"](a, b).item() == pytest.approx(1 - 3 / (math.sqrt(14) * 1))


def test_l_stat_value_for_a_linear_model_by_hand():
    """Logistic regression: grad_W CE = (softmax - onehot) x^T, so the weighted sum has a closed form."""
    w = nn.Parameter(torch.tensor([[0.5, -1.0], [0.25, 0.0]], dtype=torch.float64))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    lam = torch.tensor([2.0, 3.0], dtype=torch.float64)
    logits = x @ w.T
    residual = torch.softmax(logits, 1) - F.one_hot(y, 2).double()
    weighted_grad = (lam[:, None, None] * residual[:, :, None] * x[:, None, :]).sum(0)
    expected = (w.detach() + weighted_grad).abs().mean()
    assert losses.l_stat([w], logits, y, lam, "l1").item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("distance", list(losses.DISTANCES))
def test_l_stat_gradient_wrt_images_and_lambda_matches_finite_differences(distance):
    net = tiny_net(2)
    params = list(net.parameters())
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    lam = torch.rand(3, generator=generator, dtype=torch.float64).add(0.5).requires_grad_(True)
    labels = torch.tensor([0, 1, 2])

    def loss(x, lam_):
        return losses.l_stat(params, net(x), labels, lam_, distance)

    # l1 has kinks where a coordinate crosses zero; away from them finite differences are exact enough.
    assert torch.autograd.gradcheck(loss, (images, lam), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_l_total_combines_with_alpha_and_gamma():
    total = losses.l_total(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(100.0), alpha=0.1, gamma=0.01)
    assert total.item() == pytest.approx(2 + 0.3 + 1.0)


def test_stat_floor_is_l_stat_with_zero_multipliers():
    net = tiny_net(4)
    params = list(net.parameters())
    images, labels = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    for distance in losses.DISTANCES:
        zero = losses.l_stat(params, net(images), labels, torch.zeros(2, dtype=torch.float64), distance)
        assert losses.stat_floor(params, distance) == pytest.approx(zero.item(), rel=1e-12)
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    assert losses.stat_floor(params, "l1") == pytest.approx(flat.abs().mean().item())
