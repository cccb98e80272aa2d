"""The memory plan's arithmetic and placement rules, on hand-made shapes. Pure."""

from __future__ import annotations

import dataclasses

import pytest

from qwencli.fit import (
    CTX_PAD,
    LayerShape,
    ModelShape,
    Options,
    activation_bytes,
    kv_bytes_per_layer,
    padded_ctx,
    plan,
    repack_types,
)
from qwencli.hardware.budget import GPU_HEADROOM, plan_budget
from qwencli.hardware.model import Bandwidth
from tests.hardware.factories import GIB, apple, machine, memory, nvidia

MIB = 1024**2


def shape(n_layers: int = 10, layer_mib: int = 100, *, kv_every: int = 1, tied: bool = False,
          experts: tuple[int, int] = (0, 0), expert_share: float = 0.0,
          repack: dict[str, int] | None = None, ctx_train: int = 32768) -> ModelShape:
    layers = tuple(
        LayerShape(weight_bytes=layer_mib * MIB, kv=(i + 1) % kv_every == 0,
                   recurrent_bytes=0 if (i + 1) % kv_every == 0 else 3 * MIB,
                   expert_bytes=int(layer_mib * MIB * expert_share),
                   repackable=repack or {})
        for i in range(n_layers))
    embd = 200 * MIB
    return ModelShape(name="test", quant="Q4_K_M", source="header", arch="qwen3", layers=layers,
                      token_embd_bytes=embd, output_bytes=embd if tied else 250 * MIB,
                      output_tied=tied, n_embd=2048, n_head=16, n_kv_head=8, head_dim_k=128,
                      head_dim_v=128, n_ff=6144, n_vocab=151936, ctx_train=ctx_train,
                      n_expert=experts[0], n_expert_used=experts[1])


def cpu_box(ram_gib: float = 32):
    hw = machine(mem=memory(total_gib=ram_gib, available_gib=ram_gib * 0.75))
    return dataclasses.replace(hw, memory=dataclasses.replace(
        hw.memory, bandwidth=Bandwidth(30_000_000_000, "measured", "test")))


def gpu_box(*free_gib: float, ram_gib: float = 64):
    gpus = tuple(dataclasses.replace(nvidia(i, total_gib=24, free_gib=f),
                                     bandwidth=Bandwidth(1_000_000_000_000, "table", "test"))
                 for i, f in enumerate(free_gib))
    hw = machine(gpus=gpus, backend="cuda", mem=memory(total_gib=ram_gib,
                                                        available_gib=ram_gib * 0.75))
    return dataclasses.replace(hw, memory=dataclasses.replace(
        hw.memory, bandwidth=Bandwidth(60_000_000_000, "measured", "test")))


def test_ctx_is_padded_to_256_like_llama_cpp() -> None:
    assert padded_ctx(2048) == 2048
    assert padded_ctx(2049) == 2048 + CTX_PAD
    assert padded_ctx(1) == CTX_PAD


def test_kv_cache_is_heads_times_dims_times_positions() -> None:
    s = shape()
    # 8 KV heads x (128 + 128) x 2 bytes (f16) per position
    assert kv_bytes_per_layer(s, 4096, "f16") == 4096 * 8 * 256 * 2
    assert kv_bytes_per_layer(s, 4096, "q8_0") == int(4096 * 8 * 256 * 34 / 32)


def test_cpu_plan_adds_up_weights_kv_compute_output_overhead() -> None:
    s = shape()
    hw = cpu_box()
    p = plan(s, hw, plan_budget(hw), Options(ctx=4096))
    b = p.host.breakdown
    assert b.weights == 10 * 100 * MIB + 200 * MIB + 250 * MIB
    assert b.kv_cache == 10 * kv_bytes_per_layer(s, 4096, "f16")
    assert b.compute == activation_bytes(s, 512)
    assert b.output == 4 * 151936
    assert p.host_bytes == b.total and p.fits and p.devices == () and p.n_gpu_layers == 0


def test_tied_output_is_held_once_on_the_host() -> None:
    hw = cpu_box()
    untied = plan(shape(tied=False), hw, plan_budget(hw), Options(ctx=2048))
    tied = plan(shape(tied=True), hw, plan_budget(hw), Options(ctx=2048))
    assert untied.host.breakdown.weights - tied.host.breakdown.weights == 250 * MIB


def test_hybrid_models_keep_kv_on_one_layer_in_four_and_a_fixed_state_elsewhere() -> None:
    hw = cpu_box()
    s = shape(n_layers=16, kv_every=4)
    p = plan(s, hw, plan_budget(hw), Options(ctx=8192))
    assert p.host.breakdown.kv_cache == 4 * kv_bytes_per_layer(s, 8192, "f16") + 12 * 3 * MIB


def test_repacked_types_count_twice_on_the_cpu() -> None:
    hw = cpu_box()  # factories' CPU has avx2: Q4_K is repacked
    assert "Q4_K" in repack_types(hw)
    plain = plan(shape(), hw, plan_budget(hw), Options(ctx=2048))
    repacked = plan(shape(repack={"Q4_K": 60 * MIB}), hw, plan_budget(hw), Options(ctx=2048))
    assert repacked.host.breakdown.weights - plain.host.breakdown.weights == 10 * 60 * MIB


def test_whole_model_goes_to_a_gpu_that_holds_it() -> None:
    hw = gpu_box(23)
    p = plan(shape(), hw, plan_budget(hw), Options(ctx=4096))
    assert p.fits and p.n_gpu_layers == 11  # 10 layers + the output layer
    (gpu,) = p.devices
    assert gpu.layers == 11
    assert gpu.breakdown.weights == 10 * 100 * MIB + 250 * MIB
    assert p.host.breakdown.weights == 200 * MIB  # the input embedding stays on the host
    assert p.host.breakdown.kv_cache == 0


