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
need, ``auxiliary_losses()`` the regularisers the trainer adds to the task loss. Two hooks let a mechanism
own what changes over training without the trainer knowing it: ``start_epoch(epoch, epochs)`` (SoftFiLM's
temperature schedule) and ``epoch_stats()`` (numbers to log once per epoch: SoftFiLM's mask statistics, the
GRF gate).

Parameter groups follow attribute names: parameters of ``nn.Embedding`` modules -> ``embedding``; attributes
ending in ``generators`` and ``gate`` -> ``film``; everything else -> ``encoder``. A mechanism may add groups of
its own (``param_group_of``) and declare how the optimiser treats them (``param_group_settings``: learning-rate
and weight-decay multipliers): SoftFiLM's ``mask`` group is such a declaration.

Adding a mechanism: subclass :class:`Conditioning` with a ``from_config`` classmethod, give it an options
dataclass and register both in ``ls.models.variants`` (see ``docs/interfaces.md``, "Add a mechanism").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ls.models.backbone import NUM_PREFIX_TOKENS
from ls.models.meta import MetadataFeatures, MetadataMLP
from ls.models.options import (
    FiLMOptions,
    GRFOptions,
    MetadataOptions,
    ModelConfig,
    SoftFiLMOptions,
    TAFiLMOptions,
)
from ls.types import MetadataSpec, ParamGroupSettings

#: Metadata dict of a batch: ``<factor> [B]`` int64 per categorical factor, ``cont [B, C]`` float.
Meta = Mapping[str, Tensor]
#: Per-batch state produced by ``prepare`` and read by ``modulate`` / ``fuse`` / ``info``.
State = dict[str, Any]

#: The reference halves the model dropout inside every metadata encoder (0.4 -> 0.2).
ENCODER_DROPOUT_RATIO = 0.5
#: SoftFiLM's temperature floor: sigma(a / max(tau, 0.1)) keeps the masks from becoming hard steps.
MIN_MASK_TEMPERATURE = 0.1
#: SoftFiLM's key for the continuous features (the paper's "rest" factor).
REST = "rest"
#: SoftFiLM's mask LR scale of the paper's config, used under differential LR when optimizer.mask_lr_scale is
#: unset.
PAPER_MASK_LR_SCALE = 1.5


def check_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """``conditioned_layers`` as a sorted tuple, checked against the backbone's ``depth``."""
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


def require_spec(spec: MetadataSpec | None, variant: str) -> MetadataSpec:
    if spec is None:
        raise ValueError(
            f"variant {variant!r} is conditioned on metadata: build_model needs the fitted MetadataSpec "
            f"(the factors' vocabularies and the continuous features), got None"
        )
    return spec


def encoder_dropout(cfg: ModelConfig) -> float:
    return ENCODER_DROPOUT_RATIO * cfg.dropout


def metadata_features(cfg: MetadataOptions, spec: MetadataSpec, continuous: str, factors: Sequence[str] | None = None,
                      use_continuous: bool | None = None) -> MetadataFeatures:
    """Embeddings of the factors ``cfg`` uses (all declared ones by default) plus the continuous features."""
    names = cfg.used_factors(spec.factor_names) if factors is None else tuple(factors)
    return MetadataFeatures(
        spec,
        factors=names,
        emb_dims={name: cfg.emb_dim(name) for name in names},
        use_continuous=cfg.use_continuous if use_continuous is None else use_continuous,
        continuous=continuous,  # type: ignore[arg-type]
        continuous_hidden_dim=getattr(cfg, "film_hidden_dim", 0) // 2,  # the reference's H_r = film_hidden_dim / 2
        dropout=encoder_dropout(cfg),
    )


