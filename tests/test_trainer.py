"""Trainer: selection protocols, best-weight restore, exact resume, NaN loss, early stopping, bad input.

A tiny stand-in model (mean-pooled spectrogram -> MLP with dropout) and in-memory datasets keep these tests
fast; the real data/model stack is exercised end to end in test_scripts.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ls.config import config_from_dict, to_dict
from ls.engine.checkpoint import CheckpointError, read_checkpoint
from ls.engine.trainer import NonFiniteLossError, Trainer

T, F = 16, 8  # frames x mel bins of the stand-in spectrograms


class TinyModel(nn.Module):
    """``forward(spec [B, T, F], meta) -> logits [B, 2]``; dropout makes the RNG matter for resume."""

    def __init__(self, label_dim: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(F + 1, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, label_dim))
        self.poison = False

    def forward(self, spec, meta=None, return_info=False):
        x = torch.cat([spec.mean(dim=1), meta["cont"][:, :1]], dim=1)  # meta: the batch's "meta" dict
        logits = self.net(x)
        if self.poison:
            logits = logits * float("nan")
        return logits

    def auxiliary_losses(self):
        return {}

    def param_groups(self):
        return {"classifier": list(self.parameters())}


class CycleSet(Dataset):
    """Cycles whose crackle/wheeze bits are (noisily) visible in the spectrogram mean."""

    def __init__(self, n: int, seed: int, prefix: str) -> None:
        g = np.random.default_rng(seed)
        self.labels = g.integers(0, 2, size=(n, 2)).astype(np.float32)
        spec = g.normal(size=(n, T, F)).astype(np.float32)
        spec[:, :, 0] += 1.5 * self.labels[:, 0:1]
        spec[:, :, 1] += 1.5 * self.labels[:, 1:2]
        self.spec, self.prefix = torch.from_numpy(spec), prefix
        self.device = g.integers(1, 3, size=n)
        self.site = g.integers(1, 4, size=n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {
            # training 'augmentation' drawn from the global RNG (so resume must restore randomness exactly)
            "spec": self.spec[i] + (0.1 * torch.randn(T, F) if self.prefix == "tr" else 0.0),  # not "tr_clean"
            "meta": {"device": torch.tensor(self.device[i]), "site": torch.tensor(self.site[i]),
                     "cont": torch.tensor([float(self.labels[i, 0]) - 0.5, 0.0])},
            "label": torch.from_numpy(self.labels[i]),
            "filename": f"{self.prefix}_{i // 4:03d}",
            "cycle_index": torch.tensor(i % 4),
            "pid": str(i // 8),
        }


def make_loaders(val: bool = True, batch_size: int = 8, n_train: int = 48):
    train = CycleSet(n_train, 0, "tr")
    loader = lambda ds, **kw: DataLoader(ds, batch_size=batch_size, **kw)
    return SimpleNamespace(
        train=loader(train, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)),
        val=loader(CycleSet(24, 1, "va")) if val else None,
        test=loader(CycleSet(24, 2, "te")),
    )


def make_cfg(tmp_path, **training):
    training = {"epochs": 4, "device": "cpu", "optimizer": {"lr": 0.01},
                "scheduler": {"type": "cosine_warmup", "warmup_epochs": 1},
                "checkpoint_dir": str(tmp_path / "ck"), **training}  # fmt: skip
    return config_from_dict({
        "seed": 7,
        "dataset": {"data_folder": "unused", "n_cls": 4, "multi_label": True},
        "models": {"ast": {"label_dim": 2}},
        "training": training,
    })  # fmt: skip


def trainer_for(model, loaders, cfg, tracker=None, **kw) -> Trainer:
    """A Trainer as ls.train builds one: the training section, the output mode, the seed, the config snapshot."""
    return Trainer(model, loaders, cfg.training, cfg.output_mode, tracker, seed=cfg.seed,
                   checkpoint_meta={"variant": "ast", "config": to_dict(cfg)}, **kw)


def make_trainer(tmp_path, loaders=None, model=None, run="run", **training) -> Trainer:
    if model is None:
        torch.manual_seed(0)  # the initial weights, as the runner seeds before build_model
        model = TinyModel()
    cfg = make_cfg(tmp_path, **training)
    return Trainer(
        model, loaders or make_loaders(), cfg.training, cfg.output_mode, None, seed=cfg.seed,
        checkpoint_meta={"variant": "ast", "config": to_dict(cfg), "class_names": ["normal", "crackle", "wheeze",
                                                                                   "both"]},
        run_dir=tmp_path / run, group_names={"device": ["?", "A", "B"], "site": ["?", "x", "y", "z"]},
        progress=False,
    )  # fmt: skip


def _torch_threads():
    torch.set_num_threads(1)  # identical reduction order across runs


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    _torch_threads()
    tmp = tmp_path_factory.mktemp("full")
    trainer = make_trainer(tmp)
    return tmp, trainer, trainer.fit()


def test_fit_writes_loadable_checkpoints_and_tests_the_best_epoch(full_run):
    tmp, _, result = full_run
    best = read_checkpoint(tmp / "run" / "best.pt")
    last = read_checkpoint(tmp / "run" / "last.pt")
    assert last["epoch"] == 4 and best["epoch"] == result.best_epoch
    assert best["variant"] == "ast" and best["class_names"][3] == "both"
    assert best["thresholds"] == list(result.thresholds)
    assert "optimizer" not in best and "optimizer" in last and "rng" in last
    assert isinstance(last["rng"]["numpy"][1], list)  # plain lists, weights_only-readable
    # the per-epoch selection score of the best epoch is the maximum over the history
    scores = [h["val/icbhi_score"] for h in result.history]
    assert result.best_score == max(scores) and scores.index(max(scores)) + 1 == result.best_epoch
    assert set(result.test.metrics) >= {"specificity", "sensitivity", "icbhi_score", "device/A/n_cycles"}


def test_final_test_uses_the_best_weights_not_the_last(full_run):
    """Fix 11.1-2: re-evaluating best.pt's weights with its thresholds reproduces the final test metrics."""
    tmp, trainer, result = full_run
    best = read_checkpoint(tmp / "run" / "best.pt")
    model = TinyModel()
    model.load_state_dict(best["model"])
    trainer.model = model.eval()
    again = trainer.evaluate(trainer.loaders.test, thresholds=best["thresholds"])
    assert again.metrics["icbhi_score"] == result.test.metrics["icbhi_score"]
    assert np.array_equal(again.outputs.logits, result.test.outputs.logits)
    last = read_checkpoint(tmp / "run" / "last.pt")
    if result.best_epoch != 4:  # then the weights really differ from the last epoch's
        assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_resume_after_epoch_k_ends_with_the_same_metrics(full_run, tmp_path):
    _torch_threads()
    _, _, uninterrupted = full_run
    first = make_trainer(tmp_path)
    write = first._write_checkpoints

    def write_then_crash(epoch, improved):  # the process dies right after epoch 2's checkpoint
        write(epoch, improved)
        if epoch == 1:
            raise KeyboardInterrupt

    first._write_checkpoints = write_then_crash
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    last = tmp_path / "run" / "last.pt"
    assert read_checkpoint(last)["epoch"] == 2
    resumed = make_trainer(tmp_path).fit(resume_from=last)
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert resumed.test.metrics == uninterrupted.test.metrics
    assert [h["train/loss"] for h in resumed.history] == [h["train/loss"] for h in uninterrupted.history]
    # best.pt (written at the best epoch, possibly before the crash) ends with the whole history
    assert read_checkpoint(tmp_path / "run" / "best.pt")["trainer"]["history"] == resumed.history


