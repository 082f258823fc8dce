"""No import cycle runs through the converter: its modules form layers (see ``megatron_octo.convert``'s docstring).

Imports are read from the source (module level and inside functions alike), over the whole package, so a cycle
that leaves ``convert/`` and comes back (through ``training.checkpoint``, say) is caught too. Package
``__init__`` modules are left out: importing ``a.b.c`` runs ``a/b/__init__`` but does not depend on its contents.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import megatron_octo

ROOT = Path(megatron_octo.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(rel.parts)


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """Package modules ``path`` imports anywhere in its body (``from pkg import mod`` counts as ``pkg.mod``)."""
    name = module_name(path)
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> Dict[str, Set[str]]:
    paths = [p for p in ROOT.rglob("*.py") if p.name != "__init__.py"]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walker_reads_imports_inside_functions():
    edges = graph()
    assert "megatron_octo.convert.nemo" in edges["megatron_octo.convert.api"]  # imported inside a function there


def test_no_cycle_through_the_converter():
    through = [c for c in cycles(graph()) if any(m.startswith("megatron_octo.convert.") for m in c)]
    assert through == []
