"""Loaders that keep up (ls.data.dataset.build_loaders): persistent workers, prefetching, pinned memory on CUDA,
``num_workers: auto``, and batches that are a function of (seed, epoch) only, whatever the number of workers.

Persistent workers are started once and keep their copy of the dataset, so the epoch reaches them through
shared memory; the first test fails if it does not (epoch 2 would repeat epoch 1's augmentation in the
workers while the main process moved on).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

import ls.data.dataset as dataset_mod
from ls.config import config_from_dict
from ls.data import build_datasets, build_loaders
from ls.data.dataset import EVAL_WORKERS, MAX_AUTO_WORKERS, fit_shared_memory, resolve_num_workers

H, W = 32, 64
AUG = {
    "raw_augment": True,
    "wave_aug": [{"type": "loudness", "p": 0.5}, {"type": "noise", "p": 0.5}],
    "spec_aug": [{"type": "SpecAugment", "p": 1.0, "policy": "icbhi_sup"}],
}


def _cfg(folder, cache_dir, workers=0, raw_augment=True, audio=None, **dataset):
    ds = {"data_folder": str(folder), "h": H, "w": W, "batch_size": 4, "cache_workers": 0,
          "cache_dir": str(cache_dir), "num_workers": workers, **dataset}  # fmt: skip
    audio = {"n_mels": H, "desired_length": 2.0, **AUG, "raw_augment": raw_augment, **(audio or {})}
    return config_from_dict({"dataset": ds, "audio": audio, "training": {"device": "cpu"}})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ls_cache_loaders")


@pytest.fixture(scope="module")
def datasets(synthetic_icbhi_dir, cache_dir):
    return build_datasets(_cfg(synthetic_icbhi_dir, cache_dir))


@pytest.fixture(scope="module")
def plain_datasets(synthetic_icbhi_dir, cache_dir):
    """Without augmentation: the order tests read every item of two epochs."""
    return build_datasets(_cfg(synthetic_icbhi_dir, cache_dir, raw_augment=False))


def _epochs(loaders, n=2, batches=3):
    out = []
    for epoch in range(n):
        loaders.set_epoch(epoch)
        out.append([b for _, b in zip(range(batches), loaders.train)])
    return out


def test_batches_are_identical_with_0_1_and_2_persistent_workers_over_two_epochs(synthetic_icbhi_dir, cache_dir,
                                                                                  datasets):
    runs = {}
    for workers in (0, 1, 2):
        loaders = build_loaders(_cfg(synthetic_icbhi_dir, cache_dir, workers), datasets)
        assert loaders.train.persistent_workers is (workers > 0)
        runs[workers] = _epochs(loaders)
    for workers in (1, 2):
        for epoch in range(2):
            for a, b in zip(runs[0][epoch], runs[workers][epoch]):
                assert a["filename"] == b["filename"] and torch.equal(a["cycle_index"], b["cycle_index"])
                assert torch.equal(a["spec"], b["spec"]), (workers, epoch)
    # epoch 2 is augmented differently: its items differ from the same cycles' epoch-1 versions
    train = datasets.train
    index = {(f, int(c)): i for i, (f, c) in enumerate(zip(train.filenames, train.cycle_index.tolist()))}
    train.set_epoch(0)
    for batch in runs[2][1]:
        for f, c, spec in zip(batch["filename"], batch["cycle_index"], batch["spec"]):
            assert not torch.equal(spec, train[index[(f, int(c))]]["spec"])


def test_dithered_on_the_fly_features_are_a_function_of_seed_epoch_and_index(synthetic_icbhi_dir, cache_dir):
    """``audio.dither > 0``: the features recomputed for waveform-augmented items are dithered from the item's own
    generator, not torch's global RNG (whose state differs between workers and the main process)."""
    audio = {"dither": 1.0, "wave_aug": [{"type": "loudness", "p": 1.0}]}  # every item recomputed
    runs = {}
    for workers in (0, 2):
        cfg = _cfg(synthetic_icbhi_dir, cache_dir, workers, audio=audio)
        datasets = build_datasets(cfg)
        runs[workers] = _epochs(build_loaders(cfg, datasets), n=1, batches=2)[0]
        train = datasets.train
        assert torch.equal(train[0]["spec"], train[0]["spec"])  # the global RNG moved on in between
    for a, b in zip(runs[0], runs[2]):
        assert a["filename"] == b["filename"] and torch.equal(a["spec"], b["spec"])


