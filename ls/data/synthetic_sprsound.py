"""Synthetic SPRSound: a folder in the BioCAS 2022 layout with generated audio, for tests and benchmarks.

``generate_sprsound(out, recordings=40, seed=0)`` plans a random database (patients, recordings, record types,
events) and writes its JSON annotations in the real format and its wavs; ``names_from=DIR`` instead reuses the
annotation files of a real layout (e.g. the shared SPRSound annotations: same file names, splits, record
types and events, the JSON files copied byte for byte) and only synthesises audio of the needed length (the
latest event end plus 0.2-1.0 s). Either way :func:`ls.data.sprsound.build_event_table` reads the result.

Planned databases (``recordings`` >= 6) split recordings in the challenge's proportions (1,949 train, 355
inter-subject test, 379 intra-subject test of 2,683: ``recordings=2683`` gives exactly those sizes). Inter
test patients are new patients; intra test recordings are further recordings of training patients (a tenth
of a year older). Each patient has a phenotype (healthy, wheezy, crackly, mixed) that drives its record
types, so records of a patient are correlated as in real data. The first five recordings of every split are
CAS & DAS, CAS, DAS, Normal and Poor Quality (so a split of five or more recordings has every record type),
and the first one holds every event type, so every split of a planned database has all seven event types.
Events are 0.5-1.8 s breath phases separated by 0-0.9 s (a quarter of them touching), whole milliseconds,
listed in shuffled JSON order in 60 % of the files (as in the real files); Poor Quality records have none.

Signal model (per recording at ``sample_rate``; every draw is seeded by ``seed`` and the file name, so a file
does not depend on which other files are generated):

1. *Breath*: white noise band-passed from 100 Hz to a site- and sex-dependent edge, under an envelope that
   rises and falls over each event and stays at a low floor between events; heart sounds (30-60 Hz bursts,
   faster in younger children) underneath.
2. *Continuous sounds*, sustained tones over 60-95 % of the event: Wheeze 300-900 Hz (one weak harmonic),
   Rhonchi 100-250 Hz (rich harmonics), Stridor 500-1000 Hz (loud, nearly pure).
3. *Discontinuous sounds*: Fine Crackle 6-15 transients of 600-1500 Hz decaying in 0.8-2 ms; Coarse Crackle
   2-6 louder transients of 150-450 Hz decaying in 4-8 ms. Wheeze+Crackle has both a wheeze and fine crackles.
4. *Poor Quality*: loud low-frequency rubbing bursts over about half the recording, extra noise and clipping.
5. *Metadata*: the site (:data:`SITE_PROFILES`) sets a chest resonance, the breath edge and how loud crackles
   and wheezes are; sex shifts the breath edge and resonance (female higher); younger children sound louder
   and have faster hearts. So the same label sounds different by site, sex and age, and conditioning on them
   has something to use. Levels are plausible, not calibrated against real recordings.

Files are written atomically (temp file + rename). Command line::

    python -m ls.data.synthetic_sprsound OUT --recordings N --seed S [--names-from DIR] [--sample-rate HZ]
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from ls.data.sprsound import (
    EVENT_TYPES,
    RECORD_TYPES,
    SPLIT_FOLDERS,
    SPLITS,
    RecordingName,
    find_recordings,
    read_annotation,
)
from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_open, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: Recordings per split in the BioCAS 2022 release.
CHALLENGE_SPLIT_SIZES: dict[str, int] = {"train": 1949, "test_inter": 355, "test_intra": 379}
MIN_RECORDINGS = 6  # 4 train (2 patients for a patient-disjoint validation split), 1 inter, 1 intra

_CAS = ("Wheeze", "Rhonchi", "Stridor")
_DAS = ("Fine Crackle", "Coarse Crackle")
# Record types forced on the first recordings of each split, so small splits still hold every type.
_COVERAGE_RECORDS = ("CAS & DAS", "CAS", "DAS", "Normal", "Poor Quality")
# Patient phenotype -> (probability, record-type probabilities in RECORD_TYPES order).
_PHENOTYPES: dict[str, tuple[float, tuple[float, ...]]] = {
    "healthy": (0.45, (0.90, 0.02, 0.03, 0.00, 0.05)),
    "wheezy": (0.20, (0.30, 0.55, 0.00, 0.08, 0.07)),
    "crackly": (0.25, (0.28, 0.00, 0.60, 0.05, 0.07)),
    "mixed": (0.10, (0.10, 0.15, 0.20, 0.50, 0.05)),
}


@dataclass(frozen=True)
class SiteProfile:
    resonance_hz: float  # chest-wall resonance (peaking filter, +6 dB)
    breath_edge_hz: float  # upper edge of the breath-noise band
    crackle_gain: float
    wheeze_gain: float


#: Location profiles: posterior sites (p1, p3) are brighter and carry crackles best; lateral ones are duller.
SITE_PROFILES: dict[str, SiteProfile] = {
    "p1": SiteProfile(180.0, 700.0, 1.3, 0.9),
    "p2": SiteProfile(260.0, 450.0, 0.9, 0.7),
    "p3": SiteProfile(220.0, 650.0, 1.2, 1.0),
    "p4": SiteProfile(300.0, 500.0, 0.8, 1.2),
}
#: Sex -> factor on the breath edge and the resonance frequency.
SEX_BRIGHTNESS: dict[str, float] = {"M": 0.85, "F": 1.2}

# Levels (full scale 1): adventitious sounds are salient so that a small model learns them quickly.
_BREATH_LEVEL, _WHEEZE_LEVEL, _CRACKLE_LEVEL, _HEART_LEVEL, _NOISE_FLOOR = 0.05, 0.12, 0.6, 0.03, 0.003


@dataclass(frozen=True)
class PlannedRecording:
    """One recording to write: split, name, record type, events ``(start_ms, end_ms, type)`` in JSON order,
    and the audio duration in seconds. ``source``: the JSON file to copy (``names_from``), else None."""

    split: str
    name: RecordingName
    record: str
    events: tuple[tuple[int, int, str], ...]
    duration: float
    source: Path | None = None

    @property
    def stem(self) -> str:
        return self.source.stem if self.source is not None else self.name.stem

    @property
    def json_rel(self) -> str:
        return f"{SPLIT_FOLDERS[self.split][0]}/{self.stem}.json"

    @property
    def wav_rel(self) -> str:
        return f"{SPLIT_FOLDERS[self.split][1]}/{self.stem}.wav"


def _rng(seed: int, *keys: int | str) -> np.random.Generator:
    """Generator seeded by ``seed`` and keys (strings through CRC32: stable across runs and processes)."""
    return np.random.default_rng([seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys])


# --------------------------------------------------------------------------------------------- planning


def split_sizes(recordings: int) -> dict[str, int]:
    """Recordings per split in the challenge's proportions (at least one test recording of each kind)."""
    if recordings < MIN_RECORDINGS:
        raise ValueError(f"recordings must be >= {MIN_RECORDINGS}, got {recordings}")
    total = sum(CHALLENGE_SPLIT_SIZES.values())
    inter = max(1, round(recordings * CHALLENGE_SPLIT_SIZES["test_inter"] / total))
    intra = max(1, round(recordings * CHALLENGE_SPLIT_SIZES["test_intra"] / total))
    return {"train": recordings - inter - intra, "test_inter": inter, "test_intra": intra}


