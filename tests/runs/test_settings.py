"""Where the mirror goes (ls.runs.mirror settings) and MLflow's usage telemetry (ls.utils.telemetry)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ls.config import ConfigError
from ls.runs.mirror import DEFAULT_TRACKING_URI, TrackingSettings, open_hint, resolve_settings, sync_command
from ls.utils.telemetry import configure_telemetry

from .mirror_support import PASSWORD, REPO, USER


def test_settings_default_to_the_store_mlflow_ui_opens():
    from mlflow.tracking._tracking_service.utils import DEFAULT_TRACKING_URI as MLFLOW_DEFAULT

    s = resolve_settings()
    assert s.tracking_uri == DEFAULT_TRACKING_URI == MLFLOW_DEFAULT == "sqlite:///mlflow.db"
    assert (s.experiment_name, s.username, s.password) == ("ls", None, None)


def test_settings_precedence_is_file_then_config_section_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-host:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "env-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-password")
    section = {"tracking_uri": "http://section-host:5000", "experiment_name": "from-section",
               "tracking_username": None, "tracking_password": ""}  # unset values count as unset
    path = tmp_path / "mlflow.yaml"
    path.write_text("tracking_uri: http://file-host:5000\ntracking_username: bob\ntracking_password: null\n")

    assert resolve_settings() == TrackingSettings("http://env-host:5000", "from-env", "env-user", "env-password")
    assert resolve_settings(section) == TrackingSettings("http://section-host:5000", "from-section", "env-user",
                                                         "env-password")
    s = resolve_settings(section, path)
    assert (s.tracking_uri, s.experiment_name, s.username, s.password) == (
        "http://file-host:5000", "from-section", "bob", "env-password")
    path.write_text("mlflow:\n  experiment_name: from-file\n")  # a top-level mlflow: section is accepted
    assert resolve_settings(section, path).experiment_name == "from-file"


def test_an_unknown_key_in_the_mlflow_file_is_an_error_that_names_it(tmp_path):
    path = tmp_path / "mlflow.yaml"
    path.write_text("tracking_url: http://typo:5000\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) tracking_url in .*mlflow.yaml; known keys: "
                                          r"tracking_uri, experiment_name"):
        resolve_settings(mlflow_yaml=path)


def test_credentials_in_the_uri_become_username_and_password_and_leave_the_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://{USER}:p%40ss-{PASSWORD}@mlflow.example.org/x")
    s = resolve_settings()
    assert s.tracking_uri == "https://mlflow.example.org/x"
    assert (s.username, s.password) == (USER, f"p@ss-{PASSWORD}")
    assert PASSWORD not in repr(s) and PASSWORD not in s.safe_uri
    path = tmp_path / "mlflow.yaml"
    path.write_text("tracking_username: carol\ntracking_password: given\n")  # keys given explicitly win
    assert (resolve_settings(mlflow_yaml=path).username, resolve_settings(mlflow_yaml=path).password) == (
        "carol", "given")
    assert TrackingSettings(f"http://{USER}:{PASSWORD}@h:1", "e").safe_uri == "http://***@h:1"


def test_sync_to_a_uri_with_credentials_uses_them_and_records_the_store_without_them(monkeypatch, tmp_path):
    """``ls.tracking sync --tracking-uri http://user:pw@host`` splits the credentials off as every other entry
    does; a record whose store these settings name is synced through their URI (a database URI keeps its
    password there), another through the URI it recorded."""
    from ls.runs import mirror
    from ls.runs.record import RunRecord
    from ls.tracking import main as tracking_main

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    record = RunRecord(tmp_path / "run")
    record.start("r")
    record.end()
    seen = []
    monkeypatch.setattr(mirror, "sync_folder", lambda folder, settings, **_: seen.append(settings) or
                        mirror.SyncReport(Path(folder), settings.store, run_id="r1"))
    assert tracking_main(["sync", str(tmp_path / "run"), "--tracking-uri", f"http://{USER}:{PASSWORD}@h:5000"]) == 0
    assert (seen[-1].tracking_uri, seen[-1].username, seen[-1].password) == ("http://h:5000", USER, PASSWORD)

    db = f"postgresql://{USER}:{PASSWORD}@db.example:5432/mlflow"
    settings = resolve_settings({"tracking_uri": db})
    assert settings.tracking_uri == db and PASSWORD not in settings.store  # a database reads it from its URI
    mirror._write_state(tmp_path / "run", {settings.store: {"experiment_name": "ls", "run_id": "r1", "synced": 0},
                                           "sqlite:////elsewhere/mlflow.db": {"experiment_name": "ls"}})
    seen.clear()
    mirror.sync(tmp_path / "run", settings)
    assert sorted(s.tracking_uri for s in seen) == [db, "sqlite:////elsewhere/mlflow.db"]


def test_mlflow_gets_the_credentials_of_one_store_only_while_it_is_used(monkeypatch):
    """MLflow reads basic-auth credentials from the environment at each request: they are those of the store
    in use (none for a store given none), and afterwards what they were."""
    from ls.runs.mirror import credentials_for

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "the-user-s-own")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with credentials_for(TrackingSettings("http://a.example", username=USER, password=PASSWORD)):
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (USER, PASSWORD)
        with credentials_for(TrackingSettings("http://b.example")):
            assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "the-user-s-own" and "MLFLOW_TRACKING_PASSWORD" not in os.environ
    from ls.runs.mirror import client_for

    client_for(TrackingSettings("http://c.example", username=USER, password=PASSWORD))  # as a run's mirror does
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "the-user-s-own" and "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_open_hint_is_a_url_for_a_server_and_an_absolute_mlflow_ui_command_for_a_local_store(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert open_hint(TrackingSettings(f"http://{USER}:{PASSWORD}@127.0.0.1:5000/", "x")) == (
        "open http://127.0.0.1:5000 in a browser")
    assert open_hint(TrackingSettings("https://mlflow.example.org", "x"), run_id="r1", experiment_id="7") == (
        "open https://mlflow.example.org/#/experiments/7/runs/r1 in a browser")
    assert shlex.split(open_hint(TrackingSettings("sqlite:///mlflow.db", "x"))) == [
        "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert shlex.split(open_hint(TrackingSettings(f"sqlite:///{tmp_path}/a.db", "x")))[-1] == (
        f"sqlite:///{tmp_path}/a.db")
    assert shlex.split(open_hint(TrackingSettings("mlruns", "x")))[-1] == (tmp_path / "mlruns").as_uri()


def test_the_sync_command_is_absolute_and_quoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my runs").mkdir()
    assert shlex.split(sync_command("my runs")) == [sys.executable, "-m", "ls.tracking", "sync",
                                                    str(tmp_path / "my runs")]


# -- telemetry ----------------------------------------------------------------------------------------------
def test_telemetry_opt_in_and_an_explicit_user_choice_are_respected(monkeypatch):
    for var in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "LS_MLFLOW_TELEMETRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LS_MLFLOW_TELEMETRY", "1")
    assert configure_telemetry() is False and "MLFLOW_DISABLE_TELEMETRY" not in os.environ
    monkeypatch.delenv("LS_MLFLOW_TELEMETRY")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's own choice
    assert configure_telemetry() is False and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    monkeypatch.setenv("DO_NOT_TRACK", "1")  # the cross-tool convention counts as a user's choice too
    assert configure_telemetry() is True
    monkeypatch.delenv("DO_NOT_TRACK")
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


def test_mlflow_telemetry_is_off_in_a_fresh_process_that_records_and_syncs_a_run(tmp_path, mlflow_db):
    """After a run is recorded and mirrored to a local store MLflow's telemetry is off and no host at all was
    looked up. The child process has no CI/pytest markers (MLflow turns telemetry off by itself there), so
    only ls can have turned it off."""
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
        "from ls.runs.mirror import start_mirror\n"
        "from ls.runs.record import RunRecord\n"
        "record = RunRecord('run', start_mirror({'tracking_uri': sys.argv[1], 'experiment_name': 't'}))\n"
        "record.start('r'); record.log_metrics({'m': 1.0}, step=1); record.end()\n"
        "assert record.synced and record.run_id\n"
        "time.sleep(0.3)\n"
        "import mlflow.telemetry.utils as u\n"
        "from mlflow.telemetry import get_telemetry_client\n"
        "print(u._IS_IN_CI_ENV_OR_TESTING, u._IS_MLFLOW_DEV_VERSION)\n"
        "print(u.is_telemetry_disabled(), get_telemetry_client() is None, sorted(set(map(str, hosts))))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, f"sqlite:///{mlflow_db}"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    mlflow_would_skip, result = res.stdout.strip().splitlines()[-2:]
    if mlflow_would_skip != "False False":
        pytest.skip(f"MLflow disables telemetry in this environment anyway ({mlflow_would_skip})")
    assert result == "True True []"
