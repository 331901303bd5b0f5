"""No network at run time: MLflow's usage telemetry is off unless the user opts in.

Importing this module sets ``MLFLOW_DISABLE_TELEMETRY=true`` (MLflow 3 starts a telemetry client at
``import mlflow`` and contacts its config host, even with a local store) unless ``LS_MLFLOW_TELEMETRY=1`` opts
in or the user set ``MLFLOW_DISABLE_TELEMETRY`` (or ``DO_NOT_TRACK``) themselves. Every module of ls that
imports mlflow imports this one first, at module level.
"""

from __future__ import annotations

import contextlib
import os
import sys

#: Set to 1/true to let MLflow send its usage telemetry.
TELEMETRY_OPT_IN_ENV = "LS_MLFLOW_TELEMETRY"


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def configure_telemetry() -> bool:
    """Turn MLflow's telemetry off unless the user opted in; return True if it is off. A client started before
    ls could set the variable is stopped."""
    if not _truthy(os.environ.get(TELEMETRY_OPT_IN_ENV)) and "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    off = _truthy(os.environ.get("MLFLOW_DISABLE_TELEMETRY")) or _truthy(os.environ.get("DO_NOT_TRACK"))
    if off and "mlflow.telemetry" in sys.modules:
        with contextlib.suppress(Exception):
            from mlflow.telemetry import get_telemetry_client, set_telemetry_client

            client = get_telemetry_client()
            if client is not None:
                client.flush(terminate=True)
                set_telemetry_client()  # re-reads the variables: no client
    return off


configure_telemetry()

__all__ = ["TELEMETRY_OPT_IN_ENV", "configure_telemetry"]
