"""AdamW over the model's named parameter groups, treated as the model declares.

``model.param_groups()`` names every trainable parameter's group (docs/interfaces.md) and
``model.param_group_settings(optimizer_cfg)`` says how the optimiser treats each group: a learning-rate and a
weight-decay multiplier (``ls.types.ParamGroupSettings``). The model and its mechanism own those declarations
(the per-group rates of ``use_differential_lr``, SoftFiLM's mask group); this module applies them and names no
group, so a mechanism defined outside ls gets its own rates without a change here. The optimiser keeps one
torch param group per model group (same numbers as one big group when all hyper-parameters agree, but per-group
LRs can be logged), plus a ``<name>_no_decay`` twin when weight-decay exclusion is on. Each torch group carries
extra keys:

- ``name``: the model group (``backbone``, ..., or ``backbone_no_decay``);
- ``lr_scale``: its LR relative to ``optimizer.lr``;
- ``weight_decay_scale``: its weight decay relative to the (scheduled) weight decay;
- ``scheduled_decay``: whether the cosine weight-decay schedule updates it (False for WD-0 groups).

``decay_exclude`` (fix 11.4-3): the names in ``model.no_weight_decay()`` (norms, biases, tokens, pos-embed,
embeddings, mask logits) get WD 0; models without that method fall back to "every 1-D parameter". A model
without ``param_groups`` is one group, ``model``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ls.engine.config import OptimizerConfig, TrainingConfig
from ls.engine.distributed import unwrap
from ls.types import ParamGroupSettings


def _model_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``model.param_groups()`` restricted to trainable parameters, checked to cover each exactly once."""
    trainable = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    if not hasattr(model, "param_groups"):
        return {"model": [p for p in model.parameters() if p.requires_grad]}
    raw = model.param_groups()
    groups: dict[str, list[nn.Parameter]] = {}
    seen: dict[int, str] = {}
    for group, params in raw.items():
        for p in params:
            if id(p) in seen:
                name = trainable.get(id(p), "<frozen parameter>")
                raise ValueError(f"parameter {name!r} is in two param groups: {seen[id(p)]!r} and {group!r}")
            seen[id(p)] = group
            if p.requires_grad:
                groups.setdefault(group, []).append(p)
    missing = [name for pid, name in trainable.items() if pid not in seen]
    if missing:
        raise ValueError(
            f"model.param_groups() leaves out trainable parameters: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    return groups


def _no_decay_ids(model: nn.Module) -> set[int]:
    named = dict(model.named_parameters())
    if hasattr(model, "no_weight_decay"):
        names = set(model.no_weight_decay())
        unknown = sorted(names - set(named))
        if unknown:
            raise ValueError(f"model.no_weight_decay() names unknown parameters: {unknown[:5]}")
        return {id(named[n]) for n in names}
    return {id(p) for p in named.values() if p.ndim <= 1}


def _group_settings(model: nn.Module, cfg: OptimizerConfig) -> dict[str, ParamGroupSettings]:
    if not hasattr(model, "param_group_settings"):
        return {}
    settings = dict(model.param_group_settings(cfg))
    bad = {k: v for k, v in settings.items() if not isinstance(v, ParamGroupSettings)}
    if bad:
        raise ValueError(f"model.param_group_settings() must give ls.types.ParamGroupSettings, got {bad}")
    return settings


def parameter_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    """Torch param-group dicts (``params``, ``name``, ``lr``, ``lr_scale``, ``weight_decay``,
    ``weight_decay_scale``, ``scheduled_decay``) for ``model`` under ``cfg``; empty groups (all frozen) are
    dropped."""
    model = unwrap(model)
    groups = _model_groups(model)
    settings = _group_settings(model, cfg)
    no_decay = _no_decay_ids(model) if cfg.decay_exclude else set()
    out: list[dict[str, Any]] = []
    for name, params in groups.items():
        group = settings.get(name, ParamGroupSettings())
        decay = cfg.weight_decay * group.weight_decay_scale
        decayed = [p for p in params if id(p) not in no_decay]
        exempt = [p for p in params if id(p) in no_decay]
        for suffix, members, wd in (("", decayed, decay), ("_no_decay", exempt, 0.0)):
            if members:
                out.append(
                    {
                        "params": members,
                        "name": name + suffix,
                        "lr": cfg.lr * group.lr_scale,
                        "lr_scale": float(group.lr_scale),
                        "weight_decay": wd,
                        "weight_decay_scale": float(group.weight_decay_scale) if wd > 0 else 0.0,
                        "scheduled_decay": wd > 0,
                    }
                )
    return out


def build_optimizer(model: nn.Module, cfg: OptimizerConfig | TrainingConfig) -> torch.optim.AdamW:
    """AdamW(betas, eps) over ``parameter_groups(model, cfg)`` (``cfg``: the optimizer section, or the
    training section holding it)."""
    if isinstance(cfg, TrainingConfig):
        cfg = cfg.optimizer
    if cfg.type != "adamw":
        raise ValueError(f"unknown optimizer.type {cfg.type!r}; known: adamw")
    groups = parameter_groups(model, cfg)
    # The fused CUDA kernel: one launch for all parameters instead of several per tensor (CPU keeps foreach).
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def apply_weight_decay_schedule(
    optimizer: torch.optim.Optimizer, epoch: int, training_cfg: TrainingConfig
) -> float:
    """Set the weight decay for the **0-based** ``epoch`` about to be trained (= epochs completed) on every
    scheduled group and return it: ``weight_decay`` before the first epoch, then the cosine value of the reference's schedule
    (constant when ``optimizer.cosine_weight_decay`` is off). Call at the start of every epoch (also on resume).
    """
    from ls.engine.schedules import apply_weight_decay, weight_decay_at_epoch

    value = weight_decay_at_epoch(training_cfg.optimizer, epoch + 1, training_cfg.epochs)
    apply_weight_decay(optimizer, value)
    return value


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr_<group name>": lr}`` for logging (``lr_group<i>`` for unnamed groups)."""
    return {f"lr_{g.get('name', f'group{i}')}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


__all__ = [
    "apply_weight_decay_schedule",
    "build_optimizer",
    "group_lrs",
    "parameter_groups",
    "unwrap",
]
