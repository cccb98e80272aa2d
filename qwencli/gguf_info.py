"""Read a GGUF file's header: architecture, metadata and the tensor table, never the weights.

The memory plan needs exact tensor bytes per layer, and `qwen recommend` wants them before a
multi-GB download, so the header is read from a local file or by byte ranges of a remote one
(like gguf-parser-go) and parsed here with `struct`: the `gguf` package would pull in numpy, and
start-up time matters. Remote bytes come through a `RangeReader` the caller passes in (`hub`
makes them with huggingface_hub's HTTP session): this module does no networking itself.
The tokenizer arrays (150k tokens and merges in Qwen, most of a 6-10 MB header) are walked
over and kept only as an `ArraySummary` (type and length).

Parsed headers are cached as JSON under `cache_dir()/gguf/`, so a second look costs a stat
(local files) or nothing at all (URLs). A cache entry is untrusted too: it carries a digest of
what was written, and is decoded with the same bounds as a file; anything else is a miss, and the
file is parsed again.

Bounds. A header is untrusted input (a Hub file, a broken download, a hostile file), and every
count in it decides how long a loop runs or how much memory it takes, so the parser refuses,
before looping or allocating:

- more tensors (1,000,000) or metadata pairs (100,000) than any model has (a Qwen3-235B file
  has about 1,100 tensors and 50 pairs), or than the file's bytes can hold (24 bytes per
  tensor row, 13 per pair at least);
- keys over 65,535 bytes; tensor names over 63 bytes (llama.cpp's GGML_MAX_NAME, with its NUL:
  it refuses longer ones); string values over 16 MiB (Qwen's chat templates are a few KB, the
  largest seen around 100 KB) or past the end of the file;
- arrays longer than the rest of the file can hold, and arrays nested more than 4 deep:
  llama.cpp reads no nested array at all, gguf-py writes them, and the limit keeps the walk
  (and the cache's JSON) from recursing as deep as a file chooses;
- a key or a tensor name that appears twice (llama.cpp refuses both), a tensor with more than
  4 dimensions or more elements than ggml's int64 counts.

What the numbers *mean* (layers, heads, context...) is checked where they are used, in
`shapes.shape_from_gguf`, with `GgufValueError`.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from qwencli import gguf_names
from qwencli.errors import QwenError
from qwencli.fileio import atomic_write
from qwencli.paths import cache_dir

__all__ = [
    "FILE_TYPES",
    "GGML_TYPES",
    "REMOVED_GGML_TYPES",
    "ArraySummary",
    "GgufError",
    "GgufHeader",
    "GgufModel",
    "GgufNotFoundError",
    "GgufTruncatedError",
    "GgufValueError",
    "OpenReader",
    "RangeReader",
    "RangeReply",
    "TensorInfo",
    "display_text",
    "file_label",
    "file_type_label",
    "ggml_type_info",
    "read_header",
    "read_model",
    "split_part_names",
]

# --- The format's tables ---------------------------------------------------------------------

#: ggml type id -> (name, elements per block, bytes per block). Matches gguf-py's
#: GGML_QUANT_SIZES (a test checks every type it knows), plus the ARM-repacked Q4_0_4_4 family
#: that llama.cpp removed (files with them still circulate; see REMOVED_GGML_TYPES).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    31: ("Q4_0_4_4", 32, 18),
    32: ("Q4_0_4_8", 32, 18),
    33: ("Q4_0_8_8", 32, 18),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    36: ("IQ4_NL_4_4", 32, 18),
    37: ("IQ4_NL_4_8", 32, 18),
    38: ("IQ4_NL_8_8", 32, 18),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

#: Type names that current llama.cpp refuses to load (it repacks Q4_0 at load time instead).
REMOVED_GGML_TYPES = frozenset(GGML_TYPES[i][0] for i in (31, 32, 33, 36, 37, 38))

#: general.file_type (llama_ftype) -> the quant label people use in file names.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}
_FTYPE_GUESSED = 1024  # llama.cpp ORs this in when it guessed the type; never meaningful here

# GGUF metadata value types.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
                   10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
VALUE_TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
                    6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
                    12: "FLOAT64"}
_VALUE_TYPE_IDS = {v: k for k, v in VALUE_TYPE_NAMES.items()}

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS

# Guards against corrupt headers asking for absurd allocations or loops (see the docstring).
_MAX_TENSORS = 1_000_000
_MAX_KV = 100_000
_MAX_KEY_BYTES = 65_535
_MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 with the NUL; llama.cpp refuses longer names
_MAX_STRING_BYTES = 16 * 1024 * 1024  # one string value: chat templates are a few KB
_MAX_ARRAY_DEPTH = 4  # arrays inside arrays; llama.cpp reads none
_MAX_ELEMENTS = 2**63 - 1  # ggml counts a tensor's elements in an int64
_MIN_TENSOR_ROW = 8 + 4 + 4 + 8  # name length, n_dims, type, offset: bytes per tensor at least
_MIN_KV = 8 + 4 + 1  # key length, value type, a uint8: bytes per metadata pair at least
_MAX_STRING_UNKNOWN_SIZE = 1 << 30  # when the file size is not known (a stream without length)

#: Arrays kept only as (type, length): the tokenizer tables, and any array longer than this.
_SUMMARY_ONLY_KEYS = frozenset({
    "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores", "tokenizer.ggml.precompiled_charsmap", "tokenizer.ggml.added_tokens",
})
_MAX_KEPT_ARRAY = 1024

# Reading: first chunk sizes (a local read is cheap, an HTTP round trip is not), then doubling.
_LOCAL_FIRST_CHUNK = 64 * 1024
_HTTP_FIRST_CHUNK = 2 * 1024 * 1024

_CACHE_FORMAT = 2  # 2: entries carry a digest of their header and are decoded with bounds
#: A URL-keyed cache entry is trusted this long unless the URL pins a commit (immutable).
URL_CACHE_TTL_S = 24 * 3600
_PINNED_REVISION = re.compile(r"/resolve/[0-9a-f]{40}/")

_LAYER_NAME = re.compile(r"^blk\.(\d+)\.")


# --- Errors ----------------------------------------------------------------------------------

class GgufError(QwenError):
    """The file is not a readable GGUF (bad magic, truncated, corrupt) or cannot be read."""


class GgufNotFoundError(GgufError):
    """No such local file (a remote reader raises its own errors)."""


class GgufTruncatedError(GgufError):
    """The file ends before its header or its tensor data does: an incomplete download."""


class GgufValueError(GgufError):
    """A header value outside what any real model has (a layer count of 4e9, zero heads, a NaN
    context, arrays nested 1000 deep): planning with it would hang or print nonsense, and
    llama.cpp could abort on it. The message names the file, the key and the value."""


# --- Results ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArraySummary:
    """A metadata array: its element type and length; the values only when small."""

    element_type: str
    length: int
    values: tuple[Any, ...] | None = None  # None when skipped (tokenizer tables, long arrays)


MetaValue = str | int | float | bool | ArraySummary


@dataclass(frozen=True)
class TensorInfo:
    """One row of the tensor table. `shape` is in GGUF order: ne[0] (the row length) first."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_bytes: int
    offset: int  # from the start of this part's data section
    part: int = 0  # split.no of the file that holds it (0 for a single file)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def layer(self) -> int | None:
        """The block index of `blk.N.*` tensors; None for embeddings, output and the like."""
        m = _LAYER_NAME.match(self.name)
        return int(m.group(1)) if m else None


