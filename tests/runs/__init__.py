"""Tests of ls.runs: the run record and its MLflow mirror (a package, so that its conftest and helpers do not
shadow the top-level ``conftest`` that other test modules import from)."""
