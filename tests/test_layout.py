"""The architecture holds: imports go one way (no circle among qwencli's modules, counting the
imports inside functions), and nothing below the command line imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import qwencli

PACKAGE = Path(qwencli.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, modules: set[str]) -> set[str]:
    """qwencli modules `tree` imports anywhere (functions included), TYPE_CHECKING aside."""
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qwencli"):
                    found.add(resolve(alias.name) or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("qwencli"):
            for alias in node.names:  # `from qwencli import store` imports qwencli.store
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else resolve(node.module) or node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(ast.parse(path.read_text()), name, modules)
             for name, path in files.items()}
    for name in graph:  # a package's __init__ is not an edge of its submodules
        graph[name] = {dep for dep in graph[name] if not name.startswith(dep + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                connect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_function_local_imports() -> None:
    graph = import_graph()
    assert "qwencli.hub" in graph["qwencli.cli.hub"]  # imported inside the pull command
    assert "qwencli.store" in graph["qwencli.hub"]


def test_no_import_circle() -> None:
    assert _cycles(import_graph()) == []


def test_a_circle_would_be_found() -> None:
    graph = import_graph()
    graph["qwencli.store"] = graph["qwencli.store"] | {"qwencli.hub"}
    assert ["qwencli.hub", "qwencli.store"] in _cycles(graph)


def test_nothing_below_the_command_line_imports_it() -> None:
    offenders = {name: sorted(dep for dep in deps if dep.startswith("qwencli.cli"))
                 for name, deps in import_graph().items()
                 if not name.startswith("qwencli.cli") and name != "qwencli.__main__"}
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_the_store_and_the_hub_never_probe_the_hardware() -> None:
    graph = import_graph()
    for module in ("qwencli.store", "qwencli.hub"):
        assert not {dep for dep in graph[module] if dep.startswith(("qwencli.hardware",
                                                                      "qwencli.recommend"))}


def test_only_output_and_the_chat_terminal_write_to_the_terminal() -> None:
    allowed = {"qwencli.output", "qwencli.chat.terminal"}
    writers = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if any(word in text for word in ("print(", "sys.stdout.write", "sys.stderr.write",
                                         "typer.echo", "input(")):
            writers.add(_module_name(path))
    assert writers <= allowed, writers - allowed
