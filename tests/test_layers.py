"""Imports only go down the layers: types/utils -> data, models -> config -> engine -> runs -> application ->
scripts.

Every ``import`` statement of the package is read (also those inside functions), so a lazy import counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ls"
#: Modules of the application layer: they may use everything below; nothing below may use them.
APPLICATION = ("ls.train", "ls.evaluate", "ls.predict", "ls.quickstart", "ls.report", "ls.study", "ls.tracking",
               "ls.viz.cli", "ls.export", "ls.aggregate", "ls.tune", "ls.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (type-checker imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports() -> dict[str, set[str]]:
    """``{module: {imported ls module, ...}}`` for every module of ``ls`` at run time."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        found: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "ls"}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ls":
                # `from ls.engine import checkpoint` imports the submodule; `from ls.x import y` the module ls.x
                subs = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
                found |= subs if len(subs) == len(node.names) else subs | {node.module}
        graph[name] = found - {name}
    return graph


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GRAPH = imports()


def test_the_graph_is_read():
    assert "ls.engine.trainer" in GRAPH and "ls.engine.checkpoint" in GRAPH["ls.engine.trainer"]
    assert "ls.models.variants" in GRAPH["ls.config"]


def test_types_imports_nothing_from_ls():
    assert GRAPH["ls.types"] == set()


@pytest.mark.parametrize(("layer", "allowed"), [
    ("ls.utils", ("ls.utils",)),
    ("ls.data", ("ls.data", "ls.types", "ls.utils")),
    ("ls.models", ("ls.models", "ls.types", "ls.utils")),
    ("ls.engine", ("ls.engine", "ls.types", "ls.utils")),
    ("ls.runs", ("ls.runs", "ls.engine", "ls.config", "ls.data", "ls.models", "ls.inference", "ls.viz.performance",
                 "ls.types", "ls.utils")),
    ("ls.deploy", ("ls.deploy", "ls.data", "ls.engine", "ls.types", "ls.utils")),
])
def test_each_layer_imports_only_what_lies_below_it(layer, allowed):
    bad = {m: sorted(i for i in deps if i != "ls" and not _under(i, allowed))
           for m, deps in GRAPH.items() if _under(m, (layer,))}
    bad = {m: deps for m, deps in bad.items() if deps}
    assert not bad, f"{layer} imports from above its layer: {bad}"


def test_the_engine_uses_no_application_module_and_no_figure():
    for module, deps in GRAPH.items():
        if _under(module, ("ls.engine",)):
            assert not any(_under(d, APPLICATION + ("ls.viz", "ls.runs", "ls.config")) for d in deps), (module, deps)


def test_the_engine_imports_no_mlflow():
    """The engine knows no tracker implementation: runs are recorded (and mirrored to MLflow) by ls.runs."""
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "mlflow" for n in names), path


def test_figures_other_than_the_command_line_use_no_application_module():
    for module, deps in GRAPH.items():
        if _under(module, ("ls.viz",)) and module != "ls.viz.cli":
            assert not any(_under(d, APPLICATION) for d in deps), (module, deps)


def test_there_are_no_import_cycles():
    """Module-level cycles (a strongly connected component of more than one module) are errors."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_that_imports_mlflow_turns_its_telemetry_off_first():
    """No network at run time: ``ls.utils.telemetry`` sets MLFLOW_DISABLE_TELEMETRY when imported, so every
    module that imports mlflow (even lazily, in a function) imports it at module level first."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == "ls.utils.telemetry":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses_mlflow = any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "mlflow")
            for n in ast.walk(tree)
        )
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {f"{n.module}.{a.name}" if n.module == "ls.utils" else n.module
                for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if uses_mlflow and "ls.utils.telemetry" not in top:
            offenders.append(name)
    assert not offenders, f"import mlflow without importing ls.utils.telemetry at module level first: {offenders}"


@pytest.mark.parametrize("module", ["ls.viz.cli", "ls.viz.performance", "ls.report.runs", "ls.train"])
def test_entry_points_switch_mlflow_telemetry_off_when_imported(module):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "LS_MLFLOW_TELEMETRY",
                                                            "DO_NOT_TRACK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = f"import os, {module}; print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "true"
