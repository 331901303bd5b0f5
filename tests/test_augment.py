"""ls.data.augment: each augmentation changes the signal as intended (and only inside its segment), p = 0 never
applies, p = 1 always applies, and results are reproducible from (seed, epoch, index)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ls.data.augment import (
    SPEC_POLICIES,
    Augmenter,
    SpecAugment,
    build_spec_augment,
    build_wave_augment,
    item_generator,
    pitch_shift,
    segment,
    time_stretch,
    time_warp,
    vtlp_warp_bins,
    white_noise,
)
from ls.data.config import AudioConfig, AugmentConfig

SR = 16000


def _tone(freq: float, n: int = SR) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(n) / SR)


def _peak_hz(x: torch.Tensor) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(x.numel()))
    return spec.abs().argmax().item() * SR / x.numel()


def _gen(i: int = 0) -> torch.Generator:
    return item_generator(1, 0, i)


def test_segment_respects_zone_and_coverage():
    for i in range(20):
        s, e = segment(1000, (0.2, 0.8), 1.0, _gen(i))
        assert (s, e) == (200, 800)
        s, e = segment(1000, (0.0, 1.0), 0.1, _gen(i))
        assert e - s == 100 and 0 <= s and e <= 1000


def test_loudness_scales_only_the_zone():
    x = torch.ones(1000)
    aug = build_wave_augment(AugmentConfig(type="loudness", p=1.0, factor=[2.0, 2.0]), SR)
    y = aug.apply(x, _gen())
    assert torch.equal(y[:200], x[:200]) and torch.equal(y[800:], x[800:])
    torch.testing.assert_close(y[200:800], torch.full((600,), 2.0))


def test_white_noise_added_in_zone_with_expected_level():
    n = 10000
    noise = white_noise(n, _gen())
    assert noise.std().item() == pytest.approx(1 / math.sqrt(n), rel=0.1)
    aug = build_wave_augment(AugmentConfig(type="noise", p=1.0, color="white"), SR)
    x = torch.zeros(n)
    y = aug.apply(x, _gen())
    assert torch.equal(y[:2000], x[:2000]) and torch.equal(y[8000:], x[8000:])
    assert (y[2000:8000] != 0).float().mean() > 0.99
    with pytest.raises(ValueError, match="white"):
        build_wave_augment(AugmentConfig(type="noise", p=1.0, color="pink"), SR)


def test_speed_changes_segment_length_keeping_pitch():
    x = _tone(1000.0, 4 * SR)
    y = time_stretch(x, 1.25)
    assert y.numel() == round(x.numel() / 1.25)
    assert _peak_hz(y) == pytest.approx(1000.0, abs=5)
    aug = build_wave_augment(AugmentConfig(type="speed", p=1.0, factor=[0.5, 0.5]), SR)
    out = aug.apply(x, _gen())  # middle 60 % slowed down twice -> longer
    assert out.numel() == x.numel() + round(0.6 * x.numel())


def test_pitch_shift_moves_the_tone_by_semitones_and_keeps_length():
    x = _tone(500.0, 2 * SR)
    y = pitch_shift(x, SR, 12.0)  # one octave up
    assert y.numel() == x.numel()
    assert _peak_hz(y) == pytest.approx(1000.0, rel=0.02)


def test_vtlp_warp_is_linear_below_boundary_and_ends_at_nyquist():
    bins = vtlp_warp_bins(1025, SR, alpha=1.1, fhi=4800)
    nyq_bin = 1024
    f = torch.arange(1025) * (SR / 2) / 1024
    below = f <= 4800 * 1.0 / 1.1
    torch.testing.assert_close(bins[below], (f[below] * 1.1 / (SR / 2) * nyq_bin).double())
    assert bins[-1].item() == pytest.approx(nyq_bin)
    assert torch.all(bins[1:] >= bins[:-1])  # monotone mapping


def test_vtlp_moves_a_tone_by_alpha():
    aug = build_wave_augment(
        AugmentConfig(type="vtlp", p=1.0, zone=[0, 1], coverage=1.0, factor=[1.1, 1.1]), SR
    )
    x = _tone(1000.0, SR)
    y = aug.apply(x, _gen())
    assert y.numel() == x.numel()
    assert _peak_hz(y) == pytest.approx(1100.0, abs=20)


def test_p_zero_never_and_p_one_always_applies():
    cfg = AudioConfig(
        wave_aug=[
            AugmentConfig(type="loudness", p=1.0, factor=[3.0, 3.0]),
            AugmentConfig(type="noise", p=0.0),
        ],
        spec_aug=[AugmentConfig(type="SpecAugment", p=0.0, policy="icbhi_ast_sup")],
    )
    augmenter = Augmenter.from_config(cfg)
    assert len(augmenter.wave_augs) == 1 and not augmenter.spec_augs  # p = 0 entries dropped
    x = torch.ones(100)
    for i in range(20):
        y = augmenter.wave(x, _gen(i))
        assert y is not None and y[50].item() == 3.0
    never = Augmenter.from_config(AudioConfig(wave_aug=[AugmentConfig(type="loudness", p=0.0)], spec_aug=[]))
    assert never.wave(x, _gen()) is None and not never


def test_probability_is_respected_statistically():
    augmenter = Augmenter.from_config(AudioConfig(wave_aug=[AugmentConfig(type="loudness", p=0.3)]))
    fired = sum(augmenter.wave(torch.ones(10), item_generator(0, 0, i)) is not None for i in range(2000))
    assert 0.25 < fired / 2000 < 0.35


def test_spec_augment_masks_by_hand():
    policy = SPEC_POLICIES["icbhi_ast_sup"]
    aug = SpecAugment(policy, p=1.0, mask="zero")
    spec = torch.ones(1024, 128)
    masked_total = 0
    for i in range(50):
        out = aug.apply(spec, _gen(i))
        zero_rows = (out == 0).all(dim=1)
        zero_cols = (out == 0).all(dim=0)
        # every masked cell lies in a fully masked time row or frequency column
        assert torch.equal(out == 0, zero_rows[:, None] | zero_cols[None, :])
        assert zero_cols.sum() <= 2 * (policy.freq_width - 1)
        assert zero_rows.sum() <= 2 * (policy.time_width - 1)
        masked_total += int((out == 0).sum())
    assert masked_total > 0
    mean_aug = SpecAugment(policy, p=1.0, mask="mean")
    x = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    out = mean_aug.apply(x, _gen(3))
    changed = out != x
    assert changed.any() and torch.allclose(out[changed], torch.full_like(out[changed], x.mean().item()))


def test_time_warp_moves_an_anchor_and_keeps_shape():
    t = torch.arange(100.0)[:, None].repeat(1, 4)  # frame index as value
    out = time_warp(t, 20, _gen(0))
    assert out.shape == t.shape
    assert not torch.equal(out, t)
    assert out[0, 0].item() == pytest.approx(0.0, abs=1.0) and out[-1, 0].item() == pytest.approx(
        99.0, abs=1.0
    )
    assert torch.all(out[1:, 0] >= out[:-1, 0] - 1e-5)  # warping is monotone in time
    warped = build_spec_augment(AugmentConfig(type="SpecAugment", p=1.0, policy="SM"))
    disabled = build_spec_augment(AugmentConfig(type="SpecAugment", p=1.0, policy="SM", time_warp=False))
    assert warped.warp and not disabled.warp


def test_item_generator_reproducible_and_distinct():
    a = torch.rand(4, generator=item_generator(5, 2, 7))
    b = torch.rand(4, generator=item_generator(5, 2, 7))
    c = torch.rand(4, generator=item_generator(5, 3, 7))
    d = torch.rand(4, generator=item_generator(5, 2, 8))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


def test_full_augmenter_is_reproducible():
    cfg = AudioConfig(
        wave_aug=[AugmentConfig(type=t, p=0.5) for t in ("noise", "speed", "loudness", "vtlp", "pitch")],
        spec_aug=[AugmentConfig(type="SpecAugment", p=1.0, policy="LB")],
    )
    aug = Augmenter.from_config(cfg)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32))
    for i in range(3):
        y1, y2 = aug.wave(x, item_generator(0, 0, i)), aug.wave(x, item_generator(0, 0, i))
        assert (y1 is None and y2 is None) or torch.equal(y1, y2)
    s = torch.randn(300, 32)
    assert torch.equal(aug.spec(s, item_generator(0, 1, 0)), aug.spec(s, item_generator(0, 1, 0)))


def test_bad_augment_configs_are_named():
    with pytest.raises(ValueError, match="unknown type 'reverb'"):
        build_wave_augment(AugmentConfig(type="reverb", p=0.5), SR)
    with pytest.raises(ValueError, match="zone"):
        build_wave_augment(AugmentConfig(type="loudness", p=0.5, zone=[0.8, 0.2]), SR)
    with pytest.raises(ValueError, match="unknown policy 'XX'"):
        build_spec_augment(AugmentConfig(type="SpecAugment", p=0.5, policy="XX"))
