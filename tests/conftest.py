"""Session-wide fixtures. Tests that need ../shared skip loudly when it is absent (e.g. on a bare clone)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LS_SHARED_DIR", REPO.parent / "shared"))
ICBHI_SAMPLE = SHARED / "data" / "icbhi-sample"
ICBHI_META = SHARED / "data" / "icbhi-meta"
SPRSOUND_ANNOTATIONS = SHARED / "data" / "sprsound-annotations"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"SKIPPED (needs shared data): {path} is absent; set LS_SHARED_DIR to run this test")
    return path


@pytest.fixture(scope="session")
def icbhi_sample_dir() -> Path:
    """The 10 real ICBHI recordings + official helper files (../shared/data/icbhi-sample)."""
    return _require(ICBHI_SAMPLE)


@pytest.fixture(scope="session")
def icbhi_meta_dir() -> Path:
    """Whole-database metadata files, incl. icbhi_metadata.csv (../shared/data/icbhi-meta)."""
    return _require(ICBHI_META)


@pytest.fixture(scope="session")
def sprsound_annotations_dir() -> Path:
    """24 real SPRSound JSON annotation files in the BioCAS 2022 layout, no audio
    (../shared/data/sprsound-annotations)."""
    return _require(SPRSOUND_ANNOTATIONS)


@pytest.fixture(scope="session")
def synthetic_icbhi_dir(tmp_path_factory) -> Path:
    """A small synthetic folder in the official ICBHI layout, generated once per test session."""
    from ls.data.synthetic import generate_icbhi

    out = tmp_path_factory.mktemp("synthetic_icbhi")
    generate_icbhi(out, recordings=24, seed=0)
    return out


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster than two, and far faster on a busy machine (no thread handoffs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot write to: chmod 555 for a normal user; a read-only tmpfs mounted on it for
    root (root ignores permissions). Skipped where neither is possible."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield from mounted_tmpfs(folder, "ro,size=1m", "running as root without permission to mount a read-only tmpfs")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 kB tmpfs (root only): writes beyond it fail with a real ENOSPC."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root and permission to mount a tmpfs")
    yield from mounted_tmpfs(folder, "size=256k", "needs root and permission to mount a tmpfs")


def mounted_tmpfs(folder: Path, options: str, why_skip: str):
    """Fixture body: a tmpfs with mount ``options`` on ``folder`` while the test runs; skipped where it cannot
    be mounted."""
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, check=False
    ).returncode != 0:
        pytest.skip(why_skip)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates the tables
    return path


@pytest.fixture
def mlflow_db(tmp_path, _mlflow_template) -> Path:
    """A fresh, empty SQLite MLflow store in ``tmp_path``: a copy of one made per session (creating and
    migrating the tables takes seconds, copying them milliseconds)."""
    dst = tmp_path / "mlflow.db"
    shutil.copyfile(_mlflow_template, dst)
    return dst


def pytest_report_header(config):
    state = "present" if SHARED.exists() else "ABSENT: tests that read it will be skipped"
    tex = shutil.which("pdflatex") or shutil.which("lualatex")
    tex_state = f"{tex} (report.tex is compiled)" if tex else "ABSENT: the report.tex compile test will be skipped"
    return [f"shared data: {SHARED} ({state})", f"TeX engine: {tex_state}"]
