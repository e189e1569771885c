"""Fixture results for the report tests, built and written with pdd.results like real trials.

The numbers are chosen so each expected table entry can be worked out by hand: a confirmed config's row for
subset seed s scores base + SUBSET_SHIFT[s] + EVAL_SHIFT[k] on evaluation model k (validation VAL_GAIN higher), so
the pooled mean over 3 × 3 models is the base and the pooled std is sqrt(7.5 / 8) = 0.97.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pdd.config import TrialConfig, pipc_text
from pdd.results import ARTIFACTS, Stage, Status, trial_row, write_rows

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SUBSET_SHIFT = {0: -1.0, 1: 0.0, 2: 1.0}
EVAL_SHIFT = (-0.5, 0.0, 0.5)
TEACHER_AGREEMENT = {0: 1.0, 1: 1.0, 2: 0.9}  # the share of a set's images the teacher assigns to their own class
VAL_GAIN = 2.0
LABEL_METHOD = {"DM": ("dm", "real"), "DSV (noise)": ("dsv", "noise"), "DSV (real)": ("dsv", "real"),
                "PDD": ("pdd", "noise"), "random": ("random", "real")}

# (cell, label) -> (base test accuracy, alpha, gamma) of the confirmed config.
CONFIRMED = {
    ((1, 10), "DM"): (22.0, 0.1, 0.001),
    ((1, 10), "PDD"): (26.0, 0.1, 0.001),          # subset seed 2 diverges: pooled over seeds 0 and 1 only
    ((1, 10), "random"): (15.0, 0.1, 0.001),
    ((1, 50), "DM"): (24.0, 0.01, 0.001),
    ((1, 50), "DSV (noise)"): (25.5, 0.02, 0.001),
    ((1, 50), "DSV (real)"): (17.0, 0.01, 0.001),
    ((1, 50), "PDD"): (28.0, 0.02, 0.003),
    ((1, 50), "random"): (16.0, 0.01, 0.001),
    ((1, None), "PDD"): (30.0, 0.001, 0.001),
    ((1, None), "random"): (30.0, 0.001, 0.001),   # a tie: both are bold
    ((10, 50), "DSV (real)"): (36.0, 0.01, 0.001),
    ((10, 50), "PDD"): (45.0, 0.01, 0.001),
}
PARTIAL_FAILURE = ((1, 10), "PDD", 2)
ALL_FAILED = ((10, 50), "DSV (noise)")             # every confirm row diverged: "—"
SEARCH_ONLY = ((10, 50), "DM")                     # searched, never confirmed: "—"
SEARCHED = [((1, 50), "PDD"), ((10, 50), "PDD"), ((10, 50), "DM"), ((1, 50), "DSV (noise)")]
# What each method's search moves: PDD both weights, DSV only α, DM neither (its search is over init).
SEARCH_MOVES = {"PDD": (True, True), "DSV (noise)": (True, False), "DM": (False, False)}
# (ipc=1, pipc=all) has no DM row at all: a missing cell.
REASON = "loss_stat is nan at iteration 40 | primal 2.31"  # the | must not break a Markdown table
SEARCH_GRID = [(0.001, 0.0003), (0.003, 0.01), (0.01, 0.0001), (0.02, 0.003), (0.05, 0.001), (0.1, 0.03)]


def write_sweep(directory: Path, sweep_id: str = "fixture-a", shift: float = 0.0) -> Path:
    """A finished sweep: search rows, confirm rows over three subset seeds, failures, a decoy config, .pt sets."""
    rows = []
    for (cell, label), (base, alpha, gamma) in CONFIRMED.items():
        for seed in SUBSET_SHIFT:
            score = None if (cell, label, seed) == PARTIAL_FAILURE else base + shift
            rows.append(make_row(sweep_id, Stage.CONFIRM, cell, label, alpha, gamma, seed, score))
    # A second confirmed DM config at (1, 50) with better test but worse validation accuracy: it must not be chosen.
    rows += [make_row(sweep_id, Stage.CONFIRM, (1, 50), "DM", 0.05, 0.002, seed, 30.0 + shift, val_gain=-8.0)
             for seed in SUBSET_SHIFT]
    rows += [make_row(sweep_id, Stage.CONFIRM, ALL_FAILED[0], ALL_FAILED[1], 0.01, 0.001, seed, None)
             for seed in SUBSET_SHIFT]
    for cell, label in SEARCHED:
        moves_alpha, moves_gamma = SEARCH_MOVES[label]
        for i, (alpha, gamma) in enumerate(SEARCH_GRID):
            alpha, gamma = alpha if moves_alpha else 0.01, gamma if moves_gamma else 0.001
            test = None if i == len(SEARCH_GRID) - 1 else 20.0 + i + shift
            rows.append(make_row(sweep_id, Stage.SEARCH, cell, label, alpha, gamma, 0, test, eval_seeds=1))
    for row in rows:
        write_rows(directory, [row])
    write_synthetic_sets(directory, [row for row in rows if row["cell"] == "ipc=1,pipc=50"
                                     and row["stage"] == Stage.CONFIRM and row["subset_seed"] == 0])
    return directory


def write_local_trials(directory: Path, dataset_name: str = "CIFAR-10 (JPEG copy)") -> Path:
    """What `pdd trial` leaves: stage 'trial', one subset seed, two configs of PDD at one cell."""
    for alpha, base, val_gain in ((0.1, 25.0, 2.0), (0.01, 27.0, 1.0)):
        write_rows(directory, [make_row("local", Stage.TRIAL, (1, 10), "PDD", alpha, 0.001, 0, base,
                                        val_gain=val_gain, dataset_name=dataset_name)])
    write_rows(directory, [make_row("local", Stage.TRIAL, (1, 10), "DM", 0.1, 0.001, 0, 21.0,
                                    dataset_name=dataset_name)])
    return directory


_counter = itertools.count()


def make_row(sweep_id: str, stage: Stage, cell: tuple[int, int | None], label: str, alpha: float, gamma: float,
             subset_seed: int, base: float | None, val_gain: float = VAL_GAIN, eval_seeds: int = 3,
             dataset_name: str = "CIFAR-10 (JPEG copy)") -> dict[str, Any]:
    """One trial's row; base None makes a failed (diverged) trial."""
    ipc, pipc = cell
    method, init = LABEL_METHOD[label]
    config = TrialConfig(method=method, ipc=ipc, pipc=pipc, alpha=alpha, gamma=gamma, init=init,
                         subset_seed=subset_seed, data={"source": "fixture"})
    trial_id = f"{sweep_id}_{stage}_{method}_{init}_ipc{ipc}_pipc{pipc_text(pipc)}_{next(_counter)}"
    provenance = {"git_commit": "0123456789abcdef0123", "dataset_name": dataset_name,
                  "dataset_hash": "d" * 16, "device": "cpu",
                  "finished_at": datetime(2025, 11, 24, 8, 30 + subset_seed, tzinfo=UTC)}
    if base is None:
        return trial_row(config, trial_id, sweep_id, stage, Status.FAILED, config.eval.primary, reason=REASON,
                         **provenance)
    test = [base + SUBSET_SHIFT[subset_seed] + EVAL_SHIFT[k] for k in range(eval_seeds)]
    val = [acc + val_gain for acc in test]
    return trial_row(config, trial_id, sweep_id, stage, Status.OK, config.eval.primary,
                     eval_seeds=list(range(eval_seeds)), test_acc=test, val_acc=val, test_mean=sum(test) / len(test),
                     val_mean=sum(val) / len(val), test_std=0.0, val_std=0.0,
                     teacher_agreement=TEACHER_AGREEMENT[subset_seed] if method in ("dsv", "pdd") else None,
                     synthetic_path=f"results/moved-away/{trial_id}/synthetic.pt", **provenance)


