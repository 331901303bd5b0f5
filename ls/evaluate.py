"""Evaluate a trained checkpoint on a split: metrics JSON and per-cycle predictions CSV.

    python -m ls.evaluate --checkpoint runs/softfilm/best.pt [--config configs/x.yaml] [--split test] [--out DIR]

The checkpoint defines the model, the output mode, the features (its ``audio`` section), the metadata encoder
and the decision thresholds chosen during training; ``--config`` only says where the data is and how to
load it (its ``dataset`` section), so a checkpoint can be evaluated on a copy of the data elsewhere. Nothing is
re-fitted or re-tuned here: evaluation on test uses exactly what training selected (``ls.inference``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ls.inference import (
    SPLITS,
    InferenceContext,
    build_split_loader,
    factor_columns,
    load_for_inference,
    predictions_table,
    run_inference,
    split_groups,
)
from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_write_text

log = logging.getLogger(__name__)


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


def evaluate_outputs(ctx: InferenceContext, out: Any, extra_groups: dict[str, list[str]] | None = None
                     ) -> EvaluationReport:
    """Metrics and the per-cycle table of one pass, with the checkpoint's stored thresholds. ``extra_groups``:
    more per-cycle groupings for the group metrics and the table (e.g. ``ls.inference.split_groups``)."""
    from ls.engine import metrics as M
    from ls.engine.predict_rules import evaluate_outputs as rules_evaluate

    mode = ctx.mode
    ev = rules_evaluate(out.logits, out.labels, mode, thresholds=ctx.thresholds)
    vocabularies = ctx.vocabularies()
    extra = dict(extra_groups or {})
    groups = M.group_metrics(ev.y_true, ev.y_pred, {**factor_columns(out, vocabularies), **extra},
                             n_classes=mode.n_classes)
    table = predictions_table(out, ev.y_true, ev.y_pred, ev.probs, mode, ctx.class_names, vocabularies)
    for name, values in extra.items():
        table.insert(3, name, values)
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
        "decision_rule": ctx.mode.decision_rule,
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


def require_data_folder(ctx: InferenceContext, config: Any = None) -> list[Path]:
    """The data folders the evaluation reads (``ls.data.check_data_folders``: for a combined dataset its
    parts'), or an error saying where each was looked for and how to point at the data (a checkpoint stores
    the folder as training was given it, often relative to where it ran)."""
    from ls.data.folders import check_data_folders

    source = f"--config {config}" if isinstance(config, (str, Path)) else f"the checkpoint {ctx.path}"
    return check_data_folders(ctx.cfg.dataset, source=source, fix=(
        "run from the folder training ran in, or pass --config with a dataset section that locates the data"))


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | Any | None = None, split: str = "test",
                        out_dir: str | Path | None = None, device: str = "auto",
                        max_batches: int | None = None) -> EvaluationReport:
    """Load, run and score ``checkpoint`` on ``split``; write the JSON/CSV when ``out_dir`` is given."""
    ctx = load_for_inference(checkpoint, config, device)
    require_data_folder(ctx, config)
    loader = build_split_loader(ctx, split)
    out = run_inference(ctx.model, loader, ctx.device, max_batches=max_batches)
    report = evaluate_outputs(ctx, out, split_groups(out, loader.dataset))
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
    p.add_argument("--compute-device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the model (not the stethoscope: that is a metadata factor)")
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only the first N batches (smoke tests)")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"

    def body() -> int:
        report = evaluate_checkpoint(args.checkpoint, args.config, args.split, out_dir, args.compute_device,
                                     args.max_batches)
        m = report.metrics
        print(f"{args.split}: {len(report.predictions)} cycles | Sp {100 * m['specificity']:.2f} | "
              f"Se {100 * m['sensitivity']:.2f} | Score {100 * m['icbhi_score']:.2f} -> {out_dir}")
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
