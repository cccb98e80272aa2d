"""Hostile and corrupt GGUF headers: every reader (`qwen fit FILE`, `qwen fit owner/repo:QUANT`
by HTTP Range, `qwen chat -m FILE`) answers with one line and exit 1, never minutes of planning,
a traceback or a llama.cpp abort; and the parsed-header cache is no way around the bounds."""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qwencli import gguf_info as gi
from qwencli.chat.select import LoadRequest, plan_load
from qwencli.cli import app
from qwencli.errors import QwenError
from qwencli.paths import cache_dir
from tests import ceilings, fake_hub
from tests.gguf_fixtures import (
    ARRAY,
    BOOL,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    QwenShape,
    RawArray,
    RawString,
    RawTensor,
    byte_level_tokenizer,
    nested_array,
    qwen_raw_metadata,
    qwen_raw_tensors,
    raw_data_bytes,
    raw_gguf_bytes,
    write_qwen_gguf,
    write_raw_gguf,
)

runner = CliRunner()

Meta = list[tuple[str, int, Any]]


def hostile(path: Path, edit: Callable[[Meta], Meta] | None = None,
            tensors: list[RawTensor] | None = None, **kwargs: Any) -> Path:
    """A small qwen3 header-and-zeros file, its metadata rows passed through `edit`."""
    meta = qwen_raw_metadata()
    return write_raw_gguf(path, edit(meta) if edit else meta,
                          qwen_raw_tensors() if tensors is None else tensors, **kwargs)


def setting(key: str, vtype: int, value: Any) -> Callable[[Meta], Meta]:
    """An edit that gives `key` this type and value (added when absent)."""
    def edit(meta: Meta) -> Meta:
        rows = [row for row in meta if row[0] != key]
        return [*rows, (key, vtype, value)]
    return edit


def dropping(key: str) -> Callable[[Meta], Meta]:
    return lambda meta: [row for row in meta if row[0] != key]


