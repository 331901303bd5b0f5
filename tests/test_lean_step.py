"""The training step never waits for the device: no host read of a tensor per batch.

On a GPU every ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``.to("cpu")``,
``.numpy()`` or ``np.asarray(t)`` of a device tensor blocks the host until the device has caught up, so the
next batch cannot be queued behind the current one. ``torch.cuda.set_sync_debug_mode`` catches those on CUDA
(the last test, skipped without a GPU); on CPU every such call made from ``ls`` code is counted instead, and
the count must not grow with the number of batches: the only reads allowed are the non-finite-loss flag every
``NAN_CHECK_EVERY`` batches and the end-of-epoch ones. Reads of the loader's own batches are not counted:
those tensors are on the host already (on CPU both sides are the host, so it is told by the tensor).

The metadata id range check reads ids, but only of CPU tensors (on a GPU it is skipped); it is left out of
the count, and a test below checks that it never reads a tensor of another device.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import VARIANTS, tiny_config, tiny_loaders, tiny_model

import ls.engine.trainer as trainer_mod
from ls.models.meta import check_meta_tensor

LS_DIR = str(Path(trainer_mod.__file__).resolve().parents[1])
#: Tensor methods that copy a value to the host (and so wait for the device); ``to`` only with a CPU target.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__array__", "__bool__", "__float__", "__int__", "__index__",
              "__complex__", "__format__", "to")
#: The one per-batch read allowed: the id range check, which only runs on CPU tensors.
CPU_ONLY = {"check_meta_tensor"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(variant: str, batches: int, tmp_path) -> trainer_mod.Trainer:
    cfg = tiny_config(tmp_path, freeze={"strategy": "none"})
    return trainer_mod.Trainer(tiny_model(variant), tiny_loaders(2 * batches, batch_size=2, n_eval=2), cfg.training,
                               cfg.output_mode, seed=0, progress=False)


def _targets_cpu(args, kwargs) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` moves to the CPU (not: a dtype, or another device)."""
    target = kwargs.get("device", args[0] if args else None)
    if isinstance(target, torch.Tensor):
        target = target.device
    try:
        return torch.device(target).type == "cpu"
    except (TypeError, RuntimeError):
        return False


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class HostReads:
    """Host reads made directly from ls code, ``counts`` by (file, function, method); ``host``: the loader's
    batch tensors (by id; kept alive so ids stay unique), already on the host."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.host: dict[int, torch.Tensor] = {}

    def batches(self, loader):
        """``loader``'s batches, their tensors remembered as host tensors."""
        for batch in loader:
            self.host.update((id(t), t) for t in _tensors(batch))
            yield batch


