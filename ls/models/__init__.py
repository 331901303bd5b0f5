"""Models: AST backbone, metadata encoders, conditioning mechanisms (GRF, FiLM, TAFiLM, SoftFiLM), heads.

>>> from ls.models import build_model
>>> model = build_model(cfg.model("ast_film_soft"), datasets.metadata_spec)
>>> logits, info = model(batch["spec"], {k: batch[k] for k in ls.types.META_KEYS}, return_info=True)

The names below are exported lazily (module ``__getattr__``): ``ls.config`` imports ``ls.models.config`` and
``ls.models.names`` without torch; ``from ls.models import build_model`` imports the model stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ls.utils.lazy import lazy_exports

#: Exported name -> the submodule that defines it.
_EXPORTS = {
    "Conditioning": "conditioning",
    "FiLM": "conditioning",
    "GatedResidualFusion": "conditioning",
    "NoConditioning": "conditioning",
    "SoftFactorizedFiLM": "conditioning",
    "TokenAwareFiLM": "conditioning",
    "ModelConfig": "config",
    "WeightsConfig": "config",
    "ClassifierHead": "heads",
    "HeadSpec": "heads",
    "MetadataError": "meta",
    "MetadataFeatures": "meta",
    "MetadataMLP": "meta",
    "PerFeatureContinuousEncoder": "meta",
    "ConditionedAST": "model",
    "build_model": "model",
    "VARIANT_ALIASES": "names",
    "VARIANTS": "names",
    "canonical_variant": "names",
    "VARIANT_REGISTRY": "registry",
    "Variant": "registry",
    "get_variant": "registry",
    "register_variant": "registry",
}

__all__ = [
    "VARIANTS",
    "VARIANT_ALIASES",
    "VARIANT_REGISTRY",
    "ClassifierHead",
    "ConditionedAST",
    "Conditioning",
    "FiLM",
    "GatedResidualFusion",
    "HeadSpec",
    "MetadataError",
    "MetadataFeatures",
    "MetadataMLP",
    "ModelConfig",
    "NoConditioning",
    "PerFeatureContinuousEncoder",
    "SoftFactorizedFiLM",
    "TokenAwareFiLM",
    "Variant",
    "WeightsConfig",
    "build_model",
    "canonical_variant",
    "get_variant",
    "register_variant",
]

if TYPE_CHECKING:
    from ls.models.conditioning import (
        Conditioning,
        FiLM,
        GatedResidualFusion,
        NoConditioning,
        SoftFactorizedFiLM,
        TokenAwareFiLM,
    )
    from ls.models.config import ModelConfig, WeightsConfig
    from ls.models.heads import ClassifierHead, HeadSpec
    from ls.models.meta import MetadataError, MetadataFeatures, MetadataMLP, PerFeatureContinuousEncoder
    from ls.models.model import ConditionedAST, build_model
    from ls.models.names import VARIANT_ALIASES, VARIANTS, canonical_variant
    from ls.models.registry import VARIANT_REGISTRY, Variant, get_variant, register_variant


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
