"""Log-mel filterbank features, their fit to the model's frame count, and their normalisation.

Pipeline per cycle (the reference's): padded waveform ``[L]`` -> Kaldi-compatible fbank ``[T0, F]``
(torchaudio.compliance.kaldi, all parameters from ``AudioConfig``) -> ``fit_frames`` to ``dataset.w`` frames
(``stretch``: bilinear resize as the paper, 997 -> 1024; ``pad``: cut or zero-pad the raw log-mel at the end,
as Hugging Face's ``ASTFeatureExtractor``) -> ``FeatureNormalizer``.

Fitting happens on the raw log-mel (that is what the cache stores); normalisation is an affine map applied
per item, so it commutes with the bilinear stretch and changing ``mel_norm`` never invalidates the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

from ls.data.audio import extract_cycles, load_recording
from ls.data.config import AudioConfig

#: AudioSet log-mel statistics used by the original AST (25 ms frames; see defect 11.1-9).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def check_input_shape(audio_cfg: AudioConfig, h: int, w: int) -> None:
    """Raise a clear error when the requested model input cannot be produced from this audio config."""
    if h != audio_cfg.n_mels:
        raise ValueError(
            f"dataset.h ({h}) must equal audio.n_mels ({audio_cfg.n_mels}): the frequency axis is never resized"
        )
    if w < 1:
        raise ValueError(f"dataset.w must be a positive frame count, got {w}")


def log_mel_fbank(wave: torch.Tensor, audio_cfg: AudioConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank of one waveform.

    Args:
        wave: float32 ``[L]`` at ``audio_cfg.sample_rate``.
        generator: where the dither noise (``audio.dither > 0``) comes from; None: torch's global RNG.

    Returns:
        float32 ``[T0, n_mels]`` with ``T0 = 1 + (L - frame_len) // frame_shift`` (997 for 10 s, 40/10 ms).
    """
    def fbank() -> torch.Tensor:
        return kaldi.fbank(
            wave.unsqueeze(0),
            sample_frequency=audio_cfg.sample_rate,
            frame_length=audio_cfg.frame_length,
            frame_shift=audio_cfg.frame_shift,
            num_mel_bins=audio_cfg.n_mels,
            low_freq=audio_cfg.low_freq,
            high_freq=audio_cfg.high_freq,
            window_type=audio_cfg.window_type,
            use_energy=audio_cfg.use_energy,
            dither=audio_cfg.dither,
            htk_compat=True,
        )

    if generator is None or audio_cfg.dither == 0:
        return fbank()
    # Kaldi dithers with the global RNG, whose state differs between loader workers and the main process: seed
    # it (forked, so the caller's stream is untouched) from ``generator``, e.g. an item's (seed, epoch, index).
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fbank()


def fit_frames(fbank: torch.Tensor, w: int, mode: str) -> torch.Tensor:
    """Bring ``[..., T0, F]`` features to ``[..., w, F]`` frames.

    ``stretch``: bilinear resize along time (``align_corners=False``, antialiased like torchvision's
    ``Resize``), the paper's 997 -> 1024. ``pad``: keep the first ``w`` frames or zero-pad at the end.
    """
    t0 = fbank.shape[-2]
    if t0 == w:
        return fbank
    if mode == "stretch":
        lead = fbank.shape[:-2]
        x = fbank.reshape(-1, 1, t0, fbank.shape[-1])
        x = F.interpolate(x, size=(w, fbank.shape[-1]), mode="bilinear", align_corners=False, antialias=True)
        return x.reshape(*lead, w, fbank.shape[-1])
    if mode == "pad":
        if t0 > w:
            return fbank[..., :w, :]
        return F.pad(fbank, (0, 0, 0, w - t0))
    raise ValueError(f"audio.frame_fit must be 'stretch' or 'pad', got {mode!r}")


