"""Typed, validated configs: one TrialConfig per trial, one TeacherConfig per teacher.

Every field defaults to the paper's value (supplement A) or, where the paper is silent, to the DM
reference (VICO-UoE/DatasetCondensation). A budget fills the iteration and epoch counts the user did not
set. Unknown keys and out-of-range values are pydantic errors that name the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pdd.method_spec import SPECS, Init, check_method
from pdd.models import ModelConfig, check_arch

Budget = Literal["smoke", "cpu", "paper"]
DEFAULT_BUDGET: Budget = "cpu"

# The teacher's ConvNet has no normalisation: after a norm layer the loss is scale-invariant in the weights
# before it, so every per-image gradient is orthogonal to theta* there and L_stat could never fall below
# mean |theta*| (reports/cifar10-jpeg-cpu/README.md). DM's embedders and the evaluation nets keep the DM
# reference's ConvNet.
EDGE_MODEL = ModelConfig(norm="none")

# paper: the paper's evaluation (SAM, 5000 epochs) and the DM reference's 20,000 distillation iterations.
# cpu: a trial a 2-core CPU finishes in minutes. smoke: seconds, for tests and wiring checks only.
BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 20000},
    "cpu": {"iterations": 1000},
    "smoke": {"iterations": 8},
}
EVAL_BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {"seeds": 5, "max_images": None},
    "cpu": {"seeds": 3, "max_images": None},
    "smoke": {"seeds": 2, "max_images": 400},
}
Protocol = Literal["paper", "dc"]
# Each evaluation protocol's optimiser and its epochs per budget (Evaluation says where each comes from).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 0.1, "rho": 0.001, "epochs": {"paper": 5000, "cpu": 1000, "smoke": 8}},
    "dc": {"lr": 0.01, "rho": 0.0, "epochs": {"paper": 1000, "cpu": 1000, "smoke": 8}},
}

# Full-data training (`pdd baseline full-data`), the accuracy HLR subtracts a set's from: the evaluation network on
# the whole train split. An epoch there is 4,500 epochs of a 10-image set, so the epochs are this table's, not the
# protocol's. paper: 30, chosen (no paper fixes one), for a GPU; cpu: 4, a ConvNet pass over CIFAR-10's 45,000
# images took 62 s of one thread under dc (README), so 3 models of 5 passes take about 16 minutes (SAM: twice).
FULL_DATA_EPOCHS: dict[str, int] = {"paper": 30, "cpu": 4, "smoke": 1}

TEACHER_BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 60, "train_max_images": None},
    "cpu": {"epochs": 8, "train_max_images": None},
    "smoke": {"epochs": 1, "train_max_images": 500},
}


def default_data_source() -> str:
    """PDD_DATA names a local copy (an ImageFolder tree or an archive of one); otherwise torchvision's CIFAR-10."""
    return os.environ.get("PDD_DATA", "cifar10")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(Strict):
    source: str = Field(default_factory=default_data_source)
    val_per_class: int = Field(500, ge=1, description="validation images per class carved from train")
    split_seed: int = Field(0, ge=0)


