"""Synthetic ICBHI generator (ls.data.synthetic)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ls.data.config import DatasetConfig
from ls.data.icbhi import build_cycle_table, load_cycle_table
from ls.data.splits import assign_splits
from ls.data.synthetic import generate_icbhi, main, plan_database, render_recording


def _band_tonality(x: np.ndarray, sr: int, lo: float = 100.0, hi: float = 1000.0) -> float:
    """Peak-to-median power in [lo, hi] Hz: large for a sustained tone, ~ a few for noise."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    band = spec[(freqs >= lo) & (freqs <= hi)]
    return float(band.max() / np.median(band))


def _kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x**4).mean() / (x**2).mean() ** 2)


def test_generated_folder_reads_back_as_the_plan(synthetic_icbhi_dir):
    table = build_cycle_table(synthetic_icbhi_dir)
    pd.testing.assert_frame_equal(table, plan_database(24, seed=0), check_dtype=False)
    assert table["Filename"].nunique() == 24
    assert (synthetic_icbhi_dir / "ICBHI_challenge_train_test.txt").read_bytes().count(b"\r\n") == 24  # CRLF


def test_generated_folder_has_what_tests_need(synthetic_icbhi_dir):
    table = build_cycle_table(synthetic_icbhi_dir)
    four = table["Crackles"] + 2 * table["Wheezes"]
    for split in ("train", "test"):
        assert set(four[table["Split"] == split]) == {0, 1, 2, 3}
        assert table.loc[table["Split"] == split, "Device"].nunique() >= 2
    assert table["Device"].nunique() == 4 and table["AuscLoc"].nunique() >= 5
    assert table.loc[table["Split"] == "train", "PID"].nunique() >= 3
    assert table["Age"].isna().any() and table["Age"].lt(16).any() and table["BMI"].notna().any()
    assert table["CW"].notna().any()
    durations = table["CycleEnd"] - table["CycleStart"]
    assert durations.between(0.2, 16.16).all() and 1.5 < durations.mean() < 4.0
    # a patient-disjoint validation split exists for every strategy
    cfg = DatasetConfig(data_folder=str(synthetic_icbhi_dir))
    for strategy in ("official", "foldwise", "random"):
        a = assign_splits(table, dataclasses.replace(cfg, split_strategy=strategy), synthetic_icbhi_dir)
        assert set(a) == {"train", "val", "test"}


def test_generated_audio_mixes_rates_and_widths(synthetic_icbhi_dir):
    infos = [sf.info(str(p)) for p in sorted(Path(synthetic_icbhi_dir).glob("*.wav"))]
    assert {i.samplerate for i in infos} == {4000, 10000, 44100}
    assert {i.subtype for i in infos} == {"PCM_16", "PCM_24", "PCM_32"}
    assert all(i.channels == 1 for i in infos)
    table = build_cycle_table(synthetic_icbhi_dir)
    by_file = table.groupby("Filename")["Device"].first()
    rates = {Path(i.name).stem: i.samplerate for i in infos}
    assert {rates[f] for f in by_file[by_file == "Litt3200"].index} == {4000}


def test_wheeze_cycles_are_more_tonal_than_normal_ones(synthetic_icbhi_dir):
    table = build_cycle_table(synthetic_icbhi_dir)
    tonal = {0: [], 2: []}
    for stem, cycles in table.groupby("Filename"):
        audio, sr = sf.read(synthetic_icbhi_dir / f"{stem}.wav", dtype="float32")
        for c in cycles.itertuples():
            label = c.Crackles + 2 * c.Wheezes
            if label in tonal:
                tonal[label].append(_band_tonality(audio[int(c.CycleStart * sr) : int(c.CycleEnd * sr)], sr))
    assert len(tonal[2]) >= 2
    assert np.median(tonal[2]) > 1.5 * np.median(tonal[0])


def _cycles(crackles: int, wheezes: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"CycleStart": [0.2], "CycleEnd": [2.8], "Crackles": [crackles], "Wheezes": [wheezes]}
    )


def test_render_adds_crackle_transients_and_device_filtering():
    def render(crackles, device="Meditron"):
        rng = np.random.default_rng(1)  # same draws: the signals differ only by what we switch on
        return render_recording(_cycles(crackles, 0), device, "Pl", 44100, 3.0, rng)

    plain, crackly = render(0), render(1)
    assert plain.dtype == np.float32 and plain.shape == (132300,) and np.abs(crackly).max() <= 1.0
    assert _kurtosis(crackly) > 1.5 * _kurtosis(plain)

    # Same draws, so render(1) - render(0) is exactly the crackles as the device renders them: the acoustic
    # LittC2SE passes a much smaller share of their energy above 1 kHz than the AKG microphone.
    def high_band_share(device):
        crackles = render(1, device) - render(0, device)
        spec = np.abs(np.fft.rfft(crackles)) ** 2
        freqs = np.fft.rfftfreq(len(crackles), 1 / 44100)
        return spec[freqs > 1000].sum() / spec.sum()

    assert high_band_share("LittC2SE") < 0.2 * high_band_share("AKGC417L")


def test_generation_is_deterministic_and_seeded(tmp_path):
    a = generate_icbhi(tmp_path / "a", recordings=5, seed=3)
    b = generate_icbhi(tmp_path / "b", recordings=5, seed=3)
    c = generate_icbhi(tmp_path / "c", recordings=5, seed=4)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert build_cycle_table(a, check_audio=False).equals(build_cycle_table(b, check_audio=False))
    assert not build_cycle_table(c, check_audio=False).equals(build_cycle_table(a, check_audio=False))
    with pytest.raises(ValueError, match="recordings must be >= 5"):
        generate_icbhi(tmp_path / "d", recordings=2)


def test_cli_writes_a_folder(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--recordings", "5", "--seed", "1"]) == 0
    assert build_cycle_table(tmp_path / "cli", check_audio=False)["Filename"].nunique() == 5
    assert main([str(tmp_path / "x"), "--like", str(tmp_path / "missing.csv")]) == 2  # ls.utils.cli: bad input
    assert "missing.csv" in capsys.readouterr().err


@pytest.mark.shared_data
def test_like_reproduces_a_slice_of_the_real_cycle_table(icbhi_meta_dir, tmp_path):
    full = load_cycle_table(icbhi_meta_dir / "icbhi_metadata.csv")
    files = ["104_1b1_Al_sc_Litt3200", "107_2b3_Al_mc_AKGC417L", "223_1b1_Pr_sc_Meditron",
             "226_1b1_Pl_sc_LittC2SE", "156_2b3_Al_mc_AKGC417L"]  # fmt: skip
    subset = full[full["Filename"].isin(files)].reset_index(drop=True)
    csv = tmp_path / "slice.csv"
    subset.to_csv(csv, index=False)
    out = generate_icbhi(tmp_path / "like", like=csv, seed=0)
    pd.testing.assert_frame_equal(build_cycle_table(out), subset)
    assert sf.info(str(out / "104_1b1_Al_sc_Litt3200.wav")).samplerate == 4000
    assert sf.info(str(out / "107_2b3_Al_mc_AKGC417L.wav")).samplerate == 44100
    # each recording covers its last cycle
    for stem, cycles in subset.groupby("Filename"):
        assert sf.info(str(out / f"{stem}.wav")).duration >= cycles["CycleEnd"].max()
