"""Full-data training: the record, its reuse and resume, the reader's errors, and that the loop learns."""

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import pdd.evaluate as evaluate_module
from pdd.cli import main
from pdd.config import FULL_DATA_EPOCHS, FullDataConfig
from pdd.data import ImageDataset, Normalization
from pdd.errors import ResultsError
from pdd.full_data import (
    FULL_DATA,
    full_data_accuracy,
    read_full_data,
    record_path,
    train_full_data,
)
from pdd.trial import cached_dataset

CPU = torch.device("cpu")
TRAIN = evaluate_module.train_on_synthetic  # the real one, whatever a test's spy has put in its place
RECORD_KEYS = {"format", "dataset_name", "dataset_hash", "evaluation", "epochs", "passes", "val_per_class",
               "split_seed", "train_images", "seeds", "val_acc", "test_acc", "val_mean", "val_std", "test_mean",
               "test_std", "seconds", "device", "git_commit", "pdd_version", "finished_at"}


def test_full_data_epochs_come_from_their_own_budget_table_and_are_validated():
    assert {budget: FullDataConfig(budget=budget).epochs for budget in FULL_DATA_EPOCHS} == FULL_DATA_EPOCHS
    evaluation = FullDataConfig(budget="paper", protocol="dc").evaluation
    assert (evaluation.epochs, evaluation.seeds, evaluation.lr, evaluation.rho) == (30, 5, 0.01, 0.0)
    assert FullDataConfig(epochs=7, seeds=1, arch="alexnet").evaluation.name == "paper-alexnet-7ep"
    for bad, field in (({"epochs": 0}, "epochs"), ({"arch": "nope"}, "arch"), ({"lr": 1.0}, "lr")):
        with pytest.raises(ValidationError, match=field):
            FullDataConfig(**bad)


def slice_config(cifar_slice: Path) -> FullDataConfig:
    return FullDataConfig(budget="smoke", protocol="dc", data={"source": str(cifar_slice), "val_per_class": 5})


