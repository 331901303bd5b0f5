"""One run: inputs -> folder -> data -> model -> Trainer -> artifacts.

:func:`train_run` is the one place a model is trained from a config; every command that trains (the root
scripts, ``--seeds``/``--kfold``, a study, the quickstart, a search) gets there through
:mod:`ls.runs.executor` (the quickstart's regression fingerprint, which reads the fitted result itself, calls it
directly). What would fail late (data folder, weights file, a writable folder with room for the
checkpoints) is checked before any data is built; the run's record (:mod:`ls.runs.record`) holds everything it
logs, mirrored to MLflow when a mirror is given.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ls.config import Config, config_differences, flatten
from ls.engine.checkpoint import CheckpointError, check_resume_state, read_checkpoint
from ls.engine.distributed import DistContext, barrier
from ls.engine.tracking import NullTracker
from ls.engine.trainer import FitResult, Trainer, TrainingInterrupted, seed_everything
from ls.models.variants import canonical_variant, get_variant
from ls.runs import folder as layout
from ls.runs.mirror import Mirror
from ls.runs.protocol import protocol_card
from ls.runs.record import EventLog, RunRecord
from ls.runs.secrets import without_credentials
from ls.utils import plugins
from ls.utils.errors import LsError
from ls.utils.io import atomic_write_text
from ls.utils.trees import to_dict


class RunStopped(Exception):
    """Raised by an epoch hook to end a run on purpose before its last epoch (a search pruning a trial): its
    record ends FINISHED, not FAILED, and its folder keeps the checkpoints written so far."""


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


def stored_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as a run folder stores it (``config.yaml``, params, checkpoints, ``run.json``): a
    plain dict without credentials (:func:`ls.runs.secrets.without_credentials`). The mirror gets the
    credentials from the live settings; nothing written or logged holds them."""
    return without_credentials(to_dict(cfg))


