"""Evaluate a trained checkpoint on a split: metrics JSON and per-cycle predictions CSV.

    python -m ls.evaluate --checkpoint runs/softfilm/best.pt [--config configs/x.yaml] [--split test] [--out DIR]

The checkpoint defines the model, the output mode, the features (its ``audio`` section), the metadata encoder
and the decision thresholds chosen during training; ``--config`` only says where the data is and how to
load it (its ``dataset`` section), so a checkpoint can be evaluated on a copy of the data elsewhere. Nothing is
re-fitted or re-tuned here: evaluation on test uses exactly what training selected.

The same machinery (:func:`load_for_inference`, :func:`run_inference`) feeds ``ls.viz`` (figures).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ls.types import META_KEYS
from ls.utils.io import atomic_write_text

log = logging.getLogger(__name__)

#: Dataset fields that must come from the checkpoint: they decide labels and input shape the model was trained on.
MODEL_BOUND_DATASET_FIELDS = ("n_cls", "multi_label", "h", "w")

SPLITS = ("train", "val", "test")


# -- checkpoint + data -------------------------------------------------------------------------------------
def display_class_names(n_classes: int) -> list[str]:
    """Human class names for figures and CSVs: Normal, Crackle, Wheeze, Both (4) or Normal, Abnormal (2).

    Indexed by class id, so label 2 is 'Wheeze' and 3 is 'Both' (the reference mapped both to 'Normal':
    defect 11.2-6).
    """
    from ls.engine.metrics import class_names

    return [name.capitalize() for name in class_names(n_classes)]


def merge_data_config(ckpt_cfg: Any, data_cfg: Any | None) -> Any:
    """The config to build evaluation data with: the checkpoint's config, with the ``dataset`` section of
    ``data_cfg`` (data location, split strategy, batch sizes, cache) when given.

    ``n_cls``, ``multi_label``, ``h`` and ``w`` always stay the checkpoint's (they fix the labels and the
    input shape the weights expect); a different value in ``data_cfg`` is reported and ignored.
    """
    if data_cfg is None:
        return ckpt_cfg
    dataset = dataclasses.replace(data_cfg.dataset)
    for name in MODEL_BOUND_DATASET_FIELDS:
        want, got = getattr(ckpt_cfg.dataset, name), getattr(dataset, name)
        if want != got:
            log.warning("dataset.%s = %r in --config ignored: the checkpoint was trained with %r", name, got, want)
            setattr(dataset, name, want)
    return dataclasses.replace(ckpt_cfg, dataset=dataset)


@dataclass
class InferenceContext:
    """A loaded checkpoint ready to run: the model, its data config, output mode and display class names."""

    path: Path
    loaded: Any  # ls.engine.checkpoint.LoadedModel
    cfg: Any  # merged ls.config.Config
    mode: Any  # ls.engine.predict_rules.OutputMode
    class_names: list[str]
    device: torch.device

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def variant(self) -> str:
        return self.loaded.variant


def load_for_inference(checkpoint: str | Path, config: str | Path | Any | None = None,
                       device: str = "auto") -> InferenceContext:
    """Load ``checkpoint`` strictly (weights must match the variant exactly) and prepare its data config.

    Args:
        checkpoint: an ``ls`` checkpoint (``best.pt`` / ``last.pt``).
        config: a YAML path or ``Config`` supplying the ``dataset`` section; None: the checkpoint's own.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
    """
    from ls.config import load_config
    from ls.engine.checkpoint import load_model_from_checkpoint
    from ls.engine.predict_rules import output_mode
    from ls.engine.trainer import resolve_device

    path = Path(checkpoint)
    dev = resolve_device(device)
    loaded = load_model_from_checkpoint(path, map_location=dev)
    data_cfg = load_config(config) if isinstance(config, (str, Path)) else config
    cfg = merge_data_config(loaded.config, data_cfg)
    mode = output_mode(loaded.config.dataset, loaded.config.model(loaded.variant))
    return InferenceContext(path, loaded, cfg, mode, display_class_names(mode.n_classes), dev)


def build_split_loader(ctx: InferenceContext, split: str) -> Any:
    """A non-shuffled loader over ``split`` encoded with the *checkpoint's* metadata encoder (never re-fitted).

    Raises ``ValueError`` when the split is empty or absent (e.g. ``val`` with ``dataset.val_fraction: 0``).
    """
    from torch.utils.data import DataLoader

    from ls.data import build_datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    # The model must see exactly the encoding it was trained with: the checkpoint's metadata encoder and
    # feature statistics, never ones re-fitted on the data at hand (which may be other data or another split).
    cfg = copy.deepcopy(ctx.cfg)
    cfg.audio.raw_augment = False  # the training split is evaluated as it is, never augmented
    datasets = build_datasets(cfg, encoder=ctx.loaded.encoder)
    dataset = getattr(datasets, split)
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"split {split!r} is empty for the data in {ctx.cfg.dataset.data_folder}")
    batch = ctx.cfg.dataset.eval_batch_size or ctx.cfg.dataset.batch_size
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=ctx.cfg.dataset.num_workers)


# -- inference ---------------------------------------------------------------------------------------------
@dataclass
class InferenceOutputs:
    """Per-cycle outputs of one pass (``N`` cycles, loader order).

    ``logits [N, label_dim]``, ``labels [N]`` or ``[N, 2]``, ``device``/``site`` ids ``[N]``, ``filename``,
    ``cycle_index``, ``pid`` ``[N]``; with ``collect_info``: ``embedding [N, D]``, ``film`` (``{key: {layer:
    [N]}}`` per-cycle means of FiLM parameters) and ``masks`` (``{"shared"|"layer_<l>": {"dev","site","rest":
    [D]}}``, input-independent, from the first batch).
    """

    logits: np.ndarray
    labels: np.ndarray
    device: np.ndarray
    site: np.ndarray
    filename: np.ndarray
    cycle_index: np.ndarray
    pid: np.ndarray
    embedding: np.ndarray | None = None
    film: dict | None = None
    masks: dict | None = None
    extra: dict = field(default_factory=dict)


@torch.inference_mode()
def run_inference(model: torch.nn.Module, loader: Any, device: torch.device | str = "cpu",
                  max_batches: int | None = None, collect_info: bool = False) -> InferenceOutputs:
    """Run ``model`` (eval mode, no autocast) over ``loader``; optionally collect ``forward(return_info=True)``."""
    from ls.viz.film import concat_summaries, summarise_film_info

    model.eval()
    dev = torch.device(device)
    parts: dict[str, list] = {k: [] for k in ("logits", "labels", "device", "site", "filename", "cycle_index",
                                               "pid", "embedding")}
    film_parts: list = []
    masks = None
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        spec = batch["spec"].to(dev)
        meta = {k: batch[k].to(dev) for k in META_KEYS}
        if collect_info:
            logits, info = model(spec, meta, return_info=True)
            parts["embedding"].append(info["embedding"].float().cpu().numpy())
            try:
                film_parts.append(summarise_film_info(info))
            except ValueError:  # no FiLM parameters in this variant
                pass
            if masks is None and info.get("masks"):
                masks = {key: {k: v.detach().float().cpu().numpy() for k, v in m.items()}
                         for key, m in info["masks"].items()}
        else:
            logits = model(spec, meta)
        parts["logits"].append(logits.float().cpu().numpy())
        parts["labels"].append(np.asarray(batch["label"]))
        parts["device"].append(np.asarray(batch["device"]))
        parts["site"].append(np.asarray(batch["site"]))
        parts["filename"].append(np.asarray(batch["filename"], dtype=object))
        parts["cycle_index"].append(np.asarray(batch["cycle_index"]))
        parts["pid"].append(np.asarray(batch["pid"]))
    if not parts["logits"]:
        raise ValueError("the loader yielded no batches")
    arrays = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    return InferenceOutputs(**arrays, film=concat_summaries(film_parts) if film_parts else None, masks=masks)


# -- evaluation --------------------------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    """Metrics (``ls.engine.metrics`` keys, plus ``group`` metrics per device / site) and predictions."""

    metrics: dict[str, float]
    group_metrics: dict[str, float]
    thresholds: tuple[float, ...]
    predictions: pd.DataFrame
    confusion: np.ndarray
    class_names: list[str]


def names_of(ids: np.ndarray, vocab: Sequence[str] | None) -> list[str]:
    """Vocabulary names of metadata ids (the id itself as text when there is no vocabulary or it is out of range)."""
    if not vocab:
        return [str(int(i)) for i in ids]
    return [vocab[int(i)] if 0 <= int(i) < len(vocab) else str(int(i)) for i in ids]


def probability_columns(probs: np.ndarray, mode: Any, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-cycle probability columns: ``p_<class>`` for every class and, for sigmoid outputs, the raw
    outputs the thresholds apply to (``sigmoid_crackle``/``sigmoid_wheeze``; binary: ``sigmoid_abnormal``).

    Multilabel composite class probabilities assume independent crackle/wheeze bits
    (``ls.engine.predict_rules.class_probabilities``).
    """
    from ls.engine.predict_rules import class_probabilities

    cols = {f"p_{name.lower()}": col for name, col in zip(class_names, class_probabilities(probs, mode).T)}
    if mode.kind == "multilabel":
        cols["sigmoid_crackle"], cols["sigmoid_wheeze"] = probs[:, 0], probs[:, 1]
    elif mode.kind == "binary":
        cols["sigmoid_abnormal"] = probs
    return cols


