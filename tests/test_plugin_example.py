"""The example plugin package (examples/ls-plugin-example) in every command and every process: through
``LS_PLUGINS`` with the module on PYTHONPATH (fast), and pip-installed, through its entry point (slow); and
without it, every entry point's one-line error naming the module to load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import EXAMPLE, REPO, clean_env, run_process

MODULE = "ls_plugin_example"
THREE_WAYS = (f"-p {MODULE}", f"LS_PLUGINS={MODULE}", f"'plugins: [{MODULE}]' in the config")


def write_config(path: Path, data: Path, checkpoints: Path, epochs: int = 1) -> Path:
    """The example's own meta_lora.yaml on ``data``, without its ``plugins:`` key (the plugin comes another way)."""
    cfg = yaml.safe_load((EXAMPLE / "meta_lora.yaml").read_text())
    assert cfg.pop("plugins") == [MODULE]
    cfg["dataset"]["data_folder"] = str(data)
    cfg["training"].update(epochs=epochs, checkpoint_dir=str(checkpoints), monitor_test=False)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def a_wav(data: Path) -> tuple[Path, str, str]:
    """A test recording of the example data and its device and site (from its name)."""
    wav = min((data / "test").glob("*/*.wav"))
    _, device, site, _ = wav.stem.split("_", 3)
    return wav, device, site


def one_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text[-2000:]
    return lines[0]


# =================================================================================================
# LS_PLUGINS, module on PYTHONPATH: fresh processes of the repository's python
# =================================================================================================
@pytest.fixture(scope="module")
def ls_plugins_run(example_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("ls_plugins")
    config = write_config(work / "run.yaml", example_data, work / "checkpoints")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO), str(EXAMPLE / "src")]), LS_PLUGINS=MODULE,
                    OMP_NUM_THREADS="1")
    out = run_process([sys.executable, "-m", "ls", "train", "meta_lora", "--config", config, "--no-tracking"],
                      cwd=work, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    [run_dir] = (work / "checkpoints").iterdir()
    return SimpleNamespace(work=work, config=config, env=env, run_dir=run_dir, stdout=out.stdout)


def test_through_ls_plugins_it_trains_evaluates_predicts_and_draws_in_fresh_processes(ls_plugins_run, example_data):
    run = ls_plugins_run
    assert f"plugins: {MODULE} = {MODULE} (not installed; LS_PLUGINS): variant meta_lora, metalora; reader " \
           "class_folders" in run.stdout  # listed at the start of the run
    summary = json.loads((run.run_dir / "run.json").read_text())
    assert summary["plugins"] == [
        {"kind": kind, "name": name, "plugin": MODULE, "module": MODULE, "distribution": None, "version": None}
        for kind, name in (("variant", "meta_lora"), ("reader", "class_folders"))]
    assert [(p["module"], p["source"]) for p in summary["loaded_plugins"]] == [(MODULE, "LS_PLUGINS")]
    events = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines()]
    params = {k: v for e in events if e["event"] == "params" for k, v in e["params"].items()}
    assert params[f"plugins.{MODULE}"] == f"{MODULE} (not installed)" and params["dataset.name"] == "class_folders"
    assert any("lora/strength" in json.dumps(e) for e in events)  # the mechanism's epoch statistics are recorded

    best = run.run_dir / "best.pt"
    ausc = [sys.executable, "-m", "ls"]
    out = run_process([*ausc, "evaluate", "--checkpoint", best, "--out", run.work / "eval"], run.work, run.env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run.work / "eval" / "metrics_test.json").read_text())["variant"] == "meta_lora"
    wav, device, site = a_wav(example_data)
    out = run_process([*ausc, "predict", "--checkpoint", best, "--wav", wav, "--meta", f"device={device}",
                       "--meta", f"site={site}"], run.work, run.env)
    assert out.returncode == 0, out.stderr[-3000:]
    predicted = json.loads(out.stdout)
    assert predicted["variant"] == "meta_lora" and len(predicted["cycles"]) == 1
    out = run_process([*ausc, "figures", "--all", "--checkpoint", best, "--out", run.work / "figures"], run.work,
                      run.env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run.work / "figures" / "metalora_ast_confusion.png").is_file()
    assert "skipping film_params: variant 'meta_lora' reports no gamma/beta" in out.stderr


