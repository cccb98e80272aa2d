"""The MoE expert override reaches llama.cpp: a qwen3moe model loads with the override array
built (as `-ot "blk\\.0\\.ffn_.*_exps=CPU"` / `--n-cpu-moe`) and answers, on this CPU-only build."""

from __future__ import annotations

import ctypes
import dataclasses
import re
from pathlib import Path

import pytest

from qwencli.chat.engine import (
    _LOG,
    Engine,
    Sampling,
    _TensorOverride,
    cpu_buffer_type,
    override_array,
)
from qwencli.fit import Options, plan
from qwencli.gguf_info import read_model
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.probe import probe
from qwencli.shapes import shape_from_gguf
from tests.gguf_fixtures import qwen3_tokenizer, write_qwen3moe_gguf


@pytest.fixture(scope="module")
def moe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qwen3moe_gguf(tmp_path_factory.mktemp("moe") / "tiny-qwen3moe.gguf",
                               tokenizer=qwen3_tokenizer(), vocab=151_936)


def test_the_header_shows_the_experts(moe_file: Path) -> None:
    shape = shape_from_gguf(read_model(moe_file))
    assert shape.arch == "qwen3moe" and shape.n_expert == 8 and shape.n_expert_used == 2
    assert all(layer.expert_bytes == 3 * 64 * 32 * 8 * 4 for layer in shape.layers)


def test_override_array_is_null_terminated_and_points_at_the_cpu_buffer_type() -> None:
    buft = cpu_buffer_type()
    array = override_array([r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps"], buft)
    assert len(array) == 2
    assert array[0].pattern == rb"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps"
    assert array[0].buft == buft
    assert array[1].pattern is None
    assert ctypes.sizeof(_TensorOverride) == 2 * ctypes.sizeof(ctypes.c_void_p)


def test_a_moe_plan_with_experts_on_the_host_loads_and_answers(moe_file: Path) -> None:
    hw = probe()
    shape = shape_from_gguf(read_model(moe_file))
    planned = plan(shape, hw, plan_budget(hw), Options(ctx=512))
    # this CPU-only build has no GPU: take the plan and ask for the override explicitly, as a
    # GPU plan would (n_gpu_layers is ignored by a CPU build, the override array is not)
    planned = dataclasses.replace(planned, moe_cpu_layers=2)
    assert len(planned.expert_overrides) == 2
    engine = Engine.load(moe_file, planned, n_threads=1, verbose=True)
    try:
        assert engine.info.tensor_overrides == planned.expert_overrides
        assert engine._tensor_override_array is not None
        prompt = engine.prompt([{"role": "user", "content": "hi"}])
        stream = engine.generate(prompt, Sampling(temperature=0.0, max_tokens=4, seed=1))
        text = "".join(stream)
        assert stream.stats.completion_tokens > 0
        assert isinstance(text, str)
        # llama.cpp's loader says, per tensor, that the override reached it
        log = "\n".join(_LOG.recent())
        for layer in (0, 1):
            for kind in ("gate", "up", "down"):
                assert f"blk.{layer}.ffn_{kind}_exps.weight" in log
        assert log.count("buffer type overridden to CPU") == 6
    finally:
        engine.close()
    assert [bool(re.search(p, "blk.1.ffn_up_exps.weight")) for p in planned.expert_overrides] \
        == [False, True]


def test_a_plan_without_experts_on_the_host_builds_no_array(moe_file: Path) -> None:
    hw = probe()
    planned = plan(shape_from_gguf(read_model(moe_file)), hw, plan_budget(hw), Options(ctx=512))
    assert planned.moe_cpu_layers == 0  # no GPU here
    engine = Engine.load(moe_file, planned, n_threads=1)
    try:
        assert engine.info.tensor_overrides == () and engine._tensor_override_array is None
    finally:
        engine.close()
