"""Training from the command line: config -> data -> model -> trainer -> tracker, for one run, several seeds or
k folds. The application layer above ``ls.engine``: it knows datasets (``ls.data``), models (``ls.models``) and
files; the trainer it drives knows none of them.

Each root script (``ast_train.py``, ``ast_film_soft.py``, ...) is ``sys.exit(main("<variant>"))``:

    python ast_film_soft.py --config configs/ast_film_soft_config.yaml --mlflow-config configs/mlflow.yaml \\
        [--set training.epochs=5 ...] [--resume checkpoints/<run>/last.pt] [--seeds 42 43 44] [--kfold 5]

- one run: an MLflow run with params (every resolved config value), tags, per-epoch metrics, the resolved
  config, best checkpoint, confusion matrix and training curves, and a per-cycle test predictions CSV;
- ``--seeds``: a parent run with one nested run per seed and the mean/std of every test metric;
- ``--kfold K``: a parent run with one nested run per patient fold of the training split (that fold is the
  validation split; the official test split stays fixed) and the mean/std over folds;
- ``--resume``: continue an interrupted run from its ``last.pt`` in the same MLflow run;
- under ``torchrun`` the same command trains with DistributedDataParallel (rank 0 logs and checkpoints).

Every run gets a folder of its own, created exclusively (never shared with a run started in the same second);
what would fail late (data folder, weights file, writable folder with room for the checkpoints, tracking
store) is checked before any data is built; credentials are never stored (params, ``config.yaml``,
checkpoints). Errors are one ``error:`` line and exit code 2 (``--traceback`` for the traceback); Ctrl-C says
from where ``--resume`` continues (exit code 130) and ends the MLflow run as KILLED.
"""

from __future__ import annotations

import argparse
import copy
import errno
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ls.config import Config, dump_yaml, flatten, load_config
from ls.engine.checkpoint import read_checkpoint
from ls.engine.distributed import DistContext, barrier, cleanup_distributed, init_distributed
from ls.engine.tracking import NullTracker, Tracker, build_tracker, is_credential_key, strip_userinfo
from ls.engine.trainer import FitResult, Trainer, TrainingInterrupted, resolve_device, seed_everything
from ls.models.variants import VARIANTS, canonical_variant, get_variant
from ls.utils.cli import (
    EXIT_INTERRUPTED,
    add_traceback_option,
    fail,
    plain_warnings,
    report_error,
)
from ls.utils.io import WriteError, atomic_write_text, write_failure_reason
from ls.utils.trees import to_dict


def scripts() -> dict[str, str]:
    """Which root script trains which variant (read from the variant table)."""
    return {v.name: v.script for v in VARIANTS.values() if v.script}


@dataclass
class RunOutcome:
    """What one training run produced (rank 0 has everything; other ranks get the metrics only)."""

    variant: str
    seed: int
    test_metrics: dict[str, float]
    best_epoch: int
    run_dir: Path | None
    run_id: str | None = None
    fold: int | None = None
    fit: FitResult | None = field(default=None, repr=False)


