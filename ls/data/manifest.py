"""Any respiratory-sound dataset without its own reader: a manifest CSV, one row per segment.

A manifest names, per row, an audio file (relative to the manifest's folder, or absolute), a segment
(``start``/``end`` in seconds), its label (a ``label`` column, or ``crackle``/``wheeze`` 0/1 columns), the
patient, optionally the dataset's split, and any metadata columns. :class:`ManifestSpec` says which column is
which; :func:`load_manifest` validates the whole file up front and returns the canonical segment table (see
``docs/datasets.md``)::

    path,start,end,label,patient,split,site,age
    rec/p01_a.wav,0.00,2.31,normal,p01,train,chest,54
    rec/p01_a.wav,2.31,4.80,wheeze,p01,train,chest,54

Every problem of the file is collected before anything is returned, and one :class:`ManifestError` lists
them all, one line each naming the CSV, the 1-based data row (the header is row 0) and the column: a missing
column, a missing or unreadable audio file, a relative path leading out of the manifest folder, a start or
end that is not a number, ``start < 0``, ``end <= start``, an end after the end of the audio (1 ms
tolerance, for times written in ms), an unknown label (when ``classes`` is given), a crackle/wheeze value
other than 0/1, a non-numeric continuous value, an empty required cell (a required column with no value at all
is one problem), a segment listed twice, two audio files whose paths differ only in the suffix. A metadata
column with no value in any row loads with a :class:`ManifestWarning` naming the CSV and the column: it would
condition nothing.

:func:`icbhi_to_manifest` writes an ICBHI cycle table as a manifest (``ICBHI_MANIFEST_SPEC`` reads it back).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import soundfile as sf

from ls.data.labels import FOUR_CLASS_NAMES
from ls.utils.io import atomic_open

#: Columns every manifest table starts with, in order (then Crackles/Wheezes when defined, then metadata).
BASE_COLUMNS: tuple[str, ...] = (
    "Filename", "Path", "CycleIndex", "CycleStart", "CycleEnd", "PID", "Split", "Label",
)  # fmt: skip
BIT_COLUMNS: tuple[str, ...] = ("Crackles", "Wheezes")
#: ``Split`` of every row of a manifest without a split column.
UNKNOWN_SPLIT = "unknown"
#: Cells read as a missing metadata value.
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "None", "null"})
#: Problems listed in a :class:`ManifestError` message (all are kept in ``ManifestError.problems``).
MAX_LISTED_PROBLEMS = 20
# Segment times are usually written in whole milliseconds; an end within 1 ms of the audio's end is fine.
_END_TOLERANCE_S = 1e-3


class ManifestWarning(UserWarning):
    """A manifest that loads but will not train as its author expects (e.g. a metadata column with no value)."""


class ManifestError(ValueError):
    """A manifest (or its spec) is invalid. ``problems``: every problem found, one line each."""

    def __init__(self, source: str | Path, problems: Sequence[str]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        listed = self.problems[:MAX_LISTED_PROBLEMS]
        more = len(self.problems) - len(listed)
        lines = [f"{source}: {len(self.problems)} problem(s) in the manifest:", *(f"  {p}" for p in listed)]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ManifestSpec:
    """Which manifest column is which.

    Label source: ``crackle`` and ``wheeze`` (0/1 columns, both or neither) fill ``Crackles``/``Wheezes``;
    ``Label`` is then the ``label`` column if the CSV has one, else the 4-class name (``normal``,
    ``crackle``, ``wheeze``, ``both``) of the bits. Without them the ``label`` column is required and the
    table has no ``Crackles``/``Wheezes``. ``split`` is optional: a CSV without that column gives
    ``Split = "unknown"``. ``categorical``/``continuous`` name metadata columns, carried under their own
    names (categorical as str, continuous as float64; empty cells and ``NA`` are NaN); other CSV columns
    are not carried. ``classes``: the class names in id order (class 0 normal); every label must be one.
    """

    path: str = "path"
    start: str = "start"
    end: str = "end"
    label: str | None = "label"
    crackle: str | None = None
    wheeze: str | None = None
    patient: str = "patient"
    split: str | None = "split"
    categorical: tuple[str, ...] = field(default_factory=tuple)
    continuous: tuple[str, ...] = field(default_factory=tuple)
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Lists from YAML or callers become tuples, so the spec stays hashable and immutable.
        for name in ("categorical", "continuous", "classes"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if (self.crackle is None) != (self.wheeze is None):
            raise ValueError("ManifestSpec: give both crackle and wheeze columns, or neither")
        if self.label is None and self.crackle is None:
            raise ValueError("ManifestSpec: needs a label column or crackle/wheeze columns")
        metadata = self.categorical + self.continuous
        dup = sorted({c for c in metadata if metadata.count(c) > 1})
        if dup:
            raise ValueError(f"ManifestSpec: metadata column(s) {dup} listed twice")
        clash = sorted(set(metadata) & set(BASE_COLUMNS + BIT_COLUMNS))
        if clash:
            raise ValueError(f"ManifestSpec: metadata column(s) {clash} would overwrite table columns")
        if self.classes is not None and (
            len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)
        ):
            raise ValueError(f"ManifestSpec: classes must be >= 2 distinct names, got {self.classes}")

    @property
    def has_bits(self) -> bool:
        """True when crackle/wheeze columns are named."""
        return self.crackle is not None

    def required_columns(self) -> list[str]:
        """CSV columns that must exist (the label column only when there are no bit columns)."""
        cols = [self.path, self.start, self.end, self.patient]
        cols += [self.crackle, self.wheeze] if self.has_bits else [self.label]
        return cols + list(self.categorical) + list(self.continuous)


#: Reads what :func:`icbhi_to_manifest` writes.
ICBHI_MANIFEST_SPEC = ManifestSpec(
    label=None, crackle="crackle", wheeze="wheeze", categorical=("device", "site"), continuous=("age", "bmi")
)


# --------------------------------------------------------------------------------------------- loading


def _number(text: str) -> float | None:
    """The finite number in ``text``, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Problems:
    """Problems found so far; ``lines`` lists them by row (file-level first), in the order found per row."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._found: list[tuple[int, str]] = []

    def add(self, row: int | None, column: str | None, message: str) -> None:
        where = [str(self.source)]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        self._found.append((-1 if row is None else int(row), f"{', '.join(where)}: {message}"))

    @property
    def lines(self) -> list[str]:
        return [line for _, line in sorted(self._found, key=lambda item: item[0])]  # stable within a row


def _audio_location(text: str, folder: str) -> tuple[str | None, str | None, str | None]:
    """(absolute path, ``Path`` value, problem) of a manifest path cell, paths normalised, links not followed.

    ``Path`` is relative to the manifest folder (``/``-separated) for files inside it, else absolute.
    """
    # Manifests written on Windows use backslashes; no sane audio file name contains one.
    text = text.replace("\\", "/")
    if os.path.isabs(text):
        full = os.path.normpath(text)
    else:
        full = os.path.normpath(os.path.join(folder, text))
        if not (full + os.sep).startswith(folder + os.sep):
            return (
                None,
                None,
                f"relative path {text!r} leads out of the manifest folder {folder} (use an absolute path)",
            )
    if (full + os.sep).startswith(folder + os.sep):
        return full, Path(os.path.relpath(full, folder)).as_posix(), None
    return full, Path(full).as_posix(), None


def load_manifest(csv_path: str | Path, spec: ManifestSpec | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV into the canonical segment table.

    Columns: ``Filename`` (``Path`` without its suffix: unique even when stems repeat in sub-folders),
    ``Path`` (relative to the manifest folder, ``/``-separated; absolute for files outside it),
    ``CycleIndex`` (0-based per file, in time order), ``CycleStart``/``CycleEnd`` (float64 s), ``PID`` (str),
    ``Split`` (the split column's value, else ``unknown``), ``Label`` (str), ``Crackles``/``Wheezes``
    (int64 0/1, only with bit columns), then the metadata columns under their own names. Sorted by
    (Filename, CycleIndex) with a fresh RangeIndex.

    Raises FileNotFoundError for a missing CSV and one :class:`ManifestError` listing every problem.
    """
    spec = spec or ManifestSpec()
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest {csv_path} does not exist")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(csv_path, [f"{csv_path}: not a readable CSV ({exc})"]) from exc
    raw = raw.fillna("").apply(lambda col: col.str.strip())
    problems = _Problems(csv_path)

    header = [h.strip() for h in header]
    for name in sorted({h for h in header if header.count(h) > 1}):
        problems.add(0, name, "column appears more than once in the header")
    for name in dict.fromkeys(spec.required_columns()):
        if name not in raw.columns:
            problems.add(0, name, "missing column")
    if raw.empty:
        problems.add(None, None, "no data rows")
        raise ManifestError(csv_path, problems.lines)
    has = set(raw.columns)
    rows = np.arange(1, len(raw) + 1)  # 1-based data row numbers
    folder = os.path.abspath(csv_path.parent)

    def cells(column: str) -> list[str]:
        return raw[column].tolist()

    # a column without any value is one problem, not one per row (a wrongly named or exported column)
    blank = {c for c in raw.columns if len(raw) > 1 and (raw[c] == "").all()}
    for column in dict.fromkeys(c for c in (*spec.required_columns(), spec.split) if c in blank):
        if column not in (*spec.categorical, *spec.continuous):  # metadata may be missing: a warning below
            problems.add(None, column, "every cell is empty (a column that has no values)")

    def required(column: str) -> list[str]:
        values = cells(column)
        if column in blank:
            return values
        for row, value in zip(rows, values):
            if value == "":
                problems.add(row, column, "empty cell")
        return values

    # audio files: located, read once each
    paths = full_paths = None
    durations: dict[str, float] = {}
    if spec.path in has:
        texts = required(spec.path)
        located = {t: _audio_location(t, folder) for t in dict.fromkeys(texts) if t}
        first_row: dict[str, tuple[int, int]] = {}
        for row, t in zip(rows, texts):
            if t:
                first, n = first_row.get(t, (row, 0))
                first_row[t] = (first, n + 1)
        for t, (full, _, problem) in located.items():
            row, n = first_row[t]
            also = f" (and {n - 1} more row(s))" if n > 1 else ""
            if problem:
                problems.add(row, spec.path, problem + also)
            elif not os.path.isfile(full):
                problems.add(row, spec.path, f"audio file {full} does not exist{also}")
            else:
                try:
                    info = sf.info(full)
                    durations[t] = info.frames / info.samplerate
                except RuntimeError as exc:  # soundfile's error for unreadable files
                    problems.add(row, spec.path, f"cannot read audio file {full} ({exc}){also}")
        full_paths = [located[t][0] if t else None for t in texts]
        paths = [located[t][1] if t else None for t in texts]
        by_stem: dict[str, str] = {}
        for t, (_, rel, _) in located.items():
            if rel is None:
                continue
            stem = str(PurePosixPath(rel).with_suffix(""))
            if by_stem.setdefault(stem, rel) != rel:
                message = f"{rel} and {by_stem[stem]} differ only in the suffix; Filename would not be unique"
                problems.add(first_row[t][0], spec.path, message)

    # segment times
    starts = np.full(len(raw), np.nan)
    ends = np.full(len(raw), np.nan)
    for column, out in ((spec.start, starts), (spec.end, ends)):
        if column not in has or column in blank:
            continue
        for i, (row, text) in enumerate(zip(rows, cells(column))):
            value = _number(text)
            if value is None:
                problems.add(row, column, f"{text!r} is not a number of seconds" if text else "empty cell")
            else:
                out[i] = value
    for i, row in enumerate(rows):
        s, e = starts[i], ends[i]
        if not math.isnan(s) and s < 0:
            problems.add(row, spec.start, f"start {s:g} s is negative")
        if not math.isnan(s) and not math.isnan(e) and e <= s:
            problems.add(row, spec.end, f"end {e:g} s is not after start {s:g} s")
        if paths is not None and not math.isnan(e):
            duration = durations.get(raw[spec.path].iat[i])
            if duration is not None and e > duration + _END_TOLERANCE_S:
                problems.add(row, spec.end, f"end {e:g} s is after the end of the audio ({duration:.3f} s)")

    # labels
    bits: dict[str, np.ndarray] = {}
    if spec.has_bits:
        for column, key in ((spec.crackle, "Crackles"), (spec.wheeze, "Wheezes")):
            if column not in has or column in blank:
                continue
            values = np.zeros(len(raw), dtype=np.int64)
            for i, (row, text) in enumerate(zip(rows, cells(column))):
                value = _number(text)
                if value not in (0.0, 1.0):
                    problems.add(row, column, f"{text!r} is not 0 or 1" if text else "empty cell")
                else:
                    values[i] = int(value)
            bits[key] = values
    if spec.label is not None and spec.label in has:
        labels = required(spec.label)
    elif spec.has_bits and len(bits) == 2:
        labels = [FOUR_CLASS_NAMES[c + 2 * w] for c, w in zip(bits["Crackles"], bits["Wheezes"])]
    else:
        labels = None
    if labels is not None and spec.classes is not None:
        where = spec.label if spec.label in has else f"{spec.crackle}/{spec.wheeze}"
        known = set(spec.classes)
        for row, label in zip(rows, labels):
            if label and label not in known:
                problems.add(
                    row, where, f"label {label!r} is not one of the classes {', '.join(spec.classes)}"
                )

    # patient, split, metadata
    patients = required(spec.patient) if spec.patient in has else None
    if spec.split is not None and spec.split in has:
        for row, text in zip(rows, cells(spec.split)):
            if text == "" and spec.split not in blank:
                problems.add(row, spec.split, f"empty cell (write {UNKNOWN_SPLIT!r} for rows of no split)")
        splits = cells(spec.split)
    else:
        splits = [UNKNOWN_SPLIT] * len(raw)
    metadata: dict[str, object] = {}
    for column in spec.categorical:
        if column in has:
            metadata[column] = [np.nan if t in MISSING_TOKENS else t for t in cells(column)]
    for column in spec.continuous:
        if column not in has:
            continue
        values = np.full(len(raw), np.nan)
        for i, (row, text) in enumerate(zip(rows, cells(column))):
            if text in MISSING_TOKENS:
                continue
            value = _number(text)
            if value is None:
                problems.add(row, column, f"{text!r} is not a number")
            else:
                values[i] = value
        metadata[column] = values

    # a metadata column without a single value loads (missing values are allowed) but conditions nothing
    for column in (*spec.categorical, *spec.continuous):
        if column in has and all(t in MISSING_TOKENS for t in cells(column)):
            kind, effect, key = (
                ("factor", "every segment gets the unknown id", "categorical") if column in spec.categorical
                else ("feature", "every segment gets the same imputed value", "continuous"))  # fmt: skip
            warnings.warn(ManifestWarning(
                f"{csv_path}: column {column!r} is empty in every row: the metadata {kind} {column!r} tells the "
                f"model nothing ({effect}); fill the column or leave it out of dataset.{key}"), stacklevel=2)

    # the same segment twice would be counted twice by every metric
    if paths is not None:
        seen: dict[tuple, int] = {}
        for i, row in enumerate(rows):
            if full_paths[i] is None or math.isnan(starts[i]) or math.isnan(ends[i]):
                continue
            key = (full_paths[i], starts[i], ends[i])
            if key in seen:
                problems.add(
                    row,
                    spec.path,
                    f"same segment as row {seen[key]} ({paths[i]}, {starts[i]:g}-{ends[i]:g} s)",
                )
            else:
                seen[key] = int(row)

    if problems.lines:
        raise ManifestError(csv_path, problems.lines)

    table = pd.DataFrame({
        "Filename": [str(PurePosixPath(p).with_suffix("")) for p in paths],
        "Path": paths,
        "CycleStart": starts,
        "CycleEnd": ends,
        "PID": patients,
        "Split": splits,
        "Label": labels,
        **bits,
        **metadata,
        "_row": rows,
    })  # fmt: skip
    table = table.sort_values(["Filename", "CycleStart", "CycleEnd", "_row"], ignore_index=True)
    table["CycleIndex"] = table.groupby("Filename", sort=False).cumcount().astype(np.int64)
    columns = list(BASE_COLUMNS) + (list(BIT_COLUMNS) if bits else []) + list(metadata)
    return table[columns]


