"""Typed configuration: YAML files load into the ``Config`` dataclass tree.

>>> cfg = load_config("configs/quickstart.yaml", overrides=["training.epochs=2"])
>>> cfg.dataset.batch_size
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ls.config.loader import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    flatten,
    from_dict,
    read_yaml,
    to_dict,
)
from ls.data.config import AudioConfig, AugmentConfig, DatasetConfig
from ls.engine.config import MlflowConfig, TrainingConfig
from ls.models.config import ModelConfig, WeightsConfig
from ls.models.names import canonical_variant


@dataclass
class Config:
    """The whole resolved configuration of a run."""

    dataset: DatasetConfig
    seed: int = 42
    audio: AudioConfig = field(default_factory=AudioConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    mlflow: MlflowConfig | None = None

    def model(self, variant: str) -> ModelConfig:
        """The ``models.<variant>`` block (aliases such as ``tafilm`` or ``ast_meta_proj`` accepted)."""
        want = canonical_variant(variant)
        for cfg in self.models.values():
            if cfg.variant == want:
                return cfg
        have = ", ".join(self.models) or "none"
        raise ConfigError(f"config has no 'models.{variant}' block (blocks present: {have})")


def _resolve(cfg: Config, source: str) -> Config:
    seen: dict[str, str] = {}
    for key, mcfg in cfg.models.items():
        try:
            want = canonical_variant(key)
        except ValueError as exc:
            raise ConfigError(f"'models.{key}' in {source}: {exc}") from exc
        if mcfg.variant and canonical_variant(mcfg.variant) != want:
            raise ConfigError(
                f"'models.{key}.variant' in {source} is {mcfg.variant!r}, which does not match its key"
            )
        if want in seen:
            raise ConfigError(f"'models.{key}' and 'models.{seen[want]}' in {source} name the same variant")
        seen[want] = key
        mcfg.variant = want
    return cfg


def config_from_dict(data: dict, source: str = "<dict>", overrides: list[str] | None = None) -> Config:
    data = apply_overrides(dict(data), overrides)
    return _resolve(from_dict(Config, data, source), source)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config into the typed ``Config``; ``overrides`` are ``section.key=value`` strings.

    Unknown keys, missing required keys and wrong types raise ``ConfigError`` naming the key and file.
    """
    source = str(path)
    if overrides:
        source += " (with overrides " + ", ".join(overrides) + ")"
    return config_from_dict(read_yaml(path), source, overrides)


__all__ = [
    "AudioConfig",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DatasetConfig",
    "MlflowConfig",
    "ModelConfig",
    "TrainingConfig",
    "WeightsConfig",
    "config_from_dict",
    "dump_yaml",
    "flatten",
    "load_config",
    "to_dict",
]
