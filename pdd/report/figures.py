"""The report's figures as PNG bytes, drawn on matplotlib's Agg canvas (no display, no pyplot global state).

- synthetic images: each method's set for one cell, one row per method, as the paper's Fig. 2;
- spectra: the mean FFT magnitude of DSV, DM and PDD images, for the frequency argument of Fig. 3;
- accuracy against pipc: one line per ipc, one panel per method, the paper's values dashed;
- accuracy against evaluation epochs: the chosen sets judged at several epoch counts (`pdd evaluate`);
- search: the α/γ points Optuna tried per cell and method, coloured by validation accuracy;
- closest pairs: the leakage audit's synthetic images nearest a private training image, beside that image.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as Canvas

from pdd.audit import PAIRS_FILE, load_pairs
from pdd.config import cell_name, pipc_text
from pdd.data import Normalization
from pdd.errors import PddError
from pdd.evaluate import mean_std
from pdd.paper import paper_value
from pdd.report.model import Figure
from pdd.report.outcomes import MAIN_MODEL, CellKey, CellResult, Row, Sweep, cell_order
from pdd.results import ARTIFACTS, Status
from pdd.sources import dataset_named
from pdd.synthetic import read_synthetic_file

FIGURE_CELL: CellKey = (1, 50)  # the paper's Fig. 2 shows ipc 1, pipc 50
SPECTRUM_LABELS = ("DSV (noise)", "DSV (real)", "DM", "PDD")
DPI = 110
GAP = 2  # white pixels between images in a strip


class Skipped(Exception):
    """A figure this results directory cannot give; the message says why."""


@dataclass
class SyntheticSet:
    images: np.ndarray  # [N, C, H, W] in [0, 1]
    labels: np.ndarray
    classes: list[str] | None


def figures(sweep: Sweep, prefix: str) -> tuple[list[Figure], list[str]]:
    """Every figure the directory allows, and for each one it does not, a remark saying why."""
    drawn, remarks = [], []
    for name, (title, draw) in FIGURES.items():
        try:
            caption, canvas = draw(sweep)
        except Skipped as why:
            remarks.append(f"{title}: not drawn, {why}")
            continue
        drawn.append(Figure(f"{prefix}{name}.png", title, caption, png(canvas)))
    return drawn, remarks


def synthetic_images(sweep: Sweep) -> tuple[str, Canvas]:
    cell = figure_cell(sweep)
    sets = synthetic_sets(sweep, cell, sweep.labels)
    canvas = Canvas(figsize=(9, 0.95 * len(sets) + 0.5), layout="constrained")
    axes = canvas.subplots(len(sets), 1, squeeze=False)[:, 0]
    for ax, (label, synthetic) in zip(axes, sets.items(), strict=True):
        strip, classes = class_strip(synthetic)
        # The colour map and range only apply to one channel: a grayscale strip keeps its pixel values, not stretched.
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        pitch = (strip.shape[1] + GAP) / len(classes)
        ax.set_xticks([pitch * i + (pitch - GAP) / 2 for i in range(len(classes))], classes if ax is axes[0] else [])
        ax.xaxis.set_ticks_position("top")
        ax.tick_params(length=0, labelsize=8)
    return f"The first synthetic image of each class per method, {cell_name(*cell)} (the chosen config).", canvas


def spectra(sweep: Sweep) -> tuple[str, Canvas]:
    cell = figure_cell(sweep)
    sets = synthetic_sets(sweep, cell, [label for label in SPECTRUM_LABELS if label in sweep.labels])
    spectrum = {label: mean_spectrum(synthetic.images) for label, synthetic in sets.items()}
    logs = {label: np.log10(np.maximum(values, 1e-12)) for label, values in spectrum.items()}  # a flat set has 0
    low, high = min(np.nanmin(v) for v in logs.values()), max(np.nanmax(v) for v in logs.values())
    canvas = Canvas(figsize=(2.4 * len(sets) + 3.6, 2.9), layout="constrained")
    axes = canvas.subplots(1, len(sets) + 1, width_ratios=[1] * len(sets) + [1.5])
    for ax, (label, values) in zip(axes[:-1], logs.items(), strict=True):
        image = ax.imshow(values, cmap="magma", vmin=low, vmax=high)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    canvas.colorbar(image, ax=axes[:-1].tolist(), shrink=0.8, label="log10 |FFT|")
    profile_ax = axes[-1]
    for label, values in spectrum.items():
        profile = radial_profile(values)
        profile_ax.plot(range(1, len(profile) + 1), profile, label=label)
    profile_ax.set(yscale="log", xlabel="frequency (cycles per image)", ylabel="mean |FFT|")
    profile_ax.legend(fontsize=8)
    return (f"Mean FFT magnitude of the synthetic images, {cell_name(*cell)}, centred on frequency zero (left out: "
            "it holds only the brightness), and its radial average: the paper's Fig. 3 argues DSVs hold low "
            "frequencies and DM images high ones."), canvas


def accuracy_vs_pipc(sweep: Sweep) -> tuple[str, Canvas]:
    results = [result for result in sweep.results.values() if result.test]
    if not results:
        raise Skipped("no cell and method has a chosen config with test accuracy")
    labels = [label for label in sweep.labels if any(o.label == label for o in results)]
    pipcs = sorted({o.cell[1] for o in results}, key=lambda pipc: cell_order((0, pipc)))
    ipcs = sorted({o.cell[0] for o in results})
    colours = {ipc: f"C{i}" for i, ipc in enumerate(ipcs)}
    dataset = dataset_named(sweep.values("dataset_name"))
    key = dataset.key if dataset else None
    canvas = Canvas(figsize=(min(3.2 * len(labels), 13), 3.2), layout="constrained")
    axes = canvas.subplots(1, len(labels), sharey=True, squeeze=False)[0]
    for ax, label in zip(axes, labels, strict=True):
        for ipc in ipcs:
            ours = [(pipcs.index(o.cell[1]), *mean_std(o.test)) for o in results
                    if o.label == label and o.cell[0] == ipc]
            if ours:
                x, mean, std = zip(*sorted(ours), strict=True)
                ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=colours[ipc], label=f"ipc {ipc}")
            paper = [(i, value[0]) for i, pipc in enumerate(pipcs) if (value := paper_value(key, ipc, pipc, label))]
            if paper:
                ax.plot(*zip(*paper, strict=True), linestyle="--", marker="x", color=colours[ipc], alpha=0.6)
        ax.set_xticks(range(len(pipcs)), [pipc_text(pipc) for pipc in pipcs])
        ax.set(title=label, xlabel="pipc")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy %")
    return ("Test accuracy of the chosen config against pipc, one line per ipc (mean ± std over evaluation models); "
            "dashed: the paper's Table 1."), canvas


def accuracy_vs_epochs(sweep: Sweep) -> tuple[str, Canvas]:
    """Test accuracy of the chosen sets against the evaluation epochs they were trained for (the trial's own
    evaluation and later `pdd evaluate` ones), for every cell and method judged at two or more epoch counts."""
    curves = {}
    for (cell, label), result in sorted(sweep.results.items(), key=lambda item: (cell_order(item[0][0]), item[0][1])):
        chosen = {row["trial_id"] for row in result.chosen}
        judged = [row for row in [*result.chosen, *sweep.others] if row["trial_id"] in chosen
                  and row["eval_model"] == MAIN_MODEL and row["status"] == Status.OK]
        by_epochs: dict[int, list[Row]] = {}
        for row in judged:
            by_epochs.setdefault(row["eval_epochs"], []).append(row)
        if len(by_epochs) >= 2:
            curves[cell, label] = {epochs: rows for epochs, rows in sorted(by_epochs.items())}
    if not curves:
        raise Skipped("no chosen set was judged at two or more epoch counts (`pdd evaluate SET --eval-epochs N`)")
    canvas = Canvas(figsize=(6.5, 3.6), layout="constrained")
    ax = canvas.subplots()
    for (cell, label), by_epochs in curves.items():
        points = [(epochs, *mean_std([acc for row in rows for acc in row["test_acc"]]))
                  for epochs, rows in by_epochs.items()]
        x, mean, std = zip(*points, strict=True)
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=f"{label}, {cell_name(*cell)}")
    ax.set(xscale="log", xlabel="evaluation epochs", ylabel="test accuracy %")
    ax.legend(fontsize=8)
    draws = sorted({row["subset_seed"] for rows in curves.values() for group in rows.values() for row in group})
    return (f"Test accuracy of the chosen sets against the epochs each evaluation model trained for, {sweep.protocol} "
            f"protocol (mean ± std over evaluation models and the draws judged at that count: subset seeds "
            f"{', '.join(map(str, draws))}). Where two methods' order changes with the epochs, a cheap evaluation "
            f"would rank them differently from a long one."), canvas


def search_scatter(sweep: Sweep) -> tuple[str, Canvas]:
    # Only a search that moved both weights makes a scatter; a method that ignores one searched a line.
    panels = [o for o in sorted(sweep.results.values(), key=lambda o: (cell_order(o.cell), o.label))
              if all(len({row[name] for row in o.search}) > 1 for name in ("alpha", "gamma"))]
    if not panels:
        raise Skipped("no search-stage rows that vary α and γ")
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    canvas = Canvas(figsize=(4.2 * columns, 3.3 * rows), layout="constrained")
    grid = list(canvas.subplots(rows, columns, squeeze=False).flat)
    for ax, result in zip(grid, panels, strict=False):
        draw_search(canvas, ax, result)
    for ax in grid[len(panels):]:
        ax.set_visible(False)
    return ("The α and γ each Optuna trial tried, coloured by validation accuracy (%); x: failed trials; "
            "ring: the chosen config."), canvas


def draw_search(canvas: Canvas, ax, result: CellResult) -> None:
    ok = [row for row in result.search if row["status"] == Status.OK]
    failed = [row for row in result.search if row["status"] != Status.OK]
    if ok:
        points = ax.scatter([r["alpha"] for r in ok], [r["gamma"] for r in ok], c=[r["val_mean"] for r in ok],
                            cmap="viridis", s=30)
        canvas.colorbar(points, ax=ax, label="val acc %")
    if failed:
        ax.scatter([r["alpha"] for r in failed], [r["gamma"] for r in failed], marker="x", color="grey", s=30)
    if result.config:
        ax.scatter([result.config["alpha"]], [result.config["gamma"]], s=180, facecolors="none",
                   edgecolors="red", linewidths=1.5)
    alphas = [r["alpha"] for r in result.search]
    gammas = [r["gamma"] for r in result.search]
    ax.set(xscale="log" if min(alphas) > 0 else "linear", yscale="log" if min(gammas) > 0 else "linear",
           xlabel="α", ylabel="γ", title=f"{result.label}, {cell_name(*result.cell)}")
    ax.title.set_fontsize(9)


def closest_pairs(sweep: Sweep) -> tuple[str, Canvas]:
    from pdd.report.audit_figures import closest_pairs_figure  # it draws its tiles with this module's GAP

    cell = figure_cell(sweep)
    methods = {}
    for label in sweep.labels:
        for row in sweep.result(cell, label).chosen:
            folder = sweep.directory / ARTIFACTS / row["trial_id"]
            synthetic = load_set(row, sweep.directory)
            if synthetic is None or not (folder / PAIRS_FILE).is_file():
                continue
            try:
                methods[label] = (synthetic.images, load_pairs(folder / PAIRS_FILE))
            except PddError:
                continue
            break
    if not methods:
        raise Skipped(f"no audited set for {cell_name(*cell)} (looked for {ARTIFACTS}/<trial_id>/{PAIRS_FILE})")
    caption, canvas = closest_pairs_figure(methods)
    return f"{cell_name(*cell)}, the chosen config's first draw. " + caption, canvas


FIGURES: dict[str, tuple[str, Callable[[Sweep], tuple[str, Canvas]]]] = {
    "synthetic-images": ("Synthetic images", synthetic_images),
    "spectra": ("Frequency content", spectra),
    "accuracy-vs-pipc": ("Accuracy against pipc", accuracy_vs_pipc),
    "accuracy-vs-epochs": ("Accuracy against evaluation epochs", accuracy_vs_epochs),
    "search": ("Hyperparameter search", search_scatter),
    "closest-pairs": ("Leakage audit: closest pairs", closest_pairs),
}


def figure_cell(sweep: Sweep) -> CellKey:
    """Fig. 2's cell when the sweep has it, else the cell with the most methods that have a chosen config."""
    if FIGURE_CELL in sweep.cells:
        return FIGURE_CELL
    return max(sweep.cells, key=lambda cell: sum(bool(sweep.result(cell, label).chosen) for label in sweep.labels))


