"""Every registered model and norm builds, runs forward and backward, and has the reference's size."""

import pytest
import torch
import torch.nn.functional as F

from pdd.models import MODELS, NORMS, AvgPool2, ModelConfig, build_model, reset_parameters


def test_reference_convnet_has_320010_parameters():
    model = build_model(ModelConfig(), channels=3, num_classes=10, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == 320_010
    assert model.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 2048)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("norm", list(NORMS))
def test_forward_backward(arch, norm):
    cfg = ModelConfig(arch=arch, norm=norm, width=8, depth=2)
    model = build_model(cfg, 3, 10, 16, torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    model(x).logsumexp(1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_reset_parameters_is_reproducible_and_leaves_the_global_rng_alone():
    model = build_model(ModelConfig(width=8), 3, 10, 32)
    state = torch.random.get_rng_state()
    reset_parameters(model, torch.Generator().manual_seed(7))
    first = [p.clone() for p in model.parameters()]
    reset_parameters(model, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, model.parameters()))
    reset_parameters(model, torch.Generator().manual_seed(8))
    assert not torch.equal(first[0], next(model.parameters()))
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("size", [8, 7])
def test_bf16_pooling_averages_each_2x2_block_as_avg_pool2d(size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    pooled = AvgPool2()(x.to(torch.bfloat16))
    assert pooled.dtype == torch.bfloat16
    torch.testing.assert_close(pooled.float(), F.avg_pool2d(x, 2), rtol=0.02, atol=0.02)
    assert torch.equal(AvgPool2()(x), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (1, 32)])
def test_every_dataset_shape_gives_the_references_128x4x4_features(channels, size):
    """The DM reference pads the first convolution by 3 on one channel: 28x28 grows to 32x32 there."""
    model = build_model(ModelConfig(), channels=channels, num_classes=100, image_size=size)
    first = model.features[0]
    assert first.padding == ((3, 3) if channels == 1 else (1, 1))
    assert all(conv.padding == (1, 1) for conv in model.features[4::4])
    assert model.embed(torch.zeros(2, channels, size, size)).shape == (2, 2048)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 100)
