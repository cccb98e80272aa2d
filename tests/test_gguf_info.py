"""GGUF header reading: agreement with gguf-py's reader, speed on sparse multi-GB files, HTTP
Range through hub's reader on huggingface_hub's session (redirects to a CDN host, servers without
Range, the Hub's errors as `qwen pull` gives them, offline), split sets, corrupt files, cache."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gguf
import pytest

from qwencli import gguf_info as gi
from qwencli import hub
from qwencli.errors import QwenError
from qwencli.paths import cache_dir
from tests import ceilings, fake_hub
from tests.gguf_fixtures import (
    QWEN3_0_6B,
    QWEN25_7B,
    TensorSpec,
    byte_level_tokenizer,
    tensor_nbytes,
    write_header_only_gguf,
    write_qwen_gguf,
    write_split_header_only_gguf,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


def _reader_value(field: Any) -> Any:
    """A scalar metadata value as gguf-py's reader sees it."""
    return field.contents()


# --- Tables ----------------------------------------------------------------------------------

def test_ggml_type_table_equals_gguf_py_for_every_type_it_knows() -> None:
    for qtype in gguf.GGMLQuantizationType:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        assert gi.GGML_TYPES[qtype.value] == (qtype.name, block, size), qtype


def test_file_type_labels_equal_gguf_py_names() -> None:
    for ftype in gguf.LlamaFileType:
        if ftype is gguf.LlamaFileType.GUESSED:
            continue
        expected = "F32" if ftype.name == "ALL_F32" else ftype.name.removeprefix("MOSTLY_")
        assert gi.FILE_TYPES[ftype.value] == expected
    assert gi.file_type_label(15 | 1024) == "Q4_K_M"  # the GUESSED flag is ignored
    assert gi.file_type_label(999) == "ftype 999"


