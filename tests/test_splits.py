"""Train/val/test assignment (ls.data.splits)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest

from ls.data.config import DatasetConfig
from ls.data.icbhi import NO_FOLD, load_cycle_table
from ls.data.splits import assign_splits, carve_validation, patient_kfold


def _cfg(**overrides) -> DatasetConfig:
    return dataclasses.replace(DatasetConfig(data_folder="/nonexistent"), **overrides)


def _table(n_patients: int = 20, seed: int = 0) -> pd.DataFrame:
    """A cycle table without audio: 2 recordings x 5 cycles per patient, every class in most patients,
    official split by patient (every third patient in test), folds 0..4, and patient 0 also in test."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pid = 101 + p
        for r in range(2):
            stem = f"{pid}_1b{r + 1}_Al_sc_Meditron"
            split = "test" if p % 3 == 2 or (p == 0 and r == 1) else "train"
            for k in range(5):
                label = k % 4 if rng.random() < 0.8 else 0
                rows.append(
                    {
                        "PID": pid,
                        "Filename": stem,
                        "CycleIndex": k,
                        "CycleStart": float(k),
                        "CycleEnd": k + 1.0,
                        "Crackles": label & 1,
                        "Wheezes": label >> 1,
                        "Split": split,
                        "Device": "Meditron",
                        "Fold": p % 5,
                        "Age": 50.0,
                        "Sex": "M",
                        "BMI": 25.0,
                        "CW": np.nan,
                        "CH": np.nan,
                        "Disease": "COPD",
                        "AuscLoc": "Al",
                    }
                )
    return pd.DataFrame(rows)


def _patients(table, assignment, split):
    return set(table.loc[(assignment == split).to_numpy(), "PID"])


# --------------------------------------------------------------------------------------------- official


def test_official_follows_the_split_column_and_warns_about_shared_patients(caplog):
    table = _table()
    with caplog.at_level(logging.WARNING, logger="ls.data.splits"):
        a = assign_splits(table, _cfg(val_fraction=0.0))
    assert a.index.equals(table.index)
    assert ((a == "test") == (table["Split"] == "test")).all()
    assert ((a == "train") == (table["Split"] == "train")).all()
    assert caplog.text.count("patient(s) 101 have recordings in both train and test") == 1


def test_patient_disjoint_official_excludes_shared_training_recordings():
    table = _table()
    a = assign_splits(table, _cfg(val_fraction=0.0, patient_disjoint_official=True))
    assert ((a == "test") == (table["Split"] == "test")).all()  # test untouched
    shared_train = (table["PID"] == 101) & (table["Split"] == "train")
    assert (a[shared_train] == "excluded").all() and not (a[~shared_train] == "excluded").any()


def test_recordings_without_official_split_are_excluded(caplog):
    table = _table()
    table.loc[table["Filename"] == "104_1b1_Al_sc_Meditron", "Split"] = "unknown"
    with caplog.at_level(logging.WARNING, logger="ls.data.splits"):
        a = assign_splits(table, _cfg(val_fraction=0.0))
    assert (a[table["Split"] == "unknown"] == "excluded").all()
    assert "5 cycle(s) of 1 recording(s) are not in the split file" in caplog.text


def test_an_empty_split_is_an_error_naming_the_strategy():
    table = _table().assign(Split="train")
    with pytest.raises(ValueError, match="split_strategy=official: the test split is empty"):
        assign_splits(table, _cfg())


# --------------------------------------------------------------------------------------------- foldwise


def test_foldwise_tests_the_chosen_fold():
    table = _table()
    a = assign_splits(table, _cfg(split_strategy="foldwise", test_fold=2, val_fraction=0.0))
    assert ((a == "test") == (table["Fold"] == 2)).all()


def test_foldwise_without_folds_is_a_clear_error_and_a_fold_file_fixes_it(tmp_path):
    table = _table().assign(Fold=NO_FOLD)
    with pytest.raises(ValueError, match="foldwise split needs a patient fold list"):
        assign_splits(table, _cfg(split_strategy="foldwise"))
    fold_file = tmp_path / "folds.txt"
    fold_file.write_text("".join(f"{101 + p} {p % 2}\n" for p in range(20)))
    a = assign_splits(
        table, _cfg(split_strategy="foldwise", test_fold=1, fold_file=str(fold_file), val_fraction=0)
    )
    assert _patients(table, a, "test") == {101 + p for p in range(1, 20, 2)}
    # the data folder's patient_list_foldwise.txt is found too
    (tmp_path / "patient_list_foldwise.txt").write_text(fold_file.read_text())
    b = assign_splits(
        table, _cfg(split_strategy="foldwise", test_fold=1, val_fraction=0), data_folder=tmp_path
    )
    assert a.equals(b)


