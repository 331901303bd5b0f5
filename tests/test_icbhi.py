"""ICBHI readers and the cycle table (ls.data.icbhi)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ls.data.icbhi import (
    CYCLE_TABLE_COLUMNS,
    NO_FOLD,
    IcbhiFormatError,
    build_cycle_table,
    find_helper_file,
    find_recordings,
    load_cycle_table,
    parse_stem,
    read_annotation,
    read_demographics,
    read_diagnosis,
    read_fold_file,
    read_split_file,
    recording_durations,
    write_cycle_table,
)


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# --------------------------------------------------------------------------------------------- names


def test_parse_stem_reads_all_five_fields():
    name = parse_stem("101_1b1_Al_sc_Meditron")
    assert (name.pid, name.rec_index, name.site, name.mode, name.device) == (
        101,
        "1b1",
        "Al",
        "sc",
        "Meditron",
    )
    assert name.stem == "101_1b1_Al_sc_Meditron"
    assert name.key_without_device == (101, "1b1", "Al", "sc")


@pytest.mark.parametrize(
    "stem, fragment",
    [
        ("101_1b1_Al_sc", "5"),  # too few fields
        ("10x_1b1_Al_sc_Meditron", "patient id"),
        ("101_bb_Al_sc_Meditron", "recording index"),
        ("101_1b1_Xx_sc_Meditron", "chest location"),
        ("101_1b1_Al_zz_Meditron", "mode"),
        ("101_1b1_Al_sc_Stetho", "device"),
    ],
)
def test_parse_stem_rejects_malformed_names_naming_the_file(stem, fragment):
    with pytest.raises(IcbhiFormatError, match=fragment) as err:
        parse_stem(stem, source=f"/data/{stem}.wav")
    assert f"/data/{stem}.wav" in str(err.value)


# --------------------------------------------------------------------------------------------- readers


def test_read_annotation_handles_crlf_and_blank_lines(tmp_path):
    path = _write(tmp_path / "a.txt", "0.036\t0.579\t0\t0\n0.579\t2.45\t1\t0\n2.45\t3.893\t1\t1\n\n", "\r\n")
    cycles = read_annotation(path)
    assert list(cycles.columns) == ["start", "end", "crackles", "wheezes"]
    np.testing.assert_array_equal(cycles["start"], [0.036, 0.579, 2.45])
    np.testing.assert_array_equal(cycles["end"], [0.579, 2.45, 3.893])
    np.testing.assert_array_equal(cycles["crackles"], [0, 1, 1])
    np.testing.assert_array_equal(cycles["wheezes"], [0, 0, 1])
    assert cycles["crackles"].dtype == np.int64 and cycles["start"].dtype == np.float64


@pytest.mark.parametrize(
    "bad_line, fragment",
    [
        ("1.0\t2.0\t0", "expected 4 fields"),
        ("1.0\tabc\t0\t0", "not a number"),
        ("1.0\t2.0\t2\t0", "must be 0 or 1"),
        ("2.0\t1.0\t0\t0", "start < end"),
    ],
)
def test_read_annotation_rejects_malformed_lines_with_file_and_line(tmp_path, bad_line, fragment):
    path = _write(tmp_path / "bad.txt", f"0.0\t1.0\t0\t0\n{bad_line}\n")
    with pytest.raises(IcbhiFormatError, match=fragment) as err:
        read_annotation(path)
    assert "bad.txt, line 2" in str(err.value)


def test_read_split_file_crlf_and_errors(tmp_path):
    path = _write(
        tmp_path / "split.txt", "101_1b1_Al_sc_Meditron\ttest\n103_2b2_Ar_mc_LittC2SE\ttrain\n", "\r\n"
    )
    assert read_split_file(path) == {"101_1b1_Al_sc_Meditron": "test", "103_2b2_Ar_mc_LittC2SE": "train"}
    bad = _write(tmp_path / "bad.txt", "101_1b1_Al_sc_Meditron\tvalidation\n")
    with pytest.raises(IcbhiFormatError, match="bad.txt, line 1"):
        read_split_file(bad)
    conflict = _write(tmp_path / "conflict.txt", "a_1b1_Al_sc_Meditron\ttrain\na_1b1_Al_sc_Meditron\ttest\n")
    with pytest.raises(IcbhiFormatError, match="both train and test"):
        read_split_file(conflict)


def test_read_demographics_six_and_seven_columns_agree(tmp_path):
    six = _write(
        tmp_path / "demo6.txt",
        "101\t3.0\tF\tNA\t19.0\t99.0\n103\t70.0\tF\t33.0\tNA\tNA\n223\tNA\tNA\tNA\tNA\tNA\n",
    )
    seven = _write(
        tmp_path / "demo7.txt",
        "101\t3.0\tF\tNA\t19.0\t99.0\tPr\n103\t70.0\tF\t33.0\tNA\tNA\tAr\n223\tNA\tNA\tNA\tNA\tNA\tLl\n",
        "\r\n",
    )
    a, b = read_demographics(six), read_demographics(seven)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["PID", "Age", "Sex", "BMI", "CW", "CH"]
    assert a["PID"].tolist() == [101, 103, 223]
    assert a.loc[0, "Age"] == 3.0 and a.loc[0, "CW"] == 19.0 and math.isnan(a.loc[0, "BMI"])
    assert a.loc[1, "BMI"] == 33.0 and a.loc[1, "Sex"] == "F"
    assert a.loc[2, ["Age", "BMI", "CW", "CH"]].isna().all() and pd.isna(a.loc[2, "Sex"])


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("101\t3.0\tF\tNA\t19.0", "expected 6 columns"),
        ("101\t3.0\tX\tNA\t19.0\t99.0", "sex"),
        ("101\t300\tF\tNA\t19.0\t99.0", "Age 300.0 is outside"),
        ("101\told\tF\tNA\t19.0\t99.0", "not a number"),
    ],
)
def test_read_demographics_rejects_bad_lines(tmp_path, line, fragment):
    path = _write(tmp_path / "demo.txt", "102\t0.75\tF\tNA\t9.8\t73.0\n" + line + "\n")
    with pytest.raises(IcbhiFormatError, match=fragment) as err:
        read_demographics(path)
    assert "demo.txt, line 2" in str(err.value)


def test_read_diagnosis_and_fold_file(tmp_path):
    diag = _write(tmp_path / "diag.txt", "101\tURTI\n102\tHealthy\n", "\r\n")
    assert read_diagnosis(diag) == {101: "URTI", 102: "Healthy"}
    folds = _write(tmp_path / "folds.txt", "158 0\n193 4\n")
    assert read_fold_file(folds) == {158: 0, 193: 4}
    with pytest.raises(IcbhiFormatError, match="listed twice"):
        read_fold_file(_write(tmp_path / "dup.txt", "158 0\n158 1\n"))
    with pytest.raises(IcbhiFormatError, match="negative"):
        read_fold_file(_write(tmp_path / "neg.txt", "158 -1\n"))


def test_find_recordings_needs_wav_and_txt(tmp_path):
    for name in ("101_1b1_Al_sc_Meditron.wav", "101_1b1_Al_sc_Meditron.txt", "102_1b1_Ar_sc_Meditron.wav",
                 "patient_diagnosis.txt"):  # fmt: skip
        (tmp_path / name).write_text("")
    assert find_recordings(tmp_path) == ["101_1b1_Al_sc_Meditron"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_recordings(tmp_path / "missing")


def test_find_helper_file_accepts_either_name_and_names_both_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        find_helper_file(tmp_path, "demographics")
    assert "metadata.txt" in str(err.value) and "ICBHI_Challenge_demographic_information.txt" in str(
        err.value
    )
    (tmp_path / "ICBHI_Challenge_demographic_information.txt").write_text("")
    assert find_helper_file(tmp_path, "demographics").name == "ICBHI_Challenge_demographic_information.txt"
    assert find_helper_file(tmp_path, "folds", required=False) is None


# --------------------------------------------------------------------------------------------- cycle table


def _tiny_folder(root: Path, with_folds: bool = True) -> Path:
    """Four recordings: 226 spelled with another device token in the split file, one recording not listed,
    patient 156 in both splits, patient 300 absent from demographics, one cycle past the end of its audio."""
    recs = {
        "156_2b3_Al_mc_AKGC417L": ("0.1\t1.5\t1\t0\n1.5\t3.0\t0\t1\n", 3.5),
        "156_2b3_Ar_mc_AKGC417L": ("0.0\t2.0\t0\t0\n", 2.5),
        "226_1b1_Pl_sc_LittC2SE": ("0.2\t1.2\t1\t1\n", 2.0),
        "300_1b1_Tc_sc_Litt3200": ("0.0\t1.0\t0\t0\n1.0\t2.6\t0\t0\n", 2.0),  # second cycle ends past 2.0 s
    }
    for stem, (annotation, seconds) in recs.items():
        _write(root / f"{stem}.txt", annotation, "\r\n")
        sf.write(
            root / f"{stem}.wav", np.zeros(int(4000 * seconds), dtype=np.float32), 4000, subtype="PCM_16"
        )
    _write(
        root / "ICBHI_challenge_train_test.txt",
        "156_2b3_Al_mc_AKGC417L\ttest\n156_2b3_Ar_mc_AKGC417L\ttrain\n226_1b1_Pl_sc_Meditron\ttrain\n",
        "\r\n",
    )
    _write(root / "ICBHI_Challenge_diagnosis.txt", "156\tCOPD\n226\tPneumonia\n300\tHealthy\n")
    _write(
        root / "ICBHI_Challenge_demographic_information.txt",
        "156\t80\tM\t24.5\tNA\tNA\n226\t4\tM\tNA\t16.7\t103\n",
    )
    if with_folds:
        _write(root / "patient_list_foldwise.txt", "156 2\n226 3\n")
    return root


def test_build_cycle_table_handles_the_dataset_quirks(tmp_path, caplog):
    folder = _tiny_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="ls.data.icbhi"):
        table = build_cycle_table(folder)
    assert tuple(table.columns) == CYCLE_TABLE_COLUMNS
    assert table["Filename"].tolist() == [
        "156_2b3_Al_mc_AKGC417L", "156_2b3_Al_mc_AKGC417L", "156_2b3_Ar_mc_AKGC417L",
        "226_1b1_Pl_sc_LittC2SE", "300_1b1_Tc_sc_Litt3200", "300_1b1_Tc_sc_Litt3200",
    ]  # fmt: skip
    by_file = table.groupby("Filename").first()
    # 226: matched to the split entry spelled with another device token, and that match is logged
    assert by_file.loc["226_1b1_Pl_sc_LittC2SE", "Split"] == "train"
    assert "226_1b1_Pl_sc_Meditron" in caplog.text
    # not listed in the split file -> "unknown", counted
    assert by_file.loc["300_1b1_Tc_sc_Litt3200", "Split"] == "unknown"
    assert "1 recording(s) are not in the split file" in caplog.text
    # patient in both splits is named once
    assert caplog.text.count("patient(s) 156 have recordings in both train and test") == 1
    # demographics: patient 300 missing -> NaN with a warning; others parsed
    assert by_file.loc["300_1b1_Tc_sc_Litt3200", ["Age", "BMI", "CW", "CH"]].isna().all()
    assert "1 patient(s) missing, their demographics are NaN: [300]" in caplog.text
    assert by_file.loc["226_1b1_Pl_sc_LittC2SE", "CW"] == 16.7
    assert by_file.loc["156_2b3_Al_mc_AKGC417L", "BMI"] == 24.5
    # folds: 300 has none
    assert by_file["Fold"].to_dict() == {
        "156_2b3_Al_mc_AKGC417L": 2,
        "156_2b3_Ar_mc_AKGC417L": 2,
        "226_1b1_Pl_sc_LittC2SE": 3,
        "300_1b1_Tc_sc_Litt3200": NO_FOLD,
    }
    assert "1 cycle(s) in 1 recording(s) end after the end of the audio" in caplog.text
    # cycle fields straight from the annotation
    first = table.iloc[0]
    assert (first["CycleStart"], first["CycleEnd"], first["Crackles"], first["Wheezes"]) == (0.1, 1.5, 1, 0)
    assert table["CycleIndex"].tolist() == [0, 1, 0, 0, 0, 1]
    assert table["AuscLoc"].tolist()[3] == "Pl" and table["Device"].tolist()[3] == "LittC2SE"


def test_build_cycle_table_without_fold_list_sets_no_fold(tmp_path, caplog):
    folder = _tiny_folder(tmp_path, with_folds=False)
    with caplog.at_level(logging.WARNING, logger="ls.data.icbhi"):
        table = build_cycle_table(folder, check_audio=False)
    assert (table["Fold"] == NO_FOLD).all() and table["Fold"].dtype == np.int64
    assert "no patient fold list" in caplog.text


def test_build_cycle_table_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_cycle_table(tmp_path / "nowhere")
    folder = _tiny_folder(tmp_path)
    (folder / "ICBHI_Challenge_diagnosis.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no diagnosis file .*patient_diagnosis.txt"):
        build_cycle_table(folder)


def test_recording_durations_read_from_headers(tmp_path):
    folder = _tiny_folder(tmp_path)
    durations = recording_durations(folder)
    assert durations["156_2b3_Al_mc_AKGC417L"] == pytest.approx(3.5)
    assert durations["300_1b1_Tc_sc_Litt3200"] == pytest.approx(2.0)


def test_cycle_table_round_trips_through_csv(tmp_path):
    table = build_cycle_table(_tiny_folder(tmp_path), check_audio=False)
    path = write_cycle_table(table, tmp_path / "out" / "icbhi_metadata.csv")
    pd.testing.assert_frame_equal(load_cycle_table(path), table)
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp file left behind


def test_load_cycle_table_names_file_and_problem(tmp_path):
    table = build_cycle_table(_tiny_folder(tmp_path), check_audio=False)
    missing = tmp_path / "missing_cols.csv"
    table.drop(columns=["Fold", "AuscLoc"]).to_csv(missing, index=False)
    with pytest.raises(ValueError, match=r"missing_cols.csv: missing cycle-table column\(s\) Fold, AuscLoc"):
        load_cycle_table(missing)
    bad_flag = tmp_path / "bad_flag.csv"
    table.assign(Crackles=[0, 2, 0, 0, 0, 0]).to_csv(bad_flag, index=False)
    with pytest.raises(ValueError, match="bad_flag.csv: column Crackles must be 0 or 1"):
        load_cycle_table(bad_flag)
    dup = tmp_path / "dup.csv"
    pd.concat([table, table.iloc[:1]]).to_csv(dup, index=False)
    with pytest.raises(ValueError, match="duplicated"):
        load_cycle_table(dup)
    with pytest.raises(FileNotFoundError):
        load_cycle_table(tmp_path / "absent.csv")


# --------------------------------------------------------------------------------------------- real data


def _reference_rows(meta_dir: Path, filenames) -> pd.DataFrame:
    reference = pd.read_csv(meta_dir / "icbhi_metadata.csv")
    return reference[reference["Filename"].isin(set(filenames))].reset_index(drop=True)


@pytest.mark.shared_data
def test_cycle_table_of_the_real_sample_equals_the_authors_csv(icbhi_sample_dir, icbhi_meta_dir):
    table = build_cycle_table(icbhi_sample_dir, fold_file=icbhi_meta_dir / "patient_list_foldwise.txt")
    assert table["Filename"].nunique() == 10 and len(table) == 97
    pd.testing.assert_frame_equal(table, _reference_rows(icbhi_meta_dir, table["Filename"]))


@pytest.mark.shared_data
def test_authors_helper_files_give_the_same_table(icbhi_sample_dir, icbhi_meta_dir):
    table = build_cycle_table(
        icbhi_sample_dir,
        split_file=icbhi_meta_dir / "official_split.txt",
        diagnosis_file=icbhi_meta_dir / "patient_diagnosis.txt",
        demographics_file=icbhi_meta_dir / "metadata.txt",  # the 7-column variant
        fold_file=icbhi_meta_dir / "patient_list_foldwise.txt",
        check_audio=False,
    )
    pd.testing.assert_frame_equal(table, _reference_rows(icbhi_meta_dir, table["Filename"]))


@pytest.mark.shared_data
def test_load_the_full_authors_csv(icbhi_meta_dir):
    table = load_cycle_table(icbhi_meta_dir / "icbhi_metadata.csv")
    assert len(table) == 6898 and table["PID"].nunique() == 126 and table["Filename"].nunique() == 920
    assert table["Split"].value_counts().to_dict() == {"train": 4142, "test": 2756}
    assert table[["Age", "Sex", "BMI", "CW", "CH"]].isna().sum().tolist() == [61, 61, 894, 6149, 6172]


@pytest.mark.shared_data
def test_both_official_split_files_agree_up_to_the_226_spelling(icbhi_meta_dir):
    authors = read_split_file(icbhi_meta_dir / "official_split.txt")
    challenge = read_split_file(icbhi_meta_dir / "ICBHI_challenge_train_test.txt")  # CRLF
    assert len(authors) == len(challenge) == 920
    assert set(authors) ^ set(challenge) == {"226_1b1_Pl_sc_LittC2SE", "226_1b1_Pl_sc_Meditron"}
