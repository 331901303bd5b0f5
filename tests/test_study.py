"""ls.study: the study file, the plan (finished / resume / new), orchestration, the report at the end, and -
on real tiny training - resuming in the same MLflow runs and results that do not depend on how many runs went
at once. Two checks of the report run on predictions of really trained models (tests/fixtures/study_report,
made by tests/study_data.py): SoftFiLM ahead with an interval above zero where the device decides the class,
an interval that includes zero where the metadata carries no signal."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from study_data import FIXTURES, write_conditional_icbhi

import ls.study as study_mod
from ls.config import ConfigError, dump_yaml
from ls.report.build import Settings, build_report
from ls.report.runs import load_runs
from ls.runs import executor
from ls.runs.executor import RunResult
from ls.runs.mirror import Mirror, TrackingSettings, check_connection, read_state
from ls.runs.record import EventLog
from ls.study import StudyError, load_study, plan_runs, run_state, run_study

TINY = {
    "dataset": {"data_folder": "DATA", "n_cls": 2, "multi_label": False, "batch_size": 16, "w": 32,
                "val_fraction": 0.25, "cache_workers": 0},
    "audio": {"sample_rate": 4000, "desired_length": 1.0, "n_mels": 16, "high_freq": 2000.0, "frame_shift": 31.25,
              "mel_norm": "dataset"},
    "models": {"ast": {"model_size": "tiny224", "fstride": 16, "tstride": 16},
               "ast_film_soft": {"model_size": "tiny224", "fstride": 16, "tstride": 16}},
    "training": {"epochs": 2, "device": "cpu", "monitor_test": False, "scheduler": {"type": "none"}},
}  # fmt: skip


def write_study(path: Path, study: dict, **sections) -> Path:
    data = {"study": study, **{k: v for k, v in TINY.items() if k not in sections}, **sections}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# =================================================================================================
# The study file
# =================================================================================================
@pytest.mark.parametrize(("study", "sections", "error", "message"), [
    (None, {}, StudyError, "no 'study:' section"),
    ({"variants": ["ast", "ast_film_soft"], "seedz": [1]}, {}, ConfigError, "'seedz' in .*s.yaml \\(study section\\)"),
    ({"variants": ["ast_film_soft"], "baseline": "ast"}, {}, StudyError, "study.baseline 'ast' is not among"),
    ({"variants": ["ast", "ast_film"]}, {}, ConfigError, "no 'models.ast_film' block.*study.variants lists 'ast_film'"),
    ({"variants": ["ast", "ast_film_soft"], "selections": ["loose"]}, {}, ConfigError, "selections must be"),
    ({"variants": ["ast", "ast_film_soft"], "seeds": [1, 1]}, {}, ConfigError, "seeds lists 1 more than once"),
    ({"variants": ["ast", "softfilm", "ast_film_soft"]}, {}, StudyError, "names a variant twice"),
    ({"variants": ["ast"], "report": {"metrics": ["icbhi_scor"]}}, {}, ConfigError, "unknown metric 'icbhi_scor'"),
    ({"variants": ["ast"], "report": {"metrics": ["device/Meditron/scor"]}}, {}, ConfigError,
     "unknown per-group metric 'scor'"),
    ({"variants": ["ast"], "report": {"confidence": 95}}, {}, ConfigError, "confidence must lie strictly between"),
    ({"variants": ["ast"], "report": {"bootstrap": 0}}, {}, ConfigError, "bootstrap must be at least 100"),
    ({"variants": ["ast"], "config": "missing.yaml"}, {}, StudyError, "study.config 'missing.yaml' not found"),
    ({"variants": ["ast"]}, {"training": {"epochz": 3}}, ConfigError, "'training.epochz' in .*s.yaml"),
])  # fmt: skip
def test_study_file_problems_name_the_file_and_the_key(tmp_path, study, sections, error, message):
    path = tmp_path / "s.yaml"
    if study is None:
        path.write_text(yaml.safe_dump(TINY))
    else:
        write_study(path, study, **sections)
    with pytest.raises(error, match=message):
        load_study(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*study*.yaml")))
def test_shipped_study_files_load(name):
    study = load_study(Path(__file__).parents[1] / "configs" / name)
    assert study.settings.baseline in study.settings.variants and len(study.identities()) >= 2


def test_cli_error_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast_film_soft"], "baseline": "ast"})
    assert study_mod.main([str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "s.yaml" in err[0]
    assert study_mod.main([str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    # the error style of every ls command (ls.utils.cli): --traceback shows where, then the same line
    assert study_mod.main([str(path), "--no-tracking", "--traceback"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and "in load_study" in "\n".join(err) and err[-1] == f"error: {err[-1][7:]}"
    assert "study.baseline 'ast' is not among" in err[-1]


def test_sections_lie_over_the_base_config_and_runs_have_fixed_folders(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"config": "base.yaml", "variants": ["ast", "softfilm"], "seeds": [3, 4],
                  "selections": ["strict", "paper"], "out": str(tmp_path / "out")},
        "training": {"epochs": 5, "optimizer": {"lr": 1e-3}},
        "models": {"ast": {"dropout": 0.2}},
    }))  # fmt: skip
    study = load_study(path, ["training.epochs=7"], seeds=[3, 4, 5])
    cfg = study.base
    assert cfg.training.epochs == 7 and cfg.training.optimizer.lr == 1e-3  # --set > study file > base
    assert cfg.model("ast").dropout == 0.2 and cfg.model("ast").model_size == "tiny224"  # merged key by key
    assert cfg.dataset.n_cls == 2 and study.settings.variants == ["ast", "ast_film_soft"]  # alias resolved
    assert study.name == "s" and study.out == tmp_path / "out"
    assert len(study.identities()) == 12 and study.identities()[:2] == [("ast", 3, "strict"),
                                                                        ("ast_film_soft", 3, "strict")]
    run_cfg = study.run_config("ast_film_soft", 5, "paper")
    assert (run_cfg.seed, run_cfg.training.selection) == (5, "paper") and cfg.seed != 5  # the base is untouched
    assert study.run_dir("ast_film_soft", 5, "paper") == tmp_path / "out" / "runs" / "paper" / "ast_film_soft" / "seed5"


def _fake_finished(study, variant, seed, selection, cfg=None):
    run_dir = study.run_dir(variant, seed, selection)
    run_dir.mkdir(parents=True)
    dump_yaml(cfg or study.run_config(variant, seed, selection), run_dir / "config.yaml")
    (run_dir / "run.json").write_text("{}")
    return run_dir


def test_plan_skips_finished_runs_and_refuses_runs_of_another_config(tmp_path):
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast", "ast_film_soft"], "seeds": [0, 1],
                                             "out": str(tmp_path / "out")})
    study = load_study(path)
    _fake_finished(study, "ast", 0, "strict")
    plan = plan_runs(study)
    assert [(r.key, run_state(r)) for r in plan] == [
        ("strict/ast/seed0", "finished"), ("strict/ast_film_soft/seed0", "new"), ("strict/ast/seed1", "new"),
        ("strict/ast_film_soft/seed1", "new")]
    # where the work happens does not make another run; what is trained does
    assert run_state(plan_runs(load_study(path, ["dataset.num_workers=2", "training.device=auto"]))[0]) == "finished"
    # a run stored by an ls version without some option (here: a key removed from its config.yaml) still counts
    stored = yaml.safe_load((study.run_dir("ast", 0, "strict") / "config.yaml").read_text())
    del stored["training"]["grad_clip"]
    (study.run_dir("ast", 0, "strict") / "config.yaml").write_text(yaml.safe_dump(stored))
    assert run_state(plan_runs(study)[0]) == "finished"
    with pytest.raises(StudyError, match=r"seed0: this finished run was trained with another config .*"
                                         r"training.epochs: stored 2 vs planned 3"):
        plan_runs(load_study(path, ["training.epochs=3"]))


def _fake_interrupted(study, variant, seed, selection, cfg=None):
    """A run folder with the ``last.pt`` an interrupted run leaves (its config as ls.train stores it)."""
    from ls.config import to_dict
    from ls.engine.checkpoint import make_checkpoint, save_checkpoint

    run_dir = study.run_dir(variant, seed, selection)
    run_dir.mkdir(parents=True)
    meta = {"variant": variant, "config": to_dict(cfg or study.run_config(variant, seed, selection)),
            "metadata_encoder": None, "metadata_spec": None, "class_names": ["normal", "abnormal"]}
    state = make_checkpoint({}, meta, thresholds=None, output_mode=None, epoch=1, best=0.5, best_epoch=1,
                            selection=selection, trainer_state={"bad_epochs": 0, "history": []},
                            resume={"optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {}})
    save_checkpoint(state, run_dir / "last.pt")
    return run_dir


def test_interrupted_and_finished_runs_are_checked_alike_on_their_own_variant(tmp_path):
    """Adding a variant (or changing another variant's block, or where the cache is built) leaves a stored run
    resumable, for the study's plan and for the trainer's own check; training.epochs is part of the run."""
    from ls.engine.checkpoint import read_checkpoint
    from ls.runs.run import check_resumable

    out = str(tmp_path / "out")
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast", "ast_film_soft"], "out": out})
    study = load_study(path)
    last = _fake_interrupted(study, "ast", 42, "strict") / "last.pt"
    _fake_finished(study, "ast_film_soft", 42, "strict")
    assert [run_state(r) for r in plan_runs(study)] == ["resume", "finished"]

    models = {**TINY["models"], "ast_fus": {"model_size": "tiny224", "fstride": 16, "tstride": 16}}
    grown = load_study(write_study(tmp_path / "grown.yaml", {"variants": ["ast", "ast_film_soft", "ast_fus"],
                                                        "out": out}, models=models),
                       ["dataset.cache_workers=2"])
    assert [run_state(r) for r in plan_runs(grown)] == ["resume", "finished", "new"]
    check_resumable(read_checkpoint(last), grown.run_config("ast", 42, "strict"), "ast", last)

    # another variant's block is not this run's config; the variant's own block is
    other = load_study(write_study(tmp_path / "other.yaml", {"variants": ["ast"], "out": out}),
                       ["models.ast_film_soft.dropout=0.3"])
    assert [run_state(r) for r in plan_runs(other)] == ["resume"]
    check_resumable(read_checkpoint(last), other.run_config("ast", 42, "strict"), "ast", last)
    with pytest.raises(StudyError, match=r"ast_film_soft.seed42: this finished run .*models.ast_film_soft.dropout"):
        plan_runs(load_study(path, ["models.ast_film_soft.dropout=0.3"]))
    with pytest.raises(StudyError, match=r"ast.seed42: this interrupted run was trained with another config .*"
                                         r"training.epochs: stored 2 vs planned 3"):
        plan_runs(load_study(path, ["training.epochs=3"]))


def test_a_missing_data_folder_stops_the_study_before_any_run(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast"], "out": str(tmp_path / "out")},
                       dataset={**TINY["dataset"], "data_folder": str(tmp_path / "data_400rec_seed0")})
    assert study_mod.main([str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "data_400rec_seed0 (from" in err and "python -m ls.data.synthetic" in err and "--recordings 400" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_weights_file_of_one_variant_stops_the_study_before_any_run(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    missing = tmp_path / "weights" / "audioset.pth"
    models = {**TINY["models"], "ast_film_soft": {**TINY["models"]["ast_film_soft"],
                                                  "weights": {"source": "audioset", "path": str(missing)}}}
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast", "ast_film_soft"], "out": str(tmp_path / "out")},
                       dataset={**TINY["dataset"], "data_folder": str(tmp_path / "data")}, models=models)
    assert study_mod.main([str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "models.ast_film_soft.weights.path" in err[0]
    assert "variant ast_film_soft" in err[0] and "s.yaml" in err[0]
    assert not (tmp_path / "out" / "runs").exists()


def test_a_combined_dataset_is_checked_on_its_parts(tmp_path):
    """Its own data_folder only receives the feature cache (it need not exist yet); its parts hold the data."""
    (tmp_path / "icbhi").mkdir()
    dataset = {**TINY["dataset"], "name": "combined", "data_folder": str(tmp_path / "cache_here"),
               "parts": [{"name": "icbhi", "data_folder": str(tmp_path / "icbhi")},
                         {"name": "icbhi", "tag": "other", "data_folder": str(tmp_path / "other")}]}
    study = load_study(write_study(tmp_path / "s.yaml", {"variants": ["ast"]}, dataset=dataset))
    with pytest.raises(StudyError, match=r"dataset.parts\[1\].data_folder=.*other' does not exist"):
        study_mod.check_data(study)
    (tmp_path / "other").mkdir()
    study_mod.check_data(study)


def test_train_run_resumes_only_in_the_folder_of_its_checkpoint(tmp_path):
    from ls.runs.run import train_run

    study = load_study(write_study(tmp_path / "s.yaml", {"variants": ["ast"]}))
    with pytest.raises(ValueError, match="is not the folder of the checkpoint to resume"):
        train_run(study.base, "ast", resume=tmp_path / "a" / "last.pt", run_dir=tmp_path / "b")


def test_jobs_on_cuda_are_one_process_per_visible_gpu(tmp_path, monkeypatch):
    """The GPU assignment, without a GPU: the visible devices, jobs by default, too many jobs, and each
    worker's CUDA_VISIBLE_DEVICES."""
    import queue

    study = load_study(write_study(tmp_path / "s.yaml", {"variants": ["ast"]}))
    assert executor.resolve_jobs(study.base, None) == (1, [])  # training.device: cpu
    monkeypatch.setattr(executor, "uses_cuda", lambda cfg: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert executor.visible_gpus() == ["3", "5"]
    assert executor.resolve_jobs(study.base, None) == (2, ["3", "5"])  # every visible GPU by default
    assert executor.resolve_jobs(study.base, 1) == (1, [])  # one run at a time: in this process
    with pytest.raises(ValueError, match="jobs 3 but 2 GPU"):
        executor.resolve_jobs(study.base, 3)
    ids = queue.Queue()
    ids.put("5")
    import signal

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        executor._init_worker(ids)  # the variable is restored by monkeypatch, which set it first
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_one_process_per_study_folder(tmp_path):
    with study_mod.study_lock(tmp_path), pytest.raises(StudyError, match="another process is working"), \
            study_mod.study_lock(tmp_path):
        pass
    with study_mod.study_lock(tmp_path):  # released
        pass


# =================================================================================================
# Orchestration (runs replaced by copies of trained runs: no training here)
# =================================================================================================
def _fixture_study(tmp_path, rule="device", **kw):
    """The fixture study, with the data folder its runs were trained on (so their configs match)."""
    first = next((FIXTURES / f"metadata_{rule}").rglob("config.yaml"))
    data = yaml.safe_load(first.read_text())["dataset"]["data_folder"]
    return load_study(FIXTURES / "study.yaml", [f"dataset.data_folder={data}"], out=tmp_path / "study", **kw)


def _copy_run(study, job, jobs):
    """Stands in for training: copies the fixture run of the same identity into the run folder, with the
    config this ls would store (the fixtures' own config.yaml is that of the ls that trained them)."""
    jobs.append(job)
    spec = job.spec
    src = FIXTURES / "metadata_device" / spec.run_dir.relative_to(study.runs_dir)
    shutil.copytree(src, spec.run_dir, dirs_exist_ok=True)
    dump_yaml(spec.cfg, spec.run_dir / "config.yaml")
    return RunResult(spec.key, True, 1.0, spec.run_dir, "child-x", json.loads((src / "run.json").read_text())["test"])


def _parent_events(study):
    events = EventLog(study.out).events()
    return {"artifacts": [(Path(e["path"]).name, e["artifact_path"]) for e in events if e["event"] == "artifact"],
            "metrics": [e["metrics"] for e in events if e["event"] == "metrics"],
            "starts": [e["event"] for e in events if e["event"] in ("start", "resume")],
            "ends": [e["status"] for e in events if e["event"] == "end"]}


def test_study_orchestration_state_report_and_parent_record(tmp_path, monkeypatch, mlflow_db):
    monkeypatch.chdir(tmp_path)  # the store's artifacts under ./mlruns of this test, not of the repository
    study = _fixture_study(tmp_path)
    jobs = []

    def fake_run(job, **_):  # the trained run of the fixtures, except one that fails
        if job.spec.key == "strict/ast_film_soft/seed2":
            jobs.append(job)
            return RunResult(job.spec.key, False, 0.5, job.spec.run_dir, error="RuntimeError: out of memory")
        return _copy_run(study, job, jobs)

    monkeypatch.setattr(executor, "_run", fake_run)
    monkeypatch.setattr(study_mod, "check_data", lambda s: None)
    settings = TrackingSettings(f"sqlite:///{mlflow_db}", "studies")
    said = []
    outcome = run_study(study, mirror=Mirror(settings, experiment_id=check_connection(settings)), say=said.append)

    assert len(jobs) == 6 and [r.key for r in outcome.failed] == ["strict/ast_film_soft/seed2"]
    # every run is nested under the study's record, tagged with the study; one thread each on CPU
    assert {j.parent for j in jobs} == {study.out} and jobs[0].threads == 1
    assert jobs[1].spec.tags == {"study": "report_fixture"} and not any(j.log_to_file for j in jobs)
    # the report of the 5 finished runs, in the study folder and in the study's record
    section = outcome.report.sections[0]
    assert len(section.runs) == 5 and (study.report_dir / "report.md").is_file()
    assert "ast_film_soft only" not in (study.report_dir / "report.md").read_text()
    assert "ast only: seed 2" in (study.report_dir / "report.md").read_text()  # the unpaired seed is named
    parent = _parent_events(study)
    assert {"report.md", "report.tex", "summary.csv", "comparison.csv", "runs.csv", "scores.png"} <= {
        name for name, folder in parent["artifacts"] if folder == "report"}
    assert parent["metrics"][-1]["strict/ast_film_soft-ast/icbhi_score_diff"] == pytest.approx(
        section.comparison["mean_diff"][0])
    assert parent["ends"] == ["FAILED"]  # a run failed: the parent says so
    state = json.loads((study.out / "study.json").read_text())
    assert state["runs"]["strict/ast_film_soft/seed2"]["state"] == "failed"
    assert "out of memory" in state["runs"]["strict/ast_film_soft/seed2"]["error"]
    assert state["sessions"][-1] == {**state["sessions"][-1], "status": "FAILED", "trained": 5, "failed": 1}
    assert any("failed" not in s and "ICBHI Score" in s for s in said)
    parent_run = read_state(study.out)[settings.store]["run_id"]

    # again: the five finished runs are skipped, the failed one runs, the study's record (and MLflow run) goes on
    jobs.clear()
    monkeypatch.setattr(executor, "_run", lambda job, **_: _copy_run(study, job, jobs))
    outcome = run_study(study, mirror=Mirror(settings), say=said.append)
    assert [j.spec.key for j in jobs] == ["strict/ast_film_soft/seed2"] and not outcome.failed
    assert _parent_events(study)["starts"] == ["start", "resume"] and _parent_events(study)["ends"] == [
        "FAILED", "FINISHED"]
    assert outcome.parent_run_id == parent_run
    from mlflow.tracking import MlflowClient

    assert MlflowClient(settings.tracking_uri).get_run(parent_run).info.status == "FINISHED"
    assert len(outcome.report.sections[0].runs) == 6


def test_seeds_added_on_the_command_line_stay_in_the_study(tmp_path, monkeypatch, capsys):
    """--seeds beyond the file's are remembered in the study folder: running the command again without them
    keeps those runs in the plan and the report (and says so); an explicit --seeds still decides."""
    study = _fixture_study(tmp_path, seeds=[0, 1])  # the file says 0, 1, 2
    monkeypatch.setattr(executor, "_run", lambda job, **_: _copy_run(study, job, []))
    monkeypatch.setattr(study_mod, "check_data", lambda s: None)
    run_study(study, say=lambda s: None)
    extended = _fixture_study(tmp_path, seeds=[0, 1, 2, 7])
    assert read_state(extended.out) == {}  # no mirror: no mirror state
    monkeypatch.setattr(executor, "_run", lambda job, **_: RunResult(job.spec.key, False, 0.1, error="no data"))
    run_study(extended, say=lambda s: None)  # seed 7 has no fixture run: it fails, and is still remembered
    again = _fixture_study(tmp_path)
    assert again.settings.seeds == [0, 1, 2, 7]
    assert "seed(s) 7 added by an earlier --seeds: kept" in study_mod.describe_plan(again, plan_runs(again))
    only = _fixture_study(tmp_path, seeds=[0])
    assert only.settings.seeds == [0]
    assert ("--seeds leaves out seed(s) 1, 2, 7 of the study: the report covers seed(s) 0 only"
            in study_mod.describe_plan(only, plan_runs(only)))  # the report it writes is partial: said up front


def test_a_failed_run_leaves_its_traceback_in_its_log_also_when_runs_go_one_at_a_time(tmp_path, monkeypatch,
                                                                                      capsys):
    def broken(cfg, variant, **kw):
        raise RuntimeError(f"boom in {variant}")

    monkeypatch.setattr(executor, "train_run", broken)
    monkeypatch.setattr(study_mod, "check_data", lambda s: None)
    study = load_study(write_study(tmp_path / "s.yaml", {"variants": ["ast"], "out": str(tmp_path / "out")}))
    outcome = run_study(study, say=print)
    assert [r.error for r in outcome.failed] == ["RuntimeError: boom in ast"]
    log = (study.run_dir("ast", 42, "strict") / "train.log").read_text()
    assert log.startswith("Traceback") and "in broken" in log and log.rstrip().endswith("RuntimeError: boom in ast")
    out = capsys.readouterr().out  # the console keeps its one line per run
    assert "strict/ast/seed42: FAILED: RuntimeError: boom in ast" in out and "Traceback" not in out


def test_cli_exit_code_says_a_run_failed(tmp_path, monkeypatch, capsys):
    study = _fixture_study(tmp_path, seeds=[0])
    monkeypatch.setattr(study_mod, "check_data", lambda s: None)
    monkeypatch.setattr(executor, "_run", lambda job, **_: RunResult(job.spec.key, False, 0.1, error="boom"))
    data = str(study.base.dataset.data_folder)
    argv = [str(FIXTURES / "study.yaml"), "--set", f"dataset.data_folder={data}", "--seeds", "0", "--out",
            str(study.out), "--no-tracking"]
    assert study_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert "run strict/ast/seed0 failed: boom" in err and "again to retry" in err
    assert study_mod.main([*argv, "--dry-run"]) == 0
    assert "to start 2" in capsys.readouterr().out


def test_a_report_setting_with_a_typo_stops_the_study_before_any_run(tmp_path, capsys, monkeypatch):
    """Before: every run trained, then "no report" and exit 0. Now one error line, exit 2, nothing trained."""
    monkeypatch.setattr(executor, "_run", lambda job, **_: pytest.fail("a run started"))
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast"], "out": str(tmp_path / "out"),
                                             "report": {"metrics": ["icbhi_score", "sensitivty"]}})
    assert study_mod.main([str(path), "--no-tracking"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "unknown metric 'sensitivty'" in line and "s.yaml" in line
    assert not (tmp_path / "out").exists()


# =================================================================================================
# The report on really trained models: a real difference is found, no difference is not invented
# =================================================================================================
def _fixture_report(rule: str):
    runs, _ = load_runs(FIXTURES / f"metadata_{rule}")
    return build_report(runs, Settings(baseline="ast", metrics=("icbhi_score",), n_boot=2000, seed=0))


def test_report_shows_softfilm_ahead_when_the_device_decides_the_class():
    """The same mid tone is abnormal on the Meditron and normal on the LittC2SE: only a model that sees the
    device can be right on both; SoftFiLM is ahead on every seed, with an interval well above zero."""
    section = _fixture_report("device").sections[0]
    row = section.comparison.set_index("variant").loc["ast_film_soft"]
    assert row["n_pairs"] == 3 and all(d > 0.1 for d in row["diffs"])
    assert 0.0 < row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert row["t_p"] < 0.05  # the seeds agree too: no note that they move the difference more than patients
    assert not any("vary more" in n for n in section.notes)
    summary = section.summary.set_index(["variant", "metric"])["mean"]
    assert summary[("ast_film_soft", "icbhi_score")] > summary[("ast", "icbhi_score")] + 0.1
    # per device: the baseline's one threshold for mid tones is wrong on one of the two devices
    assert {v for v, _ in section.factor_metrics("device")} == {"Meditron", "LittC2SE"}


def test_interval_includes_zero_when_the_metadata_carries_no_signal():
    """The class depends on the tone and a coin, not on the device: both models learn the tones, and the
    interval of their difference includes zero."""
    section = _fixture_report("none").sections[0]
    row = section.comparison.set_index("variant").loc["ast_film_soft"]
    assert row["n_pairs"] == 3
    assert row["ci_low"] <= 0.0 <= row["ci_high"]
    summary = section.summary.set_index(["variant", "metric"])["mean"]
    assert summary[("ast", "icbhi_score")] > 0.65 and summary[("ast_film_soft", "icbhi_score")] > 0.65


def test_report_fixtures_were_trained_as_their_study_file_says():
    """Every value the fixture study file sets is in each fixture run's stored config (the data folder was a
    temporary one; the rest are the defaults of the ls that trained them), and the identities are the plan's,
    so the numbers above come from the documented settings."""
    from ls.config import flatten

    spec = yaml.safe_load((FIXTURES / "study.yaml").read_text())
    plan = spec.pop("study")
    wanted = {k: v for k, v in flatten(spec).items() if k != "dataset.data_folder"}
    for rule in ("device", "none"):
        runs = sorted((FIXTURES / f"metadata_{rule}").rglob("run.json"))
        metas = [json.loads(r.read_text()) for r in runs]
        assert sorted((m["variant"], m["seed"], m["selection"]) for m in metas) == sorted(
            (v, s, sel) for v in plan["variants"] for s in plan["seeds"] for sel in plan["selections"])
        for run_json in runs:
            stored = flatten(yaml.safe_load((run_json.parent / "config.yaml").read_text()))
            assert {k: stored.get(k) for k in wanted} == wanted, run_json
            preds = pd.read_csv(run_json.parent / "test_predictions.csv")
            assert {"patient", "device", "site", "true", "pred"} <= set(preds.columns)


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_study_at_once_and_starts_no_further_run(tmp_path, mlflow_db, monkeypatch):
    """Ctrl-C (here: SIGINT to the study's process only, as when the workers do not get it) while two runs
    train in workers: the study returns within seconds, no queued run starts, the study's record and both
    interrupted runs end as KILLED, and study.json names the two interrupted runs as resumable."""
    import multiprocessing
    import signal
    import threading
    import time

    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the store's artifacts under ./mlruns of this test, not of the repository
    data = write_conditional_icbhi(tmp_path / "data", "device", patients=10, cycles=4)
    path = write_study(tmp_path / "s.yaml", {"variants": ["ast", "ast_film_soft"], "seeds": [0, 1], "jobs": 2,
                                             "out": str(tmp_path / "out")},
                       dataset={**TINY["dataset"], "data_folder": str(data)},
                       training={**TINY["training"], "epochs": 60})  # minutes per run: never reached
    study = load_study(path)
    running, queued = [study.run_dir(v, 0, "strict") for v in study.settings.variants], \
        [study.run_dir(v, 1, "strict") for v in study.settings.variants]
    settings = TrackingSettings(f"sqlite:///{mlflow_db}", "studies")
    mirror = Mirror(settings, experiment_id=check_connection(settings))
    interrupted_at = []

    def interrupt_once_both_train():
        deadline = time.monotonic() + 300
        while not all((d / "last.pt").is_file() for d in running) and time.monotonic() < deadline:
            time.sleep(0.2)
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt_once_both_train, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_study(study, mirror=mirror, say=lambda s: None)
    assert time.monotonic() - interrupted_at[0] < executor.STOP_GRACE_S  # not the rest of a 60-epoch run
    assert not multiprocessing.active_children()  # no worker left behind
    for run_dir in queued:  # never started: no log, no checkpoint
        assert not (run_dir / "train.log").exists() and not (run_dir / "last.pt").exists(), run_dir
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    for run_dir in running:
        assert not (run_dir / "run.json").exists()
        assert EventLog(run_dir).events()[-1] == {**EventLog(run_dir).events()[-1], "event": "end", "status": "KILLED"}
        assert client.get_run(read_state(run_dir)[settings.store]["run_id"]).info.status == "KILLED", run_dir
    state = json.loads((study.out / "study.json").read_text())
    assert state["sessions"][-1] == {**state["sessions"][-1], "status": "KILLED", "trained": 0}
    assert {k: (v["state"], v["resumable"]) for k, v in state["runs"].items()} == {
        "strict/ast/seed0": ("interrupted", True), "strict/ast_film_soft/seed0": ("interrupted", True)}
    assert client.get_run(read_state(study.out)[settings.store]["run_id"]).info.status == "KILLED"
    assert [run_state(r) for r in plan_runs(study)] == ["resume", "resume", "new", "new"]


# =================================================================================================
# Real training: interrupted, resumed in the same MLflow runs, reported; parallel = sequential
# =================================================================================================
@pytest.mark.slow
def test_study_resumes_in_the_same_mlflow_runs_and_parallel_runs_give_the_same_numbers(tmp_path, monkeypatch,
                                                                                     mlflow_db):
    from mlflow.tracking import MlflowClient

    from ls.engine.checkpoint import read_checkpoint
    from ls.engine.trainer import Trainer
    from ls.report.render import comparison_frame, summary_frame
    from ls.report.runs import load_mlflow_runs

    data = write_conditional_icbhi(tmp_path / "data", "device", patients=10, cycles=4)
    path = write_study(tmp_path / "s.yaml", {"name": "tiny", "variants": ["ast", "ast_film_soft"], "seeds": [0],
                                             "out": str(tmp_path / "seq"), "report": {"bootstrap": 200}},
                       dataset={**TINY["dataset"], "data_folder": str(data)})
    settings = TrackingSettings(f"sqlite:///{mlflow_db}", "studies")
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    client.create_experiment("studies", artifact_location=(tmp_path / "artifacts").as_uri())

    def mirror():
        return Mirror(settings, experiment_id=check_connection(settings))

    # session 1: interrupted (Ctrl-C) after the first epoch of the second run
    interrupted = load_study(path).run_dir("ast_film_soft", 0, "strict")
    original = Trainer._write_checkpoints

    def stop_after_first_epoch(self, epoch, improved):
        original(self, epoch, improved)
        if self.run_dir == interrupted and epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_checkpoints", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_study(load_study(path), mirror=mirror(), say=lambda s: None)
    monkeypatch.undo()
    state = json.loads((tmp_path / "seq" / "study.json").read_text())
    parent = read_state(tmp_path / "seq")[settings.store]["run_id"]
    assert state["sessions"][-1] == {**state["sessions"][-1], "status": "KILLED", "trained": 1}
    assert state["runs"]["strict/ast/seed0"]["state"] == "finished"
    assert state["runs"]["strict/ast_film_soft/seed0"] == {**state["runs"]["strict/ast_film_soft/seed0"],
                                                           "state": "interrupted", "resumable": True}
    assert client.get_run(parent).info.status == "KILLED"
    assert not (interrupted / "run.json").exists()
    assert read_checkpoint(interrupted / "last.pt")["epoch"] == 1
    child = read_state(interrupted)[settings.store]["run_id"]
    assert client.get_run(child).info.status == "KILLED"  # Ctrl-C, not a failure

    # session 2: the finished run is skipped, the interrupted one continues in its MLflow run
    study = load_study(path)
    assert [run_state(r) for r in plan_runs(study)] == ["finished", "resume"]
    outcome = run_study(study, mirror=mirror(), say=lambda s: None)
    assert not outcome.failed and outcome.parent_run_id == parent
    assert json.loads((interrupted / "run.json").read_text())["run_id"] == child
    children = client.search_runs([client.get_experiment_by_name("studies").experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 2 and {c.data.tags["study"] for c in children} == {"tiny"}
    assert {c.info.status for c in children} == {"FINISHED"} and client.get_run(parent).info.status == "FINISHED"
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent, "report")}
    history = client.get_metric_history(child, "val/icbhi_score")
    assert sorted(m.step for m in history) == [1, 2]  # each epoch once, across the interruption
    # the report reads the same runs from the study folder and from MLflow (what a run mirrors)
    from_mlflow, _ = load_mlflow_runs(settings.tracking_uri, "studies", parent)
    report_settings = Settings(n_boot=200)
    folder_report = build_report(load_runs(study.runs_dir)[0], report_settings)
    mlflow_report = build_report(from_mlflow, report_settings)
    pd.testing.assert_frame_equal(summary_frame(folder_report), summary_frame(mlflow_report))
    pd.testing.assert_frame_equal(comparison_frame(folder_report), comparison_frame(mlflow_report))

    # session 3: both runs again, two at once in worker processes: the same numbers, also for the resumed run
    parallel = run_study(load_study(path, jobs=2, out=tmp_path / "par"), say=lambda s: None)
    assert not parallel.failed
    for variant in ("ast", "ast_film_soft"):
        rel = Path("runs/strict") / variant / "seed0" / "test_predictions.csv"
        assert (tmp_path / "par" / rel).read_bytes() == (tmp_path / "seq" / rel).read_bytes(), variant
        assert (tmp_path / "par" / rel.parent / "train.log").is_file()


def test_ctrl_c_during_a_finished_run_s_last_sync_counts_the_run_as_finished(tmp_path, monkeypatch, capsys):
    """The interrupt came after the run's record had ended (its last MLflow sync): study.json says finished,
    and the command prints how to sync what was left."""
    from ls.runs.mirror import Mirror, TrackingSettings
    from ls.runs.record import SyncInterrupted

    study = _fixture_study(tmp_path, seeds=[0])

    def finished_then_ctrl_c(job, **_):
        _copy_run(study, job, [])
        raise SyncInterrupted(job.spec.run_dir, mirror.mark_unsynced(job.spec.run_dir))

    mirror = Mirror(TrackingSettings("sqlite:///" + str(tmp_path / "mlflow.db")))
    monkeypatch.setattr(executor, "_run", finished_then_ctrl_c)
    monkeypatch.setattr(study_mod, "check_data", lambda s: None)
    monkeypatch.setattr(study_mod, "load_study", lambda *a, **k: study)
    monkeypatch.setattr("ls.runs.mirror.start_mirror", lambda *a, **k: mirror)
    assert study_mod.main([str(FIXTURES / "study.yaml")]) == 130
    err = capsys.readouterr().err
    [key] = [k for k in json.loads((study.out / "study.json").read_text())["runs"]]
    assert json.loads((study.out / "study.json").read_text())["runs"][key]["state"] == "finished"
    assert "Sync them when it is back with:" in err and f"sync {(study.runs_dir / key).resolve()}" in err
