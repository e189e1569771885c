"""Sweep overhead: slot accounting on hand-made timestamps, where every figure can be worked out on paper."""

from __future__ import annotations

import pytest

from pdd.overhead import slot_overhead, trial_slots, tune_window


def test_two_slots_four_trials_every_figure_exact():
    # Driver 0..100 s on 2 slots. Slot A: 10-40, then 41-80. Slot B: 12-50, then 55-90.
    found = slot_overhead([(41, 80), (10, 40), (55, 90), (12, 50)], started_at=0, ended_at=100, slots=2)
    assert (found.slots, found.trials, found.wall_seconds) == (2, 4, 100)
    assert found.busy_slot_seconds == 30 + 38 + 39 + 35 == 142
    assert found.available_slot_seconds == 200
    assert found.utilisation == pytest.approx(0.71)
    assert found.outside == [10, 12, 1, 5], "in start order: start-up 10 and 12, then 1 and 5 between trials"
    assert (found.outside_median, found.outside_mean) == (7.5, 7.0)
    assert (found.startup_slot_seconds, found.between_slot_seconds, found.tail_slot_seconds) == (22, 6, 20 + 10)
    idle = found.startup_slot_seconds + found.between_slot_seconds + found.tail_slot_seconds
    assert idle == found.available_slot_seconds - found.busy_slot_seconds


def test_a_trial_takes_the_slot_that_freed_up_last():
    # Both slots are free at 55 (since 40 and since 50): the trial waited 5 s, not 15.
    found = slot_overhead([(0, 40), (0, 50), (55, 60)], started_at=0, ended_at=60, slots=2)
    assert found.outside == [0, 0, 5]
    assert (found.startup_slot_seconds, found.between_slot_seconds, found.tail_slot_seconds) == (0, 5, 20)
    assert found.utilisation == pytest.approx(95 / 120)


def test_an_unused_slot_is_start_up_for_the_whole_run_and_other_runs_trials_do_not_count():
    # 3 slots, driver 100..110; one trial of an earlier driver (50..60) and one ending after this one are ignored.
    found = slot_overhead([(50, 60), (102, 108), (105, 111)], started_at=100, ended_at=110, slots=3)
    assert found.trials == 1 and found.outside == [2]
    assert found.startup_slot_seconds == 2 + 10 + 10
    assert (found.between_slot_seconds, found.tail_slot_seconds) == (0, 2)
    assert found.utilisation == pytest.approx(6 / 30)


def test_more_overlapping_trials_than_slots_are_charged_nothing():
    # Two trials at once on one slot (clock skew between nodes, or a wrong slot count): no negative idle time.
    found = slot_overhead([(1, 5), (2, 6)], started_at=0, ended_at=10, slots=1)
    assert found.outside == [1, 0]
    assert found.busy_slot_seconds == 8


def test_no_trials_means_nothing_was_busy():
    found = slot_overhead([], started_at=0, ended_at=4, slots=2)
    assert (found.trials, found.utilisation, found.outside_median, found.startup_slot_seconds) == (0, 0, 0, 8)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one trial slot"):
        slot_overhead([(1, 2)], started_at=0, ended_at=4, slots=0)
    with pytest.raises(ValueError, match="before it started"):
        slot_overhead([], started_at=5, ended_at=4, slots=1)


@pytest.mark.parametrize(("available", "cpu", "gpu", "slots"), [
    ({"CPU": 2.0}, 1, 0, 2),
    ({"CPU": 2.0, "GPU": 1.0}, 0.5, 0.3, 3),  # the GPU is scarcer: 3 trials, not 4
    ({"CPU": 8.0, "GPU": 0.3}, 1, 0.1, 3),  # 0.3 / 0.1 is 2.9999999999999996 in floats
    ({"CPU": 2.0}, 3, 0, 0),
    ({"CPU": 4.0}, 1, 0.5, 0),  # asks for a GPU the cluster lacks
])
def test_slots_are_whole_trials_of_the_scarcest_resource(available, cpu, gpu, slots):
    assert trial_slots(available, cpu, gpu) == slots


def test_the_tune_window_runs_from_the_trials_started_mark_to_the_trials_ended_mark():
    marks = {"materials_ready": 18.0, "ray_ready": 22.0, "trials_started": 22.5, "trials_ended": 95.0}
    assert tune_window(marks) == (22.5, 95.0)
    assert tune_window({"ray_ready": 3.0}) is None  # a driver that never started Tune
    # Over Tune's run alone, the driver's start-up (0-22.5 s here) no longer counts as idle slot time.
    trials = [(23, 55), (24, 56), (57, 94), (58, 95)]
    whole, in_tune = slot_overhead(trials, 0, 95, 2), slot_overhead(trials, *tune_window(marks), 2)
    assert whole.busy_slot_seconds == in_tune.busy_slot_seconds == 32 + 32 + 37 + 37
    assert in_tune.utilisation == pytest.approx(138 / (2 * 72.5))
    assert whole.startup_slot_seconds - in_tune.startup_slot_seconds == pytest.approx(2 * 22.5)
