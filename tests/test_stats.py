import math

import pytest

from pdd.stats import paired


def test_the_paired_interval_is_the_t_interval_of_the_per_draw_differences():
    a = {0: 20.0, 1: 22.0, 2: 21.0, 3: 23.5, 4: 19.5}
    b = {0: 18.0, 1: 21.0, 2: 20.5, 3: 20.0, 4: 19.0}
    result = paired(a, b)
    assert result.differences == (2.0, 1.0, 0.5, 3.5, 0.5)
    assert result.mean == pytest.approx(1.5)
    # sd of the differences 1.2748, t(0.975, 4) = 2.7764: half-width 2.7764 * 1.2748 / sqrt(5) = 1.5829
    assert (result.low, result.high) == pytest.approx((1.5 - 1.58286, 1.5 + 1.58286), abs=1e-4)
    assert (result.wins, result.losses, result.draws) == (5, 0, 5)
    assert not result.significant  # every draw won, yet the interval reaches below 0


def test_only_shared_draws_count_and_a_clear_loss_is_significant():
    a = {0: 10.0, 1: 11.0, 2: 10.5, 7: 50.0}
    b = {0: 14.0, 1: 14.5, 2: 14.2, 9: 0.0}
    result = paired(a, b)
    assert result.seeds == (0, 1, 2)
    assert result.high < 0 and result.significant and result.losses == 3


def test_one_draw_has_no_interval_and_equal_differences_collapse_it():
    one = paired({0: 2.0}, {0: 1.0})
    assert one.mean == 1.0 and math.isnan(one.low) and not one.significant
    same = paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})
    assert (same.low, same.high) == (1.0, 1.0) and same.significant
    assert paired({0: 1.0}, {1: 1.0}) is None
