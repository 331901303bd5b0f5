"""Types shared by the data, model and engine layers (the seams between them). Imports nothing from ``ls``.

A batch from ``ls.data`` is a dict with ``spec [B, T, F]``, ``label``, the ids ``filename``/``cycle_index``/``pid``
and ``meta``: the model's metadata input, ``{<factor>: int64 [B] for every categorical factor, "cont": [B, C]}``.
Which factors exist is data, not code: a dataset declares them, a fitted metadata encoder describes them in a
:class:`MetadataSpec`, and the models size themselves from that spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Index reserved in every factor vocabulary for values never seen in training.
UNKNOWN_ID = 0
UNKNOWN_TOKEN = "<unknown>"
#: ``meta`` key of the continuous features ``[B, C]`` (every other key is a categorical factor).
CONT_KEY = "cont"

#: The adventitious-sound classes of ICBHI, also those of the crackle/wheeze multilabel output mode
#: (class = crackle + 2 wheeze), and their normal-vs-abnormal view. Class 0 is normal in every task.
FOUR_CLASS_NAMES = ("normal", "crackle", "wheeze", "both")
TWO_CLASS_NAMES = ("normal", "abnormal")


@dataclass(frozen=True)
class Factor:
    """A categorical metadata factor: its name (the ``meta`` key) and vocabulary (index 0 = unknown)."""

    name: str
    vocabulary: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == CONT_KEY:
            raise ValueError(f"factor name {self.name!r} must be a Python identifier other than {CONT_KEY!r}")
        if not self.vocabulary or self.vocabulary[UNKNOWN_ID] != UNKNOWN_TOKEN:
            raise ValueError(f"factor {self.name!r}: vocabulary index {UNKNOWN_ID} must be {UNKNOWN_TOKEN!r}")

    @property
    def size(self) -> int:
        return len(self.vocabulary)


@dataclass(frozen=True)
class MetadataSpec:
    """What a fitted metadata encoder produces, i.e. what a conditioned model must accept.

    ``factors``: the categorical factors in ``meta`` order (ICBHI: ``device``, ``site``); ``cont_names``: the
    columns of ``meta["cont"]`` (ICBHI: z-scored ``age``, ``bmi``, ``duration``, then missing flags if enabled).
    """

    factors: tuple[Factor, ...]
    cont_names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be distinct, got {names}")

    @classmethod
    def build(cls, vocabularies: Mapping[str, Sequence[str]], cont_names: Sequence[str]) -> MetadataSpec:
        """From ``{factor: vocabulary}`` (insertion order kept) and the continuous feature names."""
        return cls(tuple(Factor(k, tuple(v)) for k, v in vocabularies.items()), tuple(cont_names))

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factors)

    @property
    def cont_dim(self) -> int:
        return len(self.cont_names)

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(f"no metadata factor {name!r}; factors: {', '.join(self.factor_names) or 'none'}")

    def vocabularies(self) -> dict[str, list[str]]:
        """``{factor: [names by id]}``: e.g. for per-factor metrics and figures."""
        return {f.name: list(f.vocabulary) for f in self.factors}

    def to_dict(self) -> dict:
        return {"factors": {f.name: list(f.vocabulary) for f in self.factors}, "cont_names": list(self.cont_names)}

    @classmethod
    def from_dict(cls, d: Mapping) -> MetadataSpec:
        """Inverse of :meth:`to_dict`; also reads the two-factor layout of ls 0.1 checkpoints."""
        if "factors" in d:
            return cls.build(d["factors"], d["cont_names"])
        return cls.build({"device": d["device_names"], "site": d["site_names"]}, d["cont_names"])


@dataclass(frozen=True)
class ParamGroupSettings:
    """How an optimiser treats one named parameter group of a model, relative to its base settings: the group
    trains at ``lr x lr_scale`` with weight decay ``weight_decay x weight_decay_scale`` (0: never decayed, also
    not by a weight-decay schedule). A model and its mechanism declare them (``param_group_settings``); the
    engine applies them without knowing any group by name."""

    lr_scale: float = 1.0
    weight_decay_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr_scale > 0:
            raise ValueError(f"a parameter group's lr_scale must be > 0, got {self.lr_scale}")
        if not self.weight_decay_scale >= 0:
            raise ValueError(f"a parameter group's weight_decay_scale must be >= 0, got {self.weight_decay_scale}")
