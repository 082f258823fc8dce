"""The package's modules import each other without cycles.

Every ``import`` and ``from ... import`` of ``megatron_octo`` modules is read from the source with ``ast``, at module
level and inside functions alike (a deferred import still couples the two modules; it only hides the cycle from
the interpreter). ``from PACKAGE import NAME`` counts as an import of the submodule ``PACKAGE.NAME`` when that is
a module, else of ``PACKAGE`` (its ``__init__``). A package's ``__init__`` running before its submodules is how
Python imports work, not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import megatron_octo

ROOT = Path(megatron_octo.__file__).parent
PACKAGE = "megatron_octo"


def module_files() -> Dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, level: int, target: str) -> str:
    """The absolute name of a relative import ``from .target`` (``level`` dots) inside ``module``."""
    if level == 0:
        return target
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: Set[str]) -> Set[str]:
    """The package modules that ``module`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node.level, node.module or "")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a non-module attribute: its module
                name = name.rpartition(".")[0]
            if name.startswith(PACKAGE) and name != module:
                found.add(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_reads_imports_inside_functions_and_relative_ones(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from megatron_octo.config import schema\n    from . import io\n")
    modules = {"megatron_octo.utils.m", "megatron_octo.utils.io", "megatron_octo.config.schema", "megatron_octo.config"}
    assert imports_of("megatron_octo.utils.m", src, modules) == {"megatron_octo.config.schema", "megatron_octo.utils.io"}


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and graph["megatron_octo.cli"]  # the walk saw the package
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)