def synthetic_sets(sweep: Sweep, cell: CellKey, labels: list[str]) -> dict[str, SyntheticSet]:
    """Per label, the first readable synthetic set of the chosen config's rows."""
    sets = {}
    for label in labels:
        found = (load_set(row, sweep.directory) for row in sweep.result(cell, label).chosen)
        synthetic = next((s for s in found if s is not None), None)
        if synthetic is not None:
            sets[label] = synthetic
    if not sets:
        raise Skipped(f"no readable synthetic set for {cell_name(*cell)} (looked at each row's synthetic_path and at "
                      f"{sweep.directory}/{ARTIFACTS}/<trial_id>/synthetic.pt)")
    return sets


def load_set(row: Row, directory: Path) -> SyntheticSet | None:
    # The stored path is relative to where the trial ran; a copied results directory still has its artifacts.
    for path in (Path(row["synthetic_path"] or ""), directory / ARTIFACTS / row["trial_id"] / "synthetic.pt"):
        if not path.is_file():
            continue
        try:
            images, labels, meta = read_synthetic_file(path)
        except PddError:  # a foreign or truncated file: try the next place
            continue
        if "mean" not in meta or "std" not in meta:
            continue  # not a trial's set: without the statistics it was normalised with, its pixels are unknown
        # The trial recorded the dataset's statistics: pixels are shown as the dataset has them.
        normalization = Normalization(tuple(meta["mean"]), tuple(meta["std"]))
        return SyntheticSet(normalization.denormalize(images.float()).numpy(), labels.numpy(), meta.get("classes"))
    return None