def evaluate_outputs(ctx: InferenceContext, out: InferenceOutputs) -> EvaluationReport:
    """Metrics and the per-cycle table of one pass, with the checkpoint's stored thresholds."""
    from ls.engine import metrics as M
    from ls.engine.predict_rules import evaluate_outputs as rules_evaluate

    mode = ctx.mode
    thresholds = ctx.loaded.thresholds if mode.uses_thresholds else None
    ev = rules_evaluate(out.logits, out.labels, mode, thresholds=thresholds)
    spec = ctx.loaded.metadata_spec
    devices = names_of(out.device, spec.device_names if spec else None)
    sites = names_of(out.site, spec.site_names if spec else None)
    groups = M.group_metrics(ev.y_true, ev.y_pred, {"device": devices, "site": sites}, n_classes=mode.n_classes)

    table = pd.DataFrame({
        "filename": out.filename, "cycle_index": out.cycle_index.astype(np.int64), "pid": out.pid.astype(np.int64),
        "device": devices, "site": sites,
        "true_class": [ctx.class_names[c] for c in ev.y_true], "pred_class": [ctx.class_names[c] for c in ev.y_pred],
        "correct": ev.y_true == ev.y_pred,
    })
    for name, values in probability_columns(ev.probs, mode, ctx.class_names).items():
        table[name] = values
    return EvaluationReport(
        metrics={k: float(v) for k, v in ev.metrics.items()},
        group_metrics={k: float(v) for k, v in groups.items()},
        thresholds=tuple(ev.thresholds),
        predictions=table,
        confusion=M.confusion_matrix(ev.y_true, ev.y_pred, mode.n_classes),
        class_names=ctx.class_names,
    )


