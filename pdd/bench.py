"""Speed benchmark: where a trial's time goes, next to what this machine could do at best.

    pdd bench --out benchmarks/cpu.json            # all sections, medians after a warm-up, one process

Distillation runs the real loop (pdd.distill) on random tensors with a random teacher: speed does not
depend on pixel values or weights. Each figure is the median of several repeats after a warm-up. The
ceiling is the FLOPs a step needs, counted from the layer shapes, over this machine's matrix-multiply rate
measured in the same run. Shapes (channels, size, classes) are a dataset's: `--data`'s, else CIFAR-10's; a
trial's and a sweep's estimate take its data source's. FLOP counts use the usual rules: a backward pass
costs twice its forward when it computes weight and input gradients, once when only input gradients are
needed, and the double backward of L_stat about twice the first backward.
Whole trials (`trials`) are real run_trial calls on generated data; their progress stamps split each trial's
recorded seconds into the steady loops, which the component figures time, and what lies outside them.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pdd import augment
from pdd.config import EDGE_MODEL, Evaluation, TeacherConfig, TrialConfig, pipc_text
from pdd.data import ImageDataset, ImageSpec, Normalization, image_spec
from pdd.distill import Problem, distill
from pdd.errors import PddError
from pdd.evaluate import SAM, accuracy, loss, train_on_synthetic, train_together
from pdd.hooks import SectionTimer
from pdd.method_spec import SPECS, Terms
from pdd.methods import synthetic_labels
from pdd.models import ModelConfig, build_model, counted_flops, eval_model_config
from pdd.results import Stage
from pdd.runtime import keep_freed_memory
from pdd.sources import SOURCES
from pdd.sweep import SweepSpec
from pdd.teacher import save_teacher

SETTINGS: list[tuple[int, int | None]] = [(1, 10), (1, 50), (10, 50), (10, None)]
TERMS = {"dm": SPECS["dm"].runs[0], "pdd": SPECS["pdd"].runs[0]}
SHARES = {"augment": "augmentation", "embed_real": "real embedding", "synthetic": "synthetic fwd/bwd",
          "dkkt": "DKKT terms", "step": "optimiser step"}
DEFAULT_SPEC = SOURCES["cifar10"].spec  # without --data the benchmark times CIFAR-10's shapes
POOL_AT_ALL = 500  # real images per class held at pipc "all"; 256 are drawn per iteration either way


@dataclass(frozen=True)
class Options:
    device: torch.device
    precision: str = "fp32"
    iterations: int = 4
    warmup: int = 2
    rounds: int = 3  # distillation figures: passes over all settings, interleaved so drift hits each alike
    compile: bool = False  # TrialConfig.compile for the distillation figures


def median_ms(run: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@lru_cache(maxsize=8)
def spec_of(source: str) -> ImageSpec:
    """A data source's shapes, looked up once per process: a sweep estimate asks for every trial."""
    return image_spec(source)


def forward_flops(model_cfg: ModelConfig, spec: ImageSpec) -> tuple[float, float]:
    """(embedding, classifier) multiply-add FLOPs of one forward pass of one image, on any registered network."""
    return counted_flops(model_cfg, spec.channels, spec.num_classes, spec.image_size)


def iteration_flops(cfg: TrialConfig, terms: Terms, real_per_class: int = POOL_AT_ALL,
                    spec: ImageSpec | None = None) -> float:
    """FLOPs of one distillation iteration; real_per_class is the pool at pipc 'all' (256 are drawn either way).

    spec: the shapes, by default those of cfg's data source.
    """
    spec = spec or spec_of(cfg.data.source)
    n_syn = spec.num_classes * cfg.ipc
    n_real = spec.num_classes * min(cfg.pipc or real_per_class, cfg.batch_real)
    embed, head = forward_flops(cfg.model, spec)
    flops = 0.0
    if terms.dm:
        flops += n_real * embed + 2 * n_syn * embed  # real forward; synthetic forward + input-gradient backward
    if terms.dkkt:
        teacher_embed, teacher_head = forward_flops(cfg.teacher_model, spec)
        flops += 7 * n_syn * (teacher_embed + teacher_head)  # forward, backward with create_graph, double backward
    return flops


