#!/usr/bin/env bash
# Set up the environment if needed, say what the tests run on (CPU, the vector code torch dispatches to,
# versions, threads), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
py="${LS_VENV:-$root/.venv}/bin/python"
"$py" -m ls.utils.machine || echo "[test] (could not describe the machine)"
exec "$py" -m pytest -q "$@"
