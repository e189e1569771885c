"""The leakage audit on constructed sets: copies of private images are flagged, noise and T' copies are not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pdd import audit as audit_module
from pdd.audit import (
    SUMMARY_COLUMNS,
    AuditConfig,
    audit,
    closest_pairs,
    dataset_features,
    load_pairs,
    random_convnet,
    save_pairs,
)
from pdd.cli import main
from pdd.data import ImageDataset, practical_subset, split_train_val
from pdd.errors import PddError
from pdd.report.audit_figures import closest_pairs_figure, pair_tile
from pdd.report.figures import png
from pdd.results import ARTIFACTS, write_rows
from pdd.synthetic import save_synthetic
from pdd.trial import cached_dataset

CPU = torch.device("cpu")
COPIED = [7, 42, 123]  # train indices of three CIFAR images (airplane, automobile, automobile)


@pytest.fixture(scope="module")
def dataset(cifar_slice: Path) -> ImageDataset:
    return cached_dataset(str(cifar_slice))


def normalised(dataset: ImageDataset, indices: list[int], split: str = "train") -> torch.Tensor:
    return dataset.normalization.normalize(getattr(dataset, f"{split}_images")[indices])


def noise(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_a_set_holding_training_images_flags_them_at_distance_zero(dataset):
    images = torch.cat([normalised(dataset, COPIED), noise(5, 0)])
    result = audit(images, dataset, [], AuditConfig(), CPU)
    assert result.pixel.private.index[:3].tolist() == COPIED
    assert result.pixel.private.distance[:3].tolist() == [0.0, 0.0, 0.0]
    assert result.feature.private.index[:3].tolist() == COPIED
    assert result.feature.private.distance[:3].max() < 1e-6
    assert result.near_copy.tolist() == [True] * 3 + [False] * 5
    summary = result.summary
    assert (summary["audit_near_copies"], summary["audit_near_pixel"], summary["audit_near_feature"]) == (3, 3, 3)
    assert summary["audit_pixel_min"] == 0.0
    assert (summary["audit_private"], summary["audit_excluded"], summary["audit_images"]) == (300, 0, 8)
    assert result.closest(3).tolist() == [0, 1, 2]


def test_a_gaussian_noise_set_is_not_flagged(dataset):
    result = audit(noise(20, 1), dataset, [], AuditConfig(), CPU)
    summary = result.summary
    assert (summary["audit_near_copies"], summary["audit_near_pixel"]) == (0, 0)
    # Unit-variance noise lies about sqrt(3072) ~ 55 from anything smooth, twice the pixel threshold.
    assert summary["audit_pixel_min"] > 1.5 * summary["audit_threshold_pixel"]
    assert 0.8 < summary["audit_pixel_ratio"] < 1.1


def test_images_of_t_prime_are_not_private(dataset):
    split = split_train_val(dataset.train_labels, 5, 0, classes=dataset.classes)
    subset = practical_subset(dataset.train_labels, split.train_idx, 3, 0, classes=dataset.classes)
    t_prime, private = subset[:2].tolist(), [i for i in COPIED if i not in subset.tolist()]
    result = audit(normalised(dataset, t_prime + private), dataset, subset, AuditConfig(), CPU)
    assert result.near_copy.tolist() == [False, False] + [True] * len(private)
    assert not set(result.pixel.private.index.tolist()) & set(subset.tolist())
    assert not set(result.feature.private.index.tolist()) & set(subset.tolist())
    assert result.pixel.private.distance[:2].min() > result.pixel.threshold
    assert (result.summary["audit_excluded"], result.summary["audit_private"]) == (30, 270)


def test_a_copying_set_sits_far_closer_to_train_than_to_test_and_a_held_out_one_does_not(dataset):
    # Hold 50 test images out of the dataset: real images that neither split holds, as a set that leaks nothing.
    held_out = dataclasses.replace(dataset, test_images=dataset.test_images[50:], test_labels=dataset.test_labels[50:],
                                   content_hash=dataset.content_hash + "-held-out")
    copying = audit(normalised(held_out, list(range(0, 300, 6))), held_out, [], AuditConfig(), CPU).summary
    fresh = audit(normalised(dataset, list(range(50)), "test"), held_out, [], AuditConfig(), CPU).summary
    assert copying["audit_pixel_ratio"] == 0.0 and copying["audit_feature_ratio"] == 0.0
    assert 0.75 < fresh["audit_pixel_ratio"] < 1.05  # below 1: the private pool is 6x the test pool
    assert 0.75 < fresh["audit_feature_ratio"] < 1.05
    assert fresh["audit_near_copies"] == 0
    test_drawn = audit(normalised(dataset, list(range(50)), "test"), dataset, [], AuditConfig(), CPU).summary
    assert test_drawn["audit_pixel_ratio"] == float("inf")  # nearest test image: itself


def test_nearest_neighbours_and_thresholds_agree_with_brute_force(dataset, tmp_path):
    cfg = AuditConfig(threshold_sample=1000, threshold_quantile=0.1, batch=37)  # chunks that do not divide the pool
    images = normalised(dataset, list(range(40)), "test") + 0.3 * noise(40, 2)
    result = audit(images, dataset, [], cfg, CPU, cache_dir=tmp_path)

    train = dataset.normalization.normalize(dataset.train_images).flatten(1).double()
    pixel = torch.cdist(images.flatten(1).double(), train, compute_mode="donot_use_mm_for_euclid_dist")
    assert result.pixel.private.index.tolist() == pixel.argmin(1).tolist()
    torch.testing.assert_close(result.pixel.private.distance.double(), pixel.min(1).values, rtol=1e-5, atol=1e-4)
    # The threshold sample is the whole train split here: each image against its nearest with other pixels.
    pairs = torch.cdist(train, train, compute_mode="donot_use_mm_for_euclid_dist")
    same = pairs == 0
    spacing = pairs.masked_fill(same, float("inf")).min(1).values
    assert result.pixel.threshold == pytest.approx(float(torch.quantile(spacing, 0.1)), rel=1e-5)

    net = random_convnet(dataset, 0, CPU)
    embedded = dataset_features(dataset, net, cfg, CPU, tmp_path / "audit")
    units = torch.nn.functional.normalize(embedded["train"].double(), dim=1)
    feature_spacing = (1 - units @ units.T).masked_fill(same, float("inf")).min(1).values
    assert result.feature.threshold == pytest.approx(float(torch.quantile(feature_spacing, 0.1)), abs=1e-5)
    queries = audit_module._embed(net, images, lambda x: x, CPU, cfg.precision)
    cosine = 1 - torch.nn.functional.normalize(queries.double(), dim=1) @ units.T
    assert result.feature.private.index.tolist() == cosine.argmin(1).tolist()
    torch.testing.assert_close(result.feature.private.distance.double(), cosine.min(1).values, rtol=0, atol=1e-5)


def test_the_cache_is_reused_and_a_damaged_file_rebuilt(dataset, tmp_path, monkeypatch):
    images = torch.cat([normalised(dataset, COPIED), noise(3, 3)])
    first = audit(images, dataset, [], AuditConfig(), CPU, cache_dir=tmp_path)
    files = sorted((tmp_path / "audit").iterdir())
    assert [f.name.split("-")[0] for f in files] == ["features", "spacing", "spacing"]

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded the dataset again")

    real_embed = audit_module._embed
    # Only the synthetic images may be embedded now: six of them, not the dataset's 400.
    monkeypatch.setattr(audit_module, "_embed",
                        lambda net, x, *rest: real_embed(net, x, *rest) if len(x) == 6 else no_embedding())
    again = audit(images, dataset, [], AuditConfig(), CPU, cache_dir=tmp_path)
    assert again.summary == first.summary
    monkeypatch.undo()

    features = next(f for f in files if f.name.startswith("features"))
    features.write_bytes(b"truncated")
    rebuilt = audit(images, dataset, [], AuditConfig(), CPU, cache_dir=tmp_path)
    assert rebuilt.summary == first.summary
    assert features.stat().st_size > 400 * 2048  # bfloat16 [400, 2048] again
    other_net = audit(images, dataset, [], AuditConfig(feature_seed=1), CPU, cache_dir=tmp_path)
    assert other_net.summary["audit_features"].endswith("seed1")
    assert other_net.summary["audit_threshold_feature"] != first.summary["audit_threshold_feature"]
    assert other_net.summary["audit_threshold_pixel"] == first.summary["audit_threshold_pixel"]


def test_the_summary_has_the_documented_keys_and_types(dataset):
    summary = audit(noise(2, 4), dataset, [], AuditConfig(), CPU).summary
    assert list(summary) == list(SUMMARY_COLUMNS)
    assert all(type(summary[key]) is kind for key, (kind, _) in SUMMARY_COLUMNS.items())


@pytest.mark.parametrize("call, fragment", [
    (lambda d: audit(torch.zeros(2, 3, 28, 28), d, [], AuditConfig(), CPU), "[N, 3, 32, 32]"),
    (lambda d: audit(torch.full((2, 3, 32, 32), float("nan")), d, [], AuditConfig(), CPU), "NaN"),
    (lambda d: audit(noise(2, 5), d, [300], AuditConfig(), CPU), "0..299"),
    (lambda d: audit(noise(2, 5), d, list(range(300)), AuditConfig(), CPU), "nothing private"),
    (lambda d: audit(noise(2, 5), d, [], AuditConfig(features="teacher"), CPU), "--teacher"),
])
def test_bad_input_is_a_clear_error(dataset, call, fragment):
    with pytest.raises(PddError) as error:
        call(dataset)
    assert fragment in str(error.value)


def test_audit_config_names_a_bad_field():
    with pytest.raises(ValidationError, match="threshold_quantile"):
        AuditConfig(threshold_quantile=1.5)
    with pytest.raises(ValidationError, match="quantile_threshold"):
        AuditConfig(quantile_threshold=0.1)


def test_closest_pairs_round_trip_and_draw(dataset, tmp_path):
    images = torch.cat([noise(3, 6), normalised(dataset, COPIED[:1])])
    result = audit(images, dataset, [], AuditConfig(), CPU)
    pairs = closest_pairs(result, dataset, 2)
    assert pairs.synthetic_index.tolist()[0] == 3 and pairs.private_index.tolist()[0] == COPIED[0]
    assert torch.equal(pairs.private_images[0], dataset.train_images[COPIED[0]])
    assert pairs.near_copy.tolist() == [True, False]
    save_pairs(tmp_path / "pairs.pt", pairs)
    loaded = load_pairs(tmp_path / "pairs.pt")
    assert torch.equal(loaded.private_images, pairs.private_images) and loaded.threshold == pairs.threshold

    shown = dataset.normalization.denormalize(images).numpy()
    caption, canvas = closest_pairs_figure({"dm": (shown, loaded), "pdd": (shown, closest_pairs(result, dataset, 1))})
    axes = canvas.get_axes()
    assert len(axes) == 4 and [ax.get_visible() for ax in axes] == [True, True, True, False]
    assert axes[0].get_title() == "0.0" and axes[0].title.get_color() == "tab:red"
    assert axes[1].title.get_color() == "black"
    assert "dm 27.2" in caption
    assert png(canvas).startswith(b"\x89PNG")
    tile = pair_tile(shown[3], dataset.train_images[COPIED[0]].numpy() / 255)
    assert tile.shape == (32, 66, 3)
    np.testing.assert_allclose(tile[:, :32], tile[:, 34:], atol=1e-6)  # a copy: both halves alike
    assert (tile[:, 32:34] == 1).all()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdd: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def trial_set(dataset: ImageDataset, root: Path, trial: str, images: torch.Tensor, inside: bool = True) -> Path:
    """A trial's set file, in the artifacts of results directory `root` or loose in it."""
    path = root / ARTIFACTS / trial / "synthetic.pt" if inside else root / f"{trial}.pt"
    save_synthetic(path, images, torch.zeros(len(images), dtype=torch.int64),
                   {"trial_id": trial, "mean": list(dataset.normalization.mean),
                    "std": list(dataset.normalization.std)})
    return path


