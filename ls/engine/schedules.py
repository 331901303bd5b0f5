"""Per-epoch schedules: learning rate and weight decay.

Epoch convention, stated once: LR and weight decay are functions of the **1-based** epoch about to be trained.
Every value is a closed-form function of the epoch, so resuming from a checkpoint reproduces the schedule
exactly. (Schedules a mechanism owns, such as SoftFiLM's mask temperature, live with the mechanism.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ls.engine.config import OptimizerConfig, SchedulerConfig, TrainingConfig

SCHEDULER_TYPES: tuple[str, ...] = (
    "none",
    "cosine",
    "cosine_warmup",
    "cosine_warmup_restarts",
    "reduce_on_plateau",
)


def _cosine(lr0: float, lr_min: float, t: float, period: float) -> float:
    """Cosine from ``lr0`` (t = 0) to ``lr_min`` (t = period)."""
    return lr_min + (lr0 - lr_min) * (1.0 + math.cos(math.pi * t / period)) / 2.0


def lr_at_epoch(cfg: SchedulerConfig, base_lr: float, epoch: int, epochs: int) -> float:
    """The learning rate used during 1-based ``epoch`` of ``epochs`` (not for ``reduce_on_plateau``).

    - ``none``: ``base_lr``.
    - ``cosine``: cosine from ``base_lr`` to ``min_lr`` with period ``epochs`` (torch CosineAnnealingLR).
    - ``cosine_warmup``: for e <= W, ``base_lr * (s + (end - s)(e - 1)/W)`` (s = start_linear_warmup,
      end = end_linear_warmup); then cosine from ``base_lr`` to ``min_lr`` over ``epochs - W`` epochs
      (torch SequentialLR([LinearLR, CosineAnnealingLR])). E.g. lr 3e-5, E 50, W 10: 3e-9, 3e-6, ...,
      2.7e-5 (epoch 10), 3e-5 (epoch 11), 5.6e-8 (epoch 50).
    - ``cosine_warmup_restarts``: cosine restarting every ``T_0`` epochs, periods growing by ``T_mult``
      (torch CosineAnnealingWarmRestarts).
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got epoch {epoch}")
    k = epoch - 1  # scheduler steps taken before this epoch
    kind = cfg.type
    if kind == "none":
        return base_lr
    if kind == "cosine":
        return _cosine(base_lr, cfg.min_lr, k, max(1, epochs))
    if kind == "cosine_warmup":
        w = cfg.warmup_epochs
        if k < w:
            s, end = cfg.start_linear_warmup, cfg.end_linear_warmup
            return base_lr * (s + (end - s) * k / w)
        return _cosine(base_lr, cfg.min_lr, k - w, max(1, epochs - w))
    if kind == "cosine_warmup_restarts":
        t_i, t_cur = cfg.T_0, k
        while t_cur >= t_i:  # walk the restart periods T_0, T_0*T_mult, ...
            t_cur -= t_i
            t_i *= cfg.T_mult
        return _cosine(base_lr, cfg.min_lr, t_cur, t_i)
    if kind == "reduce_on_plateau":
        raise ValueError("reduce_on_plateau depends on the monitored metric, not only on the epoch")
    raise ValueError(f"unknown scheduler.type {kind!r}; known: {', '.join(SCHEDULER_TYPES)}")


def _lookup_metric(metrics: Mapping[str, float], name: str) -> float:
    bare = name.removeprefix("val_")
    for key in (name, bare, f"val_{bare}"):
        if key in metrics:
            return float(metrics[key])
    raise ValueError(
        f"scheduler.reduce_metric {name!r} is not among the validation metrics "
        f"({', '.join(sorted(metrics)) or 'none'})"
    )