def _plan_events(rng: np.random.Generator, record: str, coverage: bool) -> list[tuple[int, int, str]]:
    """Events of one recording in time order: (start_ms, end_ms, type)."""
    if record == "Poor Quality":
        return []
    n = 8 if coverage else int(rng.integers(2, 10))
    t, bounds = rng.uniform(0.1, 0.6), []
    for _ in range(n):
        length = rng.uniform(0.5, 1.8)
        bounds.append((round(t * 1000), round((t + length) * 1000)))
        t += length + (0.0 if rng.random() < 0.25 else rng.uniform(0.05, 0.9))
    if coverage:  # every event type once, in random positions, plus one Normal
        types = list(rng.permutation(list(EVENT_TYPES) + ["Normal"]))
    elif record == "Normal":
        types = ["Normal"] * n
    else:
        types = [_event_type(rng, record) for _ in range(n)]
        # A CAS/DAS record needs its kind of sound at least once (CAS & DAS: both kinds).
        needs = {"CAS": [_CAS], "DAS": [_DAS], "CAS & DAS": [_CAS, _DAS]}[record]
        for kinds in needs:
            if not any(t in kinds or t == "Wheeze+Crackle" for t in types):
                types[int(rng.integers(n))] = kinds[0]
        if record == "CAS & DAS" and not any(t in _CAS or t == "Wheeze+Crackle" for t in types):
            types[0] = "Wheeze+Crackle"  # the DAS fix above may have overwritten the only CAS event
    return [(s, e, str(ty)) for (s, e), ty in zip(bounds, types)]


