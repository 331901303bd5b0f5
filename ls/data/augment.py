"""Training-time augmentations: waveform (noise, speed, loudness, VTLP, pitch, crop) and SpecAugment.

Semantics follow the reference's nlpaug-based wrappers but are implemented with torch and
torchaudio. Every waveform augmentation acts on a *segment*: with ``zone = [z0, z1]`` (fractions of the
waveform) and ``coverage c``, the segment has ``round(c * (z1 - z0) * L)`` samples and starts uniformly at random
inside the zone (so coverage 1 is exactly the zone). Each entry applies with its probability ``p``
(``p = 1`` always applies, fixing defect 11.2-12; ``p = 0`` entries are dropped).

Order per training item (documented in ``CycleDataset``): waveform augmentations in list order on the padded
waveform -> cut/pad again -> fbank -> frame fit -> normalisation -> SpecAugment (time warp, frequency masks,
time masks) on the ``[w, F]`` feature that the model receives.

Randomness comes only from the ``torch.Generator`` passed in; ``item_generator(seed, epoch, index)`` derives
it per item, so results do not depend on the number of DataLoader workers or on iteration order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from ls.data.config import AudioConfig, AugmentConfig

Tensor = torch.Tensor


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from ``(seed, epoch, index)`` through numpy's SeedSequence (well-mixed, collision-free)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=gen).item())


def segment(n: int, zone: tuple[float, float], coverage: float, gen: torch.Generator) -> tuple[int, int]:
    """``[start, end)`` of the augmented segment of an ``n``-sample waveform (see module docstring)."""
    z0, z1 = round(zone[0] * n), round(zone[1] * n)
    length = round(coverage * (z1 - z0))
    start = _randint(gen, z0, z1 - length) if z1 - length > z0 else z0
    return start, start + length


# --------------------------------------------------------------------------------------------------- waveform


def white_noise(n: int, gen: torch.Generator) -> Tensor:
    """White noise as the inverse real FFT of a standard-normal spectrum (per-sample std ~ 1/sqrt(n))."""
    spectrum = torch.randn(n // 2 + 1, generator=gen, dtype=torch.float64)
    return torch.fft.irfft(spectrum.to(torch.complex128), n=n).float()


def _stft(x: Tensor, n_fft: int, hop: int) -> Tensor:
    return torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)


def _istft(spec: Tensor, n_fft: int, hop: int, length: int) -> Tensor:
    return torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft), length=length)


def time_stretch(x: Tensor, rate: float, n_fft: int = 2048, hop: int = 512) -> Tensor:
    """Phase-vocoder time stretch of ``[L]`` (``rate > 1`` is faster/shorter); output has ``round(L / rate)``."""
    n_fft = min(n_fft, 1 << max(4, int(math.log2(max(x.numel(), 16)))))
    hop = min(hop, n_fft // 4)
    spec = _stft(x, n_fft, hop)
    advance = torch.linspace(0, math.pi * hop, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, rate, advance)
    return _istft(stretched, n_fft, hop, max(1, round(x.numel() / rate)))


def pitch_shift(x: Tensor, sr: int, semitones: float) -> Tensor:
    """Shift pitch by ``semitones`` keeping the length: time-stretch by ``2**(-s/12)``, then resample back.

    The resampling ratio is rounded to a multiple of 100 Hz so torchaudio's polyphase kernel stays small
    (a 0.1-semitone quantisation at 16 kHz).
    """
    rate = 2.0 ** (-semitones / 12.0)
    stretched = time_stretch(x, rate)
    orig = max(100, round(sr / rate / 100.0) * 100)
    shifted = AF.resample(stretched, orig, sr)
    return _fit(shifted, x.numel())


def vtlp_warp_bins(n_bins: int, sr: int, alpha: float, fhi: float) -> Tensor:
    """Warped position (in bins) of each linear-frequency bin under VTLP (Jaitly & Hinton 2013).

    ``f' = alpha f`` below ``f_b = fhi min(alpha, 1) / alpha``; above, a line to the Nyquist frequency.
    """
    nyq = sr / 2.0
    f = torch.linspace(0, nyq, n_bins, dtype=torch.float64)
    fb = fhi * min(alpha, 1.0) / alpha
    high = nyq - (nyq - fhi * min(alpha, 1.0)) / (nyq - fb) * (nyq - f)
    warped = torch.where(f <= fb, f * alpha, high)
    return (warped / nyq * (n_bins - 1)).clamp(0, n_bins - 1)


def vtlp(x: Tensor, sr: int, alpha: float, fhi: float, n_fft: int = 2048, hop: int = 512) -> Tensor:
    """Vocal-tract-length perturbation of ``[L]``: STFT bins re-mapped by ``vtlp_warp_bins`` (linear split
    between the two nearest target bins), then inverse STFT to the same length."""
    n_fft = min(n_fft, 1 << max(4, int(math.log2(max(x.numel(), 16)))))
    hop = min(hop, n_fft // 4)
    spec = _stft(x, n_fft, hop)  # [bins, frames]
    pos = vtlp_warp_bins(spec.shape[0], sr, alpha, fhi)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=spec.shape[0] - 1)
    w_hi = (pos - lo).to(spec.real.dtype)[:, None]
    out = torch.zeros_like(spec)
    out.index_add_(0, lo, spec * (1 - w_hi))
    out.index_add_(0, hi, spec * w_hi)
    return _istft(out, n_fft, hop, x.numel())


def _fit(x: Tensor, n: int) -> Tensor:
    return x[:n] if x.numel() >= n else F.pad(x, (0, n - x.numel()))


@dataclass
class WaveAugment:
    """One waveform augmentation on ``[L]`` float32; ``apply`` returns a new tensor (length may change)."""

    kind: str
    p: float
    zone: tuple[float, float]
    coverage: float
    factor: tuple[float, float]
    sr: int
    fhi: float = 4800.0

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        s, e = segment(x.numel(), self.zone, self.coverage, gen)
        if e <= s:
            return x
        seg = x[s:e]
        if self.kind == "noise":
            seg = seg + white_noise(seg.numel(), gen)
        elif self.kind == "loudness":
            seg = seg * _uniform(gen, *self.factor)
        elif self.kind == "speed":
            seg = time_stretch(seg, _uniform(gen, *self.factor))
        elif self.kind == "pitch":
            seg = pitch_shift(seg, self.sr, _uniform(gen, *self.factor))
        elif self.kind == "vtlp":
            seg = vtlp(seg, self.sr, _uniform(gen, *self.factor), self.fhi)
        elif self.kind == "crop":
            seg = seg[:0]
        return torch.cat([x[:s], seg, x[e:]])


# type -> (zone, coverage, factor) defaults of the reference's wrappers (nlpaug defaults where not overridden)
_WAVE_DEFAULTS: dict[str, tuple[tuple[float, float], float, tuple[float, float]]] = {
    "noise": ((0.2, 0.8), 1.0, (0.0, 0.0)),
    "speed": ((0.2, 0.8), 1.0, (0.9, 1.1)),
    "loudness": ((0.2, 0.8), 1.0, (0.5, 2.0)),
    "vtlp": ((0.2, 0.8), 0.1, (0.9, 1.1)),
    "pitch": ((0.2, 0.8), 1.0, (-1.0, 3.0)),
    "crop": ((0.2, 0.8), 0.1, (0.0, 0.0)),
}


def build_wave_augment(cfg: AugmentConfig, sample_rate: int) -> WaveAugment:
    kind = cfg.type.lower()
    if kind not in _WAVE_DEFAULTS:
        raise ValueError(f"audio.wave_aug: unknown type {cfg.type!r}; known: {', '.join(_WAVE_DEFAULTS)}")
    zone, coverage, factor = _WAVE_DEFAULTS[kind]
    if kind == "noise" and (cfg.color or "white").lower() != "white":
        raise ValueError(f"audio.wave_aug noise: only color 'white' is implemented, got {cfg.color!r}")
    if cfg.sampling_rate is not None and cfg.sampling_rate != sample_rate:
        raise ValueError(
            f"audio.wave_aug {cfg.type}: sampling_rate {cfg.sampling_rate} differs from "
            f"audio.sample_rate {sample_rate}"
        )
    zone = tuple(cfg.zone) if cfg.zone is not None else zone
    if len(zone) != 2 or not 0.0 <= zone[0] <= zone[1] <= 1.0:
        raise ValueError(
            f"audio.wave_aug {cfg.type}: zone must be [start, end] within [0, 1], got {cfg.zone}"
        )
    coverage = cfg.coverage if cfg.coverage is not None else coverage
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"audio.wave_aug {cfg.type}: coverage must be in [0, 1], got {coverage}")
    factor = tuple(cfg.factor) if cfg.factor is not None else factor
    if len(factor) != 2 or factor[0] > factor[1]:
        raise ValueError(f"audio.wave_aug {cfg.type}: factor must be [low, high], got {cfg.factor}")
    if kind in ("speed", "vtlp") and factor[0] <= 0:
        raise ValueError(f"audio.wave_aug {cfg.type}: factor must be positive, got {cfg.factor}")
    return WaveAugment(kind, cfg.p, zone, coverage, factor, sample_rate, cfg.fhi or 4800.0)


# ------------------------------------------------------------------------------------------------ SpecAugment


@dataclass(frozen=True)
class SpecPolicy:
    warp: int  # W: maximum time-warp displacement (frames); 0 disables
    freq_width: int  # F_max
    freq_masks: int  # m_F
    time_width: int  # T_max
    time_masks: int  # m_T
    p: float


#: SpecAugment policies of the reference (widths sized for 997 frames; applied here to the w-frame input).
SPEC_POLICIES = {
    "LB": SpecPolicy(80, 27, 1, 100, 1, 1.0),
    "LD": SpecPolicy(80, 27, 2, 100, 2, 1.0),
    "SM": SpecPolicy(40, 15, 2, 70, 2, 0.2),
    "SS": SpecPolicy(40, 27, 2, 70, 2, 0.2),
    "icbhi_sup": SpecPolicy(0, 20, 2, 50, 2, 1.0),
    "icbhi_ast_sup": SpecPolicy(0, 48, 2, 160, 2, 1.0),
}


def time_warp(spec: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Move a random anchor frame ``c`` in ``[W, T - W)`` by ``d ~ U{-(W-1)..W-1}`` (so both sides keep at
    least one frame) with piecewise-linear resampling
    of the two sides (the SpecAugment warp, 1-D along time). ``spec`` is ``[T, F]``."""
    t = spec.shape[0]
    if max_shift <= 0 or t <= 2 * max_shift + 1:
        return spec
    c = _randint(gen, max_shift, t - max_shift - 1)
    d = _randint(gen, -max_shift + 1, max_shift - 1)
    if d == 0:
        return spec
    x = spec.T[None]  # [1, F, T]
    left = F.interpolate(x[..., :c], size=c + d, mode="linear", align_corners=False)
    right = F.interpolate(x[..., c:], size=t - c - d, mode="linear", align_corners=False)
    return torch.cat([left, right], dim=-1)[0].T.contiguous()


