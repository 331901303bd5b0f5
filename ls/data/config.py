"""Config sections owned by the data layer: ``dataset``, ``audio`` and augmentation entries.

Defaults follow the paper's configs (see ``docs/`` and the reference spec); the one source of truth for each
default is the field here, YAML files only override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class AugmentConfig:
    """One waveform or spectrogram augmentation; applied to the training split only, with probability ``p``."""

    type: str
    p: float = 0.0
    sampling_rate: int | None = None
    zone: list[float] | None = None
    coverage: float | None = None
    color: str | None = None
    factor: list[float] | None = None
    fhi: float | None = None
    policy: str | None = None
    mask: str | None = None
    # SpecAugment time warp: None = as the policy's W says; False disables it. (The reference's warp never ran,
    # defect 11.2-4; here it works, but the paper's policy icbhi_ast_sup has W = 0 anyway.)
    time_warp: bool | None = None

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
    # mit/hf: (x - AudioSet mean) / (2 AudioSet std) (hf = Hugging Face ASTFeatureExtractor, same formula);
    # custom: (x - custom_mean) / custom_std; "dataset": fix for defect 11.1-9, (x - mean) / (2 std) with the
    # statistics measured on the training features (written into dataset_mean/dataset_std below).
    mel_norm: Literal["mit", "hf", "custom", "dataset", "none"] = "mit"
    custom_mean: float | None = None
    custom_std: float | None = None
    # Filled by build_datasets when mel_norm == "dataset" (training-feature mean/std of the raw log-mel), so the
    # saved resolved config reproduces the normalisation at prediction time.
    dataset_mean: float | None = None
    dataset_std: float | None = None
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
    cycle_metadata_path: str | None = None  # None: build the cycle table from data_folder
    class_split: Literal["lungsound"] = "lungsound"
    # official: the challenge's 60/40 file; foldwise: patient fold == test_fold is test; random: patient-wise
    # (the reference's random split was recording-level and leaked patients, defect 11.1-4).
    split_strategy: Literal["official", "foldwise", "random"] = "official"
    test_fold: int = 0
    random_test_fraction: float = 0.4  # fraction of patients (random strategy)
    split_seed: int = 1
    # Patient -> fold list (not part of the official download); None: patient_list_foldwise.txt in data_folder.
    fold_file: str | None = None
    # The official split puts patients 156 and 218 in both train and test (defect 11.1-4). False keeps the
    # paper's split; true drops those patients' training recordings so test is untouched but patient-disjoint.
    patient_disjoint_official: bool = False
    # Patient-disjoint validation carved from the training split (model selection never sees test).
    val_fraction: float = 0.2
    val_seed: int = 0
    n_cls: Literal[2, 4] = 4
    multi_label: bool = True
    weighted_sampler: bool = False
    batch_size: int = 16
    eval_batch_size: int | None = None
    num_workers: int = 0
    h: int = 128  # mel bins (frequency), the model's input_fdim
    w: int = 1024  # frames (time), the model's input_tdim
    cache_dir: str | None = None  # None: <data_folder>/.ls_cache
    cache_workers: int | None = None  # processes building the feature cache; None: all CPUs, 0: in-process
    # Metadata encoder (fitted on the training split only).
    cont_features: list[str] = field(default_factory=lambda: ["age", "bmi", "duration"])
    # The reference computes age_missing/bmi_missing but never feeds them (defect 11.2-3); true appends them.
    use_missing_flags: bool = False
    child_bmi_range: list[float] = field(default_factory=lambda: [10.0, 60.0])  # plausible child BMI, kg/m^2

    def __post_init__(self) -> None:
        # Split and label-mode checks at load time (the loader names the section and file); imported here so
        # that ls.config stays light (these modules are only needed once a DatasetConfig is built).
        from ls.data.labels import check_label_mode
        from ls.data.splits import check_split_config

        check_split_config(self)
        check_label_mode(self.n_cls, self.multi_label)
