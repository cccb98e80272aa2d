"""One TOML reader, one schema check and one error format for every file qwen reads.

Profiles (`profiles/models/*.toml`, `quants.toml`, `gpus.toml`, `hardware/*.toml`), the user's
overlays and `config.toml` are all hand-edited, untrusted text. Whatever is wrong with one of them
becomes a `ConfigError` whose message is a single line that names the file:

    <file>: <dotted.key[0].path>: <problem>     a key is at fault (schema or module checks)
    <file>: line <N>: <problem> (column <M>)    a TOML syntax error
    <file>: not UTF-8 text (byte 0x<XX> at offset <N>)
    <file>: cannot read: <strerror>             missing, unreadable, a directory, ...
    <file>: <problem>                           about the file as a whole (too big, ...)

plus an optional hint (the error's `hint`, printed on its own line). A leading UTF-8 byte order
mark (Notepad writes one) is accepted.

A schema is a mapping of key -> `Field`, e.g. `{"name": Field("str", required=True)}`. Unknown
keys are errors (a typo must not be silently ignored) with a "did you mean" suggestion. Checks
that need more than one key or another module's knowledge (sizes, GPU names, patterns) stay in the
module that reads the file and report through `error()`, so every message has the same shape.

This module sits at the bottom of the import graph: it imports nothing from qwencli but `errors`.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from qwencli.errors import ConfigError

MAX_BYTES = 4 * 1024 * 1024  # far above any profile (the largest bundled one is ~30 KB)
_BOM = b"\xef\xbb\xbf"

# Kinds and how an error names them ("expected <words>, got ...").
_KIND_WORDS: Mapping[str, str] = {
    "str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "date": "a date (YYYY-MM-DD, unquoted)", "strs": "a list of strings",
    "ints": "a list of integers", "table": "a table", "tables": "an array of tables",
    "map": "a table", "int|ints": "an integer or a list of integers",
    "str|strs": "a string or a list of strings",
}


@dataclass(frozen=True)
class Field:
    """One key of a schema: the kind of value it holds and what else must be true of it.

    `choices` limits a string (or each string of a list) to a set of values, or the keys of a
    `map`; `noun` is what a map's key names in errors ("quant"). `minimum`/`maximum` (inclusive)
    and `above` (exclusive) bound a number or each number of a list, and require it to be
    finite. `partial` marks a table whose required keys may be missing (a [defaults] table,
    merged under entries that are checked in full later).
    """

    kind: str
    required: bool = False
    sub: Mapping[str, Field] | None = None  # table, tables: the keys inside
    of: Field | None = None  # map: every value
    choices: tuple[str, ...] | None = None
    noun: str = "key"
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    blank: bool = True  # str, strs: may a string be empty or only spaces
    partial: bool = False
    expect: str | None = None  # the words for the kind in errors, when _KIND_WORDS' are too vague
    nested: bool = field(init=False, repr=False, compare=False)  # more to check than the kind

    def __post_init__(self) -> None:
        """A schema that asks for what its kind cannot have is a programming error."""
        kind = self.kind
        if kind not in _KIND_WORDS:
            raise ValueError(f"unknown field kind {kind!r}")
        misplaced = [name for name, value, kinds in (
            ("sub", self.sub, ("table", "tables")),
            ("of", self.of, ("map",)),
            ("choices", self.choices, ("str", "strs", "str|strs", "map")),
            ("bounds", _first(self.minimum, self.maximum, self.above),
             ("int", "number", "ints", "int|ints")),
            ("blank", None if self.blank else False, ("str", "strs", "str|strs")),
            ("partial", self.partial or None, ("table", "tables", "map")),
        ) if value is not None and kind not in kinds]
        if misplaced:
            raise ValueError(f"a {kind} field cannot have {', '.join(misplaced)}")
        nested = (self.sub is not None or kind == "map" or self.choices is not None
                  or not self.blank or _first(self.minimum, self.maximum, self.above) is not None)
        object.__setattr__(self, "nested", nested)


Schema = Mapping[str, Field]


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


# --------------------------------------------------------------------------------------------
# Errors


def error(file: Path | str, key: str, problem: str, *, hint: str | None = None) -> ConfigError:
    """The one error format: `<file>: <key>: <problem>`, or `<file>: <problem>` without a key."""
    where = f"{file}: {key}" if key else str(file)
    return ConfigError(f"{where}: {problem}", hint=hint)


def join(path: str, key: str | int) -> str:
    """`models` + 2 -> `models[2]`; `models[2]` + `gguf` -> `models[2].gguf`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _toml_type(value: Any) -> str:
    """What a value is, in TOML's words ("got a float")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date):
        return "a date/time"
    if isinstance(value, time):
        return "a time"
    return type(value).__name__


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the nearest known name (case ignored), or ''."""
    import difflib  # only on the error path: keeps start-up lean

    lowered = {name.lower(): name for name in known}
    near = difflib.get_close_matches(key.lower(), list(lowered), n=1)
    return f" (did you mean {lowered[near[0]]!r}?)" if near else ""