# =================================================================================================
# One run
# =================================================================================================
def train_run(
    cfg: Config,
    variant: str,
    *,
    tracker: Tracker | NullTracker | None = None,
    resume: str | Path | None = None,
    run_name: str | None = None,
    ctx: DistContext | None = None,
    fold: tuple[int, int] | None = None,
    progress: bool | None = None,
    run_dir: str | Path | None = None,
    member: bool = False,
) -> RunOutcome:
    """Train one model of ``variant`` on ``cfg``; ``tracker`` must not have a run open (it opens one).

    ``fold=(i, k)``: validation is patient fold ``i`` of ``k`` on the training split (``build_fold_datasets``).

    Before any data is built (seconds, not an epoch, into the run) it checks what would otherwise fail late:
    the data folder and the pretrained-weights file (:func:`check_inputs`), a new run folder of its own that
    is writable and has room for the checkpoints (:func:`prepare_run_dir`, which also writes ``config.yaml``),
    and the tracking store (the run is opened then). Credentials never reach the params, ``config.yaml``,
    ``run.json`` or the checkpoints (:func:`stored_config`). Ctrl-C ends the MLflow run as KILLED (and raises
    :class:`ls.engine.trainer.TrainingInterrupted` once training has started, also during the test splits,
    figures and uploads after it), any other error as FAILED.
    ``run_dir``: the folder of this run (a study places its runs), instead of a new one under
    ``training.checkpoint_dir``; with ``resume`` it must be the folder of that ``last.pt``.
    ``member``: the run is one member of a ``--seeds``/``--kfold`` group; its checkpoints record its seed and
    fold, so that resuming one of them (``resume``, alone) continues that member with its own seed and fold.
    """
    from ls.data import build_datasets, build_fold_datasets, build_loaders
    from ls.models import build_model

    variant = canonical_variant(variant)
    cfg.model(variant)  # a missing models.<variant> block fails before any data is built
    ctx = ctx or DistContext()
    tracker = tracker if (tracker is not None and ctx.is_main) else NullTracker()
    if resume is not None and run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve().parent:
        raise ValueError(f"run_dir {run_dir} is not the folder of the checkpoint to resume ({resume})")
    given_dir = Path(resume).parent if resume is not None else (Path(run_dir) if run_dir is not None else None)
    resume_state = read_checkpoint(resume) if resume is not None else None
    recorded = (resume_state or {}).get("member")
    if recorded:  # a member of a --seeds/--kfold group, resumed alone: its own seed and fold, not the group's
        cfg = copy.deepcopy(cfg)
        cfg.seed, member = int(recorded["seed"]), True
        if recorded.get("fold") is not None:
            fold = (int(recorded["fold"]), int(recorded["k"]))
        _say(ctx, f"resuming {_member_name(cfg.seed, fold)} of a --{'kfold' if fold else 'seeds'} group alone")
    run_name = run_name or default_run_name(cfg, variant, None if fold is None else fold[0])
    stored = stored_config(cfg)
    run_open = isinstance(tracker, _OpenRun)  # a nested run the parent created (seeds, k-fold)
    run_dir = None
    fitted = False
    try:
        check_inputs(cfg, variant)
        if ctx.is_main:
            run_dir = prepare_run_dir(cfg, variant, run_name, stored, existing=given_dir)
        tracker.set_buffer_dir(run_dir)  # an offline buffer lives with the run it belongs to
        if resume_state is not None and resume_state.get("mlflow_run_id"):
            tracker.start_run(run_id=resume_state["mlflow_run_id"])
        else:
            tracker.start_run(run_name, tags=_tags(cfg, variant, None if fold is None else fold[0]))
            run_open = True
            tracker.log_params(flatten(stored))
        run_open = True  # also a resumed run, reopened above

        seed_everything(cfg.seed)
        t0 = time.perf_counter()
        _say(ctx, f"building datasets from {cfg.dataset.data_folder} ...")
        datasets = build_datasets(cfg) if fold is None else build_fold_datasets(cfg, fold[0], fold[1])
        _say(ctx, f"datasets ready in {time.perf_counter() - t0:.0f} s: " + ", ".join(
            f"{name} {len(ds)} cycles" for name, ds in zip(("train", "val", "test"), datasets) if ds is not None))
        loaders = build_loaders(cfg, datasets, rank=ctx.rank, world_size=ctx.world_size)
        spec = datasets.metadata_spec
        model = build_model(cfg.model(variant), spec)
        trainer = Trainer(
            model,
            loaders,
            cfg.training,
            cfg.output_mode,
            tracker,
            seed=cfg.seed,
            checkpoint_meta={
                "variant": variant,
                "config": stored,
                "metadata_encoder": datasets.encoder.state_dict() if datasets.encoder is not None else None,
                "metadata_spec": spec.to_dict() if spec is not None else None,
                "class_names": list(datasets.class_names),
                "member": ({"seed": cfg.seed} | ({} if fold is None else {"fold": fold[0], "k": fold[1]})
                           if member else None),
            },
            run_dir=run_dir,
            group_names=spec.vocabularies() if spec is not None else None,
            ctx=ctx,
            progress=progress,
        )
        result = trainer.fit(resume_from=resume)
        fitted = True
        split_of = _add_split_metrics(result, loaders.test.dataset, trainer, tracker)
        if ctx.is_main:
            log_run_artifacts(tracker, trainer, result, cfg, variant, split_of, None if fold is None else fold[0])
        tracker.end_run()  # inside: a Ctrl-C while it uploads still ends the run as KILLED
        run_open = False
    except BaseException as exc:
        if run_open:
            tracker.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if run_dir is not None and given_dir is None:
            _remove_if_unused(run_dir)  # a run that stopped before its first checkpoint leaves no folder
        if fitted and isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
            # Ctrl-C after training (test splits, figures, uploads): last.pt holds the final epoch, and
            # --resume from it only finishes these steps.
            last = trainer.run_dir / "last.pt"
            raise TrainingInterrupted(trainer.saved_epoch, last if trainer.saved_epoch and last.is_file() else None) \
                from None
        raise
    barrier(ctx)
    test = dict(result.test.metrics) if result.test is not None else {}
    test["loss"] = result.test.loss if result.test is not None else float("nan")
    return RunOutcome(variant, cfg.seed, test, result.best_epoch, run_dir,
                      getattr(tracker, "run_id", None), None if fold is None else fold[0], result)