def sam_step_flops(batch: int, model_cfg: ModelConfig, spec: ImageSpec) -> float:
    return 2 * sgd_step_flops(batch, model_cfg, spec)  # SAM: a forward and a full backward at two points


def sgd_step_flops(batch: int, model_cfg: ModelConfig, spec: ImageSpec) -> float:
    return 3 * batch * sum(forward_flops(model_cfg, spec))  # a forward and a full backward pass


def evaluation_flops(cfg: TrialConfig, evaluation: Evaluation, spec: ImageSpec | None = None) -> float:
    """FLOPs of training and scoring one evaluation model (the protocol's epochs over S, then val and test)."""
    spec = spec or spec_of(cfg.data.source)
    n_syn = spec.num_classes * cfg.ipc
    step = sam_step_flops if evaluation.rho > 0 else sgd_step_flops
    network = eval_model_config(cfg.model, evaluation.arch)
    per_epoch = sum(step(len(batch), network, spec) for batch in torch.arange(n_syn).split(evaluation.batch))
    scored = spec.num_classes * cfg.data.val_per_class + spec.test_images
    return evaluation.epochs * per_epoch + scored * sum(forward_flops(network, spec))


def trial_flops(cfg: TrialConfig, spec: ImageSpec | None = None) -> tuple[float, float]:
    """(distillation, evaluation) FLOPs of a whole trial, every evaluation of its config included."""
    distill_flops = sum(cfg.iterations * iteration_flops(cfg, terms, spec=spec) for terms in SPECS[cfg.method].runs)
    return distill_flops, sum(run.seeds * evaluation_flops(cfg, run, spec) for run in cfg.eval.runs())


def sweep_flops(spec: SweepSpec) -> list[dict[str, Any]]:
    """FLOPs a sweep needs, per method entry and stage: every search trial, then the confirm trials."""
    totals: dict[tuple[str, Stage], list[float]] = {}

    def add(label: str, stage: Stage, values: dict[str, Any], count: int = 1) -> None:
        distill_flops, eval_flops = trial_flops(TrialConfig.model_validate(values))
        entry = totals.setdefault((label, stage), [0, 0.0, 0.0])
        entry[0] += count
        entry[1] += count * distill_flops
        entry[2] += count * eval_flops

    for study in spec.studies():  # the searched weights and init do not change the cost; the paper's point stands in
        add(study.label, Stage.SEARCH, study.base | study.first, study.budget(spec.search.trials))
        for values in spec.confirm_values(study.base | study.first):
            add(study.label, Stage.CONFIRM, values)
    for label, values in spec.unsearched():
        for confirmed in spec.confirm_values(values):
            add(label, Stage.CONFIRM, confirmed)
    return [{"method": label, "stage": stage, "trials": int(n), "distill_flops": d, "eval_flops": e}
            for (label, stage), (n, d, e) in totals.items()]


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 1024) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda: _synced(device, lambda: a @ b), repeats=10, warmup=2)
    return 2 * n**3 / ms / 1e6


def _synced(device: torch.device, run: Callable[[], Any]) -> Any:
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


class _FirstIteration(Exception):
    """Raised by the start-up reporter at the first distillation iteration: the rest of the trial is not timed."""


class _StopAtFirstUpdate:
    def start(self, phase: str, total: int) -> None:
        pass

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        raise _FirstIteration


class _Stamps:
    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self, phase: str, total: int) -> None:
        self.times = [time.perf_counter()]

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        self.times.append(time.perf_counter())


class _PhaseStamps:
    """The time of every progress update, phase by phase: a trial's distillation, then each evaluation model."""

    def __init__(self) -> None:
        self.phases: list[list[float]] = []

    def start(self, phase: str, total: int) -> None:
        self.phases.append([time.perf_counter()])

    def update(self, phase: str, done: int, metrics: dict[str, float]) -> None:
        self.phases[-1].append(time.perf_counter())


