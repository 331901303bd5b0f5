#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install ls with its dev extras.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed, or when a package the data
# loader needs (soundfile with its libsndfile, torchaudio) does not import. Source it or run it.
#
# GPU images often ship their own CUDA build of torch. When the Python that creates the environment already
# has the pinned torch (constraints.txt; e.g. 2.9.1+cu128 satisfies torch==2.9.1), the environment is created
# with --system-site-packages and that torch is used as it is; LS_SYSTEM_SITE_PACKAGES=1/0 forces the choice.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
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
stamp="$venv/.ls-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
loader_ok() { "$venv/bin/python" -c "import soundfile, torchaudio, ls.data.audio" >/dev/null 2>&1; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! loader_ok; then
    echo "[setup] installing ls and its dependencies (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[dev]"
    if ! loader_ok; then
        echo "[setup] error: the data loader's packages do not import in $venv:" >&2
        "$venv/bin/python" -c "import soundfile, torchaudio, ls.data.audio" >&2 || true
        echo "[setup] (soundfile needs libsndfile: its wheels bundle it; otherwise install libsndfile1)" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "$want" > "$stamp"
fi
