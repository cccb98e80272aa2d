"""Print pip constraints that pin each declared dependency to its lower bound.

    python .ci/min_constraints.py [--extra test] > min-constraints.txt

Reads pyproject.toml (the project's `dependencies`, plus each `--extra` given) and prints one
`name==version` line for every requirement with a `>=` bound whose environment marker holds for
the running interpreter, so CI can prove the suite passes with the declared minimums. The bounds
live in pyproject.toml only; this script never adds its own.

llama-cpp-python is left out: it compiles from source, and CI reuses the build its first
environment already made (.ci/run pins it to that version) instead of compiling an old release.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

try:
    from packaging.requirements import Requirement
except ImportError:  # every virtual environment has pip, and pip carries packaging
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"llama-cpp-python"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            sys.exit(f"pyproject.toml has no optional-dependencies extra named {extra!r}")
        reqs += optional[extra]
    return reqs


def pins(reqs: list[str]) -> list[str]:
    lines = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # not for this interpreter or platform
        if canonical(req.name) in SKIP:
            continue
        lower = [spec.version for spec in req.specifier if spec.operator == ">="]
        if len(lower) > 1:
            sys.exit(f"{text!r}: more than one >= bound")
        if not lower:
            continue  # no lower bound to prove
        lines.append(f"{canonical(req.name)}=={lower[0]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[],
                        help="also pin this optional-dependencies extra (repeatable)")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args()
    with open(args.pyproject, "rb") as f:
        data = tomllib.load(f)
    for line in pins(requirements(data, args.extra)):
        print(line)


if __name__ == "__main__":
    main()
