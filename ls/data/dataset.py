"""Datasets and loaders: segment table + split + feature cache + metadata encoder -> batches.

``build_datasets(cfg)`` reads the dataset (``ls.data.sources``: ICBHI, SPRSound, a manifest, several combined),
assigns the split, makes sure the on-disk feature cache exists (one entry for all splits), fits the
``MetadataEncoder`` on the training rows (the dataset's metadata schema) and returns
``Datasets(train, val, test, encoder, class_names, metadata_spec, normalizer)``. ``build_loaders`` wraps them
in DataLoaders (seeded shuffling, optional class-weighted sampling, distributed samplers).

A training item with ``audio.raw_augment`` on goes through: waveform augmentations (on the cached padded
waveform) -> cut/pad -> fbank -> frame fit -> normalisation -> SpecAugment. Items whose waveform augmentations
all stay off use the cached features directly (the same numbers as recomputing them, up to float16 storage).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    WeightedRandomSampler,
)

from ls.data import audio as audio_mod
from ls.data import features as features_mod
from ls.data.augment import Augmenter, item_generator
from ls.data.cache import CachedArray, ensure_cached, feature_stats
from ls.data.config import AudioConfig, DatasetConfig
from ls.data.labels import task_class_ids, task_targets
from ls.data.metadata import MetadataEncoder
from ls.data.sources import Source, read_source
from ls.data.tasks import get_task
from ls.types import MetadataSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class CycleDataset(Dataset):
    """Respiratory cycles of one split.

    Items (``docs/interfaces.md``): ``spec`` float32 ``[w, n_mels]``; ``meta``: one int64 scalar id per
    categorical factor and ``cont`` float32 ``[C]``; ``label`` int64 scalar or float32 ``[2]``; ``filename`` and
    ``pid`` (patient id) str, ``cycle_index`` int64 scalar.

    Args:
        table: the split's rows of the cycle table (any index).
        rows: position of each row in the feature cache, int64 ``[N]``.
        features: cache entry of raw features ``[N_all, w, n_mels]``.
        meta: ``MetadataEncoder.transform(table)``: ``{<factor>: [N] ids, "cont": [N, C]}``.
        labels: int64 ``[N]`` or float32 ``[N, 2]``.
        augmenter: training augmentations (None: no augmentation).
        waves: cache entry of padded waveforms ``[N_all, samples]`` (needed by waveform augmentations).
        seed: base of the per-item random generator ``(seed, epoch, index)``; see ``set_epoch``.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        rows: np.ndarray,
        features: CachedArray,
        normalizer: features_mod.FeatureNormalizer,
        meta: dict[str, np.ndarray],
        labels: np.ndarray,
        audio_cfg: AudioConfig,
        w: int,
        split: str,
        augmenter: Augmenter | None = None,
        waves: CachedArray | None = None,
        seed: int = 0,
    ) -> None:
        if augmenter is not None and augmenter.has_wave and waves is None:
            raise ValueError("waveform augmentation needs the cached waveforms (waves=...)")
        self.split = split
        self.rows = np.asarray(rows, dtype=np.int64)
        self.features_entry, self.waves_entry = features, waves
        self.normalizer = normalizer
        self.meta = {key: torch.from_numpy(np.asarray(value)) for key, value in meta.items()}
        self.labels = torch.from_numpy(labels)
        self.filenames = table["Filename"].astype(str).tolist()
        self.cycle_index = torch.tensor(table["CycleIndex"].to_numpy(dtype=np.int64))
        self.patients = table["PID"].astype(str).tolist()
        self.table = table
        self.audio_cfg, self.w = audio_cfg, w
        self.augmenter = augmenter if augmenter else None
        self.seed = int(seed)
        # The epoch lives in shared memory: DataLoader workers are persistent (started once, each with a copy
        # of this object), and a plain attribute set in the main process would never reach them.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._features: np.memmap | None = None
        self._waves: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``; call before iterating a loader over this dataset (its
        workers, started earlier, read the shared value for every item)."""
        self._epoch.fill_(int(epoch))

    def __getstate__(self) -> dict:  # memmaps are re-opened in each worker instead of being pickled
        state = self.__dict__.copy()
        state["_features"] = state["_waves"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if not self._epoch.is_shared():  # a copy made by plain pickling: share again for its own workers
            self._epoch = self._epoch.clone().share_memory_()

    def _feature(self, i: int) -> torch.Tensor:
        if self._features is None:
            self._features = self.features_entry.open()
        return torch.from_numpy(np.asarray(self._features[self.rows[i]], dtype=np.float32))

    def _augmented_feature(self, i: int, gen: torch.Generator) -> torch.Tensor | None:
        if self._waves is None:
            self._waves = self.waves_entry.open()
        wave = torch.from_numpy(np.asarray(self._waves[self.rows[i]], dtype=np.float32))
        wave = self.augmenter.wave(wave, gen)
        if wave is None:
            return None
        wave = audio_mod.fit_length(wave, self.audio_cfg)
        return features_mod.cycle_features(wave[None], self.audio_cfg, self.w, gen)[0]  # dither: from gen too

    def __getitem__(self, i: int) -> dict[str, Any]:
        spec = None
        gen = item_generator(self.seed, int(self._epoch), i) if self.augmenter is not None else None
        if gen is not None and self.augmenter.has_wave:
            spec = self._augmented_feature(i, gen)
        if spec is None:
            spec = self._feature(i)
        spec = self.normalizer(spec)
        if gen is not None:
            spec = self.augmenter.spec(spec, gen)
        return {
            "spec": spec,
            "meta": {key: value[i] for key, value in self.meta.items()},
            "label": self.labels[i],
            "filename": self.filenames[i],
            "cycle_index": self.cycle_index[i],
            "pid": self.patients[i],
        }

    def class_counts(self) -> np.ndarray:
        """Cycles per class (single-label) or positives per label column (multi-label)."""
        y = self.labels.numpy()
        return y.sum(axis=0) if y.ndim == 2 else np.bincount(y, minlength=int(y.max(initial=0)) + 1)

    def __repr__(self) -> str:
        aug = "augmented" if self.augmenter is not None else "plain"
        return f"CycleDataset({self.split}, {len(self)} cycles, {aug})"


@dataclass
class Datasets:
    """What ``build_datasets`` returns; unpacks as ``train, val, test``."""

    train: CycleDataset
    val: CycleDataset | None
    test: CycleDataset
    encoder: MetadataEncoder
    class_names: list[str]
    metadata_spec: MetadataSpec
    normalizer: features_mod.FeatureNormalizer
    table: pd.DataFrame | None = None  # the full cycle table with its "Split" column

    def __iter__(self) -> Iterator[CycleDataset | None]:
        return iter((self.train, self.val, self.test))


# --------------------------------------------------------------------------------------------- building


def _cache_dir(ds_cfg: DatasetConfig) -> Path:
    return Path(ds_cfg.cache_dir) if ds_cfg.cache_dir else Path(ds_cfg.data_folder) / ".ls_cache"


def load_table(ds_cfg: DatasetConfig) -> pd.DataFrame:
    """The segment table of a ``dataset`` section (``ls.data.sources``), sorted by (Filename, CycleIndex) with a
    fresh index; its ``AudioPath`` column names each row's wav."""
    return read_source(ds_cfg).table


