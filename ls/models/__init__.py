"""Models: AST backbone, metadata encoders, conditioning mechanisms (GRF, FiLM, TAFiLM, SoftFiLM), heads.

>>> from ls.models import build_model
>>> model = build_model(cfg.model("ast_film_soft"), datasets.metadata_spec)
>>> logits, info = model(batch["spec"], batch["meta"], return_info=True)

The variant table (:mod:`ls.models.variants`) lists the variants; :func:`register_variant` adds one from
outside ``ls``. The names below are exported lazily (module ``__getattr__``): ``ls.config`` imports
``ls.models.options`` and ``ls.models.variants`` without torch; ``from ls.models import build_model`` imports
the model stack.
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
    "ClassifierHead": "heads",
    "MetadataError": "meta",
    "MetadataFeatures": "meta",
    "MetadataMLP": "meta",
    "PerFeatureContinuousEncoder": "meta",
    "ConditionedAST": "model",
    "build_model": "model",
    "FiLMOptions": "options",
    "GRFOptions": "options",
    "MetadataOptions": "options",
    "ModelConfig": "options",
    "SoftFiLMOptions": "options",
    "TAFiLMOptions": "options",
    "WeightsConfig": "options",
    "VARIANTS": "variants",
    "HeadSpec": "variants",
    "Variant": "variants",
    "canonical_variant": "variants",
    "display_name": "variants",
    "get_variant": "variants",
    "register_variant": "variants",
    "unregister_variant": "variants",
    "variant_table": "variants",
}

__all__ = [
    "VARIANTS",
    "ClassifierHead",
    "ConditionedAST",
    "Conditioning",
    "FiLM",
    "FiLMOptions",
    "GRFOptions",
    "GatedResidualFusion",
    "HeadSpec",
    "MetadataError",
    "MetadataFeatures",
    "MetadataMLP",
    "MetadataOptions",
    "ModelConfig",
    "NoConditioning",
    "PerFeatureContinuousEncoder",
    "SoftFactorizedFiLM",
    "SoftFiLMOptions",
    "TAFiLMOptions",
    "TokenAwareFiLM",
    "Variant",
    "WeightsConfig",
    "build_model",
    "canonical_variant",
    "display_name",
    "get_variant",
    "register_variant",
    "unregister_variant",
    "variant_table",
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
    from ls.models.heads import ClassifierHead
    from ls.models.meta import MetadataError, MetadataFeatures, MetadataMLP, PerFeatureContinuousEncoder
    from ls.models.model import ConditionedAST, build_model
    from ls.models.options import (
        FiLMOptions,
        GRFOptions,
        MetadataOptions,
        ModelConfig,
        SoftFiLMOptions,
        TAFiLMOptions,
        WeightsConfig,
    )
    from ls.models.variants import (
        VARIANTS,
        HeadSpec,
        Variant,
        canonical_variant,
        display_name,
        get_variant,
        register_variant,
        unregister_variant,
        variant_table,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