@dataclass
class SpecAugment:
    """SpecAugment on ``[T, F]``: optional time warp, ``m_F`` frequency masks, ``m_T`` time masks.

    A mask width is ``floor(U(0, max))`` (0 .. max-1), its start uniform in ``[0, size - width]``; masked cells
    become 0 (``zero``: after ``mit`` normalisation that is the AudioSet mean level, not silence) or the
    spectrogram's mean (``mean``).
    """

    policy: SpecPolicy
    p: float
    mask: str = "zero"
    warp: bool = True

    def apply(self, spec: Tensor, gen: torch.Generator) -> Tensor:
        spec = spec.clone()
        if self.warp and self.policy.warp > 0:
            spec = time_warp(spec, self.policy.warp, gen)
        value = spec.mean().item() if self.mask == "mean" else 0.0
        t, f = spec.shape
        for _ in range(self.policy.freq_masks):
            width = min(int(_uniform(gen, 0, self.policy.freq_width)), f)
            start = _randint(gen, 0, f - width)
            spec[:, start : start + width] = value
        for _ in range(self.policy.time_masks):
            width = min(int(_uniform(gen, 0, self.policy.time_width)), t)
            start = _randint(gen, 0, t - width)
            spec[start : start + width, :] = value
        return spec


def build_spec_augment(cfg: AugmentConfig) -> SpecAugment:
    if cfg.type.lower().replace("_", "") not in ("specaugment", "specaug", "spec"):
        raise ValueError(f"audio.spec_aug: unknown type {cfg.type!r}; expected 'SpecAugment'")
    name = cfg.policy or "icbhi_ast_sup"
    policy = {k.lower(): v for k, v in SPEC_POLICIES.items()}.get(name.lower())
    if policy is None:
        raise ValueError(f"audio.spec_aug: unknown policy {name!r}; known: {', '.join(SPEC_POLICIES)}")
    mask = (cfg.mask or "zero").lower()
    if mask not in ("zero", "mean"):
        raise ValueError(f"audio.spec_aug: mask must be 'zero' or 'mean', got {cfg.mask!r}")
    return SpecAugment(policy, cfg.p, mask, warp=cfg.time_warp is not False)