def _add_split_metrics(result: FitResult, test_set: Any, trainer: Trainer, tracker: Any) -> dict[str, list[str]]:
    """Test metrics per split of the dataset's own (``split/<name>/icbhi_score``, ...) when the test set gathers
    several (SPRSound: test_inter and test_intra); they join ``result.test.metrics`` and are logged."""
    from ls.engine.metrics import group_metrics
    from ls.inference import split_groups

    if result.test is None:
        return {}
    groups = split_groups(result.test.outputs, test_set)
    if groups:
        per_split = group_metrics(result.test.y_true, result.test.pred, groups, trainer.output_mode.n_classes)
        result.test.metrics.update(per_split)
        tracker.log_metrics({f"test/{k}": v for k, v in per_split.items()}, step=trainer.tcfg.epochs)
    return groups


def _say(ctx: DistContext, text: str) -> None:
    if ctx.is_main:
        print(text, flush=True)


# =================================================================================================
# Before the work: inputs, run folder, room, credentials
# =================================================================================================
def stored_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as it is stored (params, ``config.yaml``, checkpoints, ``run.json``): a plain dict
    with every credential-like value (``mlflow.tracking_password``, ``tracking_username``, ...) set to None
    and the ``user:password@`` part of any URI (``http://user:pw@host``) removed.

    The tracker gets the credentials from the live config; nothing written or logged holds them.
    """

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (None if is_credential_key(k) and v is not None and not isinstance(v, (dict, list))
                        else clean(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return strip_userinfo(node, "") if isinstance(node, str) else node

    return clean(to_dict(cfg))


def check_inputs(cfg: Config, variant: str) -> None:
    """The data folder(s) exist (``ls.data.check_data_folders``) and the pretrained-weights file of ``models.<variant>`` exists, is readable and
    has the format of its ``weights.source`` (its first bytes only): seconds, before any data is built."""
    from ls.data.folders import check_data_folders
    from ls.models.weights import check_weights_file

    check_data_folders(cfg.dataset)
    options = cfg.model(variant)
    check_weights_file(options.weights, variant, options.model_size)


#: Bytes per parameter in the two checkpoints and the temp file of an atomic rewrite of last.pt:
#: best.pt (weights) + last.pt (weights, AdamW's two moments) + a temporary copy of last.pt, all float32.
_CHECKPOINT_BYTES_PER_PARAM = 4 * (1 + 3 + 3)
#: Conditioning, heads and metadata encoders add a few percent to the backbone; pickling adds a little.
_CHECKPOINT_MARGIN = 1.15


def checkpoint_bytes(cfg: Config, variant: str) -> int:
    """Disk space the checkpoints of one run need, estimated from the backbone's parameter count (built on
    PyTorch's meta device: no memory, no weights)."""
    import torch

    from ls.models.backbone import ASTBackbone

    o = cfg.model(variant)
    with torch.device("meta"):
        backbone = ASTBackbone(o.model_size, o.input_fdim, o.input_tdim, o.fstride, o.tstride)
    params = sum(p.numel() for p in backbone.parameters())
    return int(params * _CHECKPOINT_BYTES_PER_PARAM * _CHECKPOINT_MARGIN)


def create_run_dir(parent: str | Path, run_name: str) -> Path:
    """A new, empty run folder ``<parent>/<run_name>_<YYYYmmdd-HHMMSS>`` created exclusively: when another run
    took that name (runs started in the same second), ``_2``, ``_3``, ... are tried. Never a shared folder."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno or errno.EIO, f"cannot create training.checkpoint_dir {parent}: "
                         f"{write_failure_reason(exc, parent)}") from None
    base = f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 10_000):
        path = parent / (base if i == 1 else f"{base}_{i}")
        try:
            path.mkdir()  # atomic: exactly one process creates a given folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise WriteError(exc.errno or errno.EIO, f"cannot create a run folder in {parent}: "
                             f"{write_failure_reason(exc, parent)}") from None
        return path
    raise WriteError(errno.EEXIST, f"no free run folder name {base}_N in {parent}")


def prepare_run_dir(cfg: Config, variant: str, run_name: str, stored: dict[str, Any],
                    existing: Path | None = None) -> Path:
    """The run's folder, checked before the work: created exclusively (or ``existing``: a resumed run's, or one a study placed), with
    room for the checkpoints, and holding ``config.yaml`` (``stored``), whose write proves it writable.

    A failure names the folder and says "no space left" or "read-only"; a new folder is removed again.
    """
    run_dir = existing if existing is not None else create_run_dir(cfg.training.checkpoint_dir, run_name)
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)  # a folder the caller chose (a study's) may be new
        except OSError as exc:
            raise WriteError(exc.errno or errno.EIO, f"cannot create the run folder {run_dir}: "
                             f"{write_failure_reason(exc, run_dir)}") from None
        need = checkpoint_bytes(cfg, variant)
        have = sum(f.stat().st_size for f in (run_dir / "best.pt", run_dir / "last.pt") if f.is_file())
        free = shutil.disk_usage(run_dir).free
        if free + have < need:
            raise WriteError(errno.ENOSPC, (
                f"not enough space for the checkpoints in {run_dir}: {_mb(free)} free, about {_mb(need - have)} "
                f"needed (best.pt + last.pt of a {cfg.model(variant).model_size} model with optimiser state); "
                "no space left for this run: free some or set training.checkpoint_dir"))
        dump_yaml(stored, run_dir / "config.yaml")
    except BaseException:
        if existing is None:
            _remove_if_unused(run_dir)
        raise
    return run_dir


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e10 else f"{n / 1e9:,.1f} GB"


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds no checkpoint and no tracking buffer (only ``config.yaml``)."""
    from ls.engine.tracking import BUFFER_FOLDER

    try:
        if not any(run_dir.glob("*.pt")) and not (run_dir / BUFFER_FOLDER).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
    except OSError:
        pass


