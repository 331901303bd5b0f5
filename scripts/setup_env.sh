#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install ls with its dev extras.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed. Source it or run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment in $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.ls-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing ls and its dependencies (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[dev]"
    echo "$want" > "$stamp"
fi