def test_resume_from_another_variant_or_config_is_refused(full_run, tmp_path):
    """The trainer refuses another variant and a best.pt; another config is refused by the application, which
    knows configs (ls.runs.run.check_resumable), before any data is built."""
    from ls.runs.run import check_resumable

    tmp, _, _ = full_run
    last = tmp / "run" / "last.pt"
    with pytest.raises(CheckpointError, match="training.optimizer.lr: stored 0.01 vs planned 0.5"):
        check_resumable(read_checkpoint(last), make_cfg(tmp_path, epochs=4, optimizer={"lr": 0.5}), "ast", last)
    check_resumable(read_checkpoint(last), make_cfg(tmp_path, epochs=6), "ast", last)  # more epochs: fine
    other = make_trainer(tmp_path)
    other.meta["variant"] = "ast_film"
    with pytest.raises(CheckpointError, match="variant 'ast'"):
        other.fit(resume_from=last)
    with pytest.raises(CheckpointError, match="best.pt"):
        make_trainer(tmp_path).fit(resume_from=tmp / "run" / "best.pt")


def test_crash_between_best_and_last_checkpoint_resumes_consistently(full_run, tmp_path):
    """best.pt is written just before last.pt; a crash between them leaves best.pt one improvement ahead."""
    _torch_threads()
    _, _, uninterrupted = full_run
    crash_epoch = uninterrupted.best_epoch - 1  # 0-based index of the last improving epoch
    assert crash_epoch >= 1, "the stand-in run must improve after its first epoch for this scenario"
    first = make_trainer(tmp_path)
    write_best = first._write_best

    def write_best_then_crash():
        write_best()
        if first.best_epoch == crash_epoch + 1:
            raise KeyboardInterrupt

    first._write_best = write_best_then_crash
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    last = tmp_path / "run" / "last.pt"
    assert read_checkpoint(last)["best_epoch"] < read_checkpoint(tmp_path / "run" / "best.pt")["best_epoch"]
    probe = make_trainer(tmp_path)
    probe.load_resume_state(last)  # adopts best.pt's epoch, score and thresholds with its weights
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert (probe.best_epoch, probe.best_score) == (best["best_epoch"], best["best"])
    assert list(probe.best_thresholds) == list(best["thresholds"])
    resumed = make_trainer(tmp_path).fit(resume_from=last)
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert resumed.test.metrics == uninterrupted.test.metrics


