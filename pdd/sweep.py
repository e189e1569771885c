"""Sweep files: a grid of (ipc, pipc) cells, the methods, their search spaces, and what a sweep runs.

    pdd sweep run sweeps/smoke.yaml

A sweep file is YAML checked as strictly as a trial config: an unknown key, a duplicate key, a bad value or a
search space naming a weight its method does not have is an error that names the file's line. A spec expands
into studies, one per (cell, method entry) with something to search, and into the trials of the confirm stage.
Every trial config is a TrialConfig, so TrialConfig's defaults for a cell (the paper's alpha, gamma and init) are
the first point each study evaluates. This module never imports Ray; `pdd.runner` runs what it describes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from pdd.config import (
    DEFAULT_BUDGET,
    Budget,
    DataConfig,
    Strict,
    TrialConfig,
    cell_name,
    format_validation_error,
    merge_nested,
    pipc_text,
)
from pdd.errors import SweepError
from pdd.method_spec import SPECS, Init, check_method

SEARCHABLE = ("alpha", "gamma", "init")

# TrialConfig fields a sweep sets itself, and where; a `trial:` section may set every other field.
SET_ELSEWHERE = {"method": "methods", "ipc": "grid", "pipc": "grid", "alpha": "methods", "gamma": "methods",
                 "init": "methods", "budget": "the top-level budget", "data": "the top-level data section"}


class Misplaced(ValueError):
    """A validation error that knows which key (a path below the validated object) it is about."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = path


def _all_is_none(value: Any) -> Any:
    return None if value == "all" else value


Pipc = Annotated[Annotated[int, Field(ge=1)] | None, BeforeValidator(_all_is_none)]


