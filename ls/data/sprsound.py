"""Reading SPRSound, the SJTU Paediatric Respiratory Sound Database, in its BioCAS 2022 challenge layout.

Layout under a root folder (the challenge release, ``BioCAS2022/``)::

    train2022_wav/<stem>.wav                     train2022_json/<stem>.json
    test2022_wav/<stem>.wav  (inter + intra)     test2022_json/inter_test_json/<stem>.json
                                                 test2022_json/intra_test_json/<stem>.json

The JSON folder a file sits in gives its split (:data:`SPLITS`): ``train``, ``test_inter`` (patients not in
train) or ``test_intra`` (other recordings of training patients). The stem is
``<patient>_<age>_<sex>_<location>_<recording>``, e.g. ``41004529_5.2_1_p1_1408``: patient number, age in
years (one decimal; it changes between a patient's recordings), sex ``0`` male / ``1`` female, chest location
``p1``..``p4`` (:data:`SITES`), recording number. A JSON file reads::

    {"record_annotation": "DAS",
     "event_annotation": [{"start": "3045", "end": "4044", "type": "Normal"}, ...]}

with ``start``/``end`` whole milliseconds written as strings, events often not in time order (they are sorted
here; overlapping events are an error, touching ones are fine).

Two tables in the canonical segment form (see ``docs/datasets.md``), one row per segment, sorted by
(``Filename``, ``CycleIndex``):

- :func:`build_event_table`: one row per annotated event; ``Label`` is the event type, ``Record`` the
  recording's record-level type, ``Crackles``/``Wheezes`` the ICBHI-compatible bits below.
- :func:`build_record_table`: one row per recording, ``CycleStart`` 0, ``CycleEnd`` the audio duration,
  ``Label`` the record type.

Tasks (``ls.data.tasks``: event2, event7, record3, record5, and ICBHI's icbhi4/icbhi2 on events): :func:`class_ids`
maps a table to int64 class ids; class 0 is always the normal class. Events carry ICBHI-compatible
(crackle, wheeze) bits, ``ls.data.tasks.ICBHI_BITS``: crackles are the discontinuous sounds, wheezes the continuous
ones, so a model trained on ICBHI's four classes can be evaluated on SPRSound events and back.

Nothing is dropped silently: a recording without events contributes no event rows and is counted in a log
message (INFO for Poor Quality records, which are expected to have none; WARNING otherwise).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import soundfile as sf

from ls.data.labels import task_class_ids
from ls.data.tasks import EVENT_TYPES, ICBHI_BITS, RECORD_TYPES, TASKS, Task, get_task
from ls.utils.errors import UnknownNameError

log = logging.getLogger(__name__)

#: Split name -> (JSON folder, wav folder), relative to the root, ``/``-separated.
SPLIT_FOLDERS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "train": ("train2022_json", "train2022_wav"),
    "test_inter": ("test2022_json/inter_test_json", "test2022_wav"),
    "test_intra": ("test2022_json/intra_test_json", "test2022_wav"),
})  # fmt: skip
SPLITS: tuple[str, ...] = tuple(SPLIT_FOLDERS)

#: Chest locations (fourth stem field).
SITES: Mapping[str, str] = MappingProxyType(
    {"p1": "left posterior", "p2": "left lateral", "p3": "right posterior", "p4": "right lateral"}
)
#: Sex digit in the stem -> ``Sex`` value.
SEX_CODES: Mapping[str, str] = MappingProxyType({"0": "M", "1": "F"})

#: Columns of the event table, in order.
EVENT_TABLE_COLUMNS: tuple[str, ...] = (
    "Filename", "Path", "CycleIndex", "CycleStart", "CycleEnd", "PID", "Split", "Label", "Crackles",
    "Wheezes", "Age", "Sex", "Site", "Record",
)  # fmt: skip
#: Columns of the record table, in order.
RECORD_TABLE_COLUMNS: tuple[str, ...] = (
    "Filename", "Path", "CycleIndex", "CycleStart", "CycleEnd", "PID", "Split", "Label", "Age", "Sex", "Site",
)  # fmt: skip

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
# Annotation times are whole milliseconds, so an event may end up to 1 ms after the wav's last sample.
_END_TOLERANCE_S = 1e-3


class SprsoundFormatError(ValueError):
    """An SPRSound file or folder is malformed; the message names the file (and key) and what was expected."""


# --------------------------------------------------------------------------------------------- file names


@dataclass(frozen=True)
class RecordingName:
    """The fields of a stem ``<patient>_<age>_<sex>_<location>_<recording>``."""

    patient: int
    age: float  # years
    sex: str  # "M" or "F"
    site: str  # "p1".."p4"
    recording: int

    @property
    def stem(self) -> str:
        """The stem in the database's spelling (age with one decimal, sex as 0/1)."""
        sex = {v: k for k, v in SEX_CODES.items()}[self.sex]
        return f"{self.patient}_{self.age:.1f}_{sex}_{self.site}_{self.recording}"


