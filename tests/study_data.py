"""Small ICBHI-format folders in which the metadata does or does not decide a cycle's class, and the
report fixtures trained on them.

Every cycle is one second of a pure tone (low 300 Hz, mid 700 Hz or high 1500 Hz, in 1 : 2 : 1 proportion)
in white noise; each patient has two recordings, one on each of two devices (Meditron, LittC2SE), and the
audio does not depend on the device. A cycle is abnormal (the wheeze bit) when its tone reaches a threshold:

- ``rule="device"``: the threshold is *mid* on the Meditron and *high* on the LittC2SE, so the same mid tone
  is abnormal on one device and normal on the other. A model without metadata can do no better than a
  coin on mid cycles; a model that sees the device can be right on all of them.
- ``rule="none"``: the threshold is *mid* or *high* by a fair coin per cycle, independent of the device:
  the class has the same distribution as above, and the metadata carries no signal about it.

``python tests/study_data.py`` regenerates ``tests/fixtures/study_report`` (several minutes on CPU): both
folders, then ``ls.study`` with ``tests/fixtures/study_report/study.yaml`` (ast and ast_film_soft, 3 seeds,
strict selection) on each, keeping each run's ``run.json``, ``test_predictions.csv`` and ``config.yaml``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 4000
TONES_HZ = (300.0, 700.0, 1500.0)  # low, mid, high
TONE_P = (0.25, 0.5, 0.25)
DEVICES = (("Meditron", "sc"), ("LittC2SE", "mc"))
#: The tone index from which a cycle is abnormal, per device (rule "device").
THRESHOLD = {"Meditron": 1, "LittC2SE": 2}
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "study_report"


def write_conditional_icbhi(out: str | Path, rule: str, patients: int = 20, cycles: int = 14,
                            seed: int = 0) -> Path:
    """Write the folder (recordings + the three official helper files); returns it. Patients ``i`` with
    ``i % 5`` in (1, 3) are the test split."""
    if rule not in ("device", "none"):
        raise ValueError(f"rule must be 'device' or 'none', got {rule!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    window = np.hanning(SAMPLE_RATE)
    split_lines, diagnosis, demographics = [], [], []
    for i in range(patients):
        pid = 101 + i
        split = "test" if i % 5 in (1, 3) else "train"
        for r, (device, mode) in enumerate(DEVICES):
            stem = f"{pid}_{r + 1}b1_{('Al', 'Ar')[r]}_{mode}_{device}"
            audio, lines = [], []
            for c in range(cycles):
                tone = int(rng.choice(3, p=TONE_P))
                audio.append(0.3 * np.sin(2 * np.pi * TONES_HZ[tone] * t) * window
                             + 0.05 * rng.standard_normal(SAMPLE_RATE))
                threshold = THRESHOLD[device] if rule == "device" else 1 + int(rng.random() < 0.5)
                lines.append(f"{c:.3f}\t{c + 1:.3f}\t0\t{int(tone >= threshold)}")
            sf.write(out / f"{stem}.wav", np.concatenate(audio).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            split_lines.append(f"{stem}\t{split}\n")
        diagnosis.append(f"{pid}\tCOPD\n")
        demographics.append(f"{pid}\t{int(rng.integers(40, 80))}\tM\t{rng.uniform(20, 30):.1f}\tNA\tNA\n")
    (out / "ICBHI_challenge_train_test.txt").write_text("".join(split_lines))
    (out / "ICBHI_Challenge_diagnosis.txt").write_text("".join(diagnosis))
    (out / "ICBHI_Challenge_demographic_information.txt").write_text("".join(demographics))
    return out


def make_fixtures(dest: Path = FIXTURES, jobs: int = 2) -> None:
    """Train the study of ``dest/study.yaml`` on both folders; keep what ``ls.report`` reads."""
    from ls.study import load_study, run_study

    with tempfile.TemporaryDirectory(prefix="ls_report_fixtures_") as tmp:
        for rule in ("device", "none"):
            data = write_conditional_icbhi(Path(tmp) / f"data_{rule}", rule)
            study = load_study(dest / "study.yaml", [f"dataset.data_folder={data}"], jobs=jobs,
                               out=Path(tmp) / f"study_{rule}")
            outcome = run_study(study)
            if outcome.failed:
                raise SystemExit(f"runs failed: {[r.error for r in outcome.failed]}")
            target = dest / f"metadata_{rule}"
            shutil.rmtree(target, ignore_errors=True)
            for run in outcome.plan:
                keep = target / run.run_dir.relative_to(study.runs_dir)
                keep.mkdir(parents=True)
                for name in ("run.json", "test_predictions.csv", "config.yaml"):
                    shutil.copy2(run.run_dir / name, keep / name)
            shutil.copy2(study.report_dir / "report.md", target / "report.md")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    make_fixtures()