class LogRange(Strict):
    """A log-uniform search range for a loss weight."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if self.low >= self.high:
            raise Misplaced(("low",), f"inverted range: low {self.low:g} must be below high {self.high:g}")
        return self


def _weight_kind(value: Any) -> str:
    return "range" if isinstance(value, dict | LogRange) else "fixed"


def _init_kind(value: Any) -> str:
    return "choices" if isinstance(value, list) else "fixed"


Weight = Annotated[Annotated[float, Tag("fixed"), Field(ge=0)] | Annotated[LogRange, Tag("range")],
                   Discriminator(_weight_kind)]
InitSpace = Annotated[Annotated[Init, Tag("fixed")] | Annotated[list[Init], Tag("choices"), Field(min_length=1)],
                      Discriminator(_init_kind)]


class MethodEntry(Strict):
    """One column of the sweep: a registered method, fixed values and a search space for its weights and init."""

    method: str
    alpha: Weight | None = None
    gamma: Weight | None = None
    init: InitSpace | None = None
    pipc: list[Pipc] | None = Field(None, min_length=1, description="only these pipc columns of the grid")
    trial: dict[str, Any] = Field(default_factory=dict, description="further TrialConfig fields for this method")

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        return check_method(method)

    @model_validator(mode="after")
    def _used(self) -> MethodEntry:
        for name in SEARCHABLE:  # a search space or fixed value of a weight the method's loss leaves out
            reason = SPECS[self.method].unused.get(name)
            if getattr(self, name) is not None and reason:
                raise Misplaced((name,), f"{self.method} has no {name} ({reason})")
        return self

    def space(self) -> dict[str, Any]:
        """What Optuna searches: name -> {low, high} (log-uniform) or a list of choices."""
        space = {}
        for name in SEARCHABLE:
            value = getattr(self, name)
            if isinstance(value, LogRange):
                space[name] = value.model_dump()
            elif isinstance(value, list) and len(set(value)) > 1:
                space[name] = sorted(set(value))
        return space

    def fixed(self) -> dict[str, Any]:
        """Values set once for every trial of this method (a one-item choice is a fixed value)."""
        fixed = {}
        for name in SEARCHABLE:
            value = getattr(self, name)
            if isinstance(value, list) and len(set(value)) == 1:
                fixed[name] = value[0]
            elif value is not None and not isinstance(value, LogRange | list):
                fixed[name] = value
        return fixed


class GridBlock(Strict):
    """Every ipc with every pipc of one block; blocks let a grid leave cells out (Table 1 has no ipc 50 x pipc 10)."""

    ipc: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    pipc: list[Pipc] = Field(min_length=1)


class Search(Strict):
    trials: int = Field(ge=1, description="Optuna trials per study, i.e. per (cell, method)")
    max_concurrent: int = Field(2, ge=1, description="trials in flight per study, so TPE learns from finished ones")
    seed: int = Field(0, ge=0, description="TPE seed; study k uses seed + k")


class Confirm(Strict):
    subset_seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="draws of T' per best config")
    trial: dict[str, Any] = Field(
        default_factory=dict, description="TrialConfig fields for confirm trials only, over the search's: e.g. "
                                          "iterations, eval.seeds, eval.protocols, eval.models (cross-architecture)")

    @field_validator("subset_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("subset seeds repeat")
        return seeds


class Resources(Strict):
    cpu: float = Field(1, gt=0, description="logical CPUs per trial")
    gpu: float = Field(0, ge=0, description="GPUs per trial; a fraction such as 0.25 packs trials onto one GPU")


@dataclass(frozen=True)
class Study:
    """One Optuna study: a method entry in one cell. Plain data, so searchers holding it pickle."""

    label: str
    cell: str
    base: dict[str, Any]  # TrialConfig values of every trial in the study, the searched parameters aside
    space: dict[str, Any]  # parameter -> {"low", "high"} (log-uniform) or a list of choices
    first: dict[str, Any]  # the paper's point in the space: what the study evaluates first

    @property
    def key(self) -> str:
        return study_key(self.label, self.cell)

    def points(self) -> list[dict[str, Any]]:
        """What the study evaluates before TPE takes over: the paper's point, and for a space of choices only
        (dm's init) every other point too, since sampling a few values at random would repeat some."""
        if any(not isinstance(domain, list) for domain in self.space.values()):
            return [self.first]
        grid = [dict(zip(self.space, values, strict=True)) for values in itertools.product(*self.space.values())]
        return [self.first] + [point for point in grid if point != self.first]

    def budget(self, trials: int) -> int:
        """Trials the study runs: `trials`, or fewer when a space of choices has fewer points."""
        if all(isinstance(domain, list) for domain in self.space.values()):
            return min(trials, len(self.points()))
        return trials


class SweepSpec(Strict):
    """A whole sweep: shared trial settings, the grid, the methods, the search and confirm stages, resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="sweep id; results/<name>/")
    budget: Budget = DEFAULT_BUDGET
    data: DataConfig = Field(default_factory=DataConfig)
    trial: dict[str, Any] = Field(default_factory=dict, description="further TrialConfig fields for every trial")
    teacher: str = Field("auto", description="a teacher checkpoint, or auto: trained once, as the sweep's first trial")
    grid: list[GridBlock] = Field(min_length=1)
    methods: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")], MethodEntry] = Field(min_length=1)
    search: Search
    confirm: Confirm
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, each from its last checkpoint")
    checkpoint_every: int = Field(100, ge=1, description="distillation iterations between checkpoints")
    checkpoint_seconds: float = Field(0.0, ge=0, description="and at least this long between them (a GPU runs 100 "
                                      "iterations in about a second, less than a checkpoint's round trip can cost)")

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for section, keys in (("trial", self.trial), ("confirm", self.confirm.trial)):
            for key in keys:
                if key in SET_ELSEWHERE or key == "subset_seed":
                    where = "confirm.subset_seeds" if key == "subset_seed" else SET_ELSEWHERE[key]
                    path = ("trial", key) if section == "trial" else ("confirm", "trial", key)
                    raise Misplaced(path, f"set by {where}, not here")
        columns = {pipc for block in self.grid for pipc in block.pipc}
        for label, entry in self.methods.items():
            for key in entry.trial:
                if key in SET_ELSEWHERE:
                    raise Misplaced(("methods", label, "trial", key), f"set by {SET_ELSEWHERE[key]}, not here")
            for pipc in entry.pipc or []:
                if pipc not in columns:
                    raise Misplaced(("methods", label, "pipc"), f"pipc {pipc_text(pipc)} is not in the grid")
            for ipc, pipc in self.cells(label):
                self._check_cell(label, ipc, pipc)
        self._check_distinguishable()
        return self

    def _check_cell(self, label: str, ipc: int, pipc: int | None) -> None:
        """Every trial the cell can run is a valid TrialConfig, and the space holds the paper's point."""
        entry = self.methods[label]
        base = self.trial_values(label, ipc, pipc)
        space = entry.space()
        for init in [None, *space.get("init", [])]:
            try:
                TrialConfig.model_validate(base if init is None else base | {"init": init})
            except ValidationError as error:
                loc = error.errors()[0]["loc"]
                field = str(loc[0]) if loc else ""
                path: tuple[str | int, ...] = (
                    ("trial", field) if field in self.trial
                    else ("methods", label, "trial", field) if field in entry.trial
                    else ("methods", label, "init") if init is not None
                    else ("methods", label))
                raise Misplaced(path, f"at {cell_name(ipc, pipc)}: {format_validation_error(error)}") \
                    from None
        try:
            TrialConfig.model_validate(self.confirm_values(base)[0])
        except ValidationError as error:
            raise Misplaced(("confirm", "trial"), f"at {cell_name(ipc, pipc)}: {format_validation_error(error)}") \
                from None
        paper = TrialConfig.model_validate(base)
        for name, domain in space.items():
            value = getattr(paper, name)
            inside = value in domain if isinstance(domain, list) else domain["low"] <= value <= domain["high"]
            if not inside:
                raise Misplaced(("methods", label, name),
                                f"leaves out the paper's {name} {value} at {cell_name(ipc, pipc)}, "
                                f"which each study evaluates first")

    def _check_distinguishable(self) -> None:
        """Two entries of one method must differ in a fixed value, or their rows could not be told apart."""
        labels = list(self.methods)
        for i, first in enumerate(labels):
            for second in labels[i + 1:]:
                a, b = self.methods[first], self.methods[second]
                if a.method != b.method or not set(self.cells(first)) & set(self.cells(second)):
                    continue
                fixed_a, fixed_b = a.fixed(), b.fixed()
                if not any(name in fixed_b and fixed_b[name] != value for name, value in fixed_a.items()):
                    raise Misplaced(("methods", second),
                                    f"its rows could not be told apart from those of {first}: give both a "
                                    f"different fixed value (e.g. init: noise and init: real)")

    def cells(self, label: str) -> list[tuple[int, int | None]]:
        """The (ipc, pipc) cells a method entry runs in, in grid order."""
        only = self.methods[label].pipc
        cells = [(ipc, pipc) for block in self.grid for ipc in block.ipc for pipc in block.pipc
                 if only is None or pipc in only]
        return list(dict.fromkeys(cells))

    def trial_values(self, label: str, ipc: int, pipc: int | None) -> dict[str, Any]:
        """TrialConfig values of a method entry in a cell; the parameters it searches are left to their defaults."""
        entry = self.methods[label]
        values = merge_nested(merge_nested({"budget": self.budget, "data": self.data.model_dump()}, self.trial),
                              entry.trial)
        return values | entry.fixed() | {"method": entry.method, "ipc": ipc, "pipc": pipc}

    def studies(self) -> list[Study]:
        """One study per cell and method entry that searches something, cells first so keys read in grid order."""
        studies = []
        for label, entry in self.methods.items():
            space = entry.space()
            if not space:
                continue
            for ipc, pipc in self.cells(label):
                base = self.trial_values(label, ipc, pipc)
                paper = TrialConfig.model_validate(base)
                studies.append(Study(label, cell_name(ipc, pipc), base, space, {k: getattr(paper, k) for k in space}))
        return studies

    def unsearched(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, trial values) of the cells of entries with nothing to search, e.g. random: confirm only."""
        return [(label, self.trial_values(label, ipc, pipc)) for label, entry in self.methods.items()
                if not entry.space() for ipc, pipc in self.cells(label)]

    def confirm_values(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """A chosen config once per subset seed, with the confirm stage's own trial fields (a search may run a
        cheaper proxy)."""
        confirmed = merge_nested(values, self.confirm.trial)
        return [confirmed | {"subset_seed": seed} for seed in self.confirm.subset_seeds]

    def label_of(self, values: dict[str, Any]) -> str | None:
        """The method entry a trial config or result row belongs to (entries of one method differ in a fixed value)."""
        for label, entry in self.methods.items():
            if entry.method != values["method"] or (values["ipc"], values["pipc"]) not in self.cells(label):
                continue
            if all(_same(values[name], value) for name, value in entry.fixed().items()):
                return label
        return None


def study_key(label: str | None, cell: str) -> str:
    """How a study (or an unsearched entry's cell) is named in logs and tables: 'dsv-noise ipc=1,pipc=50'."""
    return f"{label} {cell}"


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; any problem is a SweepError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SweepError(f"cannot read sweep file {path}: {error.strerror}") from None
    lines: dict[tuple[str | int, ...], int] = {}
    data = _parse(text, path, lines)
    if not isinstance(data, dict):
        raise SweepError(f"{path}:1: a sweep file holds a mapping (name, grid, methods, search, confirm, ...)")
    data.setdefault("name", path.stem)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SweepError(_located(error, path, lines)) from None
    return resolve_paths(spec)


def resolve_paths(spec: SweepSpec) -> SweepSpec:
    """Absolute data and teacher paths: Tune runs each trial in its own working directory."""
    update: dict[str, Any] = {}
    if Path(spec.data.source).exists():
        update["data"] = spec.data.model_copy(update={"source": str(Path(spec.data.source).resolve())})
    if spec.teacher != "auto":
        update["teacher"] = str(Path(spec.teacher).expanduser().resolve())
    return spec.model_copy(update=update)


def _parse(text: str, path: Path, lines: dict[tuple[str | int, ...], int]) -> Any:
    """YAML to plain data, recording the line of every key and list item and refusing duplicate keys."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return _plain(loader, root, (), path, lines) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise SweepError(f"{path}:{line}: not valid YAML: {error.problem or error.context}") from None
    finally:
        loader.dispose()


def _plain(loader: yaml.SafeLoader, node: yaml.Node, where: tuple[str | int, ...], path: Path,
           lines: dict[tuple[str | int, ...], int]) -> Any:
    if isinstance(node, yaml.MappingNode):
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in mapping:
                first = lines[(*where, key)]
                raise SweepError(f"{path}:{line}: {_dotted((*where, key))}: duplicate key (first at line {first})")
            lines[(*where, key)] = line
            mapping[key] = _plain(loader, value_node, (*where, key), path, lines)
        return mapping
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*where, index)] = item.start_mark.line + 1
            items.append(_plain(loader, item, (*where, index), path, lines))
        return items
    return loader.construct_object(node)


def _located(error: ValidationError, path: Path, lines: dict[tuple[str | int, ...], int]) -> str:
    """One line for the first problem: file:line: dotted.key: message."""
    item = error.errors()[0]
    cause = item.get("ctx", {}).get("error")
    loc = tuple(item["loc"]) + (cause.path if isinstance(cause, Misplaced) else ())
    where: tuple[str | int, ...] = ()
    for part in loc:  # union tags such as "range" are not keys of the file
        if (*where, part) in lines or part == loc[-1] and item["type"] == "missing":
            where = (*where, part)
    message = str(cause) if cause is not None else item["msg"]
    if item["type"] == "extra_forbidden":
        message = "unknown key"
    elif item["type"] == "missing":
        message = "missing key"
    elif cause is None and not isinstance(item.get("input"), dict | list):
        message += f" (got {item['input']!r})"
    line = lines.get(where) or lines.get(where[:-1]) or 1
    return f"{path}:{line}: {_dotted(where) or 'sweep'}: {message}"


def _dotted(where: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in where)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return a == b
