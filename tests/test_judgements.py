"""Gain over random (DD-Ranking's IOR, HLR, LRS), cost per set, and the cross-architecture table, on fixture rows."""

import math
from pathlib import Path

import pytest
from report_fixtures import make_row, write_sweep

from pdd.report.build import build_report
from pdd.report.judgements import Gain, audit_table, cost, cross_architecture_table, gain_table, no_full_data
from pdd.report.outcomes import read_sweep_results
from pdd.results import ScoredBy, Stage, write_rows
from pdd.stats import paired


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("results") / "fixture-a")


def cells(table):
    return {(row[0].text, row[1].text, row[2].text): [cell.text for cell in row[3:]] for row in table.rows}


def test_ior_is_paired_with_random_over_shared_draws(sweep_dir):
    [sweep] = read_sweep_results(sweep_dir)
    rows = cells(gain_table(sweep, no_full_data, "gain"))
    # DM 22 and random 15 at (1, 10), shifted alike per draw: +7 on each of the three draws
    assert rows["1", "10", "DM"][:4] == ["22.00 ± 0.97", "+7.00", "[+7.00, +7.00]", "3"]
    # PDD's draw 2 failed: paired on draws 0 and 1 only, where it scores 25 and 26 against random's 14 and 15
    assert rows["1", "10", "PDD"][1:4] == ["+11.00", "[+11.00, +11.00]", "2"]
    assert rows["1", "10", "random"][1] == "0 (the baseline)"
    # (10, 50) has no random row: nothing to gain over
    assert rows["10", "50", "PDD"][1:4] == ["—", "—", "0"]
    # no full-data accuracy recorded: no HLR or LRS; the fixture rows record no seconds: no cost
    assert rows["1", "10", "DM"][4:] == ["—"] * 5


def test_a_recorded_full_data_accuracy_gives_hlr_and_lrs(sweep_dir):
    [sweep] = read_sweep_results(sweep_dir)
    rows = cells(gain_table(sweep, lambda protocol, arch: 60.0 if (protocol, arch) == ("paper", "convnet") else None,
                            "gain"))
    lrs = (math.exp(0.5 * 0.07 - 0.5 * 0.38) - math.exp(-1)) / (math.exp(1) - math.exp(-1))
    assert rows["1", "10", "DM"][4:6] == ["38.00", f"{lrs:.3f}"]


def test_hlr_and_lrs_follow_dd_rankings_formula():
    ior = paired({0: 30.0, 1: 32.0}, {0: 20.0, 1: 22.0})
    value = Gain(ior, hlr=50.0)
    a = 0.5 * 0.10 - 0.5 * 0.50
    assert value.lrs == pytest.approx((math.exp(a) - math.exp(-1)) / (math.exp(1) - math.exp(-1)))
    assert value.lrs == pytest.approx(0.1918, abs=1e-4)  # (e^-0.2 - e^-1) / (e - e^-1)
    assert Gain(paired({0: 100.0}, {0: 0.0}), hlr=-100.0).lrs == pytest.approx(1.0), "the top of the scale"
    assert Gain(ior, hlr=None).lrs is None


def test_cost_adds_distillation_to_the_evaluation_and_names_the_device():
    rows = [{"seconds_distill": 100.0, "seconds_evaluate": 260.0, "flops_distill": 2e15, "flops_evaluate": 1e15,
             "device": "cpu"},
            {"seconds_distill": 140.0, "seconds_evaluate": 220.0, "flops_distill": 2e15, "flops_evaluate": 3e15,
             "device": "cpu"}]
    value = cost(rows)
    assert (value.seconds, value.flops, value.devices) == (360.0, 4e15, "CPU")
    assert value.per_hour(5.0) == pytest.approx(50.0), "5 points in a tenth of an hour"
    assert cost([{"seconds_distill": None, "seconds_evaluate": None}]) is None


