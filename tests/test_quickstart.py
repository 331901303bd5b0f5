"""The quickstart (python -m ls.quickstart): synthetic data -> SoftFiLM and AST -> side-by-side results, and the
README's numbers: the table shown is the recorded one, and the recorded fingerprint still reproduces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ls.quickstart import (
    README,
    README_BEGIN,
    README_END,
    RECORD,
    fingerprint,
    fingerprint_differences,
    format_side_by_side,
    main,
    readme_block,
    write_record,
)


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
    runs = sorted((out / "checkpoints").glob("*/best.pt"))
    assert len(runs) == 2
    assert "mlflow ui" not in text  # --no-tracking
    # the next steps name the checkpoints just written, without a --config that would not fit them
    soft = next(p for p in runs if p.parent.name.startswith("ast_film_soft"))
    ast = next(p for p in runs if p.parent.name.startswith("ast_1ep"))
    assert f"python -m ls.evaluate --checkpoint {soft}" in text
    assert f"python visualize.py --all --checkpoint {soft} --baseline-ckpt {ast}" in text
    record = json.loads((out / "quickstart.json").read_text())
    assert set(record["table"]) == {"SoftFiLM-AST", "AST baseline"} and record["settings"]["epochs"] == 1
    assert record["table"]["SoftFiLM-AST"]["icbhi_score"] == pytest.approx(float(rows["ICBHI score"][0]))


def test_side_by_side_format():
    table = format_side_by_side({"A": {"icbhi_score": 0.5}, "B": {"specificity": 1.0}}).splitlines()
    assert table[0].split()[-2:] == ["A", "B"] and table[1].split()[-1] == "100.00"
    assert math.isnan(float(table[1].split()[1]))  # a metric a model lacks prints as nan


def test_the_quickstart_tracks_both_runs_and_says_how_to_open_them(tmp_path, monkeypatch, capsys):
    """With MLflow (a local store here): both runs are mirrored, and the last lines say how to open them."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["--epochs", "1", "--recordings", "24", "--out", str(tmp_path / "qs")]) == 0
    text = capsys.readouterr().out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in text
    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["1"])
    assert sorted(r.data.tags["variant"] for r in runs) == ["ast", "ast_film_soft"]
    assert {r.info.status for r in runs} == {"FINISHED"}


# -- the README says what is true ------------------------------------------------------------------------------
def test_the_readme_shows_the_recorded_quickstart_numbers():
    """The README block between the quickstart markers is exactly what docs/quickstart.json says (time, machine,
    table); python -m ls.quickstart --record rewrites both."""
    record = json.loads(RECORD.read_text())
    text = README.read_text(encoding="utf-8")
    assert readme_block(record) in text, (
        "README.md's quickstart block differs from docs/quickstart.json: run python -m ls.quickstart --record")
    assert set(record["table"]) == {"SoftFiLM-AST", "AST baseline"}
    assert record["settings"] == {"recordings": 400, "seed": 0, "epochs": 15}


@pytest.mark.slow
def test_the_recorded_fingerprint_still_reproduces(tmp_path):
    """A change that moves training numbers changes the fingerprint (test metrics and per-cycle predictions of
    a 2-epoch SoftFiLM run on 24 synthetic recordings): re-record the quickstart, which updates the README."""
    recorded = json.loads(RECORD.read_text())["fingerprint"]
    diffs = fingerprint_differences(fingerprint(tmp_path), recorded)
    assert not diffs, (
        "training numbers moved: run python -m ls.quickstart --record (updates docs/quickstart.json and the "
        "README's table) and commit both. " + "; ".join(diffs))
    assert recorded["numbers"]["train_loss"] and len(recorded["predictions"]) > 10


def test_a_fingerprint_difference_is_found():
    recorded = json.loads(RECORD.read_text())["fingerprint"]
    moved = json.loads(json.dumps(recorded))
    assert fingerprint_differences(moved, recorded) == []
    moved["numbers"]["test_loss"] += 1e-3
    moved["predictions"] = "0" + moved["predictions"][1:]
    assert [d.split(":")[0] for d in fingerprint_differences(moved, recorded)] == ["predictions",
                                                                                   "numbers.test_loss"]
    moved["numbers"]["test_loss"] = recorded["numbers"]["test_loss"] + 1e-6  # rounding across machines
    assert [d.split(":")[0] for d in fingerprint_differences(moved, recorded)] == ["predictions"]


def test_record_rewrites_only_the_marked_readme_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{README_BEGIN}\nold numbers\n{README_END}\n\nafter\n")
    record = {"settings": {"recordings": 400, "seed": 0, "epochs": 15}, "seconds": 193.4,
              "machine": {"cpus": 2, "processor": "x86_64", "python": "3.11", "torch": "2.9.1+cpu"},
              "table": {"SoftFiLM-AST": {"specificity": 89.12, "sensitivity": 56.01, "icbhi_score": 72.57,
                                         "binary_icbhi_score": 86.31},
                        "AST baseline": {"specificity": 81.7, "sensitivity": 59.45, "icbhi_score": 70.57,
                                         "binary_icbhi_score": 82.95}}}
    write_record(record, tmp_path / "quickstart.json", readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text
    assert "Measured on 2 CPU cores (torch 2.9.1): 193 s for 400 recordings and 15 epochs per model" in text
    assert ["ICBHI", "score", "72.57", "70.57"] in [line.split() for line in text.splitlines()]
    assert json.loads((tmp_path / "quickstart.json").read_text()) == record
    # a record that names the CPU and the code path torch used says so
    record["machine"].update(cpu="AMD EPYC", capability="AVX512", threads=1)
    assert "Measured on 2 CPU cores (AMD EPYC, AVX512 code path; torch 2.9.1, 1 thread): 193 s" in readme_block(record)
    with pytest.raises(ValueError, match="no block"):
        write_record(record, tmp_path / "q.json", Path(tmp_path / "q.json"))
