"""Synthetic ICBHI: a folder in the official layout with generated audio, for tests and benchmarks.

``generate_icbhi(out_dir, recordings=24, seed=0)`` writes a small random database; ``like=CYCLE_TABLE.csv``
instead reproduces the structure of a given cycle table (same files, cycles, times, labels, devices, sites,
patients, demographics, splits and folds) with synthetic audio; with the authors' ``icbhi_metadata.csv`` that
is a full-size stand-in for ICBHI (920 files, 6,898 cycles, about 5.4 h of audio). Either way
``ls.data.icbhi.build_cycle_table(out_dir)`` reads the result back as the planned cycle table.

Files written: ``<stem>.wav`` + ``<stem>.txt`` per recording, ``ICBHI_challenge_train_test.txt`` (CRLF,
like the official file), ``ICBHI_Challenge_diagnosis.txt``, ``ICBHI_Challenge_demographic_information.txt``
(6 columns, ``NA`` for missing), ``patient_list_foldwise.txt`` and ``synthetic_info.json``.

Signal model (per recording, at the device's sample rate; every random draw is seeded by ``seed`` and the
file name, so a file does not depend on which other files are generated):

1. *Breath sound*: white noise band-passed to 80 Hz .. a site-dependent cut-off (trachea brightest), scaled to
   unit RMS, times a breathing envelope that rises and falls over the first 40 % of each annotated cycle
   (inspiration) and at 0.6 of that level over the rest (expiration), with a small floor between cycles.
   Scaled by the site's breath gain (trachea loudest).
2. *Heart sounds*: S1/S2 pairs of Gaussian-windowed 30-60 Hz bursts at 60-110 beats per minute (faster for
   children); mostly below the 100 Hz floor of the features, as in real chest recordings.
3. *Crackles* (cycles with the crackle bit): 3-12 explosive transients, mostly in the inspiratory part; each a
   damped sinusoid of 250-1200 Hz with a 1.5-5 ms decay.
4. *Wheezes* (cycles with the wheeze bit): a sustained tone of 150-800 Hz with a slight glide and two
   harmonics, lasting 40-90 % of the cycle (at least 150 ms), with tapered edges.
5. Patient factors: adventitious sounds scale with a per-patient severity; a chest-wall factor from BMI
   (children and lean adults louder) scales all lung sounds; the site scales crackles (bases loudest) and
   wheezes (trachea loudest).
6. *Device* (:data:`DEVICE_PROFILES`): a frequency response (high-pass, low-pass, resonance; e.g. the acoustic
   LittC2SE cuts above 700 Hz, which hides most crackle energy), a gain, a white noise floor and for the AKG
   microphone a 50 Hz mains hum; the device also fixes the sample rate(s) and PCM widths.

So labels are learnable from the audio, and device and site change how the same label sounds: metadata
genuinely matters. The levels are plausible, not calibrated against real recordings.
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

from ls.data.icbhi import CYCLE_TABLE_COLUMNS, NO_FOLD, SITES, UNKNOWN_SPLIT, load_cycle_table, parse_stem
from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

SPLIT_FILE = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
DEMOGRAPHICS_FILE = "ICBHI_Challenge_demographic_information.txt"
FOLD_FILE = "patient_list_foldwise.txt"


@dataclass(frozen=True)
class DeviceProfile:
    """How a recording device renders a sound (and what files it writes)."""

    mode: str  # acquisition mode token used for generated names
    rates: tuple[int, ...]  # sample rates; the first is the most common
    rate_probs: tuple[float, ...]
    subtypes: tuple[str, ...]  # PCM widths written for this device
    highpass_hz: float
    lowpass_hz: float
    lowpass_order: int
    resonance_hz: float
    resonance_db: float
    gain: float
    noise_floor: float  # std of the additive white sensor noise (full scale = 1)
    hum: float = 0.0  # amplitude of a 50 Hz mains hum


#: Device profiles (rates and widths as in the real database: 4 kHz/16-bit for the Littmann 3200; 44.1 kHz,
#: sometimes 10 kHz, with 16/24/32-bit PCM for the others).
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    "AKGC417L": DeviceProfile("mc", (44100,), (1.0,), ("PCM_24", "PCM_16", "PCM_32"),
                              40.0, 8000.0, 2, 1000.0, 0.0, 1.0, 0.002, hum=0.004),
    "LittC2SE": DeviceProfile("mc", (44100, 10000), (0.7, 0.3), ("PCM_24", "PCM_16", "PCM_32"),
                              60.0, 700.0, 4, 200.0, 6.0, 0.8, 0.006),
    "Litt3200": DeviceProfile("sc", (4000,), (1.0,), ("PCM_16",),
                              20.0, 1000.0, 4, 120.0, 4.0, 1.4, 0.004),
    "Meditron": DeviceProfile("sc", (44100, 10000), (0.8, 0.2), ("PCM_16", "PCM_24", "PCM_32"),
                              100.0, 2000.0, 2, 500.0, 4.0, 1.2, 0.003),
}  # fmt: skip


@dataclass(frozen=True)
class SiteProfile:
    breath_gain: float
    breath_cutoff_hz: float  # upper edge of the breath-noise band
    crackle_gain: float
    wheeze_gain: float


#: Chest-location profiles: tracheal breath sounds are loud and bright, crackles are loudest at the bases.
SITE_PROFILES: dict[str, SiteProfile] = {
    "Tc": SiteProfile(2.0, 1200.0, 0.6, 1.4),
    "Al": SiteProfile(1.0, 600.0, 1.0, 1.0),
    "Ar": SiteProfile(1.0, 600.0, 1.0, 1.0),
    "Pl": SiteProfile(0.8, 500.0, 1.3, 0.9),
    "Pr": SiteProfile(0.8, 500.0, 1.3, 0.9),
    "Ll": SiteProfile(0.7, 450.0, 1.1, 0.8),
    "Lr": SiteProfile(0.7, 450.0, 1.1, 0.8),
}

# (P(crackle), P(wheeze)) per cycle by diagnosis.
_LABEL_RATES = {
    "Healthy": (0.05, 0.03), "COPD": (0.45, 0.28), "URTI": (0.15, 0.10), "LRTI": (0.35, 0.15),
    "Pneumonia": (0.50, 0.12), "Bronchiectasis": (0.50, 0.15), "Bronchiolitis": (0.30, 0.35),
    "Asthma": (0.10, 0.50),
}  # fmt: skip
_CHILD_DISEASES = ("URTI", "Bronchiolitis", "Pneumonia", "Healthy", "LRTI")
_ADULT_DISEASES = ("COPD", "Healthy", "URTI", "Asthma", "Bronchiectasis", "Pneumonia", "LRTI")
_ADULT_DISEASE_P = (0.45, 0.15, 0.1, 0.08, 0.08, 0.07, 0.07)
_DEVICE_ORDER = ("Meditron", "AKGC417L", "Litt3200", "LittC2SE")
# Cycle durations: gamma with ICBHI's mean 2.70 s and std 1.17 s, clipped to its range 0.2 .. 16.2 s.
_CYCLE_MEAN, _CYCLE_STD, _CYCLE_MIN, _CYCLE_MAX = 2.70, 1.17, 0.2, 16.16
# Adventitious sounds are made salient (wheeze 3x the breath level) so that a small model learns them within
# a CPU quickstart; real recordings are harder.
_BREATH_LEVEL, _CRACKLE_LEVEL, _WHEEZE_LEVEL, _HEART_LEVEL = 0.05, 0.8, 0.15, 0.04


# --------------------------------------------------------------------------------------------- planning


def _stable_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """Generator seeded by ``seed`` and keys (strings hashed with CRC32, stable across runs and processes)."""
    parts = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(parts)


def _demographics(rng: np.random.Generator, child: bool | None = None) -> dict:
    """Random patient: 30 % children (unless ``child`` forces it), some values NA as in ICBHI."""
    forced = child is not None
    if child is None:
        child = bool(rng.random() < 0.3)
    if child:  # age in years (fractional for infants), weight/height instead of BMI
        age = round(float(rng.uniform(0.25, 16.0)), 2)
        height = 50.0 + 105.0 * (age / 16.0) ** 0.6  # cm, a rough growth curve (59 cm at 3 months)
        bmi = float(np.clip(rng.normal(16.5, 1.8), 12.5, 24.0))
        weight = bmi * (height / 100.0) ** 2
        complete = forced or rng.random() > 0.2
        cw, ch = (round(weight, 1), round(height, 1)) if complete else (math.nan, math.nan)
        disease = str(rng.choice(_CHILD_DISEASES))
        return {"Age": age, "BMI": math.nan, "CW": cw, "CH": ch, "Disease": disease,
                "Sex": str(rng.choice(["M", "F"]))}  # fmt: skip
    age = float(round(rng.uniform(20, 88)))
    bmi = round(float(np.clip(rng.normal(26.5, 4.5), 16.0, 45.0)), 2) if rng.random() > 0.15 else math.nan
    disease = str(rng.choice(_ADULT_DISEASES, p=_ADULT_DISEASE_P))
    return {"Age": age, "BMI": bmi, "CW": math.nan, "CH": math.nan, "Disease": disease,
            "Sex": str(rng.choice(["M", "F"]))}  # fmt: skip


def _ensure_classes(table: pd.DataFrame, rng: np.random.Generator) -> None:
    """Make every class occur in at least two patients of each split (one when the split has one patient),
    relabelling random normal cycles in place, so every split and a patient-level validation carve see all
    classes."""
    for split in ("train", "test"):
        rows = table.index[table["Split"] == split]
        patients = table.loc[rows, "PID"].unique()
        wanted = min(2, len(patients))
        for label in (1, 2, 3):
            c, w = label & 1, label >> 1
            sub = table.loc[rows]
            has = set(sub.loc[(sub["Crackles"] == c) & (sub["Wheezes"] == w), "PID"])
            lacking = [p for p in rng.permutation(patients) if p not in has]
            for pid in lacking[: max(0, wanted - len(has))]:
                own = sub.index[sub["PID"] == pid]
                normal = own[(sub.loc[own, "Crackles"] == 0) & (sub.loc[own, "Wheezes"] == 0)]
                i = rng.choice(normal if len(normal) else own)
                table.loc[i, ["Crackles", "Wheezes"]] = [c, w]


def plan_database(recordings: int = 24, seed: int = 0) -> pd.DataFrame:
    """The cycle table of a small random database (what :func:`generate_icbhi` writes without ``like``).

    About three recordings per patient (at least 5 patients); patients alternate between train and test
    (60/40) and over folds 0-4 and devices, so every split has several devices and sites, at least two
    training patients can form a validation split, and every class occurs in train and test.
    """
    if recordings < 5:
        raise ValueError(f"recordings must be >= 5 (train, test and validation patients), got {recordings}")
    rng = _stable_rng(seed, "plan")
    n_patients = max(5, round(recordings / 3))
    per_patient = np.full(n_patients, recordings // n_patients)
    per_patient[: recordings % n_patients] += 1
    rows = []
    for i in range(n_patients):
        pid = 101 + i
        device = _DEVICE_ORDER[i % len(_DEVICE_ORDER)]
        profile = DEVICE_PROFILES[device]
        # Patients 1 and 4 (one test, one train) are children, so both splits have child weight/height.
        demo = _demographics(rng, child=True if i in (1, 4) else None)
        if i == n_patients - 2 and n_patients >= 6:  # one patient without any demographics, like ICBHI's 223
            demo.update(Age=math.nan, Sex=math.nan, BMI=math.nan, CW=math.nan, CH=math.nan)
        split = "test" if i % 5 in (1, 3) else "train"
        p_crackle, p_wheeze = _LABEL_RATES[demo["Disease"]]
        sites = rng.permutation(list(SITES))
        for j in range(per_patient[i]):
            rec_index = f"{1 + j // len(sites)}b1"
            stem = f"{pid}_{rec_index}_{sites[j % len(sites)]}_{profile.mode}_{device}"
            n_cycles = int(rng.integers(3, 7))
            durations = _cycle_durations(rng, n_cycles)
            start = round(float(rng.uniform(0.0, 0.6)), 3)
            bounds = np.round(start + np.concatenate([[0.0], np.cumsum(durations)]), 3)
            for k in range(n_cycles):
                rows.append({
                    "PID": pid, "Filename": stem, "CycleIndex": k, "CycleStart": float(bounds[k]),
                    "CycleEnd": float(bounds[k + 1]), "Crackles": int(rng.random() < p_crackle),
                    "Wheezes": int(rng.random() < p_wheeze), "Split": split, "Device": device, "Fold": i % 5,
                    **demo, "AuscLoc": str(sites[j % len(sites)]),
                })  # fmt: skip
    table = pd.DataFrame(rows)
    _ensure_classes(table, rng)
    return table.sort_values(["Filename", "CycleIndex"], ignore_index=True)[list(CYCLE_TABLE_COLUMNS)]


def _cycle_durations(rng: np.random.Generator, n: int) -> np.ndarray:
    shape = (_CYCLE_MEAN / _CYCLE_STD) ** 2
    return np.round(np.clip(rng.gamma(shape, _CYCLE_MEAN / shape, size=n), _CYCLE_MIN, _CYCLE_MAX), 3)


# --------------------------------------------------------------------------------------------- rendering


def _peaking_sos(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """One biquad section of a peaking equaliser (RBJ audio-EQ cookbook)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sr
    alpha = math.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a])
    return np.concatenate([b, den])[None] / den[0]


