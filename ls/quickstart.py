"""Quickstart: synthetic ICBHI-format data -> SoftFiLM and the AST baseline (tiny, CPU) -> side-by-side results.

    python -m ls.quickstart [--out runs/quickstart] [--recordings N] [--seed S] [--epochs E] [--no-tracking]
    python -m ls.quickstart --record     # in a clone: re-measure the numbers the README shows (docs/quickstart.json)

Generates a small synthetic folder in the official ICBHI layout (``ls.data.synthetic``), trains both models
with the built-in ``quickstart`` config (``ls/configs/quickstart.yaml``, shipped in the package: an installed ls
runs it from any folder; tiny224 backbone, random init, 16 mel x 128 frames), logs both runs to
MLflow (``sqlite:///mlflow.db`` in the working directory unless MLFLOW_TRACKING_URI says otherwise), prints
their test metrics side by side, how to open the runs, and evaluation and figure commands that work on the
checkpoints it wrote. The results also go to ``<out>/quickstart.json``. The numbers are a smoke test of the
pipeline on synthetic audio, not results.

Training runs on one CPU thread: PyTorch's multi-threaded kernels sum in an order that depends on the thread
count (measured: probabilities differ in the 7th digit after 3 epochs), which can move the metrics of a 15-epoch
run. On one thread a rerun on the same machine, CPU code path and torch build gives the same bits (and a shared
machine runs it faster); another code path or CPU rounds differently, and after a few epochs the runs diverge
(the README shows by how much).

The README's table is kept true by a test: ``--record`` (a clone of the repository only: it rewrites files of
the clone, not of an installed package) writes ``docs/quickstart.json`` (the table, the time,
the machine, and a *fingerprint*: the losses, test metrics and predictions of a 2-epoch SoftFiLM run on a
24-recording synthetic folder) and rewrites the README block between its ``quickstart`` markers.
``tests/test_quickstart.py`` checks that the README shows that JSON and that the fingerprint still reproduces,
so a change that moves training numbers fails until the quickstart is re-recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ls.config import load_config
from ls.runs.executor import execute, tracking_summary
from ls.runs.mirror import start_mirror
from ls.runs.plan import Plan, RunSpec
from ls.runs.run import train_run
from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_write_text
from ls.utils.trees import to_dict

#: The config of the quickstart, by its built-in name (``ls.config.builtin_configs``).
CONFIG = "quickstart"
#: In a clone, the repository root: ``--record`` rewrites its README and docs/quickstart.json.
REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "quickstart.json"
README = REPO / "README.md"
README_BEGIN, README_END = "<!-- quickstart:begin (python -m ls.quickstart --record) -->", "<!-- quickstart:end -->"
VARIANTS = (("ast_film_soft", "SoftFiLM-AST"), ("ast", "AST baseline"))
RECORDINGS = 400  # about 1,800 cycles: enough for a random-init model to learn wheezes in a few epochs
ROWS = (("specificity", "Sp"), ("sensitivity", "Se"), ("icbhi_score", "ICBHI score"),
        ("binary_icbhi_score", "2-class score"))  # fmt: skip
#: The fingerprint run: small and quick, but it goes through data, features, model, trainer and selection
#: (no warm-up, so that both epochs move the weights).
FINGERPRINT = {"variant": "ast_film_soft", "recordings": 24, "seed": 0, "epochs": 2}
#: Count-based test metrics of the fingerprint (exact on any machine that reproduces the predictions).
FINGERPRINT_METRICS = ("specificity", "sensitivity", "icbhi_score", "binary_icbhi_score", "accuracy")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ls.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="data, checkpoints go here")
    p.add_argument("--config", default=CONFIG, help="run config: a file, or a built-in config's name "
                   f"(default {CONFIG})")
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--recordings", type=int, default=RECORDINGS, help="synthetic recordings to generate")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data generator")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--record", action="store_true",
                   help="in a clone of the repository: re-measure the README's numbers, writing "
                        "docs/quickstart.json and the README block (default settings only)")
    add_common_options(p)
    args = p.parse_args(argv)
    if args.record and (args.epochs is not None or args.recordings != RECORDINGS or args.seed != 0
                        or args.config != CONFIG):
        p.error("--record measures the default quickstart: drop --epochs, --recordings, --seed and --config")
    if args.record and not (README.is_file() and RECORD.parent.is_dir()):
        p.error(f"--record rewrites the README.md and docs/quickstart.json of a clone of the repository; this ls "
                f"is installed in {REPO} without them. Run the quickstart without --record")
    return run_command(lambda: _quickstart(args), args)


def _quickstart(args: argparse.Namespace) -> int:
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
    mirror = None if args.no_tracking else start_mirror(to_dict(cfg.mlflow))

    def starting(spec: RunSpec, _: int) -> None:
        print(f"[quickstart] training {dict(VARIANTS)[spec.variant]} ({spec.variant}) for {cfg.training.epochs} "
              "epochs", flush=True)

    with single_thread():
        runs = execute(Plan([RunSpec(variant, cfg) for variant, _ in VARIANTS]), mirror=mirror, on_start=starting)
        threads = torch.get_num_threads()
    results = {title: r.test for (_, title), r in zip(VARIANTS, runs)}
    run_dirs = {variant: r.run_dir for (variant, _), r in zip(VARIANTS, runs)}
    seconds = time.perf_counter() - t0
    print()
    print(format_side_by_side(results))
    print(f"\n[quickstart] done in {seconds:.0f} s; checkpoints under {args.out / 'checkpoints'}")
    print(next_steps(run_dirs))
    hint = tracking_summary(mirror)
    if hint:
        print(f"[quickstart] {hint}")
    record = {"settings": {"recordings": args.recordings, "seed": args.seed, "epochs": cfg.training.epochs},
              "seconds": round(seconds, 1), "machine": {**machine(), "threads": threads},
              "table": {title: {k: round(100 * float(m[k]), 2) for k, _ in ROWS if k in m}
                        for title, m in results.items()}}
    atomic_write_text(args.out / "quickstart.json", json.dumps(record, indent=2) + "\n")
    if args.record:
        print("[quickstart] fingerprint run (2 epochs on 24 recordings) for docs/quickstart.json", flush=True)
        record["fingerprint"] = fingerprint(args.out / "fingerprint")
        write_record(record)
        print(f"[quickstart] wrote {RECORD} and the README block; commit both")
    return 0


def next_steps(run_dirs: dict[str, Path | None]) -> str:
    """Evaluation and figure commands that work on the checkpoints just written (each checkpoint's own config
    locates the data: no --config needed when run from this directory)."""
    soft, ast = run_dirs.get("ast_film_soft"), run_dirs.get("ast")
    if soft is None or ast is None:
        return ""
    figures = "python visualize.py" if (REPO / "visualize.py").is_file() else "python -m ls.viz.cli"  # clone or not
    return ("[quickstart] next, from this directory:\n"
            f"    python -m ls.evaluate --checkpoint {soft / 'best.pt'}\n"
            f"    {figures} --all --checkpoint {soft / 'best.pt'} --baseline-ckpt {ast / 'best.pt'} "
            f"--out {soft.parent.parent / 'figures'}")


def format_side_by_side(results: dict[str, dict[str, float]]) -> str:
    """Test metrics (percent) of several models in columns."""
    names = list(results)
    width = max(14, *(len(n) for n in names))
    lines = ["test split".ljust(16) + "".join(n.rjust(width + 2) for n in names)]
    for key, label in ROWS:
        lines.append(label.ljust(16) + "".join(f"{100 * results[n].get(key, float('nan')):{width + 2}.2f}"
                                                for n in names))
    return "\n".join(lines)


# -- keeping the README true ---------------------------------------------------------------------------------
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run PyTorch on one intra-op thread (numbers independent of the machine's core count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the CPU model and the vector code torch dispatched to decide them
    (with the torch build and the thread count), the load the time was measured under."""
    from ls.utils.machine import describe

    info = describe()
    load = os.getloadavg()[2] if hasattr(os, "getloadavg") else None  # 15-minute average: the run's share
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "cpu": info["cpu"],
            "capability": info["capability"], "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_15min": None if load is None else round(load, 1)}


