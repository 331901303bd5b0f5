"""The experiment runner on the real data/model stack (tiny model, small synthetic folder): figures through
ls.viz.performance, the resolved config (with mel_norm=dataset statistics) in params / config.yaml /
checkpoints, and the early input-size check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ls.config import ConfigError, config_from_dict
from ls.engine import runner
from ls.engine.checkpoint import read_checkpoint
from ls.engine.tracking import NullTracker


class RecordingTracker(NullTracker):
    """Keeps what the runner logs (a run id, params and artifacts) in memory."""

    run_id = "run-abc"

    def __init__(self) -> None:
        self.params: dict = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.status: str | None = None

    def start_run(self, run_name=None, **_):
        return self.run_id

    def log_params(self, params):
        self.params.update(params)

    def log_artifact(self, path, artifact_path=None):
        assert Path(path).is_file(), path
        self.artifacts.append((Path(path).name, artifact_path))

    def end_run(self, status="FINISHED"):
        self.status = status


def tiny_cfg(data: Path, tmp_path: Path, **dataset):
    return config_from_dict({
        "seed": 0,
        "dataset": {"data_folder": str(data), "batch_size": 16, "w": 64, "val_fraction": 0.25, **dataset},
        "audio": {"mel_norm": "dataset"},
        "models": {"ast": {"model_size": "tiny224", "input_fdim": 128, "input_tdim": 64, "fstride": 16,
                           "tstride": 16}},
        "training": {"epochs": 2, "device": "cpu", "checkpoint_dir": str(tmp_path / "ck"),
                     "scheduler": {"type": "cosine_warmup", "warmup_epochs": 1}},
    })  # fmt: skip


@pytest.mark.slow
def test_run_logs_figures_and_the_config_resolved_after_build_datasets(synthetic_icbhi_dir, tmp_path):
    cfg = tiny_cfg(synthetic_icbhi_dir, tmp_path)
    assert cfg.audio.dataset_mean is None
    tracker = RecordingTracker()
    outcome = runner.train_run(cfg, "ast", tracker=tracker, progress=False)
    assert tracker.status == "FINISHED"

    # 3. mel_norm=dataset: the statistics measured by build_datasets are in everything saved or logged
    mean, std = cfg.audio.dataset_mean, cfg.audio.dataset_std
    assert mean is not None and std > 0
    assert tracker.params["audio.dataset_mean"] == mean and tracker.params["audio.dataset_std"] == std
    saved = yaml.safe_load((outcome.run_dir / "config.yaml").read_text())
    assert saved["audio"]["dataset_mean"] == mean
    best = read_checkpoint(outcome.run_dir / "best.pt")
    assert best["config"]["audio"]["dataset_mean"] == mean
    assert read_checkpoint(outcome.run_dir / "last.pt")["config"]["audio"]["dataset_std"] == std

    # 2. best.pt holds the whole history and the tracking run
    assert len(best["trainer"]["history"]) == 2 and best["mlflow_run_id"] == "run-abc"

    # 1. one implementation of the figures (ls.viz.performance), PNG + PDF, logged under figures/
    assert not hasattr(runner, "plot_confusion_matrix") and not hasattr(runner, "plot_training_curves")
    figures = {name for name, folder in tracker.artifacts if folder == "figures"}
    assert figures == {f"{n}.{ext}" for n in ("confusion_matrix", "training_curves") for ext in ("png", "pdf")}
    assert {("config.yaml", None), ("best.pt", "checkpoints"), ("test_predictions.csv", None)} <= set(
        tracker.artifacts)
    # the run's predictions CSV has the columns of ls.evaluate's: class probabilities that sum to 1, raw sigmoids
    import pandas as pd

    preds = pd.read_csv(outcome.run_dir / "test_predictions.csv")
    classes = ["p_normal", "p_crackle", "p_wheeze", "p_both"]
    assert set(classes + ["sigmoid_crackle", "sigmoid_wheeze"]) <= set(preds.columns)
    assert (preds[classes].sum(axis=1) - 1).abs().max() < 1e-4


def test_run_figures_skip_curves_of_a_single_epoch(tmp_path):
    import numpy as np

    from ls.engine.trainer import EvalResult, FitResult

    out = {"y_true": np.array([0, 1, 2, 3, 0]), "pred": np.array([0, 1, 1, 3, 2])}
    test = EvalResult(0.5, {"specificity": 0.5, "sensitivity": 0.75, "icbhi_score": 0.625}, None, out)
    said = []
    result = FitResult(1, 0.6, None, test, [{"epoch": 1.0, "train/loss": 0.7, "val/loss": 0.6}], tmp_path)
    paths = runner.run_figures(result, ["Normal", "Crackle", "Wheeze", "Both"], tmp_path, say=said.append)
    assert [p.name for p in paths] == ["confusion_matrix.png", "confusion_matrix.pdf"]
    assert said and "training curves skipped" in said[0]


def test_feature_size_must_match_the_model_input(tmp_path):
    cfg = tiny_cfg(tmp_path / "data", tmp_path, h=128, w=128)
    with pytest.raises(ConfigError, match=r"dataset.w = 128 but models.ast.input_tdim = 64"):
        runner.check_input_size(cfg, "ast")
    with pytest.raises(ConfigError, match=r"dataset.w = 128 but models.ast.input_tdim = 64"):
        runner.train_run(cfg, "ast", progress=False)  # before any data is read (the folder does not exist)
    cfg.dataset.w = 64
    runner.check_input_size(cfg, "ast")


def test_script_reports_an_input_size_mismatch_naming_both_keys(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("dataset:\n  data_folder: /nowhere\n  h: 64\nmodels:\n  ast_tafilm: {input_fdim: 128}\n")
    assert runner.main("tafilm", ["--config", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "dataset.h = 64 but models.ast_tafilm.input_fdim = 128" in err and str(path) in err
