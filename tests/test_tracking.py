"""ls.engine.tracking against a real ``mlflow server`` on 127.0.0.1 (started once per session).

A tiny Basic-auth reverse proxy stands in front of the server (MLflow's own auth app needs Flask-WTF, which
is not installed) so that wrong credentials, and a server that disappears mid-run, can be tested for real.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from ls.engine.tracking import (
    DEFAULT_TRACKING_URI,
    Tracker,
    TrackingError,
    TrackingSettings,
    replay_fallback,
    resolve_settings,
)

USER, PASSWORD = "alice", "s3cret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class _MlflowServer:
    """``mlflow server`` in its own process group, so that :meth:`kill` takes down uvicorn too (a crash)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                return True
        except OSError:
            return False

    def launch(self) -> None:
        """Start the server (same port, same backend store each time) without waiting for it."""
        self.starts += 1
        log = (self.root / f"server{self.starts}.log").open("w")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: faster start
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()

    def wait_healthy(self, timeout: float = 180) -> bool:
        _wait_until(lambda: self._healthy() or self.proc.poll() is not None, timeout, 0.2)
        return self._healthy()

    def log_tail(self) -> str:
        return (self.root / f"server{self.starts}.log").read_text()[-3000:]

    def start(self) -> None:
        for _ in range(3):  # the free port may be taken between probing and binding: try another one
            self.launch()
            if self.wait_healthy():
                return
            self.stop()
            if "address already in use" not in self.log_tail().lower():
                break
            self.port = _free_port()
        pytest.fail("mlflow server did not start:\n" + self.log_tail())

    def kill(self) -> None:
        """SIGKILL the whole server (mlflow CLI + uvicorn worker): a crash, nothing is shut down cleanly."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        assert _wait_until(lambda: not self._healthy(), 10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


class _AuthProxy:
    """Forward HTTP to the MLflow server if the Basic credentials match.

    ``down=True`` drops every connection; ``hang=True`` accepts connections and never answers (a hung
    server); ``fail_next=n`` answers the next n requests with 503. ``requests`` counts what arrived.
    """

    def __init__(self, backend: _MlflowServer) -> None:
        self.backend = backend
        self.down = False
        self.hang = False
        self.fail_next = 0
        self.requests = 0
        self.release = threading.Event()  # set at teardown: hung handlers return
        proxy = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _forward(self):
                proxy.requests += 1
                if proxy.hang:
                    proxy.release.wait(120)
                    self.close_connection = True
                    return
                if proxy.down:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if proxy.fail_next > 0:
                    proxy.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.backend.port, timeout=30)
                    skip = ("host", "authorization")
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # the server behind is dead: behave like it
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.down = self.hang = False
        self.fail_next = 0
        self.release.set()
        self.release = threading.Event()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite store, proxied artifacts) behind the auth proxy.

    ``mlflow_server.backend`` is the server itself (``uri``, ``kill()``, ``launch()``, ``wait_healthy()``).
    """
    backend = _MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    backend.start()
    proxy = _AuthProxy(backend)
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
def fast_http(monkeypatch):
    """No retries/back-off on failed HTTP calls, so failure tests are quick."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _settings(proxy, tmp_path, password=PASSWORD, experiment="test-tracking") -> TrackingSettings:
    return TrackingSettings(proxy.uri, experiment, USER, password, fallback_dir=str(tmp_path / "fallback"))


# -- settings ---------------------------------------------------------------------------------------
def test_settings_default_to_the_store_mlflow_ui_opens(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    s = resolve_settings()
    from mlflow.tracking._tracking_service.utils import DEFAULT_TRACKING_URI as MLFLOW_DEFAULT

    assert s.tracking_uri == DEFAULT_TRACKING_URI == MLFLOW_DEFAULT
    assert s.username is None and s.password is None


def test_settings_file_beats_environment_and_null_password_is_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-host:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    path = tmp_path / "mlflow.yaml"
    path.write_text("tracking_uri: http://file-host:5000\ntracking_username: bob\ntracking_password: null\n")
    s = resolve_settings(mlflow_yaml=path)
    assert s.tracking_uri == "http://file-host:5000"
    assert s.experiment_name == "from-env"
    assert (s.username, s.password) == ("bob", None)


def test_settings_file_with_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "mlflow.yaml"
    path.write_text("tracking_url: http://typo:5000\n")
    with pytest.raises(ValueError, match="tracking_url"):
        resolve_settings(mlflow_yaml=path)


# -- failures before training ----------------------------------------------------------------------
def test_unreachable_uri_fails_with_a_clear_message(tmp_path, fast_http):
    with socket.socket() as closed:  # bound, never listening: connections are refused, and no other
        closed.bind(("127.0.0.1", 0))  # process can take the port while the test runs
        uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
        tracker = Tracker(TrackingSettings(uri, "x", fallback_dir=str(tmp_path)))
        t0 = time.time()
        with pytest.raises(TrackingError, match="unreachable") as info:
            tracker.check_connection()
    assert uri in str(info.value)
    assert time.time() - t0 < 30


@pytest.mark.slow
def test_wrong_credentials_fail_with_a_clear_message(mlflow_server, tmp_path, fast_http):
    tracker = Tracker(_settings(mlflow_server, tmp_path, password="wrong"))
    with pytest.raises(TrackingError, match="credentials"):
        tracker.check_connection()


# -- logging against the real server ---------------------------------------------------------------
@pytest.mark.slow
def test_run_params_metrics_artifacts_and_nested_runs_reach_the_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(_settings(mlflow_server, tmp_path))
    tracker.check_connection()
    parent_id = tracker.start_run("parent", tags={"variant": "ast"})
    tracker.log_params({f"p{i}": i for i in range(150)})  # > 100: several batches
    tracker.log_metrics({"val/icbhi_score": 0.5, "train/loss": 0.7, "nan_is_skipped": float("nan")}, step=1)
    tracker.log_metrics({"val/icbhi_score": 0.6}, step=2)
    art = tmp_path / "config.yaml"
    art.write_text("seed: 1\n")
    tracker.log_artifact(art)
    child = tracker.child("seed42", tags={"seed": "42"})
    child.log_metrics({"test/icbhi_score": 0.55}, step=3)
    child.end_run()
    tracker.end_run()

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(parent_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["p149"] == "149" and run.data.tags["variant"] == "ast"
    history = client.get_metric_history(parent_id, "val/icbhi_score")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.5), (2, 0.6)]
    assert "nan_is_skipped" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(parent_id)] == ["config.yaml"]
    kid = client.get_run(child.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent_id
    assert kid.data.metrics["test/icbhi_score"] == 0.55


@pytest.mark.slow
def test_server_lost_mid_run_keeps_every_record_locally_and_replays(mlflow_server, tmp_path, fast_http):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(_settings(mlflow_server, tmp_path))
    run_id = tracker.start_run("interrupted")
    tracker.log_metrics({"loss": 1.0}, step=1)
    mlflow_server.down = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker.log_metrics({"loss": 0.5}, step=2)  # training goes on
            tracker.log_metrics({"loss": 0.25}, step=3)
            tracker.end_run()
        assert any("recorded locally" in str(w.message) for w in caught)
        lines = Path(tracker.fallback_path).read_text().splitlines()
        assert len(lines) == 2 and '"loss": 0.25' in lines[1]
    finally:
        mlflow_server.down = False
    # Back online: the buffered records are uploaded into the same run.
    again = Tracker(_settings(mlflow_server, tmp_path))
    again.start_run(run_id=run_id)
    assert replay_fallback(tracker.fallback_path, again) == 2
    again.end_run()
    history = MlflowClient(mlflow_server.uri).get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, 0.25)]


@pytest.mark.slow
def test_tiny_model_trains_against_the_server(mlflow_server, synthetic_icbhi_dir, tmp_path):
    """The real stack (data, SoftFiLM, Trainer, runner) logs a complete run to the server."""
    from mlflow.tracking import MlflowClient

    from ls.config import load_config
    from ls.engine.runner import train_run

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml", [
        f"dataset.data_folder={synthetic_icbhi_dir}", "training.epochs=2", f"training.checkpoint_dir={tmp_path}",
    ])  # fmt: skip
    tracker = Tracker(_settings(mlflow_server, tmp_path, experiment="test-train"))
    tracker.check_connection()
    outcome = train_run(cfg, "ast_film_soft", tracker=tracker, progress=False)
    run = MlflowClient(mlflow_server.uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and not tracker.offline
    assert run.data.tags["selection"] == "strict" and run.data.tags["variant"] == "ast_film_soft"
    assert run.data.params["models.ast_film_soft.model_size"] == "tiny224"
    assert run.data.metrics["test/icbhi_score"] == pytest.approx(outcome.test_metrics["icbhi_score"])
    history = MlflowClient(mlflow_server.uri).get_metric_history(outcome.run_id, "val/icbhi_score")
    assert sorted(m.step for m in history) == [1, 2]
