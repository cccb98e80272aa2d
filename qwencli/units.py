"""Sizes and rates between bytes and the units people type and read.

Input accepts decimal and binary units (`16GB`, `16GiB`, `16G`, `16384MB`). Following the
convention of RAM and VRAM marketing, a bare `G`/`GB` is taken as binary for memory sizes
(a "16 GB" card holds 16 GiB), so `--vram 24GB` means what the box says.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Parse a memory size to bytes. Raises ValueError with a message a user can act on."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; use e.g. 16GB, 16GiB, 16G or 16384MB")
    number, prefix, _binary, unit_b = match.groups()
    if not prefix and not unit_b:
        raise ValueError(f"{text!r} has no unit; use e.g. 16GB, 16GiB, 16G or 16384MB")
    value = float(number) * 1024 ** _POWERS[prefix.lower()]
    if value <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return int(value)


def format_bytes(n: int | float | None, *, digits: int = 1) -> str:
    """Binary units with the unit named, e.g. '15.6 GiB'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: int | float | None) -> str:
    """Bandwidth in decimal GB/s, as vendors and benchmarks quote it."""
    if bytes_per_s is None:
        return "-"
    return f"{bytes_per_s / 1e9:.1f} GB/s"
