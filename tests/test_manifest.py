"""Manifest CSV reader (ls.data.manifest)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ls.data.icbhi import build_cycle_table
from ls.data.manifest import (
    ICBHI_MANIFEST_SPEC,
    MAX_LISTED_PROBLEMS,
    ManifestError,
    ManifestSpec,
    icbhi_to_manifest,
    label_ids,
    load_manifest,
)

SR = 4000


def _wav(path: Path, seconds: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(round(seconds * SR), dtype=np.float32), SR, subtype="PCM_16")
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A dataset folder with 3 s wavs a/rec1.wav, b/rec1.wav (same stem, other folder) and c.wav."""
    for name in ("a/rec1.wav", "b/rec1.wav", "c.wav"):
        _wav(tmp_path / name)
    return tmp_path


SPEC = ManifestSpec(categorical=("site",), continuous=("age",), classes=("normal", "crackle", "wheeze"))


# --------------------------------------------------------------------------------------------- reading


def test_manifest_reads_into_the_canonical_table(folder):
    path = _csv(folder / "manifest.csv", """
path,start,end,label,patient,split,site,age,note
a/rec1.wav,1.5,2.5,wheeze,p01,train,chest,54,ignored
a/rec1.wav,0.0,1.5,normal,p01,train,chest,54,
b/rec1.wav,0.25,3.0,crackle,p02,test,back,NA,
c.wav,0,1,normal,7,test,,6.5,
""")  # fmt: skip
    table = load_manifest(path, SPEC)
    assert list(table.columns) == [
        "Filename", "Path", "CycleIndex", "CycleStart", "CycleEnd", "PID", "Split", "Label", "site", "age",
    ]  # fmt: skip
    assert table["Filename"].tolist() == ["a/rec1", "a/rec1", "b/rec1", "c"]  # unique despite equal stems
    assert table["Path"].tolist() == ["a/rec1.wav", "a/rec1.wav", "b/rec1.wav", "c.wav"]
    assert table["CycleIndex"].tolist() == [0, 1, 0, 0]  # time order within a file, not row order
    assert table["CycleStart"].tolist() == [0.0, 1.5, 0.25, 0.0]
    assert table["CycleEnd"].tolist() == [1.5, 2.5, 3.0, 1.0]
    assert table["Label"].tolist() == ["normal", "wheeze", "crackle", "normal"]
    assert table["PID"].tolist() == ["p01", "p01", "p02", "7"]  # patient ids stay strings
    assert table["Split"].tolist() == ["train", "train", "test", "test"]
    assert table["site"].tolist()[:3] == ["chest", "chest", "back"] and pd.isna(table["site"].iloc[3])
    np.testing.assert_array_equal(table["age"], [54.0, 54.0, np.nan, 6.5])
    assert table["age"].dtype == np.float64 and table["CycleIndex"].dtype == np.int64
    assert table.index.equals(pd.RangeIndex(4))
    assert label_ids(table, SPEC).tolist() == [0, 2, 1, 0]


def test_manifest_without_split_column_is_unknown_and_paths_are_normalised(folder, tmp_path_factory):
    outside = _wav(tmp_path_factory.mktemp("elsewhere") / "far.wav")
    path = _csv(folder / "manifest.csv", f"""
path,start,end,label,patient
{folder / "c.wav"},0,1,normal,p1
./a/../b/rec1.wav,0,1,normal,p1
{outside},0,1,normal,p2
""")  # fmt: skip
    table = load_manifest(path)
    assert set(table["Split"]) == {"unknown"}
    # absolute paths inside the folder become relative; outside ones stay absolute
    assert sorted(table["Path"]) == sorted(["c.wav", "b/rec1.wav", outside.as_posix()])
    assert str(outside.with_suffix("")) in set(table["Filename"])


