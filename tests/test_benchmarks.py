"""The benchmarks run end to end on tiny settings and report what they promise: benchmarks/epoch.py (one capped
batch per pass) states its config with the numbers; benchmarks/data_pipeline.py --augment measures every
augmentation."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_epoch_benchmark_prints_the_stated_config_and_rates(synthetic_icbhi_dir, capsys):
    rc = _load("epoch").main(["--data", str(synthetic_icbhi_dir), "--device", "cpu", "--model-size", "tiny224", "--stride", "16",
                     "--set", "dataset.w=64", "--set", "models.ast_film_soft.input_tdim=64",
                     "--set", "dataset.batch_size=4", "--set", "audio.raw_augment=false", "--max-batches", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "model: tiny224, stride 16x16, input 128x64 (mel bins x frames) -> 8x4 = 32 patches" in out
    assert "device=cpu" in out and "capped at 1 batches per pass" in out
    assert "train: 4 cycles in" in out and "full pass of" in out and "samples/s" in out
    assert "eval:  4 cycles in" in out and "peak RSS:" in out
    assert "precision=fp32 (training.amp=auto)" in out and "compile=False" in out  # CPU: never autocast
    assert "attention (SDPA) kernel: flash (CPU)" in out and "model FLOPs per sample" in out
    assert "matmul peak" in out and "% of the fp32 peak" in out and "% of the bf16 peak" in out
    assert len(re.findall(r"loader alone [\d.]+ samples/s", out)) == 2  # train and eval
    assert out.count("waited for data") == 3 and "loader-bound: no" in out
    # benchmarks/gpu_check.py reads these lines on a GPU: the numbers it takes are the ones printed
    read = _load("gpu_check").parse_epoch(out)
    rate = float(re.search(r"train: 4 cycles in [\d.]+ s = ([\d.]+) samples/s", out).group(1))
    assert read["train_samples_per_s"] == rate and read["eval_samples_per_s"] > 0 and read["precision"] == "fp32"
    assert read["train_ms_per_step"] > 0 and "train_pct_bf16_peak" in read and read["attention"] == "flash (CPU)"


def test_data_pipeline_augment_reports_every_augmentation_per_core(synthetic_icbhi_dir, tmp_path, capsys):
    bench = _load("data_pipeline")
    rc = bench.main(["--augment", "--data", str(synthetic_icbhi_dir), "--cache-dir", str(tmp_path / "cache"),
                     "--items", "2", "--workers", "1", "--target", "400"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(report["per_core"]) == set(bench.AUGMENTS)
    assert all(v["items_per_s"] > 0 for v in report["per_core"].values())
    assert report["loader"]["1"]["samples_per_s"] > 0
    assert report["target"]["loader_needs"] == 800


def test_cpu_paths_compares_settings_and_tabulates_the_differences():
    """benchmarks/cpu_paths.py's comparison (its measurements take minutes: not run here)."""
    bench = _load("cpu_paths")
    fp = {"predictions": "3333", "best_epoch": 1, "test": {"sensitivity": 0.4},
          "numbers": {"train_loss": [1.2, 1.1], "val_loss": [1.3, 1.2], "test_loss": 1.37,
                      "mean_probabilities": [0.7, 0.5]}}
    run = {"best_epoch": 2, "train_loss": [1.3, 1.2], "val_loss": [1.4, 1.3], "test_loss": 1.8,
           "test": {**dict.fromkeys(bench.COUNT_METRICS, 0.5), "auroc_macro": 0.6}, "predictions": "0123"}
    ref = {"fingerprint": fp, "regression": {"data": "abc", **{v: run for v in bench.VARIANTS}}}
    other = json.loads(json.dumps(ref))
    other["fingerprint"]["numbers"]["test_loss"] += 2e-7
    other["regression"]["ast"]["predictions"] = "0120"
    other["regression"]["ast"]["test"]["sensitivity"] = 0.54
    other["regression"]["ast_fus"]["val_loss"][1] *= 1 + 1e-6
    rows = bench.compare(ref, other)
    assert rows["fingerprint: losses, max |diff|"] == pytest.approx(2e-7)
    assert rows["fingerprint: predictions, best epoch, count metrics equal"] is True
    assert rows["2-epoch runs: predictions equal (variants)"] == 4
    assert rows["2-epoch runs: predicted classes changed (cycles)"] == 1
    assert rows["2-epoch runs: count metrics, max |diff|"] == pytest.approx(0.04)
    assert rows["2-epoch runs: losses, max relative diff"] == pytest.approx(1.3e-6 / 1.4, rel=1e-3)  # of the largest
    assert rows["2-epoch runs: best epoch equal (variants)"] == 5
    assert bench.compare(ref, ref)["2-epoch runs: losses, max |diff|"] == 0.0
    table = bench.format_table(["AVX512", "DEFAULT"], [rows]).splitlines()
    assert table[0].split() == ["quantity", "DEFAULT"]
    assert any(line.startswith("2-epoch runs: predictions equal (variants)") and line.endswith(" 4") for line in table)
    assert any(line.startswith("fingerprint: predictions") and line.endswith("yes") for line in table)


def test_tune_benchmark_reports_the_bookkeeping_of_a_trial_and_the_once_per_command_costs(capsys):
    rc = _load("tune").main(["--recordings", "24", "--epochs", "1", "--trials", "1", "--repeats", "1", "--no-speedup"])
    out = capsys.readouterr().out
    assert rc == 0
    assert re.search(r"bookkeeping per trial \(ask to tell, less the run\): median [\d.]+ s", out)
    assert re.search(r"trials against plain runs: median [+-][\d.]+ s per trial", out)
    assert "once per command: the search outside its trials" in out and out.count("load average") >= 3
    assert "speed-up" not in out