@pytest.fixture
def without_example_plugin(monkeypatch):
    """This process as one that never loaded the plugin (other tests of the session may have imported it)."""
    from ls.data import sources
    from ls.data.tasks import DATASET_TASKS
    from ls.models import variants
    from ls.utils import plugins

    state = plugins._snapshot()
    saved = (dict(variants.VARIANTS), dict(variants._ALIASES), dict(sources._READERS), dict(DATASET_TASKS),
             dict(sources._SCORES))
    if "meta_lora" in variants.VARIANTS:
        variants.unregister_variant("meta_lora")
    if "class_folders" in DATASET_TASKS:
        sources.unregister_reader("class_folders")
    monkeypatch.delenv(plugins.PLUGINS_ENV, raising=False)
    monkeypatch.setenv(plugins.AUTOLOAD_ENV, "1")
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    yield
    plugins._restore(state)
    for live, old in zip((variants.VARIANTS, variants._ALIASES, sources._READERS, DATASET_TASKS, sources._SCORES),
                         saved):
        live.clear()
        live.update(old)


def test_without_the_plugin_each_entry_point_names_the_module_and_how_to_load_it(ls_plugins_run, example_data,
                                                                                  without_example_plugin, tmp_path,
                                                                                  capsys):
    from ls.evaluate import main as evaluate
    from ls.predict import main as predict
    from ls.study import main as study
    from ls.train import main as train
    from ls.viz.cli import main as figures

    run = ls_plugins_run
    best, last = run.run_dir / "best.pt", run.run_dir / "last.pt"
    wav, device, site = a_wav(example_data)
    study_file = tmp_path / "study.yaml"
    spec = yaml.safe_load(run.config.read_text())
    study_file.write_text(yaml.safe_dump({"study": {"variants": ["ast", "meta_lora"], "seeds": [0],
                                                    "out": str(tmp_path / "study")}, **spec}))
    recorded = tmp_path / "study" / "runs" / "strict" / "meta_lora" / "seed0"  # a run of it the study finished
    recorded.mkdir(parents=True)
    shutil.copy(run.run_dir / "run.json", recorded / "run.json")
    calls = {
        f"checkpoint {best}": lambda: evaluate(["--checkpoint", str(best), "--out", str(tmp_path / "eval")]),
        f"checkpoint {best} ": lambda: predict(["--checkpoint", str(best), "--wav", str(wav), "--meta",
                                                f"device={device}", "--meta", f"site={site}"]),
        f"checkpoint {best}  ": lambda: figures(["--all", "--checkpoint", str(best), "--out", str(tmp_path / "f")]),
        f"checkpoint {last}": lambda: train("meta_lora", ["--config", str(run.config), "--resume", str(last)]),
        f"study {study_file}": lambda: study([str(study_file), "--no-tracking"]),
    }
    for where, call in calls.items():
        assert call() == 2, where
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {where.strip()} needs "), line
        assert f"variant 'meta_lora' from the plugin module {MODULE}" in line and all(w in line for w in THREE_WAYS)
    # a config that names the plugin, where it is not importable: the module, and where the name came from
    named = tmp_path / "named.yaml"
    named.write_text(run.config.read_text() + "plugins: [ls_plugin_example_absent]\n")
    assert train("meta_lora", ["--config", str(named)]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: plugins: in {named}: plugin module 'ls_plugin_example_absent' is not importable: No module named "
        "'ls_plugin_example_absent'")


