"""Config sections owned by the engine: ``training`` (optimiser, scheduler, freezing, ...) and ``mlflow``.

Defaults are the paper's values; each lives once, in the field here (with its help text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ls.utils.fields import option


@dataclass
class OptimizerConfig:
    """AdamW over the model's parameter groups (``ls.engine.optim``)."""

    type: Literal["adamw"] = option("adamw", "optimiser; AdamW (the paper's)")
    lr: float = option(3e-5, "base learning rate")
    weight_decay: float = option(
        0.05, "weight decay; the starting value of the cosine schedule when cosine_weight_decay is on")
    betas: list[float] = option([0.9, 0.999], "AdamW (beta1, beta2)")
    eps: float = option(1e-8, "AdamW epsilon")
    cosine_weight_decay: bool = option(True, "decay the weight decay from weight_decay to final_weight_decay")
    final_weight_decay: float = option(0.0, "weight decay at the last epoch (cosine_weight_decay)")
    use_differential_lr: bool = option(
        False, "per-group learning rates lr x <group>_lr_scale (backbone, embedding, encoder, film, mask, "
        "classifier); the SoftFiLM paper config defines the scales but leaves this off")
    backbone_lr_scale: float = option(0.01, "use_differential_lr: LR scale of the AST backbone")
    embedding_lr_scale: float = option(0.5, "use_differential_lr: LR scale of the factor embeddings")
    encoder_lr_scale: float = option(1.0, "use_differential_lr: LR scale of the metadata encoders")
    film_lr_scale: float = option(1.0, "use_differential_lr: LR scale of the FiLM generators and the GRF gate")
    classifier_lr_scale: float = option(2.0, "use_differential_lr: LR scale of the classifier head")
    mask_lr_scale: float | None = option(
        None, "LR scale of the SoftFiLM mask logits, which then get no weight decay (it would pull the masks to "
        "0.5). null: masks are trained like every other parameter, or at 1.5 (the paper config's value) under "
        "use_differential_lr (docs/fixes.md 11.4-3)")
    decay_exclude: bool = option(
        False, "no weight decay on norms, biases, tokens, pos-embed, embeddings and mask logits (false = paper: "
        "decay on every parameter)")

    __aliases__: ClassVar[dict[str, str]] = {"mask_lr_multiplier": "mask_lr_scale"}

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.final_weight_decay < 0:
            raise ValueError("optimizer.weight_decay and final_weight_decay must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if self.mask_lr_scale is not None and self.mask_lr_scale <= 0:
            raise ValueError(f"optimizer.mask_lr_scale must be > 0, got {self.mask_lr_scale}")


@dataclass
class SchedulerConfig:
    type: Literal["none", "cosine", "cosine_warmup", "cosine_warmup_restarts", "reduce_on_plateau"] = option(
        "cosine_warmup", "learning-rate schedule, stepped once per epoch after validation")
    warmup_epochs: int = option(
        10, "cosine_warmup: epochs of linear warm-up; the LR is constant within an epoch (epoch 1 trains at "
        "lr x start_linear_warmup), as the paper's per-epoch schedule")
    start_linear_warmup: float = option(1e-4, "cosine_warmup: LR factor of the first epoch")
    end_linear_warmup: float = option(1.0, "cosine_warmup: LR factor at the end of the warm-up")
    min_lr: float = option(1e-8, "floor of the cosine schedules")
    T_0: int = option(20, "cosine_warmup_restarts: epochs of the first cycle")
    T_mult: int = option(1, "cosine_warmup_restarts: cycle length multiplier")
    reduce_factor: float = option(0.5, "reduce_on_plateau: LR factor at each reduction")
    reduce_patience: int = option(2, "reduce_on_plateau: epochs without improvement before a reduction")
    reduce_min_lr: float = option(1e-8, "reduce_on_plateau: LR floor")
    reduce_metric: str = option(
        "icbhi_score", "reduce_on_plateau: the validation metric watched (the reference watched the score in "
        "mode 'min', docs/fixes.md 11.3-3)")
    reduce_mode: Literal["max", "min"] | None = option(
        None, "reduce_on_plateau: null = from reduce_metric (loss: min, else max); a contradiction is an error")

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
    """Decision thresholds for sigmoid outputs (multilabel: crackle, wheeze; binary: abnormal)."""

    mode: Literal["fixed", "tuned"] = option(
        "tuned", "tuned: the reference's grid search on the selection split at every evaluation; fixed: `value`")
    value: float | list[float] = option(0.5, "fixed thresholds: one value for every output, or one per output")
    grid: list[float] | None = option(
        None, "tuned: [start, stop, step] (stop inclusive); null: the paper's per mode (multilabel 0.10..0.60, "
        "binary 0.10..0.90, step 0.05)")
    min_sensitivity: float | None = option(
        None, "tuned: sensitivity floor a grid point must meet; null: the paper's (multilabel 0.45, binary 0.40)")
    fallback: float | None = option(
        None, "tuned: threshold used when no grid point meets the floor; null: the paper's (0.10 / 0.5)")

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
    strategy: Literal["none", "all", "until_block", "trainable_blocks"] = option(
        "none", "none | all (embeddings and every block) | until_block | trainable_blocks; the head never freezes")
    until_block: int | None = option(None, "until_block: freeze blocks 0..until_block (null: 9)")
    trainable_blocks: int | None = option(None, "trainable_blocks: keep the last k blocks trainable (null: 2)")
    freeze_conditioning: bool = option(
        False, "also freeze the metadata encoders, generators, masks and gate (any strategy)")

    __aliases__: ClassVar[dict[str, str]] = {"freeze_film": "freeze_conditioning"}


@dataclass
class TrainingConfig:
    epochs: int = option(50, "training epochs")
    # Task loss (ls.engine.losses.build_loss; the names valid per output mode are in ls.engine.modes.LOSSES).
    loss: str | None = option(
        None, "task loss: bce, focal, asymmetric, hierarchical, composite (sigmoid outputs); ce, weighted_ce, "
        "focal, label_smoothing (softmax). With the task it decides the output mode. null: bce for the "
        "crackle/wheeze bits and 2-class tasks (the paper's), ce for other tasks")
    sensitivity_bias: float = option(1.0, "multiplies the BCE pos_weight (n_neg / n_pos) of every sigmoid output")
    n_cls: int | None = option(None, "reference key duplicating dataset.n_cls; when given it must agree")
    focal_alpha: float = option(0.25, "focal: weight of positives (sigmoid outputs; negatives get 1 - alpha)")
    focal_gamma: float = option(2.0, "focal: focusing exponent")
    use_class_weights: bool = option(
        False, "softmax losses: weight class k by n / (K n_k) from the training labels")
    label_smoothing: float = option(0.1, "smoothing of the `label_smoothing` loss")
    asymmetric_gamma_neg: float = option(4.0, "asymmetric loss: focusing exponent of negatives")
    asymmetric_gamma_pos: float = option(1.0, "asymmetric loss: focusing exponent of positives")
    asymmetric_clip: float = option(0.05, "asymmetric loss: lower bound of 1 - p inside the negatives' log")
    partial_credit: float = option(
        0.5, "hierarchical / composite: cost of a 'both' cycle given one of its bits")
    miss_penalty: float = option(2.0, "hierarchical: weight of abnormal cycles predicted normal")
    over_pred_cost: float = option(
        0.3, "composite: cost of predicting 'both' for a crackle- or wheeze-only cycle")
    thresholds: ThresholdConfig = option(ThresholdConfig, "decision thresholds of sigmoid outputs")
    optimizer: OptimizerConfig = option(OptimizerConfig, "AdamW and its parameter groups")
    scheduler: SchedulerConfig = option(SchedulerConfig, "learning-rate schedule")
    freeze: FreezeConfig = option(FreezeConfig, "which parameters train")
    grad_clip: float | None = option(1.0, "clip the global gradient norm to this (null: no clipping)")
    early_stopping: int | None = option(
        None, "stop after this many epochs without improvement of the selection score (null: run all epochs, "
        "as the paper did)")
    selection: Literal["strict", "paper"] = option(
        "strict", "strict: select the epoch and tune thresholds on the patient-disjoint validation split, test "
        "once at the end; paper: select and tune on the test split, as the original (optimistic numbers)")
    selection_metric: str | None = option(
        None, "the validation metric that selects the epoch (and drives early stopping); null: the dataset's own "
        "score, icbhi_score for ICBHI and manifests, sprsound_score for SPRSound")
    device: Literal["auto", "cpu", "cuda"] = option(
        "auto", "`auto` (CUDA if available), `cpu` or `cuda` (an error without a GPU)")
    amp: bool | Literal["auto", "bf16", "fp16"] = option(
        "auto", "mixed precision on CUDA: auto = bf16 autocast where the GPU supports it, else fp16 with a "
        "gradient scaler; bf16 / fp16 force one; false = fp32. Never on CPU")
    tf32: bool = option(True, "CUDA fp32 runs: TF32 tensor-core matmuls and convolutions")
    compile: bool = option(False, "torch.compile the model (CUDA or CPU; the first steps compile)")
    checkpoint_dir: str = option(
        "checkpoints", "last.pt every epoch and best.pt at each improvement go to a new folder per run here")
    deterministic: bool = option(
        True, "seeded, deterministic kernels; data order, augmentation and dropout = f(seed, epoch)")
    monitor_test: bool = option(
        True, "strict selection: also evaluate test every epoch (with that epoch's validation thresholds) and "
        "log it as test_epoch/* curves; never used for selection, thresholds or stopping")

    # Key names of the original configs and of the paper's README.
    __aliases__: ClassVar[dict[str, str]] = {
        "alpha": "focal_alpha",
        "gamma": "focal_gamma",
        "gamma_neg": "asymmetric_gamma_neg",
        "gamma_pos": "asymmetric_gamma_pos",
        "lr": "optimizer.lr",
        "weight_decay": "optimizer.weight_decay",
        "warmup_epochs": "scheduler.warmup_epochs",
    }

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"training.epochs must be >= 1, got {self.epochs}")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = option(
        None, "tracking URI (a --mlflow-config file's tracking_uri wins over it); null: MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db")
    experiment_name: str | None = option(None, "experiment; null: MLFLOW_EXPERIMENT_NAME, else `ls`")
    tracking_username: str | None = option(
        None, "HTTP basic-auth user (better in --mlflow-config or MLFLOW_TRACKING_USERNAME)")
    tracking_password: str | None = option(
        None, "HTTP basic-auth password (better in --mlflow-config or MLFLOW_TRACKING_PASSWORD); never logged")
    fallback_dir: str | None = option(
        None, "unused since run records: every run's record stays in its own folder and is synced from there (kept so "
        "that configs that set it still load)")
