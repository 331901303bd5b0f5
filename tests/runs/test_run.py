"""ls.runs.run on the real data/model stack (tiny model, small synthetic folder): the run's record (params,
artifacts, figures through ls.viz.performance, its end), the resolved config in params / config.yaml /
checkpoints, the measured feature statistics with the fitted encoder, run.json with its protocol card and the
predictions CSV, the selection metric that follows the dataset, and input-size errors before any data is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import ls.runs.run as runner
import ls.train as cli
from ls.config import ConfigError, config_from_dict
from ls.engine.checkpoint import read_checkpoint
from ls.runs.record import EventLog


def recorded(folder: Path) -> dict:
    """What a run folder's record holds: params, artifacts (name, folder) and how it ended."""
    events = EventLog(folder).events()
    params = {k: v for e in events if e["event"] == "params" for k, v in e["params"].items()}
    artifacts = [(Path(e["path"]).name, e["artifact_path"]) for e in events if e["event"] == "artifact"]
    for e in events:
        if e["event"] == "artifact":
            assert (folder / e["path"]).is_file(), e
    ends = [e["status"] for e in events if e["event"] == "end"]
    return {"events": events, "params": params, "artifacts": artifacts, "ends": ends}


def tiny_cfg(data: Path, tmp_path: Path, **dataset):
    return config_from_dict({
        "seed": 0,
        "dataset": {"data_folder": str(data), "batch_size": 16, "w": 64, "val_fraction": 0.25, **dataset},
        "audio": {"mel_norm": "dataset"},
        "models": {"ast": {"model_size": "tiny224", "input_tdim": 64, "fstride": 16, "tstride": 16}},
        "training": {"epochs": 2, "device": "cpu", "checkpoint_dir": str(tmp_path / "ck"),
                     "scheduler": {"type": "cosine_warmup", "warmup_epochs": 1}},
    })  # fmt: skip


@pytest.mark.slow
def test_run_logs_figures_and_the_config_resolved_after_build_datasets(synthetic_icbhi_dir, tmp_path):
    cfg = tiny_cfg(synthetic_icbhi_dir, tmp_path)
    outcome = runner.train_run(cfg, "ast", progress=False)  # no mirror: recorded all the same
    record = recorded(outcome.run_dir)
    assert record["ends"] == ["FINISHED"] and record["events"][0]["event"] == "start"
    assert record["events"][0]["tags"]["variant"] == "ast" and outcome.run_id is None

    # 3. mel_norm=dataset: the statistics measured by build_datasets travel with the fitted metadata encoder in
    # every checkpoint; the config (params, config.yaml, checkpoints) holds only what the user set
    best = read_checkpoint(outcome.run_dir / "best.pt")
    stats = best["metadata_encoder"]["feature_stats"]
    assert stats["std"] > 0 and read_checkpoint(outcome.run_dir / "last.pt")["metadata_encoder"]["feature_stats"] == stats
    assert not any("dataset_mean" in k for k in record["params"]) and record["params"]["audio.mel_norm"] == "dataset"
    saved = yaml.safe_load((outcome.run_dir / "config.yaml").read_text())
    assert saved == best["config"] and saved["models"]["ast"]["input_fdim"] == 128  # derived, then saved

    # 2. best.pt holds the whole history; the record holds every epoch's metrics
    assert len(best["trainer"]["history"]) == 2
    assert [e["step"] for e in record["events"] if e["event"] == "metrics" and "val/loss" in e["metrics"]] == [1, 2]

    # 1. one implementation of the figures (ls.viz.performance), PNG + PDF, logged under figures/
    assert not hasattr(runner, "plot_confusion_matrix") and not hasattr(runner, "plot_training_curves")
    figures = {name for name, folder in record["artifacts"] if folder == "figures"}
    assert figures == {f"{n}.{ext}" for n in ("confusion_matrix", "training_curves") for ext in ("png", "pdf")}
    assert {("config.yaml", None), ("best.pt", "checkpoints"), ("test_predictions.csv", None),
            ("run.json", None)} <= set(record["artifacts"])
    # the run's predictions CSV has the columns of ls.evaluate's: patient, every metadata factor, class
    # probabilities that sum to 1, raw sigmoids
    import pandas as pd

    preds = pd.read_csv(outcome.run_dir / "test_predictions.csv")
    classes = ["p_normal", "p_crackle", "p_wheeze", "p_both"]
    assert {"filename", "cycle_index", "patient", "device", "site", "true", "pred"} <= set(preds.columns)
    assert set(classes + ["sigmoid_crackle", "sigmoid_wheeze"]) <= set(preds.columns)
    assert (preds[classes].sum(axis=1) - 1).abs().max() < 1e-4
    run = json.loads((outcome.run_dir / "run.json").read_text())
    assert (run["variant"], run["display_name"], run["seed"], run["selection"]) == ("ast", "AST", 0, "strict")
    assert run["factors"] == ["device", "site"] and run["class_names"] == ["normal", "crackle", "wheeze", "both"]
    assert run["test"]["icbhi_score"] == pytest.approx(outcome.test_metrics["icbhi_score"])
    # the protocol card: how the test numbers were made
    card = run["protocol"]
    assert (card["split"], card["selection"], card["selection_metric"], card["thresholds_tuned_on"]) == (
        "official", "strict", "icbhi_score", "validation")
    assert card["test_set"] == {"name": "icbhi test", "task": "icbhi4", "patients": preds["patient"].nunique(),
                                "cycles": len(preds)}
    assert "crackle, wheeze, both" in card["sensitivity"] and card["seeds"] == 1