def apply_film(u: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
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
        """Build from the variant's options for a backbone of width ``embed_dim`` and ``depth`` blocks.

        The only place a mechanism reads its options."""
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

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before training epoch ``epoch`` (0-based) of ``epochs``: per-epoch schedules go here."""

    def epoch_stats(self) -> dict[str, float]:
        """Numbers to log once per epoch (metric name -> value)."""
        return {}

    def param_group_of(self, name: str, param: nn.Parameter) -> str:
        """Group of a parameter of this module (``encoder`` or ``film``; embeddings are grouped before): a
        mechanism overrides it to put parameters into groups of its own."""
        top = name.split(".", 1)[0]
        if top.endswith("generators") or top == "gate":
            return "film"
        return "encoder"

    def param_group_settings(self, optimizer: Any) -> dict[str, ParamGroupSettings]:
        """How the optimiser treats this mechanism's own groups (``{group: ParamGroupSettings(lr_scale,
        weight_decay_scale)}``); groups not named train like the rest. ``optimizer``: the ``training.optimizer``
        section, read-only, for mechanisms whose treatment follows its settings (SoftFiLM)."""
        return {}

    def _embedding_ids(self) -> set[int]:
        return {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group; every trainable parameter appears exactly once."""
        embedding_ids = self._embedding_ids()
        groups: dict[str, list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                group = "embedding" if id(p) in embedding_ids else self.param_group_of(name, p)
                groups.setdefault(group, []).append(p)
        return groups

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of embeddings, biases, norm weights and scalars (what
        ``optimizer.decay_exclude`` leaves undecayed)."""
        embedding_ids = self._embedding_ids()
        return {name for name, p in self.named_parameters() if p.dim() <= 1 or id(p) in embedding_ids}


class NoConditioning(Conditioning):
    """The baseline AST: ignores ``meta``; every hook is the identity."""


class GatedResidualFusion(Conditioning):
    """GRF: ``h~ = h + g * P(m)`` on the pooled embedding; the transformer is not conditioned.

    ``m = [E_1(factor_1); ...; LN(cont)]`` ``[B, M]``;
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
    def from_config(cls, cfg: GRFOptions, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        features = None
        factors = () if spec is None else cfg.used_factors(spec.factor_names)
        if factors or cfg.use_continuous:
            # paper: a LayerNorm over the z-scored features; "none" keeps them as they are (docs/fixes.md 11.4-1)
            kind = "layernorm" if cfg.continuous_norm == "layernorm" else "raw"
            features = metadata_features(cfg, require_spec(spec, cfg.variant or "ast_fus"), kind)
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

    def epoch_stats(self) -> dict[str, float]:
        return {"gate": self.gate_value()}

    def gate_value(self) -> float:
        """Current gate ``g`` (0.0 when no metadata part is enabled, i.e. no fusion)."""
        return 0.0 if self.gate is None else float(self.gate.detach())


def film_metadata_path(cfg: FiLMOptions | TAFiLMOptions, spec: MetadataSpec | None,
                       activation: str) -> tuple[MetadataFeatures, MetadataMLP]:
    """FiLM/TAFiLM metadata path: embeddings + continuous encoder, then one MLP to ``film_hidden_dim``."""
    kind = "per_feature" if cfg.use_improved_continuous_encoder else "raw"
    features = metadata_features(cfg, require_spec(spec, cfg.variant), kind)
    encoder = MetadataMLP(features.out_dim, cfg.metadata_hidden_dim, cfg.film_hidden_dim, activation,
                          encoder_dropout(cfg))
    return features, encoder


class FiLM(Conditioning):
    """FiLM: per conditioned block ``l``, ``u <- (1 + dgamma_l) * u + dbeta_l`` on all tokens.

    ``m = [E_1(factor_1); ...; enc(cont)]``; ``h = MetadataMLP(m)`` ``[B, H]`` (ReLU);
    optionally ``h_l = Linear_l(h)`` (``layer_specific_encoding``); ``[dgamma_l, dbeta_l] = G_l(h_l)``,
    ``G_l = Linear(H, 2D)``. ``init="default"`` keeps PyTorch's Linear init as the paper (modulation is not
    the identity at step 0); ``init="zero"`` zeroes the generators so training starts at the pretrained
    backbone exactly, like TAFiLM (docs/fixes.md 11.4-2).
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
    def from_config(cls, cfg: FiLMOptions, spec: MetadataSpec | None, embed_dim: int, depth: int) -> Conditioning:
        features, encoder = film_metadata_path(cfg, spec, "relu")
        return cls(features, encoder, embed_dim, check_layers(cfg.conditioned_layers, depth),
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
        return apply_film(normed_tokens, state["gamma"][layer_idx], state["beta"][layer_idx])

    def info(self, state: State) -> dict[str, Any]:
        return {"gamma": state["gamma"], "beta": state["beta"]}


class TokenAwareFiLM(Conditioning):
    """TAFiLM: separate modulation of the prefix tokens (CLS, DIST) and of the patch tokens.

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
    def from_config(cls, cfg: TAFiLMOptions, spec: MetadataSpec | None, embed_dim: int,
                    depth: int) -> Conditioning:
        features, encoder = film_metadata_path(cfg, spec, "gelu")  # TAFiLM's encoder uses GELU
        return cls(features, encoder, embed_dim, check_layers(cfg.conditioned_layers, depth))

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
        prefix = apply_film(normed_tokens[:, :p], state["gamma_cls"][layer_idx], state["beta_cls"][layer_idx])
        patches = apply_film(normed_tokens[:, p:], state["gamma_patch"][layer_idx], state["beta_patch"][layer_idx])
        return torch.cat((prefix, patches), dim=1)

    def info(self, state: State) -> dict[str, Any]:
        return {key: state[key] for key in ("gamma_cls", "beta_cls", "gamma_patch", "beta_patch")}


# -- SoftFiLM -------------------------------------------------------------------------------------------------


def partition_mask_logits(embed_dim: int, n_factors: int, scale: float) -> Tensor:
    """Initial mask logits ``[K, D]``: factor ``k`` is ``+scale`` on its ``1/K`` of the channels, ``-scale``
    elsewhere. With ``t = D // K``, factor ``k`` owns ``[k t, (k + 1) t)``; the last one also takes the
    remainder. For the paper's three factors: dev ``[0, t)``, site ``[t, 2t)``, rest ``[2t, D)``."""
    t = embed_dim // n_factors
    logits = torch.full((n_factors, embed_dim), -float(scale))
    for k in range(n_factors):
        stop = embed_dim if k == n_factors - 1 else (k + 1) * t
        logits[k, k * t : stop] = float(scale)
    return logits


def mask_overlap(weights: Tensor) -> Tensor:
    """Mean pairwise product of factor masks ``[K, D]``: the mean over pairs ``i < j`` of ``mean_d(w_i * w_j)``."""
    pairs = list(itertools.combinations(range(weights.shape[0]), 2))
    if not pairs:
        return weights.new_zeros(())
    return torch.stack([(weights[i] * weights[j]).mean() for i, j in pairs]).mean()


def mask_coverage(weights: Tensor) -> Tensor:
    """Uncovered channel mass of factor masks ``[K, D]``: ``mean_d(1 - max_k w_k)`` (scalar)."""
    return (1.0 - weights.max(dim=0).values).mean()


def mask_temperature_at(epoch: int, epochs: int, start: float = 1.0, end: float = 0.2, warmup: int = 5) -> float:
    """SoftFiLM's mask temperature for the **0-based** epoch.

    ``start`` for ``epoch < warmup``, then ``end + (start - end)(1 + cos(pi min(1, (epoch - warmup) /
    max(1, epochs - warmup)))) / 2``. With (1.0, 0.2, 5, 50): 1-based epochs 1-6 give 1.0, epoch 10 0.98,
    20 0.82, 30 0.56, 40 0.31, 50 0.20.
    """
    if epoch < warmup:
        return start
    progress = min(1.0, (epoch - warmup) / max(1, epochs - warmup))
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def softfilm_key(factor: str) -> str:
    """SoftFiLM's module key of a categorical factor: ``dev`` for ``device`` (the name its ICBHI parameters
    have always had, so checkpoints keep loading), the factor's own name otherwise."""
    return "dev" if factor == "device" else factor


class SoftFactorizedFiLM(Conditioning):
    """SoftFiLM: per-factor FiLM deltas mixed channel-wise by learned soft masks.

    Factors ``k``: one per categorical metadata factor (ICBHI: ``dev``, ``site``) plus ``rest``, the continuous
    features. Each has an encoder ``Enc_k`` (``[B, H]``) and per conditioned block a generator
    ``G_{k,l} = Linear(H, 2D)`` (Xavier-uniform with gain ``film_init_gain``, zero bias). Masks
    ``w_k = sigmoid(a_k / max(tau, 0.1))`` ``[D]`` (one set shared by all layers, or one per layer):

        gamma_l = 1 + sum_k w_k * dgamma_{k,l},   beta_l = sum_k w_k * dbeta_{k,l},   u <- gamma_l * u + beta_l

    ``tau`` is the buffer ``mask_temperature`` (saved in the state dict). The mechanism owns its schedule:
    ``start_epoch`` sets ``tau`` from (``temperature``, ``temperature_end``, ``temperature_warmup``), see
    :func:`mask_temperature_at`. Regularisers: ``lambda_ov * mask_overlap + lambda_cov * mask_coverage``,
    averaged over mask sets; a term is skipped when its lambda <= 0.
    """

    exported_methods = ("set_mask_temperature", "mask_stats", "masks")

    def __init__(self, factor_encoders: Mapping[str, nn.Module], hidden_dim: int, embed_dim: int,
                 conditioned_layers: Sequence[int], *, film_init_gain: float = 0.1, mask_init_scale: float = 0.5,
                 per_layer_masks: bool = False, mask_temperature: float = 1.0, overlap_lambda: float = 0.01,
                 coverage_lambda: float = 0.005, temperature_end: float | None = None,
                 temperature_warmup: int = 0) -> None:
        super().__init__(conditioned_layers, requires_metadata=True)
        self.factor_keys = tuple(factor_encoders)
        if not self.factor_keys:
            raise ValueError("SoftFiLM needs at least one factor")
        self.factor_encoders = nn.ModuleDict(factor_encoders)
        self.generators = nn.ModuleDict(
            {
                k: nn.ModuleDict({str(layer): nn.Linear(hidden_dim, 2 * embed_dim) for layer in self.conditioned_layers})
                for k in self.factor_keys
            }
        )
        for per_layer in self.generators.values():
            for gen in per_layer.values():
                nn.init.xavier_uniform_(gen.weight, gain=film_init_gain)  # near-identity start
                nn.init.zeros_(gen.bias)
        self.per_layer_masks = per_layer_masks
        keys = [f"layer_{layer}" for layer in self.conditioned_layers] if per_layer_masks else ["shared"]
        n = len(self.factor_keys)
        self.mask_logits = nn.ParameterDict(
            {key: nn.Parameter(partition_mask_logits(embed_dim, n, mask_init_scale)) for key in keys}
        )
        self.register_buffer("mask_temperature", torch.tensor(1.0))
        self.set_mask_temperature(mask_temperature)
        self.temperature_schedule = (mask_temperature, temperature_end or mask_temperature, temperature_warmup)
        self.overlap_lambda = overlap_lambda
        self.coverage_lambda = coverage_lambda

    @classmethod
    def from_config(cls, cfg: SoftFiLMOptions, spec: MetadataSpec | None, embed_dim: int,
                    depth: int) -> Conditioning:
        spec = require_spec(spec, cfg.variant or "ast_film_soft")
        if cfg.rest_dim is not None and cfg.use_continuous and cfg.rest_dim != spec.cont_dim:
            raise ValueError(f"rest_dim is {cfg.rest_dim} but the data has {spec.cont_dim} continuous feature(s) "
                             f"({', '.join(spec.cont_names)}); set rest_dim to {spec.cont_dim} or leave it out")
        drop = encoder_dropout(cfg)

        def factor(features: MetadataFeatures, input_norm: bool = True) -> nn.Sequential:
            mlp = MetadataMLP(features.out_dim, cfg.metadata_hidden_dim, cfg.film_hidden_dim, "relu", drop,
                              input_norm=input_norm)
            return nn.Sequential(features, mlp)

        encoders: dict[str, nn.Module] = {}
        for name in cfg.used_factors(spec.factor_names):
            key = softfilm_key(name)
            if key == REST or key in encoders:
                raise ValueError(f"metadata factor {name!r} clashes with SoftFiLM's factor key {key!r}")
            encoders[key] = factor(metadata_features(cfg, spec, "raw", factors=(name,), use_continuous=False))
        if cfg.use_continuous:
            # paper: LN over the raw z-scored features as the encoder's first layer; "none" drops it (11.4-1)
            encoders[REST] = factor(metadata_features(cfg, spec, "raw", factors=()),
                                    input_norm=cfg.continuous_norm == "layernorm")
        return cls(
            encoders,
            cfg.film_hidden_dim,
            embed_dim,
            check_layers(cfg.conditioned_layers, depth),
            film_init_gain=cfg.film_init_gain,
            mask_init_scale=cfg.mask_init_scale,
            per_layer_masks=cfg.per_layer_masks,
            mask_temperature=cfg.mask_temperature,
            overlap_lambda=cfg.mask_overlap_lambda,
            coverage_lambda=cfg.mask_coverage_lambda,
            temperature_end=cfg.mask_temperature_end,
            temperature_warmup=cfg.mask_temperature_warmup,
        )

    # -- its parameter group ---------------------------------------------------------------------------------

    def param_group_of(self, name: str, param: nn.Parameter) -> str:
        return "mask" if name.split(".", 1)[0] == "mask_logits" else super().param_group_of(name, param)

    def param_group_settings(self, optimizer: Any) -> dict[str, ParamGroupSettings]:
        """The masks train like every other parameter (the paper), unless ``optimizer.mask_lr_scale`` is set or
        the optimiser runs per-group rates (``use_differential_lr``: 1.5 x by default): then at that scale and
        without weight decay, which would pull the logits to 0, i.e. every mask weight to 0.5."""
        scale = getattr(optimizer, "mask_lr_scale", None)
        if scale is None and not getattr(optimizer, "use_differential_lr", False):
            return {}
        return {"mask": ParamGroupSettings(PAPER_MASK_LR_SCALE if scale is None else scale, 0.0)}

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {n for n, _ in self.named_parameters() if n.startswith("mask_logits")}

    # -- masks ----------------------------------------------------------------------------------------------

    def set_mask_temperature(self, temperature: float) -> None:
        """Set ``tau`` (the forward uses ``max(tau, 0.1)``)."""
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"mask temperature must be a positive finite number, got {temperature}")
        self.mask_temperature.fill_(float(temperature))

    def start_epoch(self, epoch: int, epochs: int) -> None:
        start, end, warmup = self.temperature_schedule
        self.set_mask_temperature(mask_temperature_at(epoch, epochs, start, end, warmup))

    def epoch_stats(self) -> dict[str, float]:
        return {"mask_temperature": float(self.mask_temperature),
                **{f"mask/{k}": v for k, v in self.mask_stats().items()}}

    def _mask_key(self, layer: int) -> str:
        return f"layer_{layer}" if self.per_layer_masks else "shared"

    def _mask_weights(self) -> dict[str, Tensor]:
        tau = self.mask_temperature.clamp(min=MIN_MASK_TEMPERATURE)
        return {key: torch.sigmoid(logits / tau) for key, logits in self.mask_logits.items()}

    def masks(self) -> dict[str, dict[str, Tensor]]:
        """Mask weights at the current temperature: ``{"shared" | "layer_<l>": {<factor key>: [D]}}``."""
        return {key: dict(zip(self.factor_keys, w.detach().unbind(0))) for key, w in self._mask_weights().items()}

    def mask_stats(self) -> dict[str, float]:
        """Flat statistics per mask set ``<key>`` (``shared`` or ``layer_<l>``) at the current temperature.

        ``<key>_<k>_active``: channels with ``w_k > 0.5``; ``<key>_<k>_dominant``: channels where ``w_k`` is the
        largest; ``<key>_overlap_<i>_<j>``: ``mean_d(w_i * w_j)``; ``temperature``: the effective ``tau``.
        """
        stats: dict[str, float] = {}
        names = self.factor_keys
        with torch.no_grad():
            for key, w in self._mask_weights().items():
                dominant = torch.bincount(w.argmax(dim=0), minlength=len(names))
                for k, name in enumerate(names):
                    stats[f"{key}_{name}_active"] = float((w[k] > 0.5).sum())
                    stats[f"{key}_{name}_dominant"] = float(dominant[k])
                for i, j in itertools.combinations(range(len(names)), 2):
                    stats[f"{key}_overlap_{names[i]}_{names[j]}"] = float((w[i] * w[j]).mean())
            stats["temperature"] = float(self.mask_temperature.clamp(min=MIN_MASK_TEMPERATURE))
        return stats

    # -- interface ------------------------------------------------------------------------------------------

    def prepare(self, meta: Meta | None) -> State:
        # All conditioned layers at once: per factor, the layers' generators are stacked into one matmul
        # ([B, H] x [H, L*2D]) instead of L small ones, which dominate the step on a GPU when L is 12.
        layers = self.conditioned_layers
        weights = self._mask_weights()
        masks = torch.stack([weights[self._mask_key(layer)] for layer in layers])  # [L, K, D]
        delta = None
        for k, name in enumerate(self.factor_keys):
            gens = [self.generators[name][str(layer)] for layer in layers]
            out = F.linear(self.factor_encoders[name](meta), torch.cat([g.weight for g in gens]),
                           torch.cat([g.bias for g in gens]))
            out = out.view(out.shape[0], len(layers), 2, -1) * masks[:, k, None]  # [B, L, (gamma, beta), D]
            delta = out if delta is None else delta + out
        gamma = {layer: 1.0 + delta[:, i, 0] for i, layer in enumerate(layers)}
        beta = {layer: delta[:, i, 1] for i, layer in enumerate(layers)}
        return {"gamma": gamma, "beta": beta}

    def modulate(self, layer_idx: int, normed_tokens: Tensor, state: State) -> Tensor:
        return apply_film(normed_tokens, state["gamma"][layer_idx], state["beta"][layer_idx])

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
        return (f"factors={list(self.factor_keys)}, layers={list(self.conditioned_layers)}, "
                f"per_layer_masks={self.per_layer_masks}, overlap_lambda={self.overlap_lambda}, "
                f"coverage_lambda={self.coverage_lambda}")
