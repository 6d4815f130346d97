"""The package's structure: no import cycles, every run file named in one place, no module over the size limit."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sae_lab"
RUN_FILES = ("neurons.jsonl", "labels.jsonl", "report.json", "summary.json", "summary.jsonl", "evaluation.json",
             "index.html", "cfg.json", "sae.safetensors")  # fmt: skip
MAX_LINES = 330
"""~300 lines, with room for a module that has not been split yet only when it is listed in TOO_LONG."""


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every sae_lab module ``tree`` imports, at any depth (functions and TYPE_CHECKING blocks included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("sae_lab")}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for target in imported(tree, name, path.name == "__init__.py"):
            while target not in mods and "." in target:  # `from pkg import name` of a non-module name
                target = target.rsplit(".", 1)[0]
            if target in mods and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def is_package_edge(a: str, b: str) -> bool:
    """A package's ``__init__`` re-exporting its own sub-module, or a sub-module importing a sibling through the
    package: both resolve in order at import time, so they are not cycles between concepts."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_cycles():
    graph = import_graph()
    pruned = {a: {b for b in bs if not is_package_edge(a, b)} for a, bs in graph.items()}
    found = cycles(pruned)
    assert not found, f"import cycles: {found}"


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def path_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def names_a_run_file(text: str, name: str) -> bool:
    """The literal *is* the file's name (or a path ending in it), as code that opens it would spell it; messages
    and help texts that mention it (they have spaces) do not count."""
    return not any(c.isspace() for c in text) and (text == name or text.endswith("/" + name))


@pytest.mark.parametrize("name", RUN_FILES)
def test_each_run_file_is_named_in_one_place(name):
    places = []
    for path in modules().values():
        for line, text in path_literals(ast.parse(path.read_text())):
            if names_a_run_file(text, name):
                places.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert len(places) == 1 and places[0].startswith("sae_lab/run/files.py"), places


def test_modules_stay_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    too_long = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not too_long, too_long
