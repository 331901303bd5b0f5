"""The training loop: data -> forward -> loss -> backward -> step -> eval -> checkpoint.

:class:`Trainer` takes a model, loaders with ``.train``/``.val``/``.test`` yielding the batch dicts of
``ls.data``, the ``training`` config section, the run's output mode and a tracker. It knows no file format, no
dataset and no mechanism: what a model does per epoch or wants logged comes through its generic hooks
(``start_epoch(epoch, epochs)``, ``epoch_stats()``, ``auxiliary_losses()``), and what a checkpoint must carry
besides weights and training state (variant, resolved config, fitted metadata encoder, class names) arrives
as the opaque dict ``checkpoint_meta``.

Model selection (``training.selection``):

- ``strict`` (default): thresholds are tuned and the best epoch is chosen on the patient-disjoint validation
  split carved from the training split; the test split is evaluated once, at the end, with the best
  epoch's weights and thresholds.
- ``paper``: selection (and threshold tuning) on the test split, as the original and its peers do
  (docs/fixes.md 11.1-1), for comparable numbers.

In both cases the best weights are really restored (a copy, docs/fixes.md 11.1-2) before the final test.

Reproducibility: at the start of epoch ``e`` every RNG (python, numpy, torch) is re-seeded from
``(seed, e, rank)``, so data order, augmentation and dropout are functions of (seed, epoch); a run stopped
after epoch k and resumed from ``last.pt`` ends with exactly the metrics of an uninterrupted run on CPU.

Progress: tqdm bars on a terminal; otherwise (a log file) a line with samples/s and the epoch's ETA every
``PROGRESS_EVERY_S`` seconds, every line flushed. Ctrl-C raises :class:`TrainingInterrupted`, which names the
epoch ``last.pt`` holds, for ``--resume``.

Speed: the step never waits for the host. Losses and logits stay on the device until the end of the epoch;
the non-finite-loss check reads one flag every ``NAN_CHECK_EVERY`` batches and at the end of the epoch.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ls.engine import checkpoint as ckpt
from ls.engine import losses, metrics, optim, predict_rules
from ls.engine.config import TrainingConfig
from ls.engine.distributed import (
    DistContext,
    all_reduce_mean,
    any_rank,
    current_context,
    gather_arrays,
    unwrap,
    wrap_model,
)
from ls.engine.inference import InferenceOutputs, run_inference, to_device
from ls.engine.modes import OutputMode
from ls.engine.precision import configure_determinism, configure_tf32, resolve_precision
from ls.engine.schedules import build_lr_scheduler
from ls.engine.tracking import NullTracker
from ls.utils.errors import LsError

#: Batches between two reads of the non-finite-loss flag (each read waits for the device).
NAN_CHECK_EVERY = 50
#: Seconds between two progress lines within an epoch when no progress bar is shown (output to a log file).
PROGRESS_EVERY_S = 30.0


class DeviceError(LsError, RuntimeError):
    """The configured device is not available on this machine (``training.device: cuda`` without a GPU)."""


class NonFiniteLossError(LsError, RuntimeError):
    """The loss became NaN/inf; the message names the epoch and batch and the last good checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`: ``epoch`` is the last epoch saved in ``checkpoint`` (``last.pt``;
    None when none was written yet), from where ``--resume`` continues."""

    def __init__(self, epoch: int, checkpoint: Path | None) -> None:
        super().__init__(epoch, checkpoint)
        self.epoch, self.checkpoint = epoch, checkpoint

    def __str__(self) -> str:
        if self.checkpoint is None:
            return f"interrupted during epoch {self.epoch + 1}, before the first checkpoint; start the run again"
        return f"interrupted after epoch {self.epoch}; continue with --resume {self.checkpoint}"


@dataclass
class EvalResult:
    """One pass over a split: mean loss, metrics, the thresholds used, the per-cycle outputs (sorted by
    filename, cycle index) and the class ids and probabilities derived from them."""

    loss: float
    metrics: dict[str, float]
    thresholds: Any
    outputs: InferenceOutputs
    y_true: np.ndarray
    pred: np.ndarray
    probs: np.ndarray

    @property
    def score(self) -> float:
        return float(self.metrics["icbhi_score"])


@dataclass
class FitResult:
    best_epoch: int  # 1-based; 0 if no epoch ran
    best_score: float
    thresholds: Any
    test: EvalResult | None
    history: list[dict[str, float]]
    run_dir: Path | None
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch ``epoch`` (0-based) on ``rank``: resume re-creates exactly the same randomness."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**31


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("training.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


class Trainer:
    """Fit a model with the configured loss, optimiser, schedules and selection protocol.

    Args:
        model: any ``nn.Module`` with ``forward(spec, meta) -> logits`` (unwrapped; the trainer moves it, wraps
            it for DDP and compiles it when asked). Optional hooks: ``start_epoch``, ``epoch_stats``,
            ``auxiliary_losses``, ``param_groups``, ``no_weight_decay``, ``freeze``.
        loaders: object with ``.train``, ``.val`` (None allowed under ``paper`` selection) and ``.test``.
        training: the ``training`` config section.
        mode: the run's output mode (``ls.engine.modes.OutputMode``).
        tracker: an ``ls.engine.tracking.Tracker`` (gets each epoch's metrics and the test metrics) or None.
        seed: the run's seed (per-epoch reseeding).
        checkpoint_meta: the application's entries of every checkpoint (``ckpt.APPLICATION_KEYS``: ``variant``,
            ``config`` (plain dict), ``metadata_encoder``, ``metadata_spec``, ``class_names``, ``member``).
        run_dir: where ``last.pt``/``best.pt`` go (default ``training.checkpoint_dir``).
        group_names: ``{factor: [name by id]}`` for per-factor test metrics (e.g. per device, per site).
        epoch_end: functions called after each epoch (its metrics logged and checkpoints written) with the
            epoch (1-based) and its metric record; an exception they raise stops training (e.g. a search
            pruning a trial).
        evaluate_test: False: the test split is never evaluated, neither every epoch (``monitor_test``) nor at
            the end (``FitResult.test`` is None); a search's trials must not see it. Needs ``strict`` selection.
    """

    def __init__(
        self,
        model: nn.Module,
        loaders: Any,
        training: TrainingConfig,
        mode: OutputMode,
        tracker: Any = None,
        *,
        seed: int = 0,
        checkpoint_meta: Mapping[str, Any] | None = None,
        run_dir: str | Path | None = None,
        group_names: Mapping[str, list[str]] | None = None,
        ctx: DistContext | None = None,
        progress: bool | None = None,
        epoch_end: Sequence[Callable[[int, dict[str, float]], None]] = (),
        evaluate_test: bool = True,
    ) -> None:
        self.tcfg, self.output_mode, self.seed = training, mode, int(seed)
        self.evaluate_test = evaluate_test
        self.ctx = ctx or current_context()
        self.tracker = tracker if (tracker is not None and self.ctx.is_main) else NullTracker()
        self.loaders = loaders
        self.meta = dict(checkpoint_meta or {})
        self.group_names = dict(group_names or {})
        self.run_dir = Path(run_dir or training.checkpoint_dir)
        # Bars on a terminal; with output to a file (nohup, CI, a cluster job) periodic lines instead.
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.ctx.is_main
        self.progress_every_s = PROGRESS_EVERY_S

        self.device = resolve_device(training.device)
        self.precision = resolve_precision(training.amp, self.device)
        configure_tf32(training.tf32, self.device)
        configure_determinism(training.deterministic, self.device)
        self._check_loaders()

        self.raw_model = model
        _apply_freeze(model, training.freeze)
        model.to(self.device)
        self.model = wrap_model(model, self.ctx, self.device)
        if training.compile:
            self.model = torch.compile(self.model)

        self.loss_fn = losses.build_loss(training, mode, _train_labels(loaders.train))
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        self.optimizer = optim.build_optimizer(model, training)
        self.scheduler = build_lr_scheduler(self.optimizer, training)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)

        self.selection_split = "val" if training.selection == "strict" else "test"
        self.selection_metric = training.selection_metric or "icbhi_score"
        self.epoch_end = list(epoch_end)
        self.start_epoch = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_thresholds: Any = predict_rules.fixed_thresholds(training.thresholds, mode)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.epoch_weight_decay = float("nan")
        self.epoch_lrs: dict[str, float] = {}
        self.saved_epoch = 0  # the epoch last.pt holds (what --resume continues from)

    # =============================================================================================
    # The loop
    # =============================================================================================
    def fit(self, resume_from: str | Path | None = None) -> FitResult:
        """Train ``training.epochs`` epochs (from a resumed state if given), then test the best weights."""
        if resume_from is not None:
            self.load_resume_state(resume_from)
        self.saved_epoch = self.start_epoch
        try:
            return self._fit()
        except KeyboardInterrupt:
            last = self.run_dir / "last.pt"
            raise TrainingInterrupted(self.saved_epoch, last if self.saved_epoch and last.is_file() else None) \
                from None

    def _fit(self) -> FitResult:
        epochs = self.tcfg.epochs
        stopped_early = False
        if not self.progress:
            n = len(self.loaders.train)
            self._say(f"training epochs {self.start_epoch + 1}..{epochs} of {n} batches of "
                      f"{getattr(self.loaders.train, 'batch_size', '?')} on {self.device}")
        bar = tqdm(range(self.start_epoch, epochs), desc="epochs", initial=self.start_epoch, total=epochs,
                   disable=not self.progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            self._begin_epoch(epoch)  # seeds, sampler epoch, the model's per-epoch hook, weight decay
            train = self.train_one_epoch(epoch)  # data -> forward -> loss -> backward -> step
            selection = self.evaluate(self._selection_loader(), tune_thresholds=True)  # eval
            score = self._selection_score(selection)
            improved = score > self.best_score  # strict '>' as the paper
            if improved:
                self._remember_best(epoch, selection)
            else:
                self.bad_epochs += 1
            self._step_lr_scheduler(selection)
            monitor = self._monitor_test(selection)  # test curves under strict: logged, never used
            record = self._epoch_record(epoch, train, selection, time.perf_counter() - t0, monitor)
            self.history.append(record)
            self.tracker.log_metrics(record, step=epoch + 1)
            self._print_epoch(epoch, record, improved)
            self._write_checkpoints(epoch, improved)  # checkpoint
            for hook in self.epoch_end:
                hook(epoch + 1, record)
            if self.tcfg.early_stopping and self.bad_epochs >= self.tcfg.early_stopping:
                stopped_early = True
                self._say(f"early stopping: no improvement in {self.bad_epochs} epochs")
                break
        bar.close()
        return self._final_test(stopped_early)

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader; returns mean losses and train metrics (thresholds 0.5)."""
        self.model.train()
        loader = self.loaders.train
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, task loss, auxiliary loss
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        logits_all: list[torch.Tensor] = []
        labels_all: list[np.ndarray] = []
        n_batches = 0
        lines = None if self.progress or not self.ctx.is_main else _ProgressLines(
            f"epoch {epoch + 1}/{self.tcfg.epochs} train", len(loader), self.progress_every_s, self._say)
        # One loader iterator per epoch: given the loader itself, tqdm.auto's bar starts a second one of its own
        # (worker processes and prefetched batches started, then dropped, every epoch).
        batches = tqdm(iter(loader), desc=f"train {epoch + 1}", total=len(loader), disable=not self.progress,
                       leave=False)
        for b, batch in enumerate(batches):
            spec, meta = to_device(batch, self.device)
            labels = batch["label"].to(self.device, non_blocking=True)
            with self.precision.autocast(self.device.type):
                logits = self.model(spec, meta)
            # Losses in fp32 outside autocast: bf16/fp16 logits would round the loss (and the custom losses'
            # log/pow terms are not on autocast's fp32 list). A no-op for fp32 runs.
            logits = logits.float()
            task_loss = self.loss_fn(logits, labels)
            aux = _auxiliary_losses(unwrap(self.model))
            aux_loss = torch.stack(list(aux.values())).sum() if aux else torch.zeros((), device=self.device)
            loss = task_loss + aux_loss
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), b, first_bad)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.tcfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums += torch.stack([loss.detach(), task_loss.detach(), aux_loss.detach()]).double()
            logits_all.append(logits.detach())
            labels_all.append(batch["label"].numpy())
            n_batches += 1
            if n_batches % NAN_CHECK_EVERY == 0:
                self._check_finite(first_bad, epoch)
            if lines is not None:
                lines.update(n_batches, len(labels_all[-1]))
        self._check_finite(first_bad, epoch)
        mean = (sums / max(n_batches, 1)).tolist()
        out = {k: all_reduce_mean(v, self.ctx) for k, v in zip(("loss", "task_loss", "aux_loss"), mean)}
        train = gather_arrays({"logits": torch.cat(logits_all).cpu().numpy(), "labels": np.concatenate(labels_all)},
                              self.ctx)
        # Training metrics always use thresholds 0.5, as the paper logs them.
        ev = predict_rules.evaluate_outputs(train["logits"], train["labels"], self.output_mode)
        out.update(ev.metrics)
        return out

    def evaluate(self, loader: Any, thresholds: Any = None, tune_thresholds: bool = False) -> EvalResult:
        """Loss and metrics on ``loader``; thresholds tuned on it when ``tune_thresholds`` (selection split),
        else ``thresholds`` (default: the best epoch's). Outputs are gathered across DDP ranks."""
        out = run_inference(self.model, loader, self.device, precision=self.precision, ctx=self.ctx)
        # The mean loss over the unique cycles (after DDP's padding duplicates are dropped), in one call.
        with torch.no_grad():
            mean_loss = float(self.loss_fn(torch.from_numpy(out.logits).to(self.device),
                                           torch.from_numpy(out.labels).to(self.device)))
        thr_cfg = self.tcfg.thresholds
        if tune_thresholds and thr_cfg.mode == "tuned":
            ev = predict_rules.evaluate_outputs(out.logits, out.labels, self.output_mode, threshold_cfg=thr_cfg)
        else:
            chosen = self.best_thresholds if thresholds is None else thresholds
            ev = predict_rules.evaluate_outputs(out.logits, out.labels, self.output_mode,
                                                thresholds=chosen if self.output_mode.uses_thresholds else None)
        return EvalResult(mean_loss, ev.metrics, ev.thresholds, out, ev.y_true, ev.y_pred, ev.probs)

    # =============================================================================================
    # Helpers (each a side concern of the loop)
    # =============================================================================================
    def _check_loaders(self) -> None:
        if self.loaders.train is None or len(self.loaders.train) == 0:
            n = len(getattr(self.loaders.train, "dataset", []) or [])
            bs = getattr(self.loaders.train, "batch_size", "?")
            raise ValueError(
                f"the training loader yields no batch: dataset.batch_size={bs} is larger than the training "
                f"split ({n} cycles per process) and the last incomplete batch is dropped; lower the batch size"
            )
        if not self.evaluate_test and self.tcfg.selection != "strict":
            raise ValueError(
                f"training.selection is {self.tcfg.selection!r}, which selects on the test split, but this run must "
                "not read the test split; use training.selection=strict"
            )
        if self.tcfg.selection == "strict" and self.loaders.val is None:
            raise ValueError(
                "training.selection is 'strict' but there is no validation split (dataset.val_fraction is 0); "
                "set dataset.val_fraction > 0, or training.selection=paper to select on the test split"
            )

    def _selection_loader(self) -> Any:
        return self.loaders.val if self.selection_split == "val" else self.loaders.test

    def _begin_epoch(self, epoch: int) -> None:
        """Make everything random in this epoch a function of (seed, epoch, rank), then set the schedules."""
        seed_everything(epoch_seed(self.seed, epoch, self.ctx.rank))
        if hasattr(self.loaders, "set_epoch"):
            self.loaders.set_epoch(epoch)  # augmentation streams and distributed samplers
        train = self.loaders.train
        for gen in (getattr(train, "generator", None), getattr(train.sampler, "generator", None)):
            if isinstance(gen, torch.Generator):  # shuffling order: not carried over from earlier epochs
                gen.manual_seed(epoch_seed(self.seed, epoch))
        model = unwrap(self.model)
        if hasattr(model, "start_epoch"):
            model.start_epoch(epoch, self.tcfg.epochs)
        self.epoch_weight_decay = optim.apply_weight_decay_schedule(self.optimizer, epoch, self.tcfg)
        self.epoch_lrs = optim.group_lrs(self.optimizer)

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = int(first_bad)  # the one host read: every NAN_CHECK_EVERY batches and at the end of the epoch
        if any_rank(bad >= 0, self.ctx):
            last = self.run_dir / "last.pt"
            where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
            at = f"batch {bad + 1}" if bad >= 0 else "a batch on another process"
            raise NonFiniteLossError(
                f"the loss became non-finite at epoch {epoch + 1}, {at}; training stopped and {where} (try a "
                "lower training.optimizer.lr or enable training.grad_clip)"
            )

    def _selection_score(self, selection: EvalResult) -> float:
        if self.selection_metric not in selection.metrics:
            raise ValueError(f"training.selection_metric {self.selection_metric!r} is not a metric of this run; "
                             f"known: {', '.join(sorted(selection.metrics))}")
        return float(selection.metrics[self.selection_metric])

    def _remember_best(self, epoch: int, selection: EvalResult) -> None:
        self.best_score, self.best_epoch = self._selection_score(selection), epoch + 1
        self.best_thresholds = selection.thresholds
        self.best_state = ckpt.cpu_state_dict(self.model)  # a copy, not an alias of the live weights
        self.bad_epochs = 0

    def _step_lr_scheduler(self, selection: EvalResult) -> None:
        # Once per epoch, after validation; reduce_on_plateau reads scheduler.reduce_metric from these metrics.
        self.scheduler.step({**selection.metrics, "loss": selection.loss})

    def _monitor_test(self, selection: EvalResult) -> EvalResult | None:
        if self.selection_split == "test" or not self.tcfg.monitor_test or not self.evaluate_test:
            return None  # under `paper` the selection split already is the test split
        return self.evaluate(self.loaders.test, thresholds=selection.thresholds)

    def _epoch_record(self, epoch: int, train: dict, sel: EvalResult, seconds: float,
                      monitor: EvalResult | None = None) -> dict[str, float]:
        rec: dict[str, float] = {"epoch": float(epoch + 1), "epoch_seconds": seconds}
        rec.update({f"train/{k}": v for k, v in train.items()})
        rec[f"{self.selection_split}/loss"] = sel.loss
        rec.update({f"{self.selection_split}/{k}": v for k, v in sel.metrics.items()})
        if monitor is not None:
            rec["test_epoch/loss"] = monitor.loss
            rec.update({f"test_epoch/{k}": v for k, v in monitor.metrics.items()})
        # LR and WD used in this epoch (the scheduler has already moved on to the next epoch's values).
        rec.update({k.replace("lr_", "lr/", 1): v for k, v in self.epoch_lrs.items()})
        rec["weight_decay"] = self.epoch_weight_decay
        model = unwrap(self.model)
        if hasattr(model, "epoch_stats"):
            rec.update({k: float(v) for k, v in model.epoch_stats().items() if _is_number(v)})
        return rec

    def _print_epoch(self, epoch: int, rec: Mapping[str, float], improved: bool) -> None:
        s = self.selection_split
        lr = next((v for k, v in rec.items() if k.startswith("lr/")), float("nan"))
        self._say(
            f"epoch {epoch + 1:>3}/{self.tcfg.epochs} | train loss {rec['train/loss']:.4f} "
            f"score {rec.get('train/icbhi_score', float('nan')):.4f} | {s} loss {rec[f'{s}/loss']:.4f} "
            f"Sp {rec.get(f'{s}/specificity', float('nan')):.4f} Se {rec.get(f'{s}/sensitivity', float('nan')):.4f} "
            f"score {rec[f'{s}/icbhi_score']:.4f} | lr {lr:.2e} | {rec['epoch_seconds']:.1f}s"
            + (" *" if improved else "")
        )

    def _say(self, text: str) -> None:
        if self.ctx.is_main:
            tqdm.write(text)
            sys.stdout.flush()  # a log file is block-buffered: without this, lines show up minutes late

    # -- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self, weights: Mapping[str, torch.Tensor], thresholds: Any, epoch: int,
                    resume: dict[str, Any] | None = None) -> dict:
        return ckpt.make_checkpoint(
            dict(weights), self.meta, thresholds=thresholds, output_mode=self.output_mode.to_dict(),
            epoch=epoch + 1, best=self.best_score, best_epoch=self.best_epoch, selection=self.tcfg.selection,
            # the metric history so far: figures (training curves) from any checkpoint
            trainer_state={"bad_epochs": self.bad_epochs, "history": list(self.history)}, resume=resume,
        )

    def _write_best(self) -> None:
        """``best.pt``: the best epoch's weights and thresholds, with the history of every epoch run so far."""
        state = self._checkpoint(self.best_state, self.best_thresholds, self.best_epoch - 1)
        ckpt.save_checkpoint(state, self.run_dir / "best.pt")

    def _write_checkpoints(self, epoch: int, improved: bool) -> None:
        if not self.ctx.is_main:
            return
        if improved:
            self._write_best()
        weights = self.best_state if improved else ckpt.cpu_state_dict(self.model)  # no second copy
        resume = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                  "scaler": self.scaler.state_dict(), "rng": ckpt.capture_rng_state()}
        ckpt.save_checkpoint(self._checkpoint(weights, self.best_thresholds, epoch, resume), self.run_dir / "last.pt")
        self.saved_epoch = epoch + 1

    def load_resume_state(self, path: str | Path) -> None:
        """Continue from ``last.pt``: weights, optimiser, scheduler, scaler, epoch, best, history, RNG. Whether its
        config is this run's is the application's question (it knows configs); here: format and variant."""
        state = ckpt.read_checkpoint(path)
        ckpt.check_resume_state(state, self.meta.get("variant", ""), path)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.best_score, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.best_thresholds = state["thresholds"]
        self.bad_epochs = int(state["trainer"]["bad_epochs"])
        self.history = list(state["trainer"]["history"])
        best = ckpt.find_best_beside(path)
        if best is not None:
            best_state = ckpt.read_checkpoint(best)
            self.best_state = best_state["model"]
            if int(best_state["best_epoch"]) != self.best_epoch:
                # best.pt is written just before last.pt: a crash between the two leaves best.pt one
                # improvement ahead. Its weights, score and thresholds belong together: adopt them.
                self.best_score, self.best_epoch = float(best_state["best"]), int(best_state["best_epoch"])
                self.best_thresholds, self.bad_epochs = best_state["thresholds"], 0
        elif self.best_epoch:
            # Without it the final test would silently use the last weights with the best epoch's thresholds.
            raise ValueError(
                f"cannot resume from {path}: it records a best epoch ({self.best_epoch}) but best.pt, which holds "
                f"that epoch's weights, is not beside it; put best.pt back or start a new run"
            )
        ckpt.restore_rng_state(state["rng"])
        self._say(f"resumed from {path} after epoch {self.start_epoch} (best epoch {self.best_epoch})")

    # -- the end -----------------------------------------------------------------------------------
    def _final_test(self, stopped_early: bool) -> FitResult:
        if self.best_state is None:  # no epoch ever improved on -inf (e.g. a NaN selection score every epoch)
            self._say("warning: no epoch was selected (the selection score never improved); testing the last weights")
        else:
            unwrap(self.model).load_state_dict(self.best_state)  # the best weights, really (11.1-2)
            last_written = (self.history[-1]["epoch"] if self.history else 0) == self.best_epoch
            if self.ctx.is_main and self.best_epoch and not last_written:
                self._write_best()  # best.pt was written at the best epoch: bring its history up to the end
        if not self.evaluate_test:
            self.tracker.log_metrics({"best_epoch": float(self.best_epoch)}, step=self.tcfg.epochs)
            self._say(f"best epoch {self.best_epoch} ({self.selection_metric} {self.best_score:.4f} on "
                      f"{self.selection_split}); the test split was not evaluated")
            return FitResult(self.best_epoch, self.best_score, self.best_thresholds, None, self.history, self.run_dir,
                             stopped_early)
        test = self.evaluate(self.loaders.test, thresholds=self.best_thresholds)
        test.metrics.update(self._group_metrics(test))
        final = {f"test/{k}": v for k, v in test.metrics.items()}
        final["test/loss"] = test.loss
        final["best_epoch"] = float(self.best_epoch)
        self.tracker.log_metrics(final, step=self.tcfg.epochs)
        self._say(
            f"test (best epoch {self.best_epoch}, selected on {self.selection_split}): "
            f"Sp {test.metrics.get('specificity', float('nan')):.4f} "
            f"Se {test.metrics.get('sensitivity', float('nan')):.4f} score {test.score:.4f}"
        )
        return FitResult(
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            thresholds=self.best_thresholds,
            test=test,
            history=self.history,
            run_dir=self.run_dir,
            stopped_early=stopped_early,
        )

    def _group_metrics(self, result: EvalResult) -> dict[str, float]:
        """Sp/Se/Score per value of every categorical factor (``<factor>/<value>/icbhi_score``, ...)."""
        groups = {}
        for factor, ids in result.outputs.meta.items():
            names = self.group_names.get(factor)
            groups[factor] = [names[i] if names is not None and i < len(names) else str(i) for i in ids]
        return metrics.group_metrics(result.y_true, result.pred, groups, self.output_mode.n_classes)


class _ProgressLines:
    """Progress of a loop as plain lines (``batch i/n, samples/s, ETA``) every ``every_s`` seconds."""

    def __init__(self, what: str, total: int, every_s: float, say: Any) -> None:
        self.what, self.total, self.every_s, self.say = what, total, every_s, say
        self.t0 = self.last = time.perf_counter()
        self.samples = 0

    def update(self, done: int, batch_samples: int) -> None:
        self.samples += batch_samples
        now = time.perf_counter()
        if now - self.last < self.every_s or done >= self.total:
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        eta = elapsed / done * (self.total - done)
        self.say(f"{self.what}: batch {done}/{self.total} ({100 * done / self.total:.0f}%) | "
                 f"{self.samples / elapsed:.1f} samples/s | epoch ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- small pure helpers ----------------------------------------------------------------------------
def _apply_freeze(model: nn.Module, fcfg: Any) -> None:
    if fcfg.strategy == "none" or not hasattr(model, "freeze"):
        return
    model.freeze(
        fcfg.strategy,
        until_block=fcfg.until_block,
        trainable_blocks=fcfg.trainable_blocks,
        freeze_conditioning=fcfg.freeze_conditioning,
    )


def _auxiliary_losses(model: nn.Module) -> dict[str, torch.Tensor]:
    return model.auxiliary_losses() if hasattr(model, "auxiliary_losses") else {}


def _train_labels(loader: Any) -> np.ndarray:
    """Labels of the training split, read from the dataset (no pass over the augmenting loader: 11.6-3)."""
    ds = loader.dataset
    if hasattr(ds, "labels"):
        return np.asarray(ds.labels)
    return np.stack([np.asarray(ds[i]["label"]) for i in range(len(ds))])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