@pytest.fixture
def host_reads(monkeypatch) -> HostReads:
    reads = HostReads()

    def spy(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if (caller.co_filename.startswith(LS_DIR) and caller.co_name not in CPU_ONLY
                    and id(self) not in reads.host and (name != "to" or _targets_cpu(args, kwargs))):
                reads.counts[(Path(caller.co_filename).name, caller.co_name, name)] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    return reads


class _Batches:
    """A loader seen through a function of its iterator (``len`` and ``dataset`` as the loader's)."""

    def __init__(self, loader, through) -> None:
        self.loader, self.through, self.dataset = loader, through, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return self.through(iter(self.loader))


def _reads_of_an_epoch(variant, batches, tmp_path, reads: HostReads) -> collections.Counter:
    trainer = _trainer(variant, batches, tmp_path)
    trainer.loaders.train = _Batches(trainer.loaders.train, reads.batches)
    reads.counts.clear()
    trainer.train_one_epoch(0)
    return collections.Counter(reads.counts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_host_reads_of_a_training_epoch_do_not_grow_with_its_batches(variant, tmp_path, host_reads, monkeypatch):
    monkeypatch.setattr(trainer_mod, "NAN_CHECK_EVERY", 10**9)  # only the end-of-epoch check
    short = _reads_of_an_epoch(variant, 2, tmp_path, host_reads)
    long = _reads_of_an_epoch(variant, 6, tmp_path, host_reads)
    assert long == short, f"reads per batch: {dict(long - short)}"
    assert short[("trainer.py", "_check_finite", "__int__")] == 1


def test_the_non_finite_flag_is_read_every_n_batches_and_at_the_end(tmp_path, host_reads, monkeypatch):
    monkeypatch.setattr(trainer_mod, "NAN_CHECK_EVERY", 2)
    reads = _reads_of_an_epoch("ast_film_soft", 6, tmp_path, host_reads)
    assert reads[("trainer.py", "_check_finite", "__int__")] == 6 // 2 + 1


@pytest.mark.parametrize("kind", ["__float__", "item", "numpy", "__array__", "to", "__format__"])
def test_the_count_catches_a_per_batch_read_in_ls_code(kind, tmp_path, host_reads, monkeypatch):
    """What the test above guards against: here a read of each auxiliary loss per batch (as a progress line might
    add), in a function that counts as trainer code."""
    monkeypatch.setattr(trainer_mod, "NAN_CHECK_EVERY", 10**9)
    original = trainer_mod._auxiliary_losses

    def reading(model):
        out = original(model)
        for value in out.values():
            v = value.detach()
            if kind == "__float__":
                float(v)
            elif kind == "item":
                v.item()
            elif kind == "numpy":
                v.numpy()
            elif kind == "__array__":
                np.asarray(v)
            elif kind == "to":
                v.to("cpu")
            else:
                f"{v:.3f}"  # a formatted loss, as a progress line would show it
        return out

    reading.__code__ = reading.__code__.replace(co_filename=trainer_mod.__file__)  # as if in the trainer
    monkeypatch.setattr(trainer_mod, "_auxiliary_losses", reading)
    short = _reads_of_an_epoch("ast_film_soft", 2, tmp_path, host_reads)
    long = _reads_of_an_epoch("ast_film_soft", 6, tmp_path, host_reads)
    assert long - short == {("trainer.py", "reading", kind): 4 * 2}  # 4 more batches, 2 losses each


def test_the_id_range_check_never_reads_a_tensor_of_another_device():
    ids = torch.empty(4, dtype=torch.long, device="meta")  # any read of its values would raise
    assert check_meta_tensor({"device": ids}, "device", vocab_size=5) is ids


def test_the_trainer_starts_one_loader_iterator_per_epoch(tmp_path):
    """A second iterator (tqdm.auto's bar starts one when given a loader) starts and drops worker processes and
    prefetched batches, and with them draws from the shuffling generator."""
    trainer = _trainer("ast", 2, tmp_path)
    loader = trainer.loaders.train
    started = []

    class Counting:
        dataset, sampler, batch_size = loader.dataset, loader.sampler, loader.batch_size

        def __len__(self):
            return len(loader)

        def __iter__(self):
            started.append(1)
            return iter(loader)

    trainer.loaders.train = Counting()
    trainer.progress = True  # the bar on, as on a terminal
    trainer.train_one_epoch(0)
    assert len(started) == 1


class _SyncsFromTheSecondBatch:
    """Iterating ``loader`` with CUDA's sync debug mode at "error" from the second batch (the first initialises
    cuBLAS, the optimiser state, ...) to the last, i.e. before the end-of-epoch read of the non-finite flag."""

    def __init__(self, loader) -> None:
        self.loader, self.dataset = loader, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        try:
            for b, batch in enumerate(self.loader):
                if b == 1:
                    torch.cuda.set_sync_debug_mode("error")
                yield batch
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["ast", "ast_film_soft"])
def test_no_training_step_synchronises_the_cuda_device(variant, tmp_path, monkeypatch):
    """On a GPU torch itself flags every synchronising call, from any library (``.item()``, a blocking copy to
    the host, a stream synchronisation); under "error" the first one raises."""
    monkeypatch.setattr(trainer_mod, "NAN_CHECK_EVERY", 10**9)
    cfg = tiny_config(tmp_path, device="cuda", freeze={"strategy": "none"})
    trainer = trainer_mod.Trainer(tiny_model(variant), tiny_loaders(8, batch_size=2, n_eval=2), cfg.training,
                                  cfg.output_mode, seed=0, progress=False)
    trainer.loaders.train = _SyncsFromTheSecondBatch(trainer.loaders.train)
    result = trainer.train_one_epoch(0)
    assert torch.cuda.get_sync_debug_mode() == 0
    assert np.isfinite(result["loss"])
