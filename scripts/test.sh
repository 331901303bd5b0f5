#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${LS_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