def _steps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _images(count: int, spec: ImageSpec, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(count, spec.channels, spec.image_size, spec.image_size, generator=generator)


def bench_distill(method: str, ipc: int, pipc: int | None, opts: Options,
                  spec: ImageSpec = DEFAULT_SPEC) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    per_class, classes = pipc or POOL_AT_ALL, spec.num_classes
    real = _images(classes * per_class, spec, generator).to(opts.device)
    cfg = TrialConfig(method=method, ipc=ipc, pipc=pipc, init="noise", budget="smoke",
                      iterations=opts.warmup + opts.iterations, precision=opts.precision, compile=opts.compile)
    teacher = build_model(cfg.teacher_model, spec.channels, classes, spec.image_size, generator).to(opts.device).eval()
    stamps, timer = _Stamps(), SectionTimer(opts.device)
    problem = Problem(cfg=cfg, real=real, real_labels=torch.arange(classes, device=opts.device).repeat_interleave(
        per_class), num_classes=classes, normalization=Normalization((0.5,) * spec.channels, (0.5,) * spec.channels),
        teacher=teacher, teacher_weight_decay=5e-4, reporter=stamps,
        checkpoint_every=10**9, timer=timer)
    images = _images(classes * ipc, spec, generator)
    distill(problem, TERMS[method], images, synthetic_labels(classes, ipc, opts.device), method)
    steps = [b - a for a, b in zip(stamps.times, stamps.times[1:], strict=False)][opts.warmup:]
    sections = sum(timer.seconds.values())
    flops = iteration_flops(cfg, TERMS[method], real_per_class=per_class, spec=spec)
    ms = 1000 * statistics.median(steps)
    return {"method": method, "ipc": ipc, "pipc": pipc_text(pipc), "ms_per_iteration": ms,
            "shares": {SHARES[k]: v / sections for k, v in timer.seconds.items()},
            "gflop_per_iteration": flops / 1e9, "achieved_gflops": flops / ms / 1e6}


def interleaved_distill(opts: Options, spec: ImageSpec = DEFAULT_SPEC) -> list[dict[str, Any]]:
    """Every (method, setting) once per round, round after round; each keeps its median round.

    On a shared machine the speed drifts over minutes: timing one setting in a block let a slow minute put dm
    above pdd. Interleaving spreads the drift over all settings, and the median round drops the worst.
    """
    rounds = [[bench_distill(m, ipc, pipc, opts, spec) for ipc, pipc in SETTINGS for m in TERMS]
              for _ in range(opts.rounds)]
    figures = []
    for timings in zip(*rounds, strict=True):
        ordered = sorted(timings, key=lambda row: row["ms_per_iteration"])
        figures.append(ordered[(len(ordered) - 1) // 2] | {
            "ms_per_iteration_by_round": [row["ms_per_iteration"] for row in timings]})
    return figures


def bench_sam_step(ipc: int, opts: Options, spec: ImageSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """One SAM step on a batch of the set, DSA included, as evaluation trains (pdd.evaluate)."""
    cfg = Evaluation(budget="smoke")
    batch = min(cfg.batch, spec.num_classes * ipc)
    generator = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(), spec.channels, spec.num_classes, spec.image_size, generator).to(opts.device)
    base = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sam = SAM(list(model.parameters()), base, cfg.rho)
    x = _images(batch, spec, generator).to(opts.device)
    y = torch.arange(batch, device=opts.device) % spec.num_classes

    def step() -> None:
        augmented = augment.augment(x, generator, siamese=False)
        sam.step(lambda: loss(model, augmented, y, opts.precision))

    ms = median_ms(lambda: _synced(opts.device, step), repeats=opts.iterations, warmup=opts.warmup)
    flops = sam_step_flops(batch, ModelConfig(), spec)
    return {"ipc": ipc, "batch": batch, "ms_per_step": ms, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / ms / 1e6}


def bench_batched(opts: Options, spec: ImageSpec = DEFAULT_SPEC, ipcs: tuple[int, ...] = (1, 10), models: int = 3,
                  epochs: int = 20, precisions: tuple[str, ...] = ("bf16", "fp32")) -> list[dict[str, Any]]:
    """Seconds to train `models` evaluation models (paper protocol, default ConvNet) one after another and together
    (eval.batched), per ipc and training precision, in opts.rounds interleaved rounds; each keeps its median.

    The ratio is the median of each round's own ratio: on a shared machine the speed moved 2x between rounds, and
    the two paths of a setting run back to back within one. Every setting runs both paths for an epoch first, so
    neither pays the first call's set-up.
    """
    keep_freed_memory()  # as score does before it trains
    generator = torch.Generator().manual_seed(0)
    settings = [(ipc, precision) for ipc in ipcs for precision in precisions]
    sets = {ipc: (_images(spec.num_classes * ipc, spec, generator).to(opts.device),
                  torch.arange(spec.num_classes, device=opts.device).repeat(ipc)) for ipc in ipcs}
    seeds = list(range(models))

    def seconds(ipc: int, precision: str, batched: bool, run_epochs: int) -> float:
        cfg = Evaluation(epochs=run_epochs, seeds=models, train_precision=precision, batched=batched)
        images, labels = sets[ipc]
        start = time.perf_counter()
        if batched:
            _synced(opts.device, lambda: train_together(images, labels, cfg, ModelConfig(), spec.num_classes, seeds))
        else:
            for seed in seeds:
                _synced(opts.device, lambda: train_on_synthetic(images, labels, cfg, ModelConfig(),
                                                                spec.num_classes, seed))
        return time.perf_counter() - start

    for ipc, precision in settings:
        for batched in (False, True):
            seconds(ipc, precision, batched, 1)
    rounds = [{(ipc, precision, batched): seconds(ipc, precision, batched, epochs)
               for ipc, precision in settings for batched in (False, True)} for _ in range(opts.rounds)]
    figures = []
    for ipc, precision in settings:
        sequential = [timed[ipc, precision, False] for timed in rounds]
        together = [timed[ipc, precision, True] for timed in rounds]
        figures.append({"ipc": ipc, "precision": precision, "models": models, "epochs": epochs,
                        "sequential_seconds": statistics.median(sequential),
                        "batched_seconds": statistics.median(together),
                        "batched_over_sequential": statistics.median(b / a for a, b in zip(sequential, together)),
                        "sequential_seconds_by_round": sequential, "batched_seconds_by_round": together})
    return figures


def bench_test_pass(opts: Options, spec: ImageSpec = DEFAULT_SPEC, images: int = 4000) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(), spec.channels, spec.num_classes, spec.image_size, generator).to(opts.device)
    shape = (images, spec.channels, spec.image_size, spec.image_size)
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    pixels, labels = pixels.to(opts.device), torch.zeros(images, dtype=torch.long, device=opts.device)
    stats = Normalization((0.5,) * spec.channels, (0.5,) * spec.channels)  # speed does not depend on the values
    ms = median_ms(lambda: accuracy(model, pixels, labels, stats, opts.precision), repeats=3)
    flops = images * sum(forward_flops(ModelConfig(), spec))
    return {"images_per_second": images / ms * 1000, "achieved_gflops": flops / ms / 1e6}


