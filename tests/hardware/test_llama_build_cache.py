"""The llama.cpp build-probe cache is outside data: an entry whose fields are not what the
probe writes is probed again and rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qwencli.hardware import llama_build
from qwencli.hardware.llama_build import probe_llama_build


def _edits() -> list[tuple[str, Any]]:
    return [
        ("gpu_offload", "false"),  # a string: bool() of it would be True
        ("gpu_offload", 1),
        ("backend", "<script>"),
        ("backend", None),
        ("cpu_features", "avx2"),
        ("cpu_features", [["avx2"]]),
        ("cpu_features", ["x" * 200]),
        ("cpu_features", ["avx2"] * 1000),
        ("backends", [1, 2]),
        ("backends", ["CUDA\n\x1b[2J"]),
        ("version", "0.0.1"),  # another version than the installed one
        ("rpc", "yes"),
        ("rpc", None),  # an entry written before the field existed
    ]


@pytest.mark.parametrize(("field", "value"), _edits())
def test_an_edited_entry_is_probed_again_and_rewritten(tmp_path: Path, field: str,
                                                       value: Any) -> None:
    cache = tmp_path / "llama_build.json"
    real = probe_llama_build(cache)
    assert real.installed and real.error is None
    good = json.loads(cache.read_text())
    cache.write_text(json.dumps({**good, field: value}))
    assert probe_llama_build(cache) == real
    assert json.loads(cache.read_text()) == good


def test_junk_and_deep_nesting_are_misses(tmp_path: Path) -> None:
    cache = tmp_path / "llama_build.json"
    real = probe_llama_build(cache)
    for junk in ("", "[" * 100_000, "NaN", '"text"'):
        cache.write_text(junk)
        assert probe_llama_build(cache) == real


def test_a_valid_entry_is_used_without_probing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "llama_build.json"
    probe_llama_build(cache)
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "backend": "vulkan", "gpu_offload": True}))

    def no_probe(lib_dir: Path) -> Any:
        raise AssertionError("the libraries were loaded although the cache was valid")

    monkeypatch.setattr(llama_build, "_query_libraries", no_probe)
    build = probe_llama_build(cache)
    assert (build.backend, build.gpu_offload) == ("vulkan", True)
