"""Plans: what a group of runs is, before anything runs. ``--seeds``, ``--kfold``, a study, the quickstart and a
search each make a list of :class:`RunSpec` (config, variant, seed, fold, selection, folder) that one executor
(:mod:`ls.runs.executor`) runs, and one check (:func:`check_plan`) validates for all of them."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ls.config import Config


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan.

    ``cfg`` carries the run's seed and ``training.selection``; ``run_dir`` is its folder (None: a new one under
    ``training.checkpoint_dir``); ``resume`` the ``last.pt`` it continues; ``member`` marks one of a
    ``--seeds``/``--kfold`` group (its checkpoints say so); ``tags`` are added to its record;
    ``evaluate_test=False`` keeps the run off the test split (a search's trial).
    """

    variant: str
    cfg: Config
    run_dir: Path | None = None
    fold: tuple[int, int] | None = None
    resume: Path | None = None
    member: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    evaluate_test: bool = True

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def selection(self) -> str:
        return str(self.cfg.training.selection)

    @property
    def identity(self) -> tuple[str, int, str, int | None]:
        return self.variant, self.seed, self.selection, None if self.fold is None else self.fold[0]

    @property
    def key(self) -> str:
        """``<selection>/<variant>/seed<seed>[/fold<i>]``: how messages and a study's state name the run."""
        return f"{self.selection}/{self.variant}/seed{self.seed}" + ("" if self.fold is None else f"/fold{self.fold[0]}")


@dataclass
class Plan:
    """Runs executed together; ``parent`` is the folder of the record they are nested under (a group's or a
    study's), None for runs of their own."""

    specs: list[RunSpec]
    parent: Path | None = None

    def __post_init__(self) -> None:
        check_plan(self.specs)


def check_plan(specs: Sequence[RunSpec]) -> None:
    """One run per identity (variant, seed, selection, fold): the same seed twice would train the same run twice
    and report a spread of zero. Raises ValueError naming the repeats."""
    counts = Counter(s.identity for s in specs)
    repeats = [spec.key for spec in specs if counts[spec.identity] > 1]
    if repeats:
        raise ValueError(f"the plan lists the same run more than once: {', '.join(sorted(set(repeats)))} (each "
                         "seed, fold and variant once)")


def with_seed(cfg: Config, seed: int, selection: str | None = None) -> Config:
    """A copy of ``cfg`` for one run: its seed (and selection protocol)."""
    out = copy.deepcopy(cfg)
    out.seed = int(seed)
    if selection is not None:
        out.training.selection = selection
    return out


def seeds_plan(cfg: Config, variant: str, seeds: Sequence[int], group: Path | None) -> Plan:
    """``--seeds``: one member per seed, in ``<group>/seed<seed>`` (the group folder holds the parent record)."""
    specs = [RunSpec(variant, with_seed(cfg, s), None if group is None else group / f"seed{int(s)}", member=True)
             for s in seeds]
    return Plan(specs, parent=group)


def kfold_plan(cfg: Config, variant: str, k: int, group: Path | None) -> Plan:
    """``--kfold K``: one member per patient fold of the training split (that fold validates), in
    ``<group>/fold<i>``; the test split stays the configured one."""
    if k < 2:
        raise ValueError(f"--kfold needs at least 2 folds, got {k}")
    specs = [RunSpec(variant, cfg, None if group is None else group / f"fold{i}", fold=(i, k), member=True)
             for i in range(k)]
    return Plan(specs, parent=group)


def describe(spec: RunSpec) -> dict[str, Any]:
    return {"variant": spec.variant, "seed": spec.seed, "selection": spec.selection,
            "fold": None if spec.fold is None else spec.fold[0]}


__all__ = ["Plan", "RunSpec", "check_plan", "describe", "kfold_plan", "seeds_plan", "with_seed"]