def _event_type(rng: np.random.Generator, record: str) -> str:
    """One event of an adventitious record: Normal or a sound of the record's kind."""
    u = rng.random()
    if record == "CAS":
        return "Normal" if u < 0.5 else str(rng.choice(_CAS, p=(0.8, 0.12, 0.08)))
    if record == "DAS":
        return "Normal" if u < 0.4 else str(rng.choice(_DAS, p=(0.85, 0.15)))
    if u < 0.25:
        return "Normal"
    if u < 0.55:
        return str(rng.choice(_CAS, p=(0.8, 0.12, 0.08)))
    if u < 0.9:
        return str(rng.choice(_DAS, p=(0.85, 0.15)))
    return "Wheeze+Crackle"


def plan_database(recordings: int = 40, seed: int = 0) -> list[PlannedRecording]:
    """The recordings of a random database (what :func:`generate_sprsound` writes without ``names_from``),
    sorted by stem. See the module docstring for the proportions and guarantees."""
    sizes = split_sizes(recordings)
    rng = _rng(seed, "plan")
    per_patient = float(np.clip(recordings / 10, 2, 9))  # the real database has about 9 per patient
    n_train_patients = max(2, round(sizes["train"] / per_patient))
    n_inter_patients = max(1, round(sizes["test_inter"] / per_patient))
    patients = []
    for i in range(n_train_patients + n_inter_patients):
        phenotype = str(rng.choice(list(_PHENOTYPES), p=[p for p, _ in _PHENOTYPES.values()]))
        patients.append({
            "pid": 40_000_000 + i * 97_531 + int(rng.integers(97_531)),  # distinct 8-digit numbers
            "age": round(float(np.clip(rng.gamma(2.0, 2.2), 0.1, 17.9)), 1),
            "sex": str(rng.choice(["M", "F"])),
            "phenotype": phenotype,
            "sites": [str(s) for s in rng.permutation(["p1", "p2", "p3", "p4"])],
            "used": 0,
        })  # fmt: skip
    train_patients, inter_patients = patients[:n_train_patients], patients[n_train_patients:]
    numbers = iter(int(x) for x in rng.permutation(np.arange(1, 2 * recordings + 1)))

    planned = []
    for split in SPLITS:
        pool = inter_patients if split == "test_inter" else train_patients
        for k in range(sizes[split]):
            # Round-robin over the pool: every patient gets recordings, the first ones of each split included.
            patient = pool[k % len(pool)]
            site = patient["sites"][patient["used"] % 4]
            patient["used"] += 1
            # Intra-subject test recordings were made later than the training ones.
            age = round(patient["age"] + (0.1 if split == "test_intra" else 0.0), 1)
            if k < len(_COVERAGE_RECORDS):
                record = _COVERAGE_RECORDS[k]
            else:
                record = str(rng.choice(RECORD_TYPES, p=_PHENOTYPES[patient["phenotype"]][1]))
            events = _plan_events(rng, record, coverage=k == 0)
            end = events[-1][1] / 1000 if events else rng.uniform(5.0, 15.0)
            json_order = list(range(len(events)))
            if rng.random() < 0.6:  # the real files often list events out of time order
                json_order = [int(j) for j in rng.permutation(len(events))]
            name = RecordingName(patient["pid"], age, patient["sex"], site, next(numbers))
            duration = round(end + rng.uniform(0.2, 1.0), 3)
            planned.append(
                PlannedRecording(split, name, record, tuple(events[j] for j in json_order), duration)
            )
    return sorted(planned, key=lambda r: r.stem)


