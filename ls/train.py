"""Training from the command line: one run, several seeds or k folds (the work itself is :mod:`ls.runs`).

Each root script (``ast_train.py``, ``ast_film_soft.py``, ...) is ``sys.exit(main("<variant>"))``:

    python ast_film_soft.py --config configs/ast_film_soft_config.yaml --mlflow-config configs/mlflow.yaml \\
        [--set training.epochs=5 ...] [--resume checkpoints/<run>/last.pt] [--seeds 42 43 44] [--kfold 5]

- one run: a folder of its own under ``training.checkpoint_dir`` (``ls.runs.folder``), its record mirrored to
  MLflow (params, tags, per-epoch metrics, artifacts);
- ``--seeds``: a group folder with one member per seed (``<group>/seed<seed>``), nested under the group's
  record, and the mean/std of every test metric;
- ``--kfold K``: the same with one member per patient fold of the training split (``<group>/fold<i>``, that
  fold validates; the test split stays fixed);
- ``--resume``: continue an interrupted run (a member too, alone, with its own seed and fold) from its
  ``last.pt``, in the same record and MLflow run;
- under ``torchrun`` the same command trains with DistributedDataParallel (rank 0 records and checkpoints).

Errors are one ``error:`` line and exit code 2 (``--traceback`` for the traceback); Ctrl-C says from where
``--resume`` continues (exit code 130) and ends the record as KILLED.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ls.config import Config, flatten, load_config
from ls.engine.checkpoint import read_checkpoint
from ls.engine.distributed import DistContext, cleanup_distributed, init_distributed
from ls.engine.trainer import TrainingInterrupted, resolve_device
from ls.models.variants import canonical_variant, get_variant, variant_table
from ls.runs import folder as layout
from ls.runs.executor import PlanInterrupted, RunResult, execute, open_parent, summarize, tracking_summary
from ls.runs.mirror import Mirror, start_mirror
from ls.runs.plan import Plan, RunSpec, kfold_plan, seeds_plan
from ls.runs.record import SyncInterrupted
from ls.runs.run import member_name, run_tags, stored_config
from ls.utils.cli import (
    EXIT_INTERRUPTED,
    add_common_options,
    fail,
    load_command_plugins,
    plain_warnings,
    report_error,
)
from ls.utils.io import atomic_write_text
from ls.utils.trees import to_dict


def scripts() -> dict[str, str]:
    """Which root script trains which variant (read from the variant table)."""
    return {v.name: v.script for v in variant_table().values() if v.script}


def build_parser(variant: str) -> argparse.ArgumentParser:
    try:
        entry = get_variant(variant)
        prog, shown = entry.script or variant, f"{entry.display_name} ({entry.name})"
    except ValueError:  # a plugin's variant: its plugin is loaded from -p after parsing
        prog, shown = variant, variant
    p = argparse.ArgumentParser(prog=prog, description=f"Train the {shown} variant (ls library).")
    p.add_argument("--config", required=True, help="YAML run config (e.g. configs/ast_film_soft_config.yaml)")
    p.add_argument("--mlflow-config", default=None,
                   help="flat YAML with tracking_uri, experiment_name, tracking_username, tracking_password; "
                        "it wins over the run config's mlflow: section, which wins over the MLFLOW_* environment "
                        "variables (key by key), else sqlite:///mlflow.db")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--resume", default=None, metavar="PATH", help="continue an interrupted run from its last.pt")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="one nested run per seed plus a mean/std summary, e.g. --seeds 42 43 44 45 46")
    p.add_argument("--kfold", type=int, default=None, metavar="K",
                   help="patient k-fold on the training split (official test fixed), one nested run per fold")
    p.add_argument("--no-tracking", action="store_true", help="do not mirror the run to MLflow (it is recorded "
                   "in its folder all the same; python -m ls.tracking sync uploads it later)")
    p.add_argument("--strict-config", action="store_true",
                   help="accept only ls keys: a config in the original implementation's format is an error instead "
                        "of being translated with a warning (docs/original_configs.md)")
    add_common_options(p)
    return p


def command(argv: Sequence[str] | None = None) -> int:
    """``ausc train VARIANT [options]``: :func:`main` with the variant as the first argument."""
    from ls.utils import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        text = (f"usage: ausc train VARIANT --config FILE|NAME [options] (ausc train VARIANT -h for the options); "
                f"variants: {', '.join(known_variants())}")
        if argv and argv[0] in ("-h", "--help"):
            print(text)
            return 0
        return fail(f"train needs the variant first: {text}")
    previous, cli._prog = cli._prog, f"{cli._prog or 'ausc train'} {argv[0]}"
    try:
        return main(argv[0], argv[1:])
    finally:
        cli._prog = previous


def known_variants() -> list[str]:
    """The variants known now (with the entry-point and LS_PLUGINS plugins loaded)."""
    try:
        return list(variant_table())
    except ValueError as exc:  # a broken plugin: say so where the list would be
        return [f"<{exc}>"]


def main(variant: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of the root scripts: parse arguments, train, return an exit code.

    Every user-facing problem is one ``error:`` line on stderr and exit code 2 (``--traceback`` or
    ``LS_TRACEBACK=1`` adds the traceback); Ctrl-C says from where ``--resume`` continues and exits 130.
    """
    args = build_parser(variant).parse_args(argv)
    with plain_warnings():
        conflict = _argument_conflict(args)
        if conflict:
            return fail(conflict)
        try:
            load_command_plugins(args)
            if args.resume:  # the plugin a checkpoint needs, named before anything else can fail on it
                read_checkpoint(args.resume, mmap=True)
        except Exception as exc:  # noqa: BLE001 - bad input: one clear line (ls.utils.cli)
            return report_error(exc, args)
        return _main(variant, args)


