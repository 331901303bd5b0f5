"""The model every variant shares: AST backbone + a conditioning mechanism + a classifier head.

``build_model(model_cfg, metadata_spec)`` is the single factory; the variant (``model_cfg.variant``) picks
the conditioning mechanism and its head through the variant table, :mod:`ls.models.variants`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor, nn

from ls.models.backbone import ASTBackbone
from ls.models.conditioning import Conditioning
from ls.models.heads import ClassifierHead
from ls.models.options import ModelConfig
from ls.models.variants import HeadSpec, get_variant
from ls.types import CONT_KEY, MetadataSpec, ParamGroupSettings

#: Freezing defaults of the reference when the config leaves the block count unset.
DEFAULT_UNTIL_BLOCK = 9
DEFAULT_TRAINABLE_BLOCKS = 2
FREEZE_STRATEGIES = ("none", "all", "until_block", "trainable_blocks")

#: Parameter groups of every model, in a stable order (a mechanism's own groups come before the classifier),
#: each with the optimiser's per-group LR key ``training.optimizer.<group>_lr_scale`` (use_differential_lr).
PARAM_GROUPS = ("backbone", "embedding", "encoder", "film", "classifier")


class ConditionedAST(nn.Module):
    """AST classifier with optional metadata conditioning: ``spec [B, T, F]`` (+ ``meta``) -> logits.

    Args:
        backbone: :class:`~ls.models.backbone.ASTBackbone` (``embed`` / ``run_block`` / ``pool``).
        conditioning: the mechanism (:class:`~ls.models.conditioning.NoConditioning` for the baseline).
        classifier: head ``[B, D]`` -> ``[B, label_dim]``.
        variant: canonical variant name, for checkpoints and messages.

    Analysis methods of the mechanism (``gate_value`` for GRF; ``set_mask_temperature``, ``mask_stats`` and
    ``masks`` for SoftFiLM) are available on the model itself; ``hasattr(model, "gate_value")`` tells whether
    the variant has them. The generic hooks every model has, for whatever trains it: ``start_epoch``,
    ``epoch_stats`` and ``auxiliary_losses``.
    """

    def __init__(self, backbone: ASTBackbone, conditioning: Conditioning, classifier: nn.Module,
                 variant: str = "ast") -> None:
        super().__init__()
        self.backbone = backbone
        self.conditioning = conditioning
        self.classifier = classifier
        self.variant = variant
        self._conditioned = frozenset(conditioning.conditioned_layers)

    def __getattr__(self, name: str) -> Any:
        # Only the mechanism's declared `exported_methods` are forwarded, so `hasattr` stays a truthful
        # capability check for the trainer and the figures (a fifth mechanism needs no change here).
        try:
            return super().__getattr__(name)
        except AttributeError:
            cond = self.__dict__.get("_modules", {}).get("conditioning")
            if cond is not None and name in type(cond).exported_methods:
                return getattr(cond, name)
            raise

    # -- forward --------------------------------------------------------------------------------------------

    def forward(self, spec: Tensor, meta: Mapping[str, Tensor] | None = None,
                return_info: bool = False) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Logits ``[B, label_dim]``; with ``return_info`` also a dict of analysis outputs.

        Args:
            spec: normalised log-mel spectrogram ``[B, T, F]``.
            meta: the batch's ``meta``: ``<factor> [B]`` int64 per categorical factor, ``cont [B, C]`` float
                (ignored by the baseline).
            return_info: also return ``info`` with

                - ``embedding`` ``[B, D]``: the representation fed to the head (after GRF's fusion);
                - ``backbone_embedding`` ``[B, D]``: the pooled backbone output (before fusion);
                - FiLM / SoftFiLM: ``gamma``, ``beta`` ``{layer: [B, D]}``;
                - TAFiLM: ``gamma_cls``, ``beta_cls``, ``gamma_patch``, ``beta_patch`` ``{layer: [B, D]}``;
                - SoftFiLM: ``masks`` ``{"shared" | "layer_<l>": {<factor key>: [D]}}`` at the current
                  temperature (ICBHI keys ``dev``, ``site``, ``rest``), ``mask_stats`` (see ``mask_stats()``);
                - GRF: ``gate`` (float), ``metadata_projection`` ``[B, D]``.
        """
        if self.conditioning.requires_metadata:
            meta = self._check_batch(spec, meta)
        state = self.conditioning.prepare(meta)
        tokens = self.backbone.embed(spec)
        for i in range(self.backbone.depth):
            modulate = partial(self.conditioning.modulate, i, state=state) if i in self._conditioned else None
            tokens = self.backbone.run_block(i, tokens, modulate)
        backbone_embedding = self.backbone.pool(tokens)
        embedding = self.conditioning.fuse(backbone_embedding, state)
        logits = self.classifier(embedding)
        if not return_info:
            return logits
        info = {"embedding": embedding, "backbone_embedding": backbone_embedding}
        info.update(self.conditioning.info(state))
        return logits, info

    @staticmethod
    def _check_batch(spec: Tensor, meta: Mapping[str, Tensor] | None) -> Mapping[str, Tensor] | None:
        if meta is None:
            return None  # the conditioning raises a message that says what to pass
        batch = spec.shape[0]
        for key, value in meta.items():
            if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != batch):
                raise ValueError(f"meta[{key!r}] has shape {tuple(value.shape)} but spec has batch size {batch}")
        cont = meta.get(CONT_KEY)
        if isinstance(cont, Tensor) and cont.is_floating_point() and cont.dtype != spec.dtype:
            meta = {**meta, CONT_KEY: cont.to(spec.dtype)}  # loaders give float32; follow the model's precision
        return meta

    # -- hooks for whatever trains the model (the engine knows no mechanism) -----------------------------------

    def auxiliary_losses(self) -> dict[str, Tensor]:
        """Weighted regularisers to add to the task loss (SoftFiLM: ``mask_overlap``, ``mask_coverage``)."""
        return self.conditioning.auxiliary_losses()

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Before training epoch ``epoch`` (0-based) of ``epochs`` (SoftFiLM sets its mask temperature)."""
        self.conditioning.start_epoch(epoch, epochs)

    def epoch_stats(self) -> dict[str, float]:
        """Numbers to log once per epoch (SoftFiLM: ``mask_temperature``, ``mask/<stat>``; GRF: ``gate``)."""
        return self.conditioning.epoch_stats()

    # -- optimisation helpers -------------------------------------------------------------------------------

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group (``backbone``, ``embedding``, ``encoder``, ``film``, the mechanism's
        own groups such as SoftFiLM's ``mask``, ``classifier``); each trainable parameter is in exactly one
        group; empty groups are left out."""
        groups: dict[str, list[nn.Parameter]] = {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad]
        }
        for name, params in self.conditioning.param_groups().items():
            groups.setdefault(name, []).extend(params)
        classifier = [p for p in self.classifier.parameters() if p.requires_grad]
        order = [*PARAM_GROUPS[:-1], *(g for g in groups if g not in PARAM_GROUPS), "classifier"]
        groups["classifier"] = classifier
        return {name: groups[name] for name in order if groups.get(name)}

    def param_group_settings(self, optimizer: Any) -> dict[str, ParamGroupSettings]:
        """How the optimiser treats each group (``ls.engine.optim``): under ``optimizer.use_differential_lr``
        the model's groups train at ``lr x optimizer.<group>_lr_scale``; the mechanism declares its own groups
        (``Conditioning.param_group_settings``). Groups not named train at ``lr`` with the full weight decay."""
        settings: dict[str, ParamGroupSettings] = {}
        if getattr(optimizer, "use_differential_lr", False):
            settings = {name: ParamGroupSettings(float(getattr(optimizer, f"{name}_lr_scale")))
                        for name in PARAM_GROUPS}
        settings.update(self.conditioning.param_group_settings(optimizer))
        return settings

    def no_weight_decay(self) -> set[str]:
        """Full parameter names not to decay: tokens, pos-embed, embeddings, mask logits, biases, norms."""
        names = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        names |= {f"conditioning.{n}" for n in self.conditioning.no_weight_decay()}
        names |= {f"classifier.{n}" for n, p in self.classifier.named_parameters() if p.dim() <= 1}
        return names

    def freeze(self, strategy: str, until_block: int | None = None, trainable_blocks: int | None = None,
               freeze_conditioning: bool = False) -> None:
        """Set ``requires_grad`` for a freezing strategy; works for every variant (docs/fixes.md 11.2-7).

        Everything is made trainable first, then:

        - ``none``: nothing frozen;
        - ``all``: patch conv, pos-embed, CLS/DIST tokens and all blocks (the final norm stays trainable);
        - ``until_block``: embeddings and blocks ``0..until_block`` (default 9);
        - ``trainable_blocks``: keep the last ``trainable_blocks`` blocks (default 2) trainable, i.e. freeze up to
          block ``depth - k - 1``; ``k >= depth`` freezes nothing.

        ``freeze_conditioning`` also freezes the metadata encoders, generators, masks and gate (any strategy).
        The classifier head is never frozen.
        """
        if strategy not in FREEZE_STRATEGIES:
            raise ValueError(f"unknown freeze strategy {strategy!r}; expected one of {', '.join(FREEZE_STRATEGIES)}")
        depth = self.backbone.depth
        for p in self.parameters():
            p.requires_grad_(True)
        if strategy == "all":
            self.backbone.freeze(None)
        elif strategy == "until_block":
            last = DEFAULT_UNTIL_BLOCK if until_block is None else until_block
            if not 0 <= last < depth:
                raise ValueError(f"freeze until_block={last} must be a block index in 0..{depth - 1}")
            self.backbone.freeze(last)
        elif strategy == "trainable_blocks":
            keep = DEFAULT_TRAINABLE_BLOCKS if trainable_blocks is None else trainable_blocks
            if keep < 0:
                raise ValueError(f"freeze trainable_blocks={keep} must be >= 0")
            if keep < depth:
                self.backbone.freeze(depth - keep - 1)
        if freeze_conditioning:
            for p in self.conditioning.parameters():
                p.requires_grad_(False)


