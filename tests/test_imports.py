"""The package's import graph: no cycles between modules, and each stage imports only earlier ones.

Imports are read from the source (every `import` statement, including ones inside functions,
which only postpone a dependency; `if TYPE_CHECKING:` blocks are skipped as they never run).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "monosemantic"
# The pipeline order; a module may import from its own stage, earlier stages, config and utils.
# The feature store and the explainers (LLM client, scorers) come before evaluation, whose autointerp
# benchmark scores explanations.
STAGES = ["config", "corpus", "lm", "activations", "dictionaries", "training", "store", "explanation",
          "evaluation", "analysis", "exports", "steering", "circuits", "server"]  # fmt: skip
ANYWHERE = {"utils", "config"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (a `from pkg import name` counts `pkg.name` if a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("monosemantic"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("monosemantic"):
                subs = {f"{target}.{a.name}" for a in node.names} & modules
                found.update(subs or {target})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return {m for m in found if m in modules}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None. Package __init__ re-exports are edges too,
    except a module importing its own package's __init__ (Python runs it first anyway)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def deps(m: str) -> set[str]:
        return {d for d in graph[m] if not m.startswith(d + ".")}

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(deps(m)):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := dfs(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := dfs(m)):
            return c
    return None


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_stages_import_only_earlier_stages():
    bad = []
    for m, deps in import_graph().items():
        s = stage(m)
        if s not in STAGES:
            continue
        for d in deps:
            t = stage(d)
            if t is None or t in ANYWHERE or t == s:
                continue
            if t not in STAGES or STAGES.index(t) > STAGES.index(s):
                bad.append(f"{m} -> {d}")
    assert not bad, bad


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == ["a.x", "a.y", "a.z", "a.x"]
    assert find_cycle({"a.x": {"a.y"}, "a.y": set()}) is None


@pytest.mark.parametrize("text, expected", [("from .base import X", {"monosemantic.dictionaries.base"})])
def test_relative_imports_resolve(tmp_path, text, expected):
    path = SRC / "dictionaries" / "registry.py"
    modules = {module_name(f) for f in SRC.rglob("*.py")}
    assert expected <= imports_of(path, modules)
