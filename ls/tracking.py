"""Command line of the MLflow mirror: upload what run records hold and the store lacks.

    python -m ls.tracking sync DIR [--mlflow-config configs/mlflow.local.yaml] [--tracking-uri URI]
                                   [--experiment NAME] [--username USER]

``DIR`` is a run folder or any folder above run folders (a group's, a study's, a whole checkpoint tree): every
record below it is synced, parents before children. Each goes to the store it was meant for (recorded in its
``mlflow.json``; a run trained with ``--no-tracking`` names none and goes to the configured one) unless
``--tracking-uri``, the mlflow config file or ``MLFLOW_TRACKING_URI`` name another. Credentials come from the
config file or ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (never from the command line, where
other users could read them). ``replay`` is the same command under its earlier name.

Syncing is idempotent: a folder remembers how far it is synced, so running the command twice uploads nothing
twice. Exit status: 0 when everything is uploaded, 1 when something is left (store away: run it again later),
2 on bad input (one ``error:`` line; ``--traceback`` adds the traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys

from ls.runs.mirror import configured_values, resolve_settings, sync
from ls.runs.secrets import split_userinfo
from ls.utils.cli import add_common_options, run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.tracking", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("sync", "replay"):
        r = sub.add_parser(name, help="upload the run records below a folder to MLflow" if name == "sync" else
                           "the same as sync", description="Upload what run records hold and the store lacks.")
        r.add_argument("dir", help="a run folder, or any folder above run folders")
        r.add_argument("--mlflow-config", default=None,
                       help="flat YAML with tracking_uri, experiment_name, tracking_username, tracking_password")
        r.add_argument("--tracking-uri", default=None, help="sync to this store instead of the recorded one")
        r.add_argument("--experiment", default=None,
                       help="experiment for runs created by the sync (default: the recorded one)")
        r.add_argument("--username", default=None, help="tracking username (password: config file or env)")
        add_common_options(r)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _sync(args), args)


def _sync(args: argparse.Namespace) -> int:
    values = configured_values(mlflow_yaml=args.mlflow_config)
    settings = resolve_settings(mlflow_yaml=args.mlflow_config)
    if args.tracking_uri:  # user:password@ in it become the credentials, as everywhere else
        uri, user, password = split_userinfo(args.tracking_uri)
        settings = settings.replace(tracking_uri=uri, username=user or settings.username,
                                    password=password or settings.password)
    if args.experiment:
        settings = settings.replace(experiment_name=args.experiment)
    if args.username:
        settings = settings.replace(username=args.username)
    explicit = bool(args.tracking_uri or values.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI"))
    reports = sync(args.dir, settings, explicit_store=explicit,
                   explicit_experiment=bool(args.experiment or values.get("experiment_name")))
    for report in reports:
        print(report.describe())
    if any(not r.complete for r in reports):
        print("some events are not uploaded yet; run the same command again when the store is reachable",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