def build_model(model_cfg: ModelConfig, metadata_spec: MetadataSpec | None = None, *,
                backbone: ASTBackbone | None = None, label_dim: int | None = None) -> ConditionedAST:
    """Build the model of ``model_cfg.variant`` (aliases accepted) for data described by ``metadata_spec``.

    ``model_cfg`` is the variant's options (``cfg.model(variant)`` of a loaded config, where the input size and
    ``label_dim`` are already derived from the data and the output mode). The factors' vocabularies and the
    continuous width come from ``metadata_spec`` (required for conditioned variants). The backbone is built
    from the config's AST fields, and pretrained weights are loaded into it through :mod:`ls.models.weights`
    when ``model_cfg.weights.source != "none"`` (local files only). ``backbone`` replaces that step with an
    already built one (e.g. ``ls.models.weights.backbone_from_hf``), used as it is; ``label_dim`` overrides
    the config's.
    """
    if not model_cfg.variant:
        raise ValueError("model config has no variant; load it through ls.config (models.<variant>) or set variant")
    variant = get_variant(model_cfg.variant)
    label_dim = label_dim or model_cfg.label_dim
    if label_dim is None:
        raise ValueError(f"models.{variant.name}.label_dim is unset: load the config through ls.config (it derives "
                         "label_dim from the output mode) or pass build_model(..., label_dim=N)")
    if backbone is None:
        if model_cfg.input_fdim is None or model_cfg.input_tdim is None:
            raise ValueError(f"models.{variant.name}: the input size is unset: load the config through ls.config "
                             "(it takes it from audio.n_mels and dataset.w) or set input_fdim and input_tdim")
        backbone = ASTBackbone(
            model_size=model_cfg.model_size,
            input_fdim=model_cfg.input_fdim,
            input_tdim=model_cfg.input_tdim,
            fstride=model_cfg.fstride,
            tstride=model_cfg.tstride,
            layer_norm_eps=model_cfg.layer_norm_eps,
        )
        if model_cfg.weights.source != "none":
            from ls.models.weights import load_pretrained

            load_pretrained(backbone, model_cfg.weights, variant.name)
    conditioning = variant.conditioning_class().from_config(model_cfg, metadata_spec, backbone.embed_dim,
                                                             backbone.depth)
    head = build_head(model_cfg, backbone.embed_dim, variant.head_spec(model_cfg), label_dim)
    return ConditionedAST(backbone, conditioning, head, variant.name)


def build_head(model_cfg: ModelConfig, embed_dim: int, spec: HeadSpec, label_dim: int) -> ClassifierHead:
    """Classifier head ``[B, embed_dim]`` -> ``[B, label_dim]`` with the model's dropout."""
    return ClassifierHead(embed_dim, label_dim, spec, model_cfg.dropout)