def _argument_conflict(args: argparse.Namespace) -> str | None:
    if args.resume and (args.seeds or args.kfold):
        return "--resume continues one run; it cannot be combined with --seeds or --kfold"
    if args.seeds and args.kfold:
        return "choose one of --seeds and --kfold"
    if args.kfold is not None and args.kfold < 2:
        return f"--kfold needs at least 2 folds, got {args.kfold}"
    return None


def _main(variant: str, args: argparse.Namespace) -> int:
    from ls.config import ConfigError

    try:
        cfg = _load_run_config(args)  # loads the plugins its `plugins:` key names
        variant = canonical_variant(variant)
        try:
            cfg.model(variant)  # a missing block for this variant fails now
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: {exc}") from exc
        return _run_cli(variant, args, cfg)
    except KeyboardInterrupt as exc:
        if _is_rank0():  # under torchrun every rank gets the Ctrl-C; one line says it
            print(_interrupted_text(exc, args), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - bad input of any layer: one clear line (ls.utils.cli)
        return report_error(exc, args)


def _interrupted_text(exc: BaseException, args: argparse.Namespace) -> str:
    if isinstance(exc, SyncInterrupted):
        return str(exc)
    if not isinstance(exc, TrainingInterrupted):
        return "interrupted before training started; nothing to resume"
    if not isinstance(exc, PlanInterrupted) or not (args.seeds or args.kfold):
        return str(exc)
    flag = "--kfold" if args.kfold else "--seeds"
    head = (f"interrupted {member_name(exc.spec.seed, exc.spec.fold)} of the {flag} group ({exc.finished} "
            "member(s) before it finished)")
    if exc.checkpoint is None:
        return f"{head} before its first checkpoint; nothing of it to resume"
    return (f"{head} after epoch {exc.epoch}; --resume {exc.checkpoint} (without {flag}) finishes this member "
            "alone; the members after it and the group's summary are not run")


def _is_rank0() -> bool:
    """Rank 0 of a torchrun job, or a plain process (torchrun sets RANK for every rank)."""
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
    finished = False
    library_log = logging.getLogger("ls")
    log_level = library_log.level
    if not ctx.is_main:  # every rank reads the same data: its warnings are said once, by rank 0
        library_log.setLevel(logging.ERROR)
    try:
        # Rank 0 checks the tracking store before any data is built: a bad URI/credentials fail fast.
        mirror = start_mirror(to_dict(cfg.mlflow), args.mlflow_config) \
            if ctx.is_main and not args.no_tracking else None
        if args.seeds or args.kfold:
            run_group(cfg, variant, args.seeds, args.kfold, mirror, ctx)
        else:
            spec = RunSpec(variant, cfg, resume=None if args.resume is None else Path(args.resume))
            result = execute(Plan([spec]), mirror=mirror, ctx=ctx)[0]
            if ctx.is_main and result.run_dir is not None:
                print(f"checkpoints: {result.run_dir}")
        hint = tracking_summary(mirror) if ctx.is_main else None
        if hint:
            print(hint, flush=True)
        finished = True
    finally:
        library_log.setLevel(log_level)
        cleanup_distributed(wait_for_peers=finished)
    return 0


def run_group(cfg: Config, variant: str, seeds: Sequence[int] | None, k: int | None, mirror: Mirror | None,
              ctx: DistContext) -> dict[str, float]:
    """``--seeds`` or ``--kfold``: a group folder holding the parent record and one member folder per seed or
    fold; the members' mean/std of every test metric go to the parent and to ``summary.json``."""
    what = f"seeds{len(seeds)}" if seeds else f"{k}fold"
    name = f"{variant}_{cfg.training.epochs}ep_{cfg.training.selection}_{what}"
    make = (lambda folder: seeds_plan(cfg, variant, seeds, folder)) if seeds else \
        (lambda folder: kfold_plan(cfg, variant, k, folder))
    make(None)  # a plan that lists a run twice fails before any folder is made
    group = layout.create_run_dir(cfg.training.checkpoint_dir, name) if ctx.is_main else None
    plan = make(group)
    parent = None
    if group is not None:
        parent = open_parent(group, name, mirror=mirror, tags={**run_tags(cfg, variant), "group": what},
                             params=flatten(stored_config(cfg)))
    try:
        results = execute(plan, mirror=mirror, ctx=ctx)
    except BaseException as exc:
        if parent is not None:
            parent.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    summary = summarize(results)
    if parent is not None:
        parent.log_metrics({f"test/{key}": value for key, value in summary.items()})
        path = group / "summary.json"
        column = "seed" if seeds else "fold"
        atomic_write_text(path, json.dumps({"runs": [{column: _member_of(r, column), "folder": r.run_dir.name,
                                                      "test": r.test} for r in results],
                                            "summary": summary}, indent=2) + "\n")
        parent.log_artifact(path)
        parent.end()
        print(format_summary(results, summary, column))
    return summary


def _member_of(result: RunResult, column: str) -> int:
    """The seed or fold of a member, from its key (``.../seed<seed>`` or ``.../fold<i>``)."""
    return int(result.key.rsplit("/", 1)[-1][len(column):])


def format_summary(results: Sequence[RunResult], summary: dict[str, float], what: str) -> str:
    keys = ("specificity", "sensitivity", "icbhi_score")
    lines = [f"{what:>6} | " + " | ".join(f"{k:>12}" for k in keys)]
    for r in results:
        lines.append(f"{_member_of(r, what)!s:>6} | " + " | ".join(
            f"{100 * r.test.get(k, float('nan')):12.2f}" for k in keys))
    lines.append(f"{'mean':>6} | " + " | ".join(
        f"{100 * summary.get(f'{k}_mean', float('nan')):6.2f} ±{100 * summary.get(f'{k}_std', float('nan')):4.2f}"
        for k in keys))
    return "\n".join(lines)


__all__ = ["build_parser", "command", "format_summary", "main", "run_group", "scripts"]