def _needs_augment(audio_cfg: AudioConfig) -> bool:
    return bool(audio_cfg.raw_augment) and bool(Augmenter.from_config(audio_cfg))


def _prepare(cfg) -> tuple[Source, CachedArray, CachedArray | None]:
    ds_cfg, audio_cfg = cfg.dataset, cfg.audio
    features_mod.check_input_shape(audio_cfg, ds_cfg.h, ds_cfg.w)
    source = read_source(ds_cfg)
    table = source.table
    cache_dir = _cache_dir(ds_cfg)
    feats = ensure_cached(
        "features", table, ds_cfg.data_folder, audio_cfg, cache_dir, w=ds_cfg.w, workers=ds_cfg.cache_workers
    )
    waves = None
    if _needs_augment(audio_cfg) and Augmenter.from_config(audio_cfg).has_wave:
        waves = ensure_cached(
            "waves", table, ds_cfg.data_folder, audio_cfg, cache_dir, workers=ds_cfg.cache_workers
        )
    return source, feats, waves


def _normalizer(cfg, feats: CachedArray, train_rows: np.ndarray, encoder: MetadataEncoder,
                refit: bool = True) -> features_mod.FeatureNormalizer:
    if cfg.audio.mel_norm == "dataset" and (refit or encoder.feature_stats is None):
        if train_rows.size == 0:
            raise ValueError("audio.mel_norm is 'dataset' but there is no training split to measure it on, and "
                             "the given metadata encoder carries no feature statistics")
        mean, std = feature_stats(feats, train_rows)
        # kept with the fitted encoder, so a checkpoint reproduces the normalisation at prediction time
        encoder.feature_stats = {"mean": mean, "std": std}
        log.info("mel_norm=dataset: training log-mel mean %.4f, std %.4f", mean, std)
    return features_mod.FeatureNormalizer.from_config(cfg.audio, encoder.feature_stats)


