"""The library's layers import only downward, and no module imports itself back (no cycles).

contract -> config -> domain -> backends -> stages -> runtime -> storage -> api -> cli.
Every import counts, also the ones inside functions (lazy imports are still dependencies).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "storelens"

#: Layer rank of each top-level part of the library; a module may import its own rank or lower.
LAYERS = {
    "_gen": 0, "errors": 0, "paths": 0, "logs": 0,
    "contract": 1,
    "config": 2,
    "domain": 3,
    "backends": 4,
    "stages": 5,
    "runtime": 6,
    "storage": 7,
    "api": 8,
    "cli": 9, "__main__": 9,
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """StoreLens modules that ``name`` imports (resolved to modules that exist)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t.startswith("storelens.") and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}

def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    if part == "__init__":
        return 0
    assert part in LAYERS, f"{module}: not in a known layer; add it to LAYERS in {__file__}"
    return LAYERS[part]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "storelens"))
def test_imports_only_downward(module: str) -> None:
    up = sorted(t for t in GRAPH[module] if _layer(t) > _layer(module))
    assert not up, f"{module} (layer {_layer(module)}) imports a higher layer: {up}"


def test_no_import_cycles() -> None:
    # package __init__ modules re-exporting their children are edges parent -> child; a child importing
    # its own package's __init__ is then a cycle like any other
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(GRAPH.get(n, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
