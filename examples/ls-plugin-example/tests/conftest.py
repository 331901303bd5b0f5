"""The plugin's tests run against this checkout of it when it is not installed (src/ on sys.path)."""

import sys
from pathlib import Path

try:
    import ls_plugin_example  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