def test_the_epoch_reaches_workers_of_a_loader_started_earlier(datasets):
    train = datasets.train
    loader = DataLoader(train, batch_size=2, num_workers=1, persistent_workers=True)
    train.set_epoch(0)
    epoch0 = next(iter(loader))["spec"]
    train.set_epoch(1)
    epoch1 = next(iter(loader))["spec"]  # the same worker process as for epoch 0
    train.set_epoch(1)
    assert torch.equal(epoch1, torch.stack([train[0]["spec"], train[1]["spec"]]))
    assert not torch.equal(epoch0, epoch1)


def _draws(n: int, generator: torch.Generator | None = None) -> None:
    for _ in range(n):
        torch.empty((), dtype=torch.int64).random_(generator=generator)


def test_the_training_order_is_that_of_earlier_versions(synthetic_icbhi_dir, cache_dir, plain_datasets):
    """Earlier trainers started two loader iterators per epoch (one from the progress bar), each drawing a worker
    seed from the shuffling generator before the permutation; the order (and so every earlier run's numbers) is
    kept, with and without persistent workers (the trainer now starts one iterator per epoch)."""
    cfg = _cfg(synthetic_icbhi_dir, cache_dir, 2, raw_augment=False)
    loader = build_loaders(cfg, plain_datasets).train
    n = len(plain_datasets.train)
    for epoch in range(2):  # the second epoch is where persistent workers skip the loader's seed draw
        expected = torch.Generator().manual_seed(100 + epoch)
        _draws(2, expected)
        order = torch.randperm(n, generator=expected)[: len(loader) * 4].tolist()
        loader.sampler.generator.manual_seed(100 + epoch)  # as the trainer does every epoch
        got = [i for b in loader for i in b["cycle_index"].tolist()]
        assert got == [int(plain_datasets.train.cycle_index[i]) for i in order]


def test_weighted_sampling_keeps_its_order_and_the_global_random_stream(synthetic_icbhi_dir, cache_dir,
                                                                        plain_datasets):
    """Without a loader generator the worker seeds came from the global RNG (two per epoch, as above): dropout
    after them saw a stream two draws further on. Those draws are kept, so runs do not depend on the workers."""
    cfg = _cfg(synthetic_icbhi_dir, cache_dir, 1, raw_augment=False, weighted_sampler=True)
    train = plain_datasets.train
    weights = torch.as_tensor(dataset_mod.sample_weights(train.labels.numpy()), dtype=torch.double)
    loader = build_loaders(cfg, plain_datasets).train
    for epoch in range(2):
        torch.manual_seed(5)
        _draws(2)
        order = torch.multinomial(weights, len(weights), True, generator=torch.Generator().manual_seed(epoch))
        want_rng = torch.random.get_rng_state()
        torch.manual_seed(5)
        loader.sampler.generator.manual_seed(epoch)
        got = [i for b in loader for i in b["cycle_index"].tolist()]
        assert got == [int(train.cycle_index[i]) for i in order[: len(got)]]
        assert torch.equal(torch.random.get_rng_state(), want_rng)


def test_loader_options(synthetic_icbhi_dir, cache_dir, datasets, monkeypatch):
    loaders = build_loaders(_cfg(synthetic_icbhi_dir, cache_dir, 2, prefetch_factor=3), datasets)
    for loader in (loaders.train, loaders.val, loaders.test):
        assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 3)
        assert loader.pin_memory is False  # CPU training: nothing to pin for
    cpu = build_loaders(_cfg(synthetic_icbhi_dir, cache_dir, "auto"), datasets)
    assert cpu.train.num_workers == 0 and cpu.train.persistent_workers is False
    _shm(monkeypatch, free=64 * 2**20)
    gpu = build_loaders(_gpu_auto_cfg(synthetic_icbhi_dir, cache_dir, monkeypatch), datasets)
    assert (gpu.train.num_workers, gpu.val.num_workers, gpu.test.num_workers) == (15, EVAL_WORKERS, EVAL_WORKERS)
    assert gpu.train.pin_memory is True and gpu.train.persistent_workers is True


