"""Every registered network and norm builds, trains and matches the DC/DM reference's size."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from pdd.bench import forward_flops
from pdd.data import ImageSpec
from pdd.errors import DataError
from pdd.models import MODELS, NORMS, AvgPool2, ModelConfig, build_model, counted_flops, reset_parameters

VARIANTS = [(arch, norm) for arch, spec in MODELS.items() for norm in spec.norms]
SHAPES = [(3, 32), (1, 28)]  # CIFAR, MNIST / Fashion-MNIST

# Parameters on 3x32x32 and 10 classes. Each is the count of the reference's twin (MODELS[arch].reference), as
# its networks.py (VICO-UoE/DatasetCondensation at 53f63a6) builds it; GroupNorm and BatchNorm hold the same
# affine pair. convnet/layer has no twin: the reference's ConvNetLN has a per-pixel affine (663,306).
PARAMETERS = {("convnet", "instance"): 320_010, ("convnet", "batch"): 320_010, ("convnet", "layer"): 320_010,
              ("convnet", "none"): 319_242, ("alexnet", "none"): 1_872_202, ("alexnet", "batch"): 1_874_122,
              ("vgg11", "instance"): 9_231_114, ("vgg11", "batch"): 9_231_114,
              ("resnet18", "instance"): 11_173_962, ("resnet18", "batch"): 11_173_962}
# What each classifier sees on both shapes: the reference grows 28x28 to 32x32 in the first convolution.
FEATURES = {"convnet": 2048, "alexnet": 3072, "vgg11": 512, "resnet18": 512}
# (embedding, classifier) FLOPs of one 3x32x32 image, 10 classes; e.g. AlexNet's convolutions:
# 2 x (3*128*25*32^2 + 128*192*25*16^2 + (192*256 + 256*192 + 192*192)*9*8^2) = 489,947,136.
FLOPS = {"convnet": (101_449_728, 40_960), "alexnet": (489_947_136, 61_440),
         "vgg11": (305_528_832, 10_240), "resnet18": (1_110_835_200, 10_240)}


def build(arch, norm, channels=3, classes=10, size=32, seed=0):
    return build_model(ModelConfig(arch=arch, norm=norm), channels, classes, size, torch.Generator().manual_seed(seed))


def images(n, channels, size, seed=1):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, norm", VARIANTS)
def test_parameter_count_is_the_references(arch, norm):
    assert sum(p.numel() for p in build(arch, norm).parameters()) == PARAMETERS[arch, norm]


def test_every_registered_network_has_its_numbers_here():
    assert set(FEATURES) == set(FLOPS) == set(MODELS) and set(PARAMETERS) == set(VARIANTS)
    assert all(set(spec.reference) <= set(spec.norms) <= set(NORMS) for spec in MODELS.values())


@pytest.mark.parametrize("arch, norm", VARIANTS)
@pytest.mark.parametrize("channels, size", SHAPES)
def test_forward_backward_reaches_every_parameter(arch, norm, channels, size):
    model = build(arch, norm, channels, size=size)
    x = images(4, channels, size).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (4, 10) and model.embed(x).shape == (4, FEATURES[arch])
    F.cross_entropy(logits, torch.arange(4)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", MODELS)
def test_any_class_count(arch):
    model = build(arch, MODELS[arch].norms[0], classes=100)
    assert model(images(2, 3, 32)).shape == (2, 100)
    assert model.classifier.weight.shape == (100, FEATURES[arch])


@pytest.mark.parametrize("arch, norm", VARIANTS)
def test_same_seed_builds_the_same_network(arch, norm):
    # Construction draws nn's default init from the global RNG, so the two builds start from different weights.
    first, again, other = build(arch, norm, seed=5), build(arch, norm, seed=5), build(arch, norm, seed=6)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for module, other_module in zip(first.modules(), other.modules(), strict=True):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert not torch.equal(module.weight, other_module.weight)


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


def test_reset_parameters_forgets_batchnorm_statistics():
    model = build("resnet18", "batch")
    model(images(4, 3, 32) * 3 + 1)
    norm = model.features[1]
    assert norm.num_batches_tracked == 1 and not torch.equal(norm.running_mean, torch.zeros(64))
    reset_parameters(model, torch.Generator().manual_seed(0))
    assert norm.num_batches_tracked == 0
    assert torch.equal(norm.running_mean, torch.zeros(64)) and torch.equal(norm.running_var, torch.ones(64))


def test_reset_parameters_refuses_a_layer_it_cannot_initialise():
    with pytest.raises(TypeError, match="PReLU"):
        reset_parameters(nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU()), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch, norm", VARIANTS)
def test_bf16_autocast_forward_is_close_to_fp32(arch, norm):
    model, x = build(arch, norm), images(8, 3, 32)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    # measured: at most 2.2% of the largest logit over every variant and both shapes
    assert (low.float() - exact).abs().max() < 0.05 * exact.abs().max()


@pytest.mark.parametrize("arch, norm", VARIANTS)
def test_counted_flops(arch, norm):
    assert counted_flops(ModelConfig(arch=arch, norm=norm), 3, 10, 32) == FLOPS[arch]
    embedding, head = counted_flops(ModelConfig(arch=arch, norm=norm), 1, 100, 28)
    assert head == 2 * FEATURES[arch] * 100


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(width=8, depth=2, norm="none")])
@pytest.mark.parametrize("channels, size, classes", [(3, 32, 10), (1, 28, 100), (3, 64, 200)])
def test_counted_flops_agree_with_benchs_convnet_count(cfg, channels, size, classes):
    assert counted_flops(cfg, channels, classes, size) == forward_flops(cfg, ImageSpec(channels, size, classes, 1))


def test_each_network_defaults_to_the_references_norm():
    assert {arch: ModelConfig(arch=arch).norm for arch in MODELS} == {
        "convnet": "instance", "alexnet": "none", "vgg11": "instance", "resnet18": "instance"}
    # The ConvNet config every existing trial and teacher hash was computed from is unchanged.
    assert ModelConfig().model_dump() == {"arch": "convnet", "width": 128, "depth": 3, "norm": "instance"}
    for arch, norm in VARIANTS:
        cfg = ModelConfig(arch=arch, norm=norm)
        assert ModelConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("values, message", [
    ({"arch": "alexnet", "norm": "instance"}, "norm: alexnet is built with norm none or batch"),
    ({"arch": "resnet18", "norm": "layer"}, "norm: resnet18 is built with norm instance or batch"),
    ({"arch": "vgg11", "width": 64}, "width: ConvNet only"),
    ({"arch": "resnet18", "depth": 4}, "depth: ConvNet only"),
    ({"arch": "resnet50"}, "arch"),
])
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**values)


@pytest.mark.parametrize("arch, size", [("alexnet", 4), ("vgg11", 16), ("convnet", 4)])
def test_images_too_small_for_the_network_are_a_data_error(arch, size):
    with pytest.raises(DataError, match=f"{arch}: {size}x{size} images are too small"):
        build_model(ModelConfig(arch=arch), 3, 10, size)


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


@pytest.mark.parametrize("arch", ["alexnet", "vgg11"])
def test_one_channel_input_pads_the_first_convolution_two_more(arch):
    model = build(arch, MODELS[arch].norms[0], channels=1, size=28)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].padding == ((4, 4) if arch == "alexnet" else (3, 3))
    assert all(conv.padding == (conv.kernel_size[0] // 2,) * 2 for conv in convs[1:])
