"""The floors of the codebase, read from the source: orchestrator/ → actors/ → rewards/, never upwards, and no
two project modules importing each other in a cycle. Imports inside functions count: they run too.

The graph is built with ``ast`` from every ``import`` statement, so the test needs no heavy import and fails
with the offending file and line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "actors", "rewards")
# Which floors each floor may import (itself included). Lower floors never name a higher one.
MAY_IMPORT = {"orchestrator": {"orchestrator", "actors", "rewards"}, "actors": {"actors", "rewards"},
              "rewards": {"rewards"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest project module a dotted name refers to (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import sub` names the submodule when there is one.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                out.append((target, node.lineno))
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lines: dict[tuple[str, str], int] = {}
    for module, path in modules.items():
        for target, line in imports_of(module, path, modules):
            graph[module].add(target)
            lines.setdefault((module, target), line)
    return graph, lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_floors_point_down():
    graph, lines = import_graph()
    modules = project_modules()
    wrong = [f"{modules[m].relative_to(ROOT)}:{lines[(m, t)]} imports {t}"
             for m, targets in sorted(graph.items()) for t in sorted(targets)
             if t.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert not wrong, "imports that climb a floor:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph, _ = import_graph()
    found = cycles(graph)
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    # The checks above must be able to fail: a function-level import is an edge, and two modules naming each
    # other form a cycle.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(graph) == [["a", "b"]]
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from orchestrator.config import PipelineSpec\n")
    modules = project_modules()
    assert imports_of("actors.fake", path, modules) == [("orchestrator.config", 2)]