def check_inputs(cfg: Config, variant: str) -> None:
    """The data folder(s) exist and the pretrained-weights file of ``models.<variant>`` exists, is readable and
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


def check_resumable(state: dict[str, Any], cfg: Config, variant: str, path: str | Path) -> None:
    """Raise unless ``state`` (a ``last.pt``) can continue a run of ``variant`` with ``cfg``: its format and
    variant, and every key that shapes the model, the data or the optimisation (``training.epochs`` may grow:
    a finished run continues for longer)."""
    check_resume_state(state, variant, path)
    diffs = config_differences(state["config"], to_dict(cfg), variant, ignore=("training.epochs",))
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 8 else "")
        raise CheckpointError(f"cannot resume from {path}: its config differs from this run's ({shown})")


def default_run_name(cfg: Config, variant: str, fold: int | None = None) -> str:
    name = f"{variant}_{cfg.training.epochs}ep_{cfg.training.selection}_seed{cfg.seed}"
    return name + (f"_fold{fold}" if fold is not None else "")


def run_tags(cfg: Config, variant: str, fold: int | None = None) -> dict[str, str]:
    """What a run is, as tags (what ``ls.report`` reads back from MLflow)."""
    import ls

    tags = {"variant": variant, "display_name": get_variant(variant).display_name, "ls_version": ls.__version__,
            "selection": cfg.training.selection, "seed": str(cfg.seed)}
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


def selection_metric(cfg: Config) -> str:
    """The validation metric that selects the epoch: ``training.selection_metric``, else the dataset's own
    score (``icbhi_score`` for ICBHI and manifests, ``sprsound_score`` for SPRSound)."""
    from ls.data.sources import dataset_score

    return cfg.training.selection_metric or dataset_score(cfg.dataset.name)


def say(ctx: DistContext, text: str) -> None:
    if ctx.is_main:
        print(text, flush=True)


# =================================================================================================
# One run
# =================================================================================================
class RunFolderTaken(LsError, ValueError):
    """A new run was given the folder of another."""


def train_run(
    cfg: Config,
    variant: str,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    parent: Path | None = None,
    tags: Mapping[str, str] | None = None,
    mirror: Mirror | None = None,
    ctx: DistContext | None = None,
    fold: tuple[int, int] | None = None,
    member: bool = False,
    progress: bool | None = None,
    epoch_end: Sequence[Callable[[int, dict[str, float]], None]] = (),
    evaluate_test: bool = True,
) -> RunOutcome:
    """Train one model of ``variant`` on ``cfg`` in its own folder, or continue one from its ``last.pt``.

    ``run_dir``: the folder of this run (a plan places its runs: a study's, a group's members), instead of a
    new one under ``training.checkpoint_dir``; with ``resume`` it must be the folder of that ``last.pt``.
    ``parent``: the folder of the record this run is nested under (a group, a study). ``mirror``: where the
    record is mirrored (None: local only). ``fold=(i, k)``: validation is patient fold ``i`` of ``k`` of the
    training split. ``member``: one of a ``--seeds``/``--kfold`` group; its checkpoints say which, so that a
    resume of it alone continues with its own seed and fold. ``epoch_end``: passed to the Trainer.
    ``evaluate_test=False``: the test split is never evaluated (a search's trial; ``training.monitor_test`` and
    the final test are skipped): ``run.json`` has no test metrics and no ``test_predictions.csv`` is written.

    Ctrl-C ends the record as KILLED (and raises :class:`ls.engine.trainer.TrainingInterrupted` once training
    has started, also during the test splits, figures and artifacts after it), a :class:`RunStopped` from an
    epoch hook as FINISHED, any other error as FAILED.
    """
    from ls.data import build_datasets, build_fold_datasets, build_loaders
    from ls.models import build_model

    variant = canonical_variant(variant)
    cfg.model(variant)  # a missing models.<variant> block fails before any data is built
    ctx = ctx or DistContext()
    if resume is not None and run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve().parent:
        raise ValueError(f"run_dir {run_dir} is not the folder of the checkpoint to resume ({resume})")
    given_dir = Path(resume).parent if resume is not None else (Path(run_dir) if run_dir is not None else None)
    if resume is None and given_dir is not None and layout.folder_state(given_dir) in ("finished", "resumable"):
        held = "a finished run (run.json)" if layout.folder_state(given_dir) == "finished" else \
            f"an interrupted run (continue it with resume={given_dir / layout.LAST})"
        raise RunFolderTaken(f"run folder {given_dir} already holds {held}; a new run needs a folder of its own")
    resume_state = read_checkpoint(resume) if resume is not None else None
    recorded = (resume_state or {}).get("member")
    if recorded:  # a member of a --seeds/--kfold group, resumed alone: its own seed and fold, not the group's
        cfg = copy.deepcopy(cfg)
        cfg.seed, member = int(recorded["seed"]), True
        if recorded.get("fold") is not None:
            fold = (int(recorded["fold"]), int(recorded["k"]))
        say(ctx, f"resuming {member_name(cfg.seed, fold)} of a --{'kfold' if fold else 'seeds'} group alone")
    if resume_state is not None:
        check_resumable(resume_state, cfg, variant, resume)
    index = None if fold is None else fold[0]
    run_name = default_run_name(cfg, variant, index)
    stored = stored_config(cfg)
    listing = plugins.describe_loaded()
    if listing:
        say(ctx, listing)
    record: RunRecord | None = None
    folder: Path | None = None
    fitted = False
    try:
        check_inputs(cfg, variant)
        if ctx.is_main:
            folder = given_dir if given_dir is not None else layout.create_run_dir(cfg.training.checkpoint_dir,
                                                                                    run_name)
            layout.prepare_run_dir(folder, stored, checkpoint_bytes(cfg, variant),
                                   what=f"a {cfg.model(variant).model_size} model", remove_on_failure=given_dir is None)
            record = RunRecord(folder, mirror)
            old_run = (resume_state or {}).get("mlflow_run_id")  # a run tracked before run records existed
            if mirror is not None and old_run and not EventLog(folder).exists():
                mirror.adopt(folder, old_run)
            record.start(run_name, tags={**run_tags(cfg, variant, index), **(tags or {})}, parent=parent)
            if resume is None:
                record.log_params({**flatten(stored), **plugins.params()})
        tracker = record if record is not None else NullTracker()

        seed_everything(cfg.seed)
        t0 = time.perf_counter()
        say(ctx, f"building datasets from {cfg.dataset.data_folder} ...")
        datasets = build_datasets(cfg) if fold is None else build_fold_datasets(cfg, fold[0], fold[1])
        say(ctx, f"datasets ready in {time.perf_counter() - t0:.0f} s: " + ", ".join(
            f"{name} {len(ds)} cycles" for name, ds in zip(("train", "val", "test"), datasets) if ds is not None))
        loaders = build_loaders(cfg, datasets, rank=ctx.rank, world_size=ctx.world_size)
        spec = datasets.metadata_spec
        trainer = Trainer(
            build_model(cfg.model(variant), spec),
            loaders,
            dataclasses.replace(cfg.training, selection_metric=selection_metric(cfg)),
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
                "plugins": plugins.requirements([variant], cfg.dataset.readers()),
            },
            run_dir=folder,
            group_names=spec.vocabularies() if spec is not None else None,
            ctx=ctx,
            progress=progress,
            epoch_end=epoch_end,
            evaluate_test=evaluate_test,
        )
        result = trainer.fit(resume_from=resume)
        fitted = True
        split_of = _add_split_metrics(result, loaders.test.dataset, trainer, tracker)
        if record is not None:
            write_run_artifacts(record, trainer, result, cfg, variant, datasets, split_of, index)
            record.end()
    except BaseException as exc:
        if record is not None and record.ended is None:
            record.end("KILLED" if isinstance(exc, KeyboardInterrupt) else
                       "FINISHED" if isinstance(exc, RunStopped) else "FAILED")
        if folder is not None and given_dir is None and (record is None or record.synced):
            layout.remove_if_unused(folder)  # a run that stopped before its first checkpoint leaves no folder
        finished = record is not None and record.ended == "FINISHED" and not isinstance(exc, RunStopped)
        if fitted and not finished and isinstance(exc, KeyboardInterrupt) and \
                not isinstance(exc, TrainingInterrupted):
            # Ctrl-C after training (test splits, figures, artifacts): last.pt holds the final epoch, and
            # --resume from it only finishes these steps.
            last = trainer.run_dir / layout.LAST
            raise TrainingInterrupted(trainer.saved_epoch, last if trainer.saved_epoch and last.is_file() else None) \
                from None
        raise
    barrier(ctx)
    test = dict(result.test.metrics) if result.test is not None else {}
    test["loss"] = result.test.loss if result.test is not None else float("nan")
    return RunOutcome(variant, cfg.seed, test, result.best_epoch, folder,
                      record.run_id if record is not None else None, index, result)


def member_name(seed: int, fold: tuple[int, int] | None) -> str:
    return f"seed {seed}" if fold is None else f"fold {fold[0]} (of folds 0-{fold[1] - 1})"


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


# =================================================================================================
# Artifacts
# =================================================================================================
def write_run_artifacts(record: RunRecord, trainer: Trainer, result: FitResult, cfg: Config, variant: str,
                        datasets: Any, extra_groups: dict[str, list[str]] | None = None,
                        fold: int | None = None) -> None:
    """Into the run folder, and recorded: the resolved config, best checkpoint, test predictions, ``run.json``
    (what the run was, how it did on test, its protocol card) and the figures. A run that did not evaluate the
    test split gets ``run.json`` with empty ``test`` and no protocol card, and no predictions."""
    from ls.config import dump_yaml

    folder = record.folder
    dump_yaml(stored_config(cfg), folder / layout.CONFIG_FILE)  # as resolved by building the data
    record.log_artifact(folder / layout.CONFIG_FILE)
    if (folder / layout.BEST).exists():
        record.log_artifact(folder / layout.BEST, "checkpoints")
    names = list(trainer.output_mode.class_names)
    if result.test is not None:
        predictions = folder / layout.PREDICTIONS_FILE
        write_predictions_csv(predictions, result.test, trainer.output_mode, names, trainer.group_names,
                              extra_groups)
        record.log_artifact(predictions)
    protocol = protocol_of(cfg, trainer, datasets.test, fold) if result.test is not None else None
    summary = run_summary(cfg, variant, result, names, trainer.group_names, record.run_id, fold, protocol)
    atomic_write_text(folder / layout.RUN_FILE, json.dumps(summary, indent=2) + "\n")
    record.log_artifact(folder / layout.RUN_FILE)
    for path in run_figures(result, names, folder, say=trainer._say, model_name=get_variant(variant).display_name):
        record.log_artifact(path, "figures")


def protocol_of(cfg: Config, trainer: Trainer, test_set: Any, fold: int | None) -> dict[str, Any]:
    """The run's protocol card (:func:`ls.runs.protocol.protocol_card`) from its config and test set."""
    ds = cfg.dataset
    table = getattr(test_set, "table", None)
    splits = sorted(set(table["Split"].astype(str))) if table is not None and "Split" in table else ["test"]
    return protocol_card(
        split=ds.split_strategy if fold is None else f"{ds.split_strategy}, patient fold {fold} validates",
        selection=cfg.training.selection, selection_metric=trainer.selection_metric,
        output_kind=trainer.output_mode.kind, thresholds_tuned=cfg.training.thresholds.mode == "tuned",
        dataset=ds.name, task=ds.task or "", class_names=trainer.output_mode.class_names,
        test_patients=len(set(getattr(test_set, "patients", []))), test_cycles=len(test_set),
        test_split="+".join(splits))


