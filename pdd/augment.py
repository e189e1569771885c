"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

Follows the DSA parameters and transform semantics of the DM reference implementation
(VICO-UoE/DatasetCondensation, utils.py: ``ParamDiffAug`` and ``DiffAugment`` in its single-transform
mode "S"): every call picks one transform kind uniformly from the strategy and applies it with freshly
drawn parameters. Unlike the reference, which re-seeds the global RNG to share parameters, sampling and
application are separate steps and all randomness comes from an explicit ``torch.Generator``:

* ``sample_transform`` draws a kind and ``groups`` independent parameter sets;
* ``apply_transform`` applies them, image ``i`` using parameter set ``group[i]``.

"Siamese" means the real and synthetic images of a class share one parameter set, so their embeddings are
compared under the same augmentation while gradients still reach the synthetic pixels through every
transform. Images are (N, C, H, W) floats with any channel count (one for MNIST-style data), assumed square
with side ``image_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """Augmentation strengths; the defaults are the reference's ``ParamDiffAug`` values."""

    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125  # maximal translation as a fraction of the image side
    cutout: float = 0.5  # side of the cut square as a fraction of the image side
    flip: float = 0.5  # probability of a horizontal flip
    scale: float = 1.2
    rotate: float = 15.0  # degrees


@dataclass(frozen=True)
class Transform:
    """One transform kind with G parameter sets: every tensor in ``params`` has leading dimension G."""

    kind: str
    params: dict[str, torch.Tensor]


Params = dict[str, torch.Tensor]
Sampler = Callable[[torch.Generator, int, int, DSAParams], Params]
Applier = Callable[[torch.Tensor, Params], torch.Tensor]


def _rand(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device)


def _randint(g: torch.Generator, n: int, low: int, high: int) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=g, device=g.device)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


# Samplers turn uniform draws into ready-to-apply quantities, so appliers need no DSAParams.


