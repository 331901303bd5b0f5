"""A training run as users meet it, and as someone trying to break it (ls.train): no run overwrites another,
no credential is stored, what would fail late fails before the work, every error is one line, Ctrl-C says how
to resume, and progress shows in a log file.

The runs are tiny (tiny224, 64 frames, 1-2 epochs on the 24-recording synthetic folder); tests that must
fail before any data is built check that no dataset was built.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

import ls.data
import ls.runs.folder as layout
import ls.runs.run as run_mod
import ls.train as runner
from ls.engine.trainer import Trainer

PASSWORD = "pw-Zq81-never-stored"


def tiny_yaml(tmp_path: Path, data: Path, epochs: int = 1, **training) -> Path:
    cfg = {
        "seed": 0,
        "dataset": {"data_folder": str(data), "batch_size": 16, "w": 64, "val_fraction": 0.25, "cache_workers": 0},
        "audio": {"mel_norm": "dataset"},
        "models": {"ast": {"model_size": "tiny224", "fstride": 16, "tstride": 16}},
        "training": {"epochs": epochs, "device": "cpu", "checkpoint_dir": str(tmp_path / "ck"),
                     "scheduler": {"type": "cosine_warmup", "warmup_epochs": 1}, **training},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def built(monkeypatch):
    """Records every dataset build (and refuses it): checks that run before the work leave it empty."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("datasets were built")

    monkeypatch.setattr(ls.data, "build_datasets", refuse)
    monkeypatch.setattr(ls.data, "build_fold_datasets", refuse)
    return calls


