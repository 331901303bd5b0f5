"""Config section owned by the model layer: one ``models.<variant>`` block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class WeightsConfig:
    """Where pretrained weights come from. Only local files; nothing is downloaded at run time."""

    # none: random init | imagenet: timm DeiT-distilled file (.pth/.safetensors) | audioset: original AST
    # checkpoint (audioset_10_10_0.4593.pth) | hf: Hugging Face AST directory or file (ls.models.weights)
    source: Literal["none", "imagenet", "audioset", "hf"] = "none"
    path: str | None = None
    # (f_dim, t_dim) patch grid of an ``audioset`` checkpoint's pos-embed; None: inferred (12 x 101 for
    # the AudioSet release, or this model's own grid when the sizes agree)
    source_grid: list[int] | None = None

    def __post_init__(self) -> None:
        grid = self.source_grid
        if grid is not None and (len(grid) != 2 or min(grid) < 1):
            raise ValueError(f"weights.source_grid must be two positive ints [f_dim, t_dim], got {grid}")


@dataclass
class ModelConfig:
    variant: str = ""  # filled from the key under ``models:`` when empty
    label_dim: int = 2
    model_size: Literal["tiny224", "small224", "base224", "base384"] = "base384"
    input_fdim: int = 128
    input_tdim: int = 1024
    fstride: int = 10
    tstride: int = 10
    layer_norm_eps: float = 1e-6  # DeiT / original AST; an hf checkpoint's own eps replaces it on loading
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    dropout: float = 0.4
    # -- metadata conditioning and head (ls.models.meta / conditioning / heads). The classifier (and GRF
    # projection) use `dropout`; every metadata encoder uses dropout / 2, as the reference.
    # Vocabulary sizes and the continuous width come from the fitted MetadataSpec, never from here.
    dev_emb_dim: int = 8
    site_emb_dim: int = 14
    metadata_hidden_dim: int = 64
    film_hidden_dim: int = 64  # width of the metadata representation fed to the FiLM generators
    use_device: bool = True  # ablations (GRF, FiLM, TAFiLM; SoftFiLM needs all three)
    use_site: bool = True
    use_continuous: bool = True
    use_improved_continuous_encoder: bool = True  # FiLM/TAFiLM: per-feature encoder (spec 3.2), else raw
    # Fix option (11.4-1): LayerNorm over the 3 z-scored features (GRF rest_norm, SoftFiLM rest encoder)
    # leaves ~1 degree of freedom; "none" feeds them as they are. Paper: layernorm.
    continuous_norm: Literal["layernorm", "none"] = "layernorm"
    conditioned_layers: list[int] = field(default_factory=lambda: [10, 11])  # FiLM, TAFiLM, SoftFiLM
    layer_specific_encoding: bool = False  # FiLM: a Linear(H, H) per conditioned block before its generator
    # Fix option (11.4-2): FiLM generators keep PyTorch's default init (paper: not identity at step 0);
    # "zero" starts at gamma=1, beta=0 like TAFiLM so every variant starts from the pretrained backbone.
    film_init: Literal["default", "zero"] = "default"
    # GRF
    hidden_dim: int = 32  # width of GRF's (paper) head
    init_gate: float = 0.5
    # SoftFiLM
    mask_init_scale: float = 0.5
    mask_sparsity_lambda: float = 0.01  # weight of the mask-overlap loss (skipped when <= 0)
    mask_coverage_lambda: float = 0.005  # weight of the mask-coverage loss (skipped when <= 0)
    per_layer_masks: bool = False
    mask_temperature: float = 1.0  # initial tau; the trainer's schedule sets it each epoch
    film_init_gain: float = 0.1  # Xavier gain of SoftFiLM's generators (near-identity start)
    # Classifier head. Fix option (11.4-4): "paper" = each variant's own head (ReLU/64; TAFiLM GELU/64; GRF
    # GELU/hidden_dim); "common" = head_hidden_dim/head_activation for every variant (comparable heads).
    head: Literal["paper", "common"] = "paper"
    head_hidden_dim: int = 64
    head_activation: Literal["relu", "gelu"] = "relu"

    def __post_init__(self) -> None:
        self._check_conditioning_fields()

    def _check_conditioning_fields(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("label_dim", "dev_emb_dim", "site_emb_dim", "metadata_hidden_dim", "film_hidden_dim",
                     "hidden_dim", "head_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        layers = self.conditioned_layers
        if any(layer < 0 for layer in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"conditioned_layers must be distinct block indices >= 0, got {layers}")
        if not self.mask_temperature > 0:
            raise ValueError(f"mask_temperature must be > 0, got {self.mask_temperature}")
        if self.film_init_gain < 0:
            raise ValueError(f"film_init_gain must be >= 0, got {self.film_init_gain}")
