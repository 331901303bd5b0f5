"""Metadata encoder: cycle-table columns -> model inputs ``device``, ``site`` (vocabulary ids) and ``cont``.

Fitted on the training split only (the reference fitted vocabularies and imputation medians on train + test,
defect 11.1-3). Id 0 (``ls.types.UNKNOWN_ID``) is reserved in both vocabularies for values never seen in
training, so new devices can be handled at prediction time (defect 11.4-5).

Continuous features (``dataset.cont_features``, in that order): ``age`` (years), ``bmi`` (kg/m^2) and ``duration``
(s, ``round(end - start, 3)``). BMI per row: the adult BMI if present, else the child BMI ``CW / (CH/100)^2``
when both are present and it lies in ``dataset.child_bmi_range`` (10..60), else imputed. Missing age/BMI are
imputed with training medians (cycle-weighted, as the reference), then every feature is z-scored with the
training mean and population std (+1e-6). With ``dataset.use_missing_flags`` the 0/1 flags ``age_missing`` and
``bmi_missing`` follow the z-scored features (the reference computed but never emitted them, defect 11.2-3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ls.types import UNKNOWN_ID, UNKNOWN_TOKEN, MetadataSpec

log = logging.getLogger(__name__)

CONT_FEATURES = ("age", "bmi", "duration")
#: Fallback imputation values when a training median does not exist (reference: age 50, BMI 25).
FALLBACK = {"age": 50.0, "bmi": 25.0}
_STATE_VERSION = 1


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
        raise KeyError(f"cycle table has no column {name!r} (columns: {', '.join(map(str, table.columns))})")
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)


class MetadataEncoder:
    """Maps cycle-table rows to ``device [N]``, ``site [N]`` (int64 ids) and ``cont [N, C]`` (float32).

    Args:
        cont_features: subset of ``("age", "bmi", "duration")`` in the order they appear in ``cont``.
        use_missing_flags: append ``age_missing`` / ``bmi_missing`` (for the selected features) to ``cont``.
        child_bmi_range: plausible child BMI bounds ``(low, high)``.
    """

    def __init__(
        self,
        cont_features: Sequence[str] = CONT_FEATURES,
        use_missing_flags: bool = False,
        child_bmi_range: Sequence[float] = (10.0, 60.0),
    ) -> None:
        unknown = [f for f in cont_features if f not in CONT_FEATURES]
        if unknown or len(set(cont_features)) != len(cont_features):
            raise ValueError(
                f"dataset.cont_features must be distinct names among {CONT_FEATURES}, "
                f"got {list(cont_features)}"
            )
        if len(child_bmi_range) != 2 or not 0 < child_bmi_range[0] < child_bmi_range[1]:
            raise ValueError(
                f"dataset.child_bmi_range must be [low, high] with 0 < low < high, "
                f"got {list(child_bmi_range)}"
            )
        self.cont_features = tuple(cont_features)
        self.use_missing_flags = bool(use_missing_flags)
        self.child_bmi_range = (float(child_bmi_range[0]), float(child_bmi_range[1]))
        self.device_names: tuple[str, ...] | None = None
        self.site_names: tuple[str, ...] | None = None
        self.impute: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}

    @classmethod
    def from_config(cls, dataset_cfg) -> MetadataEncoder:
        return cls(dataset_cfg.cont_features, dataset_cfg.use_missing_flags, dataset_cfg.child_bmi_range)

    # ------------------------------------------------------------------ raw values
    def _raw(self, table: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Un-imputed raw features and their missing masks."""
        age = _column(table, "Age")
        bmi = _column(table, "BMI")
        from_child = child_bmi(_column(table, "CW"), _column(table, "CH"), self.child_bmi_range)
        bmi = np.where(np.isfinite(bmi), bmi, from_child)
        duration = np.round(_column(table, "CycleEnd") - _column(table, "CycleStart"), 3)
        raw = {"age": age, "bmi": bmi, "duration": duration}
        return raw, {k: ~np.isfinite(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ fit / transform
    def fit(self, train_table: pd.DataFrame) -> MetadataEncoder:
        """Fit vocabularies, imputation medians and z-score statistics on the training rows only."""
        if len(train_table) == 0:
            raise ValueError("cannot fit the metadata encoder on an empty training table")
        self.device_names = (UNKNOWN_TOKEN, *sorted(map(str, pd.unique(train_table["Device"].dropna()))))
        self.site_names = (UNKNOWN_TOKEN, *sorted(map(str, pd.unique(train_table["AuscLoc"].dropna()))))
        raw, missing = self._raw(train_table)
        age_median = np.nanmedian(raw["age"]) if not missing["age"].all() else math.nan
        adult = _column(train_table, "BMI")
        if np.isfinite(adult).mean() >= 0.5:
            bmi_median = np.nanmedian(adult)
        else:  # the reference's rule: mostly children -> median of the computable child BMIs
            child = child_bmi(_column(train_table, "CW"), _column(train_table, "CH"), self.child_bmi_range)
            bmi_median = np.nanmedian(child) if np.isfinite(child).any() else math.nan
        self.impute = {
            "age": float(age_median) if math.isfinite(age_median) else FALLBACK["age"],
            "bmi": float(bmi_median) if math.isfinite(bmi_median) else FALLBACK["bmi"],
        }
        if missing["duration"].any():
            bad = int(missing["duration"].sum())
            raise ValueError(f"{bad} training cycle(s) have a non-finite duration (CycleStart/CycleEnd)")
        for name in self.cont_features:
            x = self._imputed(name, raw, missing)
            self.mean[name] = float(x.mean())
            self.std[name] = float(x.std()) + 1e-6  # population std, as the reference
        return self

    def _imputed(self, name: str, raw: dict, missing: dict) -> np.ndarray:
        x = raw[name]
        return np.where(missing[name], self.impute.get(name, math.nan), x)

    def _check_fitted(self) -> None:
        if self.device_names is None:
            raise RuntimeError("MetadataEncoder is not fitted: call fit(train_table) or from_state_dict(...)")

    @property
    def cont_names(self) -> tuple[str, ...]:
        flags = tuple(f"{n}_missing" for n in ("age", "bmi") if n in self.cont_features)
        return self.cont_features + (flags if self.use_missing_flags else ())

    @property
    def spec(self) -> MetadataSpec:
        self._check_fitted()
        return MetadataSpec(self.device_names, self.site_names, self.cont_names)

    def _ids(self, values: pd.Series, vocab: tuple[str, ...], what: str) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(vocab) if i != UNKNOWN_ID}
        ids = np.array([lookup.get(str(v), UNKNOWN_ID) for v in values], dtype=np.int64)
        n_unknown = int((ids == UNKNOWN_ID).sum())
        if n_unknown:
            seen = sorted({str(v) for v in values if str(v) not in lookup})
            log.warning(
                "%d row(s) have a %s never seen in training %s: mapped to id %d (%s)",
                n_unknown,
                what,
                seen[:5],
                UNKNOWN_ID,
                UNKNOWN_TOKEN,
            )
        return ids

    def transform(self, table: pd.DataFrame) -> dict[str, np.ndarray]:
        """Encode rows: ``device [N]`` int64, ``site [N]`` int64, ``cont [N, C]`` float32."""
        self._check_fitted()
        raw, missing = self._raw(table)
        cols = [(self._imputed(n, raw, missing) - self.mean[n]) / self.std[n] for n in self.cont_features]
        if self.use_missing_flags:
            cols += [missing[n].astype(np.float64) for n in ("age", "bmi") if n in self.cont_features]
        cont = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(table), 0), np.float32)
        bad = ~np.isfinite(cont).all(axis=1)
        if bad.any():  # e.g. a cycle without a valid duration: the reference zeroes the whole vector too
            log.warning(
                "%d row(s) have non-finite continuous metadata; their 'cont' is set to zeros", bad.sum()
            )
            cont[bad] = 0.0
        return {
            "device": self._ids(table["Device"], self.device_names, "device"),
            "site": self._ids(table["AuscLoc"], self.site_names, "site"),
            "cont": cont,
        }

    def encode_one(
        self,
        *,
        device: str,
        site: str,
        duration: float | Sequence[float],
        age: float | None = None,
        bmi: float | None = None,
        child_weight: float | None = None,
        child_height: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode the cycles of one new recording: ``device [N]``, ``site [N]`` int64 and ``cont [N, C]``
        float32 (N = number of durations given), ready to pass as ``meta`` to a model. Unknown device/site ->
        id 0 with one warning per call; missing age/BMI are imputed with the training medians."""
        durations = np.atleast_1d(np.asarray(duration, dtype=np.float64))
        if durations.ndim != 1 or durations.size == 0:
            raise ValueError(f"duration must be a number or a non-empty sequence of numbers, got {duration!r}")
        n = durations.size
        nan = math.nan
        rows = pd.DataFrame(
            {
                "Device": [device] * n,
                "AuscLoc": [site] * n,
                "CycleStart": np.zeros(n),
                "CycleEnd": durations,
                "Age": [nan if age is None else age] * n,
                "BMI": [nan if bmi is None else bmi] * n,
                "CW": [nan if child_weight is None else child_weight] * n,
                "CH": [nan if child_height is None else child_height] * n,
            }
        )
        enc = self.transform(rows)
        return {k: torch.from_numpy(v) for k, v in enc.items()}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Plain Python types only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        self._check_fitted()
        return {
            "version": _STATE_VERSION,
            "device_names": list(self.device_names),
            "site_names": list(self.site_names),
            "cont_features": list(self.cont_features),
            "use_missing_flags": self.use_missing_flags,
            "child_bmi_range": list(self.child_bmi_range),
            "impute": dict(self.impute),
            "mean": dict(self.mean),
            "std": dict(self.std),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> MetadataEncoder:
        try:
            enc = cls(state["cont_features"], state["use_missing_flags"], state["child_bmi_range"])
            enc.device_names = tuple(state["device_names"])
            enc.site_names = tuple(state["site_names"])
            enc.impute = {k: float(v) for k, v in state["impute"].items()}
            enc.mean = {k: float(v) for k, v in state["mean"].items()}
            enc.std = {k: float(v) for k, v in state["std"].items()}
        except KeyError as exc:
            raise ValueError(f"metadata encoder state lacks key {exc}") from exc
        if enc.device_names[UNKNOWN_ID] != UNKNOWN_TOKEN or enc.site_names[UNKNOWN_ID] != UNKNOWN_TOKEN:
            raise ValueError(
                f"metadata encoder state: vocabulary index {UNKNOWN_ID} must be {UNKNOWN_TOKEN!r}"
            )
        return enc

    def __repr__(self) -> str:
        if self.device_names is None:
            return "MetadataEncoder(unfitted)"
        return (
            f"MetadataEncoder(devices={list(self.device_names[1:])}, sites={list(self.site_names[1:])}, "
            f"cont={list(self.cont_names)})"
        )
