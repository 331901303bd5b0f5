"""``visualize.py``: paper figures from trained checkpoints.

    python visualize.py --config configs/best_params_config.yaml --mask-analysis --checkpoint ckpt/softfilm.pt
    python visualize.py --config ... --tsne --baseline-ckpt ckpt/ast.pt --softfilm-ckpt ckpt/softfilm.pt
    python visualize.py --config ... --all --baseline-ckpt ckpt/ast.pt --softfilm-ckpt ckpt/softfilm.pt

``--config`` supplies the data (its ``dataset`` section); each checkpoint's own config defines its model,
features and metadata encoder, and weights load strictly (the reference loaded with ``strict=False`` and
silently kept the AudioSet backbone of the baseline: defect 11.2-5).

Figures (PNG + PDF, paper column width) go to ``--out`` (default ``figures``):

- ``--mask-analysis`` (SoftFiLM): ``mask_<set>_{heatmap,partition,overlap}`` + ``mask_<set>_stats.json`` at the
  temperature the model runs at; ``--mask-tau1`` adds the same at tau = 1 (the reference's view) for comparison.
- ``--tsne`` (baseline + conditioned model): ``tsne_comparison`` (+ JSON with silhouette scores).
- ``--film-params`` (FiLM, TAFiLM, SoftFiLM): ``film_params_by_{layer,device,site,class}``.
- ``--performance`` (every given checkpoint): ``<model>_confusion``, ``<model>_curves`` (history stored in
  the checkpoint, ``best.pt`` or ``last.pt``, else in its MLflow run), ``<model>_score_by_{device,site}``.
- ``--all``: every figure the given checkpoints allow (the default when no figure flag is given).

``--run-id`` uploads everything written to that MLflow run under ``figures/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ls.utils.telemetry  # noqa: F401 - before anything imports mlflow: it turns MLflow's telemetry off
from ls.utils.cli import add_common_options, run_command
from ls.utils.trees import to_dict

log = logging.getLogger(__name__)

FIGURES = ("mask_analysis", "tsne", "film_params", "performance")


class FigureError(ValueError):
    """A requested figure cannot be drawn from the given checkpoints (wrong variant, missing one, ...)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize.py", description="Paper figures from trained ls checkpoints.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML whose dataset section locates the data (default: each checkpoint's)")
    p.add_argument("--checkpoint", "--softfilm-ckpt", dest="checkpoint",
                   help="the metadata-conditioned model (SoftFiLM for masks; FiLM/TAFiLM/SoftFiLM for FiLM params)")
    p.add_argument("--baseline-ckpt", help="the plain AST baseline (t-SNE comparison, performance figures)")
    p.add_argument("--mask-analysis", action="store_true", help="SoftFiLM mask figures and statistics")
    p.add_argument("--mask-tau1", action="store_true", help="also draw the masks at temperature 1")
    p.add_argument("--tsne", action="store_true", help="t-SNE of pooled embeddings, baseline vs conditioned")
    p.add_argument("--film-params", action="store_true", help="FiLM gamma/beta distributions")
    p.add_argument("--performance", action="store_true",
                   help="confusion matrix, training curves, ICBHI Score per device and site, per checkpoint")
    p.add_argument("--all", action="store_true", help="every figure the given checkpoints allow")
    p.add_argument("--out", "--output-dir", dest="out", default="figures", help="output folder")
    p.add_argument("--run-id", help="MLflow run to attach the figures to (artifact folder 'figures')")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--num-batches", type=int, default=None, help="use only the first N batches of the split")
    p.add_argument("--compute-device", default="auto", choices=("auto", "cpu", "cuda"), help="where models run")
    p.add_argument("--seed", type=int, default=42, help="t-SNE seed")
    add_common_options(p)
    return p


@dataclass
class ModelRun:
    """One checkpoint loaded and run over the split."""

    name: str  # label in figures and file names
    ctx: Any  # ls.inference.InferenceContext
    outputs: Any  # ls.engine.inference.InferenceOutputs (extra: embedding, film)


def has_masks(model: Any) -> bool:
    """SoftFiLM-type models expose their soft masks (``masks()``)."""
    return hasattr(model, "masks")


def has_film(model: Any) -> bool:
    """Models that modulate transformer blocks (FiLM, TAFiLM, SoftFiLM) report gamma/beta."""
    return bool(getattr(getattr(model, "conditioning", None), "conditioned_layers", ()))


def requested_figures(args: argparse.Namespace) -> list[str]:
    """Figures asked for; ``--all`` (or no figure flag) means all of them, later narrowed to what the
    checkpoints allow."""
    chosen = [f for f in FIGURES if getattr(args, f)]
    return list(FIGURES) if args.all or not chosen else chosen


def check_request(figures: Sequence[str], explicit: bool, conditioned: Any | None, has_baseline: bool) -> list[str]:
    """The figures to draw (``conditioned``: the ``--checkpoint`` context). An explicitly requested figure that
    the checkpoints cannot give is an error saying why; under ``--all`` such figures are skipped with a note."""
    plan = []
    has_conditioned = conditioned is not None
    variant = conditioned.variant if has_conditioned else None
    for fig in figures:
        problem = None
        if fig in ("mask_analysis", "film_params", "tsne") and not has_conditioned:
            problem = f"--{fig.replace('_', '-')} needs --checkpoint (the metadata-conditioned model)"
        elif fig == "tsne" and not has_baseline:
            problem = "--tsne needs --baseline-ckpt as well as --checkpoint (the two models are compared)"
        elif fig == "mask_analysis" and not has_masks(conditioned.model):
            problem = (f"--mask-analysis needs a model with soft masks (SoftFiLM, ast_film_soft); --checkpoint is "
                       f"variant {variant!r}, which has none")
        elif fig == "film_params" and not has_film(conditioned.model):
            problem = (f"--film-params needs a model that modulates transformer blocks (FiLM, TAFiLM, SoftFiLM); "
                       f"--checkpoint is variant {variant!r}, which has no gamma/beta")
        elif fig == "performance" and not (has_conditioned or has_baseline):
            problem = "--performance needs --checkpoint and/or --baseline-ckpt"
        if problem is None:
            plan.append(fig)
        elif explicit:
            raise FigureError(problem)
        else:
            print(f"note: skipping {fig}: {problem}", file=sys.stderr)
    return plan


def _groupings(run: ModelRun) -> dict[str, list[str]]:
    """``{"Class": [...], <Factor>: [...]}`` per cycle: the class and every categorical metadata factor."""
    from ls.engine.predict_rules import target_classes
    from ls.inference import factor_columns

    y = target_classes(run.outputs.labels, run.ctx.mode)
    groups = {"Class": [run.ctx.class_names[c] for c in y]}
    for factor, values in factor_columns(run.outputs, run.ctx.vocabularies()).items():
        groups[factor_label(factor)] = values
    return groups


def factor_label(factor: str) -> str:
    """Display name of a metadata factor (``device`` -> ``Device``)."""
    return factor.replace("_", " ").capitalize()


def _model_name(ctx: Any, taken: Sequence[str]) -> str:
    from ls.models.variants import display_name

    name = display_name(ctx.variant)
    return name if name not in taken else f"{name} ({Path(ctx.path).stem})"


# -- figures ----------------------------------------------------------------------------------------------
def mask_figures(run: ModelRun, out_dir: Path, tau1: bool) -> list[Path]:
    """Mask figures of every mask set at the model's temperature (and at tau = 1 when asked)."""
    from ls.viz.masks import mask_analysis

    model = run.ctx.model
    tau = float(model.mask_stats()["temperature"])
    paths: list[Path] = []
    views = [(tau, "")] + ([(1.0, "_tau1")] if tau1 else [])
    for temperature, suffix in views:
        model.set_mask_temperature(temperature)
        try:
            mask_sets = {key: {k: v.detach().cpu().numpy() for k, v in m.items()} for key, m in model.masks().items()}
        finally:
            model.set_mask_temperature(tau)  # the model keeps running at its trained temperature
        for key, masks in mask_sets.items():
            result = mask_analysis(masks, out_dir, prefix=f"mask_{key}{suffix}", temperature=temperature,
                                   model_name=f"{run.name} ({key.replace('_', ' ')})")
            s = result["stats"]
            overlaps = ", ".join(f"{k} {100 * v:.1f}% (chance {100 * s['overlap_chance'][k]:.1f}%)"
                                 for k, v in s["overlap"].items())
            print(f"masks {key} at tau={temperature:.3g}: active {s['active']} of {s['dim']}, coverage "
                  f"{100 * s['coverage']:.1f}%, soft overlap {overlaps}")
            paths += result["paths"]
    return paths


def tsne_figure(baseline: ModelRun, conditioned: ModelRun, out_dir: Path, seed: int) -> list[Path]:
    """Baseline vs conditioned t-SNE on the cycles both runs saw (matched by file and cycle index)."""
    from ls.viz.tsne import plot_tsne_comparison

    def keys(run: ModelRun) -> list[tuple[str, int]]:
        return list(zip(run.outputs.filename.tolist(), run.outputs.cycle_index.tolist()))

    common = sorted(set(keys(baseline)) & set(keys(conditioned)))
    if len(common) < 2:
        raise FigureError("the two checkpoints share fewer than 2 evaluated cycles; pass the same --config")
    pos = {run.name: {k: i for i, k in enumerate(keys(run))} for run in (baseline, conditioned)}
    idx = {name: np.array([p[k] for k in common]) for name, p in pos.items()}
    embeddings = {run.name: run.outputs.extra["embedding"][idx[run.name]] for run in (baseline, conditioned)}
    groups = {g: [v[i] for i in idx[conditioned.name]] for g, v in _groupings(conditioned).items()}
    result = plot_tsne_comparison(embeddings, groups, out_dir, "tsne_comparison", seed=seed)
    for model, sil in result["silhouette"].items():
        shown = ", ".join(f"{g} {'n/a' if v is None else f'{v:+.3f}'}" for g, v in sil.items())
        print(f"t-SNE {model}: cosine silhouette of {shown}")
    return result["paths"]


def film_figures(run: ModelRun, out_dir: Path) -> list[Path]:
    from ls.viz.film import film_params_figures

    film = run.outputs.extra.get("film")
    if not film:
        raise FigureError(f"{run.ctx.path}: the model reported no FiLM parameters")
    return film_params_figures(film, _groupings(run), out_dir, prefix="film_params", model_name=run.name)


def training_history(ctx: Any) -> list[dict] | dict | None:
    """Per-epoch history stored in the checkpoint (``best.pt`` and ``last.pt`` both carry it), else the one in
    the MLflow run the checkpoint names. None when neither is available."""
    from ls.engine.checkpoint import read_checkpoint

    state = read_checkpoint(ctx.path)
    history = (state.get("trainer") or {}).get("history")
    if history:
        return history
    run_id = state.get("mlflow_run_id")
    if run_id:
        from ls.runs.mirror import resolve_settings
        from ls.viz.performance import history_from_mlflow

        try:
            return history_from_mlflow(run_id, resolve_settings(to_dict(ctx.cfg.mlflow)).tracking_uri)
        except Exception as exc:  # noqa: BLE001 - a missing/unreachable run only costs this one figure
            print(f"note: no training curves for {ctx.path}: MLflow run {run_id} unavailable ({exc})",
                  file=sys.stderr)
    return None


def performance_figures(run: ModelRun, out_dir: Path) -> list[Path]:
    """Confusion matrix, training curves and ICBHI Score per device and site of one checkpoint."""
    from ls.evaluate import evaluate_outputs
    from ls.viz.performance import (
        group_scores,
        plot_confusion_matrix,
        plot_group_scores,
        plot_training_curves,
    )

    stem = run.name.lower().replace(" ", "_").replace("(", "").replace(")", "").replace("-", "_")
    report = evaluate_outputs(run.ctx, run.outputs)
    m = report.metrics
    title = f"{run.name}: Sp {100 * m['specificity']:.1f}, Se {100 * m['sensitivity']:.1f}, " \
            f"Score {100 * m['icbhi_score']:.1f}"
    paths = plot_confusion_matrix(report.confusion, report.class_names, out_dir, f"{stem}_confusion", title)
    for factor in run.outputs.meta:
        scores = group_scores(report.group_metrics, factor)
        paths += plot_group_scores(scores, factor_label(factor), out_dir, f"{stem}_score_by_{factor}",
                                   f"{run.name}: ICBHI metrics per {factor_label(factor).lower()}")
    history = training_history(run.ctx)
    if history:
        try:
            paths += plot_training_curves(history, out_dir, f"{stem}_curves", model_name=run.name,
                                          best_epoch=run.ctx.state.get("best_epoch"))
        except ValueError:  # e.g. a one-epoch run: a curve needs two points
            print(f"note: the training history in {run.ctx.path} has no multi-epoch series: curves skipped",
                  file=sys.stderr)
    else:
        print(f"note: no training history in {run.ctx.path} (nor an MLflow run): curves skipped",
              file=sys.stderr)
    print(f"{run.name}: {title.split(': ', 1)[1]} on {len(report.predictions)} cycles")
    return paths


def attach_to_run(paths: Sequence[Path], run_id: str, cfg: Any) -> None:
    """Upload ``paths`` to MLflow run ``run_id`` under ``figures/`` (the store and its credentials as a run
    resolves them)."""
    from ls.runs.mirror import client_for, credentials_for, resolve_settings

    mlflow = getattr(cfg, "mlflow", None)
    settings = resolve_settings(None if mlflow is None else to_dict(mlflow))
    with credentials_for(settings):
        client = client_for(settings)
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path="figures")