def plan_from_annotations(folder: str | Path, seed: int = 0) -> list[PlannedRecording]:
    """The recordings of a real BioCAS layout of JSON files (no audio needed): names, splits, record types and
    events as annotated; the duration is the latest event end plus 0.2-1.0 s (5-15 s without events)."""
    planned = []
    for rec in find_recordings(folder, require_audio=False):
        ann = read_annotation(rec.json_path)
        rng = _rng(seed, rec.stem, "duration")
        events = ann.events.sort_values("json_index")
        triples = tuple(
            (round(s * 1000), round(e * 1000), str(t))
            for s, e, t in zip(events["start"], events["end"], events["type"])
        )
        end = float(events["end"].max()) if len(events) else rng.uniform(5.0, 15.0)
        duration = round(end + rng.uniform(0.2, 1.0), 3)
        planned.append(PlannedRecording(rec.split, rec.name, ann.record, triples, duration, rec.json_path))
    if not planned:
        raise FileNotFoundError(f"{folder}: no annotation file in the BioCAS layout")
    return planned


# --------------------------------------------------------------------------------------------- rendering


def _peaking_sos(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """One biquad section of a peaking equaliser (audio-EQ cookbook formulas)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sr
    alpha = math.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a])
    return np.concatenate([b, den])[None] / den[0]


@cache
def _chest_sos(site: str, sex: str, sr: int) -> np.ndarray:
    """Breath band (100 Hz .. site/sex edge) and chest resonance, as second-order sections."""
    p, bright = SITE_PROFILES[site], SEX_BRIGHTNESS[sex]
    edge = min(p.breath_edge_hz * bright, 0.45 * sr)
    band = signal.butter(2, [100.0, edge], "bandpass", fs=sr, output="sos")
    return np.concatenate([band, _peaking_sos(min(p.resonance_hz * bright, 0.45 * sr), 6.0, 2.0, sr)])


@cache
def _rub_sos(sr: int) -> np.ndarray:
    return signal.butter(2, [50.0, min(400.0, 0.45 * sr)], "bandpass", fs=sr, output="sos")


def _tone(rng: np.random.Generator, n: int, sr: int, f0: float, harmonics: Sequence[float]) -> np.ndarray:
    """A sustained tone of ``n`` samples at ``f0`` Hz with a slight glide, harmonic amplitudes ``harmonics``
    (the first is the fundamental's), and tapered edges."""
    t = np.arange(n, dtype=np.float64) / sr
    glide = rng.uniform(-0.1, 0.1)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + glide * t / max(t[-1], 1e-6))) / sr
    tone = np.zeros(n, dtype=np.float64)
    for h, amp in enumerate(harmonics, start=1):
        if h * f0 * 1.1 < 0.45 * sr:
            tone += amp * np.sin(h * phase)
    return (tone * signal.windows.tukey(n, alpha=0.2)).astype(np.float32)


def _add_tone(
    x: np.ndarray, rng: np.random.Generator, s: int, e: int, sr: int, kind: str, gain: float
) -> None:
    f_lo, f_hi, harmonics, level, cover = {
        "Wheeze": (300.0, 900.0, (1.0, 0.3), 1.0, (0.6, 0.9)),
        "Rhonchi": (100.0, 250.0, (1.0, 0.6, 0.4, 0.25), 1.2, (0.6, 0.9)),
        "Stridor": (500.0, 1000.0, (1.0, 0.15), 1.6, (0.8, 0.95)),
    }[kind]
    length = e - s
    n = max(min(int(0.25 * sr), length), int(length * rng.uniform(*cover)))
    i = s + int(rng.integers(0, max(1, length - n + 1)))
    x[i : i + n] += (
        _WHEEZE_LEVEL
        * level
        * gain
        * rng.uniform(0.7, 1.0)
        * _tone(rng, n, sr, rng.uniform(f_lo, f_hi), harmonics)
    )