def test_manifest_with_crackle_wheeze_columns(folder):
    path = _csv(folder / "manifest.csv", """
path,start,end,crackle,wheeze,patient
c.wav,0,1,0,0,p1
c.wav,1,2,1,0,p1
c.wav,2,2.5,0,1,p1
c.wav,2.5,3,1,1,p1
""")  # fmt: skip
    spec = ManifestSpec(label=None, crackle="crackle", wheeze="wheeze")
    table = load_manifest(path, spec)
    assert table["Label"].tolist() == ["normal", "crackle", "wheeze", "both"]
    assert table["Crackles"].tolist() == [0, 1, 0, 1] and table["Wheezes"].tolist() == [0, 0, 1, 1]
    assert table["Crackles"].dtype == np.int64
    assert label_ids(table, spec).tolist() == [0, 1, 2, 3]
    # a label column, when present, names the class; the bits still fill Crackles/Wheezes
    labelled = _csv(folder / "labelled.csv", """
path,start,end,crackle,wheeze,label,patient
c.wav,0,1,0,0,healthy,p1
c.wav,1,2,1,0,sick,p1
""")  # fmt: skip
    table = load_manifest(labelled, ManifestSpec(crackle="crackle", wheeze="wheeze"))
    assert table["Label"].tolist() == ["healthy", "sick"] and table["Crackles"].tolist() == [0, 1]


def test_manifest_spec_is_checked():
    with pytest.raises(ValueError, match="both crackle and wheeze"):
        ManifestSpec(crackle="c")
    with pytest.raises(ValueError, match="needs a label column"):
        ManifestSpec(label=None)
    with pytest.raises(ValueError, match="listed twice"):
        ManifestSpec(categorical=("site",), continuous=("site",))
    with pytest.raises(ValueError, match="overwrite"):
        ManifestSpec(categorical=("Label",))
    with pytest.raises(ValueError, match="distinct"):
        ManifestSpec(classes=("a", "a"))
    assert ManifestSpec(categorical=["site"]).categorical == ("site",)  # lists from YAML become tuples
    with pytest.raises(ValueError, match="needs ManifestSpec.classes"):
        label_ids(pd.DataFrame({"Label": ["x"]}), ManifestSpec())


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "row, column, message",
    [
        ("missing.wav,0,1,normal,p1,train,chest,5", "path", "audio file .*missing.wav does not exist"),
        ("../outside.wav,0,1,normal,p1,train,chest,5", "path", "relative path '../outside.wav' leads out"),
        (",0,1,normal,p1,train,chest,5", "path", "empty cell"),
        ("c.wav,zero,1,normal,p1,train,chest,5", "start", "'zero' is not a number of seconds"),
        ("c.wav,0,,normal,p1,train,chest,5", "end", "empty cell"),
        ("c.wav,-0.5,1,normal,p1,train,chest,5", "start", "start -0.5 s is negative"),
        ("c.wav,2,2,normal,p1,train,chest,5", "end", "end 2 s is not after start 2 s"),
        ("c.wav,2,1,normal,p1,train,chest,5", "end", "end 1 s is not after start 2 s"),
        ("c.wav,2,3.5,normal,p1,train,chest,5", "end", r"end 3.5 s is after the end of the audio \(3.000 s"),
        ("c.wav,0,1,stridor,p1,train,chest,5", "label", "label 'stridor' is not one of the classes"),
        ("c.wav,0,1,,p1,train,chest,5", "label", "empty cell"),
        ("c.wav,0,1,normal,,train,chest,5", "patient", "empty cell"),
        ("c.wav,0,1,normal,p1,,chest,5", "split", "empty cell"),
        ("c.wav,0,1,normal,p1,train,chest,five", "age", "'five' is not a number"),
    ],
)  # fmt: skip
def test_each_row_problem_is_named_with_csv_row_and_column(folder, row, column, message):
    path = _csv(folder / "manifest.csv", f"path,start,end,label,patient,split,site,age\n{row}")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, SPEC)
    assert len(err.value.problems) == 1, err.value.problems
    prefix = f"{path}, row 1, column {column}: "
    assert err.value.problems[0].startswith(prefix), err.value.problems[0]
    assert re.fullmatch(message + ".*", err.value.problems[0][len(prefix) :]), err.value.problems[0]