def assert_one_line_error(result: Any, *needles: str) -> str:
    """Exit 1, a single `error: ...` line on stderr containing every needle, no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.output and "unexpected" not in lines[0]
    return lines[0]


# --- Bug 6, one case at a time, through `qwen fit FILE` ---------------------------------------

CASES = [
    pytest.param(setting("qwen3.block_count", UINT32, 4_000_000_000),
                 "bad.gguf: qwen3.block_count is 4000000000, more than 512 layers",
                 id="4e9-layers"),
    pytest.param(setting("qwen3.block_count", UINT32, 10_000_000),
                 "qwen3.block_count is 10000000, more than 512 layers", id="1e7-layers"),
    pytest.param(setting("qwen3.block_count", UINT32, 0),
                 "qwen3.block_count is 0, but a model has at least 1 layer", id="0-layers"),
    pytest.param(setting("qwen3.attention.head_count", UINT32, 0),
                 "qwen3.attention.head_count is 0, but a model has at least 1 head",
                 id="0-heads"),
    pytest.param(setting("qwen3.attention.head_count_kv", UINT32, 0),
                 "qwen3.attention.head_count_kv is 0", id="0-kv-heads"),
    pytest.param(setting("qwen3.block_count", INT32, -1),
                 "qwen3.block_count is -1, but a model has at least 1 layer", id="-1-layers"),
    pytest.param(setting("qwen3.block_count", UINT32, 2**32 - 1),
                 "qwen3.block_count is 4294967295 (-1 written as unsigned?), more than 512",
                 id="-1-as-uint32"),
    pytest.param(setting("qwen3.context_length", INT32, -1),
                 "qwen3.context_length is -1, but a model has at least 1 token",
                 id="-1-context"),
    pytest.param(setting("qwen3.context_length", FLOAT32, math.nan),
                 "qwen3.context_length is nan, not a whole number", id="nan-context"),
    pytest.param(setting("qwen3.context_length", FLOAT64, math.inf),
                 "qwen3.context_length is inf, not a whole number", id="inf-context"),
    pytest.param(setting("qwen3.context_length", UINT64, 2**25),
                 "qwen3.context_length is 33554432, more than 16777216 tokens",
                 id="huge-context"),
    pytest.param(setting("qwen3.context_length", STRING, "lots"),
                 "qwen3.context_length is the text 'lots', not a whole number",
                 id="string-context"),
    pytest.param(setting("qwen3.context_length", ARRAY, RawArray(UINT32, [1, 2])),
                 "qwen3.context_length is an array of 2 UINT32, not a single number",
                 id="array-context"),
    pytest.param(dropping("qwen3.block_count"),
                 "qwen3.block_count is missing", id="missing-layers"),
    pytest.param(setting("qwen3.attention.head_count_kv", UINT32, 3),
                 "qwen3.attention.head_count_kv is 3, which does not divide "
                 "qwen3.attention.head_count 4", id="kv-not-dividing"),
    pytest.param(setting("qwen3.attention.key_length", UINT32, 0),
                 "qwen3.attention.key_length is 0", id="0-head-dim"),
    pytest.param(setting("qwen3.embedding_length", UINT64, 2**40),
                 "qwen3.embedding_length is 1099511627776, more than 131072", id="huge-embd"),
    pytest.param(setting("qwen3.rope.freq_base", FLOAT32, math.inf),
                 "qwen3.rope.freq_base is inf, not a finite number", id="inf-rope"),
    pytest.param(lambda m: [*setting("qwen3.expert_count", UINT32, 8)(m),
                            ("qwen3.expert_used_count", UINT32, 9)],
                 "qwen3.expert_used_count is 9, but a model with 8 experts uses 1 to 8",
                 id="experts-used-over-count"),
    pytest.param(setting("qwen3.expert_count", UINT32, 1000),
                 "qwen3.expert_count is 1000, more than 512 experts", id="too-many-experts"),
    pytest.param(setting("qwen3.expert_used_count", UINT32, 2),
                 "qwen3.expert_used_count is 2, but the model has no experts",
                 id="experts-used-without-experts"),
    pytest.param(setting("qwen3.rope.dimension_count", UINT32, 8),
                 "qwen3.rope.dimension_count is 8, but qwen3 rotates whole heads of 16",
                 id="partial-rope-on-qwen3"),
    pytest.param(setting("qwen3.rope.scaling.type", STRING, "bogus"),
                 "qwen3.rope.scaling.type is the text 'bogus', not one of", id="rope-scaling"),
    pytest.param(setting("qwen3.attention.layer_norm_rms_epsilon", FLOAT32, -1.0),
                 "qwen3.attention.layer_norm_rms_epsilon is -1.0, not a norm epsilon",
                 id="negative-eps"),
    pytest.param(setting("qwen3.attention.head_count_kv", ARRAY, RawArray(UINT32, [2, 0])),
                 "layer 1 has attention tensors, but qwen3.attention.head_count_kv gives it 0",
                 id="per-layer-zero-kv"),
    pytest.param(setting("qwen3.attention.head_count", ARRAY, RawArray(UINT32, [4, 4, 4])),
                 "qwen3.attention.head_count has 3 values, but qwen3.block_count is 2",
                 id="per-layer-wrong-length"),
    pytest.param(setting("test.deep", ARRAY, nested_array(1000)),
                 "test.deep nests arrays 5 deep, more than 4 levels", id="nested-1000"),
    pytest.param(setting("general.architecture", STRING, "qwen3\n\x1b[31mred"),
                 "general.architecture is the text 'qwen3\\n\\x1b[31mred', not an "
                 "architecture name", id="control-chars-in-arch"),
]


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_fit_refuses_a_hostile_header_in_one_line(tmp_path: Path,
                                                  edit: Callable[[Meta], Meta],
                                                  message: str) -> None:
    path = hostile(tmp_path / "bad.gguf", edit)
    result = runner.invoke(app, ["fit", str(path), "--cpu-only"])
    assert_one_line_error(result, message)
    # the same through --json: nothing on stdout, the same line
    as_json = runner.invoke(app, ["fit", str(path), "--cpu-only", "--json"])
    assert_one_line_error(as_json, message)
    assert as_json.stdout == ""


def test_tensors_past_the_layer_count_are_refused(tmp_path: Path) -> None:
    rows = [*qwen_raw_tensors(), RawTensor("blk.999999999999.ffn_up.weight", (64, 4))]
    result = runner.invoke(app, ["fit", str(hostile(tmp_path / "bad.gguf", tensors=rows)),
                                 "--cpu-only"])
    assert_one_line_error(result, "tensor blk.999999999999.ffn_up.weight belongs to layer "
                                  "999999999999, but qwen3.block_count is 2")


def test_a_long_tensor_name_and_a_tensor_shape_that_disagrees(tmp_path: Path) -> None:
    rows = [*qwen_raw_tensors(), RawTensor("x" * 64, (64,))]
    result = runner.invoke(app, ["fit", str(hostile(tmp_path / "long.gguf", tensors=rows)),
                                 "--cpu-only"])
    assert_one_line_error(result, "is 64 bytes long, more than llama.cpp's 63")
    rows = [RawTensor(t.name, (64, 48), t.type_id, t.offset) if t.name == "blk.1.attn_k.weight"
            else t for t in qwen_raw_tensors()]
    result = runner.invoke(app, ["fit", str(hostile(tmp_path / "k.gguf", tensors=rows)),
                                 "--cpu-only"])
    assert_one_line_error(result, "tensor blk.1.attn_k.weight has shape [64, 48], but the "
                                  "header's numbers make it [64, 32]")


def test_the_bounds_leave_real_qwen_shapes_alone(tmp_path: Path) -> None:
    # The largest real numbers: Qwen3-235B's 94 layers and 64/4 heads, Qwen3.5's 248,320
    # tokens, a 1M YaRN context, Qwen3-Next's 512 experts.
    shape = QwenShape("qwen3", n_layers=94, n_embd=64, n_head=64, n_head_kv=4, head_dim=16,
                      vocab=248_320, ctx=1_010_000)
    meta = [*qwen_raw_metadata(QwenShape(vocab=2)), ("qwen3.expert_count", UINT32, 512),
            ("qwen3.expert_used_count", UINT32, 10)]
    meta = [row for row in meta if not row[0].startswith("tokenizer.ggml.tok")]
    for key, value in shape.arch_metadata().items():
        meta = setting(key, FLOAT32 if isinstance(value, float) else UINT32, value)(meta)
    path = write_raw_gguf(tmp_path / "big.gguf", meta, qwen_raw_tensors(shape, "Q8_0"))
    result = runner.invoke(app, ["fit", str(path), "--cpu-only", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["n_layers"] == 94 and doc["fits"] and doc["ctx"] == 8192


# --- The Hub's copy, read by HTTP Range ------------------------------------------------------

@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    served, server = fake_hub.start(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    yield served
    server.shutdown()


@pytest.mark.parametrize(("edit", "message"), [
    (setting("qwen3.block_count", UINT32, 4_000_000_000),
     "m-Q4_K_M.gguf: qwen3.block_count is 4000000000, more than 512 layers"),
    (setting("test.deep", ARRAY, nested_array(100)), "test.deep nests arrays 5 deep"),
    (setting("qwen3.context_length", FLOAT32, math.nan), "qwen3.context_length is nan"),
])
def test_fit_of_a_hub_file_refuses_a_hostile_header(hub: fake_hub.FakeHub, tmp_path: Path,
                                                    edit: Callable[[Meta], Meta],
                                                    message: str) -> None:
    hub.add_file("someone/bad-GGUF", "m-Q4_K_M.gguf", hostile(tmp_path / "m.gguf", edit))
    result = runner.invoke(app, ["fit", "someone/bad-GGUF:Q4_K_M", "--cpu-only"])
    assert_one_line_error(result, message)
    assert any("/resolve/" in r.path for r in hub.requests)  # it was read from the Hub


# --- `qwen chat -m`: the real process, so a llama.cpp abort would show -----------------------

def chat(path: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QWEN_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "qwencli", "chat", "-m", str(path), "--threads", "1",
         "--ctx", "256", "-n", "4", "--seed", "1", *extra, "hi"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
        timeout=ceilings.PROCESS_S, check=False)


@pytest.fixture(scope="module")
def chat_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's chat processes, so RAM bandwidth is measured once."""
    return tmp_path_factory.mktemp("chat-cache")


