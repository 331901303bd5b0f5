"""ICBHI data layer: cycle table, splits, labels, audio, features (cached on disk), augmentation, metadata and
the dataset / loader API (see ``docs/interfaces.md``).

>>> datasets = build_datasets(cfg)          # train, val, test = datasets
>>> loaders = build_loaders(cfg, datasets)  # loaders.set_epoch(epoch) each epoch
"""

from ls.data.dataset import (
    CycleDataset,
    Datasets,
    DistributedWeightedSampler,
    Loaders,
    build_datasets,
    build_fold_datasets,
    build_loaders,
    load_table,
    sample_weights,
)
from ls.data.features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureNormalizer, features_for_recording
from ls.data.metadata import MetadataEncoder

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "CycleDataset",
    "Datasets",
    "DistributedWeightedSampler",
    "FeatureNormalizer",
    "Loaders",
    "MetadataEncoder",
    "build_datasets",
    "build_fold_datasets",
    "build_loaders",
    "features_for_recording",
    "load_table",
    "sample_weights",
]
