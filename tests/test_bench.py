"""The benchmark's start-up timing stops a real trial at its first distillation iteration."""

import pytest

from pdd import bench
from pdd.bench import Options


def test_startup_times_cold_and_warm_starts_up_to_the_first_iteration(cifar_slice, smoke_teacher):
    import torch

    timed = bench.bench_startup(str(cifar_slice), smoke_teacher, Options(device=torch.device("cpu")),
                                 val_per_class=5)
    assert set(timed) == {"cold_seconds", "warm_seconds"}
    assert all(seconds > 0 for seconds in timed.values())


def test_a_distillation_figure_splits_its_iteration_into_sections():
    import torch

    timed = bench.bench_distill("pdd", 1, 10, Options(device=torch.device("cpu"), precision="bf16", iterations=2,
                                                       warmup=1))
    assert timed["ms_per_iteration"] > 0
    assert set(timed["shares"]) == {"augmentation", "real embedding", "synthetic fwd/bwd", "DKKT terms",
                                    "optimiser step"}
    assert sum(timed["shares"].values()) == pytest.approx(1.0)
    assert timed["achieved_gflops"] == pytest.approx(timed["gflop_per_iteration"] / timed["ms_per_iteration"] * 1e3)


def test_each_distillation_figure_is_its_median_round(monkeypatch):
    import torch

    slow_first_round = iter([500.0] * 8 + [100.0 + k for k in range(8)] + [200.0 + k for k in range(8)])

    def fake_distill(method, ipc, pipc, opts, spec):
        return {"method": method, "ipc": ipc, "pipc": pipc, "ms_per_iteration": next(slow_first_round)}

    monkeypatch.setattr(bench, "bench_distill", fake_distill)
    figures = bench.interleaved_distill(Options(device=torch.device("cpu"), rounds=3))
    assert len(figures) == len(bench.SETTINGS) * len(bench.TERMS) == 8
    assert [row["ms_per_iteration"] for row in figures] == [200.0 + k for k in range(8)]
    assert figures[0]["ms_per_iteration_by_round"] == [500.0, 100.0, 200.0]


def test_whole_trials_are_timed_from_their_rows_and_paired_with_components_timed_beside_them(monkeypatch):
    import torch

    monkeypatch.setattr(bench, "TRIAL_SETTINGS", [(1, 10)])
    component_ms = iter([50.0, 80.0, 60.0, 90.0])  # dm then pdd, in each of two rounds
    monkeypatch.setattr(bench, "bench_distill", lambda *args: {"ms_per_iteration": next(component_ms)})
    monkeypatch.setattr(bench, "bench_sam_step", lambda *args: {"ms_per_step": 10.0})
    opts = Options(device=torch.device("cpu"), precision="bf16", rounds=2)
    trials = bench.bench_trials(opts, iterations=4, epochs=2)
    assert [(row["method"], row["ipc"], row["pipc"]) for row in trials] == [("dm", 1, "10"), ("pdd", 1, "10")]
    for row in trials:
        inside = row["inside"]
        assert row["ms_per_iteration"] > 0 and row["ms_per_epoch"] > 0
        assert inside["ms_per_iteration_steady"] > 0 and inside["ms_per_epoch_steady"] > 0
        assert inside["distill_outside_loop_s"] >= 0, "the loop's stamps lie within the recorded distillation"
        assert inside["evaluate_outside_epochs_s"] > 0, "scoring on val and test follows the last epoch"
        assert len(row["trial_over_components_by_round"]) == 2
        assert row["components"]["ms_per_epoch"] == 10.0, "10 images: one SAM step an epoch"
        ratio = row["trial_over_components"]
        assert ratio["iteration"] == pytest.approx(row["ms_per_iteration"] / row["components"]["ms_per_iteration"])
        assert ratio["steady_epoch"] == pytest.approx(inside["ms_per_epoch_steady"] / 10.0)
    dm, pdd = trials
    assert dm["components"]["ms_per_iteration"] in (50.0, 60.0)
    assert pdd["components"]["ms_per_iteration"] in (80.0, 90.0)
    for row in trials:  # the kept round's ratio is one of the rounds', its trial over its own components
        assert row["trial_over_components"] in row["trial_over_components_by_round"]


def test_the_benchmark_names_the_cpu_it_ran_on():
    assert bench.cpu_name() and bench.cpu_name() != "unknown"


def test_the_benchmark_runs_on_a_grayscale_dataset_with_100_classes():
    import torch

    from pdd.data import ImageSpec

    spec = ImageSpec(channels=1, image_size=28, num_classes=100, test_images=10_000)
    opts = Options(device=torch.device("cpu"), iterations=1, warmup=0)
    step = bench.bench_sam_step(1, opts, spec)
    assert step["batch"] == 100 and step["gflop_per_step"] == pytest.approx(
        bench.sam_step_flops(100, bench.ModelConfig(), spec) / 1e9)
    assert bench.bench_test_pass(opts, spec, images=32)["images_per_second"] > 0


def test_the_batched_timing_sets_both_paths_side_by_side_for_every_setting():
    import torch

    figures = bench.bench_batched(Options(device=torch.device("cpu"), rounds=2), ipcs=(1,), models=2, epochs=1,
                                  precisions=("fp32",))
    [row] = figures
    assert (row["ipc"], row["precision"], row["models"], row["epochs"]) == (1, "fp32", 2, 1)
    assert len(row["sequential_seconds_by_round"]) == len(row["batched_seconds_by_round"]) == 2
    ratios = [b / a for a, b in zip(row["sequential_seconds_by_round"], row["batched_seconds_by_round"])]
    assert row["batched_over_sequential"] == pytest.approx(sum(ratios) / 2)  # the median of two rounds' ratios
    assert row["sequential_seconds"] > 0 and row["batched_seconds"] > 0