class Evaluation(Strict):
    """One way of judging a synthetic set: a named protocol on one architecture; the protocol fills the optimiser
    fields left unset.

    paper: the seed paper's supplement, SAM (rho 0.001) over SGD lr 0.1, 5000 epochs.
    dc: the DC/DM reference's `evaluate_synset`, plain SGD lr 0.01, 1000 epochs (+1, as its loop runs), lr /10 with
    a fresh optimiser after half; what published DM, DC, DSA, MTT and DD-Ranking figures use.
    Both: momentum 0.9, weight decay 5e-4, batches of 256, DSA on every training batch.
    """

    protocol: Protocol = "paper"
    arch: str = Field("convnet", description="the evaluation network (pdd.models registry)")
    budget: Budget = DEFAULT_BUDGET
    epochs: int = Field(None, ge=1)
    seeds: int = Field(None, ge=1, description="number of evaluation models")
    seed: int = Field(0, ge=0, description="evaluation model k uses seed + k")
    max_images: int | None = Field(None, ge=1, description="cap on val/test images scored (smoke only)")
    lr: float = Field(None, gt=0, description="paper: 0.1; dc: 0.01")
    rho: float = Field(None, ge=0, description="SAM's radius; paper: 0.001; dc: 0, plain SGD")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch: int = Field(256, ge=1)
    dsa: bool = True
    # bf16 scoring moved a cpu trial's test accuracy by 0.02 points (std 0.66) and ran 1.8x faster (benchmarks/).
    precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="bf16: val/test scoring under bfloat16 autocast; fp32: plain")
    train_precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="bf16: each evaluation model's forwards under bfloat16 autocast while it trains (weights, "
                            "gradients and optimiser stay fp32); fp32: plain")
    batched: bool = Field(
        False, description="train the seeds models together, their weights stacked into one vmapped network (the same "
                           "weights to float tolerance); for GPUs, where one small model leaves the device idle")

    @model_validator(mode="before")
    @classmethod
    def _fill_budget(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        # An unknown protocol fails validation on its own field; the paper's values keep the others quiet.
        protocol = PROTOCOLS.get(values.get("protocol", "paper"), PROTOCOLS["paper"])
        defaults = {name: value for name, value in protocol.items() if name != "epochs"}
        epochs = protocol["epochs"].get(values.get("budget", "cpu"))
        given = {name: value for name, value in values.items() if value is not None}
        return _with_budget(defaults | ({"epochs": epochs} if epochs else {}) | given, EVAL_BUDGETS)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return check_arch(arch)

    @model_validator(mode="after")
    def _check_protocol(self) -> Evaluation:
        if self.protocol == "dc" and self.rho > 0:
            raise ValueError("rho: the dc protocol trains with plain SGD; SAM (rho > 0) is the paper protocol's")
        return self

    @property
    def name(self) -> str:
        """How reports and progress bars call this evaluation: 'dc-convnet-1000ep'."""
        return f"{self.protocol}-{self.arch}-{self.epochs}ep"

    @property
    def key(self) -> str:
        """The name and a hash of every setting: what checkpoints and result files are keyed by."""
        return f"{self.name}-{config_hash(self)[:8]}"


class EvalConfig(Strict):
    """How a trial judges its set: every listed protocol on every listed architecture, each one Evaluation (and
    one result row). The first protocol on the first architecture is the trial's primary score, the one a search
    maximises. Fields left unset come from each protocol (Evaluation)."""

    protocols: list[Protocol] = Field(["paper"], min_length=1)
    models: list[str] = Field(["convnet"], min_length=1, description="evaluation networks (pdd.models registry)")
    budget: Budget = DEFAULT_BUDGET
    epochs: int | None = Field(None, ge=1, description="every protocol's training epochs; default: each protocol's")
    seeds: int | None = Field(None, ge=1, description="number of evaluation models per evaluation")
    seed: int = Field(0, ge=0, description="evaluation model k uses seed + k")
    max_images: int | None = Field(None, ge=1, description="cap on val/test images scored (smoke only)")
    lr: float | None = Field(None, gt=0, description="every protocol's learning rate; default: each protocol's")
    rho: float | None = Field(None, ge=0, description="SAM's radius (paper protocol); default: the protocol's")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch: int = Field(256, ge=1)
    dsa: bool = True
    precision: Literal["fp32", "bf16"] = Field("bf16", description="val/test scoring (Evaluation)")
    train_precision: Literal["fp32", "bf16"] = Field("bf16", description="evaluation training (Evaluation)")
    batched: bool = Field(False, description="train each evaluation's models together (Evaluation)")

    @field_validator("protocols", "models")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"lists a name twice: {names}")
        return names

    @field_validator("models")
    @classmethod
    def _known_archs(cls, names: list[str]) -> list[str]:
        return [check_arch(name) for name in names]

    @model_validator(mode="after")
    def _runs_valid(self) -> EvalConfig:
        self.runs()  # e.g. rho > 0 with the dc protocol fails here, naming rho
        return self

    def runs(self) -> list[Evaluation]:
        shared = self.model_dump(exclude={"protocols", "models"})
        return [Evaluation(protocol=protocol, arch=arch, **shared) for protocol in self.protocols
                for arch in self.models]

    @property
    def primary(self) -> Evaluation:
        return self.runs()[0]


