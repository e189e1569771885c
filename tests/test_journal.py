"""The sweep's Optuna journal (runner.journal) and `pdd sweep dashboard` (runner.dashboard), without a Ray cluster:
the journal is written from constructed trial ends, from rows written as trials write them, and through the Tune
callback's own entry point; the multi-node tests in test_runner check it after real sweeps."""

from __future__ import annotations

import json
import pickle
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import optuna
import pyarrow.fs as pafs
import pytest
from dashboard_fixtures import dashboard, free_port, stop
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pdd.cli import main
from pdd.config import TrialConfig
from pdd.results import Stage, Status, read_results, trial_row, write_rows
from pdd.runner.journal import Finished, Journal, JournalCallback, mirror_rows
from pdd.runner.storage import JOURNAL_FILE, prepare
from pdd.sweep import load_sweep

SPEC = """\
name: watched
budget: smoke
grid:
  - {ipc: [1], pipc: [10, 50]}
methods:
  dm: {method: dm, init: [noise, real]}
  pdd: {method: pdd, alpha: {low: 1.0e-3, high: 1.0}, gamma: {low: 1.0e-4, high: 0.1}, init: noise}
  random: {method: random}
search: {trials: 3}
confirm: {subset_seeds: [0, 1]}
"""
SEARCH_STUDIES = ["dm ipc=1,pipc=10", "dm ipc=1,pipc=50", "pdd ipc=1,pipc=10", "pdd ipc=1,pipc=50"]
CONFIRM_STUDIES = [f"{label} ipc=1,pipc={pipc} confirm" for label in ("dm", "pdd", "random") for pipc in (10, 50)]


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "watched.yaml").write_text(SPEC)
    return load_sweep(tmp_path / "watched.yaml")


def values(spec, label: str, pipc: int, **searched) -> dict:
    return spec.trial_values(label, 1, pipc) | searched


