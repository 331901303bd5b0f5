"""Classifier heads: pooled embedding ``[B, D]`` -> logits ``[B, label_dim]``.

Every variant of the paper ends in the same shape of head, LN -> Dropout -> Linear -> act -> Dropout ->
Linear, but with a different activation and hidden width per variant (ReLU/64 for AST, FiLM and SoftFiLM,
GELU/64 for TAFiLM, GELU/32 for GRF). Each variant's head is in the variant table (``ls.models.variants``);
``models.<variant>.head_hidden_dim`` / ``head_activation`` override it, e.g. to compare variants with one head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ls.models.variants import HeadSpec

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """``"relu"`` or ``"gelu"`` (exact GELU) as a module."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(_ACTIVATIONS)}") from None


class ClassifierHead(nn.Sequential):
    """``LN(D) -> Dropout(p) -> Linear(D, H) -> act -> Dropout(p) -> Linear(H, label_dim)``.

    Input ``[B, D]``, output logits ``[B, label_dim]`` (no final activation). Kept as a ``Sequential`` so the
    parameter names (``0.*`` LN, ``2.*`` first Linear, ``5.*`` last Linear) match the reference's
    ``mlp_head`` layout. LayerNorm eps is PyTorch's default (1e-5), as in the reference head.

    Under mixed precision the head runs outside autocast, in its weights' precision (fp32): thresholds are tuned
    and epochs selected on its logits, which bf16 would round to 8 mantissa bits. Without autocast nothing
    changes.
    """

    def __init__(self, in_dim: int, label_dim: int, spec: HeadSpec, dropout: float) -> None:
        if label_dim < 1:
            raise ValueError(f"label_dim must be >= 1, got {label_dim}")
        super().__init__(
            nn.LayerNorm(in_dim),
            nn.Dropout(dropout),
            nn.Linear(in_dim, spec.hidden_dim),
            make_activation(spec.activation),
            nn.Dropout(dropout),
            nn.Linear(spec.hidden_dim, label_dim),
        )
        self.spec = spec
        self.label_dim = label_dim

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self[-1].weight.dtype))
