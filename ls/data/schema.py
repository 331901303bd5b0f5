"""What metadata a dataset declares: its categorical factors and continuous features (torch-free).

A dataset reader builds a segment table (one row per cycle/event, see ``docs/interfaces.md``); its
:class:`MetadataSchema` says which table columns are metadata: each categorical factor (the name it has in a
batch's ``meta`` and in the models, and the column it comes from) and each continuous feature (the column,
or ``None`` for the segment's duration, ``CycleEnd - CycleStart``). The metadata encoder
(``ls.data.metadata``) fits vocabularies and statistics for exactly these, on the training split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Continuous feature computed from the segment bounds rather than read from a column.
DURATION = "duration"


@dataclass(frozen=True)
class MetadataSchema:
    """Categorical factors ``{name: column}`` and continuous features ``{name: column or None}`` of a dataset.

    ``child_bmi``: the ICBHI rule for ``bmi``: the adult BMI column, else ``CW / (CH / 100)^2`` of children.
    """

    factors: Mapping[str, str]
    continuous: Mapping[str, str | None]
    child_bmi: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # display names, e.g. {"device": "Device"}

    def __post_init__(self) -> None:
        for name in self.factors:
            if not name.isidentifier() or name == "cont":
                raise ValueError(f"factor name {name!r} must be an identifier other than 'cont'")

    def label(self, name: str) -> str:
        return self.labels.get(name, name.replace("_", " ").capitalize())

    def to_dict(self) -> dict:
        return {"factors": dict(self.factors), "continuous": dict(self.continuous), "child_bmi": self.child_bmi,
                "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, d: Mapping) -> MetadataSchema:
        return cls(dict(d["factors"]), dict(d["continuous"]), bool(d.get("child_bmi", False)),
                   dict(d.get("labels", {})))


#: ICBHI 2017: stethoscope/microphone and chest location; age, BMI (adults; children from weight/height) and
#: cycle duration.
ICBHI_SCHEMA = MetadataSchema(
    factors={"device": "Device", "site": "AuscLoc"},
    continuous={"age": "Age", "bmi": "BMI", DURATION: None},
    child_bmi=True,
    labels={"device": "Device", "site": "Site", "age": "Age", "bmi": "BMI", DURATION: "Duration"},
)
