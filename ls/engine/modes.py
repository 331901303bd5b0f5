"""Output modes: how logits become class predictions, and the one function that decides a run's mode.

Three modes, named explicitly:

- ``multilabel``: two sigmoid outputs (crackle, wheeze); bits ``[p_c >= t_c, p_w >= t_w]`` give the 4-class
  composite prediction ``class = crackle + 2 * wheeze`` (0 normal, 1 crackle, 2 wheeze, 3 both). Its 2-class
  view (abnormal iff any bit) is the ``binary_*`` metrics.
- ``binary``: the dedicated normal-vs-abnormal model, one logit; abnormal iff ``sigmoid(z) >= t``.
- ``multiclass``: softmax over ``K`` logits; prediction = argmax.

"2-class" therefore means either a dedicated binary model (``binary``, or ``multiclass`` with 2 classes) or a
4-class model whose abnormal classes are merged at evaluation (the ``binary_*`` keys of the metrics).

The mode is a function of the data's task and the loss (:func:`resolve_output_mode`); the model's
``label_dim`` follows from it. Pure Python: ``ls.config`` resolves it when a config is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ls.types import FOUR_CLASS_NAMES, TWO_CLASS_NAMES

ModeKind = Literal["multilabel", "multiclass", "binary"]
MODE_KINDS: tuple[str, ...] = ("multilabel", "multiclass", "binary")


#: Loss names valid for each output mode (``ls.engine.losses`` implements them).
LOSSES: dict[str, tuple[str, ...]] = {
    "multilabel": ("bce", "focal", "asymmetric", "hierarchical", "composite"),
    "binary": ("bce", "focal", "asymmetric"),
    "multiclass": ("ce", "weighted_ce", "focal", "label_smoothing"),
}
_LOSS_ALIASES = {"cross_entropy": "ce", "default": "bce"}


def default_class_names(n_classes: int) -> tuple[str, ...]:
    """``normal, crackle, wheeze, both`` (4), ``normal, abnormal`` (2), else ``class0, class1, ...``."""
    return {4: FOUR_CLASS_NAMES, 2: TWO_CLASS_NAMES}.get(n_classes, tuple(f"class{k}" for k in range(n_classes)))


@dataclass(frozen=True)
class OutputMode:
    """How logits ``[B, label_dim]`` become predictions of ``n_classes`` evaluation classes (class 0 = normal)."""

    kind: ModeKind
    n_classes: int  # evaluation classes: 4 (multilabel), 2 (binary), K (multiclass)
    label_dim: int  # logits per cycle: 2, 1, K
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in MODE_KINDS:
            raise ValueError(f"unknown output mode {self.kind!r}; known: {', '.join(MODE_KINDS)}")
        expected = {"multilabel": (4, 2), "binary": (2, 1)}.get(self.kind)
        if expected is not None and (self.n_classes, self.label_dim) != expected:
            raise ValueError(
                f"{self.kind} mode has n_classes, label_dim = {expected}, got {(self.n_classes, self.label_dim)}"
            )
        if self.kind == "multiclass" and (self.n_classes != self.label_dim or self.n_classes < 2):
            raise ValueError(
                f"multiclass mode needs label_dim == n_classes >= 2, got {self.label_dim}, {self.n_classes}"
            )
        if not self.class_names:
            object.__setattr__(self, "class_names", default_class_names(self.n_classes))
        elif len(self.class_names) != self.n_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.n_classes} classes: {self.class_names}")

    @property
    def uses_thresholds(self) -> bool:
        """Sigmoid outputs are thresholded; softmax outputs are not."""
        return self.kind != "multiclass"

    @property
    def threshold_names(self) -> tuple[str, ...]:
        """Names of the decision thresholds, also their metric keys."""
        return {"multilabel": ("threshold_crackle", "threshold_wheeze"), "binary": ("threshold",)}.get(
            self.kind, ()
        )

    @property
    def decision_rule(self) -> str:
        """How ``pred_class`` follows from the probabilities, in one sentence (CSV/JSON headers, docs)."""
        if self.kind == "multilabel":
            return ("crackle if p_crackle >= threshold_crackle, wheeze if p_wheeze >= threshold_wheeze; "
                    "both if both, normal if neither")
        if self.kind == "binary":
            return f"{self.class_names[1]} if p_{self.class_names[1]} >= threshold, else {self.class_names[0]}"
        return "the class with the highest probability"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_classes": self.n_classes, "label_dim": self.label_dim,
                "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputMode:
        return cls(str(d["kind"]), int(d["n_classes"]), int(d["label_dim"]),  # type: ignore[arg-type]
                   tuple(d.get("class_names") or ()))


def canonical_loss(name: str) -> str:
    key = name.strip().lower()
    return _LOSS_ALIASES.get(key, key)


def check_loss_name(name: str, mode: OutputMode) -> str:
    """The canonical loss name if ``name`` is valid for ``mode``; otherwise a ValueError saying what is."""
    key = canonical_loss(name)
    valid = LOSSES[mode.kind]
    if key in valid:
        return key
    fits = [kind for kind, names in LOSSES.items() if key in names]
    if fits:
        raise ValueError(
            f"training.loss {name!r} needs {' or '.join(fits)} outputs, but the model has {mode.kind} outputs; "
            f"for {mode.kind} use one of: {', '.join(valid)}"
        )
    known = sorted({n for names in LOSSES.values() for n in names})
    raise ValueError(
        f"unknown training.loss {name!r}; known losses: {', '.join(known)} "
        f"({mode.kind} outputs take: {', '.join(valid)})"
    )


def resolve_output_mode(n_classes: int, multi_label: bool, loss: str, label_dim: int | None = None,
                        class_names: Sequence[str] | None = None) -> OutputMode:
    """The output mode of a run: from the task (``n_classes``, ``multi_label``) and ``training.loss``.

    - ``multi_label``: ``multilabel`` (4 classes from two bits);
    - otherwise a sigmoid-only loss (``bce``, ``asymmetric``; ``focal`` too) on 2 classes gives ``binary``,
      a softmax loss (``ce``, ``weighted_ce``, ``label_smoothing``) gives ``multiclass``;
    - ``label_dim`` (the reference's model key), when given, must agree; it decides between binary and
      2-class softmax for ``focal``.

    Raises ValueError naming the inconsistent values and what would be valid.
    """
    loss_key = canonical_loss(loss)
    if multi_label:
        if n_classes != 4:
            # docs/fixes.md 11.2-2: the reference turned every abnormal 2-class label into 'crackle'.
            raise ValueError(f"dataset.multi_label true needs dataset.n_cls 4 (crackle/wheeze bits), got {n_classes}")
        mode = OutputMode("multilabel", 4, 2, tuple(class_names or ()))
    elif label_dim is not None:
        if label_dim == 1 and n_classes == 2:
            mode = OutputMode("binary", 2, 1, tuple(class_names or ()))
        elif label_dim == n_classes:
            mode = OutputMode("multiclass", n_classes, n_classes, tuple(class_names or ()))
        else:
            raise ValueError(
                f"label_dim {label_dim} does not fit {n_classes} classes with multi_label false (valid: 1 for a "
                f"binary sigmoid model when n_cls is 2, or {n_classes} for softmax); leave label_dim out: it "
                f"follows from dataset.n_cls, dataset.multi_label and training.loss"
            )
    elif n_classes == 2 and loss_key in LOSSES["binary"]:
        mode = OutputMode("binary", 2, 1, tuple(class_names or ()))
    else:
        mode = OutputMode("multiclass", n_classes, n_classes, tuple(class_names or ()))
    check_loss_name(loss, mode)
    return mode


__all__ = [
    "LOSSES",
    "MODE_KINDS",
    "OutputMode",
    "canonical_loss",
    "check_loss_name",
    "default_class_names",
    "resolve_output_mode",
]
