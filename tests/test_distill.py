"""The distillation loop: dual feasibility, a frozen teacher, exact resume, and the method registry."""

import sys

import pytest
import torch
from torch import Tensor

from pdd import augment, losses
from pdd import distill as distill_module
from pdd import methods as methods_module
from pdd.config import TrialConfig
from pdd.data import Normalization, indices_by_class
from pdd.distill import Problem, distill
from pdd.hooks import MemoryStore
from pdd.method_spec import SPECS, Terms, check_method, method_label, method_names, needs_teacher
from pdd.methods import MAKE, synthetic_labels
from pdd.models import ModelConfig, build_model
from pdd.paper import TABLE_1
from pdd.sweep import SEARCHABLE

MODEL = ModelConfig(width=8, depth=2)


def tiny_problem(iterations: int, **overrides) -> Problem:
    generator = torch.Generator().manual_seed(0)
    values = {"method": "pdd", "ipc": 1, "pipc": 4, "budget": "smoke", "iterations": iterations,
              "model": MODEL, "batch_real": 3} | overrides
    cfg = TrialConfig(**values)
    teacher = build_model(MODEL, 3, 3, 16, generator).eval()
    return Problem(cfg=cfg, real=torch.randn(12, 3, 16, 16, generator=generator),
                   real_labels=torch.arange(3).repeat_interleave(4), num_classes=3,
                   normalization=Normalization((0.5,) * 3, (0.5,) * 3), teacher=teacher,
                   teacher_weight_decay=5e-4, checkpoint_every=3)


def test_multipliers_stay_nonnegative_and_the_teacher_is_never_changed():
    problem = tiny_problem(20, lr_lambda=5.0, alpha=10.0)  # a large lr pushes lambda hard towards 0
    before = [p.detach().clone() for p in problem.teacher.parameters()]
    labels = synthetic_labels(3, 1, torch.device("cpu"))
    result = distill(problem, Terms(dkkt=True, dm=True), torch.randn(3, 3, 16, 16), labels, "pdd")
    assert result.lambdas is not None and (result.lambdas >= 0).all() and torch.isfinite(result.lambdas).all()
    assert all(torch.equal(a, b) for a, b in zip(before, problem.teacher.parameters(), strict=True))
    assert all(p.grad is None for p in problem.teacher.parameters())
    assert {"loss_primal", "loss_stat", "loss_dm", "loss_total", "lambda_mean"} <= set(result.final)


