"""benchmarks/epoch.py runs end to end (one capped batch per pass) and states its config with the numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_epoch_benchmark_prints_the_stated_config_and_rates(synthetic_icbhi_dir, capsys):
    spec = importlib.util.spec_from_file_location("bench_epoch", REPO / "benchmarks" / "epoch.py")
    epoch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(epoch)
    rc = epoch.main(["--data", str(synthetic_icbhi_dir), "--device", "cpu", "--model-size", "tiny224", "--stride", "16",
                     "--set", "dataset.w=64", "--set", "models.ast_film_soft.input_tdim=64",
                     "--set", "dataset.batch_size=4", "--set", "audio.raw_augment=false", "--max-batches", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "model: tiny224, stride 16x16, input 128x64 (mel bins x frames) -> 8x4 = 32 patches" in out
    assert "device=cpu" in out and "capped at 1 batches per pass" in out
    assert "train: 4 cycles in" in out and "full pass of" in out and "samples/s" in out
    assert "eval:  4 cycles in" in out and "peak RSS:" in out
