"""Train / validation / test assignment of the cycles of a cycle table.

:func:`assign_splits` first separates test from train by ``dataset.split_strategy``:

- ``official``: the dataset's own split, the table's ``Split`` column: ``train`` rows train, ``val`` rows (a
  manifest may have them) validate, the test splits (``dataset.test_split``; by default every split named
  ``test...``: ICBHI's ``test``, SPRSound's ``test_inter`` and ``test_intra``) test, other rows are excluded.
  ICBHI's is the challenge's 60/40 split file. It is not patient-disjoint (ICBHI: patients 156 and 218 are in
  both; SPRSound's intra-subject test by design; a warning names them); with
  ``dataset.patient_disjoint_official`` their *training* recordings are excluded instead, so the test set stays
  the official one. Recordings the split file does not list (``Split == "unknown"``) are excluded (counted
  warning; the reference dropped them silently).
- ``foldwise``: cycles of patients whose fold equals ``dataset.test_fold`` are test, the rest train (patients
  without a fold go to train, as in the reference, with a warning). Folds come from ``dataset.fold_file`` when
  set, else from the table's ``Fold`` column, else from ``patient_list_foldwise.txt`` in the data folder.
- ``random``: a seeded (``dataset.split_seed``) draw of ``dataset.random_test_fraction`` of the *patients* as
  test. The reference shuffled recordings, which put the same patient in train and test (defect 11.1-4).

Then a validation split is carved from the training patients (:func:`carve_validation`): patient-disjoint from
train and test, ``dataset.val_fraction`` of the eligible training patients, seeded by ``dataset.val_seed`` and
stratified so that it holds every class when possible. The reference selected models on the test set
(defect 11.1-1); ``val_fraction = 0`` reproduces that setting (no validation split).

The result is a Series of ``"train" | "val" | "test" | "excluded"`` indexed like the table; ``"excluded"``
rows belong to no split and must be left out by the dataset builder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ls.data.icbhi import NO_FOLD, UNKNOWN_SPLIT, find_helper_file, read_fold_file
from ls.data.labels import four_class_from_bits

log = logging.getLogger(__name__)

TRAIN, VAL, TEST, EXCLUDED = "train", "val", "test", "excluded"
STRATEGIES = ("official", "foldwise", "random")
_N_DRAWS = 256  # candidate validation draws scored by class coverage and balance
_KFOLD_ATTEMPTS = 50  # reseeded K-fold attempts until every validation fold holds every class


def check_split_config(cfg: Any) -> None:
    """Validate the split fields of a ``DatasetConfig`` (raise ValueError naming the key)."""
    if cfg.split_strategy not in STRATEGIES:
        raise ValueError(
            f"dataset.split_strategy must be one of {', '.join(STRATEGIES)}, got {cfg.split_strategy!r}"
        )
    if not 0.0 < cfg.random_test_fraction < 1.0:
        raise ValueError(f"dataset.random_test_fraction must be in (0, 1), got {cfg.random_test_fraction}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction must be in [0, 1), got {cfg.val_fraction}")


def _class_ids(table: pd.DataFrame, labels: np.ndarray | None) -> np.ndarray:
    """Per-row class ids for stratification: given, or ICBHI's 4 classes from the crackle/wheeze bits."""
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return four_class_from_bits(table["Crackles"].to_numpy(), table["Wheezes"].to_numpy())


def test_split_names(table: pd.DataFrame, cfg: Any) -> set[str]:
    """The dataset's own split values that form the test set: ``dataset.test_split``, else every value that
    starts with ``test`` (ICBHI ``test``; SPRSound ``test_inter`` and ``test_intra``)."""
    present = set(map(str, pd.unique(table["Split"])))
    chosen = getattr(cfg, "test_split", None)
    if chosen:
        unknown = sorted(set(chosen) - present)
        if unknown:
            raise ValueError(f"dataset.test_split names {unknown}, which the data does not have (its splits: "
                             f"{', '.join(sorted(present))})")
        return set(chosen)
    return {s for s in present if s.startswith(TEST)}


