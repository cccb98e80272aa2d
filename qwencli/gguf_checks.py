"""GGUF header numbers against sane bounds, before the planner loops over them or llama.cpp sees
the file.

Header numbers are untrusted. Every reader of a header (`qwen fit FILE`, a download, the Hub's
copy by Range, `qwen chat -m` before llama.cpp sees the file) comes through `shape_from_gguf`,
which has `check_numbers` check the architecture numbers, once, before anything loops over them
or hands the file to llama.cpp: a value outside these bounds is a `GgufValueError` naming the
file, the key and the value. Each bound is far above every Qwen model (qwen-catalog.md) and
below what would hang the planner or crash llama.cpp:

- block_count 1..512 layers: Qwen's deepest is 94 (Qwen3-235B), 65 with an MTP block, and 512
  is llama.cpp's LLAMA_MAX_LAYERS: its loader aborts (SIGABRT) above it, and the planner loops
  over layers, so 4e9 ran for minutes and more. Tensors named blk.N must have N < block_count
  (a name alone could otherwise ask for 1e50 layers).
- attention.head_count 1..1024 and head_count_kv 1..1024 (96 and 8 in Qwen; per-layer arrays
  may hold 0 for layers without attention), with head_count_kv dividing head_count: llama.cpp's
  grouped attention asserts it and aborts the process otherwise. Zero layers make llama.cpp
  abort too (SIGABRT, no message).
- attention.key_length / value_length 1..4096 (Qwen: 64..256); embedding_length 1..131072
  (Qwen: up to 8192); feed_forward_length and the expert FFN 0..1048576 (Qwen: up to 29568).
- context_length 1..16777216 (2^24) tokens: Qwen's longest is 1,010,000 with YaRN; a context
  must be a whole number (not NaN, not negative).
- vocabulary 1..2097152 (2^21) tokens: Qwen3.5's is 248,320.
- expert_count 0..512 (Qwen3-Next and Qwen3.5-397B have 512; llama.cpp's LLAMA_MAX_EXPERTS was
  512 from Qwen3-Next's support on, and is 1024 in the copy llama-cpp-python 0.3.36 bundles,
  where 1025 aborts: 512 is safe for every build that runs those models),
  expert_used_count 1..expert_count when there are experts and 0 when there are none, the
  expert groups as llama.cpp asserts them: each of those aborts llama.cpp otherwise.
- the recurrent state (Gated DeltaNet/SSM): ssm.state_size 0..4096, conv_kernel 1..64,
  inner_size 0..1048576, group_count and time_step_rank 1..4096 (Qwen3-Next: 128, 4, 4096,
  16, 32).
- RoPE: rope.dimension_count even and at most the head size, the whole head for qwen2/qwen3
  (their graphs assert it), rope.scaling.type one llama.cpp knows; norm epsilons 0..1 (ggml
  asserts eps >= 0); every float under the architecture's keys is finite. Each of these
  aborted llama.cpp when wrong.
- a layer with attention tensors has at least one head and one KV head (a 0 in a per-layer
  array there aborts llama.cpp).
- cheap consistency: token_embd.weight is embedding_length wide; attn_k.weight is
  embedding_length by head_count_kv x key_length; the embedding's rows equal the tokenizer's
  tokens; the model has at least one tensor.

general.architecture, block_count, embedding_length and context_length are required, as
llama.cpp requires them. Counts and sizes inside the file's structure (nesting, string and
array lengths, tensor counts) are `gguf_info`'s bounds, checked while parsing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from qwencli.gguf_info import ArraySummary, GgufModel, GgufValueError, display_text, file_label

# The bounds (see the module docstring for why each is what it is).
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
MAX_EMBD = 131_072
MAX_FF = 1 << 20
MAX_CTX = 1 << 24
MAX_VOCAB = 1 << 21
MAX_EXPERTS = 512  # llama.cpp's LLAMA_MAX_EXPERTS
MAX_SSM_STATE = 4096
MAX_CONV_KERNEL = 64
MAX_NAME_CHARS = 200  # general.name beyond this (or unprintable) gives way to the file name

#: Architectures whose llama.cpp graph asserts that RoPE covers the whole head (qwen2.cpp,
#: qwen3.cpp, ...: GGML_ASSERT(n_embd_head == n_rot), an abort).
_FULL_ROPE_ARCHS = frozenset({"qwen2", "qwen2moe", "qwen3", "qwen3moe"})
_ROPE_SCALING_TYPES = frozenset({"none", "linear", "yarn", "longrope"})  # llama.cpp's names
_ARCH_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_INT_TYPES = frozenset({"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64",
                        "INT64"})


@dataclass(frozen=True)
class _Bound:
    """Accepted values of one key: low..high `plural` (`singular` for one)."""

    low: int
    high: int
    singular: str
    plural: str

    def unit(self, n: int) -> str:
        return self.singular if n == 1 else self.plural


_LAYERS = _Bound(1, MAX_LAYERS, "layer", "layers")
_HEADS = _Bound(1, MAX_HEADS, "head", "heads")
_HEAD_DIM = _Bound(1, MAX_HEAD_DIM, "dimension", "dimensions")
_EMBD = _Bound(1, MAX_EMBD, "dimension", "dimensions")
_FF = _Bound(0, MAX_FF, "dimension", "dimensions")
_CTX = _Bound(1, MAX_CTX, "token", "tokens")
_VOCAB = _Bound(1, MAX_VOCAB, "token", "tokens")
_EXPERTS = _Bound(0, MAX_EXPERTS, "expert", "experts")
_SSM_STATE = _Bound(0, MAX_SSM_STATE, "dimension", "dimensions")
_CONV = _Bound(1, MAX_CONV_KERNEL, "position", "positions")
_SSM_INNER = _Bound(0, MAX_FF, "dimension", "dimensions")
_SSM_GROUPS = _Bound(1, MAX_HEAD_DIM, "group", "groups")
_SSM_RANK = _Bound(1, MAX_HEAD_DIM, "dimension", "dimensions")


def _shown(value: object) -> str:
    """A metadata value as a message shows it."""
    if isinstance(value, ArraySummary):
        return f"an array of {value.length:,} {value.element_type}"
    if isinstance(value, str):
        return f"the text '{display_text(value, 40)}'"
    return repr(value) if isinstance(value, float) else str(value)


def _unsigned_hint(value: int) -> str:
    """" (-1 written as unsigned?)" for the values a small negative number wraps to."""
    for bits in (32, 64):
        if 2**bits - 2**16 <= value < 2**bits:
            return f" ({value - 2**bits} written as unsigned?)"
    return ""


class _Checker:
    """Reads the architecture numbers of one header, each checked against its bound."""

    def __init__(self, model: GgufModel) -> None:
        self.model = model
        self.file = file_label(model.source)
        arch = model.get("general.architecture")
        if arch is None:
            raise self.fail("general.architecture is missing; llama.cpp needs it to load the "
                            "model")
        if not isinstance(arch, str) or not _ARCH_NAME.match(arch):
            raise self.fail(f"general.architecture is {_shown(arch)}, not an architecture name")
        self.arch = arch

    def fail(self, what: str) -> GgufValueError:
        return GgufValueError(f"{self.file}: {what}")

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def _whole(self, key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{display_text(key)} is {_shown(value)}, not a whole number")
        return value

    def _in_bound(self, key: str, value: int, bound: _Bound) -> int:
        if value > bound.high:
            raise self.fail(f"{display_text(key)} is {value}{_unsigned_hint(value)}, more "
                            f"than {bound.high} {bound.plural}")
        if value < bound.low:
            raise self.fail(f"{display_text(key)} is {value}, but a model has at least "
                            f"{bound.low} {bound.unit(bound.low)}")
        return value

    def scalar(self, name: str, bound: _Bound, *, required: bool = False,
               default: int = 0) -> int:
        """`{arch}.{name}`: a whole number within bound; `default` when absent."""
        key = self.key(name)
        value = self.model.get(key)
        if value is None:
            if required:
                raise self.fail(f"{display_text(key)} is missing; llama.cpp needs it to load "
                                "the model")
            return default
        if isinstance(value, ArraySummary):
            raise self.fail(f"{display_text(key)} is {_shown(value)}, not a single number")
        return self._in_bound(key, self._whole(key, value), bound)

    def per_layer(self, name: str, bound: _Bound, n_layers: int) -> list[int] | None:
        """`{arch}.{name}` as llama.cpp reads it: one number for every layer, or an array
        with one per layer (0 allowed there: a layer without attention); None when absent."""
        key = self.key(name)
        value = self.model.get(key)
        if value is None:
            return None
        if not isinstance(value, ArraySummary):
            return [self._in_bound(key, self._whole(key, value), bound)] * n_layers
        if value.element_type not in _INT_TYPES:
            raise self.fail(f"{display_text(key)} is {_shown(value)}, not whole numbers")
        if value.length != n_layers:
            raise self.fail(f"{display_text(key)} has {value.length} values, but "
                            f"{self.key('block_count')} is {n_layers}")
        if value.values is None:  # gguf_info keeps 1024 values, more than MAX_LAYERS
            raise self.fail(f"{display_text(key)} is {_shown(value)} whose values were not "
                            "read")
        element = _Bound(0, bound.high, bound.singular, bound.plural)
        out = [self._in_bound(f"{key}[{i}]", v, element) for i, v in enumerate(value.values)]
        if max(out) < bound.low:
            raise self.fail(f"{display_text(key)} is 0 in every layer, but a model has at "
                            f"least {bound.low} {bound.unit(bound.low)}")
        return out

    def finite_floats(self) -> None:
        """Every float under the architecture's keys: NaN or infinity is no rope base."""
        prefix = f"{self.arch}."
        for key, value in self.model.metadata.items():
            if not key.startswith(prefix):
                continue
            values: Sequence[object] = (value.values or ()) if isinstance(value, ArraySummary) \
                else (value,)
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    raise self.fail(f"{display_text(key)} is {v!r}, not a finite number")


