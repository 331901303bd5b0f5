"""Checkpoint -> model, and the data to run it on: what ``ls.evaluate``, ``ls.predict``, the figures and the
reports share.

>>> ctx = load_for_inference("checkpoints/<run>/best.pt")          # model, config, encoder, thresholds
>>> outputs = run_inference(ctx.model, build_split_loader(ctx, "test"), ctx.device)

A checkpoint fixes the model, its output mode and decision thresholds, the features (its ``audio`` section)
and the fitted metadata encoder (with the feature statistics of ``mel_norm: dataset``); a config given
alongside only says where the data is (its ``dataset`` section). Nothing is re-fitted or re-tuned here. The
inference loop itself is :func:`ls.engine.inference.run_inference`, the one the trainer evaluates with.

Checkpoints of ls 0.1 (format 1) load too: their config is upgraded to today's keys.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ls.engine.checkpoint import CheckpointError, read_checkpoint
from ls.engine.inference import InferenceOutputs, run_inference
from ls.engine.modes import OutputMode, resolve_output_mode
from ls.engine.predict_rules import probability_columns

log = logging.getLogger(__name__)

#: Dataset fields that must come from the checkpoint: they decide labels and input shape the model was trained on.
MODEL_BOUND_DATASET_FIELDS = ("task", "classes", "n_cls", "multi_label", "h", "w")
SPLITS = ("train", "val", "test")


@dataclass
class InferenceContext:
    """A trained model ready to run, with everything its checkpoint says about its inputs and outputs.

    ``cfg`` is the checkpoint's config with the ``dataset`` section of the config given at load time (if any);
    ``class_names`` are display names (``Normal, Crackle, ...``); ``thresholds`` the decision thresholds chosen
    in training (None for softmax outputs).
    """

    path: Path
    model: torch.nn.Module
    variant: str
    cfg: Any  # ls.config.Config
    checkpoint_cfg: Any  # the checkpoint's own Config
    encoder: Any  # ls.data.MetadataEncoder or None
    metadata_spec: Any  # ls.types.MetadataSpec or None
    mode: OutputMode
    class_names: list[str]
    thresholds: Any
    normalizer: Any  # ls.data.FeatureNormalizer
    device: torch.device
    state: dict = dataclasses.field(default_factory=dict, repr=False)  # the checkpoint without its weights

    def vocabularies(self) -> dict[str, list[str]]:
        """``{factor: [name by id]}`` of the metadata encoder (empty without one)."""
        return self.metadata_spec.vocabularies() if self.metadata_spec is not None else {}


def display_class_names(mode: OutputMode) -> list[str]:
    """Class names for figures and CSVs: ``Normal, Crackle, Wheeze, Both`` (indexed by class id, so label 2 is
    'Wheeze' and 3 'Both'; the reference mapped both to 'Normal': docs/fixes.md 11.2-6)."""
    return [name[:1].upper() + name[1:] for name in mode.class_names]


def _config_of(state: dict, path: Path) -> tuple[Any, dict | None]:
    """The checkpoint's ``Config`` (format 1 configs upgraded) and the feature statistics format 1 kept in it."""
    from ls.config import config_from_dict
    from ls.config.upgrade import upgrade_config_v1

    raw, stats = dict(state["config"]), None
    if state["format"] == 1:
        raw, stats = upgrade_config_v1(raw)
    # its `plugins` key is not loaded: a checkpoint never imports code (read_checkpoint checked what it needs)
    return config_from_dict(raw, source=f"config stored in {path}", load_plugins=False), stats


