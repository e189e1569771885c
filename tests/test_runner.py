"""Sweeps on Ray Tune: the searcher on its own, then a real multi-node Ray cluster on this machine.

The cluster is a head (no CPUs, so trials run on workers) and two worker nodes with one CPU and one logical GPU
each, all joined on 127.0.0.1, with token auth. Each node is one `ray start --block` process; the processes of
its tree are the node. Every PID seen in a tree is recorded and stopped by PID when the tests end.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from dashboard_fixtures import dashboard, stop
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pdd.config import TeacherConfig, TrialConfig
from pdd.errors import SweepError
from pdd.results import Stage, Status, read_results, trial_row
from pdd.runner.searcher import SweepSearcher
from pdd.runner.storage import JOURNAL_FILE, export
from pdd.runner.trainable import record_failure
from pdd.sweep import load_sweep
from pdd.trial import TrialOptions, run_trial

RAY = Path(sys.executable).with_name("ray")


def write_sweep(path: Path, name: str, body: str, data: Path | None = None, teacher: Path | None = None,
                iterations: int = 4, checkpoint_every: int = 100) -> Path:
    path.write_text(f"""\
name: {name}
budget: smoke
data: {{source: {data or "cifar10"}, val_per_class: 5}}
trial: {{iterations: {iterations}, eval: {{epochs: 1, seeds: 1, max_images: 50}}}}
teacher: {teacher or "auto"}
resources: {{cpu: 1, gpu: 0.5}}
max_failures: 2
checkpoint_every: {checkpoint_every}
""" + body)
    return path


SEARCHED = """\
grid:
  - {ipc: [1], pipc: [10, 50]}
methods:
  dm: {method: dm, init: [noise, real]}
  pdd: {method: pdd, alpha: {low: 1.0e-3, high: 1.0}, gamma: {low: 1.0e-4, high: 0.1}, init: noise}