def default_run_name(cfg: Config, variant: str, fold: int | None = None) -> str:
    name = f"{variant}_{cfg.training.epochs}ep_{cfg.training.selection}_seed{cfg.seed}"
    return name + (f"_fold{fold}" if fold is not None else "")


def _tags(cfg: Config, variant: str, fold: int | None) -> dict[str, str]:
    import ls

    tags = {
        "variant": variant,
        "ls_version": ls.__version__,
        "selection": cfg.training.selection,
        "seed": str(cfg.seed),
    }
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    if fold is not None:
        tags["fold"] = str(fold)
    if cfg.translation.notes:  # the run's config was written for the original implementation
        tags["config_translation"] = cfg.translation.summary()[:5000]  # MLflow's tag limit
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# =================================================================================================
# Artifacts
# =================================================================================================
def log_run_artifacts(tracker: Any, trainer: Trainer, result: FitResult, cfg: Config, variant: str,
                      extra_groups: dict[str, list[str]] | None = None, fold: int | None = None) -> None:
    """Resolved config, best checkpoint, confusion matrix, training curves, test predictions and ``run.json``
    (what ``ls.report`` reads: variant, seed, selection, fold, test metrics)."""
    run_dir = Path(result.run_dir or trainer.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    dump_yaml(stored_config(cfg), config_path)  # without credentials
    tracker.log_artifact(config_path)
    if (run_dir / "best.pt").exists():
        tracker.log_artifact(run_dir / "best.pt", "checkpoints")
    if result.test is None:
        return
    names = list(trainer.output_mode.class_names)
    preds_path = run_dir / "test_predictions.csv"
    write_predictions_csv(preds_path, result.test, trainer.output_mode, names, trainer.group_names, extra_groups)
    tracker.log_artifact(preds_path)
    summary_path = run_dir / "run.json"
    atomic_write_text(summary_path, json.dumps(run_summary(cfg, variant, result, names, trainer.group_names,
                                                           getattr(tracker, "run_id", None), fold), indent=2) + "\n")
    tracker.log_artifact(summary_path)
    for path in run_figures(result, names, run_dir, say=trainer._say, model_name=get_variant(variant).display_name):
        tracker.log_artifact(path, "figures")


def run_summary(cfg: Config, variant: str, result: FitResult, class_names: Sequence[str],
                group_names: dict[str, list[str]], run_id: str | None, fold: int | None = None) -> dict[str, Any]:
    """``run.json`` of a finished run: what it was and how it did on test. ``fold`` (k-fold runs) pairs the
    runs of two variants in ``ls.report`` together with the seed, as the MLflow tag ``fold`` does."""
    test = result.test
    metrics = {k: float(v) for k, v in (test.metrics.items() if test is not None else [])}
    if test is not None:
        metrics["loss"] = float(test.loss)
    return {
        "variant": variant,
        "display_name": get_variant(variant).display_name,
        "seed": cfg.seed,
        "selection": cfg.training.selection,
        "epochs": cfg.training.epochs,
        "best_epoch": result.best_epoch,
        "run_id": run_id,
        "fold": fold,
        "class_names": list(class_names),
        "factors": list(group_names),
        "test": metrics,
    }


def run_figures(result: FitResult, class_names: Sequence[str], run_dir: Path, say: Any = print,
                model_name: str | None = None) -> list[Path]:
    """Test confusion matrix and training curves of a finished run (``ls.viz.performance``, PNG + PDF) in
    ``run_dir``: ``confusion_matrix.*`` and, with at least two epochs, ``training_curves.*``.

    Figures never fail a finished run: a problem drawing them is reported through ``say`` and skipped.
    """
    try:
        from ls.engine.metrics import confusion_matrix
        from ls.viz import performance
    except ImportError as exc:  # matplotlib is a dependency, but figures must never fail a finished run
        say(f"figures skipped: {exc}")
        return []
    paths: list[Path] = []
    test = result.test
    if test is not None:
        m = test.metrics
        cm = confusion_matrix(test.y_true, test.pred, len(class_names))
        title = (f"{model_name + ', ' if model_name else ''}test (best epoch {result.best_epoch}): Sp {100 * m.get('specificity', np.nan):.1f}, "
                 f"Se {100 * m.get('sensitivity', np.nan):.1f}, Score {100 * m.get('icbhi_score', np.nan):.1f}")
        paths += performance.plot_confusion_matrix(cm, class_names, run_dir, "confusion_matrix", title)
    if len(result.history) >= 2:
        try:
            paths += performance.plot_training_curves(result.history, run_dir, "training_curves",
                                                      model_name=model_name, best_epoch=result.best_epoch)
        except ValueError as exc:  # a history without loss/score series
            say(f"training curves skipped: {exc}")
    else:
        say(f"training curves skipped: {len(result.history)} epoch(s), a curve needs at least 2")
    return paths


def write_predictions_csv(path: Path, test: Any, mode: Any, class_names: Sequence[str],
                          group_names: dict[str, list[str]] | None = None,
                          extra_groups: dict[str, list[str]] | None = None) -> Path:
    """One row per test cycle (``ls.evaluate.predictions_table``: file, cycle, patient, each metadata factor,
    true and predicted class, probabilities; ``extra_groups`` such as the dataset's split after the patient),
    so both CSVs mean the same thing."""
    from ls.inference import predictions_table

    table = predictions_table(test.outputs, test.y_true, test.pred, test.probs, mode, class_names,
                              dict(group_names or {}))
    for name, values in (extra_groups or {}).items():
        table.insert(3, name, values)
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6f"))
    return path


# =================================================================================================
# Several runs
# =================================================================================================
def summarize(outcomes: Sequence[RunOutcome]) -> dict[str, float]:
    """Mean and (sample, ddof=1) std of every test metric over runs: ``{"<k>_mean", "<k>_std"}``."""
    keys = sorted(set.intersection(*(set(o.test_metrics) for o in outcomes))) if outcomes else []
    out: dict[str, float] = {"n_runs": float(len(outcomes))}
    for k in keys:
        vals = np.array([o.test_metrics[k] for o in outcomes], dtype=np.float64)
        out[f"{k}_mean"] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def run_seeds(cfg: Config, variant: str, seeds: Sequence[int], parent: Tracker | NullTracker,
              ctx: DistContext, progress: bool | None = None,
              outcomes: list[RunOutcome] | None = None) -> dict[str, float]:
    """One nested run per seed under an open parent run; logs and returns the summary. ``outcomes``: a list
    that receives each member's :class:`RunOutcome` (its run folder, metrics, ...)."""
    outcomes = [] if outcomes is None else outcomes
    for seed in seeds:
        cfg_s = copy.deepcopy(cfg)
        cfg_s.seed = int(seed)
        outcomes.append(_train_member(cfg_s, variant, parent, ctx, None, progress, len(outcomes)))
    return _finish_group(outcomes, parent, "seed")


def run_kfold(cfg: Config, variant: str, k: int, parent: Tracker | NullTracker, ctx: DistContext,
              progress: bool | None = None, outcomes: list[RunOutcome] | None = None) -> dict[str, float]:
    """Patient-grouped k-fold on the training split: fold i validates, the rest trains; test fixed.
    ``outcomes``: as for :func:`run_seeds`."""
    if k < 2:
        raise ValueError(f"--kfold needs at least 2 folds, got {k}")
    outcomes = [] if outcomes is None else outcomes
    for i in range(k):
        outcomes.append(_train_member(cfg, variant, parent, ctx, (i, k), progress, len(outcomes)))
    return _finish_group(outcomes, parent, "fold")


class MemberInterrupted(TrainingInterrupted):
    """Ctrl-C in one member of a ``--seeds``/``--kfold`` group: which member stopped, how many finished before
    it, and how to finish it alone (``--resume`` cannot be combined with ``--seeds``/``--kfold``)."""

    def __init__(self, epoch: int, checkpoint: Path | None, member: str, flag: str, finished: int) -> None:
        super().__init__(epoch, checkpoint)
        self.member, self.flag, self.finished = member, flag, finished

    def __str__(self) -> str:
        head = f"interrupted {self.member} of the {self.flag} group ({self.finished} member(s) before it finished)"
        if self.checkpoint is None:
            return f"{head} before its first checkpoint; nothing of it to resume"
        return (f"{head} after epoch {self.epoch}; --resume {self.checkpoint} (without {self.flag}) finishes "
                f"this member alone; the members after it and the group's summary are not run")


def _member_name(seed: int, fold: tuple[int, int] | None) -> str:
    return f"seed {seed}" if fold is None else f"fold {fold[0]} (of folds 0-{fold[1] - 1})"


def _train_member(cfg: Config, variant: str, parent: Any, ctx: DistContext, fold: tuple[int, int] | None,
                  progress: bool | None, finished: int) -> RunOutcome:
    """One member of a group in a nested run of ``parent``; Ctrl-C raises :class:`MemberInterrupted`."""
    index = None if fold is None else fold[0]
    try:
        child = parent.child(default_run_name(cfg, variant, index), tags=_tags(cfg, variant, index))
        # The child run is already open (created nested under the parent): train_run must reuse it.
        return train_run(cfg, variant, tracker=_OpenRun(child), ctx=ctx, fold=fold, progress=progress, member=True)
    except KeyboardInterrupt as exc:
        stopped = exc if isinstance(exc, TrainingInterrupted) else TrainingInterrupted(0, None)
        raise MemberInterrupted(stopped.epoch, stopped.checkpoint, _member_name(cfg.seed, fold),
                                "--kfold" if fold else "--seeds", finished) from None


class _OpenRun:
    """Adapter: a tracker whose run already exists, so ``start_run`` is a no-op (nested child runs)."""

    def __init__(self, tracker: Any) -> None:
        self._t = tracker

    def start_run(self, *_: Any, **__: Any) -> str | None:
        return self._t.run_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


def _finish_group(outcomes: list[RunOutcome], parent: Any, what: str) -> dict[str, float]:
    summary = summarize(outcomes)
    parent.log_metrics({f"test/{k}": v for k, v in summary.items()})
    if getattr(parent, "run_id", None) and outcomes and outcomes[0].run_dir is not None:
        path = outcomes[0].run_dir.parent / f"summary_{parent.run_id}.json"
        atomic_write_text(path, json.dumps({"runs": [{what: getattr(o, what), "test": o.test_metrics}
                                                     for o in outcomes], "summary": summary}, indent=2))
        parent.log_artifact(path)
    print(format_summary(outcomes, summary, what))
    return summary


def format_summary(outcomes: Sequence[RunOutcome], summary: dict[str, float], what: str) -> str:
    keys = ("specificity", "sensitivity", "icbhi_score")
    lines = [f"{what:>6} | " + " | ".join(f"{k:>12}" for k in keys)]
    for o in outcomes:
        lines.append(f"{getattr(o, what)!s:>6} | " + " | ".join(f"{100 * o.test_metrics.get(k, np.nan):12.2f}"
                                                               for k in keys))
    lines.append(f"{'mean':>6} | " + " | ".join(
        f"{100 * summary.get(f'{k}_mean', np.nan):6.2f} ±{100 * summary.get(f'{k}_std', np.nan):4.2f}" for k in keys))
    return "\n".join(lines)


# =================================================================================================
# Command line
# =================================================================================================
def build_parser(variant: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=get_variant(variant).script or variant,
        description=f"Train the {get_variant(variant).display_name} ({variant}) variant (ls library).",
    )
    p.add_argument("--config", required=True, help="YAML run config (e.g. configs/ast_film_soft_config.yaml)")
    p.add_argument("--mlflow-config", default=None,
                   help="flat YAML with tracking_uri, experiment_name, tracking_username, tracking_password "
                        "(default: MLFLOW_* environment variables, else sqlite:///mlflow.db)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--resume", default=None, metavar="PATH", help="continue an interrupted run from its last.pt")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="one nested run per seed plus a mean/std summary, e.g. --seeds 42 43 44 45 46")
    p.add_argument("--kfold", type=int, default=None, metavar="K",
                   help="patient k-fold on the training split (official test fixed), one nested run per fold")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--strict-config", action="store_true",
                   help="accept only ls keys: a config in the original implementation's format is an error instead "
                        "of being translated with a warning (docs/original_configs.md)")
    add_traceback_option(p)
    return p


