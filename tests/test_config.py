"""Config values: defaults, budgets, merging and how cells are named."""

from pdd.config import TrialConfig, cell_name, merge_nested


def test_merge_nested_merges_sections_key_by_key_and_leaves_its_inputs_alone():
    base = {"budget": "cpu", "eval": {"epochs": 3, "seeds": 2}, "model": {"width": 8}}
    merged = merge_nested(base, {"eval": {"seeds": 5}, "model": None, "ipc": 10})
    assert merged == {"budget": "cpu", "eval": {"epochs": 3, "seeds": 5}, "model": None, "ipc": 10}
    assert base == {"budget": "cpu", "eval": {"epochs": 3, "seeds": 2}, "model": {"width": 8}}


def test_the_paper_defaults_follow_the_field_defaults_of_ipc_and_pipc():
    cfg = TrialConfig()
    assert (cfg.ipc, cfg.pipc, cfg.budget, cfg.eval.budget) == (1, 50, "cpu", "cpu")
    assert (cfg.alpha, cfg.gamma, cfg.init) == (0.01, 0.001, "noise")
    assert cell_name(cfg.ipc, cfg.pipc) == "ipc=1,pipc=50" and cell_name(10, None) == "ipc=10,pipc=all"


def test_a_field_added_after_results_were_stored_changes_the_hash_only_when_set():
    cfg = TrialConfig(method="dm", ipc=1, pipc=10, data={"source": "cifar10"})
    assert cfg.hash() == "3bb724724c34c45f", "the id stored trials have had since before `compile` existed"
    compiled = TrialConfig(method="dm", ipc=1, pipc=10, data={"source": "cifar10"}, compile=True)
    assert compiled.hash() != cfg.hash(), "a compiled trial computes other numbers: another trial"