def test_runtime_module_imports_neither_gguf_nor_numpy_nor_urllib_request() -> None:
    code = ("import sys, qwencli.gguf_info; "
            "print(sorted(m for m in ('gguf', 'numpy', 'urllib.request', 'http.client', "
            "'huggingface_hub', 'httpx2', 'qwencli.hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_gguf_info_does_no_networking_of_its_own() -> None:
    """Remote bytes come through a RangeReader; hub sits above this module, not below it."""
    tree = ast.parse(Path(gi.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {f"{node.module}.{alias.name}" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
    network = {name for name in imported if name.split(".")[0] in (
        "http", "urllib3", "requests", "httpx", "httpx2", "huggingface_hub", "socket", "ssl")
        or name.startswith(("urllib.request", "urllib.error", "qwencli.hub"))}
    assert network == set()
    assert {name for name in imported if name.startswith("qwencli")} <= {
        "qwencli.errors.QwenError", "qwencli.paths.cache_dir", "qwencli.gguf_names",
        "qwencli.fileio.atomic_write"}


# --- Local files -----------------------------------------------------------------------------

@pytest.mark.parametrize(("arch", "tensor_type", "tied", "alignment"), [
    ("qwen3", "F32", False, None),
    ("qwen2", "F16", True, 64),
])
def test_local_read_agrees_with_gguf_reader(tmp_path: Path, arch: str, tensor_type: str,
                                            tied: bool, alignment: int | None) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf", arch=arch, tensor_type=tensor_type,
                           tied_embeddings=tied, alignment=alignment, n_layers=3,
                           extra_metadata={"test.small_array": [1, 2, 3],
                                           "test.nested": [[1, 2], [3]],
                                           "test.long_array": list(range(2000))})
    h = gi.read_header(path, use_cache=False)
    reader = gguf.GGUFReader(path)

    assert h.version == 3
    assert h.architecture == arch
    assert h.alignment == reader.alignment == (alignment or 32)
    assert h.data_offset == reader.data_offset
    assert h.file_size == path.stat().st_size
    assert len(h.tensors) == len(reader.tensors)
    for mine, theirs in zip(h.tensors, reader.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.ggml_type == theirs.tensor_type.name
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.n_bytes == int(theirs.n_bytes)
        assert h.data_offset + mine.offset == theirs.data_offset

    assert set(h.metadata) == set(reader.fields) - {"GGUF.version", "GGUF.tensor_count",
                                                     "GGUF.kv_count"}
    for key, value in h.metadata.items():
        field = reader.fields[key]
        if key == "test.nested":  # gguf-py's reader flattens nested arrays (its FIXME)
            continue
        if isinstance(value, gi.ArraySummary):
            theirs = field.contents()
            assert value.length == len(theirs), key
            assert value.values is None or list(value.values) == theirs, key
            continue
        expected = _reader_value(field)
        if isinstance(value, float):
            assert value == pytest.approx(float(expected)), key
        else:
            assert value == expected, key

    tokens = h.metadata["tokenizer.ggml.tokens"]
    assert tokens == gi.ArraySummary("STRING", 264, None)  # 256 bytes + 5 merges + 3 specials
    assert h.metadata["tokenizer.ggml.merges"] == gi.ArraySummary("STRING", 5, None)
    assert h.metadata["tokenizer.ggml.token_type"] == gi.ArraySummary("INT32", 264, None)
    assert h.metadata["test.small_array"] == gi.ArraySummary("INT32", 3, (1, 2, 3))
    assert h.metadata["test.nested"] == gi.ArraySummary("ARRAY", 2, (
        gi.ArraySummary("INT32", 2, (1, 2)), gi.ArraySummary("INT32", 1, (3,))))
    assert h.metadata["test.long_array"] == gi.ArraySummary("INT32", 2000, None)
    assert "<|im_start|>" in h.metadata["tokenizer.chat_template"]


def test_helpers_sum_the_tensor_table(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf", arch="qwen3", n_layers=2, n_embd=64, n_head=4,
                           n_head_kv=2, head_dim=16, n_ff=128, ctx=2048)
    h = gi.read_header(path, use_cache=False)
    vocab, e, q, kv, ff = 264, 64, 64, 32, 128
    per_layer = 4 * (e + e * q + 2 * e * kv + 2 * 16 + q * e + e + 3 * e * ff)
    assert h.layer_bytes() == {0: per_layer, 1: per_layer}
    assert h.non_layer_bytes() == {"token_embd": 4 * e * vocab, "output_norm": 4 * e,
                                   "output": 4 * e * vocab}
    assert h.total_tensor_bytes() == 2 * per_layer + 4 * (2 * e * vocab + e)
    assert h.n_params * 4 == h.total_tensor_bytes()
    assert h.arch_value("block_count") == 2
    assert h.arch_value("context_length") == 2048
    assert h.arch_value("embedding_length") == 64
    assert h.arch_value("attention.head_count") == 4
    assert h.arch_value("attention.head_count_kv") == 2
    assert h.arch_value("attention.key_length") == 16
    assert h.arch_value("expert_count") is None
    assert h.arch_value("expert_count", 0) == 0
    assert h.file_type == 0 and h.quant_label == "F32"
    assert h.split_count == 1 and h.split_no == 0
    assert h.tensors[1].name == "blk.0.attn_norm.weight" and h.tensors[1].layer == 0
    assert h.tensors[0].layer is None


def test_quant_label_guessed_from_tensors_without_file_type(tmp_path: Path) -> None:
    shape = QWEN3_0_6B
    path = write_header_only_gguf(tmp_path / "q.gguf", shape.tensor_specs("Q4_K"),
                                  metadata=shape.arch_metadata())
    h = gi.read_header(path, use_cache=False)
    assert h.file_type is None
    assert h.quant_label == "Q4_K"


class _CountingFile:
    """Wraps a binary file and counts the bytes handed out."""

    def __init__(self, f: Any, counter: list[int]) -> None:
        self._f, self._counter = f, counter

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._counter[0] += len(data)
        return data

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def test_sparse_8gb_file_is_answered_from_the_header_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What makes it fast is what is asserted: under 1 MiB of the 8 GiB is read. The time it
    # takes is measured by benchmarks/read_paths.py, not here.
    shape = QWEN25_7B
    specs = shape.tensor_specs("Q4_K", output_type="Q6_K")
    path = write_header_only_gguf(tmp_path / "qwen2.5-7b-q4_k.gguf", specs, 8 * GiB,
                                  arch="qwen2", metadata=shape.arch_metadata())
    assert path.stat().st_size == 8 * GiB
    counter = [0]
    real_open = open

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        return _CountingFile(f, counter) if "b" in mode else f

    monkeypatch.setattr(gi, "open", counting_open, raising=False)
    h = gi.read_header(path, use_cache=False)

    assert counter[0] == h.bytes_read < MiB
    assert h.file_size == 8 * GiB
    assert len(h.tensors) == len(specs) == 28 * 12 + 3
    assert h.total_tensor_bytes() == sum(tensor_nbytes(s.shape, s.ggml_type) for s in specs)
    assert sorted(h.layer_bytes()) == list(range(28))
    assert h.non_layer_bytes()["output"] == tensor_nbytes((3584, 152_064), "Q6_K")
    assert h.tensors[-1].ggml_type == "Q6_K"


def test_version_2_reads_like_version_3(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "v3.gguf")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(bytes(data))
    h3, h2 = gi.read_header(path, use_cache=False), gi.read_header(v2, use_cache=False)
    assert h2.version == 2
    assert h2.tensors == h3.tensors and h2.metadata == h3.metadata


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(path, "qwen3", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(2)
    w.add_float32("qwen3.rope.freq_base", 10000.0)
    w.add_array("test.ints", [1, 2, 3])
    w.add_tensor_info("blk.0.attn_q.weight", (64, 256), gguf.np.dtype("float32"),
                      tensor_nbytes((256, 64), "Q8_0"), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.truncate(1 << 20)
    h = gi.read_header(path, use_cache=False)
    assert h.byte_order == "big" and h.version == 3
    assert h.arch_value("block_count") == 2
    assert h.arch_value("rope.freq_base") == 10000.0
    assert h.metadata["test.ints"].values == (1, 2, 3)
    [t] = h.tensors
    assert (t.name, t.ggml_type, t.shape, t.n_bytes) == (
        "blk.0.attn_q.weight", "Q8_0", (256, 64), 256 * 64 // 32 * 34)


def test_unknown_ggml_type_takes_its_size_from_the_offsets(tmp_path: Path) -> None:
    specs = [TensorSpec("a.weight", (256, 4), "Q8_0"), TensorSpec("b.weight", (256, 4), "Q8_0")]
    path = write_header_only_gguf(tmp_path / "u.gguf", specs)
    data = bytearray(path.read_bytes())
    at = data.index(b"a.weight") + len(b"a.weight") + 4 + 2 * 8  # n_dims, then two dims
    assert struct.unpack_from("<I", data, at)[0] == 8  # Q8_0
    struct.pack_into("<I", data, at, 99)
    path.write_bytes(bytes(data))
    a, b = gi.read_header(path, use_cache=False).tensors
    assert a.ggml_type == "TYPE_99"
    assert a.n_bytes == b.offset == 1088  # 256*4/32*34, padded to 32
    assert b.n_bytes == 1088


# --- Bad files -------------------------------------------------------------------------------

def _error(path: Path) -> gi.GgufError:
    with pytest.raises(gi.GgufError) as info:
        gi.read_header(path, use_cache=False)
    err = info.value
    assert isinstance(err, QwenError) and err.exit_code == 1
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}: ")
    return err


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert str(_error(path)) == f"{path}: not a GGUF file (starts with b'PK\\x03\\x04')"
    path.write_bytes(b"")
    assert str(_error(path)) == f"{path}: not a GGUF file (it is empty)"
    path.write_bytes(b"GG")
    assert "not a GGUF file (starts with b'GG')" in str(_error(path))


def test_truncated_header_and_truncated_data(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "x.gguf")
    full = path.read_bytes()
    path.write_bytes(full[:3000])  # inside the tokens array
    err = _error(path)
    assert isinstance(err, gi.GgufTruncatedError)
    msg = str(err)
    assert "truncated: the header needs at least" in msg
    assert msg.endswith("but the file has 3000 bytes")
    h = gi.read_header(write_qwen_gguf(tmp_path / "y.gguf"), use_cache=False)
    path.write_bytes(full[: h.data_offset + 100])  # header whole, weights cut
    msg = str(_error(path))
    assert f"truncated: the tensor data ends at byte {len(full)}" in msg
    assert f"the file has {h.data_offset + 100} bytes" in msg


@pytest.mark.parametrize(("version", "needle"), [
    (1, "GGUF version 1 is no longer supported"),
    (4, "unsupported GGUF version 4 (this qwen reads versions 2 and 3)"),
])
def test_unsupported_versions(tmp_path: Path, version: int, needle: str) -> None:
    data = bytearray(write_qwen_gguf(tmp_path / "x.gguf").read_bytes())
    data[4:8] = struct.pack("<I", version)
    path = tmp_path / "x.gguf"
    path.write_bytes(bytes(data))
    assert needle in str(_error(path))


def test_absurd_counts_are_refused_before_allocating(tmp_path: Path) -> None:
    data = bytearray(write_qwen_gguf(tmp_path / "x.gguf").read_bytes())
    path = tmp_path / "x.gguf"
    bad = bytearray(data)
    bad[8:16] = struct.pack("<Q", 2**40)  # tensor count
    path.write_bytes(bytes(bad))
    assert f"absurd tensor count {2**40}" in str(_error(path))
    bad = bytearray(data)
    bad[24:32] = struct.pack("<Q", 2**50)  # length of the first key
    path.write_bytes(bytes(bad))
    assert f"corrupt header: a metadata key claims {2**50} bytes at byte 32" in str(_error(path))
    bad = bytearray(data)
    at = bad.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens") + 4 + 4
    bad[at:at + 8] = struct.pack("<Q", 2**45)  # element count of the tokens array
    path.write_bytes(bytes(bad))
    assert f"array tokenizer.ggml.tokens claims {2**45} elements" in str(_error(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(gi.GgufNotFoundError, match="no such file"):
        gi.read_header(tmp_path / "nope.gguf")
    with pytest.raises(gi.GgufError, match="is a directory"):
        gi.read_header(tmp_path)


# --- Cache -----------------------------------------------------------------------------------

def _cache_files() -> list[Path]:
    return sorted((cache_dir() / "gguf").glob("*.json"))


class _NoParse:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the header was parsed again instead of read from the cache")


def test_cache_hit_and_invalidation_for_local_files(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf", n_layers=2)
    first = gi.read_header(path)
    assert not first.from_cache and first.bytes_read > 0
    assert len(_cache_files()) == 1

    real_open = open

    def no_model_read(file: Any, *args: Any, **kwargs: Any) -> Any:
        assert os.path.realpath(file) != os.path.realpath(path), "the model file was opened"
        return real_open(file, *args, **kwargs)

    with monkeypatch.context() as m:  # served from the cache: no parse, no byte of the model
        m.setattr(gi, "_Parser", _NoParse)
        m.setattr(gi, "open", no_model_read, raising=False)
        cached = gi.read_header(path)
    assert cached.from_cache and cached.bytes_read == 0
    assert cached == first and hash(cached) == hash(first)
    assert cached.metadata["tokenizer.ggml.tokens"] == gi.ArraySummary("STRING", 264, None)

    link = tmp_path / "snapshots" / "m.gguf"  # the HF cache reaches blobs through symlinks
    link.parent.mkdir()
    link.symlink_to(path)
    via_link = gi.read_header(link)
    assert via_link.from_cache and via_link.source == str(link)

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same size, new mtime
    assert not gi.read_header(path).from_cache

    write_qwen_gguf(path, n_layers=3)  # a changed file
    changed = gi.read_header(path)
    assert not changed.from_cache and changed.arch_value("block_count") == 3
    assert len(_cache_files()) == 1  # one entry per path, rewritten


def test_corrupt_cache_entry_is_ignored_and_rewritten(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf")
    gi.read_header(path)
    [entry] = _cache_files()
    for junk in ("{not json", json.dumps({"format": 1, "key": "file:" + os.path.realpath(path),
                                          "size": path.stat().st_size,
                                          "mtime_ns": path.stat().st_mtime_ns,
                                          "header": {"tensors": 5}})):
        entry.write_text(junk)
        h = gi.read_header(path)
        assert not h.from_cache and h.arch_value("block_count") == 2
        assert json.loads(entry.read_text())["header"]["architecture"] == "qwen3"
        assert gi.read_header(path).from_cache


def test_use_cache_false_writes_nothing(tmp_path: Path) -> None:
    gi.read_header(write_qwen_gguf(tmp_path / "m.gguf"), use_cache=False)
    assert _cache_files() == []


# --- HTTP: headers read through hub's reader on huggingface_hub's session -------------------

class _Handler(BaseHTTPRequestHandler):
    """Hub-shaped URLs, `/{mode}/repo/resolve/{revision}/{name}`, where the owner picks how the
    file is served; `/cdn/{name}` is the CDN the Hub redirects LFS files to."""

    server: _HubLike
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        path = urlsplit(self.path).path
        hub_file = re.match(r"^/([^/]+)/repo/resolve/[^/]+/(.+)$", path)
        mode, name = hub_file.groups() if hub_file else ("cdn", path.removeprefix("/cdn/"))
        if not hub_file and not path.startswith("/cdn/"):
            self._status(404)  # e.g. huggingface_hub's own /api calls: not what is counted
            return
        record = {"path": path, "range": self.headers.get("Range"),
                  "auth": self.headers.get("Authorization"), "host": self.headers.get("Host"),
                  "sent": 0,
                  "done": threading.Event()}  # set when the server is through with it
        srv.log.append(record)
        try:
            self._answer(srv, record, mode, name)
        finally:
            record["done"].set()

    def _answer(self, srv: _HubLike, record: dict[str, Any], mode: str, name: str) -> None:
        if mode == "redirect":  # to another host name, as the Hub sends LFS files to its CDN
            self._redirect(f"http://localhost:{srv.server_address[1]}/cdn/{name}",
                           linked_etag="linked-" + name)
            return
        if mode == "redirect-same":
            self._redirect(f"/files/repo/resolve/main/{name}")
            return
        file = srv.root / name
        if not name or not file.is_file():
            self._status(404)
            return
        size = file.stat().st_size
        start, end, status = 0, size - 1, 200
        ranged = record["range"] if mode != "norange" else None
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"etag-{name}-{size}"')
        if mode != "norange":
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(file, "rb") as f:
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = f.read(min(left, 64 * 1024))
                    self.wfile.write(chunk)
                    record["sent"] += len(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading once it had the header

    def _redirect(self, location: str, linked_etag: str | None = None) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        if linked_etag:
            self.send_header("X-Linked-Etag", f'"{linked_etag}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _HubLike(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.log: list[dict[str, Any]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def served(self) -> int:
        return sum(r["sent"] for r in self.log)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_HubLike]:
    """The server above as HF_ENDPOINT: repos files/repo, norange/repo, redirect/repo..."""
    root = tmp_path / "www"
    root.mkdir()
    srv = _HubLike(root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", srv.endpoint)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    """tests/fake_hub.py as HF_ENDPOINT: the Hub's error answers (gated, missing repo/file)."""
    served, srv = fake_hub.start(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    yield served
    srv.shutdown()
    srv.server_close()


def _padded_model(root: Path, name: str = "m.gguf", size: int = 64 * MiB, **kw: Any) -> Path:
    path = write_qwen_gguf(root / name, **kw)
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def _remote(repo: str, name: str = "m.gguf", **kw: Any) -> gi.GgufHeader:
    """One file's header the way `qwen fit` reads it from the Hub."""
    model = hub.read_remote_model(repo, name, **kw)
    assert len(model.parts) == 1
    return model.first


def test_http_range_reads_few_bytes_in_one_request(server: _HubLike) -> None:
    path = _padded_model(server.root)
    h = _remote("files/repo", use_cache=False)
    local = gi.read_header(path, use_cache=False)
    assert h.tensors == local.tensors and h.metadata == local.metadata
    assert h.data_offset == local.data_offset and h.file_size == 64 * MiB
    assert h.range_supported is True
    assert h.requests == len(server.log) == 1
    assert server.log[0]["range"] == f"bytes=0-{2 * MiB - 1}"
    assert server.served == h.bytes_read == 2 * MiB < 0.1 * 64 * MiB
    assert h.etag == f"etag-m.gguf-{64 * MiB}"
    assert h.source == hub.file_url("files/repo", "m.gguf") == \
        f"{server.endpoint}/files/repo/resolve/main/m.gguf"


def test_http_header_larger_than_the_first_chunk_grows_by_doubling(
        server: _HubLike, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gi, "_HTTP_FIRST_CHUNK", 4096)
    path = _padded_model(server.root, vocab=20_000, n_embd=32, n_head=2, n_head_kv=1,
                         n_ff=64, tied_embeddings=True)
    header_size = gi.read_header(path, use_cache=False).data_offset
    assert header_size > 200_000
    h = _remote("files/repo", use_cache=False)
    assert h.arch_value("block_count") == 2
    assert h.metadata["tokenizer.ggml.tokens"].length == 20_000
    # 4 KiB, then doubling: 8, 16, ... KiB until the ~250 KB header is in.
    assert h.requests == len(server.log) <= 8
    assert server.served < 2 * header_size
    starts = [int(r["range"].removeprefix("bytes=").split("-")[0]) for r in server.log]
    assert starts == sorted(starts) and starts[0] == 0  # sequential, nothing read twice


def test_http_redirect_to_another_host_never_carries_the_token(
        server: _HubLike, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub redirects LFS files to a CDN host: the token must stay on the Hub's host, for
    the redirected request (httpx2 drops it) and for every later range sent to the CDN."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setattr(gi, "_HTTP_FIRST_CHUNK", 4096)
    _padded_model(server.root, vocab=5000)
    h = _remote("redirect/repo", use_cache=False)
    assert h.arch_value("block_count") == 2
    first, *cdn = server.log
    assert first["path"] == "/redirect/repo/resolve/main/m.gguf"
    assert first["auth"] == "Bearer hf_secret"
    assert len(cdn) >= 3  # the redirected range, then ranges straight to the CDN
    assert all(r["path"] == "/cdn/m.gguf" and r["host"].startswith("localhost") for r in cdn)
    assert [r["auth"] for r in cdn] == [None] * len(cdn)
    assert cdn[0]["range"] == first["range"] == "bytes=0-4095"  # Range survives the redirect
    assert h.requests == len(server.log)  # the redirect counts; it happens once per file
    assert h.etag == "linked-m.gguf"  # the Hub's X-Linked-Etag from the redirect


def test_http_same_host_redirect_keeps_the_token(server: _HubLike,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setattr(gi, "_HTTP_FIRST_CHUNK", 4096)
    _padded_model(server.root, vocab=5000)
    h = _remote("redirect-same/repo", use_cache=False)
    assert [r["path"] for r in server.log[:2]] == ["/redirect-same/repo/resolve/main/m.gguf",
                                                   "/files/repo/resolve/main/m.gguf"]
    assert len(server.log) == h.requests >= 3
    assert [r["auth"] for r in server.log] == ["Bearer hf_secret"] * len(server.log)


def test_http_server_without_range_is_streamed_and_flagged(server: _HubLike,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    path = _padded_model(server.root)
    h = _remote("norange/repo", use_cache=False)
    assert h.range_supported is False
    assert h.tensors == gi.read_header(path, use_cache=False).tensors
    assert h.file_size == 64 * MiB
    assert h.requests == len(server.log) == 1
    assert h.bytes_read <= 2 * MiB < 0.1 * 64 * MiB
    # Several reads from the one whole-file response (no second request), then it is dropped.
    monkeypatch.setattr(gi, "_HTTP_FIRST_CHUNK", 1024)
    server.log.clear()
    h = _remote("norange/repo", use_cache=False)
    assert h.tensors == gi.read_header(path, use_cache=False).tensors
    assert h.requests == len(server.log) == 1 and h.range_supported is False
    assert h.bytes_read < 64 * 1024
    # The server is through with the response once the client hangs up (or once all of it is
    # sent): wait for that, not for a while.
    assert server.log[0]["done"].wait(ceilings.PROCESS_S)
    assert server.served < 16 * MiB  # the connection was closed early


def test_http_gated_repo_errors_are_those_of_qwen_pull(fake: fake_hub.FakeHub, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_file("o/gated", "m.gguf", write_qwen_gguf(tmp_path / "m.gguf"))
    fake.gated["o/gated"] = "hf_good"

    def errors() -> tuple[QwenError, QwenError]:
        with pytest.raises(hub.HubError) as read:
            _remote("o/gated", use_cache=False)
        with pytest.raises(hub.HubError) as pull:
            hub.pull_model("o/gated/m.gguf", progress=False)
        return read.value, pull.value

    read, pull = errors()
    assert isinstance(read, hub.HubAuthError) and type(read) is type(pull)
    assert (read.message, read.hint) == (pull.message, pull.hint)
    assert read.message == "o/gated is gated: accept its licence on the Hub, then give a token"
    assert read.hint is not None and "HF_TOKEN" in read.hint and read.exit_code == 1
    monkeypatch.setenv("HF_TOKEN", "hf_refused")
    read, pull = errors()
    assert isinstance(read, hub.HubAuthError) and (read.message, read.hint) == (pull.message,
                                                                                pull.hint)
    assert read.message == "o/gated is gated and your token has no access to it"
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert _remote("o/gated", use_cache=False).arch_value("block_count") == 2


def test_http_missing_repo_file_and_unreachable_endpoint(fake: fake_hub.FakeHub,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_file("o/r", "m.gguf", write_qwen_gguf(tmp_path / "m.gguf"))
    with pytest.raises(hub.HubNotFoundError) as info:
        _remote("o/nothing", use_cache=False)
    with pytest.raises(hub.HubNotFoundError) as listing:
        hub.repo_listing("o/nothing")
    assert info.value.message == listing.value.message
    assert info.value.message.startswith(f"repository o/nothing not found on {fake.url}")
    with pytest.raises(hub.HubNotFoundError) as info:
        _remote("o/r", "missing.gguf", use_cache=False)
    assert info.value.message.startswith("o/r: 404") and "\n" not in info.value.message

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(hub.HubUnreachableError) as unreachable:
        _remote("o/r", use_cache=False)
    msg = unreachable.value.message
    assert msg.startswith(f"cannot reach http://127.0.0.1:{port} for o/r: ") and "\n" not in msg
    assert unreachable.value.hint is not None and "HF_HUB_OFFLINE" in unreachable.value.hint


def test_http_offline_reads_only_the_cache(server: _HubLike,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _padded_model(server.root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError) as info:
        _remote("files/repo")
    assert info.value.message == "cannot read m.gguf from files/repo: HF_HUB_OFFLINE is set"
    assert server.log == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = _remote("files/repo")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _remote("files/repo")
    assert cached.from_cache and cached == online and len(server.log) == 1


def test_http_truncated_empty_and_not_gguf(server: _HubLike) -> None:
    (server.root / "zip.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(gi.GgufError, match=r"^zip.gguf: not a GGUF file"):
        _remote("files/repo", "zip.gguf", use_cache=False)
    full = write_qwen_gguf(server.root / "t.gguf").read_bytes()
    (server.root / "t.gguf").write_bytes(full[:3000])
    with pytest.raises(gi.GgufTruncatedError, match=r"^t.gguf: truncated: .* the file has 3000 "
                                                     r"bytes$"):
        _remote("files/repo", "t.gguf", use_cache=False)
    (server.root / "e.gguf").write_bytes(b"")  # 416 to the first range
    with pytest.raises(gi.GgufError, match=r"^e.gguf: not a GGUF file \(it is empty\)$"):
        _remote("files/repo", "e.gguf", use_cache=False)
    whole = write_qwen_gguf(server.root / "cut.gguf")
    cut_at = gi.read_header(whole, use_cache=False).data_offset + 100
    (server.root / "cut.gguf").write_bytes(whole.read_bytes()[:cut_at])  # header whole, no weights
    with pytest.raises(gi.GgufTruncatedError, match=r"^cut.gguf: truncated: the tensor data"):
        _remote("files/repo", "cut.gguf", use_cache=False)


def test_http_cache_hit_makes_no_request(server: _HubLike) -> None:
    _padded_model(server.root)
    first = _remote("files/repo")
    assert len(server.log) == 1
    second = _remote("files/repo")
    assert len(server.log) == 1  # no request at all
    assert second.from_cache and second == first and second.range_supported is True
    url = hub.file_url("files/repo", "m.gguf")
    reader = functools.partial(hub.HubRangeReader, "files/repo")
    gi.read_header(url, open_reader=reader, etag=first.etag)  # the caller's etag still matches
    assert len(server.log) == 1
    gi.read_header(url, open_reader=reader, etag="sha256-of-a-newer-upload")  # no: fetch again
    assert len(server.log) == 2
    gi.read_header(url, open_reader=reader, etag="sha256-of-a-newer-upload")  # remembered
    assert len(server.log) == 2


def test_http_cache_expires_for_unpinned_urls_only(server: _HubLike,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _padded_model(server.root)
    _remote("files/repo")
    monkeypatch.setattr(gi, "URL_CACHE_TTL_S", -1)
    _remote("files/repo")
    assert len(server.log) == 2
    commit = "0123456789abcdef0123456789abcdef01234567"
    _remote("files/repo", revision=commit)
    _remote("files/repo", revision=commit)  # a commit's file never changes
    assert len(server.log) == 3


def test_a_url_needs_a_reader(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RangeReader"):
        gi.read_header("https://huggingface.co/o/r/resolve/main/m.gguf")


# --- Split sets ------------------------------------------------------------------------------

def test_split_set_of_three_parts_merges(tmp_path: Path) -> None:
    shape = QWEN3_0_6B
    specs = shape.tensor_specs("Q8_0")
    parts = write_split_header_only_gguf(tmp_path / "Qwen3-0.6B-Q8_0.gguf", specs, 3,
                                         metadata=shape.arch_metadata())
    assert [p.name for p in parts] == [f"Qwen3-0.6B-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for given in (parts[0], parts[2]):
        m = gi.read_model(given)
        assert [p.split_no for p in m.parts] == [0, 1, 2]
        assert m.split_count == 3
        assert m.architecture == "qwen3" and m.arch_value("block_count") == 28
        assert m.parts[1].architecture is None  # gguf-split keeps metadata in part 1 only
        assert [t.name for t in m.tensors] == [s.name for s in specs]
        assert {t.part for t in m.tensors} == {0, 1, 2}
        assert m.total_tensor_bytes() == sum(tensor_nbytes(s.shape, s.ggml_type) for s in specs)
        assert sorted(m.layer_bytes()) == list(range(28))
        assert m.file_size == sum(p.stat().st_size for p in parts)
        assert m.quant_label == "Q8_0"
    single = gi.read_header(parts[0], use_cache=False)
    assert single.split_count == 3 and len(single.tensors) < len(specs)

    parts[2].unlink()
    with pytest.raises(gi.GgufNotFoundError, match=r"no such file \(part 3 of 3 of a split"):
        gi.read_model(parts[0])


def test_single_file_model(tmp_path: Path) -> None:
    m = gi.read_model(write_qwen_gguf(tmp_path / "m.gguf"))
    assert len(m.parts) == 1 and m.tensors == m.first.tensors
    assert m.total_tensor_bytes() == m.first.total_tensor_bytes()


def test_split_over_http(server: _HubLike, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = QWEN3_0_6B
    specs = shape.tensor_specs("Q8_0")
    write_split_header_only_gguf(server.root / "q.gguf", specs, 3,
                                 metadata=shape.arch_metadata())
    parts = [f"q-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    m = hub.read_remote_model("files/repo", parts[1], use_cache=False)  # any part will do
    assert [t.name for t in m.tensors] == [s.name for s in specs] and m.range_supported is True
    assert [p.source for p in m.parts] == [hub.file_url("files/repo", p) for p in parts]
    assert [r["path"] for r in server.log] == [
        f"/files/repo/resolve/main/{p}" for p in (parts[1], parts[0], parts[2])]

    # Behind the CDN redirect each part is its own file: its own redirect, no token on the CDN.
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    server.log.clear()
    behind = hub.read_remote_model("redirect/repo", parts[0], use_cache=False)
    assert behind.tensors == m.tensors
    assert [(r["path"], r["auth"]) for r in server.log] == [
        step for p in parts for step in ((f"/redirect/repo/resolve/main/{p}", "Bearer hf_secret"),
                                         (f"/cdn/{p}", None))]


def test_split_over_http_with_a_missing_part(fake: fake_hub.FakeHub, tmp_path: Path) -> None:
    specs = QWEN3_0_6B.tensor_specs("Q8_0")
    local = write_split_header_only_gguf(tmp_path / "q.gguf", specs, 3,
                                         metadata=QWEN3_0_6B.arch_metadata())
    for part in local[:2]:
        fake.add_file("o/r", part.name, part)
    with pytest.raises(hub.HubNotFoundError) as info:  # the reader's class, with the part named
        hub.read_remote_model("o/r", local[0].name, use_cache=False)
    assert info.value.message.startswith("o/r: 404")
    assert info.value.message.endswith("(part 3 of 3 of a split model)")


def test_split_part_names() -> None:
    assert gi.split_part_names("https://h/r/resolve/main/Q4_K_M/x-00002-of-00003.gguf?a=1") == [
        f"https://h/r/resolve/main/Q4_K_M/x-0000{i}-of-00003.gguf?a=1" for i in (1, 2, 3)]
    assert gi.split_part_names("/m/x-00001-of-00002.gguf") == [
        "/m/x-00001-of-00002.gguf", "/m/x-00002-of-00002.gguf"]
    assert gi.split_part_names("/m/x.gguf") is None


# --- The fixtures themselves -----------------------------------------------------------------

def test_fixture_tensor_sets_per_architecture(tmp_path: Path) -> None:
    q3 = gi.read_header(write_qwen_gguf(tmp_path / "a.gguf", arch="qwen3"), use_cache=False)
    q2 = gi.read_header(write_qwen_gguf(tmp_path / "b.gguf", arch="qwen2", tied_embeddings=True),
                        use_cache=False)
    names3 = {t.name for t in q3.tensors}
    names2 = {t.name for t in q2.tensors}
    assert {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight", "output.weight"} <= names3
    assert not any(n.endswith(".bias") for n in names3)
    assert {"blk.1.attn_q.bias", "blk.1.attn_k.bias", "blk.1.attn_v.bias"} <= names2
    assert "output.weight" not in names2 and "blk.0.attn_q_norm.weight" not in names2
    assert len(q3.tensors) == 2 + 2 * 11 + 1


def test_fixture_is_deterministic_with_a_byte_level_tokenizer(tmp_path: Path) -> None:
    a = write_qwen_gguf(tmp_path / "a.gguf", seed=7, tensor_type="F16", vocab=400)
    b = write_qwen_gguf(tmp_path / "b.gguf", seed=7, tensor_type="F16", vocab=400)
    assert a.read_bytes() == b.read_bytes()
    reader = gguf.GGUFReader(a)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 400 and tokens[-1] == "[PAD399]"
    assert reader.fields["tokenizer.ggml.merges"].contents()[0] == "Ġ t"
    tok = byte_level_tokenizer()
    assert len(set(tok.tokens[:256])) == 256  # every byte has a token
    assert tokens[tok.eos_id] == "<|im_end|>"


@pytest.mark.parametrize(("arch", "tensor_type", "tied"), [
    ("qwen3", "F32", False),
    ("qwen2", "F16", True),
])
def test_fixture_loads_in_llama_cpp(tmp_path: Path, arch: str, tensor_type: str,
                                    tied: bool) -> None:
    """Where llama-cpp-python is installed: the synthetic model loads, tokenizes and decodes."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = write_qwen_gguf(tmp_path / "m.gguf", arch=arch, tensor_type=tensor_type,
                           tied_embeddings=tied)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_gpu_layers=0, verbose=False,
                          seed=1)
    assert llm.n_vocab() == 264
    tok = byte_level_tokenizer()
    ids = llm.tokenize(b"the cat in the hat\n", add_bos=False)
    assert [tok.tokens[i] for i in ids] == ["t", "he", "Ġ", "c", "a", "t", "Ġ", "in", "Ġthe",
                                             "Ġ", "h", "a", "t", "Ċ"]  # the merges apply
    assert llm.tokenize(b"<|im_start|>", add_bos=False, special=True) == [262]
    out = llm.create_completion("the", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1
    assert "<|im_start|>" in llm.metadata["tokenizer.chat_template"]
