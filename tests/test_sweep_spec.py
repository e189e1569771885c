"""Sweep files: malformed ones get one line naming the line, shipped ones validate and expand to Table 1's grid."""

from pathlib import Path

import pytest

from pdd.cli import main
from pdd.config import TrialConfig
from pdd.errors import SweepError
from pdd.sweep import load_sweep

SWEEPS = Path(__file__).parents[1] / "sweeps"

GOOD = """\
name: tiny
budget: smoke
grid:
  - {ipc: [1], pipc: [10, 50]}
methods:
  dsv-noise: {method: dsv, alpha: {low: 1.0e-4, high: 1.0}, init: noise}
  dsv-real: {method: dsv, alpha: {low: 1.0e-4, high: 1.0}, init: real}
  random: {method: random}
search:
  trials: 2
confirm:
  subset_seeds: [0, 1, 2]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("old, new, line, fragments", [
    ("  trials: 2", "  trials: 2\n  trails: 3", 11, ["search.trails", "unknown key"]),
    ("search:", "name: again\nsearch:", 9, ["name", "duplicate key", "first at line 1"]),
    ("ipc: [1]", "ipc: [1, -3]", 4, ["grid.0.ipc.1", "greater than or equal to 1", "-3"]),
    ("grid:\n  - {ipc: [1], pipc: [10, 50]}", "grid: []", 3, ["grid", "at least 1"]),
    ("pipc: [10, 50]", "pipc: []", 4, ["grid.0.pipc", "at least 1"]),
    ("dsv-noise: {method: dsv, alpha: {low: 1.0e-4, high: 1.0}",
     "dsv-noise: {method: dsv, alpha: {low: 1.0, high: 1.0e-4}", 6, ["methods.dsv-noise.alpha.low", "inverted"]),
    ("init: noise}", "init: noise, gamma: {low: 1.0e-4, high: 0.1}}", 6,
     ["methods.dsv-noise.gamma", "dsv has no gamma (it uses no DM term)"]),
    ("random: {method: random}", "random: {method: random, alpha: 0.1}", 8,
     ["methods.random.alpha", "random has no alpha"]),
    ("random: {method: random}", "dm: {method: dm, alpha: {low: 0.01, high: 1.0}}", 8,
     ["methods.dm.alpha", "dm has no alpha"]),
    ("random: {method: random}", "random: {method: random, init: [noise, real]}", 8, ["methods.random.init"]),
    ("method: dsv, alpha: {low: 1.0e-4, high: 1.0}, init: noise",
     "method: dsv, alpha: {low: 0.2, high: 1.0}, init: noise", 6,
     ["methods.dsv-noise.alpha", "leaves out the paper's alpha 0.1"]),
    ("dsv-real: {method: dsv, alpha: {low: 1.0e-4, high: 1.0}, init: real}",
     "dsv-real: {method: dsv, alpha: {low: 1.0e-4, high: 1.0}, init: [noise, real]}", 7,
     ["methods.dsv-real", "could not be told apart from those of dsv-noise"]),
    ("budget: smoke", "budget: smoke\ntrial: {iterations: -1}", 3, ["trial.iterations", "greater than or equal to 0"]),
    ("budget: smoke", "budget: smoke\ntrial: {ipc: 3}", 3, ["trial.ipc", "set by grid"]),
    ("method: random}", "method: randm}", 8, ["methods.random.method", "unknown method 'randm'"]),
    ("subset_seeds: [0, 1, 2]", "subset_seeds: [0, 0]", 12, ["confirm.subset_seeds", "repeat"]),
    ("subset_seeds: [0, 1, 2]", "subset_seeds: [0, 1, 2]\n  trial: {eval: {protocols: [dc], rho: 0.1}}", 13,
     ["confirm.trial", "at ipc=1,pipc=10", "plain SGD"]),
    ("subset_seeds: [0, 1, 2]", "subset_seeds: [0, 1, 2]\n  trial: {ipc: 3}", 13, ["confirm.trial.ipc", "set by grid"]),
    ("  - {ipc: [1], pipc: [10, 50]}", "  - {ipc: [1], pipc: [10, 50}", 4, ["not valid YAML"]),
])
def test_a_malformed_sweep_file_is_one_line_naming_its_line(tmp_path, old, new, line, fragments):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(SweepError) as raised:
        load_sweep(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_the_cli_reports_a_bad_sweep_file_in_one_line_before_starting_anything(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("ipc: [1]", "ipc: [-1]"))
    assert main(["sweep", "run", str(path), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"pdd: error: {path}:4: grid.0.ipc.0: Input should be greater than or equal to 1 "
                                f"(got -1)"]
    assert not (tmp_path / "results").exists()


def test_a_good_file_expands_to_studies_and_confirm_trials_that_are_trial_configs(tmp_path):
    spec = load_sweep(write(tmp_path, GOOD))
    assert spec.name == "tiny" and spec.teacher == "auto"
    assert [study.key for study in spec.studies()] == [
        "dsv-noise ipc=1,pipc=10", "dsv-noise ipc=1,pipc=50", "dsv-real ipc=1,pipc=10", "dsv-real ipc=1,pipc=50"]
    study = spec.studies()[0]
    assert study.space == {"alpha": {"low": 1e-4, "high": 1.0}} and study.base["init"] == "noise"
    assert [label for label, _ in spec.unsearched()] == ["random", "random"]
    confirm = spec.confirm_values(spec.trial_values("random", 1, 50))
    assert [values["subset_seed"] for values in confirm] == [0, 1, 2]
    assert all(TrialConfig.model_validate(values).budget == "smoke" for values in confirm)
    both = load_sweep(write(tmp_path, GOOD + "  trial: {iterations: 50, eval: {protocols: [paper, dc], seeds: 3}}\n"))
    [first, *_] = both.confirm_values(both.trial_values("dsv-noise", 1, 50) | {"alpha": 0.3})
    confirmed = TrialConfig.model_validate(first)
    assert [(run.protocol, run.seeds) for run in confirmed.eval.runs()] == [("paper", 3), ("dc", 3)]
    assert (confirmed.iterations, confirmed.alpha, confirmed.budget) == (50, 0.3, "smoke")
    assert "protocols" not in both.trial_values("random", 1, 50).get("eval", {}), "the search scores one protocol"
    assert spec.label_of({"method": "dsv", "ipc": 1, "pipc": 50, "init": "real", "alpha": 0.3}) == "dsv-real"
    assert spec.label_of({"method": "dsv", "ipc": 1, "pipc": 50, "init": "noise", "alpha": 0.3}) == "dsv-noise"
    assert spec.label_of({"method": "pdd", "ipc": 1, "pipc": 50, "init": "noise", "alpha": 0.3}) is None


def test_the_name_defaults_to_the_file_name_and_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    path = tmp_path / "my-sweep.yaml"
    path.write_text(GOOD.replace("name: tiny\n", "data: {source: data}\nteacher: t.pt\n"))
    spec = load_sweep(path)
    assert spec.name == "my-sweep"
    assert spec.data.source == str(tmp_path / "data") and spec.teacher == str(tmp_path / "t.pt")


TABLE1_CELLS = [(ipc, pipc) for ipc in (1, 3, 10) for pipc in (10, 50, None)] + [(50, 50), (50, None)]


def test_table1_is_the_papers_grid_with_its_hyperparameters_first():
    spec = load_sweep(SWEEPS / "table1.yaml")
    assert spec.budget == "paper" and spec.teacher == "auto"
    assert set(spec.methods) == {"dm", "dsv-noise", "dsv-real", "pdd", "random"}
    assert spec.cells("pdd") == spec.cells("dm") == spec.cells("random") == TABLE1_CELLS
    assert spec.cells("dsv-noise") == spec.cells("dsv-real") == [(1, 50), (3, 50), (10, 50), (50, 50)]
    paper_alpha = {10: 0.1, 50: 0.01, None: 0.001}
    for study in spec.studies():
        ipc, pipc = study.base["ipc"], study.base["pipc"]
        expected = {"alpha": paper_alpha[pipc], "gamma": 0.01 if ipc == 50 else 0.001,
                    "init": "noise" if ipc == 1 else "real"}
        assert study.first == {name: expected[name] for name in study.space}, study.key
    assert {study.base.get("init") for study in spec.studies() if study.label.startswith("dsv")} == {"noise", "real"}


@pytest.mark.parametrize("name", ["table1.yaml", "table1-cpu.yaml", "smoke.yaml"])
def test_every_shipped_sweep_validates_and_confirms_over_enough_draws_of_t_prime(name):
    spec = load_sweep(SWEEPS / name)
    assert spec.name == name.removesuffix(".yaml")
    assert len(spec.confirm.subset_seeds) >= (2 if spec.budget == "smoke" else 3)
    cells = {cell for label in spec.methods for cell in spec.cells(label)}
    assert cells <= set(TABLE1_CELLS)
    for study in spec.studies():
        assert TrialConfig.model_validate(study.base | study.first).budget == spec.budget


def test_table1_cpu_holds_the_ipc_1_rows_at_cpu_budget():
    spec = load_sweep(SWEEPS / "table1-cpu.yaml")
    assert spec.budget == "cpu"
    assert {cell for label in spec.methods for cell in spec.cells(label)} == {(1, 10), (1, 50)}
