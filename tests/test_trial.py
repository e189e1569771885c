"""A smoke trial end to end on a slice of the CIFAR-10 copy, its Parquet row, resume, and failure rows."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import pdd.evaluate as evaluate_module
import pdd.trial as trial_module
from pdd.config import TrialConfig
from pdd.hooks import DirStore, MemoryStore
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
    # the leakage audit: every image audited against the private images, T' left out
    assert stored["audit_images"] == 10 and stored["audit_excluded"] == len(stored["pipc_indices"])
    assert stored["audit_near_copies"] <= stored["audit_near_pixel"] and stored["audit_threshold_pixel"] > 0
    assert (Path(stored["synthetic_path"]).parent / "audit-pairs.pt").is_file()
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


def test_a_trial_judges_its_set_once_per_protocol_and_network_and_distils_once(cifar_slice, tmp_path, monkeypatch):
    distilled = []
    real_make = trial_module.MAKE["dm"]
    monkeypatch.setitem(trial_module.MAKE, "dm", lambda problem: distilled.append(1) or real_make(problem))
    cfg = smoke_config(cifar_slice, method="dm", init="real",
                       eval={"protocols": ["dc", "paper"], "models": ["convnet", "alexnet"], "epochs": 2, "seeds": 1})
    rows = run_trial(cfg, TrialOptions(results=tmp_path))
    assert distilled == [1]
    assert [(row["protocol"], row["eval_model"], row["eval_epochs"]) for row in rows] == [
        ("dc", "convnet", 2), ("dc", "alexnet", 2), ("paper", "convnet", 2), ("paper", "alexnet", 2)]
    assert {row["scored_by"] for row in rows} == {"trial"} and len({row["eval_config"] for row in rows}) == 4
    assert len({row["trial_id"] for row in rows}) == 1 and len({row["seconds_distill"] for row in rows}) == 1
    # SAM's two passes per step make a paper-protocol model twice a dc one's training; AlexNet costs more than ConvNet
    flops = {(row["protocol"], row["eval_model"]): row["flops_evaluate"] for row in rows}
    assert flops["paper", "convnet"] > flops["dc", "convnet"] and flops["dc", "alexnet"] > flops["dc", "convnet"]
    assert rows[0]["flops_distill"] > 0
    stored = read_results(tmp_path).to_pylist()
    assert sorted(row["eval_config"] for row in stored) == sorted(row["eval_config"] for row in rows)
    again = run_trial(cfg, TrialOptions(results=tmp_path))
    assert distilled == [1] and [row["test_acc"] for row in again] == [row["test_acc"] for row in rows]


def test_pdd_evaluate_stores_a_later_judgement_of_a_trials_set_beside_its_rows(cifar_slice, tmp_path, capsys):
    from pdd.cli import main
    from pdd.report.outcomes import read_rows_of, read_sweep_results

    cfg = smoke_config(cifar_slice, method="random", eval={"epochs": 2, "seeds": 1})
    [row] = run_trial(cfg, TrialOptions(results=tmp_path))
    args = ["evaluate", row["synthetic_path"], "--protocol", "dc", "--eval-epochs", "3", "--eval-seeds", "2",
            "--budget", "smoke"]
    assert main(args) == 0
    later = [stored for stored in read_rows_of(tmp_path) if stored["scored_by"] == "evaluate"]
    assert [(r["protocol"], r["eval_epochs"], r["eval_seeds"]) for r in later] == [("dc", 3, [0, 1])]
    assert later[0]["trial_id"] == row["trial_id"] and later[0]["pipc_indices"] == row["pipc_indices"]
    assert later[0]["config"] == row["config"], "the row still says how the set was made"
    # the main tables read only what the trial scored itself
    [sweep] = read_sweep_results(tmp_path)
    assert [r["scored_by"] for r in sweep.rows] == ["trial"]
    written = sorted(path.name for path in tmp_path.glob("*.parquet"))
    assert main(args) == 0, "a stored evaluation is not run again"
    assert sorted(path.name for path in tmp_path.glob("*.parquet")) == written
    capsys.readouterr()
    assert main(args + ["--data", str(tmp_path / "nowhere")]) != 0
    assert capsys.readouterr().err.strip().startswith("pdd: error: dataset not found")


def test_a_gpu_run_of_a_config_is_another_trial_than_its_cpu_run():
    from pdd.trial import trial_id

    cfg = TrialConfig(method="dm", data={"source": "fixture"})
    cpu, gpu = (trial_id(cfg, "s", Stage.SEARCH, "d" * 64, None, torch.device(name)) for name in ("cpu", "cuda:1"))
    assert cpu != gpu and gpu == trial_id(cfg, "s", Stage.SEARCH, "d" * 64, None, torch.device("cuda:0"))


def test_a_forced_rerun_trains_its_evaluation_models_again_instead_of_returning_their_checkpoint(
        cifar_slice, tmp_path, monkeypatch):
    cfg = smoke_config(cifar_slice, method="random", eval={"epochs": 2, "seeds": 2})
    run_trial(cfg, TrialOptions(results=tmp_path))
    trained, real_train = [], evaluate_module.train_on_synthetic
    monkeypatch.setattr(evaluate_module, "train_on_synthetic",
                        lambda *args, **kwargs: trained.append(1) or real_train(*args, **kwargs))
    run_trial(cfg, TrialOptions(results=tmp_path))
    assert trained == [], "a finished trial is returned as stored"
    run_trial(cfg, TrialOptions(results=tmp_path, force=True))
    assert len(trained) == 2, "one fresh model per evaluation seed"


def test_a_sweep_trial_killed_on_one_machine_resumes_on_another_from_its_artifact_checkpoints(cifar_slice, tmp_path,
                                                                                           monkeypatch):
    cfg = smoke_config(cifar_slice, method="dm", iterations=6)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trial_module, "score", killed)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, TrialOptions(results=tmp_path, checkpoint_every=2, store=MemoryStore()))  # Tune's store
    monkeypatch.undo()
    [mirrored] = (tmp_path / ARTIFACTS).glob("*/checkpoints/dm.ckpt")
    assert torch.load(mirrored, weights_only=True)["iteration"] == 4

    resumed_from = []
    real_load = DirStore.load
    monkeypatch.setattr(DirStore, "load", lambda self, name: resumed_from.append(name) or real_load(self, name))
    [resumed] = run_trial(cfg, TrialOptions(results=tmp_path, checkpoint_every=2, store=MemoryStore()))  # new Tune
    monkeypatch.undo()
    [fresh] = run_trial(cfg, TrialOptions(results=tmp_path / "fresh"))
    assert "dm" in resumed_from and resumed["test_acc"] == fresh["test_acc"], "the same stream, from iteration 4"
    assert not list(tmp_path.glob(f"{ARTIFACTS}/*/checkpoints/*.ckpt")), "a trial with rows leaves no checkpoint"
