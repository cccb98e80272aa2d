"""Every third-party module the code imports is a declared dependency.

qwencli/ must import only what pyproject.toml's `dependencies` declares; tests/ and benchmarks/
may also use the `test` extra. Relying on a library that another dependency happens to bring
breaks when that dependency changes (huggingface-hub's move to httpx2 did exactly that).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _parse(requirement: str) -> tuple[str, str]:
    """(canonical name, version specifiers) of a PEP 508 requirement."""
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    return canonical(match[1]), match[3].strip()


def declared(*extras: str) -> set[str]:
    project = _pyproject()
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return {_parse(r)[0] for r in reqs}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(top-level module, line) of every absolute import, function-local ones included;
    `if TYPE_CHECKING:` bodies are skipped (their `else:` is not)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute)
                       and node.func.attr == "import_module"))):
            yield node.args[0].value.partition(".")[0], node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _local(module: str, source: Path) -> bool:
    """The project's own code: a top-level package (namespace ones too) or module of the
    repository, or a module beside the importing file (scripts that put their folder on
    sys.path)."""
    for folder in (ROOT, source.parent):
        if any((folder / module).glob("*.py")) or (folder / f"{module}.py").is_file():
            return True
    return False


def undeclared(folder: str, allowed: set[str]) -> list[str]:
    """'path:line: module (distribution)' for each third-party import not in `allowed`."""
    installed = importlib.metadata.packages_distributions()
    problems: list[tuple[Path, int, str]] = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for module, line in imported_modules(tree):
            if (not module or module in sys.stdlib_module_names or module == "__future__"
                    or _local(module, path)):
                continue
            # Not installed (e.g. tomli on Python 3.11+): its distribution is taken to carry
            # its name, as almost every one does.
            dists = {canonical(d) for d in installed.get(module, [module])}
            if not dists & allowed:
                problems.append((path.relative_to(ROOT), line,
                                 f"{module} ({', '.join(sorted(dists))})"))
    return [f"{path}:{line}: {what}" for path, line, what in sorted(problems)]


def test_the_product_imports_only_declared_dependencies() -> None:
    problems = undeclared("qwencli", declared())
    assert not problems, "imported but not in pyproject.toml's dependencies:\n" + "\n".join(
        problems)


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_tests_and_benchmarks_import_only_declared_dependencies(folder: str) -> None:
    problems = undeclared(folder, declared("test"))
    assert not problems, ("imported but not in pyproject.toml's dependencies or test extra:\n"
                          + "\n".join(problems))


def test_every_declared_dependency_has_a_lower_bound() -> None:
    # .ci/min_constraints.py pins each lower bound, and CI runs the suite with those pins:
    # a requirement without one would go unproven.
    project = _pyproject()
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        name, specifiers = _parse(requirement)
        assert ">=" in specifiers, f"{name} has no >= lower bound in pyproject.toml"


def test_an_undeclared_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk sees function-local imports and skips TYPE_CHECKING-only ones.
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\n"
                      "import os, typer\n"
                      "if TYPE_CHECKING:\n"
                      "    import numpy\n"
                      "def load():\n"
                      "    import yaml\n"
                      "    from rich.table import Table\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [p.split(" ")[:2] for p in undeclared("pkg", {"typer", "rich"})] == [
        ["pkg/mod.py:6:", "yaml"]]
