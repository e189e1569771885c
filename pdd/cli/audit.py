"""The `pdd audit` command: a leakage audit of one synthetic set (pdd.audit).

    pdd audit results/local/_artifacts/<trial>/synthetic.pt --data cifar10
    pdd audit elsewhere/synthetic.pt --data cifar10 --exclude-trial-row results/local/<trial>.parquet
    pdd audit my-pngs/ --data cifar10 --figure pairs.png

A trial's set names its trial in its metadata; that trial's T' (the row's pipc_indices) is then not counted as
private. The row is looked up in --results, else in the results directory the set lies in
(RESULTS/_artifacts/<trial>/synthetic.pt); a trial's set whose row cannot be found is an error, not an audit that
would flag T' as leaked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from pdd.cli.common import app, console
from pdd.cli.trial import DATA_HELP
from pdd.errors import PddError

if TYPE_CHECKING:
    import torch

    from pdd.audit import Audit, FeatureNet, Pairs
    from pdd.data import ImageDataset, Normalization

PAIRS_SHOWN = 8


@app.command("audit")
def audit_set(
    path: Path = typer.Argument(..., help="a synthetic set: .pt tensor file or a folder of PNGs per class"),
    data: str | None = typer.Option(None, help=DATA_HELP),
    results: Path | None = typer.Option(
        None, help="results directory holding the trial's row (default: the one the set lies in)"),
    exclude_trial_row: Path | None = typer.Option(
        None, help="a trial's row file (.parquet): its T' (pipc_indices) is not counted as private"),
    features: str | None = typer.Option(None, help="feature space: random-convnet (default) or teacher"),
    feature_seed: int | None = typer.Option(None, help="seed of the random ConvNet's weights"),
    teacher: Path | None = typer.Option(None, help="teacher checkpoint, for --features teacher"),
    quantile: float | None = typer.Option(None, help="threshold quantile of real nearest-other distances (0.01)"),
    pairs: int = typer.Option(PAIRS_SHOWN, min=1, help="closest pairs to list"),
    figure: Path | None = typer.Option(None, help="also draw the closest pairs into this PNG"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Nearest private and test images of every synthetic image, the near-copy threshold and the near copies."""
    from pdd.audit import AuditConfig, audit, closest_pairs
    from pdd.cli.common import merged
    from pdd.config import DataConfig
    from pdd.synthetic import load_synthetic
    from pdd.trial import cached_dataset, resolve_device

    cfg = AuditConfig.model_validate(merged({}, features=features, feature_seed=feature_seed,
                                            threshold_quantile=quantile))
    target = resolve_device(device)
    dataset = cached_dataset(DataConfig.model_validate(merged({}, source=data)).source)
    images, labels = load_synthetic(path, (dataset.channels, dataset.image_size, dataset.image_size),
                                    dataset.normalization, dataset.classes)
    meta = set_meta(path)
    check_statistics(path, meta, dataset.normalization)
    excluded, exclusion = trial_subset(path, meta, dataset, results, exclude_trial_row)
    feature_net = teacher_net(teacher, dataset, target) if cfg.features == "teacher" else None
    if feature_net is None and teacher is not None:
        raise PddError("--teacher is only used with --features teacher")
    result = audit(images, dataset, excluded, cfg, target, feature_net)
    closest = closest_pairs(result, dataset, pairs)

    summary = result.summary
    console.print(f"near-copy threshold: pixel L2 {summary['audit_threshold_pixel']:.4g}, cosine distance "
                  f"{summary['audit_threshold_feature']:.4g} (the {cfg.threshold_quantile:g} quantile of "
                  f"{min(cfg.threshold_sample, len(dataset.train_images))} train images' distances to their nearest "
                  f"distinct train image; a near copy is within both)", highlight=False, soft_wrap=True)
    console.print(f"excluded from the private images: {exclusion}", highlight=False, soft_wrap=True)
    console.print(summary_table(path, summary))
    console.print(pairs_table(result, closest, labels, dataset.classes))
    if figure is not None:
        write_figure(figure, path, images, dataset, closest)
        console.print(f"wrote {figure}", highlight=False)


def set_meta(path: Path) -> dict[str, Any]:
    """A tensor file's metadata ({} for a PNG folder or a set made elsewhere)."""
    from pdd.synthetic import read_synthetic_file

    if path.is_dir():
        return {}
    meta = read_synthetic_file(path)[2]
    return meta if isinstance(meta, dict) else {}


def check_statistics(path: Path, meta: dict[str, Any], normalization: Normalization) -> None:
    """A set normalised with other statistics than the dataset's would be audited in the wrong units."""
    if "mean" not in meta or "std" not in meta:
        return
    recorded = (tuple(meta["mean"]), tuple(meta["std"]))
    if recorded != (normalization.mean, normalization.std):
        raise PddError(f"{path} was normalised with mean {recorded[0]} and std {recorded[1]}, the dataset's are "
                       f"{normalization.mean} and {normalization.std}: is --data the dataset it was made from?")