def test_the_cross_architecture_table_shows_each_network_the_chosen_sets_were_judged_on(tmp_path):
    directory = write_sweep(tmp_path / "fixture-a")
    [sweep] = read_sweep_results(directory)
    assert cross_architecture_table(sweep, "networks") is None
    chosen = sweep.result((1, 10), "DM").chosen
    again = make_row("fixture-a", Stage.CONFIRM, (1, 10), "DM", chosen[0]["alpha"], chosen[0]["gamma"],
                     chosen[0]["subset_seed"], 20.0) | {"trial_id": chosen[0]["trial_id"], "eval_epochs": 300,
                                                                 "scored_by": ScoredBy.EVALUATE}
    write_rows(directory, [again], evaluation="convnet-300")
    [sweep] = read_sweep_results(directory)
    assert cross_architecture_table(sweep, "networks") is None, "a ConvNet at other epochs alone is no other network"
    for row in chosen[:2]:
        other = make_row("fixture-a", Stage.CONFIRM, (1, 10), "DM", row["alpha"], row["gamma"], row["subset_seed"],
                         10.0)
        other |= {"trial_id": row["trial_id"], "eval_model": "alexnet", "eval_epochs": 300}
        write_rows(directory, [other], evaluation="alexnet")
    [sweep] = read_sweep_results(directory)
    table = cross_architecture_table(sweep, "networks")
    assert table.headers[3:] == [f"ConvNet (main, {chosen[0]['eval_epochs']:,} ep)", "ConvNet (300 ep)",
                                 "AlexNet (300 ep)"], "the registry's order, ConvNet first"
    dm = next(row for row in table.rows if (row[0].text, row[1].text, row[2].text) == ("1", "10", "DM"))
    assert dm[3].text == "22.00 ± 0.97"
    # draws 0 and 1 score 10 - 1 and 10 + 0, each over three models shifted by -0.5, 0, +0.5
    assert (dm[5].text, dm[5].note) == ("9.50 ± 0.71", "2 of 3 draws")  # sample std: sqrt(2.5 / 5)
    pdd = next(row for row in table.rows if (row[0].text, row[1].text, row[2].text) == ("1", "10", "PDD"))
    assert pdd[5].text == "—"
    assert any(t.id.endswith("networks") for t in build_report([directory]).sections[0].tables)


def test_the_audit_table_counts_near_copies_over_the_chosen_draws(tmp_path):
    directory = write_sweep(tmp_path / "fixture-a")
    [sweep] = read_sweep_results(directory)
    assert audit_table(sweep, "audit") is None, "rows without an audit give no table"
    for k, row in enumerate(sweep.result((1, 10), "DM").chosen):
        audited = row | {"audit_images": 10, "audit_near_copies": k, "audit_threshold_pixel": 20.0,
                         "audit_threshold_feature": 0.03, "audit_features": "random-convnet", "audit_pixel_median": 30.0
                         + k, "audit_pixel_ratio": 0.9, "audit_feature_median": 0.2, "audit_feature_ratio": 1.0}
        write_rows(directory, [audited])
    [sweep] = read_sweep_results(directory)
    [row] = audit_table(sweep, "audit").rows
    assert [cell.text for cell in row] == ["1", "10", "DM", "3 of 30", "31 [30, 32]", "0.9 [0.9, 0.9]",
                                           "0.2 [0.2, 0.2]", "1 [1, 1]"]
    assert row[3].bold, "a set with a near copy stands out"


def test_the_epochs_figure_draws_sets_judged_at_several_epoch_counts(tmp_path):
    from pdd.report.figures import Skipped, accuracy_vs_epochs

    directory = write_sweep(tmp_path / "fixture-a")
    [sweep] = read_sweep_results(directory)
    with pytest.raises(Skipped, match="two or more epoch counts"):
        accuracy_vs_epochs(sweep)
    row = sweep.result((1, 10), "DM").chosen[0]
    later = make_row("fixture-a", Stage.CONFIRM, (1, 10), "DM", row["alpha"], row["gamma"], row["subset_seed"], 30.0)
    write_rows(directory, [later | {"trial_id": row["trial_id"], "scored_by": "evaluate", "eval_epochs": 5000}],
               evaluation="5000")
    [sweep] = read_sweep_results(directory)
    caption, canvas = accuracy_vs_epochs(sweep)
    [ax] = canvas.axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["DM, ipc=1,pipc=10"]
    assert "subset seeds 0, 1, 2" in caption
