"""MetaLoRA-AST: a low-rank adapter in chosen transformer blocks whose ranks the recording's metadata scales.

In each conditioned block ``l``, on the pre-MLP normalised tokens ``u [B, L, D]`` (the hook every ls mechanism
uses)::

    u <- u + (alpha / r) * s * ((u A_l) * c_l(m)) B_l

``A_l [D, r]`` projects every token onto ``r`` directions (orthonormal at the start), ``B_l [r, D]`` maps them
back (zero at the start: the model begins as the plain AST, exactly), and ``c_l(m) = 1 + G_l(h) [B, r]`` scales
each rank by the metadata, ``h = GELU(W [E(device); E(site); LN(cont)])``. Unlike FiLM, which rescales and
shifts each channel alike for every token, the update depends on the token: what the block adds is a
metadata-weighted mix of ``r`` learned token-to-token maps. ``s`` ramps the adapter in over the first epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ls.models import Conditioning, MetadataOptions
from ls.models.conditioning import check_layers, metadata_features, require_spec
from ls.types import ParamGroupSettings
from ls.utils.fields import option


@dataclass
class MetaLoRAOptions(MetadataOptions):
    """The ``models.meta_lora`` block: every ``MetadataOptions`` key (factor embeddings, ablations) and these."""

    conditioned_layers: list[int] = option([10, 11], "blocks whose pre-MLP tokens get an adapter")
    lora_rank: int = option(4, "rank r of each block's adapter")
    lora_alpha: float = option(1.0, "the adapter's update is scaled by alpha / r (LoRA's convention)")
    lora_hidden_dim: int = option(32, "width of the metadata representation that scales the ranks")
    lora_warmup_epochs: int = option(
        0, "epochs over which the adapter's strength s ramps up linearly to 1 (0: full strength from the start)")
    orthogonality_lambda: float = option(
        0.01, "weight of the auxiliary loss |A^T A - I|^2 / r that keeps each block's r directions apart "
        "(skipped when <= 0)")
    adapter_lr_scale: float = option(2.0, "learning-rate multiplier of the adapters A and B (their own group)")
    adapter_weight_decay_scale: float = option(0.0, "weight-decay multiplier of the adapters (0: never decayed)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank < 1 or self.lora_hidden_dim < 1:
            raise ValueError(f"lora_rank and lora_hidden_dim must be >= 1, got {self.lora_rank}, "
                             f"{self.lora_hidden_dim}")
        if self.lora_warmup_epochs < 0:
            raise ValueError(f"lora_warmup_epochs must be >= 0, got {self.lora_warmup_epochs}")
        if not self.adapter_lr_scale > 0 or self.adapter_weight_decay_scale < 0:
            raise ValueError("adapter_lr_scale must be > 0 and adapter_weight_decay_scale >= 0")


class MetadataLoRA(Conditioning):
    """The mechanism (see the module docstring). Parameters: ``features`` (factor embeddings, continuous
    encoder), ``encoder``, ``rank_generators`` (``G_l``), ``adapters_down`` (``A_l``), ``adapters_up``
    (``B_l``); the buffer ``strength`` is ``s``."""

    exported_methods = ("adapter_norms", "adapter_strength")

    def __init__(self, features: nn.Module, embed_dim: int, conditioned_layers: tuple[int, ...], *, rank: int,
                 alpha: float, hidden_dim: int, warmup_epochs: int, orthogonality_lambda: float,
                 lr_scale: float, weight_decay_scale: float) -> None:
        super().__init__(conditioned_layers, requires_metadata=True)
        self.features = features
        self.encoder = nn.Sequential(nn.Linear(features.out_dim, hidden_dim), nn.GELU())
        keys = [str(layer) for layer in self.conditioned_layers]
        self.rank_generators = nn.ModuleDict({k: nn.Linear(hidden_dim, rank) for k in keys})
        self.adapters_down = nn.ParameterDict({k: nn.Parameter(_orthonormal(embed_dim, rank)) for k in keys})
        self.adapters_up = nn.ParameterDict({k: nn.Parameter(torch.zeros(rank, embed_dim)) for k in keys})
        self.register_buffer("strength", torch.tensor(1.0))
        self.scaling = alpha / rank
        self.warmup_epochs = warmup_epochs
        self.orthogonality_lambda = orthogonality_lambda
        self.group_settings = ParamGroupSettings(lr_scale, weight_decay_scale)

    @classmethod
    def from_config(cls, cfg: MetaLoRAOptions, spec: Any, embed_dim: int, depth: int) -> Conditioning:
        """The only place the options are read."""
        spec = require_spec(spec, cfg.variant)
        return cls(metadata_features(cfg, spec, "layernorm"), embed_dim, check_layers(cfg.conditioned_layers, depth),
                   rank=cfg.lora_rank, alpha=cfg.lora_alpha, hidden_dim=cfg.lora_hidden_dim,
                   warmup_epochs=cfg.lora_warmup_epochs, orthogonality_lambda=cfg.orthogonality_lambda,
                   lr_scale=cfg.adapter_lr_scale, weight_decay_scale=cfg.adapter_weight_decay_scale)

    # -- the forward pass: once per batch, then in each conditioned block --------------------------------------

    def prepare(self, meta: dict[str, Tensor] | None) -> dict[str, Any]:
        h = self.encoder(self.features(meta))
        return {"rank_scales": {layer: 1.0 + self.rank_generators[str(layer)](h) for layer in self.conditioned_layers}}

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: dict[str, Any]) -> Tensor:
        key = str(layer_idx)
        ranks = (normed_tokens @ self.adapters_down[key]) * state["rank_scales"][layer_idx].unsqueeze(1)
        return normed_tokens + (self.scaling * self.strength) * (ranks @ self.adapters_up[key])

    def info(self, state: dict[str, Any]) -> dict[str, Any]:
        """``rank_scales``: ``{layer: [B, r]}``, each cycle's per-rank scale ``c_l(m)``."""
        return {"rank_scales": state["rank_scales"]}

    # -- what the trainer calls without knowing the mechanism --------------------------------------------------

    def auxiliary_losses(self) -> dict[str, Tensor]:
        if self.orthogonality_lambda <= 0:
            return {}
        losses = []
        for a in self.adapters_down.values():
            gram = a.T @ a
            losses.append(((gram - torch.eye(gram.shape[0], device=a.device, dtype=a.dtype)) ** 2).sum() / a.shape[1])
        return {"adapter_orthogonality": self.orthogonality_lambda * torch.stack(losses).mean()}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.strength.fill_(min(1.0, (epoch + 1) / (self.warmup_epochs + 1)))

    def epoch_stats(self) -> dict[str, float]:
        return {"lora/strength": self.adapter_strength(),
                **{f"lora/update_norm/{layer}": v for layer, v in self.adapter_norms().items()}}

    # -- its parameter group ----------------------------------------------------------------------------------

    def param_group_of(self, name: str, param: nn.Parameter) -> str:
        return "adapter" if name.startswith("adapters_") else super().param_group_of(name, param)

    def param_group_settings(self, optimizer: Any) -> dict[str, ParamGroupSettings]:
        return {"adapter": self.group_settings}

    # -- analysis (on the model too: model.adapter_norms()) -----------------------------------------------------

    def adapter_norms(self) -> dict[int, float]:
        """Frobenius norm of each block's update map ``(alpha / r) A_l B_l`` at full strength: 0 at the start."""
        with torch.no_grad():
            return {layer: float(self.scaling * (self.adapters_down[str(layer)] @ self.adapters_up[str(layer)]).norm())
                    for layer in self.conditioned_layers}

    def adapter_strength(self) -> float:
        return float(self.strength)


def _orthonormal(rows: int, cols: int) -> Tensor:
    """``[rows, cols]`` with orthonormal columns (rows >= cols), from the default generator."""
    return nn.init.orthogonal_(torch.empty(rows, cols))
