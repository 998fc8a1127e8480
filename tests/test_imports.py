"""The package's modules import each other in one direction: no cycles, TYPE_CHECKING and function-level imports included.

And the parts keep their places: the core (world, events, declaration, ...) imports nothing
above it (config/ is below it), and a source never imports the fan-out side: it changes the
world, and the hub alone turns the world's events into what sockets are sent.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dbackd"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the package that `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            # A module importing its own package's __init__ (which only re-exports) is not an edge back.
            if target in known and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert "dbackd.core.world" in graph["dbackd.fanout.hub"]  # the walk sees imports at all
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_session_is_given_a_send_and_a_join_function_not_the_hub():
    known = modules()
    session = imports("dbackd.edge.session", known["dbackd.edge.session"], known)
    assert "dbackd.fanout.hub" not in session


# Which parts a part must never import: (the importing part, the parts it must not reach).
PART_RULES = [
    ("dbackd.core", ("dbackd.sources", "dbackd.edge", "dbackd.fanout", "dbackd.cluster", "dbackd.ops",
                     "dbackd.compat", "dbackd.daemon", "dbackd.cli", "dbackd.clients")),
    ("dbackd.sources", ("dbackd.fanout",)),
]


def within(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


def crossings(graph: dict[str, set[str]], rules=PART_RULES) -> list[tuple[str, str]]:
    """Every (module, import) that breaks a part rule."""
    return sorted((name, target) for name, targets in graph.items() for part, banned in rules if within(name, part)
                  for target in targets if any(within(target, b) for b in banned))


def test_the_parts_keep_their_places():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert any(within(n, "dbackd.core") for n in graph) and any(within(n, "dbackd.sources") for n in graph)
    assert crossings(graph) == []


def test_the_part_rules_find_a_crossing():
    graph = {"dbackd.core.world": {"dbackd.fanout.protocol", "dbackd.config"}, "dbackd.sources.api": {"dbackd.fanout.hub"},
             "dbackd.sources.apischema": {"dbackd.core.world"}, "dbackd.core.clock": {"dbackd.clientsx"}}
    assert crossings(graph) == [("dbackd.core.world", "dbackd.fanout.protocol"),
                                ("dbackd.sources.api", "dbackd.fanout.hub")]
