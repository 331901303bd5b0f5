"""ls.data.dataset: datasets and loaders on the synthetic ICBHI folder (tiny features: 32 mel bins x 64 frames
of 2 s cycles), reproducible augmentation, samplers, k-fold, prediction features and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ls.config import config_from_dict
from ls.data import (
    DistributedWeightedSampler,
    MetadataEncoder,
    build_datasets,
    build_fold_datasets,
    build_loaders,
    features_for_recording,
    sample_weights,
)

H, W = 32, 64


def _cfg(folder, cache_dir, **audio):
    dataset = {"data_folder": str(folder), "h": H, "w": W, "batch_size": 4, "cache_workers": 0,
               "cache_dir": str(cache_dir)}  # fmt: skip
    return config_from_dict({"dataset": dataset, "audio": {"n_mels": H, "desired_length": 2.0, **audio}})


AUG = {
    "raw_augment": True,
    "wave_aug": [{"type": "loudness", "p": 0.5}, {"type": "noise", "p": 0.5}],
    "spec_aug": [{"type": "SpecAugment", "p": 1.0, "policy": "icbhi_sup"}],
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ls_cache")


@pytest.fixture(scope="module")
def datasets(synthetic_icbhi_dir, cache_dir):
    return build_datasets(_cfg(synthetic_icbhi_dir, cache_dir))


def test_items_and_batches_follow_the_interface(datasets):
    train, val, test = datasets
    assert val is not None and len(train) > len(val) > 0 and len(test) > 0
    item = test[0]
    assert item["spec"].shape == (W, H) and item["spec"].dtype == torch.float32
    assert set(item["meta"]) == {"device", "site", "cont"}  # the factors ICBHI declares, and cont
    assert item["meta"]["device"].dtype == torch.int64 and item["meta"]["device"].ndim == 0
    assert item["meta"]["cont"].shape == (datasets.metadata_spec.cont_dim,)
    assert item["label"].shape == (2,) and item["label"].dtype == torch.float32  # multi_label default
    assert isinstance(item["filename"], str) and isinstance(item["pid"], str)
    assert datasets.class_names == ["normal", "crackle", "wheeze", "both"]


def test_loaders_batches_drop_last_and_errors(datasets, synthetic_icbhi_dir, cache_dir):
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    loaders = build_loaders(cfg, datasets)
    batch = next(iter(loaders.train))
    assert (
        batch["spec"].shape == (4, W, H) and batch["meta"]["cont"].shape == (4, 3) and batch["label"].shape == (4, 2)
    )
    assert set(batch["meta"]) == {"device", "site", "cont"} and batch["meta"]["site"].shape == (4,)
    assert len(loaders.train) == len(datasets.train) // 4  # drop_last
    test_names = [n for b in loaders.test for n in b["filename"]]
    assert test_names == datasets.test.filenames  # eval loaders keep order and every cycle
    cfg.dataset.batch_size = len(datasets.train) + 1
    with pytest.raises(ValueError, match="batch_size .* larger than the training split"):
        build_loaders(cfg, datasets)


def test_train_shuffle_is_seeded(datasets, synthetic_icbhi_dir, cache_dir):
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    a = [n for b in build_loaders(cfg, datasets).train for n in b["cycle_index"].tolist()]
    b = [n for b in build_loaders(cfg, datasets).train for n in b["cycle_index"].tolist()]
    assert a == b


def test_encoder_fitted_on_training_rows_only(datasets):
    table = datasets.table
    expected = MetadataEncoder().fit(table[table["Split"] == "train"]).state_dict()
    assert datasets.encoder.state_dict() == expected


def test_augmentation_reproducible_per_epoch_and_worker_independent(synthetic_icbhi_dir, cache_dir):
    ds = build_datasets(_cfg(synthetic_icbhi_dir, cache_dir, **AUG))
    train, test = ds.train, ds.test
    first = train[0]["spec"]
    assert torch.equal(first, train[0]["spec"])
    train.set_epoch(1)
    assert not torch.equal(first, train[0]["spec"])
    train.set_epoch(0)
    assert torch.equal(test[0]["spec"], test[0]["spec"])  # test is never augmented
    assert test.augmenter is None and ds.val.augmenter is None
    plain = build_datasets(_cfg(synthetic_icbhi_dir, cache_dir)).train
    assert not torch.equal(first, plain[0]["spec"])  # SpecAugment p = 1 changed it
    loader_kw = {"batch_size": 4, "shuffle": False}
    serial = next(iter(torch.utils.data.DataLoader(train, num_workers=0, **loader_kw)))["spec"]
    workers = next(iter(torch.utils.data.DataLoader(train, num_workers=2, **loader_kw)))["spec"]
    assert torch.equal(serial, workers)


def test_dataset_normalisation_fix(synthetic_icbhi_dir, cache_dir):
    cfg = _cfg(synthetic_icbhi_dir, cache_dir, mel_norm="dataset")
    ds = build_datasets(cfg)
    stats = ds.encoder.feature_stats  # kept with the fitted encoder (and so in every checkpoint), not the config
    assert stats["std"] > 0 and "dataset_mean" not in vars(cfg.audio)
    specs = torch.stack([ds.train[i]["spec"] for i in range(len(ds.train))])
    assert specs.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert specs.std().item() == pytest.approx(0.5, abs=1e-3)


def test_features_for_recording_matches_dataset_item(datasets, synthetic_icbhi_dir, cache_dir):
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    row = datasets.test.table.iloc[0]
    spec = features_for_recording(synthetic_icbhi_dir / f"{row.Filename}.wav",
                                  [(row.CycleStart, row.CycleEnd)], cfg.audio, H, W, datasets.normalizer)[0]
    torch.testing.assert_close(spec, datasets.test[0]["spec"], atol=3e-3, rtol=1e-3)  # float16 cache


def test_fold_datasets_are_patient_disjoint(synthetic_icbhi_dir, cache_dir):
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    base = build_datasets(cfg)
    folds = [build_fold_datasets(cfg, f, k=2) for f in range(2)]
    dev = set(base.train.filenames) | set(base.val.filenames)
    for fd in folds:
        assert set(fd.train.patients).isdisjoint(fd.val.patients)
        assert set(fd.train.filenames) | set(fd.val.filenames) == dev
        assert fd.test.filenames == base.test.filenames
    assert set(folds[0].val.filenames).isdisjoint(folds[1].val.filenames)
    with pytest.raises(ValueError, match="fold must be in 0..1"):
        build_fold_datasets(cfg, 2, k=2)


def test_fold_validation_never_holds_a_patient_with_test_recordings(synthetic_icbhi_dir, cache_dir, tmp_path):
    """Like ICBHI's patients 156/218: a training patient with one recording in test trains in every fold."""
    from ls.data.icbhi import build_cycle_table

    table = build_cycle_table(synthetic_icbhi_dir)
    train_pids = table.loc[table["Split"] == "train", "PID"].unique()
    files = {pid: table.loc[table["PID"] == pid, "Filename"].unique() for pid in train_pids}
    shared = next(pid for pid, f in files.items() if len(f) >= 2)
    table.loc[table["Filename"] == files[shared][0], "Split"] = "test"
    csv = tmp_path / "cycles.csv"
    table.to_csv(csv, index=False)
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    cfg.dataset.cycle_metadata_path = str(csv)
    vals = [build_fold_datasets(cfg, f, k=2).val for f in range(2)]
    assert all(str(shared) not in v.patients for v in vals)
    assert sum(len(v) for v in vals) > 0


