"""Variant names (torch-free, so configs can be validated without building a model)."""

from __future__ import annotations

#: canonical variant names, as used by the root scripts and ``models.<name>`` config blocks
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")

#: names used by the original code, its configs and its README, mapped to the canonical ones
VARIANT_ALIASES = {
    "ast_meta_proj": "ast_fus",
    "grf": "ast_fus",
    "film": "ast_film",
    "tafilm": "ast_tafilm",
    "softfilm": "ast_film_soft",
    "ast_softfilm": "ast_film_soft",
}


def canonical_variant(name: str) -> str:
    """Map a variant name or alias to its canonical name, or raise naming the known ones."""
    key = VARIANT_ALIASES.get(name, name)
    if key not in VARIANTS:
        known = ", ".join(VARIANTS + tuple(VARIANT_ALIASES))
        raise ValueError(f"unknown model variant {name!r}; known: {known}")
    return key
