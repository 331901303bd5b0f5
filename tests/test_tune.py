"""ls.tune: the tune file and its problems (all at once, before any trial), real tiny searches (two worker
processes on one journal storage, a seeded sequential search twice, a pruner that stops bad trials, a worker
killed mid-trial and the command run again), best_config.yaml that loads and trains, --then-study, the report,
the MLflow parent run and its children, and - checked on the dataset itself - that no trial reads the test split.

Trials are tiny (tiny224 on 16 x 32 inputs, 1-5 epochs, one thread) on a folder where a tone and the device decide
the class (tests/study_data.py), so good learning rates learn within two epochs and near-zero ones do not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from study_data import write_conditional_icbhi
from test_plugins import isolated  # noqa: F401 - the fixture: plugin tables restored after the test

import ls.tune.cli as tune_cli
from ls.config import load_config
from ls.runs.record import EventLog, status_of
from ls.tune.config import load_search, resolve_storage
from ls.tune.search import owner_is_gone, run_search, worker_identity
from ls.tune.trials import EXCESS_ATTR, counted, has_work, is_excess

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {
    "dataset": {"data_folder": "DATA", "n_cls": 2, "multi_label": False, "batch_size": 16, "w": 32,
                "val_fraction": 0.25, "cache_workers": 0},
    "audio": {"sample_rate": 4000, "desired_length": 1.0, "n_mels": 16, "high_freq": 2000.0, "frame_shift": 31.25,
              "mel_norm": "dataset"},
    "models": {"ast": {"model_size": "tiny224", "fstride": 16, "tstride": 16},
               "ast_film_soft": {"model_size": "tiny224", "fstride": 16, "tstride": 16}},
    "training": {"epochs": 2, "device": "cpu", "scheduler": {"type": "none"}},
}  # fmt: skip
SPACE = {
    "training.optimizer.lr": {"log_uniform": ["1e-4", 3e-3]},
    "models.ast_film_soft.mask_overlap_lambda": {"uniform": [0, 0.05]},
    "models.ast_film_soft.conditioned_layers": {"choice": [[10, 11], [8, 9, 10, 11], "all"]},
}


def write_tune(path: Path, data: Path, tune: dict, **sections) -> Path:
    merged = {k: v for k, v in SECTIONS.items() if k not in sections}
    merged.update(sections)
    merged["dataset"] = {**merged["dataset"], "data_folder": str(data)}
    path.write_text(yaml.safe_dump({**merged, "tune": {"variants": ["ast_film_soft"], "space": SPACE, "threads": 1,
                                                       "out": str(path.parent / "out"), **tune}}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_conditional_icbhi(tmp_path_factory.mktemp("tune_data") / "data", "device", patients=10, cycles=4)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "LS_TRACEBACK": "1"}


def _tune(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ls.tune", *args], capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=timeout, check=False)


def _study(search, storage=None):
    from ls.tune.search import open_storage, open_study
    from ls.tune.trials import quiet_optuna

    spec = resolve_storage(search, storage)
    with quiet_optuna():
        return open_study(search, open_storage(spec, search), spec, create=False)


def _metric_keys(folder: Path) -> set[str]:
    return {k for e in EventLog(folder).events() if e.get("event") == "metrics" for k in e["metrics"]}


# =================================================================================================
# The tune file
# =================================================================================================
def test_every_problem_of_a_tune_file_is_reported_at_once_before_any_trial(tmp_path, data, capsys, monkeypatch):
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    path = write_tune(tmp_path / "t.yaml", data, {
        "metric": "icbhi",
        "space": {
            "training.optimizer.lrr": {"log_uniform": [1e-5, 1e-3]},             # unknown key
            "models.ast_film_soft.dropout": {"uniform": [0.3, 0.1]},            # empty range
            "training.weight_decay_x": {"int": [1, 2]},                          # unknown key, no close match
            "models.ast_film_soft.mask_overlap_lambda": {"log_uniform": [0, 0.05]},  # log range including 0
            "models.ast_film_soft.conditioned_layers": {"choice": [[10, 11], "some"]},  # fails the key's type
            "dataset.batch_size": {"uniform": [8, 32]},                          # fractional values, int key
        }})  # fmt: skip
    assert tune_cli.main([str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1
    for expected in ("'training.optimizer.lrr'", "did you mean 'lr'", "empty range [0.3, 0.1]",
                     "'training.weight_decay_x'", "a log range must lie above 0", "'some' is not one of 'all'",
                     "expected an integer, got", "tune.metric 'icbhi'", "did you mean 'icbhi_score'"):
        assert expected in err, expected
    assert "7 problems" in err and not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.mark.parametrize(("tune", "sections", "message"), [
    ({"metric": "no_such_metric"}, {}, "tune.metric 'no_such_metric' .* not a metric that runs of this config log"),
    ({}, {"training": {**SECTIONS["training"], "selection": "paper"}}, "training.selection is 'paper' .* strict"),
    ({"space": {"training.selection": {"choice": ["strict", "paper"]}}}, {}, "cannot be searched"),
    ({"space": {"models.ast.dropout": {"uniform": [0.1, 0.3]}}}, {}, "variant ast, which tune.variants"),
    ({"space": {"training.epochs": {"int": [1, 3], "log": True}}}, {}, "expected one of"),
    ({"variants": ["ast_film"], "space": {"training.optimizer.lr": {"uniform": [1e-4, 1e-3]}}}, {},
     "no 'models.ast_film' block"),
    ({"enqueue": [{"training.optimizer.lr": 0.5}]}, {}, "tune.enqueue\\[0\\]: 0.5 is not a value of"),
])  # fmt: skip
def test_each_bad_input_is_one_error_line(tmp_path, data, capsys, monkeypatch, tune, sections, message):
    import re

    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    path = write_tune(tmp_path / "t.yaml", data, tune, **sections)
    assert tune_cli.main([str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


def test_without_optuna_the_command_says_how_to_install_it(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    assert tune_cli.main([str(write_tune(tmp_path / "t.yaml", data, {}))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs Optuna" in err[0] and "pip install" in err[0]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*tune*.yaml")))
def test_shipped_tune_files_load(name):
    search = load_search(REPO / "configs" / name)
    assert search.params and search.settings.enqueue  # the quickstart's own values are trial 0
    assert search.metric == "icbhi_score" and search.base.training.selection == "strict"


def test_the_best_config_holds_no_credential_of_the_search_s_config():
    """best_config.yaml is a file to share and is recorded with the search: no password, no user:pw@ in a URI."""
    from ls.tune.best import minimal_config

    search = load_search("quickstart_tune", ["mlflow.tracking_password=hunter22secret",
                                             "mlflow.tracking_uri=http://bob:pw12345@host:5000"])
    variant = search.variants[0]
    data, _ = minimal_config(search, variant, {})
    text = yaml.safe_dump(data)
    assert "hunter22secret" not in text and "pw12345" not in text and "bob" not in text, text
    assert data.get("mlflow", {}).get("tracking_uri") == "http://host:5000"  # the store stays, its user does not


def test_trial_records_the_workers_left_unsynced_are_listed_by_the_command(tmp_path, data):
    """With --jobs N each worker has its own mirror: the command lists every trial record the store lacks
    events of, with the command that syncs it."""
    from ls.runs.mirror import Mirror, TrackingSettings
    from ls.runs.record import RunRecord
    from ls.tune.search import _list_unsynced

    search = load_search(write_tune(tmp_path / "t.yaml", data, {}))
    record = RunRecord(search.trial_dir(0))
    record.start("trial 0")
    search.trial_dir(1).mkdir(parents=True)  # a folder without a record yet
    mirror = Mirror(TrackingSettings(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    _list_unsynced(search, mirror)
    assert list(mirror.unsynced) == [search.trial_dir(0).resolve()]


def test_space_values_are_typed_like_the_config(tmp_path, data):
    """A choice may be any value the key takes (``all`` of conditioned_layers), ranges keep their kind, and a
    trial's config is the base with its values, built and checked like any config, off the test split."""
    search = load_search(write_tune(tmp_path / "t.yaml", data, {"space": {
        **SPACE, "dataset.batch_size": {"int": [8, 32], "step": 8}}}))
    by_key = {p.key: p for p in search.params}
    layers = by_key["models.ast_film_soft.conditioned_layers"]
    assert layers.labels == ("[10, 11]", "[8, 9, 10, 11]", "all") and layers.value_of("all") == "all"
    assert by_key["training.optimizer.lr"].low == 1e-4  # "1e-4" (YAML reads it as a string) is a number
    cfg = search.trial_config("ast_film_soft", {layers: "all", by_key["dataset.batch_size"]: 24})
    assert cfg.model("ast_film_soft").conditioned_layers == list(range(12)) and cfg.dataset.batch_size == 24
    assert cfg.training.monitor_test is False and search.base.training.monitor_test is True
    assert search.metric == "icbhi_score" and search.direction == "maximize"  # the dataset's own score
    spr = load_search(write_tune(tmp_path / "spr.yaml", data, {"space": {"training.optimizer.lr": SPACE[
        "training.optimizer.lr"]}}, dataset={"data_folder": "x", "name": "sprsound", "task": "event7", "w": 32}))
    assert spr.metric == "sprsound_score"
    assert resolve_storage(search, None).target == "sqlite:///" + str((tmp_path / "out" / "optuna.db").resolve())
    assert resolve_storage(search, "j.log").kind == "journal"
    # several variants: the variant is a parameter, and a variant's own options apply to its trials only
    two = load_search(write_tune(tmp_path / "two.yaml", data, {"variants": ["ast", "softfilm"], "space": {
        "models.ast.dropout": {"uniform": [0.0, 0.3]}, **SPACE}}))
    assert two.variants == ["ast", "ast_film_soft"]
    assert [p.key for p in two.params_of("ast")] == ["models.ast.dropout", "training.optimizer.lr"]
    assert "models.ast.dropout" not in [p.key for p in two.params_of("ast_film_soft")]