@pytest.fixture
def local_store(tmp_path, monkeypatch, mlflow_db):
    """MLflow in a sqlite store of this test (artifacts under ./mlruns of the test folder)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "reliability")
    return uri


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("reliability")
    return client, client.search_runs([exp.experiment_id])


# -- 1. no run overwrites another ----------------------------------------------------------------------------
def test_runs_started_at_once_get_their_own_folders_each_with_its_own_config(synthetic_icbhi_dir, tmp_path,
                                                                             monkeypatch):
    """Three runs (different lr) started in the same second: three folders, each holding its own config,
    all created before any data is built."""
    from ls.config import load_config

    monkeypatch.setattr(layout.time, "strftime", lambda *_: "20260101-120000")  # the same second for all
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    ready, seen_all = threading.Barrier(3, timeout=60), threading.Barrier(3, timeout=60)
    snapshots = []

    def at_data_build(cfg, *_):
        ready.wait()  # all three runs are past their set-up
        snapshots.append({p.name: yaml.safe_load((p / "config.yaml").read_text())["training"]["optimizer"]["lr"]
                          for p in (tmp_path / "ck").iterdir()})
        seen_all.wait()
        raise KeyboardInterrupt  # stop here: what matters happened before the data

    monkeypatch.setattr(ls.data, "build_datasets", at_data_build)

    def start(lr: float) -> None:
        try:
            run_mod.train_run(load_config(path, [f"training.optimizer.lr={lr}"]), "ast", progress=False)
        except KeyboardInterrupt:
            pass

    threads = [threading.Thread(target=start, args=(lr,)) for lr in (1e-3, 2e-3, 3e-3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(snapshots) == 3 and all(s == snapshots[0] for s in snapshots)
    base = "ast_1ep_strict_seed0_20260101-120000"
    assert sorted(snapshots[0]) == [base, f"{base}_2", f"{base}_3"]
    assert sorted(snapshots[0].values()) == [1e-3, 2e-3, 3e-3]


def test_create_run_dir_never_hands_out_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(layout.time, "strftime", lambda *_: "20260101-120000")
    (tmp_path / "r_20260101-120000").mkdir()  # e.g. a run of another process
    made = []
    lock = threading.Barrier(8)

    def make():
        lock.wait()
        made.append(layout.create_run_dir(tmp_path, "r"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and tmp_path / "r_20260101-120000" not in made


# -- 2. no secret is stored ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_password_given_with_set_reaches_no_param_artifact_checkpoint_or_log(synthetic_icbhi_dir, tmp_path,
                                                                               local_store, capsys, caplog):
    import logging

    from ls.engine.checkpoint import read_checkpoint

    caplog.set_level(logging.INFO)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    rc = runner.main("ast", ["--config", str(path), "--set", f"mlflow.tracking_password={PASSWORD}",
                             "--set", "mlflow.tracking_username=alice"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    client, runs = _runs(local_store)
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["mlflow.tracking_password"] in ("None", "***")  # the key is logged, never the value
    assert PASSWORD not in repr(run.data.params) and PASSWORD not in repr(run.data.tags)
    run_dir = next((tmp_path / "ck").iterdir())
    assert {"config.yaml", "best.pt", "last.pt", "run.json", "test_predictions.csv"} <= {
        p.name for p in run_dir.iterdir()}
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= arts  # best.pt is uploaded: it holds no password to refuse
    for ck in ("best.pt", "last.pt"):
        state = read_checkpoint(run_dir / ck)
        assert state["config"]["mlflow"]["tracking_password"] is None and PASSWORD not in repr(state)
    # every byte written under the test folder: run folder, checkpoints, MLflow's database and artifacts
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.suffix == ".pt" for p in files)
    leaks = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    assert not leaks
    assert PASSWORD not in out + err + caplog.text


def test_stored_config_drops_every_credential():
    from ls.config import config_from_dict

    cfg = config_from_dict({"dataset": {"data_folder": "x"},
                            "mlflow": {"tracking_password": PASSWORD, "tracking_username": "bob",
                                       "tracking_uri": "http://host:5000"}})
    stored = run_mod.stored_config(cfg)
    assert stored["mlflow"] == {**stored["mlflow"], "tracking_password": None, "tracking_username": None,
                                "tracking_uri": "http://host:5000"}
    assert cfg.mlflow.tracking_password == PASSWORD  # the live config keeps it for the tracker


def test_credentials_written_into_the_tracking_uri_are_stored_nowhere_and_still_used():
    from ls.config import config_from_dict, to_dict
    from ls.runs.mirror import resolve_settings

    uri = f"http://alice:{PASSWORD}@mlflow.example:5000/prefix"
    cfg = config_from_dict({"dataset": {"data_folder": "x"}, "mlflow": {"tracking_uri": uri}})
    assert PASSWORD not in json.dumps(run_mod.stored_config(cfg))
    assert run_mod.stored_config(cfg)["mlflow"]["tracking_uri"] == "http://mlflow.example:5000/prefix"
    settings = resolve_settings(to_dict(cfg.mlflow))  # what MLflow is given: a clean URI and basic-auth credentials
    assert (settings.tracking_uri, settings.username, settings.password) == (
        "http://mlflow.example:5000/prefix", "alice", PASSWORD)
    explicit = resolve_settings(to_dict(config_from_dict({"dataset": {"data_folder": "x"}, "mlflow": {
        "tracking_uri": uri, "tracking_username": "bob", "tracking_password": "other-password"}}).mlflow))
    assert (explicit.username, explicit.password) == ("bob", "other-password")  # explicit keys win


# -- 3. errors before the work --------------------------------------------------------------------------------
def test_a_read_only_checkpoint_dir_fails_in_seconds_before_any_data(synthetic_icbhi_dir, tmp_path,
                                                                     readonly_dir, built, capsys):
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir, checkpoint_dir=str(readonly_dir / "ck"))
    t0 = time.perf_counter()
    rc = runner.main("ast", ["--config", str(path), "--no-tracking"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and built == []
    assert error_lines(err) == [error_lines(err)[0]] and "Traceback" not in err
    assert str(readonly_dir / "ck") in err and ("read-only" in err or "permission denied" in err)
    with capsys.disabled():
        print(f"\n[measure] read-only checkpoint_dir: error after {elapsed:.2f} s (before any data or epoch)")
    assert elapsed < 120  # generous: the machine is shared


def test_no_room_for_the_checkpoints_fails_before_any_data_and_leaves_no_folder(synthetic_icbhi_dir,
                                                                                tmp_path, built, monkeypatch,
                                                                                capsys):
    real = shutil.disk_usage
    monkeypatch.setattr(layout.shutil, "disk_usage", lambda p: real(p)._replace(free=20_000_000))
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert built == [] and list((tmp_path / "ck").iterdir()) == []
    [line] = error_lines(err)
    assert "not enough space for the checkpoints in " + str(tmp_path / "ck") in line
    assert "20 MB free, about" in line and "tiny224" in line and "no space left" in line


@pytest.mark.parametrize("problem", ["missing", "text", "folder"])
def test_a_bad_weights_file_fails_before_any_data(synthetic_icbhi_dir, tmp_path, built, capsys, problem):
    weights = {"missing": tmp_path / "audioset_10_10_0.4593.pth", "text": tmp_path / "weights.pth",
               "folder": tmp_path}[problem]
    if problem == "text":
        weights.write_text("https://example.org/audioset_10_10_0.4593.pth\n")
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    rc = runner.main("ast", ["--config", str(path), "--no-tracking", "--set", "models.ast.weights.source=audioset",
                             "--set", f"models.ast.weights.path={weights}"])
    err = capsys.readouterr().err
    assert rc == 2 and built == [] and not (tmp_path / "ck").exists()
    line = error_lines(err)[0]
    assert str(weights) in line
    expected = {"missing": "does not exist", "text": "is not a checkpoint: it is a text file",
                "folder": "is a folder"}[problem]
    assert expected in line and "101" not in line


def test_a_missing_data_folder_fails_before_anything_else(tmp_path, built, capsys):
    path = tiny_yaml(tmp_path, tmp_path / "no-such-data")
    assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line == (f"error: dataset.data_folder='{tmp_path / 'no-such-data'}' does not exist; pass "
                    "--set dataset.data_folder=<the folder with the recordings>")
    assert built == [] and not (tmp_path / "ck").exists()


def test_one_data_folder_check_for_every_entry_point(tmp_path, monkeypatch):
    from ls.config import config_from_dict
    from ls.data import check_data_folders

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "part").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        check_data_folders(config_from_dict({"dataset": {"data_folder": "notes.txt"}}).dataset)
    assert info.value.strerror == (f"dataset.data_folder='notes.txt' is not a folder (relative to the working directory "
                               f"{tmp_path}); pass --set dataset.data_folder=<the folder with the recordings>")
    combined = {"name": "combined", "data_folder": "cache-to-be", "parts": [
        {"name": "icbhi", "data_folder": "part"}, {"name": "icbhi", "data_folder": "missing", "tag": "b"}]}
    with pytest.raises(FileNotFoundError) as info:
        check_data_folders(config_from_dict({"dataset": combined}).dataset)
    assert info.value.strerror.startswith("dataset.parts[1].data_folder='missing' does not exist (relative")
    assert info.value.strerror.endswith("; correct it in the config")
    combined["parts"].pop()
    assert check_data_folders(config_from_dict({"dataset": combined}).dataset) == [Path("part")]


def test_an_unreachable_tracking_server_fails_before_any_data(synthetic_icbhi_dir, tmp_path, built, capsys,
                                                              monkeypatch):
    import socket

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
        assert runner.main("ast", ["--config", str(path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "unreachable" in line and built == [] and not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_a_full_disk_during_training_names_the_checkpoint_and_the_reason(synthetic_icbhi_dir, tmp_path,
                                                                         monkeypatch, capsys):
    """Not 'RuntimeError: [enforce fail at inline_container.cc:664]': one line naming best.pt."""
    from ls.utils import io

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real = io.tempfile.mkstemp

    def mkstemp(prefix="", suffix="", dir=None):
        if prefix.startswith(".best.pt"):  # the disk fills up when the first checkpoint is written
            return os.open("/dev/full", os.O_WRONLY), str(Path(dir) / f"{prefix}x{suffix}")
        return real(prefix=prefix, suffix=suffix, dir=dir)

    monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    run_dir = next((tmp_path / "ck").glob("ast_*"), None)
    assert line.startswith("error: cannot write ") and line.endswith("best.pt: no space left on device")
    assert "inline_container" not in err and "Traceback" not in err
    assert run_dir is None  # no checkpoint was written: the run left no folder


# -- 6. one error style, Ctrl-C ------------------------------------------------------------------------------
@pytest.mark.slow
def test_data_errors_are_one_line_and_traceback_is_a_switch(synthetic_icbhi_dir, tmp_path, capsys, caplog):
    import logging

    data = tmp_path / "data"
    shutil.copytree(synthetic_icbhi_dir, data, ignore=shutil.ignore_patterns(".ls_cache"))
    wav = min(data.glob("*.wav"))
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    caplog.set_level(logging.WARNING)
    path = tiny_yaml(tmp_path, data)
    assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: {wav}: truncated WAV file (data chunk declares "
                                + error_lines(err)[0].split("declares ", 1)[1]]
    assert "Traceback" not in err and "clipped" not in err + caplog.text
    assert runner.main("ast", ["--config", str(path), "--no-tracking", "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_marks_the_run_killed_and_resume_finishes_it(synthetic_icbhi_dir, tmp_path,
                                                                               local_store, monkeypatch, capsys):
    real = Trainer._begin_epoch

    def ctrl_c_at_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_begin_epoch", ctrl_c_at_epoch_2)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir, epochs=2)
    try:
        rc = runner.main("ast", ["--config", str(path)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")
    err = capsys.readouterr().err
    run_dir = next((tmp_path / "ck").iterdir())
    last = run_dir / "last.pt"
    assert rc == 130 and err.strip().splitlines()[-1] == f"interrupted after epoch 1; continue with --resume {last}"
    client, [run] = _runs(local_store)
    assert run.info.status == "KILLED"

    monkeypatch.setattr(Trainer, "_begin_epoch", real)
    assert runner.main("ast", ["--config", str(path), "--resume", str(last)]) == 0
    client, [run] = _runs(local_store)  # the same run, finished
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/icbhi_score")] == [1, 2]


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(synthetic_icbhi_dir, tmp_path,
                                                                            monkeypatch, capsys):
    def ctrl_c(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_begin_epoch", ctrl_c)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    try:
        assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 130
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "interrupted during epoch 1, before the first checkpoint; start the run again"
    assert list((tmp_path / "ck").iterdir()) == []


@pytest.mark.parametrize("exc, line", [
    (KeyError("best_epoch"), "unexpected KeyError: best_epoch"),
    (IndexError("list index out of range"), "unexpected IndexError: list index out of range"),
    (RuntimeError("CUDA error: device-side assert triggered"),
     "unexpected RuntimeError: CUDA error: device-side assert triggered"),
])
def test_a_bug_keeps_its_type_and_the_traceback_hint(exc, line, capsys, monkeypatch):
    from ls.utils.cli import report_error

    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    assert report_error(exc) == 2
    assert capsys.readouterr().err == f"error: {line}; run again with --traceback (LS_TRACEBACK=1) to see where\n"


def test_user_errors_of_every_layer_are_plain_lines(capsys, monkeypatch):
    import pandas as pd

    from ls.config import ConfigError
    from ls.data.metadata import _column
    from ls.engine.trainer import DeviceError, NonFiniteLossError
    from ls.runs.mirror import TrackingError
    from ls.utils.cli import report_error
    from ls.utils.io import WriteError

    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    try:
        _column(pd.DataFrame({"Filename": ["a"]}), "Age")
    except KeyError as exc:  # still a KeyError for callers that look names up
        column = exc
    for exc in (ConfigError("x.yaml: bad"), FileNotFoundError(2, "No such file or directory", "a.wav"),
                WriteError(28, "cannot write b.pt: no space left on device"), TrackingError("server away"),
                NonFiniteLossError("loss is nan"), DeviceError("no CUDA device"), column):
        assert report_error(exc) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "unexpected" not in err and "--traceback" not in err, err
    assert "segment table has no column" in str(column) and not str(column).startswith(("'", '"'))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["artifacts", "end_run"])
def test_ctrl_c_after_training_says_how_to_resume_and_marks_the_run_killed(synthetic_icbhi_dir, tmp_path,
                                                                          local_store, monkeypatch, capsys, where):
    """Ctrl-C once fit() returned (test splits, figures, artifacts, ending the record): best.pt and last.pt
    exist, so it names the epoch and the --resume path, and the run ends KILLED, never stays RUNNING."""
    from ls.runs.record import RunRecord

    real_log, real_end = run_mod.write_run_artifacts, RunRecord.end
    if where == "artifacts":
        def ctrl_c(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(run_mod, "write_run_artifacts", ctrl_c)
    else:
        def ctrl_c_while_finishing(self, status="FINISHED"):
            if status == "FINISHED" and self.folder.parent.name == "ck":
                raise KeyboardInterrupt
            return real_end(self, status)

        monkeypatch.setattr(RunRecord, "end", ctrl_c_while_finishing)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir)
    try:
        rc = runner.main("ast", ["--config", str(path)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")
    err = capsys.readouterr().err
    [run_dir] = (tmp_path / "ck").iterdir()
    assert {"best.pt", "last.pt"} <= {p.name for p in run_dir.iterdir()}
    assert rc == 130 and err.strip().splitlines()[-1] == (
        f"interrupted after epoch 1; continue with --resume {run_dir / 'last.pt'}")
    _, [run] = _runs(local_store)
    assert run.info.status == "KILLED"
    monkeypatch.setattr(run_mod, "write_run_artifacts", real_log)
    monkeypatch.setattr(RunRecord, "end", real_end)
    assert runner.main("ast", ["--config", str(path), "--resume", str(run_dir / "last.pt")]) == 0
    _, [run] = _runs(local_store)  # the same run, its last steps done
    assert run.info.status == "FINISHED" and (run_dir / "run.json").is_file()


@pytest.mark.slow
def test_ctrl_c_during_the_last_sync_of_a_finished_run_says_how_to_sync_not_to_resume(
        synthetic_icbhi_dir, tmp_path, local_store, monkeypatch, capsys):
    """The record ended FINISHED before the last sync: Ctrl-C there loses nothing and leaves nothing to resume;
    the command that syncs the run later is printed, and running it completes the MLflow run."""
    from ls.runs.mirror import Mirror
    from ls.tracking import main as tracking_main

    real_poke = Mirror.poke

    def ctrl_c_in_the_last_sync(self, folder, final=False):
        if final and Path(folder).parent.name == "ck":
            raise KeyboardInterrupt
        return real_poke(self, folder, final)

    monkeypatch.setattr(Mirror, "poke", ctrl_c_in_the_last_sync)
    rc = runner.main("ast", ["--config", str(tiny_yaml(tmp_path, synthetic_icbhi_dir))])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    [run_dir] = (tmp_path / "ck").iterdir()
    assert rc == 130 and "nothing to resume" in err and "--resume" not in err, err
    assert err.endswith(f"-m ls.tracking sync {run_dir.resolve()}"), err
    assert (run_dir / "run.json").is_file()
    assert [e["status"] for e in layout_events(run_dir) if e["event"] == "end"] == ["FINISHED"]
    _, [run] = _runs(local_store)
    assert run.info.status == "RUNNING"  # the store has not seen the end yet
    monkeypatch.setattr(Mirror, "poke", real_poke)
    assert tracking_main(["sync", str(run_dir)]) == 0
    _, [run] = _runs(local_store)
    assert run.info.status == "FINISHED" and run.data.metrics


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_sync_of_an_interrupted_run_keeps_the_resume_advice(
        synthetic_icbhi_dir, tmp_path, local_store, monkeypatch, capsys):
    """Ctrl-C in training, then again while its KILLED record makes its last sync: the run is still resumable,
    and the message still says from where; the sync is postponed with its command."""
    from ls.runs.mirror import Mirror

    real_begin, real_poke = Trainer._begin_epoch, Mirror.poke

    def ctrl_c_at_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_begin(self, epoch)

    def ctrl_c_in_the_last_sync(self, folder, final=False):
        if final:
            raise KeyboardInterrupt
        return real_poke(self, folder, final)

    monkeypatch.setattr(Trainer, "_begin_epoch", ctrl_c_at_epoch_2)
    monkeypatch.setattr(Mirror, "poke", ctrl_c_in_the_last_sync)
    rc = runner.main("ast", ["--config", str(tiny_yaml(tmp_path, synthetic_icbhi_dir, epochs=2))])
    err = capsys.readouterr().err
    [run_dir] = (tmp_path / "ck").iterdir()
    assert rc == 130 and err.strip().splitlines()[-1] == (
        f"interrupted after epoch 1; continue with --resume {run_dir / 'last.pt'}")
    assert f"the last sync of {run_dir.resolve()} was interrupted" in err
    assert [e["status"] for e in layout_events(run_dir) if e["event"] == "end"] == ["KILLED"]


def layout_events(run_dir: Path) -> list[dict]:
    from ls.runs.record import EventLog

    return EventLog(run_dir).events()


@pytest.mark.slow
def test_ctrl_c_in_a_seeds_group_names_the_member_and_resume_finishes_it_alone(synthetic_icbhi_dir, tmp_path,
                                                                              monkeypatch, capsys):
    real = Trainer._begin_epoch
    seen = []

    def ctrl_c_in_epoch_2_of_the_second_seed(self, epoch):
        seen.append((self.seed, epoch))
        if (self.seed, epoch) == (8, 1):
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_begin_epoch", ctrl_c_in_epoch_2_of_the_second_seed)
    path = tiny_yaml(tmp_path, synthetic_icbhi_dir, epochs=2)
    assert runner.main("ast", ["--config", str(path), "--no-tracking", "--seeds", "7", "8", "9"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    [group] = (tmp_path / "ck").glob("ast_2ep_strict_seeds3_*")
    member = group / "seed8"
    assert err[-1] == (f"interrupted seed 8 of the --seeds group (1 member(s) before it finished) after epoch 1; "
                       f"--resume {member / 'last.pt'} (without --seeds) finishes this member alone; the members "
                       "after it and the group's summary are not run")
    assert sorted(p.name for p in group.iterdir() if p.is_dir()) == ["seed7", "seed8"]  # seed 9 never started
    assert json.loads((group / "seed7" / "run.json").read_text())["seed"] == 7
    # As the line says: --resume alone, with the group's config (seed 0), continues seed 8's run.
    monkeypatch.setattr(Trainer, "_begin_epoch", real)
    assert runner.main("ast", ["--config", str(path), "--no-tracking", "--resume", str(member / "last.pt")]) == 0
    summary = json.loads((member / "run.json").read_text())
    assert summary["seed"] == 8 and summary["epochs"] == 2


def test_resuming_a_kfold_member_alone_trains_its_own_fold_with_its_own_seed(synthetic_icbhi_dir, tmp_path,
                                                                              monkeypatch):
    from ls.config import load_config

    folds = []

    def fold_data(cfg, fold, k):
        folds.append((cfg.seed, fold, k))
        raise KeyboardInterrupt  # enough: what matters is which data it asked for

    monkeypatch.setattr(ls.data, "build_fold_datasets", fold_data)
    monkeypatch.setattr(ls.data, "build_datasets", lambda cfg: pytest.fail("the official split was built"))
    monkeypatch.setattr(run_mod, "read_checkpoint", lambda path: {"member": {"seed": 5, "fold": 2, "k": 4}})
    monkeypatch.setattr(run_mod, "check_resumable", lambda *args: None)
    member = tmp_path / "ck" / "ast_1ep_strict_seed5_fold2_20260101-120000"
    member.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_mod.train_run(load_config(tiny_yaml(tmp_path, synthetic_icbhi_dir)), "ast", resume=member / "last.pt",
                          progress=False)
    assert folds == [(5, 2, 4)]


def test_a_ctrl_c_message_is_printed_by_rank_0_only(tmp_path, monkeypatch, capsys):
    from ls.engine.trainer import TrainingInterrupted

    def interrupted(*args):
        raise TrainingInterrupted(3, tmp_path / "last.pt")

    monkeypatch.setattr(runner, "_run_cli", interrupted)
    path = tiny_yaml(tmp_path, tmp_path)
    for rank, lines in (("1", []), ("0", [f"interrupted after epoch 3; continue with --resume {tmp_path / 'last.pt'}"])):
        monkeypatch.setenv("RANK", rank)
        assert runner.main("ast", ["--config", str(path), "--no-tracking"]) == 130
        assert capsys.readouterr().err.splitlines() == lines


def test_a_failed_run_keeps_the_folder_it_was_given_and_removes_the_one_it_made(synthetic_icbhi_dir, tmp_path,
                                                                                built):
    """A study places its runs (run_dir): the folder is the study's, kept when the run fails before any data;
    a run's own new folder under training.checkpoint_dir is removed again."""
    from ls.config import load_config

    cfg = load_config(tiny_yaml(tmp_path, synthetic_icbhi_dir))
    placed = tmp_path / "study" / "runs" / "a"
    with pytest.raises(AssertionError, match="datasets were built"):
        run_mod.train_run(cfg, "ast", run_dir=placed, progress=False)
    assert placed.is_dir() and (placed / "config.yaml").is_file()
    with pytest.raises(AssertionError, match="datasets were built"):
        run_mod.train_run(cfg, "ast", progress=False)
    assert list((tmp_path / "ck").iterdir()) == []
    assert len(built) == 2


