"""The waveform side of ``ls.data.audio`` in numpy, for the torch-free runtime: resample, DC removal, cycle
slicing and cut/pad to the model's input length.

Each function computes what its ``ls.data.audio`` counterpart computes in torch (``tests/test_export.py``
compares them): the resampler is torchaudio's windowed-sinc (Hann window, ``lowpass_filter_width=6``,
``rolloff=0.99``) with the same kernel, applied as a strided matrix product; padding repeats a short cycle with
linear cross-fades, or centres it between zeros. ``audio`` is the run's audio config as a mapping (the
``ls.audio`` entry of an exported model's metadata).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ls.data.wav import read_audio

#: torchaudio.functional.resample's defaults, which training uses.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@lru_cache(maxsize=8)
def sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """``(kernel [new, 2 width + orig] float32, width)`` for rates already divided by their gcd: output sample
    ``j`` of each block of ``new`` is the kernel row ``j`` dotted with ``orig``-strided input."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    # torchaudio divides the output offsets in float32 before adding them to the float64 input positions
    offsets = (np.arange(0, -new, -1, dtype=np.int64) / new).astype(np.float32).astype(np.float64)
    t = np.clip((offsets[:, None] + idx) * base, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = kernel * window * (base / orig)
    return kernel.astype(np.float32), width


def resample(wave: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """``wave [L]`` float32 at ``orig_freq`` -> float32 at ``new_freq`` (``ceil(new * L / orig)`` samples)."""
    if orig_freq == new_freq:
        return wave
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    kernel, width = sinc_kernel(orig, new)
    padded = np.pad(np.asarray(wave, dtype=np.float32), (width, width + orig))
    blocks = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]  # [n_blocks, K]
    out = (blocks @ kernel.T).reshape(-1)  # block-major: [block 0: new samples, block 1: ...]
    return np.ascontiguousarray(out[: math.ceil(new * len(wave) / orig)], dtype=np.float32)


def load_recording(path: Any, audio: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(wave at audio["sample_rate"], the file's own samples, its rate)``: read (errors name the file: missing,
    corrupt, NaN/Inf samples), resampled, then DC removal and peak normalisation as ``audio`` says."""
    raw, sr = read_audio(path)
    wave = resample(raw, sr, int(audio["sample_rate"]))
    if audio.get("remove_dc", True):
        wave = wave - wave.mean(dtype=np.float32)
    if audio.get("normalize", False):
        wave = wave / (np.abs(wave).max() + np.float32(1e-12))
    return wave.astype(np.float32, copy=False), raw, sr


def target_length(audio: Mapping[str, Any]) -> int:
    return math.floor(float(audio["desired_length"]) * int(audio["sample_rate"]))


def fit_length(cycle: np.ndarray, audio: Mapping[str, Any], target: int) -> np.ndarray:
    """``ls.data.audio.fit_length`` in numpy: ``[n]`` -> ``[target]`` float32."""
    n = cycle.size
    if n == 0:
        return np.zeros(target, dtype=np.float32)
    if n >= target:
        return cycle[:target].astype(np.float32, copy=True)
    if audio.get("pad_type", "repeat") == "zero":
        left = (target - n) // 2
        return np.pad(cycle, (left, target - n - left)).astype(np.float32)
    fade = max(1, int(audio["sample_rate"]) // int(audio.get("fade_samples_ratio", 64))) \
        if audio.get("use_fade", True) else None
    copies = math.ceil(target / n)
    if fade is None or fade >= n:
        return np.tile(cycle, copies)[:target].astype(np.float32)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    first, middle, last = cycle.copy(), cycle.copy(), cycle.copy()
    middle[:fade] *= ramp
    middle[-fade:] *= ramp[::-1]
    first[-fade:] *= ramp[::-1]
    last[:fade] *= ramp
    parts = [first] + [middle] * (copies - 2) + [last] if copies > 1 else [cycle]
    return np.concatenate(parts)[:target].astype(np.float32)


def extract_cycles(wave: np.ndarray, cycles: Sequence[tuple[float, float]], audio: Mapping[str, Any]) -> np.ndarray:
    """Cycles ``(start_s, end_s)`` of a recording at the model's rate, each cut/padded: ``[N, target]``."""
    sr, target = int(audio["sample_rate"]), target_length(audio)
    out = np.empty((len(cycles), target), dtype=np.float32)
    for i, (start_s, end_s) in enumerate(cycles):
        start = max(min(math.floor(start_s * sr), wave.size), 0)
        end = max(min(math.floor(end_s * sr), wave.size), 0)
        out[i] = fit_length(wave[start:end], audio, target)
    return out


__all__ = ["extract_cycles", "fit_length", "load_recording", "resample", "sinc_kernel", "target_length"]