def loadable(path: Path, **metadata: Any) -> Path:
    """A complete tiny qwen3 model (tokenizer, weights) with these metadata values instead."""
    return write_qwen_gguf(path, tokenizer=byte_level_tokenizer(), extra_metadata=metadata)


@pytest.mark.parametrize(("metadata", "message"), [
    ({"qwen3.block_count": 0}, "qwen3.block_count is 0, but a model has at least 1 layer"),
    ({"qwen3.attention.head_count": 0, "qwen3.attention.head_count_kv": 0},
     "qwen3.attention.head_count is 0, but a model has at least 1 head"),
])
def test_chat_refuses_zero_layers_or_heads_instead_of_aborting(
        tmp_path: Path, chat_cache: Path, metadata: dict[str, Any], message: str) -> None:
    path = loadable(tmp_path / "zero.gguf", **metadata)
    done = chat(path, chat_cache)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert done.stderr.strip() == f"error: zero.gguf: {message}"


# The nastiest files that still look like models: complete (tokenizer and weights) with one
# number wrong. Those the bounds pass reach llama.cpp, in a child process: it may refuse them
# (exit 1, one line) or run them (exit 0), never abort (134) or crash (139); a --ctx above the
# model's own context is a usage error (exit 2).
NASTY = [
    ({"qwen3.attention.head_count_kv": 3}, 1),  # llama.cpp asserts the grouping and aborts
    ({"qwen3.attention.head_count_kv": [2, 0]}, 1),  # a layer with attention but no KV head
    ({"qwen3.rope.dimension_count": 1}, 1),  # qwen3.cpp asserts n_rot == head size
    ({"qwen3.rope.scaling.type": "bogus"}, 1),
    ({"qwen3.attention.layer_norm_rms_epsilon": -1.0}, 1),  # ggml asserts eps >= 0
    ({"qwen3.block_count": 513}, 1),  # past LLAMA_MAX_LAYERS
    ({"qwen3.expert_count": 1025, "qwen3.expert_used_count": 8}, 1),  # > LLAMA_MAX_EXPERTS
    ({"qwen3.expert_used_count": 4}, 1),  # experts used without experts: an assert
    ({"qwen3.expert_count": 4}, 1),  # experts but none used: an assert
    ({"qwen3.block_count": 2**32 - 1}, 1),
    ({"qwen3.context_length": 0}, 1),
    ({"qwen3.attention.key_length": 0}, 1),
    ({"qwen3.rope.freq_base": math.nan}, 1),
    ({"qwen3.block_count": 3}, 1),  # passes the bounds; llama.cpp misses layer 2's tensors
    ({"qwen3.context_length": 2**24}, 0),  # the largest context allowed: loads at 256
    ({"qwen3.context_length": 1}, 2),  # the smallest: --ctx 256 is above it, as `qwen fit` says
    ({"qwen3.expert_count": 8, "qwen3.expert_used_count": 2}, 0),  # dense qwen3 ignores them
    ({"tokenizer.ggml.eos_token_id": 2**32 - 1}, 0),  # llama.cpp copes with a wild token id
]


