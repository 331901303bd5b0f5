"""SPRSound reader, tasks and synthetic generator (ls.data.sprsound, ls.data.synthetic_sprsound)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ls.data.sprsound import (
    EVENT_TABLE_COLUMNS,
    EVENT_TYPES,
    RECORD_TABLE_COLUMNS,
    RECORD_TYPES,
    SPLITS,
    TASKS,
    SprsoundFormatError,
    build_event_table,
    build_record_table,
    class_ids,
    counts,
    find_recordings,
    parse_name,
    read_annotation,
)
from ls.data.synthetic_sprsound import (
    CHALLENGE_SPLIT_SIZES,
    generate_sprsound,
    main,
    plan_database,
    split_sizes,
)

# The counts published in shared/data/sprsound-annotations/README.md, typed in from its text.
PUBLISHED_EVENTS = {"Normal": 52, "Rhonchi": 0, "Wheeze": 25, "Stridor": 0, "Coarse Crackle": 2,
                    "Fine Crackle": 41, "Wheeze+Crackle": 0}  # fmt: skip
PUBLISHED_RECORDS = {"Normal": 8, "CAS": 5, "DAS": 6, "CAS & DAS": 5, "Poor Quality": 0}
PUBLISHED_FILES_PER_SPLIT = {"train": 10, "test_inter": 7, "test_intra": 7}
PUBLISHED_FILES_PER_SITE = {"p1": 6, "p2": 7, "p3": 6, "p4": 5}
# README "Files" table: folder, stem, record, events, latest event end (ms).
PUBLISHED_FILES = """
train 40794825_4.2_0_p2_690 Normal | Normal 7 | 15333
train 40877908_4.0_0_p3_3438 Normal | Normal 4 | 14427
train 41004529_5.2_1_p1_1408 DAS | Normal 4, Coarse Crackle 1 | 7861
train 41063116_5.1_0_p3_863 CAS | Normal 7, Wheeze 1 | 14748
train 41063116_5.1_0_p4_864 CAS & DAS | Wheeze 2, Fine Crackle 8 | 14328
train 41161556_1.7_0_p2_3099 CAS & DAS | Wheeze 1, Coarse Crackle 1, Fine Crackle 3 | 11513
train 41161556_1.7_0_p3_3080 DAS | Fine Crackle 7 | 8936
train 41173389_4.1_1_p4_1541 CAS & DAS | Wheeze 3, Fine Crackle 4 | 14479
train 41227367_6.8_1_p2_2656 Normal | Normal 4 | 8849
train 41227367_6.9_1_p1_2685 Normal | Normal 5 | 15224
test_inter 41225759_7.2_1_p1_4201 CAS | Wheeze 1 | 3829
test_inter 41225759_7.2_1_p3_4221 Normal | Normal 3 | 9190
test_inter 64714172_3.6_1_p4_3579 Normal | Normal 7 | 15325
test_inter 65118898_0.7_0_p1_4170 CAS | Wheeze 8 | 7907
test_inter 65121853_1.5_0_p1_4226 CAS & DAS | Wheeze 1, Fine Crackle 1 | 8428
test_inter 65121853_1.5_0_p2_4241 CAS | Normal 2, Wheeze 3 | 9785
test_inter 65121853_1.5_0_p4_4225 DAS | Fine Crackle 5 | 14592
test_intra 40877908_4.0_0_p2_3434 CAS | Normal 1, Wheeze 2 | 15250
test_intra 41134874_13.2_1_p2_354 Normal | Normal 2 | 5409
test_intra 41227367_6.7_1_p2_630 DAS | Normal 4, Fine Crackle 1 | 15331
test_intra 41227367_6.9_1_p4_2722 Normal | Normal 2 | 15224
test_intra 41263533_6.9_1_p1_885 DAS | Fine Crackle 2 | 8727
test_intra 41281333_0.2_1_p3_2933 CAS & DAS | Wheeze 3, Fine Crackle 2 | 7180
test_intra 65099422_0.5_0_p3_2599 DAS | Fine Crackle 8 | 9200
"""


def _published_files() -> pd.DataFrame:
    rows = []
    for line in PUBLISHED_FILES.strip().splitlines():
        head, events, max_end = (part.strip() for part in line.split("|"))
        split, stem, record = head.split(" ", 2)
        per_type = {ev.rsplit(" ", 1)[0]: int(ev.rsplit(" ", 1)[1]) for ev in events.split(", ")}
        rows.append(
            {"split": split, "stem": stem, "record": record, "events": per_type, "max_end": int(max_end)}
        )
    return pd.DataFrame(rows).set_index("stem")


# --------------------------------------------------------------------------------------------- helpers


def _json(record: str = "Normal", events: list | None = None) -> str:
    if events is None:
        events = [{"start": "100", "end": "900", "type": "Normal"}]
    return json.dumps({"record_annotation": record, "event_annotation": events})


def _layout(root: Path, files: dict[tuple[str, str], str], audio: bool = True, sr: int = 4000) -> Path:
    """A BioCAS layout under ``root`` with the given ``{(split, stem): json text}`` (empty folders for the
    other splits) and, with ``audio``, a 2 s silent wav per JSON."""
    folders = {"train": ("train2022_json", "train2022_wav"),
               "test_inter": ("test2022_json/inter_test_json", "test2022_wav"),
               "test_intra": ("test2022_json/intra_test_json", "test2022_wav")}  # fmt: skip
    for json_folder, wav_folder in folders.values():
        (root / json_folder).mkdir(parents=True, exist_ok=True)
        if audio:
            (root / wav_folder).mkdir(parents=True, exist_ok=True)
    for (split, stem), text in files.items():
        json_folder, wav_folder = folders[split]
        (root / json_folder / f"{stem}.json").write_text(text)
        if audio:
            sf.write(
                root / wav_folder / f"{stem}.wav", np.zeros(2 * sr, dtype=np.float32), sr, subtype="PCM_16"
            )
    return root


STEM = "41004529_5.2_1_p1_1408"


# --------------------------------------------------------------------------------------------- real files


def test_real_annotations_match_the_published_counts(sprsound_annotations_dir):
    table = build_event_table(sprsound_annotations_dir, require_audio=False)
    assert list(table.columns) == list(EVENT_TABLE_COLUMNS)
    assert len(table) == 120
    assert table["Label"].value_counts().reindex(EVENT_TYPES, fill_value=0).to_dict() == PUBLISHED_EVENTS

    files = find_recordings(sprsound_annotations_dir, require_audio=False)
    assert len(files) == 24
    records = pd.Series([read_annotation(f.json_path).record for f in files])
    records_count = records.value_counts().reindex(RECORD_TYPES, fill_value=0)
    assert records_count.to_dict() == PUBLISHED_RECORDS
    per_file = table.groupby("Filename").first()
    assert per_file["Record"].value_counts().reindex(RECORD_TYPES, fill_value=0).equals(records_count)
    assert per_file["Split"].value_counts().to_dict() == PUBLISHED_FILES_PER_SPLIT
    assert per_file["Site"].value_counts().to_dict() == PUBLISHED_FILES_PER_SITE
    assert per_file["Sex"].value_counts().to_dict() == {"M": 12, "F": 12}
    patients = per_file.groupby("PID")["Sex"].first()
    assert len(patients) == 15 and patients.value_counts().to_dict() == {"M": 7, "F": 8}
    ages = per_file.loc[per_file["PID"] == 41227367, "Age"]
    assert sorted(ages) == [6.7, 6.8, 6.9, 6.9]  # the age in the name changes between recordings
    pids = table.groupby("Split")["PID"].apply(set)
    assert pids["train"] & pids["test_intra"] == {40877908, 41227367}
    assert not pids["train"] & pids["test_inter"]

    # counts() reports the same per label and split
    report = counts(table)
    assert report.loc[list(EVENT_TYPES), "total"].to_dict() == PUBLISHED_EVENTS
    assert report.loc["total", "total"] == 120


def test_real_annotations_match_the_published_per_file_table(sprsound_annotations_dir):
    published = _published_files()
    table = build_event_table(sprsound_annotations_dir, require_audio=False)
    assert set(table["Filename"]) == set(published.index)
    for stem, rows in table.groupby("Filename"):
        expected = published.loc[stem]
        assert rows["Split"].iloc[0] == expected["split"]
        assert rows["Record"].iloc[0] == expected["record"]
        assert rows["Label"].value_counts().to_dict() == expected["events"], stem
        assert round(rows["CycleEnd"].max() * 1000) == expected["max_end"], stem
        folder = "train2022_wav" if expected["split"] == "train" else "test2022_wav"
        assert rows["Path"].iloc[0] == f"{folder}/{stem}.wav"
        # CycleIndex is time order, and no two events overlap
        assert rows["CycleIndex"].tolist() == list(range(len(rows)))
        assert (rows["CycleStart"].to_numpy()[1:] >= rows["CycleEnd"].to_numpy()[:-1]).all()


def test_real_annotations_are_often_out_of_order_and_some_events_touch(sprsound_annotations_dir):
    files = find_recordings(sprsound_annotations_dir, require_audio=False)
    annotations = [read_annotation(f.json_path) for f in files]
    # README: events are not listed in time order in 15 of the 24 files
    assert sum(not a.events["json_index"].is_monotonic_increasing for a in annotations) == 15
    touching = sum(
        int((a.events["start"].to_numpy()[1:] == a.events["end"].to_numpy()[:-1]).sum()) for a in annotations
    )
    assert touching > 0


# ------------------------------------------------------------------------------------ audio under real names


@pytest.fixture(scope="module")
def real_names_dir(sprsound_annotations_dir, tmp_path_factory) -> Path:
    return generate_sprsound(tmp_path_factory.mktemp("sprsound_real_names"), seed=3,
                             names_from=sprsound_annotations_dir)  # fmt: skip


def test_audio_under_real_names_gives_the_annotated_event_table(real_names_dir, sprsound_annotations_dir):
    with_audio = build_event_table(real_names_dir)
    annotations_only = build_event_table(sprsound_annotations_dir, require_audio=False)
    pd.testing.assert_frame_equal(with_audio, annotations_only)
    for path in with_audio["Path"].unique():
        assert (real_names_dir / path).is_file()
    # the JSON files are the real ones, unchanged
    for f in find_recordings(sprsound_annotations_dir, require_audio=False):
        rel = f.json_path.relative_to(sprsound_annotations_dir)
        assert (real_names_dir / rel).read_bytes() == f.json_path.read_bytes()


def test_audio_under_real_names_gives_the_record_table(real_names_dir):
    published = _published_files()
    records = build_record_table(real_names_dir)
    assert list(records.columns) == list(RECORD_TABLE_COLUMNS)
    assert records["Filename"].tolist() == sorted(published.index)
    assert records.index.equals(pd.RangeIndex(24))
    for row in records.itertuples():
        expected = published.loc[row.Filename]
        assert (row.Split, row.Label) == (expected["split"], expected["record"])
        assert (row.CycleIndex, row.CycleStart) == (0, 0.0)
        folder = "train2022_wav" if row.Split == "train" else "test2022_wav"
        assert row.Path == f"{folder}/{row.Filename}.wav"
        info = sf.info(str(real_names_dir / row.Path))
        assert info.samplerate == 8000 and row.CycleEnd == info.frames / info.samplerate
        # at least the latest event end plus a little, at most 1 s more
        assert (
            expected["max_end"] / 1000 + 0.2 - 1e-3 <= row.CycleEnd <= expected["max_end"] / 1000 + 1.0 + 1e-3
        )
    assert records["Age"].dtype == np.float64 and records["PID"].dtype == np.int64
    assert counts(records).loc[list(RECORD_TYPES), "total"].to_dict() == PUBLISHED_RECORDS


# --------------------------------------------------------------------------------------------- names


def test_parse_name_reads_all_five_fields():
    name = parse_name("41004529_5.2_1_p1_1408")
    assert (name.patient, name.age, name.sex, name.site, name.recording) == (41004529, 5.2, "F", "p1", 1408)
    assert parse_name("40794825_4.2_0_p2_690").sex == "M"
    assert name.stem == "41004529_5.2_1_p1_1408"


@pytest.mark.parametrize(
    "stem, fragment",
    [
        ("41004529_5.2_1_p1", "expected 5"),
        ("41004529_5.2_1_p1_1408_x", "expected 5"),
        ("4100452x_5.2_1_p1_1408", "patient number"),
        ("41004529_five_1_p1_1408", "age"),
        ("41004529_5.2_2_p1_1408", "sex"),
        ("41004529_5.2_1_p5_1408", "location"),
        ("41004529_5.2_1_p1_14a8", "recording number"),
    ],
)
def test_parse_name_rejects_malformed_names_naming_the_file(stem, fragment):
    with pytest.raises(SprsoundFormatError, match=fragment) as err:
        parse_name(stem, source=f"/data/train2022_json/{stem}.json")
    assert f"/data/train2022_json/{stem}.json" in str(err.value)


def test_a_bad_file_name_in_the_layout_is_an_error_naming_the_file(tmp_path):
    root = _layout(tmp_path, {("train", "41004529_5.2_1_p9_1408"): _json()})
    with pytest.raises(SprsoundFormatError, match="location 'p9'") as err:
        build_event_table(root)
    assert "train2022_json/41004529_5.2_1_p9_1408.json" in str(err.value)


# -------------------------------------------------------------------------------------------- JSON validation


def _ev(start: object, end: object, kind: str = "Normal") -> dict:
    return {"start": start, "end": end, "type": kind}


NORMAL = _ev("1", "9")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"event_annotation": []}), "missing key 'record_annotation'"),
        (json.dumps({"recording_annotation": "Normal", "event_annotation": []}), "found 'recording_anno"),
        (json.dumps({"record_annotation": "Normal"}), "missing key 'event_annotation'"),
        (json.dumps({"record_annotation": "Noisy", "event_annotation": []}), "record_annotation 'Noisy'"),
        (json.dumps({"record_annotation": "Normal", "event_annotation": {}}), "must be a list"),
        (_json(events=[{"start": "1", "end": "9"}]), r"event_annotation\[0\] has no key 'type'"),
        (_json(events=[{"end": "9", "type": "Normal"}]), r"event_annotation\[0\] has no key 'start'"),
        (_json(events=[NORMAL, _ev("2x", "30")]), r"event_annotation\[1\].start '2x' is not a number"),
        (_json(events=[_ev("-5", "9")]), r"event_annotation\[0\].start '-5'"),
        (_json(events=[_ev(None, "9")]), r"event_annotation\[0\].start is None"),
        (_json(events=[_ev("900", "100")]), r"event_annotation\[0\] starts at 900"),
        (_json(events=[_ev("500", "500")]), "need start < end"),
        (_json(events=[_ev("1", "9", "Crackle")]), r"event_annotation\[0\].type 'Crackle'"),
        (_json(events=[_ev("1000", "2000"), _ev("100", "1001", "Wheeze")]),
         r"event_annotation\[0\] \(1000-2000 ms\) overlaps event_annotation\[1\] \(100-1001 ms\)"),
    ],
)  # fmt: skip
def test_read_annotation_rejects_bad_files_naming_file_and_key(tmp_path, text, fragment):
    path = tmp_path / f"{STEM}.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SprsoundFormatError, match=fragment) as err:
        read_annotation(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_read_annotation_sorts_events_and_accepts_touching_ones(tmp_path):
    path = tmp_path / f"{STEM}.json"
    path.write_text(_json("CAS", [
        {"start": "2000", "end": "3000", "type": "Wheeze"},
        {"start": "260", "end": "1485", "type": "Normal"},
        {"start": "1485", "end": "2000", "type": "Normal"},  # touches both neighbours
    ]))  # fmt: skip
    ann = read_annotation(path)
    assert ann.record == "CAS"
    assert ann.events["start"].tolist() == [0.26, 1.485, 2.0]
    assert ann.events["end"].tolist() == [1.485, 2.0, 3.0]
    assert ann.events["type"].tolist() == ["Normal", "Normal", "Wheeze"]
    assert ann.events["json_index"].tolist() == [1, 2, 0]


def test_a_bad_json_inside_the_layout_stops_the_table_naming_it(tmp_path):
    bad = _json(
        events=[{"start": "1", "end": "9", "type": "Normal"}, {"start": "5", "end": "20", "type": "Normal"}]
    )
    root = _layout(tmp_path, {("train", STEM): _json(), ("test_intra", "41004529_5.3_1_p2_1500"): bad})
    with pytest.raises(SprsoundFormatError, match="overlaps") as err:
        build_event_table(root)
    assert "intra_test_json/41004529_5.3_1_p2_1500.json" in str(err.value)


# ------------------------------------------------------------------------------------------ layout validation


def test_missing_wav_is_an_error_naming_it(tmp_path):
    root = _layout(tmp_path, {("train", STEM): _json(), ("test_inter", "65118898_0.7_0_p1_4170"): _json()})
    (root / "test2022_wav" / "65118898_0.7_0_p1_4170.wav").unlink()
    for build in (build_event_table, build_record_table):
        with pytest.raises(FileNotFoundError, match="missing audio") as err:
            build(root)
        assert "test2022_wav/65118898_0.7_0_p1_4170.wav" in str(err.value)
        assert "inter_test_json/65118898_0.7_0_p1_4170.json" in str(err.value)
    # without audio the annotations alone are read
    assert len(build_event_table(root, require_audio=False)) == 2


@pytest.mark.parametrize("folder", ["train2022_json", "test2022_json/intra_test_json", "test2022_wav"])
def test_missing_folder_is_an_error_naming_it(tmp_path, folder):
    root = _layout(tmp_path, {("train", STEM): _json()})
    path = root / folder
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
    with pytest.raises(FileNotFoundError, match="missing") as err:
        build_event_table(root)
    assert str(path) in str(err.value)


def test_missing_root_and_audio_folders_without_audio(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_event_table(tmp_path / "nowhere")
    root = _layout(tmp_path / "db", {("train", STEM): _json()}, audio=False)
    assert len(build_event_table(root, require_audio=False)) == 1
    with pytest.raises(FileNotFoundError, match="train2022_wav"):
        build_event_table(root)


def test_a_recording_in_two_splits_is_an_error(tmp_path):
    root = _layout(tmp_path, {("test_inter", STEM): _json(), ("test_intra", STEM): _json()})
    with pytest.raises(SprsoundFormatError, match="also annotated in") as err:
        build_event_table(root)
    assert "inter_test_json" in str(err.value) and "intra_test_json" in str(err.value)


def test_nothing_is_dropped_silently(tmp_path, caplog):
    root = _layout(tmp_path, {
        ("train", STEM): _json(),
        ("train", "41004529_5.2_1_p2_1409"): _json("Poor Quality", []),
        ("test_inter", "65118898_0.7_0_p1_4170"): _json("CAS", []),
        ("test_intra", "41004529_5.3_1_p3_1500"): _json(events=[_ev("1000", "2600")]),
    })  # fmt: skip
    sf.write(root / "train2022_wav" / "99_1.0_0_p1_1.wav", np.zeros(100, dtype=np.float32), 4000)  # no JSON
    with caplog.at_level(logging.INFO, logger="ls.data.sprsound"):
        table = build_event_table(root)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "1 wav file(s) without an annotation JSON" in messages and "99_1.0_0_p1_1.wav" in messages
    assert "1 Poor Quality recording(s) have no events" in messages
    assert "1 recording(s) list no event" in messages and "65118898_0.7_0_p1_4170" in messages
    assert "events ending after the end of their audio" in messages  # 2.6 s event in a 2 s wav
    assert table["Filename"].tolist() == [STEM, "41004529_5.3_1_p3_1500"]
    # the record table keeps every recording
    records = build_record_table(root)
    assert len(records) == 4 and set(records["Label"]) == {"Normal", "Poor Quality", "CAS"}


def test_only_some_splits_can_be_read(tmp_path):
    root = _layout(tmp_path, {("train", STEM): _json(), ("test_inter", "65118898_0.7_0_p1_4170"): _json()})
    table = build_event_table(root, splits=("train",))
    assert table["Split"].tolist() == ["train"]
    with pytest.raises(ValueError, match="unknown SPRSound split"):
        build_event_table(root, splits=("test",))


# --------------------------------------------------------------------------------------------- tasks


def _event_table(types: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"Label": types, "Record": ["CAS & DAS"] * len(types)})


def test_event_tasks_map_every_event_type():
    table = _event_table(list(EVENT_TYPES))
    assert class_ids(table, "event7").tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert class_ids(table, "event2").tolist() == [0, 1, 1, 1, 1, 1, 1]
    # ICBHI-compatible: crackle = Fine/Coarse Crackle, wheeze = Wheeze/Rhonchi/Stridor, both = Wheeze+Crackle
    expected_icbhi4 = {"Normal": 0, "Rhonchi": 2, "Wheeze": 2, "Stridor": 2, "Coarse Crackle": 1,
                       "Fine Crackle": 1, "Wheeze+Crackle": 3}  # fmt: skip
    assert dict(zip(EVENT_TYPES, class_ids(table, "icbhi4").tolist())) == expected_icbhi4
    assert TASKS["icbhi4"].classes == ("normal", "crackle", "wheeze", "both")
    assert TASKS["event7"].classes[0] == "Normal" and TASKS["event2"].classes == ("Normal", "Adventitious")
    for ids in (class_ids(table, name) for name in ("event2", "event7", "icbhi4")):
        assert ids.dtype == np.int64


def test_record_tasks_map_every_record_type():
    table = pd.DataFrame({"Label": list(RECORD_TYPES)})
    assert class_ids(table, "record5").tolist() == [0, 1, 2, 3, 4]
    assert class_ids(table, "record3").tolist() == [0, 1, 1, 1, 2]
    assert TASKS["record3"].classes == ("Normal", "Adventitious", "Poor Quality")
    assert TASKS["record5"].classes == RECORD_TYPES


def test_event_table_bits_agree_with_the_icbhi4_task(tmp_path):
    events = [
        {"start": str(1000 * i), "end": str(1000 * i + 800), "type": t} for i, t in enumerate(EVENT_TYPES)
    ]
    root = _layout(tmp_path, {("train", STEM): _json("CAS & DAS", events)}, audio=False)
    table = build_event_table(root, require_audio=False)
    assert table["Label"].tolist() == list(EVENT_TYPES)
    assert table["Crackles"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert table["Wheezes"].tolist() == [0, 1, 1, 1, 0, 0, 1]
    np.testing.assert_array_equal(table["Crackles"] + 2 * table["Wheezes"], class_ids(table, "icbhi4"))


def test_tasks_refuse_the_wrong_table_level_and_unknown_labels():
    with pytest.raises(ValueError, match="record-level and needs a record table"):
        class_ids(_event_table(["Normal"]), "record5")
    with pytest.raises(ValueError, match="event-level and needs an event table"):
        class_ids(pd.DataFrame({"Label": ["Normal"]}), "event7")
    with pytest.raises(ValueError, match="'Crackle'"):
        class_ids(_event_table(["Normal", "Crackle"]), "event7")
    with pytest.raises(KeyError, match="unknown SPRSound task"):
        class_ids(_event_table(["Normal"]), "event4")


def test_counts_lists_every_type_with_zeros_and_totals():
    table = pd.DataFrame({"Label": ["Wheeze", "Normal", "Normal"], "Split": ["test_intra", "train", "train"],
                          "Record": ["CAS"] * 3})  # fmt: skip
    report = counts(table)
    assert list(report.index) == [*EVENT_TYPES, "total"]
    assert list(report.columns) == ["train", "test_intra", "total"]
    assert report.loc["Normal", "train"] == 2 and report.loc["Wheeze", "test_intra"] == 1
    assert report.loc["Stridor"].tolist() == [0, 0, 0] and report.loc["total", "total"] == 3


# --------------------------------------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def planned_dir(tmp_path_factory) -> Path:
    return generate_sprsound(tmp_path_factory.mktemp("sprsound_planned"), recordings=40, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(planned_dir, tmp_path):
    again = generate_sprsound(tmp_path / "again", recordings=40, seed=0)
    assert _files(again) == _files(planned_dir)
    other = _files(generate_sprsound(tmp_path / "other", recordings=40, seed=1))
    assert other != _files(planned_dir)


def test_generated_database_reads_back_as_planned(planned_dir):
    plan = plan_database(40, seed=0)
    events = build_event_table(planned_dir)
    records = build_record_table(planned_dir)
    assert records["Filename"].tolist() == [r.stem for r in plan]
    assert records["Label"].tolist() == [r.record for r in plan]
    assert records["Split"].tolist() == [r.split for r in plan]
    np.testing.assert_allclose(records["CycleEnd"], [r.duration for r in plan], atol=1 / 8000)
    expected = sorted((r.stem, s / 1000, e / 1000, t) for r in plan for s, e, t in r.events)
    got = list(zip(events["Filename"], events["CycleStart"], events["CycleEnd"], events["Label"]))
    assert got == expected
    # JSONs in the real format: start/end as strings of whole ms, one line
    for r in plan[:5]:
        text = (planned_dir / r.json_rel).read_text()
        data = json.loads(text)
        assert "\n" not in text and set(data) == {"record_annotation", "event_annotation"}
        assert all(isinstance(ev["start"], str) and ev["start"].isdigit() for ev in data["event_annotation"])


def test_generated_database_has_what_tasks_need(planned_dir):
    events = build_event_table(planned_dir)
    records = build_record_table(planned_dir)
    sizes = records["Split"].value_counts().to_dict()
    assert sizes == split_sizes(40) == {"train": 29, "test_inter": 5, "test_intra": 6}
    for split in SPLITS:
        assert set(events.loc[events["Split"] == split, "Label"]) == set(EVENT_TYPES)
        assert set(records.loc[records["Split"] == split, "Label"]) == set(RECORD_TYPES)
    train = set(records.loc[records["Split"] == "train", "PID"])
    assert len(train) >= 2
    assert not train & set(records.loc[records["Split"] == "test_inter", "PID"])
    assert set(records.loc[records["Split"] == "test_intra", "PID"]) <= train
    # record types are consistent with their events
    for stem, rows in events.groupby("Filename"):
        record = rows["Record"].iloc[0]
        has_c, has_w = bool(rows["Crackles"].any()), bool(rows["Wheezes"].any())
        assert {"Normal": (False, False), "CAS": (False, True), "DAS": (True, False),
                "CAS & DAS": (True, True)}[record] == (has_c, has_w), stem  # fmt: skip
    assert (records.loc[records["Label"] == "Poor Quality", "Filename"].isin(events["Filename"])).sum() == 0
    # out-of-order JSON listings occur, as in the real files
    out_of_order = [
        not read_annotation(planned_dir / r.json_rel).events["json_index"].is_monotonic_increasing
        for r in plan_database(40, seed=0)
        if len(r.events) > 1
    ]
    assert any(out_of_order) and not all(out_of_order)


def test_full_size_plan_has_the_challenge_split_sizes():
    assert split_sizes(2683) == CHALLENGE_SPLIT_SIZES
    assert sum(split_sizes(300).values()) == 300
    with pytest.raises(ValueError, match=">= 6"):
        split_sizes(5)


def _tonality(x: np.ndarray, sr: int) -> float:
    """Peak-to-median power in 100-1000 Hz: large for a sustained tone."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    band = spec[(freqs >= 100) & (freqs <= 1000)]
    return float(band.max() / np.median(band))


