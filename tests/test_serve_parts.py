"""qwen serve's parts: request validation (pure), the real HTTP app and queue in this process on
a scripted engine (so that an answer can think *and* answer, which random weights never do),
and the KV-cache reuse that `cached_tokens` reports, checked against llama.cpp's own counter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest

from qwencli.chat.engine import Prompt, Sampling, Stats
from qwencli.chat.session import ThinkingSupport
from qwencli.serve import protocol
from qwencli.serve.app import ServerState, create_app
from qwencli.serve.protocol import ApiError
from qwencli.serve.server import _Uvicorn, bind, url_of
from qwencli.serve.worker import Scheduler, ServedModel
from tests import ceilings

# ------------------------------------------------------------------------------------------
# Validation


def _chat(**fields: Any) -> protocol.ChatRequest:
    return protocol.parse_chat({"messages": [{"role": "user", "content": "hi"}], **fields})


def _refused(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


def test_chat_fields_are_checked_and_mapped() -> None:
    request = protocol.parse_chat({
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "max_completion_tokens": 9, "max_tokens": 3, "temperature": 0, "top_p": 0.5,
        "presence_penalty": 1.5, "frequency_penalty": -1, "seed": 2**40, "stop": "END",
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "n": 1, "user": "ignored",
        "logprobs": False, "chat_template_kwargs": {"enable_thinking": False},
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"},
                                                  {"type": "text", "text": "b"}]},
                     {"role": "assistant", "content": None},
                     {"role": "user", "content": "c"}]})
    assert request.stream and request.include_usage and request.max_tokens == 9
    assert request.overrides == {"temperature": 0.0, "top_p": 0.5, "presence_penalty": 1.5,
                                 "frequency_penalty": -1.0, "seed": 2**40 % 0xFFFFFFFF,
                                 "top_k": 5, "min_p": 0.1, "repeat_penalty": 1.1,
                                 "max_tokens": 9}
    assert request.stop == ("END",) and request.enable_thinking is False
    assert [dict(m) for m in request.messages] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": ""}, {"role": "user", "content": "c"}]


@pytest.mark.parametrize(("fields", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "messages"),
    ({"temperature": True}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"seed": "1"}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"n": 2}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
    ({"chat_template_kwargs": {"custom": 1}}, "chat_template_kwargs.custom"),
    ({"model": 7}, "model"),
])
def test_bad_chat_fields_name_the_field(fields: dict[str, Any], param: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **fields}
    assert _refused(lambda: protocol.parse_chat(body)).param == param


def test_bodies_and_completions() -> None:
    assert "not valid JSON" in _refused(lambda: protocol.parse_json(b"{")).message
    assert "JSON object" in _refused(lambda: protocol.parse_json(b"[1]")).message
    assert "UTF-8" in _refused(lambda: protocol.parse_json(b"\xff")).message
    assert "nested too deeply" in _refused(lambda: protocol.parse_json(b"[" * 100_000)).message
    assert protocol.parse_completion({"prompt": ["one"]}).prompt == "one"
    assert _refused(lambda: protocol.parse_completion({"prompt": ["a", "b"]})).param == "prompt"
    assert _refused(lambda: protocol.parse_completion({"prompt": "a", "echo": True})).param \
        == "echo"
    assert _refused(lambda: protocol.parse_completion({"prompt": "a", "best_of": 3})).param \
        == "best_of"


# ------------------------------------------------------------------------------------------
# The app and the queue on a scripted engine


class ScriptedGeneration:
    def __init__(self, pieces: Sequence[str], prompt: Prompt, should_stop: Any) -> None:
        self.pieces, self.prompt, self.should_stop = pieces, prompt, should_stop
        self.completion_tokens = 0
        self.reason = "stop"

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            if self.should_stop():
                self.reason = "interrupted"
                return
            self.completion_tokens += 1
            yield piece

    @property
    def stats(self) -> Stats:
        n = len(self.prompt.tokens)
        return Stats(n, n, self.completion_tokens, 0.01, 100.0, 50.0, 0.1, self.reason, False)


class ScriptedEngine:
    """One token per word; every answer is `script`; records what it was asked."""

    n_ctx = 64

    def __init__(self, script: Sequence[str]) -> None:
        self.script = script
        self.asked: list[tuple[list[dict[str, str]], dict[str, Any], Sampling, tuple]] = []
        self._last: tuple[list[dict[str, str]], dict[str, Any]] = ([], {})

    def prompt(self, messages: Sequence[Mapping[str, str]],
               template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        self._last = ([dict(m) for m in messages], dict(template_kwargs or {}))
        text = " ".join(m["content"] for m in messages)
        return Prompt(text, tuple(range(len(text.split()) + 3)), False)

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: Any,
                 stops: Sequence[str] = ()) -> ScriptedGeneration:
        self.asked.append((*self._last, sampling, tuple(stops)))
        return ScriptedGeneration(self.script, prompt, should_stop)


@pytest.fixture
def scripted() -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    """The real app and queue (uvicorn in a thread, the queue in another) on ScriptedEngine."""
    engine = ScriptedEngine(["<think>", "\nplan", " ahead", "</think>", "\n\n", "The",
                             " answer."])
    model = ServedModel(engine, "scripted", ("alias",),
                        ThinkingSupport("hybrid", "enable_thinking", True), None,
                        Path("scripted.gguf"), 0)
    lines: list[str] = []
    state = ServerState(api_key=None, log=lines.append, max_body=4096)
    scheduler = Scheduler(model, limit=4, log=lines.append)
    state.model, state.scheduler, state.status = model, scheduler, "ready"
    sock = bind("127.0.0.1", 0)
    http = _Uvicorn(create_app(state), sock)
    http.start()
    worker = threading.Thread(target=scheduler.run, daemon=True)
    worker.start()
    try:
        yield openai.OpenAI(base_url=url_of(sock) + "/v1", api_key="x", max_retries=0,
                            timeout=ceilings.HTTP_S), engine
    finally:
        scheduler.stop()
        worker.join(ceilings.PROCESS_S)
        http.stop()
        sock.close()


def test_thinking_goes_to_reasoning_content_and_the_answer_to_content(scripted) -> None:
    client, _ = scripted
    reply = client.chat.completions.create(model="alias", messages=[
        {"role": "user", "content": "q"}])
    message = reply.choices[0].message
    assert message.content == "The answer."
    assert (message.model_extra or {})["reasoning_content"] == "plan ahead"
    chunks = list(client.chat.completions.create(
        model="scripted", stream=True, messages=[{"role": "user", "content": "q"}]))
    deltas = [(c.choices[0].delta.content, (c.choices[0].delta.model_extra or {}).get(
        "reasoning_content")) for c in chunks if c.choices]
    assert "".join(r or "" for _, r in deltas) == "plan ahead"
    assert "".join(c or "" for c, _ in deltas) == "The answer."
    assert not any(c and r for c, r in deltas)  # never both in one delta
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_presets_switch_and_history_follow_the_chat_rules(scripted) -> None:
    client, engine = scripted
    client.chat.completions.create(model="scripted", messages=[
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>old plan</think>old answer"},
        {"role": "user", "content": "q2"}], stop=["STOP"])
    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "q"}],
                                   temperature=1.5, extra_body={
                                       "chat_template_kwargs": {"enable_thinking": False}})
    (history, kwargs1, sampling1, stops1), (_, kwargs2, sampling2, _) = engine.asked
    assert history[1] == {"role": "assistant", "content": "old answer"}  # thinking dropped
    assert kwargs1 == {"enable_thinking": True} and stops1 == ("STOP",)
    assert (sampling1.temperature, sampling1.top_p) == (0.6, 0.95)  # Qwen's thinking preset
    assert kwargs2 == {"enable_thinking": False}
    assert (sampling2.temperature, sampling2.top_p) == (1.5, 0.8)  # request over the preset


def test_a_body_without_a_length_is_cut_at_the_limit(scripted) -> None:
    import http.client

    client, _ = scripted
    connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port,
                                            timeout=ceilings.HTTP_S)
    connection.request("POST", "/v1/chat/completions", body=iter([b" " * 3000, b" " * 3000]),
                       encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 413  # the limit here is 4,096 bytes; 6,000 came, undeclared
    assert b"larger than 4,096 bytes" in response.read()
    connection.close()


# ------------------------------------------------------------------------------------------
# The KV cache a conversation's next turn reuses


def test_cached_tokens_match_what_llama_cpp_did_not_evaluate(tmp_path: Path) -> None:
    import llama_cpp

    from qwencli.chat.select import LoadRequest, plan_load
    from qwencli.cli._common import machine
    from qwencli.serve.worker import prepare_chat
    from tests.gguf_fixtures import qwen3_tokenizer, write_qwen_gguf

    path = write_qwen_gguf(tmp_path / "tiny.gguf", tokenizer=qwen3_tokenizer(), vocab=151_936)
    hw, budget = machine()
    the_plan = plan_load(path, LoadRequest(threads=1), hw, budget)[0]
    from qwencli.chat.engine import Engine

    engine = Engine.load(path, the_plan, n_threads=1)
    model = ServedModel(engine, "tiny", (), ThinkingSupport("hybrid", "enable_thinking", True),
                        None, path, 0)
    try:
        messages: list[dict[str, str]] = [{"role": "user", "content": "What is 2+2?"}]
        for turn in range(3):
            prepared = prepare_chat(model, _chat(messages=messages, max_tokens=6, seed=1))
            before = llama_cpp.llama_perf_context(engine.llm._ctx.ctx).n_p_eval
            generation = engine.generate(prepared.prompt, prepared.sampling)
            answer = "".join(generation)
            evaluated = llama_cpp.llama_perf_context(engine.llm._ctx.ctx).n_p_eval - before
            stats = generation.stats
            if turn:  # llama.cpp's own count of prompt tokens it decoded agrees with ours
                assert evaluated == stats.prompt_eval_tokens
                assert stats.prompt_eval_tokens < stats.prompt_tokens / 2
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": f"And {turn}+{turn}?"}]
    finally:
        engine.close()


def test_a_hostile_chat_template_is_a_400_not_code_run() -> None:
    from qwencli.chat.engine import ChatTemplate
    from qwencli.serve.worker import prepare_chat

    hostile = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}", bos_token="",
                           eos_token="")

    class HostileEngine(ScriptedEngine):
        def prompt(self, messages: Sequence[Mapping[str, str]],
                   template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
            text = hostile.render(messages)
            return Prompt(text, (1,), False)

    model = ServedModel(HostileEngine([]), "m", (), ThinkingSupport("none", None, False), None,
                        Path("m.gguf"), 0)
    error = _refused(lambda: prepare_chat(model, _chat()))
    assert "chat template failed: SecurityError" in error.message


def test_serve_loads_the_largest_context_the_plan_allows(tmp_path: Path) -> None:
    """Without --ctx, serve plans the model's whole context when it fits (chat: 8,192), and the
    largest that fits when it does not; the KV cache type is the one asked for."""
    from dataclasses import replace

    from qwencli.chat.select import LoadRequest, plan_load
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.hardware.model import Budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware
    from qwencli.shapes import shape_from_gguf
    from tests.gguf_fixtures import QWEN3_0_6B, write_header_only_gguf

    path = write_header_only_gguf(tmp_path / "Qwen3-0.6B-F16.gguf",
                                  QWEN3_0_6B.tensor_specs("F16"),
                                  metadata=QWEN3_0_6B.arch_metadata())
    hw = replace(resolve_hardware(WhatIf(hardware="laptop-rtx4060-32gb"), probe), gpus=())
    plenty = Budget(10**12, "", (), False)
    serve = LoadRequest(largest_ctx=True)
    assert plan_load(path, LoadRequest(), hw, plenty)[0].ctx == 8192
    assert plan_load(path, serve, hw, plenty)[0].ctx == 40960  # the model's own
    quantized = plan_load(path, replace(serve, kv_type="q8_0"), hw, plenty)[0]
    assert quantized.kv_type == "q8_0"
    shape = shape_from_gguf(read_model(path))
    need_16k = plan(shape, hw, plenty, Options(ctx=16384)).host.bytes
    the_plan, max_ctx, notes, _ = plan_load(path, serve, hw, Budget(need_16k, "", (), False))
    assert the_plan.ctx == max_ctx and 8192 < max_ctx <= 16384
    assert notes == (f"the default 40,960-token context does not fit; using {max_ctx:,}",)