@cache
def _device_sos(device: str, sr: int) -> np.ndarray:
    p = DEVICE_PROFILES[device]
    nyq_safe = 0.45 * sr
    sections = [
        signal.butter(2, min(p.highpass_hz, nyq_safe), "highpass", fs=sr, output="sos"),
        signal.butter(p.lowpass_order, min(p.lowpass_hz, nyq_safe), "lowpass", fs=sr, output="sos"),
    ]
    if p.resonance_db:
        sections.append(_peaking_sos(min(p.resonance_hz, nyq_safe), p.resonance_db, 1.5, sr))
    return np.concatenate(sections)


@cache
def _breath_sos(site: str, sr: int) -> np.ndarray:
    return signal.butter(2, [80.0, min(SITE_PROFILES[site].breath_cutoff_hz, 0.45 * sr)], "bandpass", fs=sr,
                         output="sos")  # fmt: skip


def _chest_factor(row: pd.Series) -> float:
    """Chest-wall attenuation: children and lean adults sound louder."""
    if not math.isnan(row["BMI"]):
        return float(np.clip((25.0 / row["BMI"]) ** 0.5, 0.7, 1.3))
    if not math.isnan(row["Age"]) and row["Age"] < 16:
        return 1.2
    return 1.0


def render_recording(
    cycles: pd.DataFrame,
    device: str,
    site: str,
    sr: int,
    duration: float,
    rng: np.random.Generator,
    severity: float = 0.8,
    chest: float = 1.0,
    heart_rate: float = 75.0,
) -> np.ndarray:
    """Synthesise one recording (see the module docstring).

    Args:
        cycles: the recording's cycles with ``CycleStart``, ``CycleEnd`` (s), ``Crackles``, ``Wheezes``.
        duration: length of the recording in seconds (>= the last cycle end).

    Returns:
        float32 ``[round(duration * sr)]`` in [-1, 1].
    """
    n = round(duration * sr)
    site_p = SITE_PROFILES[site]
    starts = np.minimum((cycles["CycleStart"].to_numpy() * sr).astype(np.int64), n)
    ends = np.minimum((cycles["CycleEnd"].to_numpy() * sr).astype(np.int64), n)

    # 1. breath noise under a breathing envelope
    envelope = np.full(n, 0.08, dtype=np.float32)
    for s, e in zip(starts, ends):
        length = e - s
        insp = max(1, int(0.4 * length))
        envelope[s : s + insp] += np.sin(np.linspace(0, np.pi, insp, dtype=np.float32))
        envelope[s + insp : e] += 0.6 * np.sin(np.linspace(0, np.pi, length - insp, dtype=np.float32))
    breath = signal.sosfilt(_breath_sos(site, sr), rng.standard_normal(n, dtype=np.float32)).astype(
        np.float32
    )
    breath *= (_BREATH_LEVEL * site_p.breath_gain) / (breath.std() + 1e-8) * envelope
    x = breath
    # Drawn before the label-dependent sounds, so switching a label leaves every other draw unchanged.
    sensor_noise = rng.standard_normal(n, dtype=np.float32)

    # 2. heart sounds
    beat = 60.0 / heart_rate
    burst_t = np.arange(int(0.06 * sr), dtype=np.float32) / sr
    for t0 in np.arange(rng.uniform(0, beat), duration, beat):
        for offset, freq in ((0.0, rng.uniform(40, 60)), (0.3 * beat, rng.uniform(30, 50))):
            i = int((t0 + offset) * sr)
            burst = np.exp(-0.5 * ((burst_t - 0.03) / 0.008) ** 2) * np.sin(2 * np.pi * freq * burst_t)
            seg = x[i : i + len(burst)]
            seg += _HEART_LEVEL * burst[: len(seg)]

    # 3./4. adventitious sounds
    advent = np.zeros(n, dtype=np.float32)
    crackle_t = np.arange(int(0.03 * sr), dtype=np.float32) / sr
    for s, e, has_crackle, has_wheeze in zip(starts, ends, cycles["Crackles"], cycles["Wheezes"]):
        length = e - s
        if length <= 1:
            continue
        if has_crackle:
            for _ in range(int(rng.integers(3, 13))):
                i = s + int(length * (rng.beta(2, 3) if rng.random() < 0.8 else rng.random()))
                freq = min(rng.uniform(250, 1200), 0.45 * sr)
                kernel = np.exp(-crackle_t / rng.uniform(1.5e-3, 5e-3)) * np.sin(2 * np.pi * freq * crackle_t)
                seg = advent[i : i + len(kernel)]
                seg += (
                    _CRACKLE_LEVEL * site_p.crackle_gain * rng.uniform(0.6, 1.2) * rng.choice([-1, 1])
                ) * kernel[: len(seg)]
        if has_wheeze:
            w_len = max(min(int(0.15 * sr), length), int(length * rng.uniform(0.4, 0.9)))
            i = s + int(rng.integers(0, max(1, length - w_len + 1)))
            t = np.arange(w_len, dtype=np.float32) / sr
            f0, glide = rng.uniform(150, 800), rng.uniform(-0.15, 0.15)
            phase = 2 * np.pi * np.cumsum(f0 * (1 + glide * t / max(t[-1], 1e-6))) / sr
            tone = np.zeros(w_len, dtype=np.float32)
            for h, amp in ((1, 1.0), (2, 0.35), (3, 0.12)):
                if h * f0 * (1 + abs(glide)) < 0.45 * sr:
                    tone += amp * np.sin(h * phase).astype(np.float32)
            tone *= signal.windows.tukey(w_len, alpha=0.3).astype(np.float32)
            advent[i : i + w_len] += _WHEEZE_LEVEL * site_p.wheeze_gain * rng.uniform(0.6, 1.0) * tone
    x = chest * (x + severity * advent)

    # 6. device
    p = DEVICE_PROFILES[device]
    y = signal.sosfilt(_device_sos(device, sr), x).astype(np.float32) * p.gain
    y += p.noise_floor * sensor_noise
    if p.hum:
        y += p.hum * np.sin(2 * np.pi * 50.0 * np.arange(n, dtype=np.float32) / sr)
    peak = float(np.abs(y).max()) if n else 0.0
    if peak > 0.98:  # keep within PCM full scale
        y *= 0.98 / peak
    return y


