"""ls.report.protocol: the protocol card built from plain values, read from run.json, gathered per report
section (disagreements flagged) and printed in Markdown and LaTeX."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from test_report import CLASSES, _write_run_folder, study

from ls.report.build import Settings, build_report
from ls.report.protocol import DIFFERS, NOT_RECORDED, protocol_card
from ls.report.render import latex_escape, latex_report, markdown_report, protocol_table
from ls.report.runs import load_runs
from ls.report.stats import ReportError

ICBHI_CARD = {
    "split": "official", "selection": "strict", "selection_metric": "icbhi_score",
    "thresholds_tuned_on": "validation",
    "sensitivity": "Se = abnormal cycles (crackle, wheeze, both) predicted as exactly their class / all abnormal "
                   "cycles; a both cycle predicted as only one of its sounds is a miss",
    "test_set": {"name": "icbhi test", "task": "icbhi4", "patients": 53, "cycles": 668}, "seeds": 1,
}  # fmt: skip


def icbhi_card(**changes) -> dict:
    values = {"split": "official", "selection": "strict", "selection_metric": "icbhi_score",
              "output_kind": "multilabel", "thresholds_tuned": True, "dataset": "icbhi", "task": "icbhi4",
              "class_names": CLASSES, "test_patients": 53, "test_cycles": 668}  # fmt: skip
    return protocol_card(**{**values, **changes})


def test_protocol_card_from_plain_values():
    card = icbhi_card()
    assert card == ICBHI_CARD
    assert json.loads(json.dumps(card)) == card  # ready for run.json
    assert icbhi_card(selection="paper")["thresholds_tuned_on"] == "test"
    assert icbhi_card(thresholds_tuned=False)["thresholds_tuned_on"] == "fixed"
    assert icbhi_card(output_kind="multiclass")["thresholds_tuned_on"] == "none"  # softmax: no thresholds
    two = icbhi_card(task="icbhi2", class_names=("normal", "abnormal"), output_kind="binary")
    assert two["sensitivity"] == ("Se = abnormal cycles predicted abnormal / all abnormal cycles (every class "
                                  "other than normal counts as abnormal)")
    sprsound = protocol_card(split="official", selection="strict", selection_metric="sprsound_score",
                             output_kind="multiclass", thresholds_tuned=True, dataset="sprsound", task="event7",
                             class_names=("Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle",
                                          "Fine Crackle", "Wheeze+Crackle"),
                             test_patients=40, test_cycles=900, test_split="test_inter+test_intra", seeds=3)
    assert sprsound["test_set"]["name"] == "sprsound test_inter+test_intra" and sprsound["seeds"] == 3
    assert "a Wheeze+Crackle cycle predicted as only one of its sounds is a miss" in sprsound["sensitivity"]
    with pytest.raises(ValueError, match="selection must be one of strict, paper, got 'best'"):
        icbhi_card(selection="best")
    with pytest.raises(ValueError, match="output_kind"):
        icbhi_card(output_kind="softmax")
    with pytest.raises(ValueError, match="test_patients must be >= 0"):
        icbhi_card(test_patients=-1)


def _with_cards(runs, **changes):
    """The runs with the ICBHI card of their own test set."""
    patients = runs[0].predictions["patient"].nunique()
    return [replace(r, protocol=icbhi_card(test_patients=patients, test_cycles=len(r.predictions), **changes))
            for r in runs]


def test_one_card_per_section_with_the_seeds_of_the_section():
    runs = _with_cards(study({"ast": 0.4, "var": 0.9}, seeds=(1, 2, 3), n_patients=16))
    report = build_report(runs, Settings(n_boot=50))
    section = report.sections[0]
    assert not any(n.startswith("protocol:") for n in section.notes)
    header, rows = protocol_table(section)
    cycles = len(runs[0].predictions)
    assert header == ["Item", "Value"] and dict(rows) == {
        "Split": "official (the dataset's own train/test split)",
        "Model selection": "strict (epoch selected on the validation split; test evaluated once, at the end)",
        "Selection metric": "icbhi_score",
        "Thresholds tuned on": "the validation split (patients held out of training)",
        "Sensitivity": ICBHI_CARD["sensitivity"],
        "Test set": f"icbhi test (task icbhi4): 16 patients, {cycles} cycles",
        "Seeds": "3 (1, 2, 3)",  # the section's seeds, not the runs' own "seeds": 1
    }
    md = markdown_report(report)
    assert "### Protocol" in md and f"| Test set | icbhi test (task icbhi4): 16 patients, {cycles} cycles |" in md
    tex = latex_report(report)
    assert r"\begin{tabularx}{\linewidth}" in tex and r"\caption{Protocol (strict selection).}" in tex
    assert f"Sensitivity & {latex_escape(ICBHI_CARD['sensitivity'])} \\\\" in tex
    # the methods paragraph names the recorded selection metric
    assert "each run's epoch is selected on the validation icbhi_score" in md


def test_cards_that_disagree_are_flagged_and_old_runs_without_a_card_are_noted():
    runs = _with_cards(study({"ast": 0.4, "var": 0.9}, seeds=(1, 2, 3), n_patients=16))
    by = {(r.variant, r.seed): i for i, r in enumerate(runs)}
    i = by["ast", 2]
    runs[i] = replace(runs[i], protocol={**runs[i].protocol, "thresholds_tuned_on": "fixed"})
    i = by["ast", 3]
    runs[i] = replace(runs[i], protocol=None)  # written before cards were recorded
    i = by["var", 1]
    runs[i] = replace(runs[i], protocol={**runs[i].protocol, "test_set": {**runs[i].protocol["test_set"],
                                                                          "patients": 99}})
    runs = [r for r in runs if not (r.variant == "var" and r.seed == 3)]  # var has seeds 1, 2 only
    section = build_report(runs, Settings(n_boot=50)).sections[0]
    rows = dict(protocol_table(section)[1])
    assert rows["Thresholds tuned on"] == DIFFERS
    assert rows["Split"].startswith("official")  # the runs that have a card agree on it
    assert rows["Seeds"] == "3 in all (AST: 1, 2, 3; VAR: 1, 2)"
    notes = [n for n in section.notes if n.startswith("protocol:")]
    assert len(notes) == 3, notes
    disagree = next(n for n in notes if "disagree on thresholds_tuned_on" in n)
    assert "'validation' (ast/seed1, var/seed1, var/seed2)" in disagree and "'fixed' (ast/seed2)" in disagree
    assert "not comparable" in disagree
    assert any("1 of 5 run(s) have no protocol card in run.json" in n and "ast/seed3" in n for n in notes)
    assert any("says its test set has 99 patients" in n and "hold 16 patients" in n for n in notes)
    # no run has a card: every item is not recorded, the test set and seeds still come from the runs
    bare = build_report([replace(r, protocol=None) for r in runs], Settings(n_boot=50)).sections[0]
    rows = dict(protocol_table(bare)[1])
    assert rows["Split"] == rows["Sensitivity"] == NOT_RECORDED
    assert rows["Test set"].startswith("16 patients,")


def test_run_json_protocol_is_read_and_checked(tmp_path):
    runs = _with_cards(study({"ast": 0.4, "var": 0.9}, seeds=(1,), n_patients=12))
    for run in runs:
        folder = tmp_path / "runs" / run.variant
        _write_run_folder(folder, run)
        meta = json.loads((folder / "run.json").read_text())
        meta["protocol"] = run.protocol
        (folder / "run.json").write_text(json.dumps(meta))
    loaded, _ = load_runs(tmp_path / "runs")
    assert [r.protocol for r in loaded] == [r.protocol for r in runs]
    meta = json.loads((tmp_path / "runs" / "var" / "run.json").read_text())
    meta["protocol"] = "strict"
    (tmp_path / "runs" / "var" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match=r"var: run.json: 'protocol' must be an object, got str"):
        load_runs(tmp_path / "runs")
    meta["protocol"] = {**runs[1].protocol, "selection": "paper"}
    (tmp_path / "runs" / "var" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match=r"var: run.json has selection 'strict' but its protocol card says 'paper'"):
        load_runs(tmp_path / "runs")


def test_protocol_card_imports_nothing_heavy():
    """Training builds the card: importing it must not pull in pandas, scipy, MLflow or matplotlib (the rest
    of ls.report is loaded on first use)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("import sys; from ls.report.protocol import protocol_card; "
            "print(sorted(m for m in ('pandas', 'scipy', 'mlflow', 'matplotlib', 'torch') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"