def cycle_features(padded: torch.Tensor, audio_cfg: AudioConfig, w: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Raw (unnormalised) model-size features of padded cycles: ``[N, L]`` -> ``[N, w, n_mels]`` float32.
    ``generator``: as in :func:`log_mel_fbank`."""
    if padded.numel() == 0:
        return torch.empty(0, w, audio_cfg.n_mels)
    extra = () if generator is None else (generator,)  # two-argument wrappers of log_mel_fbank keep working
    feats = torch.stack([log_mel_fbank(x, audio_cfg, *extra) for x in padded])
    return fit_frames(feats, w, audio_cfg.frame_fit)


class FeatureNormalizer:
    """Affine normalisation ``(x - mean) / scale`` of raw log-mel features, as chosen by ``audio.mel_norm``.

    - ``mit`` / ``hf``: AudioSet constants, ``scale = 2 * std`` (the original AST and Hugging Face's
      ``ASTFeatureExtractor`` both divide by twice the std; the reference's ``hf`` divided by one std, which
      is not reproduced here, defect 11.3-7);
    - ``custom``: ``(x - audio.custom_mean) / audio.custom_std``;
    - ``dataset``: ``scale = 2 * std`` with the mean/std measured on the training features (kept with the
      fitted metadata encoder), so inputs have mean 0 / std 0.5 like AST's pretraining;
    - ``none``: identity.
    """

    def __init__(self, mean: float = 0.0, scale: float = 1.0, mode: str = "none") -> None:
        if not (math.isfinite(mean) and math.isfinite(scale)) or scale <= 0:
            raise ValueError(
                f"feature normalisation ({mode}): need a finite mean and scale > 0, "
                f"got mean={mean}, scale={scale}"
            )
        self.mean, self.scale, self.mode = float(mean), float(scale), mode

    @classmethod
    def from_config(cls, audio_cfg: AudioConfig, stats: dict | None = None) -> FeatureNormalizer:
        """``stats``: ``{"mean", "std"}`` of the training features, needed by ``mel_norm: dataset``."""
        mode = audio_cfg.mel_norm
        if mode in ("mit", "hf"):
            return cls(AUDIOSET_MEAN, 2.0 * AUDIOSET_STD, mode)
        if mode == "custom":
            if audio_cfg.custom_mean is None or audio_cfg.custom_std is None:
                raise ValueError("audio.mel_norm = 'custom' needs audio.custom_mean and audio.custom_std")
            return cls(audio_cfg.custom_mean, audio_cfg.custom_std, mode)
        if mode == "dataset":
            if not stats:
                raise ValueError(
                    "audio.mel_norm = 'dataset' needs the training features' mean/std: build_datasets measures "
                    "them (Datasets.encoder.feature_stats) and every checkpoint's metadata encoder carries them"
                )
            return cls(stats["mean"], 2.0 * stats["std"], mode)
        if mode == "none":
            return cls(0.0, 1.0, mode)
        raise ValueError(f"audio.mel_norm must be one of mit, hf, custom, dataset, none; got {mode!r}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        return (x - self.mean) / self.scale

    def state_dict(self) -> dict:
        return {"mean": self.mean, "scale": self.scale, "mode": self.mode}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureNormalizer:
        return cls(state["mean"], state["scale"], state["mode"])

    def __repr__(self) -> str:
        return f"FeatureNormalizer(mode={self.mode!r}, mean={self.mean:.6g}, scale={self.scale:.6g})"


def features_for_recording(
    wav_path: str | Path,
    cycles: Sequence[tuple[float, float]],
    audio_cfg: AudioConfig,
    h: int,
    w: int,
    normalizer: FeatureNormalizer | None = None,
) -> torch.Tensor:
    """Model inputs for given cycles of one recording (prediction on new data; no cache involved).

    Args:
        cycles: ``(start_s, end_s)`` per cycle; use ``[(0, duration)]`` for a whole short recording.
        normalizer: the training run's normalisation (None: raw log-mel).

    Returns:
        float32 ``[N, w, h]`` (frames x mel bins): what ``CycleDataset`` yields as ``spec`` for the same cycles,
        up to the float16 rounding of the dataset's feature cache (measured on ICBHI: at most 4.4e-4 with
        ``mel_norm: mit``, 1.8e-3 with ``mel_norm: dataset``).
    """
    check_input_shape(audio_cfg, h, w)
    wave = load_recording(wav_path, audio_cfg)
    padded, _ = extract_cycles(wave, cycles, audio_cfg, source=str(wav_path))
    feats = cycle_features(padded, audio_cfg, w)
    return normalizer(feats) if normalizer is not None else feats