# --------------------------------------------------------------------------------------------- writing


def _fmt(value: float) -> str:
    """Number as the helper files write it: ``NA`` when missing, else the shortest exact decimal."""
    return "NA" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _file_jobs(table: pd.DataFrame, seed: int, fixed_rates: dict[str, tuple[int, str]] | None) -> list[dict]:
    """One rendering job per recording: cycles, device, site, rate, width, duration, patient factors."""
    patients = table.groupby("PID").first()
    jobs = []
    for stem, cycles in table.groupby("Filename", sort=True):
        name = parse_stem(stem)
        if cycles["Device"].iloc[0] != name.device:
            raise ValueError(
                f"{stem}: Device column {cycles['Device'].iloc[0]!r} disagrees with the file name"
            )
        rng = _stable_rng(seed, stem)
        profile = DEVICE_PROFILES[name.device]
        if fixed_rates and stem in fixed_rates:
            sr, subtype = fixed_rates[stem]
        else:
            sr = int(rng.choice(profile.rates, p=profile.rate_probs))
            subtype = str(rng.choice(profile.subtypes))
        patient = patients.loc[name.pid]
        prng = _stable_rng(seed, "patient", int(name.pid))
        child = not math.isnan(patient["Age"]) and patient["Age"] < 16
        jobs.append({
            "stem": stem,
            "cycles": cycles[["CycleStart", "CycleEnd", "Crackles", "Wheezes"]].reset_index(drop=True),
            "device": name.device, "site": name.site, "sr": sr, "subtype": subtype,
            "duration": float(cycles["CycleEnd"].max() + rng.uniform(0.05, 0.6)),
            "severity": float(prng.uniform(0.4, 1.0)), "chest": _chest_factor(patient),
            "heart_rate": float(prng.uniform(90, 110) if child else prng.uniform(60, 85)),
        })  # fmt: skip
    return jobs