def write_synthetic_sets(directory: Path, rows: list[dict[str, Any]]) -> None:
    """Ten 32x32 images per set: DSV smooth (low frequencies), DM noisy (high ones), PDD their mean.

    DSV and PDD sets are stored at the row's absolute synthetic_path; the others only under the results
    directory's _artifacts/<trial_id>/, where a report finds them after the directory was copied.
    """
    generator = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.randn(10, 3, 4, 4, generator=generator), size=32, mode="bilinear")
    noisy = torch.randn(10, 3, 32, 32, generator=generator)
    images = {"DSV (noise)": smooth, "DSV (real)": smooth * 0.5, "DM": noisy * 0.8, "PDD": (smooth + noisy) / 2,
              "random": F.avg_pool2d(noisy, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)}
    labels = torch.arange(10)
    for row in rows:
        label = next(name for name, (method, init) in LABEL_METHOD.items()
                     if (method, init) == (row["method"], row["init"]))
        if label.startswith("DSV") or label == "PDD":
            path = directory.parent / "elsewhere" / row["trial_id"] / "synthetic.pt"
            row["synthetic_path"] = str(path.resolve())
            write_rows(directory, [row])
        else:
            path = directory / ARTIFACTS / row["trial_id"] / "synthetic.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"classes": CLASSES, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}
        torch.save({"images": images[label], "labels": labels, "meta": meta}, path)
