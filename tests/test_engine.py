"""engine: loading with a plan, the model's own template, streaming, stats, failures.

A tiny synthetic qwen3 model (2 layers, 64 wide) carries the real Qwen3 tokenizer and chat
template (151,936 tokens), so rendering, special tokens and detokenization are the real ones;
random weights give random text, so tests assert structure, counts and determinism.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qwencli.chat.engine import (
    ChatTemplate,
    Engine,
    EngineError,
    OutOfMemoryError,
    Sampling,
    _StopStrings,
    explain_load_failure,
    prompt_opens_thinking,
)
from qwencli.fit import Options, plan
from qwencli.gguf_info import read_model
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.cpu import default_threads
from qwencli.hardware.probe import probe
from qwencli.shapes import shape_from_gguf
from tests.gguf_fixtures import QwenShape, qwen3_tokenizer, write_header_only_gguf, write_qwen_gguf

IM_START, IM_END = 151644, 151645


@pytest.fixture(scope="module")
def tokenizer():
    return qwen3_tokenizer()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    return write_qwen_gguf(tmp_path_factory.mktemp("engine") / "tiny-qwen3.gguf",
                           tokenizer=tokenizer, vocab=151_936, ctx=4096)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory):
    import os

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("QWEN_CACHE_DIR")
    os.environ["QWEN_CACHE_DIR"] = str(cache)
    try:
        hw = probe()
    finally:
        if old is None:
            os.environ.pop("QWEN_CACHE_DIR", None)
        else:
            os.environ["QWEN_CACHE_DIR"] = old
    return hw, plan_budget(hw)


def _plan(path: Path, machine, ctx: int):
    hw, budget = machine
    return plan(shape_from_gguf(read_model(path)), hw, budget, Options(ctx=ctx))


@pytest.fixture(scope="module")
def engine(model_file: Path, machine):
    loaded = Engine.load(model_file, _plan(model_file, machine, 2048), n_threads=1)
    yield loaded
    loaded.close()


def test_load_follows_the_plan(engine: Engine, model_file: Path, machine) -> None:
    the_plan = _plan(model_file, machine, 2048)
    info = engine.info
    assert info.n_ctx == the_plan.ctx == 2048
    assert info.n_ctx_train == 4096
    assert info.n_gpu_layers == the_plan.n_gpu_layers == 0  # a CPU-only build
    assert info.flash_attn is the_plan.flash_attn is True
    assert info.kv_type == the_plan.kv_type == "f16"
    assert info.n_threads == 1
    assert info.template_source == "gguf"
    assert engine.llm.context_params.flash_attn_type == 1  # LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert engine.llm.context_params.type_k == engine.llm.context_params.type_v == 1  # f16


def test_load_is_quiet(model_file: Path, machine, capfd: pytest.CaptureFixture[str]) -> None:
    loaded = Engine.load(model_file, _plan(model_file, machine, 512), n_threads=1)
    prompt = loaded.prompt([{"role": "user", "content": "hi"}])
    "".join(loaded.generate(prompt, Sampling(seed=1, max_tokens=4)))
    loaded.close()
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_prompt_renders_the_gguf_template_with_enable_thinking(engine: Engine) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    off = engine.prompt(messages, {"enable_thinking": False})
    assert off.text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert off.tokens[0] == IM_START and off.tokens.count(IM_END) == 2  # special tokens parsed
    assert not off.opens_thinking
    on = engine.prompt(messages, {"enable_thinking": True})
    assert on.text.endswith("<|im_start|>assistant\n")
    assert len(on.tokens) < len(off.tokens)
    assert engine.template.has_enable_thinking


def test_template_history_drops_earlier_thinking(engine: Engine) -> None:
    # Qwen's own template keeps only the answer of earlier turns; the chat layer relies on it too.
    messages = [{"role": "user", "content": "a"},
                {"role": "assistant", "content": "<think>\nsecret plan\n</think>\n\nanswer"},
                {"role": "user", "content": "b"}]
    text = engine.prompt(messages).text
    assert "secret plan" not in text and "answer" in text


def test_generation_is_repeatable_with_a_seed(engine: Engine) -> None:
    prompt = engine.prompt([{"role": "user", "content": "Tell me a story."}])
    sampling = Sampling(seed=7, max_tokens=12, temperature=0.8)
    first = engine.generate(prompt, sampling)
    text = "".join(first)
    second = engine.generate(prompt, sampling)
    assert "".join(second) == text and text.strip()
    stats = first.stats
    assert stats.prompt_tokens == len(prompt.tokens)
    assert stats.completion_tokens == 12
    assert stats.finish_reason == "length" and not stats.context_full
    assert stats.ttft_s > 0 and stats.decode_tok_s > 0 and stats.prompt_tok_s > 0
    assert stats.total_s >= stats.ttft_s
    # The second run found the prompt in the KV cache: only one token was evaluated again.
    assert second.stats.prompt_eval_tokens == 1
    other = "".join(engine.generate(prompt, replace(sampling, seed=8)))
    assert other != text


def test_should_stop_ends_the_answer_between_tokens(engine: Engine) -> None:
    prompt = engine.prompt([{"role": "user", "content": "Count."}])
    seen: list[str] = []
    generation = engine.generate(prompt, Sampling(seed=1, max_tokens=50),
                                 should_stop=lambda: len(seen) >= 3)
    for piece in generation:
        seen.append(piece)
    assert generation.stats.finish_reason == "interrupted"
    assert generation.stats.completion_tokens == 3


def test_an_answer_stops_at_the_end_of_the_context(model_file: Path, machine) -> None:
    small = Engine.load(model_file, _plan(model_file, machine, 256), n_threads=1)
    try:
        prompt = small.prompt([{"role": "user", "content": "Write forever."}])
        generation = small.generate(prompt, Sampling(seed=3))
        "".join(generation)
        stats = generation.stats
        assert small.n_ctx == 256
        assert stats.finish_reason == "length"  # seed 3 samples no end-of-turn token
        assert stats.context_full
        assert stats.prompt_tokens + stats.completion_tokens == 256
    finally:
        small.close()


def test_long_token_pieces_are_not_truncated(engine: Engine, tokenizer) -> None:
    # llama-cpp-python's own detokenizer uses a 32-byte buffer; Qwen has longer tokens.
    longest = max((i for i, t in enumerate(tokenizer.token_types) if t == 1),
                  key=lambda i: len(tokenizer.tokens[i]))
    assert engine.piece(longest) == b" " * len(tokenizer.tokens[longest]) == b" " * 128
    assert engine.piece(IM_END) == b""  # control tokens render as nothing


def test_prompt_that_opens_thinking_is_detected(engine: Engine, tokenizer) -> None:
    opening = ChatTemplate(tokenizer.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
        bos_token="", eos_token="<|im_end|>")
    text = opening.render([{"role": "user", "content": "x"}], enable_thinking=True)
    assert prompt_opens_thinking(text)
    assert not prompt_opens_thinking("<think>\n\n</think>\n\n")


def test_file_without_a_template_gets_chatml(tmp_path: Path, machine) -> None:
    from tests.gguf_fixtures import byte_level_tokenizer

    path = write_qwen_gguf(tmp_path / "notemplate.gguf",
                           tokenizer=byte_level_tokenizer(chat_template=None))
    loaded = Engine.load(path, _plan(path, machine, 256), n_threads=1)
    try:
        assert loaded.info.template_source.startswith("chatml")
        prompt = loaded.prompt([{"role": "user", "content": "hi"}])
        assert prompt.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        assert loaded.template.stops == ("<|im_end|>", "<|im_start|>")
    finally:
        loaded.close()


def test_a_load_failure_names_the_cause(tmp_path: Path, machine) -> None:
    shape = QwenShape(vocab=300)
    tensors = [t for t in shape.tensor_specs() if t.name != "output_norm.weight"]
    meta = {**shape.arch_metadata(), "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": [f"t{i}" for i in range(300)],
            "tokenizer.ggml.token_type": [1] * 300, "tokenizer.ggml.merges": ["t 1"],
            "tokenizer.ggml.eos_token_id": 1}
    path = write_header_only_gguf(tmp_path / "broken.gguf", tensors, metadata=meta)
    the_plan = plan(shape_from_gguf(read_model(path)), *machine, Options(ctx=256))
    with pytest.raises(EngineError) as failure:
        Engine.load(path, the_plan, n_threads=1)
    assert "broken.gguf" in failure.value.message
    assert "output_norm.weight" in failure.value.message
    assert "\n" not in failure.value.message
    assert failure.value.hint and "--verbose" in failure.value.hint


def test_out_of_memory_is_explained_with_next_steps() -> None:
    log = ["llama_model_load_from_file_impl: using device CPU",
           "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size "
           "8589934592",
           "llama_init_from_model: failed to initialize the context: failed to allocate "
           "buffer for kv cache"]
    error = explain_load_failure(log, Path("/m/Qwen3-8B-Q8_0.gguf"), 32768, "boom")
    assert isinstance(error, OutOfMemoryError)
    assert error.message.startswith("not enough memory to load Qwen3-8B-Q8_0.gguf with a "
                                    "32768-token context")
    assert "failed to allocate buffer for kv cache" in error.message
    assert "smaller quant" in error.hint and "--ctx" in error.hint
    other = explain_load_failure(
        ["llama_model_load: error loading model: missing tensor 'output_norm.weight'"],
        Path("x.gguf"), 512, "boom")
    assert not isinstance(other, OutOfMemoryError)
    assert other.message == "llama.cpp could not load x.gguf: missing tensor 'output_norm.weight'"
    generic = explain_load_failure(
        ["llama_model_load: error loading model: check_tensor_dims: tensor 'o' not found",
         "llama_model_load_from_file_impl: failed to load model"], Path("x.gguf"), 512, "boom")
    assert generic.message == "llama.cpp could not load x.gguf: tensor 'o' not found"


def test_default_threads_respect_affinity_and_quota(tmp_path: Path) -> None:
    import os

    allowed = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert default_threads(64, cgroup_root=tmp_path) == min(64, allowed)
    assert default_threads(1, cgroup_root=tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert default_threads(8, cgroup_root=tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert default_threads(8, cgroup_root=v1) == min(3, allowed)


def test_default_threads_without_a_probe_take_the_os_physical_count(tmp_path: Path) -> None:
    """`qwen worker` has no hardware probe: the OS's physical core count, not a guess of half
    the logical CPUs (one thread on a two-CPU VM without SMT)."""
    import os

    import psutil

    (tmp_path / "cpu.max").write_text("max 100000\n")
    physical = psutil.cpu_count(logical=False) or max(1, (os.cpu_count() or 2) // 2)
    assert default_threads(None, cgroup_root=tmp_path) == \
        min(physical, len(os.sched_getaffinity(0)))


def test_rpc_processes_keep_idle_threads_from_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """GOMP_SPINCOUNT is set for `qwen worker` and an --rpc load unless the person set it; it
    only takes effect before llama_cpp is loaded (qwencli/rpc/threads.py)."""
    import os
    import sys

    from qwencli.rpc.threads import IDLE_SPINS, SPIN_ENV, quiet_idle_threads

    monkeypatch.delenv(SPIN_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    assert quiet_idle_threads() is True
    assert os.environ[SPIN_ENV] == IDLE_SPINS
    monkeypatch.setenv(SPIN_ENV, "500000")
    monkeypatch.setitem(sys.modules, "llama_cpp", object())
    assert quiet_idle_threads() is False
    assert os.environ[SPIN_ENV] == "500000"


def test_stop_strings_hold_back_partial_matches() -> None:
    stops = _StopStrings(["<|im_end|>"])
    assert stops.feed("Hello <|im") == ("Hello ", False)
    assert stops.feed("_") == ("", False)
    assert stops.feed("end|> tail") == ("", True)
    stops = _StopStrings(["<|im_end|>"])
    assert stops.feed("a <|x") == ("a <|x", False)
    assert stops.feed("<|i") == ("", False)
    assert stops.flush() == "<|i"
    assert _StopStrings([]).feed("<|im_end|>") == ("<|im_end|>", False)