def test_sample_weights_by_hand():
    w = sample_weights(np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(w, np.array([1 / 3, 1 / 3, 1 / 3, 1.0]) / 2, rtol=1e-5)
    y = np.array([[0, 0], [1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    inv = 1 / (np.array([3.0, 2.0]) + 1e-6)
    inv /= inv.sum()
    raw = np.array([0.5 * inv.min(), inv[0], inv[0], inv[1], inv.sum()])
    np.testing.assert_allclose(sample_weights(y), raw / raw.sum(), rtol=1e-5)


def test_weighted_and_distributed_samplers(datasets, synthetic_icbhi_dir, cache_dir):
    shards = [list(DistributedWeightedSampler(np.ones(10) / 10, r, 2, seed=3)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    cfg = _cfg(synthetic_icbhi_dir, cache_dir)
    cfg.dataset.weighted_sampler = True
    loaders = [build_loaders(cfg, datasets, rank=r, world_size=2) for r in range(2)]
    # (wrapped: the wrapper keeps the random streams independent of the number of workers, see test_loaders.py)
    assert all(isinstance(ld.train.sampler.sampler, DistributedWeightedSampler) for ld in loaders)
    loaders[0].set_epoch(1)
    assert loaders[0].train.sampler.sampler.epoch == 1 and datasets.train.epoch == 1
    datasets.train.set_epoch(0)


def test_bad_input_is_named(synthetic_icbhi_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_folder"):
        build_datasets(_cfg(tmp_path / "nowhere", tmp_path / "c"))
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_icbhi_dir, broken, ignore=shutil.ignore_patterns(".ls_cache"))
    victim = min(broken.glob("*.wav"))
    victim.write_bytes(b"RIFF" + b"\x00" * 64)
    with pytest.raises(Exception, match=victim.name):
        build_datasets(_cfg(broken, tmp_path / "c2"))
    cfg = _cfg(synthetic_icbhi_dir, tmp_path / "c3")
    cfg.dataset.h = 64
    with pytest.raises(ValueError, match=r"dataset.h \(64\) must equal audio.n_mels"):
        build_datasets(cfg)


def test_a_given_encoder_is_used_instead_of_refitting(synthetic_icbhi_dir, cache_dir, datasets):
    """Evaluation with a checkpoint's encoder: ids and z-scores come from it, not from this data's train split."""
    table = datasets.table
    other = MetadataEncoder().fit(table[table["Split"] == "test"])  # deliberately different statistics
    rebuilt = build_datasets(_cfg(synthetic_icbhi_dir, cache_dir), encoder=other)
    assert rebuilt.encoder is other
    expected = other.transform(rebuilt.test.table)
    item = rebuilt.test[0]
    np.testing.assert_allclose(item["meta"]["cont"].numpy(), expected["cont"][0])
    assert item["meta"]["device"].item() == expected["device"][0]
    assert not np.allclose(other.mean["age"], datasets.encoder.mean["age"])
