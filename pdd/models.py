"""The ConvNet of the DM reference (VICO-UoE/DatasetCondensation, networks.py) and its registry.

ConvNet-3 for 32x32 RGB and 10 classes: 3 x [Conv3x3(128) -> norm -> ReLU -> AvgPool2] -> Linear(2048, 10),
320,010 parameters. The reference's "instancenorm" is GroupNorm(C, C, affine=True); we call it "instance".
On one-channel input the first convolution pads by 3 instead of 1, as the reference's does, so 28x28 MNIST-style
images grow to 32x32 and give the same 128x4x4 features as CIFAR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.GroupNorm(c, c, affine=True),
    "batch": lambda c: nn.BatchNorm2d(c),
    "layer": lambda c: nn.GroupNorm(1, c, affine=True),
    "none": lambda c: nn.Identity(),
}


class ModelConfig(BaseModel):
    """Architecture of every network pdd builds: teacher, random DM embedders and evaluation models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["convnet"] = "convnet"
    width: int = Field(128, ge=1)
    depth: int = Field(3, ge=1, le=5)
    norm: Literal["instance", "batch", "layer", "none"] = "instance"


class AvgPool2(nn.Module):
    """2x2 average pooling (floor on odd sizes, as nn.AvgPool2d(2)).

    PyTorch's CPU avg_pool2d kernel is slow in bfloat16, so bf16 on a CPU adds row pairs, then column pairs.
    On the 2-core CPU, in bf16, that took the real embedding of 100 images from 53 to 45 ms, the synthetic
    forward/backward from 130 to 107 ms and the DKKT step from 388 to 320 ms; four strided adds (one per
    corner) gained half as much. In float32 the kernel is as fast or faster, so fp32 keeps it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16 or x.device.type != "cpu":
            return F.avg_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = x[..., 0:height:2, :width] + x[..., 1:height:2, :width]
        return (rows[..., ::2] + rows[..., 1::2]) * 0.25


class ConvNet(nn.Module):
    def __init__(self, cfg: ModelConfig, channels: int, num_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        size = image_size
        for i in range(cfg.depth):
            padding = conv_padding(channels, i)
            layers += [
                nn.Conv2d(channels if i == 0 else cfg.width, cfg.width, 3, padding=padding),
                NORMS[cfg.norm](cfg.width),
                nn.ReLU(inplace=True),
                AvgPool2(),
            ]
            size = (size + 2 * padding - 2) // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.width * size * size, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def conv_padding(channels: int, layer: int) -> int:
    """The padding of ConvNet's convolution `layer` on images of `channels` channels (the DM reference's rule)."""
    return 3 if channels == 1 and layer == 0 else 1


MODELS: dict[str, type[nn.Module]] = {"convnet": ConvNet}


def check_arch(arch: str) -> str:
    """arch itself if the registry has it; an error listing the registered ones otherwise."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture '{arch}'; registered: {', '.join(MODELS)}")
    return arch


def eval_model_config(base: ModelConfig, arch: str) -> ModelConfig:
    """The evaluation network for `arch`: the trial's own ConvNet settings, or another registered architecture."""
    return base if arch == base.arch else ModelConfig(arch=arch)


def build_model(cfg: ModelConfig, channels: int, num_classes: int, image_size: int,
                generator: torch.Generator | None = None) -> nn.Module:
    model = MODELS[cfg.arch](cfg, channels, num_classes, image_size)
    if generator is not None:
        reset_parameters(model, generator)
    return model


@torch.no_grad()
def reset_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialisation, drawn from `generator` so no global RNG is touched.

    DM draws a fresh random embedder every iteration; re-initialising one network in place is the same
    distribution without reallocating it.
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
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)) and module.affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
    return model


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * bound


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
