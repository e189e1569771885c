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
