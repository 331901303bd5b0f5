"""ls.data.features: fbank parameters vs a direct torchaudio call, frame fitting, normalisation (incl. parity
with Hugging Face's ASTFeatureExtractor), shape checks and features_for_recording."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

from ls.data.config import AudioConfig
from ls.data.features import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    FeatureNormalizer,
    check_input_shape,
    cycle_features,
    features_for_recording,
    fit_frames,
    log_mel_fbank,
)


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return 0.1 * torch.randn(16000 * 2, generator=torch.Generator().manual_seed(0))


def test_fbank_matches_direct_kaldi_call_with_paper_parameters(noise):
    ref = kaldi.fbank(
        noise[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=40, low_freq=100, high_freq=8000,
    )  # fmt: skip
    ours = log_mel_fbank(noise, AudioConfig())
    assert ours.shape == (1 + (32000 - 640) // 160, 128)
    torch.testing.assert_close(ours, ref)


def test_ten_second_cycle_gives_997_frames_stretched_to_1024():
    padded = torch.randn(1, 160000) * 0.1
    raw = log_mel_fbank(padded[0], AudioConfig())
    assert raw.shape == (997, 128)
    out = cycle_features(padded, AudioConfig(), 1024)
    assert out.shape == (1, 1024, 128)
    ref = F.interpolate(raw[None, None], size=(1024, 128), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(out[0], ref)  # upsampling: antialias has no effect


def test_fit_frames_pad_and_cut():
    x = torch.arange(12.0).reshape(4, 3)
    padded = fit_frames(x, 6, "pad")
    assert torch.equal(padded[:4], x) and torch.equal(padded[4:], torch.zeros(2, 3))
    assert torch.equal(fit_frames(x, 2, "pad"), x[:2])
    with pytest.raises(ValueError, match="frame_fit"):
        fit_frames(x, 6, "squash")


def test_normalisations():
    x = torch.tensor([[-4.2677393, 0.0]])
    mit = FeatureNormalizer.from_config(AudioConfig(mel_norm="mit"))(x)
    torch.testing.assert_close(mit, torch.tensor([[0.0, -AUDIOSET_MEAN / (2 * AUDIOSET_STD)]]))
    hf = FeatureNormalizer.from_config(AudioConfig(mel_norm="hf"))(x)
    torch.testing.assert_close(hf, mit)  # HF divides by 2 std as well (the reference's "hf" did not)
    custom = FeatureNormalizer.from_config(AudioConfig(mel_norm="custom", custom_mean=1.0, custom_std=2.0))
    torch.testing.assert_close(custom(torch.tensor([3.0])), torch.tensor([1.0]))
    ds = FeatureNormalizer.from_config(AudioConfig(mel_norm="dataset"), {"mean": 1.0, "std": 2.0})
    torch.testing.assert_close(ds(torch.tensor([5.0])), torch.tensor([1.0]))  # (5 - 1) / (2 * 2)
    assert torch.equal(FeatureNormalizer.from_config(AudioConfig(mel_norm="none"))(x), x)
    with pytest.raises(ValueError, match="custom_mean"):
        FeatureNormalizer.from_config(AudioConfig(mel_norm="custom"))
    with pytest.raises(ValueError, match="needs the training features' mean/std"):
        FeatureNormalizer.from_config(AudioConfig(mel_norm="dataset"))
    restored = FeatureNormalizer.from_state_dict(custom.state_dict())
    assert restored.state_dict() == custom.state_dict()


def test_hf_mode_matches_transformers_ast_feature_extractor(noise):
    """Tolerance 1e-5: both run the same torchaudio fbank; HF pads raw log-mel with zeros to 1024 frames."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.ASTFeatureExtractor()  # 25 ms frames, 20 Hz .. Nyquist, 128 bins, 1024 frames
    cfg = AudioConfig(frame_length=25.0, low_freq=20.0, high_freq=0.0, frame_fit="pad", mel_norm="hf")
    ours = FeatureNormalizer.from_config(cfg)(cycle_features(noise[None], cfg, 1024))[0]
    ref = extractor(noise.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0]
    assert ref.shape == tuple(ours.shape) == (1024, 128)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_check_input_shape_errors():
    with pytest.raises(ValueError, match=r"dataset.h \(64\) must equal audio.n_mels \(128\)"):
        check_input_shape(AudioConfig(), 64, 1024)
    with pytest.raises(ValueError, match="resz"):
        check_input_shape(AudioConfig(resz=2.0), 128, 1024)


def test_features_for_recording_equals_manual_pipeline(tmp_path):
    sr = 8000
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(3 * sr) / sr)).astype(np.float32)
    sf.write(tmp_path / "rec.wav", x, sr, subtype="FLOAT")
    cfg = AudioConfig(desired_length=1.0, n_mels=32)
    norm = FeatureNormalizer.from_config(cfg)
    out = features_for_recording(tmp_path / "rec.wav", [(0.5, 1.0), (1.0, 2.5)], cfg, h=32, w=128, normalizer=norm)
    assert out.shape == (2, 128, 32) and out.dtype == torch.float32
    # second cycle is longer than 1 s: features are those of its first second after resampling to 16 kHz
    import torchaudio.functional as AF

    wave = AF.resample(torch.from_numpy(x), sr, 16000)
    wave = wave - wave.mean()
    raw = log_mel_fbank(wave[16000:32000], cfg)
    ref = norm(fit_frames(raw, 128, "stretch"))
    torch.testing.assert_close(out[1], ref)


def test_dither_drawn_from_a_generator_is_reproducible_and_leaves_the_global_rng_alone(noise):
    cfg = AudioConfig(dither=1.0)
    state = torch.random.get_rng_state()
    a = log_mel_fbank(noise, cfg, torch.Generator().manual_seed(3))
    torch.rand(5)  # the global stream moves on: the generator's result must not follow it
    b = cycle_features(noise[None], cfg, 64, torch.Generator().manual_seed(3))[0]
    assert torch.equal(fit_frames(a, 64, cfg.frame_fit), b)
    assert not torch.equal(a, log_mel_fbank(noise, cfg, torch.Generator().manual_seed(4)))
    assert not torch.equal(a, log_mel_fbank(noise, AudioConfig(dither=0.0)))  # the dither is really there
    torch.random.set_rng_state(state)
    log_mel_fbank(noise, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