def bench_startup(source: str, teacher: Path | None, opts: Options, **data: Any) -> dict[str, float]:
    """Seconds from run_trial's start to its first distillation iteration, warm caches and cold ones.

    Each start's decoded copy is dropped after it, so the next start reads the cache dir as a fresh worker would.
    `data` overrides DataConfig fields (a small dataset needs a smaller validation split).
    """
    from pdd.trial import TrialOptions, forget_datasets, run_trial

    def first_iteration_seconds(cache_dir: Path) -> float:
        cfg = TrialConfig(method="pdd" if teacher else "dm", ipc=1, pipc=10, budget="smoke", iterations=1,
                          data={"source": source} | data)
        with tempfile.TemporaryDirectory() as results:
            start = time.perf_counter()
            try:
                run_trial(cfg, TrialOptions(results=Path(results), teacher=teacher, device=str(opts.device),
                                            reporter=_StopAtFirstUpdate(), cache_dir=cache_dir))
            except _FirstIteration:
                return time.perf_counter() - start
            finally:
                forget_datasets()
        raise PddError("the start-up trial ended without a distillation iteration")

    with tempfile.TemporaryDirectory() as cache_dir:
        cold = first_iteration_seconds(Path(cache_dir))
        warm = first_iteration_seconds(Path(cache_dir))
    return {"cold_seconds": cold, "warm_seconds": warm}


TRIAL_SETTINGS: list[tuple[int, int]] = [(1, 10), (1, 50), (10, 50)]
TRIAL_VAL_PER_CLASS, TRIAL_TEST_PER_CLASS = 10, 10