def test_cli_audits_a_trial_set_without_counting_its_t_prime(dataset, cifar_slice, tmp_path, capsys):
    path = trial_set(dataset, tmp_path / "results", "t1", normalised(dataset, COPIED))
    write_rows(tmp_path / "results",
               [{"trial_id": "t1", "pipc_indices": [42, 5], "dataset_hash": dataset.content_hash}])
    code, out, err = run_cli(capsys, "audit", str(path), "--data", str(cifar_slice), "--device", "cpu",
                             "--figure", str(tmp_path / "pairs.png"))
    assert code == 0, err
    assert "near-copy threshold: pixel L2 27.23" in out
    assert "the 2 images of T' (trial t1 in" in out
    assert "audit_near_copies" in out and (tmp_path / "pairs.png").read_bytes().startswith(b"\x89PNG")
    near_copies = next(line for line in out.splitlines() if "audit_near_copies" in line)
    assert near_copies.split("│")[2].strip() == "2"  # 7 and 123; 42 is in T'


def test_cli_takes_t_prime_from_a_row_file_for_a_set_made_elsewhere(dataset, cifar_slice, tmp_path, capsys):
    path = save_to(tmp_path / "elsewhere.pt", normalised(dataset, COPIED))
    row = write_rows(tmp_path / "results", [{"trial_id": "t5", "pipc_indices": [7, 42, 123],
                                           "dataset_hash": dataset.content_hash}])
    code, out, err = run_cli(capsys, "audit", str(path), "--data", str(cifar_slice), "--exclude-trial-row", str(row))
    assert code == 0, err
    assert f"the 3 images of T' ({row})" in out
    near_copies = next(line for line in out.splitlines() if "audit_near_copies" in line)
    assert near_copies.split("│")[2].strip() == "0"


