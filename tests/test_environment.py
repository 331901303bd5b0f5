"""The lock (requirements.lock), pyproject.toml and the environment agree; the setup and test scripts use the
lock and say what they run on."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
RELOCK = "bash scripts/lock.sh"
#: The platform scripts/lock.sh resolves for.
LOCK_PLATFORM = ("Linux", "x86_64", (3, 11))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    """``{canonical name: version}`` of requirements.lock."""
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def direct_in_lock() -> set[str]:
    """Packages the lock says it holds because pyproject.toml asks for them (``# via ls (pyproject.toml)``)."""
    direct, current = set(), None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            current = canonical(m.group(1))
        elif current and "ls (pyproject.toml)" in line:
            direct.add(current)
    return direct


def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements():
    from packaging.requirements import Requirement

    p = project()
    reqs = [Requirement(r) for r in p["dependencies"]]
    for extra in p.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    # an extra that names another of ls's own (dev = ... + ls[deploy]) adds no package of its own
    return [r for r in reqs if canonical(r.name) != canonical(p["name"])]


def test_the_lock_pins_every_dependency_of_pyproject_within_its_range():
    """A dependency added to pyproject.toml (or an extra, or a changed range) without `bash scripts/lock.sh`
    fails here; so does a package the lock keeps for pyproject.toml after it was removed there."""
    pins = locked()
    reqs = requirements()
    assert len(pins) > 50 and "torch" in pins
    problems = []
    for req in reqs:
        name = canonical(req.name)
        if name not in pins:
            problems.append(f"{req} is not in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"requirements.lock has {name}=={pins[name]}, outside pyproject.toml's {req}")
    stale = direct_in_lock() - {canonical(r.name) for r in reqs}
    if stale:
        problems.append(f"requirements.lock keeps {sorted(stale)} for pyproject.toml, which no longer asks for them")
    assert not problems, f"lock and pyproject.toml disagree (run {RELOCK}): " + "; ".join(problems)


def test_the_lock_holds_the_torch_pair_of_constraints_txt_and_was_made_by_the_lock_script():
    pins = locked()
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if m:
            assert pins.get(canonical(m.group(1))) == m.group(2), (
                f"constraints.txt pins {line.strip()}, requirements.lock has {pins.get(canonical(m.group(1)))}: "
                f"run {RELOCK}")
    head = LOCK.read_text(encoding="utf-8").splitlines()[:3]
    assert any(RELOCK in line for line in head)  # the command that regenerates it is in its header
    script = (REPO / "scripts" / "lock.sh").read_text()
    assert "--all-extras" in script and "--python-platform x86_64-manylinux_2_28" in script
    assert "--python-version 3.11" in script and "--constraint constraints.txt" in script


def _on_lock_platform() -> bool:
    system, machine, version = LOCK_PLATFORM
    return (platform.system(), platform.machine(), sys.version_info[:2]) == (system, machine, version)


@pytest.mark.skipif(not _on_lock_platform(), reason="requirements.lock is for Linux x86_64 / CPython 3.11")
def test_this_environment_has_the_locked_versions():
    """What the tests run with is what the lock says (scripts/setup_env.sh installs from it). A package
    upgraded by hand shows here; so does a lock changed without reinstalling (rerun scripts/setup_env.sh)."""
    differ = []
    for name, version in sorted(locked().items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            differ.append(f"{name} missing (locked {version})")
            continue
        if have.split("+")[0] != version.split("+")[0]:  # a CUDA build's local tag (+cu128) is the same release
            differ.append(f"{name} {have} (locked {version})")
    assert not differ, "the environment differs from requirements.lock: " + ", ".join(differ)


# -- the scripts --------------------------------------------------------------------------------------------------
FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the venv's python: records each call, installs nothing, answers the platform and loader
# probes, runs the rest (the machine report) with the real one
echo "$*" >> "$FAKE_LOG"
if [ "$1" = -m ] && { [ "$2" = pip ] || [ "$2" = pytest ]; }; then echo "[fake] $*"; exit 0; fi
if [ "$1" = -c ] && [[ "$2" == *"version_info[:2] == (3, 11)"* ]]; then echo "$FAKE_ON_LOCK_PLATFORM"; exit 0; fi
if [ "$1" = -c ] && [[ "$2" == "import soundfile, torchaudio, ls.data.audio" ]]; then exit 0; fi  # the loader probe
exec "$REAL_PYTHON" "$@"
"""


def _fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return venv


def _run_script(script: str, venv: Path, log: Path, on_platform: bool, *args: str, **env_vars: str):
    env = {**os.environ, "LS_VENV": str(venv), "FAKE_LOG": str(log), "REAL_PYTHON": sys.executable,
           "FAKE_ON_LOCK_PLATFORM": "1" if on_platform else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **env_vars}
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("on_platform", [True, False], ids=["linux-x86_64-py311", "elsewhere"])
def test_setup_installs_from_the_lock_on_its_platform_and_says_when_it_cannot(tmp_path, on_platform):
    venv, log = _fake_venv(tmp_path), tmp_path / "calls.log"
    proc = _run_script("setup_env.sh", venv, log, on_platform)
    assert proc.returncode == 0, proc.stderr
    installs = [line for line in log.read_text().splitlines() if line.startswith("-m pip install") and "-e" in line]
    assert len(installs) == 1
    if on_platform:
        assert f"-c {LOCK} -e {REPO}[dev]" in installs[0] and "requirements.lock is for" not in proc.stdout
    else:
        assert f"-c {REPO / 'constraints.txt'} -e {REPO}[dev]" in installs[0]
        assert "requirements.lock is for Linux x86_64 with CPython 3.11" in proc.stdout
    # the stamp: a second run installs nothing; a changed lock would reinstall
    want = hashlib.sha256(b"".join((REPO / n).read_bytes() for n in ("pyproject.toml", "requirements.lock",
                                                                      "constraints.txt"))).hexdigest()
    assert (venv / ".ls-installed").read_text().strip() == want
    log.unlink()
    assert _run_script("setup_env.sh", venv, log, on_platform).returncode == 0
    assert "pip install" not in log.read_text()


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.mark.parametrize(("workers", "pytest_call"), [
    ("3", "-m pytest -q -n 3 --dist loadgroup -k nothing"), ("1", "-m pytest -q -k nothing"),
    ("", f"-m pytest -q -n {min(4, CORES)} --dist loadgroup -k nothing" if CORES > 1 else "-m pytest -q -k nothing")],
    ids=["3", "1", "per-core"])
def test_the_test_script_says_what_it_runs_on_before_the_tests(tmp_path, monkeypatch, workers, pytest_call):
    """The machine first, then the suite in one worker per core (at most 4) or as LS_TEST_WORKERS says."""
    venv, log = _fake_venv(tmp_path), tmp_path / "calls.log"
    monkeypatch.delenv("LS_TEST_WORKERS", raising=False)
    extra = {"LS_TEST_WORKERS": workers} if workers else {}
    proc = _run_script("test.sh", venv, log, True, "-k", "nothing", **extra)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    import torch

    assert "machine: " in out and f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}" in out
    assert "torch threads: " in out and f"torch {torch.__version__}" in out
    for name in ("timm", "mlflow"):
        assert f"{name} {metadata.version(name)}" in out
    assert out.index("machine: ") < out.index(f"[fake] {pytest_call}\n"), out


def test_the_machine_report_names_a_forced_cpu_path():
    from ls.utils.machine import describe, report

    info = describe()
    assert info["capability"] and info["threads"] >= 1 and info["cpus"] >= 1
    forced = report({**info, "aten_cpu_capability": "default", "capability": "DEFAULT"})
    assert "torch CPU capability: DEFAULT (ATEN_CPU_CAPABILITY=default)" in forced
