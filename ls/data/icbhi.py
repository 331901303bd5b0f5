"""Reading the ICBHI 2017 Respiratory Sound Database and building the cycle table.

The official download is one flat folder of recordings, each a pair ``<stem>.wav`` + ``<stem>.txt``, where
the stem is ``PID_RecIdx_Site_Mode_Device`` (e.g. ``101_1b1_Al_sc_Meditron``) and the ``.txt`` lists one
respiratory cycle per line: ``start end crackles wheezes`` (seconds, seconds, 0/1, 0/1). Beside them sit
helper files, named either as in the official download or as the paper's authors renamed them (both work):

==============  ===============================================  ==============================
content         official name                                    authors' name
==============  ===============================================  ==============================
split           ``ICBHI_challenge_train_test.txt`` (CRLF)        ``official_split.txt``
diagnosis       ``ICBHI_Challenge_diagnosis.txt``                ``patient_diagnosis.txt``
demographics    ``ICBHI_Challenge_demographic_information.txt``  ``metadata.txt`` (7th column)
patient folds   (not in the official download)                   ``patient_list_foldwise.txt``
==============  ===============================================  ==============================

The *cycle table* (:data:`CYCLE_TABLE_COLUMNS`, one row per cycle, the layout of the authors'
``icbhi_metadata.csv``) is the single source of truth that the rest of ``ls`` reads; splits, labels and
metadata are derived from it. Dataset quirks handled here:

- Helper files use CRLF or LF line ends, tabs or spaces; blank lines are ignored.
- ``226_1b1_Pl_sc_LittC2SE`` (final database, ``official_split.txt``) is spelled
  ``226_1b1_Pl_sc_Meditron`` in the challenge split file; ``filename_differences.txt`` lists 91 more stems
  whose device token changed between dataset versions. A recording is matched to its split entry by the full
  stem, else by the stem without the device token (logged at INFO level), so either split file gives the
  same table.
- Patients 156 and 218 have recordings in both official splits: the table keeps the official assignment and a
  warning names the shared patients (see ``DatasetConfig.patient_disjoint_official`` for the fix).
- Recordings absent from the split file get ``Split = "unknown"`` (counted warning); patients absent from the
  fold list, or every patient when no fold list is found, get ``Fold = -1`` (:data:`NO_FOLD`); patients absent
  from the demographics or diagnosis file get NaN there (counted warning). Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ls.types import UNKNOWN_TOKEN, MetadataSpec

log = logging.getLogger(__name__)

#: Columns of the cycle table, in order (as in the authors' ``icbhi_metadata.csv``).
CYCLE_TABLE_COLUMNS: tuple[str, ...] = (
    "PID", "Filename", "CycleIndex", "CycleStart", "CycleEnd", "Crackles", "Wheezes", "Split", "Device",
    "Fold", "Age", "Sex", "BMI", "CW", "CH", "Disease", "AuscLoc",
)  # fmt: skip
_INT_COLUMNS = ("PID", "CycleIndex", "Crackles", "Wheezes", "Fold")
_FLOAT_COLUMNS = ("CycleStart", "CycleEnd", "Age", "BMI", "CW", "CH")
_STR_COLUMNS = ("Filename", "Split", "Device", "Sex", "Disease", "AuscLoc")
_REQUIRED_STR_COLUMNS = ("Filename", "Split", "Device", "AuscLoc")  # never NaN

#: Recording equipment (last stem token).
DEVICES: dict[str, str] = {
    "AKGC417L": "AKG C417L microphone",
    "LittC2SE": "3M Littmann Classic II SE stethoscope",
    "Litt3200": "3M Littmann 3200 electronic stethoscope",
    "Meditron": "WelchAllyn Meditron Master Elite electronic stethoscope",
}
#: Chest locations (third stem token).
SITES: dict[str, str] = {
    "Tc": "trachea",
    "Al": "anterior left",
    "Ar": "anterior right",
    "Pl": "posterior left",
    "Pr": "posterior right",
    "Ll": "lateral left",
    "Lr": "lateral right",
}
#: Acquisition modes (fourth stem token).
MODES: dict[str, str] = {"sc": "sequential / single channel", "mc": "simultaneous / multichannel"}

SPLITS = ("train", "test")
UNKNOWN_SPLIT = "unknown"
#: ``Fold`` of a patient without an entry in the fold list (or of every patient when there is no fold list).
NO_FOLD = -1
SEXES = ("M", "F")
DEMOGRAPHIC_COLUMNS = ("PID", "Age", "Sex", "BMI", "CW", "CH")

#: Helper-file names searched in the data folder, in order of preference (the authors' names first: their
#: ``official_split.txt`` uses the final database's spelling of ``226_1b1_Pl_sc_LittC2SE``).
HELPER_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "split": ("official_split.txt", "ICBHI_challenge_train_test.txt"),
    "diagnosis": ("patient_diagnosis.txt", "ICBHI_Challenge_diagnosis.txt"),
    "demographics": ("metadata.txt", "ICBHI_Challenge_demographic_information.txt"),
    "folds": ("patient_list_foldwise.txt",),
}

_NA_TOKENS = frozenset({"", "NA", "N/A", "NAN", "NONE", "NULL", "-"})
_REC_INDEX = re.compile(r"^\d+[a-z]\d+$")  # e.g. 1b1, 2p3 (session digit, letter, recording digit)
# Plausible ranges for the demographic numbers; a value outside is a corrupt file, not a patient.
_DEMOGRAPHIC_RANGES = {"Age": (0.0, 120.0), "BMI": (5.0, 100.0), "CW": (0.5, 250.0), "CH": (20.0, 250.0)}


class IcbhiFormatError(ValueError):
    """An ICBHI file is malformed; the message names the file (and line) and what was expected."""


# --------------------------------------------------------------------------------------------- file names


@dataclass(frozen=True)
class RecordingName:
    """The fields of a recording stem ``PID_RecIdx_Site_Mode_Device``."""

    pid: int
    rec_index: str
    site: str
    mode: str
    device: str

    @property
    def stem(self) -> str:
        return f"{self.pid}_{self.rec_index}_{self.site}_{self.mode}_{self.device}"

    @property
    def key_without_device(self) -> tuple[int, str, str, str]:
        """Identity of a recording across dataset versions, whose device tokens sometimes differ."""
        return (self.pid, self.rec_index, self.site, self.mode)


def parse_stem(stem: str, source: str | Path | None = None) -> RecordingName:
    """Split a recording stem (file name without extension) into its five fields.

    Raises :class:`IcbhiFormatError` naming ``source`` (default: the stem) for a wrong number of tokens, a
    non-numeric patient id, or an unknown site, mode or device.
    """
    where = str(source) if source is not None else repr(stem)
    tokens = stem.split("_")
    if len(tokens) != 5:
        raise IcbhiFormatError(
            f"{where}: recording name {stem!r} has {len(tokens)} '_'-separated fields, expected 5 "
            "(PID_RecIdx_Site_Mode_Device, e.g. 101_1b1_Al_sc_Meditron)"
        )
    pid, rec_index, site, mode, device = tokens
    if not pid.isdigit():
        raise IcbhiFormatError(f"{where}: patient id {pid!r} in {stem!r} is not a number")
    if not _REC_INDEX.match(rec_index):
        raise IcbhiFormatError(
            f"{where}: recording index {rec_index!r} in {stem!r} does not look like '1b1' or '2p3'"
        )
    for value, known, what in (
        (site, SITES, "chest location"),
        (mode, MODES, "mode"),
        (device, DEVICES, "device"),
    ):
        if value not in known:
            raise IcbhiFormatError(
                f"{where}: unknown {what} {value!r} in {stem!r}; expected one of {', '.join(known)}"
            )
    return RecordingName(int(pid), rec_index, site, mode, device)


def find_recordings(folder: str | Path) -> list[str]:
    """Sorted stems that have both a ``.wav`` and a ``.txt`` file in ``folder`` (helper ``.txt`` files have no
    ``.wav`` and so are excluded). Raises FileNotFoundError if the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ICBHI data folder {folder} does not exist or is not a folder")
    wavs = {p.stem for p in folder.glob("*.wav")}
    txts = {p.stem for p in folder.glob("*.txt")}
    unpaired = sorted(wavs - txts)
    if unpaired:
        log.warning(
            "%s: %d .wav file(s) without an annotation .txt are ignored (e.g. %s)",
            folder, len(unpaired), ", ".join(unpaired[:3]),
        )  # fmt: skip
    return sorted(wavs & txts)