def parse_name(stem: str, source: str | Path | None = None) -> RecordingName:
    """Split a stem (file name without extension) into its five fields.

    Raises :class:`SprsoundFormatError` naming ``source`` (default: the stem) and the expected form for a
    wrong number of fields, a non-numeric patient, age or recording number, a sex other than 0/1, or an
    unknown location.
    """
    where = str(source) if source is not None else repr(stem)
    expected = "<patient>_<age>_<sex 0|1>_<location p1..p4>_<recording>, e.g. 41004529_5.2_1_p1_1408"
    tokens = stem.split("_")
    if len(tokens) != 5:
        raise SprsoundFormatError(
            f"{where}: recording name {stem!r} has {len(tokens)} '_'-separated fields, "
            f"expected 5 ({expected})"
        )
    patient, age, sex, site, recording = tokens
    if not patient.isdigit():
        raise SprsoundFormatError(f"{where}: patient number {patient!r} in {stem!r} is not a number")
    if not _NUMBER.match(age):
        raise SprsoundFormatError(f"{where}: age {age!r} in {stem!r} is not a number of years like 5.2")
    if sex not in SEX_CODES:
        raise SprsoundFormatError(f"{where}: sex {sex!r} in {stem!r} must be 0 (male) or 1 (female)")
    if site not in SITES:
        raise SprsoundFormatError(f"{where}: location {site!r} in {stem!r} is not one of {', '.join(SITES)}")
    if not recording.isdigit():
        raise SprsoundFormatError(f"{where}: recording number {recording!r} in {stem!r} is not a number")
    return RecordingName(int(patient), float(age), SEX_CODES[sex], site, int(recording))


# --------------------------------------------------------------------------------------------- JSON files


@dataclass(frozen=True)
class Annotation:
    """One JSON annotation file.

    ``events``: DataFrame, one row per event in time order, columns ``start``, ``end`` (float64, seconds),
    ``type`` (str, one of :data:`EVENT_TYPES`), ``json_index`` (int64, position in ``event_annotation``).
    """

    record: str
    events: pd.DataFrame


def _milliseconds(value: object, path: Path, where: str) -> float:
    # The files write whole ms as strings ("4511"); plain JSON numbers mean the same and are accepted too.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SprsoundFormatError(
            f'{path}: {where} is {value!r}, expected milliseconds as a string like "4511"'
        )
    try:
        ms = float(value)
    except ValueError:
        raise SprsoundFormatError(f"{path}: {where} {value!r} is not a number of milliseconds") from None
    if not math.isfinite(ms) or ms < 0:
        raise SprsoundFormatError(f"{path}: {where} {value!r} must be a finite number of milliseconds >= 0")
    return ms