def _write_recording(job: dict, out_dir: str, seed: int) -> tuple[str, int, str]:
    out = Path(out_dir)
    rng = _stable_rng(seed, job["stem"], "audio")
    audio = render_recording(
        job["cycles"],
        job["device"],
        job["site"],
        job["sr"],
        job["duration"],
        rng,
        severity=job["severity"],
        chest=job["chest"],
        heart_rate=job["heart_rate"],
    )
    with atomic_open(out / f"{job['stem']}.wav", "wb") as fh:
        sf.write(fh, audio, job["sr"], subtype=job["subtype"], format="WAV")
    lines = [
        f"{_fmt(r.CycleStart)}\t{_fmt(r.CycleEnd)}\t{int(r.Crackles)}\t{int(r.Wheezes)}"
        for r in job["cycles"].itertuples()
    ]
    atomic_write_text(out / f"{job['stem']}.txt", "\n".join(lines) + "\n")
    return job["stem"], job["sr"], job["subtype"]


def _write_helper_files(table: pd.DataFrame, out: Path) -> None:
    files = table.groupby("Filename", sort=True)["Split"].first()
    listed = files[files != UNKNOWN_SPLIT]
    # The official split file has CRLF line ends; reproduce that quirk.
    atomic_write_text(out / SPLIT_FILE, "".join(f"{stem}\t{split}\r\n" for stem, split in listed.items()))
    patients = table.groupby("PID", sort=True).first()
    atomic_write_text(out / DIAGNOSIS_FILE, "".join(
        f"{pid}\t{d}\n" for pid, d in patients["Disease"].items() if isinstance(d, str)))  # fmt: skip
    demo_lines = []
    for pid, p in patients.iterrows():
        sex = p["Sex"] if isinstance(p["Sex"], str) else "NA"
        demo_lines.append(
            "\t".join([str(pid), _fmt(p["Age"]), sex, _fmt(p["BMI"]), _fmt(p["CW"]), _fmt(p["CH"])])
        )
    atomic_write_text(out / DEMOGRAPHICS_FILE, "\n".join(demo_lines) + "\n")
    folds = patients["Fold"][patients["Fold"] != NO_FOLD]
    atomic_write_text(out / FOLD_FILE, "".join(f"{pid} {int(f)}\n" for pid, f in folds.items()))


