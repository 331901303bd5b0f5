"""Classification tasks: the classes of a dataset and where a segment's class comes from (torch/pandas-free).

Class 0 is always the normal class: the ICBHI specificity/sensitivity definitions (and the SPRSound challenge's)
rely on it.

========  ==============  =====================================================================================
task      datasets        classes (id order) and where they come from
========  ==============  =====================================================================================
icbhi4    all (bits)      normal, crackle, wheeze, both: ``Crackles + 2 Wheezes`` (the 0/1 bit columns)
icbhi2    all (bits)      normal, abnormal: any bit set
event2    sprsound        Normal, Adventitious (every other event type)
event7    sprsound        Normal, Rhonchi, Wheeze, Stridor, Coarse Crackle, Fine Crackle, Wheeze+Crackle
record3   sprsound        Normal, Adventitious (CAS, DAS, CAS & DAS), Poor Quality (one segment per recording)
record5   sprsound        Normal, CAS, DAS, CAS & DAS, Poor Quality
labels    manifest        ``dataset.classes`` (the manifest's label column)
========  ==============  =====================================================================================

The bit tasks are what datasets share: SPRSound events have bits through :data:`ICBHI_BITS` (crackles are the
discontinuous sounds, wheezes the continuous ones, rhonchi counted as wheezes as ICBHI's annotators did), and a
manifest has them when it names crackle/wheeze columns. A model trained on ICBHI's four classes is therefore
evaluated on SPRSound events, and models are trained on several datasets together, in those tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ls.types import FOUR_CLASS_NAMES, TWO_CLASS_NAMES

#: SPRSound event types in the challenge's class order (Normal first).
EVENT_TYPES: tuple[str, ...] = (
    "Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle", "Fine Crackle", "Wheeze+Crackle",
)  # fmt: skip
#: SPRSound record types in the challenge's class order (CAS: continuous, DAS: discontinuous adventitious).
RECORD_TYPES: tuple[str, ...] = ("Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality")
#: SPRSound event type -> ICBHI (crackle, wheeze) bits.
ICBHI_BITS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "Normal": (0, 0),
    "Rhonchi": (0, 1),
    "Wheeze": (0, 1),
    "Stridor": (0, 1),
    "Coarse Crackle": (1, 0),
    "Fine Crackle": (1, 0),
    "Wheeze+Crackle": (1, 1),
})  # fmt: skip


@dataclass(frozen=True)
class Task:
    """A classification task.

    Attributes:
        name: ``icbhi4``, ``event7``, ...
        classes: class names in id order, class 0 the normal class.
        bits: the classes come from the ``Crackles``/``Wheezes`` columns (4 classes: ``c + 2 w``; 2: ``c or w``);
            otherwise from the ``Label`` column through ``class_of``.
        class_of: label -> class id (label tasks).
        level: ``event``/``record`` for SPRSound (which table the task reads), ``segment`` otherwise.
    """

    name: str
    classes: tuple[str, ...]
    bits: bool = False
    class_of: Mapping[str, int] = field(default_factory=dict)
    level: str = "segment"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _label_task(name: str, level: str, classes: Sequence[str], class_of: Mapping[str, int]) -> Task:
    return Task(name, tuple(classes), False, MappingProxyType(dict(class_of)), level)


#: Every fixed task by name (``labels`` tasks are built from a manifest's class list: :func:`labels_task`).
TASKS: Mapping[str, Task] = MappingProxyType({
    "icbhi4": Task("icbhi4", FOUR_CLASS_NAMES, bits=True),
    "icbhi2": Task("icbhi2", TWO_CLASS_NAMES, bits=True),
    "event2": _label_task("event2", "event", ("Normal", "Adventitious"), {t: int(t != "Normal") for t in EVENT_TYPES}),
    "event7": _label_task("event7", "event", EVENT_TYPES, {t: i for i, t in enumerate(EVENT_TYPES)}),
    "record3": _label_task("record3", "record", ("Normal", "Adventitious", "Poor Quality"),
                           {"Normal": 0, "CAS": 1, "DAS": 1, "CAS & DAS": 1, "Poor Quality": 2}),
    "record5": _label_task("record5", "record", RECORD_TYPES, {t: i for i, t in enumerate(RECORD_TYPES)}),
})  # fmt: skip
LABELS = "labels"
#: The tasks each dataset kind can give (``combined``: what every part can give); readers registered with
#: ``ls.data.sources.register_reader`` add their kind.
DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "icbhi": ("icbhi4", "icbhi2"),
    "sprsound": ("icbhi4", "icbhi2", "event2", "event7", "record3", "record5"),
    "manifest": ("icbhi4", "icbhi2", LABELS),
    "combined": ("icbhi4", "icbhi2"),
}


def labels_task(classes: Sequence[str]) -> Task:
    """The task of a manifest's label column: ``classes`` in id order (class 0 the normal class)."""
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"dataset.classes must be two or more distinct names, class 0 the normal one; got {classes}")
    return _label_task(LABELS, "segment", classes, {c: i for i, c in enumerate(classes)})


def get_task(name: str, classes: Sequence[str] | None = None) -> Task:
    """The task of a name (``labels`` needs ``classes``)."""
    if name == LABELS:
        if not classes:
            raise ValueError("task 'labels' needs dataset.classes: the class names in id order, class 0 normal")
        return labels_task(classes)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join([*TASKS, LABELS])}")
    return TASKS[name]


__all__ = [
    "DATASET_TASKS",
    "EVENT_TYPES",
    "ICBHI_BITS",
    "LABELS",
    "RECORD_TYPES",
    "TASKS",
    "Task",
    "get_task",
    "labels_task",
]
