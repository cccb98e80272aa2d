"""`qwen fit` and `qwen models` end to end: local headers, the Hub over HTTP Range, errors."""

from __future__ import annotations

import builtins
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qwencli.catalog import clear_cache
from qwencli.cli import app
from tests import fake_hub
from tests.gguf_fixtures import QWEN3_0_6B, QWEN25_7B, write_header_only_gguf, write_qwen_gguf

runner = CliRunner()
GIB = 1024**3


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def fresh_catalog():
    """Each test sees the catalog files as they are now (user overlays included)."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server_hub, server = fake_hub.start(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", server_hub.url)
    yield server_hub
    server.shutdown()


def big_sparse_model(path: Path) -> Path:
    """A Qwen2.5-7B-shaped Q4_K file: a real header, then 4.4 GB of hole."""
    specs = QWEN25_7B.tensor_specs("Q4_K", embd_type="Q4_K", output_type="Q6_K")
    return write_header_only_gguf(path, specs, arch="qwen2",
                                  metadata=QWEN25_7B.arch_metadata())


class _CountedReads:
    """A file opened by the code under test: every byte read from it is counted."""

    def __init__(self, f: Any, counter: list[int]) -> None:
        self._f, self._counter = f, counter

    def read(self, *args: Any) -> bytes:
        data = self._f.read(*args)
        self._counter[0] += len(data)
        return data

    def read1(self, *args: Any) -> bytes:
        data = self._f.read1(*args)
        self._counter[0] += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self._counter[0] += n or 0
        return n

    def __enter__(self) -> _CountedReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def test_fit_of_a_local_file_reads_only_the_header(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = big_sparse_model(tmp_path / "qwen2.5-7b-q4_k.gguf")
    assert path.stat().st_size > 4 * GIB
    # Every open of the model, by any module (open() and Path.open()), counts what it reads:
    # the header is a few kB of the 4 GB. (The time `qwen fit` takes on such a file is
    # measured by benchmarks/read_paths.py, not here.)
    read, real_open = [0], io.open

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        is_model = isinstance(file, (str, os.PathLike)) and \
            os.path.realpath(file) == os.path.realpath(path)
        return _CountedReads(f, read) if is_model else f

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", counting_open)
        m.setattr(io, "open", counting_open)
        result = run("fit", str(path), "--ctx", "8192", "--json")
    assert result.exit_code == 0, result.stderr
    assert 0 < read[0] < 1024**2  # the header was read, and nothing like the 4 GB after it
    doc = json.loads(result.stdout)
    assert doc["source"] == "header" and doc["n_layers"] == 28 and doc["ctx"] == 8192
    # 28 layers x 4 KV heads x 128 x 2 (K and V) x 2 bytes x 8192 positions
    assert doc["memory"]["breakdown"]["kv_cache"] == 28 * 4 * 256 * 2 * 8192
    assert "exact figures from the GGUF header" in doc["notes"][0]


def test_fit_json_contract(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "tiny.gguf")
    doc = json.loads(run("fit", str(path), "--json").stdout)
    for key in ("schema_version", "model", "quant", "source", "ctx", "usable_ctx", "fits",
                "n_gpu_layers", "n_layers"):
        assert key in doc
    assert set(doc["memory"]) >= {"host_bytes", "devices", "breakdown"}
    assert set(doc["memory"]["breakdown"]) >= {"weights", "kv_cache", "compute", "output",
                                               "overhead"}
    assert doc["speed"]["decode_tok_s"]["low"] <= doc["speed"]["decode_tok_s"]["high"]
    assert doc["ctx"] == 4096  # the model's own maximum, below the 8K default


def test_fit_on_a_what_if_gpu_offloads(tmp_path: Path) -> None:
    path = big_sparse_model(tmp_path / "m.gguf")
    doc = json.loads(run("fit", str(path), "--gpu", "RTX 4090", "--json").stdout)
    assert doc["n_gpu_layers"] == 29 and doc["fits"]
    assert doc["memory"]["devices"][0]["name"] == "RTX 4090"
    forced = json.loads(run("fit", str(path), "--gpu", "RTX 4090", "--gpu-layers", "10",
                            "--json").stdout)
    assert forced["n_gpu_layers"] == 10
    assert forced["memory"]["host_bytes"] > doc["memory"]["host_bytes"]


def test_fit_text_report(tmp_path: Path) -> None:
    path = big_sparse_model(tmp_path / "m.gguf")
    result = run("fit", str(path), "--hardware", "laptop-rtx4060-32gb")
    assert result.exit_code == 0
    assert "GGUF header (exact)" in result.stdout
    assert "Memory plan" in result.stdout and "GPU 0" in result.stdout
    assert "\x1b" not in result.stdout


def test_fit_of_a_hub_reference_reads_the_header_over_http_range(hub, tmp_path: Path) -> None:
    # A Qwen3-0.6B-shaped Q4_K file: 380 MB served, of which fit must read only the header.
    specs = QWEN3_0_6B.tensor_specs("Q4_K", embd_type="Q6_K")
    model = write_header_only_gguf(tmp_path / "m.gguf", specs, arch="qwen3",
                                   metadata=QWEN3_0_6B.arch_metadata())
    served = hub.add_file("someone/Qwen3-0.6B-GGUF", "qwen3-0.6b-q4_k_m.gguf", model)
    hub.add_file("someone/Qwen3-0.6B-GGUF", "qwen3-0.6b-q8_0.gguf", b"not read")
    result = run("fit", "someone/Qwen3-0.6B-GGUF:q4_k_m", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == "header" and doc["n_layers"] == 28
    ranges = [r.range for r in hub.requests if "/resolve/" in r.path]
    assert ranges and all(r and r.startswith("bytes=0-") for r in ranges)
    assert hub.bytes_served() < 0.01 * served.stat().st_size


def test_fit_of_a_hub_file_path(hub, tmp_path: Path) -> None:
    hub.add_file("someone/repo", "sub/model-Q8_0.gguf", write_qwen_gguf(tmp_path / "t.gguf"))
    doc = json.loads(run("fit", "someone/repo/sub/model-Q8_0.gguf", "--json").stdout)
    assert doc["source"] == "header"


def test_hub_reference_with_a_missing_quant_lists_what_is_there(hub, tmp_path: Path) -> None:
    hub.add_file("someone/repo", "m-Q8_0.gguf", write_qwen_gguf(tmp_path / "t.gguf"))
    result = run("fit", "someone/repo:Q4_K_M")
    pulled = run("pull", "someone/repo:Q4_K_M")
    assert result.exit_code == pulled.exit_code == 1  # the same resolution, the same answer
    assert result.stderr == pulled.stderr
    assert "error: someone/repo has no Q4_K_M file; it has Q8_0" in result.stderr


def test_missing_hub_repository_is_one_line(hub) -> None:
    result = run("fit", "someone/nothing:Q4_K_M")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: repository someone/nothing not found")
    assert "Traceback" not in result.stderr


def test_catalog_reference_uses_the_hub_header_when_reachable(hub, tmp_path: Path) -> None:
    specs = QWEN3_0_6B.tensor_specs("Q8_0", embd_type="Q8_0")
    header = write_header_only_gguf(tmp_path / "q.gguf", specs, arch="qwen3",
                                    metadata=QWEN3_0_6B.arch_metadata())
    hub.add_file("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf", header)
    result = run("fit", "qwen3-0.6b:Q8_0", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == "header" and doc["n_layers"] == 28
    assert any("on the Hub (Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf)" in n
               for n in doc["notes"])


def test_catalog_reference_falls_back_to_catalog_figures(monkeypatch, hub) -> None:
    result = run("fit", "qwen3-8b:Q4_K_M", "--json")  # the fake hub does not have it: 401
    doc = json.loads(result.stdout)
    assert doc["source"] == "catalog"
    assert any(n.startswith("catalog estimate: the header could not be read") for n in
               doc["notes"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    doc = json.loads(run("fit", "qwen3-8b:Q4_K_M", "--json").stdout)
    assert doc["source"] == "catalog" and len(hub.requests) == before  # no network at all
    assert any("HF_HUB_OFFLINE" in n for n in doc["notes"])


def test_catalog_reference_without_quant_takes_the_recommended_one(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = json.loads(run("fit", "qwen3-0.6b", "--hardware", "desktop-rtx4090-64gb",
                         "--json").stdout)
    recommended = json.loads(run("recommend", "--hardware", "desktop-rtx4090-64gb", "--top",
                                 "50", "--json").stdout)
    by_model = {p["model"]: p["quant"] for p in recommended["picks"]}
    assert doc["quant"] == by_model["qwen3-0.6b"]
    assert any("the one `qwen recommend` picks" in n for n in doc["notes"])


def test_unknown_model_exits_2_with_nearest_names() -> None:
    result = run("fit", "qwen3-9b")
    assert result.exit_code == 2
    assert "unknown model 'qwen3-9b'; nearest:" in result.stderr
    assert "qwen3-8b" in result.stderr


def test_unknown_quant_lists_the_available_ones() -> None:
    result = run("fit", "qwen3-8b:Q3_K_XL")
    assert result.exit_code == 2 and "Q4_K_M" in result.stderr


def test_context_above_the_maximum_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run("fit", "qwen3-8b:Q4_K_M", "--ctx", "500000")
    assert result.exit_code == 2
    assert "supports at most 131,072 tokens of context" in result.stderr
    local = run("fit", str(write_qwen_gguf(tmp_path / "t.gguf")), "--ctx", "8192")
    assert local.exit_code == 2 and "at most 4,096 tokens" in local.stderr


def test_truncated_and_non_gguf_files_are_one_line_errors(tmp_path: Path) -> None:
    whole = write_qwen_gguf(tmp_path / "whole.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:1000])
    result = run("fit", str(cut))
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "truncated" in result.stderr
    text = tmp_path / "notes.gguf"
    text.write_text("just some notes\n")
    result = run("fit", str(text))
    assert result.exit_code == 1 and "not a GGUF file" in result.stderr
    result = run("fit", str(tmp_path / "absent.gguf"))
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_bad_kv_type_is_a_usage_error(tmp_path: Path) -> None:
    result = run("fit", str(write_qwen_gguf(tmp_path / "t.gguf")), "--kv-type", "q3")
    assert result.exit_code == 2


def test_models_lists_the_catalog() -> None:
    doc = json.loads(run("models", "--json").stdout)
    ids = {m["id"] for m in doc["models"]}
    assert {"qwen3-8b", "qwen3.5-9b", "qwen2.5-coder-7b", "qwen3.8-27b"} <= ids
    code = json.loads(run("models", "--use", "code", "--json").stdout)
    assert all("code" in m["use"] for m in code["models"])
    assert "qwen2.5-7b" not in {m["id"] for m in code["models"]}
    text = run("models").stdout
    assert "qwen3-8b" in text and "\x1b" not in text


def test_a_bad_key_in_a_user_model_profile_names_file_and_key(isolated_state: Path) -> None:
    folder = isolated_state / "config" / "models"
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text(
        'schema = 1\nfamily = "mine"\nfamily_name = "Mine"\n\n[[models]]\nid = "mine-1b"\n'
        'colour = "blue"\n')
    result = run("models")
    assert result.exit_code == 1
    assert "mine.toml" in result.stderr and "colour" in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_reference_reads_the_downloaded_file_offline(hub, monkeypatch,
                                                              tmp_path: Path) -> None:
    from qwencli.hub import pull_model

    tiny = write_qwen_gguf(tmp_path / "tiny.gguf", n_layers=3)
    hub.add_file("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf", tiny)
    pulled = pull_model("qwen3-0.6b:Q8_0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = json.loads(run("fit", "qwen3-0.6b:Q8_0", "--json").stdout)
    assert doc["source"] == "header" and doc["n_layers"] == 3
    assert any(str(pulled.path) in note for note in doc["notes"])


def test_a_hub_reference_reads_the_downloaded_file_offline(hub, monkeypatch,
                                                          tmp_path: Path) -> None:
    # `qwen pull` and `qwen chat -m` work offline for a downloaded Hub reference; fit too
    from qwencli.hub import pull_model

    tiny = write_qwen_gguf(tmp_path / "tiny.gguf", n_layers=3)
    hub.add_file("someone/Tiny-GGUF", "tiny-Q8_0.gguf", tiny)
    pulled = pull_model("someone/Tiny-GGUF:Q8_0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    for ref in ("someone/Tiny-GGUF:Q8_0", "someone/Tiny-GGUF/tiny-Q8_0.gguf"):
        result = run("fit", ref, "--json")
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert (doc["source"], doc["n_layers"], doc["file"]) == ("header", 3, str(pulled.path))
    assert len(hub.requests) == before  # no network at all
    missing = run("fit", "someone/Tiny-GGUF:Q4_K_M")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[0] == ("error: cannot read someone/Tiny-GGUF:Q4_K_M: "
                                              "HF_HUB_OFFLINE is set and it is not downloaded")
