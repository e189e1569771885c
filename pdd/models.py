"""The DC/DM reference's networks (VICO-UoE/DatasetCondensation, networks.py), written here, and their registry.

    convnet   ConvNet-3: 3 x [Conv3x3(128) -> norm -> ReLU -> AvgPool2] -> Linear(2048)     320,010 parameters
    alexnet   5 convolutions (128, 192, 256, 192, 192), 3 max poolings -> Linear(3072)    1,872,202
    vgg11     8 3x3 convolutions (64 to 512) with norm, 5 max poolings -> Linear(512)     9,231,114
    resnet18  the CIFAR ResNet-18: 3x3 stem, 4 stages of 2 basic blocks -> Linear(512)   11,173,962

(parameters on 3x32x32 images and 10 classes, each the reference's count). The reference's "instancenorm" is
GroupNorm(C, C, affine=True); we call it "instance". Each network takes the norms the reference builds it with,
its default first: instance for ConvNet, VGG-11 and ResNet-18, none for AlexNet, and batch for the reference's
*BN twins. On one-channel input the first convolution of ConvNet, AlexNet and VGG-11 pads 2 more, as the
reference's do, so 28x28 MNIST-style images grow to 32x32 and give CIFAR's feature shapes; the reference's
ResNet-18 pads as usual and ends on 4x4 from 28x28 too. Other square sizes work: ConvNet, AlexNet and VGG-11 size
their classifier to the features, ResNet-18 averages its last features globally (the reference's 4x4 average).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pdd.errors import DataError

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.GroupNorm(c, c, affine=True),
    "batch": lambda c: nn.BatchNorm2d(c),
    "layer": lambda c: nn.GroupNorm(1, c, affine=True),
    "none": lambda c: nn.Identity(),
}


class AvgPool2(nn.Module):
    """2x2 average pooling (floor on odd sizes, as nn.AvgPool2d(2)).

    PyTorch's CPU avg_pool2d kernel is slow in bfloat16, so bf16 on a CPU adds row pairs, then column pairs.
    On the 2-core CPU, in bf16, that took the real embedding of 100 images from 53 to 45 ms, the synthetic
    forward/backward from 130 to 107 ms and the DKKT step from 388 to 320 ms; four strided adds (one per
    corner) gained half as much. In float32 the kernel is as fast or faster, so fp32 keeps it.
    Max pooling has no such gap: the same trick with torch.maximum took twice max_pool2d's time in bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16 or x.device.type != "cpu":
            return F.avg_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = x[..., 0:height:2, :width] + x[..., 1:height:2, :width]
        return (rows[..., ::2] + rows[..., 1::2]) * 0.25


def conv_padding(channels: int, layer: int, kernel: int = 3) -> int:
    """The padding of convolution `layer` of ConvNet, AlexNet or VGG-11 on images of `channels` channels.

    "Same" padding, and 2 more on the first layer of one-channel images (the reference's rule: 28x28 -> 32x32).
    """
    return kernel // 2 + (2 if channels == 1 and layer == 0 else 0)


def _conv_block(cin: int, cout: int, kernel: int, padding: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), NORMS[norm](cout), nn.ReLU(inplace=True)]


def _features_side(size: int, arch: str, image_size: int) -> int:
    if size < 1:
        raise DataError(f"{arch}: {image_size}x{image_size} images are too small, its last features have no pixels")
    return size


class Network(nn.Module):
    """features -> flatten -> classifier; embed gives what the classifier sees (DM matches these features)."""

    features: nn.Module
    classifier: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNet(Network):
    def __init__(self, cfg: ModelConfig, channels: int, num_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        size = image_size
        for i in range(cfg.depth):
            padding = conv_padding(channels, i)
            layers += [*_conv_block(channels if i == 0 else cfg.width, cfg.width, 3, padding, cfg.norm), AvgPool2()]
            size = (size + 2 * padding - 2) // 2
        size = _features_side(size, "convnet", image_size)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.width * size * size, num_classes)


# (output channels, kernel, 2x2 max pooling after it): the reference's AlexNet for 32x32 images.
ALEXNET = ((128, 5, True), (192, 5, True), (256, 3, False), (192, 3, False), (192, 3, True))


