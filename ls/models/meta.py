"""Metadata encoders: from the batch's ``meta`` dict to feature vectors the conditioning modules use.

``meta = {<factor>: int64 [B] for every categorical factor, "cont": float [B, C]}``; which factors exist and
their vocabulary sizes come from the fitted :class:`ls.types.MetadataSpec` (ICBHI: ``device``, ``site``), never
from constants. Id 0 (``ls.types.UNKNOWN_ID``) is a trained row like any other and is what values never seen
in training map to.

Building blocks:

- :class:`PerFeatureContinuousEncoder`: the "improved" continuous encoder of FiLM/TAFiLM.
- :func:`continuous_encoder`: one of raw / LayerNorm / per-feature encoding of ``cont``.
- :class:`MetadataFeatures`: ``meta`` -> ``[E_1(factor_1); ...; E_k(factor_k); g(cont)]``.
- :class:`MetadataMLP`: ``LN -> Linear -> act -> Dropout -> Linear -> act`` (FiLM, TAFiLM, SoftFiLM encoders).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ls.models.heads import make_activation
from ls.types import CONT_KEY, UNKNOWN_ID, MetadataSpec

ContinuousKind = Literal["raw", "layernorm", "per_feature"]


class MetadataError(ValueError):
    """The ``meta`` dict passed to a model is missing a key or has a wrong shape, dtype or id."""


def check_meta_tensor(meta: Mapping[str, Tensor] | None, key: str, *, vocab_size: int | None = None,
                      cont_dim: int | None = None) -> Tensor:
    """Return ``meta[key]`` after checking it: ids ``[B]`` integer in ``[0, vocab_size)``, or ``cont`` ``[B, C]``.

    Raises :class:`MetadataError` naming the key, what was found and what was expected.
    """
    if meta is None:
        raise MetadataError(
            "this model is conditioned on metadata but got meta=None; pass the batch's 'meta' dict "
            "({<factor>: [B] int64 ids, 'cont': [B, C] float32})"
        )
    if key not in meta:
        raise MetadataError(f"meta has no key {key!r} (keys present: {', '.join(sorted(meta)) or 'none'})")
    value = meta[key]
    if not isinstance(value, Tensor):
        raise MetadataError(f"meta[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    if cont_dim is not None:
        if value.dim() != 2 or value.shape[1] != cont_dim or not value.is_floating_point():
            raise MetadataError(
                f"meta[{key!r}] must be a float tensor [B, {cont_dim}] (the metadata spec's continuous "
                f"features), got {value.dtype} {tuple(value.shape)}"
            )
        return value
    if value.dim() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise MetadataError(f"meta[{key!r}] must be an integer id tensor [B], got {value.dtype} {tuple(value.shape)}")
    # The id range is checked on CPU tensors only: on a GPU the check would make every step wait for the device
    # (an id out of range there still fails, in the embedding lookup, with a less specific message). Under
    # torch.compile it is skipped too: reading the ids would split the graph at every metadata encoder.
    if (vocab_size is not None and value.numel() > 0 and value.device.type == "cpu"
            and not torch.compiler.is_compiling()):
        lo, hi = int(value.min()), int(value.max())
        if lo < 0 or hi >= vocab_size:
            raise MetadataError(
                f"meta[{key!r}] has ids in [{lo}, {hi}] but the vocabulary has {vocab_size} entries "
                f"(0..{vocab_size - 1}, {UNKNOWN_ID} = unknown); was the metadata encoder fitted on other data?"
            )
    return value


class PerFeatureContinuousEncoder(nn.Module):
    """Encode each continuous feature on its own, then mix (FiLM/TAFiLM's "improved" encoder).

    Each scalar feature ``i`` goes through ``Linear(1, k) -> LN(k) -> ReLU -> Dropout`` with
    ``k = max(1, hidden_dim // num_features)``; the ``num_features * k`` outputs are concatenated and mixed by
    ``Linear(num_features * k, hidden_dim) -> LN -> ReLU -> Dropout -> Linear(hidden_dim, hidden_dim)``.

    Input ``cont [B, num_features]``; output ``[B, hidden_dim]``.
    """

    def __init__(self, num_features: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        if num_features < 1 or hidden_dim < 1:
            raise ValueError(f"need num_features >= 1 and hidden_dim >= 1, got {num_features}, {hidden_dim}")
        width = max(1, hidden_dim // num_features)
        self.feature_encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(1, width), nn.LayerNorm(width), nn.ReLU(), nn.Dropout(dropout))
            for _ in range(num_features)
        )
        self.mix = nn.Sequential(
            nn.Linear(num_features * width, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
        )
        self.out_dim = hidden_dim

    def forward(self, cont: Tensor) -> Tensor:
        """``[B, C]`` -> ``[B, hidden_dim]``."""
        parts = [enc(cont[:, i : i + 1]) for i, enc in enumerate(self.feature_encoders)]
        return self.mix(torch.cat(parts, dim=-1))


def continuous_encoder(kind: ContinuousKind, cont_dim: int, hidden_dim: int = 0,
                       dropout: float = 0.0) -> tuple[nn.Module, int]:
    """Module for the continuous features ``[B, cont_dim]`` and its output width.

    ``raw``: identity (FiLM without the improved encoder, SoftFiLM's ``rest`` input);
    ``layernorm``: ``LN(cont_dim)`` (GRF's ``rest_norm``; note defect 11.4-1 for 3 features);
    ``per_feature``: :class:`PerFeatureContinuousEncoder` with ``hidden_dim``.
    """
    if kind == "raw":
        return nn.Identity(), cont_dim
    if kind == "layernorm":
        return nn.LayerNorm(cont_dim), cont_dim
    if kind == "per_feature":
        enc = PerFeatureContinuousEncoder(cont_dim, hidden_dim, dropout)
        return enc, enc.out_dim
    raise ValueError(f"unknown continuous encoding {kind!r}; expected raw, layernorm or per_feature")


class MetadataFeatures(nn.Module):
    """``meta`` dict -> one vector per cycle: ``[E_1(factor_1); ...; E_k(factor_k); g(cont)]``.

    Args:
        spec: fitted metadata spec: the factors, their vocabulary sizes (incl. the unknown id 0) and ``C``.
        factors: the categorical factors to embed, in ``spec`` order (a subset: ablations).
        emb_dims: embedding width per embedded factor (N(0, 1) init, PyTorch's default, as the reference).
        use_continuous: whether ``cont`` is part of the vector, encoded as ``continuous``
            (see :func:`continuous_encoder`; ``continuous_hidden_dim`` and ``dropout`` are for ``per_feature``).

    Each factor's embedding is the attribute ``<factor>_embedding`` (ICBHI: ``device_embedding``,
    ``site_embedding``), so parameter names say what they embed. Output ``[B, out_dim]``.
    """

    def __init__(
        self,
        spec: MetadataSpec,
        *,
        factors: Sequence[str] = (),
        emb_dims: Mapping[str, int] | None = None,
        use_continuous: bool = True,
        continuous: ContinuousKind = "raw",
        continuous_hidden_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        order = [f for f in spec.factor_names if f in set(factors)]
        if len(order) != len(set(factors)):
            missing = sorted(set(factors) - set(spec.factor_names))
            raise ValueError(f"factors {missing} are not in the metadata spec ({', '.join(spec.factor_names)})")
        emb_dims = dict(emb_dims or {})
        self.factors = tuple(order)
        self.vocab_sizes = {name: spec.factor(name).size for name in self.factors}
        self.cont_dim = spec.cont_dim
        out_dim = 0
        for name in self.factors:
            self.add_module(f"{name}_embedding", nn.Embedding(self.vocab_sizes[name], emb_dims[name]))
            out_dim += emb_dims[name]
        self.continuous: nn.Module | None = None
        if use_continuous:
            if spec.cont_dim < 1:
                raise ValueError("use_continuous is true but the metadata spec has no continuous features")
            self.continuous, cont_out = continuous_encoder(continuous, spec.cont_dim, continuous_hidden_dim, dropout)
            out_dim += cont_out
        if out_dim == 0:
            raise ValueError("no metadata part enabled: use at least one factor or the continuous features")
        self.out_dim = out_dim

    def forward(self, meta: Mapping[str, Tensor] | None) -> Tensor:
        """``meta`` (only the used keys are needed) -> ``[B, out_dim]``."""
        parts: list[Tensor] = []
        for name in self.factors:
            ids = check_meta_tensor(meta, name, vocab_size=self.vocab_sizes[name])
            parts.append(getattr(self, f"{name}_embedding")(ids))
        if self.continuous is not None:
            parts.append(self.continuous(check_meta_tensor(meta, CONT_KEY, cont_dim=self.cont_dim)))
        return torch.cat(parts, dim=-1)


class MetadataMLP(nn.Sequential):
    """``[LN(in)] -> Linear(in, hidden) -> act -> Dropout -> Linear(hidden, out) -> act``: ``[B, in]`` -> ``[B, out]``.

    The metadata encoder of FiLM (ReLU), TAFiLM (GELU) and SoftFiLM's per-factor encoders (ReLU).
    ``input_norm=False`` drops the leading LayerNorm (used for SoftFiLM's continuous factor when
    ``continuous_norm: none``, defect 11.4-1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, activation: str = "relu",
                 dropout: float = 0.0, input_norm: bool = True) -> None:
        super().__init__(
            nn.LayerNorm(in_dim) if input_norm else nn.Identity(),
            nn.Linear(in_dim, hidden_dim),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
            make_activation(activation),
        )
        self.out_dim = out_dim
