"""MLflow as a mirror of run records (ls.runs.mirror, ``python -m ls.tracking sync``), tested from recorded
folders against a local SQLite store in the test's folder: no server (see test_mirror_server.py for one)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from ls.runs.mirror import (
    STATE_FILE,
    Mirror,
    TrackingError,
    TrackingSettings,
    check_connection,
    read_state,
    start_mirror,
    sync,
    sync_folder,
)
from ls.runs.record import EVENTS_FILE, EventLog, RunRecord
from ls.tracking import main as tracking_main

from .mirror_support import refused_uri


def settings_for(uri: str, experiment: str = "test-mirror", **kw) -> TrackingSettings:
    return TrackingSettings(uri, experiment, http_timeout_s=1, retry_interval_s=0.2, max_retry_interval_s=0.2,
                            probe_timeout_s=0.2, **kw)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def record_run(folder: Path, name: str = "r", *, parent: Path | None = None, epochs: int = 2,
               status: str = "FINISHED") -> RunRecord:
    """A small complete record (no mirror): params, tags, ``epochs`` epochs of metrics, an artifact, the end."""
    record = RunRecord(folder)
    record.start(name, tags={"variant": "ast"}, parent=parent)
    record.log_params({"lr": 0.1, "seed": 1})
    record.set_tags({"note": "tiny"})
    for epoch in range(1, epochs + 1):
        record.log_metrics({"train/loss": 1.0 / epoch, "val/score": epoch / 10}, step=epoch)
    (folder / "run.json").write_text('{"test": {}}\n')
    record.log_artifact(folder / "run.json")
    record.end(status)
    return record


def only_run(uri: str, experiment: str):
    exp = client(uri).get_experiment_by_name(experiment)
    (run,) = client(uri).search_runs([exp.experiment_id])
    return run


# -- sync of recorded folders --------------------------------------------------------------------------------
def test_sync_uploads_a_recorded_run_once_however_often_it_runs(tmp_path, local_store):
    folder = tmp_path / "run"
    record_run(folder, epochs=3)  # recorded without a mirror (--no-tracking, or the store was never reached)
    settings = settings_for(local_store)
    (report,) = sync(folder, settings)
    assert report.complete and report.created and report.uploaded == 8 and report.rejected == 0
    assert "(created now)" in report.describe()
    run = client(local_store).get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.params == {"lr": "0.1", "seed": "1"}
    assert run.data.tags["variant"] == "ast" and run.data.tags["note"] == "tiny"
    assert history(local_store, report.run_id, "val/score") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [a.path for a in client(local_store).list_artifacts(report.run_id)] == ["run.json"]
    state = json.loads((folder / STATE_FILE).read_text())["stores"][settings.store]
    assert state["run_id"] == report.run_id and state["synced"] == 8

    (again,) = sync(folder, settings)  # twice: nothing uploaded twice
    assert again.complete and not again.created and again.uploaded == 0 and again.run_id == report.run_id
    assert again.describe().endswith("nothing to upload")
    assert history(local_store, report.run_id, "val/score") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert len(client(local_store).list_artifacts(report.run_id)) == 1

    resumed = RunRecord(folder)  # the run continued later: only what is new goes up, into the same run
    resumed.start("r")
    resumed.log_metrics({"val/score": 0.4}, step=4)
    resumed.end()
    (third,) = sync(folder, settings)
    assert (third.uploaded, third.run_id, third.created) == (3, report.run_id, False)
    assert history(local_store, report.run_id, "val/score") == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
    assert client(local_store).get_run(report.run_id).info.status == "FINISHED"
    assert len(client(local_store).search_runs([run.info.experiment_id])) == 1


def test_a_live_mirror_syncs_each_event_and_the_log_is_the_same_online_or_not(tmp_path, local_store,
                                                                              monkeypatch, capsys):
    """A record with a mirror writes exactly the events a record without one writes, and is in the store as
    soon as each is written; one whose store is away goes on the same way. A store named relative to the
    working directory is recorded by its absolute path, so that a sync from elsewhere finds it."""
    assert local_store == f"sqlite:///{tmp_path}/mlflow.db"
    mirror = start_mirror({"tracking_uri": "sqlite:///mlflow.db", "experiment_name": "test-live"})
    online = RunRecord(tmp_path / "online", mirror)
    online.start("live", tags={"variant": "ast"})
    assert online.synced and online.run_id is not None
    online.log_metrics({"loss": 1.0}, step=1)
    assert online.synced and history(local_store, online.run_id, "loss") == [(1, 1.0)]
    online.end()
    assert online.synced and client(local_store).get_run(online.run_id).info.status == "FINISHED"
    assert mirror.unsynced == {}
    assert list(read_state(online.folder)) == [local_store]
    run_id = online.run_id
    monkeypatch.chdir(tmp_path / "online")
    assert tracking_main(["sync", str(online.folder)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"already in run {run_id} at {local_store}; nothing to upload")
    monkeypatch.chdir(tmp_path)

    with refused_uri() as uri, warnings.catch_warnings(record=True) as caught:
        away = Mirror(settings_for(uri, "test-live", attempts=1))
        warnings.simplefilter("always")
        offline = RunRecord(tmp_path / "offline", away)
        offline.start("live", tags={"variant": "ast"})
        offline.log_metrics({"loss": 1.0}, step=1)
        offline.end()
    assert not offline.synced and offline.run_id is None
    assert any("out of reach" in str(w.message) for w in caught)
    local = RunRecord(tmp_path / "local")
    local.start("live", tags={"variant": "ast"})
    local.log_metrics({"loss": 1.0}, step=1)
    local.end()

    def events(folder):
        return [{k: v for k, v in e.items() if k != "time"} for e in EventLog(folder).events()]

    assert events(tmp_path / "online") == events(tmp_path / "offline") == events(tmp_path / "local")


def test_a_line_cut_by_a_crash_is_skipped_and_the_rest_uploaded(tmp_path, local_store):
    folder = tmp_path / "run"
    record = RunRecord(folder)
    record.start("crashed")
    record.log_metrics({"loss": 1.0}, step=1)
    with (folder / EVENTS_FILE).open("a") as fh:
        fh.write('{"seq": 2, "event": "metrics", "metrics": {"loss": 0.')  # the process died here
    (report,) = sync(folder, settings_for(local_store))
    assert report.complete and report.uploaded == 2  # an incomplete last line is not an event yet
    resumed = RunRecord(folder)
    resumed.start("crashed")
    resumed.log_metrics({"loss": 0.25}, step=3)
    resumed.end()
    (report,) = sync(folder, settings_for(local_store))
    assert report.complete and report.remaining == 0
    assert history(local_store, report.run_id, "loss") == [(1, 1.0), (3, 0.25)]
    assert client(local_store).get_run(report.run_id).info.status == "FINISHED"


def test_a_run_never_created_is_created_nested_under_its_parent_parents_first(tmp_path, local_store):
    """A study's records: the parent folder beside its members. Syncing one member alone creates the parent's
    run first; syncing the whole tree then creates the rest, each nested under the parent's run."""
    study = tmp_path / "study"
    parent = RunRecord(study / "parent")
    parent.start("study", tags={"group": "seeds2"})
    for seed in (1, 2):
        record_run(study / "ast" / f"seed{seed}", f"seed{seed}", parent=study / "parent")
    parent.log_metrics({"test/score_mean": 0.5})
    parent.end()
    settings = settings_for(local_store, "test-nested")

    (member,) = sync(study / "ast" / "seed2", settings)
    assert member.complete and member.created
    parent_id = read_state(study / "parent")[settings.store]["run_id"]
    assert parent_id is not None and read_state(study / "parent")[settings.store]["synced"] == 3
    reports = sync(study, settings)
    assert [r.folder.name for r in reports] == ["parent", "seed1", "seed2"]  # found parents first
    assert all(r.complete for r in reports) and [r.uploaded for r in reports] == [0, 7, 0]

    c = client(local_store)
    runs = c.search_runs([c.get_experiment_by_name("test-nested").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == ["seed1", "seed2", "study"] and by_name["study"].info.run_id == parent_id
    for seed in ("seed1", "seed2"):
        assert by_name[seed].data.tags["mlflow.parentRunId"] == parent_id
        assert by_name[seed].info.status == "FINISHED"
    assert "mlflow.parentRunId" not in by_name["study"].data.tags
    assert by_name["study"].data.metrics == {"test/score_mean": 0.5}


def test_a_parent_chain_that_loops_is_an_error_not_a_hang(tmp_path, local_store):
    a, b = RunRecord(tmp_path / "a"), RunRecord(tmp_path / "b")
    a.start("a", parent=tmp_path / "b")
    b.start("b", parent=tmp_path / "a")
    report = sync_folder(tmp_path / "a", settings_for(local_store))
    assert report.run_id is None and "loops" in report.error


def test_an_event_the_store_rejects_is_skipped_with_a_warning_and_the_rest_uploaded(tmp_path, local_store):
    """MLflow params are immutable: a param logged again with another value is refused (retrying cannot help);
    the sync says so and goes on, also when the two events follow each other in the record."""
    folder = tmp_path / "run"
    record = RunRecord(folder)
    record.start("rejected")
    record.log_params({"lr": 0.1})
    record.log_params({"lr": 0.2, "batch": 16})
    record.log_metrics({"loss": 1.0}, step=1)
    record.log_params({"lr": 0.3})
    record.end()
    with pytest.warns(UserWarning, match=r"MLflow rejected event\(s\) 3-3 of .*events.jsonl .*; skipped") as got:
        (report,) = sync(folder, settings_for(local_store))
    assert len([w for w in got if "rejected" in str(w.message)]) == 2
    assert report.complete and report.rejected == 2 and report.uploaded == 4
    assert "2 event(s) rejected by the store" in report.describe()
    run = client(local_store).get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 1.0}
    (again,) = sync(folder, settings_for(local_store))  # a rejected event is not tried again
    assert again.complete and again.uploaded == again.rejected == 0


def test_a_file_in_the_folder_holding_the_password_is_uploaded_redacted_or_not_at_all(tmp_path, local_store):
    password = "pw-Zq81-not-for-mlflow"
    folder = tmp_path / "run"
    record = RunRecord(folder)  # recorded without knowing the password (--no-tracking)
    record.start("r")
    (folder / "notes.txt").write_text(f"uri with {password}\n")
    (folder / "weights.pt").write_bytes(b"\x80\x02" + password.encode())
    record.log_artifact(folder / "notes.txt")
    record.log_artifact(folder / "weights.pt")
    record.end()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (report,) = sync(folder, settings_for(local_store, password=password))
    messages = [str(w.message) for w in caught]
    assert f"{folder / 'notes.txt'} contains the MLflow tracking password; uploading a redacted copy" in messages
    assert f"{folder / 'weights.pt'} contains the MLflow tracking password; NOT uploaded to MLflow" in messages
    assert report.complete
    c = client(local_store)
    assert [a.path for a in c.list_artifacts(report.run_id)] == ["notes.txt"]
    text = Path(c.download_artifacts(report.run_id, "notes.txt", str(tmp_path))).read_text()
    assert text == "uri with ***\n"


# -- the command line ----------------------------------------------------------------------------------------
def test_sync_cli_exit_codes_and_the_experiment_of_runs_it_creates(tmp_path, local_store, capsys, monkeypatch):
    created_before = tmp_path / "old"
    record_run(created_before, "old")
    sync(created_before, settings_for(local_store, "test-first"))
    never = tmp_path / "never"
    record_run(never, "offline-all-along", status="FAILED")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_store)

    # 0: everything uploaded. --experiment applies to runs the sync creates; the old run stays where it is.
    assert tracking_main(["sync", str(tmp_path), "--experiment", "test-synced-later"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [str(never), str(created_before)]
    assert "(created now)" in out[0] and "nothing to upload" in out[1]
    run = only_run(local_store, "test-synced-later")
    assert run.info.run_name == "offline-all-along" and run.info.status == "FAILED"
    assert only_run(local_store, "test-first").info.run_name == "old"
    # replay: the earlier name of the same command
    assert tracking_main(["replay", str(never)]) == 0
    assert "nothing to upload" in capsys.readouterr().out

    # 1: something is left (the store is away): the same command again later
    late = tmp_path / "late"
    record_run(late, "late")
    with refused_uri() as uri:
        assert tracking_main(["sync", str(late), "--tracking-uri", uri]) == 1
    captured = capsys.readouterr()
    assert "stopped with 7 event(s) left" in captured.out and "run the same command again" in captured.err
    assert tracking_main(["sync", str(late)]) == 0  # the configured store is there
    assert only_run(local_store, "ls").info.run_name == "late"

    # 2: bad input: one error line
    assert tracking_main(["sync", str(tmp_path / "empty")]) == 2
    expected = f"error: no run record (a folder with {EVENTS_FILE}) in {tmp_path / 'empty'}"
    assert capsys.readouterr().err.splitlines() == [expected]
    bad_config = tmp_path / "mlflow.yaml"
    bad_config.write_text("tracking_url: x\n")
    assert tracking_main(["sync", str(never), "--mlflow-config", str(bad_config)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unknown key(s) tracking_url in ")


def test_a_corrupt_mirror_state_file_is_one_error_line_naming_it(tmp_path, capsys, monkeypatch, local_store):
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    folder = tmp_path / "run"
    record_run(folder)
    (folder / STATE_FILE).write_text('{"stores": {"sqlite:///x.db": {"run_id": "ab')  # cut by a crash
    assert tracking_main(["sync", str(folder)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {folder / STATE_FILE}: not a readable mirror state file (")
    assert tracking_main(["sync", str(folder), "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1] == line
    (folder / STATE_FILE).write_text('["not", "a", "mapping"]')
    assert tracking_main(["sync", str(folder)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {folder / STATE_FILE}: not a readable mirror state file")


# -- a new store, several runs at once -----------------------------------------------------------------------
def _record_a_run_at_once(folder: Path, uri: str, barrier) -> None:
    """One of the concurrent runs (a forked process: ls and MLflow are imported already, so that the three
    reach the new store at the same instant)."""
    try:
        barrier.wait(timeout=60)
        mirror = start_mirror({"tracking_uri": uri, "experiment_name": "test-concurrent"})
        record = RunRecord(folder, mirror)
        record.start(folder.name)
        record.log_params({"member": folder.name})
        record.log_metrics({"loss": 0.5}, step=1)
        record.end()
        outcome = {"run_id": record.run_id, "synced": record.synced}
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(outcome))
    os._exit(0)


def test_three_runs_started_together_on_a_new_sqlite_store_all_succeed(tmp_path, monkeypatch):
    """Before the lock in ``client_for`` MLflow's table creation raced and 2 of 3 runs failed with "tracking
    store is unreachable or invalid". The three start at the same instant on a store that does not exist, in
    a folder that does not exist either."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork: three processes with ls and MLflow imported already, started at one instant")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store" / "mlflow.db"  # neither the file nor its folder exists yet
    uri = f"sqlite:///{store}"
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the fork: a tight race

    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(3)
    names = ["run0", "run1", "run2"]
    procs = [fork.Process(target=_record_a_run_at_once, args=(tmp_path / n, uri, barrier)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    for p in procs:
        if p.is_alive():
            p.kill()
    outcomes = [json.loads((tmp_path / f"{n}.json").read_text()) for n in names]
    assert [o.get("error") for o in outcomes] == [None, None, None]
    assert all(o["synced"] for o in outcomes)
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name("test-concurrent").experiment_id])
    assert sorted(r.info.run_name for r in runs) == names
    assert sorted(r.info.run_id for r in runs) == sorted(o["run_id"] for o in outcomes)
    assert all(r.info.status == "FINISHED" and r.data.metrics == {"loss": 0.5} for r in runs)


def test_check_connection_to_a_file_that_is_no_store_is_a_clear_error(tmp_path):
    (tmp_path / "notes.db").write_text("not a database\n")
    with pytest.raises(TrackingError, match=r"MLflow tracking at 'sqlite:///.*notes.db' cannot be used: the tracking "
                                            r"store is unreachable or invalid; check tracking_uri"):
        check_connection(settings_for(f"sqlite:///{tmp_path}/notes.db"))


def test_records_a_worker_could_not_sync_are_reported_by_the_command_that_ran_the_plan(tmp_path, monkeypatch):
    """A pool's worker has its own mirror: when its run's record stays unsynced, the plan's mirror (whose
    summary the command prints) lists the command that syncs it, as for a run of its own."""
    from ls.config import config_from_dict
    from ls.runs import executor
    from ls.runs.plan import Plan, RunSpec, with_seed

    cfg = config_from_dict({"dataset": {"data_folder": str(tmp_path)}, "models": {"ast": {}}})

    def record_a_run(cfg, variant, *, run_dir, mirror, **_):
        record = RunRecord(run_dir, mirror)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record.start("worker run")
            record.end()
        raise RuntimeError("the run failed after its record ended")

    monkeypatch.setattr(executor, "train_run", record_a_run)
    with refused_uri() as uri:
        settings = settings_for(uri, attempts=1)
        spec = RunSpec("ast", with_seed(cfg, 1), tmp_path / "run1")
        job = executor._Job(spec, None, settings, None, None, False, True)
        result = executor._run(job)  # as in a worker: no mirror given, one made from the settings
        assert not result.ok and list(result.unsynced) == [(tmp_path / "run1").resolve()]
        assert result.unsynced[(tmp_path / "run1").resolve()].endswith(f"sync {(tmp_path / 'run1').resolve()}")

        plan_mirror = Mirror(settings)
        monkeypatch.setattr(executor, "_warm_feature_caches", lambda specs: None)
        monkeypatch.setattr(executor, "_run_pool", lambda work, jobs, gpus, record, on_start: record(result))
        executor.execute(Plan([spec, RunSpec("ast", with_seed(cfg, 2), tmp_path / "run2")]), mirror=plan_mirror,
                         jobs=2)
        assert plan_mirror.unsynced == result.unsynced
        assert "Sync them when it is back" in executor.tracking_summary(plan_mirror)


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_runs_of_its_pool_and_the_rest_of_the_plan_goes_on(tmp_path, monkeypatch):
    """One dead worker process (out of memory, killed) breaks the pool, which ends every run it holds; the runs
    not started yet go on in a new pool instead of all being recorded as failed."""
    from ls.config import config_from_dict
    from ls.runs import executor
    from ls.runs.plan import Plan, RunSpec, with_seed

    from .pool_support import die_on_seed_1

    cfg = config_from_dict({"dataset": {"data_folder": str(tmp_path)}, "models": {"ast": {}}})
    specs = [RunSpec("ast", with_seed(cfg, s), tmp_path / f"seed{s}") for s in (0, 1, 2, 3, 4)]
    monkeypatch.setattr(executor, "_warm_feature_caches", lambda specs: None)
    monkeypatch.setattr(executor, "_worker_run", die_on_seed_1)
    results = {r.key.split("/")[-1]: r for r in executor.execute(Plan(specs), jobs=2, keep_going=True)}
    assert sorted(results) == ["seed0", "seed1", "seed2", "seed3", "seed4"]
    assert not results["seed1"].ok and "worker process died" in results["seed1"].error
    assert results["seed3"].ok and results["seed4"].ok  # started after the death, in a new pool
    assert sum(not r.ok for r in results.values()) <= 2  # seed1 and at most the run beside it
    after = [[float(t) for t in (tmp_path / s / "times").read_text().split()] for s in ("seed2", "seed3", "seed4")
             if results[s].ok]
    assert any(max(a[0], b[0]) < min(a[1], b[1]) for i, a in enumerate(after) for b in after[i + 1:])  # 2 at once
