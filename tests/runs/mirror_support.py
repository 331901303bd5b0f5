"""Pieces of the run-record and MLflow-mirror tests: a real ``mlflow server`` in its own process group and a
tiny Basic-auth reverse proxy in front of it (MLflow's own auth app needs Flask-WTF, which is not installed), so
that wrong credentials, a server that answers 503, one that hangs and one that disappears can be tested for
real. The fixtures that use them are in ``conftest.py``.
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
from pathlib import Path

import pytest

USER, PASSWORD = "alice", "s3cret-Qx7"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refused_uri():
    """``http://127.0.0.1:<port>`` of a socket that is bound and never listens: connections are refused, and
    no other process can take the port while the block runs."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}"


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class MlflowServer:
    """``mlflow server`` in its own process group, so that :meth:`kill` takes down uvicorn too (a crash)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
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
        wait_until(lambda: self.healthy() or self.proc.poll() is not None, timeout, 0.2)
        return self.healthy()

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
            self.port = free_port()
        pytest.fail("mlflow server did not start:\n" + self.log_tail())

    def kill(self) -> None:
        """SIGKILL the whole server (mlflow CLI + uvicorn worker): a crash, nothing is shut down cleanly."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        assert wait_until(lambda: not self.healthy(), 10)

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


class AuthProxy:
    """Forward HTTP to the MLflow server if the Basic credentials match.

    ``down=True`` drops every connection; ``hang=True`` accepts connections and never answers (a hung
    server); ``fail_next=n`` answers the next n requests with 503. ``requests`` counts what arrived.
    """

    def __init__(self, backend: MlflowServer) -> None:
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
                conn = http.client.HTTPConnection("127.0.0.1", proxy.backend.port, timeout=30)
                try:
                    skip = ("host", "authorization")
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # the server behind is dead: behave like it
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                finally:
                    conn.close()
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


def tiny_training_config(data: Path, tmp_path: Path, epochs: int = 3, *overrides: str):
    """The quickstart config on the session's synthetic folder, ``epochs`` epochs, checkpoints in tmp_path."""
    from ls.config import load_config

    return load_config(REPO / "configs" / "quickstart.yaml", [
        f"dataset.data_folder={data}", f"training.epochs={epochs}", f"training.checkpoint_dir={tmp_path / 'ck'}",
        "training.scheduler.warmup_epochs=1", *overrides,
    ])  # fmt: skip