@pytest.mark.parametrize("make, fragments", [
    (lambda d, root: root / "missing.pt", ["synthetic set not found", "missing.pt"]),
    (lambda d, root: save_to(root / "small.pt", torch.zeros(2, 3, 16, 16)), ["shape (3, 16, 16)"]),
    (lambda d, root: torch.save(torch.zeros(2, 3, 32, 32), root / "bare.pt") or root / "bare.pt",
     ["a dict with 'images' and 'labels'", "found Tensor"]),
    (lambda d, root: trial_set(d, root / "results", "t2", noise(2, 7)), ["no row of trial t2", "--exclude-trial-row"]),
    (lambda d, root: trial_set(d, root, "t3", noise(2, 7), inside=False), ["comes from trial t3", "--results DIR"]),
])
def test_cli_bad_input_is_one_line(dataset, cifar_slice, tmp_path, capsys, make, fragments):
    code, _, err = run_cli(capsys, "audit", str(make(dataset, tmp_path)), "--data", str(cifar_slice))
    assert code == 2
    one_error_line(err, *fragments)


def test_cli_names_a_missing_row_file(cifar_slice, dataset, tmp_path, capsys):
    path = save_to(tmp_path / "elsewhere.pt", noise(2, 9))
    code, _, err = run_cli(capsys, "audit", str(path), "--data", str(cifar_slice), "--exclude-trial-row",
                           str(tmp_path / "nope.parquet"))
    assert code == 2
    one_error_line(err, "trial row not found", "nope.parquet")


def test_cli_refuses_a_row_of_another_dataset(dataset, cifar_slice, tmp_path, capsys):
    path = trial_set(dataset, tmp_path / "results", "t4", noise(2, 8))
    write_rows(tmp_path / "results", [{"trial_id": "t4", "pipc_indices": [1], "dataset_hash": "f" * 64,
                                     "dataset_name": "other"}])
    code, _, err = run_cli(capsys, "audit", str(path), "--data", str(cifar_slice))
    assert code == 2
    one_error_line(err, "ran on dataset 'other'", "--data")


def save_to(path: Path, images: torch.Tensor) -> Path:
    save_synthetic(path, images, torch.zeros(len(images), dtype=torch.int64), {})
    return path
