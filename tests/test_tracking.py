"""ls.engine.tracking against a real ``mlflow server`` on 127.0.0.1 (started once per session).

A tiny Basic-auth reverse proxy stands in front of the server (MLflow's own auth app needs Flask-WTF, which
is not installed) so that wrong credentials, and a server that disappears mid-run, can be tested for real.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import logging
import os
import shlex
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
    REDACTED,
    Tracker,
    TrackingError,
    TrackingSettings,
    configure_telemetry,
    open_hint,
    redact_params,
    replay_buffer,
    replay_fallback,
    resolve_settings,
)

USER, PASSWORD = "alice", "s3cret"
REPO = Path(__file__).resolve().parents[1]


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


#: Failure handling tuned for tests: quick back-off and frequent probes.
FAST = {"backoff_s": 0.02, "probe_interval_s": 0.2, "max_probe_interval_s": 0.5, "probe_timeout_s": 1.0}


def _settings(proxy, tmp_path, password=PASSWORD, experiment="test-tracking", **kw) -> TrackingSettings:
    fallback = str(tmp_path / "fallback")
    return TrackingSettings(proxy.uri, experiment, USER, password, fallback_dir=fallback, **kw)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


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
def _bind_port_containing(sock: socket.socket, digits: str) -> int:
    for port in range(20000, 65000):
        if digits in str(port):
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                return port
    raise RuntimeError(f"no free port containing {digits}")


def test_unreachable_uri_fails_with_a_clear_message(tmp_path, fast_http):
    with socket.socket() as closed:  # bound, never listening: connections are refused, and no other
        # process can take the port while the test runs. Its number holds "401": that is no auth failure.
        uri = f"http://127.0.0.1:{_bind_port_containing(closed, '401')}"
        tracker = Tracker(TrackingSettings(uri, "x", fallback_dir=str(tmp_path)))
        t0 = time.time()
        with pytest.raises(TrackingError, match="unreachable") as info:
            tracker.check_connection()
    assert uri in str(info.value)
    assert time.time() - t0 < 30


@pytest.mark.slow
def test_wrong_credentials_fail_with_a_clear_message(mlflow_server, tmp_path, fast_http):
    tracker = Tracker(_settings(mlflow_server, tmp_path, password="wrong-password"))
    with pytest.raises(TrackingError, match="credentials") as info:
        tracker.check_connection()
    assert "wrong-password" not in str(info.value)


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
def test_server_lost_mid_run_keeps_every_record_locally_and_replays(proxy, tmp_path, fast_http, capsys):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(_settings(proxy, tmp_path))
    run_id = tracker.start_run("interrupted")
    tracker.log_metrics({"loss": 1.0}, step=1)
    proxy.down = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"loss": 0.5}, step=2)  # training goes on
        tracker.log_metrics({"loss": 0.25}, step=3)
        tracker.end_run()
    assert any("recorded locally" in str(w.message) for w in caught)
    lines = Path(tracker.fallback_path).read_text().splitlines()
    assert len(lines) == 3 and '"loss": 0.25' in lines[1] and '"end": "FINISHED"' in lines[2]
    assert tracker.replay_command in capsys.readouterr().err
    proxy.down = False
    # Back online: the buffered data records are uploaded into the same run (old-style manual replay).
    again = Tracker(_settings(proxy, tmp_path))
    again.start_run(run_id=run_id)
    assert replay_fallback(tracker.fallback_path, again) == 2
    again.end_run()
    history = _history(MlflowClient(proxy.uri), run_id, "loss")
    assert history == [(1, 1.0), (2, 0.5), (3, 0.25)]


@pytest.mark.slow
def test_tiny_model_trains_against_the_server(mlflow_server, synthetic_icbhi_dir, tmp_path):
    """The real stack (data, SoftFiLM, Trainer, runner) logs a complete run to the server."""
    from mlflow.tracking import MlflowClient

    from ls.config import load_config
    from ls.train import train_run

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


# -- self-healing -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_call_is_retried_with_backoff(proxy, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(_settings(proxy, tmp_path, experiment="test-retry", backoff_s=0.05))
    run_id = tracker.start_run("retried")
    proxy.fail_next = 2  # two 503s, then the server answers
    t0 = time.monotonic()
    tracker.log_metrics({"loss": 0.5}, step=1)
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backed off 0.05 s, then 0.1 s
    assert proxy.fail_next == 0 and not tracker.offline
    tracker.end_run()
    assert _history(MlflowClient(proxy.uri), run_id, "loss") == [(1, 0.5)]


@pytest.mark.slow
def test_a_record_the_server_rejects_is_dropped_with_a_warning_and_logging_goes_on(proxy, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(_settings(proxy, tmp_path, experiment="test-rejected"))
    run_id = tracker.start_run("rejected")
    tracker.log_params({"lr": 0.1})
    with pytest.warns(UserWarning, match="rejected"):
        tracker.log_params({"lr": 0.2})  # MLflow params are immutable: 400, retrying or buffering cannot help
    assert not tracker.offline and tracker.fallback_path is not None and not tracker.fallback_path.exists()
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.end_run()
    run = MlflowClient(proxy.uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.1" and run.data.metrics["loss"] == 1.0


@pytest.mark.slow
def test_offline_probes_are_rate_limited_and_end_run_heals(proxy, tmp_path):
    from mlflow.tracking import MlflowClient

    settings = _settings(proxy, tmp_path, experiment="test-probes", backoff_s=0.01, probe_interval_s=0.25,
                         max_probe_interval_s=0.25)
    tracker = Tracker(settings, buffer_dir=tmp_path / "run")
    run_id = tracker.start_run("probes")
    proxy.down = True
    before = proxy.requests
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(20):
            tracker.log_metrics({"x": float(epoch)}, step=epoch)
            time.sleep(0.03)
    elapsed = time.monotonic() - t0
    probes = proxy.requests - before - settings.attempts  # the first failing call made `attempts` requests
    assert 0 < probes <= elapsed / settings.probe_interval_s + 1
    assert tracker.offline and len(tracker.fallback_path.read_text().splitlines()) == 20
    proxy.down = False
    tracker.end_run()  # the last attempt ignores the probe schedule: the server is back, so it heals
    assert not tracker.offline and tracker.replay_command is None
    client = MlflowClient(proxy.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _history(client, run_id, "x") == [(e, float(e)) for e in range(20)]


@pytest.mark.slow
def test_buffers_live_in_run_folders_and_a_run_created_while_away_is_created_when_back(
    proxy, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    settings = TrackingSettings(proxy.uri, "test-pending", USER, PASSWORD, **FAST)  # default fallback_dir
    parent = Tracker(settings, buffer_dir=tmp_path / "runs" / "parent")
    parent_id = parent.start_run("kfold")
    proxy.down = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parent.log_metrics({"x": 1.0}, step=1)
        child = parent.child("fold0", tags={"fold": 0})  # the server is away: a pending run
        assert child.run_id is None
        child.set_buffer_dir(tmp_path / "runs" / "fold0")
        child.log_metrics({"val/score": 0.5}, step=1)
    assert (tmp_path / "runs" / "parent" / "mlflow_buffer" / parent_id / "records.jsonl").is_file()
    assert child.buffer_path.parent == tmp_path / "runs" / "fold0" / "mlflow_buffer"
    assert (child.buffer_path / "records.jsonl").is_file()
    assert not (tmp_path / "mlflow_fallback").exists()  # nothing in the working directory
    proxy.down = False
    time.sleep(FAST["max_probe_interval_s"] + 0.05)  # let the next probe be due
    child.log_metrics({"val/score": 0.6}, step=2)  # probe -> create the run -> replay -> online
    assert child.run_id is not None and not child.offline
    child.end_run()
    parent.end_run()  # uploads the parent's own buffered record
    client = MlflowClient(proxy.uri)
    kid = client.get_run(child.run_id)
    assert kid.info.status == "FINISHED" and kid.info.run_name == "fold0"
    assert kid.data.tags["mlflow.parentRunId"] == parent_id and kid.data.tags["fold"] == "0"
    assert _history(client, child.run_id, "val/score") == [(1, 0.5), (2, 0.6)]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert _history(client, parent_id, "x") == [(1, 1.0)]


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_heals_and_the_run_ends_finished(
    proxy, tmp_path, capsys, monkeypatch
):
    """Run A heals by itself when the server is back; run B ends while it is down and is replayed by the
    printed command (twice: the second time uploads nothing)."""
    from mlflow.tracking import MlflowClient

    from ls.tracking import main

    backend = proxy.backend
    a = Tracker(TrackingSettings(backend.uri, "test-heal", **FAST), buffer_dir=tmp_path / "run_a")
    a.check_connection()
    run_a = a.start_run("killed-and-restarted")
    a.log_params({"lr": 0.1})
    b = Tracker(_settings(proxy, tmp_path, experiment="test-heal", **FAST), buffer_dir=tmp_path / "run_b")
    run_b = b.start_run("ended-while-down")
    epoch = 0

    def train_epoch(*trackers):
        nonlocal epoch
        epoch += 1
        for t in trackers:
            t.log_metrics({"train/loss": 1.0 / epoch, "val/score": epoch / 100}, step=epoch)

    train_epoch(a, b)
    train_epoch(a, b)
    backend.kill()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_epoch(a, b)
        train_epoch(a, b)
        (tmp_path / "best.txt").write_text("weights\n")
        a.log_artifact(tmp_path / "best.txt", "checkpoints")
        b.end_run()
    assert a.offline and b.offline
    assert any("recorded locally" in str(w.message) for w in caught)
    assert b.replay_command in capsys.readouterr().err
    t_restart = time.monotonic()
    backend.launch()  # same port, same backend store; training goes on while it boots
    while a.offline and time.monotonic() - t_restart < 120:
        train_epoch(a)
        time.sleep(0.4)
    heal_s = time.monotonic() - t_restart
    assert not a.offline, "run A did not reconnect:\n" + backend.log_tail()
    train_epoch(a)
    a.end_run()
    with capsys.disabled():
        print(f"\n[measure] kill/restart: healed {heal_s:.1f} s after the restart began, epochs 1..{epoch}")

    client = MlflowClient(backend.uri)
    run = client.get_run(run_a)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    assert [s for s, _ in _history(client, run_a, "train/loss")] == list(range(1, epoch + 1))
    assert _history(client, run_a, "val/score") == [(e, e / 100) for e in range(1, epoch + 1)]
    assert [f.path for f in client.list_artifacts(run_a, "checkpoints")] == ["checkpoints/best.txt"]
    assert client.get_run(run_b).info.status == "RUNNING"  # ended while the server was down

    # The printed command, exactly as printed (run in-process: same argv as `python -m ls.tracking`).
    argv = shlex.split(b.replay_command)
    assert argv[:4] == [sys.executable, "-m", "ls.tracking", "replay"]
    assert Path(argv[4]) == b.buffer_path and b.buffer_path.is_relative_to(tmp_path / "run_b")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert main(argv[3:]) == 0
    out = capsys.readouterr().out
    assert "uploaded 3 record(s)" in out and "ended FINISHED" in out and PASSWORD not in out
    assert client.get_run(run_b).info.status == "FINISHED"
    expected_b = [(e, 1.0 / e) for e in range(1, 5)]
    assert _history(client, run_b, "train/loss") == expected_b
    assert main(["replay", str(tmp_path / "run_b")]) == 0  # idempotent: the buffer is marked replayed
    assert "already replayed" in capsys.readouterr().out
    assert _history(client, run_b, "train/loss") == expected_b


@pytest.mark.slow
def test_a_hung_server_costs_a_bounded_total_stall(proxy, tmp_path, monkeypatch):
    """A server that accepts connections and never answers: one short timeout, then rare short probes
    until the stall budget is spent, then one last probe per run at the end -- not a timeout per call,
    also not for a nested run that shares the connection."""
    from mlflow.tracking import MlflowClient

    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    settings = _settings(proxy, tmp_path, experiment="test-hung", http_timeout_s=1, backoff_s=0.02,
                         probe_interval_s=0.2, max_probe_interval_s=0.2, probe_timeout_s=0.2, max_stall_s=1.5)
    parent = Tracker(settings, buffer_dir=tmp_path / "run")
    parent_id = parent.start_run("hung")
    child = parent.child("member")
    parent.log_metrics({"loss": 1.0}, step=0)
    child.log_metrics({"loss": 1.0}, step=0)
    proxy.hang = True
    hung_before = proxy.requests
    epochs, pause = 20, 0.05
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(1, epochs + 1):
            parent.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
            child.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
            time.sleep(pause)
        child.end_run()
        parent.end_run()
    stall = time.monotonic() - t0 - epochs * pause
    bound = settings.http_timeout_s + settings.max_stall_s + 2 * settings.probe_timeout_s + 1.0
    print(f"\n[measure] hung server: {stall:.2f} s total stall over {epochs} epochs of 2 runs + 2 end_run "
          f"(bound {bound:.2f} s)")
    assert stall < bound
    assert proxy.requests - hung_before >= 1 + 1 + 2  # the call that timed out, probes, one per end_run
    assert parent.offline and child.offline and parent.replay_command and child.replay_command
    proxy.reset()
    reports = replay_buffer(tmp_path / "run", settings)  # both buffers live under the run folder
    assert len(reports) == 2 and all(r.complete and r.uploaded == epochs + 1 for r in reports)
    client = MlflowClient(proxy.uri)
    for run_id in (parent_id, child.run_id):
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [s for s, _ in _history(client, run_id, "loss")] == list(range(epochs + 1))


def test_check_connection_to_a_hung_socket_gives_up_quickly(tmp_path, monkeypatch):
    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    held: list[socket.socket] = []
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        srv.settimeout(0.1)

        def accept_forever():
            while srv.fileno() != -1:
                with contextlib.suppress(OSError):
                    held.append(srv.accept()[0])  # accept and never answer

        threading.Thread(target=accept_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
        tracker = Tracker(TrackingSettings(uri, "x", http_timeout_s=1, fallback_dir=str(tmp_path)))
        t0 = time.monotonic()
        with pytest.raises(TrackingError, match="unreachable"):
            tracker.check_connection()
        assert time.monotonic() - t0 < 4
    for conn in held:
        conn.close()


# -- hints, telemetry, secrets -----------------------------------------------------------------------
def test_open_hint_is_a_url_for_a_server_and_an_absolute_mlflow_ui_command_for_a_local_store(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    http_hint = open_hint(TrackingSettings(f"http://{USER}:{PASSWORD}@127.0.0.1:5000/", "x"))
    assert http_hint == "open http://127.0.0.1:5000 in a browser"
    assert open_hint(TrackingSettings("https://mlflow.example.org", "x"), run_id="r1", experiment_id="7") == (
        "open https://mlflow.example.org/#/experiments/7/runs/r1 in a browser"
    )
    assert shlex.split(open_hint(TrackingSettings("sqlite:///mlflow.db", "x"))) == [
        "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"
    ]
    assert shlex.split(open_hint(TrackingSettings(f"sqlite:///{tmp_path}/a.db", "x")))[-1] == (
        f"sqlite:///{tmp_path}/a.db"
    )
    assert shlex.split(open_hint(TrackingSettings("mlruns", "x")))[-1] == (tmp_path / "mlruns").as_uri()


def test_mlflow_telemetry_is_off_in_a_fresh_process(mlflow_server, tmp_path):
    """After building a tracker MLflow's telemetry is off and nothing but the tracking server was looked up.

    The child process has no CI/pytest markers (MLflow turns telemetry off by itself there), so only ls
    can have turned it off. (The server's own store is used: a new sqlite store costs seconds of migrations.)
    """
    ci_markers = {
        "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "JENKINS_URL", "TRAVIS",
        "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
        "CLOUD_RUN_EXECUTION", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "LS_MLFLOW_TELEMETRY",
    }
    env = {k: v for k, v in os.environ.items() if k not in ci_markers and not k.startswith("RUNBOT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    code = (
        "import socket, sys, time\n"
        "hosts = []\n"
        "real = socket.getaddrinfo\n"
        "socket.getaddrinfo = lambda host, *a, **k: (hosts.append(host), real(host, *a, **k))[1]\n"
        "from ls.engine.tracking import Tracker, TrackingSettings\n"
        "t = Tracker(TrackingSettings(sys.argv[1], 'test-telemetry'))\n"
        "t.check_connection(); t.start_run('r'); t.log_metrics({'m': 1.0}, step=1); t.end_run()\n"
        "time.sleep(0.3)\n"
        "import mlflow.telemetry.utils as u\n"
        "from mlflow.telemetry import get_telemetry_client\n"
        "print(u._IS_IN_CI_ENV_OR_TESTING, u._IS_MLFLOW_DEV_VERSION)\n"
        "print(u.is_telemetry_disabled(), get_telemetry_client() is None, sorted(set(map(str, hosts))))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, mlflow_server.backend.uri], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    mlflow_would_skip, result = res.stdout.strip().splitlines()[-2:]
    if mlflow_would_skip != "False False":
        pytest.skip(f"MLflow disables telemetry in this environment anyway ({mlflow_would_skip})")
    assert result == "True True ['127.0.0.1']"


def test_telemetry_opt_in_and_an_explicit_user_choice_are_respected(monkeypatch):
    for var in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "LS_MLFLOW_TELEMETRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LS_MLFLOW_TELEMETRY", "1")
    assert configure_telemetry() is False and "MLFLOW_DISABLE_TELEMETRY" not in os.environ
    monkeypatch.delenv("LS_MLFLOW_TELEMETRY")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's own choice
    assert configure_telemetry() is False and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    assert configure_telemetry() is True and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_a_telemetry_client_started_before_ls_is_stopped(monkeypatch):
    import mlflow.telemetry.client as telemetry

    class FakeClient:
        terminated = False

        def flush(self, terminate=False):
            self.terminated = terminate

    fake = FakeClient()
    monkeypatch.setattr(telemetry, "_MLFLOW_TELEMETRY_CLIENT", fake)  # as if `import mlflow` came first
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("LS_MLFLOW_TELEMETRY", raising=False)
    assert configure_telemetry() is True
    assert fake.terminated and telemetry.get_telemetry_client() is None


def test_redact_params_masks_credential_keys_and_secrets_in_values():
    params = {
        "mlflow.tracking_password": PASSWORD, "mlflow.tracking_username": USER, "hf_token": "abc",
        "aws_secret_access_key": "k", "api_key": "k", "mlflow.tracking_uri": f"https://{USER}:{PASSWORD}@h:1/x",
        "note": f"the password is {PASSWORD}", "mlflow.tracking_password_unset": None,
        "training.partial_credit": True, "models.ast.num_tokens": 514, "tokenizer": "bpe", "lr": 0.1,
    }
    safe = redact_params(params, secrets=[PASSWORD])
    assert PASSWORD not in json.dumps(safe) and USER not in json.dumps(safe)
    for key in ("mlflow.tracking_password", "mlflow.tracking_username", "hf_token", "aws_secret_access_key",
                "api_key"):
        assert safe[key] == REDACTED
    assert safe["mlflow.tracking_uri"] == f"https://{REDACTED}@h:1/x"
    assert safe["mlflow.tracking_password_unset"] is None
    for key in ("training.partial_credit", "models.ast.num_tokens", "tokenizer", "lr"):
        assert safe[key] == params[key]
    assert PASSWORD not in repr(TrackingSettings("u", "e", USER, PASSWORD))


@pytest.mark.slow
def test_no_secret_in_params_tags_artifacts_buffer_files_or_messages(proxy, tmp_path, capsys, caplog):
    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.DEBUG)
    settings = _settings(proxy, tmp_path, experiment="test-secrets", **FAST)
    uri_with_password = f"http://{USER}:{PASSWORD}@mlflow.example.org:5000"
    config = tmp_path / "config.yaml"
    config.write_text(f"mlflow:\n  tracking_uri: {uri_with_password}\n  tracking_password: {PASSWORD}\n")
    binary = tmp_path / "best.pt"
    binary.write_bytes(b"\x80\x02weights" + PASSWORD.encode() + b"\x00")
    tracker = Tracker(settings, buffer_dir=tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_id = tracker.start_run("secrets", tags={"hf_token": "hf-" + PASSWORD})
        tracker.log_params({"mlflow.tracking_password": PASSWORD, "mlflow.tracking_username": USER,
                            "mlflow.tracking_uri": uri_with_password, "note": f"pw={PASSWORD}", "lr": 0.1})
        tracker.log_artifact(config)  # a redacted copy is uploaded
        proxy.down = True
        tracker.log_params({"late.api_key": PASSWORD, "late.uri": uri_with_password})  # buffered
        tracker.set_tags({"late_secret": PASSWORD})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_artifact(config, "late")
        tracker.log_artifact(binary)  # refused: it holds the password
        tracker.end_run()
        files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
        leaked = [f for f in files if PASSWORD.encode() in f.read_bytes()]
        assert not leaked and tracker.buffer_path.is_relative_to(tmp_path / "run")
        proxy.down = False
        (report,) = replay_buffer(tmp_path / "run", settings)
        assert report.complete and report.ended == "FINISHED"
    messages = [str(w.message) for w in caught]
    assert any("redacted copy" in m for m in messages) and any("NOT uploaded" in m for m in messages)
    for text in [*messages, caplog.text, *capsys.readouterr()]:
        assert PASSWORD not in text
    client = MlflowClient(proxy.uri)
    run = client.get_run(run_id)
    logged = json.dumps({**run.data.params, **run.data.tags})
    assert PASSWORD not in logged and f"{USER}:" not in logged
    assert run.data.params["mlflow.tracking_password"] == REDACTED
    assert run.data.params["mlflow.tracking_username"] == REDACTED
    assert run.data.params["lr"] == "0.1" and run.data.metrics["loss"] == 1.0
    paths = sorted(a.path for a in client.list_artifacts(run_id))
    paths += [a.path for a in client.list_artifacts(run_id, "late")]
    assert paths == ["config.yaml", "late", "late/config.yaml"]  # best.pt was not uploaded
    for path in ("config.yaml", "late/config.yaml"):
        dest = tmp_path / "dl" / path.replace("/", "_")
        dest.mkdir(parents=True)
        text = Path(client.download_artifacts(run_id, path, str(dest))).read_text()
        assert PASSWORD not in text and REDACTED in text


@pytest.mark.slow
def test_replay_cli_creates_a_run_that_was_never_created(proxy, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ls.tracking import main

    tracker = Tracker(_settings(proxy, tmp_path, experiment="test-never-created", **FAST),
                      buffer_dir=tmp_path / "run")
    tracker.check_connection()
    proxy.down = True  # away from the start of the run to its end
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert tracker.start_run("offline-all-along", tags={"variant": "ast"}) is None
        tracker.log_params({"lr": 0.1})
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.end_run("FAILED")
    proxy.down = False
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert main(["replay", str(tmp_path / "run"), "--experiment", "test-replayed-elsewhere"]) == 0
    assert "ended FAILED" in capsys.readouterr().out
    client = MlflowClient(proxy.uri)
    exp = client.get_experiment_by_name("test-replayed-elsewhere")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "offline-all-along" and run.info.status == "FAILED"
    assert run.data.tags["variant"] == "ast" and run.data.params["lr"] == "0.1"
    assert run.data.metrics["loss"] == 0.5


def test_replay_cli_without_a_buffer_is_a_clear_error(tmp_path, capsys):
    from ls.tracking import main

    assert main(["replay", str(tmp_path)]) == 2
    assert "no MLflow buffer" in capsys.readouterr().err


def test_replay_cli_names_a_corrupt_buffer_file_in_one_line_and_accepts_traceback(tmp_path, capsys, monkeypatch):
    from ls.tracking import main

    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    buffer = tmp_path / "run" / "mlflow_buffer" / "r1"
    buffer.mkdir(parents=True)
    (buffer / "buffer.json").write_text('{"format": 1, "replayed": 0, "sta')  # cut by a crash
    assert main(["replay", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith(f"error: {buffer / 'buffer.json'}: not a readable MLflow buffer file (")
    assert main(["replay", str(tmp_path / "run"), "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1] == line


# -- the application: ls.train wires the tracker ------------------------------------------------------------
def _train_softfilm(data, tmp_path, tracker):
    """A tiny SoftFiLM run through ls.train with ``tracker`` (the tracker's warnings silenced)."""
    from ls.train import train_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_run(_tiny_training_cfg(data, tmp_path), "ast_film_soft", tracker=tracker, progress=False)


def _tiny_training_cfg(data, tmp_path, epochs=3):
    from ls.config import load_config

    return load_config(REPO / "configs" / "quickstart.yaml", [
        f"dataset.data_folder={data}", f"training.epochs={epochs}", f"training.checkpoint_dir={tmp_path / 'ck'}",
        "training.scheduler.warmup_epochs=1",
    ])  # fmt: skip


@pytest.mark.slow
def test_training_through_a_server_killed_and_restarted_mid_run_ends_finished_with_every_epoch(
    proxy, synthetic_icbhi_dir, tmp_path, monkeypatch, capsys
):
    """ls.train.train_run (tiny SoftFiLM, 3 epochs) while the server is SIGKILLed after epoch 1 and restarted
    after epoch 2: the run ends FINISHED on the server with every epoch's metrics, the test metrics and the
    artifacts; while it was away the records were buffered in the run's own folder."""
    from mlflow.tracking import MlflowClient

    from ls.engine.trainer import Trainer
    from ls.train import tracking_hint

    backend = proxy.backend
    tracker = Tracker(TrackingSettings(backend.uri, "test-train-heal", **FAST))
    tracker.check_connection()
    real_begin = Trainer._begin_epoch
    seen = {}

    def begin(self, epoch):
        if epoch == 1:  # epoch 1 is logged and checkpointed
            backend.kill()
        elif epoch == 2:
            seen["buffer"] = sorted(p.name for p in (self.run_dir / "mlflow_buffer").iterdir())
            backend.launch()
            assert backend.wait_healthy(180), backend.log_tail()
        return real_begin(self, epoch)

    monkeypatch.setattr(Trainer, "_begin_epoch", begin)
    t0 = time.monotonic()
    outcome = _train_softfilm(synthetic_icbhi_dir, tmp_path, tracker)
    with capsys.disabled():
        print(f"\n[measure] training with the server killed after epoch 1, restarted after epoch 2: "
              f"{time.monotonic() - t0:.1f} s in all")
    assert seen["buffer"] == [outcome.run_id]  # the buffer lived in the run folder while the server was away
    assert not tracker.offline and tracker.replay_command is None
    client = MlflowClient(backend.uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/icbhi_score", "lr/backbone"):
        assert [m.step for m in client.get_metric_history(outcome.run_id, key)] == [1, 2, 3], key
    assert run.data.metrics["test/icbhi_score"] == pytest.approx(outcome.test_metrics["icbhi_score"])
    arts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"config.yaml", "run.json", "checkpoints"} <= arts
    assert tracking_hint(tracker) == (f"MLflow: {backend.uri} (experiment 'test-train-heal'); open "
                                      f"{backend.uri}/#/experiments/{tracker.experiment_id}/runs/{outcome.run_id} "
                                      "in a browser")


@pytest.mark.slow
def test_a_run_that_ends_while_the_server_hangs_prints_the_replay_command_of_its_folder(
    proxy, synthetic_icbhi_dir, tmp_path, monkeypatch, capsys
):
    """The server hangs from epoch 2 on: training goes on with a bounded stall, the run ends offline, its last
    line is the command that uploads the buffer kept in its folder, and that command completes the run."""
    from mlflow.tracking import MlflowClient

    from ls.engine.trainer import Trainer
    from ls.tracking import main as tracking_main
    from ls.train import tracking_hint

    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    settings = _settings(proxy, tmp_path, experiment="test-train-hung", http_timeout_s=1, backoff_s=0.02,
                         probe_interval_s=0.2, max_probe_interval_s=0.2, probe_timeout_s=0.2, max_stall_s=1.5)
    tracker = Tracker(settings)
    tracker.check_connection()
    real_begin = Trainer._begin_epoch
    in_tracker = [0.0]  # seconds spent in tracker calls once the server hangs: the stall training sees

    def timed(method):
        def call(*args, **kwargs):
            t = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                if proxy.hang:
                    in_tracker[0] += time.monotonic() - t
        return call

    for name in ("log_metrics", "log_params", "log_artifact", "set_tags", "end_run"):
        setattr(tracker, name, timed(getattr(tracker, name)))

    def begin(self, epoch):
        if epoch == 1:
            proxy.hang = True
        return real_begin(self, epoch)

    monkeypatch.setattr(Trainer, "_begin_epoch", begin)
    t0 = time.monotonic()
    outcome = _train_softfilm(synthetic_icbhi_dir, tmp_path, tracker)
    total = time.monotonic() - t0
    err = capsys.readouterr().err
    hint = tracking_hint(tracker)
    assert tracker.offline and tracker.replay_command and tracker.replay_command in err
    assert Path(shlex.split(tracker.replay_command)[4]).is_relative_to(outcome.run_dir / "mlflow_buffer")
    assert hint == (f"MLflow: {proxy.uri} stayed unreachable; the records are kept locally. Upload them when it is "
                    f"back with:\n  {tracker.replay_command}")
    bound = settings.http_timeout_s + settings.max_stall_s + 2 * settings.probe_timeout_s + 1.0
    with capsys.disabled():
        print(f"\n[measure] hung server from epoch 2: {in_tracker[0]:.2f} s spent in tracker calls (budget "
              f"{bound:.1f} s) of a {total:.1f} s run")
    assert in_tracker[0] < bound + 10  # generous: the machine is shared
    proxy.reset()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert tracking_main(shlex.split(tracker.replay_command)[3:]) == 0
    client = MlflowClient(proxy.uri)
    assert client.get_run(outcome.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val/icbhi_score")] == [1, 2, 3]
