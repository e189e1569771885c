"""A smoke trial end to end on a slice of the CIFAR-10 copy, its Parquet row, resume, and failure rows."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import pdd.trial as trial_module
from pdd.config import TrialConfig
from pdd.method_spec import SPECS, needs_teacher
from pdd.results import ARTIFACTS, SCHEMA, SCHEMA_VERSION, Stage, Status, read_results, read_rows, trial_row, write_rows
from pdd.trial import TrialOptions, run_trial


def smoke_config(cifar_slice: Path, **overrides) -> TrialConfig:
    values = {"method": "pdd", "ipc": 1, "pipc": 10, "budget": "smoke",
              "data": {"source": str(cifar_slice), "val_per_class": 5}} | overrides
    return TrialConfig.model_validate(values)


@pytest.mark.parametrize("method", list(SPECS))
def test_every_method_runs_a_smoke_trial_and_writes_a_row_of_the_schema(method, cifar_slice, smoke_teacher, tmp_path):
    cfg = smoke_config(cifar_slice, method=method, init="real")
    [row] = run_trial(cfg, TrialOptions(results=tmp_path, teacher=smoke_teacher, device="cpu"))

    table = pq.read_table(tmp_path / f"{row['trial_id']}.parquet")
    assert table.schema.equals(SCHEMA, check_metadata=True)
    stored = table.to_pylist()[0]
    assert stored["schema_version"] == SCHEMA_VERSION
    assert stored["status"] == "ok" and stored["reason"] is None
    assert stored["method"] == method and stored["cell"] == "ipc=1,pipc=10"
    assert stored["eval_seeds"] == [0, 1] and len(stored["val_acc"]) == len(stored["test_acc"]) == 2
    assert all(0 <= acc <= 100 for acc in stored["val_acc"] + stored["test_acc"])
    assert stored["test_mean"] == pytest.approx(sum(stored["test_acc"]) / 2)
    assert len(stored["pipc_indices"]) == 10 * 10
    assert stored["config_hash"] == cfg.hash() and TrialConfig.model_validate_json(stored["config"]) == cfg
    assert stored["dataset_hash"] and stored["git_commit"] and stored["pdd_version"]
    assert (stored["teacher_hash"] is not None) == needs_teacher(cfg)
    if stored["teacher_hash"] is not None:
        assert 0.0 <= stored["teacher_agreement"] <= 1.0
    assert stored["seconds_distill"] >= 0 and stored["seconds_evaluate"] > 0
    synthetic = torch.load(stored["synthetic_path"], weights_only=True)
    assert synthetic["images"].shape == (10, 3, 32, 32) and synthetic["labels"].tolist() == list(range(10))
    assert (Path(stored["synthetic_path"]).parent / "synthetic.png").stat().st_size > 0


def test_the_shared_decoded_copy_is_kept_per_cache_dir(cifar_slice, tmp_path):
    first = trial_module.cached_dataset(str(cifar_slice), tmp_path / "a")
    other = trial_module.cached_dataset(str(cifar_slice), tmp_path / "b")
    assert list((tmp_path / "a").glob("images-*.pt")) and list((tmp_path / "b").glob("images-*.pt"))
    assert trial_module.cached_dataset(str(cifar_slice), tmp_path / "a") is first and other is not first
    assert torch.equal(first.train_images, other.train_images)


def test_pipc_indices_follow_the_subset_seed_and_pandas_reads_the_directory(cifar_slice, tmp_path):
    import pandas as pd

    [first] = run_trial(smoke_config(cifar_slice, method="random"), TrialOptions(results=tmp_path))
    [other] = run_trial(smoke_config(cifar_slice, method="random", subset_seed=1), TrialOptions(results=tmp_path))
    assert set(first["pipc_indices"]) != set(other["pipc_indices"])
    assert len(read_results(tmp_path)) == 2
    assert (tmp_path / ARTIFACTS).is_dir()
    frame = pd.read_parquet(tmp_path)  # artifacts beside the rows must not get in the way
    assert sorted(frame["subset_seed"]) == [0, 1]


def test_a_finished_trial_is_not_run_twice_and_a_killed_one_resumes(cifar_slice, tmp_path, monkeypatch):
    cfg = smoke_config(cifar_slice, method="dm", iterations=6)
    options = TrialOptions(results=tmp_path, checkpoint_every=2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trial_module, "score", killed)  # killed after distillation, before evaluation
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, options)
    monkeypatch.undo()
    checkpoints = list((tmp_path / ARTIFACTS).glob("*/checkpoints/dm.ckpt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0], weights_only=True)["iteration"] == 4

    [resumed] = run_trial(cfg, options)
    [fresh] = run_trial(cfg, TrialOptions(results=tmp_path / "fresh"))
    assert resumed["test_acc"] == fresh["test_acc"], "resuming must continue the same random stream"
    [again] = run_trial(cfg, options)
    assert again["finished_at"] == resumed["finished_at"], "a finished trial is returned, not rerun"


def test_a_nan_loss_fails_the_trial_with_a_reason_in_its_row(cifar_slice, tmp_path):
    cfg = smoke_config(cifar_slice, method="dm", lr_images=1e38)
    [row] = run_trial(cfg, TrialOptions(results=tmp_path))
    stored = read_results(tmp_path).to_pylist()[0]
    assert row["status"] == stored["status"] == "failed"
    assert "not finite" in stored["reason"] and "iteration" in stored["reason"]
    assert stored["test_acc"] is None


def test_a_built_row_reads_back_as_built_with_plain_strings_for_stage_and_status(tmp_path):
    cfg = TrialConfig(method="dm", pipc=None, data={"source": "fixture"})
    row = trial_row(cfg, "s_search_dm", "s", Stage.SEARCH, Status.FAILED, cfg.eval.primary, reason="diverged")
    write_rows(tmp_path, [row])
    [stored] = read_rows(tmp_path, "s_search_dm")
    assert {key: stored[key] for key in row} == row, "the finished_at a row is built with is the one Parquet stores"
    assert type(stored["stage"]) is str and type(stored["status"]) is str
    assert stored["cell"] == "ipc=1,pipc=all" and stored["config_hash"] == cfg.hash()


def test_a_teacher_of_another_architecture_than_the_evaluation_nets(cifar_slice, tmp_path):
    """The edge model need not be the DM/evaluation ConvNet, e.g. one without normalisation layers."""
    from pdd.config import TeacherConfig
    from pdd.teacher import save_teacher, train_teacher
    from pdd.trial import cached_dataset

    data = {"source": str(cifar_slice), "val_per_class": 5}
    plain = TeacherConfig(budget="smoke", data=data, model={"norm": "none"})
    path = tmp_path / "plain.pt"
    save_teacher(path, train_teacher(plain, cached_dataset(str(cifar_slice)), torch.device("cpu")))
    cfg = smoke_config(cifar_slice, method="dsv", teacher_model={"norm": "none"})
    [row] = run_trial(cfg, TrialOptions(results=tmp_path / "results", teacher=path))
    assert row["status"] == "ok" and row["teacher_hash"] is not None
    assert TrialConfig.model_validate_json(row["config"]).model.norm == "instance"