def main(variant: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of the root scripts: parse arguments, train, return an exit code.

    Every user-facing problem is one ``error:`` line on stderr and exit code 2 (``--traceback`` or
    ``LS_TRACEBACK=1`` adds the traceback); Ctrl-C says from where ``--resume`` continues and exits 130.
    """
    variant = canonical_variant(variant)
    args = build_parser(variant).parse_args(argv)
    with plain_warnings():
        return _main(variant, args)


def _main(variant: str, args: argparse.Namespace) -> int:
    if args.resume and (args.seeds or args.kfold):
        return fail("--resume continues one run; it cannot be combined with --seeds or --kfold")
    if args.seeds and args.kfold:
        return fail("choose one of --seeds and --kfold")
    if args.kfold is not None and args.kfold < 2:
        return fail(f"--kfold needs at least 2 folds, got {args.kfold}")
    from ls.config import ConfigError

    try:
        cfg = _load_run_config(args)
        try:
            cfg.model(variant)  # a missing block for this variant fails now
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: {exc}") from exc
        return _run_cli(variant, args, cfg)
    except KeyboardInterrupt as exc:
        if _is_rank0():  # under torchrun every rank gets the Ctrl-C; one line says it
            text = str(exc) if isinstance(exc, TrainingInterrupted) else (
                "interrupted before training started; nothing to resume")
            print(text, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - bad input of any layer: one clear line (ls.utils.cli)
        return report_error(exc, args)


def _is_rank0() -> bool:
    """Rank 0 of a torchrun job, or a plain process (torchrun sets RANK for every rank)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _load_run_config(args: argparse.Namespace) -> Config:
    """The run's config; a file in the original implementation's format is translated, and the one warning
    saying how is printed once per run (by rank 0 under torchrun), or is an error under --strict-config."""
    import warnings

    from ls.config import OriginalConfigWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OriginalConfigWarning)
        cfg = load_config(args.config, overrides=args.overrides, strict=args.strict_config or None)
    if cfg.translation.notes and _is_rank0():
        print(f"warning: {cfg.translation.report()}", file=sys.stderr, flush=True)
    return cfg