def read_annotation(path: str | Path) -> Annotation:
    """Read and validate one JSON annotation file.

    Raises :class:`SprsoundFormatError` naming the file and the key (``event_annotation[i].start``, 0-based
    as in the JSON list) for: invalid JSON, a missing key, a non-numeric or negative time, ``start >= end``,
    an unknown record or event type, or two overlapping events (events that only touch are fine).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SprsoundFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SprsoundFormatError(
            f"{path}: expected a JSON object with record_annotation and event_annotation"
        )
    for key in ("record_annotation", "event_annotation"):
        if key not in data:
            hint = ""
            if key == "record_annotation" and "recording_annotation" in data:
                # The repository README's example uses this key; the released files never do.
                hint = " (found 'recording_annotation', the key of the SPRSound README's example)"
            raise SprsoundFormatError(f"{path}: missing key {key!r}{hint}")
    record = data["record_annotation"]
    if record not in RECORD_TYPES:
        raise SprsoundFormatError(
            f"{path}: record_annotation {record!r} is not one of {', '.join(RECORD_TYPES)}"
        )
    entries = data["event_annotation"]
    if not isinstance(entries, list):
        raise SprsoundFormatError(
            f"{path}: event_annotation must be a list of events, got {type(entries).__name__}"
        )

    starts, ends, types = [], [], []
    for i, entry in enumerate(entries):
        where = f"event_annotation[{i}]"
        if not isinstance(entry, dict):
            raise SprsoundFormatError(f"{path}: {where} must be an object with start, end and type")
        for key in ("start", "end", "type"):
            if key not in entry:
                raise SprsoundFormatError(f"{path}: {where} has no key {key!r}")
        start = _milliseconds(entry["start"], path, f"{where}.start")
        end = _milliseconds(entry["end"], path, f"{where}.end")
        if start >= end:
            raise SprsoundFormatError(
                f"{path}: {where} starts at {entry['start']} ms and ends at {entry['end']} ms; "
                "need start < end"
            )
        if entry["type"] not in EVENT_TYPES:
            raise SprsoundFormatError(
                f"{path}: {where}.type {entry['type']!r} is not one of {', '.join(EVENT_TYPES)}"
            )
        starts.append(start)
        ends.append(end)
        types.append(entry["type"])

    events = pd.DataFrame({
        "start": np.asarray(starts, dtype=np.float64) / 1000.0,
        "end": np.asarray(ends, dtype=np.float64) / 1000.0,
        "type": pd.Series(types, dtype=object),
        "json_index": np.arange(len(types), dtype=np.int64),
    })  # fmt: skip
    # Most files list events out of time order; CycleIndex is defined by time.
    events = events.sort_values(["start", "end"], kind="stable", ignore_index=True)
    overlap = np.flatnonzero(events["start"].to_numpy()[1:] < events["end"].to_numpy()[:-1])
    if overlap.size:
        a, b = events.iloc[overlap[0]], events.iloc[overlap[0] + 1]
        raise SprsoundFormatError(
            f"{path}: event_annotation[{b.json_index}] ({b.start * 1000:g}-{b.end * 1000:g} ms) overlaps "
            f"event_annotation[{a.json_index}] ({a.start * 1000:g}-{a.end * 1000:g} ms); events must not "
            "overlap (touching is fine)"
        )
    return Annotation(record=record, events=events)


# --------------------------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class RecordingFile:
    """One recording found in the layout: its split, JSON file, wav path (relative to the root) and name."""

    split: str
    json_path: Path
    wav_rel: str
    name: RecordingName

    @property
    def stem(self) -> str:
        return self.json_path.stem


def find_recordings(
    root: str | Path, *, require_audio: bool = True, splits: Sequence[str] = SPLITS
) -> list[RecordingFile]:
    """Every JSON annotation file of ``splits`` under ``root``, sorted by stem.

    Raises FileNotFoundError naming the path for a missing root or JSON folder, or (with ``require_audio``)
    a missing wav folder or a JSON without its wav; :class:`SprsoundFormatError` for a bad file name or a
    stem in two JSON folders. Wavs without a JSON are counted in a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SPRSound root folder {root} does not exist or is not a folder")
    unknown = [s for s in splits if s not in SPLIT_FOLDERS]
    if unknown:
        raise ValueError(f"unknown SPRSound split(s) {unknown}; expected among {', '.join(SPLITS)}")

    found: dict[str, RecordingFile] = {}
    wav_folders = set()
    for split in splits:
        json_folder, wav_folder = SPLIT_FOLDERS[split]
        json_dir = root / json_folder
        if not json_dir.is_dir():
            raise FileNotFoundError(
                f"{json_dir}: missing {split} annotation folder (expected {json_folder}/)"
            )
        if require_audio and not (root / wav_folder).is_dir():
            raise FileNotFoundError(
                f"{root / wav_folder}: missing {split} audio folder (expected {wav_folder}/)"
            )
        wav_folders.add(wav_folder)
        for json_path in sorted(json_dir.glob("*.json")):
            stem = json_path.stem
            if stem in found:
                raise SprsoundFormatError(
                    f"{json_path}: recording {stem} is also annotated in {found[stem].json_path}; a "
                    "recording belongs to one split"
                )
            rec = RecordingFile(split, json_path, f"{wav_folder}/{stem}.wav", parse_name(stem, json_path))
            if require_audio and not (root / rec.wav_rel).is_file():
                raise FileNotFoundError(f"{root / rec.wav_rel}: missing audio for annotation {json_path}")
            found[stem] = rec
    if require_audio:
        stray = sorted(
            p.relative_to(root).as_posix()
            for folder in wav_folders
            for p in (root / folder).glob("*.wav")
            if p.stem not in found
        )
        if stray:
            log.warning("%s: %d wav file(s) without an annotation JSON are ignored (e.g. %s)",
                        root, len(stray), ", ".join(stray[:3]))  # fmt: skip
    return [found[stem] for stem in sorted(found)]


