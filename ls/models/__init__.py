"""Models: AST backbone, metadata encoders, conditioning mechanisms (GRF, FiLM, TAFiLM, SoftFiLM), heads.

>>> from ls.models import build_model
>>> model = build_model(cfg.model("ast_film_soft"), datasets.metadata_spec)
>>> logits, info = model(batch["spec"], {k: batch[k] for k in ls.types.META_KEYS}, return_info=True)
"""

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