def _make_datasets(
    cfg,
    source: Source,
    split: pd.Series,
    feats: CachedArray,
    waves: CachedArray | None,
    encoder: MetadataEncoder | None = None,
) -> Datasets:
    ds_cfg = cfg.dataset
    table, task = source.table, get_task(ds_cfg.task, ds_cfg.classes)
    split = split.reindex(table.index)
    other = ~split.isin(SPLITS)
    if other.any():
        log.warning(
            "%d cycle(s) have no split (%s); they are left out",
            other.sum(),
            sorted(map(str, pd.unique(split[other])))[:5],
        )
    train_rows = np.flatnonzero((split == "train").to_numpy())
    fitted = encoder is not None  # a checkpoint's encoder: evaluation never re-fits statistics
    if train_rows.size == 0 and not fitted:
        raise ValueError(
            f"the training split of {ds_cfg.data_folder} is empty "
            f"(split_strategy = {ds_cfg.split_strategy!r})"
        )
    if encoder is None:
        encoder = MetadataEncoder.from_config(ds_cfg, source.schema).fit(table.iloc[train_rows])
    normalizer = _normalizer(cfg, feats, train_rows, encoder, refit=not fitted)
    augmenter = Augmenter.from_config(cfg.audio) if cfg.audio.raw_augment else None
    labels = task_targets(table, task, ds_cfg.multi_label)

    def subset(name: str) -> CycleDataset | None:
        rows = np.flatnonzero((split == name).to_numpy())
        if rows.size == 0:
            return None
        part = table.iloc[rows]
        aug = augmenter if name == "train" else None  # validation/test are never augmented (defect 11.2-11)
        return CycleDataset(
            part,
            rows,
            feats,
            normalizer,
            encoder.transform(part, source.schema),
            labels[rows],
            cfg.audio,
            ds_cfg.w,
            name,
            aug,
            waves if aug is not None else None,
            seed=cfg.seed,
        )

    train, val, test = (subset(s) for s in SPLITS)
    if test is None:
        raise ValueError(
            f"the test split of {ds_cfg.data_folder} is empty (split_strategy = {ds_cfg.split_strategy!r})"
        )
    full = table.assign(Split=split)
    return Datasets(
        train,
        val,
        test,
        encoder,
        list(task.classes),
        encoder.spec,
        normalizer,
        full,
    )


def build_datasets(cfg, encoder: MetadataEncoder | None = None) -> Datasets:
    """Train / validation / test datasets of ``cfg`` (a ``ls.config.Config``).

    The validation split is ``None`` when ``dataset.val_fraction == 0``. With ``audio.mel_norm == "dataset"``
    the statistics measured on the training features are kept in ``Datasets.encoder.feature_stats``.
    ``encoder``: an already fitted metadata encoder (e.g. a checkpoint's) used instead of fitting one on the
    training split; its feature statistics are used as well (evaluation never re-fits).
    """
    from ls.data.splits import assign_splits

    source, feats, waves = _prepare(cfg)
    split = assign_splits(source.table, cfg.dataset, cfg.dataset.data_folder, labels=_class_ids(cfg, source))
    return _make_datasets(cfg, source, split, feats, waves, encoder)


def _class_ids(cfg, source: Source) -> np.ndarray:
    return task_class_ids(source.table, get_task(cfg.dataset.task, cfg.dataset.classes))


