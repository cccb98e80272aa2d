"""Environment variables that switch something on or off: one reading of yes and no.

`1 true yes on` mean yes and `0 false no off` (or an empty value) mean no, in any case and
with surrounding blanks ignored; anything else is a one-line error naming the variable, so a
typo never silently means the opposite of what was meant (`QWEN_NOHISTORY=false` keeps the
history). An unset variable is `default`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from qwencli.errors import UsageError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def env_bool(name: str, *, default: bool = False,
             environ: Mapping[str, str] | None = None) -> bool:
    """The yes/no value of environment variable `name` (UsageError when it is neither)."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise UsageError(f"{name}={shown!r} is neither yes nor no",
                     hint=f"set {name} to 1, true, yes or on, or to 0, false, no, off or "
                          "nothing")
