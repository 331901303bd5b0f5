"""The benchmarks run end to end on tiny settings and report what they promise: benchmarks/epoch.py (one capped
batch per pass) states its config with the numbers; benchmarks/data_pipeline.py --augment measures every
augmentation."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
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


def test_tune_benchmark_reports_the_bookkeeping_of_a_trial_and_the_once_per_command_costs(capsys):
    rc = _load("tune").main(["--recordings", "24", "--epochs", "1", "--trials", "1", "--repeats", "1", "--no-speedup"])
    out = capsys.readouterr().out
    assert rc == 0
    assert re.search(r"bookkeeping per trial \(ask to tell, less the run\): median [\d.]+ s", out)
    assert re.search(r"trials against plain runs: median [+-][\d.]+ s per trial", out)
    assert "once per command: the search outside its trials" in out and out.count("load average") >= 3
    assert "speed-up" not in out
