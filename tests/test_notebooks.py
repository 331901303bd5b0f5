"""The notebooks run top to bottom on synthetic folders (so they never go stale) and are stored clean; the EDA
notebook runs on ICBHI and on SPRSound (its factors come from the dataset's schema)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parents[1] / "NBs"
NOTEBOOKS = ("00-ICBHI_metadata_creation.ipynb", "01-EDA.ipynb")
KERNEL = "ls-test-kernel"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec in a temp dir that runs this very interpreter (the venv with ``ls`` installed)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ls (test)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_stored_without_outputs(name):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit notebooks without outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_synthetic_data(name, kernel_env, synthetic_icbhi_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("LS_DATA_FOLDER", str(synthetic_icbhi_dir))
    out_csv = tmp_path / "icbhi_metadata.csv"
    monkeypatch.setenv("LS_METADATA_CSV", str(out_csv))  # never write into the shared fixture folder
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": tmp_path}})
    client.execute()  # raises CellExecutionError naming the failing cell
    if name.startswith("00"):
        import pandas as pd

        from ls.data.icbhi import build_cycle_table

        written = pd.read_csv(out_csv)
        expected = build_cycle_table(synthetic_icbhi_dir)
        assert list(written.columns) == list(expected.columns)
        assert len(written) == len(expected)
    else:
        assert_figures_and_no_error(nb)


def assert_figures_and_no_error(nb) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 3, "class bars, duration boxes and spectrograms should each show a figure"


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


@pytest.mark.slow
def test_eda_notebook_follows_the_schema_of_another_dataset(kernel_env, tmp_path, monkeypatch):
    from ls.data.synthetic_sprsound import generate_sprsound

    root = generate_sprsound(tmp_path / "BioCAS2022", recordings=12, seed=1)
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("LS_DATA_FOLDER", str(root))
    monkeypatch.setenv("LS_DATASET", "sprsound")
    monkeypatch.setenv("LS_TASK", "event7")
    nb = nbformat.read(NB_DIR / "01-EDA.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": tmp_path}}).execute()
    assert_figures_and_no_error(nb)
    text = printed(nb)
    assert "sprsound, task event7: factors ['site', 'sex'], continuous ['age', 'duration']" in text
    assert "Site (column AuscLoc)" in text and "Sex (column Sex)" in text
