from __future__ import annotations

import pytest

from qwencli.units import format_bytes, format_rate, parse_size

GIB = 1024**3


@pytest.mark.parametrize("text", ["16GB", "16GiB", "16G", "16384MB", "16 gb", "16g", "0.015625TB"])
def test_sizes_in_every_spelling(text: str) -> None:
    assert parse_size(text) == 16 * GIB


@pytest.mark.parametrize("text", ["abc", "16", "", "GB", "-1GB", "0GB", "16XB"])
def test_bad_sizes_say_what_to_type(text: str) -> None:
    with pytest.raises(ValueError, match="16GB"if text not in ("0GB",) else "greater"):
        parse_size(text)


def test_formatting_names_the_unit() -> None:
    assert format_bytes(16 * GIB) == "16.0 GiB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536 * 1024**2) == "1.5 GiB"
    assert format_bytes(None) == "-"
    assert format_rate(1_008_000_000_000) == "1008.0 GB/s"