def test_nasty_but_complete_models_never_crash_chat(tmp_path: Path, chat_cache: Path) -> None:
    for i, (metadata, code) in enumerate(NASTY):
        path = loadable(tmp_path / f"nasty{i}.gguf", **metadata)
        done = chat(path, chat_cache)
        assert done.returncode == code, (metadata, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, metadata
        if code:
            lines = done.stderr.strip().splitlines()
            assert lines[0].startswith("error: ") and f"nasty{i}.gguf" in lines[0], \
                (metadata, lines)
            assert len(lines) <= 2 and all(line.startswith(("error:", "hint:"))
                                           for line in lines), (metadata, lines)


# --- Fuzz: thousands of random and boundary headers ------------------------------------------

ARCH_KEYS = ["block_count", "context_length", "embedding_length", "feed_forward_length",
             "attention.head_count", "attention.head_count_kv", "attention.key_length",
             "attention.value_length", "expert_count", "expert_used_count",
             "expert_feed_forward_length", "expert_group_count", "expert_group_used_count",
             "ssm.state_size", "ssm.conv_kernel", "ssm.inner_size", "ssm.group_count",
             "ssm.time_step_rank", "vocab_size", "rope.freq_base",
             "attention.layer_norm_rms_epsilon"]
CORE_KEYS = ["block_count", "context_length", "embedding_length", "attention.head_count",
             "attention.head_count_kv", "attention.key_length", "expert_count",
             "expert_used_count"]
OTHER_KEYS = ["general.architecture", "general.alignment", "general.file_type", "general.name",
              "split.count", "split.no", "split.tensors.count", "tokenizer.ggml.tokens"]
BOUNDARY_INTS = [0, 1, 2, 3, 4, 7, 8, 16, 64, 255, 256, 511, 512, 513, 1024, 4095, 4096, 4097,
                 65_536, 131_072, 2**20, 2**24, 2**24 + 1, 10_000_000, 4_000_000_000, 2**31 - 1,
                 2**32 - 1, 2**63 - 1, 2**64 - 1, -1, -2, -(2**31), -(2**63)]
BOUNDARY_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.5, 1e-30, 1e30, 4096.0]
INT_RANGES = {UINT8: (0, 2**8 - 1), INT8: (-(2**7), 2**7 - 1), UINT16: (0, 2**16 - 1),
              INT16: (-(2**15), 2**15 - 1), UINT32: (0, 2**32 - 1), INT32: (-(2**31), 2**31 - 1),
              UINT64: (0, 2**64 - 1), INT64: (-(2**63), 2**63 - 1)}