# --------------------------------------------------------------------------------------------
# Reading


def read(path: Path, *, missing_ok: bool = False, hint: str | None = None) -> dict[str, Any]:
    """Parse a TOML file; any failure is a one-line ConfigError naming it.

    `missing_ok` returns {} for a file that does not exist (optional settings files). `hint`
    goes with syntax errors (what to do about a broken file).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        if missing_ok:
            return {}
        raise error(path, "", f"cannot read: {exc.strerror or exc}") from None
    except OSError as exc:
        raise error(path, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise error(path, "", f"too big to be a settings file (over {MAX_BYTES // 2**20} MiB)",
                    hint=hint)
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise error(path, "", f"not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset})",
                    hint="save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(path, "", _syntax_problem(exc, text), hint=hint) from None
    except RecursionError:
        raise error(path, "", "arrays or tables nested too deeply", hint=hint) from None
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        problem = str(exc).split(":", 1)[0]
        raise error(path, "", f"invalid value: {problem[:1].lower()}{problem[1:]}",
                    hint=hint) from None


def _syntax_problem(exc: Exception, text: str) -> str:
    """tomllib says "Invalid value (at line 3, column 7)"; users read "line 3: invalid value"."""
    message = str(exc)
    match = re.match(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$", message, re.DOTALL)
    if match:
        problem, line, column = match.groups()
        return f"line {line}: {problem[:1].lower()}{problem[1:]} (column {column})"
    match = re.match(r"^(.*?)\s*\(at end of document\)$", message, re.DOTALL)
    if match:
        problem = match.group(1)
        last_line = max(1, len(text.splitlines()))
        return f"line {last_line}: {problem[:1].lower()}{problem[1:]} (at end of file)"
    return f"invalid TOML: {message}"


# --------------------------------------------------------------------------------------------
# Checking


def check(data: Mapping[str, Any], schema: Schema, file: Path | str, path: str = "", *,
          hint: str | None = None) -> None:
    """Check parsed TOML against a schema; the first problem is raised as a ConfigError.

    `path` is where `data` sits in the file (`models[2]`), so errors name the key as the user
    finds it. Keys are checked in the file's order, then missing required keys in the schema's.
    """
    _Checker(file, hint).table(data, schema, path, required=True)


def _is_date(value: Any) -> bool:
    return isinstance(value, date) and not hasattr(value, "hour")  # datetime is a date too


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(item(v) for v in value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


_is_strs = _is_list_of(_is_str)
_is_ints = _is_list_of(_is_int)

# kind -> test of a parsed TOML value (booleans are not numbers: TOML's true is not 1)
_IS_KIND: Mapping[str, Callable[[Any], bool]] = {
    "str": _is_str,
    "int": _is_int,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "date": _is_date,
    "strs": _is_strs,
    "ints": _is_ints,
    "table": lambda v: isinstance(v, dict),
    "tables": _is_list_of(lambda v: isinstance(v, dict)),
    "map": lambda v: isinstance(v, dict),
    "int|ints": lambda v: _is_int(v) or (bool(v) and _is_ints(v)),
    "str|strs": lambda v: _is_str(v) or _is_strs(v),
}


class _Checker:
    """Walks a parsed document against a schema; every error names the file and the key path.

    Paths are joined only where a value has more to check than its kind: the bundled catalog is
    checked on every cold start, and most keys are plain scalars.
    """

    def __init__(self, file: Path | str, hint: str | None) -> None:
        self.file = file
        self.hint = hint

    def fail(self, path: str, problem: str) -> ConfigError:
        return error(self.file, path, problem, hint=self.hint)

    def table(self, data: Mapping[str, Any], schema: Schema, path: str, required: bool) -> None:
        for key, value in data.items():
            f = schema.get(key)
            if f is None:
                raise self.fail(join(path, key), "unknown key" + _known(key, schema))
            if not _IS_KIND[f.kind](value):
                raise self.wrong_kind(value, f, join(path, key))
            if f.nested:
                self.inside(value, f, join(path, key), required)
        if required:
            for key, f in schema.items():
                if f.required and key not in data:
                    raise self.fail(join(path, key), "missing required key")

    def wrong_kind(self, value: Any, f: Field, path: str) -> ConfigError:
        return self.fail(path, f"expected {f.expect or _KIND_WORDS[f.kind]}, got "
                               f"{_toml_type(value)}")

    def inside(self, value: Any, f: Field, path: str, required: bool) -> None:
        """What a value of the right kind must also be: its keys, items, choices and bounds."""
        if f.sub is not None:  # table, tables
            required = required and not f.partial
            for sub_path, item in _items(value, path):
                self.table(item, f.sub, sub_path, required)
        elif f.kind == "map":
            self.mapping(value, f, path, required and not f.partial)
        elif f.kind in ("str", "strs", "str|strs"):
            for sub_path, item in _items(value, path):
                self.string(item, f, sub_path)
        else:  # int, number, ints, int|ints with bounds
            for sub_path, item in _items(value, path):
                self.number(item, f, sub_path)

    def mapping(self, value: Mapping[str, Any], f: Field, path: str, required: bool) -> None:
        for key, item in value.items():
            if f.choices is not None and key not in f.choices:
                raise self.fail(join(path, key), f"unknown {f.noun}" + _known(key, f.choices))
            if f.of is not None:
                if not _IS_KIND[f.of.kind](item):
                    raise self.wrong_kind(item, f.of, join(path, key))
                if f.of.nested:
                    self.inside(item, f.of, join(path, key), required)

    def string(self, value: str, f: Field, path: str) -> None:
        if not f.blank and not value.strip():
            raise self.fail(path, "must not be empty")
        if f.choices is not None and value not in f.choices:
            raise self.fail(path, f"unknown value {value!r}; expected one of "
                                  f"{', '.join(f.choices)}")

    def number(self, value: float, f: Field, path: str) -> None:
        if not math.isfinite(value):
            raise self.fail(path, f"must be a finite number, got {value}")
        if f.minimum is not None and value < f.minimum:
            raise self.fail(path, f"must be at least {_num(f.minimum)}, got {_num(value)}")
        if f.above is not None and value <= f.above:
            raise self.fail(path, f"must be greater than {_num(f.above)}, got {_num(value)}")
        if f.maximum is not None and value > f.maximum:
            raise self.fail(path, f"must be at most {_num(f.maximum)}, got {_num(value)}")


def _num(value: float) -> str:
    """1 -> '1', 0.0 -> '0', 2.5 -> '2.5': numbers as a user wrote them, without float noise."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _items(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    """(path, item) for each item of a list, or the value itself when it is not a list."""
    if isinstance(value, list):
        return ((join(path, i), item) for i, item in enumerate(value))
    return ((path, value),)


def _known(key: str, known: Iterable[str]) -> str:
    """The nearest known name, or (for a short list) all of them, so a typo is easy to fix."""
    names = list(known)
    tip = _did_you_mean(key, names)
    if not tip and 0 < len(names) <= 10:
        tip = f" (known: {', '.join(names)})"
    return tip


__all__ = ["MAX_BYTES", "Field", "Schema", "check", "error", "join", "read"]