def _kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x**4).mean() / (x**2).mean() ** 2)


def _centroid(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    return float((spec * np.fft.rfftfreq(len(x), 1 / sr)).sum() / spec.sum())


def test_generated_audio_makes_labels_and_metadata_matter(planned_dir):
    events = build_event_table(planned_dir)
    audio = {p: sf.read(str(planned_dir / p)) for p in events["Path"].unique()}
    feats = []
    for row in events.itertuples():
        x, sr = audio[row.Path]
        seg = x[int(row.CycleStart * sr) : int(row.CycleEnd * sr)]
        feats.append((row.Label, row.Sex, _tonality(seg, sr), _kurtosis(seg), _centroid(seg, sr)))
    f = pd.DataFrame(feats, columns=["Label", "Sex", "tonality", "kurtosis", "centroid"])
    med = f.groupby("Label").median(numeric_only=True)
    for tonal in ("Wheeze", "Rhonchi", "Stridor"):
        assert med.loc[tonal, "tonality"] > 3 * med.loc["Normal", "tonality"], tonal
    for crackle in ("Fine Crackle", "Coarse Crackle"):
        assert med.loc[crackle, "kurtosis"] > 2 * med.loc["Normal", "kurtosis"], crackle
    normal = f[f["Label"] == "Normal"].groupby("Sex")["centroid"].median()
    assert normal["F"] > 1.1 * normal["M"]  # sex colours the breath sound
    records = build_record_table(planned_dir)
    rms = {r.Label: [] for r in records.itertuples()}
    for r in records.itertuples():
        x, _ = sf.read(str(planned_dir / r.Path))
        rms[r.Label].append(float(np.sqrt((x**2).mean())))
    assert np.median(rms["Poor Quality"]) > 2 * np.median(rms["Normal"])


def test_generator_refuses_to_mix_with_another_database(planned_dir, tmp_path):
    out = generate_sprsound(tmp_path / "db", recordings=6, seed=0)
    generate_sprsound(out, recordings=6, seed=0)  # the same plan again is fine
    with pytest.raises(FileExistsError, match="not in this plan"):
        generate_sprsound(out, recordings=7, seed=0)


def test_generator_command_line(tmp_path, sprsound_annotations_dir, capsys):
    assert main([str(tmp_path / "a"), "--recordings", "6", "--seed", "2"]) == 0
    assert len(build_record_table(tmp_path / "a")) == 6
    assert (
        main([str(tmp_path / "b"), "--names-from", str(sprsound_annotations_dir), "--sample-rate", "4000"])
        == 0
    )
    assert sf.info(str(next((tmp_path / "b" / "train2022_wav").glob("*.wav")))).samplerate == 4000
    assert main([str(tmp_path / "c"), "--recordings", "3"]) == 2  # bad input: the common exit code
    assert ">= 6" in capsys.readouterr().err
