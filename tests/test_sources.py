"""Every named dataset on small generated copies in its own format: shapes, classes, normalisation, a smoke trial,
and one clear line for bad input. Nothing is downloaded."""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from source_fixtures import FOLDER_NAMES, write_gray_image_folder, write_idx, write_layout

import pdd.trial as trial_module
from pdd.cli import main
from pdd.config import TrialConfig
from pdd.data import Normalization, image_spec, load_dataset
from pdd.errors import DataError
from pdd.sources import IDX_FILES, SOURCES
from pdd.trial import TrialOptions, run_trial

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
# Trials here check wiring on each dataset's shapes, so a narrow net and few steps keep them quick on a busy CPU.
SMALL = {"method": "dm", "ipc": 1, "pipc": 2, "budget": "smoke", "iterations": 2, "model": {"width": 16},
         "eval": {"seeds": 1, "epochs": 2}}


@pytest.fixture
def offline(monkeypatch):
    """No download can happen: every torchvision dataset class fails as without internet."""
    import torchvision

    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    for entry in SOURCES.values():
        monkeypatch.setattr(torchvision.datasets, entry.torchvision, no_internet)


@pytest.fixture
def without_system_copies(monkeypatch):
    """Named sources ignore OS-installed copies (this machine may have Debian's Fashion-MNIST)."""
    for key, entry in SOURCES.items():
        monkeypatch.setitem(SOURCES, key, dataclasses.replace(entry, system=()))


def assert_matches_written(ds, written) -> None:
    for split, (images, labels) in written.items():
        assert torch.equal(getattr(ds, f"{split}_images"), torch.from_numpy(images))
        assert torch.equal(getattr(ds, f"{split}_labels"), torch.from_numpy(labels))


@pytest.mark.parametrize("key", list(SOURCES))
def test_a_named_source_reads_its_local_copy_with_its_own_facts(key, tmp_path, offline, without_system_copies):
    entry = SOURCES[key]
    written = write_layout(key, tmp_path / "cache" / "torchvision" / entry.subdir)
    ds = load_dataset(key, cache_dir=tmp_path / "cache")
    assert ds.name == entry.name and ds.classes == entry.classes
    assert (ds.channels, ds.image_size, ds.num_classes) == (entry.channels, entry.size, len(entry.classes))
    assert ds.train_images.shape == (3 * ds.num_classes, entry.channels, entry.size, entry.size)
    assert ds.normalization == entry.normalization
    assert_matches_written(ds, written)
    spec = image_spec(key)  # from the facts alone: nothing read
    assert (spec.channels, spec.image_size, spec.num_classes) == (ds.channels, ds.image_size, ds.num_classes)


