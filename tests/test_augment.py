"""Tests for pdd.augment: Siamese parameter sharing, reproducibility, reference semantics, gradients."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from pdd.augment import (
    KINDS,
    STRATEGY,
    DSAParams,
    Transform,
    apply_transform,
    augment,
    sample_transform,
)

H = 12
CONTINUOUS_KINDS = ("color", "scale", "rotate")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, seed: int = 0, size: int = H) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=gen(1000 + seed))


def identical_images(n: int, seed: int = 0) -> torch.Tensor:
    return images(1, seed).expand(n, -1, -1, -1).clone()


def subset(t: Transform, index: int) -> Transform:
    return Transform(t.kind, {name: value[index : index + 1] for name, value in t.params.items()})


def all_equal_to_first(y: torch.Tensor) -> bool:
    return all(torch.equal(y[0], y[i]) for i in range(1, y.shape[0]))


def params_equal(a: Transform, b: Transform) -> bool:
    return a.kind == b.kind and all(torch.equal(a.params[n], b.params[n]) for n in a.params)


# --- API, strategy parsing and kind choice -------------------------------------------------------


def test_kinds_match_default_strategy() -> None:
    assert KINDS == ("color", "crop", "cutout", "flip", "scale", "rotate")
    assert STRATEGY.split("_") == list(KINDS)
    assert DSAParams() == DSAParams(1.0, 2.0, 0.5, 0.125, 0.5, 0.5, 1.2, 15.0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_param_tensor_has_group_leading_dim(kind: str) -> None:
    t = sample_transform(gen(), 5, H, kind=kind)
    assert t.kind == kind
    assert t.params and all(v.shape[0] == 5 for v in t.params.values())


def test_kind_choice_is_uniform_over_strategy_parts() -> None:
    g = gen(3)
    counts = Counter(sample_transform(g, 1, H).kind for _ in range(1200))
    assert set(counts) == set(KINDS)
    assert all(140 <= c <= 260 for c in counts.values()), counts  # expected 200 each, sd ~13


def test_sub_strategy_only_draws_its_parts() -> None:
    g = gen(4)
    assert {sample_transform(g, 1, H, "flip_rotate").kind for _ in range(100)} == {"flip", "rotate"}


@pytest.mark.parametrize("strategy", ["color_blur", "", "color__flip", "Color"])
def test_unknown_strategy_part_is_rejected(strategy: str) -> None:
    bad = [p for p in strategy.split("_") if p not in KINDS][0]
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
        sample_transform(gen(), 1, H, strategy)


def test_unknown_forced_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="blur"):
        sample_transform(gen(), 1, H, kind="blur")


def test_group_count_must_fit_batch() -> None:
    t = sample_transform(gen(), 3, H, kind="scale")
    with pytest.raises(ValueError, match="3 parameter sets for 5 images"):
        apply_transform(images(5), t)
    with pytest.raises(ValueError, match="group must have shape"):
        apply_transform(images(5), t, group=torch.zeros(4, dtype=torch.long))


# --- Siamese sharing -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_one_parameter_set_reaches_every_image(kind: str) -> None:
    t = sample_transform(gen(5), 1, H, kind=kind)
    real, syn = identical_images(6), identical_images(2)
    out_real, out_syn = apply_transform(real, t), apply_transform(syn, t)
    assert all_equal_to_first(out_real) and all_equal_to_first(out_syn)
    assert torch.equal(out_real[0], out_syn[0])


@pytest.mark.parametrize("kind", KINDS)
def test_shared_set_equals_per_image_application(kind: str) -> None:
    t = sample_transform(gen(6), 1, H, kind=kind)
    real, syn = images(5, seed=1), images(3, seed=2)
    out_real, out_syn = apply_transform(real, t), apply_transform(syn, t)
    assert torch.equal(apply_transform(real.clone(), t), out_real)
    for x, out in ((real, out_real), (syn, out_syn)):
        for i in range(x.shape[0]):
            torch.testing.assert_close(apply_transform(x[i : i + 1], t)[0], out[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_groups_equal_per_class_loop(kind: str) -> None:
    classes = 3
    t = sample_transform(gen(7), classes, H, kind=kind)
    labels = torch.tensor([0, 2, 1, 0, 2, 2, 1, 0])
    x = images(len(labels), seed=3)
    out = apply_transform(x, t, group=labels)
    for c in range(classes):
        mine = labels == c
        torch.testing.assert_close(apply_transform(x[mine], subset(t, c)), out[mine], rtol=0, atol=1e-6)


def test_siamese_augment_shares_and_per_image_augment_does_not() -> None:
    x = identical_images(16)
    for seed in range(6):
        assert all_equal_to_first(augment(x, gen(seed), siamese=True))
        assert not all_equal_to_first(augment(x, gen(seed), siamese=False))


# --- Randomness: generator only, reproducible, varying -------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_different_generator_states_give_different_transforms(kind: str) -> None:
    g = gen(8)
    first, second = sample_transform(g, 16, H, kind=kind), sample_transform(g, 16, H, kind=kind)
    assert not params_equal(first, second)
    x = images(16, seed=4)
    assert not torch.equal(apply_transform(x, first), apply_transform(x, second))


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_same_transform(kind: str) -> None:
    a, b = sample_transform(gen(9), 4, H, kind=kind), sample_transform(gen(9), 4, H, kind=kind)
    assert params_equal(a, b)


@pytest.mark.parametrize("siamese", [True, False])
def test_augment_is_reproducible_from_the_seed(siamese: bool) -> None:
    x = images(8, seed=5)
    for seed in range(8):
        assert torch.equal(augment(x, gen(seed), siamese=siamese), augment(x, gen(seed), siamese=siamese))


@pytest.mark.parametrize("kind", KINDS)
def test_per_image_parameters_differ(kind: str) -> None:
    out = apply_transform(identical_images(16), sample_transform(gen(10), 16, H, kind=kind))
    if kind in CONTINUOUS_KINDS:
        flat = out.flatten(1)
        assert torch.cdist(flat, flat).add(torch.eye(16)).min() > 0  # pairwise distinct
    else:
        assert not all_equal_to_first(out)


def test_global_rng_is_untouched() -> None:
    state = torch.random.get_rng_state()
    x = images(4)
    for seed in range(20):
        augment(x, gen(seed), siamese=seed % 2 == 0)
    for kind in KINDS:
        apply_transform(x, sample_transform(gen(), 4, H, kind=kind))
    assert torch.equal(torch.random.get_rng_state(), state)


# --- Parameter distributions (reference ranges) --------------------------------------------------


def test_sampled_parameters_cover_reference_ranges() -> None:
    g, n, p = gen(11), 4000, DSAParams()

    color = sample_transform(g, n, 32, kind="color").params
    ranges = {"brightness": (-0.5, 0.5), "saturation": (0.0, 2.0), "contrast": (0.5, 1.5)}
    for name, (low, high) in ranges.items():
        v = color[name]
        assert low <= v.min() < low + 0.01 and high - 0.01 < v.max() <= high, name

    crop = sample_transform(g, n, 32, kind="crop").params
    for name in ("shift_h", "shift_w"):
        assert set(crop[name].tolist()) == set(range(-4, 5))  # int(32 * 0.125 + 0.5) = 4

    cutout = sample_transform(g, n, 32, kind="cutout").params
    assert set(cutout["side"].tolist()) == {16}
    for name in ("top", "left"):
        assert set(cutout[name].tolist()) == set(range(-8, 25))  # centres 0..32 minus side // 2

    odd = sample_transform(g, n, 10, kind="cutout").params  # side int(5.5) = 5: centres 0..9
    assert set(odd["top"].tolist()) == set(range(-2, 8))

    assert 0.45 < sample_transform(g, n, 32, kind="flip").params["flip"].float().mean() < 0.55

    scale = sample_transform(g, n, 32, kind="scale").params
    for v in (scale["sx"], scale["sy"]):
        assert 1 / p.scale <= v.min() < 1 / p.scale + 0.01 and p.scale - 0.01 < v.max() <= p.scale

    angle = sample_transform(g, n, 32, kind="rotate").params["angle"]
    limit = math.radians(15.0)
    assert -limit <= angle.min() < -limit + 0.01 and limit - 0.01 < angle.max() <= limit


# --- Exact semantics on simple cases -------------------------------------------------------------


def test_flip_probability_one_is_exact_horizontal_flip_and_zero_is_identity() -> None:
    x = images(4)
    always = sample_transform(gen(), 4, H, params=DSAParams(flip=1.0), kind="flip")
    never = sample_transform(gen(), 4, H, params=DSAParams(flip=0.0), kind="flip")
    assert torch.equal(apply_transform(x, always), x.flip(3))
    assert torch.equal(apply_transform(x, never), x)


def color(brightness: float, saturation: float, contrast: float) -> Transform:
    values = {"brightness": brightness, "saturation": saturation, "contrast": contrast}
    return Transform("color", {name: torch.tensor([v]) for name, v in values.items()})


def test_color_parameters_follow_reference_formulas() -> None:
    g = gen(12)
    t = sample_transform(g, 3, H, kind="color")
    replay = gen(12)
    u_b, u_s, u_c = (torch.rand(3, generator=replay) for _ in range(3))
    torch.testing.assert_close(t.params["brightness"], (u_b - 0.5) * 1.0)
    torch.testing.assert_close(t.params["saturation"], u_s * 2.0)
    torch.testing.assert_close(t.params["contrast"], u_c + 0.5)


def test_brightness_adds_a_constant() -> None:
    x, u = images(2), 0.8
    torch.testing.assert_close(apply_transform(x, color(u - 0.5, 1.0, 1.0)), x + (u - 0.5))


def test_saturation_and_contrast_scale_deviations_from_their_means() -> None:
    x = images(2)
    grey = apply_transform(x, color(0.0, 0.0, 1.0))
    torch.testing.assert_close(grey, x.mean(dim=1, keepdim=True).expand_as(x))
    flat = apply_transform(x, color(0.0, 1.0, 0.0))
    torch.testing.assert_close(flat, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(apply_transform(x, color(0.0, 1.0, 1.5)), (x - mean) * 1.5 + mean)


def test_unit_scale_and_zero_rotation_are_identity() -> None:
    x = images(3)
    unit = Transform("scale", {"sx": torch.ones(1), "sy": torch.ones(1)})
    zero = Transform("rotate", {"angle": torch.zeros(1)})
    torch.testing.assert_close(apply_transform(x, unit), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(apply_transform(x, zero), x, rtol=0, atol=1e-5)


def test_positive_rotation_is_anticlockwise() -> None:
    x = images(2)
    quarter = Transform("rotate", {"angle": torch.tensor([math.pi / 2])})
    torch.testing.assert_close(apply_transform(x, quarter), torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-5)


def test_scale_sx_stretches_sampling_along_width_with_zero_fill() -> None:
    x = torch.ones(1, 1, 9, 9)
    out = apply_transform(x, Transform("scale", {"sx": torch.tensor([2.0]), "sy": torch.tensor([1.0])}))
    assert torch.equal(out[..., 0], torch.zeros(1, 1, 9)) and torch.equal(out[..., -1], torch.zeros(1, 1, 9))
    assert torch.equal(out[..., 2:7], torch.ones(1, 1, 9, 5))  # sampled inside the image


def crop(shift_h: int, shift_w: int) -> Transform:
    return Transform("crop", {"shift_h": torch.tensor([shift_h]), "shift_w": torch.tensor([shift_w])})


def test_crop_translates_with_zero_fill() -> None:
    x = images(2)
    assert torch.equal(apply_transform(x, crop(0, 0)), x)

    down = apply_transform(x, crop(1, 0))
    assert torch.equal(down[:, :, :-1], x[:, :, 1:]) and torch.equal(down[:, :, -1], torch.zeros_like(x[:, :, -1]))

    right = apply_transform(x, crop(0, -2))
    assert torch.equal(right[..., 2:], x[..., :-2]) and torch.equal(right[..., :2], torch.zeros_like(x[..., :2]))

    assert torch.equal(apply_transform(x, crop(H + 3, 0)), torch.zeros_like(x))


def cutout(top: int, left: int, side: int) -> Transform:
    return Transform("cutout", {n: torch.tensor([v]) for n, v in (("top", top), ("left", left), ("side", side))})


def test_cutout_zeroes_exactly_the_square_clipped_at_the_border() -> None:
    x = torch.ones(2, 3, H, H)
    inside = apply_transform(x, cutout(2, 3, 4))
    expected = x.clone()
    expected[:, :, 2:6, 3:7] = 0
    assert torch.equal(inside, expected)
    assert (inside[:, 0] == 0).sum() == 2 * 4 * 4

    corner = apply_transform(x, cutout(-2, H - 1, 4))
    expected = x.clone()
    expected[:, :, 0:2, H - 1 :] = 0
    assert torch.equal(corner, expected)


# --- Gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_to_the_input(kind: str) -> None:
    x = images(4).requires_grad_()
    out = apply_transform(x, sample_transform(gen(13), 4, H, kind=kind))
    (out * torch.randn(out.shape, generator=gen(14))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind: str) -> None:
    x = images(2, size=5).double().requires_grad_()
    t = sample_transform(gen(15), 2, 5, kind=kind)
    assert torch.autograd.gradcheck(lambda v: apply_transform(v, t), (x,))


def test_augment_gradient_is_finite_and_nonzero() -> None:
    for seed in range(6):
        x = images(3).requires_grad_()
        augment(x, gen(seed), siamese=seed % 2 == 0).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- Devices and dtypes --------------------------------------------------------------------------


def test_parameters_follow_input_dtype() -> None:
    x = images(2).double()
    for kind in KINDS:
        assert apply_transform(x, sample_transform(gen(), 2, H, kind=kind)).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_input_with_cpu_generator_matches_cpu(kind: str) -> None:
    x = images(4)
    t = sample_transform(gen(16), 4, H, kind=kind)
    torch.testing.assert_close(apply_transform(x.cuda(), t).cpu(), apply_transform(x, t), rtol=1e-5, atol=1e-5)


def gray(n: int, size: int = 28) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=gen(77))


def test_saturation_leaves_one_channel_unchanged_as_in_the_reference() -> None:
    """On one channel the channel mean is the pixel: only brightness and contrast change grayscale images."""
    x = gray(3)
    torch.testing.assert_close(apply_transform(x, color(0.0, 0.0, 1.0)), x)
    torch.testing.assert_close(apply_transform(x, color(0.0, 1.7, 1.0)), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(apply_transform(x, color(0.2, 0.0, 1.5)), (x - mean) * 1.5 + mean + 0.2)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_a_grayscale_28px_batch_and_its_gradients(kind: str) -> None:
    x = gray(4).requires_grad_()
    y = apply_transform(x, sample_transform(gen(3), 4, 28, kind=kind))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