def label_ids(table: pd.DataFrame, spec: ManifestSpec) -> np.ndarray:
    """Class ids (int64 ``[N]``) of a manifest table's ``Label``: positions in ``spec.classes``, or in the
    4-class names (normal, crackle, wheeze, both) for a bits-only spec without ``classes``."""
    classes = spec.classes
    if classes is None:
        if not spec.has_bits:
            raise ValueError("label_ids needs ManifestSpec.classes (the class names in id order)")
        classes = FOUR_CLASS_NAMES
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["Label"]) - set(index), key=str)
    if unknown:
        raise ValueError(f"label(s) {unknown} are not among the classes {', '.join(classes)}")
    return table["Label"].map(index).to_numpy(dtype=np.int64)


# --------------------------------------------------------------------------------------------- ICBHI


def _cell(value: object) -> str:
    """A CSV cell that reads back exactly: repr for floats (shortest exact decimal), empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def icbhi_to_manifest(cycle_table: pd.DataFrame, data_folder: str | Path, out_csv: str | Path) -> Path:
    """Write an ICBHI cycle table (as :func:`ls.data.icbhi.build_cycle_table` returns) as a manifest.

    Columns: ``path`` (``<Filename>.wav`` in ``data_folder``: relative to the CSV's folder when inside it,
    else absolute), ``start``, ``end``, ``crackle``, ``wheeze``, ``patient``, ``split``, ``device``,
    ``site``, ``age``, ``bmi``; one row per cycle, in table order. Written atomically; read it back with
    ``load_manifest(out_csv, ICBHI_MANIFEST_SPEC)``. Returns ``out_csv``.
    """
    required = ("Filename", "CycleStart", "CycleEnd", "Crackles", "Wheezes", "PID", "Split", "Device",
                "AuscLoc", "Age", "BMI")  # fmt: skip
    missing = [c for c in required if c not in cycle_table.columns]
    if missing:
        raise ValueError(f"icbhi_to_manifest: cycle table lacks column(s) {', '.join(missing)}")
    out_csv = Path(out_csv)
    folder = os.path.abspath(out_csv.parent)
    data = os.path.abspath(data_folder)
    paths = {}
    for stem in cycle_table["Filename"].unique():
        full = os.path.join(data, f"{stem}.wav")
        inside = (full + os.sep).startswith(folder + os.sep)
        paths[stem] = Path(os.path.relpath(full, folder)).as_posix() if inside else Path(full).as_posix()
    columns = {
        "path": cycle_table["Filename"].map(paths),
        "start": cycle_table["CycleStart"], "end": cycle_table["CycleEnd"],
        "crackle": cycle_table["Crackles"], "wheeze": cycle_table["Wheezes"],
        "patient": cycle_table["PID"], "split": cycle_table["Split"],
        "device": cycle_table["Device"], "site": cycle_table["AuscLoc"],
        "age": cycle_table["Age"], "bmi": cycle_table["BMI"],
    }  # fmt: skip
    with atomic_open(out_csv, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for values in zip(*(col.tolist() for col in columns.values())):
            writer.writerow([_cell(v) for v in values])
    return out_csv
