"""Metadata encoders: from the batched metadata dict to feature vectors the conditioning modules use.

A batch carries ``meta = {"device": [B] int64, "site": [B] int64, "cont": [B, C] float32}`` (see
``ls.types.META_KEYS``). Vocabulary sizes and ``C`` come from the fitted :class:`ls.types.MetadataSpec`, never
from constants (defect 11.3-8); id 0 (``ls.types.UNKNOWN_ID``) is a trained row like any other and is what
devices/sites never seen in training map to.

Building blocks:

- :class:`PerFeatureContinuousEncoder`: the "improved" continuous encoder of FiLM/TAFiLM (spec 3.2).
- :func:`continuous_encoder`: one of raw / LayerNorm / per-feature encoding of ``cont``.
- :class:`MetadataFeatures`: ``meta`` -> ``[E_d(device); E_s(site); g(cont)]`` with parts switchable.
- :class:`MetadataMLP`: ``LN -> Linear -> act -> Dropout -> Linear -> act`` (FiLM, TAFiLM, SoftFiLM encoders).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from ls.models.heads import make_activation
from ls.types import UNKNOWN_ID, MetadataSpec

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
            "this model is conditioned on metadata but got meta=None; pass meta={'device': [B] int64, "
            "'site': [B] int64, 'cont': [B, C] float32} (ls.types.META_KEYS)"
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
    if vocab_size is not None and value.numel() > 0:
        lo, hi = int(value.min()), int(value.max())  # one sync per batch: cheap next to the transformer
        if lo < 0 or hi >= vocab_size:
            raise MetadataError(
                f"meta[{key!r}] has ids in [{lo}, {hi}] but the vocabulary has {vocab_size} entries "
                f"(0..{vocab_size - 1}, {UNKNOWN_ID} = unknown); was the metadata encoder fitted on other data?"
            )
    return value


class PerFeatureContinuousEncoder(nn.Module):
    """Encode each continuous feature on its own, then mix (spec 3.2, FiLM/TAFiLM's "improved" encoder).

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
    """``meta`` dict -> one vector per cycle: ``[E_d(device); E_s(site); g(cont)]`` (enabled parts only).

    Args:
        spec: fitted metadata spec; gives the vocabulary sizes (incl. the unknown id 0) and ``cont_dim``.
        dev_emb_dim, site_emb_dim: embedding widths (N(0, 1) init, PyTorch's default, as the reference).
        use_device, use_site, use_continuous: which parts to include (ablations).
        continuous: how ``cont`` is encoded (see :func:`continuous_encoder`).
        continuous_hidden_dim, dropout: for the ``per_feature`` encoder.

    Output ``[B, out_dim]``; ``out_dim`` = sum of the enabled parts' widths.
    """

    def __init__(
        self,
        spec: MetadataSpec,
        *,
        dev_emb_dim: int = 0,
        site_emb_dim: int = 0,
        use_device: bool = True,
        use_site: bool = True,
        use_continuous: bool = True,
        continuous: ContinuousKind = "raw",
        continuous_hidden_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_devices, self.num_sites, self.cont_dim = spec.num_devices, spec.num_sites, spec.cont_dim
        self.device_embedding = nn.Embedding(spec.num_devices, dev_emb_dim) if use_device else None
        self.site_embedding = nn.Embedding(spec.num_sites, site_emb_dim) if use_site else None
        self.continuous: nn.Module | None = None
        out_dim = (dev_emb_dim if use_device else 0) + (site_emb_dim if use_site else 0)
        if use_continuous:
            if spec.cont_dim < 1:
                raise ValueError("use_continuous is true but the metadata spec has no continuous features")
            self.continuous, cont_out = continuous_encoder(continuous, spec.cont_dim, continuous_hidden_dim, dropout)
            out_dim += cont_out
        if out_dim == 0:
            raise ValueError("no metadata part enabled: set at least one of use_device, use_site, use_continuous")
        self.out_dim = out_dim

    def forward(self, meta: Mapping[str, Tensor] | None) -> Tensor:
        """``meta`` (``device [B]``, ``site [B]``, ``cont [B, C]``; only the used keys are needed) -> ``[B, out_dim]``."""
        parts: list[Tensor] = []
        if self.device_embedding is not None:
            parts.append(self.device_embedding(check_meta_tensor(meta, "device", vocab_size=self.num_devices)))
        if self.site_embedding is not None:
            parts.append(self.site_embedding(check_meta_tensor(meta, "site", vocab_size=self.num_sites)))
        if self.continuous is not None:
            cont = check_meta_tensor(meta, "cont", cont_dim=self.cont_dim)
            parts.append(self.continuous(cont))
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
