"""The evaluation protocols: their defaults, and the dc protocol's schedule as evaluate_synset runs it."""

import pytest
import torch

from pdd import evaluate
from pdd.config import EvalConfig, Evaluation, TrialConfig
from pdd.models import ModelConfig


@pytest.mark.parametrize(("protocol", "budget", "expected"), [
    ("paper", "paper", {"lr": 0.1, "rho": 0.001, "epochs": 5000}),
    ("paper", "cpu", {"lr": 0.1, "rho": 0.001, "epochs": 1000}),
    ("dc", "paper", {"lr": 0.01, "rho": 0.0, "epochs": 1000}),
    ("dc", "smoke", {"lr": 0.01, "rho": 0.0, "epochs": 8}),
])
def test_a_protocol_fills_what_the_user_left_unset(protocol, budget, expected):
    [evaluation] = TrialConfig(budget=budget, eval={"protocols": [protocol]}).eval.runs()
    assert {name: getattr(evaluation, name) for name in expected} == expected
    assert Evaluation(protocol=protocol, budget=budget, epochs=3, lr=0.5).lr == 0.5


def test_a_trial_lists_protocols_and_networks_and_judges_its_set_by_each_pair():
    cfg = EvalConfig(protocols=["dc", "paper"], models=["convnet"], budget="cpu", seeds=2)
    assert [(run.protocol, run.lr, run.rho, run.epochs, run.seeds) for run in cfg.runs()] == [
        ("dc", 0.01, 0.0, 1000, 2), ("paper", 0.1, 0.001, 1000, 2)]
    assert cfg.primary.protocol == "dc", "the first listed protocol is what a search maximises"
    assert len({run.key for run in cfg.runs()}) == 2
    assert EvalConfig(protocols=["paper"], epochs=300).primary.epochs == 300


def test_the_protocols_are_part_of_the_trial_hash_and_dc_refuses_sam():
    assert TrialConfig(eval={"protocols": ["dc"]}).hash() != TrialConfig().hash()
    with pytest.raises(ValueError, match="plain SGD"):
        Evaluation(protocol="dc", rho=0.01)
    with pytest.raises(ValueError, match="plain SGD"):
        EvalConfig(protocols=["paper", "dc"], rho=0.01)
    with pytest.raises(ValueError) as error:
        EvalConfig(protocols=["sam"])
    assert [item["loc"] for item in error.value.errors()] == [("protocols", 0)]
    with pytest.raises(ValueError, match="twice"):
        EvalConfig(protocols=["dc", "dc"])
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        EvalConfig(models=["lenet"])


def test_batched_reaches_every_evaluation_and_is_in_the_hash():
    assert all(run.batched for run in EvalConfig(protocols=["paper", "dc"], batched=True).runs())
    assert TrialConfig(eval={"batched": True}).hash() != TrialConfig().hash()
    assert Evaluation(batched=True).key != Evaluation().key
    with pytest.raises(ValueError) as error:
        Evaluation(batched="sometimes")
    assert [item["loc"] for item in error.value.errors()] == [("batched",)]


class Passes:
    """A reporter that counts training passes."""

    def __init__(self):
        self.done = 0

    def start(self, phase, total):
        self.total = total

    def update(self, phase, done, metrics):
        self.done = done


@pytest.mark.parametrize(("protocol", "passes", "fresh_at"), [("dc", 7, [0, 5]), ("paper", 6, [0])])
def test_dc_runs_epochs_plus_one_passes_with_a_fresh_sgd_at_a_tenth_after_pass_half_plus_one(
        monkeypatch, protocol, passes, fresh_at):
    reporter, made = Passes(), []
    real_sgd = evaluate._sgd

    def spy(model, cfg, lr):
        made.append((reporter.done, lr))
        return real_sgd(model, cfg, lr)

    monkeypatch.setattr(evaluate, "_sgd", spy)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    cfg = Evaluation(protocol=protocol, budget="smoke", epochs=6, dsa=False)
    evaluate.train_on_synthetic(images, labels, cfg, ModelConfig(width=8), 2, seed=0, reporter=reporter)
    assert reporter.total == passes and reporter.done == passes
    # evaluate_synset: range(Epoch + 1) passes; after pass Epoch // 2 + 1 (the 5th of 7) a new SGD at lr / 10
    assert [at for at, _ in made] == fresh_at
    assert [lr for _, lr in made] == pytest.approx([cfg.lr, cfg.lr * 0.1][:len(fresh_at)])
