"""The benchmark's start-up timing stops a real trial at its first distillation iteration."""

from pdd import bench
from pdd.bench import Options


def test_startup_times_cold_and_warm_starts_up_to_the_first_iteration(cifar_slice, smoke_teacher):
    import torch

    timed = bench.bench_startup(str(cifar_slice), smoke_teacher, Options(device=torch.device("cpu")),
                                 val_per_class=5)
    assert set(timed) == {"cold_seconds", "warm_seconds"}
    assert all(seconds > 0 for seconds in timed.values())