def find_helper_file(folder: str | Path, kind: str, *, required: bool = True) -> Path | None:
    """Path of a helper file (``kind`` in :data:`HELPER_FILE_NAMES`) in ``folder``, under either name.

    Returns None when absent and not ``required``; otherwise raises FileNotFoundError naming the candidates.
    """
    if kind not in HELPER_FILE_NAMES:
        raise KeyError(f"unknown helper file kind {kind!r}; expected one of {', '.join(HELPER_FILE_NAMES)}")
    names = HELPER_FILE_NAMES[kind]
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            return path
    if required:
        raise FileNotFoundError(
            f"no {kind} file in {folder}: expected one of {', '.join(names)} (or pass its path explicitly)"
        )
    return None


# --------------------------------------------------------------------------------------------- file readers


def _fields_by_line(path: str | Path) -> Iterable[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank line. Tab-separated when the line has a tab (so an
    empty field between two tabs is kept), else whitespace-separated; CRLF and a UTF-8 BOM are tolerated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")] if "\t" in line else line.split()
        # Trailing tabs would add empty fields; drop them so "a\tb\t" reads as two fields.
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()
        yield lineno, fields


def _number(token: str, path: str | Path, lineno: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise IcbhiFormatError(f"{path}, line {lineno}: {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise IcbhiFormatError(f"{path}, line {lineno}: {what} {token!r} is not finite")
    return value


def _integer(token: str, path: str | Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise IcbhiFormatError(f"{path}, line {lineno}: {what} {token!r} is not an integer") from None


def _bit(token: str, path: str | Path, lineno: int, what: str) -> int:
    if token not in ("0", "1"):
        raise IcbhiFormatError(f"{path}, line {lineno}: {what} flag {token!r} must be 0 or 1")
    return int(token)


def read_annotation(path: str | Path) -> pd.DataFrame:
    """Read a recording's annotation file.

    Returns:
        DataFrame with one row per cycle, in file order (row i is cycle index i): ``start``, ``end`` (float64,
        seconds), ``crackles``, ``wheezes`` (int64, 0/1). Empty for a file without cycles.

    Raises :class:`IcbhiFormatError` naming file and line for a line without exactly 4 fields, a non-numeric
    time, a flag other than 0/1, a negative start or ``end <= start``.
    """
    starts, ends, crackles, wheezes = [], [], [], []
    for lineno, fields in _fields_by_line(path):
        if len(fields) != 4:
            raise IcbhiFormatError(
                f"{path}, line {lineno}: expected 4 fields (start end crackles wheezes), got {len(fields)}: "
                f"{' '.join(fields)!r}"
            )
        start = _number(fields[0], path, lineno, "cycle start")
        end = _number(fields[1], path, lineno, "cycle end")
        if start < 0 or end <= start:
            raise IcbhiFormatError(
                f"{path}, line {lineno}: cycle [{start}, {end}] s is invalid (need 0 <= start < end)"
            )
        starts.append(start)
        ends.append(end)
        crackles.append(_bit(fields[2], path, lineno, "crackles"))
        wheezes.append(_bit(fields[3], path, lineno, "wheezes"))
    return pd.DataFrame(
        {
            "start": np.asarray(starts, dtype=np.float64),
            "end": np.asarray(ends, dtype=np.float64),
            "crackles": np.asarray(crackles, dtype=np.int64),
            "wheezes": np.asarray(wheezes, dtype=np.int64),
        }
    )


def read_split_file(path: str | Path) -> dict[str, str]:
    """Read an official split file (``<stem> <train|test>`` per line) into ``{stem: "train" | "test"}``.

    Raises :class:`IcbhiFormatError` naming file and line for a malformed line, a split other than train/test,
    or a stem listed twice with different splits.
    """
    splits: dict[str, str] = {}
    for lineno, fields in _fields_by_line(path):
        if len(fields) != 2:
            raise IcbhiFormatError(
                f"{path}, line {lineno}: expected '<recording> <train|test>', got {fields!r}"
            )
        stem, split = fields[0], fields[1].lower()
        if split not in SPLITS:
            raise IcbhiFormatError(f"{path}, line {lineno}: split {fields[1]!r} is not 'train' or 'test'")
        if splits.get(stem, split) != split:
            raise IcbhiFormatError(
                f"{path}, line {lineno}: {stem} is listed as both {splits[stem]} and {split}"
            )
        splits[stem] = split
    if not splits:
        raise IcbhiFormatError(f"{path}: split file is empty")
    return splits


def read_diagnosis(path: str | Path) -> dict[int, str]:
    """Read the patient diagnosis file (``<PID> <diagnosis>`` per line) into ``{pid: diagnosis}``."""
    diagnosis: dict[int, str] = {}
    for lineno, fields in _fields_by_line(path):
        if len(fields) != 2 or not fields[1]:
            raise IcbhiFormatError(f"{path}, line {lineno}: expected '<PID> <diagnosis>', got {fields!r}")
        pid = _integer(fields[0], path, lineno, "patient id")
        if pid in diagnosis:
            raise IcbhiFormatError(f"{path}, line {lineno}: patient {pid} is listed twice")
        diagnosis[pid] = fields[1]
    if not diagnosis:
        raise IcbhiFormatError(f"{path}: diagnosis file is empty")
    return diagnosis


def read_fold_file(path: str | Path) -> dict[int, int]:
    """Read the patient fold list (``<PID> <fold>`` per line, folds >= 0) into ``{pid: fold}``."""
    folds: dict[int, int] = {}
    for lineno, fields in _fields_by_line(path):
        if len(fields) != 2:
            raise IcbhiFormatError(f"{path}, line {lineno}: expected '<PID> <fold>', got {fields!r}")
        pid = _integer(fields[0], path, lineno, "patient id")
        fold = _integer(fields[1], path, lineno, "fold")
        if fold < 0:
            raise IcbhiFormatError(f"{path}, line {lineno}: fold {fold} of patient {pid} is negative")
        if pid in folds:
            raise IcbhiFormatError(f"{path}, line {lineno}: patient {pid} is listed twice")
        folds[pid] = fold
    if not folds:
        raise IcbhiFormatError(f"{path}: fold file is empty")
    return folds


def read_demographics(path: str | Path) -> pd.DataFrame:
    """Read the demographics file, official 6-column or the authors' 7-column ``metadata.txt`` variant.

    Columns per line: PID, age (years; fractional for infants), sex (M/F), adult BMI (kg/m^2), child weight
    (kg), child height (cm), and in the 7-column variant a chest-location code, which is ignored (it is not a
    patient property). ``NA`` (or an empty field) marks a missing value.

    Returns:
        DataFrame with columns ``PID`` (int64), ``Age``, ``BMI``, ``CW``, ``CH`` (float64, NaN if missing),
        ``Sex`` ("M"/"F" or NaN), one row per patient in file order.

    Raises :class:`IcbhiFormatError` naming file, line and column for a wrong column count, a non-numeric or
    implausible value, an unknown sex or a duplicated patient.
    """
    rows: list[dict] = []
    seen: set[int] = set()
    for lineno, fields in _fields_by_line(path):
        if len(fields) not in (6, 7):
            raise IcbhiFormatError(
                f"{path}, line {lineno}: expected 6 columns (PID age sex BMI child-weight child-height) or 7 "
                f"(metadata.txt variant), got {len(fields)}: {fields!r}"
            )
        pid = _integer(fields[0], path, lineno, "patient id")
        if pid in seen:
            raise IcbhiFormatError(f"{path}, line {lineno}: patient {pid} is listed twice")
        seen.add(pid)
        row: dict = {"PID": pid}
        for column, token in zip(("Age", "Sex", "BMI", "CW", "CH"), fields[1:6]):
            if token.upper() in _NA_TOKENS:
                row[column] = np.nan
            elif column == "Sex":
                if token.upper() not in SEXES:
                    raise IcbhiFormatError(f"{path}, line {lineno}: sex {token!r} is not M, F or NA")
                row[column] = token.upper()
            else:
                value = _number(token, path, lineno, column)
                low, high = _DEMOGRAPHIC_RANGES[column]
                if not low <= value <= high:
                    raise IcbhiFormatError(
                        f"{path}, line {lineno}: {column} {value} is outside the plausible range "
                        f"[{low}, {high}]"
                    )
                row[column] = value
        rows.append(row)
    if not rows:
        raise IcbhiFormatError(f"{path}: demographics file is empty")
    table = pd.DataFrame(rows, columns=list(DEMOGRAPHIC_COLUMNS))
    table["PID"] = table["PID"].astype(np.int64)
    for column in ("Age", "BMI", "CW", "CH"):
        table[column] = table[column].astype(np.float64)
    return table


def recording_durations(data_folder: str | Path, stems: Iterable[str] | None = None) -> pd.Series:
    """Duration in seconds of each recording (from the WAV header only, so cheap), indexed by stem."""
    import soundfile as sf

    from ls.data.wav import check_wav_complete

    folder = Path(data_folder)
    stems = find_recordings(folder) if stems is None else list(stems)
    durations = {}
    for stem in stems:
        path = folder / f"{stem}.wav"
        if path.is_file():
            check_wav_complete(path)  # a truncated file is an error, not cycles past the end of the audio
        try:
            info = sf.info(str(path))
        except RuntimeError as exc:  # soundfile raises RuntimeError for unreadable files
            raise IcbhiFormatError(f"{path}: cannot read the WAV header ({exc})") from exc
        durations[stem] = info.frames / info.samplerate
    return pd.Series(durations, dtype=np.float64, name="Duration")


# --------------------------------------------------------------------------------------------- cycle table


class _SplitLookup:
    """Split entry of a recording: by exact stem, else by the stem without its device token."""

    def __init__(self, splits: dict[str, str], source: Path) -> None:
        self.exact = splits
        self.source = source
        self.by_key: dict[tuple, list[str]] = {}
        for stem in splits:
            try:
                key = parse_stem(stem, source).key_without_device
            except IcbhiFormatError:
                continue  # an odd entry can still match exactly; it just cannot match loosely
            self.by_key.setdefault(key, []).append(stem)

    def __call__(self, name: RecordingName) -> str | None:
        if name.stem in self.exact:
            return self.exact[name.stem]
        candidates = self.by_key.get(name.key_without_device, [])
        splits = {self.exact[c] for c in candidates}
        if len(splits) == 1:
            log.info(
                "%s: matched recording %s to split entry %s (device token differs between dataset versions)",
                self.source, name.stem, candidates[0],
            )  # fmt: skip
            return splits.pop()
        return None


def build_cycle_table(
    data_folder: str | Path,
    *,
    split_file: str | Path | None = None,
    diagnosis_file: str | Path | None = None,
    demographics_file: str | Path | None = None,
    fold_file: str | Path | None = None,
    check_audio: bool = True,
) -> pd.DataFrame:
    """Build the cycle table of every recording in ``data_folder`` (one row per annotated cycle).

    Helper files are found in ``data_folder`` under either naming scheme (:data:`HELPER_FILE_NAMES`) unless a
    path is given. The split, diagnosis and demographics files are required; the fold list is optional (it is
    not part of the official download): without it ``Fold`` is :data:`NO_FOLD` (-1) for every row, and the
    ``foldwise`` split strategy reports that it needs one.

    Columns and order are :data:`CYCLE_TABLE_COLUMNS`; rows are sorted by file name, then cycle index. On the
    full database this reproduces the authors' ``icbhi_metadata.csv`` row for row. Note that the official
    split is not patient-disjoint (patients 156 and 218 have recordings in train and test); a warning names
    such patients.

    Args:
        check_audio: also read every WAV header and warn (with a count) about cycles that end after the end
            of their recording; the audio layer clips them.
    """
    folder = Path(data_folder)
    stems = find_recordings(folder)
    if not stems:
        raise FileNotFoundError(f"{folder}: no recordings (pairs of <stem>.wav and <stem>.txt) found")

    split_path = Path(split_file) if split_file else find_helper_file(folder, "split")
    diagnosis_path = Path(diagnosis_file) if diagnosis_file else find_helper_file(folder, "diagnosis")
    demographics_path = (
        Path(demographics_file) if demographics_file else find_helper_file(folder, "demographics")
    )
    fold_path = Path(fold_file) if fold_file else find_helper_file(folder, "folds", required=False)

    split_of = _SplitLookup(read_split_file(split_path), split_path)
    diagnosis = read_diagnosis(diagnosis_path)
    demographics = read_demographics(demographics_path).set_index("PID")
    if fold_path is None:
        log.warning(
            "%s: no patient fold list (%s); Fold = %d for every cycle, so the foldwise split is unavailable",
            folder, HELPER_FILE_NAMES["folds"][0], NO_FOLD,
        )  # fmt: skip
        folds: dict[int, int] = {}
    else:
        folds = read_fold_file(fold_path)

    pieces = []
    unknown_split, empty = [], []
    for stem in stems:
        name = parse_stem(stem, folder / f"{stem}.wav")
        cycles = read_annotation(folder / f"{stem}.txt")
        if cycles.empty:
            empty.append(stem)
            continue
        split = split_of(name)
        if split is None:
            unknown_split.append(stem)
            split = UNKNOWN_SPLIT
        n = len(cycles)
        pieces.append(
            pd.DataFrame(
                {
                    "PID": np.full(n, name.pid, dtype=np.int64),
                    "Filename": [stem] * n,
                    "CycleIndex": np.arange(n, dtype=np.int64),
                    "CycleStart": cycles["start"].to_numpy(),
                    "CycleEnd": cycles["end"].to_numpy(),
                    "Crackles": cycles["crackles"].to_numpy(),
                    "Wheezes": cycles["wheezes"].to_numpy(),
                    "Split": [split] * n,
                    "Device": [name.device] * n,
                    "AuscLoc": [name.site] * n,
                }
            )
        )
    if empty:
        log.warning("%s: %d annotation file(s) list no cycle and contribute no rows: %s",
                    folder, len(empty), ", ".join(empty[:5]))  # fmt: skip
    if unknown_split:
        log.warning(
            "%s: %d recording(s) are not in the split file %s; their Split is %r (e.g. %s)",
            folder, len(unknown_split), split_path, UNKNOWN_SPLIT, ", ".join(unknown_split[:3]),
        )  # fmt: skip
    if not pieces:
        raise IcbhiFormatError(f"{folder}: no annotated cycle in any of the {len(stems)} recordings")
    table = pd.concat(pieces, ignore_index=True)

    pids = table["PID"].to_numpy()
    patients = {int(p) for p in pids}
    missing_demo = sorted(patients - set(demographics.index.tolist()))
    missing_diag = sorted(patients - set(diagnosis))
    if missing_demo:
        log.warning("%s: %d patient(s) missing, their demographics are NaN: %s",
                    demographics_path, len(missing_demo), missing_demo)  # fmt: skip
    if missing_diag:
        log.warning("%s: %d patient(s) missing, their Disease is NaN: %s",
                    diagnosis_path, len(missing_diag), missing_diag)  # fmt: skip
    if folds:
        missing_fold = sorted(patients - set(folds))
        if missing_fold:
            log.warning("%s: %d patient(s) missing, their Fold is %d: %s",
                        fold_path, len(missing_fold), NO_FOLD, missing_fold)  # fmt: skip

    demo = demographics.reindex(pids)
    for column in ("Age", "Sex", "BMI", "CW", "CH"):
        table[column] = demo[column].to_numpy()
    table["Disease"] = pd.Series(pids).map(diagnosis).to_numpy()
    table["Fold"] = np.array([folds.get(int(p), NO_FOLD) for p in pids], dtype=np.int64)
    table = table[list(CYCLE_TABLE_COLUMNS)]

    warn_shared_patients(table, source=str(split_path))
    if check_audio:
        _warn_cycles_past_end(table, recording_durations(folder, table["Filename"].unique()), folder)
    return validate_cycle_table(table, source=str(folder))


def shared_patients(table: pd.DataFrame) -> list[int]:
    """Patients with recordings in both the train and the test split of ``table["Split"]``."""
    by_split = table.groupby("Split")["PID"].unique()
    if "train" not in by_split or "test" not in by_split:
        return []
    return sorted(int(p) for p in set(by_split["train"]) & set(by_split["test"]))


def warn_shared_patients(table: pd.DataFrame, source: str = "split") -> list[int]:
    """Log one warning naming the patients in both splits (156 and 218 in the official split); return them."""
    shared = shared_patients(table)
    if shared:
        log.warning(
            "%s: the split is not patient-disjoint: patient(s) %s have recordings in both train and test "
            "(set dataset.patient_disjoint_official=true to drop their training recordings)",
            source, ", ".join(map(str, shared)),
        )  # fmt: skip
    return shared


def _warn_cycles_past_end(table: pd.DataFrame, durations: pd.Series, folder: Path) -> None:
    # 1 ms tolerance: annotation times are written with millisecond precision.
    past = table["CycleEnd"].to_numpy() > table["Filename"].map(durations).to_numpy() + 1e-3
    if past.any():
        files = table.loc[past, "Filename"].unique()
        log.warning(
            "%s: %d cycle(s) in %d recording(s) end after the end of the audio (e.g. %s); they get clipped",
            folder, int(past.sum()), len(files), ", ".join(files[:3]),
        )  # fmt: skip


# --------------------------------------------------------------------------------------------- validation


def validate_cycle_table(table: pd.DataFrame, source: str = "cycle table") -> pd.DataFrame:
    """Check and normalise a cycle table: required columns present, dtypes coerced (ints, floats, strings),
    flags 0/1, ``CycleStart < CycleEnd``, unique (Filename, CycleIndex), Split in train/test/unknown.

    A missing ``Fold`` (NaN) becomes :data:`NO_FOLD`. Extra columns are kept after the standard ones.
    Returns a new DataFrame; raises ValueError naming ``source`` and the offending column/rows.
    """
    missing = [c for c in CYCLE_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing cycle-table column(s) {', '.join(missing)}")
    extra = [c for c in table.columns if c not in CYCLE_TABLE_COLUMNS]
    out = table[list(CYCLE_TABLE_COLUMNS) + extra].copy()
    if out.empty:
        raise ValueError(f"{source}: the cycle table has no rows")

    def bad_rows(mask: np.ndarray) -> str:
        rows = np.flatnonzero(mask)[:5]
        return ", ".join(f"{out['Filename'].iloc[i]}#{out['CycleIndex'].iloc[i]}" for i in rows)

    for column in _FLOAT_COLUMNS:
        values = pd.to_numeric(out[column], errors="coerce")
        not_numeric = values.isna() & out[column].notna()
        if not_numeric.any():
            raise ValueError(
                f"{source}: column {column} has non-numeric values, e.g. {out[column][not_numeric].iloc[0]!r}"
            )
        out[column] = values.astype(np.float64)
    out["Fold"] = pd.to_numeric(out["Fold"], errors="coerce").fillna(NO_FOLD)
    for column in _INT_COLUMNS:
        values = pd.to_numeric(out[column], errors="coerce")
        if values.isna().any() or (values != np.round(values)).any():
            raise ValueError(f"{source}: column {column} must hold integers without gaps")
        out[column] = values.astype(np.int64)
    for column in ("CycleStart", "CycleEnd"):
        if out[column].isna().any():
            raise ValueError(f"{source}: column {column} has missing values")
    for column in _REQUIRED_STR_COLUMNS:
        if out[column].isna().any():
            raise ValueError(f"{source}: column {column} has missing values")
    for column in _STR_COLUMNS:
        # Keep NaN as NaN (never the string "nan"); everything else becomes str.
        out[column] = out[column].map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
    for column in ("Crackles", "Wheezes"):
        bad = ~out[column].isin([0, 1]).to_numpy()
        if bad.any():
            raise ValueError(f"{source}: column {column} must be 0 or 1 (rows {bad_rows(bad)})")
    bad = ~(out["CycleStart"] < out["CycleEnd"]).to_numpy()
    if bad.any():
        raise ValueError(f"{source}: CycleStart must be < CycleEnd (rows {bad_rows(bad)})")
    bad = ~out["Split"].isin([*SPLITS, UNKNOWN_SPLIT]).to_numpy()
    if bad.any():
        raise ValueError(f"{source}: Split must be train, test or {UNKNOWN_SPLIT} (rows {bad_rows(bad)})")
    dup = out.duplicated(["Filename", "CycleIndex"]).to_numpy()
    if dup.any():
        raise ValueError(f"{source}: duplicated (Filename, CycleIndex) rows: {bad_rows(dup)}")
    return out


def load_cycle_table(path: str | Path) -> pd.DataFrame:
    """Read a cycle table CSV (e.g. ``icbhi_metadata.csv``) and validate it (:func:`validate_cycle_table`).

    Raises FileNotFoundError for a missing file and ValueError naming the file and the missing columns or
    bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cycle table {path} does not exist")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV cycle table ({exc})") from exc
    return validate_cycle_table(table, source=str(path))


def write_cycle_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a cycle table as CSV (no index) atomically; returns the path."""
    from ls.utils.io import atomic_open

    path = Path(path)
    with atomic_open(path, "w") as fh:
        table.to_csv(fh, index=False)
    return path


def full_metadata_spec() -> MetadataSpec:
    """The metadata of the whole ICBHI database (4 devices, 7 sites; age, BMI, duration), ordered as a
    ``MetadataEncoder`` fitted on it orders it: for building a model before any data is loaded."""
    return MetadataSpec.build({"device": (UNKNOWN_TOKEN, *sorted(DEVICES)), "site": (UNKNOWN_TOKEN, *sorted(SITES))},
                              ("age", "bmi", "duration"))