def trial_subset(path: Path, meta: dict[str, Any], dataset: ImageDataset, results: Path | None,
                 row_file: Path | None) -> tuple[list[int], str]:
    """The indices of T' of the trial behind the set, and a line saying where they came from."""
    from pdd.results import ARTIFACTS, read_rows

    if row_file is not None:
        # read_rows finds a trial's file by its id, which is the file's stem for every file write_rows names
        rows = read_rows(row_file.parent, row_file.stem) if row_file.suffix == ".parquet" else []
        row = rows[0] if rows else None
        if row is None:
            raise PddError(f"trial row not found: {row_file} (a <trial_id>.parquet file of a results directory)")
        where = str(row_file)
    elif "trial_id" in meta:
        trial = str(meta["trial_id"])
        inside = path.parent.name == trial and path.parent.parent.name == ARTIFACTS
        directory = results or (path.parent.parent.parent if inside else None)
        if directory is None:
            raise PddError(f"{path} comes from trial {trial}: pass --results DIR (where its row is) or "
                           "--exclude-trial-row ROW.parquet, so that its T' is not counted as private")
        rows = read_rows(directory, trial)
        row = rows[0] if rows else None
        if row is None:
            raise PddError(f"no row of trial {trial} in {directory} (has the trial finished?): pass --results DIR "
                           "or --exclude-trial-row ROW.parquet, so that its T' is not counted as private")
        where = f"trial {trial} in {directory}"
    elif results is not None:
        raise PddError(f"{path} names no trial in its metadata, so --results cannot find its T': pass "
                       "--exclude-trial-row ROW.parquet")
    else:
        return [], "none (the set names no trial)"
    if row.get("dataset_hash") != dataset.content_hash:
        recorded = str(row.get("dataset_hash"))[:12]
        raise PddError(f"{where} ran on dataset {row.get('dataset_name')!r} (hash {recorded}), not on "
                       f"{dataset.name!r} (hash {dataset.content_hash[:12]}): pass that dataset as --data")
    indices = row.get("pipc_indices")
    if indices is None:
        raise PddError(f"{where}: the row records no pipc_indices")
    return list(indices), f"the {len(indices)} images of T' ({where})"


def teacher_net(path: Path | None, dataset: ImageDataset, device: torch.device) -> FeatureNet:
    from pdd.audit import teacher_features
    from pdd.models import ModelConfig
    from pdd.teacher import load_teacher, read_teacher

    if path is None:
        raise PddError("--features teacher needs --teacher PATH")
    meta, _ = read_teacher(path)
    model, _, digest = load_teacher(path, ModelConfig.model_validate(meta.get("model") or {}), dataset, device)
    return teacher_features(model, digest)


def summary_table(path: Path, summary: dict[str, Any]) -> Table:
    from pdd.audit import SUMMARY_COLUMNS

    table = Table(title=f"leakage audit of {path}")
    table.add_column("key")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for key, (kind, meaning) in SUMMARY_COLUMNS.items():
        value = summary[key]
        table.add_row(key, f"{value:.4g}" if kind is float else str(value), meaning)
    return table


def pairs_table(result: Audit, closest: Pairs, labels: torch.Tensor, classes: tuple[str, ...]) -> Table:
    name = lambda c: classes[c] if 0 <= c < len(classes) else str(c)  # noqa: E731
    table = Table(title="closest pairs (pixel L2 to the nearest private image)",
                  caption="cosine: distance to the nearest private image in feature space; test L2: to the nearest "
                          "test image")
    for column in ("synthetic", "class", "nearest private", "class ", "pixel L2", "cosine", "test L2", "near copy"):
        table.add_column(column, justify="right")
    for rank, image in enumerate(closest.synthetic_index.tolist()):
        table.add_row(str(image), name(int(labels[image])), str(int(closest.private_index[rank])),
                      name(int(closest.private_labels[rank])), f"{float(closest.distance[rank]):.4g}",
                      f"{float(closest.feature_distance[rank]):.4g}",
                      f"{float(result.pixel.test.distance[image]):.4g}",
                      "[red]yes[/red]" if bool(closest.near_copy[rank]) else "no")
    return table


def write_figure(figure: Path, path: Path, images: torch.Tensor, dataset: ImageDataset, closest: Pairs) -> None:
    from pdd.io import atomic_path
    from pdd.report.audit_figures import closest_pairs_figure
    from pdd.report.figures import png

    shown = dataset.normalization.denormalize(images).numpy()
    _, canvas = closest_pairs_figure({path.parent.name if path.name == "synthetic.pt" else path.name:
                                      (shown, closest)})
    try:
        with atomic_path(figure) as tmp:
            tmp.write_bytes(png(canvas))
    except OSError as error:
        raise PddError(f"cannot write {figure}: {error.strerror or error}") from None