def _gpu_auto_cfg(folder, cache_dir, monkeypatch):
    """``num_workers: auto`` on a pretended 16-CPU GPU machine (only the options are built, nothing runs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dataset_mod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    cfg = _cfg(folder, cache_dir, "auto")
    cfg.training.device = "auto"
    return cfg


def _shm(monkeypatch, free: int, total: int = 64 * 2**20) -> list:
    """A /dev/shm of ``total`` bytes with ``free`` free; returns the paths asked about."""
    asked = []
    usage = SimpleNamespace(total=total, used=total - free, free=free)
    monkeypatch.setattr(dataset_mod.shutil, "disk_usage", lambda path: (asked.append(str(path)), usage)[1])
    return asked


MB = 2**20
PAPER_BATCH = 16 * 1024 * 128 * 4  # 8 MB of float32 spectrograms


@pytest.mark.parametrize(("free", "world", "want"), [
    (64 * MB, 1, (4, 1)),  # Docker's default: 32 MB for 15 x 4 x 8 MB (480 MB): 4 workers, 1 batch ahead each
    (2048 * MB, 1, (15, 4)),  # enough: unchanged
    (600 * MB, 1, (15, 2)),  # fewer batches ahead first
    (600 * MB, 2, (15, 1)),  # two ranks on one machine share it
    (8 * MB, 1, (0, 1)),  # not one batch fits: loading in the main process
])
def test_workers_are_fitted_to_the_shared_memory(free, world, want, monkeypatch):
    asked = _shm(monkeypatch, free)
    workers, prefetch, note = fit_shared_memory(15, 4, PAPER_BATCH, world)
    assert (workers, prefetch) == want and asked == ["/dev/shm"]
    assert (note is None) is (want == (15, 4))


def test_shared_memory_is_left_alone_off_linux_and_without_workers(monkeypatch):
    _shm(monkeypatch, 0)
    assert fit_shared_memory(0, 4, PAPER_BATCH) == (0, 4, None)
    monkeypatch.setattr(dataset_mod.sys, "platform", "darwin")
    assert fit_shared_memory(15, 4, PAPER_BATCH) == (15, 4, None)


def test_a_small_dev_shm_lowers_the_loaders_with_one_warning(synthetic_icbhi_dir, cache_dir, datasets, monkeypatch):
    cfg = _gpu_auto_cfg(synthetic_icbhi_dir, cache_dir, monkeypatch)
    batch = cfg.dataset.batch_size * W * H * 4
    _shm(monkeypatch, free=8 * batch)  # half of it, 4 batches, for this process
    with pytest.warns(UserWarning) as caught:
        loaders = build_loaders(cfg, datasets)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "/dev/shm is 64 MB" in message and "--shm-size" in message and "training: 15 workers x 4" in message
    assert (loaders.train.num_workers, loaders.train.prefetch_factor) == (4, 1)
    assert (loaders.test.num_workers, loaders.test.prefetch_factor) == (EVAL_WORKERS, 1)
    _shm(monkeypatch, free=64 * 2**20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough room: no warning
        loaders = build_loaders(cfg, datasets)
    assert (loaders.train.num_workers, loaders.train.prefetch_factor) == (15, 4)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_inference_loader_is_set_up_as_the_training_runs_ones(device, synthetic_icbhi_dir, cache_dir):
    from ls.inference import build_split_loader

    ctx = SimpleNamespace(cfg=_cfg(synthetic_icbhi_dir, cache_dir, 2, prefetch_factor=3), encoder=None,
                          device=torch.device(device))  # a device object: nothing runs on it
    loader = build_split_loader(ctx, "test")
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 3)
    assert loader.pin_memory is (device == "cuda")


@pytest.mark.parametrize(("value", "device", "world", "evaluation", "cpus", "want"), [
    (3, "cuda", 1, False, 16, 3),  # a number is taken as it is
    (0, "cuda", 1, False, 16, 0),
    ("auto", "cpu", 1, False, 16, 0),  # CPU training: the model's threads use the cores
    ("auto", "cuda", 1, False, 16, 15),  # one CPU stays with the training loop
    ("auto", "cuda", 1, True, 16, EVAL_WORKERS),
    ("auto", "cuda", 2, False, 16, 7),  # two DDP processes share the machine
    ("auto", "cuda", 1, False, 64, MAX_AUTO_WORKERS),
    ("auto", "cuda", 1, False, 1, 0),
])
def test_num_workers_auto(value, device, world, evaluation, cpus, want):
    assert resolve_num_workers(value, device, world, evaluation=evaluation, cpus=cpus) == want


def test_bad_worker_settings_are_config_errors(synthetic_icbhi_dir, cache_dir):
    with pytest.raises(ValueError, match="num_workers"):
        _cfg(synthetic_icbhi_dir, cache_dir, -1)
    with pytest.raises(ValueError, match="prefetch_factor"):
        _cfg(synthetic_icbhi_dir, cache_dir, 2, prefetch_factor=0)
