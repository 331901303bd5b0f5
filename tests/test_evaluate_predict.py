"""ls.evaluate and ls.predict on tiny checkpoints (tiny224, input 128 x 64) trained a few steps on synthetic data."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

_CHECKPOINTS: dict[str, Path] = {}


def make_tiny_checkpoint(data: Path, variant: str, out: Path, steps: int = 2, tau: float | None = None) -> Path:
    """Build + train ``variant`` for ``steps`` batches, then write an ``ls`` checkpoint (with a history)
    through ``ls.engine.checkpoint.save_checkpoint``. SoftFiLM masks are left at temperature ``tau``."""
    import ls
    from ls.config import config_from_dict, to_dict
    from ls.data import build_datasets, build_loaders
    from ls.engine.checkpoint import CHECKPOINT_FORMAT, cpu_state_dict, save_checkpoint
    from ls.models import build_model

    cfg = config_from_dict({
        "seed": 0,
        "dataset": {"data_folder": str(data), "batch_size": 4, "w": 64, "val_fraction": 0.25},
        "models": {variant: {"model_size": "tiny224", "input_fdim": 128, "input_tdim": 64}},
        "training": {"epochs": steps, "device": "cpu"},
    })
    datasets = build_datasets(cfg)
    batch = next(iter(build_loaders(cfg, datasets).train))
    torch.manual_seed(0)
    model = build_model(cfg.model(variant), datasets.metadata_spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for step in range(steps):
        logits = model(batch["spec"], batch["meta"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"epoch": step + 1, "train/loss": loss.item(), "val/loss": loss.item(),
                        "val/icbhi_score": 0.5, "val/specificity": 0.6, "val/sensitivity": 0.4})
    if tau is not None:
        model.set_mask_temperature(tau)
    state = {
        "format": CHECKPOINT_FORMAT, "version": ls.__version__, "variant": variant, "config": to_dict(cfg),
        "model": cpu_state_dict(model), "metadata_encoder": datasets.encoder.state_dict(),
        "metadata_spec": datasets.metadata_spec.to_dict(), "class_names": list(datasets.class_names),
        "thresholds": [0.4, 0.6], "output_mode": cfg.output_mode.to_dict(),
        "epoch": steps, "trainer": {"history": history},
    }
    return save_checkpoint(state, out)


@pytest.fixture(scope="session")
def tiny_checkpoints(synthetic_icbhi_dir, tmp_path_factory):
    """``{"ast": path, "ast_film_soft": path}`` (SoftFiLM stored at mask temperature 0.5)."""
    if not _CHECKPOINTS:
        out = tmp_path_factory.mktemp("tiny_ckpt")
        _CHECKPOINTS["ast"] = make_tiny_checkpoint(synthetic_icbhi_dir, "ast", out / "ast.pt")
        _CHECKPOINTS["ast_film_soft"] = make_tiny_checkpoint(synthetic_icbhi_dir, "ast_film_soft",
                                                             out / "softfilm.pt", tau=0.5)
    return _CHECKPOINTS


# -- evaluate -----------------------------------------------------------------------------------------------
def test_evaluate_round_trip_uses_stored_thresholds(tiny_checkpoints, tmp_path):
    from ls.engine.predict_rules import predict_classes
    from ls.evaluate import main

    assert main(["--checkpoint", str(tiny_checkpoints["ast_film_soft"]), "--out", str(tmp_path),
                 "--compute-device", "cpu"]) == 0
    payload = json.loads((tmp_path / "metrics_test.json").read_text())
    preds = pd.read_csv(tmp_path / "predictions_test.csv")
    assert payload["thresholds"] == [0.4, 0.6] and payload["n_cycles"] == len(preds) > 0
    # predictions follow the stored thresholds (0.4 crackle, 0.6 wheeze), recomputed here from the sigmoids
    from ls.engine.predict_rules import OutputMode

    ids = predict_classes(preds[["sigmoid_crackle", "sigmoid_wheeze"]].to_numpy(), OutputMode("multilabel", 4, 2),
                          (0.4, 0.6))
    assert preds["pred"].tolist() == [payload["class_names"][i] for i in ids]
    assert "threshold_crackle" in payload["decision_rule"]
    # ICBHI metrics recomputed by hand from the CSV
    normal = preds["true"] == "Normal"
    sp = (preds.pred[normal] == "Normal").mean() if normal.any() else 0.0
    se = (preds.pred[~normal] == preds.true[~normal]).mean() if (~normal).any() else 0.0
    assert payload["metrics"]["specificity"] == pytest.approx(sp)
    assert payload["metrics"]["sensitivity"] == pytest.approx(se)
    composite = preds[["p_normal", "p_crackle", "p_wheeze", "p_both"]].sum(axis=1)
    np.testing.assert_allclose(composite, 1.0, atol=1e-5)
    assert np.asarray(payload["confusion_matrix"]).sum() == len(preds)
    assert any(k.startswith("device/") for k in payload["group_metrics"])


def test_evaluating_the_train_split_never_augments(tiny_checkpoints):
    """A checkpoint trained with augmentation still evaluates its training split on clean inputs."""
    from ls.config import AugmentConfig
    from ls.inference import build_split_loader, load_for_inference

    ctx = load_for_inference(tiny_checkpoints["ast"], device="cpu")
    ctx.cfg.audio.raw_augment = True
    ctx.cfg.audio.spec_aug = [AugmentConfig(type="SpecAugment", p=1.0, policy="icbhi_sup")]
    loader = build_split_loader(ctx, "train")
    assert loader.dataset.augmenter is None
    first, again = loader.dataset[0]["spec"], loader.dataset[0]["spec"]
    assert torch.equal(first, again)


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    from ls.evaluate import main

    assert main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_merge_data_config_keeps_model_bound_fields():
    from ls.config import config_from_dict
    from ls.inference import merge_data_config

    ckpt = config_from_dict({"dataset": {"data_folder": "/a", "w": 64}})
    data = config_from_dict({"dataset": {"data_folder": "/b", "w": 1024, "batch_size": 2}})
    merged = merge_data_config(ckpt, data)
    assert merged.dataset.data_folder == "/b" and merged.dataset.batch_size == 2
    assert merged.dataset.w == 64 and ckpt.dataset.data_folder == "/a"


def test_display_class_names_fix_11_2_6():
    from ls.engine.modes import OutputMode
    from ls.inference import display_class_names

    assert display_class_names(OutputMode("multilabel", 4, 2)) == ["Normal", "Crackle", "Wheeze", "Both"]
    assert display_class_names(OutputMode("binary", 2, 1)) == ["Normal", "Abnormal"]
    named = OutputMode("multiclass", 3, 3, ("normal", "adventitious", "poor quality"))
    assert display_class_names(named) == ["Normal", "Adventitious", "Poor quality"]


# -- predict ------------------------------------------------------------------------------------------------
def test_sliding_windows_cover_the_recording():
    from ls.predict import PredictionError, sliding_windows

    assert sliding_windows(6.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert sliding_windows(5.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (3.0, 5.0)]  # tail window ends at the end
    assert sliding_windows(3.0, 2.0, hop=0.5) == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0)]
    with pytest.raises(PredictionError, match="shorter than"):
        sliding_windows(1.0, 2.0)


def test_read_cycles_file(tmp_path):
    from ls.predict import PredictionError, read_cycles_file

    f = tmp_path / "a.txt"
    f.write_text("0.1\t1.5\t0\t1\n\n1.5 2.0\n")
    assert read_cycles_file(f) == [(0.1, 1.5), (1.5, 2.0)]
    f.write_text("0.1 oops\n")
    with pytest.raises(PredictionError, match=r"a.txt:1"):
        read_cycles_file(f)


def _one_recording(data: Path) -> tuple[Path, Path]:
    wav = min(data.glob("*.wav"))
    return wav, wav.with_suffix(".txt")


def test_predict_json_for_annotated_cycles(tiny_checkpoints, synthetic_icbhi_dir, tmp_path):
    """One row per annotated cycle, composite probabilities summing to one, a class name per cycle."""
    from ls.predict import main

    ckpt = tiny_checkpoints["ast_film_soft"]
    wav, ann = _one_recording(synthetic_icbhi_dir)
    device, site = wav.stem.split("_")[-1], wav.stem.split("_")[2]
    out = tmp_path / "pred.json"
    assert main(["--checkpoint", str(ckpt), "--wav", str(wav), "--device", device, "--site", site,
                 "--cycles", str(ann), "--out", str(out), "--compute-device", "cpu"]) == 0
    payload = json.loads(out.read_text())
    n_cycles = sum(1 for line in ann.read_text().splitlines() if line.strip())
    assert len(payload["cycles"]) == n_cycles and payload["metadata"] == {"device": device, "site": site}
    row = payload["cycles"][0]
    assert math.isclose(row["p_normal"] + row["p_crackle"] + row["p_wheeze"] + row["p_both"], 1.0, rel_tol=1e-6)
    assert row["pred_class"] in ("Normal", "Crackle", "Wheeze", "Both")


def test_predict_csv_window_and_unknown_device_warns(tiny_checkpoints, synthetic_icbhi_dir, tmp_path):
    from ls.inference import load_for_inference
    from ls.predict import predict_recording

    ctx = load_for_inference(tiny_checkpoints["ast_film_soft"], device="cpu")
    wav, _ = _one_recording(synthetic_icbhi_dir)
    meta = {"device": "Stethoscope9000", "site": "Tc", "age": 50, "bmi": 24}
    with pytest.warns(UserWarning, match="'Stethoscope9000' was never seen"):
        table = predict_recording(ctx, wav, meta, window=2.0)
    duration = sf.info(str(wav)).duration
    assert table["end"].iloc[-1] == pytest.approx(duration, abs=1e-3)
    assert (table["end"] - table["start"]).round(6).eq(2.0).all()
    # the unknown device goes through the reserved 'unknown' id: same output as passing that token
    from ls.types import UNKNOWN_TOKEN

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = predict_recording(ctx, wav, {**meta, "device": UNKNOWN_TOKEN}, window=2.0)
    np.testing.assert_allclose(table["p_normal"], same["p_normal"], atol=1e-6)


def test_predict_bad_audio_errors(tiny_checkpoints, tmp_path, capsys):
    from ls.predict import main

    ckpt = str(tiny_checkpoints["ast"])
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, dtype=np.float32), 16000)  # 6 ms: less than one 40 ms frame
    assert main(["--checkpoint", ckpt, "--wav", str(short), "--device", "Meditron", "--site", "Tc"]) == 2
    assert "short.wav" in capsys.readouterr().err
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not a wav at all")
    assert main(["--checkpoint", ckpt, "--wav", str(garbage), "--device", "Meditron", "--site", "Tc"]) == 2
    assert "garbage.wav" in capsys.readouterr().err
    ok = tmp_path / "ok.wav"
    sf.write(ok, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    assert main(["--checkpoint", ckpt, "--wav", str(ok), "--device", "Meditron", "--site", "Tc", "--window",
                 "2"]) == 2
    assert "shorter than the 2.0 s window" in capsys.readouterr().err


# -- errors, another directory, guessing -----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "predict", "visualize"])
def test_a_text_file_as_checkpoint_is_one_error_line_and_traceback_a_switch(command, tmp_path, capsys):
    import importlib

    main = importlib.import_module({"evaluate": "ls.evaluate", "predict": "ls.predict",
                                    "visualize": "ls.viz.cli"}[command]).main
    notes = tmp_path / "best.pt"
    notes.write_text("epoch 1 loss 0.7\n")
    argv = {"evaluate": ["--checkpoint", str(notes)],
            "predict": ["--checkpoint", str(notes), "--wav", str(tmp_path / "x.wav")],
            "visualize": ["--checkpoint", str(notes), "--out", str(tmp_path / "f")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [(f"error: {notes} is not a checkpoint: it is a text file, expected a best.pt or "
                                "last.pt written by ls")]
    assert main([*argv, "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("error: ")


def _relocated_checkpoint(src: Path, tmp_path: Path, data: Path) -> Path:
    """``src`` as a run in ``tmp_path/train`` would have written it: data folder stored relative to there."""
    import os

    import ls.engine.checkpoint as ck

    train_dir = tmp_path / "train"
    train_dir.mkdir()
    os.symlink(data, train_dir / "data")
    state = ck.read_checkpoint(src)
    state["config"]["dataset"]["data_folder"] = "data"
    return ck.save_checkpoint(state, train_dir / "best.pt")


def test_evaluate_from_another_directory_says_where_it_looked_and_to_pass_config(tiny_checkpoints,
                                                                                 synthetic_icbhi_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    from ls.evaluate import main

    ckpt = _relocated_checkpoint(tiny_checkpoints["ast"], tmp_path, synthetic_icbhi_dir)
    monkeypatch.chdir(tmp_path)  # not the folder training ran in
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "ev"), "--compute-device", "cpu"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (f"error: dataset.data_folder='data' (from the checkpoint {ckpt}) does not exist (relative to "
                    f"the working directory {tmp_path}); run from the folder training ran in, or pass --config with "
                    "a dataset section that locates the data")
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"dataset:\n  data_folder: {synthetic_icbhi_dir}\n")
    assert main(["--checkpoint", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "ev"),
                 "--compute-device", "cpu", "--max-batches", "1"]) == 0
    monkeypatch.chdir(tmp_path / "train")  # where training ran: the stored relative folder resolves
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "ev2"), "--compute-device", "cpu",
                 "--max-batches", "1"]) == 0


class _DataReached(BaseException):
    """Raised where the data loader would be built: the data-folder check let the command through (not an
    Exception, so the command's error handling lets it pass)."""


@pytest.mark.parametrize("command", ["evaluate", "visualize"])
def test_a_combined_dataset_is_checked_by_its_parts_folders(command, tiny_checkpoints, synthetic_icbhi_dir,
                                                            tmp_path, monkeypatch, capsys):
    """A combined dataset's own data_folder only receives the shared cache: that it does not exist yet is no
    reason to refuse evaluating or drawing figures; a missing part is named by its key."""
    import yaml

    import ls.evaluate
    import ls.inference
    from ls.evaluate import main as evaluate_main
    from ls.viz.cli import main as visualize_main

    def reached(*args, **kwargs):
        raise _DataReached

    monkeypatch.setattr(ls.evaluate, "build_split_loader", reached)
    monkeypatch.setattr(ls.inference, "build_split_loader", reached)
    monkeypatch.chdir(tmp_path)

    def run(parts):
        cfg = tmp_path / "combined.yaml"
        cfg.write_text(yaml.safe_dump({"dataset": {"name": "combined", "data_folder": str(tmp_path / "cache"),
                                                   "parts": parts}}))
        args = ["--checkpoint", str(tiny_checkpoints["ast"]), "--config", str(cfg), "--compute-device", "cpu",
                "--out", str(tmp_path / "out")]
        if command == "evaluate":
            return evaluate_main(args)
        return visualize_main([*args, "--performance"])

    with pytest.raises(_DataReached):  # past the check, although tmp_path/cache does not exist
        run([{"name": "icbhi", "data_folder": str(synthetic_icbhi_dir)}])
    assert not (tmp_path / "cache").exists()
    assert run([{"name": "icbhi", "data_folder": str(synthetic_icbhi_dir)},
                {"name": "icbhi", "data_folder": "gone", "tag": "second"}]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: dataset.parts[1].data_folder='gone' (from --config {tmp_path / 'combined.yaml'}) "
                           f"does not exist (relative to the working directory {tmp_path}); ")


def _predict(ctx, wav, meta=None, **kw):
    from ls.predict import PredictionWarning, predict_recording

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = predict_recording(ctx, wav, meta or {"device": "Meditron", "site": "Tc"}, **kw)
    return table, [str(w.message) for w in caught if issubclass(w.category, PredictionWarning)]


def test_predict_says_when_it_is_guessing(tiny_checkpoints, synthetic_icbhi_dir, tmp_path):
    """Silent input, a low sample rate, a recording much longer than the model's input without --cycles or
    --window, and metadata or durations outside the training range each give a warning; ordinary input
    none."""
    from ls.inference import load_for_inference

    ctx = load_for_inference(tiny_checkpoints["ast_film_soft"], device="cpu")
    ranges = ctx.encoder.ranges
    assert set(ranges) >= {"age", "bmi", "duration"} and all(lo <= hi for lo, hi in ranges.values())
    length = ctx.checkpoint_cfg.audio.desired_length  # 10 s: the model's input
    rng = np.random.default_rng(0)
    age = float(np.mean(ranges["age"]))

    ok = tmp_path / "ok.wav"
    sf.write(ok, rng.normal(0, 0.05, 16000 * 4).astype(np.float32), 16000)
    _, notes = _predict(ctx, ok, {"device": "Meditron", "site": "Tc", "age": age}, cycles=[(0.0, 2.0), (2.0, 4.0)])
    assert notes == []

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 4, dtype=np.float32), 16000)
    _, notes = _predict(ctx, silent, cycles=[(0.0, 2.0)])
    assert len(notes) == 1 and "silent or near-silent (all samples are equal" in notes[0]

    low = tmp_path / "low.wav"
    sf.write(low, rng.normal(0, 0.05, 2000 * 4).astype(np.float32), 2000)
    _, notes = _predict(ctx, low, cycles=[(0.0, 2.0)])
    assert notes == [(f"{low}: sampled at 2000 Hz, it holds nothing above 1000 Hz, but the model's features span "
                     "100-8000 Hz: most mel bins are empty")]

    long = tmp_path / "long.wav"
    sf.write(long, rng.normal(0, 0.05, 16000 * 60).astype(np.float32), 16000)
    table, notes = _predict(ctx, long)  # 60 s, the model takes 10 s: windows, not one 60 s "cycle"
    assert len(table) == 6 and (table["end"] - table["start"]).eq(length).all()
    assert notes[0] == (f"{long}: 60.0 s long, but the model takes {length:g} s; predicting {length:g} s sliding "
                        "windows (choose with --window/--hop or --cycles)")
    _, notes = _predict(ctx, long, cycles=[(0.0, 30.0)])
    assert any("1 cycle(s) are longer than the model's input of 10 s" in n for n in notes)

    _, notes = _predict(ctx, ok, {"device": "Meditron", "site": "Tc", "age": 150.0}, cycles=[(0.0, 0.05)])
    hi_age = ranges["age"][1]
    assert f"age=150 lies outside the training range {ranges['age'][0]:g}..{hi_age:g}" in notes
    assert any(n.startswith("1 cycle duration(s) (e.g. 0.05 s) lie outside the training range") for n in notes)