def test_resume_without_best_pt_beside_last_pt_is_refused(full_run, tmp_path):
    """The best epoch's weights live only in best.pt; resuming without it would test the wrong weights."""
    import shutil

    tmp, _, _ = full_run
    lonely = tmp_path / "elsewhere" / "last.pt"
    lonely.parent.mkdir()
    shutil.copy(tmp / "run" / "last.pt", lonely)
    with pytest.raises(ValueError, match="best.pt, which holds"):
        make_trainer(tmp_path).fit(resume_from=lonely)


def test_paper_selection_tunes_and_selects_on_test(tmp_path):
    result = make_trainer(tmp_path, loaders=make_loaders(val=False), epochs=2, selection="paper").fit()
    assert "test/icbhi_score" in result.history[0] and "val/icbhi_score" not in result.history[0]
    assert result.best_score == max(h["test/icbhi_score"] for h in result.history)


def test_strict_selection_monitors_test_every_epoch_without_using_it(tmp_path):
    """test_epoch/* curves are logged under strict; turning them off changes neither selection nor the result."""
    _torch_threads()
    watched = make_trainer(tmp_path / "a", epochs=3).fit()
    assert all("test_epoch/icbhi_score" in h and "val/icbhi_score" in h for h in watched.history)
    _torch_threads()
    blind = make_trainer(tmp_path / "b", epochs=3, monitor_test=False).fit()
    assert not any(k.startswith("test_epoch/") for h in blind.history for k in h)
    assert blind.best_epoch == watched.best_epoch and blind.test.metrics == watched.test.metrics
    # the monitor at the best epoch is the final test (same weights, same thresholds)
    best = watched.history[watched.best_epoch - 1]
    assert best["test_epoch/icbhi_score"] == watched.test.metrics["icbhi_score"]


def test_strict_selection_without_validation_split_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        make_trainer(tmp_path, loaders=make_loaders(val=False))


