"""What a set is worth beyond its accuracy: its gain over random real images, what it cost, other networks, and
whether it gives away private training images.

Gain over random follows DD-Ranking (Li et al. 2025), with its definitions on our rows:
- IOR (improvement over random) = acc(set) - acc(random), where random is the `random` method of the same cell:
  real images drawn at the same ipc from the same T' (subset seed) and judged under the same protocol. It is paired
  over the draws both were scored on, with its 95% interval. DD-Ranking draws its random images from the full
  training set and tunes each side's learning rate; we judge both with the row's protocol as it stands.
- HLR (hard-label recovery) = acc(full data) - acc(set), where a full-data accuracy of the same network and protocol
  is recorded (`pdd baseline full-data`); lower is better.
- LRS (label-robust score) = (e^a - e^-1) / (e - e^-1) with a = (IOR - HLR) / 2 on accuracies as fractions (lambda
  0.5, DD-Ranking's default): 0 to 1, higher is better.
Cost is per set: the trial's distillation plus this evaluation, in the seconds its rows recorded (on the device
they name) and in the FLOPs of pdd's FLOP model (`pdd sweep estimate`).
The leakage audit (pdd.audit) is read from the rows: distances from each synthetic image to its nearest private and
nearest test image, and the near copies, within thresholds set by how far apart distinct real images lie.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from pdd.evaluate import mean_std
from pdd.models import MODELS
from pdd.report.model import Table, TableCell
from pdd.report.outcomes import MAIN_MODEL, CellResult, Row, Sweep
from pdd.report.tables import DASH, cell_heads
from pdd.results import Status
from pdd.stats import Paired, paired

BASELINE = "random"
LRS_LAMBDA = 0.5

# The full-data accuracy (%) of a network under a protocol on the sweep's data, or None where none is recorded.
FullDataLookup = Callable[[str, str], float | None]


def no_full_data(protocol: str, arch: str) -> None:
    return None


@dataclass(frozen=True)
class Gain:
    ior: Paired | None
    hlr: float | None

    @property
    def lrs(self) -> float | None:
        if self.ior is None or self.hlr is None:
            return None
        a = LRS_LAMBDA * self.ior.mean / 100 - (1 - LRS_LAMBDA) * self.hlr / 100
        return (math.exp(a) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def gain(result: CellResult, baseline: CellResult, full_data: float | None) -> Gain:
    ior = paired(result.per_draw, baseline.per_draw) if result.test and baseline.test else None
    hlr = None if full_data is None or not result.test else full_data - mean_std(result.test)[0]
    return Gain(ior, hlr)


@dataclass(frozen=True)
class Cost:
    seconds: float  # mean over the chosen rows: distillation plus this evaluation
    flops: float | None
    devices: str

    def per_hour(self, points: float) -> float:
        return points / (self.seconds / 3600)


def cost(rows: list[Row]) -> Cost | None:
    timed = [row for row in rows if row["seconds_evaluate"] is not None]
    if not timed:
        return None
    seconds = statistics.fmean((row["seconds_distill"] or 0.0) + row["seconds_evaluate"] for row in timed)
    counted = [row for row in timed if row["flops_evaluate"] is not None]
    flops = statistics.fmean((row["flops_distill"] or 0.0) + row["flops_evaluate"] for row in counted) \
        if counted else None
    devices = ", ".join(sorted({(row["device"] or "unknown").split(":")[0].upper() for row in timed}))
    return Cost(seconds, flops, devices)


def gain_table(sweep: Sweep, full_data: FullDataLookup, table_id: str) -> Table:
    """Per cell and method: accuracy, gain over random (IOR with its interval, HLR, LRS) and cost per set."""
    headers = ["ipc", "pipc", "method", "test %", "IOR (points)", "95% interval", "draws", "HLR (points)", "LRS",
               "seconds per set", "PFLOP per set", "IOR points per hour"]
    reference = full_data(sweep.protocol, MAIN_MODEL)
    rows = []
    for cell in sweep.cells:
        baseline = sweep.result(cell, BASELINE)
        for label in sweep.labels:
            result = sweep.result(cell, label)
            if (cell, label) not in sweep.results or not result.test:
                continue
            rows.append([*cell_heads(cell), TableCell(label), accuracy(result.test),
                         *gain_cells(gain(result, baseline, reference), label == BASELINE),
                         *cost_cells(cost(result.chosen),
                                     None if label == BASELINE else gain(result, baseline, None).ior)])
    where = f"full data {reference:.2f}%" if reference is not None else "no full-data accuracy recorded"
    caption = (f"Gain over random real images ({sweep.protocol} protocol, ConvNet), as DD-Ranking defines it: IOR = "
               f"acc(set) − acc(random) paired over shared draws of T' (bold: interval above 0); HLR = acc(full "
               f"data) − acc(set) ({where}; `pdd baseline full-data` records it); LRS = (e^a − e^−1)/(e − e^−1), "
               f"a = (IOR − HLR)/2 on fractions. Cost per set: the trial's distillation plus this evaluation, mean "
               f"over the chosen config's draws, in recorded seconds and in the FLOP model's count.")
    return Table(table_id, "Gain over random and cost", headers, rows, caption)


def accuracy(values: list[float]) -> TableCell:
    mean, std = mean_std(values)
    return TableCell(f"{mean:.2f} ± {std:.2f}", sort=mean)


def gain_cells(value: Gain, is_baseline: bool) -> list[TableCell]:
    if is_baseline:
        return [TableCell("0 (the baseline)"), TableCell(DASH), TableCell(DASH), *hlr_cells(value)]
    if value.ior is None:
        return [TableCell(DASH), TableCell(DASH), TableCell("0"), *hlr_cells(value)]
    ior = value.ior
    above = ior.low > 0
    interval = DASH if math.isnan(ior.low) else f"[{ior.low:+.2f}, {ior.high:+.2f}]"
    return [TableCell(f"{ior.mean:+.2f}", bold=above, sort=ior.mean), TableCell(interval, bold=above),
            TableCell(str(ior.draws), sort=ior.draws), *hlr_cells(value)]


def hlr_cells(value: Gain) -> list[TableCell]:
    if value.hlr is None:
        return [TableCell(DASH), TableCell(DASH)]
    lrs = value.lrs
    return [TableCell(f"{value.hlr:.2f}", sort=value.hlr),
            TableCell(DASH if lrs is None else f"{lrs:.3f}", sort=lrs)]


def cost_cells(value: Cost | None, ior: Paired | None) -> list[TableCell]:
    if value is None:
        return [TableCell(DASH)] * 3
    flops = DASH if value.flops is None else f"{value.flops / 1e15:.3f}"
    rate = DASH if ior is None else f"{value.per_hour(ior.mean):+.1f}"
    return [TableCell(f"{value.seconds:,.0f} ({value.devices})", sort=value.seconds),
            TableCell(flops, sort=value.flops), TableCell(rate, sort=None if ior is None else value.per_hour(ior.mean))]


def cross_architecture_table(sweep: Sweep, table_id: str) -> Table | None:
    """Per cell and method: the chosen sets' test accuracy on every network they were judged on; None without any
    other network's rows. A ConvNet judged again at the other networks' epochs gets its own column, so every
    network can be compared at one budget."""
    order = list(MODELS)
    networks = sorted({(row["eval_model"], row["eval_epochs"]) for row in sweep.others if row["status"] == Status.OK},
                      key=lambda network: (order.index(network[0]), network[1]))
    if all(arch == MAIN_MODEL for arch, _ in networks):
        return None
    rows, main_epochs = [], set()
    for cell in sweep.cells:
        for label in sweep.labels:
            result = sweep.result(cell, label)
            if not result.test:
                continue
            main_epochs |= {row["eval_epochs"] for row in result.chosen}
            rows.append([*cell_heads(cell), TableCell(label), accuracy(result.test),
                         *(network_cell(sweep, result, arch, epochs) for arch, epochs in networks)])
    main = f"{MODELS[MAIN_MODEL].title} (main, {', '.join(f'{e:,}' for e in sorted(main_epochs))} ep)"
    headers = ["ipc", "pipc", "method", main, *(f"{MODELS[arch].title} ({epochs:,} ep)" for arch, epochs in networks)]
    caption = (f"Cross-architecture test accuracy (%), {sweep.protocol} protocol: the main table's chosen sets, each "
               f"judged by fresh networks of another architecture (mean ± std over their models and the draws of T' "
               f"they were judged on, which the cell names when fewer than the main table's).")
    return Table(table_id, "Other networks", headers, rows, caption)


def network_cell(sweep: Sweep, result: CellResult, arch: str, epochs: int) -> TableCell:
    chosen = {row["trial_id"] for row in result.chosen}
    judged = [row for row in sweep.others if row["trial_id"] in chosen and row["eval_model"] == arch
              and row["eval_epochs"] == epochs and row["status"] == Status.OK]
    if not judged:
        return TableCell(DASH)
    cell = accuracy([acc for row in judged for acc in row["test_acc"]])
    draws = len({row["subset_seed"] for row in judged})
    if draws < len(chosen):
        cell.note = f"{draws} of {len(chosen)} draws"
    return cell


def audit_table(sweep: Sweep, table_id: str) -> Table | None:
    """Per cell and method: near copies of private images, nearest-private distances and their ratio to the
    nearest-test ones, over the chosen config's draws; None when no row carries an audit."""
    headers = ["ipc", "pipc", "method", "near copies", "pixel L2 to private (median)", "private / test (pixel)",
               "cosine to private (median)", "private / test (feature)"]
    rows, thresholds = [], set()
    for cell in sweep.cells:
        for label in sweep.labels:
            audited = [row for row in sweep.result(cell, label).chosen if row["audit_images"] is not None]
            if not audited:
                continue
            thresholds |= {(row["audit_threshold_pixel"], row["audit_threshold_feature"], row["audit_features"])
                           for row in audited}
            copies = sum(row["audit_near_copies"] for row in audited)
            images = sum(row["audit_images"] for row in audited)
            rows.append([*cell_heads(cell), TableCell(label),
                         TableCell(f"{copies} of {images}", bold=copies > 0, sort=copies),
                         *(spread([row[name] for row in audited]) for name in (
                             "audit_pixel_median", "audit_pixel_ratio", "audit_feature_median",
                             "audit_feature_ratio"))])
    if not rows:
        return None
    # sets audited alike carry thresholds equal to the printed digits: each is named once
    limits = "; ".join(dict.fromkeys(f"pixel L2 {pixel:.2f}, cosine distance {feature:.4f} ({features})"
                                     for pixel, feature, features in sorted(thresholds)))
    caption = (f"Leakage audit of the chosen sets: each synthetic image's nearest private image (the training split, "
               f"validation included, less the T' images that were allowed to leave the edge) by pixel L2 on "
               f"normalised images and by cosine distance in a fixed random ConvNet's features, against its nearest "
               f"test image. A near copy lies within both thresholds: the 1% quantile of distinct real images' "
               f"distances to their nearest other real image ({limits}). A ratio far below 1 means the set sits "
               f"closer to the private images than to unseen ones. Mean over draws, with its range.")
    return Table(table_id, "Leakage audit", headers, rows, caption)


def spread(values: list[float]) -> TableCell:
    mean = statistics.fmean(values)
    text = f"{mean:.3g}" if len(values) == 1 else f"{mean:.3g} [{min(values):.3g}, {max(values):.3g}]"
    return TableCell(text, sort=mean)