def run_summary(cfg: Config, variant: str, result: FitResult, class_names: Sequence[str],
                group_names: dict[str, list[str]], run_id: str | None, fold: int | None = None,
                protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    """``run.json`` of a finished run: what it was and how it did on test. ``fold`` (k-fold runs) pairs the runs
    of two variants in ``ls.report`` together with the seed, as the tag ``fold`` does."""
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
        "protocol": protocol,
        "test": metrics,
        # where a variant or reader that is not built into ls came from, and every plugin the run had loaded
        "plugins": plugins.requirements([variant], cfg.dataset.readers()),
        "loaded_plugins": [p.record() for p in plugins.loaded()],
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
        title = (f"{model_name + ', ' if model_name else ''}test (best epoch {result.best_epoch}): "
                 f"Sp {100 * m.get('specificity', np.nan):.1f}, Se {100 * m.get('sensitivity', np.nan):.1f}, "
                 f"Score {100 * m.get('icbhi_score', np.nan):.1f}")
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
    """One row per test cycle (``ls.inference.predictions_table``: file, cycle, patient, each metadata factor,
    true and predicted class, probabilities; ``extra_groups`` such as the dataset's split after the patient),
    so that the CSVs of training and of ``ls.evaluate`` mean the same thing."""
    from ls.inference import predictions_table

    table = predictions_table(test.outputs, test.y_true, test.pred, test.probs, mode, class_names,
                              dict(group_names or {}))
    for name, values in (extra_groups or {}).items():
        table.insert(3, name, values)
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6f"))
    return path


__all__ = [
    "RunFolderTaken",
    "RunOutcome",
    "RunStopped",
    "check_inputs",
    "check_resumable",
    "checkpoint_bytes",
    "default_run_name",
    "member_name",
    "protocol_of",
    "run_figures",
    "run_summary",
    "run_tags",
    "selection_metric",
    "stored_config",
    "train_run",
    "write_predictions_csv",
    "write_run_artifacts",
]
