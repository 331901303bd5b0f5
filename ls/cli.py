"""``ausc``: one command for everything ls does, installed with the package (``[project.scripts]``).

    ausc train ast_film_soft --config quickstart --set dataset.data_folder=DATA
    ausc evaluate --checkpoint runs/<run>/best.pt
    ausc figures --all --checkpoint runs/<run>/best.pt
    ausc study quickstart_study --jobs 2
    ausc tune quickstart_tune --jobs 2
    ausc plugins -p my_package.ls_plugin

Each subcommand is the command line of one module with the same options (``ausc evaluate -h`` is
``python -m ls.evaluate -h``), and every one takes ``-p/--plugin MODULE`` and ``--traceback``
(``ls.utils.cli.add_common_options``). The table :data:`COMMANDS` is the whole dispatcher: a new command is a
module whose ``main(argv) -> int`` calls ``add_common_options`` and ``run_command``, plus one entry here.

The name: not ``ls``, which would shadow the Unix ``ls`` in every environment where ls is installed, nor an
``ls*`` word (``lsusb``, ``lsblk`` list things); ``ausc`` is short for auscultation, how the recordings are made.
``python -m ls`` is the same command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ls.utils import cli as common

PROG = "ausc"


@dataclass(frozen=True)
class Command:
    """A subcommand: ``target`` is ``"module:function"``, a function taking the remaining arguments and
    returning an exit code; ``prefix`` goes before them (``sync`` is ``python -m ls.tracking sync``)."""

    target: str
    help: str
    prefix: tuple[str, ...] = ()


#: Subcommand -> command line. One entry per command.
COMMANDS: dict[str, Command] = {
    "train": Command("ls.train:command", "train a variant: train VARIANT --config FILE|NAME [--set K=V] ..."),
    "evaluate": Command("ls.evaluate:main", "evaluate a checkpoint on a split (metrics JSON, predictions CSV)"),
    "predict": Command("ls.predict:main", "predict recordings (windows, cycles, recording and patient level) with "
                       "a checkpoint or an exported model"),
    "export": Command("ls.export:main", "export a checkpoint to a self-describing ONNX model (fp32 or int8)"),
    "figures": Command("ls.viz.cli:main", "paper figures from checkpoints (visualize.py)"),
    "study": Command("ls.study:main", "every variant x seed of a study file, resumable, and its report"),
    "tune": Command("ls.tune.__main__:main", "hyperparameter search with Optuna on the validation split: "
                    "best_config.yaml and a report"),
    "report": Command("ls.report.__main__:main", "compare finished runs over seeds with paired statistics"),
    "migrate": Command("ls.config.migrate:main", "write a config (e.g. the original implementation's) in ls keys"),
    "sync": Command("ls.tracking:main", "upload run records below a folder to MLflow", ("sync",)),
    "replay": Command("ls.tracking:main", "the same as sync", ("replay",)),
    "quickstart": Command("ls.quickstart:main", "synthetic data, a tiny SoftFiLM and AST, results side by side"),
    "synthetic": Command("ls.data.synthetic:main", "write a synthetic ICBHI-format folder"),
    "synthetic-sprsound": Command("ls.data.synthetic_sprsound:main", "write a synthetic SPRSound-format folder"),
    "make-metadata": Command("ls.data.make_metadata:main", "build the ICBHI cycle table (icbhi_metadata.csv)"),
    "machine": Command("ls.utils.machine:main", "what this machine is (CPU, torch's vector code path, versions): "
                       "for a bug report"),
    "plugins": Command("ls.cli:plugins_main", "list the loaded plugins and the variants and readers they add"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND -h for a command's options)", "",
             "Respiratory sound classification with metadata-conditioned ASTs (the ls library).", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    lines += ["", ("Every command takes -p/--plugin MODULE (a plugin: a mechanism or dataset reader defined outside "
              "ls) and --traceback.")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``ausc COMMAND [options]``: run the command's own command line."""
    import ls

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else common.EXIT_ERROR
    if args[0] == "--version":
        print(f"{PROG} (ls {ls.__version__})")
        return 0
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        return common.fail(f"unknown command {name!r}; commands: {', '.join(COMMANDS)} ({PROG} -h)")
    module, _, function = command.target.partition(":")
    previous, common._prog = common._prog, f"{PROG} {name}"
    try:
        return int(getattr(importlib.import_module(module), function)([*command.prefix, *rest]) or 0)
    finally:
        common._prog = previous


def plugins_main(argv: Sequence[str] | None = None) -> int:
    """``ausc plugins``: what is loaded (entry points, ``LS_PLUGINS``, ``-p``) and what it registered."""
    p = argparse.ArgumentParser(prog=f"{PROG} plugins", description=plugins_main.__doc__)
    common.add_common_options(p)
    args = p.parse_args(argv)

    def body() -> int:
        from ls.data.tasks import DATASET_TASKS
        from ls.models.variants import variant_table
        from ls.utils import plugins

        table = variant_table()
        kinds = dict(DATASET_TASKS)
        print(plugins.describe_loaded() or "plugins: none loaded")
        for kind, names in (("variant", table), ("reader", kinds)):
            shown = []
            for name in names:
                plugin = plugins.origin(kind, name)
                shown.append(name if plugin is None else f"{name} ({plugin.name})")
            print(f"{kind}s: {', '.join(shown)}")
        return 0

    return common.run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