def test_argument_conflicts_are_error_lines(tmp_path, capsys):
    assert runner.main("ast", ["--config", "x.yaml", "--resume", "last.pt", "--seeds", "1", "2"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: --resume continues one run; it cannot be combined with --seeds or --kfold"]
    assert runner.main("ast", ["--config", "x.yaml", "--kfold", "1"]) == 2
    assert error_lines(capsys.readouterr().err) == ["error: --kfold needs at least 2 folds, got 1"]


def test_the_last_line_opens_the_runs_or_names_the_sync_of_every_record_left_behind(tmp_path):
    """A run that ended while the store was away keeps its record in its folder; the last line of the command
    names the sync of each such folder (of this command's runs only), not the open hint."""
    from ls.runs.executor import tracking_summary
    from ls.runs.mirror import Mirror, TrackingSettings, sync_command

    mirror = Mirror(TrackingSettings("http://host:5000", "ls"))
    assert tracking_summary(mirror) == "MLflow: http://host:5000 (experiment 'ls'); open http://host:5000 in a browser"
    mirror.unsynced[tmp_path / "run_b"] = sync_command(tmp_path / "run_b")
    hint = tracking_summary(mirror)
    assert hint.endswith(f"Sync them when it is back with:\n  {sync_command(tmp_path / 'run_b')}")
    assert tracking_summary(None) is None


def test_the_same_seed_twice_is_refused_before_any_run(tmp_path, built, capsys):
    """--seeds 1 1 trained seed 1 twice and reported a spread of zero: every plan is checked the same way."""
    path = tiny_yaml(tmp_path, tmp_path)
    assert runner.main("ast", ["--config", str(path), "--no-tracking", "--seeds", "1", "1"]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line == ("error: the plan lists the same run more than once: strict/ast/seed1 (each seed, fold and "
                    "variant once)")
    assert built == [] and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("override", [f"mlflow.tracking_pasword={PASSWORD}", f"mlflow.tracking_password=[{PASSWORD}",
                                      f"mlflow.tracking_password=[{PASSWORD}]"])
def test_a_bad_password_override_is_reported_without_the_password(tmp_path, override, capsys):
    path = tiny_yaml(tmp_path, tmp_path)
    assert runner.main("ast", ["--config", str(path), "--no-tracking", "--set", override]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) and "mlflow.tracking_pas" in err and PASSWORD not in err
