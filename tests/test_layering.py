"""The package's layering (docs/design.md, "Which module knows what"): no import cycles,
``TYPE_CHECKING`` and function-level imports included, and the byte layout in ``_header`` alone."""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "atomic_log_shm"


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            if node.module:  # "from .x import y": module x (and y, if y is a module too)
                found.add(target)
            # "from . import y" imports the modules y, not the package's own __init__
            found.update(f"{target}.{a.name}".lstrip(".") for a in node.names)
    return found


def test_no_import_cycle_among_the_package_modules() -> None:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}
    # __init__ re-exports everything and nobody inside imports it: not part of the layering.
    graph = {m: deps - {""} for m, deps in graph.items() if m != ""}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph.get(m, ())):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path[path.index(dep) :], dep])}"
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_the_header_module_knows_slot_offsets() -> None:
    pattern = re.compile(r"EPOCH_OFFSET|COUNT_OFFSET|_WORDS_PER_SLOT|_SLOTS_WORD")
    for path in PACKAGE.rglob("*.py"):
        if path.name != "_header.py":
            assert not pattern.search(path.read_text()), path