def fingerprint(work: Path) -> dict[str, Any]:
    """Test metrics and per-cycle predictions of a 2-epoch SoftFiLM run (quickstart config) on a 24-recording
    synthetic folder: what any change to data, features, model or training moves."""
    from ls.data.synthetic import generate_icbhi

    fp = FINGERPRINT
    data = Path(work) / f"data_{fp['recordings']}rec_seed{fp['seed']}"
    if not (data / "synthetic_info.json").exists():
        generate_icbhi(data, recordings=fp["recordings"], seed=fp["seed"])
    # No warm-up: its first epoch runs at lr x 1e-4 and would leave the weights almost at their init.
    cfg = load_config(CONFIG, [f"dataset.data_folder={data}", f"training.epochs={fp['epochs']}",
                               "training.scheduler.warmup_epochs=0",
                               f"training.checkpoint_dir={Path(work) / 'checkpoints'}"])
    with single_thread():
        outcome = train_run(cfg, fp["variant"], progress=False)
    test, history = outcome.fit.test, outcome.fit.history
    return {"setup": dict(fp), "best_epoch": outcome.best_epoch,
            "test": {k: round(float(test.metrics[k]), 6) for k in FINGERPRINT_METRICS},
            "predictions": "".join(str(int(c)) for c in test.pred),
            # continuous numbers: they move with any change even when the predicted classes do not
            "numbers": {"test_loss": float(test.loss),
                        "mean_probabilities": [float(v) for v in test.probs.mean(axis=0).ravel()],
                        "train_loss": [float(r["train/loss"]) for r in history],
                        "val_loss": [float(r["val/loss"]) for r in history]}}