def test_published_statistics_of_the_named_sources():
    stats = {key: (entry.normalization.mean, entry.normalization.std) for key, entry in SOURCES.items()}
    assert stats["mnist"] == ((0.1307,), (0.3081,))
    assert stats["fashion-mnist"] == ((0.2860,), (0.3530,))
    assert stats["svhn"] == ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
    assert stats["cifar100"] == ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))
    assert stats["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert len(SOURCES["cifar100"].classes) == 100 and SOURCES["cifar100"].classes[:2] == ("apple", "aquarium_fish")


@pytest.mark.parametrize("key", list(SOURCES))
def test_a_folder_in_a_sources_layout_runs_a_smoke_trial(key, tmp_path):
    entry = SOURCES[key]
    folder = tmp_path / FOLDER_NAMES[key]
    write_layout(key, folder)
    ds = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert ds.name == entry.name and ds.normalization == entry.normalization and ds.classes == entry.classes

    cfg = TrialConfig.model_validate(SMALL | {"data": {"source": str(folder), "val_per_class": 1}})
    trial_module.forget_datasets()
    [row] = run_trial(cfg, TrialOptions(results=tmp_path / "results", device="cpu"))
    assert row["status"] == "ok" and row["dataset_name"] == entry.name
    assert len(row["pipc_indices"]) == 2 * len(entry.classes)
    synthetic = torch.load(row["synthetic_path"], weights_only=True)
    assert synthetic["images"].shape == (len(entry.classes), entry.channels, entry.size, entry.size)
    assert synthetic["meta"]["mean"] == list(entry.normalization.mean)
    assert (Path(row["synthetic_path"]).parent / "synthetic.png").stat().st_size > 0


def test_idx_files_of_unknown_origin_get_digit_classes_and_their_own_statistics(tmp_path):
    written = write_layout("mnist", tmp_path / "my-digits")
    ds = load_dataset(tmp_path / "my-digits", cache_dir=tmp_path / "cache")
    assert ds.name == "my-digits" and ds.classes == tuple(str(d) for d in range(10))
    train = written["train"][0] / 255
    assert ds.normalization.mean == pytest.approx((train.mean(),), abs=1e-4)
    assert ds.normalization.std == pytest.approx((train.std(),), abs=1e-4)
    assert ds.normalization == Normalization.of(ds.train_images)
    assert_matches_written(ds, written)
    assert load_dataset(tmp_path / "my-digits", cache_dir=tmp_path / "cache").normalization == ds.normalization


def test_torchvisions_raw_folder_is_known_by_its_parent(tmp_path):
    write_layout("fashion-mnist", tmp_path / "FashionMNIST" / "raw")
    ds = load_dataset(tmp_path / "FashionMNIST" / "raw", cache_dir=tmp_path / "cache")
    assert ds.name == "Fashion-MNIST" and ds.classes[0] == "T-shirt/top"


def test_a_grayscale_28px_image_folder_computes_its_statistics_and_runs_a_trial(tmp_path):
    tree = write_gray_image_folder(tmp_path / "gray-tree")
    ds = load_dataset(tree, cache_dir=tmp_path / "cache")
    assert (ds.channels, ds.image_size, ds.num_classes) == (1, 28, 3)
    assert ds.normalization == Normalization.of(ds.train_images)
    assert 0.2 < ds.normalization.mean[0] < 0.6
    cfg = TrialConfig.model_validate(SMALL | {"data": {"source": str(tree), "val_per_class": 1}})
    trial_module.forget_datasets()
    [row] = run_trial(cfg, TrialOptions(results=tmp_path / "results", device="cpu"))
    assert row["status"] == "ok"
    assert torch.load(row["synthetic_path"], weights_only=True)["images"].shape == (3, 1, 28, 28)


# --- bad input: one clear line ------------------------------------------------------------------------------------


def assert_one_line(info: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(info.value)


def test_a_folder_with_only_some_idx_files(tmp_path):
    write_layout("mnist", tmp_path / "digits")
    (tmp_path / "digits" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="holds only some of the idx files: t10k-labels-idx1-ubyte") as info:
        load_dataset(tmp_path / "digits", cache_dir=tmp_path / "cache")
    assert_one_line(info)


def test_a_label_file_that_does_not_match_its_images(tmp_path):
    written = write_layout("mnist", tmp_path / "digits")
    write_idx(tmp_path / "digits" / f"{IDX_FILES['test'][1]}", written["test"][1][:-1].astype(np.uint8))
    with pytest.raises(DataError, match="has 19 labels but .*t10k-images-idx3-ubyte has 20 images") as info:
        load_dataset(tmp_path / "digits", cache_dir=tmp_path / "cache")
    assert_one_line(info)


def test_a_file_that_is_not_idx(tmp_path):
    write_layout("mnist", tmp_path / "digits")
    (tmp_path / "digits" / "t10k-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="is not an idx file"):
        load_dataset(tmp_path / "digits", cache_dir=tmp_path / "cache")


def test_an_empty_split(tmp_path):
    write_layout("mnist", tmp_path / "digits")
    write_idx(tmp_path / "digits" / IDX_FILES["test"][0], np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "digits" / IDX_FILES["test"][1], np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError, match="digits: a split holds no images"):
        load_dataset(tmp_path / "digits", cache_dir=tmp_path / "cache")


def test_images_of_the_wrong_size_for_the_named_layout(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    write_layout("svhn", folder)
    images = np.zeros((28, 28, 3, 4), dtype=np.uint8)
    scipy.io.savemat(str(folder / "test_32x32.mat"), {"X": images, "y": np.ones((4, 1))})
    with pytest.raises(DataError, match=r"SVHN in .*: test images are \[3, 28, 28\], expected \[3, 32, 32\]"):
        load_dataset(folder, cache_dir=tmp_path / "cache")


def test_an_image_folder_whose_test_classes_differ(tmp_path):
    tree = write_gray_image_folder(tmp_path / "gray-tree")
    (tree / "test" / "class2").rename(tree / "test" / "class9")
    with pytest.raises(DataError, match="test/ classes differ from train/ classes"):
        load_dataset(tree, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("key", ["mnist", "fashion-mnist", "svhn", "cifar100"])
def test_a_named_dataset_missing_offline_names_what_is_missing(key, tmp_path, offline, without_system_copies):
    entry = SOURCES[key]
    with pytest.raises(DataError, match=rf"cannot download {entry.name} \(no internet\?\); pass a local copy") as info:
        load_dataset(key, cache_dir=tmp_path)
    message = str(info.value)
    assert_one_line(info)
    assert entry.layout.files[0] in message and str(tmp_path / "torchvision") in message
    if key == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message


def test_a_folder_of_no_known_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/ and test/ folders in .*empty, nor the files of a named dataset"):
        load_dataset(tmp_path / "empty", cache_dir=tmp_path / "cache")


# --- the CLI ----------------------------------------------------------------------------------------------------


def trial_args(data: str, tmp_path: Path) -> list[str]:
    config = tmp_path / "trial.yaml"
    config.write_text("data:\n  val_per_class: 1\nmodel:\n  width: 16\n")
    return ["trial", "--method", "dm", "--ipc", "1", "--pipc", "2", "--budget", "smoke", "--data", data,
            "--iterations", "2", "--eval-epochs", "2", "--eval-seeds", "1",
            "--results", str(tmp_path / "results"), "--config", str(config), "--device", "cpu"]


def test_pdd_trial_on_a_folder_of_idx_files(tmp_path, capsys):
    write_layout("mnist", tmp_path / "idx-files")
    trial_module.forget_datasets()
    assert main(trial_args(str(tmp_path / "idx-files"), tmp_path)) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_pdd_trial_on_a_partial_idx_folder_is_one_line(tmp_path, capsys):
    write_layout("mnist", tmp_path / "idx-files")
    (tmp_path / "idx-files" / "train-images-idx3-ubyte.gz").unlink()
    trial_module.forget_datasets()
    assert main(trial_args(str(tmp_path / "idx-files"), tmp_path)) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte" in err and "Traceback" not in err


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_pdd_trial_on_debians_fashion_mnist(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PDD_CACHE", str(tmp_path / "cache"))
    trial_module.forget_datasets()
    try:
        assert main(trial_args("fashion-mnist", tmp_path)) == 0
        ds = trial_module.cached_dataset("fashion-mnist")
        assert ds.name == "Fashion-MNIST" and len(ds.train_images) == 60_000 and len(ds.test_images) == 10_000
        assert ds.normalization.mean == pytest.approx(Normalization.of(ds.train_images).mean, abs=1e-3)
        assert main(trial_args(str(DEBIAN_FASHION), tmp_path)) == 0  # the folder itself: the same dataset
        assert trial_module.cached_dataset(str(DEBIAN_FASHION)).content_hash == ds.content_hash
    finally:
        trial_module.forget_datasets()


def test_the_same_files_read_as_two_datasets_keep_two_caches(tmp_path):
    """MNIST-style files named after Fashion-MNIST and the same bytes of unknown origin: each keeps its reading."""
    write_layout("fashion-mnist", tmp_path / "fashion-mnist")
    write_layout("fashion-mnist", tmp_path / "unknown")
    cache = tmp_path / "cache"
    fashion, unknown = (load_dataset(tmp_path / name, cache_dir=cache) for name in ("fashion-mnist", "unknown"))
    assert fashion.content_hash == unknown.content_hash
    assert fashion.classes[0] == "T-shirt/top" and unknown.classes[0] == "0"
    assert fashion.normalization == SOURCES["fashion-mnist"].normalization != unknown.normalization
    assert load_dataset(tmp_path / "fashion-mnist", cache_dir=cache).classes == fashion.classes


# --- synthetic sets and report figures in the dataset's statistics ---------------------------------------------


def test_grayscale_sets_round_trip_through_pngs_grids_and_report_figures(tmp_path):
    from PIL import Image

    from pdd.report.figures import class_strip, load_set
    from pdd.synthetic import load_synthetic, save_grid, save_synthetic

    fashion = SOURCES["fashion-mnist"].normalization
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 1, 1])
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        (tmp_path / "pngs" / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(tmp_path / "pngs" / str(int(label)) / f"{i}.png")
    images, loaded_labels = load_synthetic(tmp_path / "pngs", (1, 28, 28), fashion)
    torch.testing.assert_close(images, fashion.normalize(pixels))
    assert loaded_labels.tolist() == labels.tolist()

    save_grid(tmp_path / "grid.png", images, labels, fashion)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 + 2 * 30, 2 + 2 * 30)  # two per class, two classes, 2-pixel gaps
        assert np.asarray(grid.convert("L"))[2:30, 2:30].tolist() == pixels[0, 0].tolist()

    meta = {"classes": ["T-shirt/top", "Trouser"], "mean": list(fashion.mean), "std": list(fashion.std)}
    save_synthetic(tmp_path / "synthetic.pt", images, labels, meta)
    shown = load_set({"synthetic_path": str(tmp_path / "synthetic.pt"), "trial_id": "t"}, tmp_path)
    np.testing.assert_allclose(shown.images * 255, pixels.numpy(), atol=1e-3)
    strip, names = class_strip(shown)
    assert strip.shape == (28, 2 * 28 + 2) and names == ["T-shirt/top", "Trouser"]
