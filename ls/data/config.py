"""Config sections owned by the data layer: ``dataset``, ``audio`` and augmentation entries.

Defaults follow the paper's configs (see ``docs/`` and the reference spec); the one source of truth for each
default is the field here, YAML files only override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class AugmentConfig:
    """One waveform or spectrogram augmentation; applied to the training split only, with probability ``p``."""

    type: str
    p: float = 0.0
    sampling_rate: Optional[int] = None
    zone: Optional[list[float]] = None
    coverage: Optional[float] = None
    color: Optional[str] = None
    factor: Optional[list[float]] = None
    fhi: Optional[float] = None
    policy: Optional[str] = None
    mask: Optional[str] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augmentation {self.type!r}: p must be in [0, 1], got {self.p}")


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    desired_length: float = 10.0  # seconds every cycle is cut/padded to
    remove_dc: bool = True
    normalize: bool = False
    pad_type: Literal["repeat", "zero"] = "repeat"
    use_fade: bool = True
    fade_samples_ratio: int = 64
    n_mels: int = 128
    frame_length: float = 40.0  # ms
    frame_shift: float = 10.0  # ms
    low_freq: float = 100.0
    high_freq: float = 8000.0
    window_type: str = "hanning"
    use_energy: bool = False
    dither: float = 0.0
    mel_norm: Literal["mit", "hf", "custom", "none"] = "mit"
    custom_mean: Optional[float] = None
    custom_std: Optional[float] = None
    resz: float = 1.0
    # How the fbank reaches dataset.w frames: "stretch" = bilinear resize (paper), "pad" = cut/zero-pad.
    frame_fit: Literal["stretch", "pad"] = "stretch"
    raw_augment: bool = False
    wave_aug: list[AugmentConfig] = field(default_factory=list)
    spec_aug: list[AugmentConfig] = field(default_factory=list)


@dataclass
class DatasetConfig:
    data_folder: str
    name: Literal["icbhi"] = "icbhi"
    cycle_metadata_path: Optional[str] = None  # None: build the cycle table from data_folder
    class_split: Literal["lungsound"] = "lungsound"
    split_strategy: Literal["official", "foldwise", "random"] = "official"
    test_fold: int = 0
    random_test_fraction: float = 0.4
    split_seed: int = 1
    # Patient-disjoint validation carved from the training split (model selection never sees test).
    val_fraction: float = 0.2
    val_seed: int = 0
    n_cls: Literal[2, 4] = 4
    multi_label: bool = True
    weighted_sampler: bool = False
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    h: int = 128  # mel bins (frequency), the model's input_fdim
    w: int = 1024  # frames (time), the model's input_tdim
    cache_dir: Optional[str] = None  # None: <data_folder>/.ls_cache
