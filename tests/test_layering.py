"""The package's layering (docs/design.md, "Which module knows what"): no import cycles,
``TYPE_CHECKING`` and function-level imports included, and the byte layout in ``_header`` alone."""

from __future__ import annotations

import ast
import pathlib

import pytest

from atomic_log_shm._header import FIXED, MAGIC, WORD

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


def _header_private_layout_names() -> set[str]:
    """The names ``_header`` keeps to itself for the layout: its private module-level
    constants (a slot's word offsets, the slots' first word, the words per slot) and
    ``_offset``, which computes offsets from the dtypes."""
    names = {"_offset"}
    for node in ast.parse((PACKAGE / "_header.py").read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.startswith("_"))
    return names


# Byte offsets into the header: each field of its fixed part, and where the slots begin.
HEADER_BYTE_OFFSETS = ({int(f[1]) for f in FIXED.fields.values()} | {FIXED.itemsize}) - {0, len(MAGIC)}


def _int(node: ast.AST | None) -> int | None:
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _literals(node: ast.AST | None) -> list[int]:
    """The int literals of an index, through arithmetic and slice bounds only: an index
    computed by a call (``layout.count_word(seq)``) or loaded from elsewhere (``view[7]``,
    the snapshot's own tuple) is not spelled here."""
    if (value := _int(node)) is not None:
        return [value]
    if isinstance(node, ast.BinOp):
        return _literals(node.left) + _literals(node.right)
    if isinstance(node, ast.UnaryOp):
        return _literals(node.operand)
    if isinstance(node, ast.Slice):
        return _literals(node.lower) + _literals(node.upper)
    return []


def _is_words(node: ast.AST) -> bool:
    """Whether ``node`` names a view of int64 words (``words``, ``self._words``, ...)."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("words")


def _base_plus_stride(node: ast.BinOp) -> bool:
    """``128 + 32 * n``: a table's base and stride in bytes or words, in numbers."""

    def word_multiple(n: ast.AST) -> bool:
        return (value := _int(n)) is not None and value > 0 and value % WORD == 0

    return isinstance(node.op, ast.Add) and any(
        word_multiple(base)
        and isinstance(stride, ast.BinOp)
        and isinstance(stride.op, ast.Mult)
        and (word_multiple(stride.left) or word_multiple(stride.right))
        for base, stride in ((node.left, node.right), (node.right, node.left))
    )


def _header_aliases(tree: ast.AST) -> set[str]:
    """The names a module gives ``_header`` itself (``from . import _header``)."""
    return {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for a in node.names
        if a.name == "_header"
    } | {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for a in node.names
        if a.name.endswith("._header")
    }


def offsets_spelled(source: str, private: set[str]) -> list[str]:
    """Where ``source`` spells a header offset itself instead of asking ``_header``."""
    tree = ast.parse(source)
    header = _header_aliases(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_header"):
            found += [f"line {line}: imports {a.name}" for a in node.names if a.name in private]
        elif isinstance(node, ast.Attribute) and node.attr in private and ast.unparse(node.value) in header:
            found.append(f"line {line}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _is_words(node.value) and _int(node.slice) != 0:
            # words[0] (the magic) is what a handle loads to learn it is closed: no field
            found += [f"line {line}: word {n} of {ast.unparse(node)}" for n in _literals(node.slice)]
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            bounds = set(_literals(node.slice)) & HEADER_BYTE_OFFSETS
            found += [f"line {line}: byte {n} in {ast.unparse(node)}" for n in sorted(bounds)]
        elif (
            isinstance(node, ast.keyword) and node.arg == "offset" and _int(node.value) in HEADER_BYTE_OFFSETS
        ):
            found.append(f"line {line}: offset={_int(node.value)}")
        elif isinstance(node, ast.BinOp) and _base_plus_stride(node):
            found.append(f"line {line}: {ast.unparse(node)}")
    return found


def test_only_the_header_module_knows_slot_and_header_word_offsets() -> None:
    """Every other module reaches a header word through ``_header``: ``HEAD_WORD`` and the
    other named words, ``Layout.epoch_word()``, ``count_word()`` and the like. A word index,
    a byte offset or a private layout name of ``_header`` spelled anywhere else is a second
    copy of the layout, which a layout change would silently miss."""
    private = _header_private_layout_names()
    # What the test looks for exists, so it can fail: the private names, and header words
    # indexed by name in the modules that read and write them.
    assert {"_EPOCH", "_COUNT", "_SLOTS_WORD", "_WORDS_PER_SLOT"} <= private
    for module in ("_reader.py", "_writer.py", "_claim.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        assert any(isinstance(n, ast.Subscript) and _is_words(n.value) for n in ast.walk(tree)), module
    spelled = [
        f"{path.relative_to(PACKAGE)} {where}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_header.py"
        for where in offsets_spelled(path.read_text(), private)
    ]
    assert not spelled, "header offsets spelled outside _header.py:\n" + "\n".join(spelled)


@pytest.mark.parametrize(
    "planted",
    [
        "from ._header import _COUNT",
        "from . import _header\ncount = _header._EPOCH",
        "head = self._words[3]",
        "count = words[17 + 4 * seq]",
        "magic_and_head = bytes(region[8:16])",
        "cell = view.cell_u64(offset=16)",
        "at = 128 + 32 * seq",
    ],
)
def test_the_offset_check_finds_an_offset_planted_in_a_module(planted: str) -> None:
    """The check above can fail: each way of spelling a header offset outside ``_header``,
    planted in a copy of a module that reads the header, is reported."""
    source = (PACKAGE / "_reader.py").read_text()
    private = _header_private_layout_names()
    assert not offsets_spelled(source, private)
    assert offsets_spelled(source + "\n\n" + planted + "\n", private), planted