def _random_value(rng: random.Random, depth: int = 0) -> tuple[int, Any]:
    """A (type id, value) of any GGUF type, boundary numbers most of the time."""
    pick = rng.random()
    if pick < 0.45:
        value = rng.choice(BOUNDARY_INTS)
        fitting = [t for t, (lo, hi) in INT_RANGES.items() if lo <= value <= hi]
        return rng.choice(fitting), value
    if pick < 0.6:
        return rng.choice([FLOAT32, FLOAT64]), rng.choice(BOUNDARY_FLOATS)
    if pick < 0.65:
        return BOOL, rng.random() < 0.5
    if pick < 0.75:
        text = rng.choice(["", "qwen3", "x" * rng.randint(0, 300), "\n\x1b[2J", "é" * 50])
        return STRING, text
    if pick < 0.82 and depth < 6:
        element, _ = _random_value(rng, depth + 1)
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return ARRAY, RawArray(element, [v for t, v in items if t == element])
    if pick < 0.9:
        return ARRAY, nested_array(rng.choice([2, 4, 5, 6, 50, 2000]))
    if pick < 0.95:
        return STRING, RawString(b"abc", rng.choice([2**63, 2**40, 10**6, 4]))
    return ARRAY, RawArray(UINT32, [1, 2, 3], rng.choice([2**62, 2**32, 10**7, 4]))


def _mutate_tensors(rng: random.Random, rows: list[RawTensor]) -> list[RawTensor]:
    i = rng.randrange(len(rows))
    t = rows[i]
    what = rng.randrange(7)
    if what == 0:
        dims = [rng.choice([0, 1, 32, 2**31, 2**40, 2**63 - 1, 2**64 - 1]) for _ in t.shape]
        rows[i] = RawTensor(t.name, tuple(dims), t.type_id, t.offset)
    elif what == 1:
        rows[i] = RawTensor(t.name, t.shape, rng.choice([99, 2**31, 2**32 - 1, 4, 5, 2, 12]),
                            t.offset)
    elif what == 2:
        rows[i] = RawTensor(t.name, t.shape, t.type_id, rng.choice([2**63, 2**64 - 1, 7, 0]))
    elif what == 3:
        name = rng.choice([f"blk.{rng.choice([2, 99, 10**12, 10**40])}.ffn_up.weight",
                           "x" * rng.choice([63, 64, 1000]), rows[0].name, "", "blk.x.y"])
        rows[i] = RawTensor(name, t.shape, t.type_id, t.offset)
    elif what == 4:
        rows[i] = RawTensor(t.name, (*t.shape, 1, 1, 1, 1), t.type_id, t.offset)  # 5+ dims
    elif what == 5:
        del rows[i]
    else:
        rows = rows[:rng.randrange(len(rows) + 1)]
    return rows


