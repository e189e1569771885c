"""Commands for one trial, one evaluation and the teacher.

    pdd teacher train --budget cpu --out teachers/cifar10.pt
    pdd trial --method pdd --ipc 1 --pipc 50 --teacher teachers/cifar10.pt --budget cpu
    pdd evaluate results/local/_artifacts/<trial>/synthetic.pt --protocol dc --eval-model alexnet
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from pdd.cli.common import RichReporter, app, console, load_config_file, merged, parse_pipc, progress_bars
from pdd.config import DEFAULT_BUDGET, Budget, DataConfig, EvalConfig, TeacherConfig, TrialConfig
from pdd.errors import PddError
from pdd.method_spec import method_names, needs_teacher
from pdd.results import Status

PROTOCOL_HELP = ("how a set is judged: paper (SAM, lr 0.1, the paper's supplement) or dc (SGD lr 0.01, the DC/DM "
                 "reference's evaluate_synset, as published DD numbers); repeat for several, the first is primary")
MODEL_HELP = "evaluation network (convnet, or another registered architecture); repeat for several"
BATCHED_HELP = ("train the evaluation models together as one batched network (the same weights to float "
                "tolerance); for GPUs: on a CPU it is slower (benchmarks/README.md)")

DATA_HELP = ("cifar10, cifar100, mnist, fashion-mnist, svhn, an ImageFolder dir or an archive of one, or a folder "
             "of a named dataset's files (e.g. the four idx files) [env PDD_DATA]")
teacher_app = typer.Typer(no_args_is_help=True, help="Train or inspect the edge-model teacher.")
app.add_typer(teacher_app, name="teacher")


@app.command()
def trial(
    method: str | None = typer.Option(None, help=method_names()),
    ipc: int | None = typer.Option(None, help="synthetic images per class"),
    pipc: str | None = typer.Option(None, help="real images per class available, or 'all'"),
    alpha: float | None = typer.Option(None, help="L_stat weight (paper default by pipc)"),
    gamma: float | None = typer.Option(None, help="L_DM weight (paper default by ipc)"),
    init: str | None = typer.Option(None, help="noise or real (paper default by ipc)"),
    budget: Budget | None = typer.Option(None, help="iteration and epoch counts: smoke, cpu or paper"),
    iterations: int | None = typer.Option(None, help="distillation iterations (overrides the budget)"),
    protocol: list[str] | None = typer.Option(None, help=PROTOCOL_HELP),
    eval_model: list[str] | None = typer.Option(None, help=MODEL_HELP),
    eval_epochs: int | None = typer.Option(None, help="training epochs per evaluation model"),
    eval_seeds: int | None = typer.Option(None, help="number of evaluation models"),
    eval_batched: bool = typer.Option(False, "--eval-batched", help=BATCHED_HELP),
    seed: int | None = typer.Option(None, help="distillation seed"),
    precision: str | None = typer.Option(
        None, help="bf16: distillation, evaluation training and scoring under bfloat16 autocast; fp32 forces the "
                   "plain path"),
    compile_embedder: bool = typer.Option(
        False, "--compile", help="torch.compile DM's embedder: faster iterations once compiled; later trials on "
                                 "this machine load the compiled graphs from disk"),
    subset_seed: int | None = typer.Option(None, help="seed of the draw of T'"),
    data: str | None = typer.Option(None, help=DATA_HELP),
    teacher: str | None = typer.Option(
        None, help="teacher checkpoint from `pdd teacher train`, or 'auto': the cached teacher for this data "
                   "and budget, trained first if missing"),
    dsv_set: str | None = typer.Option(None, help="blend: a pre-extracted DSV set (.pt or PNG folder)"),
    config: Path | None = typer.Option(None, help="YAML file of TrialConfig fields; flags override it"),
    results: Path = typer.Option(Path("results/local"), help="results directory (one Parquet file per trial)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    force: bool = typer.Option(False, help="run again even if this trial's row is already stored"),
) -> None:
    """Distil one synthetic set and evaluate it; resumes if the same trial was interrupted."""
    from pdd.trial import TrialOptions, run_trial

    pipc_value = parse_pipc(pipc)
    values = merged(load_config_file(config), method=method, ipc=ipc, alpha=alpha, gamma=gamma, init=init,
                    budget=budget, iterations=iterations, seed=seed, subset_seed=subset_seed, dsv_set=dsv_set,
                    precision=precision, compile=compile_embedder or None,
                    **{"eval.protocols": protocol or None, "eval.models": eval_model or None,
                       "eval.epochs": eval_epochs, "eval.seeds": eval_seeds, "eval.batched": eval_batched or None,
                       "eval.precision": precision, "eval.train_precision": precision, "data.source": data})
    if pipc_value != "unset":
        values["pipc"] = pipc_value
    cfg = TrialConfig.model_validate(values)
    with progress_bars() as progress:
        reporter = RichReporter(progress)
        teacher_path = resolve_teacher(teacher, cfg, device, reporter)
        rows = run_trial(cfg, TrialOptions(results=results, teacher=teacher_path, device=device, force=force,
                                           reporter=reporter))
    print_rows(rows, results / f"{rows[0]['trial_id']}.parquet")
    if rows[0]["status"] != Status.OK:
        raise typer.Exit(1)


def resolve_teacher(teacher: str | None, cfg: TrialConfig, device: str, reporter: RichReporter) -> Path | None:
    if teacher != "auto":
        return None if teacher is None else Path(teacher)
    if not needs_teacher(cfg):
        return None
    from pdd.teacher import ensure_teacher
    from pdd.trial import cached_dataset, resolve_device

    teacher_cfg = TeacherConfig(budget=cfg.budget, data=cfg.data, model=cfg.teacher_model)
    return ensure_teacher(teacher_cfg, cached_dataset(cfg.data.source), resolve_device(device), reporter)


def print_rows(rows: list[dict[str, Any]], file: Path) -> None:
    """A trial's (or a re-evaluation's) rows: one line per evaluation, then where the set and the rows are."""
    first = rows[0]
    table = Table(title=f"{first['method']}  {first['cell']}  ({first['budget']} budget)")
    for column in ("evaluation", "val accuracy", "test accuracy"):
        table.add_column(column)
    for row in rows:
        evaluation = f"{row['protocol']} protocol, {row['eval_model']}, {row['eval_epochs']} epochs"
        if row["status"] != Status.OK:
            table.add_row(evaluation, f"[red]failed[/red]: {row['reason']}", "")
        else:
            table.add_row(evaluation, f"{row['val_mean']:.2f} ± {row['val_std']:.2f}  {_fmt(row['val_acc'])}",
                          f"{row['test_mean']:.2f} ± {row['test_std']:.2f}  {_fmt(row['test_acc'])}")
    console.print(table)
    if first["status"] == Status.OK:
        console.print(f"synthetic set {first['synthetic_path']}")
    console.print(f"rows {file}")


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


@app.command()
def evaluate(
    path: Path = typer.Argument(..., help="a synthetic set: .pt tensor file or a folder of PNGs per class"),
    budget: Budget = typer.Option(DEFAULT_BUDGET, help="evaluation epochs and seeds: smoke, cpu or paper"),
    protocol: list[str] | None = typer.Option(None, help=PROTOCOL_HELP + " [default: paper]"),
    eval_model: list[str] | None = typer.Option(None, help=MODEL_HELP + " [default: convnet]"),
    eval_epochs: int | None = typer.Option(None, help="training epochs per evaluation model"),
    eval_seeds: int | None = typer.Option(None, help="number of evaluation models"),
    eval_batched: bool = typer.Option(False, "--eval-batched", help=BATCHED_HELP),
    precision: str | None = typer.Option(
        None, help="bf16: train and score the models under bfloat16 autocast; fp32 forces the plain path"),
    data: str | None = typer.Option(None, help=f"the dataset to score on: {DATA_HELP} [default: the trial's]"),
    val_per_class: int | None = typer.Option(None, help="validation images per class [default: the trial's]"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    force: bool = typer.Option(False, help="score again even if this evaluation of the trial's set is stored"),
) -> None:
    """Evaluate any synthetic set, e.g. a trial's saved one under another protocol, without distilling again.

    A trial's own set (RESULTS/_artifacts/TRIAL/synthetic.pt) gets one row per evaluation beside the trial's
    rows, so reports can use it; any other set is scored and printed."""
    from pdd.models import ModelConfig
    from pdd.synthetic import load_synthetic
    from pdd.trial import cached_dataset, rescore, resolve_device, saved_trial, score_on_dataset

    eval_cfg = EvalConfig.model_validate(merged(
        {"budget": budget}, protocols=protocol or None, models=eval_model or None, epochs=eval_epochs,
        seeds=eval_seeds, batched=eval_batched or None, precision=precision, train_precision=precision))
    saved = saved_trial(path)
    trial_data = saved.cfg.data.model_dump() if saved else {}
    data_cfg = DataConfig.model_validate(merged(trial_data, source=data, val_per_class=val_per_class))
    target = resolve_device(device)
    dataset = cached_dataset(data_cfg.source)
    images, labels = load_synthetic(path, (dataset.channels, dataset.image_size, dataset.image_size),
                                    dataset.normalization, dataset.classes)
    if int(labels.max()) >= dataset.num_classes or int(labels.min()) < 0:
        raise PddError(f"synthetic set {path} has labels outside 0..{dataset.num_classes - 1}")
    rows, lines = [], []
    with progress_bars() as progress:
        for evaluation in eval_cfg.runs():
            if saved is not None:
                rows.append(rescore(saved, images, labels, evaluation, dataset, target, RichReporter(progress), force))
                continue
            stats = score_on_dataset(images, labels, evaluation, ModelConfig(), data_cfg, dataset, target,
                                     RichReporter(progress)).summary()
            lines.append(f"{path}: val {stats['val_mean']:.2f} ± {stats['val_std']:.2f}, test "
                         f"{stats['test_mean']:.2f} ± {stats['test_std']:.2f} over {evaluation.seeds} models "
                         f"({evaluation.protocol} protocol, {evaluation.arch}, {evaluation.epochs} epochs)")
    for line in lines:
        console.print(line)
    if saved is not None:
        print_rows(rows, saved.results / f"{saved.trial_id}.<evaluation>.parquet")


@teacher_app.command("train")
def teacher_train(
    out: Path = typer.Option(Path("teachers/teacher.pt"), help="where to save the checkpoint"),
    budget: Budget = typer.Option(DEFAULT_BUDGET, help="epochs: smoke, cpu or paper"),
    epochs: int | None = typer.Option(None, help="training epochs (overrides the budget)"),
    weight_decay: float | None = typer.Option(None, help="weight decay (sets the KKT multipliers' scale)"),
    lr: float | None = typer.Option(None, help="peak learning rate of the one-cycle schedule"),
    norm: str | None = typer.Option(None, help="none (default: no scale invariance for L_stat), instance (the DM "
                                               "ConvNet's), batch or layer"),
    augment: bool | None = typer.Option(None, help="random crop and flip in the one-cycle phase"),
    optimizer: str | None = typer.Option(None, help="sgd (momentum 0.9, nesterov) or adam; both with coupled "
                                                    "L2 weight decay"),
    final_epochs: int | None = typer.Option(None, help="epochs at the constant --final-lr without augmentation "
                                                       "after the one-cycle phase (settles theta* for L_stat)"),
    final_lr: float | None = typer.Option(None, help="learning rate of the final phase"),
    final_anneal: bool | None = typer.Option(None, help="the final phase's lr falls linearly to 0 instead of "
                                                        "staying constant"),
    final_optimizer: str | None = typer.Option(None, help="sgd or adam for the final phase (default: --optimizer, "
                                                          "its state carried on)"),
    init_from: Path | None = typer.Option(None, help="start from this teacher checkpoint's weights (same data, "
                                                     "split and model); --epochs 0 --final-epochs 0 re-measures it"),
    data: str | None = typer.Option(None, help=DATA_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Train the edge-model teacher on the train split (validation held out); resumes if interrupted."""
    from pdd.hooks import DirStore
    from pdd.teacher import save_teacher, train_teacher
    from pdd.trial import cached_dataset, resolve_device

    cfg = TeacherConfig.model_validate(merged(
        {"budget": budget}, epochs=epochs, weight_decay=weight_decay, lr=lr, augment=augment, optimizer=optimizer,
        final_epochs=final_epochs, final_lr=final_lr, final_anneal=final_anneal, final_optimizer=final_optimizer,
        init_from=None if init_from is None else str(init_from),
        **{"data.source": data, "model.norm": norm}))
    target = resolve_device(device)
    dataset = cached_dataset(cfg.data.source)
    store = DirStore(out.parent / f".{out.name}.checkpoints")
    with progress_bars() as progress:
        checkpoint = train_teacher(cfg, dataset, target, RichReporter(progress), store)
    digest = save_teacher(out, checkpoint)
    meta = checkpoint["meta"]
    console.print(f"teacher {out}: {meta['epochs']} + {meta['final_epochs']} final epochs in "
                  f"{meta['train_seconds']:.0f} s, val {meta['val_accuracy']:.2f}%, test {meta['test_accuracy']:.2f}%, "
                  f"stationarity cosine {meta['stationarity_cosine']:.4f}, relative gap "
                  f"{meta['stationarity_relative_gap']:.4f} over {meta['stationarity_images']} images, "
                  f"sha256 {digest[:16]}")


@teacher_app.command("show")
def teacher_show(path: Path = typer.Argument(..., help="a teacher checkpoint")) -> None:
    """Print a teacher's metadata."""
    from pdd.teacher import read_teacher

    meta, _ = read_teacher(path)
    table = Table(show_header=False, title=str(path))
    for key, value in meta.items():
        table.add_row(key, str(value))
    console.print(table)
