"""Metadata encoder: segment-table columns -> the model's ``meta``: one id tensor per categorical factor and
the continuous features ``cont``.

Which columns are metadata is declared by the dataset (:class:`ls.data.schema.MetadataSchema`; ICBHI:
``device`` from ``Device``, ``site`` from ``AuscLoc``; age, BMI, duration). Everything is fitted on the
training split only (the reference fitted vocabularies and imputation medians on train + test,
docs/fixes.md 11.1-3). Id 0 (``ls.types.UNKNOWN_ID``) is reserved in every vocabulary for values never seen in
training, so new devices can be handled at prediction time (docs/fixes.md 11.4-5).

Continuous features (``dataset.cont_features``, in that order) are imputed with training medians where
missing (cycle-weighted, as the reference), then z-scored with the training mean and population std
(+1e-6). ICBHI's BMI is the adult BMI if present, else the child BMI ``CW / (CH/100)^2`` when both are present
and it lies in ``dataset.child_bmi_range``; its imputation median is the median of the adult BMIs unless most
are missing (then of the child BMIs), the reference's rule. With ``dataset.use_missing_flags`` a 0/1 flag
``<feature>_missing`` per imputable feature follows the z-scored features (the reference computed but never
emitted them, docs/fixes.md 11.2-3).

The fitted encoder also carries the feature statistics of ``audio.mel_norm: dataset`` (``feature_stats``), so a
checkpoint's encoder reproduces the whole input pipeline of its training run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ls.data.schema import DURATION, ICBHI_SCHEMA, MetadataSchema
from ls.types import CONT_KEY, UNKNOWN_ID, UNKNOWN_TOKEN, MetadataSpec
from ls.utils.errors import UnknownNameError

log = logging.getLogger(__name__)

#: Fallback imputation values when a training median does not exist (reference: age 50, BMI 25).
FALLBACK = {"age": 50.0, "bmi": 25.0}
_STATE_VERSION = 2


def child_bmi(weight_kg: np.ndarray, height_cm: np.ndarray, plausible: tuple[float, float]) -> np.ndarray:
    """``CW / (CH/100)^2`` where both are present, CH > 0 and the value is plausible; NaN elsewhere."""
    weight_kg = np.asarray(weight_kg, dtype=np.float64)
    height_cm = np.asarray(height_cm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bmi = weight_kg / np.square(height_cm / 100.0)
    ok = np.isfinite(bmi) & (height_cm > 0) & (bmi >= plausible[0]) & (bmi <= plausible[1])
    return np.where(ok, bmi, np.nan)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table.columns:
        raise UnknownNameError(f"segment table has no column {name!r} (columns: {', '.join(map(str, table.columns))})")
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)


class MetadataEncoder:
    """Maps segment-table rows to ``{<factor>: int64 [N]}`` ids and ``cont [N, C]`` (float32).

    Args:
        schema: the dataset's metadata (factors and continuous features, and their columns).
        cont_features: the continuous features to use, in ``cont`` column order (a subset of the schema's).
        use_missing_flags: append ``<feature>_missing`` flags of the imputable features to ``cont``.
        child_bmi_range: plausible child BMI bounds ``(low, high)`` (schemas with ``child_bmi``).
    """

    def __init__(
        self,
        schema: MetadataSchema = ICBHI_SCHEMA,
        cont_features: Sequence[str] | None = None,
        use_missing_flags: bool = False,
        child_bmi_range: Sequence[float] = (10.0, 60.0),
    ) -> None:
        cont_features = tuple(schema.continuous) if cont_features is None else tuple(cont_features)
        unknown = [f for f in cont_features if f not in schema.continuous]
        if unknown or len(set(cont_features)) != len(cont_features):
            raise ValueError(
                f"dataset.cont_features must be distinct names among {tuple(schema.continuous)}, "
                f"got {list(cont_features)}"
            )
        if len(child_bmi_range) != 2 or not 0 < child_bmi_range[0] < child_bmi_range[1]:
            raise ValueError(
                f"dataset.child_bmi_range must be [low, high] with 0 < low < high, got {list(child_bmi_range)}"
            )
        self.schema = schema
        self.cont_features = cont_features
        self.use_missing_flags = bool(use_missing_flags)
        self.child_bmi_range = (float(child_bmi_range[0]), float(child_bmi_range[1]))
        self.vocabularies: dict[str, tuple[str, ...]] | None = None
        self.impute: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        #: ``{"mean", "std"}`` of the raw training log-mel features (``audio.mel_norm: dataset``), else None.
        self.feature_stats: dict[str, float] | None = None
        #: ``{feature: (min, max)}`` of the raw training values of each continuous feature (``duration``
        #: included), so prediction can say when an input lies outside what the model saw. Empty for states
        #: written before ranges were kept.
        self.ranges: dict[str, tuple[float, float]] = {}

    @classmethod
    def from_config(cls, dataset_cfg: Any, schema: MetadataSchema = ICBHI_SCHEMA) -> MetadataEncoder:
        return cls(schema, dataset_cfg.cont_features, dataset_cfg.use_missing_flags, dataset_cfg.child_bmi_range)

    # ------------------------------------------------------------------ raw values
    def _adult_bmi(self, table: pd.DataFrame) -> np.ndarray:
        return _column(table, self.schema.continuous["bmi"])

    def _child_bmi(self, table: pd.DataFrame) -> np.ndarray:
        return child_bmi(_column(table, "CW"), _column(table, "CH"), self.child_bmi_range)

    def _raw(self, table: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Un-imputed raw continuous features of the schema and their missing masks."""
        raw: dict[str, np.ndarray] = {}
        for name, column in self.schema.continuous.items():
            if column is None:  # the segment's duration
                raw[name] = np.round(_column(table, "CycleEnd") - _column(table, "CycleStart"), 3)
            elif name == "bmi" and self.schema.child_bmi:
                adult = self._adult_bmi(table)
                raw[name] = np.where(np.isfinite(adult), adult, self._child_bmi(table))
            else:
                raw[name] = _column(table, column)
        return raw, {k: ~np.isfinite(v) for k, v in raw.items()}

    def _median(self, name: str, train_table: pd.DataFrame, raw: np.ndarray) -> float:
        if name == "bmi" and self.schema.child_bmi:
            adult = self._adult_bmi(train_table)
            if np.isfinite(adult).mean() >= 0.5:
                return float(np.nanmedian(adult))
            # the reference's rule: mostly children -> median of the computable child BMIs
            child = self._child_bmi(train_table)
            return float(np.nanmedian(child)) if np.isfinite(child).any() else math.nan
        return float(np.nanmedian(raw)) if np.isfinite(raw).any() else math.nan

    # ------------------------------------------------------------------ fit / transform
    def fit(self, train_table: pd.DataFrame) -> MetadataEncoder:
        """Fit vocabularies, imputation medians and z-score statistics on the training rows only."""
        if len(train_table) == 0:
            raise ValueError("cannot fit the metadata encoder on an empty training table")
        self.vocabularies = {
            name: (UNKNOWN_TOKEN, *sorted(map(str, pd.unique(train_table[column].dropna()))))
            for name, column in self.schema.factors.items()
        }
        raw, missing = self._raw(train_table)
        self.impute = {}
        for name in self.schema.continuous:
            if name == DURATION:
                continue
            median = self._median(name, train_table, raw[name])
            self.impute[name] = median if math.isfinite(median) else FALLBACK.get(name, 0.0)
        if DURATION in raw and missing[DURATION].any():
            bad = int(missing[DURATION].sum())
            raise ValueError(f"{bad} training segment(s) have a non-finite duration (CycleStart/CycleEnd)")
        for name in self.cont_features:
            x = self._imputed(name, raw, missing)
            self.mean[name] = float(x.mean())
            self.std[name] = float(x.std()) + 1e-6  # population std, as the reference
        self.ranges = {name: (float(np.nanmin(v)), float(np.nanmax(v)))
                       for name, v in raw.items() if np.isfinite(v).any()}
        return self

    def _imputed(self, name: str, raw: dict, missing: dict) -> np.ndarray:
        return np.where(missing[name], self.impute.get(name, math.nan), raw[name])

    def _check_fitted(self) -> None:
        if self.vocabularies is None:
            raise RuntimeError("MetadataEncoder is not fitted: call fit(train_table) or from_state_dict(...)")

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(self.schema.factors)

    @property
    def cont_names(self) -> tuple[str, ...]:
        flags = tuple(f"{n}_missing" for n in self.cont_features if n != DURATION)
        return self.cont_features + (flags if self.use_missing_flags else ())

    @property
    def spec(self) -> MetadataSpec:
        self._check_fitted()
        return MetadataSpec.build(self.vocabularies, self.cont_names)  # type: ignore[arg-type]

    def vocabulary(self, factor: str) -> tuple[str, ...]:
        self._check_fitted()
        return self.vocabularies[factor]  # type: ignore[index]

    def _ids(self, values: pd.Series, vocab: tuple[str, ...], what: str) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(vocab) if i != UNKNOWN_ID}
        absent = values.isna().to_numpy()
        ids = np.array([lookup.get(str(v), UNKNOWN_ID) for v in values], dtype=np.int64)
        ids[absent] = UNKNOWN_ID
        n_unknown = int(((ids == UNKNOWN_ID) & ~absent).sum())
        if n_unknown:
            seen = sorted({str(v) for v, a in zip(values, absent) if not a and str(v) not in lookup})
            log.warning(
                "%d row(s) have a %s never seen in training %s: mapped to id %d (%s)",
                n_unknown, what, seen[:5], UNKNOWN_ID, UNKNOWN_TOKEN,
            )  # fmt: skip
        return ids

    def _columns_of(self, table: pd.DataFrame, schema: MetadataSchema) -> pd.DataFrame:
        """``table`` of a dataset declaring ``schema``, seen through this encoder's schema: each factor and
        feature taken from the column ``schema`` gives it under the same name, missing where it has none."""
        view = pd.DataFrame({"CycleStart": table["CycleStart"], "CycleEnd": table["CycleEnd"]}, index=table.index)
        absent = []
        for name, column in self.schema.factors.items():
            source = schema.factors.get(name)
            view[column] = table[source].to_numpy(dtype=object) if source else None
            absent += [] if source else [name]
        for name, column in self.schema.continuous.items():
            if column is None:
                continue
            source = schema.continuous.get(name)
            view[column] = pd.to_numeric(table[source], errors="coerce").to_numpy() if source else np.nan
            absent += [] if source else [name]
        if self.schema.child_bmi:
            for column in ("CW", "CH"):
                view[column] = table[column].to_numpy() if schema.child_bmi and column in table else np.nan
        if absent:
            log.info("the data has no %s: unknown id / imputed with the training median", ", ".join(absent))
        return view

    def transform(self, table: pd.DataFrame, schema: MetadataSchema | None = None) -> dict[str, np.ndarray]:
        """Encode rows: ``{<factor>: int64 [N] ...}`` and ``cont`` float32 ``[N, C]``.

        ``schema``: the metadata schema of ``table``'s dataset when it is not the one this encoder was fitted on
        (a model evaluated on another dataset): factors and features are matched by name; those the data lacks
        become the unknown id / the training median.
        """
        self._check_fitted()
        if schema is not None and schema != self.schema:
            table = self._columns_of(table, schema)
        raw, missing = self._raw(table)
        cols = [(self._imputed(n, raw, missing) - self.mean[n]) / self.std[n] for n in self.cont_features]
        if self.use_missing_flags:
            cols += [missing[n].astype(np.float64) for n in self.cont_features if n != DURATION]
        cont = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(table), 0), np.float32)
        bad = ~np.isfinite(cont).all(axis=1)
        if bad.any():  # e.g. a cycle without a valid duration: the reference zeroes the whole vector too
            log.warning("%d row(s) have non-finite continuous metadata; their 'cont' is set to zeros", bad.sum())
            cont[bad] = 0.0
        out = {name: self._ids(table[column], self.vocabularies[name], name)  # type: ignore[index]
               for name, column in self.schema.factors.items()}
        out[CONT_KEY] = cont
        return out

    def encode_values(self, *, duration: float | Sequence[float], **values: Any) -> dict[str, np.ndarray]:
        """Encode the segments of one new recording as numpy arrays: ``{<factor>: int64 [N], "cont": float32
        [N, C]}`` (torch-free: the ONNX runtime uses it too).

        ``duration``: one number or one per segment (N segments). ``values``: the recording's metadata by name:
        each factor (ICBHI: ``device``, ``site``) and continuous feature (``age``, ``bmi``); missing ones (absent
        or None) are imputed (factors: the unknown id, with a warning). ICBHI also takes ``child_weight`` /
        ``child_height``.
        """
        self._check_fitted()
        durations = np.atleast_1d(np.asarray(duration, dtype=np.float64))
        if durations.ndim != 1 or durations.size == 0:
            raise ValueError(f"duration must be a number or a non-empty sequence of numbers, got {duration!r}")
        known = self.metadata_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown metadata {unknown}; this encoder takes {', '.join(sorted(known))}")
        n = durations.size
        rows: dict[str, Any] = {"CycleStart": np.zeros(n), "CycleEnd": durations}
        for name, column in known.items():
            value = values.get(name)
            numeric = name not in self.schema.factors
            rows[column] = [(math.nan if value is None else float(value)) if numeric else value] * n
        return self.transform(pd.DataFrame(rows))

    def metadata_names(self) -> dict[str, str]:
        """``{name: table column}`` of every value :meth:`encode_values` takes: the factors, the continuous
        features read from a column and, for ICBHI, ``child_weight`` / ``child_height``."""
        extra = {"child_weight": "CW", "child_height": "CH"} if self.schema.child_bmi else {}
        return {**self.schema.factors, **{k: c for k, c in self.schema.continuous.items() if c}, **extra}

    def encode_one(self, *, duration: float | Sequence[float], **values: Any) -> dict[str, Any]:
        """:meth:`encode_values` as torch tensors, ready to pass as ``meta`` to a model:
        ``{<factor>: [N], "cont": [N, C]}``."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.encode_values(duration=duration, **values).items()}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Plain Python types only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        self._check_fitted()
        return {
            "version": _STATE_VERSION,
            "schema": self.schema.to_dict(),
            "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},  # type: ignore[union-attr]
            "cont_features": list(self.cont_features),
            "use_missing_flags": self.use_missing_flags,
            "child_bmi_range": list(self.child_bmi_range),
            "impute": dict(self.impute),
            "mean": dict(self.mean),
            "std": dict(self.std),
            "feature_stats": dict(self.feature_stats) if self.feature_stats else None,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping, feature_stats: Mapping | None = None) -> MetadataEncoder:
        """Inverse of :meth:`state_dict`; also reads ls 0.1 (version 1) states, which are ICBHI's
        (their feature statistics lived in the config: pass them as ``feature_stats``)."""
        try:
            if state.get("version", 1) == 1:
                schema = ICBHI_SCHEMA
                vocabularies = {"device": state["device_names"], "site": state["site_names"]}
            else:
                schema = MetadataSchema.from_dict(state["schema"])
                vocabularies = state["vocabularies"]
            enc = cls(schema, state["cont_features"], state["use_missing_flags"], state["child_bmi_range"])
            enc.vocabularies = {k: tuple(v) for k, v in vocabularies.items()}
            enc.impute = {k: float(v) for k, v in state["impute"].items()}
            enc.mean = {k: float(v) for k, v in state["mean"].items()}
            enc.std = {k: float(v) for k, v in state["std"].items()}
            stats = feature_stats or state.get("feature_stats")
            enc.feature_stats = {k: float(v) for k, v in stats.items()} if stats else None
            enc.ranges = {k: (float(v[0]), float(v[1])) for k, v in (state.get("ranges") or {}).items()}
        except KeyError as exc:
            raise ValueError(f"metadata encoder state lacks key {exc}") from exc
        bad = [k for k, v in enc.vocabularies.items() if not v or v[UNKNOWN_ID] != UNKNOWN_TOKEN]
        if bad:
            raise ValueError(f"metadata encoder state: vocabulary index {UNKNOWN_ID} of {bad} must be {UNKNOWN_TOKEN!r}")
        return enc

    def __repr__(self) -> str:
        if self.vocabularies is None:
            return "MetadataEncoder(unfitted)"
        factors = ", ".join(f"{k}={list(v[1:])}" for k, v in self.vocabularies.items())
        return f"MetadataEncoder({factors}, cont={list(self.cont_names)})"
