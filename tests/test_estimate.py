"""FLOP counts from layer shapes: one distillation iteration, one trial, and a whole sweep, checked by hand."""

import pytest

from pdd.bench import evaluation_flops, forward_flops, iteration_flops, sweep_flops
from pdd.config import Evaluation, TrialConfig
from pdd.data import image_spec
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
        "search": {"trials": 5}, "confirm": {"subset_seeds": [0, 1], "trial": {"eval": {"seeds": 3}}},
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


# On 28x28 grayscale the first convolution pads by 3 (output 32x32) and sees one channel; CIFAR-100 has 100 classes.
EMBED_GRAY = 2 * 1 * 128 * 9 * 32 * 32 + 2 * 128 * 128 * 9 * 16 * 16 + 2 * 128 * 128 * 9 * 8 * 8


def test_shapes_come_from_the_data_source():
    mnist = TrialConfig(method="pdd", ipc=1, pipc=10, data={"source": "fashion-mnist"})
    assert forward_flops(mnist.model, image_spec("fashion-mnist")) == (EMBED_GRAY, HEAD)
    assert iteration_flops(mnist, BOTH) == 120 * EMBED_GRAY + 7 * 10 * (EMBED_GRAY + HEAD)
    many = TrialConfig(method="dm", ipc=1, pipc=10, data={"source": "cifar100"})
    assert iteration_flops(many, DM_ONLY) == 1000 * EMBED + 2 * 100 * EMBED  # ipc 1 means 100 images
    assert forward_flops(many.model, image_spec("cifar100"))[1] == 2 * 2048 * 100


def test_a_folder_source_is_measured_by_loading_it(tmp_path):
    from source_fixtures import write_gray_image_folder

    tree = write_gray_image_folder(tmp_path / "gray")
    cfg = TrialConfig(method="dm", ipc=2, pipc=2, data={"source": str(tree), "val_per_class": 1})
    assert iteration_flops(cfg, DM_ONLY) == 3 * 2 * EMBED_GRAY + 2 * 3 * 2 * EMBED_GRAY
    paper, dc = (Evaluation(protocol=protocol, budget=cfg.budget) for protocol in ("paper", "dc"))
    scoring = (3 * 1 + 6) * (EMBED_GRAY + 2 * 2048 * 3)
    assert evaluation_flops(cfg, paper) == paper.epochs * 6 * 6 * (EMBED_GRAY + 2 * 2048 * 3) + scoring
    # dc trains with plain SGD: one forward and backward per step, half of SAM's
    assert evaluation_flops(cfg, dc) == \
        dc.epochs * 3 * 6 * (EMBED_GRAY + 2 * 2048 * 3) + scoring
