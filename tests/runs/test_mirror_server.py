"""The MLflow mirror against a real ``mlflow server`` (session fixture, behind an auth proxy): credentials,
retries, a server that is away, hangs or restarts, and trainings that survive all of it with nothing lost.

Only :func:`test_training_through_a_server_killed_and_restarted_mid_run_loses_nothing` restarts the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest

from ls.runs.executor import tracking_summary
from ls.runs.mirror import (
    STATE_FILE,
    Mirror,
    TrackingError,
    TrackingSettings,
    check_connection,
    resolve_settings,
    sync,
)
from ls.runs.record import EventLog, RunRecord
from ls.runs.secrets import REDACTED
from ls.tracking import main as tracking_main

from .mirror_support import PASSWORD, REPO, USER, tiny_training_config

# One real MLflow server per session: all these tests go to one pytest-xdist worker (scripts/test.sh).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_server")]

#: A store that is away costs little in these tests: short timeouts, frequent and short retries.
FAST = {"http_timeout_s": 1, "retry_interval_s": 0.2, "max_retry_interval_s": 0.2, "probe_timeout_s": 0.2,
        "backoff_s": 0.02}


def settings_for(proxy, experiment: str, password: str | None = PASSWORD, **kw) -> TrackingSettings:
    return TrackingSettings(proxy.uri, experiment, USER, password, **{**FAST, **kw})


def started_mirror(settings: TrackingSettings) -> Mirror:
    return Mirror(settings, experiment_id=check_connection(settings))


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def steps(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.step)]


def assert_mirrored(folder: Path, uri: str, run_id: str) -> None:
    """The store's run holds every metric value of the record exactly once (at its step), every param and tag,
    every artifact, and the record's last status."""
    events = EventLog(folder).events()
    recorded = Counter((k, e.get("step") or 0, v) for e in events if e["event"] == "metrics"
                       for k, v in e["metrics"].items())
    c = client(uri)
    stored = Counter((m.key, m.step, m.value) for key in {k for k, _, _ in recorded}
                     for m in c.get_metric_history(run_id, key))
    assert stored == recorded
    run = c.get_run(run_id)
    params = {k for e in events if e["event"] == "params" for k in e["params"]}
    tags = {k for e in events if e["event"] in ("start", "tags") for k in e["tags"]}
    assert params <= set(run.data.params) and tags <= set(run.data.tags)
    expected = {"/".join(p for p in (e.get("artifact_path"), Path(e["path"]).name) if p)
                for e in events if e["event"] == "artifact"}

    def listed(path=None):
        out = set()
        for a in c.list_artifacts(run_id, path):
            out |= listed(a.path) if a.is_dir else {a.path}
        return out

    assert expected <= listed()
    ends = [e["status"] for e in events if e["event"] == "end"]
    assert run.info.status == ends[-1]


# -- before training: a bad store fails at once, with a clear line ------------------------------------------
def _bind_port_containing(sock: socket.socket, digits: str) -> int:
    for port in range(20000, 65000):
        if digits in str(port):
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                return port
    raise RuntimeError(f"no free port containing {digits}")


def test_wrong_credentials_fail_in_check_connection_with_a_clear_line(mlflow_server):
    with pytest.raises(TrackingError) as info:
        check_connection(settings_for(mlflow_server, "test-auth", password="wrong-password"))
    text = str(info.value)
    assert text.startswith(f"MLflow tracking at '{mlflow_server.uri}' cannot be used: the server rejected the "
                           "credentials; check tracking_username/tracking_password")
    assert "wrong-password" not in text and len(text.splitlines()) == 1


