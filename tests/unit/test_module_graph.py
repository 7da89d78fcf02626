"""The package's import graph has no cycle: a worker, a web console or a test can import any layer without
dragging in the ones above it, and no import has to hide inside a function to make start-up work.

Every import counts, also those inside functions (they run when the function does); imports under
``if TYPE_CHECKING:`` do not (they never run). docs/design.md draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "mailconnector"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    parent = ".".join(base + ([node.module] if node.module else []))
    return [f"{parent}.{alias.name}" for alias in node.names] + [parent]


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from x import name`` counts ``x.name`` if it is one)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skipped:
                continue
            targets = _imported(name, path, node)
            if isinstance(node, ast.ImportFrom):
                # `from . import x` names module x; `from .a import f` names f of module a (the last target).
                targets = [t for t in targets[:-1] if t in modules] or targets[-1:]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_no_false_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions_and_not_type_checking_ones() -> None:
    graph = import_graph()
    assert "mailconnector.state" in graph["mailconnector.cli.state_cmd"]  # inside a command, on use
    assert "mailconnector.connection" not in graph["mailconnector.smtp"]  # for annotations only
    assert "mailconnector.auth._password" in graph["mailconnector.smtp"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle) + "\n(an import used for annotations belongs under "
                    "`if TYPE_CHECKING:`; otherwise move the code to the layer that owns it)", pytrace=False)


# The layers, lowest first (docs/design.md draws them): a module may import its own layer and the ones below.
LAYERS: list[set[str]] = [
    {"errors", "secrets", "logs", "_backoff", "_validation", "_yaml", "_providers", "_context"},  # base
    {"connection", "records", "mime", "state"},  # what is configured, sent, read and kept
    {"_net", "_imap_lib", "_imap_fetch", "_imap_folders", "_smtp_lib", "_session", "_steps", "auth", "smtp", "imap",
     "diagnostics"},  # protocols
    {"activities", "project"},  # Send Email, Read Email, files; the project file that configures them
    {"operations"},  # source -> transformation -> target
    {"distributed", "console", "cli", "sandbox", "_sandbox_config", "_cluster", "celery", "__init__", "__main__"},
]

def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    unplaced = sorted({_component(m) for m in import_graph()} - placed)
    assert not unplaced, f"give these a layer in LAYERS (and in docs/design.md): {unplaced}"


def test_imports_go_down_the_layers() -> None:
    layer = {name: number for number, names in enumerate(LAYERS) for name in names}
    upward = sorted((a, b) for a, targets in import_graph().items() for b in targets
                    if layer[_component(b)] > layer[_component(a)])
    if upward:
        pytest.fail("imports that go up a layer (move the code to the layer that owns it, or the import under "
                    "`if TYPE_CHECKING:` when it serves annotations only):\n"
                    + "\n".join(f"  {a} -> {b}" for a, b in upward), pytrace=False)
