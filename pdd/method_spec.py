"""What pdd knows about each method without running it: the registry every other module reads.

A method's spec says what its loss uses (which weights a sweep may search), what a trial of it needs (a teacher,
a DSV set file), the distillation loops it runs (for cost estimates), its column in the report's tables and the
column of the paper's Table 1 it is compared with. The module imports no torch, so configs, sweep files and
reports read it without the training code; `pdd.methods` registers each method's make function against its spec.
Adding a method is one spec here and one make function there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from pdd.config import TrialConfig


Init = Literal["noise", "real"]  # how S starts: Gaussian noise, or the first ipc images per class of T'


@dataclass(frozen=True)
class Terms:
    """The loss terms one distillation loop optimises: DKKT (L_primal + alpha L_stat) and DM."""

    dkkt: bool
    dm: bool


DM_ONLY = Terms(dkkt=False, dm=True)
DKKT_ONLY = Terms(dkkt=True, dm=False)
BOTH = Terms(dkkt=True, dm=True)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str  # its column in the report's tables
    runs: tuple[Terms, ...]  # the distillation loops it runs, for cost estimates (pdd sweep estimate)
    unused: dict[str, str] = field(default_factory=dict)  # searchable field -> why the method leaves it out
    split_by_init: bool = False  # one column per init, as the paper prints DSV
    reads_dsv_set: bool = False  # a pre-extracted DSV set file (cfg.dsv_set) stands in for its teacher
    paper_column: str | None = None  # the Table 1 column it faces (split by init like its label)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._by_init(self.label)

    @property
    def paper_columns(self) -> tuple[str, ...]:
        """Table 1's columns it faces, one per label (none for a method the paper does not report)."""
        return self._by_init(self.paper_column) if self.paper_column else ()

    def label_for(self, init: str | None) -> str:
        return f"{self.label} ({init})" if self.split_by_init else self.label

    def _by_init(self, name: str) -> tuple[str, ...]:
        return tuple(f"{name} ({init})" for init in get_args(Init)) if self.split_by_init else (name,)


# The order is the main table's: the paper's columns first, then the baselines it does not have.
SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    # DM alone (eq. 2), no teacher. It follows the DM reference, so it faces the DM column rather than DM* (the
    # authors' reimplementation).
    MethodSpec("dm", "DM", (DM_ONLY,), paper_column="DM",
               unused={"alpha": "it has no stationarity term", "gamma": "DM is its only term"}),
    # DKKT alone (eq. 4): Deep Support Vectors from the teacher, no real data unless init is real.
    MethodSpec("dsv", "DSV", (DKKT_ONLY,), split_by_init=True, paper_column="DSV",
               unused={"gamma": "it uses no DM term"}),
    # DKKT + gamma DM (eq. 5), the paper's method.
    MethodSpec("pdd", "PDD", (BOTH,), paper_column="Ours"),
    # The first ipc images per class of T': the baseline every distillation must beat.
    MethodSpec("random", "random", (), unused={"alpha": "it distils nothing", "gamma": "it distils nothing",
                                               "init": "it takes T' images as they are"}),
    # The paper's Fig. 3: the image-by-image average of a DSV set (distilled from noise, or read from dsv_set when
    # only pre-extracted DSVs exist) and a DM set.
    MethodSpec("blend", "blend", (DKKT_ONLY, DM_ONLY), reads_dsv_set=True),
)}


def check_method(method: str) -> str:
    """A registered method name, or an error listing them."""
    if method not in SPECS:
        raise ValueError(f"unknown method '{method}'; choose one of {', '.join(SPECS)}")
    return method


def needs_teacher(cfg: TrialConfig) -> bool:
    """Whether a trial loads the teacher: its method's DKKT terms need it, unless a DSV set file stands in."""
    spec = SPECS[cfg.method]
    return any(terms.dkkt for terms in spec.runs) and not (spec.reads_dsv_set and cfg.dsv_set is not None)


def method_label(method: str, init: str | None) -> str:
    """The table column a row belongs to; an unregistered method (a row from another pdd) is its own column."""
    spec = SPECS.get(method)
    return spec.label_for(init) if spec else method


def method_names() -> str:
    """'dm, dsv, pdd, random or blend', for help texts."""
    *rest, last = SPECS
    return f"{', '.join(rest)} or {last}"
