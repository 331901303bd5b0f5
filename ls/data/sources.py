"""Dataset readers: a ``dataset`` config section -> the canonical segment table and its metadata schema.

One reader per kind of dataset (``dataset.name``), in one table (:func:`register_reader`):

- ``icbhi``: the ICBHI 2017 folder (or ``dataset.cycle_metadata_path``), ``ls.data.icbhi``;
- ``sprsound``: SPRSound in its BioCAS 2022 layout, ``ls.data.sprsound``; the task's level picks the event table
  (one segment per annotated event) or the record table (one segment per recording);
- ``manifest``: any dataset described by a CSV, one row per segment, ``ls.data.manifest``;
- ``combined``: several of the above trained on together (``dataset.parts``).

Every reader returns a :class:`Source`: the segment table (``docs/datasets.md``) with an ``AudioPath`` column
(the absolute wav path of each row: what the feature cache reads) and the :class:`MetadataSchema` saying which
columns are metadata. Nothing else in the library knows a file format.

A new format is a function ``reader(dataset_cfg) -> Source`` and one call,
``register_reader("mine", reader, tasks=("icbhi4", "icbhi2"))``, made before the config is loaded: in a plugin
module (:mod:`ls.utils.plugins`), which every command and every process loads before it reads this table.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ls.data.schema import DURATION, ICBHI_SCHEMA, MetadataSchema
from ls.data.tasks import DATASET_TASKS, LABELS, TASKS, get_task
from ls.types import FOUR_CLASS_NAMES
from ls.utils import plugins

log = logging.getLogger(__name__)

#: Column of the absolute audio path of every row.
AUDIO_PATH = "AudioPath"
#: Column and metadata factor naming the dataset of a row in a ``combined`` dataset.
DATASET_COLUMN, DATASET_FACTOR = "Dataset", "dataset"


@dataclass(frozen=True)
class Source:
    """A dataset read into the canonical segment table (with ``AudioPath``) and its metadata schema."""

    table: pd.DataFrame
    schema: MetadataSchema


Reader = Callable[[Any], Source]
_READERS: dict[str, Reader] = {}
#: The score each kind of dataset is judged by (what selects a run's epoch unless training.selection_metric
#: says otherwise).
_SCORES: dict[str, str] = {}
DEFAULT_SCORE = "icbhi_score"


def register_reader(name: str, reader: Reader, tasks: Sequence[str], score: str = DEFAULT_SCORE) -> None:
    """Make ``dataset.name: <name>`` read with ``reader``; ``tasks``: the tasks (``ls.data.tasks``) it gives;
    ``score``: the metric its runs select their epoch on by default."""
    if not name.isidentifier():
        raise ValueError(f"dataset kind {name!r} must be an identifier")
    unknown = [t for t in tasks if t != LABELS and t not in TASKS]
    if unknown:
        raise ValueError(f"register_reader({name!r}): unknown task(s) {unknown}")
    caller = plugins.caller_module()
    plugins.check_new("reader", name, caller)  # one plugin's reader never silently replaces another's
    plugins.claim("reader", name, caller)
    _READERS[name] = reader
    DATASET_TASKS[name] = tuple(tasks)
    _SCORES[name] = score


def dataset_score(name: str) -> str:
    """The metric a dataset of kind ``name`` is judged by: ``sprsound_score`` for SPRSound, ``icbhi_score``
    for ICBHI, manifests and combined datasets, a registered reader's own."""
    plugins.load_pending()
    return _SCORES.get(name, DEFAULT_SCORE)


def unregister_reader(name: str) -> None:
    """Undo :func:`register_reader` (tests, notebooks); the built-in kinds stay."""
    if name in ("icbhi", "sprsound", "manifest", "combined"):
        raise ValueError(f"dataset kind {name!r} is built in")
    _READERS.pop(name, None)
    DATASET_TASKS.pop(name, None)
    _SCORES.pop(name, None)
    plugins.release("reader", name)


def read_source(cfg: Any) -> Source:
    """The segment table and schema of a ``dataset`` section (``ls.data.config.DatasetConfig``), sorted by
    (Filename, CycleIndex) with a fresh index."""
    plugins.load_pending()
    if cfg.name not in _READERS:
        raise ValueError(f"dataset.name {cfg.name!r}: no reader; known: {', '.join(sorted(_READERS))}; "
                         f"{plugins.unknown_hint()}")
    source = _READERS[cfg.name](cfg)
    table = source.table.sort_values(["Filename", "CycleIndex"], kind="stable").reset_index(drop=True)
    return dataclasses.replace(source, table=table)