class AlexNet(Network):
    def __init__(self, cfg: ModelConfig, channels: int, num_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = channels, image_size
        for i, (cout, kernel, pool) in enumerate(ALEXNET):
            padding = conv_padding(channels, i, kernel)
            layers += _conv_block(cin, cout, kernel, padding, cfg.norm)
            cin, size = cout, size + 2 * padding - kernel + 1
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        size = _features_side(size, "alexnet", image_size)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin * size * size, num_classes)


# Output channels of each 3x3 convolution, "M" a 2x2 max pooling: the reference's VGG-11.
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(Network):
    def __init__(self, cfg: ModelConfig, channels: int, num_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = channels, image_size
        for i, item in enumerate(VGG11_LAYOUT):
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                padding = conv_padding(channels, i)
                layers += _conv_block(cin, int(item), 3, padding, cfg.norm)
                cin, size = int(item), size + 2 * padding - 2
        size = _features_side(size, "vgg11", image_size)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin * size * size, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (no bias: a norm follows each) around a shortcut; a 1x1 projection where the shape
    changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = NORMS[norm](cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = NORMS[norm](cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), NORMS[norm](cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(Network):
    """The reference's avg_pool2d(4) on the last 4x4 features (from 32x32 and 28x28 alike) is a global average."""

    WIDTHS = (64, 128, 256, 512)

    def __init__(self, cfg: ModelConfig, channels: int, num_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, padding=1, bias=False), NORMS[cfg.norm](64),
                                   nn.ReLU(inplace=True)]
        cin = 64
        for stage, cout in enumerate(self.WIDTHS):
            layers += [BasicBlock(cin, cout, 1 if stage == 0 else 2, cfg.norm), BasicBlock(cout, cout, 1, cfg.norm)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: how to build it, the norms it takes (its default first) and what it reproduces."""

    build: Callable[[ModelConfig, int, int, int], Network]  # (cfg, channels, num_classes, image_size)
    description: str
    norms: tuple[str, ...]
    reference: Mapping[str, str]  # norm -> the reference's get_network name of the same network

    @property
    def title(self) -> str:
        """How tables name it: the reference's name for the network with its default norm."""
        return self.reference[self.norms[0]]


MODELS: dict[str, ModelSpec] = {
    # "layer" is GroupNorm(1, C), per-channel affine; the reference's ConvNetLN has a per-pixel one, so no twin
    "convnet": ModelSpec(ConvNet, "ConvNet-3, width 128 (width and depth configurable); DM's embedder",
                         ("instance", "batch", "layer", "none"),
                         {"instance": "ConvNet", "batch": "ConvNetBN", "none": "ConvNetNN"}),
    "alexnet": ModelSpec(AlexNet, "AlexNet for 32x32: five convolutions, three max poolings, one linear layer",
                         ("none", "batch"), {"none": "AlexNet", "batch": "AlexNetBN"}),
    "vgg11": ModelSpec(VGG11, "VGG-11 for 32x32: eight 3x3 convolutions with norm, five max poolings, one linear",
                       ("instance", "batch"), {"instance": "VGG11", "batch": "VGG11BN"}),
    "resnet18": ModelSpec(ResNet18, "ResNet-18 for 32x32: 3x3 stem, 4 stages of 2 basic blocks, global average",
                          ("instance", "batch"), {"instance": "ResNet18", "batch": "ResNet18BN"}),
}


class ModelConfig(BaseModel):
    """Architecture of every network pdd builds: teacher, random DM embedders and evaluation models.

    norm defaults to the architecture's reference norm (instance, but none for AlexNet). width and depth shape
    ConvNet only: the other networks have the reference's fixed shapes, and a width or depth other than the
    default is an error for them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal[tuple(MODELS)] = "convnet"
    width: int = Field(128, ge=1, description="ConvNet's channels per layer")
    depth: int = Field(3, ge=1, le=5, description="ConvNet's convolution blocks")
    norm: Literal[tuple(NORMS)] = "instance"

    @model_validator(mode="before")
    @classmethod
    def _reference_norm(cls, values: Any) -> Any:
        if isinstance(values, dict) and "norm" not in values and values.get("arch") in MODELS:
            return values | {"norm": MODELS[values["arch"]].norms[0]}
        return values

    @model_validator(mode="after")
    def _fits_arch(self) -> ModelConfig:
        spec = MODELS[self.arch]
        if self.norm not in spec.norms:
            raise ValueError(f"norm: {self.arch} is built with norm {' or '.join(spec.norms)}, got {self.norm!r}")
        if self.arch != "convnet":
            for name in ("width", "depth"):
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(f"{name}: ConvNet only; {self.arch} has the reference's fixed shape, leave {name} "
                                     f"unset")
        return self


def check_arch(arch: str) -> str:
    """arch itself if the registry has it; an error listing the registered ones otherwise."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture '{arch}'; registered: {', '.join(MODELS)}")
    return arch


def eval_model_config(base: ModelConfig, arch: str) -> ModelConfig:
    """The evaluation network for `arch`: the trial's own ConvNet settings, or another registered architecture."""
    return base if arch == base.arch else ModelConfig(arch=arch)


def build_model(cfg: ModelConfig, channels: int, num_classes: int, image_size: int,
                generator: torch.Generator | None = None) -> Network:
    model = MODELS[cfg.arch].build(cfg, channels, num_classes, image_size)
    if generator is not None:
        reset_parameters(model, generator)
    return model


@torch.no_grad()
def reset_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialisation, drawn from `generator` so no global RNG is touched.

    DM draws a fresh random embedder every iteration; re-initialising one network in place is the same
    distribution without reallocating it. BatchNorm forgets its running statistics too, so a reset network is
    the freshly built one. A layer with parameters of any other type is an error rather than left as it was.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight
            fan_in = weight[0].numel()
            # kaiming_uniform_(a=sqrt(5)) as in nn.Conv2d/nn.Linear.reset_parameters: bound = 1/sqrt(fan_in)
            bound = 1.0 / math.sqrt(fan_in)
            weight.copy_(_uniform(weight.shape, bound, generator).to(weight))
            if module.bias is not None:
                module.bias.copy_(_uniform(module.bias.shape, bound, generator).to(module.bias))
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
            if module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"reset_parameters does not know how to initialise {type(module).__name__}")
    return model


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * bound


@lru_cache(maxsize=64)
def counted_flops(cfg: ModelConfig, channels: int, num_classes: int, image_size: int) -> tuple[float, float]:
    """(embedding, classifier) FLOPs of one image's forward pass, for any registered network.

    FlopCounterMode counts 2 per multiply-add of every convolution and matrix product and nothing for norms,
    activations, pooling or bias adds: the rule pdd.bench.forward_flops follows for ConvNet by hand. The
    network is built on the meta device, so counting allocates and computes nothing.
    """
    with torch.device("meta"):
        model = build_model(cfg, channels, num_classes, image_size)
        x = torch.zeros(1, channels, image_size, image_size)
    with FlopCounterMode(display=False) as embedding:
        features = model.embed(x)
    with FlopCounterMode(display=False) as classifier:
        model.classifier(features)
    return float(embedding.get_total_flops()), float(classifier.get_total_flops())


# On a CPU, images go through the embedder in chunks whose activations stay in cache: in bf16 on the 2-core CPU,
# 100 real images took 46 ms in chunks of 16 and 90 in one batch, and the synthetic forward and backward of 100
# images in class groups of 10-20 was 1.5x faster than in one batch. Chunks of 16 and 32 trade places from run
# to run (dm at (1,10): 64 against 82 ms; at (10,50): 401 against 367), apparently with how glibc reuses or maps
# memory for the larger activations; 16 kept. The test pass takes the same chunks (bf16: about 2,000 against
# 1,210 images/s in batches of 1,000). Each image's features do not depend on its chunk. A GPU wants the
# opposite: one batch per side, since a small conv cannot fill it; its test pass goes in batches of
# GPU_EVAL_BATCH, which keep one activation under 0.6 GB (fp32).
CPU_CHUNK = 16
GPU_EVAL_BATCH = 1000


def chunk_size(device: torch.device) -> int | None:
    """Images per embedder call on this device; None: all at once."""
    return CPU_CHUNK if device.type == "cpu" else None


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bfloat16 autocast when precision is 'bf16'; 'fp32' is the plain path."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
