"""Resolved configs written by ls 0.1 (checkpoint format 1) -> today's schema.

ls 0.1 stored every key of one flat ``ModelConfig`` in each ``models.<variant>`` block, kept SoftFiLM's
temperature schedule under ``training``, had two mask learning-rate knobs and wrote the measured feature
statistics into ``audio``. :func:`upgrade_config_v1` returns the same run in today's keys, and the feature
statistics separately (they now travel with the fitted metadata encoder).
"""

from __future__ import annotations

import copy
from dataclasses import fields

from ls.config import _MOVED_TO_SOFTFILM


def _upgrade_model_block(variant: str, block: dict, training: dict) -> dict:
    from ls.models.variants import get_variant

    options = get_variant(variant).options
    known = {f.name for f in fields(options)} | set(getattr(options, "__aliases__", {}))
    block = dict(block)
    if block.pop("head", "paper") == "paper":
        # each variant's own head: today's default when head_hidden_dim / head_activation are unset
        block.pop("head_hidden_dim", None)
        block.pop("head_activation", None)
    else:  # "common": head_hidden_dim / head_activation applied to every variant; GRF's hidden_dim was unused
        block.pop("hidden_dim", None)
    if "mask_temperature" in known:
        for key in _MOVED_TO_SOFTFILM:  # the trainer's schedule overwrote the model's initial tau
            if key in training:
                block[key] = training[key]
    # Every other key of the flat 0.1 block that this variant does not use had no effect on it.
    return {k: v for k, v in block.items() if k in known}


def upgrade_config_v1(config: dict) -> tuple[dict, dict | None]:
    """An ls 0.1 resolved config (a plain dict) -> (today's config dict, feature statistics or None).

    The feature statistics are ``{"mean", "std"}`` of ``audio.mel_norm: dataset`` runs.
    """
    cfg = copy.deepcopy(config)
    training = cfg.get("training", {})
    cfg["models"] = {name: _upgrade_model_block(block.get("variant") or name, block, training)
                     for name, block in cfg.get("models", {}).items()}
    for key in _MOVED_TO_SOFTFILM:
        training.pop(key, None)
    optimizer = training.get("optimizer", {})
    multiplier = optimizer.pop("mask_lr_multiplier", None)
    scale = optimizer.pop("mask_lr_scale", None)
    # 0.1: the multiplier (when set) won; else mask_lr_scale applied only under differential LR, and 1.5
    # (its default) is what mask_lr_scale: null gives there today.
    if multiplier is not None:
        optimizer["mask_lr_scale"] = multiplier
    elif optimizer.get("use_differential_lr") and scale not in (None, 1.5):
        optimizer["mask_lr_scale"] = scale
    freeze = training.get("freeze", {})
    if "freeze_film" in freeze:
        freeze["freeze_conditioning"] = freeze.pop("freeze_film")
    audio = cfg.get("audio", {})
    mean, std = audio.pop("dataset_mean", None), audio.pop("dataset_std", None)
    stats = {"mean": float(mean), "std": float(std)} if mean is not None and std is not None else None
    return cfg, stats


__all__ = ["upgrade_config_v1"]