def _folder(cfg: Any) -> Path:
    folder = Path(cfg.data_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset.data_folder = {str(folder)!r} is not a folder")
    return folder


# --------------------------------------------------------------------------------------------- ICBHI


def read_icbhi(cfg: Any) -> Source:
    """ICBHI 2017: ``dataset.cycle_metadata_path`` (restricted to the recordings whose wav exists) or the cycle
    table built from the folder."""
    from ls.data.icbhi import build_cycle_table, load_cycle_table

    folder = _folder(cfg)
    if cfg.cycle_metadata_path:
        table = load_cycle_table(cfg.cycle_metadata_path)
        present = {p.stem for p in folder.glob("*.wav")}
        keep = table["Filename"].astype(str).isin(present)
        if not keep.any():
            raise FileNotFoundError(f"none of the {table['Filename'].nunique()} recordings in "
                                    f"{cfg.cycle_metadata_path} has a wav in dataset.data_folder = {folder}")
        if not keep.all():  # a partial download: keep what is there, like the reference
            log.warning("%d of %d cycles (%d recordings) in %s have no wav in %s; they are skipped",
                        (~keep).sum(), len(table), table.loc[~keep, "Filename"].nunique(),
                        cfg.cycle_metadata_path, folder)  # fmt: skip
            table = table[keep]
    else:
        table = build_cycle_table(folder)
    table = table.assign(**{AUDIO_PATH: [str(folder / f"{name}.wav") for name in table["Filename"]]})
    return Source(table, ICBHI_SCHEMA)


# --------------------------------------------------------------------------------------------- SPRSound


def _sprsound_sites_as_icbhi() -> dict[str, str]:
    """SPRSound chest location -> the ICBHI code of the same place (p1 -> Pl, ...): matched by their words, so a
    model trained on one dataset knows the other's sites."""
    from ls.data import icbhi, sprsound

    by_words = {frozenset(text.split()): code for code, text in icbhi.SITES.items()}
    return {code: by_words[frozenset(text.split())] for code, text in sprsound.SITES.items()}


#: SPRSound: chest location (as ICBHI's codes) and sex; age and segment duration. Recorded with one device.
SPRSOUND_SCHEMA = MetadataSchema(
    factors={"site": "AuscLoc", "sex": "Sex"},
    continuous={"age": "Age", DURATION: None},
    labels={"site": "Site", "sex": "Sex", "age": "Age", DURATION: "Duration"},
)


def read_sprsound(cfg: Any) -> Source:
    """SPRSound (BioCAS 2022 layout): the event table for event-level tasks (event2, event7 and the bit tasks),
    the record table for record-level ones (record3, record5)."""
    from ls.data.sprsound import build_event_table, build_record_table

    folder = _folder(cfg)
    task = get_task(cfg.task)
    table = build_record_table(folder) if task.level == "record" else build_event_table(folder, require_audio=True)
    sites = _sprsound_sites_as_icbhi()
    table = table.assign(**{"AuscLoc": table["Site"].map(sites),
                            AUDIO_PATH: [str(folder / rel) for rel in table["Path"]]})  # fmt: skip
    return Source(table, SPRSOUND_SCHEMA)


# --------------------------------------------------------------------------------------------- manifest

#: ``dataset.manifest_columns`` keys (the ``ManifestSpec`` fields naming columns).
MANIFEST_COLUMN_KEYS = ("path", "start", "end", "label", "patient", "split", "crackle", "wheeze")


def manifest_spec(cfg: Any) -> Any:
    """The ``ManifestSpec`` of a ``dataset`` section: column names, metadata columns and the task's classes."""
    from ls.data.manifest import ManifestSpec

    unknown = sorted(set(cfg.manifest_columns) - set(MANIFEST_COLUMN_KEYS))
    if unknown:
        raise ValueError(f"dataset.manifest_columns: unknown key(s) {unknown}; known: {', '.join(MANIFEST_COLUMN_KEYS)}")
    task = get_task(cfg.task, cfg.classes)
    columns = dict(cfg.manifest_columns)
    if task.bits and not ("crackle" in columns and "wheeze" in columns):
        raise ValueError(f"dataset.task {task.name} needs crackle/wheeze bits: name the manifest's 0/1 columns in "
                         "dataset.manifest_columns.crackle and .wheeze, or use task: labels with dataset.classes")
    if not task.bits:
        columns.pop("crackle", None), columns.pop("wheeze", None)
    for name in cfg.categorical:
        if not name.isidentifier() or name in ("cont", DURATION, DATASET_FACTOR):
            raise ValueError(f"dataset.categorical: column {name!r} must be a Python identifier (it names a metadata "
                             f"factor) other than cont, {DURATION} and {DATASET_FACTOR}")
    for name in cfg.continuous:
        if name == DURATION:
            raise ValueError(f"dataset.continuous: {DURATION!r} is always a feature (the segment's length); "
                             "name other columns")
    return ManifestSpec(**columns, categorical=tuple(cfg.categorical), continuous=tuple(cfg.continuous),
                        classes=None if task.bits else task.classes)


def read_manifest(cfg: Any) -> Source:
    """A manifest CSV (``dataset.manifest`` in ``dataset.data_folder``); audio paths relative to its folder."""
    from ls.data.manifest import UNKNOWN_SPLIT, load_manifest

    folder = _folder(cfg)
    spec = manifest_spec(cfg)
    csv_path = folder / cfg.manifest
    table = load_manifest(csv_path, spec)
    if cfg.split_strategy == "official" and (table["Split"] == UNKNOWN_SPLIT).all():
        raise ValueError(f"{csv_path}: no split column ({spec.split!r}) for dataset.split_strategy: official; name "
                         "it in dataset.manifest_columns.split or use split_strategy: random")
    paths = [p if Path(p).is_absolute() else str(folder / p) for p in table["Path"]]
    schema = MetadataSchema(
        factors={name: name for name in spec.categorical},
        continuous={**{name: name for name in spec.continuous}, DURATION: None},
    )
    return Source(table.assign(**{AUDIO_PATH: paths}), schema)


# --------------------------------------------------------------------------------------------- combined


def _part_config(cfg: Any, part: Any) -> Any:
    """A part of a ``combined`` dataset as a ``dataset`` section of its own (the combined task)."""
    from ls.data.config import DatasetConfig

    return DatasetConfig(
        data_folder=part.data_folder, name=part.name, task=cfg.task, test_split=part.test_split,
        cycle_metadata_path=part.cycle_metadata_path, manifest=part.manifest,
        manifest_columns=dict(part.manifest_columns), categorical=list(part.categorical),
        continuous=list(part.continuous), split_strategy=cfg.split_strategy, child_bmi_range=cfg.child_bmi_range,
    )  # fmt: skip


def _raw_continuous(table: pd.DataFrame, schema: MetadataSchema, name: str, child_bmi_range: Sequence[float]):
    """Raw (un-imputed) values of a continuous feature; ICBHI's BMI falls back on the child BMI."""
    from ls.data.metadata import child_bmi

    values = pd.to_numeric(table[schema.continuous[name]], errors="coerce").to_numpy(dtype=np.float64)
    if name == "bmi" and schema.child_bmi:
        child = child_bmi(table["CW"].to_numpy(), table["CH"].to_numpy(), tuple(child_bmi_range))
        values = np.where(np.isfinite(values), values, child)
    return values


def _labels(table: pd.DataFrame) -> np.ndarray:
    """The ``Label`` column, or (ICBHI's table has none) the 4-class name of the crackle/wheeze bits."""
    if "Label" in table.columns:
        return table["Label"].astype(str).to_numpy()
    from ls.data.labels import four_class_from_bits

    names = np.array(FOUR_CLASS_NAMES)
    return names[four_class_from_bits(table["Crackles"].to_numpy(), table["Wheezes"].to_numpy())]


def read_combined(cfg: Any) -> Source:
    """Several datasets as one: rows tagged by a ``dataset`` factor (the part's ``tag``), file names and patients
    prefixed with it, each part's test splits becoming ``test``; metadata columns are the factor and feature
    names, missing where a part does not have them (unknown id / imputed)."""
    from ls.data.splits import test_split_names

    pieces, factors, continuous = [], [DATASET_FACTOR], []
    for part in cfg.parts:
        tag = part.tag or part.name
        part_cfg = _part_config(cfg, part)
        source = read_source(part_cfg)
        table, schema = source.table, source.schema
        tests = test_split_names(table, part_cfg)
        split = [s if s in ("train", "val") else "test" if s in tests else f"{tag}:{s}" for s in table["Split"]]
        piece = pd.DataFrame({
            "Filename": [f"{tag}/{name}" for name in table["Filename"]],
            "CycleIndex": table["CycleIndex"].to_numpy(dtype=np.int64),
            "CycleStart": table["CycleStart"].to_numpy(dtype=np.float64),
            "CycleEnd": table["CycleEnd"].to_numpy(dtype=np.float64),
            "PID": [f"{tag}/{pid}" for pid in table["PID"]],
            "Split": split, "Label": _labels(table),
            "Crackles": table["Crackles"].to_numpy(dtype=np.int64),
            "Wheezes": table["Wheezes"].to_numpy(dtype=np.int64),
            DATASET_COLUMN: tag, AUDIO_PATH: table[AUDIO_PATH].to_numpy(),
        })  # fmt: skip
        for name, column in schema.factors.items():
            piece[name] = table[column].to_numpy(dtype=object)
            factors += [name] if name not in factors else []
        for name, column in schema.continuous.items():
            if column is not None:
                piece[name] = _raw_continuous(table, schema, name, cfg.child_bmi_range)
                continuous += [name] if name not in continuous else []
        pieces.append(piece)
    table = pd.concat(pieces, ignore_index=True)
    schema = MetadataSchema(
        factors={name: DATASET_COLUMN if name == DATASET_FACTOR else name for name in factors},
        continuous={**{name: name for name in continuous}, DURATION: None},
        labels={DATASET_FACTOR: "Dataset", **ICBHI_SCHEMA.labels},
    )
    return Source(table, schema)


register_reader("icbhi", read_icbhi, DATASET_TASKS["icbhi"])
register_reader("sprsound", read_sprsound, DATASET_TASKS["sprsound"], score="sprsound_score")
register_reader("manifest", read_manifest, DATASET_TASKS["manifest"])
register_reader("combined", read_combined, DATASET_TASKS["combined"])

__all__ = [
    "AUDIO_PATH",
    "DATASET_FACTOR",
    "DEFAULT_SCORE",
    "SPRSOUND_SCHEMA",
    "Source",
    "dataset_score",
    "manifest_spec",
    "read_source",
    "register_reader",
    "unregister_reader",
]
