"""Model options, one dataclass per variant (torch-free, so configs are validated without building a model).

A ``models.<variant>`` YAML block is flat and is read into the options class of that variant (see
:mod:`ls.models.variants`): :class:`ModelConfig` holds what every variant has (backbone, input, weights, head),
:class:`MetadataOptions` what every metadata-conditioned variant has (factor embeddings, ablations), and each
mechanism adds its own knobs. A key the variant does not use is an error naming the variant. A mechanism reads
its knobs in its ``from_config`` and nowhere else.

``__aliases__`` maps key names of the original configs and of the paper's README to the typed keys; a dotted
target (``factor_emb_dims.device``) sets one entry of a mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ls.utils.fields import option

#: Every block of the 12-block DeiT backbones (the FiLM and TAFiLM paper configs condition all of them).
ALL_BLOCKS = list(range(12))


@dataclass
class WeightsConfig:
    """Where pretrained weights come from. Only local files; nothing is downloaded at run time."""

    source: Literal["none", "imagenet", "audioset", "hf"] = option(
        "none", "none: random init | imagenet: timm DeiT-distilled file (.pth/.safetensors) | audioset: the "
        "original AST checkpoint (audioset_10_10_0.4593.pth) | hf: a Hugging Face AST directory or file")
    path: str | None = option(None, "the local weights file or folder (see README, 'Pretrained weights')")
    source_grid: list[int] | None = option(
        None, "[f_dim, t_dim] patch grid of an `audioset` checkpoint's positional embedding; null: inferred "
        "(12 x 101 for the AudioSet release, or this model's own grid when the sizes agree)")

    def __post_init__(self) -> None:
        grid = self.source_grid
        if grid is not None and (len(grid) != 2 or min(grid) < 1):
            raise ValueError(f"weights.source_grid must be two positive ints [f_dim, t_dim], got {grid}")


@dataclass
class ModelConfig:
    """Options every variant has: the AST backbone, its input, pretrained weights and the classifier head."""

    variant: str = option("", "canonical variant name; filled from the key under `models:`")
    label_dim: int | None = option(
        None, "logits per cycle; null: derived from the output mode (dataset.n_cls, dataset.multi_label, "
        "training.loss). A value given here must agree with it")
    model_size: Literal["tiny224", "small224", "base224", "base384"] = option(
        "base384", "DeiT-distilled backbone preset (timm deit_*_distilled_patch16_{224,384})")
    input_fdim: int | None = option(None, "mel bins the model takes; null: audio.n_mels. A value must agree")
    input_tdim: int | None = option(None, "frames the model takes; null: dataset.w. A value must agree")
    fstride: int = option(10, "patch stride along frequency (16: no overlap)")
    tstride: int = option(10, "patch stride along time (16: no overlap)")
    layer_norm_eps: float = option(
        1e-6, "LayerNorm eps of the backbone (DeiT / original AST); an hf checkpoint's own eps replaces it")
    weights: WeightsConfig = option(WeightsConfig, "pretrained backbone weights (local files only)")
    dropout: float = option(0.4, "classifier dropout; metadata encoders use half of it, as the reference")
    head_hidden_dim: int | None = option(
        None, "hidden width of the classifier head; null: the variant's paper head (see the variant table)")
    head_activation: Literal["relu", "gelu"] | None = option(
        None, "activation of the classifier head; null: the variant's paper head")

    #: Key names of the original configs / the paper's README, mapped to typed keys.
    __aliases__: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("label_dim", "input_fdim", "input_tdim", "head_hidden_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass
class MetadataOptions(ModelConfig):
    """Options of every metadata-conditioned variant: how each categorical factor is embedded, and ablations.

    The factors themselves come from the data (the fitted ``MetadataSpec``): ICBHI has ``device`` and ``site``.
    """

    factor_emb_dims: dict[str, int] = option(
        {"device": 8, "site": 14},
        "embedding width per categorical factor; entries given here replace the default entries of the same "
        "factor, factors not listed get factor_emb_dim")
    factor_emb_dim: int = option(8, "embedding width of a factor that factor_emb_dims does not list")
    use_factors: dict[str, bool] = option(
        {}, "ablation: `{factor: false}` leaves a categorical factor out (default: every declared factor)")
    use_continuous: bool = option(True, "ablation: false leaves the continuous features (age, BMI, duration) out")

    __aliases__: ClassVar[dict[str, str]] = {
        "dev_emb_dim": "factor_emb_dims.device",
        "dev_embed_dim": "factor_emb_dims.device",
        "site_emb_dim": "factor_emb_dims.site",
        "site_embed_dim": "factor_emb_dims.site",
        "use_device": "use_factors.device",
        "use_site": "use_factors.site",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        small = {k: v for k, v in self.factor_emb_dims.items() if v < 1}
        if small or self.factor_emb_dim < 1:
            raise ValueError(f"factor embedding widths must be >= 1, got {small or self.factor_emb_dim}")

    def emb_dim(self, factor: str) -> int:
        return self.factor_emb_dims.get(factor, self.factor_emb_dim)

    def used_factors(self, declared: tuple[str, ...]) -> tuple[str, ...]:
        """The declared factors this model embeds, in the data's order; a name the data lacks is an error."""
        unknown = sorted(set(self.use_factors) - set(declared))
        if unknown:
            raise ValueError(f"use_factors names {unknown}, which the data does not declare "
                             f"(factors: {', '.join(declared) or 'none'})")
        return tuple(f for f in declared if self.use_factors.get(f, True))