def test_fixed_thresholds_are_used_and_stored(tmp_path):
    result = make_trainer(tmp_path, epochs=1, thresholds={"mode": "fixed", "value": [0.3, 0.7]}).fit()
    assert tuple(result.thresholds) == (0.3, 0.7)
    assert read_checkpoint(tmp_path / "run" / "best.pt")["thresholds"] == [0.3, 0.7]


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_last_good_checkpoint(tmp_path):
    model = TinyModel()
    trainer = make_trainer(tmp_path, model=model, epochs=3)
    trainer.tcfg.epochs = 1
    trainer.fit()
    good = read_checkpoint(tmp_path / "run" / "last.pt")
    trainer.tcfg.epochs = 3
    model.poison = True
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 1.*last good checkpoint is .*last\.pt"):
        trainer.fit(resume_from=tmp_path / "run" / "last.pt")
    kept = read_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 1


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    trainer = make_trainer(tmp_path, epochs=6, early_stopping=1, optimizer={"lr": 1e-9})
    result = trainer.fit()
    # with a (practically) zero LR the score cannot improve after epoch 1
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_batch_larger_than_the_training_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size=64 is larger than the training split"):
        make_trainer(tmp_path, loaders=make_loaders(batch_size=64, n_train=40))


def test_gradient_clipping_bounds_the_update(tmp_path):
    """With clip c and SGD-like first AdamW step, clipping changes nothing about direction but must run:
    the total gradient norm seen by the optimizer never exceeds c."""
    trainer = make_trainer(tmp_path, epochs=1, grad_clip=1e-3)
    norms = []
    orig = trainer.optimizer.step

    def step(*a, **k):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()])).item())
        return orig(*a, **k)

    trainer.optimizer.step = step
    trainer.fit()
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)


def test_best_checkpoint_alone_holds_the_history(full_run, tmp_path):
    """best.pt carries every epoch's metrics (rewritten at the end), so figures need only that file
    (ls.viz.cli.training_history no longer looks for last.pt)."""
    import shutil

    from ls.viz.cli import training_history

    tmp, _, result = full_run
    best = read_checkpoint(tmp / "run" / "best.pt")
    assert best["trainer"]["history"] == result.history and len(result.history) == 4
    assert best["epoch"] == best["best_epoch"] == result.best_epoch and "optimizer" not in best
    alone = tmp_path / "alone" / "best.pt"
    alone.parent.mkdir()
    shutil.copy(tmp / "run" / "best.pt", alone)
    assert training_history(SimpleNamespace(path=alone, cfg=None)) == result.history


def test_the_selection_metric_picks_the_epoch_and_epoch_end_hooks_see_every_epoch(tmp_path, monkeypatch):
    """training.selection_metric decides which epoch is kept (here a metric whose best epoch differs from the
    ICBHI score's); epoch_end hooks get each epoch's record after its checkpoint; an unknown metric is one
    clear error naming the key."""
    import dataclasses

    from ls.engine import predict_rules

    cfg = make_cfg(tmp_path, epochs=4)
    real = predict_rules.evaluate_outputs
    calls = {"n": 0}

    def scripted(*args, **kwargs):  # the selection split's scores per epoch: icbhi rises, the other falls
        ev = real(*args, **kwargs)
        if kwargs.get("threshold_cfg") is not None:  # the tuned (selection) evaluation
            calls["n"] += 1
            ev.metrics["icbhi_score"] = 0.1 * calls["n"]
            ev.metrics["sprsound_score"] = 1.0 - 0.1 * calls["n"]
        return ev

    monkeypatch.setattr(predict_rules, "evaluate_outputs", scripted)
    seen = []
    training = dataclasses.replace(cfg.training, selection_metric="sprsound_score")
    trainer = Trainer(TinyModel(), make_loaders(), training, cfg.output_mode, seed=cfg.seed,
                      run_dir=tmp_path / "spr", progress=False,
                      epoch_end=[lambda epoch, record: seen.append((epoch, (tmp_path / "spr" / "last.pt").is_file(),
                                                                    record["val/sprsound_score"]))])
    result = trainer.fit()
    assert result.best_epoch == 1 and result.best_score == pytest.approx(0.9)
    assert [(e, saved) for e, saved, _ in seen] == [(1, True), (2, True), (3, True), (4, True)]
    calls["n"] = 0
    result = trainer_for(TinyModel(), make_loaders(), cfg, run_dir=tmp_path / "icbhi", progress=False).fit()
    assert result.best_epoch == 4  # the default: the ICBHI score
    bad = dataclasses.replace(cfg.training, selection_metric="icbhi_scor")
    with pytest.raises(ValueError, match="training.selection_metric 'icbhi_scor' is not a metric.*icbhi_score"):
        Trainer(TinyModel(), make_loaders(), bad, cfg.output_mode, run_dir=tmp_path / "bad", progress=False).fit()