def _sample_color(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    return {
        "brightness": (_rand(g, groups) - 0.5) * p.brightness,  # additive shift
        "saturation": _rand(g, groups) * p.saturation,  # factor on the deviation from the channel mean
        "contrast": _rand(g, groups) + p.contrast,  # factor on the deviation from the image mean
    }


def _sample_crop(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    shift = int(image_size * p.crop + 0.5)
    return {
        "shift_h": _randint(g, groups, -shift, shift + 1),
        "shift_w": _randint(g, groups, -shift, shift + 1),
    }


def _sample_cutout(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    side = int(image_size * p.cutout + 0.5)
    # An even square centred on c covers [c - side/2, c + side/2), so centres 0..H (one more than for odd
    # sides) keep the cut positions mirror-symmetric, as in the reference.
    centres = image_size + 1 - side % 2
    return {
        "top": _randint(g, groups, 0, centres) - side // 2,
        "left": _randint(g, groups, 0, centres) - side // 2,
        "side": torch.full((groups,), side, dtype=torch.long, device=g.device),
    }


def _sample_flip(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    return {"flip": _rand(g, groups) < p.flip}


def _sample_scale(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    low = 1.0 / p.scale
    return {
        "sx": _rand(g, groups) * (p.scale - low) + low,
        "sy": _rand(g, groups) * (p.scale - low) + low,
    }


def _sample_rotate(g: torch.Generator, groups: int, image_size: int, p: DSAParams) -> Params:
    return {"angle": (_rand(g, groups) - 0.5) * 2 * math.radians(p.rotate)}  # radians, anticlockwise


def _apply_color(x: torch.Tensor, p: Params) -> torch.Tensor:
    # As the reference's rand_brightness/rand_saturation/rand_contrast, on any channel count: on one channel the
    # channel mean is the pixel itself, so saturation leaves grayscale images unchanged while brightness and
    # contrast act as on colour ones (the reference runs the same "color" on MNIST).
    x = x + _per_image(p["brightness"])
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _per_image(p["saturation"]) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(p["contrast"]) + mean


def _apply_crop(x: torch.Tensor, p: Params) -> torch.Tensor:
    n, _, h, w = x.shape
    # A one-pixel zero border lets every out-of-image index be clamped onto zeros, so the zero-filled
    # translation is a single gather through which gradients reach all pixels that stay visible.
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device) + p["shift_h"][:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) + p["shift_w"][:, None] + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put the broadcast (N, H, W) dims first, then C.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _apply_cutout(x: torch.Tensor, p: Params) -> torch.Tensor:
    _, _, h, w = x.shape
    top, left, side = p["top"][:, None], p["left"][:, None], p["side"][:, None]
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _apply_flip(x: torch.Tensor, p: Params) -> torch.Tensor:
    return torch.where(_per_image(p["flip"]), x.flip(3), x)


def _warp(x: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """Resample x through the (N, 2, 2) linear maps from output to input coordinates, zero outside."""
    theta = F.pad(linear, (0, 1))  # no translation
    # align_corners=True is the behaviour of torch 1.2, the version the reference pins.
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _apply_scale(x: torch.Tensor, p: Params) -> torch.Tensor:
    return _warp(x, torch.diag_embed(torch.stack([p["sx"], p["sy"]], dim=-1)))


def _apply_rotate(x: torch.Tensor, p: Params) -> torch.Tensor:
    cos, sin = p["angle"].cos(), p["angle"].sin()
    return _warp(x, torch.stack([cos, -sin, sin, cos], dim=-1).view(-1, 2, 2))


_SAMPLERS: dict[str, Sampler] = {
    "color": _sample_color,
    "crop": _sample_crop,
    "cutout": _sample_cutout,
    "flip": _sample_flip,
    "scale": _sample_scale,
    "rotate": _sample_rotate,
}
_APPLIERS: dict[str, Applier] = {
    "color": _apply_color,
    "crop": _apply_crop,
    "cutout": _apply_cutout,
    "flip": _apply_flip,
    "scale": _apply_scale,
    "rotate": _apply_rotate,
}
KINDS: tuple[str, ...] = tuple(_SAMPLERS)


def _parse_strategy(strategy: str) -> list[str]:
    parts = strategy.split("_")
    unknown = [part for part in parts if part not in _SAMPLERS]
    if unknown:
        raise ValueError(
            f"unknown DSA strategy part(s) {unknown} in {strategy!r}; known parts: {', '.join(KINDS)}"
        )
    return parts


def sample_transform(
    generator: torch.Generator,
    groups: int,
    image_size: int,
    strategy: str = STRATEGY,
    params: DSAParams = DSAParams(),
    *,
    kind: str | None = None,
) -> Transform:
    """Draw one transform kind uniformly from `strategy` and `groups` independent parameter sets.

    All randomness comes from `generator` (never the global RNG); parameters live on its device.
    `kind` forces the transform kind instead of drawing it (mainly for tests).
    """
    parts = _parse_strategy(strategy)
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    if kind is None:
        kind = parts[_randint(generator, 1, 0, len(parts)).item()]
    elif kind not in _SAMPLERS:
        raise ValueError(f"unknown DSA transform kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return Transform(kind, _SAMPLERS[kind](generator, groups, image_size, params))


def apply_transform(x: torch.Tensor, transform: Transform, group: torch.Tensor | None = None) -> torch.Tensor:
    """Apply `transform` to the (N, C, H, W) batch `x`; image i uses parameter set group[i].

    group=None needs G == 1 (one set shared by all images) or G == N (set i for image i).
    Parameters are moved to x's device (and floating ones to its dtype), so x may live anywhere.
    """
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    n = x.shape[0]
    groups = next(iter(transform.params.values())).shape[0]
    if group is None:
        if groups == 1:
            group = torch.zeros(n, dtype=torch.long, device=x.device)
        elif groups == n:
            group = torch.arange(n, device=x.device)
        else:
            raise ValueError(f"transform has {groups} parameter sets for {n} images; pass `group`")
    elif group.shape != (n,):
        raise ValueError(f"group must have shape ({n},), got {tuple(group.shape)}")
    group = group.to(x.device)
    per_image = {
        name: value.to(x.device, x.dtype if value.is_floating_point() else value.dtype)[group]
        for name, value in transform.params.items()
    }
    return _APPLIERS[transform.kind](x, per_image)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    siamese: bool,
    strategy: str = STRATEGY,
    params: DSAParams = DSAParams(),
) -> torch.Tensor:
    """Augment x with one random transform: siamese=True shares one parameter set across all images,
    siamese=False draws independent parameters per image."""
    groups = 1 if siamese else x.shape[0]
    return apply_transform(x, sample_transform(generator, groups, x.shape[2], strategy, params))