def build_fold_datasets(cfg, fold: int, k: int = 5) -> Datasets:
    """Patient-grouped k-fold on the training data: fold ``fold`` of ``k`` is validation, the rest train;
    the test split is the configured one. The encoder and (``mel_norm: dataset``) feature statistics are fitted
    on the fold's training rows, and validation items are not augmented (defect 11.2-11)."""
    from ls.data.splits import assign_splits, patient_kfold

    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    source, feats, waves = _prepare(cfg)
    table, labels = source.table, _class_ids(cfg, source)
    split = assign_splits(table, cfg.dataset, cfg.dataset.data_folder, labels=labels)
    dev = split.isin(("train", "val"))
    folds = _fold_of_rows(patient_kfold(table[dev], k, cfg.seed, labels=labels[dev.to_numpy()]), int(dev.sum()))
    # Patients who also have test recordings (ICBHI's official split: 156 and 218) always train, never
    # validate, so selection never sees a test patient (as in the validation carve of ls.data.splits).
    tested = table.loc[(split == "test").to_numpy(), "PID"].unique()
    also_tested = table.loc[dev, "PID"].isin(tested).to_numpy()
    split = split.copy()
    split[dev] = np.where((folds == fold) & ~also_tested, "val", "train")
    return _make_datasets(cfg, source, split, feats, waves)


