"""Waveform side of the pipeline: read a recording, resample, remove DC, slice cycles, cut/pad to a fixed length.

Behaviour follows the reference:

1. read with soundfile (any PCM width / float, any rate), channels averaged to mono, float32 in [-1, 1];
2. resample to ``audio.sample_rate`` with torchaudio's windowed-sinc resampler at its defaults
   (Hann window, ``lowpass_filter_width=6``, ``rolloff=0.99``);
3. ``remove_dc``: subtract the mean of the whole recording; ``normalize``: divide by ``max|x| + 1e-12``;
4. cycle ``[start, end)`` in samples with ``start = min(floor(start_s * sr), L)`` and likewise for the end
   (a cycle past the end of the recording is clamped; an empty slice becomes zeros);
5. cut/pad to ``floor(desired_length * sr)`` samples: keep the head of long cycles; pad short ones by
   repetition with linear cross-fades (``pad_type: repeat``, ``use_fade``) or by centred zeros (``zero``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torchaudio.functional as AF

from ls.data.config import AudioConfig
from ls.data.wav import AudioError, check_wav_complete, read_audio  # noqa: F401 - read_audio re-exported

log = logging.getLogger(__name__)


def load_recording(path: str | Path, audio_cfg: AudioConfig) -> torch.Tensor:
    """Read, resample and (optionally) DC-correct / peak-normalise one recording.

    Returns:
        float32 ``[L]`` at ``audio_cfg.sample_rate``.
    """
    wave_np, sr = read_audio(path)
    wave = torch.from_numpy(wave_np)
    if sr != audio_cfg.sample_rate:
        wave = AF.resample(wave, sr, audio_cfg.sample_rate)
    if audio_cfg.remove_dc:
        wave = wave - wave.mean()  # whole recording, not per cycle (as the reference)
    if audio_cfg.normalize:
        wave = wave / (wave.abs().max() + 1e-12)
    return wave


def target_length(audio_cfg: AudioConfig) -> int:
    """Samples every cycle is cut/padded to: ``floor(desired_length * sample_rate)``."""
    return math.floor(audio_cfg.desired_length * audio_cfg.sample_rate)


def fade_length(audio_cfg: AudioConfig) -> int:
    """Cross-fade length of repeat padding: ``max(1, floor(sr / fade_samples_ratio))`` (250 at 16 kHz / 64)."""
    return max(1, audio_cfg.sample_rate // audio_cfg.fade_samples_ratio)


def cycle_bounds(start_s: float, end_s: float, sr: int, n_samples: int) -> tuple[int, int]:
    """Sample indices ``[start, end)`` of a cycle, each clamped to the recording length."""
    start = min(math.floor(start_s * sr), n_samples)
    end = min(math.floor(end_s * sr), n_samples)
    return max(start, 0), max(end, 0)


def repeat_pad(cycle: torch.Tensor, target: int, fade: int | None) -> torch.Tensor:
    """Tile ``cycle [L]`` to ``target`` samples; with ``fade`` linear fades join the copies.

    Copy k > 0 fades in over its first ``fade`` samples (gain 0 -> 1); every copy except the final one fades
    out over its last ``fade`` samples (1 -> 0); fades are skipped when ``fade >= L``. The concatenation is
    truncated to ``target``.
    """
    n = cycle.numel()
    copies = math.ceil(target / n)
    if fade is None or fade >= n:
        return cycle.repeat(copies)[:target]
    ramp = torch.linspace(0.0, 1.0, fade, dtype=cycle.dtype)
    middle = cycle.clone()
    middle[:fade] *= ramp
    middle[-fade:] *= ramp.flip(0)
    first = cycle.clone()
    first[-fade:] *= ramp.flip(0)
    last = cycle.clone()
    last[:fade] *= ramp
    parts = [first] + [middle] * (copies - 2) + [last] if copies > 1 else [cycle]
    return torch.cat(parts)[:target]


def fit_length(cycle: torch.Tensor, audio_cfg: AudioConfig, target: int | None = None) -> torch.Tensor:
    """Cut or pad a cycle ``[L]`` to ``target`` samples (default ``target_length(audio_cfg)``).

    Returns:
        float32 ``[target]``: zeros for an empty cycle, the head of a long one, otherwise padded by
        ``audio_cfg.pad_type`` (``repeat`` with optional fades, or centred ``zero`` padding).
    """
    target = target_length(audio_cfg) if target is None else target
    n = cycle.numel()
    if n == 0:
        return torch.zeros(target, dtype=torch.float32)
    if n >= target:
        return cycle[:target].clone()
    if audio_cfg.pad_type == "zero":
        left = (target - n) // 2
        return torch.nn.functional.pad(cycle, (left, target - n - left))
    if audio_cfg.pad_type == "repeat":
        return repeat_pad(cycle, target, fade_length(audio_cfg) if audio_cfg.use_fade else None)
    raise ValueError(f"audio.pad_type must be 'repeat' or 'zero', got {audio_cfg.pad_type!r}")


def extract_cycles(
    wave: torch.Tensor,
    cycles: Sequence[tuple[float, float]],
    audio_cfg: AudioConfig,
    source: str = "<waveform>",
) -> tuple[torch.Tensor, int]:
    """Slice and cut/pad the cycles of one (already resampled) recording.

    Args:
        wave: float32 ``[L]`` at ``audio_cfg.sample_rate``.
        cycles: ``(start_s, end_s)`` per cycle.
        source: name used in the log message (the wav path).

    Returns:
        ``(padded [N, target] float32, n_clamped)`` where ``n_clamped`` counts cycles that reach past the end
        of the recording (their slice is clamped; a cycle starting after the end becomes all zeros).
    """
    sr = audio_cfg.sample_rate
    target = target_length(audio_cfg)
    out = torch.empty(len(cycles), target, dtype=torch.float32)
    clamped = 0
    for i, (start_s, end_s) in enumerate(cycles):
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s or start_s < 0:
            raise ValueError(f"{source}: cycle {i} has invalid bounds start={start_s} end={end_s} (seconds)")
        if math.floor(end_s * sr) > wave.numel():
            clamped += 1
        s, e = cycle_bounds(start_s, end_s, sr, wave.numel())
        out[i] = fit_length(wave[s:e], audio_cfg, target)
    if clamped:
        log.warning(
            "%s: %d cycle(s) end past the recording (%.2f s); their slices were clamped",
            source,
            clamped,
            wave.numel() / sr,
        )
    return out, clamped