def studies_of(path: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = JournalStorage(JournalFileBackend(str(path)))
    return {summary.study_name: optuna.load_study(study_name=summary.study_name, storage=storage).trials
            for summary in optuna.get_all_study_summaries(storage)}


def test_the_journal_holds_one_study_per_pdd_study_and_confirm_cell_and_adds_each_trial_once(spec, tmp_path):
    path = tmp_path / JOURNAL_FILE
    journal = Journal(path, spec)
    ends = [
        Finished("dm-noise", Stage.SEARCH, values(spec, "dm", 10, init="noise"), 30.0, 1.5),
        Finished("dm-real", Stage.SEARCH, values(spec, "dm", 10, init="real"), 25.0, 0.5),
        Finished("pdd-paper", Stage.SEARCH, values(spec, "pdd", 10, alpha=0.1, gamma=0.001), 40.0, 2.0),
        Finished("pdd-nan", Stage.SEARCH, values(spec, "pdd", 10, alpha=0.5, gamma=0.05), None, reason="diverged"),
        Finished("dm-c0", Stage.CONFIRM, values(spec, "dm", 10, init="noise", subset_seed=0), 31.0),
        Finished("dm-c1", Stage.CONFIRM, values(spec, "dm", 10, init="noise", subset_seed=1), 29.0),
        Finished("random-c0", Stage.CONFIRM, values(spec, "random", 50, subset_seed=0), 12.0),
    ]
    assert [journal.record(end) for end in ends] == [True] * 7
    assert not journal.record(Finished("random-s", Stage.SEARCH, values(spec, "random", 10), 10.0)), \
        "random searches nothing, so it has no search study"

    # pdd at pipc 50 errors, and the resumed sweep's rerun of the same trial ends ok
    errored = Finished("pdd-50", Stage.SEARCH, values(spec, "pdd", 50, alpha=0.1, gamma=0.001), None)
    rerun = Finished("pdd-50", Stage.SEARCH, values(spec, "pdd", 50, alpha=0.1, gamma=0.001), 35.0)
    assert journal.record(errored) and journal.record(rerun)
    assert not journal.record(errored) and not journal.record(rerun), "after its ok run, nothing more of it"

    size = path.stat().st_size
    again = Journal(path, spec)  # the next driver run opens it again and hears of the same trials
    assert not any(again.record(end) for end in [*ends, errored, rerun])
    assert path.stat().st_size == size, "reopening and repeating wrote nothing"

    found = studies_of(path)
    assert sorted(found) == sorted(SEARCH_STUDIES + CONFIRM_STUDIES)
    assert {name: len(trials) for name, trials in found.items()} == dict.fromkeys(found, 0) | {
        "dm ipc=1,pipc=10": 2, "pdd ipc=1,pipc=10": 2, "pdd ipc=1,pipc=50": 2, "dm ipc=1,pipc=10 confirm": 2,
        "random ipc=1,pipc=50 confirm": 1}
    dm = found["dm ipc=1,pipc=10"]
    assert [(t.params, t.value, t.state, t.user_attrs) for t in dm] == [
        ({"init": "noise"}, 30.0, TrialState.COMPLETE, {"pdd_trial_id": "dm-noise", "val_std": 1.5}),
        ({"init": "real"}, 25.0, TrialState.COMPLETE, {"pdd_trial_id": "dm-real", "val_std": 0.5})]
    assert dm[0].distributions == {"init": CategoricalDistribution(["noise", "real"])}
    pdd = found["pdd ipc=1,pipc=10"]
    assert pdd[0].distributions == {"alpha": FloatDistribution(1e-3, 1.0, log=True),
                                    "gamma": FloatDistribution(1e-4, 0.1, log=True)}
    assert [(t.params, t.state, t.value) for t in pdd] == [
        ({"alpha": 0.1, "gamma": 0.001}, TrialState.COMPLETE, 40.0),
        ({"alpha": 0.5, "gamma": 0.05}, TrialState.FAIL, None)]
    assert pdd[1].user_attrs == {"pdd_trial_id": "pdd-nan", "reason": "diverged"}
    assert [t.state for t in found["pdd ipc=1,pipc=50"]] == [TrialState.FAIL, TrialState.COMPLETE]
    confirmed = found["dm ipc=1,pipc=10 confirm"]
    assert [t.params for t in confirmed] == [{"init": "noise", "subset_seed": 0}, {"init": "noise", "subset_seed": 1}]
    assert confirmed[0].distributions["subset_seed"] == CategoricalDistribution([0, 1])
    assert [t.params for t in found["random ipc=1,pipc=50 confirm"]] == [{"subset_seed": 0}]

    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="pdd ipc=1,pipc=10", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.best_value == 40.0
    assert study.user_attrs == {"sweep": "watched", "stage": "search", "method": "pdd", "cell": "ipc=1,pipc=10"}
    assert study.metric_names == ["val_mean"]


def write_sweep_rows(spec, root: Path) -> None:
    """Rows as trials write them (pdd.results), two hours apart, plus ones the journal leaves out."""
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    made = [("dm", 10, {"init": "real"}, Stage.SEARCH, 28.0), ("dm", 10, {"init": "noise"}, Stage.SEARCH, 33.0),
            ("dm", 50, {"init": "noise"}, Stage.SEARCH, None), ("pdd", 50, {"alpha": 0.1, "gamma": 0.001},
                                                                Stage.SEARCH, 41.0),
            ("dm", 10, {"init": "noise", "subset_seed": 1}, Stage.CONFIRM, 32.0),
            ("random", 10, {"subset_seed": 0}, Stage.CONFIRM, 15.0)]
    for k, (label, pipc, searched, stage, val) in enumerate(made):
        cfg = TrialConfig.model_validate(values(spec, label, pipc, **searched))
        fields = ({"val_mean": val, "val_std": 1.0} if val is not None else {"reason": "DivergedError: nan"}) | {
            "seconds_load": 60.0, "seconds_distill": 1200.0, "seconds_evaluate": 540.0}
        row = trial_row(cfg, f"row{k}", spec.name, stage, Status.OK if val is not None else Status.FAILED,
                        cfg.eval.primary, **fields)
        write_rows(root, [row | {"finished_at": start + timedelta(hours=2 * k)}])
    cfg = TrialConfig.model_validate(values(spec, "dm", 10, init="noise"))
    write_rows(root, [trial_row(cfg, "other", "another-sweep", Stage.SEARCH, Status.OK, cfg.eval.primary,
                                val_mean=50.0)])
    write_rows(root, [trial_row(cfg, "local", spec.name, Stage.TRIAL, Status.OK, cfg.eval.primary, val_mean=50.0)])


def test_a_driver_run_adds_the_rows_the_journal_lacks_with_their_times(spec, tmp_path):
    root = Path(prepare(spec, str(tmp_path)))
    write_sweep_rows(spec, root)
    rows = read_results(root).to_pylist()
    assert mirror_rows(str(root), spec, rows) == 6
    assert mirror_rows(str(root), spec, rows) == 0, "a second driver run adds none of them again"

    found = studies_of(root / JOURNAL_FILE)
    assert {name: [t.state.name for t in trials] for name, trials in found.items() if trials} == {
        "dm ipc=1,pipc=10": ["COMPLETE", "COMPLETE"], "dm ipc=1,pipc=50": ["FAIL"],
        "pdd ipc=1,pipc=50": ["COMPLETE"], "dm ipc=1,pipc=10 confirm": ["COMPLETE"],
        "random ipc=1,pipc=10 confirm": ["COMPLETE"]}
    real, noise = found["dm ipc=1,pipc=10"]
    assert (real.params, real.value, noise.params, noise.value) == ({"init": "real"}, 28.0, {"init": "noise"}, 33.0)
    ended = datetime(2025, 1, 1, 12, tzinfo=UTC).astimezone().replace(tzinfo=None)
    assert (real.datetime_start, real.datetime_complete) == (ended - timedelta(minutes=30), ended)
    assert found["dm ipc=1,pipc=50"][0].user_attrs == {"pdd_trial_id": "row2", "reason": "DivergedError: nan"}


def test_the_tune_callback_records_trial_ends_beside_the_trials_own_path_and_pickles_without_them(spec, tmp_path):
    callback = JournalCallback(spec)
    trial_dir = tmp_path / "moved" / "_tune" / "sweep" / "trial_0001"

    def trial(config: dict, result: dict) -> SimpleNamespace:
        return SimpleNamespace(config=config, last_result=result, path=str(trial_dir),
                               storage=SimpleNamespace(storage_filesystem=pafs.LocalFileSystem()))

    search = {"stage": "search", "trial": values(spec, "pdd", 10, alpha=0.1, gamma=0.001)}
    ok = {"pdd_trial_id": "t-ok", "status": "ok", "val_mean": 37.5, "val_std": 1.0,
          "trial_function": {"started_at": 1_700_000_000.0, "ended_at": 1_700_000_090.0}}
    callback.on_trial_complete(3, [], trial(search, ok))
    confirm = {"stage": "confirm", "trial": values(spec, "random", 10, subset_seed=1)}
    callback.on_trial_error(4, [], trial(confirm, {"pdd_trial_id": "t-err", "status": "failed"}))
    callback.on_trial_error(5, [], trial(confirm, {"phase": "distill", "step": 3}))  # died before it had an id
    callback.on_trial_complete(6, [], trial({"stage": "teacher", "teacher": {}}, {}))
    restored = pickle.loads(pickle.dumps(callback))
    assert restored.journals == {} and restored.spec == spec
    restored.on_trial_complete(7, [], trial(search, ok))  # a resumed driver hears of it again

    found = studies_of(tmp_path / "moved" / JOURNAL_FILE)
    [paper] = found["pdd ipc=1,pipc=10"]
    assert (paper.params, paper.value, paper.user_attrs) == (
        {"alpha": 0.1, "gamma": 0.001}, 37.5, {"pdd_trial_id": "t-ok", "val_std": 1.0})
    assert (paper.datetime_complete - paper.datetime_start).total_seconds() == 90.0
    assert [(t.state, t.params) for t in found["random ipc=1,pipc=10 confirm"]] == [
        (TrialState.FAIL, {"subset_seed": 1})]
    assert sum(len(trials) for trials in found.values()) == 2


def test_the_dashboard_serves_every_study_with_its_trials_only_to_its_token_and_stops_by_pid(spec, tmp_path):
    root = Path(prepare(spec, str(tmp_path)))
    write_sweep_rows(spec, root)
    mirror_rows(str(root), spec, read_results(root).to_pylist())
    port = free_port()
    with dashboard(root, port) as board:
        assert board.base == f"http://127.0.0.1:{port}"
        counts = board.studies()
        assert sorted(counts) == sorted(SEARCH_STUDIES + CONFIRM_STUDIES)
        assert {name: dict(states) for name, states in counts.items() if states} == {
            "dm ipc=1,pipc=10": {"Complete": 2}, "dm ipc=1,pipc=50": {"Fail": 1}, "pdd ipc=1,pipc=50": {"Complete": 1},
            "dm ipc=1,pipc=10 confirm": {"Complete": 1}, "random ipc=1,pipc=10 confirm": {"Complete": 1}}

        assert board.get("/api/studies")[0] == 401
        assert board.get("/api/studies", {"Authorization": "Bearer not-the-token"})[0] == 403
        assert board.get("/api/studies?token=not-the-token")[0] == 403
        assert board.get("/api/studies", {"Cookie": f"pdd_dashboard_{port}=not-the-token"})[0] == 403

        status, headers, _ = board.get(f"/?token={board.token}")  # the URL printed: the page, and a cookie
        assert (status, headers["Location"]) == (302, f"{board.base}/dashboard")
        cookie = headers["Set-Cookie"]
        assert cookie == f"pdd_dashboard_{port}={board.token}; HttpOnly; SameSite=Strict; Path=/"
        status, _, page = board.get("/dashboard", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and b"<html" in page.lower()
        status, _, body = board.get("/api/studies", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and len(json.loads(body)["study_summaries"]) == 10
        assert board.get("/api/studies/0", {"Cookie": cookie.split(";")[0]}, method="DELETE")[0] == 405
        assert len(board.studies()) == 10, "nothing was deleted"
        stop(board)


def test_the_dashboard_command_says_in_one_line_what_keeps_it_from_starting(spec, tmp_path, capsys):
    assert main(["sweep", "dashboard", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"pdd: error: no sweep at {tmp_path} (no _sweep.json)")
    root = Path(prepare(spec, str(tmp_path)))
    assert main(["sweep", "dashboard", str(root)]) == 2
    assert f"no Optuna journal at {root / JOURNAL_FILE}" in capsys.readouterr().err
    Journal(root / JOURNAL_FILE, spec)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sweep", "dashboard", str(root), "--port", str(port)]) == 2
        assert capsys.readouterr().err.strip() == f"pdd: error: port {port} on 127.0.0.1 is taken; choose another " \
                                                  f"with --port"
    assert main(["sweep", "dashboard", str(root), "--host", "0.0.0.0"]) == 2
    assert capsys.readouterr().err == "pdd: error: --host 0.0.0.0 is not a loopback address, so others could " \
                                      "reach the dashboard; pass --allow-remote to listen there anyway\n"
    assert main(["sweep", "dashboard", str(root), "--port", "70000"]) == 2
    assert capsys.readouterr().err == "pdd: error: Invalid value for '--port': Input should be less than or equal " \
                                      "to 65535\n"
