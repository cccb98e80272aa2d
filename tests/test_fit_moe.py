"""MoE expert placement (llama.cpp's --n-cpu-moe): memory, speed and the planner's choice."""

from __future__ import annotations

import dataclasses
import re

from qwencli.fit import Options, expert_override_patterns, kv_bytes_per_layer, plan
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.model import Bandwidth
from qwencli.hardware.profiles import load_profile, profile_to_hardware
from tests.test_fit import MIB, gpu_box, shape


def moe_shape(n_layers: int = 48, layer_mib: int = 360):
    # Qwen3-30B-A3B-like: 97 % of each layer's bytes in 128 routed experts, 8 used per token
    return shape(n_layers, layer_mib, experts=(128, 8), expert_share=0.97)


def test_patterns_are_llama_cpps_n_cpu_moe_regex() -> None:
    patterns = expert_override_patterns(3)
    assert patterns == tuple(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps" for i in range(3))
    assert re.search(patterns[1], "blk.1.ffn_gate_exps.weight")
    assert re.search(patterns[1], "blk.1.ffn_down_chexps.weight")
    assert not re.search(patterns[1], "blk.1.attn_q.weight")
    assert not re.search(patterns[1], "blk.11.ffn_up_exps.weight")  # the dot after the index
    assert expert_override_patterns(0) == ()


def test_small_gpu_keeps_experts_on_the_host_and_attention_on_the_gpu() -> None:
    hw = gpu_box(7)  # 6 GiB budget on a 1 TB/s card, 60 GB/s RAM
    budget = plan_budget(hw)
    moe = moe_shape()
    planned = plan(moe, hw, budget, Options(ctx=8192))
    whole = plan(moe, hw, budget, Options(ctx=8192, moe_cpu_layers=0))
    assert whole.moe_cpu_layers == 0 and whole.n_gpu_layers < 49
    assert planned.fits and planned.moe_cpu_layers > 0
    assert planned.n_gpu_layers == 49  # every layer and the output layer on the GPU
    assert len(planned.expert_overrides) == planned.moe_cpu_layers
    # the host holds the experts of the first N layers, the GPU everything else
    experts = moe.layers[0].expert_bytes
    n = planned.moe_cpu_layers
    assert planned.host.breakdown.weights == moe.token_embd_bytes + n * experts
    gpu = planned.devices[0].breakdown
    assert gpu.weights == 48 * 360 * MIB - n * experts + moe.output_bytes
    assert gpu.kv_cache == 48 * kv_bytes_per_layer(moe, 8192, "f16")  # every layer's KV
    # the smallest N whose GPU part fits: one fewer does not
    tighter = plan(moe, hw, budget, Options(ctx=8192, moe_cpu_layers=n - 1))
    assert not tighter.fits
    assert planned.speed.low > whole.speed.low and planned.speed.high > whole.speed.high


def test_expert_reads_from_host_ram_are_timed_at_ram_bandwidth() -> None:
    fast_ram = gpu_box(7)
    slow_ram = dataclasses.replace(fast_ram, memory=dataclasses.replace(
        fast_ram.memory, bandwidth=Bandwidth(10_000_000_000, "measured", "test")))
    opts = Options(ctx=4096, moe_cpu_layers=30)
    quick = plan(moe_shape(), fast_ram, plan_budget(fast_ram), opts)
    slow = plan(moe_shape(), slow_ram, plan_budget(slow_ram), opts)
    assert quick.moe_cpu_layers == slow.moe_cpu_layers == 30
    assert slow.speed.high < quick.speed.high
    assert slow.speed.bottleneck == "host"


def test_whole_model_on_the_gpu_needs_no_expert_placement() -> None:
    hw = gpu_box(23)
    planned = plan(moe_shape(24, 300), hw, plan_budget(hw), Options(ctx=8192))
    assert planned.n_gpu_layers == 25 and planned.moe_cpu_layers == 0


def test_explicit_gpu_layers_keep_whole_layer_offload() -> None:
    hw = gpu_box(7)
    planned = plan(moe_shape(), hw, plan_budget(hw), Options(ctx=8192, n_gpu_layers=10))
    assert planned.moe_cpu_layers == 0 and planned.n_gpu_layers == 10


def test_dense_models_are_never_given_expert_placement() -> None:
    hw = gpu_box(7)
    planned = plan(shape(48, 360), hw, plan_budget(hw), Options(ctx=8192))
    assert planned.moe_cpu_layers == 0


def test_laptop_rtx4060_plans_qwen3_30b_a3b_experts_on_the_cpu() -> None:
    from qwencli.catalog import load_catalog, quant_file
    from qwencli.shapes import shape_from_catalog

    hw = profile_to_hardware(load_profile("laptop-rtx4060-32gb"))
    budget = plan_budget(hw)
    catalog = load_catalog()
    # unsloth's Qwen3.6-35B-A3B repo has only UD- quants at 3-6 bits (gguf-sizes.md)
    for model, quant in (("qwen3-30b-a3b", "Q4_K_M"), ("qwen3.6-35b-a3b", "UD-Q4_K_M")):
        spec = next(m for m in catalog.models() if m.id == model)
        moe = shape_from_catalog(spec, quant_file(spec, quant))
        planned = plan(moe, hw, budget, Options(ctx=8192))
        whole = plan(moe, hw, budget, Options(ctx=8192, moe_cpu_layers=0))
        assert planned.fits and 0 < planned.moe_cpu_layers < moe.n_layers, model
        assert planned.n_gpu_layers == moe.n_layers + 1, model
        assert planned.speed.high > whole.speed.high, model
        assert planned.speed.low > whole.speed.low, model
        assert planned.speed.typical > whole.speed.typical, model
