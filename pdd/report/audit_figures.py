"""The leakage audit's figure (pdd.audit): per method, the synthetic images closest to a private training image,
each beside that image with their distance, drawn on matplotlib's Agg canvas as pdd.report.figures draws its own."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure as Canvas

from pdd.audit import Pairs
from pdd.report.figures import GAP

NEAR_COLOUR = "tab:red"


def closest_pairs_figure(methods: Mapping[str, tuple[np.ndarray, Pairs]]) -> tuple[str, Canvas]:
    """(caption, canvas): one row per method, given as (its synthetic images [N, C, H, W] in [0, 1], its Pairs).

    Each panel is a synthetic image (left) beside its nearest private image (right), titled with their pixel L2
    distance; a near copy's title is red. pdd.report.figures.png turns the canvas into PNG bytes.
    """
    if not methods:
        raise ValueError("closest_pairs_figure needs at least one method")
    columns = max(len(pairs.synthetic_index) for _, pairs in methods.values())
    canvas = Canvas(figsize=(1.25 * columns + 1.2, 1.05 * len(methods) + 0.4), layout="constrained")
    axes = canvas.subplots(len(methods), columns, squeeze=False)
    for row, (label, (images, pairs)) in zip(axes, methods.items(), strict=True):
        for column, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(pairs.synthetic_index):
                ax.set_visible(False)
                continue
            tile = pair_tile(images[int(pairs.synthetic_index[column])],
                             pairs.private_images[column].numpy().astype(np.float64) / 255)
            ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            near = bool(pairs.near_copy[column])
            ax.set_title(f"{float(pairs.distance[column]):.1f}", fontsize=8, color=NEAR_COLOUR if near else "black")
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    thresholds = ", ".join(f"{label} {pairs.threshold:.1f}" for label, (_, pairs) in methods.items())
    caption = (f"Each method's {columns} synthetic images closest to a private training image (left of each pair) "
               "beside that image (right), titled with their pixel L2 distance on normalised images; red: a near "
               "copy, within the near-copy threshold (set by how far apart real images lie) in pixel and feature space "
               f"alike. Pixel thresholds: {thresholds}.")
    return caption, canvas


def pair_tile(synthetic: np.ndarray, private: np.ndarray) -> np.ndarray:
    """[H, 2W + GAP(, C)]: the two [C, H, W] images side by side with a white gap, channels last."""
    gap = np.ones((synthetic.shape[0], synthetic.shape[1], GAP))
    return np.concatenate([synthetic, gap, private], axis=2).transpose(1, 2, 0).squeeze()