def generate_icbhi(
    out_dir: str | Path,
    recordings: int = 24,
    seed: int = 0,
    like: str | Path | pd.DataFrame | None = None,
    workers: int = 1,
) -> Path:
    """Write a synthetic ICBHI folder to ``out_dir`` (created; same-named files are replaced); return it.
    Raises NotADirectoryError when ``out_dir`` is a file.

    Args:
        recordings: number of recordings of the random database (ignored with ``like``).
        seed: seeds the plan and the audio; the same arguments give byte-identical files.
        like: a cycle table (CSV path or DataFrame) whose structure is reproduced, e.g. the authors'
            ``icbhi_metadata.csv`` for a full-size stand-in.
        workers: processes rendering recordings (useful with ``like``); 1 renders in-process.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder: give a new or existing folder", str(out))
    out.mkdir(parents=True, exist_ok=True)
    fixed_rates = None
    if like is None:
        table = plan_database(recordings, seed)
        fixed_rates = _mixed_formats(table)
    else:
        table = like.copy() if isinstance(like, pd.DataFrame) else load_cycle_table(like)
    jobs = _file_jobs(table, seed, fixed_rates)
    _write_helper_files(table, out)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            written = list(
                pool.map(_write_recording, jobs, [str(out)] * len(jobs), [seed] * len(jobs), chunksize=8)
            )
    else:
        written = [_write_recording(job, str(out), seed) for job in jobs]
    info = {
        "generator": "ls.data.synthetic", "seed": seed, "like": None if like is None else str(like)[:200],
        "recordings": len(written), "cycles": len(table),
        "sample_rates": sorted({sr for _, sr, _ in written}),
        "subtypes": sorted({st for _, _, st in written}),
    }  # fmt: skip
    atomic_write_text(out / "synthetic_info.json", json.dumps(info, indent=2) + "\n")
    log.info("wrote %d synthetic recordings (%d cycles) to %s", len(written), len(table), out)
    return out


def _mixed_formats(table: pd.DataFrame) -> dict[str, tuple[int, str]]:
    """Rates and widths for the small database that cover 44.1/10/4 kHz and 16/24/32-bit by construction."""
    formats, k = {}, 0
    for stem, device in table.groupby("Filename", sort=True)["Device"].first().items():
        profile = DEVICE_PROFILES[device]
        if len(profile.rates) == 1:
            sr = profile.rates[0]
        else:  # every third recording of a multi-rate device at its second (10 kHz) rate
            sr = profile.rates[1] if k % 3 == 0 else profile.rates[0]
            k += 1
        subtype = profile.subtypes[len(formats) % len(profile.subtypes)]
        formats[stem] = (sr, subtype)
    return formats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ls.data.synthetic", description="Write a synthetic ICBHI folder (official layout)."
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--recordings", type=int, default=24, help="recordings of the random database")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--like", type=Path, default=None, help="cycle table CSV whose structure to reproduce"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    add_common_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        out = generate_icbhi(args.out_dir, recordings=args.recordings, seed=args.seed, like=args.like,
                             workers=args.workers)  # fmt: skip
        print(f"wrote {out}")
        return 0

    return run_command(body, args)  # a problem: one ``error:`` line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
