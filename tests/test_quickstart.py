"""The quickstart (python -m ls.quickstart): synthetic data -> SoftFiLM and AST -> side-by-side results."""

from __future__ import annotations

import math
from pathlib import Path

from ls.quickstart import format_side_by_side, main, mlflow_instructions


def test_quickstart_trains_both_models_and_prints_them_side_by_side(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["--epochs", "1", "--recordings", "24", "--no-tracking", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    table = text[text.index("test split"):].splitlines()
    assert "SoftFiLM-AST" in table[0] and "AST baseline" in table[0]
    rows = {line[:16].strip(): line[16:].split() for line in table[1:5]}
    assert set(rows) == {"Sp", "Se", "ICBHI score", "2-class score"}
    for values in rows.values():
        assert len(values) == 2 and all(0.0 <= float(v) <= 100.0 for v in values)
    assert (out / "data_24rec_seed0" / "synthetic_info.json").exists()
    assert len(list((out / "checkpoints").glob("*/best.pt"))) == 2
    assert "mlflow ui" not in text  # --no-tracking


def test_side_by_side_format_and_mlflow_instructions(tmp_path, monkeypatch):
    table = format_side_by_side({"A": {"icbhi_score": 0.5}, "B": {"specificity": 1.0}}).splitlines()
    assert table[0].split()[-2:] == ["A", "B"] and table[1].split()[-1] == "100.00"
    assert math.isnan(float(table[1].split()[1]))  # a metric a model lacks prints as nan
    monkeypatch.chdir(tmp_path)
    text = mlflow_instructions("sqlite:///mlflow.db", "ls")
    assert f"mlflow ui --backend-store-uri sqlite:///{Path(tmp_path).resolve() / 'mlflow.db'}" in text
    assert "sqlite:////abs/m.db" in mlflow_instructions("sqlite:////abs/m.db", "ls")
    assert "open http://host:5000" in mlflow_instructions("http://host:5000", "ls")