def test_a_plugin_s_variant_is_searched_like_a_built_in_one_and_workers_load_the_plugin(
        isolated, tmp_path, data):  # noqa: F811 - test_plugins' fixture
    from test_plugins import write_plugin

    from ls.utils.plugins import PLUGINS_ENV

    module = write_plugin(isolated, variant="plug_variant")
    search = load_search(write_tune(tmp_path / "t.yaml", data, {"variants": ["plug_variant"], "space": {
        "models.plug_variant.dropout": {"uniform": [0.0, 0.3]}}}, plugins=[module],
        models={"plug_variant": {"model_size": "tiny224", "fstride": 16, "tstride": 16}}))
    assert search.variants == ["plug_variant"] and search.params[0].variant == "plug_variant"
    assert module in os.environ[PLUGINS_ENV].split(",")  # what spawned workers load before their tables
    assert load_search("quickstart_tune").name == "quickstart_tune"  # a built-in tune file by its name


def test_a_missing_data_folder_stops_the_search_before_anything_is_written(tmp_path, data, capsys, monkeypatch):
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    path = write_tune(tmp_path / "t.yaml", data, {})
    assert tune_cli.main([str(path), "--no-tracking", "--set", f"dataset.data_folder={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "no trial was started" in err[0]
    assert not (tmp_path / "out").exists()


# =================================================================================================
# Counting trials, workers that are gone
# =================================================================================================
def test_trials_count_once_and_a_late_new_trial_is_one_too_many():
    from optuna.trial import TrialState, create_trial

    def trial(number, state, **system):
        t = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, system_attrs=system)
        t.number = number
        return t

    trials = [trial(0, TrialState.COMPLETE), trial(1, TrialState.FAIL), trial(2, TrialState.RUNNING),
              trial(3, TrialState.WAITING, failed_trial=1, retry_history=[1], fixed_params={"x": 1})]
    assert [t.number for t in counted(trials)] == [0, 2, 3]  # the failed trial 1 counts through its retry
    assert has_work(trials, n_trials=3)  # the retry is queued: it always runs
    new = trial(4, TrialState.RUNNING)
    assert is_excess([*trials, new], new, n_trials=3) and not is_excess([*trials, new], new, n_trials=4)
    assert not is_excess([*trials, new], trials[3], n_trials=1)  # a retry is never one too many
    skipped = trial(4, TrialState.FAIL)
    skipped.user_attrs[EXCESS_ATTR] = True
    assert not has_work([trials[0], trials[2], skipped], n_trials=2)


def test_a_worker_is_gone_when_its_process_on_this_machine_has_ended():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    me = worker_identity()
    assert not owner_is_gone(me)
    assert owner_is_gone({**me, "pid": int(done.stdout)})  # ended (its pid is free or another process's)
    assert not owner_is_gone({**me, "host": "another-machine", "pid": int(done.stdout)})  # the heartbeat's job
    assert not owner_is_gone(None)


# =================================================================================================
# A real search: two workers on one journal storage
# =================================================================================================
@pytest.fixture(scope="module")
def parallel_search(tmp_path_factory, data):
    """6 trials, 2 worker processes, one journal file: what the command leaves behind."""
    folder = tmp_path_factory.mktemp("tune_parallel")
    path = write_tune(folder / "t.yaml", data, {"n_trials": 6, "name": "par"})
    journal = folder / "shared" / "journal.log"
    done = _tune(str(path), "--jobs", "2", "--storage", str(journal), "--no-tracking")
    assert done.returncode == 0, done.stdout + done.stderr
    return path, journal, done


@pytest.mark.slow
def test_six_trials_in_two_workers_finish_with_distinct_parameters_and_never_test(parallel_search):
    path, journal, done = parallel_search
    search = load_search(path)
    study = _study(search, str(journal))
    trials = study.get_trials()
    assert len(trials) == 6 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    assert "[tune w0]" in done.stdout and "[tune w1]" in done.stdout  # both workers ran trials
    assert len({t.user_attrs["ls_worker"]["pid"] for t in trials}) == 2
    for t in trials:
        folder = search.out / t.user_attrs["ls_folder"]
        assert folder == search.trial_dir(t.number) and (folder / "train.log").is_file()
        stored = load_config(folder / "config.yaml")  # an ordinary run folder of the trial's config
        assert stored.training.optimizer.lr == t.params["training.optimizer.lr"]
        assert stored.model("ast_film_soft").mask_overlap_lambda == t.params["models.ast_film_soft.mask_overlap_lambda"]
        # no test: no per-epoch test curve, no final test metric, no predictions
        assert not any(k.startswith(("test", "test_epoch")) for k in _metric_keys(folder)), folder
        assert not (folder / "test_predictions.csv").exists()
        if t.state.name == "COMPLETE":
            assert json.loads((folder / "run.json").read_text())["test"] == {}
            assert status_of(folder) == "FINISHED"
    report = search.report_dir
    assert len((report / "trials.csv").read_text().strip().splitlines()) == 7
    for name in ("report.md", "trials.md", "importances.csv", "optimization_history.png", "parallel_coordinate.png",
                 "slice.png", "param_importances.png", "intermediate_values.png"):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert f"Trial {study.best_trial.number}: validation icbhi_score" in text and "No trial read the test split" in text


@pytest.mark.slow
def test_best_config_loads_into_the_best_trial_and_trains(parallel_search, tmp_path):
    path, journal, _ = parallel_search
    search = load_search(path)
    best = _study(search, str(journal)).best_trial
    text = (search.out / "best_config.yaml").read_text()
    assert f"trial {best.number}" in text and text.count("# tuned: ") == 3
    cfg = load_config(search.out / "best_config.yaml")
    trial_cfg = load_config(search.trial_dir(best.number) / "config.yaml")
    from ls.config import config_differences, to_dict

    assert config_differences(to_dict(trial_cfg), to_dict(cfg), "ast_film_soft") == [
        "training.monitor_test: stored False vs planned True"]  # the trial's own setting: it never tested
    raw = yaml.safe_load(text)
    assert "h" not in raw["dataset"] and "input_fdim" not in raw["models"]["ast_film_soft"]  # derived: left out
    assert "ast" not in raw["models"] and raw["training"]["epochs"] == 2  # only the variant; what differs
    from ls.train import main as train_main

    assert train_main("ast_film_soft", ["--config", str(search.out / "best_config.yaml"), "--no-tracking",
                                        "--set", f"training.checkpoint_dir={tmp_path}", "--set", "training.epochs=1"]) == 0
    (run,) = tmp_path.glob("*/run.json")
    assert "icbhi_score" in json.loads(run.read_text())["test"]


@pytest.mark.slow
def test_report_only_rebuilds_the_report_and_then_study_tests_the_best_config_once(parallel_search):
    import shutil

    path, journal, _ = parallel_search
    search = load_search(path)
    shutil.rmtree(search.report_dir)
    done = _tune(str(path), "--storage", str(journal), "--report-only")
    assert done.returncode == 0, done.stderr
    assert (search.report_dir / "report.md").is_file() and len(_study(search, str(journal)).trials) == 6
    # the search is complete: the same command trains nothing more, then the study trains and tests each seed once
    done = _tune(str(path), "--storage", str(journal), "--no-tracking", "--then-study", "0", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 trial(s) run by this command" in done.stdout
    runs = sorted((search.out / "study" / "runs").glob("strict/ast_film_soft/seed*"))
    assert [r.name for r in runs] == ["seed0", "seed1"] and (search.out / "study" / "report" / "report.md").is_file()
    for run in runs:
        tests = [e for e in EventLog(run).events() if e.get("event") == "metrics"
                 and any(k.startswith("test") for k in e["metrics"])]
        assert len(tests) == 1 and not any(k.startswith("test_epoch/") for k in tests[0]["metrics"])
        assert "icbhi_score" in json.loads((run / "run.json").read_text())["test"]


# =================================================================================================
# Sequential: the same parameters twice; no trial reads the test split; MLflow
# =================================================================================================
class _CountingSplit:
    """A dataset that counts the items read from it (the test split under watch)."""

    def __init__(self, inner, reads: list[int]) -> None:
        self.inner, self.reads = inner, reads

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.inner[i]

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def test_reads(monkeypatch) -> list[int]:
    """Every test cycle any run of this process reads from now on."""
    import ls.data

    reads: list[int] = []
    build = ls.data.build_datasets

    def watched(cfg, *args, **kwargs):
        datasets = build(cfg, *args, **kwargs)
        datasets.test = _CountingSplit(datasets.test, reads)
        return datasets

    monkeypatch.setattr(ls.data, "build_datasets", watched)
    return reads


@pytest.mark.slow
def test_a_seeded_sequential_search_proposes_the_same_parameters_and_no_trial_reads_test(
        tmp_path, data, test_reads, one_thread, mlflow_db):
    from mlflow.tracking import MlflowClient

    from ls.runs.mirror import start_mirror
    from ls.runs.run import train_run

    tune = {"n_trials": 3, "sampler": {"type": "tpe", "n_startup_trials": 2}, "seed": 7, "name": "seq"}
    outcomes = []
    uri = f"sqlite:///{mlflow_db}"
    MlflowClient(tracking_uri=uri).create_experiment("tune", artifact_location=(tmp_path / "artifacts").as_uri())
    for i, mirror in enumerate((start_mirror({"tracking_uri": uri, "experiment_name": "tune"}), None)):
        path = write_tune(tmp_path / f"t{i}.yaml", data, {**tune, "out": str(tmp_path / f"out{i}")},
                          training={**SECTIONS["training"], "epochs": 1})
        search = load_search(path)
        outcomes.append(run_search(search, resolve_storage(search, None), mirror=mirror, say=lambda s: None))
    first, second = ([(t.params, t.value) for t in o.trials] for o in outcomes)
    assert len(first) == 3 and first == second  # trial 2 comes from TPE, which read the values of 0 and 1
    assert test_reads == []  # no trial read a single test cycle
    # the watch does see a run that reads the test split (a plain run: per-epoch curves and a final test)
    search = load_search(tmp_path / "t1.yaml")
    cfg = search.trial_config("ast_film_soft", {})
    cfg.training.monitor_test, cfg.training.epochs = True, 1
    train_run(cfg, "ast_film_soft", run_dir=tmp_path / "plain", progress=False)
    assert len(test_reads) == 2 * len(set(test_reads)) > 0  # each test cycle twice: the epoch's curve, the test

    # MLflow: one parent run for the search, each trial a child with its parameters, state and value
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(outcomes[0].parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tune"] == "seq"
    assert parent.data.params["tune.space.training.optimizer.lr"] == "log_uniform [0.0001, 0.003]"
    assert "best_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3
    for child in children:
        number = int(child.data.tags["tune.trial"])
        params, value = first[number]
        assert float(child.data.params["training.optimizer.lr"]) == params["training.optimizer.lr"]
        assert child.data.tags["tune.state"] == "COMPLETE" and child.data.metrics["tune/value"] == value


# =================================================================================================
# Pruning; a killed worker
# =================================================================================================
@pytest.mark.slow
def test_the_pruner_stops_trials_that_do_not_learn_after_their_first_epochs(tmp_path, data, one_thread):
    """A learning rate that learns runs all 5 epochs; two near zero (enqueued after it) score 0.5 every epoch
    and are stopped as soon as they fall below the median of the first at the same epoch."""
    path = write_tune(tmp_path / "t.yaml", data, {
        "n_trials": 3, "space": {"training.optimizer.lr": {"log_uniform": [1e-9, 1e-2]}},
        "pruner": {"type": "median", "n_startup_trials": 1},
        "enqueue": [{"training.optimizer.lr": 1e-3}, {"training.optimizer.lr": 1e-8},
                    {"training.optimizer.lr": 2e-8}]}, training={**SECTIONS["training"], "epochs": 5})
    search = load_search(path)
    outcome = run_search(search, resolve_storage(search, None), say=lambda s: None)
    good, *bad = outcome.trials
    assert good.state.name == "COMPLETE" and good.last_step == 5 and good.params["training.optimizer.lr"] == 1e-3
    for t in bad:
        assert t.state.name == "PRUNED" and t.last_step < 5, (t.number, t.last_step)
        folder = search.trial_dir(t.number)
        assert status_of(folder) == "FINISHED" and not (folder / "run.json").exists()  # stopped on purpose
        epochs = [e["step"] for e in EventLog(folder).events() if e.get("event") == "metrics" and "epoch" in e["metrics"]]
        assert max(epochs) == t.last_step
        [value] = [e["metrics"]["tune/value"] for e in EventLog(folder).events()
                   if e.get("event") == "metrics" and "tune/value" in e["metrics"]]
        assert value == t.intermediate_values[t.last_step]  # the value it was pruned at
    assert "pruned after epoch" in (search.report_dir / "trials.md").read_text()


@pytest.mark.slow
def test_a_killed_worker_s_trial_continues_from_its_last_checkpoint_with_its_parameters(tmp_path, data):
    path = write_tune(tmp_path / "t.yaml", data, {"n_trials": 1, "name": "kill"},
                      training={**SECTIONS["training"], "epochs": 4})
    search = load_search(path)
    first = search.trial_dir(0)
    worker = subprocess.Popen([sys.executable, "-m", "ls.tune", str(path), "--no-tracking"], env=_env(), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (first / "last.pt").is_file() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.poll() is None, "the worker ended before its first checkpoint"
        os.kill(worker.pid, signal.SIGKILL)  # as a lost machine or the out-of-memory killer: no goodbye
    finally:
        worker.wait(30)
    assert not (first / "run.json").exists()
    (killed,) = _study(search).get_trials()
    assert killed.state.name == "RUNNING"

    done = _tune(str(path), "--no-tracking")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"its worker (pid {worker.pid} on this machine) is gone" in done.stdout
    trials = {t.number: t for t in _study(search).get_trials()}
    assert [t.state.name for t in trials.values()] == ["FAIL", "COMPLETE"]  # n_trials 1: the retry counts
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == killed.params  # same parameters
    assert retry.user_attrs["ls_folder"] == "trials/trial0"  # found its folder by the original's number
    assert [p.name for p in search.trials_dir.iterdir()] == ["trial0"]
    events = EventLog(first).events()
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and "resume" in kinds  # one run, continued
    resumed_at = kinds.index("resume")
    steps = [e["step"] for e in events[resumed_at:] if e["event"] == "metrics" and "epoch" in e["metrics"]]
    assert steps and steps[0] > 1 and steps[-1] == 4  # continued from last.pt, not from epoch 1
    assert json.loads((first / "run.json").read_text())["test"] == {}