#: Tolerance of the fingerprint's continuous numbers (losses of about 1, mean probabilities): float rounding
#: moves them by 1.1e-6 at most (measured with benchmarks/cpu_paths.py on AMD EPYC, torch 2.9.1, 1 thread: the
#: default, AVX2 and AVX-512 code paths and the initial weights moved by up to 4 ulps, against the recorded
#: fingerprint written on another machine), ~100x below this; a change to data, model or training moves them
#: by 1e-3 or more. Classes, best epoch and the count-based metrics are compared exactly: they stayed the same
#: in all of those runs (they move only when a cycle's probability crosses a threshold).
FINGERPRINT_TOLERANCE = 1e-4


def fingerprint_differences(got: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints (exact for classes and count-based metrics, within
    :data:`FINGERPRINT_TOLERANCE` for the continuous numbers)."""
    import numpy as np

    diffs = [f"{k}: {got.get(k)!r} vs recorded {recorded.get(k)!r}"
             for k in ("setup", "best_epoch", "test", "predictions") if got.get(k) != recorded.get(k)]
    for k, want in (recorded.get("numbers") or {}).items():
        have = (got.get("numbers") or {}).get(k)
        if have is None or np.shape(have) != np.shape(want) or not np.allclose(
                have, want, rtol=0, atol=FINGERPRINT_TOLERANCE):
            diffs.append(f"numbers.{k}: {have!r} vs recorded {want!r}")
    return diffs


def readme_block(record: dict[str, Any]) -> str:
    """The README text that shows ``record``: time, machine and the side-by-side table."""
    m = record["machine"]
    table = format_side_by_side({title: {k: v / 100 for k, v in vals.items()}
                                 for title, vals in record["table"].items()})
    s = record["settings"]
    load = m.get("load_15min")
    shared = (f", shared with other jobs (load average {load:g})" if load is not None and load > m["cpus"] / 2
              else "")
    threads = m.get("threads")
    torch_text = f"torch {m['torch'].split('+')[0]}" + (
        f", {threads} thread{'s' if threads != 1 else ''}" if threads not in (None, m["cpus"]) else "")
    cpu = f"{m['cpu']}, {m['capability']} code path; " if m.get("cpu") and m.get("capability") else ""
    sentence = textwrap.fill(
        f"Measured on {m['cpus']} CPU cores ({cpu}{torch_text}){shared}: {record['seconds']:.0f} s for "
        f"{s['recordings']} recordings and {s['epochs']} epochs per model, after installation, ending with", 112)
    return f"{README_BEGIN}\n{sentence}\n\n```\n{table}\n```\n{README_END}"


def write_record(record: dict[str, Any], record_path: Path = RECORD, readme: Path = README) -> None:
    """``docs/quickstart.json`` and the README block between the quickstart markers."""
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no block between {README_BEGIN!r} and {README_END!r} to rewrite")
    atomic_write_text(readme, pattern.sub(lambda _: readme_block(record), text))


if __name__ == "__main__":
    raise SystemExit(main())