def _fold_of_rows(folds: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> np.ndarray:
    """Per-row fold number from ``patient_kfold``'s ``(train_positions, val_positions)`` pairs."""
    fold_of = np.full(n_rows, -1)
    for f, (_, val_pos) in enumerate(folds):
        fold_of[np.asarray(val_pos)] = f
    if (fold_of < 0).any():
        raise ValueError("patient_kfold left some training rows out of every validation fold")
    return fold_of


# --------------------------------------------------------------------------------------------- loaders


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-cycle sampling weights (the reference's weighted sampler), normalised to sum 1.

    Single-label: ``1 / (count(class) + 1e-6)``. Multi-label ``[N, 2]``: with per-label inverse frequencies
    ``inv_j = 1 / (f_j + 1e-6)`` normalised to sum 1, a cycle weighs the sum of its positive labels' ``inv_j``;
    normal cycles weigh ``0.5 min_j inv_j``. Non-finite weights fall back to uniform.
    """
    y = np.asarray(labels)
    if y.ndim == 1:
        counts = np.bincount(y)
        w = 1.0 / (counts[y] + 1e-6)
    else:
        inv = 1.0 / (y.sum(axis=0) + 1e-6)
        inv = inv / inv.sum()
        w = (y * inv).sum(axis=1)
        w[y.sum(axis=1) == 0] = 0.5 * inv.min()
    w = w / w.sum()
    if not np.isfinite(w).all():
        warnings.warn("class-weighted sampling produced non-finite weights; sampling uniformly instead")
        w = np.full(len(y), 1.0 / len(y))
    return w


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement, sharded across ranks.

    Every rank draws the same ``ceil(N / world) * world`` indices from a generator seeded with
    ``seed + epoch`` and keeps every ``world``-th one from its rank, so ranks see disjoint shards of one
    weighted draw. Call ``set_epoch`` each epoch.
    """

    def __init__(self, weights: np.ndarray, rank: int, world_size: int, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.rank, self.world, self.seed, self.epoch = rank, world_size, seed, 0
        self.per_rank = math.ceil(len(self.weights) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.per_rank * self.world, replacement=True, generator=g)
        return iter(idx[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


#: Int64 draws before each epoch's sampling: the worker seeds of the two loader iterators the trainer of earlier
#: versions started per epoch (one more came from its progress bar); kept so their runs' numbers stay the same.
EPOCH_DRAWS = 2


class _TrainSampler(Sampler[int]):
    """The training order and random streams, the same whatever the number of workers and whether they persist.

    A DataLoader draws its workers' base seed (one int64) from its generator, or from the global RNG when it has
    none, each time a non-persistent iterator starts, i.e. every epoch, before the sampler runs; persistent
    workers skip that draw after the first epoch, and multi-process iterators start the sampler as soon as they
    are created. Orders (and dropout streams) of earlier versions include ``EPOCH_DRAWS`` such draws, so this
    sampler makes them itself, from ``draw_from`` (None: the global RNG), when its iteration starts; the loader
    gets a private generator for its worker seeds.
    """

    def __init__(self, sampler: Sampler, draw_from: torch.Generator | None) -> None:
        self.sampler, self.draw_from = sampler, draw_from

    @property
    def generator(self) -> torch.Generator | None:  # the trainer re-seeds it every epoch
        return getattr(self.sampler, "generator", None)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        torch.empty(EPOCH_DRAWS, dtype=torch.int64).random_(generator=self.draw_from)
        yield from self.sampler

    def __len__(self) -> int:
        return len(self.sampler)


#: Worker processes of each evaluation loader under ``num_workers: auto`` (no augmentation to keep up with).
EVAL_WORKERS = 4
#: Most worker processes ``num_workers: auto`` starts for the training loader.
MAX_AUTO_WORKERS = 16


def resolve_num_workers(value: int | str, device_type: str, world_size: int = 1, *, evaluation: bool = False,
                        cpus: int | None = None) -> int:
    """``dataset.num_workers`` as a number. ``auto``: on CUDA, every CPU of this process's share of the machine
    (``cpus // world_size``) but one, which stays with the training loop, at most ``MAX_AUTO_WORKERS`` (at most
    ``EVAL_WORKERS`` for an ``evaluation`` loader); on CPU 0, since there the model's threads use every core."""
    if value != "auto":
        return int(value)
    if device_type != "cuda":
        return 0
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = EVAL_WORKERS if evaluation else MAX_AUTO_WORKERS
    return max(0, min(cpus // max(world_size, 1) - 1, limit))


#: Where DataLoader workers hand their batches to the main process (Linux shared memory).
SHM_DIR = "/dev/shm"
#: Share of its free space one process's batches in flight may take: the rest stays for pinning, other
#: processes and NCCL, which also uses it.
SHM_SHARE = 0.5


def batch_nbytes(ds_cfg: DatasetConfig, batch_size: int) -> int:
    """Bytes of one batch, from the input shape: the float32 spectrograms (labels and metadata are tiny)."""
    return batch_size * ds_cfg.w * ds_cfg.h * 4


def fit_shared_memory(workers: int, prefetch: int, batch_bytes: int, world_size: int = 1,
                      shm_dir: str = SHM_DIR) -> tuple[int, int, str | None]:
    """``(workers, prefetch_factor, note)`` whose batches in flight, ``workers x prefetch x batch_bytes``, fit
    into this process's share of the free space of ``shm_dir``: workers put every batch there, and past its
    end they die with a bus error. Docker gives it 64 MB unless told otherwise. Lowered, fewer batches ahead
    first, then fewer workers (0: loading in the main process, no shared memory); ``note`` then says so. Off
    Linux, or with no such folder, unchanged."""
    if workers == 0 or not sys.platform.startswith("linux"):
        return workers, prefetch, None
    try:
        usage = shutil.disk_usage(shm_dir)
    except OSError:
        return workers, prefetch, None
    budget = usage.free * SHM_SHARE / max(world_size, 1)
    need = workers * prefetch * batch_bytes
    if need <= budget:
        return workers, prefetch, None
    fit = int(budget // (workers * batch_bytes))
    new_workers, new_prefetch = (workers, fit) if fit >= 1 else (min(workers, int(budget // batch_bytes)), 1)
    mb = 2**20
    note = (f"{workers} workers x {prefetch} batches ahead x {batch_bytes / mb:.1f} MB = {need / mb:.0f} MB in "
            f"flight, lowered to {new_workers} workers x {new_prefetch}")
    return new_workers, new_prefetch, note


def warn_shared_memory(notes: list[str], shm_dir: str = SHM_DIR) -> None:
    """One warning for the loaders whose workers ``fit_shared_memory`` lowered."""
    if not notes:
        return
    usage = shutil.disk_usage(shm_dir)
    warnings.warn(
        f"{shm_dir} is {usage.total / 2**20:.0f} MB ({usage.free / 2**20:.0f} MB free), too small for the loaders' "
        f"batches in flight ({'; '.join(notes)}); more would kill the workers with a bus error (insufficient "
        f"shared memory). For full speed give it more: docker run --shm-size=8g (or --ipc=host).",
        stacklevel=3,
    )


def loader_options(ds_cfg: DatasetConfig, device_type: str, workers: int, batch_size: int,
                   world_size: int = 1) -> tuple[dict[str, Any], str | None]:
    """DataLoader keyword arguments for ``workers`` processes (fitted to the shared memory), and the note of
    ``fit_shared_memory``. Persistent workers start once per run, not once per epoch (the epoch reaches them
    through the dataset's shared-memory epoch); pinned batches let the copy to the GPU overlap the step."""
    workers, prefetch, note = fit_shared_memory(workers, ds_cfg.prefetch_factor, batch_nbytes(ds_cfg, batch_size),
                                                world_size)
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device_type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=prefetch)
    return options, note


def loader_device_type(cfg) -> str:
    """``cuda`` when the run will train on a GPU (``training.device`` auto or cuda, and one is present)."""
    device = getattr(getattr(cfg, "training", None), "device", "auto")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


@dataclass
class Loaders:
    """What ``build_loaders`` returns; ``set_epoch`` forwards to datasets and samplers."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader
    datasets: Datasets

    def set_epoch(self, epoch: int) -> None:
        for loader in (self.train, self.val, self.test):
            if loader is None:
                continue
            if hasattr(loader.dataset, "set_epoch"):
                loader.dataset.set_epoch(epoch)
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)


def build_loaders(cfg, datasets: Datasets | None = None, *, rank: int = 0, world_size: int = 1) -> Loaders:
    """DataLoaders for the datasets of ``cfg`` (built when not given).

    Train: shuffled with a generator seeded by ``cfg.seed`` (or class-weighted with ``dataset.weighted_sampler``),
    ``drop_last``. Validation/test: in order, never dropping cycles. With ``world_size > 1`` every loader uses a
    distributed sampler (weighted: ``DistributedWeightedSampler``); note that torch's ``DistributedSampler``
    pads the eval splits with repeated cycles to equal shards, so gather per-rank predictions and drop
    duplicates by (filename, cycle_index). Call ``loaders.set_epoch(e)`` each epoch.
    Raises ValueError when the training batch is larger than a rank's share of the training split.
    """
    ds_cfg = cfg.dataset
    datasets = build_datasets(cfg) if datasets is None else datasets
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid distributed setup rank={rank}, world_size={world_size}")
    train = datasets.train
    per_rank = len(train) // world_size
    if ds_cfg.batch_size > per_rank:
        raise ValueError(
            f"dataset.batch_size = {ds_cfg.batch_size} is larger than the training split "
            f"({len(train)} cycles{f' / {world_size} ranks' if world_size > 1 else ''}); no full batch can be formed"
        )
    device_type = loader_device_type(cfg)
    workers = resolve_num_workers(ds_cfg.num_workers, device_type, world_size)
    train_options, train_note = loader_options(ds_cfg, device_type, workers, ds_cfg.batch_size, world_size)

    gen = torch.Generator().manual_seed(cfg.seed)
    if ds_cfg.weighted_sampler:
        weights = sample_weights(train.labels.numpy())
        if world_size > 1:
            sampler: Sampler = DistributedWeightedSampler(weights, rank, world_size, cfg.seed)
        else:
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double), len(weights), replacement=True, generator=gen
            )
        draw_from = None
    elif world_size > 1:
        sampler = DistributedSampler(train, world_size, rank, shuffle=True, seed=cfg.seed, drop_last=True)
        draw_from = None
    else:
        sampler, draw_from = RandomSampler(train, generator=gen), gen
    train_loader = DataLoader(
        train,
        batch_size=ds_cfg.batch_size,
        sampler=_TrainSampler(sampler, draw_from),
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds only (items draw from (seed, epoch, i))
        drop_last=True,
        **train_options,
    )

    eval_bs = ds_cfg.eval_batch_size or ds_cfg.batch_size
    eval_workers = resolve_num_workers(ds_cfg.num_workers, device_type, world_size, evaluation=True)
    eval_options, eval_note = loader_options(ds_cfg, device_type, eval_workers, eval_bs, world_size)
    warn_shared_memory([f"{name}: {note}" for name, note in (("training", train_note), ("evaluation", eval_note))
                        if note])

    def eval_loader(ds: CycleDataset | None) -> DataLoader | None:
        if ds is None:
            return None
        sampler = DistributedSampler(ds, world_size, rank, shuffle=False) if world_size > 1 else None
        return DataLoader(ds, batch_size=eval_bs, shuffle=False, sampler=sampler, drop_last=False, **eval_options)

    return Loaders(train_loader, eval_loader(datasets.val), eval_loader(datasets.test), datasets)
