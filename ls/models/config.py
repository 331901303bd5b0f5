"""Config section owned by the model layer: one ``models.<variant>`` block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class WeightsConfig:
    """Where pretrained weights come from. Only local files; nothing is downloaded at run time."""

    source: Literal["none", "imagenet", "audioset", "hf"] = "none"
    path: Optional[str] = None


@dataclass
class ModelConfig:
    variant: str = ""  # filled from the key under ``models:`` when empty
    label_dim: int = 2
    model_size: Literal["tiny224", "small224", "base224", "base384"] = "base384"
    input_fdim: int = 128
    input_tdim: int = 1024
    fstride: int = 10
    tstride: int = 10
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    dropout: float = 0.4
    # metadata encoders
    dev_emb_dim: int = 8
    site_emb_dim: int = 14
    metadata_hidden_dim: int = 64
    film_hidden_dim: int = 64
    use_device: bool = True
    use_site: bool = True
    use_continuous: bool = True
    use_missing_flags: bool = False
    use_improved_continuous_encoder: bool = True
    conditioned_layers: list[int] = field(default_factory=lambda: [10, 11])
    # GRF
    hidden_dim: int = 32
    init_gate: float = 0.5
    # SoftFiLM
    mask_init_scale: float = 0.5
    mask_sparsity_lambda: float = 0.01
    mask_coverage_lambda: float = 0.005
    per_layer_masks: bool = False
    mask_temperature: float = 1.0
    film_init_gain: float = 0.1
