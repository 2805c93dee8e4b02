"""The package's dependencies run one way: no module imports (even only for types) a module
that imports it back, and the generic layers ask the store through the Access protocol."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "addons" / "tracegate"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import of the package's own modules, at any depth of the file (under
    TYPE_CHECKING and inside functions too: a deferred import is still a dependency)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in paths else base)
        # A package's __init__ gathering its own submodules is not a dependency of interest.
        graph[name] = {
            t
            for t in targets
            if t in paths
            and t != name
            and not (paths[name].name == "__init__.py" and t.startswith(name + "."))
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
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
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_there_is_no_import_circle_in_the_package():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_policy_and_approval_rules_import_nothing_from_the_stores():
    graph = import_graph()
    for generic in ("tracegate.policy", "tracegate.approvals.rules", "tracegate.grant"):
        stores = sorted(t for t in graph[generic] if t.startswith("tracegate.stores"))
        assert stores == [], f"{generic} imports {stores}"


def test_the_data_a_flow_carries_imports_no_layer_above_it():
    graph = import_graph()
    above = ("tracegate.policy", "tracegate.gateway", "tracegate.stores", "tracegate.proxy")
    for plain in ("tracegate.access", "tracegate.grant", "tracegate.exchange"):
        wrong = sorted(t for t in graph[plain] if t.startswith(above))
        assert wrong == [], f"{plain} imports {wrong}"
