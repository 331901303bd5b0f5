"""ls as a user installs it: the wheel holds the configs (and no local credentials file), the ``ausc`` command
and ``python -m ls.quickstart`` work from a folder that is not a clone, and a 1-epoch training starts from an
empty folder with a built-in config."""

from __future__ import annotations

import json
import zipfile

import pytest
from conftest import REPO, clean_env, run_process


@pytest.mark.xdist_group("installed_wheel")
def test_the_wheel_holds_the_configs_and_the_command_but_no_local_credentials(installed_ls):
    with zipfile.ZipFile(installed_ls.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {n.rsplit("/", 1)[-1] for n in names if n.startswith("ls/configs/")}
    assert shipped == {p.name for p in (REPO / "ls" / "configs").glob("*.yaml") if not p.name.endswith(".local.yaml")}
    assert "mlflow.local.yaml" not in shipped
    assert "ausc = ls.cli:main" in entry_points


@pytest.mark.slow
@pytest.mark.xdist_group("installed_wheel")
def test_installed_the_quickstart_and_a_training_run_from_an_empty_folder(installed_ls, tmp_path):
    env = clean_env(OMP_NUM_THREADS="1")
    ausc = installed_ls.bin / "ausc"
    where = run_process([installed_ls.python, "-c", "import ls; print(ls.__file__)"], tmp_path, env)
    assert where.stdout.startswith(str(installed_ls.root / "venv")), where.stdout + where.stderr  # not the clone

    quick = tmp_path / "quick"
    quick.mkdir()
    out = run_process([installed_ls.python, "-m", "ls.quickstart", "--recordings", "24", "--epochs", "1",
                       "--no-tracking"], quick, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SoftFiLM-AST" in out.stdout and "AST baseline" in out.stdout
    assert "python -m ls.viz.cli --all" in out.stdout  # the figure command that exists where ls is installed
    record = json.loads((quick / "runs" / "quickstart" / "quickstart.json").read_text())
    assert record["settings"] == {"recordings": 24, "seed": 0, "epochs": 1}
    out = run_process([installed_ls.python, "-m", "ls.quickstart", "--record"], quick, env)
    assert out.returncode == 2 and "--record rewrites the README.md and docs/quickstart.json of a clone" in out.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_process([ausc, "synthetic", "data", "--recordings", "24"], empty, env)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_process([ausc, "train", "ast", "--config", "quickstart", "--set", "dataset.data_folder=data", "--set",
                       "training.epochs=1", "--set", "training.checkpoint_dir=checkpoints", "--no-tracking"], empty, env)
    assert out.returncode == 0, out.stderr[-3000:]
    [run_dir] = (empty / "checkpoints").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["variant"] == "ast" and (run_dir / "best.pt").is_file()
    out = run_process([ausc, "evaluate", "--checkpoint", run_dir / "best.pt"], empty, env)
    assert out.returncode == 0 and "test:" in out.stdout, out.stderr[-3000:]
