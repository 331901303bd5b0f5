"""The feature pipeline of one padded cycle as a single ``nn.Module`` that ONNX can express.

:class:`FeatureFrontEnd` computes what :func:`ls.data.features.cycle_features` followed by the run's
:class:`~ls.data.features.FeatureNormalizer` computes, for a batch of cycles already cut/padded to
``audio.desired_length`` (``[N, L]`` samples at ``audio.sample_rate``), with operations every ONNX runtime has:
framing as a gather with a constant index, per-frame DC removal, pre-emphasis, the analysis window, zero-padding
to a power of two, ``rfft`` (the ONNX ``DFT`` operator, opset >= 17), the power spectrum, the mel matmul and
the floored log. Because ``L`` is fixed, the frame count is too, and fitting the frames to ``dataset.w``
(``stretch`` or ``pad``) is one constant ``[w, T0]`` matrix. The window and the mel filters come from
torchaudio's Kaldi module, so the numbers are the ones training saw (``tests/test_export.py`` compares them).

Only what prediction uses is supported: no dither (features at prediction time are deterministic) and no
energy coefficient (``audio.use_energy: false``, the model input is the mel bins alone).
"""

from __future__ import annotations

import torch
from torchaudio.compliance import kaldi

from ls.data.audio import target_length
from ls.data.config import AudioConfig
from ls.data.features import FeatureNormalizer, check_input_shape, fit_frames

#: Kaldi's pre-emphasis coefficient, as ``torchaudio.compliance.kaldi.fbank`` uses it by default.
PREEMPHASIS = 0.97
#: Kaldi floors mel energies at the float32 machine epsilon before the log.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)


def frame_geometry(audio_cfg: AudioConfig) -> tuple[int, int, int, int]:
    """``(samples L, window_size, window_shift, padded_window_size)`` of a padded cycle, as Kaldi frames it."""
    sr = audio_cfg.sample_rate
    size, shift = int(sr * audio_cfg.frame_length * 0.001), int(sr * audio_cfg.frame_shift * 0.001)
    return target_length(audio_cfg), size, shift, 1 << (size - 1).bit_length()


def frame_count(audio_cfg: AudioConfig) -> int:
    """Kaldi frames of one padded cycle (``snip_edges``): ``T0 = 1 + (L - window) // shift``."""
    samples, size, shift, _ = frame_geometry(audio_cfg)
    if samples < size:
        raise ValueError(f"audio.desired_length {audio_cfg.desired_length} s is shorter than one "
                         f"{audio_cfg.frame_length} ms analysis frame")
    return 1 + (samples - size) // shift


def frame_fit_matrix(audio_cfg: AudioConfig, w: int) -> torch.Tensor:
    """``[w, T0]`` such that ``fit_frames(x, w, audio.frame_fit) == M @ x`` for any ``x [T0, F]``: both fits are
    linear along time and act on every mel bin alike, so applying one to the identity gives the matrix."""
    t0 = frame_count(audio_cfg)
    eye = torch.eye(t0, dtype=torch.float64)  # [T0 frames, T0 "bins"]: each bin a unit impulse in time
    return fit_frames(eye, w, audio_cfg.frame_fit).to(torch.float32)  # [w, T0]


class LogMelFbank(torch.nn.Module):
    """Kaldi log-mel filterbank (``htk_compat``, power spectrum, ``snip_edges``) of fixed-length waveforms:
    ``[N, L]`` -> ``[N, T0, n_mels]``."""

    def __init__(self, audio_cfg: AudioConfig) -> None:
        super().__init__()
        if audio_cfg.use_energy:
            raise ValueError("export supports audio.use_energy: false only (the model input is the mel bins)")
        _, size, shift, padded = frame_geometry(audio_cfg)
        t0 = frame_count(audio_cfg)
        self.padding = padded - size
        self.register_buffer("frame_index", torch.arange(size)[None, :] + shift * torch.arange(t0)[:, None],
                             persistent=False)
        window = kaldi._feature_window_function(audio_cfg.window_type, size, 0.42, torch.device("cpu"),
                                                torch.float32)
        self.register_buffer("window", window, persistent=False)
        banks, _ = kaldi.get_mel_banks(audio_cfg.n_mels, padded, float(audio_cfg.sample_rate), audio_cfg.low_freq,
                                       audio_cfg.high_freq, 100.0, -500.0, 1.0)
        banks = torch.nn.functional.pad(banks.to(torch.float32), (0, 1))  # the Nyquist bin has no filter
        self.register_buffer("mel_t", banks.T.contiguous(), persistent=False)  # [padded // 2 + 1, n_mels]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        frames = waves[:, self.frame_index]  # [N, T0, window]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # Kaldi repeats the first sample
        frames = (frames - PREEMPHASIS * previous) * self.window
        frames = torch.nn.functional.pad(frames, (0, self.padding))
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2.0)
        return torch.clamp(power @ self.mel_t, min=LOG_FLOOR).log()


class FeatureFrontEnd(torch.nn.Module):
    """Padded cycles ``[N, L]`` (or, with ``from_features``, their raw Kaldi fbank ``[N, T0, n_mels]``) ->
    normalised model input ``[N, w, n_mels]``, as ``cycle_features`` + ``normalizer`` compute it."""

    def __init__(self, audio_cfg: AudioConfig, h: int, w: int, normalizer: FeatureNormalizer,
                 from_features: bool = False) -> None:
        super().__init__()
        check_input_shape(audio_cfg, h, w)
        self.fbank = None if from_features else LogMelFbank(audio_cfg)
        self.register_buffer("fit", frame_fit_matrix(audio_cfg, w), persistent=False)
        self.mean, self.scale = (0.0, 1.0) if normalizer.mode == "none" else (normalizer.mean, normalizer.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x if self.fbank is None else self.fbank(x)
        # [N, F, T0] x [w, T0]^T -> [N, F, w]: a plain linear map, which ONNX export traces for any N (a
        # broadcast `fit @ feats` would be traced with a guard N != 1)
        feats = torch.nn.functional.linear(feats.transpose(1, 2), self.fit).transpose(1, 2)
        return (feats - self.mean) / self.scale


def input_samples(audio_cfg: AudioConfig) -> int:
    """Samples of one padded cycle, the waveform input's second dimension."""
    return target_length(audio_cfg)


__all__ = ["LOG_FLOOR", "PREEMPHASIS", "FeatureFrontEnd", "LogMelFbank", "frame_count", "frame_fit_matrix",
           "frame_geometry", "input_samples"]
