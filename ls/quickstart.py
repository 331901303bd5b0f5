"""Quickstart: synthetic ICBHI-format data -> SoftFiLM and the AST baseline (tiny, CPU) -> side-by-side results.

    python -m ls.quickstart [--out runs/quickstart] [--recordings N] [--seed S] [--epochs E] [--no-tracking]

Generates a small synthetic folder in the official ICBHI layout (``ls.data.synthetic``), trains both models
with ``configs/quickstart.yaml`` (tiny224 backbone, random init, 16 mel x 128 frames), logs both runs to
MLflow (``sqlite:///mlflow.db`` in the working directory unless MLFLOW_TRACKING_URI says otherwise), prints
their test metrics side by side and how to open them. The numbers are a smoke test of the pipeline on
synthetic audio, not results.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ls.config import load_config
from ls.engine.tracking import build_tracker
from ls.train import train_run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
VARIANTS = (("ast_film_soft", "SoftFiLM-AST"), ("ast", "AST baseline"))
RECORDINGS = 400  # about 1,800 cycles: enough for a random-init model to learn wheezes in a few epochs
ROWS = (("specificity", "Sp"), ("sensitivity", "Se"), ("icbhi_score", "ICBHI score"),
        ("binary_icbhi_score", "2-class score"))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ls.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="data, checkpoints go here")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--recordings", type=int, default=RECORDINGS, help="synthetic recordings to generate")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data generator")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    args = p.parse_args(argv)

    from ls.data.synthetic import generate_icbhi

    t0 = time.perf_counter()
    data = args.out / f"data_{args.recordings}rec_seed{args.seed}"
    if not (data / "synthetic_info.json").exists():
        print(f"[quickstart] generating {args.recordings} synthetic recordings (seed {args.seed}) in {data}")
        generate_icbhi(data, recordings=args.recordings, seed=args.seed)
    overrides = [f"dataset.data_folder={data}", f"training.checkpoint_dir={args.out / 'checkpoints'}"]
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    cfg = load_config(args.config, overrides)
    tracker = build_tracker(cfg.mlflow, enabled=not args.no_tracking)

    results = {}
    for variant, title in VARIANTS:
        print(f"[quickstart] training {title} ({variant}) for {cfg.training.epochs} epochs")
        outcome = train_run(cfg, variant, tracker=_fresh(tracker))
        results[title] = outcome.test_metrics
    print()
    print(format_side_by_side(results))
    print(f"\n[quickstart] done in {time.perf_counter() - t0:.0f} s; checkpoints under {args.out / 'checkpoints'}")
    if not args.no_tracking:
        print(mlflow_instructions(tracker.settings.tracking_uri, tracker.settings.experiment_name))
    return 0


def mlflow_instructions(uri: str, experiment: str) -> str:
    """How to open the runs: ``mlflow ui`` (MLflow 3) on the store they were logged to.

    A relative SQLite store (the default ``sqlite:///mlflow.db``) is named by its absolute path, so the
    command works from any directory; a server URI is simply opened in the browser.
    """
    if uri.startswith(("http://", "https://")):
        return f"[quickstart] MLflow runs on {uri} (experiment {experiment!r}): open {uri} in a browser"
    shown = uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        shown = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    elif "://" not in uri:  # a plain folder (file store)
        shown = str(Path(uri).resolve())
    return (f"[quickstart] MLflow runs in {shown} (experiment {experiment!r}); to browse them run\n"
            f"    mlflow ui --backend-store-uri {shown}\n"
            f"  and open http://127.0.0.1:5000 (Ctrl-C stops the server)")


def _fresh(tracker):
    """A new run per model on the same backend (the checked tracker is only a template)."""
    from ls.engine.tracking import NullTracker, Tracker

    if isinstance(tracker, NullTracker):
        return tracker
    t = Tracker(tracker.settings)
    t.experiment_id = tracker.experiment_id
    return t


def format_side_by_side(results: dict[str, dict[str, float]]) -> str:
    """Test metrics (percent) of several models in columns."""
    names = list(results)
    width = max(14, *(len(n) for n in names))
    lines = ["test split".ljust(16) + "".join(n.rjust(width + 2) for n in names)]
    for key, label in ROWS:
        lines.append(label.ljust(16) + "".join(f"{100 * results[n].get(key, float('nan')):{width + 2}.2f}"
                                                for n in names))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
