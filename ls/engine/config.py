"""Config sections owned by the engine: ``training`` (optimiser, scheduler, freezing, ...) and ``mlflow``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class OptimizerConfig:
    type: Literal["adamw"] = "adamw"
    lr: float = 3e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    cosine_weight_decay: bool = True
    final_weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    type: Literal["none", "cosine", "cosine_warmup", "cosine_warmup_restarts", "reduce_on_plateau"] = (
        "cosine_warmup"
    )
    warmup_epochs: int = 10
    start_linear_warmup: float = 1e-4
    end_linear_warmup: float = 1.0
    min_lr: float = 1e-8
    T_0: int = 20
    reduce_factor: float = 0.5
    reduce_patience: int = 2
    reduce_min_lr: float = 1e-8


@dataclass
class FreezeConfig:
    strategy: Literal["none", "all", "until_block", "trainable_blocks"] = "none"
    until_block: Optional[int] = None
    trainable_blocks: Optional[int] = None
    freeze_film: bool = False


@dataclass
class TrainingConfig:
    epochs: int = 50
    loss: str = "bce"
    sensitivity_bias: float = 1.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    grad_clip: Optional[float] = 1.0
    early_stopping: Optional[int] = None
    selection: Literal["strict", "paper"] = "strict"
    mask_temperature: float = 1.0
    mask_temperature_end: float = 0.2
    mask_temperature_warmup: int = 5
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None
    experiment_name: str = "ls"
    tracking_username: Optional[str] = None
    tracking_password: Optional[str] = None