search: {trials: 3, max_concurrent: 1}
confirm: {subset_seeds: [0, 1]}
"""


# ---------------------------------------------------------------------------------------------------------------
# The searcher and the confirm stage's choice, without a cluster


def test_the_searcher_starts_every_study_at_the_paper_point_caps_it_finishes_and_pickles(tmp_path):
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", SEARCHED))
    searcher = SweepSearcher(spec)

    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert searcher.suggest("t4") is None, "every study has its one trial in flight, and nothing is to confirm yet"
    assert {suggestion["stage"] for suggestion in first} == {"search"}
    assert [(c["method"], c["pipc"], c.get("alpha"), c.get("gamma"), c["init"]) for c in
            (suggestion["trial"] for suggestion in first)] == [
        ("dm", 10, None, None, "noise"), ("dm", 50, None, None, "noise"),
        ("pdd", 10, 0.1, 0.001, "noise"), ("pdd", 50, 0.01, 0.001, "noise")]

    clone = pickle.loads(pickle.dumps(searcher))
    for trial_id in ("t0", "t2"):
        searcher.on_trial_complete(trial_id, {"val_mean": 20.0})
        clone.on_trial_complete(trial_id, {"val_mean": 20.0})
    again = [searcher.suggest("t5"), searcher.suggest("t6")]
    assert again == [clone.suggest("t5"), clone.suggest("t6")], "a restored searcher suggests what the original would"

    suggested = first + again
    for n in range(7, 40):
        for trial_id in list(searcher.running):
            searcher.on_trial_complete(trial_id, {"val_mean": float(n)})
        suggestion = searcher.suggest(f"t{n}")
        if suggestion == SweepSearcher.FINISHED:
            break
        suggested.append(suggestion)
    assert suggestion == SweepSearcher.FINISHED
    search = [s["trial"] for s in suggested if s["stage"] == "search"]
    confirm = [s["trial"] for s in suggested if s["stage"] == "confirm"]
    assert Counter((c["method"], c["pipc"]) for c in search) == {("dm", 10): 2, ("dm", 50): 2, ("pdd", 10): 3,
                                                                 ("pdd", 50): 3}
    assert sorted(c["init"] for c in search if c["method"] == "dm") == ["noise"] * 2 + ["real"] * 2
    assert sorted((c["method"], c["pipc"], c["subset_seed"]) for c in confirm) == sorted(
        (method, pipc, seed) for method in ("dm", "pdd") for pipc in (10, 50) for seed in (0, 1))
    assert len(suggested) == searcher.most_trials


def test_a_study_is_confirmed_once_its_search_ends_with_its_best_validation_config(tmp_path):
    body = SEARCHED.replace("pipc: [10, 50]", "pipc: [10]").replace("search:", "  random: {method: random}\nsearch:")
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", body))
    searcher = SweepSearcher(spec)

    def stage_method_init(suggestion: dict) -> tuple:
        return suggestion["stage"], suggestion["trial"]["method"], suggestion["trial"].get("init")

    dm_noise, pdd_paper = searcher.suggest("dm-noise"), searcher.suggest("pdd-1")
    fillers = [searcher.suggest("random-0"), searcher.suggest("random-1")]
    assert [stage_method_init(s) for s in fillers] == [("confirm", "random", None)] * 2, \
        "a slot no study can use takes an unsearched entry's confirm trial"
    assert searcher.suggest("waiting") is None

    searcher.on_trial_complete("dm-noise", {"val_mean": 30.0})
    dm_real = searcher.suggest("dm-real")
    assert stage_method_init(dm_real) == ("search", "dm", "real")
    assert searcher.suggest("waiting") is None, "dm is not confirmed while one of its trials runs"
    searcher.on_trial_complete("dm-real", {"val_mean": 25.0})
    confirmed = [searcher.suggest("dm-confirm-0"), searcher.suggest("dm-confirm-1")]
    assert [stage_method_init(s) for s in confirmed] == [("confirm", "dm", "noise")] * 2, "the best val_mean wins"
    assert [s["trial"]["subset_seed"] for s in confirmed] == [0, 1]
    assert dm_noise["trial"]["init"] == "noise" and pdd_paper["stage"] == "search"

    searcher.on_trial_complete("pdd-1", None, error=True)
    searcher.on_trial_complete("pdd-2", {"status": "nan"})  # not started: a stray completion changes nothing
    for trial_id in ("pdd-2", "pdd-3"):
        assert searcher.suggest(trial_id)["stage"] == "search"
        searcher.on_trial_complete(trial_id, {"status": "nan", "pdd_trial_id": trial_id})
    assert searcher.suggest("end") == SweepSearcher.FINISHED, "a study without an ok trial has nothing to confirm"


def stored_row(spec, values: dict, val_mean: float, teacher_hash: str | None, stage: Stage = Stage.SEARCH) -> dict:
    """The primary row a trial with these TrialConfig values would have written (pdd.results' one row builder)."""
    cfg = TrialConfig.model_validate(values)
    return trial_row(cfg, f"{cfg.method}-{val_mean}-{teacher_hash}", spec.name, stage, Status.OK,
                     cfg.eval.runs()[0], val_mean=val_mean, teacher_hash=teacher_hash)


def test_a_searcher_for_a_directory_of_rows_starts_each_study_from_its_own_rows(tmp_path):
    """A sweep continued on another machine from its committed rows, without Tune's saved experiment."""
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", SEARCHED.replace("pipc: [10, 50]", "pipc: [10]")))
    first = SweepSearcher(spec)
    dm_noise, pdd_paper = first.suggest("a")["trial"], first.suggest("b")["trial"]
    first.on_trial_complete("a", {"val_mean": 30.0})
    dm_real = first.suggest("c")["trial"]
    pdd_free = TrialConfig.model_validate(pdd_paper).model_dump() | {"alpha": 0.5, "gamma": 0.01}
    rows = [stored_row(spec, dm_noise, 30.0, None), stored_row(spec, dm_real, 35.0, None),
            stored_row(spec, pdd_paper, 20.0, "teacher-1"),
            stored_row(spec, pdd_free, 40.0, "teacher-0"),  # an earlier teacher's: not this study's row
            stored_row(spec, dm_real | {"iterations": 7}, 50.0, None)]  # a config this sweep does not run

    searcher = SweepSearcher(spec, rows=rows, teacher_hash="teacher-1")
    assert searcher.started == {"dm ipc=1,pipc=10": 2, "pdd ipc=1,pipc=10": 1}
    assert searcher.best["dm ipc=1,pipc=10"] == (35.0, dm_real)
    confirm = [searcher.suggest(f"t{n}") for n in range(3)]
    assert [(s["stage"], s["trial"]["method"]) for s in confirm[:1]] == [("search", "pdd")], \
        "pdd's study goes on with TPE: its paper point is stored, so it is not run again"
    assert (confirm[0]["trial"]["alpha"], confirm[0]["trial"]["gamma"]) != (0.1, 0.001)
    assert [(s["stage"], s["trial"]["init"], s["trial"]["subset_seed"]) for s in confirm[1:]] == [
        ("confirm", "real", 0), ("confirm", "real", 1)], "dm's search is complete: its best stored config is confirmed"


def test_confirm_trials_go_draw_by_draw_so_an_early_stop_leaves_complete_paired_draws(tmp_path):
    body = "\n".join(line for line in SEARCHED.splitlines() if not line.startswith("  pdd:"))
    body = body.replace("pipc: [10, 50]", "pipc: [10]").replace("search:", "  random: {method: random}\nsearch:")
    body = body.replace("subset_seeds: [0, 1]", "subset_seeds: [0, 1, 2]")
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", body))
    first = SweepSearcher(spec)
    dm_noise = first.suggest("a")["trial"]
    first.on_trial_complete("a", {"val_mean": 30.0})
    dm_real = first.suggest("b")["trial"]
    rows = [stored_row(spec, dm_noise, 30.0, None), stored_row(spec, dm_real, 35.0, None)]

    searcher = SweepSearcher(spec, rows=rows)
    suggested = [searcher.suggest(f"t{n}") for n in range(6)]
    confirm = [(s["stage"], s["trial"]["method"], s["trial"]["subset_seed"]) for s in suggested]
    assert searcher.suggest("end") == SweepSearcher.FINISHED
    assert confirm == [("confirm", method, seed) for seed in (0, 1, 2) for method in ("random", "dm")]


def test_an_export_carries_rows_spec_teacher_journal_sets_and_checkpoints_in_flight_but_not_tunes_state(tmp_path):
    root = tmp_path / "results" / "s"
    files = ["_sweep.json", "_teacher.pt", "_optuna-journal.log", "s_search_dm_1.parquet", "_driver.json",
             "_tune/sweep/experiment_state.json", "_artifacts/t1/synthetic.pt", "_artifacts/t1/audit-pairs.pt",
             "_artifacts/t2/checkpoints/distill.ckpt", ".s_search_dm_2.parquet.123.tmp",
             "_full_data/0123456789ab-dc-convnet.json"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    assert export(str(root), tmp_path / "copy") == 8
    assert sorted(str(path.relative_to(tmp_path / "copy")) for path in (tmp_path / "copy").rglob("*")
                  if path.is_file()) == sorted(files[:4] + files[6:9] + files[10:])
    assert (tmp_path / "copy" / "_teacher.pt").read_bytes() == b"_teacher.pt"
    (root / files[8]).unlink()  # t2 finished, dropping its checkpoint
    assert export(str(root), tmp_path / "copy") == 7
    assert not (tmp_path / "copy" / files[8]).exists(), "a finished trial's checkpoint does not linger in the copy"
    with pytest.raises(SweepError, match="no sweep at"):
        export(str(tmp_path / "copy" / "_artifacts"), tmp_path / "elsewhere")


@pytest.mark.parametrize("outcome", ["ready", "failed"])
def test_trials_that_need_the_teacher_wait_for_its_trial_and_never_start_if_it_fails(tmp_path, outcome):
    body = SEARCHED.replace("pipc: [10, 50]", "pipc: [10]").replace("search:", "  random: {method: random}\nsearch:")
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", body))
    searcher = SweepSearcher(spec, TeacherConfig(budget="smoke", data=spec.data))

    teacher = searcher.suggest("teacher")
    assert teacher == {"stage": "teacher", "teacher": TeacherConfig(budget="smoke", data=spec.data).model_dump()}
    while_training = [searcher.suggest(f"t{k}") for k in range(4)]
    assert [(s["stage"], s["trial"]["method"]) for s in while_training[:3]] == [
        ("search", "dm"), ("confirm", "random"), ("confirm", "random")]
    assert while_training[3] is None, "dm has its one trial in flight and pdd waits for the teacher"
    searcher.on_trial_complete("t0", {"val_mean": 20.0})
    assert searcher.suggest("t4")["trial"]["method"] == "dm"

    restored = pickle.loads(pickle.dumps(searcher))
    for each in (searcher, restored):
        each.on_trial_complete("teacher", None if outcome == "failed" else {}, error=outcome == "failed")
        each.on_trial_complete("t4", {"val_mean": 10.0})
    rest = []
    for k in range(5, 30):
        suggestion = searcher.suggest(f"t{k}")
        assert suggestion == restored.suggest(f"t{k}"), "a restored searcher knows how the teacher trial ended"
        if suggestion == SweepSearcher.FINISHED:
            break
        rest.append((suggestion["stage"], suggestion["trial"]["method"]))
        searcher.on_trial_complete(f"t{k}", {"val_mean": float(k)})
        restored.on_trial_complete(f"t{k}", {"val_mean": float(k)})
    assert suggestion == SweepSearcher.FINISHED
    pdd = [stage for stage, method in rest if method == "pdd"]
    assert pdd == (["search"] * 3 + ["confirm"] * 2 if outcome == "ready" else [])
    assert [stage for stage, method in rest if method == "dm"] == ["confirm", "confirm"]
    assert len(rest) + 5 == searcher.most_trials - (3 + 2 if outcome == "failed" else 0)


def test_a_trial_that_raises_leaves_a_failed_row_that_its_retry_replaces(cifar_slice, tmp_path):
    cfg = TrialConfig(method="random", pipc=10, budget="smoke", eval={"epochs": 1, "seeds": 1, "max_images": 50},
                      data={"source": str(cifar_slice), "val_per_class": 5})
    options = TrialOptions(results=tmp_path, sweep_id="s", stage=Stage.SEARCH)
    record_failure(cfg, options, RuntimeError("node on fire"))
    [failed] = read_results(tmp_path).to_pylist()
    assert (failed["status"], failed["reason"], failed["stage"]) == ("failed", "RuntimeError: node on fire", "search")

    [retried] = run_trial(cfg, options)
    assert retried["trial_id"] == failed["trial_id"]
    assert [row["status"] for row in read_results(tmp_path).to_pylist()] == ["ok"]


def test_overhead_reads_the_driver_record_and_each_trials_final_tune_result(tmp_path, capsys):
    from pdd.cli import main
    from pdd.runner.driver_log import save_driver_run

    def results(trial: str, *lines: dict | str) -> None:
        folder = tmp_path / "_tune" / "sweep" / trial
        folder.mkdir(parents=True)
        (folder / "result.json").write_text("".join(
            (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))

    results("a", {"phase": "distill"}, {"trial_function": {"started_at": 1010.0, "ended_at": 1040.0}})
    results("b", {"trial_function": {"started_at": 1012.0, "ended_at": 1050.0}}, '{"half a li')
    results("c", {"trial_function": {"started_at": 1041.0, "ended_at": 1080.0}})
    results("d", {"trial_function": {"started_at": 1055.0, "ended_at": 1090.0}})
    results("failed", {"phase": "distill", "step": 3})  # no final result, so no timestamps: not counted
    assert main(["sweep", "overhead", str(tmp_path)]) == 2
    assert "no finished driver run recorded" in capsys.readouterr().err

    save_driver_run(str(tmp_path), {"started_at": 1000.0, "ended_at": 1100.0, "slots": 2,
                                    "marks": {"ray_ready": 1005.0, "trials_started": 1006.0}})
    out = tmp_path / "overhead.json"
    assert main(["sweep", "overhead", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["trials"], report["busy_slot_seconds"], report["available_slot_seconds"]) == (4, 142, 200)
    assert report["outside"] == [10, 12, 1, 5] and report["utilisation"] == pytest.approx(0.71)
    assert report["timeline"] == {"ray_ready": 5.0, "trials_started": 6.0}
    assert "71.0%" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# A local multi-node cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of root and all its descendants, from /proc; the start time tells a reused PID apart."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        started[pid] = fields[19]
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in started:
            tree.append((pid, started[pid]))
        todo += children.get(pid, [])
    return tree


def still_running(pid: int, started: str) -> bool:
    """Whether the process is alive: not gone, not a zombie (it has exited; PID 1 may not have reaped it yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


class LocalCluster:
    """Ray nodes on this machine, each a `ray start --block` process; stopped by PID, never by `ray stop`."""

    def __init__(self) -> None:
        # Short and private: Ray's socket paths must fit in 107 bytes, and /tmp/ray belongs to other Ray sessions.
        self.temp = Path(tempfile.mkdtemp(prefix="pddray-", dir="/tmp"))
        self.env = os.environ | {
            "PATH": f"{RAY.parent}{os.pathsep}{os.environ['PATH']}",  # a job's `python` is this venv's
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_urlsafe(24),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.nodes: list[subprocess.Popen] = []
        self.seen: set[tuple[int, str]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def job_server(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self) -> None:
        # Lost nodes are noticed within seconds, not the default half minute.
        fast = '{"health_check_period_ms": 1000, "health_check_failure_threshold": 3}'
        self._start("--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                    "--num-cpus=0", "--num-gpus=0", f"--system-config={fast}")

    def add_worker(self) -> None:
        self._start(f"--address={self.address}", "--num-cpus=1", "--num-gpus=1")

    def _start(self, *args: str) -> None:
        try:
            self._start_once(*args)
        except RuntimeError:
            # On a loaded 2-core machine a joining node's first GCS call can pass Ray's 30 s deadline, and the node
            # exits: start it once more before the fixture gives up.
            self.kill(self.nodes.pop())
            self._start_once(*args)

    def _start_once(self, *args: str) -> None:
        name = f"node{len(self.nodes)}"
        ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port")]
        log = self.temp / f"{name}.log"
        node = subprocess.Popen(
            [str(RAY), "start", *args, "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp / name}", *ports,
             "--disable-usage-stats", "--block"], env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.nodes.append(node)
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():  # printed once the node has joined
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node {name} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        self.remember()

    def live_nodes(self) -> list[subprocess.Popen]:
        return [node for node in self.nodes if node.poll() is None]

    def remember(self) -> None:
        for node in self.nodes:
            self.seen.update(process_tree(node.pid))

    def node_of(self, pid: int) -> subprocess.Popen | None:
        return next((node for node in self.live_nodes() if pid in {p for p, _ in process_tree(node.pid)}), None)

    def kill(self, node: subprocess.Popen) -> None:
        """A node dies at once, like a machine losing power: SIGKILL to every process of its tree."""
        tree = process_tree(node.pid)
        self.seen.update(tree)
        for pid, started in tree:
            if still_running(pid, started):
                os.kill(pid, signal.SIGKILL)
        node.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to each node's `ray start --block` (it stops its node), then SIGKILL to any process left."""
        self.remember()
        for node in self.live_nodes():
            node.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
        deadline = time.monotonic() + 15
        while any(still_running(*process) for process in self.seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid, started in self.seen:
            if still_running(pid, started):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster()
    try:
        cluster.start_head()
        cluster.add_worker()
        cluster.add_worker()
        yield cluster
    finally:
        cluster.stop()
    assert not any(still_running(*process) for process in cluster.seen), "a Ray process outlived the tests"


def pdd(cluster: LocalCluster, *args: str, log: Path) -> subprocess.Popen:
    """`python -m pdd ARGS` as its own process (a driver), output to log."""
    return subprocess.Popen([sys.executable, "-m", "pdd", *args], env=cluster.env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, log.read_text()[-3000:]


def rows_of(directory: Path) -> list[dict]:
    rows = read_results(directory).to_pylist()
    assert len({row["trial_id"] for row in rows}) == len(rows)
    return rows


def journal_ids(root: Path) -> list[str]:
    """pdd's trial id of every trial in the sweep's Optuna journal, over all its studies."""
    storage = JournalStorage(JournalFileBackend(str(root / JOURNAL_FILE)))
    return [trial.user_attrs["pdd_trial_id"] for study in storage.get_all_studies()
            for trial in optuna.load_study(study_name=study.study_name, storage=storage).trials]


def tune_results(experiment: Path) -> list[dict]:
    """Every result Tune recorded for the trials of an experiment, in order per trial (a line being written is left)."""
    return [json.loads(line) for path in sorted(experiment.glob("*/result.json"))
            for line in path.read_text().split("\n")[:-1]]


@pytest.mark.ray
def test_a_sweep_on_a_multi_node_cluster_writes_exactly_its_rows(cluster, cifar_slice, smoke_teacher, tmp_path):
    body = (SEARCHED.replace("pipc: [10, 50]", "pipc: [5, 10]").replace("trials: 3", "trials: 2")
            .replace("search:", "  random: {method: random}\nsearch:"))
    file = write_sweep(tmp_path / "grid.yaml", "grid", body, cifar_slice, smoke_teacher)
    log = tmp_path / "driver.log"
    finish(pdd(cluster, "sweep", "run", str(file), "--storage", str(tmp_path), "--address", cluster.address,
               log=log), log)

    rows = rows_of(tmp_path / "grid")
    assert all(row["status"] == "ok" for row in rows), [row["reason"] for row in rows]
    search = [row for row in rows if row["stage"] == "search"]
    confirm = [row for row in rows if row["stage"] == "confirm"]
    assert Counter((row["method"], row["pipc"]) for row in search) == {
        ("dm", 5): 2, ("dm", 10): 2, ("pdd", 5): 2, ("pdd", 10): 2}
    assert {(row["pipc"], row["init"]) for row in search if row["method"] == "dm"} == {
        (5, "noise"), (5, "real"), (10, "noise"), (10, "real")}
    assert {(row["pipc"], row["alpha"], row["gamma"]) for row in search if row["method"] == "pdd"} >= {
        (5, 0.1, 0.001), (10, 0.1, 0.001)}, "each pdd study evaluates the paper's point"
    assert sorted((row["method"], row["pipc"], row["subset_seed"]) for row in confirm) == sorted(
        (method, pipc, seed) for method in ("dm", "pdd", "random") for pipc in (5, 10) for seed in (0, 1))
    for row in confirm:
        if row["method"] != "random":
            study = [r for r in search if (r["method"], r["pipc"]) == (row["method"], row["pipc"])]
            top = max(r["val_mean"] for r in study)  # a few val images per class: ties happen
            assert (row["alpha"], row["gamma"], row["init"]) in {
                (r["alpha"], r["gamma"], r["init"]) for r in study if r["val_mean"] == top}
    assert len(rows) == 20

    status = subprocess.run([sys.executable, "-m", "pdd", "sweep", "status", str(tmp_path / "grid")],
                            env=cluster.env, capture_output=True, text=True)
    assert status.returncode == 0 and "pdd" in status.stdout and "2/2" in status.stdout

    with dashboard(tmp_path / "grid", free_port()) as board:  # the journal the driver wrote as trials ended
        counts = board.studies()
        stop(board)
    cells = [f"ipc=1,pipc={pipc}" for pipc in (5, 10)]
    assert counts == {f"{label} {cell}": Counter(Complete=2) for label in ("dm", "pdd") for cell in cells} | {
        f"{label} {cell} confirm": Counter(Complete=2) for label in ("dm", "pdd", "random") for cell in cells}
    assert sorted(journal_ids(tmp_path / "grid")) == sorted(row["trial_id"] for row in rows)

    moved = tmp_path / "elsewhere" / "grid"  # as on another machine: its rows, spec and teacher, no Tune state
    export(str(tmp_path / "grid"), moved)
    log = tmp_path / "moved.log"
    finish(pdd(cluster, "sweep", "resume", str(moved), "--address", cluster.address, log=log), log)
    assert {(row["trial_id"], row["finished_at"]) for row in rows_of(moved)} == {
        (row["trial_id"], row["finished_at"]) for row in rows}, "every study went on from its rows: nothing ran again"


@pytest.mark.ray
def test_an_auto_teacher_trains_as_a_trial_and_only_trials_that_need_it_wait(cluster, cifar_slice, tmp_path):
    body = """\
grid:
  - {ipc: [1], pipc: [10]}
methods:
  dm: {method: dm, init: [noise, real]}
  pdd: {method: pdd, alpha: 0.1, gamma: 0.001, init: noise}
search: {trials: 2}
confirm: {subset_seeds: [0]}
"""
    file = write_sweep(tmp_path / "auto.yaml", "auto", body, cifar_slice)  # teacher: auto, none cached
    log = tmp_path / "driver.log"
    finish(pdd(cluster, "sweep", "run", str(file), "--storage", str(tmp_path), "--address", cluster.address,
               log=log), log)
    assert "the first trial trains it" in log.read_text()

    root = tmp_path / "auto"
    rows = rows_of(root)
    assert sorted((row["method"], row["stage"]) for row in rows) == [
        ("dm", "confirm"), ("dm", "search"), ("dm", "search"), ("pdd", "confirm")]
    assert all(row["status"] == "ok" for row in rows), [row["reason"] for row in rows]
    [pdd_row] = [row for row in rows if row["method"] == "pdd"]
    assert pdd_row["teacher_hash"] == hashlib.sha256((root / "_teacher.pt").read_bytes()).hexdigest(), \
        "the teacher trained in the run is stored in the sweep directory and is the one the pdd trial used"

    results = tune_results(root / "_tune" / "sweep")
    [teacher_ended] = [result["trial_function"]["ended_at"] for result in results
                       if result["config"]["stage"] == "teacher" and "trial_function" in result]
    pdd_started = next(result["trial_function"]["started_at"] for result in results
                       if result.get("pdd_trial_id") == pdd_row["trial_id"])
    assert teacher_ended <= pdd_started, "the pdd trial started once the teacher trial had ended"


@pytest.mark.ray
def test_a_killed_driver_is_resumed_and_every_trial_is_in_the_results_once(cluster, cifar_slice, smoke_teacher,
                                                                          tmp_path):
    body = (SEARCHED.replace("pipc: [10, 50]", "pipc: [10]").replace("gamma: {low: 1.0e-4, high: 0.1}", "gamma: 0.001")
            .replace("subset_seeds: [0, 1]", "subset_seeds: [0]"))
    file = write_sweep(tmp_path / "resume.yaml", "resume", body, cifar_slice, smoke_teacher, iterations=20,
                       checkpoint_every=5)
    root = tmp_path / "resume"
    driver = pdd(cluster, "sweep", "run", str(file), "--storage", str(tmp_path), "--address", cluster.address,
                 log=tmp_path / "driver.log")
    deadline = time.monotonic() + 300
    while not (root.is_dir() and len(list(root.glob("*.parquet"))) >= 2):
        assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert len(list(root.glob("*.parquet"))) < 7, "the driver died mid-sweep"

    log = tmp_path / "resume.log"
    finish(pdd(cluster, "sweep", "resume", str(root), "--address", cluster.address, log=log), log)

    rows = rows_of(root)
    assert all(row["status"] == "ok" for row in rows)
    search = {row["trial_id"] for row in rows if row["stage"] == "search"}
    confirm = {row["trial_id"] for row in rows if row["stage"] == "confirm"}
    assert len(search) == 2 + 3 and len(confirm) == 2, "dm tries both inits, pdd three points, each confirmed once"
    finals = {result["trial_id"]: result["pdd_trial_id"] for result in tune_results(root / "_tune" / "sweep")
              if "pdd_trial_id" in result}
    assert set(finals.values()) == search | confirm, "every trial Tune ran has its row, and no row is extra"
    assert sorted(journal_ids(root)) == sorted(search | confirm), \
        "the journal has every trial once, though the killed driver had recorded some and Tune reran some"


@pytest.mark.ray
def test_trial_states_are_read_from_tunes_saved_experiment_state(cluster, tmp_path):
    from pdd.runner.driver import _teacher_trial_failed
    from pdd.runner.progress import running_configs, saved_trials

    assert saved_trials(str(tmp_path)) == [] and not _teacher_trial_failed(str(tmp_path))
    script = tmp_path / "experiment.py"
    script.write_text(f"""\
import ray
from ray import tune

def trainable(config):
    if config["stage"] == "teacher":
        raise RuntimeError("teacher on fire")
    tune.report({{"val_mean": 1.0}})

ray.init(address={cluster.address!r})
tune.Tuner(trainable, param_space={{"stage": tune.grid_search(["teacher", "search"])}},
           run_config=tune.RunConfig(name="sweep", storage_path={str(tmp_path / "_tune")!r}, verbose=0)).fit()
""")
    run = subprocess.run([sys.executable, str(script)], env=cluster.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted((trial["status"], trial["config"]["stage"]) for trial in saved_trials(str(tmp_path))) == [
        ("ERROR", "teacher"), ("TERMINATED", "search")]
    assert _teacher_trial_failed(str(tmp_path)), "a resumed sweep starts a fresh experiment"
    assert running_configs(str(tmp_path)) == []


@pytest.mark.ray
def test_a_trial_whose_node_dies_resumes_from_its_checkpoint_on_another_node(cluster, cifar_slice, smoke_teacher,
                                                                            tmp_path):
    body = """\
grid:
  - {ipc: [1], pipc: [10]}
methods:
  dm: {method: dm, init: real}
search: {trials: 1}
confirm: {subset_seeds: [0]}
"""
    file = write_sweep(tmp_path / "lose.yaml", "lose", body, cifar_slice, smoke_teacher, iterations=150,
                       checkpoint_every=5)
    log = tmp_path / "driver.log"
    driver = pdd(cluster, "sweep", "run", str(file), "--storage", str(tmp_path), "--address", cluster.address,
                 log=log)
    experiment = tmp_path / "lose" / "_tune" / "sweep"
    deadline = time.monotonic() + 300
    while not any("checkpointed" in result for result in tune_results(experiment)):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    first_pid = tune_results(experiment)[-1]["pid"]
    node = cluster.node_of(first_pid)
    assert node is not None and node is not cluster.nodes[0], "trials run on worker nodes"
    cluster.kill(node)

    try:
        finish(driver, log)
        rows = rows_of(tmp_path / "lose")
        assert [row["status"] for row in rows] == ["ok"]
        final = tune_results(experiment)[-1]
        assert final["resumed_iteration"] >= 5, "it went on from its last checkpoint, not from zero"
        assert final["pid"] != first_pid and cluster.node_of(final["pid"]) is not node
    finally:
        cluster.add_worker()  # the next test has two workers again


JOB = """\
grid:
  - {ipc: [1], pipc: [10]}
methods:
  dm: {method: dm, init: [noise, real]}
  random: {method: random}
search: {trials: 2}
confirm: {subset_seeds: [0]}
"""


@pytest.mark.ray
def test_a_submitted_sweep_runs_as_a_ray_job_and_its_results_appear(cluster, cifar_slice, smoke_teacher, tmp_path):
    file = write_sweep(tmp_path / "job.yaml", "job", JOB, cifar_slice, smoke_teacher)
    submitted = subprocess.run([sys.executable, "-m", "pdd", "sweep", "submit", str(file), "--address",
                                cluster.job_server, "--storage", str(tmp_path)],
                               env=cluster.env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.split()[0]
    assert job_id.startswith("raysubmit_")

    deadline = time.monotonic() + 300
    while len(list((tmp_path / "job").glob("*.parquet"))) < 4:  # cheaper to watch than to ask the job server
        assert time.monotonic() < deadline, "the job's rows did not appear"
        time.sleep(1)
    for _ in range(30):
        status = subprocess.run([sys.executable, "-m", "pdd", "sweep", "status", job_id, "--address",
                                 cluster.job_server], env=cluster.env, capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
        if "RUNNING" not in status.stdout and "PENDING" not in status.stdout:
            break
        time.sleep(2)
    logs = subprocess.run([sys.executable, "-m", "pdd", "sweep", "logs", job_id, "--address", cluster.job_server],
                          env=cluster.env, capture_output=True, text=True)
    assert f"job {job_id}: SUCCEEDED" in status.stdout, logs.stdout[-3000:]
    rows = rows_of(tmp_path / "job")
    assert len(rows) == 2 + 2 and all(row["status"] == "ok" for row in rows)
    assert "sweep resume" in logs.stdout


@pytest.mark.ray
def test_a_sweep_run_as_a_plain_ray_job_joins_the_jobs_cluster(cluster, cifar_slice, smoke_teacher, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from pdd.runner.jobs import JOB_EXCLUDES

    file = write_sweep(tmp_path / "plain.yaml", "plain", JOB, cifar_slice, smoke_teacher)
    client = JobSubmissionClient(cluster.job_server,
                                 headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"})
    job_id = client.submit_job(  # what `ray job submit --working-dir . -- python -m pdd sweep run ...` sends
        entrypoint=f"python -m pdd sweep run {file} --storage {tmp_path}",
        runtime_env={"working_dir": str(Path(__file__).resolve().parents[1]), "excludes": JOB_EXCLUDES})
    deadline = time.monotonic() + 400
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "Started a local Ray instance" not in logs, "the job's driver joined the cluster, not a Ray of its own"
    rows = rows_of(tmp_path / "plain")
    assert len(rows) == 2 + 2 and all(row["status"] == "ok" for row in rows), [row["reason"] for row in rows]


@pytest.mark.ray
def test_a_sweep_whose_trials_all_fail_ends_with_one_line_saying_where_their_errors_are(cluster, cifar_slice,
                                                                                       tmp_path):
    teacher = tmp_path / "corrupt.pt"
    teacher.write_bytes(b"not a checkpoint")
    body = "grid:\n  - {ipc: [1], pipc: [10, 50]}\nmethods:\n  pdd: {method: pdd, alpha: 0.1, gamma: 0.001}\n" \
           "search: {trials: 1}\nconfirm: {subset_seeds: [0]}\n"
    file = write_sweep(tmp_path / "doomed.yaml", "doomed", body, cifar_slice, teacher)
    file.write_text(file.read_text().replace("max_failures: 2", "max_failures: 0"))
    run = subprocess.run([sys.executable, "-m", "pdd", "sweep", "run", str(file), "--storage", str(tmp_path),
                          "--address", cluster.address], env=cluster.env, capture_output=True, text=True, timeout=400)

    root = tmp_path / "doomed"
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == (
        f"2 trials failed after all retries: the reasons are in their rows (status failed) and in Tune's error "
        f"files, {root}/_tune/sweep/*/error.txt")
    assert "internal error" not in run.stderr and "Traceback" not in run.stdout
    assert len(list(root.glob("_tune/sweep/*/error.txt"))) == 2
    rows = rows_of(root)
    assert sorted(row["pipc"] for row in rows) == [10, 50]
    assert all(row["status"] == "failed" and row["reason"] for row in rows), rows
    storage = JournalStorage(JournalFileBackend(str(root / JOURNAL_FILE)))
    failed = {study.study_name: [(trial.state.name, trial.user_attrs["pdd_trial_id"]) for trial in
                                 optuna.load_study(study_name=study.study_name, storage=storage).trials]
              for study in storage.get_all_studies()}
    assert failed == {f"pdd {row['cell']} confirm": [("FAIL", row["trial_id"])] for row in rows}, \
        "a trial Tune gave up on is in the journal at once, under its pdd trial id"


def test_sweep_progress_counts_trials_not_their_rows_per_protocol_or_later_evaluations(tmp_path):
    from pdd.results import ScoredBy, write_rows
    from pdd.runner.progress import progress
    from pdd.runner.storage import prepare

    body = "\n".join(line for line in SEARCHED.splitlines() if not line.startswith("  pdd:"))
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", "s", body.replace("pipc: [10, 50]", "pipc: [10]")))
    root = prepare(spec, str(tmp_path / "runs"))
    dm = SweepSearcher(spec).suggest("a")["trial"] | {"eval": {"protocols": ["paper", "dc"]}}
    cfg = TrialConfig.model_validate(dm)
    for stage, seed in ((Stage.SEARCH, 0), (Stage.CONFIRM, 0), (Stage.CONFIRM, 1)):
        tid = f"s_{stage}_dm_{seed}"
        both = [trial_row(cfg.model_copy(update={"subset_seed": seed}), tid, spec.name, stage, Status.OK, evaluation,
                          val_mean=30.0) for evaluation in cfg.eval.runs()]
        write_rows(root, both)
        later = cfg.eval.runs()[1].model_copy(update={"arch": "alexnet", "epochs": 300})
        write_rows(root, [trial_row(cfg, tid, spec.name, stage, Status.OK, later, ScoredBy.EVALUATE)], "alexnet")
    [cell] = [row for row in progress(root) if row.label == "dm"]
    assert (cell.done, cell.confirmed, cell.failed) == (1, 2, 0), "six rows a trial: one search, two draws"