def test_the_trainer_drives_a_model_only_through_its_generic_hooks(tmp_path):
    """No mechanism names in the engine: a model's per-epoch hook and statistics are whatever it defines."""

    class Hooked(TinyModel):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, int]] = []

        def start_epoch(self, epoch: int, epochs: int) -> None:
            self.calls.append((epoch, epochs))

        def epoch_stats(self) -> dict[str, float]:
            return {"hooked/epochs_started": float(len(self.calls))}

        def auxiliary_losses(self):
            return {"tiny": 0.5 * self.net[0].weight.abs().mean()}

    torch.manual_seed(0)
    model = Hooked()
    result = make_trainer(tmp_path, model=model, epochs=2).fit()
    assert model.calls == [(0, 2), (1, 2)]
    assert [h["hooked/epochs_started"] for h in result.history] == [1.0, 2.0]
    assert all(h["train/aux_loss"] > 0 for h in result.history)
    assert all(h["train/loss"] == pytest.approx(h["train/task_loss"] + h["train/aux_loss"]) for h in result.history)
    import inspect

    import ls.engine.trainer as trainer_module

    source = inspect.getsource(trainer_module).lower()
    for name in ("mask", "gate", "film", "crackle", "wheeze", "metadataencoder"):  # imports: test_layers.py
        assert name not in source, name


def test_without_a_terminal_progress_lines_show_within_an_epoch_and_are_flushed(tmp_path, monkeypatch):
    """Output to a log file (nohup, CI, a cluster job): no bars, but lines with samples/s and the epoch's
    ETA while the epoch runs, each flushed at once (a log file is block-buffered)."""
    import io
    import sys

    class Log(io.StringIO):
        flushes = 0

        def flush(self):
            Log.flushes += 1
            super().flush()

    log = Log()
    monkeypatch.setattr(sys, "stdout", log)
    trainer = make_trainer(tmp_path, epochs=1)  # progress=False: what a non-terminal gets
    trainer.progress_every_s = 0.0  # every batch (30 s by default)
    trainer.fit()
    lines = log.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("epoch 1/1 train: batch")]
    assert len(progress) == len(trainer.loaders.train) - 1  # every batch but the last (the summary follows)
    assert all("samples/s" in line and "epoch ETA" in line for line in progress)
    assert progress[0].startswith("epoch 1/1 train: batch 1/6 (17%)")
    summary = next(i for i, line in enumerate(lines) if line.startswith("epoch   1/1 |"))
    assert lines.index(progress[-1]) < summary
    assert Log.flushes >= len(lines)


def test_ctrl_c_in_fit_names_the_epoch_and_checkpoint_to_resume_from(tmp_path, monkeypatch):
    from ls.engine.trainer import TrainingInterrupted

    trainer = make_trainer(tmp_path, epochs=3)
    real = Trainer.train_one_epoch

    def ctrl_c_in_epoch_3(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "train_one_epoch", ctrl_c_in_epoch_3)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.epoch == 2 and info.value.checkpoint == tmp_path / "run" / "last.pt"
    assert str(info.value) == f"interrupted after epoch 2; continue with --resume {tmp_path / 'run' / 'last.pt'}"
    assert read_checkpoint(info.value.checkpoint)["epoch"] == 2