@dataclass(frozen=True)
class _Numbers:
    """The checked architecture numbers of one header."""

    n_layers: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_k: int
    head_v: int
    n_ff: int
    ctx_train: int
    n_expert: int
    n_expert_used: int
    recurrent_bytes: int


def check_numbers(model: GgufModel) -> _Numbers:
    """The architecture numbers the planner uses, each within its bound, consistent with each
    other and with the tensor table; GgufValueError naming the key and value otherwise."""
    c = _Checker(model)
    if not model.tensors:
        raise c.fail("the file lists no tensors: there are no weights to load")
    n_layers = c.scalar("block_count", _LAYERS, required=True)
    attention: set[int] = set()
    for t in model.tensors:
        layer = t.layer
        if layer is None:
            continue
        if layer >= n_layers:
            raise c.fail(f"tensor {display_text(t.name)} belongs to layer {layer}, but "
                         f"{c.key('block_count')} is {n_layers}")
        if ".attn_k." in t.name or ".attn_qkv." in t.name:
            attention.add(layer)
    n_embd = c.scalar("embedding_length", _EMBD, required=True)
    heads = c.per_layer("attention.head_count", _HEADS, n_layers)
    if heads is None:
        if attention:
            raise c.fail(f"{c.key('attention.head_count')} is missing, but the model has "
                         "attention layers")
        heads = [0] * n_layers
    kv_heads = c.per_layer("attention.head_count_kv", _HEADS, n_layers) or heads
    for i, (h, kv) in enumerate(zip(heads, kv_heads, strict=True)):
        if i in attention and not (h and kv):
            raise c.fail(f"layer {i} has attention tensors, but "
                         f"{c.key('attention.head_count' if not h else 'attention.head_count_kv')}"
                         " gives it 0 heads")
        if h and kv and h % kv:
            where = f" in layer {i}" if len(set(heads)) > 1 or len(set(kv_heads)) > 1 else ""
            raise c.fail(f"{c.key('attention.head_count_kv')} is {kv}{where}, which does not "
                         f"divide {c.key('attention.head_count')} {h}: llama.cpp's grouped "
                         "attention needs it to")
    n_head, n_kv_head = max(heads), max(kv_heads)
    head_k = c.scalar("attention.key_length", _HEAD_DIM, default=n_embd // max(1, n_head))
    head_v = c.scalar("attention.value_length", _HEAD_DIM, default=head_k)
    if attention and head_k == 0:
        raise c.fail(f"{c.key('attention.key_length')} is missing, and embedding_length "
                     f"{n_embd} over {n_head} heads leaves 0 dimensions per head")
    _check_rope(c, head_k)
    ctx_train = c.scalar("context_length", _CTX, required=True)
    n_expert = c.scalar("expert_count", _EXPERTS)
    n_expert_used = c.scalar("expert_used_count", _Bound(0, MAX_EXPERTS, "expert", "experts"))
    _check_experts(c, n_expert, n_expert_used)
    ffn = c.per_layer("feed_forward_length", _FF, n_layers) or [0]
    n_ff = c.scalar("expert_feed_forward_length", _FF) if n_expert else 0
    n_ff = n_ff or max(ffn)
    recurrent = _recurrent_state(c)
    c.finite_floats()
    for name in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
        eps = c.model.get(c.key(name))
        if isinstance(eps, float) and not 0 <= eps <= 1:  # ggml asserts eps >= 0 and aborts
            raise c.fail(f"{c.key(name)} is {eps!r}, not a norm epsilon (0 to 1)")
    _check_tensor_shapes(c, n_embd, kv_heads, head_k)
    return _Numbers(n_layers, n_embd, max(1, n_head), max(1, n_kv_head) if n_kv_head else
                    max(1, n_head), head_k, head_v, n_ff, ctx_train, n_expert, n_expert_used,
                    recurrent)


def _check_rope(c: _Checker, head_k: int) -> None:
    """RoPE settings llama.cpp asserts on (an abort, not an error): the rotated dimensions
    within a head (all of it for the qwen2/qwen3 families; Qwen3.5 rotates a quarter), and a
    scaling type it knows."""
    key = c.key("rope.dimension_count")
    n_rot = c.scalar("rope.dimension_count", _HEAD_DIM, default=head_k)
    if c.arch in _FULL_ROPE_ARCHS and n_rot != head_k:
        raise c.fail(f"{key} is {n_rot}, but {c.arch} rotates whole heads of {head_k} "
                     "dimensions")
    if n_rot > head_k or n_rot % 2:
        given = "" if c.model.get(key) is not None else " (the head size, as it is absent)"
        raise c.fail(f"{key} is {n_rot}{given}, not an even number up to the head size "
                     f"{head_k}")
    scaling = c.model.get(c.key("rope.scaling.type"))
    if scaling is not None and scaling not in _ROPE_SCALING_TYPES:
        raise c.fail(f"{c.key('rope.scaling.type')} is {_shown(scaling)}, not one of "
                     f"{', '.join(sorted(_ROPE_SCALING_TYPES))}")


def _check_experts(c: _Checker, n_expert: int, n_used: int) -> None:
    """As llama.cpp asserts them at load (each failure there is an abort, not an error)."""
    groups = c.scalar("expert_group_count", _EXPERTS)
    groups_used = c.scalar("expert_group_used_count", _EXPERTS)
    if n_expert == 0:
        if n_used:
            raise c.fail(f"{c.key('expert_used_count')} is {n_used}, but the model has no "
                         f"experts ({c.key('expert_count')} is 0 or missing)")
        if groups:
            raise c.fail(f"{c.key('expert_group_count')} is {groups}, but the model has no "
                         "experts")
        return
    if not 1 <= n_used <= n_expert:
        raise c.fail(f"{c.key('expert_used_count')} is {n_used}, but a model with {n_expert} "
                     f"experts uses 1 to {n_expert} of them per token")
    if groups >= n_expert:
        raise c.fail(f"{c.key('expert_group_count')} is {groups}, not fewer than the "
                     f"{n_expert} experts")
    if groups > 1 and (n_expert % groups or not 0 < groups_used < groups):
        raise c.fail(f"{c.key('expert_group_count')} {groups} and "
                     f"{c.key('expert_group_used_count')} {groups_used} do not split "
                     f"{n_expert} experts")


def _recurrent_state(c: _Checker) -> int:
    """Per-sequence state of one Gated DeltaNet / SSM layer (f32): conv window + state matrix."""
    d_state = c.scalar("ssm.state_size", _SSM_STATE)
    d_conv = c.scalar("ssm.conv_kernel", _CONV, default=4)
    d_inner = c.scalar("ssm.inner_size", _SSM_INNER)
    n_groups = c.scalar("ssm.group_count", _SSM_GROUPS, default=1)
    n_v_heads = c.scalar("ssm.time_step_rank", _SSM_RANK, default=1)
    if not d_state:
        return 0
    head_v = d_inner // n_v_heads
    conv_channels = d_inner + 2 * n_groups * d_state
    return 4 * ((d_conv - 1) * conv_channels + n_v_heads * d_state * head_v)


def _check_tensor_shapes(c: _Checker, n_embd: int, kv_heads: list[int], head_k: int) -> None:
    """The cheap agreements between the tensor table and the numbers above."""
    rows = None
    for t in c.model.tensors:
        if t.name == "token_embd.weight" and len(t.shape) >= 2:
            rows = t.shape[1]
            if t.shape[0] != n_embd:
                raise c.fail(f"token_embd.weight is {t.shape[0]} wide, but "
                             f"{c.key('embedding_length')} is {n_embd}")
            c._in_bound("token_embd.weight rows", rows, _VOCAB)
        elif t.name.endswith(".attn_k.weight") and t.layer is not None and len(t.shape) == 2:
            want = (n_embd, kv_heads[t.layer] * head_k)
            if kv_heads[t.layer] and tuple(t.shape) != want:
                raise c.fail(f"tensor {display_text(t.name)} has shape {list(t.shape)}, but "
                             f"the header's numbers make it {list(want)} (embedding_length, "
                             "head_count_kv x key_length)")
    tokens = c.model.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArraySummary):
        c._in_bound("tokenizer.ggml.tokens length", tokens.length, _VOCAB)
        if rows is not None and rows != tokens.length:
            raise c.fail(f"token_embd.weight has {rows} rows, but tokenizer.ggml.tokens lists "
                         f"{tokens.length} tokens")
    elif tokens is not None:
        raise c.fail(f"tokenizer.ggml.tokens is {_shown(tokens)}, not a list of tokens")
    vocab_size = c.scalar("vocab_size", _VOCAB)
    if vocab_size and rows is not None and vocab_size != rows:
        raise c.fail(f"{c.key('vocab_size')} is {vocab_size}, but token_embd.weight has "
                     f"{rows} rows")