def fuzz_case(seed: int) -> bytes:
    """One random or boundary file: a small valid qwen3 header with 1-3 things wrong."""
    rng = random.Random(seed)
    vocab = rng.choice([8, 64, 300])
    shape = QwenShape(n_embd=32, n_head=4, n_head_kv=2, head_dim=8, n_ff=64, vocab=vocab)
    meta: Meta = qwen_raw_metadata(shape)
    rows = qwen_raw_tensors(replace(shape, vocab=rng.choice([vocab, vocab, 8])), "F16")
    kwargs: dict[str, Any] = {}
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        what = rng.random()
        if what < 0.35:  # the numbers the planner and llama.cpp loop over or divide by
            key = f"qwen3.{rng.choice(CORE_KEYS)}"
            meta = setting(key, *_random_value(rng))(meta)
        elif what < 0.55:
            key = rng.choice(ARCH_KEYS + OTHER_KEYS)
            key = key if key in OTHER_KEYS else f"qwen3.{key}"
            meta = setting(key, *_random_value(rng))(meta)
        elif what < 0.6:
            meta = dropping(rng.choice([r[0] for r in meta]))(meta)
        elif what < 0.65:
            meta = [*meta, rng.choice(meta)]  # a key twice
        elif what < 0.7:
            meta = [*meta, (f"x.{seed}", rng.choice([13, 99, 2**32 - 1]), b"")]  # unknown type
        elif what < 0.85:
            rows = _mutate_tensors(rng, rows) if rows else rows
        elif what < 0.9:
            kwargs["n_kv" if rng.random() < 0.5 else "n_tensors"] = rng.choice(
                [0, 1, 2**40, 2**64 - 1, len(meta) + 1, len(rows) + 1])
        elif what < 0.93:
            kwargs["version"] = rng.choice([0, 1, 2, 4, 2**32 - 1])
        else:
            kwargs["data_bytes"] = rng.choice([0, 1, 100])
    if "data_bytes" not in kwargs:  # rows claiming petabytes get a short file instead
        need = raw_data_bytes(rows)
        kwargs["data_bytes"] = need if need <= 1 << 20 else rng.choice([0, 4096])
    data = bytearray(raw_gguf_bytes(meta, rows, **kwargs))
    roll = rng.random()
    if roll < 0.1:
        data = data[:rng.randrange(len(data) + 1)]  # truncated
    elif roll < 0.2:
        for _ in range(rng.randint(1, 8)):  # flipped bytes
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif roll < 0.23:
        struct.pack_into("<I", data, 4, 3 << 24)  # a big-endian looking version
    return bytes(data)


MAX_CASES = 3000
MAX_SECONDS = 30.0  # the suite's share; a quiet 2-core machine runs about 1,500 cases in it
MIN_CASES = 300
# A hang is minutes of CPU; the answer's CPU time (not wall time, which other processes on a
# busy machine stretch) is what must stay under 5 s.
PER_CASE_CPU_SECONDS = 5.0


