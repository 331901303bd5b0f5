"""Variant registry: canonical variant name -> conditioning mechanism + the paper's classifier head.

One line per variant. A fifth mechanism is one :class:`~ls.models.conditioning.Conditioning` subclass plus
one ``register_variant(...)`` line here (and its name in ``ls.models.names.VARIANTS`` so configs accept it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ls.models.conditioning import (
    Conditioning,
    FiLM,
    GatedResidualFusion,
    NoConditioning,
    SoftFactorizedFiLM,
    TokenAwareFiLM,
)
from ls.models.config import ModelConfig
from ls.models.heads import PAPER_HEAD_HIDDEN_DIM, HeadSpec
from ls.models.names import VARIANT_ALIASES


@dataclass(frozen=True)
class Variant:
    """A registered model variant.

    Attributes:
        name: canonical name (``models.<name>`` config block, checkpoint ``variant`` field).
        conditioning: class whose ``from_config(cfg, spec, embed_dim, depth)`` builds the mechanism.
        paper_head: head the paper used for this variant, from the model config (``head: paper``).
    """

    name: str
    conditioning: type[Conditioning]
    paper_head: Callable[[ModelConfig], HeadSpec]


VARIANT_REGISTRY: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to the registry (a name may be registered once)."""
    if variant.name in VARIANT_REGISTRY:
        raise ValueError(f"model variant {variant.name!r} is already registered")
    VARIANT_REGISTRY[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    """The registered variant for a canonical name or alias (``tafilm``, ``ast_meta_proj``, ...)."""
    key = VARIANT_ALIASES.get(name, name)
    if key not in VARIANT_REGISTRY:
        known = ", ".join(sorted(VARIANT_REGISTRY)) + " (aliases: " + ", ".join(sorted(VARIANT_ALIASES)) + ")"
        raise ValueError(f"unknown model variant {name!r}; registered variants: {known}")
    return VARIANT_REGISTRY[key]


def head_spec(cfg: ModelConfig, variant: Variant) -> HeadSpec:
    """The head to build: the variant's paper head, or the common one (``head: common``, defect 11.4-4)."""
    if cfg.head == "common":
        return HeadSpec(cfg.head_hidden_dim, cfg.head_activation)
    return variant.paper_head(cfg)


def _relu64(cfg: ModelConfig) -> HeadSpec:
    return HeadSpec(PAPER_HEAD_HIDDEN_DIM, "relu")


def _gelu64(cfg: ModelConfig) -> HeadSpec:
    return HeadSpec(PAPER_HEAD_HIDDEN_DIM, "gelu")


def _grf_head(cfg: ModelConfig) -> HeadSpec:
    return HeadSpec(cfg.hidden_dim, "gelu")  # GRF's `hidden_dim` (32) is its head width


register_variant(Variant("ast", NoConditioning, _relu64))
register_variant(Variant("ast_fus", GatedResidualFusion, _grf_head))
register_variant(Variant("ast_film", FiLM, _relu64))
register_variant(Variant("ast_tafilm", TokenAwareFiLM, _gelu64))
register_variant(Variant("ast_film_soft", SoftFactorizedFiLM, _relu64))
