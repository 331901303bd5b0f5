"""The variant table: one entry per model variant, read by everything that needs to know the variants.

An entry holds the canonical name (the ``models.<name>`` config block and the ``variant`` of a checkpoint),
the display name (figures, tables), the root script that trains it, the conditioning mechanism, its options
dataclass, its classifier head and the aliases its name had in the original code. Config loading, model
building, the scripts' table, figure labels and the tests all read this table; nothing else lists variants.

This module is torch-free: the built-in mechanisms are named as ``"module:Class"`` and imported when a model
is first built. A mechanism defined elsewhere registers with the class itself::

    register_variant(Variant("my_film", "MyFiLM-AST", MyFiLMOptions, MyFiLM))

and is then trained like the others (``ls.train.main("my_film")``). Its module is a plugin
(:mod:`ls.utils.plugins`): the ``ls.plugins`` entry points and ``LS_PLUGINS`` are loaded before the table is
first read (:func:`get_variant`, :func:`variants`), and every registration records which plugin made it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ls.models.options import (
    FiLMOptions,
    GRFOptions,
    ModelConfig,
    SoftFiLMOptions,
    TAFiLMOptions,
)
from ls.utils import plugins


@dataclass(frozen=True)
class HeadSpec:
    """Shape of a classifier head: hidden width and activation between its two Linear layers."""

    hidden_dim: int
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ValueError(f"head hidden_dim must be >= 1, got {self.hidden_dim}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"head activation must be relu or gelu, got {self.activation!r}")


@dataclass(frozen=True)
class Variant:
    """A registered model variant.

    Attributes:
        name: canonical name: the ``models.<name>`` block and the checkpoint's ``variant``.
        display_name: how figures and tables name it (e.g. ``SoftFiLM-AST``).
        options: its options dataclass, a subclass of :class:`~ls.models.options.ModelConfig`.
        conditioning: the :class:`~ls.models.conditioning.Conditioning` subclass, or ``"module:Class"``.
        head: the classifier head of the paper for this variant (what ``head_hidden_dim: null`` gives).
        script: the root script that trains it (None for variants registered outside ``ls``).
        aliases: other names accepted for it (the original code's keys, the paper's README).
    """

    name: str
    display_name: str
    options: type[ModelConfig]
    conditioning: Any
    head: HeadSpec = HeadSpec(64, "relu")
    script: str | None = None
    aliases: tuple[str, ...] = ()

    def conditioning_class(self) -> type:
        """The mechanism class (imported on first use when the entry names it as ``"module:Class"``)."""
        if isinstance(self.conditioning, str):
            module, _, attr = self.conditioning.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.conditioning

    def head_spec(self, cfg: ModelConfig) -> HeadSpec:
        """The head to build: the config's ``head_hidden_dim`` / ``head_activation`` where set, else this
        variant's paper head."""
        return HeadSpec(cfg.head_hidden_dim or self.head.hidden_dim, cfg.head_activation or self.head.activation)


#: canonical name -> entry, in registration order.
VARIANTS: dict[str, Variant] = {}
_ALIASES: dict[str, str] = {}


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to the table. Its name and aliases must be new; its options must be a ModelConfig.

    The plugin being loaded (or the module calling this) is recorded as where the variant comes from; a name
    another plugin registered already is an error naming both."""
    if not variant.name.isidentifier():
        raise ValueError(f"variant name {variant.name!r} must be an identifier (it is a config key)")
    if not (isinstance(variant.options, type) and issubclass(variant.options, ModelConfig)):
        raise TypeError(f"variant {variant.name!r}: options must be a subclass of ls.models.ModelConfig")
    caller = plugins.caller_module()
    for name in (variant.name, *variant.aliases):
        plugins.check_new("variant", name, caller)
        if name in VARIANTS or name in _ALIASES:
            raise ValueError(f"variant name or alias {name!r} is already registered")
    for name in (variant.name, *variant.aliases):
        plugins.claim("variant", name, caller)
    VARIANTS[variant.name] = variant
    _ALIASES.update({alias: variant.name for alias in variant.aliases})
    return variant


def unregister_variant(name: str) -> None:
    """Remove a variant registered at run time (tests and notebooks that define one)."""
    variant = VARIANTS.pop(name)
    for alias in (name, *variant.aliases):
        _ALIASES.pop(alias, None)
        plugins.release("variant", alias)


def variant_table() -> dict[str, Variant]:
    """The table (canonical name -> entry), with the pending plugins loaded first."""
    plugins.load_pending()
    return VARIANTS


def get_variant(name: str) -> Variant:
    """The entry of a canonical name or alias (``tafilm``, ``ast_meta_proj``, ``softfilm``, ...)."""
    plugins.load_pending()
    key = _ALIASES.get(name, name)
    if key not in VARIANTS:
        aliases = ", ".join(f"{a} -> {c}" for a, c in _ALIASES.items())
        raise ValueError(f"unknown model variant {name!r}; registered: {', '.join(VARIANTS)} (aliases: {aliases}); "
                         f"{plugins.unknown_hint()}")
    return VARIANTS[key]


def canonical_variant(name: str) -> str:
    """The canonical name of a variant name or alias."""
    return get_variant(name).name


def display_name(name: str) -> str:
    """How figures and tables name a variant (the name itself for an unregistered one)."""
    try:
        return get_variant(name).display_name
    except ValueError:
        return name


_CONDITIONING = "ls.models.conditioning"
register_variant(Variant("ast", "AST", ModelConfig, f"{_CONDITIONING}:NoConditioning", HeadSpec(64, "relu"),
                         "ast_train.py"))
register_variant(Variant("ast_fus", "GRF-AST", GRFOptions, f"{_CONDITIONING}:GatedResidualFusion",
                         HeadSpec(32, "gelu"), "ast_meta_fus_train.py", ("ast_meta_proj", "grf")))
register_variant(Variant("ast_film", "FiLM-AST", FiLMOptions, f"{_CONDITIONING}:FiLM", HeadSpec(64, "relu"),
                         "ast_film_train.py", ("film",)))
register_variant(Variant("ast_tafilm", "TAFiLM-AST", TAFiLMOptions, f"{_CONDITIONING}:TokenAwareFiLM",
                         HeadSpec(64, "gelu"), "ast_tafilm_train.py", ("tafilm",)))
register_variant(Variant("ast_film_soft", "SoftFiLM-AST", SoftFiLMOptions, f"{_CONDITIONING}:SoftFactorizedFiLM",
                         HeadSpec(64, "relu"), "ast_film_soft.py", ("ast_softfilm", "softfilm")))