class TrialConfig(Strict):
    """Everything that determines a trial's result. Its hash identifies the trial."""

    # Fields added after results were stored: hashed only when set away from their default, so that adding one
    # leaves every stored trial's id as it was.
    HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("compile",)

    method: str = "pdd"
    ipc: int = Field(1, ge=1, description="synthetic images per class")
    pipc: int | None = Field(50, ge=1, description="practically accessible real images per class; None = all")
    alpha: float = Field(None, ge=0, description="weight of L_stat; paper: 0.1/0.01/0.001 for pipc 10/50/all")
    gamma: float = Field(None, ge=0, description="weight of L_DM; paper: 0.01 at ipc 50, else 0.001")
    init: Init = Field(None, description="paper: noise at ipc 1, else real")
    budget: Budget = DEFAULT_BUDGET

    # distillation
    iterations: int = Field(None, ge=0)
    optimizer_images: Literal["sgd", "adam"] = Field(
        "sgd", description="sgd: momentum SGD as the DM reference; adam: as the DSV paper's image updates")
    lr_images: float = Field(1.0, gt=0, description="learning rate of the images' optimiser (DM reference: SGD 1.0)")
    momentum_images: float = Field(0.5, ge=0, lt=1, description="SGD's momentum (sgd only)")
    batch_real: int = Field(256, ge=1, description="real images per class per DM iteration (DM reference)")
    distance: Literal["l1", "l2", "cosine"] = "l1"
    primal: Literal["ce", "misclassified"] = Field(
        "ce", description="L_primal over all of S (ce) or only over images the teacher misclassifies")
    lambda_init: float | Literal["auto"] = Field(
        "auto", description="initial KKT multiplier; auto = 1/(teacher weight decay * synthetic images)")
    lr_lambda: float = Field(0.1, gt=0, description="Adam learning rate of the multipliers' free parameters")
    manifold_weight: float = Field(
        0.0, ge=0, description="DSV's manifold term: weight of the DKKT loss on DSA-augmented copies of S (DSV: 5)")
    dsa: bool = True
    # bf16 distillation ran 1.6-2.6x faster on a CPU; paired cpu trials (same seeds) moved test accuracy by less
    # than the std across draws or evaluation models (benchmarks/README.md).
    precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="bf16: every distillation forward (real, synthetic, teacher) under bfloat16 autocast; "
                "fp32: the plain path")
    # Inductor fuses the embedder's norm, activation and pooling, which eager runs as separate memory-bound passes.
    # Its graphs are cached on disk (TORCHINDUCTOR_CACHE_DIR), so a node compiles once and its later trials load
    # them. The teacher's DKKT terms need a double backward, which torch.compile does not support.
    compile: bool = Field(
        False, description="torch.compile DM's random embedder: faster iterations after a compile that a node's "
                           "later trials load from disk (benchmarks/README.md)")

    # seeds: every source of randomness has its own, and all are recorded
    seed: int = Field(0, ge=0, description="distillation: noise init, DSA draws, random embedders")
    subset_seed: int = Field(0, ge=0, description="which real images form T'")

    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig, description="DM's random embedders and evaluation nets")
    teacher_model: ModelConfig = Field(
        default_factory=lambda: EDGE_MODEL, description="the edge model's architecture; the teacher file must match it")
    dsv_set: str | None = Field(None, description="blend only: a pre-extracted DSV set file to blend with DM")

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = _with_budget(values, BUDGETS)
        evaluation = values.get("eval", {})
        if isinstance(evaluation, dict):
            values["eval"] = {"budget": values.get("budget", DEFAULT_BUDGET)} | evaluation
        pipc, ipc = (values.get(name, cls.model_fields[name].default) for name in ("pipc", "ipc"))
        if not (isinstance(pipc, int) or pipc is None) or not isinstance(ipc, int):
            return values  # field validation reports the bad type
        if values.get("alpha") is None:
            values["alpha"] = 0.001 if pipc is None else 0.1 if pipc <= 10 else 0.01
        if values.get("gamma") is None:
            values["gamma"] = 0.01 if ipc == 50 else 0.001
        if values.get("init") is None:
            values["init"] = "noise" if ipc == 1 else "real"
        return values

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        return check_method(method)

    @model_validator(mode="after")
    def _check(self) -> TrialConfig:
        if self.init == "real" and self.pipc is not None and self.ipc > self.pipc:
            raise ValueError(f"init 'real' needs ipc <= pipc, got ipc={self.ipc} > pipc={self.pipc}")
        if self.dsv_set is not None and not SPECS[self.method].reads_dsv_set:
            readers = " or ".join(f"'{spec.name}'" for spec in SPECS.values() if spec.reads_dsv_set)
            raise ValueError(f"dsv_set is only used by method {readers}")
        return self

    def hash(self) -> str:
        return config_hash(self)