def test_predict_output_states_the_decision_rule_and_the_warnings(tiny_checkpoints, tmp_path, capsys):
    from ls.predict import main

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, dtype=np.float32), 16000)
    base = ["--checkpoint", str(tiny_checkpoints["ast"]), "--wav", str(silent), "--device", "Meditron",
            "--site", "Tc", "--compute-device", "cpu"]
    assert main([*base, "--format", "csv", "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert next(line for line in err.splitlines() if line.startswith("warning:")).startswith(
        f"warning: {silent}: the recording is silent")
    text = (tmp_path / "p.csv").read_text()
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[0] == ("# decision_rule: crackle if p_crackle >= threshold_crackle, wheeze if p_wheeze >= "
                       "threshold_wheeze; both if both, normal if neither")
    assert head[1] == "# thresholds: threshold_crackle=0.4, threshold_wheeze=0.6"
    assert any(line.startswith("# warning: ") and "silent" in line for line in head)
    table = pd.read_csv(tmp_path / "p.csv", comment="#")
    assert list(table.columns[:4]) == ["cycle", "start", "end", "duration"] and "pred_class" in table
    assert main([*base, "--out", str(tmp_path / "p.json")]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["decision_rule"] == head[0].removeprefix("# decision_rule: ")
    assert any("silent" in w for w in payload["warnings"])


def test_a_bad_checkpoint_path_is_reported_before_the_model_code_is_imported(tmp_path):
    """timm and torchvision take seconds to import: a missing checkpoint is reported without them."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom ls.inference import load_for_inference\ntry:\n    load_for_inference('missing.pt')\n"
            "except Exception as exc:\n    print(type(exc).__name__, 'timm' in sys.modules, 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.stdout.split() == ["CheckpointError", "False", "False"], done.stdout + done.stderr
