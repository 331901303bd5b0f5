"""Config sections owned by the data layer: ``dataset``, ``audio`` and augmentation entries.

Defaults are the paper's values; each lives once, in the field here (with its help text), and YAML files
only override. ``docs/config.md`` is generated from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ls.utils.fields import option


@dataclass
class AugmentConfig:
    """One waveform or spectrogram augmentation; applied to the training split only, with probability ``p``."""

    type: str = option(help="noise, speed, loudness, vtlp, pitch, crop (waveform) or SpecAugment (spectrogram)")
    p: float = option(0.0, "probability of applying the entry to an item (0: dropped, 1: always)")
    sampling_rate: int | None = option(None, "must equal audio.sample_rate when given (reference key)")
    zone: list[float] | None = option(None, "[start, end] fractions of the waveform the augmented segment lies in")
    coverage: float | None = option(None, "fraction of the zone that is augmented")
    color: str | None = option(None, "noise colour; only `white` is implemented")
    factor: list[float] | None = option(
        None, "[low, high] range of the factor (speed/loudness/vtlp) or semitones (pitch)")
    fhi: float | None = option(None, "vtlp: boundary frequency (Hz) of the warp; null: 4800")
    policy: str | None = option(None, "SpecAugment policy: LB, LD, SM, SS, icbhi_sup, icbhi_ast_sup (default)")
    mask: str | None = option(None, "SpecAugment mask value: `zero` or `mean`")
    time_warp: bool | None = option(
        None, "SpecAugment time warp: null = as the policy's W says; false disables it (the reference's warp "
        "never ran, docs/fixes.md 11.2-4; the paper's policy icbhi_ast_sup has W = 0 anyway)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augmentation {self.type!r}: p must be in [0, 1], got {self.p}")


#: The paper's augmentations (the GRF and SoftFiLM configs switch them on with ``raw_augment``).
PAPER_WAVE_AUG = [
    AugmentConfig("crop", 0.0, zone=[0.0, 1.0], coverage=1.0),
    AugmentConfig("noise", 0.1, color="white"),
    AugmentConfig("speed", 0.1, factor=[0.9, 1.1]),
    AugmentConfig("loudness", 0.1, factor=[0.5, 2.0]),
    AugmentConfig("vtlp", 0.1, sampling_rate=16000, zone=[0.0, 1.0], fhi=4800.0, factor=[0.9, 1.1]),
    AugmentConfig("pitch", 0.0, sampling_rate=16000, factor=[-1.0, 3.0]),
]
PAPER_SPEC_AUG = [AugmentConfig("SpecAugment", 0.3, policy="icbhi_ast_sup", mask="zero")]


@dataclass
class AudioConfig:
    sample_rate: int = option(16000, "rate (Hz) every recording is resampled to")
    desired_length: float = option(10.0, "seconds every cycle is cut/padded to")
    remove_dc: bool = option(True, "subtract the mean of the whole recording")
    normalize: bool = option(False, "divide each recording by its peak, max|x|")
    pad_type: Literal["repeat", "zero"] = option(
        "repeat", "how a short cycle reaches desired_length: repeat it, or centred zero padding")
    use_fade: bool = option(True, "linear cross-fades at the joins of repeat padding")
    fade_samples_ratio: int = option(64, "cross-fade length = sample_rate // this samples")
    n_mels: int = option(128, "mel bins of the Kaldi fbank: the model's input height")
    frame_length: float = option(40.0, "analysis window (ms)")
    frame_shift: float = option(10.0, "hop between frames (ms)")
    low_freq: float = option(100.0, "lowest mel filter frequency (Hz)")
    high_freq: float = option(8000.0, "highest mel filter frequency (Hz)")
    window_type: str = option("hanning", "fbank analysis window (Kaldi name)")
    use_energy: bool = option(False, "add the Kaldi energy coefficient")
    dither: float = option(0.0, "Kaldi dither amount (0: deterministic features)")
    mel_norm: Literal["mit", "hf", "custom", "dataset", "none"] = option(
        "mit", "log-mel normalisation. mit/hf: (x - AudioSet mean) / (2 AudioSet std) (hf = Hugging Face's "
        "ASTFeatureExtractor, same formula); custom: (x - custom_mean) / custom_std; dataset: (x - mean) / "
        "(2 std) with the mean/std of the training features, measured when the data is built and stored with "
        "the fitted metadata encoder in every checkpoint (docs/fixes.md 11.1-9); none: raw log-mel")
    custom_mean: float | None = option(None, "`mel_norm: custom`: mean subtracted from the log-mel")
    custom_std: float | None = option(None, "`mel_norm: custom`: divisor of the log-mel")
    resz: float = option(1.0, "reference key; only 1.0 is accepted (the input size is audio.n_mels x dataset.w)")
    frame_fit: Literal["stretch", "pad"] = option(
        "stretch", "how the fbank reaches dataset.w frames: `stretch` = bilinear resize (paper), `pad` = "
        "cut/zero-pad")
    raw_augment: bool = option(False, "apply wave_aug / spec_aug to the training split")
    wave_aug: list[AugmentConfig] = option(
        PAPER_WAVE_AUG, "waveform augmentations, in order (default: the paper's list; entries with p 0 are off)")
    spec_aug: list[AugmentConfig] = option(PAPER_SPEC_AUG, "SpecAugment entries (default: the paper's)")

    def __post_init__(self) -> None:
        if self.resz != 1.0:
            raise ValueError(f"audio.resz = {self.resz} is not supported; the input is audio.n_mels mel bins x "
                             "dataset.w frames (set those instead)")
        if self.mel_norm == "custom" and (self.custom_mean is None or not self.custom_std):
            raise ValueError("audio.mel_norm is 'custom' but custom_mean / custom_std (non-zero) are not both set")


@dataclass
class DatasetPart:
    """One dataset of a ``combined`` dataset (``dataset.parts``): where it is and how to read it."""

    name: str = option(help="the kind of dataset: icbhi, sprsound or manifest (or a registered reader's)")
    data_folder: str = option(help="its folder (SPRSound: the BioCAS 2022 root; manifest: the CSV's folder)")
    tag: str | None = option(None, "its value of the `dataset` metadata factor; null: the name")
    cycle_metadata_path: str | None = option(None, "icbhi: the cycle table; null: built from data_folder")
    manifest: str = option("manifest.csv", "manifest: the CSV, relative to data_folder")
    manifest_columns: dict[str, str] = option({}, "manifest: column names (see dataset.manifest_columns)")
    categorical: list[str] = option([], "manifest: its categorical metadata columns")
    continuous: list[str] = option([], "manifest: its continuous metadata columns")
    test_split: list[str] | None = option(None, "its rows in test (see dataset.test_split)")


@dataclass
class DatasetConfig:
    data_folder: str = option(
        help="the dataset's folder: ICBHI recordings (`<stem>.wav` + `<stem>.txt`) and helper files; SPRSound: the "
        "BioCAS 2022 root (train2022_wav/, train2022_json/, test2022_*); manifest: the CSV's folder; combined: "
        "where the shared feature cache goes")
    name: str = option(
        "icbhi", "the kind of dataset (docs/datasets.md): icbhi, sprsound, manifest (any dataset, from a CSV), "
        "combined (several, see parts), or a kind added with ls.data.sources.register_reader")
    task: str | None = option(
        None, "classification task (ls.data.tasks): icbhi4, icbhi2 (crackle/wheeze bits, any dataset that has "
        "them); SPRSound event2, event7, record3, record5; manifest: labels (its label column, classes below). "
        "null: icbhi4/icbhi2 from n_cls for ICBHI and bit datasets, labels for a manifest without bits")
    classes: list[str] | None = option(
        None, "task labels: the class names in id order, class 0 the normal class")
    test_split: list[str] | None = option(
        None, "the dataset's own splits that form the test set (official split): SPRSound test_inter and/or "
        "test_intra; null: every test split of the dataset (ICBHI: test; SPRSound: both)")
    cycle_metadata_path: str | None = option(
        None, "icbhi: the cycle table (`icbhi_metadata.csv`); null: built from data_folder")
    manifest: str = option("manifest.csv", "manifest: the CSV (one row per segment), relative to data_folder")
    manifest_columns: dict[str, str] = option(
        {}, "manifest: its column names where they differ from path, start, end, label, patient, split (and "
        "crackle, wheeze: give both to read crackle/wheeze bits)")
    categorical: list[str] = option([], "manifest: the categorical metadata columns (each a factor)")
    continuous: list[str] = option(
        [], "manifest: the continuous metadata columns (the segment duration is always one)")
    parts: list[DatasetPart] = option([], "combined: the datasets trained on together (a `dataset` factor tells "
                                          "them apart)")
    class_split: Literal["lungsound"] = option(
        "lungsound", "class definition; only `lungsound` (normal / crackle / wheeze / both) exists")
    split_strategy: Literal["official", "foldwise", "random"] = option(
        "official", "official: the dataset's own split (ICBHI: the challenge's 60/40 file); foldwise: the patients "
        "of fold test_fold are test (ICBHI); random: a seeded draw of random_test_fraction of the patients (the "
        "reference's random split was recording-level and leaked patients, docs/fixes.md 11.1-4)")
    test_fold: int = option(0, "`foldwise` split: the patient fold used as test")
    random_test_fraction: float = option(0.4, "`random` split: fraction of the patients in test")
    split_seed: int = option(1, "seed of the `random` patient-level split")
    fold_file: str | None = option(
        None, "patient -> fold list (not part of the official download); null: the table's Fold column, "
        "else patient_list_foldwise.txt in data_folder")
    patient_disjoint_official: bool = option(
        False, "the official split puts patients in both train and test (ICBHI: 156 and 218); false keeps the "
        "paper's split, true drops their training recordings (test untouched, now patient-disjoint)")
    val_fraction: float = option(
        0.2, "fraction of the training patients carved out as a patient-disjoint validation split (model "
        "selection under training.selection: strict never sees test); 0: no validation split. Rows the "
        "dataset itself marks `val` (a manifest's split column) are used instead")
    val_seed: int = option(0, "seed of the validation draw")
    n_cls: int | None = option(
        None, "number of classes; null: the task's. ICBHI: 4 (normal, crackle, wheeze, both) or 2 (normal, "
        "abnormal) chooses the task")
    multi_label: bool | None = option(
        None, "targets are the [crackle, wheeze] bits, two sigmoid outputs (4-class bit tasks only); null: true "
        "for those (the paper's), false otherwise")
    weighted_sampler: bool = option(False, "class-weighted sampling with replacement of the training split")
    batch_size: int = option(16, "training batch size (per process under DDP)")
    eval_batch_size: int | None = option(None, "validation/test batch size; null: batch_size")
    num_workers: int | Literal["auto"] = option(
        "auto", "DataLoader worker processes, kept alive for the whole run; auto: on a GPU every CPU of the "
        "process but one (at most 16; evaluation loaders at most 4), on CPU 0 (the model's threads use the cores)")
    prefetch_factor: int = option(4, "batches each worker prepares ahead (with num_workers > 0)")
    h: int | None = option(
        None, "mel bins of the model input; null: audio.n_mels (the frequency axis is never resized, so a value "
        "must equal it)")
    w: int = option(1024, "frames of the model input (the fbank is fitted to it, see audio.frame_fit)")
    cache_dir: str | None = option(None, "feature cache folder; null: <data_folder>/.ls_cache")
    cache_workers: int | None = option(
        None, "processes building the feature cache; null: all CPUs, 0: in-process")
    cont_features: list[str] | None = option(
        None, "continuous metadata features in `cont` column order (a subset of what the dataset declares; "
        "ICBHI: age, bmi, duration); null: all of them. The metadata encoder is fitted on the training split only")
    use_missing_flags: bool = option(
        False, "append a 0/1 flag <feature>_missing per imputed feature to `cont` (ICBHI: age, bmi; the "
        "reference computed them but never fed them, docs/fixes.md 11.2-3)")
    child_bmi_range: list[float] = option([10.0, 60.0], "icbhi: plausible child BMI (kg/m^2) from weight/height")

    __aliases__: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        # Split, task and label-mode checks at load time (the loader names the section and file); imported here
        # so that ls.config stays light (these modules are only needed once a DatasetConfig is built).
        from ls.data.labels import resolve_task
        from ls.data.splits import check_split_config
        from ls.data.tasks import DATASET_TASKS
        from ls.utils import plugins
        from ls.utils.fields import FieldError

        plugins.load_pending()  # the reader table is read: a plugin's kinds join it first
        for name in [self.name, *(part.name for part in self.parts)]:
            if name not in DATASET_TASKS:
                raise FieldError("name", f"unknown kind of dataset {name!r}; known: {', '.join(DATASET_TASKS)}; "
                                 f"{plugins.unknown_hint()}")
        if any(part.name == "combined" for part in self.parts):
            raise FieldError("parts", "a part of a combined dataset cannot itself be combined")
        tags = [part.tag or part.name for part in self.parts]
        if len(set(tags)) != len(tags):
            raise FieldError("parts", f"two parts share the tag {min(t for t in tags if tags.count(t) > 1)!r}; "
                             "give each part a distinct `tag`")
        check_split_config(self)
        resolve_task(self)  # fills task, n_cls and multi_label
        if self.num_workers != "auto" and self.num_workers < 0:
            raise ValueError(f"dataset.num_workers must be >= 0 or 'auto', got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ValueError(f"dataset.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        for name in ("batch_size", "w"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.name == "combined" and not self.parts:
            raise FieldError("parts", "dataset.name is 'combined' but no part is listed")
        if self.name != "combined" and self.parts:
            raise FieldError("parts", f"is for dataset.name: combined, not {self.name!r}")

    def readers(self) -> list[str]:
        """The dataset kinds (readers, ``ls.data.sources``) this section reads: its ``name``, and each part's
        for a combined dataset."""
        return list(dict.fromkeys([self.name, *(part.name for part in self.parts)]))
