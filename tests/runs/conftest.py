"""Fixtures of the run-record and MLflow-mirror tests: a real ``mlflow server`` (started once per session) behind
an auth proxy (``mirror_support``), a fresh local store, and a clean environment for every test."""

from __future__ import annotations

import os

import pytest

import ls.runs.mirror as mirror_module

from .mirror_support import AuthProxy, MlflowServer


@pytest.fixture(autouse=True)
def _clean_mirror_environment():
    """Every test starts without MLflow settings in the environment and without cached clients, and leaves
    none behind: ``ls.runs.mirror.client_for`` writes credentials and HTTP timeouts into ``os.environ`` (MLflow
    reads them from there) for the rest of the process."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k != "MLFLOW_DISABLE_TELEMETRY"]:
        del os.environ[key]
    clients, written = dict(mirror_module._CLIENTS), dict(mirror_module._HTTP_ENV_WRITTEN)
    mirror_module._CLIENTS.clear()
    mirror_module._HTTP_ENV_WRITTEN.clear()
    yield
    os.environ.clear()
    os.environ.update(saved)
    mirror_module._CLIENTS.clear()
    mirror_module._CLIENTS.update(clients)
    mirror_module._HTTP_ENV_WRITTEN.clear()
    mirror_module._HTTP_ENV_WRITTEN.update(written)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite store, proxied artifacts) behind the auth proxy.

    ``mlflow_server.backend`` is the server itself (``uri``, ``kill()``, ``launch()``, ``wait_healthy()``).
    """
    backend = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    backend.start()
    proxy = AuthProxy(backend)
    yield proxy
    proxy.reset()
    proxy.server.shutdown()
    backend.stop()


@pytest.fixture
def proxy(mlflow_server):
    """The session server's proxy, restored to "up" after the test whatever happened."""
    yield mlflow_server
    mlflow_server.reset()
    assert mlflow_server.backend.wait_healthy(180), "a test left the mlflow server down"


@pytest.fixture
def local_store(tmp_path, monkeypatch, mlflow_db) -> str:
    """The URI of a fresh SQLite store in ``tmp_path``, which is also the working directory (MLflow puts a
    local store's artifacts under ``./mlruns``)."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{mlflow_db}"
