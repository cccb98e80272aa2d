"""`qwen fit` of a MoE file on a small GPU: expert placement in words, JSON and llama.cpp's
arguments (`--print-llama-args`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from typer.testing import CliRunner

from qwencli.cli import app
from tests.gguf_fixtures import TensorSpec, write_header_only_gguf
from tests.test_cli_plan import big_sparse_model

runner = CliRunner()

# The flags `--print-llama-args` may print, as llama.cpp's common/arg.cpp (the copy vendored by
# llama-cpp-python 0.3.36) spells them, each with the values it accepts there.
LLAMA_FLAGS = {
    "-m": None, "-hf": None, "-hff": None, "-c": "int", "-ngl": "int", "-ts": "floats",
    "-fa": ("on", "off", "auto"), "-ctk": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1",
                                          "iq4_nl", "q5_0", "q5_1"),
    "-ctv": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"),
    "--n-cpu-moe": "int", "-fit": ("on", "off"),
}


def qwen3_30b_a3b(path: Path) -> Path:
    """A Qwen3-30B-A3B-shaped Q4_K file (config.json's numbers): a real header, then a hole."""
    e, heads, kv_heads, head, experts, ff, vocab = 2048, 32, 4, 128, 128, 768, 151_936
    specs = [TensorSpec("token_embd.weight", (e, vocab), "Q4_K")]
    for i in range(48):
        b = f"blk.{i}."
        specs += [TensorSpec(b + "attn_norm.weight", (e,)),
                  TensorSpec(b + "attn_q.weight", (e, heads * head), "Q4_K"),
                  TensorSpec(b + "attn_k.weight", (e, kv_heads * head), "Q4_K"),
                  TensorSpec(b + "attn_v.weight", (e, kv_heads * head), "Q6_K"),
                  TensorSpec(b + "attn_q_norm.weight", (head,)),
                  TensorSpec(b + "attn_k_norm.weight", (head,)),
                  TensorSpec(b + "attn_output.weight", (heads * head, e), "Q4_K"),
                  TensorSpec(b + "ffn_norm.weight", (e,)),
                  TensorSpec(b + "ffn_gate_inp.weight", (e, experts)),
                  TensorSpec(b + "ffn_gate_exps.weight", (e, ff, experts), "Q4_K"),
                  TensorSpec(b + "ffn_up_exps.weight", (e, ff, experts), "Q4_K"),
                  TensorSpec(b + "ffn_down_exps.weight", (ff, e, experts), "Q6_K")]
    specs += [TensorSpec("output_norm.weight", (e,)), TensorSpec("output.weight", (e, vocab),
                                                                  "Q6_K")]
    a = "qwen3moe"
    metadata = {f"{a}.block_count": 48, f"{a}.context_length": 40_960,
                f"{a}.embedding_length": e, f"{a}.feed_forward_length": 6144,
                f"{a}.attention.head_count": heads, f"{a}.attention.head_count_kv": kv_heads,
                f"{a}.rope.freq_base": 1_000_000.0,
                f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
                f"{a}.attention.key_length": head, f"{a}.attention.value_length": head,
                f"{a}.expert_count": experts, f"{a}.expert_used_count": 8,
                f"{a}.expert_feed_forward_length": ff}
    return write_header_only_gguf(path, specs, arch=a, metadata=metadata)


def run(*args: str):
    return runner.invoke(app, list(args))


def check_llama_args(line: str) -> dict[str, str]:
    """Each flag is one llama.cpp knows, with a value it accepts; returns flag -> value."""
    words = shlex.split(line)
    assert len(words) % 2 == 0, words
    given = dict(zip(words[::2], words[1::2], strict=True))
    for flag, value in given.items():
        assert flag in LLAMA_FLAGS, flag
        accepted = LLAMA_FLAGS[flag]
        if accepted == "int":
            assert int(value) >= 0
        elif accepted == "floats":
            assert all(float(v) >= 0 for v in value.split(","))
        elif accepted is not None:
            assert value in accepted, (flag, value)
    return given


def test_moe_on_an_8gb_laptop_keeps_experts_in_ram(tmp_path: Path) -> None:
    path = qwen3_30b_a3b(tmp_path / "Qwen3-30B-A3B-Q4_K_M.gguf")
    result = run("fit", str(path), "--hardware", "laptop-rtx4060-32gb")
    assert result.exit_code == 0, result.output
    assert "layers in RAM, everything else in VRAM" in result.stdout
    doc = json.loads(run("fit", str(path), "--hardware", "laptop-rtx4060-32gb",
                         "--json").stdout)
    n = doc["moe_cpu_layers"]
    assert 0 < n < 48 and doc["n_gpu_layers"] == 49 and doc["fits"]
    assert f"experts of {n} of 48 layers in RAM" in result.stdout
    assert doc["tensor_overrides"] == [
        rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU" for i in range(n)]
    assert doc["tight"] is False
    whole = json.loads(run("fit", str(path), "--hardware", "laptop-rtx4060-32gb",
                           "--gpu-layers", "12", "--json").stdout)
    assert whole["moe_cpu_layers"] == 0 and whole["tensor_overrides"] == []
    assert doc["speed"]["decode_tok_s"]["high"] > whole["speed"]["decode_tok_s"]["high"]

    line = run("fit", str(path), "--hardware", "laptop-rtx4060-32gb",
               "--print-llama-args").stdout
    given = check_llama_args(line)
    assert given["-m"] == str(path)
    assert given["--n-cpu-moe"] == str(n) and given["-ngl"] == "49"
    assert given["-fit"] == "off" and given["-fa"] == "on" and given["-c"] == "8192"


def test_dense_llama_args(tmp_path: Path) -> None:
    path = big_sparse_model(tmp_path / "m.gguf")
    line = run("fit", str(path), "--gpu", "RTX 4090", "--kv-type", "q8_0",
               "--print-llama-args").stdout
    given = check_llama_args(line)
    assert "--n-cpu-moe" not in given and "-ts" not in given
    assert given["-ngl"] == "29" and given["-ctk"] == given["-ctv"] == "q8_0"
    split = check_llama_args(run("fit", str(path), "--gpu", "RTX 3060", "--gpus", "2",
                                 "--print-llama-args").stdout)
    assert len(split["-ts"].split(",")) == 2


def test_llama_args_and_json_are_one_output_or_the_other(tmp_path: Path) -> None:
    path = big_sparse_model(tmp_path / "m.gguf")
    result = run("fit", str(path), "--print-llama-args", "--json")
    assert result.exit_code == 2


def test_a_hub_file_is_named_with_hf_and_hff(tmp_path: Path) -> None:
    import dataclasses

    from qwencli import reports
    from qwencli.planner import FitResult
    from qwencli.recommend import RefQuant

    path = big_sparse_model(tmp_path / "m.gguf")
    doc_plan = run("fit", str(path), "--json")
    assert doc_plan.exit_code == 0
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.profiles import load_profile, profile_to_hardware
    from qwencli.shapes import shape_from_gguf

    hw = profile_to_hardware(load_profile("laptop-rtx4060-32gb"))
    p = plan(shape_from_gguf(read_model(path)), hw, plan_budget(hw), Options(ctx=4096))
    result = FitResult(p, None, (), RefQuant("Q4_K_M"), "Qwen/Qwen3-8B-GGUF/sub/Qwen3-8B.gguf")
    given = check_llama_args(shlex.join(reports.llama_args(result)))
    assert given["-hf"] == "Qwen/Qwen3-8B-GGUF" and given["-hff"] == "sub/Qwen3-8B.gguf"
    local = dataclasses.replace(result, choice=None, file=str(path))
    assert check_llama_args(shlex.join(reports.llama_args(local)))["-m"] == str(path)