def _run_cli(variant: str, args: argparse.Namespace, cfg: Config) -> int:
    ctx = init_distributed(resolve_device(cfg.training.device).type)
    members: list[RunOutcome] = []
    finished = False
    library_log = logging.getLogger("ls")
    log_level = library_log.level
    if not ctx.is_main:  # every rank reads the same data: its warnings are said once, by rank 0
        library_log.setLevel(logging.ERROR)
    try:
        # Rank 0 checks the tracking backend before any data is built: a bad URI/credentials fail fast.
        tracker = build_tracker(cfg.mlflow, args.mlflow_config, enabled=ctx.is_main and not args.no_tracking)
        if args.seeds or args.kfold:
            what = f"seeds{len(args.seeds)}" if args.seeds else f"{args.kfold}fold"
            tracker.set_buffer_dir(cfg.training.checkpoint_dir)  # the members' buffers go in their run folders
            tracker.start_run(f"{variant}_{cfg.training.epochs}ep_{cfg.training.selection}_{what}",
                              tags={**_tags(cfg, variant, None), "group": what})
            tracker.log_params(flatten(stored_config(cfg)))
            try:
                if args.seeds:
                    run_seeds(cfg, variant, args.seeds, tracker, ctx, outcomes=members)
                else:
                    run_kfold(cfg, variant, args.kfold, tracker, ctx, outcomes=members)
            except KeyboardInterrupt:
                tracker.end_run("KILLED")
                raise
            except BaseException:
                tracker.end_run("FAILED")
                raise
            tracker.end_run()
        else:
            outcome = train_run(cfg, variant, tracker=tracker, resume=args.resume, ctx=ctx)
            if ctx.is_main and outcome.run_dir is not None:
                print(f"checkpoints: {outcome.run_dir}")
        if ctx.is_main:
            hint = tracking_hint(tracker, [m.run_dir for m in members if m.run_dir is not None])
            if hint:
                print(hint, flush=True)
        finished = True
    finally:
        library_log.setLevel(log_level)
        cleanup_distributed(wait_for_peers=finished)
    return 0


