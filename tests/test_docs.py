"""The documentation stays true: docs/config.md matches the dataclasses, links resolve, named modules exist."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_current_and_every_key_has_its_help_beside_it():
    text, missing = _load_generator().render()
    assert not missing, f"config keys without a help text: {missing}"
    current = (DOCS / "config.md").read_text(encoding="utf-8")
    assert current == text, "docs/config.md is stale: run python scripts/gen_config_docs.py"


def test_comments_cite_only_what_the_repository_holds():
    """No comment or docstring points at a document outside the repository (the reference analysis's
    "spec 3.x" sections); the defect numbers of docs/fixes.md are fine."""
    offenders = []
    for path in [*(REPO / "ls").rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bspec(?:\s+section)?\s+§?\d+(?:\.\d+)?|shared/design", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}")
    assert not offenders, offenders


def test_config_reference_lists_every_key():
    import dataclasses

    from ls.engine.config import TrainingConfig

    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(TrainingConfig):
        assert f"`training.{f.name}`" in text


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_resolve(doc):
    path = DOCS / doc
    broken = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s), mailto, in-page anchors
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{doc}: broken relative links {broken}"


def _resolves(dotted: str) -> bool:
    """``ls.a.b.C.d``: the longest importable module prefix, then attributes for the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_interfaces_names_exist():
    text = (DOCS / "interfaces.md").read_text(encoding="utf-8")
    # a quoted name is a string, not a module (the entry-point group "ls.plugins", "module:function" targets)
    dotted = sorted(set(re.findall(r"(?<![\w/.\"])ls(?:\.[A-Za-z_]\w*)+", text)))
    assert len(dotted) > 20  # the document does name the modules
    missing = [name for name in dotted if not _resolves(name)]
    assert not missing, f"docs/interfaces.md names what the code lacks: {missing}"
    paths = sorted(set(re.findall(r"(?<![\w.])((?:ls|configs|scripts|tests|docs)/[\w./-]*\w)", text)))
    absent = [p for p in paths if not (REPO / p).exists()]
    assert not absent, f"docs/interfaces.md names paths that do not exist: {absent}"