def test_foldwise_unknown_test_fold_is_an_error():
    with pytest.raises(ValueError, match="test_fold=7 is not among the folds"):
        assign_splits(_table(), _cfg(split_strategy="foldwise", test_fold=7))


# --------------------------------------------------------------------------------------------- random


def test_random_split_is_patient_wise_seeded_and_sized():
    table = _table(n_patients=30)
    cfg = _cfg(split_strategy="random", random_test_fraction=0.4, split_seed=3, val_fraction=0.0)
    a, b = assign_splits(table, cfg), assign_splits(table, cfg)
    assert a.equals(b)
    assert not _patients(table, a, "train") & _patients(table, a, "test")
    assert len(_patients(table, a, "test")) == 12  # 40 % of 30 patients
    c = assign_splits(table, dataclasses.replace(cfg, split_seed=4))
    assert _patients(table, c, "test") != _patients(table, a, "test")


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("strategy", ["official", "foldwise", "random"])
def test_validation_is_patient_disjoint_and_holds_every_class(strategy):
    table = _table(n_patients=30)
    a = assign_splits(table, _cfg(split_strategy=strategy, val_fraction=0.2, val_seed=5))
    train, val, test = (_patients(table, a, s) for s in ("train", "val", "test"))
    assert val and not val & train and not val & test
    assert len(val) == round(0.2 * len((train | val) - test))  # of the train-only patients
    val_rows = table[(a == "val").to_numpy()]
    assert set(val_rows["Crackles"] + 2 * val_rows["Wheezes"]) == {0, 1, 2, 3}
    assert assign_splits(table, _cfg(split_strategy=strategy, val_fraction=0.2, val_seed=5)).equals(a)


def test_zero_val_fraction_gives_no_validation():
    table = _table()
    assert not (assign_splits(table, _cfg(val_fraction=0.0)) == "val").any()


def test_validation_needs_two_eligible_patients():
    table = _table(n_patients=3)  # patients 101 (also in test), 102 (train), 103 (test)
    with pytest.raises(ValueError, match="only 1 training patient"):
        carve_validation(table, table["Split"].astype(object), 0.5, seed=0)


# --------------------------------------------------------------------------------------------- k-fold


def test_patient_kfold_groups_patients_and_stratifies():
    table = _table(n_patients=25)
    folds = patient_kfold(table, k=5, seed=0)
    assert len(folds) == 5
    all_val = np.concatenate([va for _, va in folds])
    assert sorted(all_val.tolist()) == list(range(len(table)))  # every row validated exactly once
    labels = (table["Crackles"] + 2 * table["Wheezes"]).to_numpy()
    for tr, va in folds:
        assert not set(table["PID"].iloc[tr]) & set(table["PID"].iloc[va])
        assert len(tr) + len(va) == len(table)
        assert set(labels[va]) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="k must be between 2"):
        patient_kfold(table, k=26, seed=0)


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_official_split_of_the_full_table(icbhi_meta_dir, caplog):
    table = load_cycle_table(icbhi_meta_dir / "icbhi_metadata.csv")
    with caplog.at_level(logging.WARNING, logger="ls.data.splits"):
        a = assign_splits(table, _cfg(val_fraction=0.2, val_seed=0))
    assert "patient(s) 156, 218 have recordings in both train and test" in caplog.text
    assert (a == "test").sum() == 2756 and (a.isin(["train", "val"])).sum() == 4142
    val = _patients(table, a, "val")
    assert val and not val & (_patients(table, a, "train") | _patients(table, a, "test"))
    fold0 = assign_splits(table, _cfg(split_strategy="foldwise", test_fold=0, val_fraction=0.0))
    assert (fold0 == "test").sum() == 3455  # fold sizes in cycles: 3455/704/536/759/1444