# -- entry point ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> list[Path]:
    """Draw the requested figures; returns the written files."""
    from ls.evaluate import require_data_folder
    from ls.inference import build_split_loader, load_for_inference, run_inference
    from ls.viz.film import summarise_film_info

    figures = requested_figures(args)
    explicit = not args.all and any(getattr(args, f) for f in FIGURES)
    contexts = {}
    if args.checkpoint:
        contexts["conditioned"] = load_for_inference(args.checkpoint, args.config, args.compute_device)
    if args.baseline_ckpt:
        contexts["baseline"] = load_for_inference(args.baseline_ckpt, args.config, args.compute_device)
        if contexts["baseline"].variant != "ast":
            print(f"note: --baseline-ckpt is variant {contexts['baseline'].variant!r}, not the plain AST",
                  file=sys.stderr)
    plan = check_request(figures, explicit, contexts.get("conditioned"), "baseline" in contexts)
    if not plan:
        raise FigureError("nothing to draw with the given checkpoints")
    for ctx in contexts.values():
        require_data_folder(ctx, args.config)

    def keep(info: Any, batch: Any) -> dict[str, Any]:
        kept = {"embedding": info["embedding"]}
        if any(k.startswith(("gamma", "beta")) for k in info):
            kept["film"] = summarise_film_info(info)
        return kept

    runs: dict[str, ModelRun] = {}
    for role, ctx in contexts.items():
        loader = build_split_loader(ctx, args.split)
        outputs = run_inference(ctx.model, loader, ctx.device, max_batches=args.num_batches, info_fn=keep)
        runs[role] = ModelRun(_model_name(ctx, [r.name for r in runs.values()]), ctx, outputs)

    out_dir = Path(args.out)
    paths: list[Path] = []
    if "mask_analysis" in plan:
        paths += mask_figures(runs["conditioned"], out_dir, args.mask_tau1)
    if "tsne" in plan:
        paths += tsne_figure(runs["baseline"], runs["conditioned"], out_dir, args.seed)
    if "film_params" in plan:
        if explicit or runs["conditioned"].outputs.extra.get("film"):
            paths += film_figures(runs["conditioned"], out_dir)
        else:  # a mechanism that modulates blocks in another way than gamma/beta (e.g. a plugin's)
            print(f"note: skipping film_params: variant {runs['conditioned'].ctx.variant!r} reports no gamma/beta",
                  file=sys.stderr)
    if "performance" in plan:
        for r in runs.values():
            paths += performance_figures(r, out_dir)
    if args.run_id:
        attach_to_run(paths, args.run_id, next(iter(contexts.values())).cfg)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``visualize.py``; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_batches is not None and args.num_batches < 1:
        parser.error(f"--num-batches must be at least 1, got {args.num_batches}")
    if not (args.checkpoint or args.baseline_ckpt):
        parser.error("give --checkpoint (alias --softfilm-ckpt) and/or --baseline-ckpt")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        paths = run(args)
        print(f"wrote {len(paths)} files to {args.out}")
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