def _durations(root: Path, recordings: Sequence[RecordingFile]) -> dict[str, float]:
    """Audio duration in seconds of each recording, from its wav header."""
    durations = {}
    for rec in recordings:
        path = root / rec.wav_rel
        try:
            info = sf.info(str(path))
        except RuntimeError as exc:  # soundfile's error for unreadable files
            raise SprsoundFormatError(f"{path}: cannot read the wav header ({exc})") from exc
        durations[rec.stem] = info.frames / info.samplerate
    return durations


def _recording_columns(rec: RecordingFile, n: int) -> dict:
    return {
        "Filename": [rec.stem] * n,
        "Path": [rec.wav_rel] * n,
        "PID": np.full(n, rec.name.patient, dtype=np.int64),
        "Split": [rec.split] * n,
        "Age": np.full(n, rec.name.age, dtype=np.float64),
        "Sex": [rec.name.sex] * n,
        "Site": [rec.name.site] * n,
    }


def build_event_table(
    root: str | Path, require_audio: bool = True, *, splits: Sequence[str] = SPLITS
) -> pd.DataFrame:
    """The event table of an SPRSound root folder: one row per annotated event.

    Columns (:data:`EVENT_TABLE_COLUMNS`): ``Filename`` (stem), ``Path`` (wav relative to ``root``),
    ``CycleIndex`` (0-based, time order), ``CycleStart``/``CycleEnd`` (s), ``PID`` (int), ``Split``,
    ``Label`` (event type), ``Crackles``/``Wheezes`` (:data:`ICBHI_BITS`), ``Age`` (years), ``Sex`` (M/F),
    ``Site`` (p1..p4), ``Record`` (the recording's record type). Sorted by (Filename, CycleIndex).

    Args:
        require_audio: every JSON must have its wav (else FileNotFoundError naming it); events ending after
            the end of the audio are counted in a warning. False builds the table from the annotations alone.
        splits: the splits to read (default all three).
    """
    root = Path(root)
    recordings = find_recordings(root, require_audio=require_audio, splits=splits)
    durations = _durations(root, recordings) if require_audio else {}
    pieces, no_events, past_end = [], {"expected": [], "unexpected": []}, []
    for rec in recordings:
        ann = read_annotation(rec.json_path)
        n = len(ann.events)
        if n == 0:
            no_events["expected" if ann.record == "Poor Quality" else "unexpected"].append(rec.stem)
            continue
        if durations and ann.events["end"].iloc[-1] > durations[rec.stem] + _END_TOLERANCE_S:
            past_end.append(rec.stem)
        bits = np.array([ICBHI_BITS[t] for t in ann.events["type"]], dtype=np.int64).reshape(n, 2)
        pieces.append(pd.DataFrame({
            **_recording_columns(rec, n),
            "CycleIndex": np.arange(n, dtype=np.int64),
            "CycleStart": ann.events["start"].to_numpy(),
            "CycleEnd": ann.events["end"].to_numpy(),
            "Label": ann.events["type"].to_numpy(),
            "Crackles": bits[:, 0],
            "Wheezes": bits[:, 1],
            "Record": [ann.record] * n,
        }))  # fmt: skip
    if no_events["expected"]:
        log.info("%s: %d Poor Quality recording(s) have no events and contribute no event rows",
                 root, len(no_events["expected"]))  # fmt: skip
    if no_events["unexpected"]:
        log.warning("%s: %d recording(s) list no event and contribute no event rows: %s",
                    root, len(no_events["unexpected"]), ", ".join(no_events["unexpected"][:5]))  # fmt: skip
    if past_end:
        log.warning("%s: %d recording(s) have events ending after the end of their audio (e.g. %s)",
                    root, len(past_end), ", ".join(past_end[:3]))  # fmt: skip
    if not pieces:
        raise SprsoundFormatError(f"{root}: no annotated event in any of the {len(recordings)} recordings")
    table = pd.concat(pieces, ignore_index=True)[list(EVENT_TABLE_COLUMNS)]
    return table.sort_values(["Filename", "CycleIndex"], ignore_index=True)