def test_all_problems_are_reported_at_once(folder):
    path = _csv(folder / "manifest.csv", """
path,start,end,label,patient,site
c.wav,0,1,normal,p1,chest
c.wav,0,1,normal,p1,chest
missing.wav,0,1,normal,p1,chest
missing.wav,1,2,normal,p1,chest
c.wav,x,1,crackle,p2,chest
c.wav,1,9,wheeze,p2,chest
""")  # fmt: skip
    with pytest.raises(ManifestError) as err:
        load_manifest(path, SPEC)
    problems = err.value.problems
    assert f"{path}, row 0, column age: missing column" in problems
    assert f"{path}, row 2, column path: same segment as row 1 (c.wav, 0-1 s)" in problems
    assert any(p.startswith(f"{path}, row 3, column path: audio file") and "(and 1 more row(s))" in p
               for p in problems)  # fmt: skip
    assert f"{path}, row 5, column start: 'x' is not a number of seconds" in problems
    assert any(
        p.startswith(f"{path}, row 6, column end: end 9 s is after the end of the audio") for p in problems
    )
    assert len(problems) == 5
    message = str(err.value)
    assert message.splitlines()[0] == f"{path}: 5 problem(s) in the manifest:"
    assert all(p in message for p in problems)


def test_problem_list_is_capped_in_the_message_but_kept_whole(folder):
    rows = "\n".join(f"c.wav,{2 + i / 100},1,normal,p1" for i in range(1, 31))
    path = _csv(folder / "manifest.csv", f"path,start,end,label,patient\n{rows}")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert len(err.value.problems) == 30
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + MAX_LISTED_PROBLEMS + 1 and lines[-1].strip() == "... and 10 more"


def test_header_problems(folder):
    path = _csv(folder / "m.csv", "path,start,start,label\nc.wav,0,1,normal")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, ManifestSpec(crackle="crackle", wheeze="wheeze"))
    assert err.value.problems == [
        f"{path}, row 0, column start: column appears more than once in the header",
        f"{path}, row 0, column end: missing column",
        f"{path}, row 0, column patient: missing column",
        f"{path}, row 0, column crackle: missing column",
        f"{path}, row 0, column wheeze: missing column",
    ]
    empty = _csv(folder / "empty.csv", "path,start,end,label,patient")
    with pytest.raises(ManifestError, match="no data rows"):
        load_manifest(empty)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_manifest(folder / "nowhere.csv")


UNIQUE = "Filename would not be unique"


def test_bit_problems_and_suffix_clashes(folder):
    _wav(folder / "c.flac.wav")  # harmless: the suffix is .wav
    os.link(folder / "c.wav", folder / "c.WAV")
    path = _csv(folder / "m.csv", """
path,start,end,crackle,wheeze,patient
c.wav,0,1,2,0,p1
c.WAV,0,1,0,yes,p1
c.flac.wav,0,1,0,0,p1
""")  # fmt: skip
    with pytest.raises(ManifestError) as err:
        load_manifest(path, ManifestSpec(label=None, crackle="crackle", wheeze="wheeze"))
    assert err.value.problems == [
        f"{path}, row 1, column crackle: '2' is not 0 or 1",
        f"{path}, row 2, column path: c.WAV and c.wav differ only in the suffix; {UNIQUE}",
        f"{path}, row 2, column wheeze: 'yes' is not 0 or 1",
    ]


def test_unreadable_audio_is_reported(folder):
    (folder / "broken.wav").write_bytes(b"not a wav file")
    path = _csv(folder / "m.csv", "path,start,end,label,patient\nbroken.wav,0,1,normal,p1")
    with pytest.raises(ManifestError, match=r"row 1, column path: cannot read audio file .*broken.wav"):
        load_manifest(path)


# --------------------------------------------------------------------------------------------- ICBHI


@pytest.fixture(scope="module")
def icbhi_sample_table(icbhi_sample_dir) -> pd.DataFrame:
    logging.getLogger("ls.data.icbhi").setLevel(logging.ERROR)  # the sample has no fold list: expected
    return build_cycle_table(icbhi_sample_dir)