def test_fuzzed_headers_get_an_answer_or_one_line_never_a_traceback(tmp_path: Path) -> None:
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware

    hw = resolve_hardware(WhatIf(hardware="laptop-rtx4060-32gb"), probe)
    budget = plan_budget(hw)
    options = [["--cpu-only"], ["--cpu-only", "--json"], ["--hardware", "laptop-rtx4060-32gb"]]
    start = time.perf_counter()
    outcomes = {0: 0, 1: 0}
    slowest = 0.0
    n = 0
    while n < MAX_CASES and time.perf_counter() - start < MAX_SECONDS:
        path = tmp_path / f"case{n}.gguf"
        path.write_bytes(fuzz_case(n))
        began = time.process_time()
        chosen = options[n % len(options)]
        result = runner.invoke(app, ["fit", str(path), *chosen])
        slowest = max(slowest, time.process_time() - began)
        context = f"case {n} (tests.test_hostile_gguf.fuzz_case({n}))"
        assert result.exit_code in (0, 1), (context, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), context
        assert "Traceback" not in result.output, context
        if result.exit_code:
            lines = result.stderr.strip().splitlines()
            assert lines and lines[0].startswith("error: "), (context, result.stderr)
            assert "unexpected" not in lines[0], (context, lines[0])
            assert all(line.startswith(("error:", "hint:")) for line in lines), context
        elif "--json" in chosen:  # a plan is a sane one: no -1 contexts, no 0-0 tok/s
            doc = json.loads(result.stdout)
            speed = doc["speed"]["decode_tok_s"]
            assert doc["ctx"] >= 1 and 1 <= doc["n_layers"] <= 512, (context, doc)
            assert 0 < speed["low"] <= speed["high"] < math.inf, (context, speed)
        outcomes[result.exit_code] += 1
        # `qwen chat -m`'s planning step on the same file: a plan or a QwenError, nothing else.
        # (Never llama.cpp in-process: an abort there would take pytest with it.)
        try:
            plan_load(path, LoadRequest(), hw, budget)
        except QwenError as exc:
            assert "\n" not in exc.message, (context, exc.message)
        path.unlink()
        n += 1
    elapsed = time.perf_counter() - start
    print(f"\n{n} fuzzed headers in {elapsed:.1f} s: {outcomes[0]} planned, {outcomes[1]} "
          f"refused; slowest {slowest:.2f} s of CPU")
    assert n >= MIN_CASES
    assert min(outcomes.values()) >= n // 20  # both kinds happen: not all garbage
    assert slowest < PER_CASE_CPU_SECONDS


# --- The parsed-header cache is held to the same bounds --------------------------------------

def _entry() -> Path:
    [entry] = sorted((cache_dir() / "gguf").glob("*.json"))
    return entry


def test_an_edited_cache_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf")
    assert runner.invoke(app, ["fit", str(path), "--cpu-only"]).exit_code == 0
    entry = _entry()
    good = json.loads(entry.read_text())
    edited = json.loads(entry.read_text())
    edited["header"]["metadata"]["qwen3.block_count"] = 4_000_000_000
    entry.write_text(json.dumps(edited))
    result = runner.invoke(app, ["fit", str(path), "--cpu-only", "--json"])
    assert result.exit_code == 0, result.stderr  # the file's own 2 layers, not the edit's
    assert json.loads(result.stdout)["n_layers"] == 2
    assert json.loads(entry.read_text())["header"] == good["header"]
    assert gi.read_header(path).from_cache


@pytest.mark.parametrize("junk", [
    "[" * 100_000 + "]" * 100_000,  # deeper than json (and Python) can recurse
    "NaN", "1e999", '{"format": 2}',
])
def test_cache_junk_of_any_shape_is_a_miss(tmp_path: Path, junk: str) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf")
    gi.read_header(path)
    entry = _entry()
    entry.write_text(junk)
    header = gi.read_header(path)
    assert not header.from_cache and header.arch_value("block_count") == 2
    assert gi.read_header(path).from_cache


def test_a_cache_entry_with_a_right_digest_is_still_held_to_the_bounds(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf")
    gi.read_header(path)
    entry = _entry()
    for edit in (
        lambda h: h["metadata"].__setitem__("deep", {"$array": ["ARRAY", 1, [
            {"$array": ["ARRAY", 1, [{"$array": ["ARRAY", 1, [{"$array": ["ARRAY", 1, [
                {"$array": ["UINT8", 1, [1]]}]]}]]}]]}]]}),
        lambda h: h["tensors"][0].__setitem__(0, "x" * 64),
        lambda h: h["tensors"][0].__setitem__(3, 1),  # bytes that disagree with the shape
        lambda h: h["tensors"][0].__setitem__(2, [2**63, 2**63]),
        lambda h: h.__setitem__("alignment", 3),
        lambda h: h["metadata"].__setitem__("qwen3.block_count", 2**70),  # no GGUF type holds it
        lambda h: h.__setitem__("architecture", "llama"),  # disagrees with general.architecture
    ):
        entry_doc = json.loads(entry.read_text())
        edit(entry_doc["header"])
        entry_doc["digest"] = gi._digest(entry_doc["header"])
        entry.write_text(json.dumps(entry_doc))
        header = gi.read_header(path)
        assert not header.from_cache and header.arch_value("block_count") == 2