def class_strip(synthetic: SyntheticSet) -> tuple[np.ndarray, list[str]]:
    """One strip [H, W', C] of each class's first image with white gaps, and the class names."""
    present = sorted(set(synthetic.labels.tolist()))
    tiles = [synthetic.images[np.flatnonzero(synthetic.labels == c)[0]].transpose(1, 2, 0) for c in present]
    gap = np.ones((tiles[0].shape[0], GAP, tiles[0].shape[2]))
    strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    names = synthetic.classes or []
    return strip.squeeze(), [names[c] if c < len(names) else str(c) for c in present]


def mean_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean |FFT| over images and channels, zero frequency at the centre and left out (NaN).

    Each image's mean is removed first: it only holds the brightness, which would swamp the scale.
    """
    centred = images - images.mean(axis=(-2, -1), keepdims=True)
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(centred)).mean(axis=(0, 1)))
    height, width = spectrum.shape
    spectrum[height // 2, width // 2] = np.nan
    return spectrum


def radial_profile(spectrum: np.ndarray) -> np.ndarray:
    """Mean magnitude per integer distance 1, 2, ... from the centre, up to the highest frequency along an axis."""
    height, width = spectrum.shape
    y, x = np.indices(spectrum.shape)
    radius = np.hypot(y - height // 2, x - width // 2).round().astype(int).ravel()
    keep = radius > 0
    sums = np.bincount(radius[keep] - 1, weights=spectrum.ravel()[keep])
    return (sums / np.bincount(radius[keep] - 1))[: min(height, width) // 2]


def png(canvas: Canvas) -> bytes:
    FigureCanvasAgg(canvas)  # attaches the Agg canvas to the figure
    buffer = io.BytesIO()
    canvas.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
