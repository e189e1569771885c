"""pdd.data: sources, cache, normalisation, train/val split and the practical subset."""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

import pdd.data as data
from pdd.data import ImageDataset, Normalization, load_dataset, practical_subset, split_train_val
from pdd.errors import DataError

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture
def editable_slice(cifar_slice: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cifar_slice, tmp_path / "slice"))


def assert_same_data(a: ImageDataset, b: ImageDataset) -> None:
    assert a.classes == b.classes
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


@contextmanager
def raises_data_error(match: str) -> Iterator[pytest.ExceptionInfo[DataError]]:
    """pytest.raises(DataError) that also requires the one-line message a user sees."""
    with pytest.raises(DataError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


# --- loading and the cache ---------------------------------------------------------------------------------------


def test_slice_loads_with_expected_shapes_and_classes(cifar_slice: Path, tmp_path: Path):
    ds = load_dataset(cifar_slice, cache_dir=tmp_path)
    assert ds.train_images.shape == (300, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (100, 3, 32, 32) and ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == torch.int64
    assert ds.classes == CIFAR_CLASSES
    assert (ds.num_classes, ds.channels, ds.image_size) == (10, 3, 32)
    assert torch.bincount(ds.train_labels, minlength=10).tolist() == [30] * 10
    assert torch.bincount(ds.test_labels, minlength=10).tolist() == [10] * 10
    assert ds.name == "cifar10-slice"
    assert len(ds.content_hash) == 64
    # Real photos, not a zero-filled buffer: pixel values spread over the range.
    assert ds.train_images.float().std() > 30


def test_second_load_comes_from_cache_without_decoding(cifar_slice: Path, tmp_path: Path, monkeypatch):
    cold = load_dataset(cifar_slice, cache_dir=tmp_path)
    assert (tmp_path / f"images-{cold.content_hash}.pt").is_file()

    def no_decoding(*args):
        raise AssertionError("decoded an image despite a warm cache")

    monkeypatch.setattr(data, "_decode_image", no_decoding)
    warm = load_dataset(cifar_slice, cache_dir=tmp_path)
    assert warm.content_hash == cold.content_hash
    assert_same_data(warm, cold)


def test_corrupt_cache_file_is_rebuilt(cifar_slice: Path, tmp_path: Path):
    cold = load_dataset(cifar_slice, cache_dir=tmp_path)
    (tmp_path / f"images-{cold.content_hash}.pt").write_bytes(b"garbage")
    (tmp_path / data.HASH_INDEX).write_text("{not json")
    assert_same_data(load_dataset(cifar_slice, cache_dir=tmp_path), cold)


def test_default_cache_dir_is_pdd_cache(cifar_slice: Path, pdd_cache: Path):
    ds = load_dataset(cifar_slice)
    assert (pdd_cache / f"images-{ds.content_hash}.pt").is_file()


def test_content_hash_follows_image_bytes(editable_slice: Path, tmp_path: Path):
    before = load_dataset(editable_slice, cache_dir=tmp_path / "a")
    victim = editable_slice / "train" / "cat" / "0000.jpg"
    original = victim.read_bytes()
    assert original[6:11] == b"JFIF\0"
    # Same size, same pixels, one byte different: the JFIF pixel density (offset 14).
    victim.write_bytes(original[:14] + bytes([original[14] ^ 1]) + original[15:])
    retouched = load_dataset(editable_slice, cache_dir=tmp_path / "a")  # same cache: memo must be invalidated
    assert retouched.content_hash != before.content_hash
    assert torch.equal(retouched.train_images, before.train_images)

    victim.write_bytes((editable_slice / "train" / "dog" / "0000.jpg").read_bytes())
    after = load_dataset(editable_slice, cache_dir=tmp_path / "a")
    assert after.content_hash not in (before.content_hash, retouched.content_hash)
    assert after.content_hash == load_dataset(editable_slice, cache_dir=tmp_path / "b").content_hash
    cat0, dog0 = CIFAR_CLASSES.index("cat") * 30, CIFAR_CLASSES.index("dog") * 30
    assert torch.equal(after.train_images[cat0], after.train_images[dog0])
    assert not torch.equal(before.train_images[cat0], after.train_images[cat0])


def test_archive_source_matches_folder(cifar_slice: Path, tmp_path: Path):
    archive = tmp_path / "myslice.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_slice, arcname="myslice")
    from_archive = load_dataset(archive, cache_dir=tmp_path / "cache")
    assert_same_data(from_archive, load_dataset(cifar_slice, cache_dir=tmp_path / "cache"))
    assert from_archive.name == "myslice"


def test_known_archive_gets_human_name():
    assert data._human_name("cifar10-jpeg.tar.gz", strip=data.ARCHIVE_SUFFIXES) == "CIFAR-10 (JPEG copy)"


def test_grayscale_folder_keeps_one_channel(tmp_path: Path):
    for split in ("train", "test"):
        for cls, value in (("a", 10), ("b", 200)):
            (tmp_path / "gray" / split / cls).mkdir(parents=True)
            Image.new("L", (8, 8), value).save(tmp_path / "gray" / split / cls / "x.png")
    ds = load_dataset(tmp_path / "gray", cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (2, 1, 8, 8)
    assert ds.train_images[:, 0, 0, 0].tolist() == [10, 200]


# --- errors ------------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path):
    with raises_data_error("dataset not found: .*nowhere"):
        load_dataset(tmp_path / "nowhere.tar.gz", cache_dir=tmp_path)


def test_corrupt_archive(tmp_path: Path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(os.urandom(4096))
    with raises_data_error(f"corrupt dataset archive {bad}"):
        load_dataset(bad, cache_dir=tmp_path / "cache")


def test_archive_without_train_and_test(tmp_path: Path):
    (tmp_path / "flat" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "cat" / "1.png")
    archive = tmp_path / "flat.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "flat", arcname="flat")
    with raises_data_error(f"no train/ and test/ folders in {archive}"):
        load_dataset(archive, cache_dir=tmp_path / "cache")


def test_folder_without_train_and_test(cifar_slice: Path, tmp_path: Path):
    with raises_data_error(f"no train/ and test/ folders in {cifar_slice / 'train'}"):
        load_dataset(cifar_slice / "train", cache_dir=tmp_path)


def test_undecodable_image(editable_slice: Path, tmp_path: Path):
    victim = editable_slice / "test" / "frog" / "0003.jpg"
    victim.write_bytes(b"this is not a jpeg")
    with raises_data_error(f"cannot decode image {victim}"):
        load_dataset(editable_slice, cache_dir=tmp_path / "cache")


def test_mixed_image_sizes(editable_slice: Path, tmp_path: Path):
    odd = editable_slice / "train" / "ship" / "9999.png"
    Image.new("RGB", (16, 16)).save(odd)
    with raises_data_error(f"image {odd} is 16x16 with 3 channels but earlier images are 32x32"):
        load_dataset(editable_slice, cache_dir=tmp_path / "cache")


def test_test_classes_must_match_train(editable_slice: Path, tmp_path: Path):
    shutil.rmtree(editable_slice / "test" / "truck")
    with raises_data_error("test/ classes differ from train/ classes"):
        load_dataset(editable_slice, cache_dir=tmp_path / "cache")


def test_cifar10_without_internet_says_what_to_do(tmp_path: Path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with raises_data_error(r"cannot download CIFAR-10 \(no internet\?\); pass a local copy with --data PATH"):
        load_dataset("cifar10", cache_dir=tmp_path)


# --- normalisation -----------------------------------------------------------------------------------------------


def test_normalize_round_trip_and_centring(cifar_slice: Path):
    ds = load_dataset(cifar_slice)
    x = ds.normalization.normalize(ds.train_images)
    assert x.dtype == torch.float32 and x.shape == ds.train_images.shape
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.2  # its own training split's stats centre it
    assert torch.allclose(ds.normalization.denormalize(x) * 255, ds.train_images.float(), atol=1e-3)
    assert ds.normalization.denormalize(torch.full((1, 3, 2, 2), 100.0)).max() == 1.0


def test_normalize_uses_the_given_statistics():
    gray = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    assert Normalization((0.5,), (0.5,)).normalize(gray).flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(DataError, match="images have 1 channels, the normalisation 3"):
        Normalization((0.5,) * 3, (0.5,) * 3).normalize(gray)


# --- split and practical subset ----------------------------------------------------------------------------------


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(10).repeat_interleave(20)[torch.randperm(200, generator=torch.Generator().manual_seed(9))]


def test_split_is_stratified_disjoint_and_seeded(labels: torch.Tensor):
    rng_before = torch.get_rng_state()
    split = split_train_val(labels, val_per_class=5, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)

    assert torch.bincount(labels[split.val_idx], minlength=10).tolist() == [5] * 10
    assert torch.bincount(labels[split.train_idx], minlength=10).tolist() == [15] * 10
    assert torch.equal(torch.cat([split.train_idx, split.val_idx]).sort().values, torch.arange(200))

    again = split_train_val(labels, val_per_class=5, seed=0)
    assert torch.equal(again.val_idx, split.val_idx) and torch.equal(again.train_idx, split.train_idx)
    assert not torch.equal(split_train_val(labels, val_per_class=5, seed=1).val_idx, split.val_idx)


def test_split_leaving_no_training_images_names_the_class(labels: torch.Tensor):
    few_cats = torch.cat([labels[labels != 3], torch.full((12,), 3)])
    with raises_data_error(r"val_per_class=12 leaves no training images for class 'cat' \(it has 12\)"):
        split_train_val(few_cats, val_per_class=12, seed=0, classes=CIFAR_CLASSES)


def test_practical_subset(labels: torch.Tensor):
    pool = split_train_val(labels, val_per_class=5, seed=0).train_idx
    rng_before = torch.get_rng_state()
    subset = practical_subset(labels, pool, pipc=4, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)

    assert labels[subset].tolist() == [c for c in range(10) for _ in range(4)]  # grouped in class order
    assert set(subset.tolist()) <= set(pool.tolist()) and len(set(subset.tolist())) == 40
    assert torch.equal(practical_subset(labels, pool, pipc=4, seed=3), subset)
    assert not torch.equal(practical_subset(labels, pool, pipc=4, seed=4), subset)
    # Shuffling how the pool is listed changes nothing: the draw depends on the pool as a set.
    shuffled = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))]
    assert torch.equal(practical_subset(labels, shuffled, pipc=4, seed=3), subset)
    # A smaller pipc is the first images of each class of a larger one.
    larger = practical_subset(labels, pool, pipc=8, seed=3).view(10, 8)
    assert torch.equal(larger[:, :4].flatten(), subset)

    everything = practical_subset(labels, pool, pipc=None, seed=3)
    assert sorted(everything.tolist()) == pool.tolist()
    assert torch.equal(everything.view(10, 15)[:, :4].flatten(), subset)  # also in draw order


def test_practical_subset_too_large_names_the_class(labels: torch.Tensor):
    pool = split_train_val(labels, val_per_class=5, seed=0).train_idx
    with raises_data_error("pipc=16 exceeds the 15 training images of class 'airplane'"):
        practical_subset(labels, pool, pipc=16, seed=0, classes=CIFAR_CLASSES)
