"""The root scripts end to end: real data layer, real model, real MLflow store (sqlite in a temp folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.mark.slow
def test_multi_seed_script_logs_parent_and_nested_runs_with_a_summary(synthetic_icbhi_dir, tmp_path, mlflow_db):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{mlflow_db}"
    proc = _run([
        str(REPO / "ast_film_soft.py"), "--config", str(REPO / "configs" / "quickstart.yaml"),
        "--set", f"dataset.data_folder={synthetic_icbhi_dir}", "--set", "training.epochs=1",
        "--set", f"training.checkpoint_dir={tmp_path / 'ck'}", "--seeds", "1", "2",
    ], cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "scripts"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean" in proc.stdout and "icbhi_score" in proc.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("scripts")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["seed"] for c in children} == {"1", "2"}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    # summary = mean / std over the children's test metrics
    scores = [c.data.metrics["test/icbhi_score"] for c in children]
    assert parent.data.metrics["test/icbhi_score_mean"] == pytest.approx(sum(scores) / 2)
    kid = children[0]
    assert kid.data.params["training.epochs"] == "1" and kid.data.tags["variant"] == "ast_film_soft"
    assert "mask_temperature" in kid.data.metrics and "train/loss" in kid.data.metrics
    assert any(k.startswith("test/device/") for k in kid.data.metrics)  # per-device test metrics
    arts = {a.path for a in client.list_artifacts(kid.info.run_id)}
    assert {"config.yaml", "test_predictions.csv", "figures", "checkpoints"} <= arts
    # one group folder: the group's record and summary, one member folder per seed
    [group] = (tmp_path / "ck").iterdir()
    assert group.name.startswith("ast_film_soft_1ep_strict_seeds2_")
    assert {p.name for p in group.iterdir()} >= {"seed1", "seed2", "summary.json", "events.jsonl", "mlflow.json"}
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_resume_cannot_be_combined_with_seeds(tmp_path):
    proc = _run([str(REPO / "ast_train.py"), "--config", str(REPO / "configs" / "quickstart.yaml"),
                 "--resume", "x.pt", "--seeds", "1", "2"], cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "--resume" in proc.stderr


def test_script_config_without_the_variant_block_is_a_clear_error(tmp_path):
    proc = _run([str(REPO / "ast_tafilm_train.py"), "--config", str(REPO / "configs" / "quickstart.yaml"),
                 "--no-tracking"], cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "models.ast_tafilm" in proc.stderr and "quickstart.yaml" in proc.stderr