# ------------------------------------------------------------------------------------------------- composite


class Augmenter:
    """The training augmentations of an ``AudioConfig``; entries with ``p == 0`` are dropped.

    ``wave(x, gen)`` returns ``None`` when no waveform augmentation fired (the cached features can then be
    used as they are), else the augmented ``[L']`` waveform (callers cut/pad it again).
    """

    def __init__(self, wave_augs: list[WaveAugment], spec_augs: list[SpecAugment]) -> None:
        self.wave_augs = wave_augs
        self.spec_augs = spec_augs

    @classmethod
    def from_config(cls, audio_cfg: AudioConfig) -> Augmenter:
        wave = [build_wave_augment(c, audio_cfg.sample_rate) for c in audio_cfg.wave_aug if c.p > 0]
        spec = [build_spec_augment(c) for c in audio_cfg.spec_aug if c.p > 0]
        return cls(wave, spec)

    @property
    def has_wave(self) -> bool:
        return bool(self.wave_augs)

    def __bool__(self) -> bool:
        return bool(self.wave_augs or self.spec_augs)

    def wave(self, x: Tensor, gen: torch.Generator) -> Tensor | None:
        fired = False
        for aug in self.wave_augs:
            # draw the coin even for p == 1 so one entry's p never shifts another entry's random stream
            if torch.rand((), generator=gen).item() < aug.p:
                x = aug.apply(x, gen)
                fired = True
        return x if fired else None

    def spec(self, spec: Tensor, gen: torch.Generator) -> Tensor:
        for aug in self.spec_augs:
            if torch.rand((), generator=gen).item() < aug.p:
                spec = aug.apply(spec, gen)
        return spec


__all__ = [
    "SPEC_POLICIES",
    "Augmenter",
    "SpecAugment",
    "SpecPolicy",
    "WaveAugment",
    "build_spec_augment",
    "build_wave_augment",
    "item_generator",
    "pitch_shift",
    "segment",
    "time_stretch",
    "time_warp",
    "vtlp",
    "vtlp_warp_bins",
    "white_noise",
]
