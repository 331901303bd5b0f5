"""Config sections owned by the engine: ``training`` (optimiser, scheduler, freezing, ...) and ``mlflow``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal


@dataclass
class OptimizerConfig:
    """AdamW over the model's parameter groups (``ls.engine.optim``); defaults = the paper's configs."""

    type: Literal["adamw"] = "adamw"
    lr: float = 3e-5
    weight_decay: float = 0.05  # the starting value of the cosine schedule when cosine_weight_decay is on
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    cosine_weight_decay: bool = True
    final_weight_decay: float = 0.0
    # Per-group LR = lr * <group>_lr_scale; paper (SoftFiLM config): off, scales below; masks get WD 0.
    use_differential_lr: bool = False
    backbone_lr_scale: float = 0.01
    embedding_lr_scale: float = 0.5
    encoder_lr_scale: float = 1.0
    film_lr_scale: float = 1.0
    mask_lr_scale: float = 1.5
    classifier_lr_scale: float = 2.0
    # Fix 11.4-3 (mask LR multiplier configured but unused): when set, the mask group gets lr * this and
    # WD 0 even without differential LR. None = paper (masks trained like everything else).
    mask_lr_multiplier: float | None = None
    # Fix 11.4-3: no weight decay on model.no_weight_decay() (norms, biases, tokens, pos-embed, embeddings,
    # mask logits). False = paper (decay on every parameter, masks excepted only when grouped).
    decay_exclude: bool = False

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.final_weight_decay < 0:
            raise ValueError("optimizer.weight_decay and final_weight_decay must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if self.mask_lr_multiplier is not None and self.mask_lr_multiplier <= 0:
            raise ValueError(f"optimizer.mask_lr_multiplier must be > 0, got {self.mask_lr_multiplier}")


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
    T_mult: int = 1
    reduce_factor: float = 0.5
    reduce_patience: int = 2
    reduce_min_lr: float = 1e-8
    # Plateau scheduler: the validation metric it watches and whether higher is better. Fix 11.3-3: the
    # reference watched the ICBHI score in mode "min"; here the mode follows the metric unless given
    # (loss -> min, anything else -> max) and a score watched in mode "min" is an error.
    reduce_metric: str = "icbhi_score"
    reduce_mode: Literal["max", "min"] | None = None

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.T_0 < 1 or self.T_mult < 1:
            raise ValueError("scheduler: warmup_epochs must be >= 0, T_0 and T_mult >= 1")
        if not 0.0 < self.start_linear_warmup <= self.end_linear_warmup:
            raise ValueError(
                f"scheduler: need 0 < start_linear_warmup <= end_linear_warmup, got "
                f"{self.start_linear_warmup}, {self.end_linear_warmup}"
            )
        if not 0.0 < self.reduce_factor < 1.0:
            raise ValueError(f"scheduler.reduce_factor must be in (0, 1), got {self.reduce_factor}")
        metric = self.reduce_metric.removeprefix("val_")
        inferred = "min" if metric.endswith("loss") else "max"
        if self.reduce_mode is None:
            self.reduce_mode = inferred
        elif self.reduce_mode != inferred:
            raise ValueError(
                f"scheduler.reduce_mode {self.reduce_mode!r} contradicts reduce_metric {self.reduce_metric!r} "
                f"(a loss is minimised, a score maximised); use reduce_mode {inferred!r} or leave it unset"
            )


@dataclass
class ThresholdConfig:
    """Decision thresholds for sigmoid outputs (multilabel: crackle, wheeze; binary: abnormal).

    ``fixed`` uses ``value``; ``tuned`` runs the grid search of spec 4.4 on the selection split at every
    evaluation. ``None`` fields take the paper's per-mode values (multilabel grid 0.10..0.60, floor 0.45,
    fallback 0.10; binary grid 0.10..0.90, floor 0.40, fallback 0.5).
    """

    mode: Literal["fixed", "tuned"] = "tuned"
    value: float | list[float] = 0.5  # one value for every output, or one per output
    grid: list[float] | None = None  # [start, stop, step], stop inclusive
    min_sensitivity: float | None = None
    fallback: float | None = None

    def __post_init__(self) -> None:
        values = self.value if isinstance(self.value, list) else [self.value]
        if not values or not all(0.0 < v < 1.0 for v in values):
            raise ValueError(f"thresholds.value must be in (0, 1), got {self.value}")
        if self.grid is not None:
            if len(self.grid) != 3:
                raise ValueError(f"thresholds.grid must be [start, stop, step], got {self.grid}")
            start, stop, step = self.grid
            if not (0.0 < start <= stop < 1.0 and step > 0):
                raise ValueError(f"thresholds.grid needs 0 < start <= stop < 1 and step > 0, got {self.grid}")
        if self.min_sensitivity is not None and not 0.0 <= self.min_sensitivity <= 1.0:
            raise ValueError(f"thresholds.min_sensitivity must be in [0, 1], got {self.min_sensitivity}")


@dataclass
class FreezeConfig:
    strategy: Literal["none", "all", "until_block", "trainable_blocks"] = "none"
    until_block: int | None = None
    trainable_blocks: int | None = None
    freeze_film: bool = False


@dataclass
class TrainingConfig:
    # Loss-parameter key names of the reference configs.
    __aliases__: ClassVar[dict[str, str]] = {
        "alpha": "focal_alpha",
        "gamma": "focal_gamma",
        "gamma_neg": "asymmetric_gamma_neg",
        "gamma_pos": "asymmetric_gamma_pos",
    }

    epochs: int = 50
    # Task loss (ls.engine.losses.build_loss; the names valid per output mode are listed there).
    loss: str = "bce"
    sensitivity_bias: float = 1.0  # multiplies the BCE pos_weight (n_neg / n_pos) of every sigmoid output
    n_cls: int | None = None  # reference key duplicating dataset.n_cls; when given it must agree
    focal_alpha: float = 0.25  # focal: weight of positives (sigmoid outputs; negatives get 1 - alpha)
    focal_gamma: float = 2.0
    use_class_weights: bool = False  # multiclass losses: weight class k by n / (K * n_k) from training labels
    label_smoothing: float = 0.1  # used by loss "label_smoothing"
    asymmetric_gamma_neg: float = 4.0
    asymmetric_gamma_pos: float = 1.0
    asymmetric_clip: float = 0.05
    partial_credit: float = 0.5  # hierarchical / composite: cost of a 'both' cycle given one of its bits
    miss_penalty: float = 2.0  # hierarchical: weight of abnormal cycles predicted normal
    over_pred_cost: float = 0.3  # composite: cost of predicting 'both' for a crackle- or wheeze-only cycle
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    grad_clip: float | None = 1.0
    early_stopping: int | None = None
    selection: Literal["strict", "paper"] = "strict"
    # SoftFiLM mask temperature schedule (ls.engine.schedules.mask_temperature, spec 3.6)
    mask_temperature: float = 1.0
    mask_temperature_end: float = 0.2
    mask_temperature_warmup: int = 5
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # mixed precision (fp16 autocast + GradScaler); honoured on CUDA only, never on CPU
    checkpoint_dir: str = "checkpoints"  # last.pt every epoch, best.pt at each improvement (per run subfolder)
    deterministic: bool = True  # seeded, deterministic kernels; data order/augmentation = f(seed, epoch)
    # strict selection: also evaluate the test split every epoch (with that epoch's validation thresholds) and
    # log it as test_epoch/* curves, for monitoring only: it never influences selection, thresholds or stopping.
    monitor_test: bool = True


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None
    # None here means "not set": MLFLOW_* environment variables, then sqlite:///mlflow.db / "ls" apply.
    experiment_name: str | None = None
    tracking_username: str | None = None
    tracking_password: str | None = None
    fallback_dir: str | None = None  # where records go if the server is unreachable mid-run