def generated_image_folder(root: Path, train_per_class: int, spec: ImageSpec, seed: int = 0) -> Path:
    """An ImageFolder tree of random PNGs of spec's shapes: a trial's speed does not depend on what they show."""
    generator = np.random.default_rng(seed)
    shape = (spec.image_size, spec.image_size, spec.channels)
    for split, count in (("train", train_per_class), ("test", TRIAL_TEST_PER_CLASS)):
        for label in range(spec.num_classes):
            folder = root / split / f"class{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                pixels = generator.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels.squeeze(-1) if spec.channels == 1 else pixels).save(folder / f"{k:04d}.png")
    return root


def random_teacher(path: Path, dataset: ImageDataset) -> Path:
    """An untrained edge model saved as a teacher of this dataset: DKKT costs the same whatever its weights."""
    model = build_model(EDGE_MODEL, dataset.channels, dataset.num_classes, dataset.image_size,
                        torch.Generator().manual_seed(0))
    meta = {"dataset_hash": dataset.content_hash, "dataset_name": dataset.name, "model": EDGE_MODEL.model_dump(),
            "weight_decay": TeacherConfig().weight_decay}
    save_teacher(path, {"state_dict": model.state_dict(), "meta": meta})
    return path


def bench_trials(opts: Options, spec: ImageSpec = DEFAULT_SPEC, iterations: int = 30,
                 epochs: int = 10) -> list[dict[str, Any]]:
    """Whole `run_trial` calls on generated data with a random teacher, timed as their rows record them, each beside
    the component figures for the same step measured just before it, round after round (`opts.rounds`).

    Pairing within a round is what makes the ratio a measurement: identical evaluation work was seen to move by a
    third between trials a minute apart, which a comparison with the component sections, timed minutes earlier,
    put down to the trial. Each entry keeps its median round by the trial's steady iteration.
    """
    from pdd.trial import TrialOptions, cached_dataset, forget_datasets, run_trial

    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="pdd-bench-") as scratch:
        root = Path(scratch)
        train_per_class = max(pipc for _, pipc in TRIAL_SETTINGS) + TRIAL_VAL_PER_CLASS
        source = generated_image_folder(root / "data", train_per_class, spec)
        dataset = cached_dataset(str(source), root / "cache")
        teacher = random_teacher(root / "teacher.pt", dataset)
        for _ in range(opts.rounds):
            timings = []
            for ipc, pipc in TRIAL_SETTINGS:
                for method in TERMS:
                    cfg = TrialConfig(method=method, ipc=ipc, pipc=pipc, init="noise", budget="smoke",
                                      iterations=iterations, precision=opts.precision,
                                      eval={"epochs": epochs, "seeds": 1, "precision": opts.precision,
                                            "train_precision": opts.precision},
                                      data={"source": str(source), "val_per_class": TRIAL_VAL_PER_CLASS})
                    components = {"ms_per_iteration": bench_distill(method, ipc, pipc, opts, spec)["ms_per_iteration"],
                                  "ms_per_epoch": epoch_steps(ipc, spec)
                                  * bench_sam_step(ipc, opts, spec)["ms_per_step"]}
                    stamps = _PhaseStamps()
                    row = run_trial(cfg, TrialOptions(results=root / "results", teacher=teacher,
                                                      device=str(opts.device), cache_dir=root / "cache",
                                                      reporter=stamps, force=True))[0]
                    distilling, models = stamps.phases[0], stamps.phases[1:]
                    inside = _inside(row, _steps(distilling), [step for model in models for step in _steps(model)],
                                     opts.warmup)
                    whole = {"ms_per_iteration": 1000 * row["seconds_distill"] / iterations,
                             "ms_per_epoch": 1000 * row["seconds_evaluate"] / epochs}
                    ratios = {"iteration": whole["ms_per_iteration"] / components["ms_per_iteration"],
                              "epoch": whole["ms_per_epoch"] / components["ms_per_epoch"],
                              "steady_iteration": inside["ms_per_iteration_steady"] / components["ms_per_iteration"],
                              "steady_epoch": inside["ms_per_epoch_steady"] / components["ms_per_epoch"]}
                    timings.append({"method": method, "ipc": ipc, "pipc": pipc_text(pipc), "iterations": iterations,
                                    "epochs": epochs, **whole, "inside": inside, "components": components,
                                    "trial_over_components": ratios})
            rounds.append(timings)
        forget_datasets()
    figures = []
    for by_round in zip(*rounds, strict=True):
        ordered = sorted(by_round, key=lambda entry: entry["inside"]["ms_per_iteration_steady"])
        figures.append(ordered[(len(ordered) - 1) // 2] | {"trial_over_components_by_round": [
            entry["trial_over_components"] for entry in by_round]})
    return figures