# =================================================================================================
# pip-installed: the entry point, every command, resume, a 2-worker study, torchrun, the report
# =================================================================================================
def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"training ended before {path.name} appeared: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.xdist_group("installed_wheel")  # one worker builds the wheel once (scripts/test.sh: --dist loadgroup)
def test_installed_it_works_in_every_command_and_every_process(installed_ls, example_data, tmp_path):
    package = tmp_path / "ls-plugin-example"
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    installed_ls.pip_install(package)
    bin_ = installed_ls.bin
    env = clean_env(PATH=f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    work = tmp_path / "work"
    work.mkdir()
    config = write_config(work / "run.yaml", example_data, work / "checkpoints", epochs=2)

    # its own script, interrupted after the first epoch, then resumed
    proc = subprocess.Popen([bin_ / "train-meta-lora", "--config", config, "--no-tracking"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(next_run_file(work / "checkpoints", "last.pt", proc), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    [run_dir] = (work / "checkpoints").iterdir()
    assert f"--resume {run_dir / 'last.pt'}" in err
    out = run_process([bin_ / "train-meta-lora", "--config", config, "--no-tracking", "--resume",
                       run_dir / "last.pt"], work, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training epochs 2..2" in out.stdout  # continued after the epoch it was interrupted in
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["epochs"] == 2 and summary["plugins"][0] == {
        "kind": "variant", "name": "meta_lora", "plugin": "example", "module": MODULE,
        "distribution": "ls-plugin-example", "version": "0.1.0"}
    best = run_dir / "best.pt"

    # evaluate, predict, figures: the entry point loads it in each fresh process
    ausc = bin_ / "ausc"
    out = run_process([ausc, "evaluate", "--checkpoint", best, "--out", work / "eval"], work, env)
    assert out.returncode == 0, out.stderr[-3000:]
    wav, device, site = a_wav(example_data)
    out = run_process([ausc, "predict", "--checkpoint", best, "--wav", wav, "--meta", f"device={device}", "--meta",
                       f"site={site}", "--format", "csv"], work, env)
    assert out.returncode == 0 and "# decision_rule:" in out.stdout, out.stderr[-3000:]
    out = run_process([ausc, "figures", "--all", "--checkpoint", best, "--out", work / "figures"], work, env)
    assert out.returncode == 0 and (work / "figures" / "metalora_ast_confusion.png").is_file(), out.stderr[-3000:]

    # a study against the AST baseline in 2 spawned workers, then its report
    study_file = work / "study.yaml"
    spec = yaml.safe_load(config.read_text())
    spec["training"]["epochs"] = 1
    study_file.write_text(yaml.safe_dump({"study": {"variants": ["ast", "meta_lora"], "seeds": [0], "jobs": 2,
                                                    "out": str(work / "study")}, **spec}))
    out = run_process([ausc, "study", study_file, "--no-tracking"], work, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 runs, 2 at once" in out.stdout
    worker_run = json.loads((work / "study" / "runs" / "strict" / "meta_lora" / "seed0" / "run.json").read_text())
    assert [p["source"] for p in worker_run["loaded_plugins"]] == ["entry point"]
    out = run_process([ausc, "report", "--runs", work / "study" / "runs", "--out", work / "report"], work, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MetaLoRA-AST" in (work / "report" / "report.md").read_text()

    # torchrun, 2 ranks on CPU (gloo), the same command line in each rank
    out = run_process([installed_ls.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "--no-python", ausc, "train", "meta_lora", "--config", config, "--set", "training.epochs=1",
                       "--set", f"training.checkpoint_dir={work / 'ddp'}", "--no-tracking"], work, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("checkpoints: ") == 1 and len(list((work / "ddp").glob("*/best.pt"))) == 1

    # without it (entry points off): the one line, with the distribution that provides it
    out = run_process([ausc, "evaluate", "--checkpoint", best], work, {**env, "LS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert f"from the plugin module {MODULE} (distribution ls-plugin-example 0.1.0)" in line
    assert all(w in line for w in THREE_WAYS)


def next_run_file(checkpoints: Path, name: str, proc: subprocess.Popen, timeout: float = 600) -> Path:
    """``<the run folder>/<name>`` once the run has made its folder."""
    deadline = time.monotonic() + timeout
    while not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        assert proc.poll() is None, f"training ended before it made a run folder: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no run folder in {checkpoints} after {timeout} s"
        time.sleep(0.2)
    return next(checkpoints.iterdir()) / name