class TeacherConfig(Strict):
    """The edge model Phi(.; theta*): a ConvNet trained on the train split (validation images held out)."""

    budget: Budget = DEFAULT_BUDGET
    epochs: int = Field(None, ge=0, description="epochs of the one-cycle phase (0 only with final_epochs or init_from)")
    train_max_images: int | None = Field(None, ge=1, description="train on a random sample of the split (smoke only)")
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="sgd: momentum 0.9, nesterov; adam: betas (0.9, 0.999). Both add wd*theta to the "
                           "gradient (coupled L2, not AdamW), so their fixed point is the KKT point L_stat assumes")
    lr: float = Field(0.05, gt=0, description="peak of the one-cycle schedule")
    weight_decay: float = Field(2e-3, ge=0, description="also sets the multipliers' scale 1/(wd*n) in L_stat")
    batch: int = Field(128, ge=1)
    augment: bool = Field(True, description="random crop (pad 4) and horizontal flip in the one-cycle phase")
    final_epochs: int = Field(0, ge=0, description="epochs after the one-cycle phase at the constant final_lr, "
                                                   "without augmentation: they settle theta* at a stationary point "
                                                   "of the clean objective that L_stat assumes")
    final_lr: float = Field(1e-3, gt=0, description="learning rate of the final phase")
    final_anneal: bool = Field(False, description="the final phase's lr falls linearly from final_lr to 0 "
                                                  "instead of staying constant: the iterate's gradient noise, "
                                                  "which scales with the lr, fades at the end")
    final_optimizer: Literal["sgd", "adam"] | None = Field(
        None, description="the final phase's optimizer, fresh; None: the one-cycle phase's, its state carried on. "
                          "Adam moves the weights the data leaves flat (gradient wd*theta only) about lr toward "
                          "zero per step, SGD (momentum 0.9) by only about 10*lr*wd of their size")
    init_from: str | None = Field(None, description="a teacher checkpoint (same data, split and model) whose "
                                                    "weights training starts from")
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: EDGE_MODEL)

    @model_validator(mode="before")
    @classmethod
    def _fill_budget(cls, values: Any) -> Any:
        return _with_budget(values, TEACHER_BUDGETS)

    @model_validator(mode="after")
    def _trains_or_measures(self) -> TeacherConfig:
        # Zero epochs of both phases is only a re-measurement of an init_from teacher's weights.
        if self.epochs + self.final_epochs == 0 and self.init_from is None:
            raise ValueError("epochs: epochs + final_epochs must be at least 1 unless init_from names weights")
        return self


class FullDataConfig(Strict):
    """The evaluation network trained on the whole train split (validation images held out, as trials hold them
    out) under a protocol's optimiser, for FULL_DATA_EPOCHS[budget] epochs unless set; models and scored images
    are the protocol's at that budget (Evaluation)."""

    protocol: Protocol = "paper"
    arch: str = Field("convnet", description="the evaluation network (pdd.models registry)")
    budget: Budget = DEFAULT_BUDGET
    epochs: int = Field(None, ge=1, description="training epochs per model; default FULL_DATA_EPOCHS[budget]")
    seeds: int | None = Field(None, ge=1, description="number of models; default: the budget's evaluation models")
    seed: int = Field(0, ge=0, description="model k uses seed + k")
    data: DataConfig = Field(default_factory=DataConfig)

    @model_validator(mode="before")
    @classmethod
    def _fill_epochs(cls, values: Any) -> Any:
        if not isinstance(values, dict) or values.get("epochs") is not None:
            return values
        epochs = FULL_DATA_EPOCHS.get(values.get("budget", DEFAULT_BUDGET))
        return values if epochs is None else values | {"epochs": epochs}  # an unknown budget fails on its field

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return check_arch(arch)

    @property
    def evaluation(self) -> Evaluation:
        """The protocol's optimiser at this budget, with this config's epochs and models."""
        return Evaluation.model_validate(self.model_dump(exclude={"data"}, exclude_none=True))


def _with_budget(values: Any, budgets: dict[str, dict[str, Any]]) -> Any:
    """Fill the counts the user left unset from the named budget (an unknown budget fails validation later)."""
    if not isinstance(values, dict):
        return values
    return budgets.get(values.get("budget", DEFAULT_BUDGET), {}) | values


def merge_nested(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Config values: extra over base, where both hold a section (eval, model, data) key by key."""
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_nested(merged[key], value) if both else value
    return merged


def pipc_text(pipc: int | None) -> str:
    """pipc as flags, sweep files, result rows and reports write it: None, every image of a class, is 'all'."""
    return "all" if pipc is None else str(pipc)


def cell_name(ipc: int, pipc: int | None) -> str:
    """A grid cell as result rows, study keys and reports name it: 'ipc=1,pipc=50'."""
    return f"ipc={ipc},pipc={pipc_text(pipc)}"


def config_hash(config: BaseModel) -> str:
    """Short sha256 of the canonical JSON of a config; the data source is identified by content elsewhere."""
    payload = config.model_dump(mode="json")
    payload.get("data", {}).pop("source", None)
    for name in getattr(config, "HASHED_WHEN_SET", ()):
        if payload[name] == type(config).model_fields[name].default:
            del payload[name]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def format_validation_error(error: Exception) -> str:
    """One line naming the field: 'ipc: Input should be greater than or equal to 1 (got 0)'."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        shows_input = item["type"] != "extra_forbidden" and not isinstance(item.get("input"), dict)
        got = f" (got {item['input']!r})" if shows_input else ""
        parts.append(f"{where}: {message}{got}")
    return "; ".join(parts)