def test_an_iteration_reads_the_device_once(monkeypatch):
    """On a GPU every read (item, tolist, a boolean mask) waits for the kernels queued before it, so the loop and
    its losses read once per iteration: the metrics, all at once. DSA's draws come from the CPU generator."""
    reads = []
    for name in ("item", "tolist"):
        original = getattr(Tensor, name)

        def counted(tensor, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller in (distill_module.__file__, losses.__file__):
                reads.append(caller)
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(Tensor, name, counted)
    labels = synthetic_labels(3, 1, torch.device("cpu"))
    distill(tiny_problem(5), Terms(dkkt=True, dm=True), torch.randn(3, 3, 16, 16), labels, "pdd")
    assert len(reads) == 1 + 5, "the stationarity floor once, then one read per iteration"


@pytest.mark.parametrize(("seconds", "saved_at"), [(0.0, [3, 6]), (3600.0, [])])
def test_checkpoints_come_every_n_iterations_and_no_sooner_than_checkpoint_seconds(seconds, saved_at):
    class Recording(MemoryStore):
        def save(self, name, state):
            saves.append(state["iteration"])
            super().save(name, state)

    saves: list[int] = []
    problem = tiny_problem(7)  # checkpoint_every 3
    problem.store, problem.checkpoint_seconds = Recording(), seconds
    distill(problem, Terms(dkkt=True, dm=True), torch.randn(3, 3, 16, 16), synthetic_labels(3, 1, torch.device("cpu")),
            "pdd")
    assert saves == saved_at


def test_lambda_scale_follows_the_teachers_weight_decay():
    problem = tiny_problem(1)
    assert problem.lambda_scale(10) == pytest.approx(1 / (5e-4 * 10))
    assert tiny_problem(1, lambda_init=3.0).lambda_scale(10) == 3.0


def test_resuming_from_a_checkpoint_gives_the_same_images_as_an_uninterrupted_run():
    labels = synthetic_labels(3, 1, torch.device("cpu"))
    init = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    straight = distill(tiny_problem(7), Terms(dkkt=True, dm=True), init, labels, "pdd")

    interrupted = tiny_problem(7)
    interrupted.store = MemoryStore()
    halfway = tiny_problem(4)
    halfway.store = interrupted.store
    halfway.checkpoint_every = 3
    distill(halfway, Terms(dkkt=True, dm=True), init, labels, "pdd")  # saved at iteration 3
    assert interrupted.store.load("pdd")["iteration"] == 3
    spent = interrupted.store.load("pdd")["seconds"]
    resumed = distill(interrupted, Terms(dkkt=True, dm=True), init, labels, "pdd")
    assert spent > 0 and (straight.carried_seconds, resumed.carried_seconds) == (0.0, spent), \
        "a resumed loop carries the time its first run spent up to the checkpoint"
    torch.testing.assert_close(resumed.images, straight.images, rtol=0, atol=0)
    older = tiny_problem(7)
    older.store = MemoryStore()
    older.store.save("pdd", {k: v for k, v in halfway.store.load("pdd").items() if k != "seconds"})
    from_older = distill(older, Terms(dkkt=True, dm=True), init, labels, "pdd")  # a checkpoint without the field
    assert from_older.carried_seconds == 0.0
    torch.testing.assert_close(from_older.images, straight.images, rtol=0, atol=0)
    torch.testing.assert_close(resumed.lambdas, straight.lambdas, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_method_returns_ipc_images_per_class_from_the_loops_its_spec_names(name, monkeypatch):
    ran = []

    def recording(problem, terms, images, labels, loop):
        ran.append(terms)
        return distill(problem, terms, images, labels, loop)

    monkeypatch.setattr(methods_module, "distill", recording)
    problem = tiny_problem(2, method=name, init="real")
    made = MAKE[name](problem)
    assert made.images.shape == (3, 3, 16, 16) and made.labels.tolist() == [0, 1, 2]
    assert torch.isfinite(made.images).all()
    assert tuple(ran) == SPECS[name].runs


def test_every_spec_has_a_make_function_and_every_make_function_a_spec():
    assert list(MAKE) == list(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_method_spec_is_complete(name):
    spec = SPECS[name]
    assert spec.name == name and check_method(name) == name and name in method_names()
    assert spec.label and spec.labels
    assert all(method_label(name, init) in spec.labels for init in ("noise", "real"))
    others = {label for other in SPECS.values() if other is not spec for label in other.labels}
    assert not others & set(spec.labels), "each method has its own table columns"
    assert set(spec.unused) <= set(SEARCHABLE) and all(spec.unused.values())
    printed = {column for cell in TABLE_1.values() for column in cell}
    assert set(spec.paper_columns) <= printed
    assert len(spec.paper_columns) in (0, len(spec.labels))
    cfg = TrialConfig(method=name)
    assert needs_teacher(cfg) == any(terms.dkkt for terms in spec.runs)
    if spec.reads_dsv_set:
        assert not needs_teacher(TrialConfig(method=name, dsv_set="dsv.pt"))
    else:
        with pytest.raises(ValueError, match="dsv_set is only used by method"):
            TrialConfig(method=name, dsv_set="dsv.pt")


def test_dm_alone_is_unweighted_and_pdd_weighs_its_terms_as_eq_5():
    dm = MAKE["dm"](tiny_problem(1, method="dm"))
    assert dm.final["loss_total"] == pytest.approx(dm.final["loss_dm"])
    problem = tiny_problem(1, alpha=0.3, gamma=0.02)
    pdd = MAKE["pdd"](problem)
    expected = pdd.final["loss_primal"] + 0.3 * pdd.final["loss_stat"] + 0.02 * pdd.final["loss_dm"]
    assert pdd.final["loss_total"] == pytest.approx(expected, rel=1e-5)


def test_the_manifold_term_adds_the_dkkt_loss_of_augmented_copies():
    problem = tiny_problem(1, method="dsv", alpha=0.5, manifold_weight=5.0)
    made = MAKE["dsv"](problem)
    expected = made.final["loss_primal"] + 0.5 * made.final["loss_stat"] + 5.0 * made.final["loss_manifold"]
    assert made.final["loss_manifold"] > 0
    assert made.final["loss_total"] == pytest.approx(expected, rel=1e-5)


def _dm_step_gradient(problem: Problem, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    images = images.clone().requires_grad_(True)
    real_by_class = indices_by_class(problem.real_labels, problem.num_classes)
    loss = distill_module._dm_step(problem, distill_module._embedder(problem), real_by_class,
                                   distill_module._class_groups(labels, problem.num_classes, 12), images, labels,
                                   torch.Generator().manual_seed(3), weight=0.5)
    return loss, images.grad


def _dm_step_by_hand(problem: Problem, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The same draws in one batch: embedder, real picks, one DSA transform shared per class, then 0.5 * L_DM."""
    generator = torch.Generator().manual_seed(3)
    embedder = build_model(problem.cfg.model, 3, 3, 16, generator).train()
    picks = [idx[torch.randperm(len(idx), generator=generator)[: problem.cfg.batch_real]]
             for idx in (torch.nonzero(problem.real_labels == c).squeeze(1) for c in range(3))]
    real_idx = torch.cat(picks)
    transform = augment.sample_transform(generator, 3, 16)
    real = augment.apply_transform(problem.real[real_idx], transform, group=problem.real_labels[real_idx])
    images = images.clone().requires_grad_(True)
    loss = losses.l_dm(embedder.embed(real).detach(), problem.real_labels[real_idx],
                       embedder.embed(augment.apply_transform(images, transform, group=labels)), labels, 3)
    (0.5 * loss).backward()
    return loss.detach(), images.grad


def test_dm_in_class_groups_matches_one_batch_by_hand():
    problem = tiny_problem(1, method="dm", ipc=6, init="noise", precision="fp32")  # by hand is fp32
    labels = synthetic_labels(3, 6, torch.device("cpu"))
    images = torch.randn(18, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert [len(g) for g in distill_module._class_groups(labels, 3, 12)] == [12, 6]  # two classes, then one
    assert [len(g) for g in distill_module._class_groups(labels, 3, None)] == [18]
    grouped_loss, grouped = _dm_step_gradient(problem, images, labels)
    expected_loss, expected = _dm_step_by_hand(problem, images, labels)
    assert grouped_loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    torch.testing.assert_close(grouped, expected, rtol=1e-4, atol=1e-7)
    assert grouped.abs().sum() > 0


@pytest.mark.parametrize("method", ["dm", "pdd"])
def test_bf16_distillation_steps_point_where_fp32_ones_do(method):
    labels = synthetic_labels(3, 2, torch.device("cpu"))
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    steps = {}
    for precision in ("fp32", "bf16"):
        problem = tiny_problem(1, method=method, ipc=2, init="noise", precision=precision, alpha=1.0, gamma=1.0)
        steps[precision] = images - distill(problem, SPECS[method].runs[0], images, labels, method).images
    cosine = torch.nn.functional.cosine_similarity(steps["fp32"].flatten(), steps["bf16"].flatten(), dim=0)
    assert steps["fp32"].abs().sum() > 0 and cosine > 0.98


def test_a_compiled_embedder_gives_the_eager_dm_step_and_pdd_keeps_its_double_backward(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # not the user's cache
    problem = tiny_problem(1, method="dm", ipc=6, init="noise", precision="fp32", compile=True)
    labels = synthetic_labels(3, 6, torch.device("cpu"))
    images = torch.randn(18, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    compiled_loss, compiled = _dm_step_gradient(problem, images, labels)
    expected_loss, expected = _dm_step_by_hand(problem, images, labels)
    assert compiled_loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-6)
    pdd = tiny_problem(2, compile=True)
    made = distill(pdd, SPECS["pdd"].runs[0], torch.randn(3, 3, 16, 16), synthetic_labels(3, 1, torch.device("cpu")),
                   "pdd")
    assert made.final["loss_stat"] > 0 and all(torch.isfinite(made.images).flatten())