def _assert_same_cycles(manifest: pd.DataFrame, cycles: pd.DataFrame, filenames: list[str]) -> None:
    assert filenames == cycles["Filename"].tolist()
    assert manifest["CycleIndex"].tolist() == cycles["CycleIndex"].tolist()
    assert manifest["CycleStart"].tolist() == cycles["CycleStart"].tolist()  # exact, not approximate
    assert manifest["CycleEnd"].tolist() == cycles["CycleEnd"].tolist()
    assert manifest["Crackles"].tolist() == cycles["Crackles"].tolist()
    assert manifest["Wheezes"].tolist() == cycles["Wheezes"].tolist()
    four = ("normal", "crackle", "wheeze", "both")
    assert manifest["Label"].tolist() == [
        four[c + 2 * w] for c, w in zip(cycles["Crackles"], cycles["Wheezes"])
    ]
    assert manifest["Split"].tolist() == cycles["Split"].tolist()
    assert manifest["PID"].tolist() == cycles["PID"].astype(str).tolist()
    assert manifest["device"].tolist() == cycles["Device"].tolist()
    assert manifest["site"].tolist() == cycles["AuscLoc"].tolist()
    np.testing.assert_array_equal(manifest["age"], cycles["Age"])
    np.testing.assert_array_equal(manifest["bmi"], cycles["BMI"])  # NaN for the children


def test_icbhi_sample_as_manifest_gives_the_same_cycles(icbhi_sample_dir, icbhi_sample_table, tmp_path):
    # manifest outside the data folder: absolute paths
    out = icbhi_to_manifest(icbhi_sample_table, icbhi_sample_dir, tmp_path / "icbhi.csv")
    manifest = load_manifest(out, ICBHI_MANIFEST_SPEC)
    assert len(manifest) == 97 and manifest["Path"].map(lambda p: Path(p).is_absolute()).all()
    _assert_same_cycles(manifest, icbhi_sample_table, [Path(f).name for f in manifest["Filename"]])


def test_icbhi_sample_as_manifest_inside_its_folder_keeps_the_stems(
    icbhi_sample_dir, icbhi_sample_table, tmp_path
):
    # a folder of links to the sample (the shared folder is read-only): relative paths, Filename == stem
    for wav in Path(icbhi_sample_dir).glob("*.wav"):
        (tmp_path / wav.name).symlink_to(wav)
    out = icbhi_to_manifest(icbhi_sample_table, tmp_path, tmp_path / "icbhi.csv")
    assert (
        (tmp_path / "icbhi.csv").read_text().splitlines()[1].startswith("101_1b1_Al_sc_Meditron.wav,0.036,")
    )
    manifest = load_manifest(out, ICBHI_MANIFEST_SPEC)
    assert manifest["Path"].tolist() == [f"{f}.wav" for f in icbhi_sample_table["Filename"]]
    _assert_same_cycles(manifest, icbhi_sample_table, manifest["Filename"].tolist())


def test_a_metadata_column_without_any_value_warns_naming_the_file_and_column(folder):
    """It loads (missing metadata is allowed) but would condition nothing: a warning names the CSV and the column;
    a column with at least one value, or a file without it, gives none."""
    from ls.data.manifest import ManifestWarning

    path = _csv(folder / "manifest.csv", """
path,start,end,label,patient,split,site,age
a/rec1.wav,0.0,1.5,normal,p01,train,,NA
b/rec1.wav,0.25,3.0,crackle,p02,test,,
c.wav,0,1,normal,7,test,,
""")  # fmt: skip
    with pytest.warns(ManifestWarning) as caught:
        table = load_manifest(path, SPEC)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"{path}: column 'age' is empty in every row")
    assert "every segment gets the same imputed value" in messages[0] and "dataset.continuous" in messages[0]
    assert messages[1].startswith(f"{path}: column 'site' is empty in every row")
    assert "every segment gets the unknown id" in messages[1] and "dataset.categorical" in messages[1]
    assert table["site"].isna().all() and table["age"].isna().all()
    path.write_text(path.read_text().replace("p02,test,,", "p02,test,back,"))
    with pytest.warns(ManifestWarning) as caught:
        load_manifest(path, SPEC)
    assert [str(w.message).split(":")[1].strip() for w in caught] == ["column 'age' is empty in every row"]


def test_a_required_column_without_any_value_is_one_problem(folder):
    path = _csv(folder / "manifest.csv", """
path,start,end,label,patient,split
a/rec1.wav,0.0,1.5,normal,,train
b/rec1.wav,0.25,3.0,crackle,,test
c.wav,0,1,normal,,test
""")  # fmt: skip
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, ManifestSpec(classes=("normal", "crackle")))
    assert exc.value.problems == [f"{path}, column patient: every cell is empty (a column that has no values)"]