def test_partial_offload_fills_the_gpu_from_the_output_layer_down() -> None:
    # A 2.5 GiB budget (3.5 free less 1 GiB): the logits buffer, output and some layers.
    hw = gpu_box(3.5)
    s = shape(n_layers=40)
    p = plan(s, hw, plan_budget(hw), Options(ctx=4096))
    assert 0 < p.n_gpu_layers < 41 and p.fits
    (gpu,) = p.devices
    assert gpu.bytes <= gpu.budget_bytes == int(3.5 * GIB) - GPU_HEADROOM
    one_more = plan(s, hw, plan_budget(hw), Options(ctx=4096, n_gpu_layers=p.n_gpu_layers + 1))
    assert not one_more.fits  # the most that fits, not fewer
    assert one_more.devices[0].bytes > one_more.devices[0].budget_bytes


def test_forced_gpu_layers_are_obeyed_and_clamped() -> None:
    hw = gpu_box(23)
    assert plan(shape(), hw, plan_budget(hw), Options(ctx=2048, n_gpu_layers=3)).n_gpu_layers == 3
    assert plan(shape(), hw, plan_budget(hw),
                Options(ctx=2048, n_gpu_layers=999)).n_gpu_layers == 11
    only_output = plan(shape(), hw, plan_budget(hw), Options(ctx=2048, n_gpu_layers=1))
    assert only_output.devices[0].layers == 1
    assert only_output.devices[0].breakdown.weights == 250 * MIB


def test_two_gpus_split_the_layers_and_only_the_last_holds_the_output() -> None:
    hw = gpu_box(12, 12)
    s = shape(n_layers=60, layer_mib=300)  # 17.6 GiB of layers: needs both cards
    p = plan(s, hw, plan_budget(hw), Options(ctx=4096))
    assert p.fits and p.n_gpu_layers == 61
    first, second = p.devices
    assert first.layers + second.layers == 61 and first.layers > 0 and second.layers > 0
    assert second.breakdown.weights >= 250 * MIB
    assert sum(p.tensor_split) == pytest.approx(1.0)
    assert all(d.bytes <= d.budget_bytes for d in p.devices)


def test_unified_memory_counts_one_pool() -> None:
    hw = machine(gpus=(apple(total_gib=16, working_set_gib=10.6),), backend="metal",
                 mem=memory(total_gib=16, available_gib=12))
    budget = plan_budget(hw)
    p = plan(shape(n_layers=20, layer_mib=300), hw, budget, Options(ctx=4096))
    assert p.unified_pool
    gpu_bytes = sum(d.bytes for d in p.devices)
    assert p.host.budget_bytes == budget.host_bytes - gpu_bytes  # what the GPU part leaves
    assert p.fits == (p.host_bytes + gpu_bytes <= budget.host_bytes
                      and gpu_bytes <= budget.gpus[0].bytes)


def test_too_big_does_not_fit_and_says_so() -> None:
    hw = cpu_box(ram_gib=4)
    p = plan(shape(n_layers=80, layer_mib=200), hw, plan_budget(hw), Options(ctx=4096))
    assert not p.fits and p.usable_ctx == 0


def test_usable_ctx_is_the_largest_that_fits() -> None:
    hw = cpu_box(ram_gib=8)
    s = shape(ctx_train=131072)
    p = plan(s, hw, plan_budget(hw), Options(ctx=2048))
    assert 2048 < p.usable_ctx < 131072 and p.usable_ctx % CTX_PAD == 0
    assert plan(s, hw, plan_budget(hw), Options(ctx=p.usable_ctx)).fits
    assert not plan(s, hw, plan_budget(hw), Options(ctx=p.usable_ctx + CTX_PAD)).fits


def test_speed_range_follows_bytes_and_bandwidth() -> None:
    hw = cpu_box()
    small = plan(shape(layer_mib=50), hw, plan_budget(hw), Options(ctx=8192)).speed
    large = plan(shape(layer_mib=200), hw, plan_budget(hw), Options(ctx=8192)).speed
    assert 0 < small.low < small.high and 0 < large.low < large.high
    assert large.high < small.high
    on_gpu = plan(shape(layer_mib=200), gpu_box(23), plan_budget(gpu_box(23)),
                  Options(ctx=8192)).speed
    assert on_gpu.high > 5 * large.high  # 1 TB/s against 30 GB/s
    assert on_gpu.bottleneck == "NVIDIA GeForce RTX 4090"


def test_moe_reads_only_the_active_experts() -> None:
    hw = cpu_box()
    dense = plan(shape(), hw, plan_budget(hw), Options(ctx=2048)).speed
    moe = plan(shape(experts=(128, 8), expert_share=0.9), hw, plan_budget(hw),
               Options(ctx=2048)).speed
    per_layer = 100 * MIB - int(100 * MIB * 0.9) + int(int(100 * MIB * 0.9) * 8 / 128)
    assert moe.bytes_per_token == 10 * per_layer + 250 * MIB
    assert dense.bytes_per_token == 10 * 100 * MIB + 250 * MIB
    assert moe.high > 2 * dense.high


def test_flash_attention_off_costs_the_score_matrix() -> None:
    hw = cpu_box()
    on = plan(shape(), hw, plan_budget(hw), Options(ctx=32768))
    off = plan(shape(), hw, plan_budget(hw), Options(ctx=32768, flash_attn=False))
    assert off.host.breakdown.compute - on.host.breakdown.compute == 4 * 32768 * 512 * 16


def test_unknown_kv_type_is_refused() -> None:
    hw = cpu_box()
    with pytest.raises(ValueError, match="KV cache type"):
        plan(shape(), hw, plan_budget(hw), Options(ctx=2048, kv_type="q3_k"))
