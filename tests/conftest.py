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


# -- ls installed as a user installs it, and the example plugin ------------------------------------------------
EXAMPLE = REPO / "examples" / "ls-plugin-example"
#: Variables a test process may carry that would change what an installed ls or a fresh process does.
_LS_ENV = ("PYTHONPATH", "LS_PLUGINS", "LS_DISABLE_PLUGIN_AUTOLOAD", "LS_TRACEBACK", "MLFLOW_TRACKING_URI")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh user process: none of ls's variables, no PYTHONPATH (so an installed ls is
    the one imported), unbuffered output; ``extra`` added."""
    env = {k: v for k, v in os.environ.items() if k not in _LS_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_process(args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


class Installed:
    """A throwaway environment with ls installed from its wheel; the heavy dependencies (torch, ...) are this
    interpreter's, reached through a ``.pth`` file (nothing is downloaded)."""

    def __init__(self, root: Path, wheel: Path) -> None:
        self.root, self.wheel = root, wheel
        self.bin = root / "venv" / "bin"
        self.python = self.bin / "python"

    def pip_install(self, target: Path) -> None:
        out = run_process([self.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", target], cwd=self.root, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="session")
def installed_ls(tmp_path_factory) -> Installed:
    """ls built into a wheel from a copy of this checkout (with a credentials file that must stay out of it)
    and installed into a new virtual environment."""
    import sys
    import sysconfig

    try:
        import wheel  # noqa: F401 - setuptools builds wheels with it (pyproject's dev extras)
    except ImportError:
        pytest.skip("SKIPPED: building the wheel needs the 'wheel' package (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    shutil.copytree(REPO / "ls", src / "ls", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    (src / "ls" / "configs" / "mlflow.local.yaml").write_text("tracking_password: not-in-the-wheel\n")
    out = run_process([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                       root / "dist", src], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    wheel_path = next((root / "dist").glob("ls-*.whl"))
    out = run_process([sys.executable, "-m", "venv", "--without-pip", root / "venv"], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    installed = Installed(root, wheel_path)
    site = run_process([installed.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=root).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_ls_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    installed.pip_install(wheel_path)
    return installed


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """The example plugin's folder-per-class dataset (``<split>/<class>/*.wav``), cut from 24 synthetic ICBHI
    recordings."""
    import sys

    from ls.data.sources import unregister_reader
    from ls.models.variants import VARIANTS, unregister_variant

    registered = "meta_lora" in VARIANTS
    if str(EXAMPLE / "src") not in sys.path:
        sys.path.append(str(EXAMPLE / "src"))
    from ls_plugin_example.demo_data import make_class_folders

    if not registered:  # importing it registered the plugin: every other test sees ls as it ships
        unregister_variant("meta_lora")
        unregister_reader("class_folders")
    return make_class_folders(tmp_path_factory.mktemp("example_data"), recordings=24, seed=0)
