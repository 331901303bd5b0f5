"""Every ``python -m ls.*`` command answers bad input in the common style (ls.utils.cli): exit code 2, one
``error:`` line that names the file or value, no traceback.

The commands are found in the source (every module with a ``__main__`` block, every ``__main__.py``), so a
new command without a case here fails :func:`test_every_command_has_a_bad_input_case`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN_BLOCK = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)


def commands() -> set[str]:
    """Module names that ``python -m`` runs: modules with a ``__main__`` block and packages with ``__main__.py``."""
    found = set()
    for path in (REPO / "ls").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            found.add(".".join(parts[:-1]))
        elif MAIN_BLOCK.search(path.read_text(encoding="utf-8")):
            found.add(".".join(parts))
    return found


def _binary(tmp: Path) -> str:
    (tmp / "binary.yaml").write_bytes(b"\x00\xff\xfe\x89PNG\r\n\x1a\n\x00")
    return "binary.yaml"


def _a_file(tmp: Path) -> str:
    (tmp / "taken").write_text("a file, not a folder\n")
    return "taken"


QUICKSTART_CONFIG = REPO / "configs" / "quickstart.yaml"

# command -> [(case id, argv from the tmp folder, what the error line must name)]
CASES = {
    "ls.config.migrate": [
        ("binary input", lambda t: [_binary(t)], "binary.yaml"),
        ("output inside a file", lambda t: [str(QUICKSTART_CONFIG), "-o", f"{_a_file(t)}/new.yaml"], "taken/new.yaml"),
        ("output is a folder", lambda t: [str(QUICKSTART_CONFIG), "-o", "."], "cannot write ."),
    ],
    "ls.data.synthetic": [("OUT is a file", lambda t: [_a_file(t), "--recordings", "6"], "taken")],
    "ls.data.synthetic_sprsound": [("OUT is a file", lambda t: [_a_file(t), "--recordings", "6"], "taken")],
    "ls.data.make_metadata": [("missing data folder", lambda t: ["--data-folder", "nowhere"], "nowhere")],
    "ls.evaluate": [("missing checkpoint", lambda t: ["--checkpoint", "missing.pt"], "missing.pt")],
    "ls.predict": [("missing checkpoint", lambda t: ["--checkpoint", "missing.pt", "--wav", "a.wav"], "missing.pt")],
    "ls": [("unknown command", lambda t: ["trian"], "trian"),
           ("a subcommand's bad input", lambda t: ["evaluate", "--checkpoint", "missing.pt"], "missing.pt")],
    "ls.cli": [("unknown command", lambda t: ["trian"], "trian")],
    "ls.viz.cli": [("missing checkpoint", lambda t: ["--all", "--checkpoint", "missing.pt"], "missing.pt")],
    "ls.export": [("missing checkpoint", lambda t: ["--checkpoint", "missing.pt", "--out", "m.onnx"], "missing.pt")],
    "ls.report": [("missing runs folder", lambda t: ["--runs", "nowhere", "--out", "out"], "nowhere")],
    "ls.study": [("missing study file", lambda t: ["missing_study.yaml"], "missing_study.yaml")],
    "ls.tune": [("missing tune file", lambda t: ["missing_tune.yaml"], "missing_tune.yaml"),
                ("binary tune file", lambda t: [_binary(t)], "binary.yaml")],
    "ls.tracking": [("no record there", lambda t: ["sync", "nowhere"], "nowhere"),
                    ("the old name", lambda t: ["replay", "nowhere"], "nowhere")],
    "ls.quickstart": [("OUT is a file", lambda t: ["--out", _a_file(t), "--no-tracking"], "taken")],
}
#: Commands that do not use the common style yet, with why (the case is expected to fail; strict: it must).
NOT_YET: dict[str, str] = {}


def test_every_command_is_a_subcommand_of_the_installed_command():
    """What ``python -m`` runs in a clone, ``ausc <subcommand>`` runs where ls is installed."""
    from ls.cli import COMMANDS

    targets = {c.target.split(":")[0].removesuffix(".__main__") for c in COMMANDS.values()}
    assert commands() - {"ls"} <= targets


#: Commands that read no input, so none can be bad (they take the common options all the same).
NO_INPUT = {"ls.utils.machine"}


def test_every_command_has_a_bad_input_case():
    assert commands() - NO_INPUT == set(CASES), "add a bad-input case for every python -m command (and drop gone ones)"


@pytest.mark.parametrize(("module", "make_argv", "names"), [
    pytest.param(module, make_argv, names, id=f"{module}: {case}",
                 marks=[pytest.mark.xfail(reason=NOT_YET[module], strict=True)] if module in NOT_YET else [])
    for module, cases in CASES.items() for case, make_argv, names in cases
])  # fmt: skip
def test_bad_input_is_one_error_line_with_exit_code_2(module, make_argv, names, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LS_TRACEBACK"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-m", module, *make_argv(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in output, output[-2000:]
    assert done.returncode == 2, output[-2000:]
    assert len(errors) == 1, done.stderr
    assert names in errors[0], errors[0]
