"""Reference numbers a synthetic set is compared with.

    pdd baseline full-data --data ../shared/datasets/cifar10-jpeg.tar.gz --results results/local --protocol dc
"""

from __future__ import annotations

from pathlib import Path

import typer

from pdd.cli.common import RichReporter, app, console, merged, progress_bars
from pdd.cli.trial import DATA_HELP
from pdd.config import DEFAULT_BUDGET, FULL_DATA_EPOCHS, Budget, FullDataConfig

baseline_app = typer.Typer(no_args_is_help=True, help="Reference numbers a synthetic set is compared with.")
app.add_typer(baseline_app, name="baseline")

EPOCHS_HELP = "training epochs per model (dc runs one pass more, as its protocol does); by budget: " + ", ".join(
    f"{budget} {epochs}" for budget, epochs in FULL_DATA_EPOCHS.items())


@baseline_app.command("full-data")
def full_data(
    data: str | None = typer.Option(None, help=DATA_HELP),
    results: Path = typer.Option(Path("results/local"), help="results directory; the record goes to its _full_data/"),
    protocol: str | None = typer.Option(None, help="paper (SAM, lr 0.1) or dc (SGD lr 0.01): the optimiser of the "
                                                   "evaluation protocol it is compared under (default paper)"),
    eval_model: str | None = typer.Option(None, help="the evaluation network (default convnet)"),
    epochs: int | None = typer.Option(None, help=EPOCHS_HELP),
    seeds: int | None = typer.Option(None, help="number of models (default: the budget's evaluation models)"),
    budget: Budget = typer.Option(DEFAULT_BUDGET, help="epochs, models and scored images: smoke, cpu or paper"),
    val_per_class: int | None = typer.Option(None, help="validation images per class held out, as the trials' "
                                                        "(default 500)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    force: bool = typer.Option(False, help="train again even if this record is stored"),
) -> None:
    """Train the evaluation network on the whole train split (validation held out) and record its accuracy, once
    per dataset and evaluation: the full-data accuracy reports subtract a set's from (HLR)."""
    from pdd.full_data import record_path, stored_full_data, train_full_data
    from pdd.trial import cached_dataset, resolve_device

    cfg = FullDataConfig.model_validate(merged({"budget": budget}, protocol=protocol, arch=eval_model, epochs=epochs,
                                               seeds=seeds, **{"data.source": data,
                                                               "data.val_per_class": val_per_class}))
    target = resolve_device(device)
    dataset = cached_dataset(cfg.data.source)
    record = None if force else stored_full_data(cfg, dataset, results)
    reused = record is not None
    if record is None:
        with progress_bars() as progress:
            record = train_full_data(cfg, dataset, target, results, RichReporter(progress))
    evaluation = record.evaluation
    console.print(f"{record.dataset_name}, whole train split ({record.train_images} images), {evaluation.protocol} "
                  f"protocol, {evaluation.arch}, {_count(record.epochs, 'epoch')}: val {record.val_mean:.2f} ± "
                  f"{record.val_std:.2f}, test {record.test_mean:.2f} ± {record.test_std:.2f} over "
                  f"{_count(len(record.seeds), 'model')}, {record.seconds:.0f} s on {record.device}", highlight=False)
    where = record_path(results, record.dataset_hash, evaluation)
    console.print(f"record {where}" + (" (stored; --force trains again)" if reused else ""), highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
