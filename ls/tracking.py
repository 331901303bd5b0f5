"""Command line for MLflow tracking buffers: upload what a run recorded while its server was away.

    python -m ls.tracking replay DIR [--mlflow-config configs/mlflow.local.yaml] [--tracking-uri URI]
                                     [--experiment NAME] [--username USER]

``DIR`` is a buffer folder (it holds ``buffer.json``) or any folder above buffers: a run folder (its
``mlflow_buffer/``), a whole checkpoint tree or the default ``mlflow_fallback``. Each buffer goes into the
run it was recorded for, on the tracking store recorded in it, unless ``--tracking-uri``, the mlflow config
file or ``MLFLOW_TRACKING_URI`` name another (same precedence as training: ``--tracking-uri`` > config file
> environment > the buffer's own URI). Credentials come from the config file or ``MLFLOW_TRACKING_USERNAME``
/ ``MLFLOW_TRACKING_PASSWORD`` (never from the command line, where other users could read them).

Replaying is idempotent: a buffer remembers how far it was uploaded, so running the command twice uploads
nothing twice. Exit status: 0 when everything is uploaded, 1 when something is left (server away: run it
again later), 2 on bad input (one ``error:`` line; ``--traceback`` adds the traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from ls.engine.tracking import (  # importing it turns MLflow telemetry off before mlflow is imported
    _configured_values,
    replay_buffer,
    resolve_settings,
)
from ls.utils.cli import add_traceback_option, run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.tracking", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="upload buffered MLflow records into their runs",
                       description="Upload the MLflow records buffered while the tracking server was away.")
    r.add_argument("dir", help="a buffer folder, a run folder holding one, or any folder above buffers")
    r.add_argument("--mlflow-config", default=None,
                   help="flat YAML with tracking_uri, experiment_name, tracking_username, tracking_password")
    r.add_argument("--tracking-uri", default=None, help="upload to this store instead of the recorded one")
    r.add_argument("--experiment", default=None,
                   help="experiment for runs created by the replay (default: the recorded one)")
    r.add_argument("--username", default=None, help="tracking username (password: config file or env)")
    add_traceback_option(r)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _replay(args), args)


def _replay(args: argparse.Namespace) -> int:
    values = _configured_values(mlflow_yaml=args.mlflow_config)
    settings = resolve_settings(mlflow_yaml=args.mlflow_config)
    if args.tracking_uri:
        settings = replace(settings, tracking_uri=args.tracking_uri)
    if args.experiment:
        settings = replace(settings, experiment_name=args.experiment)
    if args.username:
        settings = replace(settings, username=args.username)
    explicit_uri = bool(args.tracking_uri or values.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI"))
    explicit_exp = bool(args.experiment or values.get("experiment_name"))
    reports = replay_buffer(args.dir, settings, explicit_uri=explicit_uri, explicit_experiment=explicit_exp)
    for report in reports:
        uri = settings.safe_uri if explicit_uri else _recorded_uri(report.buffer) or settings.safe_uri
        print(report.describe(uri))
    if any(not r.complete for r in reports):
        print("some records are not uploaded yet; run the same command again when the server is reachable",
              file=sys.stderr)
        return 1
    return 0


def _recorded_uri(buffer) -> str | None:
    import json

    try:
        return json.loads((buffer / "buffer.json").read_text(encoding="utf-8")).get("tracking_uri")
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
