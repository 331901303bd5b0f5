"""The record of a run (ls.runs.record), local first: every event in ``events.jsonl``, in order, whatever the
mirror does; no credential in it. No MLflow store is involved here (see test_mirror.py for the mirror)."""

from __future__ import annotations

import json
import warnings

import pytest

from ls.engine.tracking import Tracker
from ls.runs.mirror import TrackingSettings
from ls.runs.record import ARTIFACTS_FOLDER, EVENTS_FILE, EventLog, RunRecord, status_of
from ls.runs.secrets import REDACTED, redact_params, scrub, split_userinfo, without_credentials

from .mirror_support import PASSWORD, USER


def kinds(folder) -> list[str]:
    return [e["event"] for e in EventLog(folder).events()]


def test_every_param_tag_metric_artifact_and_end_is_appended_in_order(tmp_path):
    run = tmp_path / "run"
    record = RunRecord(run)
    assert isinstance(record, Tracker)  # what the Trainer takes
    record.start("r1", tags={"variant": "ast", "seed": 42})
    record.log_params({"lr": 0.1, "layers": [1, 2]})
    record.set_tags({"note": "first"})
    record.log_metrics({"train/loss": 0.7, "val/score": float("nan"), "val/auc": "not a number"}, step=1)
    record.log_metrics({"val/score": float("inf")}, step=2)  # nothing finite: no event
    record.log_metrics({"train/loss": 0.5}, step=2)
    (run / "best.pt").write_bytes(b"weights")
    record.log_artifact(run / "best.pt", "checkpoints")
    record.end()
    record.end("FAILED")  # a run ends once

    events = EventLog(run).events()
    assert [e["seq"] for e in events] == list(range(7))
    assert [e["event"] for e in events] == ["start", "params", "tags", "metrics", "metrics", "artifact", "end"]
    assert events[0]["name"] == "r1" and events[0]["tags"] == {"variant": "ast", "seed": "42"}
    assert events[0]["parent"] is None
    assert events[1]["params"] == {"lr": 0.1, "layers": [1, 2]}
    assert (events[3]["metrics"], events[3]["step"]) == ({"train/loss": 0.7}, 1)  # NaN and text dropped
    assert (events[4]["metrics"], events[4]["step"]) == ({"train/loss": 0.5}, 2)
    assert events[5]["path"] == "best.pt" and events[5]["artifact_path"] == "checkpoints"
    assert events[6]["status"] == "FINISHED" and record.ended == "FINISHED"
    assert all(events[i]["time"] <= events[i + 1]["time"] for i in range(6))
    # Without a mirror there is nothing to wait for, and no mirror state is written.
    assert record.synced and record.run_id is None and not (run / "mlflow.json").exists()


def test_an_artifact_outside_the_folder_is_copied_in_so_the_record_stays_whole(tmp_path):
    record = RunRecord(tmp_path / "run")
    record.start("r")
    outside = tmp_path / "summary.json"
    outside.write_text('{"a": 1}\n')
    record.log_artifact(outside, "reports")
    outside.write_text("changed later\n")
    copy = tmp_path / "run" / ARTIFACTS_FOLDER / "reports" / "summary.json"
    assert copy.read_text() == '{"a": 1}\n'
    assert EventLog(tmp_path / "run").events()[-1]["path"] == f"{ARTIFACTS_FOLDER}/reports/summary.json"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        record.log_artifact(tmp_path / "missing.txt")
    assert kinds(tmp_path / "run") == ["start", "artifact"]