def _add_crackles(
    x: np.ndarray, rng: np.random.Generator, s: int, e: int, sr: int, kind: str, gain: float
) -> None:
    count, f_lo, f_hi, decay_lo, decay_hi, level = {
        "Fine Crackle": ((6, 16), 600.0, 1500.0, 0.8e-3, 2e-3, 1.0),
        "Coarse Crackle": ((2, 7), 150.0, 450.0, 4e-3, 8e-3, 1.4),
    }[kind]
    t = np.arange(int(0.04 * sr), dtype=np.float32) / sr
    for _ in range(int(rng.integers(*count))):
        i = s + int((e - s) * rng.random())
        freq = min(rng.uniform(f_lo, f_hi), 0.45 * sr)
        kernel = np.exp(-t / rng.uniform(decay_lo, decay_hi)) * np.sin(2 * np.pi * freq * t)
        seg = x[i : min(i + len(kernel), e)]
        seg += (_CRACKLE_LEVEL * level * gain * rng.uniform(0.6, 1.2) * rng.choice([-1, 1])) * kernel[
            : len(seg)
        ]


def render_recording(rec: PlannedRecording, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthesise one recording (see the module docstring): float32 ``[round(duration * sample_rate)]`` in
    [-1, 1]."""
    sr, name = sample_rate, rec.name
    n = round(rec.duration * sr)
    site = SITE_PROFILES[name.site]
    events = sorted(rec.events)
    bounds = [(min(round(s / 1000 * sr), n), min(round(e / 1000 * sr), n), ty) for s, e, ty in events]
    youth = float(np.clip((8.0 / (name.age + 2.0)) ** 0.3, 0.8, 1.4))  # thinner chest wall: louder, brighter

    # 1. breath noise under an envelope that follows the events, heart sounds underneath
    envelope = np.full(n, 0.15, dtype=np.float32)
    for s, e, _ in bounds:
        if e - s > 1:
            envelope[s:e] += np.sin(np.linspace(0, np.pi, e - s, dtype=np.float32))
    noise = rng.standard_normal(n).astype(np.float32)
    breath = signal.sosfilt(_chest_sos(name.site, name.sex, sr), noise).astype(np.float32)
    x = breath * (_BREATH_LEVEL * youth / (breath.std() + 1e-8)) * envelope
    beat = 60.0 / float(np.clip(140 - 4 * name.age, 75, 140))
    burst_t = np.arange(int(0.06 * sr), dtype=np.float32) / sr
    for t0 in np.arange(rng.uniform(0, beat), rec.duration, beat):
        for offset, freq in ((0.0, rng.uniform(40, 60)), (0.3 * beat, rng.uniform(30, 50))):
            i = int((t0 + offset) * sr)
            burst = np.exp(-0.5 * ((burst_t - 0.03) / 0.008) ** 2) * np.sin(2 * np.pi * freq * burst_t)
            seg = x[i : i + len(burst)]
            seg += _HEART_LEVEL * burst[: len(seg)]
    sensor = rng.standard_normal(n).astype(np.float32)  # drawn before the labels' draws

    # 2./3. adventitious sounds of each event
    for s, e, kind in bounds:
        if e - s <= 1 or kind == "Normal":
            continue
        if kind in _CAS or kind == "Wheeze+Crackle":
            _add_tone(
                x, rng, s, e, sr, "Wheeze" if kind == "Wheeze+Crackle" else kind, site.wheeze_gain * youth
            )
        if kind in _DAS or kind == "Wheeze+Crackle":
            crackle = "Fine Crackle" if kind == "Wheeze+Crackle" else kind
            _add_crackles(x, rng, s, e, sr, crackle, site.crackle_gain * youth)

    # 4. poor quality: stethoscope rubbing and handling noise, clipped
    y = x + _NOISE_FLOOR * sensor
    if rec.record == "Poor Quality":
        rub = signal.sosfilt(_rub_sos(sr), rng.standard_normal(n)).astype(np.float32)
        gate = np.zeros(n, dtype=np.float32)
        for _ in range(int(rng.integers(3, 7))):
            i, length = int(rng.integers(n)), int(rng.uniform(0.3, 2.0) * sr)
            gate[i : i + length] = 1.0
        gate = np.convolve(gate, np.hanning(int(0.05 * sr)) / (0.025 * sr), mode="same").astype(np.float32)
        y += 0.6 * gate * rub / (rub.std() + 1e-8) + 0.02 * rng.standard_normal(n).astype(np.float32)
        y = np.clip(y, -0.5, 0.5)
    peak = float(np.abs(y).max()) if n else 0.0
    if peak > 0.98:  # keep within PCM full scale
        y *= 0.98 / peak
    return y.astype(np.float32)


# --------------------------------------------------------------------------------------------- writing


def annotation_json(rec: PlannedRecording) -> str:
    """The JSON text of a planned recording in the real files' format (one line, times as strings of ms)."""
    events = [{"start": str(s), "end": str(e), "type": t} for s, e, t in rec.events]
    return json.dumps({"record_annotation": rec.record, "event_annotation": events})


def _check_no_strays(out: Path, planned: Sequence[PlannedRecording]) -> None:
    """Refuse to mix with files of another plan: the reader would take them as part of the database."""
    wanted = {r.json_rel for r in planned} | {r.wav_rel for r in planned}
    folders = {f for pair in SPLIT_FOLDERS.values() for f in pair}
    strays = sorted(
        p.relative_to(out).as_posix()
        for folder in folders
        if (out / folder).is_dir()
        for p in (out / folder).iterdir()
        if p.suffix in (".json", ".wav") and p.relative_to(out).as_posix() not in wanted
    )
    if strays:
        raise FileExistsError(
            f"{out}: {len(strays)} annotation/audio file(s) not in this plan (e.g. {strays[0]}); "
            "generate into an empty folder"
        )


def generate_sprsound(
    out: str | Path,
    recordings: int = 40,
    seed: int = 0,
    names_from: str | Path | None = None,
    sample_rate: int = 8000,
) -> Path:
    """Write a synthetic SPRSound folder (BioCAS 2022 layout) to ``out``; return it.

    Args:
        recordings: recordings of a planned database (>= 6; ignored with ``names_from``).
        seed: seeds the plan and the audio; the same arguments give byte-identical files.
        names_from: a folder in the BioCAS layout of real JSON annotations; their names, splits and events
            are reused (JSONs copied unchanged) and only audio is synthesised.
        sample_rate: of the 16-bit mono wavs.

    Raises FileExistsError when ``out`` already holds annotation or audio files of another plan,
    NotADirectoryError when it is a file.
    """
    if sample_rate < 4000:
        raise ValueError(
            f"sample_rate must be >= 4000 Hz (tones reach 1 kHz with harmonics), got {sample_rate}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder: give a new or empty folder", str(out))
    planned = (
        plan_from_annotations(names_from, seed) if names_from is not None else plan_database(recordings, seed)
    )
    _check_no_strays(out, planned)
    for rec in planned:
        if rec.source is not None:
            atomic_write_bytes(out / rec.json_rel, rec.source.read_bytes())
        else:
            atomic_write_text(out / rec.json_rel, annotation_json(rec))
        audio = render_recording(rec, sample_rate, _rng(seed, rec.stem, "audio"))
        with atomic_open(out / rec.wav_rel, "wb") as fh:
            sf.write(fh, audio, sample_rate, subtype="PCM_16", format="WAV")
    info = {
        "generator": "ls.data.synthetic_sprsound", "seed": seed, "sample_rate": sample_rate,
        "names_from": None if names_from is None else str(names_from), "recordings": len(planned),
        "events": sum(len(r.events) for r in planned),
        "recordings_per_split": {s: sum(r.split == s for r in planned) for s in SPLITS},
    }  # fmt: skip
    atomic_write_text(out / "synthetic_info.json", json.dumps(info, indent=2) + "\n")
    log.info("wrote %d synthetic SPRSound recordings (%d events) to %s", len(planned), info["events"], out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ls.data.synthetic_sprsound",
        description="Write a synthetic SPRSound folder (BioCAS 2022 layout: wav + json).",
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--recordings", type=int, default=40, help="recordings of a planned database (>= 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--names-from", type=Path, default=None, help="BioCAS-layout folder of real JSONs to reuse"
    )
    parser.add_argument("--sample-rate", type=int, default=8000)
    add_common_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        out = generate_sprsound(args.out, recordings=args.recordings, seed=args.seed,
                                names_from=args.names_from, sample_rate=args.sample_rate)  # fmt: skip
        print(f"wrote {out}")
        return 0

    return run_command(body, args)  # a problem: one ``error:`` line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