def cli_args(cifar_slice: Path, results: Path) -> list[str]:
    return ["baseline", "full-data", "--data", str(cifar_slice), "--results", str(results), "--budget", "smoke",
            "--protocol", "dc", "--val-per-class", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def stored(cifar_slice, tmp_path_factory):
    """One smoke run on the slice: 2 models, 1 epoch (2 passes under dc) over its 250 training images."""
    results = tmp_path_factory.mktemp("full-data")
    record = train_full_data(slice_config(cifar_slice), cached_dataset(str(cifar_slice)), CPU, results)
    return results, record


def spy_training(monkeypatch, fail_on: int | None = None) -> list[int]:
    """The seeds of the models trained from now on; the model number `fail_on` (1-based) is killed instead."""
    seeds: list[int] = []

    def spy(*args, **kwargs):
        if fail_on is not None and len(seeds) + 1 == fail_on:
            raise KeyboardInterrupt
        seeds.append(args[5])
        return TRAIN(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_on_synthetic", spy)
    return seeds


def test_the_record_holds_its_keys_and_numbers_and_reads_back(stored, cifar_slice):
    results, record = stored
    dataset = cached_dataset(str(cifar_slice))
    path = record_path(results, dataset.content_hash, record.evaluation)
    assert path.name == f"{dataset.content_hash[:12]}-dc-convnet-1ep-{path.stem.rsplit('-', 1)[1]}.json"
    assert set(json.loads(path.read_text())) == RECORD_KEYS
    assert [p.name for p in (results / FULL_DATA).iterdir()] == [path.name], "checkpoints go once the record is there"
    assert (record.epochs, record.passes, record.train_images, record.seeds) == (1, 2, 250, (0, 1))
    assert (record.evaluation.lr, record.evaluation.rho, record.val_per_class) == (0.01, 0.0, 5)
    # 50 validation and 100 test images: every accuracy is a whole number of images.
    assert all(0 <= v <= 100 and (v / 2).is_integer() for v in record.val_acc)
    assert all(0 <= v <= 100 and v.is_integer() for v in record.test_acc)
    assert record.test_mean == pytest.approx(statistics.fmean(record.test_acc))
    assert record.val_std == pytest.approx(statistics.stdev(record.val_acc))
    assert read_full_data(results) == [record]
    assert full_data_accuracy([record], dataset.content_hash, "dc", "convnet") == record
    assert full_data_accuracy([record], dataset.content_hash, "paper", "convnet") is None
    assert full_data_accuracy([record], dataset.content_hash, "dc", "alexnet") is None
    assert full_data_accuracy([record], "0" * 64, "dc", "convnet") is None


def test_the_lookup_prefers_the_longest_training_then_more_models_then_the_latest(stored):
    _, record = stored
    short = replace(record, finished_at="2030-01-01T00:00:00+00:00")
    long = replace(record, epochs=30, finished_at="2020-01-01T00:00:00+00:00")
    more = replace(long, seeds=(0, 1, 2))
    later = replace(more, finished_at="2021-01-01T00:00:00+00:00")
    assert full_data_accuracy([short, long], record.dataset_hash, "dc", "convnet") is long
    assert full_data_accuracy([more, long, short], record.dataset_hash, "dc", "convnet") is more
    assert full_data_accuracy([later, more], record.dataset_hash, "dc", "convnet") is later


def test_a_rerun_reuses_the_stored_record_without_training(stored, cifar_slice, monkeypatch, capsys):
    results, record = stored
    trained = spy_training(monkeypatch)
    assert main(cli_args(cifar_slice, results)) == 0
    out = capsys.readouterr().out
    assert trained == []
    assert f"test {record.test_mean:.2f} ± {record.test_std:.2f} over 2 models" in out
    assert "(stored; --force trains again)" in out


def test_a_killed_run_resumes_after_its_finished_model(stored, cifar_slice, tmp_path, monkeypatch):
    _, fresh = stored
    cfg, dataset = slice_config(cifar_slice), cached_dataset(str(cifar_slice))
    spy_training(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        train_full_data(cfg, dataset, CPU, tmp_path)
    assert read_full_data(tmp_path) == []
    trained = spy_training(monkeypatch)
    resumed = train_full_data(cfg, dataset, CPU, tmp_path)
    assert trained == [1], "model 0 finished before the kill; only model 1 trains again"
    assert (resumed.val_acc, resumed.test_acc) == (fresh.val_acc, fresh.test_acc)


@pytest.mark.parametrize("text, fragment", [
    ('{"format": 1, "dataset_name": ', "cannot read full-data record"),
    ("[1, 2]", "not a pdd full-data record"),
    ('{"format": 9}', "format 9; this pdd reads 1"),
    ('{"format": 1, "dataset_name": "x"}', "dataset_hash: Field required"),
])
def test_the_reader_names_the_file_of_a_malformed_record(tmp_path, text, fragment):
    path = tmp_path / FULL_DATA / "abc-dc-convnet-1ep-0000.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ResultsError) as error:
        read_full_data(tmp_path)
    assert str(path) in str(error.value) and fragment in str(error.value)


def test_a_corrupt_stored_record_is_one_line_from_the_command(cifar_slice, tmp_path, capsys):
    path = record_path(tmp_path, cached_dataset(str(cifar_slice)).content_hash, slice_config(cifar_slice).evaluation)
    path.parent.mkdir()
    path.write_text('{"format": 1, "val_acc": [1, ')
    assert main(cli_args(cifar_slice, tmp_path)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pdd: error: cannot read full-data record {path}")


def test_training_on_the_whole_split_learns_two_classes_of_constant_images(tmp_path):
    """Each labelling of the same two colours reaches 100% from the same initial networks (seeds 0 and 1), which
    no untrained network can score on both: the loop learns."""
    cfg = FullDataConfig(budget="smoke", epochs=4, data={"source": "constant", "val_per_class": 5})
    for order, colours in enumerate(([[200, 30, 30], [30, 30, 200]], [[30, 30, 200], [200, 30, 30]])):
        colour = torch.tensor(colours, dtype=torch.uint8)

        def images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.arange(2).repeat_interleave(per_class)
            return colour[labels][:, :, None, None].expand(-1, -1, 16, 16).contiguous(), labels

        (train, train_labels), (test, test_labels) = images(40), images(10)
        dataset = ImageDataset(train, train_labels, test, test_labels, ("a", "b"), str(order) * 64, "constant",
                               Normalization.of(train))
        record = train_full_data(cfg, dataset, CPU, tmp_path)
        assert record.train_images == 70 and record.passes == 4
        assert record.val_acc == (100.0, 100.0) and record.test_acc == (100.0, 100.0), colours
