"""The import graph of melody_core and app, read with `ast` from the source (nothing is imported):
no import circle, no upward import, and melody_core never imports Qt or the app.

Every `import` / `from ... import` counts, also inside functions and `if TYPE_CHECKING:` blocks (a
function-local import still ties two modules together). "Upward":
- a module imports a group above its own in `LAYERS` (e.g. `models` importing `generation`);
  `__main__` modules are entry points (run, never imported) and may import any group;
- inside a package listed in `ORDERS`, a module imports one listed after it (e.g.
  `generation.engine` importing `generation.jobs`).
Run it alone: `python -m pytest -q tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("melody_core", "app")
# groups from the bottom up: a module may import its own group and the groups below it
LAYERS = (
    ("melody_core",),  # shared constants (SAMPLE_RATE, ...)
    ("melody_core.runtime",),
    ("melody_core.audio",),
    ("melody_core.modules",),
    ("melody_core.diffusion",),
    ("melody_core.checkpoint_files",),
    ("melody_core.config",),
    ("melody_core.models",),
    ("melody_core.checkpoint",),
    ("melody_core.data",),
    ("melody_core.train",),
    ("melody_core.generation",),
    ("melody_core.eval",),
    ("melody_core.commands",),
    ("melody_core.cli",),
    ("app",),
)
# packages whose modules form a stack (package docstrings): each imports only those before it
ORDERS = {
    "melody_core.generation": (
        "types", "plan", "validation", "decode", "models", "engine", "jobs", "pipeline",
    ),
    "melody_core.eval.suite": (
        "options", "sets", "compare", "targets", "gen", "control", "judges", "plots", "report", "run",
    ),
}
FORBIDDEN_IN_CORE = ("PySide6", "PyQt5", "PyQt6", "app", "superqt")


@functools.cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package __init__)."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imported_names(name: str, path: Path, is_pkg: bool) -> Iterator[str]:
    """Absolute dotted names of everything `path` imports (`from a import b` gives a.b and a)."""
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


@functools.cache
def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between project modules, external top-level names imported by each module)."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    external: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        for target in imported_names(m, path, is_pkg):
            if target in mods:
                if target != m:
                    edges[m].add(target)
            elif target.split(".")[0] not in PACKAGES:
                external[m].add(target.split(".")[0])
            else:  # `from pkg import name`: pkg.name is not a module -> the edge to pkg is already there
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != m:
                    edges[m].add(target)
    return edges, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def layer(module: str) -> int:
    """Index of the most specific LAYERS group holding `module`."""
    best, depth = -1, -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    assert best >= 0, f"{module} is in no LAYERS group: add it"
    return best


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in edges.items():
        for b in targets:
            if layer(b) > layer(a) and not a.endswith(".__main__"):
                bad.append(f"{a} -> {b} (group {LAYERS[layer(b)][0]} is above {LAYERS[layer(a)][0]})")
            for package, order in ORDERS.items():
                pa, _, na = a.rpartition(".")
                pb, _, nb = b.rpartition(".")
                if pa == pb == package and order.index(nb) > order.index(na):
                    bad.append(f"{a} -> {b} (after it in {package}'s stack)")
    return sorted(bad)


def test_no_import_circles() -> None:
    edges, _ = graph()
    assert cycles(edges) == []


def test_no_upward_imports() -> None:
    edges, _ = graph()
    assert upward_imports(edges) == []


def test_core_never_imports_qt_or_the_app() -> None:
    edges, external = graph()
    core = [m for m in edges if m.split(".")[0] == "melody_core"]
    assert not [m for m in core if external[m] & set(FORBIDDEN_IN_CORE)]
    assert not [m for m in core if any(t.split(".")[0] == "app" for t in edges[m])]


def test_the_checker_finds_circles_and_upward_imports() -> None:
    """The checks can fail: a made-up circle and upward imports are reported."""
    fake = {"melody_core.a": {"melody_core.b"}, "melody_core.b": {"melody_core.a"}, "melody_core.c": set()}
    assert cycles(fake) == [["melody_core.a", "melody_core.b"]]
    edges, _ = graph()
    assert upward_imports({"melody_core.models.dpd": {"melody_core.generation.pipeline"}})
    assert upward_imports({"melody_core.generation.engine": {"melody_core.generation.jobs"}})
    assert "melody_core.generation.jobs" in edges["melody_core.generation.pipeline"]  # edges are read