def _official(table: pd.DataFrame, cfg: Any) -> pd.Series:
    """The dataset's own split: its ``train`` rows train, its ``val`` rows validate (a manifest may have them),
    its test splits test; rows of any other split are excluded."""
    raw = table["Split"].astype(str)
    tests = test_split_names(table, cfg)
    split = pd.Series(EXCLUDED, index=table.index, dtype=object)
    split[(raw == TRAIN).to_numpy()] = TRAIN
    split[(raw == VAL).to_numpy()] = VAL
    split[raw.isin(tests).to_numpy()] = TEST
    unknown = (raw == UNKNOWN_SPLIT).to_numpy()
    if unknown.any():
        log.warning(
            "official split: %d cycle(s) of %d recording(s) are not in the split file and are excluded",
            int(unknown.sum()), table.loc[unknown, "Filename"].nunique(),
        )  # fmt: skip
    other = sorted(set(raw[(split == EXCLUDED).to_numpy() & ~unknown]))
    if other:
        log.info("official split: rows of split(s) %s are not used (dataset.test_split: %s)", other, sorted(tests))
    train_pids = set(table.loc[(split == TRAIN).to_numpy(), "PID"])
    shared = sorted(train_pids & set(table.loc[(split == TEST).to_numpy(), "PID"]), key=str)
    if shared:
        named = ", ".join(map(str, shared[:8])) + (f" and {len(shared) - 8} more" if len(shared) > 8 else "")
        if getattr(cfg, "patient_disjoint_official", False):
            drop = (split == TRAIN).to_numpy() & table["PID"].isin(shared).to_numpy()
            split[drop] = EXCLUDED
            log.warning(
                "official split: patient(s) %s are in train and test; patient_disjoint_official=true "
                "excludes "
                "their %d training cycle(s)", named, int(drop.sum()),
            )  # fmt: skip
        else:
            log.warning(
                "official split is not patient-disjoint: patient(s) %s have recordings in both train and "
                "test (kept, as in the paper; set dataset.patient_disjoint_official=true to exclude their "
                "training recordings)", named,
            )  # fmt: skip
    return split


def _patient_folds(table: pd.DataFrame, cfg: Any, data_folder: str | Path | None) -> pd.Series:
    """Fold of each row, from dataset.fold_file, else the table, else the fold list in the data folder."""
    fold_file = getattr(cfg, "fold_file", None)
    if fold_file is None and (table["Fold"] == NO_FOLD).all():
        folder = data_folder if data_folder is not None else getattr(cfg, "data_folder", None)
        if folder:
            fold_file = find_helper_file(folder, "folds", required=False)
        if fold_file is None:
            raise ValueError(
                "foldwise split needs a patient fold list: the cycle table has no Fold values and no fold "
                "file was found (set dataset.fold_file or put patient_list_foldwise.txt in "
                f"{folder or 'data_folder'})"
            )
    if fold_file is None:
        return table["Fold"]
    folds = read_fold_file(fold_file)
    return table["PID"].map(lambda p: folds.get(int(p), NO_FOLD)).astype(np.int64)


def _foldwise(table: pd.DataFrame, cfg: Any, data_folder: str | Path | None) -> pd.Series:
    folds = _patient_folds(table, cfg, data_folder)
    available = sorted(set(folds.unique()) - {NO_FOLD})
    if cfg.test_fold not in available:
        raise ValueError(
            f"foldwise split: dataset.test_fold={cfg.test_fold} is not among the folds {available}"
        )
    no_fold = (folds == NO_FOLD).to_numpy()
    if no_fold.any():
        log.warning(
            "foldwise split: %d patient(s) have no fold and go to train: %s",
            table.loc[no_fold, "PID"].nunique(), sorted(int(p) for p in table.loc[no_fold, "PID"].unique()),
        )  # fmt: skip
    return pd.Series(
        np.where(folds.to_numpy() == cfg.test_fold, TEST, TRAIN), index=table.index, dtype=object
    )