class _ModelFacts:
    """Questions asked of the metadata and tensor table; shared by one file and a split set."""

    metadata: Mapping[str, MetaValue]
    architecture: str | None
    tensors: tuple[TensorInfo, ...]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_value(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}`, e.g. `block_count`, `attention.head_count_kv`."""
        if not self.architecture:
            return default
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def layer_bytes(self) -> dict[int, int]:
        """Tensor bytes per transformer block (`blk.N.`), the unit of GPU offload."""
        out: dict[int, int] = {}
        for t in self.tensors:
            layer = t.layer
            if layer is not None:
                out[layer] = out.get(layer, 0) + t.n_bytes
        return dict(sorted(out.items()))

    def non_layer_bytes(self) -> dict[str, int]:
        """Bytes of tensors outside the blocks, by name stem: token_embd, output, output_norm..."""
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.layer is None:
                stem = t.name.split(".", 1)[0]
                out[stem] = out.get(stem, 0) + t.n_bytes
        return out

    def total_tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> int | None:
        """general.file_type (llama_ftype), e.g. 15 for Q4_K_M; None when absent."""
        value = self.metadata.get("general.file_type")
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value & ~_FTYPE_GUESSED

    @property
    def quant_label(self) -> str | None:
        """The quant label: "Q4_K_M" from general.file_type, else the commonest matrix type."""
        ft = self.file_type
        if ft is not None:
            return file_type_label(ft)
        by_type: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                by_type[t.ggml_type] = by_type.get(t.ggml_type, 0) + t.n_bytes
        return max(by_type, key=lambda k: by_type[k]) if by_type else None

    @property
    def split_count(self) -> int:
        value = self.metadata.get("split.count", 1)
        return value if isinstance(value, int) and value > 0 else 1

    @property
    def split_no(self) -> int:
        value = self.metadata.get("split.no", 0)
        return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class GgufHeader(_ModelFacts):
    """One GGUF file's header. The fetch facts at the end do not take part in equality."""

    version: int
    architecture: str | None
    metadata: Mapping[str, MetaValue]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    file_size: int | None
    source: str  # absolute path, or the remote location (URL) as given
    byte_order: str = "little"
    etag: str | None = None
    range_supported: bool | None = field(default=None, compare=False)  # None for local files
    from_cache: bool = field(default=False, compare=False)
    bytes_read: int = field(default=0, compare=False)  # header bytes fetched (0 from cache)
    requests: int = field(default=0, compare=False)  # remote requests, redirects included

    def __hash__(self) -> int:  # metadata is a mapping; these fields identify a header
        return hash((self.source, self.version, self.data_offset, self.tensors))

    @property
    def header_size(self) -> int:
        """Bytes before the tensor data (metadata and tensor table, with padding)."""
        return self.data_offset


@dataclass(frozen=True)
class GgufModel(_ModelFacts):
    """A model as llama.cpp loads it: one file, or every part of a split set, tables merged."""

    parts: tuple[GgufHeader, ...]
    tensors: tuple[TensorInfo, ...]

    @property
    def first(self) -> GgufHeader:
        return self.parts[0]

    @property
    def metadata(self) -> Mapping[str, MetaValue]:  # type: ignore[override]
        return self.parts[0].metadata

    @property
    def architecture(self) -> str | None:  # type: ignore[override]
        return self.parts[0].architecture

    @property
    def source(self) -> str:
        return self.parts[0].source

    @property
    def file_size(self) -> int | None:
        """Sum over the parts; None when any part's size is unknown."""
        sizes = [p.file_size for p in self.parts]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def range_supported(self) -> bool | None:
        flags = [p.range_supported for p in self.parts if p.range_supported is not None]
        return None if not flags else all(flags)


def ggml_type_info(type_id: int) -> tuple[str, int, int] | None:
    """(name, block size, type size) for a ggml type id, None when unknown."""
    return GGML_TYPES.get(type_id)


def file_type_label(file_type: int) -> str:
    """The quant label for a llama_ftype value ("Q4_K_M"), or "ftype N" when unknown."""
    return FILE_TYPES.get(file_type & ~_FTYPE_GUESSED, f"ftype {file_type}")


# --- Byte sources ----------------------------------------------------------------------------

class _Source(Protocol):
    size: int | None
    bytes_read: int

    def read(self, n: int) -> bytes:
        """The next up to n bytes, sequentially from byte 0; b'' at the end of the file."""
        ...


class _FileSource:
    def __init__(self, f: Any, size: int) -> None:
        self._f = f
        self.size: int | None = size
        self.bytes_read = 0

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self.bytes_read += len(data)
        return data


@dataclass(frozen=True)
class RangeReply:
    """What one `RangeReader.read_range` call got."""

    data: bytes  # the asked bytes; fewer only where the file ends (b'' past its end)
    total_size: int | None = None  # the whole file's size, when the server said it
    etag: str | None = None  # as sent (quotes, W/ and all); for the Hub, its X-Linked-Etag
    range_honoured: bool = True  # False: the server sent the whole file and the reader skipped
    requests: int = 1  # requests this read cost, redirects included; 0 when a stream went on


class RangeReader(Protocol):
    """Byte ranges of one remote file.

    This module knows no transport: the caller's reader does the HTTP (session, token,
    proxies, redirects, errors), so the whole CLI has one HTTP stack and this module stays
    below it. Its errors (QwenError subclasses) pass through unchanged.
    """

    def read_range(self, start: int, n: int) -> RangeReply:
        """Bytes [start, start + n). Calls come in order, each starting where the last one
        ended, so a reader whose server ignored Range can go on reading the same response."""
        ...

    def close(self) -> None:
        """Drop what is still open (the rest of a whole-file response): the header is read."""
        ...


#: Opens a reader for a location: the one given, or a sibling part of its split set.
OpenReader = Callable[[str], RangeReader]


class _RemoteSource:
    """Sequential reads over a RangeReader, with the facts a header reports."""

    def __init__(self, reader: RangeReader) -> None:
        self._reader = reader
        self.size: int | None = None
        self.etag: str | None = None
        self.range_supported: bool | None = None
        self.requests = 0
        self.bytes_read = 0

    def read(self, n: int) -> bytes:
        reply = self._reader.read_range(self.bytes_read, n)
        self.requests += reply.requests
        if reply.total_size is not None:
            self.size = reply.total_size
        if self.etag is None and reply.etag:
            self.etag = _clean_etag(reply.etag)
        self.range_supported = reply.range_honoured and self.range_supported is not False
        self.bytes_read += len(reply.data)
        return reply.data


def _display_name(location: str) -> str:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    return name or parts.netloc or location


def file_label(source: str) -> str:
    """How a message names a header's file: its name, or a URL's last part."""
    return display_text(_display_name(source) if _is_url(source) else os.path.basename(source)
                        or source, 120)


def display_text(text: str, limit: int = 80) -> str:
    """A string from a file as it may appear in a one-line message: control characters
    escaped (a key holding a newline or a terminal escape stays one harmless line), long
    ones cut."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _reason(e: object) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def _clean_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


# --- The parser ------------------------------------------------------------------------------

class _Parser:
    """Walks the header over a growing buffer; the source is asked for more as needed."""

    def __init__(self, source: _Source, name: str, first_chunk: int) -> None:
        self.src = source
        self.name = name
        self.first_chunk = first_chunk
        self.buf = bytearray()
        self.pos = 0
        self._set_order("<")

    def _set_order(self, prefix: str) -> None:
        self.order = prefix
        self.u32 = struct.Struct(prefix + "I")
        self.u64 = struct.Struct(prefix + "Q")
        self.scalars = {t: struct.Struct(prefix + f) for t, f in _SCALAR_FORMATS.items()}

    # buffer -----------------------------------------------------------------------------------

    def _fill(self, end: int) -> None:
        while len(self.buf) < end:
            have = len(self.buf)
            want = max(end - have, have, self.first_chunk)
            size = self.src.size
            if size is not None:
                want = min(want, size - have)
                if want <= 0:
                    raise self._truncated(end)
            chunk = self.src.read(want)
            if not chunk:
                raise self._truncated(end)
            self.buf += chunk

    def _truncated(self, end: int) -> GgufTruncatedError:
        size = self.src.size if self.src.size is not None else len(self.buf)
        return GgufTruncatedError(f"{self.name}: truncated: the header needs at least {end} "
                                  f"bytes but the file has {size} bytes")

    def _remaining(self) -> int:
        size = self.src.size
        return size - self.pos if size is not None else _MAX_STRING_UNKNOWN_SIZE

    def _corrupt(self, what: str) -> GgufError:
        size = f" (the file has {self.src.size} bytes)" if self.src.size is not None else ""
        return GgufError(f"{self.name}: corrupt header: {what} at byte {self.pos}{size}")

    def _bound(self, what: str, why: str) -> GgufValueError:
        """A value past one of the module's bounds: the file, what, and why it is refused."""
        return GgufValueError(f"{self.name}: {what}, {why}")

    # primitives -------------------------------------------------------------------------------

    def read_u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            self._fill(self.pos + 4)
        (v,) = self.u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def read_u64(self) -> int:
        if self.pos + 8 > len(self.buf):
            self._fill(self.pos + 8)
        (v,) = self.u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def read_string(self, what: str, limit: int = _MAX_STRING_BYTES) -> str:
        n = self.read_u64()
        if n > self._remaining():
            raise self._corrupt(f"{what} claims {n} bytes")
        if n > limit:
            raise self._bound(f"{what} is {n:,} bytes long", f"more than {limit:,}")
        end = self.pos + n
        if end > len(self.buf):
            self._fill(end)
        s = self.buf[self.pos:end].decode("utf-8", "replace")
        self.pos = end
        return s

    def read_value(self, vtype: int, key: str) -> MetaValue:
        st = self.scalars.get(vtype)
        if st is not None:
            end = self.pos + st.size
            if end > len(self.buf):
                self._fill(end)
            (v,) = st.unpack_from(self.buf, self.pos)
            self.pos = end
            return v
        if vtype == _STRING:
            return self.read_string(f"the string value of {key}")
        if vtype == _ARRAY:
            return self.read_array(key, keep=key not in _SUMMARY_ONLY_KEYS)
        raise self._corrupt(f"unknown value type {vtype} for {key}")

    def _array_head(self, key: str, depth: int) -> tuple[int, int, str]:
        """Element type, length and type name of an array, checked before anything is read."""
        if depth > _MAX_ARRAY_DEPTH:
            raise self._bound(f"{key} nests arrays {depth} deep",
                              f"more than {_MAX_ARRAY_DEPTH} levels")
        etype = self.read_u32()
        n = self.read_u64()
        type_name = VALUE_TYPE_NAMES.get(etype)
        if type_name is None:
            raise self._corrupt(f"unknown array element type {etype} for {key}")
        min_size = (self.scalars[etype].size if etype in self.scalars
                    else 8 if etype == _STRING else 12)
        if n * min_size > self._remaining():
            raise self._corrupt(f"array {key} claims {n} elements")
        return etype, n, type_name

    def read_array(self, key: str, *, keep: bool, depth: int = 1) -> ArraySummary:
        etype, n, type_name = self._array_head(key, depth)
        if not keep or n > _MAX_KEPT_ARRAY:
            self.skip_array(etype, n, key, depth)
            return ArraySummary(type_name, n, None)
        values: tuple[Any, ...]
        if etype in self.scalars:
            fmt = _SCALAR_FORMATS[etype]
            nbytes = n * self.scalars[etype].size
            if self.pos + nbytes > len(self.buf):
                self._fill(self.pos + nbytes)
            values = struct.unpack_from(f"{self.order}{n}{fmt}", self.buf, self.pos)
            self.pos += nbytes
        elif etype == _STRING:
            values = tuple(self.read_string(f"an element of {key}") for _ in range(n))
        else:
            values = tuple(self.read_array(key, keep=keep, depth=depth + 1) for _ in range(n))
        return ArraySummary(type_name, n, values)

    def skip_array(self, etype: int, n: int, key: str, depth: int) -> None:
        """Step over an array without building it; the string loop is the hot path."""
        st = self.scalars.get(etype)
        if st is not None:
            self.pos += n * st.size
            if self.pos > len(self.buf):
                self._fill(self.pos)
            return
        if etype == _STRING:
            buf, pos, unpack = self.buf, self.pos, self.u64.unpack_from
            limit = self.src.size if self.src.size is not None else _MAX_STRING_UNKNOWN_SIZE
            for _ in range(n):
                if pos + 8 > len(buf):
                    self.pos = pos
                    self._fill(pos + 8)
                    buf = self.buf
                (length,) = unpack(buf, pos)
                if length > limit or length > _MAX_STRING_BYTES:
                    self.pos = pos
                    raise self._corrupt(f"a string in {key} claims {length} bytes")
                pos += 8 + length
            self.pos = pos
            if pos > len(self.buf):
                self._fill(pos)
            return
        for _ in range(n):  # nested arrays
            sub_type, sub_n, _name = self._array_head(key, depth + 1)
            self.skip_array(sub_type, sub_n, key, depth + 1)

    # the header -------------------------------------------------------------------------------

    def parse(self) -> dict[str, Any]:
        try:
            self._fill(4)
        except GgufTruncatedError:
            if not self.buf:
                raise GgufError(f"{self.name}: not a GGUF file (it is empty)") from None
        magic = bytes(self.buf[:4])
        if magic != GGUF_MAGIC:
            raise GgufError(f"{self.name}: not a GGUF file (starts with {magic!r})")
        self.pos = 4
        raw = self.read_u32()
        version = raw
        if raw & 0xFFFF == 0 and raw != 0:  # written big-endian (GGUF v3 allows it)
            self._set_order(">")
            version = struct.unpack(">I", struct.pack("<I", raw))[0]
        if version == 1:
            raise GgufError(f"{self.name}: GGUF version 1 is no longer supported; "
                            "convert the model again with a current llama.cpp")
        if version not in (2, 3):
            raise GgufError(f"{self.name}: unsupported GGUF version {version} "
                            "(this qwen reads versions 2 and 3)")
        n_tensors = self.read_u64()
        n_kv = self.read_u64()
        if n_tensors > _MAX_TENSORS:
            raise self._corrupt(f"absurd tensor count {n_tensors}")
        if n_kv > _MAX_KV:
            raise self._corrupt(f"absurd metadata count {n_kv}")
        if n_tensors * _MIN_TENSOR_ROW + n_kv * _MIN_KV > self._remaining():
            raise self._corrupt(f"{n_tensors:,} tensors and {n_kv:,} metadata pairs cannot "
                                "fit in the file")

        metadata: dict[str, MetaValue] = {}
        for _ in range(n_kv):
            key = self.read_string("a metadata key", _MAX_KEY_BYTES)
            if key in metadata:
                raise self._corrupt(f"metadata key {display_text(key)} appears twice")
            vtype = self.read_u32()
            metadata[key] = self.read_value(vtype, display_text(key))

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0
                or alignment & (alignment - 1)):
            raise GgufError(f"{self.name}: corrupt header: general.alignment is {alignment!r}, "
                            "not a power of two")
        split_no = metadata.get("split.no", 0)
        part = split_no if isinstance(split_no, int) and not isinstance(split_no, bool) else 0

        tensors: list[TensorInfo] = []
        unknown: list[int] = []
        names: set[str] = set()
        for _ in range(n_tensors):
            raw_name = self.read_string("a tensor name", _MAX_KEY_BYTES)
            name = display_text(raw_name)
            if len(raw_name.encode("utf-8")) > _MAX_TENSOR_NAME_BYTES:
                raise self._bound(f"tensor name {name} is {len(raw_name.encode('utf-8'))} "
                                  "bytes long", f"more than llama.cpp's "
                                  f"{_MAX_TENSOR_NAME_BYTES}")
            if raw_name in names:
                raise self._corrupt(f"tensor {name} appears twice")
            names.add(raw_name)
            n_dims = self.read_u32()
            if n_dims > _MAX_DIMS:
                raise self._corrupt(f"tensor {name} has {n_dims} dimensions")
            end = self.pos + 8 * n_dims
            if end > len(self.buf):
                self._fill(end)
            shape = struct.unpack_from(f"{self.order}{n_dims}Q", self.buf, self.pos)
            self.pos = end
            type_id = self.read_u32()
            offset = self.read_u64()
            n_elements = 1
            for d in shape:
                n_elements *= d
            if n_elements > _MAX_ELEMENTS or any(d > _MAX_ELEMENTS for d in shape):
                raise self._bound(f"tensor {name} has shape {list(shape)}",
                                  "more elements than ggml can count")
            name = raw_name
            info = GGML_TYPES.get(type_id)
            if info is None:
                unknown.append(len(tensors))
                tensors.append(TensorInfo(name, f"TYPE_{type_id}", shape, 0, offset, part))
                continue
            type_name, block, type_size = info
            if shape and shape[0] % block:
                raise self._corrupt(f"tensor {display_text(name)}: row length {shape[0]} is not "
                                    f"a multiple of the {type_name} block size {block}")
            tensors.append(TensorInfo(name, type_name, shape, n_elements // block * type_size,
                                      offset, part))

        header_end = self.pos
        data_offset = -(-header_end // alignment) * alignment
        size = self.src.size
        if unknown:
            tensors = self._sizes_from_offsets(tensors, unknown, data_offset)
        if size is not None and tensors:
            data_end = data_offset + max(t.offset + t.n_bytes for t in tensors)
            if data_end > size:
                raise GgufTruncatedError(f"{self.name}: truncated: the tensor data ends at byte "
                                f"{data_end} but the file has {size} bytes "
                                "(an incomplete download?)")
        arch = metadata.get("general.architecture")
        return {
            "version": version,
            "architecture": arch if isinstance(arch, str) else None,
            "metadata": metadata,
            "tensors": tuple(tensors),
            "alignment": alignment,
            "data_offset": data_offset,
            "file_size": size,
            "byte_order": "little" if self.order == "<" else "big",
        }

    def _sizes_from_offsets(self, tensors: list[TensorInfo], unknown: list[int],
                            data_offset: int) -> list[TensorInfo]:
        """A type newer than this table: its size is the gap to the next tensor's data."""
        starts = sorted({t.offset for t in tensors})
        size = self.src.size
        for i in unknown:  # a bisection each: a million such tensors must not take n^2 steps
            t = tensors[i]
            later = bisect.bisect_right(starts, t.offset)
            if later < len(starts):
                n_bytes = starts[later] - t.offset
            elif size is not None:
                n_bytes = size - data_offset - t.offset
            else:
                raise GgufError(f"{self.name}: tensor {display_text(t.name)} has unknown ggml type "
                                f"{t.ggml_type} and its size cannot be told")
            tensors[i] = TensorInfo(t.name, t.ggml_type, t.shape, max(n_bytes, 0), t.offset,
                                    t.part)
        return tensors


# --- Cache -----------------------------------------------------------------------------------

def _cache_file(key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return cache_dir() / "gguf" / f"{digest}.json"


def _encode_meta(value: MetaValue) -> Any:
    if isinstance(value, ArraySummary):
        values = None if value.values is None else [_encode_meta(v) for v in value.values]
        return {"$array": [value.element_type, value.length, values]}
    return value


def _decode_meta(value: Any, depth: int = 0) -> MetaValue:
    """A cached metadata value, held to the parser's bounds; ValueError for anything else."""
    if isinstance(value, dict):
        if depth >= _MAX_ARRAY_DEPTH or set(value) != {"$array"}:
            raise ValueError("bad cached array")
        element_type, length, values = value["$array"]
        if (element_type not in _VALUE_TYPE_IDS or not _is_count(length)
                or (values is not None and (not isinstance(values, list)
                                            or len(values) != length
                                            or length > _MAX_KEPT_ARRAY))):
            raise ValueError("bad cached array")
        decoded = None if values is None else tuple(_decode_meta(v, depth + 1) for v in values)
        return ArraySummary(element_type, length, decoded)
    if isinstance(value, str):
        if len(value) > _MAX_STRING_BYTES:
            raise ValueError("cached string too long")
        return value
    if isinstance(value, bool | float) or (isinstance(value, int)
                                           and -(2**63) <= value < 2**64):
        return value
    raise ValueError(f"bad cached metadata value {value!r}")


def _is_count(value: Any, limit: int = _MAX_ELEMENTS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


_GGML_TYPE_IDS = {name: type_id for type_id, (name, _b, _s) in GGML_TYPES.items()}
_UNKNOWN_TYPE_NAME = re.compile(r"^TYPE_\d{1,10}$")


def _decode_tensor(row: Any) -> TensorInfo:
    """A cached tensor row, checked as the parser checks a file's: ValueError when it fails."""
    name, type_name, shape, n_bytes, offset, part = row
    if (not isinstance(name, str) or len(name.encode("utf-8")) > _MAX_TENSOR_NAME_BYTES
            or not isinstance(type_name, str) or not isinstance(shape, list)
            or len(shape) > _MAX_DIMS or not all(_is_count(d) for d in shape)
            or not _is_count(n_bytes) or not _is_count(offset, 2**64 - 1)
            or not isinstance(part, int) or isinstance(part, bool)):
        raise ValueError("bad cached tensor")
    n_elements = 1
    for d in shape:
        n_elements *= d
    if n_elements > _MAX_ELEMENTS:
        raise ValueError("bad cached tensor")
    type_id = _GGML_TYPE_IDS.get(type_name)
    if type_id is not None:
        _name, block, type_size = GGML_TYPES[type_id]
        if (shape and shape[0] % block) or n_bytes != n_elements // block * type_size:
            raise ValueError("cached tensor size disagrees with its shape")
    elif not _UNKNOWN_TYPE_NAME.match(type_name):
        raise ValueError("bad cached tensor type")
    return TensorInfo(name, type_name, tuple(shape), n_bytes, offset, part)


def _header_to_json(h: GgufHeader) -> dict[str, Any]:
    return {
        "version": h.version, "architecture": h.architecture,
        "metadata": {k: _encode_meta(v) for k, v in h.metadata.items()},
        "tensors": [[t.name, t.ggml_type, list(t.shape), t.n_bytes, t.offset, t.part]
                    for t in h.tensors],
        "alignment": h.alignment, "data_offset": h.data_offset, "file_size": h.file_size,
        "source": h.source, "byte_order": h.byte_order, "etag": h.etag,
        "range_supported": h.range_supported,
    }


def _header_from_json(d: Mapping[str, Any]) -> GgufHeader:
    """A cached header, decoded with the parser's bounds; ValueError (or the like) when an
    entry was edited, cut short or written by something else."""
    version, arch, meta = d["version"], d["architecture"], d["metadata"]
    alignment, data_offset, file_size = d["alignment"], d["data_offset"], d["file_size"]
    if (version not in (2, 3) or not (arch is None or isinstance(arch, str))
            or not isinstance(meta, dict) or len(meta) > _MAX_KV
            or not isinstance(d["tensors"], list) or len(d["tensors"]) > _MAX_TENSORS
            or not _is_count(alignment) or alignment == 0 or alignment & (alignment - 1)
            or not _is_count(data_offset) or data_offset % alignment
            or not (file_size is None or _is_count(file_size))
            or not isinstance(d["source"], str) or d["byte_order"] not in ("little", "big")
            or not (d["etag"] is None or isinstance(d["etag"], str))
            or d["range_supported"] not in (None, True, False)):
        raise ValueError("bad cached header")
    if any(not isinstance(k, str) or len(k) > _MAX_KEY_BYTES for k in meta):
        raise ValueError("bad cached key")
    metadata = {k: _decode_meta(v) for k, v in meta.items()}
    if metadata.get("general.architecture") != arch and isinstance(
            metadata.get("general.architecture"), str):
        raise ValueError("cached architecture disagrees with its metadata")
    tensors = tuple(_decode_tensor(row) for row in d["tensors"])
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError("a cached tensor name appears twice")
    if file_size is not None and tensors and (
            data_offset + max(t.offset + t.n_bytes for t in tensors) > file_size):
        raise ValueError("cached tensors end past the file")
    return GgufHeader(
        version=version, architecture=arch, metadata=MappingProxyType(metadata),
        tensors=tensors, alignment=alignment, data_offset=data_offset, file_size=file_size,
        source=d["source"], byte_order=d["byte_order"], etag=d["etag"],
        range_supported=d["range_supported"], from_cache=True,
    )


def _digest(header_json: Any) -> str:
    """What a cache entry's header must hash to: an entry edited by hand or cut short is a miss
    (its numbers would otherwise be believed over the file's)."""
    text = json.dumps(header_json, separators=(",", ":"), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_load(key: str, accept: Callable[[Mapping[str, Any]], bool]) -> GgufHeader | None:
    """The cached header for key when `accept(entry)` says it is still valid and it decodes
    within bounds; junk of any kind (deep nesting included) is a miss."""
    try:
        with open(_cache_file(key), encoding="utf-8") as f:
            entry = json.load(f)
        if (not isinstance(entry, dict) or entry.get("format") != _CACHE_FORMAT
                or entry.get("key") != key or not accept(entry)
                or entry.get("digest") != _digest(entry["header"])):
            return None
        return _header_from_json(entry["header"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
            OverflowError, IndexError):
        return None


def _cache_save(key: str, header: GgufHeader, **validators: Any) -> None:
    """Best effort: a read-only or full cache directory only costs the next read."""
    path = _cache_file(key)
    header_json = _header_to_json(header)
    entry = {"format": _CACHE_FORMAT, "key": key, "saved_at": time.time(), **validators,
             "digest": _digest(header_json), "header": header_json}
    with contextlib.suppress(OSError, ValueError):
        atomic_write(path, json.dumps(entry, separators=(",", ":")))


# --- Entry points ----------------------------------------------------------------------------

def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def read_header(location: str | Path, *, open_reader: OpenReader | None = None,
                use_cache: bool = True, etag: str | None = None) -> GgufHeader:
    """Parse one GGUF file's header: a local path, or a remote location read by `open_reader`.

    `etag`, when the caller knows it (the Hub's file listing gives the LFS sha256), makes a
    cached remote entry valid only for that exact file. Raises GgufError, or the reader's error.
    """
    text = str(location)
    if open_reader is not None:
        return _read_remote(text, open_reader, use_cache, etag)
    if _is_url(text):
        raise ValueError(f"{text}: a URL is read through a RangeReader (pass open_reader, or use "
                         "qwencli.hub.read_remote_model)")
    return _read_local(Path(text), use_cache)


def _read_local(path: Path, use_cache: bool) -> GgufHeader:
    name = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GgufNotFoundError(f"{name}: no such file") from None
    except OSError as e:
        raise GgufError(f"{name}: cannot read: {e.strerror or _reason(e)}") from None
    if path.is_dir():
        raise GgufError(f"{name}: is a directory, not a GGUF file")
    source = os.path.abspath(path)
    key = "file:" + os.path.realpath(path)
    if use_cache:
        cached = _cache_load(key, lambda e: e.get("size") == st.st_size
                             and e.get("mtime_ns") == st.st_mtime_ns)
        if cached is not None:  # the same file may be reached by another path (HF symlinks)
            return cached if cached.source == source else replace(cached, source=source)
    try:
        with open(path, "rb") as f:
            src = _FileSource(f, st.st_size)
            fields = _Parser(src, name, _LOCAL_FIRST_CHUNK).parse()
    except OSError as e:
        raise GgufError(f"{name}: cannot read: {e.strerror or _reason(e)}") from None
    header = GgufHeader(**{**fields, "metadata": MappingProxyType(fields["metadata"])},
                        source=source, bytes_read=src.bytes_read)
    if use_cache:
        _cache_save(key, header, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return header


def _read_remote(location: str, open_reader: OpenReader, use_cache: bool,
                 etag: str | None) -> GgufHeader:
    key = "url:" + location
    want = _clean_etag(etag) if etag else None

    def still_valid(entry: Mapping[str, Any]) -> bool:
        if want is not None:
            return entry.get("etag") == want
        if _PINNED_REVISION.search(location):
            return True
        age = time.time() - float(entry.get("saved_at", 0))
        return 0 <= age < URL_CACHE_TTL_S  # NaN, or a time in the future, is no fresh entry

    if use_cache:
        cached = _cache_load(key, still_valid)
        if cached is not None:
            return cached
    name = _display_name(location)
    reader = open_reader(location)
    src = _RemoteSource(reader)
    try:
        fields = _Parser(src, name, _HTTP_FIRST_CHUNK).parse()
    finally:
        reader.close()
    header = GgufHeader(**{**fields, "metadata": MappingProxyType(fields["metadata"])},
                        source=location, etag=src.etag, range_supported=src.range_supported,
                        bytes_read=src.bytes_read, requests=src.requests)
    if use_cache:
        # The caller's etag when given: it is what the next call will compare against.
        _cache_save(key, header, etag=want or src.etag, size=src.size)
    return header


def split_part_names(path_or_url: str | Path) -> list[str] | None:
    """All part names of a `-0000k-of-0000N.gguf` set (query strings kept), else None."""
    text = str(path_or_url)
    if _is_url(text):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(text)
        head, _, last = parts.path.rpartition("/")
        names = _split_names(last)
        if names is None:
            return None
        return [urlunsplit(parts._replace(path=f"{head}/{n}")) for n in names]
    p = Path(text)
    names = _split_names(p.name)
    return None if names is None else [str(p.with_name(n)) for n in names]


def _split_names(filename: str) -> list[str] | None:
    info = gguf_names.split_info(filename)
    return None if info is None else gguf_names.split_names(filename, info[2])


def read_model(location: str | Path, *, open_reader: OpenReader | None = None,
               use_cache: bool = True) -> GgufModel:
    """Read a model's header(s): one file, or all parts of a split set with tables merged.

    Any part may be given; the metadata comes from part 1, as llama.cpp reads it. Remote parts
    are opened with `open_reader` too, by their sibling URLs.
    """
    first = read_header(location, open_reader=open_reader, use_cache=use_cache)
    count = first.split_count
    if count <= 1:
        return GgufModel(parts=(first,), tensors=first.tensors)
    text = str(location)
    label = _display_name(text) if open_reader is not None else text
    names = split_part_names(text)
    if names is None or len(names) != count:
        raise GgufError(f"{label}: split.count is {count} but the file name does not end in "
                        f"-00001-of-{count:05d}.gguf, so the other parts cannot be found")
    parts: list[GgufHeader] = []
    for i, part_name in enumerate(names):
        if i == first.split_no:
            part = first
        else:
            try:
                part = read_header(part_name, open_reader=open_reader, use_cache=use_cache)
            except QwenError as e:  # the reader's own class (HubNotFoundError...) is kept
                e.message = f"{e.message} (part {i + 1} of {count} of a split model)"
                e.args = (e.message,)
                raise
        if part.split_no != i or part.split_count != count:
            raise GgufError(f"{part_name}: split.no/split.count are {part.split_no}/"
                            f"{part.split_count}, expected {i}/{count}")
        parts.append(part)
    tensors = tuple(t for p in parts for t in p.tensors)
    names_seen: set[str] = set()
    for t in tensors:
        if t.name in names_seen:
            raise GgufError(f"{label}: tensor {display_text(t.name)} appears in two parts of "
                            "the split set")
        names_seen.add(t.name)
    expected = parts[0].get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise GgufError(f"{label}: split.tensors.count is {expected} but the {count} parts "
                        f"hold {len(tensors)} tensors")
    return GgufModel(parts=tuple(parts), tensors=tensors)
