#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv (LS_VENV overrides) and install ls with its dev
# extras at the exact versions of requirements.lock (written by scripts/lock.sh from pyproject.toml).
# Idempotent: reinstalls only when pyproject.toml, requirements.lock or constraints.txt changed, or when a
# package the data loader needs (soundfile with its libsndfile, torchaudio) does not import. Source it or run it.
#
# The lock is resolved for Linux x86_64 with CPython 3.11 (python3.11 is preferred when it is on PATH; PYTHON
# overrides). Elsewhere (macOS, Windows, ARM, another Python) its wheels do not apply: ls is then installed from
# pyproject.toml's ranges with torch/torchaudio held at constraints.txt's pair, and a line says so.
#
# GPU images often ship their own CUDA build of torch. When the Python that creates the environment already
# has the pinned torch (constraints.txt; e.g. 2.9.1+cu128 satisfies torch==2.9.1), the environment is created
# with --system-site-packages and that torch is used as it is; LS_SYSTEM_SITE_PACKAGES=1/0 forces the choice.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LS_VENV:-$root/.venv}"
python="${PYTHON:-$(command -v python3.11 || echo python3)}"
pinned="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$root/constraints.txt")"
if [ ! -x "$venv/bin/python" ]; then
    system="${LS_SYSTEM_SITE_PACKAGES:-}"
    if [ -z "$system" ]; then
        # only a base interpreter's packages are "system" ones (a venv made from a venv does not see them)
        probe='import sys, torch; print("" if sys.prefix != sys.base_prefix else torch.__version__.split("+")[0])'
        have="$("$python" -c "$probe" 2>/dev/null || true)"
        system=$([ -n "$have" ] && [ "$have" = "$pinned" ] && echo 1 || echo 0)
    fi
    if [ "$system" = 1 ]; then
        echo "[setup] creating virtual environment in $venv (using the system's torch)"
        "$python" -m venv --system-site-packages "$venv"
    else
        echo "[setup] creating virtual environment in $venv"
        "$python" -m venv "$venv"
    fi
fi
# the platform the lock was resolved for (scripts/lock.sh: --python-platform x86_64-manylinux_2_28, 3.11)
target='import sys, platform; print(int(sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
and platform.system() == "Linux" and platform.machine() == "x86_64"))'
stamp="$venv/.ls-installed"
want="$(cat "$root/pyproject.toml" "$root/requirements.lock" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
loader_ok() { "$venv/bin/python" -c "import soundfile, torchaudio, ls.data.audio" >/dev/null 2>&1; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! loader_ok; then
    echo "[setup] installing ls and its dependencies (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    if [ "$("$venv/bin/python" -c "$target")" = 1 ]; then
        "$venv/bin/python" -m pip install --quiet -c "$root/requirements.lock" -e "$root[dev]"
    else
        echo "[setup] requirements.lock is for Linux x86_64 with CPython 3.11; this is $("$venv/bin/python" -c \
'import sys, platform; print(platform.system(), platform.machine(), "Python", platform.python_version())'): \
installing from pyproject.toml's ranges with torch $pinned (versions may differ from the tested ones)"
        "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[dev]"
    fi
    if ! loader_ok; then
        echo "[setup] error: the data loader's packages do not import in $venv:" >&2
        "$venv/bin/python" -c "import soundfile, torchaudio, ls.data.audio" >&2 || true
        echo "[setup] (soundfile needs libsndfile: its wheels bundle it; otherwise install libsndfile1)" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "$want" > "$stamp"
fi