def _random(table: pd.DataFrame, cfg: Any) -> pd.Series:
    patients = np.sort(table["PID"].unique())
    if len(patients) < 2:
        raise ValueError(f"random split needs at least 2 patients, the table has {len(patients)}")
    n_test = int(np.clip(round(cfg.random_test_fraction * len(patients)), 1, len(patients) - 1))
    test_patients = np.random.default_rng(cfg.split_seed).choice(patients, size=n_test, replace=False)
    is_test = table["PID"].isin(test_patients).to_numpy()
    return pd.Series(np.where(is_test, TEST, TRAIN), index=table.index, dtype=object)


def carve_validation(
    table: pd.DataFrame, assignment: pd.Series, val_fraction: float, seed: int, n_draws: int = _N_DRAWS,
    labels: np.ndarray | None = None,
) -> pd.Series:
    """Move ``val_fraction`` of the training patients to ``"val"`` (returns a new Series).

    Eligible patients have all their cycles in train (so validation shares no patient with train or test).
    Among ``n_draws`` seeded random patient subsets of the right size, the chosen one (1) contains every class
    that train contains while leaving every class in train, when any draw does, and (2) is closest to the
    training class distribution and to ``val_fraction`` of the training cycles. ``labels``: per-row class ids of
    ``table`` (default: ICBHI's 4 classes from the crackle/wheeze bits). When the assignment already has
    validation rows (the dataset's own), nothing is carved.
    """
    out = assignment.copy()
    if val_fraction <= 0:
        return out
    if (assignment == VAL).any():
        log.info("the dataset has its own validation rows: dataset.val_fraction is not used")
        return out
    in_train = (assignment == TRAIN).to_numpy()
    tested = set(table.loc[(assignment == TEST).to_numpy(), "PID"].unique())
    train_rows = table.loc[in_train]
    candidates = np.array(sorted(set(train_rows["PID"].unique()) - tested))
    if len(candidates) < 2:
        raise ValueError(
            f"cannot carve a patient-disjoint validation split: only {len(candidates)} training patient(s) "
            "are not also in test (set dataset.val_fraction=0 to train without validation)"
        )
    n_val = int(np.clip(round(val_fraction * len(candidates)), 1, len(candidates) - 1))
    n_train_patients = train_rows["PID"].nunique()
    if len(candidates) < n_train_patients / 2:  # e.g. SPRSound's intra-subject test set
        log.warning(
            "%d of %d training patients also have test recordings and never validate (selection never sees a "
            "test patient): validation is %d of the other %d patients; dataset.test_split can leave a test set "
            "of training patients out", n_train_patients - len(candidates), n_train_patients, n_val, len(candidates),
        )  # fmt: skip

    # Per-candidate cycle counts per class, [P, K]; train rows of non-candidates stay in train regardless.
    all_labels = _class_ids(table, labels)
    labels = all_labels[in_train]
    n_classes = max(4, int(all_labels.max(initial=0)) + 1)
    pid_pos = {p: i for i, p in enumerate(candidates)}
    counts = np.zeros((len(candidates), n_classes))
    for pid, label in zip(train_rows["PID"].to_numpy(), labels):
        if pid in pid_pos:
            counts[pid_pos[pid], label] += 1
    total = np.bincount(labels, minlength=n_classes).astype(float)
    present = total > 0
    target = total / total.sum()

    rng = np.random.default_rng(seed)
    best_key, best = None, None
    for _ in range(n_draws):
        chosen = rng.choice(len(candidates), size=n_val, replace=False)
        val_counts = counts[chosen].sum(axis=0)
        rest = total - val_counts
        covered = int(((val_counts > 0) & present).sum() + ((rest > 0) & present).sum())
        balance = 0.5 * np.abs(val_counts / max(val_counts.sum(), 1) - target).sum()
        size_gap = abs(val_counts.sum() / total.sum() - val_fraction)
        key = (-covered, balance + size_gap)
        if best_key is None or key < best_key:
            best_key, best = key, chosen
    val_patients = candidates[best]
    val_counts = counts[best].sum(axis=0)
    missing = [c for c in range(n_classes) if present[c] and val_counts[c] == 0]
    if missing:
        log.warning("validation split lacks class(es) %s: no draw of %d patients covers them", missing, n_val)
    out[in_train & table["PID"].isin(val_patients).to_numpy()] = VAL
    return out