def build_record_table(root: str | Path, *, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """The record table of an SPRSound root folder: one row per recording (every wav is read).

    Columns (:data:`RECORD_TABLE_COLUMNS`): as the event table without the event columns; ``CycleIndex`` 0,
    ``CycleStart`` 0.0, ``CycleEnd`` the audio duration (s, from the wav header), ``Label`` the record type.
    Every annotation file is fully validated, events included. Sorted by Filename.
    """
    root = Path(root)
    recordings = find_recordings(root, require_audio=True, splits=splits)
    if not recordings:
        raise SprsoundFormatError(f"{root}: no annotation file in {', '.join(splits)}")
    durations = _durations(root, recordings)
    rows = []
    for rec in recordings:
        ann = read_annotation(rec.json_path)
        row = {k: v[0] for k, v in _recording_columns(rec, 1).items()}
        rows.append({**row, "CycleIndex": 0, "CycleStart": 0.0, "CycleEnd": durations[rec.stem],
                     "Label": ann.record})  # fmt: skip
    table = pd.DataFrame(rows)[list(RECORD_TABLE_COLUMNS)]
    return table.astype({"PID": np.int64, "CycleIndex": np.int64, "CycleStart": np.float64,
                         "CycleEnd": np.float64, "Age": np.float64})  # fmt: skip


# --------------------------------------------------------------------------------------------- tasks


def class_ids(table: pd.DataFrame, task: str | Task) -> np.ndarray:
    """Class ids (int64 ``[N]``) of the rows of an event or record table for ``task``.

    An event table is recognised by its ``Record`` column: event tasks (the bit tasks ``icbhi4``/``icbhi2``
    included) need one, record tasks need a table without it (the two levels share the label ``Normal``, so a
    wrong table would not fail otherwise). Raises ValueError naming the task and the offending labels.
    """
    if isinstance(task, str):
        if task not in TASKS:
            raise UnknownNameError(f"unknown SPRSound task {task!r}; expected one of {', '.join(TASKS)}")
        task = get_task(task)
    level = "event" if task.bits else task.level
    if (level == "event") != ("Record" in table.columns):
        want = "a record table (build_record_table)" if level == "record" else "an event table (build_event_table)"
        raise ValueError(f"task {task.name} is {level}-level and needs {want}")
    if task.bits and "Crackles" not in table.columns:  # bits from the event types (ICBHI-compatible mapping)
        unknown = sorted(set(table["Label"].dropna()) - set(ICBHI_BITS), key=str)
        if unknown:
            raise ValueError(f"task {task.name}: event type(s) {unknown} are not among {', '.join(ICBHI_BITS)}")
        bits = np.array([ICBHI_BITS[t] for t in table["Label"]], dtype=np.int64).reshape(-1, 2)
        table = table.assign(Crackles=bits[:, 0], Wheezes=bits[:, 1])
    return task_class_ids(table, task)


# --------------------------------------------------------------------------------------------- reporting


def counts(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per ``Label`` (index) and ``Split`` (columns), with a ``total`` row and column.

    Labels of an event or record table are listed in class order with zeros for absent types; splits in
    :data:`SPLITS` order (other values, e.g. a manifest's, after them, sorted).
    """
    labels = set(table["Label"])
    if "Record" in table.columns and labels <= set(EVENT_TYPES):
        label_order = list(EVENT_TYPES)
    elif "Record" not in table.columns and labels <= set(RECORD_TYPES):
        label_order = list(RECORD_TYPES)
    else:
        label_order = sorted(labels, key=str)
    present = set(table["Split"])
    split_order = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS), key=str)
    out = pd.crosstab(table["Label"], table["Split"]).reindex(
        index=label_order, columns=split_order, fill_value=0
    )
    out.loc["total"] = out.sum(axis=0)
    out["total"] = out.sum(axis=1)
    out.index.name, out.columns.name = "Label", "Split"
    return out.astype(np.int64)
