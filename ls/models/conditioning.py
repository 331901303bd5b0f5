"""Metadata conditioning mechanisms behind one interface: GRF, FiLM, TAFiLM and SoftFiLM.

The model (:class:`ls.models.model.ConditionedAST`) drives every mechanism the same way, once per batch::

    state = cond.prepare(meta)                                  # metadata -> whatever the mechanism needs
    tokens = backbone.embed(spec)
    for i in range(depth):                                      # blocks in cond.conditioned_layers get
        tokens = backbone.run_block(i, tokens, modulate_i)      #   u -> cond.modulate(i, u, state)
    pooled = cond.fuse(backbone.pool(tokens), state)            # identity except for GRF
    logits = head(pooled)

``modulate`` edits the pre-MLP normalised tokens ``u = LN2(x)`` ``[B, 2+N, D]`` of a block (the only hook the
backbone offers); ``fuse`` edits the pooled embedding ``[B, D]``. ``info(state)`` returns what the figures
need, ``auxiliary_losses()`` the regularisers the trainer adds to the task loss.

Parameter groups (for differential learning rates) follow attribute names: parameters of ``nn.Embedding``
modules -> ``embedding``; attributes ending in ``generators`` and ``gate`` -> ``film``; ``mask_logits`` ->
``mask``; everything else -> ``encoder``.

Adding a mechanism: subclass :class:`Conditioning`, give it a ``from_config`` classmethod, add one line to
``ls.models.registry`` (and its name to ``ls.models.names``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ls.models.backbone import NUM_PREFIX_TOKENS
from ls.models.config import ModelConfig
from ls.models.meta import MetadataFeatures, MetadataMLP
from ls.types import MetadataSpec

#: Metadata dict of a batch: ``device [B]``, ``site [B]`` int64, ``cont [B, C]`` float.
Meta = Mapping[str, Tensor]
#: Per-batch state produced by ``prepare`` and read by ``modulate`` / ``fuse`` / ``info``.
State = dict[str, Any]

#: The reference halves the model dropout inside every metadata encoder (0.4 -> 0.2).
ENCODER_DROPOUT_RATIO = 0.5
#: SoftFiLM's temperature floor: sigma(a / max(tau, 0.1)) keeps the masks from becoming hard steps.
MIN_MASK_TEMPERATURE = 0.1
#: SoftFiLM's three metadata factors, in mask-row order.
FACTORS = ("dev", "site", "rest")


def _check_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    out = tuple(int(layer) for layer in layers)
    bad = [layer for layer in out if not 0 <= layer < depth]
    if bad or len(set(out)) != len(out):
        raise ValueError(
            f"conditioned_layers={list(layers)} must be distinct block indices in 0..{depth - 1}"
            + (f" (out of range: {bad})" if bad else " (duplicates)")
        )
    if not out:
        raise ValueError("conditioned_layers is empty: a FiLM-type model needs at least one conditioned block")
    return tuple(sorted(out))


def _require_spec(spec: MetadataSpec | None, variant: str) -> MetadataSpec:
    if spec is None:
        raise ValueError(
            f"variant {variant!r} is conditioned on metadata: build_model needs the fitted MetadataSpec "
            f"(vocabulary sizes and continuous features), got None"
        )
    return spec


def _encoder_dropout(cfg: ModelConfig) -> float:
    return ENCODER_DROPOUT_RATIO * cfg.dropout


def _features(cfg: ModelConfig, spec: MetadataSpec, continuous: str) -> MetadataFeatures:
    return MetadataFeatures(
        spec,
        dev_emb_dim=cfg.dev_emb_dim,
        site_emb_dim=cfg.site_emb_dim,
        use_device=cfg.use_device,
        use_site=cfg.use_site,
        use_continuous=cfg.use_continuous,
        continuous=continuous,  # type: ignore[arg-type]
        continuous_hidden_dim=cfg.film_hidden_dim // 2,  # spec 3.2: H_r = film_hidden_dim / 2
        dropout=_encoder_dropout(cfg),
    )


def _apply_film(u: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``gamma * u + beta`` with per-sample ``gamma, beta [B, D]`` broadcast over the tokens of ``u [B, L, D]``."""
    return torch.addcmul(beta.unsqueeze(1), u, gamma.unsqueeze(1))


