"""The user's settings file, `<config dir>/config.toml`: a few keys that change defaults.

Keys (`KEYS`):
- `default-model`: the model `qwen chat` uses when neither -m nor QWEN_MODEL names one
  (set with `qwen config set default-model MODEL`, or by `qwen pull MODEL --default`).
- `log`: whether `qwen chat` writes its conversations to the log (`true`, the default, or
  `false`; `qwen config set log false`).

The file is TOML with one `key = "value"` per line, so it can be edited by hand (a UTF-8 byte
order mark, as Notepad writes, is fine); a malformed file is a one-line ConfigError naming it and
the key (`tomlfile`'s format). Keys qwen does not know are kept as they are. Writes are atomic (a
temporary file, then a rename).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qwencli import tomlfile
from qwencli.errors import ConfigError, UsageError, os_error
from qwencli.fileio import atomic_write
from qwencli.paths import config_dir
from qwencli.tomlfile import Field

CONFIG_NAME = "config.toml"
DEFAULT_MODEL = "default-model"
LOG = "log"


def _check_model(value: str) -> str:
    """A MODEL reference as `qwen chat -m` takes it; local paths are stored absolute."""
    from qwencli.catalog import load_catalog, resolve_catalog_ref
    from qwencli.refs import CatalogRef, LocalRef, parse_ref

    ref = parse_ref(value)  # UsageError for a malformed reference
    if isinstance(ref, LocalRef):
        return str(ref.path.expanduser().resolve())
    if isinstance(ref, CatalogRef):
        resolve_catalog_ref(load_catalog(), ref)  # UsageError naming the nearest models
    return value.strip()


def _check_bool(value: str) -> bool:
    """A yes/no setting as a person types it (envvars' words); stored as a TOML boolean."""
    from qwencli.envvars import FALSE_WORDS, TRUE_WORDS

    text = value.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS and text:
        return False
    raise UsageError(f"expected true or false, not {value!r}")


KEYS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    DEFAULT_MODEL: ("the model `qwen chat` uses when -m and QWEN_MODEL are not given "
                    "(a catalog name, a Hub reference or a .gguf path)", _check_model),
    LOG: ("whether `qwen chat` keeps its conversations in the log (`qwen logs`): true or "
          "false (default true)", _check_bool),
}


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


_SCHEMA = {DEFAULT_MODEL: Field("str"), LOG: Field("bool")}
_FIX_HINT = f"fix the file, or delete it and run `qwen config set {DEFAULT_MODEL} MODEL` again"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The settings as a dict ({} when the file does not exist)."""
    path = path or config_path()
    data = tomlfile.read(path, missing_ok=True, hint=_FIX_HINT)
    known = {key: value for key, value in data.items() if key in KEYS}  # others are kept as is
    tomlfile.check(known, _SCHEMA, path, hint=_FIX_HINT)
    return data


def _check_key(key: str) -> str:
    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}; known: {', '.join(KEYS)}")
    return key


def get_value(key: str) -> str | None:
    value = load_config().get(_check_key(key))
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) and value else None


def log_enabled() -> bool:
    """The `log` setting (true when not set)."""
    value = load_config().get(LOG)
    return value if isinstance(value, bool) else True


def set_value(key: str, value: str) -> Any:
    """Store a setting (validated and normalised); returns what was stored."""
    _describe, check = KEYS[_check_key(key)]
    stored = check(value)
    data = load_config()
    data[key] = stored
    _write(data)
    return stored


def unset_value(key: str) -> bool:
    """Remove a setting; False when it was not set."""
    data = load_config()
    if _check_key(key) not in data:
        return False
    del data[key]
    _write(data)
    return True


def default_model() -> str | None:
    """The saved default model, or None."""
    return get_value(DEFAULT_MODEL)


def save_default_model(ref: str) -> str:
    """Make `ref` the default model (for `qwen pull --default` and `qwen config`)."""
    return set_value(DEFAULT_MODEL, ref)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    raise ConfigError(f"cannot store a {type(value).__name__} in {CONFIG_NAME}")


def render(data: Mapping[str, Any]) -> str:
    lines = ["# qwen settings; `qwen config set KEY VALUE` edits this file"]
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            raise tomlfile.error(config_path(), key, "a table or array, which qwen does not "
                                                     "write; edit the file by hand")
        bare = key.replace("-", "").replace("_", "").isalnum()
        lines.append(f"{key if bare else json.dumps(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _write(data: Mapping[str, Any]) -> None:
    """The whole file, replaced in one rename (another qwen may be reading or writing it)."""
    path = config_path()
    try:
        atomic_write(path, render(data), durable=True)
    except OSError as exc:
        raise os_error(exc, path) from None


__all__ = ["CONFIG_NAME", "DEFAULT_MODEL", "KEYS", "LOG", "config_path", "default_model",
           "get_value", "load_config", "log_enabled", "render", "save_default_model", "set_value",
           "unset_value"]
