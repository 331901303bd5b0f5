"""ICBHI data layer: cycle table, splits, labels, audio, features (cached on disk), augmentation, metadata and
the dataset / loader API (see ``docs/interfaces.md``).

>>> datasets = build_datasets(cfg)          # train, val, test = datasets
>>> loaders = build_loaders(cfg, datasets)  # loaders.set_epoch(epoch) each epoch

The names below are exported lazily (module ``__getattr__``): ``import ls.data.config`` (what ``ls.config``
needs) does not import torch, torchaudio, soundfile or pandas; ``from ls.data import build_datasets`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ls.utils.lazy import lazy_exports

#: Exported name -> the submodule that defines it.
_EXPORTS = {
    "CycleDataset": "dataset",
    "Datasets": "dataset",
    "DistributedWeightedSampler": "dataset",
    "Loaders": "dataset",
    "build_datasets": "dataset",
    "build_fold_datasets": "dataset",
    "build_loaders": "dataset",
    "check_data_folders": "folders",
    "data_folders": "folders",
    "load_table": "dataset",
    "sample_weights": "dataset",
    "AUDIOSET_MEAN": "features",
    "AUDIOSET_STD": "features",
    "FeatureNormalizer": "features",
    "features_for_recording": "features",
    "MetadataEncoder": "metadata",
}

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
    "check_data_folders",
    "data_folders",
    "features_for_recording",
    "load_table",
    "sample_weights",
]

if TYPE_CHECKING:
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
    from ls.data.folders import check_data_folders, data_folders
    from ls.data.metadata import MetadataEncoder


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
