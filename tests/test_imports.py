"""No import cycles inside ``conda_store_jupyter``.

Every import statement counts: module level, inside functions (a lazy import is still a
dependency) and under ``TYPE_CHECKING`` (a type is part of the interface). Two modules that name
each other, directly or through others, are one module in two files: the cycle is reported as
the set of modules in it (a strongly connected component of the import graph).
"""

from __future__ import annotations

import ast
from pathlib import Path


import conda_store_jupyter

PACKAGE = Path(conda_store_jupyter.__file__).parent
NAME = "conda_store_jupyter"



def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], package_dir: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    name = module_name(path, package_dir)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # ``from . import serialize`` names a module; ``from .queue import BuildQueue`` a member
            found.update(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                         for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_cycles(package: Path = PACKAGE) -> set[frozenset[str]]:
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {name: imported_modules(path, set(paths), package) for name, path in paths.items()}
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.add(frozenset(component))
    return cycles


def test_the_checker_sees_a_cycle(tmp_path):
    package = tmp_path / NAME
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    (package / "c.py").write_text("from . import a\n")
    # a -> sub.b inside a function, sub.b -> a under TYPE_CHECKING: a cycle; c -> a is not one.
    assert import_cycles(package) == {frozenset({f"{NAME}.a", f"{NAME}.sub.b"})}


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)
