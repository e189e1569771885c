"""The paper's Table 1 as data: CIFAR-10 test accuracy (%), mean ± std, per ipc × pipc.

Lee, Lee & Kwak, *Practical Dataset Distillation Based on Deep Support Vectors*, Table 1. Columns as printed:
DM (the DM reference's numbers), DM* (DM in the authors' code), DSV (noise) and DSV (real) (DKKT alone, started
from noise or from real images; reported for pipc 50 only) and Ours (DKKT + gamma DM). pipc None means all.
"""

from __future__ import annotations

from pdd.method_spec import SPECS

PAPER = "Lee, Lee & Kwak, Practical Dataset Distillation Based on Deep Support Vectors, Table 1"

# What the paper's Table 1 cost, as far as the paper says (supplement A): a report sets its own budget beside it.
PAPER_BUDGET = {
    "iterations": "not stated (the DM reference runs 20,000)",
    "eval_epochs": "5,000 (SAM, lr 0.1, rho 0.001)",
    "eval_models": "not stated",
}

Stat = tuple[float, float]  # (mean, std) in percent

TABLE_1: dict[tuple[int, int | None], dict[str, Stat]] = {
    (1, 10): {"DM": (22.42, 0.43), "DM*": (23.26, 0.66), "Ours": (25.53, 0.45)},
    (1, 50): {"DM": (24.42, 0.29), "DM*": (25.83, 1.62), "DSV (noise)": (25.3, 0.5), "DSV (real)": (16.68, 0.49),
              "Ours": (28.20, 0.69)},
    (1, None): {"DM": (26.39, 0.98), "DM*": (27.08, 0.99), "Ours": (29.95, 0.23)},
    (3, 10): {"DM": (28.44, 0.30), "DM*": (26.04, 0.29), "Ours": (30.38, 0.47)},
    (3, 50): {"DM": (34.49, 0.65), "DM*": (34.26, 0.65), "DSV (noise)": (23.98, 0.21), "DSV (real)": (27.95, 0.61),
              "Ours": (37.41, 0.72)},
    (3, None): {"DM": (39.18, 0.46), "DM*": (37.37, 0.42), "Ours": (39.42, 0.37)},
    (10, 10): {"DM": (31.13, 0.45), "DM*": (29.77, 0.66), "Ours": (31.55, 0.72)},
    (10, 50): {"DM": (44.48, 0.43), "DM*": (41.27, 0.59), "DSV (noise)": (24.88, 1.29), "DSV (real)": (36.39, 0.52),
               "Ours": (44.51, 0.38)},
    (10, None): {"DM": (49.75, 0.36), "DM*": (45.98, 0.53), "Ours": (47.38, 0.93)},
    (50, 50): {"DM": (49.44, 0.56), "DM*": (48.05, 0.42), "DSV (noise)": (23.68, 1.35), "DSV (real)": (47.01, 0.80),
               "Ours": (51.12, 0.79)},
    (50, None): {"DM": (60.59, 0.41), "DM*": (56.34, 0.56), "Ours": (57.62, 0.33)},
}

# Which printed column a pdd method label is compared with (DM*, kept above as printed, faces none).
COLUMN_OF_LABEL = {label: column for spec in SPECS.values() if spec.paper_column
                   for label, column in zip(spec.labels, spec.paper_columns, strict=True)}

# Table 1 reports CIFAR-10 only (the key of pdd.sources' named dataset).
DATASET = "cifar10"


def paper_value(dataset: str | None, ipc: int, pipc: int | None, label: str) -> Stat | None:
    """The paper's (mean, std) for a method label in a cell of a dataset (a pdd.sources key, None when unknown), or
    None where Table 1 has no number: every cell of any other dataset."""
    column = COLUMN_OF_LABEL.get(label)
    return TABLE_1.get((ipc, pipc), {}).get(column) if column and dataset == DATASET else None