def test_an_unreachable_uri_fails_in_check_connection_with_a_clear_line_and_no_password():
    with socket.socket() as closed:  # bound, never listening: connections are refused, and no other
        # process can take the port while the test runs. Its number holds "401": that is no auth failure.
        port = _bind_port_containing(closed, "401")
        settings = resolve_settings({"tracking_uri": f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"})
        t0 = time.monotonic()
        with pytest.raises(TrackingError) as info:
            check_connection(settings.replace(**FAST))
    text = str(info.value)
    assert text.startswith(f"MLflow tracking at 'http://127.0.0.1:{port}' cannot be used: the tracking store is "
                           "unreachable or invalid; check tracking_uri / MLFLOW_TRACKING_URI")
    assert PASSWORD not in text and USER not in text and len(text.splitlines()) == 1
    assert time.monotonic() - t0 < 30


def test_check_connection_to_a_hung_socket_gives_up_quickly():
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
        t0 = time.monotonic()
        with pytest.raises(TrackingError, match="unreachable"):
            check_connection(TrackingSettings(f"http://127.0.0.1:{srv.getsockname()[1]}", "x", **FAST))
        assert time.monotonic() - t0 < 4
    for conn in held:
        conn.close()


# -- while a run records ------------------------------------------------------------------------------------
def test_params_metrics_artifacts_and_nested_runs_reach_the_server(mlflow_server, tmp_path, capsys):
    mirror = started_mirror(settings_for(mlflow_server, "test-live"))
    parent = RunRecord(tmp_path / "group", mirror)
    parent.start("group", tags={"variant": "ast"})
    parent.log_params({f"p{i}": i for i in range(150)})  # more than one batch of MLflow's
    member = RunRecord(tmp_path / "group" / "seed1", mirror)
    member.start("seed1", tags={"seed": "1"}, parent=tmp_path / "group")
    for epoch in (1, 2):
        member.log_metrics({"val/score": epoch / 10, "train/loss": 1 / epoch, "nan_is_skipped": float("nan")},
                           step=epoch)
    (member.folder / "config.yaml").write_text("seed: 1\n")
    member.log_artifact(member.folder / "config.yaml")
    member.log_artifact(member.folder / "config.yaml", "copies")
    member.log_params({"lr": 0.1})
    with pytest.warns(UserWarning, match=r"MLflow rejected event\(s\) 7-7 of .*Changing param values"):
        member.log_params({"lr": 0.2})  # params are immutable: refused, and the run goes on
    member.end()
    parent.log_metrics({"test/score_mean": 0.2})
    parent.end()

    assert parent.synced and member.synced and mirror.unsynced == {}
    assert capsys.readouterr().out == ""  # MLflow's own "View run ..." lines stay out of a training's output
    c = client(mlflow_server.backend.uri)
    run = c.get_run(member.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.tags["seed"] == "1"
    assert "nan_is_skipped" not in run.data.metrics and run.data.params == {"lr": "0.1"}
    assert c.get_run(parent.run_id).data.params["p149"] == "149"
    for folder, run_id in ((parent.folder, parent.run_id), (member.folder, member.run_id)):
        assert_mirrored(folder, mlflow_server.backend.uri, run_id)
    state = json.loads((member.folder / STATE_FILE).read_text())
    assert list(state["stores"]) == [mlflow_server.uri]  # the store's URI; no credentials
    assert tracking_summary(mirror) == (f"MLflow: {mlflow_server.uri} (experiment 'test-live'); open "
                                        f"{mlflow_server.uri} in a browser")


def test_a_transient_failure_is_retried_with_back_off(proxy, tmp_path):
    mirror = started_mirror(settings_for(proxy, "test-retry", backoff_s=0.05))
    record = RunRecord(tmp_path / "run", mirror)
    record.start("retried")
    proxy.fail_next = 2  # two 503s, then the server answers
    before = proxy.requests
    t0 = time.monotonic()
    record.log_metrics({"loss": 0.5}, step=1)
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backed off 0.05 s, then 0.1 s
    assert proxy.fail_next == 0 and proxy.requests - before == 3
    assert record.synced and not mirror.down
    record.end()
    assert steps(proxy.backend.uri, record.run_id, "loss") == [1]


def test_while_the_store_is_away_tries_are_rate_limited_and_the_end_heals(proxy, tmp_path):
    """Connections refused from the first event on: the run is recorded all the same, the mirror tries again
    only every ``retry_interval_s``, and the run's end, with the store back, creates the runs (the member
    nested under its parent) and uploads everything."""
    mirror = started_mirror(settings_for(proxy, "test-away", retry_interval_s=0.25, max_retry_interval_s=0.25))
    proxy.down = True
    before = proxy.requests
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parent = RunRecord(tmp_path / "group", mirror)
        parent.start("group")
        member = RunRecord(tmp_path / "group" / "fold0", mirror)
        member.start("fold0", tags={"fold": "0"}, parent=parent.folder)
        t0 = time.monotonic()
        for epoch in range(1, 21):
            member.log_metrics({"x": float(epoch)}, step=epoch)
            time.sleep(0.03)
        elapsed = time.monotonic() - t0
    assert member.run_id is None and parent.run_id is None  # nothing could be created
    tries = proxy.requests - before - mirror.settings.attempts  # the first failing sync made `attempts` requests
    assert 0 < tries <= elapsed / 0.25 + 2
    assert next(str(w.message) for w in caught if "out of reach" in str(w.message)).startswith(
        f"MLflow at {proxy.uri} is out of reach (")
    assert len(EventLog(member.folder).events()) == 21
    proxy.down = False
    member.end()  # the last attempt ignores the schedule: the store is back
    parent.end()
    assert member.synced and parent.synced and mirror.unsynced == {}
    kid = client(proxy.backend.uri).get_run(member.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent.run_id and kid.data.tags["fold"] == "0"
    assert_mirrored(member.folder, proxy.backend.uri, member.run_id)
    assert_mirrored(parent.folder, proxy.backend.uri, parent.run_id)


def test_a_hung_server_costs_a_bounded_total_stall(proxy, tmp_path):
    """A server that accepts connections and never answers: one short timeout, then short probes until the
    stall budget is spent, then one probe per record at its end -- not a timeout per event, also not for a
    member that shares the mirror with its parent."""
    settings = settings_for(proxy, "test-hung", max_stall_s=1.5)
    mirror = started_mirror(settings)
    parent = RunRecord(tmp_path / "group", mirror)
    parent.start("hung")
    member = RunRecord(tmp_path / "group" / "seed1", mirror)
    member.start("member", parent=parent.folder)
    proxy.hang = True
    before = proxy.requests
    epochs, pause = 20, 0.05
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(1, epochs + 1):
            parent.log_metrics({"loss": 1.0 / epoch}, step=epoch)
            member.log_metrics({"loss": 1.0 / epoch}, step=epoch)
            time.sleep(pause)
        member.end()
        parent.end()
    stall = time.monotonic() - t0 - epochs * pause
    bound = settings.http_timeout_s + settings.max_stall_s + 2 * settings.probe_timeout_s + 1.0
    print(f"\n[measure] hung server: {stall:.2f} s total stall over {epochs} epochs of 2 records + 2 ends "
          f"(bound {bound:.2f} s)")
    assert stall < bound
    assert proxy.requests - before >= 1 + 1 + 2  # the call that timed out, probes, one per end
    assert set(mirror.unsynced) == {parent.folder.resolve(), member.folder.resolve()}
    proxy.reset()
    reports = sync(tmp_path / "group", settings)  # both records live under the group folder
    assert [r.complete for r in reports] == [True, True]
    for record in (parent, member):
        assert_mirrored(record.folder, proxy.backend.uri, record.run_id)
        assert steps(proxy.backend.uri, record.run_id, "loss") == list(range(1, epochs + 1))


def test_no_secret_in_the_run_folder_on_the_server_or_in_messages(proxy, tmp_path, capsys, caplog):
    """The tracking password (given inside the URI) and credential-like keys reach no file of the run folder, no
    param or tag on the server, no warning, log line or output; a text artifact holding the password is
    recorded and uploaded redacted, a binary one neither; part of the run is recorded while the server is
    away and synced later by the command line."""
    caplog.set_level(logging.DEBUG)
    uri_with_password = f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}"  # split into username and password
    settings = resolve_settings({"tracking_uri": uri_with_password, "experiment_name": "test-secrets"}).replace(
        attempts=1, **FAST)
    outside = tmp_path / "outside"
    outside.mkdir()
    config = outside / "config.yaml"
    config.write_text(f"mlflow:\n  tracking_uri: {uri_with_password}\n  tracking_password: {PASSWORD}\n")
    binary = outside / "weights.pt"
    binary.write_bytes(b"\x80\x02weights" + PASSWORD.encode() + b"\x00")
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mirror = started_mirror(settings)
        record = RunRecord(run, mirror)
        record.start("secrets", tags={"hf_token": "hf-" + PASSWORD, "note": f"pw={PASSWORD}"})
        record.log_params({"mlflow.tracking_password": PASSWORD, "mlflow.tracking_username": USER,
                           "mlflow.tracking_uri": uri_with_password, "note": f"pw={PASSWORD}", "lr": 0.1})
        record.log_artifact(config)  # recorded and uploaded redacted
        proxy.down = True
        record.log_params({"late.api_key": PASSWORD, "late.uri": uri_with_password})  # recorded, synced later
        record.set_tags({"late_secret": PASSWORD})
        record.log_metrics({"loss": 1.0}, step=1)
        record.log_artifact(config, "late")
        record.log_artifact(binary)  # neither recorded nor uploaded: it holds the password
        record.end()
        assert not record.synced
        leaked = [f for f in run.rglob("*") if f.is_file() and PASSWORD.encode() in f.read_bytes()]
        assert not leaked
        proxy.down = False
        os.environ.update(MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
        assert tracking_main(["sync", str(run)]) == 0
    messages = [str(w.message) for w in caught]
    assert f"{config} contains a credential; the run records a redacted copy" in messages
    assert f"{binary} contains a credential; NOT recorded with the run" in messages
    for text in [*messages, caplog.text, *capsys.readouterr()]:
        assert PASSWORD not in text
    c = client(proxy.backend.uri)
    server_run = c.get_run(record.run_id)
    logged = json.dumps({**server_run.data.params, **server_run.data.tags})
    assert PASSWORD not in logged and f"{USER}:" not in logged
    assert server_run.data.params["mlflow.tracking_password"] == "None"  # stored as unset
    assert server_run.data.tags["hf_token"] == REDACTED
    assert server_run.data.params["lr"] == "0.1" and server_run.data.metrics["loss"] == 1.0
    paths = sorted(a.path for a in c.list_artifacts(record.run_id))
    paths += [a.path for a in c.list_artifacts(record.run_id, "late")]
    assert paths == ["config.yaml", "late", "late/config.yaml"]  # weights.pt was not uploaded
    for path in ("config.yaml", "late/config.yaml"):
        dest = tmp_path / "download" / path.replace("/", "_")
        dest.mkdir(parents=True)
        text = Path(c.download_artifacts(record.run_id, path, str(dest))).read_text()
        assert PASSWORD not in text and REDACTED in text


# -- trainings ----------------------------------------------------------------------------------------------
def _train(cfg, mirror, **kw):
    from ls.runs.run import train_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_run(cfg, "ast_film_soft", mirror=mirror, progress=False, **kw)


def test_training_through_a_server_killed_and_restarted_mid_run_loses_nothing(
    proxy, synthetic_icbhi_dir, tmp_path, one_thread
):
    """The one test that restarts the server: a tiny training (quickstart config, 3 epochs) while the server
    is SIGKILLed after epoch 1 and restarted after epoch 2. The run ends FINISHED in the store with every
    epoch's metrics once, the test metrics and the artifacts: nothing was lost."""
    backend = proxy.backend
    mirror = started_mirror(TrackingSettings(backend.uri, "test-train-restart", **FAST))
    seen = {}

    def outage(epoch, _metrics):
        if epoch == 1:  # epoch 1 is logged and checkpointed
            backend.kill()
        elif epoch == 2:
            seen["pending"] = mirror.pending(run_dir)
            backend.launch()  # same port, same backend store; training goes on once it answers
            assert backend.wait_healthy(180), backend.log_tail()

    cfg = tiny_training_config(synthetic_icbhi_dir, tmp_path)
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    outcome = _train(cfg, mirror, run_dir=run_dir, epoch_end=[outage])
    print(f"\n[measure] training with the server killed after epoch 1, restarted after epoch 2: "
          f"{time.monotonic() - t0:.1f} s in all")
    assert seen["pending"] > 0  # epoch 2 was recorded while the server was away
    assert mirror.unsynced == {} and not mirror.down and outcome.run_id is not None
    assert_mirrored(run_dir, backend.uri, outcome.run_id)
    run = client(backend.uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["selection"] == "strict" and run.data.tags["variant"] == "ast_film_soft"
    assert run.data.params["models.ast_film_soft.model_size"] == "tiny224"
    for key in ("train/loss", "val/icbhi_score", "lr/backbone"):
        assert steps(backend.uri, outcome.run_id, key) == [1, 2, 3], key
    assert run.data.metrics["test/icbhi_score"] == outcome.test_metrics["icbhi_score"]
    arts = {a.path for a in client(backend.uri).list_artifacts(outcome.run_id)}
    assert {"config.yaml", "run.json", "test_predictions.csv", "checkpoints", "figures"} <= arts
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == outcome.run_id
    assert tracking_summary(mirror) == (f"MLflow: {backend.uri} (experiment 'test-train-restart'); open "
                                        f"{backend.uri} in a browser")


def test_a_run_that_ends_while_the_server_hangs_prints_the_sync_command_that_completes_it(
    proxy, synthetic_icbhi_dir, tmp_path, capsys, one_thread
):
    """The server hangs from epoch 2 on: training goes on with a bounded stall, the run ends with the command
    that syncs its folder as its last words, and that command, run as printed, completes the run."""
    settings = settings_for(proxy, "test-train-hung", max_stall_s=1.5)
    mirror = started_mirror(settings)
    in_mirror = [0.0]  # seconds spent syncing once the server hangs: the stall training sees
    real_poke = mirror.poke

    def timed_poke(*args, **kwargs):
        t = time.monotonic()
        try:
            return real_poke(*args, **kwargs)
        finally:
            if proxy.hang:
                in_mirror[0] += time.monotonic() - t

    mirror.poke = timed_poke

    def hang(epoch, _metrics):
        if epoch == 1:
            proxy.hang = True

    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    outcome = _train(tiny_training_config(synthetic_icbhi_dir, tmp_path), mirror, run_dir=run_dir,
                     epoch_end=[hang])
    total = time.monotonic() - t0
    command = mirror.unsynced[run_dir.resolve()]
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"Sync it when the store is back with:\n  {command}")
    assert shlex.split(command) == [sys.executable, "-m", "ls.tracking", "sync", str(run_dir.resolve())]
    assert tracking_summary(mirror) == (f"MLflow: {proxy.uri} stayed out of reach; the records are kept in the run "
                                        f"folders. Sync them when it is back with:\n  {command}")
    bound = settings.http_timeout_s + settings.max_stall_s + 2 * settings.probe_timeout_s + 1.0
    print(f"\n[measure] hung server from epoch 2: {in_mirror[0]:.2f} s spent syncing (budget {bound:.1f} s) "
          f"of a {total:.1f} s run")
    assert in_mirror[0] < bound + 10  # generous: the machine is shared
    assert client(proxy.backend.uri).get_run(outcome.run_id).info.status == "RUNNING"

    proxy.reset()
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, timeout=180,
                         cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert PASSWORD not in res.stdout + res.stderr
    assert client(proxy.backend.uri).get_run(outcome.run_id).info.status == "FINISHED"
    assert_mirrored(run_dir, proxy.backend.uri, outcome.run_id)
    assert steps(proxy.backend.uri, outcome.run_id, "val/icbhi_score") == [1, 2, 3]


def test_ctrl_c_and_resume_continue_the_same_mlflow_run_and_match_an_uninterrupted_run_exactly(
    proxy, synthetic_icbhi_dir, tmp_path, monkeypatch, capsys, one_thread
):
    """Through the command line (``ls.train``, 2 epochs): Ctrl-C after epoch 1, then ``--resume``. The same MLflow
    run (same run id) ends FINISHED with each epoch's metrics once, and its test metrics equal, bit for bit, those
    of an uninterrupted run (same process and machine), which was trained with ``--no-tracking`` and synced
    afterwards."""
    import ls.train
    from ls.engine.trainer import Trainer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "test-resume")
    args = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--set", f"dataset.data_folder={synthetic_icbhi_dir}",
            "--set", "training.epochs=2", "--set", "training.scheduler.warmup_epochs=1"]
    real_begin = Trainer._begin_epoch

    def ctrl_c_before_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_begin(self, epoch)

    monkeypatch.setattr(Trainer, "_begin_epoch", ctrl_c_before_epoch_2)
    assert ls.train.main("ast_film_soft", [*args, "--set", f"training.checkpoint_dir={tmp_path / 'resumed'}"]) == 130
    (run_dir,) = (tmp_path / "resumed").iterdir()
    last = run_dir / "last.pt"
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"interrupted after epoch 1; continue with --resume {last}"
    (state,) = json.loads((run_dir / STATE_FILE).read_text())["stores"].values()
    run_id = state["run_id"]
    c = client(proxy.backend.uri)
    assert c.get_run(run_id).info.status == "KILLED"

    monkeypatch.setattr(Trainer, "_begin_epoch", real_begin)
    assert ls.train.main("ast_film_soft", [*args, "--set", f"training.checkpoint_dir={tmp_path / 'resumed'}",
                                           "--resume", str(last)]) == 0
    (state,) = json.loads((run_dir / STATE_FILE).read_text())["stores"].values()
    assert state["run_id"] == run_id  # the same MLflow run
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/icbhi_score", "lr/backbone", "epoch"):
        assert steps(proxy.backend.uri, run_id, key) == [1, 2], key
    assert_mirrored(run_dir, proxy.backend.uri, run_id)
    experiment = c.get_experiment_by_name("test-resume").experiment_id
    assert [r.info.run_id for r in c.search_runs([experiment])] == [run_id]

    # The uninterrupted run, recorded locally only, then synced: a --no-tracking folder can be synced later.
    assert ls.train.main("ast_film_soft", [*args, "--set", f"training.checkpoint_dir={tmp_path / 'straight'}",
                                           "--no-tracking"]) == 0
    (straight,) = (tmp_path / "straight").iterdir()
    assert not (straight / STATE_FILE).exists()
    capsys.readouterr()
    assert tracking_main(["sync", str(straight), "--experiment", "test-resume-reference"]) == 0
    assert "(created now)" in capsys.readouterr().out
    (reference,) = c.search_runs([c.get_experiment_by_name("test-resume-reference").experiment_id])
    assert reference.info.status == "FINISHED"
    assert_mirrored(straight, proxy.backend.uri, reference.info.run_id)

    resumed_test = json.loads((run_dir / "run.json").read_text())["test"]
    straight_test = json.loads((straight / "run.json").read_text())["test"]
    assert resumed_test == straight_test  # exactly: same process, same machine
    test_keys = [k for k in reference.data.metrics if k.startswith("test/")]
    assert test_keys and {k: run.data.metrics[k] for k in test_keys} == \
        {k: reference.data.metrics[k] for k in test_keys}
    for key in ("val/icbhi_score", "train/loss"):
        assert [m.value for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)] == \
            [m.value for m in sorted(c.get_metric_history(reference.info.run_id, key), key=lambda m: m.step)]