def tracking_hint(tracker: Any, member_dirs: Sequence[str | Path] = ()) -> str | None:
    """The last line of a run: how to look at it (``tracker.open_hint()``: a URL for a server, an
    ``mlflow ui`` command for a local store), or, when records are still only in a local buffer because the
    server stayed away, the commands that upload them. ``member_dirs``: the run folders of the nested runs
    of ``--seeds``/``--kfold``; only their buffers and the tracker's own count (other runs may have left
    buffers in the same checkpoint folder: not this run's business)."""
    from ls.engine.tracking import BUFFER_FOLDER, find_buffers, replay_command

    if not isinstance(tracker, Tracker):
        return None

    def pending(folder: Path) -> bool:
        if not folder.is_dir():
            return False
        for buf in find_buffers(folder):
            try:
                if json.loads((buf / "buffer.json").read_text()).get("state") == "pending":
                    return True
            except (OSError, ValueError):
                continue
        return False

    own = tracker.buffer_path
    commands = [tracker.replay_command or replay_command(own)] if own is not None and pending(own) else []
    commands += [replay_command(Path(d)) for d in member_dirs if pending(Path(d) / BUFFER_FOLDER)]
    if commands:
        return (f"MLflow: {tracker.settings.safe_uri} stayed unreachable; the records are kept locally. "
                "Upload them when it is back with:\n" + "\n".join(f"  {c}" for c in commands))
    return (f"MLflow: {tracker.settings.safe_uri} (experiment {tracker.settings.experiment_name!r}); "
            f"{tracker.open_hint()}")


__all__ = [
    "MemberInterrupted",
    "RunOutcome",
    "build_parser",
    "check_inputs",
    "checkpoint_bytes",
    "create_run_dir",
    "default_run_name",
    "log_run_artifacts",
    "main",
    "prepare_run_dir",
    "run_figures",
    "run_kfold",
    "run_seeds",
    "run_summary",
    "scripts",
    "stored_config",
    "summarize",
    "tracking_hint",
    "train_run",
    "write_predictions_csv",
]