class EpochLRScheduler:
    """Sets each param group's LR once per epoch; ``step(metrics)`` after the epoch's validation.

    The LR of group g in epoch e is ``lr_at_epoch(cfg, base_lr_g, e, epochs)`` with ``base_lr_g`` the group's
    LR at construction (so differential-LR groups keep their ratios; ``min_lr`` is absolute, as in torch).
    ``reduce_on_plateau`` wraps torch's ReduceLROnPlateau on ``cfg.reduce_metric`` (mode from the config).
    ``state_dict`` holds plain Python values (``torch.load(weights_only=True)`` reads it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int) -> None:
        if cfg.type not in SCHEDULER_TYPES:
            raise ValueError(f"unknown scheduler.type {cfg.type!r}; known: {', '.join(SCHEDULER_TYPES)}")
        if epochs < 1:
            raise ValueError(f"training.epochs must be >= 1, got {epochs}")
        self.optimizer, self.cfg, self.epochs = optimizer, cfg, epochs
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.steps = 0  # epochs completed
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        if cfg.type == "reduce_on_plateau":
            self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode=cfg.reduce_mode or "max",
                factor=cfg.reduce_factor,
                patience=cfg.reduce_patience,
                min_lr=cfg.reduce_min_lr,
            )
        else:
            self._apply()

    @property
    def epoch(self) -> int:
        """The 1-based epoch the current LRs are for."""
        return self.steps + 1

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr_at_epoch(self.cfg, base, self.epoch, self.epochs)

    def step(self, metrics: Mapping[str, float] | float | None = None) -> None:
        """Advance one epoch. ``metrics`` (``reduce_on_plateau`` only, ignored otherwise): the validation
        metrics, from which ``scheduler.reduce_metric`` is read, or that metric's value itself."""
        self.steps += 1
        if self._plateau is None:
            self._apply()
            return
        if metrics is None:
            raise ValueError(
                f"reduce_on_plateau needs the validation metrics (it watches {self.cfg.reduce_metric!r}) "
                "at every step: call step(val_metrics)"
            )
        if isinstance(metrics, (int, float)):
            value = float(metrics)
        else:
            value = _lookup_metric(metrics, self.cfg.reduce_metric)
        self._plateau.step(value)

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"type": self.cfg.type, "steps": self.steps, "base_lrs": list(self.base_lrs)}
        if self._plateau is not None:
            state["plateau"] = self._plateau.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("type") != self.cfg.type:
            raise ValueError(
                f"scheduler state is for type {state.get('type')!r}, this run uses {self.cfg.type!r}"
            )
        if len(state["base_lrs"]) != len(self.base_lrs):
            raise ValueError(
                f"scheduler state has {len(state['base_lrs'])} param groups, the optimizer "
                f"{len(self.base_lrs)}"
            )
        self.steps = int(state["steps"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        if self._plateau is not None:
            self._plateau.load_state_dict(dict(state["plateau"]))
            # the plateau's reduced LRs live in the optimizer state, restored by optimizer.load_state_dict
        else:
            self._apply()


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig | TrainingConfig, epochs: int | None = None
) -> EpochLRScheduler:
    """The per-epoch LR scheduler (sets the epoch-1 LRs immediately). ``cfg``: the scheduler section with
    ``epochs``, or the training section (its ``scheduler`` and ``epochs``)."""
    if isinstance(cfg, TrainingConfig):
        cfg, epochs = cfg.scheduler, cfg.epochs if epochs is None else epochs
    if epochs is None:
        raise ValueError("build_lr_scheduler needs the number of epochs")
    return EpochLRScheduler(optimizer, cfg, epochs)


# ----------------------------------------------------------------------------- weight decay


def cosine_weight_decay(epochs_done: int, epochs: int, start: float, end: float) -> float:
    """``end + (start - end)(1 + cos(pi e / E)) / 2`` after ``e = epochs_done`` epochs (the reference's cosine weight decay)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * epochs_done / epochs)) / 2.0


def weight_decay_at_epoch(cfg: OptimizerConfig, epoch: int, epochs: int) -> float:
    """Weight decay used during 1-based ``epoch``: ``weight_decay`` for epoch 1, then the cosine value set
    after the previous epoch (the reference updates it after each epoch), e.g. 0.05, 0.04995, ..., 4.9e-5."""
    if not cfg.cosine_weight_decay:
        return cfg.weight_decay
    return cosine_weight_decay(epoch - 1, epochs, cfg.weight_decay, cfg.final_weight_decay)


def apply_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set ``value`` (times the group's ``weight_decay_scale``) on every group with ``scheduled_decay`` (WD-0
    groups such as masks are left alone)."""
    for group in optimizer.param_groups:
        if group.get("scheduled_decay", group["weight_decay"] > 0):
            scale = group.get("weight_decay_scale", 1.0)
            group["weight_decay"] = value if scale == 1.0 else value * scale


__all__ = [
    "SCHEDULER_TYPES",
    "EpochLRScheduler",
    "apply_weight_decay",
    "build_lr_scheduler",
    "cosine_weight_decay",
    "lr_at_epoch",
    "weight_decay_at_epoch",
]
