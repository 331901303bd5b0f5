"""ls.data.audio: reading (PCM widths, channels), resampling, DC removal, cycle slicing and the cut/pad rules.

Expected values are computed by hand on tiny arrays or directly with soundfile/torchaudio.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from ls.data.audio import (
    AudioError,
    extract_cycles,
    fit_length,
    load_recording,
    read_audio,
    repeat_pad,
)
from ls.data.config import AudioConfig


def _tone(n: int, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


@pytest.mark.parametrize("subtype,tol", [("PCM_16", 2**-15), ("PCM_24", 2**-23), ("PCM_32", 2**-31)])
def test_read_audio_pcm_widths_scale_to_unit_range(tmp_path, subtype, tol):
    x = _tone(4000, 4000)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 4000, subtype=subtype)
    wave, sr = read_audio(path)
    assert sr == 4000 and wave.dtype == np.float32
    np.testing.assert_allclose(wave, x, atol=tol * 1.01)


def test_read_audio_averages_channels(tmp_path):
    left, right = _tone(1000, 8000, 300), _tone(1000, 8000, 700, 0.2)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    wave, _ = read_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-7)


def test_load_recording_resamples_with_torchaudio_defaults_and_removes_dc(tmp_path):
    x = _tone(4410, 44100) + 0.25  # DC offset
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    cfg = AudioConfig(sample_rate=16000, remove_dc=True)
    wave = load_recording(tmp_path / "a.wav", cfg)
    ref = AF.resample(torch.from_numpy(x), 44100, 16000)
    ref = ref - ref.mean()
    assert wave.shape == ref.shape == (1600,)
    torch.testing.assert_close(wave, ref)
    assert abs(wave.mean().item()) < 1e-6


def test_load_recording_peak_normalisation(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(1600, 16000, amp=0.1), 16000, subtype="FLOAT")
    wave = load_recording(tmp_path / "a.wav", AudioConfig(remove_dc=False, normalize=True))
    assert wave.abs().max().item() == pytest.approx(1.0, abs=1e-6)


def test_corrupt_and_truncated_and_missing_wavs_name_the_file(tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"RIFF" + b"\x00" * 40)
    with pytest.raises(AudioError, match="garbage.wav"):
        read_audio(bad)
    good = tmp_path / "good.wav"
    sf.write(good, _tone(8000, 8000), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(AudioError, match="cut.wav.*truncated"):
        read_audio(cut)
    with pytest.raises(AudioError, match="nothere.wav"):
        read_audio(tmp_path / "nothere.wav")


def test_repeat_pad_with_fades_by_hand():
    cycle = torch.ones(4)
    out = repeat_pad(cycle, target=10, fade=2)  # copies: [1,1,1,0] [0,1,1,0] [0,1,...] truncated to 10
    expected = torch.tensor([1, 1, 1, 0, 0, 1, 1, 0, 0, 1], dtype=torch.float32)
    torch.testing.assert_close(out, expected)


def test_repeat_pad_fade_skipped_when_too_long_and_tiles():
    cycle = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(repeat_pad(cycle, 7, fade=3), torch.tensor([1.0, 2, 3, 1, 2, 3, 1]))
    torch.testing.assert_close(repeat_pad(cycle, 7, fade=None), torch.tensor([1.0, 2, 3, 1, 2, 3, 1]))


def test_fit_length_rules():
    cfg = AudioConfig(sample_rate=10, desired_length=1.0, fade_samples_ratio=5)  # target 10, fade 2
    torch.testing.assert_close(fit_length(torch.arange(12.0), cfg), torch.arange(10.0))  # head kept
    assert torch.equal(fit_length(torch.empty(0), cfg), torch.zeros(10))
    zero = AudioConfig(sample_rate=10, desired_length=1.0, pad_type="zero")
    torch.testing.assert_close(
        fit_length(torch.tensor([1.0, 2.0, 3.0]), zero), torch.tensor([0.0, 0, 0, 1, 2, 3, 0, 0, 0, 0])
    )
    ramp = fit_length(torch.ones(4), cfg)
    torch.testing.assert_close(ramp, torch.tensor([1.0, 1, 1, 0, 0, 1, 1, 0, 0, 1]))


def test_extract_cycles_index_rule_and_clamping(caplog):
    cfg = AudioConfig(sample_rate=10, desired_length=0.5, pad_type="zero")  # target 5 samples
    wave = torch.arange(1.0, 21.0)  # 2 s
    with caplog.at_level(logging.WARNING):
        out, clamped = extract_cycles(wave, [(0.15, 0.45), (1.8, 2.5), (3.0, 4.0)], cfg, source="rec.wav")
    # cycle 0: floor(1.5)=1 .. floor(4.5)=4 -> samples 2,3,4 -> centred in 5
    torch.testing.assert_close(out[0], torch.tensor([0.0, 2, 3, 4, 0]))
    # cycle 1 clamped to [18, 20) -> 19, 20
    torch.testing.assert_close(out[1], torch.tensor([0.0, 19, 20, 0, 0]))
    assert torch.equal(out[2], torch.zeros(5))  # starts after the end: empty -> zeros
    assert clamped == 2
    assert "rec.wav: 2 cycle(s) end past the recording" in caplog.text


def test_extract_cycles_rejects_invalid_bounds():
    with pytest.raises(ValueError, match="rec.wav: cycle 0"):
        extract_cycles(torch.zeros(100), [(1.0, 0.5)], AudioConfig(), source="rec.wav")


def test_a_truncated_wav_is_reported_as_such_before_any_clipping_warning(synthetic_icbhi_dir, tmp_path, caplog):
    """Reading the cycle table of a folder with a half-copied recording: the error says 'truncated', and no
    "they get clipped" warning about its cycles comes first."""
    import logging
    import shutil

    from ls.data.icbhi import build_cycle_table

    folder = tmp_path / "data"
    shutil.copytree(synthetic_icbhi_dir, folder, ignore=shutil.ignore_patterns(".ls_cache"))
    wav = min(folder.glob("*.wav"))
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    caplog.set_level(logging.WARNING)
    with pytest.raises(AudioError, match=f"{wav.name}: truncated WAV file"):
        build_cycle_table(folder)
    assert "clipped" not in caplog.text