#: ``conditioned_layers: all``: every block (all backbone presets have 12).
ALL = "all"


def _check_layers(layers: list[int]) -> None:
    if any(layer < 0 for layer in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"conditioned_layers must be distinct block indices >= 0, got {layers}")


@dataclass
class GRFOptions(MetadataOptions):
    """Gated residual fusion: ``h + g * P(m)`` on the pooled embedding (the transformer is not conditioned)."""

    continuous_norm: Literal["layernorm", "none"] = option(
        "layernorm", "LayerNorm over the z-scored continuous features before fusion (paper); `none` feeds "
        "them as they are (a LayerNorm over 3 features leaves about one degree of freedom, see docs/fixes.md)")
    init_gate: float = option(0.5, "initial value of the (unconstrained) fusion gate")

    __aliases__: ClassVar[dict[str, str]] = {**MetadataOptions.__aliases__, "hidden_dim": "head_hidden_dim"}


@dataclass
class _FiLMFamily(MetadataOptions):
    metadata_hidden_dim: int = option(64, "hidden width of the metadata MLPs")
    film_hidden_dim: int = option(64, "width of the metadata representation fed to the FiLM generators")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conditioned_layers == ALL:  # type: ignore[has-type]
            self.conditioned_layers = list(ALL_BLOCKS)
        _check_layers(self.conditioned_layers)  # type: ignore[attr-defined]
        if self.metadata_hidden_dim < 1 or self.film_hidden_dim < 1:
            raise ValueError("metadata_hidden_dim and film_hidden_dim must be >= 1")


@dataclass
class FiLMOptions(_FiLMFamily):
    """FiLM: per conditioned block, ``gamma * u + beta`` on all pre-MLP normalised tokens."""

    conditioned_layers: list[int] | Literal["all"] = option(
        ALL_BLOCKS, "blocks whose pre-MLP tokens are modulated (`all`: every block)")
    use_improved_continuous_encoder: bool = option(
        True, "encode each continuous feature on its own, then mix (the reference's 'improved' encoder); "
        "false feeds the raw z-scores")
    layer_specific_encoding: bool = option(False, "a Linear(H, H) per conditioned block before its generator")
    film_init: Literal["default", "zero"] = option(
        "default", "generator init: PyTorch's default (paper: not the identity at step 0) or `zero` (starts "
        "at gamma = 1, beta = 0, like TAFiLM)")


@dataclass
class TAFiLMOptions(_FiLMFamily):
    """Token-aware FiLM: separate modulation of the prefix tokens (CLS, DIST) and of the patch tokens."""

    conditioned_layers: list[int] | Literal["all"] = option(
        ALL_BLOCKS, "blocks whose pre-MLP tokens are modulated (`all`: every block)")
    use_improved_continuous_encoder: bool = option(
        True, "encode each continuous feature on its own, then mix; false feeds the raw z-scores")


@dataclass
class SoftFiLMOptions(_FiLMFamily):
    """Soft-factorised FiLM: per-factor FiLM deltas mixed channel-wise by learned soft masks."""

    conditioned_layers: list[int] | Literal["all"] = option(
        [10, 11], "blocks whose pre-MLP tokens are modulated (`all`: every block)")
    continuous_norm: Literal["layernorm", "none"] = option(
        "layernorm", "LayerNorm as the first layer of the continuous factor's encoder (paper); `none` drops it")
    film_init_gain: float = option(0.1, "Xavier gain of the generators (near-identity start)")
    mask_init_scale: float = option(
        0.5, "initial mask logits: +scale on the factor's share of the channels, -scale elsewhere")
    mask_overlap_lambda: float = option(0.01, "weight of the mask-overlap loss (skipped when <= 0)")
    mask_coverage_lambda: float = option(0.005, "weight of the mask-coverage loss (skipped when <= 0)")
    per_layer_masks: bool = option(False, "one mask set per conditioned block instead of one shared set")
    mask_temperature: float = option(
        1.0, "mask temperature tau at the start of training (masks are sigmoid(logits / max(tau, 0.1)))")
    mask_temperature_end: float = option(0.2, "tau at the last epoch (cosine decay)")
    mask_temperature_warmup: int = option(5, "epochs at the initial tau before the cosine decay")
    rest_dim: int | None = option(
        None, "expected number of continuous features (the paper's README key); null: whatever the data has. "
        "A value is checked against the data when the model is built")

    __aliases__: ClassVar[dict[str, str]] = {
        **MetadataOptions.__aliases__,
        "mask_sparsity_lambda": "mask_overlap_lambda",  # ls 0.1 / original name of the overlap weight
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mask_temperature > 0 or not self.mask_temperature_end > 0:
            raise ValueError(f"mask temperatures must be > 0, got {self.mask_temperature}, "
                             f"{self.mask_temperature_end}")
        if self.mask_temperature_warmup < 0:
            raise ValueError(f"mask_temperature_warmup must be >= 0, got {self.mask_temperature_warmup}")
        if self.film_init_gain < 0:
            raise ValueError(f"film_init_gain must be >= 0, got {self.film_init_gain}")
        if self.rest_dim is not None and self.rest_dim < 1:
            raise ValueError(f"rest_dim must be >= 1, got {self.rest_dim}")