def epoch_steps(ipc: int, spec: ImageSpec) -> int:
    """SAM steps in one evaluation epoch: one per batch of the set's ipc x classes images."""
    return -(-ipc * spec.num_classes // Evaluation(budget="smoke").batch)


def _inside(row: dict[str, Any], iterations: list[float], epochs: list[float], warmup: int) -> dict[str, float]:
    """Where a trial's seconds go, from its progress stamps: the steady per-iteration and per-epoch medians (what
    the component figures time), the first `warmup` iterations' excess over them, and what lies outside the loops
    (set-up before the first iteration; each model's construction, and scoring on val and test)."""
    steady = statistics.median(iterations[warmup:] or iterations)
    epoch = statistics.median(epochs)
    return {"ms_per_iteration_steady": 1000 * steady, "ms_per_epoch_steady": 1000 * epoch,
            "distill_warmup_excess_s": sum(iterations[:warmup]) - steady * len(iterations[:warmup]),
            "distill_outside_loop_s": row["seconds_distill"] - sum(iterations),
            "evaluate_outside_epochs_s": row["seconds_evaluate"] - sum(epochs)}


def run(opts: Options, data: str | None = None, teacher: Path | None = None) -> dict[str, Any]:
    """Every section on the shapes of `data` (else CIFAR-10's); start-up only when a dataset is given (it decodes
    the real data once, cold)."""
    keep_freed_memory()  # as distillation, evaluation and teachers do, for the steps timed outside them
    spec = spec_of(data) if data else DEFAULT_SPEC
    report: dict[str, Any] = {
        "device": str(opts.device), "cpu": cpu_name(), "precision": opts.precision,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "shapes": {"channels": spec.channels, "image_size": spec.image_size, "classes": spec.num_classes},
        "distill": interleaved_distill(opts, spec),
        "sam_step": [bench_sam_step(ipc, opts, spec) for ipc in (1, 10, 50)],
        "test_pass": bench_test_pass(opts, spec),
        "trials": bench_trials(opts, spec),
    }
    if data is not None:
        report["startup"] = bench_startup(data, teacher, opts)
    # Last: on the 2-core CPU, the distillation figure timed right after these large matmuls came out about twice
    # as slow (200 against 104 ms per iteration).
    report["matmul_gflops"] = {"fp32": matmul_gflops(opts.device, torch.float32),
                               "bf16": matmul_gflops(opts.device, torch.bfloat16)}
    # Each step against the rate of the dtype it runs in: `precision` covers distillation, SAM and the test pass.
    rates = report["matmul_gflops"]
    for rows, dtype in ((report["distill"] + report["sam_step"] + [report["test_pass"]], opts.precision),):
        for row in rows:
            row["ceiling_gflops"] = rates[dtype]
            row["fraction_of_ceiling"] = row["achieved_gflops"] / rates[dtype]
    return report


def cpu_name() -> str:
    """The processor's model name, which every benchmark states (machines differ from session to session)."""
    try:
        blocks = [block for block in Path("/proc/cpuinfo").read_text().split("\n\n") if "model name" in block]
    except OSError:
        return platform.processor() or "unknown"
    if not blocks:
        return platform.processor() or "unknown"
    first = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in blocks[0].splitlines()
                                                           if ":" in line)}
    # A VM often reports only "AMD EPYC": family and model tell its generation, the flags its bf16 support.
    bf16 = [flag for flag in first.get("flags", "").split() if flag in ("avx512_bf16", "amx_bf16")]
    detail = ", ".join([f"family {first.get('cpu family', '?')} model {first.get('model', '?')}", *bf16])
    return f"{first['model name']} ({detail}) x {len(blocks)}"