def write_report(report: EvaluationReport, ctx: InferenceContext, split: str, out_dir: str | Path) -> list[Path]:
    """``<out_dir>/metrics_<split>.json`` and ``<out_dir>/predictions_<split>.csv`` (atomic writes)."""
    out_dir = Path(out_dir)
    payload = {
        "checkpoint": str(ctx.path),
        "variant": ctx.variant,
        "split": split,
        "data_folder": str(ctx.cfg.dataset.data_folder),
        "output_mode": ctx.mode.to_dict(),
        "class_names": ctx.class_names,
        "thresholds": list(report.thresholds),
        "n_cycles": len(report.predictions),
        "metrics": report.metrics,
        "group_metrics": report.group_metrics,
        "confusion_matrix": report.confusion.tolist(),
    }
    metrics_path, preds_path = out_dir / f"metrics_{split}.json", out_dir / f"predictions_{split}.csv"
    atomic_write_text(metrics_path, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(preds_path, report.predictions.to_csv(index=False, float_format="%.6f"))
    return [metrics_path, preds_path]


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | Any | None = None, split: str = "test",
                        out_dir: str | Path | None = None, device: str = "auto",
                        max_batches: int | None = None) -> EvaluationReport:
    """Load, run and score ``checkpoint`` on ``split``; write the JSON/CSV when ``out_dir`` is given."""
    ctx = load_for_inference(checkpoint, config, device)
    out = run_inference(ctx.model, build_split_loader(ctx, split), ctx.device, max_batches)
    report = evaluate_outputs(ctx, out)
    if out_dir is not None:
        write_report(report, ctx, split, out_dir)
    return report


# -- command line ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="ls checkpoint (best.pt)")
    p.add_argument("--config", help="YAML whose dataset section says where the data is (default: the checkpoint's)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only the first N batches (smoke tests)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ls.config import ConfigError
    from ls.engine.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
    try:
        report = evaluate_checkpoint(args.checkpoint, args.config, args.split, out_dir, args.device,
                                     args.max_batches)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = report.metrics
    print(f"{args.split}: {len(report.predictions)} cycles | Sp {100 * m['specificity']:.2f} | "
          f"Se {100 * m['sensitivity']:.2f} | Score {100 * m['icbhi_score']:.2f} -> {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