def load_for_inference(checkpoint: str | Path, config: str | Path | Any | None = None,
                       device: str = "auto") -> InferenceContext:
    """Load ``checkpoint`` strictly (weights must fit the variant exactly) and prepare its data config.

    Args:
        checkpoint: an ``ls`` checkpoint (``best.pt`` / ``last.pt``).
        config: a YAML path or ``Config`` supplying the ``dataset`` section; None: the checkpoint's own.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.

    Pretrained-weight files named in the stored config are not needed: the checkpoint holds the fine-tuned
    weights. Weights load with ``strict=True``: a key mismatch is an error naming the keys (the original's
    ``strict=False`` silently skipped the whole backbone: docs/fixes.md 11.2-5).
    """
    from ls.config import load_config
    from ls.data.features import FeatureNormalizer
    from ls.data.metadata import MetadataEncoder
    from ls.engine.trainer import resolve_device
    from ls.types import MetadataSpec

    path = Path(checkpoint)
    dev = resolve_device(device)
    state = read_checkpoint(path, map_location=dev)
    from ls.models import build_model  # timm and torchvision: only once the checkpoint is known to be good

    cfg, legacy_stats = _config_of(state, path)
    model_cfg = cfg.model(state["variant"])
    model_cfg.weights.source, model_cfg.weights.path = "none", None
    spec = MetadataSpec.from_dict(state["metadata_spec"]) if state["metadata_spec"] else None
    model = build_model(model_cfg, spec)
    result = model.load_state_dict(state["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"weights in {path} do not fit variant {state['variant']!r}: missing "
                              f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.to(dev).eval()
    encoder = None
    if state["metadata_encoder"]:
        encoder = MetadataEncoder.from_state_dict(state["metadata_encoder"], feature_stats=legacy_stats)
    mode = (OutputMode.from_dict(state["output_mode"]) if state.get("output_mode")
            else resolve_output_mode(cfg.dataset.n_cls, cfg.dataset.multi_label, cfg.training.loss))
    data_cfg = load_config(config) if isinstance(config, (str, Path)) else config
    merged = merge_data_config(cfg, data_cfg)
    normalizer = FeatureNormalizer.from_config(cfg.audio, encoder.feature_stats if encoder else None)
    return InferenceContext(
        path=path, model=model, variant=state["variant"], cfg=merged, checkpoint_cfg=cfg, encoder=encoder,
        metadata_spec=spec, mode=mode, class_names=display_class_names(mode),
        thresholds=state["thresholds"] if mode.uses_thresholds else None, normalizer=normalizer, device=dev,
        state={k: v for k, v in state.items() if k != "model"},
    )


def merge_data_config(ckpt_cfg: Any, data_cfg: Any | None) -> Any:
    """The config to build evaluation data with: the checkpoint's config, with the ``dataset`` section of
    ``data_cfg`` (data location, split strategy, batch sizes, cache) when given.

    The task (``task``, ``classes``, ``n_cls``, ``multi_label``), ``h`` and ``w`` always stay the checkpoint's
    (they fix the classes and the input shape the weights expect); a different value in ``data_cfg`` is reported
    and ignored. The data may be another dataset than the training one (e.g. an ICBHI model on SPRSound) when it
    can give the checkpoint's task (``ls.data.tasks``); otherwise ValueError says which tasks it gives.
    """
    if data_cfg is None:
        return ckpt_cfg
    fixed = {}
    for name in MODEL_BOUND_DATASET_FIELDS:
        want, got = getattr(ckpt_cfg.dataset, name), getattr(data_cfg.dataset, name)
        if want != got:
            log.warning("dataset.%s = %r in --config ignored: the checkpoint was trained with %r", name, got, want)
        fixed[name] = want
    try:
        dataset = dataclasses.replace(data_cfg.dataset, **fixed)  # re-checks the task against this dataset
    except ValueError as exc:
        raise ValueError(f"the checkpoint's task {ckpt_cfg.dataset.task!r} cannot be evaluated on this "
                         f"{data_cfg.dataset.name} dataset: {exc}") from None
    return dataclasses.replace(ckpt_cfg, dataset=dataset)


def build_split_loader(ctx: InferenceContext, split: str) -> Any:
    """A non-shuffled loader over ``split`` encoded with the *checkpoint's* metadata encoder (never re-fitted).

    Raises ``ValueError`` when the split is empty or absent (e.g. ``val`` with ``dataset.val_fraction: 0``).
    """
    from torch.utils.data import DataLoader

    from ls.data import build_datasets
    from ls.data.dataset import loader_options, resolve_num_workers, warn_shared_memory

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    cfg = copy.deepcopy(ctx.cfg)
    cfg.audio.raw_augment = False  # the training split is evaluated as it is, never augmented
    datasets = build_datasets(cfg, encoder=ctx.encoder)
    dataset = getattr(datasets, split)
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"split {split!r} is empty for the data in {ctx.cfg.dataset.data_folder}")
    batch = ctx.cfg.dataset.eval_batch_size or ctx.cfg.dataset.batch_size
    workers = resolve_num_workers(ctx.cfg.dataset.num_workers, ctx.device.type, evaluation=True)
    # as the training run's evaluation loaders: pinned on a GPU, workers fitted to the shared memory
    options, note = loader_options(ctx.cfg.dataset, ctx.device.type, workers, batch)
    warn_shared_memory([f"evaluation: {note}"] if note else [])
    return DataLoader(dataset, batch_size=batch, shuffle=False, **options)


# -- per-cycle tables ------------------------------------------------------------------------------------------
def names_of(ids: np.ndarray, vocab: Sequence[str] | None) -> list[str]:
    """Vocabulary names of metadata ids (the id itself as text when there is no vocabulary or it is out of range)."""
    if not vocab:
        return [str(int(i)) for i in ids]
    return [vocab[int(i)] if 0 <= int(i) < len(vocab) else str(int(i)) for i in ids]


def factor_columns(out: Any, vocabularies: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{factor: [value name per cycle]}`` of the categorical metadata of a pass (e.g. device, site)."""
    return {factor: names_of(ids, vocabularies.get(factor)) for factor, ids in out.meta.items()}


def split_groups(out: Any, dataset: Any) -> dict[str, list[str]]:
    """``{"split": [the dataset's own split name per cycle]}`` when the evaluated set gathers several of them
    (SPRSound's test: ``test_inter`` and ``test_intra``), for metrics per split; ``{}`` otherwise.
    ``dataset``: the ``CycleDataset`` the outputs come from."""
    table = getattr(dataset, "table", None)
    if table is None or "Split" not in table.columns or table["Split"].nunique() < 2:
        return {}
    split_of = dict(zip(table["Filename"].astype(str), table["Split"].astype(str)))
    return {"split": [split_of[str(name)] for name in out.filename]}


def predictions_table(out: Any, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, mode: Any,
                      class_names: Sequence[str], vocabularies: dict[str, list[str]]) -> pd.DataFrame:
    """One row per cycle: ``filename, cycle_index, patient``, one column per metadata factor, ``true, pred``
    (class names), ``correct`` and the probability columns (:func:`probability_columns`). The same table is
    written by training runs (``test_predictions.csv``) and by ``ls.evaluate``."""
    table = pd.DataFrame({
        "filename": out.filename, "cycle_index": np.asarray(out.cycle_index, dtype=np.int64),
        "patient": np.asarray(out.pid).astype(str),
        **factor_columns(out, vocabularies),
        "true": [class_names[c] for c in y_true], "pred": [class_names[c] for c in y_pred],
        "correct": np.asarray(y_true) == np.asarray(y_pred),
    })  # fmt: skip
    for name, values in probability_columns(np.asarray(probs), mode, class_names).items():
        table[name] = values
    return table


__all__ = [
    "InferenceContext",
    "InferenceOutputs",
    "build_split_loader",
    "display_class_names",
    "factor_columns",
    "load_for_inference",
    "merge_data_config",
    "names_of",
    "predictions_table",
    "probability_columns",
    "run_inference",
    "split_groups",
]