def test_a_copied_artifact_keeps_no_secret(tmp_path):
    """A text file from outside the folder that holds the password is recorded as a redacted copy; another
    file holding it is not recorded; a folder is copied file by file the same way."""
    outside = tmp_path / "outside"
    (outside / "report").mkdir(parents=True)
    (outside / "config.yaml").write_text(f"tracking_password: {PASSWORD}\nlr: 0.1\n")
    (outside / "weights.pt").write_bytes(b"\x80\x02" + PASSWORD.encode())
    (outside / "report" / "notes.md").write_text(f"run with {PASSWORD}\n")
    (outside / "report" / "table.csv").write_text("a,b\n1,2\n")
    record = RunRecord(tmp_path / "run", secrets=[PASSWORD])
    record.start("r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record.log_artifact(outside / "config.yaml")
        record.log_artifact(outside / "weights.pt")
        record.log_artifact(outside / "report", "reports")
    assert [str(w.message) for w in caught] == [
        f"{outside / 'config.yaml'} contains a credential; the run records a redacted copy",
        f"{outside / 'weights.pt'} contains a credential; NOT recorded with the run",
        f"{outside / 'report' / 'notes.md'} contains a credential; the run records a redacted copy"]
    copies = tmp_path / "run" / ARTIFACTS_FOLDER
    assert (copies / "config.yaml").read_text() == f"tracking_password: {REDACTED}\nlr: 0.1\n"
    assert not (copies / "weights.pt").exists()
    assert (copies / "reports" / "report" / "table.csv").read_text() == "a,b\n1,2\n"
    assert [e.get("path") for e in EventLog(tmp_path / "run").events()] == [
        None, f"{ARTIFACTS_FOLDER}/config.yaml", f"{ARTIFACTS_FOLDER}/reports/report"]
    assert not [f for f in (tmp_path / "run").rglob("*") if f.is_file() and PASSWORD.encode() in f.read_bytes()]


def test_a_line_cut_by_a_crash_does_not_swallow_later_events(tmp_path):
    run = tmp_path / "run"
    record = RunRecord(run)
    record.start("r")
    record.log_metrics({"loss": 1.0}, step=1)
    with (run / EVENTS_FILE).open("a") as fh:  # the process died in the middle of a line
        fh.write('{"seq": 2, "time": 1.0, "event": "metrics", "metr')
    assert kinds(run) == ["start", "metrics"]  # a line without its newline is not an event yet
    again = RunRecord(run)  # the run resumed from its last.pt
    again.start("r")
    again.log_metrics({"loss": 0.5}, step=2)
    again.end()
    lines = (run / EVENTS_FILE).read_text().splitlines()
    assert len(lines) == 6 and lines[2].endswith('"metr')
    events = EventLog(run).events()
    assert [e["event"] for e in events] == ["start", "metrics", "resume", "metrics", "end"]
    assert [e["seq"] for e in events] == [0, 1, 3, 4, 5]  # seq is the line's index: the cut line keeps its own
    assert events[3]["metrics"] == {"loss": 0.5}


def test_processes_appending_to_one_record_keep_whole_lines_and_distinct_seq(tmp_path):
    """A parent record several commands work on (a search with workers on other machines): concurrent appends
    never share a seq number or cut each other's lines."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("import sys, time; from pathlib import Path; from ls.runs.record import EventLog\n"
            "log, me = EventLog(sys.argv[1] + '/log'), sys.argv[2]\n"
            "(Path(sys.argv[1]) / ('ready' + me)).touch()\n"
            "while not (Path(sys.argv[1]) / 'go').exists(): time.sleep(0.001)\n"  # all start appending at once
            "for i in range(300): log.append({'event': 'metrics', 'metrics': {'w' + me: i}, 'pad': 'x' * 300})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(w)]) for w in range(3)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{w}").exists() for w in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    Path(tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    events = EventLog(tmp_path / "log").events()
    assert len(events) == len(EventLog(tmp_path / "log").lines()) == 900  # every line whole
    assert sorted(e["seq"] for e in events) == list(range(900))
    for w in range(3):  # each process's events in its own order
        assert [e["metrics"][f"w{w}"] for e in events if f"w{w}" in e["metrics"]] == list(range(300))


def test_an_end_whose_event_was_not_written_can_be_ended_again(tmp_path, monkeypatch):
    """Ctrl-C while the end event is appended: the record is not taken as ended, so the handler's end (KILLED)
    is written instead of the record staying RUNNING."""
    record = RunRecord(tmp_path)
    record.start("r")
    real = EventLog.append

    def interrupted(self, event):
        if event.get("event") == "end":
            raise KeyboardInterrupt
        return real(self, event)

    monkeypatch.setattr(EventLog, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record.end()
    assert record.ended is None and status_of(tmp_path) == "RUNNING"
    monkeypatch.setattr(EventLog, "append", real)
    record.end("KILLED")
    assert record.ended == "KILLED" and status_of(tmp_path) == "KILLED"


def test_status_follows_start_resume_and_end(tmp_path):
    run = tmp_path / "run"
    assert status_of(run) is None
    record = RunRecord(run)
    record.start("r")
    assert status_of(run) == "RUNNING"
    record.end("KILLED")
    assert status_of(run) == "KILLED"
    resumed = RunRecord(run)
    resumed.start("r", tags={"ignored": "a resume keeps the run's start"})
    assert status_of(run) == "RUNNING" and kinds(run) == ["start", "end", "resume"]
    resumed.end()
    assert status_of(run) == "FINISHED"


def test_a_nested_record_names_its_parent_folder_relative_to_its_own(tmp_path):
    parent = RunRecord(tmp_path / "study" / "parent")
    parent.start("study")
    child = RunRecord(tmp_path / "study" / "ast" / "seed1")
    child.start("seed1", parent=tmp_path / "study" / "parent")
    (start,) = [e for e in EventLog(child.folder).events() if e["event"] == "start"]
    assert start["parent"] == "../../parent"
    assert (child.folder / start["parent"]).resolve() == parent.folder.resolve()


def test_credentials_are_masked_in_every_event(tmp_path):
    """Credential-like keys, ``user:password@`` in URIs and the tracking password (a secret the record knows:
    a mirror passes its settings' password) wherever it occurs: none of them reaches the record."""
    uri = f"https://{USER}:{PASSWORD}@mlflow.example.org:5000"
    record = RunRecord(tmp_path / "run", secrets=[PASSWORD])
    record.start("r", tags={"hf_token": "hf-abc", "note": f"pw {PASSWORD}", "uri": uri})
    record.log_params({"mlflow.tracking_password": PASSWORD, "mlflow.tracking_username": USER,
                       "mlflow.tracking_uri": uri, "note": f"the password is {PASSWORD}",
                       "nested": {"deep": [PASSWORD]}, "training.partial_credit": True, "tokenizer": "bpe"})
    record.set_tags({"late": PASSWORD})
    record.end()
    text = (tmp_path / "run" / EVENTS_FILE).read_text()
    assert PASSWORD not in text and f"{USER}:" not in text
    start, params, tags, _ = EventLog(tmp_path / "run").events()
    assert start["tags"]["hf_token"] == REDACTED and start["tags"]["note"] == f"pw {REDACTED}"
    assert start["tags"]["uri"] == f"https://{REDACTED}@mlflow.example.org:5000"
    p = params["params"]
    assert p["mlflow.tracking_password"] is None and p["mlflow.tracking_username"] is None  # stored as unset
    assert p["mlflow.tracking_uri"] == "https://mlflow.example.org:5000"
    assert p["note"] == f"the password is {REDACTED}"
    assert p["training.partial_credit"] is True and p["tokenizer"] == "bpe"
    assert tags["tags"] == {"late": REDACTED}


def test_redact_params_masks_credential_keys_and_secrets_in_values():
    params = {
        "mlflow.tracking_password": PASSWORD, "mlflow.tracking_username": USER, "hf_token": "abc",
        "aws_secret_access_key": "k", "api_key": "k", "mlflow.tracking_uri": f"https://{USER}:{PASSWORD}@h:1/x",
        "note": f"the password is {PASSWORD}", "mlflow.tracking_password_unset": None,
        "training.partial_credit": True, "models.ast.num_tokens": 514, "tokenizer": "bpe", "lr": 0.1,
        "listed": ["a", PASSWORD],
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
    assert safe["listed"] == json.dumps(["a", REDACTED])
    assert PASSWORD not in repr(TrackingSettings("u", "e", USER, PASSWORD))


def test_records_and_messages_share_one_rule_for_credential_keys():
    """What a run's record masks and what a config error never repeats are the same keys."""
    from ls.config.loader import _shown
    from ls.runs.secrets import is_credential_key

    secret = ["mlflow.tracking_password", "tracking_pasword", "hf_token", "aws_secret_access_key", "auth_header",
              "mlflow.tracking_username", "api-key", "private_key", "credentials_file"]
    plain = ["n_tokens", "tokenizer", "author", "partial_credit", "training.optimizer.lr", "dataset.passes"]
    for key in secret + plain:
        masked = _shown(f"{key}=v4lue") == f"{key}=***"
        assert masked == is_credential_key(key) == (key in secret), key


def test_without_credentials_and_scrub():
    tree = {"mlflow": {"tracking_uri": f"http://{USER}:{PASSWORD}@h:5000", "tracking_password": PASSWORD,
                       "tracking_username": None},
            "runs": [{"api_key": "k"}], "lr": 0.1}
    assert without_credentials(tree) == {
        "mlflow": {"tracking_uri": "http://h:5000", "tracking_password": None, "tracking_username": None},
        "runs": [{"api_key": None}], "lr": 0.1}
    assert scrub(f"failed at http://{USER}:{PASSWORD}@h:5000 with {PASSWORD}", [PASSWORD, "ab"]) == \
        f"failed at http://{REDACTED}@h:5000 with {REDACTED}"
    assert scrub("a tab", ["ab"]) == "a tab"  # too short to be a secret worth scrubbing out of text
    assert split_userinfo("http://bob:p%40ss@h:5000/x") == ("http://h:5000/x", "bob", "p@ss")
    assert split_userinfo("sqlite:///a.db") == ("sqlite:///a.db", None, None)