def assign_splits(table: pd.DataFrame, dataset_cfg: Any, data_folder: str | Path | None = None,
                  labels: np.ndarray | None = None) -> pd.Series:
    """Split assignment of every cycle: ``"train" | "val" | "test" | "excluded"``, indexed like ``table``.

    ``dataset_cfg`` is a ``DatasetConfig`` (fields ``split_strategy``, ``test_split``, ``test_fold``,
    ``random_test_fraction``, ``split_seed``, ``val_fraction``, ``val_seed``, ``fold_file``,
    ``patient_disjoint_official``); ``labels``: per-row class ids for the stratified validation draw (default:
    ICBHI's 4 classes). Raises ValueError naming the strategy (and fold) when train or test would be empty.
    """
    check_split_config(dataset_cfg)
    strategy = dataset_cfg.split_strategy
    if strategy == "official":
        assignment = _official(table, dataset_cfg)
    elif strategy == "foldwise":
        assignment = _foldwise(table, dataset_cfg, data_folder)
    else:
        assignment = _random(table, dataset_cfg)
    where = f"split_strategy={strategy}" + (
        f", test_fold={dataset_cfg.test_fold}" if strategy == "foldwise" else ""
    )
    for split in (TRAIN, TEST):
        if not (assignment == split).any():
            raise ValueError(f"{where}: the {split} split is empty ({len(table)} cycles in the table)")
    assignment = carve_validation(table, assignment, dataset_cfg.val_fraction, dataset_cfg.val_seed, labels=labels)
    log.info("%s: %s", where, split_counts(table, assignment).to_dict(orient="index"))
    return assignment.astype(object).rename("split")


def split_counts(table: pd.DataFrame, assignment: pd.Series) -> pd.DataFrame:
    """Recordings, patients and cycles per split (rows in train, val, test, excluded order)."""
    grouped = table.assign(_split=assignment.to_numpy()).groupby("_split")
    counts = grouped.agg(
        recordings=("Filename", "nunique"), patients=("PID", "nunique"), cycles=("PID", "size")
    )
    order = [s for s in (TRAIN, VAL, TEST, EXCLUDED) if s in counts.index]
    return counts.loc[order]


def patient_kfold(table: pd.DataFrame, k: int, seed: int,
                  labels: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, class-stratified K-fold over the rows of ``table`` (e.g. the training cycles).

    Uses sklearn ``StratifiedGroupKFold`` (groups = patient, strata = ``labels``, default ICBHI's 4-class label
    from the bits), reseeding
    ``seed, seed + 1, ...`` up to 50 times until every validation fold holds every class present (warning if
    none does). Returns ``k`` pairs ``(train_positions, val_positions)``: int64 row positions in ``table``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = table["PID"].nunique()
    if not 2 <= k <= n_patients:
        raise ValueError(
            f"patient_kfold: k must be between 2 and the number of patients ({n_patients}), got {k}"
        )
    labels = _class_ids(table, labels)
    groups = table["PID"].to_numpy()
    present = set(labels.tolist())
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for attempt in range(_KFOLD_ATTEMPTS):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + attempt)
        folds = [
            (tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(labels, labels, groups)
        ]
        if all(set(labels[va].tolist()) == present for _, va in folds):
            return folds
    log.warning("patient_kfold: no seed in %d..%d gives every class in every validation fold",
                seed, seed + _KFOLD_ATTEMPTS - 1)  # fmt: skip
    return folds