class Conditioning(nn.Module):
    """Base class: the identity mechanism (the unconditioned AST).

    Attributes:
        conditioned_layers: block indices in which :meth:`modulate` is called (sorted).
        requires_metadata: whether :meth:`prepare` reads ``meta`` (False: ``meta=None`` is accepted).
        exported_methods: names of analysis methods the model exposes as its own (e.g. ``gate_value``).
    """

    exported_methods: ClassVar[tuple[str, ...]] = ()

    def __init__(self, conditioned_layers: Sequence[int] = (), requires_metadata: bool = False) -> None:
        super().__init__()
        self.conditioned_layers: tuple[int, ...] = tuple(conditioned_layers)
        self.requires_metadata = requires_metadata

    @classmethod
    def from_config(cls, cfg: ModelConfig, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        """Build from a ``models.<variant>`` block for a backbone of width ``embed_dim`` and ``depth`` blocks."""
        return cls()

    def prepare(self, meta: Meta | None) -> State:
        """Once per batch, before the backbone: metadata -> state (e.g. per-layer gamma/beta ``[B, D]``)."""
        return {}

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: State) -> Tensor:
        """Pre-MLP normalised tokens ``[B, 2+N, D]`` of block ``layer_idx`` -> modulated tokens, same shape."""
        return normed_tokens

    def fuse(self, pooled: Tensor, state: State) -> Tensor:
        """Pooled backbone embedding ``[B, D]`` -> representation fed to the head ``[B, D]``."""
        return pooled

    def info(self, state: State) -> dict[str, Any]:
        """Analysis outputs of the batch (keys per mechanism; see ``ls.models.model.ConditionedAST.forward``)."""
        return {}

    def auxiliary_losses(self) -> dict[str, Tensor]:
        """Weighted regularisers to add to the task loss (empty unless the mechanism has any)."""
        return {}

    def param_group_of(self, name: str, param: nn.Parameter) -> str:
        """Group of a parameter of this module (``embedding``, ``encoder``, ``film`` or ``mask``)."""
        top = name.split(".", 1)[0]
        if top.endswith("generators") or top == "gate":
            return "film"
        if top == "mask_logits":
            return "mask"
        return "encoder"

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group; every trainable parameter appears exactly once."""
        embedding_ids = {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        groups: dict[str, list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                group = "embedding" if id(p) in embedding_ids else self.param_group_of(name, p)
                groups.setdefault(group, []).append(p)
        return groups

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of embeddings, mask logits, biases, norm weights and scalars."""
        embedding_ids = {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return {
            name
            for name, p in self.named_parameters()
            if p.dim() <= 1 or id(p) in embedding_ids or name.startswith("mask_logits")
        }


class NoConditioning(Conditioning):
    """The baseline AST: ignores ``meta``; every hook is the identity."""


class GatedResidualFusion(Conditioning):
    """GRF (spec 3.3): ``h~ = h + g * P(m)`` on the pooled embedding; the transformer is not conditioned.

    ``m = [E_d(device); E_s(site); LN(cont)]`` ``[B, M]``;
    ``P = Linear(M, D) -> LN(D) -> GELU -> Dropout -> Linear(D, D) -> LN(D)``; ``g`` a scalar (init
    ``init_gate``, unconstrained as in the paper). With no metadata part enabled the model is the baseline.
    """

    exported_methods = ("gate_value",)

    def __init__(self, features: MetadataFeatures | None, embed_dim: int, dropout: float, init_gate: float) -> None:
        super().__init__((), requires_metadata=features is not None)
        self.features = features
        self.projection: nn.Sequential | None = None
        self.gate: nn.Parameter | None = None
        if features is not None:
            self.projection = nn.Sequential(
                nn.Linear(features.out_dim, embed_dim),
                nn.LayerNorm(embed_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(embed_dim, embed_dim),
                nn.LayerNorm(embed_dim),
            )
            self.gate = nn.Parameter(torch.tensor(float(init_gate)))

    @classmethod
    def from_config(cls, cfg: ModelConfig, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        features = None
        if cfg.use_device or cfg.use_site or cfg.use_continuous:
            # paper: LayerNorm over the z-scored features (rest_norm); "none" keeps them as they are (11.4-1)
            kind = "layernorm" if cfg.continuous_norm == "layernorm" else "raw"
            features = _features(cfg, _require_spec(spec, "ast_fus"), kind)
        return cls(features, embed_dim, cfg.dropout, cfg.init_gate)

    def prepare(self, meta: Meta | None) -> State:
        if self.features is None or self.projection is None:
            return {}
        return {"metadata_projection": self.projection(self.features(meta))}

    def fuse(self, pooled: Tensor, state: State) -> Tensor:
        if self.gate is None:
            return pooled
        return pooled + self.gate * state["metadata_projection"]

    def info(self, state: State) -> dict[str, Any]:
        out: dict[str, Any] = {"gate": self.gate_value()}
        if "metadata_projection" in state:
            out["metadata_projection"] = state["metadata_projection"]
        return out

    def gate_value(self) -> float:
        """Current gate ``g`` (0.0 when no metadata part is enabled, i.e. no fusion)."""
        return 0.0 if self.gate is None else float(self.gate.detach())


def _film_metadata_path(
    cfg: ModelConfig, spec: MetadataSpec | None, variant: str, activation: str
) -> tuple[MetadataFeatures, MetadataMLP]:
    """FiLM/TAFiLM metadata path: embeddings + continuous encoder, then the shared MLP (spec 3.4, 3.5)."""
    kind = "per_feature" if cfg.use_improved_continuous_encoder else "raw"
    features = _features(cfg, _require_spec(spec, variant), kind)
    encoder = MetadataMLP(features.out_dim, cfg.metadata_hidden_dim, cfg.film_hidden_dim, activation,
                          _encoder_dropout(cfg))
    return features, encoder


class FiLM(Conditioning):
    """FiLM (spec 3.4): per conditioned block ``l``, ``u <- (1 + dgamma_l) * u + dbeta_l`` on all tokens.

    ``m = [E_d(device); E_s(site); enc(cont)]``; ``h = MetadataMLP(m)`` ``[B, H]`` (ReLU);
    optionally ``h_l = Linear_l(h)`` (``layer_specific_encoding``); ``[dgamma_l, dbeta_l] = G_l(h_l)``,
    ``G_l = Linear(H, 2D)``. ``init="default"`` keeps PyTorch's Linear init as the paper (modulation is not
    the identity at step 0); ``init="zero"`` zeroes the generators so training starts at the pretrained
    backbone exactly, like TAFiLM (defect 11.4-2).
    """

    def __init__(self, features: MetadataFeatures, encoder: MetadataMLP, embed_dim: int,
                 conditioned_layers: Sequence[int], layer_specific_encoding: bool = False,
                 init: str = "default") -> None:
        super().__init__(conditioned_layers, requires_metadata=True)
        hidden = encoder.out_dim
        self.features = features
        self.encoder = encoder
        self.layer_encoders = (
            nn.ModuleDict({str(layer): nn.Linear(hidden, hidden) for layer in self.conditioned_layers})
            if layer_specific_encoding
            else None
        )
        self.generators = nn.ModuleDict(
            {str(layer): nn.Linear(hidden, 2 * embed_dim) for layer in self.conditioned_layers}
        )
        if init == "zero":
            for gen in self.generators.values():
                nn.init.zeros_(gen.weight)
                nn.init.zeros_(gen.bias)
        elif init != "default":
            raise ValueError(f"film_init must be 'default' or 'zero', got {init!r}")

    @classmethod
    def from_config(cls, cfg: ModelConfig, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        features, encoder = _film_metadata_path(cfg, spec, "ast_film", "relu")
        return cls(features, encoder, embed_dim, _check_layers(cfg.conditioned_layers, depth),
                   cfg.layer_specific_encoding, cfg.film_init)

    def prepare(self, meta: Meta | None) -> State:
        h = self.encoder(self.features(meta))
        gamma: dict[int, Tensor] = {}
        beta: dict[int, Tensor] = {}
        for layer in self.conditioned_layers:
            h_l = h if self.layer_encoders is None else self.layer_encoders[str(layer)](h)
            d_gamma, d_beta = self.generators[str(layer)](h_l).chunk(2, dim=-1)
            gamma[layer], beta[layer] = 1.0 + d_gamma, d_beta
        return {"gamma": gamma, "beta": beta}

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: State) -> Tensor:
        return _apply_film(normed_tokens, state["gamma"][layer_idx], state["beta"][layer_idx])

    def info(self, state: State) -> dict[str, Any]:
        return {"gamma": state["gamma"], "beta": state["beta"]}


class TokenAwareFiLM(Conditioning):
    """TAFiLM (spec 3.5): separate modulation of the prefix tokens (CLS, DIST) and of the patch tokens.

    Same metadata path as FiLM but with GELU in the metadata MLP. Per conditioned block, two generators
    ``G^cls_l, G^patch_l = Linear(H, 2D)``, zero-initialised (gamma = 1, beta = 0: the model starts as the
    unconditioned backbone). Tokens ``[:, :2]`` get ``(gamma_cls, beta_cls)``, tokens ``[:, 2:]`` get
    ``(gamma_patch, beta_patch)``.
    """

    def __init__(self, features: MetadataFeatures, encoder: MetadataMLP, embed_dim: int,
                 conditioned_layers: Sequence[int], num_prefix_tokens: int = NUM_PREFIX_TOKENS) -> None:
        super().__init__(conditioned_layers, requires_metadata=True)
        hidden = encoder.out_dim
        self.features = features
        self.encoder = encoder
        self.num_prefix_tokens = num_prefix_tokens
        self.cls_generators = nn.ModuleDict(
            {str(layer): nn.Linear(hidden, 2 * embed_dim) for layer in self.conditioned_layers}
        )
        self.patch_generators = nn.ModuleDict(
            {str(layer): nn.Linear(hidden, 2 * embed_dim) for layer in self.conditioned_layers}
        )
        for gen in [*self.cls_generators.values(), *self.patch_generators.values()]:
            nn.init.zeros_(gen.weight)
            nn.init.zeros_(gen.bias)

    @classmethod
    def from_config(cls, cfg: ModelConfig, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        features, encoder = _film_metadata_path(cfg, spec, "ast_tafilm", "gelu")  # TAFiLM's encoder uses GELU
        return cls(features, encoder, embed_dim, _check_layers(cfg.conditioned_layers, depth))

    def prepare(self, meta: Meta | None) -> State:
        h = self.encoder(self.features(meta))
        state: State = {"gamma_cls": {}, "beta_cls": {}, "gamma_patch": {}, "beta_patch": {}}
        for layer in self.conditioned_layers:
            for part, gens in (("cls", self.cls_generators), ("patch", self.patch_generators)):
                d_gamma, d_beta = gens[str(layer)](h).chunk(2, dim=-1)
                state[f"gamma_{part}"][layer] = 1.0 + d_gamma
                state[f"beta_{part}"][layer] = d_beta
        return state

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: State) -> Tensor:
        p = self.num_prefix_tokens
        prefix = _apply_film(normed_tokens[:, :p], state["gamma_cls"][layer_idx], state["beta_cls"][layer_idx])
        patches = _apply_film(normed_tokens[:, p:], state["gamma_patch"][layer_idx], state["beta_patch"][layer_idx])
        return torch.cat((prefix, patches), dim=1)

    def info(self, state: State) -> dict[str, Any]:
        return {key: state[key] for key in ("gamma_cls", "beta_cls", "gamma_patch", "beta_patch")}


def thirds_mask_logits(embed_dim: int, scale: float) -> Tensor:
    """SoftFiLM's initial mask logits ``[3, D]``: factor ``k`` is ``+scale`` on its third of the channels.

    With ``t = D // 3``: dev on ``[0, t)``, site on ``[t, 2t)``, rest on ``[2t, D)`` (the remainder goes to
    rest); ``-scale`` elsewhere.
    """
    t = embed_dim // 3
    logits = torch.full((len(FACTORS), embed_dim), -float(scale))
    for k, (start, stop) in enumerate(((0, t), (t, 2 * t), (2 * t, embed_dim))):
        logits[k, start:stop] = float(scale)
    return logits


def mask_overlap(weights: Tensor) -> Tensor:
    """Mean pairwise product of factor masks ``[3, D]``: ``(1/3) * sum_{i<j} mean_d(w_i * w_j)`` (scalar)."""
    pairs = [(0, 1), (0, 2), (1, 2)]
    return torch.stack([(weights[i] * weights[j]).mean() for i, j in pairs]).mean()


def mask_coverage(weights: Tensor) -> Tensor:
    """Uncovered channel mass of factor masks ``[3, D]``: ``mean_d(1 - max_k w_k)`` (scalar)."""
    return (1.0 - weights.max(dim=0).values).mean()


class SoftFactorizedFiLM(Conditioning):
    """SoftFiLM (spec 3.6): per-factor FiLM deltas mixed channel-wise by learned soft masks.

    Factors ``k in (dev, site, rest)`` each have an encoder ``Enc_k`` (``[B, H]``) and per conditioned block a
    generator ``G_{k,l} = Linear(H, 2D)`` (Xavier-uniform with gain ``film_init_gain``, zero bias). Masks
    ``w_k = sigmoid(a_k / max(tau, 0.1))`` ``[D]`` (one set shared by all layers, or one per layer):

        gamma_l = 1 + sum_k w_k * dgamma_{k,l},   beta_l = sum_k w_k * dbeta_{k,l},   u <- gamma_l * u + beta_l

    ``tau`` is the buffer ``mask_temperature`` (saved in the state dict), set by the trainer's schedule through
    :meth:`set_mask_temperature`. Regularisers: ``lambda_ov * mask_overlap + lambda_cov * mask_coverage``,
    averaged over mask sets; a term is skipped when its lambda <= 0.
    """

    exported_methods = ("set_mask_temperature", "mask_stats", "masks")

    def __init__(self, factor_encoders: Mapping[str, nn.Module], hidden_dim: int, embed_dim: int,
                 conditioned_layers: Sequence[int], *, film_init_gain: float = 0.1, mask_init_scale: float = 0.5,
                 per_layer_masks: bool = False, mask_temperature: float = 1.0, overlap_lambda: float = 0.01,
                 coverage_lambda: float = 0.005) -> None:
        super().__init__(conditioned_layers, requires_metadata=True)
        if tuple(factor_encoders) != FACTORS:
            raise ValueError(f"factor_encoders must have keys {FACTORS} in that order, got {tuple(factor_encoders)}")
        self.factor_encoders = nn.ModuleDict(factor_encoders)
        self.generators = nn.ModuleDict(
            {
                k: nn.ModuleDict({str(layer): nn.Linear(hidden_dim, 2 * embed_dim) for layer in self.conditioned_layers})
                for k in FACTORS
            }
        )
        for per_layer in self.generators.values():
            for gen in per_layer.values():
                nn.init.xavier_uniform_(gen.weight, gain=film_init_gain)  # near-identity start
                nn.init.zeros_(gen.bias)
        self.per_layer_masks = per_layer_masks
        keys = [f"layer_{layer}" for layer in self.conditioned_layers] if per_layer_masks else ["shared"]
        self.mask_logits = nn.ParameterDict(
            {key: nn.Parameter(thirds_mask_logits(embed_dim, mask_init_scale)) for key in keys}
        )
        self.register_buffer("mask_temperature", torch.tensor(1.0))
        self.set_mask_temperature(mask_temperature)
        self.overlap_lambda = overlap_lambda
        self.coverage_lambda = coverage_lambda

    @classmethod
    def from_config(cls, cfg: ModelConfig, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        spec = _require_spec(spec, "ast_film_soft")
        if not (cfg.use_device and cfg.use_site and cfg.use_continuous):
            raise ValueError("ast_film_soft factorises device, site and continuous metadata: "
                             "use_device, use_site and use_continuous must all be true")
        drop = _encoder_dropout(cfg)

        def factor(features: MetadataFeatures, input_norm: bool = True) -> nn.Sequential:
            mlp = MetadataMLP(features.out_dim, cfg.metadata_hidden_dim, cfg.film_hidden_dim, "relu", drop,
                              input_norm=input_norm)
            return nn.Sequential(features, mlp)

        encoders = {
            "dev": factor(MetadataFeatures(spec, dev_emb_dim=cfg.dev_emb_dim, use_site=False, use_continuous=False)),
            "site": factor(MetadataFeatures(spec, site_emb_dim=cfg.site_emb_dim, use_device=False,
                                            use_continuous=False)),
            # paper: LN over the raw z-scored features as the encoder's first layer; "none" drops it (11.4-1)
            "rest": factor(MetadataFeatures(spec, use_device=False, use_site=False, continuous="raw"),
                           input_norm=cfg.continuous_norm == "layernorm"),
        }
        return cls(
            encoders,
            cfg.film_hidden_dim,
            embed_dim,
            _check_layers(cfg.conditioned_layers, depth),
            film_init_gain=cfg.film_init_gain,
            mask_init_scale=cfg.mask_init_scale,
            per_layer_masks=cfg.per_layer_masks,
            mask_temperature=cfg.mask_temperature,
            overlap_lambda=cfg.mask_sparsity_lambda,
            coverage_lambda=cfg.mask_coverage_lambda,
        )

    # -- masks ----------------------------------------------------------------------------------------------

    def set_mask_temperature(self, temperature: float) -> None:
        """Set ``tau`` (the forward uses ``max(tau, 0.1)``); called by the trainer before each epoch."""
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"mask temperature must be a positive finite number, got {temperature}")
        self.mask_temperature.fill_(float(temperature))

    def _mask_key(self, layer: int) -> str:
        return f"layer_{layer}" if self.per_layer_masks else "shared"

    def _mask_weights(self) -> dict[str, Tensor]:
        tau = self.mask_temperature.clamp(min=MIN_MASK_TEMPERATURE)
        return {key: torch.sigmoid(logits / tau) for key, logits in self.mask_logits.items()}

    def masks(self) -> dict[str, dict[str, Tensor]]:
        """Mask weights at the current temperature: ``{"shared" | "layer_<l>": {"dev", "site", "rest": [D]}}``."""
        return {key: dict(zip(FACTORS, w.detach().unbind(0))) for key, w in self._mask_weights().items()}

    def mask_stats(self) -> dict[str, float]:
        """Flat statistics per mask set ``<key>`` (``shared`` or ``layer_<l>``) at the current temperature.

        ``<key>_<k>_active``: channels with ``w_k > 0.5``; ``<key>_<k>_dominant``: channels where ``w_k`` is the
        largest; ``<key>_overlap_<i>_<j>``: ``mean_d(w_i * w_j)``; ``temperature``: the effective ``tau``.
        """
        stats: dict[str, float] = {}
        with torch.no_grad():
            for key, w in self._mask_weights().items():
                dominant = torch.bincount(w.argmax(dim=0), minlength=len(FACTORS))
                for k, name in enumerate(FACTORS):
                    stats[f"{key}_{name}_active"] = float((w[k] > 0.5).sum())
                    stats[f"{key}_{name}_dominant"] = float(dominant[k])
                for i, j in ((0, 1), (0, 2), (1, 2)):
                    stats[f"{key}_overlap_{FACTORS[i]}_{FACTORS[j]}"] = float((w[i] * w[j]).mean())
            stats["temperature"] = float(self.mask_temperature.clamp(min=MIN_MASK_TEMPERATURE))
        return stats

    # -- interface ------------------------------------------------------------------------------------------

    def prepare(self, meta: Meta | None) -> State:
        # All conditioned layers at once: per factor, the layers' generators are stacked into one matmul
        # ([B, H] x [H, L*2D]) instead of L small ones, which dominate the step on a GPU when L is 12.
        layers = self.conditioned_layers
        weights = self._mask_weights()
        masks = torch.stack([weights[self._mask_key(layer)] for layer in layers])  # [L, 3, D]
        delta = None
        for k, name in enumerate(FACTORS):
            gens = [self.generators[name][str(layer)] for layer in layers]
            out = F.linear(self.factor_encoders[name](meta), torch.cat([g.weight for g in gens]),
                           torch.cat([g.bias for g in gens]))
            out = out.view(out.shape[0], len(layers), 2, -1) * masks[:, k, None]  # [B, L, (gamma, beta), D]
            delta = out if delta is None else delta + out
        gamma = {layer: 1.0 + delta[:, i, 0] for i, layer in enumerate(layers)}
        beta = {layer: delta[:, i, 1] for i, layer in enumerate(layers)}
        return {"gamma": gamma, "beta": beta}

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: State) -> Tensor:
        return _apply_film(normed_tokens, state["gamma"][layer_idx], state["beta"][layer_idx])

    def info(self, state: State) -> dict[str, Any]:
        return {"gamma": state["gamma"], "beta": state["beta"], "masks": self.masks(), "mask_stats": self.mask_stats()}

    def auxiliary_losses(self) -> dict[str, Tensor]:
        weights = list(self._mask_weights().values())
        losses: dict[str, Tensor] = {}
        if self.overlap_lambda > 0:
            losses["mask_overlap"] = self.overlap_lambda * torch.stack([mask_overlap(w) for w in weights]).mean()
        if self.coverage_lambda > 0:
            losses["mask_coverage"] = self.coverage_lambda * torch.stack([mask_coverage(w) for w in weights]).mean()
        return losses

    def extra_repr(self) -> str:
        return (f"layers={list(self.conditioned_layers)}, per_layer_masks={self.per_layer_masks}, "
                f"overlap_lambda={self.overlap_lambda}, coverage_lambda={self.coverage_lambda}")