def test_run_figures_skip_curves_of_a_single_epoch(tmp_path):
    import numpy as np

    from ls.engine.trainer import EvalResult, FitResult

    y_true, pred = np.array([0, 1, 2, 3, 0]), np.array([0, 1, 1, 3, 2])
    test = EvalResult(0.5, {"specificity": 0.5, "sensitivity": 0.75, "icbhi_score": 0.625}, None, None, y_true,
                      pred, None)
    said = []
    result = FitResult(1, 0.6, None, test, [{"epoch": 1.0, "train/loss": 0.7, "val/loss": 0.6}], tmp_path)
    paths = runner.run_figures(result, ["Normal", "Crackle", "Wheeze", "Both"], tmp_path, say=said.append)
    assert [p.name for p in paths] == ["confusion_matrix.png", "confusion_matrix.pdf"]
    assert said and "training curves skipped" in said[0]


def test_the_model_input_follows_the_features_and_a_contradiction_is_a_config_error(tmp_path):
    cfg = tiny_cfg(tmp_path / "data", tmp_path)
    assert (cfg.model("ast").input_fdim, cfg.model("ast").input_tdim) == (128, 64)  # audio.n_mels, dataset.w
    with pytest.raises(ConfigError, match=r"'models.ast.input_tdim' in <dict>: is 64 but dataset.w is 128"):
        tiny_cfg(tmp_path / "data", tmp_path, w=128)  # before any data is read (the folder does not exist)


def test_script_reports_every_input_size_mismatch_naming_the_keys(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("dataset:\n  data_folder: /nowhere\n  h: 64\nmodels:\n  ast_tafilm: {input_fdim: 96}\n")
    assert cli.main("tafilm", ["--config", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "2 problems in " + str(path) in err
    assert "'dataset.h' in " + str(path) + ": is 64 but audio.n_mels is 128" in err
    assert "'models.ast_tafilm.input_fdim' in " + str(path) + ": is 96 but audio.n_mels is 128" in err


def test_the_selection_metric_follows_the_dataset_unless_configured(tmp_path):
    """SPRSound runs select their epoch on the challenge's score, ICBHI and manifest runs on the ICBHI score; a
    configured training.selection_metric wins, is stored as configured (null stays null) and reaches the card."""
    from ls.runs.protocol import protocol_card

    def cfg(**over):
        return config_from_dict({"dataset": {"data_folder": "x", **over.pop("dataset", {})},
                                 "training": over.pop("training", {})})

    assert runner.selection_metric(cfg()) == "icbhi_score"
    assert runner.selection_metric(cfg(dataset={"name": "sprsound", "task": "event2"})) == "sprsound_score"
    assert runner.selection_metric(cfg(dataset={"name": "manifest"})) == "icbhi_score"
    chosen = cfg(dataset={"name": "sprsound", "task": "event2"}, training={"selection_metric": "harmonic_score"})
    assert runner.selection_metric(chosen) == "harmonic_score"
    assert runner.stored_config(cfg())["training"]["selection_metric"] is None
    card = protocol_card(split="official", selection="paper", selection_metric="sprsound_score",
                         output_kind="binary", thresholds_tuned=True, dataset="sprsound", task="event2",
                         class_names=["normal", "adventitious"], test_patients=3, test_cycles=40)
    assert card["thresholds_tuned_on"] == "test" and "adventitious" in card["sensitivity"]


@pytest.mark.parametrize("held", ["run.json", "last.pt"])
def test_a_new_run_refuses_the_folder_of_another(tmp_path, held):
    """A plan places runs in given folders: one that holds a finished or an interrupted run is never reused
    by a new run (its checkpoints and record would be overwritten); before anything is written."""
    from ls.config import config_from_dict
    from ls.runs.run import RunFolderTaken

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / held).write_text("theirs")
    cfg = config_from_dict({"dataset": {"data_folder": str(tmp_path)}, "models": {"ast": {}}})
    with pytest.raises(RunFolderTaken, match=f"run folder {folder} already holds"):
        runner.train_run(cfg, "ast", run_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == [held] and (folder / held).read_text() == "theirs"
