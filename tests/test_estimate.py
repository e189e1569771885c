"""FLOP counts from layer shapes: one distillation iteration, one trial, and a whole sweep, checked by hand."""

import pytest

from pdd.bench import iteration_flops, sweep_flops
from pdd.config import TrialConfig
from pdd.methods import BOTH, DM_ONLY
from pdd.sweep import SweepSpec

# ConvNet-3, width 128, on 32x32x3: 2 * c_in * c_out * 9 * h * w per conv, then Linear(2048, 10).
EMBED = 2 * 3 * 128 * 9 * 32 * 32 + 2 * 128 * 128 * 9 * 16 * 16 + 2 * 128 * 128 * 9 * 8 * 8
HEAD = 2 * 2048 * 10


def test_one_iteration_by_hand():
    cfg = TrialConfig(method="pdd", ipc=1, pipc=10)
    assert EMBED == 101_449_728
    assert iteration_flops(cfg, DM_ONLY) == 100 * EMBED + 2 * 10 * EMBED  # real forward; synthetic fwd + bwd
    assert iteration_flops(cfg, BOTH) == 120 * EMBED + 7 * 10 * (EMBED + HEAD)
    at_all = TrialConfig(method="dm", ipc=10, pipc=None)
    assert iteration_flops(at_all, DM_ONLY) == 2560 * EMBED + 2 * 100 * EMBED  # 256 of each class drawn


def test_a_sweep_counts_every_search_and_confirm_trial():
    spec = SweepSpec.model_validate({
        "name": "tiny", "budget": "smoke",
        "data": {"val_per_class": 20}, "trial": {"iterations": 5, "eval": {"epochs": 4, "seeds": 1}},
        "grid": [{"ipc": [1], "pipc": [10]}],
        "methods": {"dm": {"method": "dm", "init": ["noise", "real"]}, "random": {"method": "random"}},
        "search": {"trials": 5}, "confirm": {"subset_seeds": [0, 1], "eval_seeds": 3},
    })
    rows = {(row["method"], row["stage"]): row for row in sweep_flops(spec)}
    assert set(rows) == {("dm", "search"), ("dm", "confirm"), ("random", "confirm")}
    scored = (10 * 20 + 10_000) * (EMBED + HEAD)
    one_model = 4 * 6 * 10 * (EMBED + HEAD) + scored  # 4 SAM epochs of one batch of 10, then val and test
    assert rows["dm", "search"]["trials"] == 2  # dm searches only its two inits
    assert rows["dm", "search"]["distill_flops"] == pytest.approx(2 * 5 * 120 * EMBED)
    assert rows["dm", "search"]["eval_flops"] == pytest.approx(2 * one_model)
    assert rows["dm", "confirm"]["trials"] == 2
    assert rows["dm", "confirm"]["eval_flops"] == pytest.approx(2 * 3 * one_model)
    assert rows["random", "confirm"]["distill_flops"] == 0
    assert rows["random", "confirm"]["eval_flops"] == pytest.approx(2 * 3 * one_model)
