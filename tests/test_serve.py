"""qwen serve end to end: a real `qwen serve` process on the tiny synthetic Qwen3 file (the real
Qwen3 tokenizer and chat template, random weights), driven by the official `openai` client and,
for what that client hides (raw bodies, headers, hanging up mid-stream), by http.client.

Random weights give random text: tests assert structure (shapes, token counts, order, status
codes, log lines). Nothing sleeps and hopes: a test waits for the server's own lines on stderr
("listening", "ready", the request log) or for responses, bounded by tests/ceilings.py.

Two holds make races impossible where a test must act "while" something happens (the same idea
as tests/hold.py for `qwen chat`): QWEN_TEST_HOLD_LOAD=FILE keeps the model from loading until
FILE exists (so /health is seen answering 503), and QWEN_TEST_HOLD_FIRST=1 holds the first
answer after its first visible text until its generation is told to stop (a client that hung
up, or the server stopping), so that answer cannot end on its own first.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests import ceilings
from tests.gguf_fixtures import qwen3_tokenizer, write_chat_models

_HOOK = f"""
import os, sys, time
from qwencli.chat import engine as _engine
from qwencli.serve import server as _server

_load_hold = os.environ.get("QWEN_TEST_HOLD_LOAD")
if _load_hold:
    _open = _server.open_model
    def _held_open(*args, **kwargs):
        give_up = time.monotonic() + {ceilings.PROCESS_S}
        while not os.path.exists(_load_hold) and time.monotonic() < give_up:
            time.sleep(0.01)
        return _open(*args, **kwargs)
    _server.open_model = _held_open

if os.environ.get("QWEN_TEST_HOLD_FIRST"):
    _answer = _engine.Generation.__iter__
    _first = [True]
    def _held(self):
        hold, _first[0] = _first[0], False
        for piece in _answer(self):
            yield piece
            if hold and piece.strip():
                hold = False
                sys.stderr.write("tests.hold: holding the first answer\\n")
                sys.stderr.flush()
                give_up = time.monotonic() + {ceilings.PROCESS_S}
                while not self._should_stop() and time.monotonic() < give_up:
                    time.sleep(0.01)
    _engine.Generation.__iter__ = _held

sys.argv[0] = "qwen"
from qwencli.cli import main
main()
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A hybrid Qwen3 model and a thinking-only one (its template opens <think>)."""
    tokenizer = qwen3_tokenizer()
    folder = tmp_path_factory.mktemp("models")
    return {**write_chat_models(folder, tokenizer), "cache": tmp_path_factory.mktemp("cache")}


class Server:
    """A `qwen serve` process on a free port; its stderr lines, as they come."""

    def __init__(self, files: dict[str, Path], *args: str, model: str = "qwen3",
                 env: dict[str, str] | None = None, hook: bool = False) -> None:
        full_env = {**os.environ, "QWEN_CACHE_DIR": str(files["cache"]), **(env or {})}
        argv = ([sys.executable, "-c", _HOOK] if hook else [sys.executable, "-m", "qwencli"])
        self.process = subprocess.Popen(
            [*argv, "serve", "--threads", "1", "--port", "0", "-m", str(files[model]), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        listening = self.wait_for(r"^listening on (http://\S+)")
        self.url = re.match(r"^listening on (http://\S+)", listening).group(1)  # type: ignore
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1) -> str:
        """The `count`-th stderr line matching `pattern` (fails at the end of stderr)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + ceilings.PROCESS_S
        with self._changed:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found[count - 1]
                assert "<eof>" not in self.lines, f"no {pattern!r} in {self.lines}"
                assert time.monotonic() < deadline, f"no {pattern!r} in {self.lines}"
                self._changed.wait(1.0)

    def ready(self) -> Server:
        self.wait_for(r"^ready: ")
        return self

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             timeout=ceilings.HTTP_S)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """A raw request: status, headers, the JSON body (or text)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=ceilings.HTTP_S)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={
            "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=ceilings.PROCESS_S)
        finally:
            self._reader.join(ceilings.PROCESS_S)
            assert self.process.stdout is not None
            self.stdout = self.process.stdout.read()
            self.process.stdout.close()
            self.process.stderr.close()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(ceilings.PROCESS_S)


@pytest.fixture(scope="module")
def server(files: dict[str, Path]) -> Iterator[Server]:
    running = Server(files).ready()
    yield running
    running.kill()


def _extra(obj: Any, name: str) -> Any:
    return (obj.model_extra or {}).get(name)


HELLO = [{"role": "user", "content": "What is 2+2?"}]


def _until_text(response: http.client.HTTPResponse) -> None:
    """Read SSE lines until a chunk with answer text."""
    while True:
        line = response.readline()
        assert line, "the stream ended before any text"
        if b'"delta": {"content": "' in line:
            return


# ------------------------------------------------------------------------------------------
# The API with the openai client


def test_chat_completion_non_streaming(server: Server) -> None:
    reply = server.client().chat.completions.create(
        model="tiny-qwen3.gguf", messages=HELLO, max_tokens=8, seed=1,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == "tiny-qwen3.gguf"
    [choice] = reply.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"  # random weights never say <|im_end|> in 8 tokens
    assert reply.usage is not None
    # the same 19 tokens as `qwen chat --no-think "What is 2+2?"` (tests/test_chat.py): the
    # same template and thinking switch
    assert reply.usage.prompt_tokens == 19
    assert reply.usage.completion_tokens == 8 and reply.usage.total_tokens == 27
    assert _extra(choice.message, "reasoning_content") is None  # it did not think
    timings = _extra(reply, "timings")  # the engine's own, as `qwen chat --json` gives them
    assert set(timings) == {"ttft_s", "prompt_tok_s", "decode_tok_s", "total_s"}
    assert timings["ttft_s"] > 0 and timings["decode_tok_s"] > 0


def test_chat_completion_streaming_with_usage(server: Server) -> None:
    stream = server.client().chat.completions.create(
        model="tiny-qwen3", messages=HELLO, max_tokens=8, seed=1, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices
             and c.choices[0].delta.content]
    assert texts and all(isinstance(t, str) for t in texts)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk is last
    assert chunks[-1].usage.completion_tokens == 8
    assert _extra(chunks[-1], "timings")["decode_tok_s"] > 0
    # thinking on (the model's default): no empty <think></think> block in the prompt
    assert chunks[-1].usage.prompt_tokens == 15


def test_enable_thinking_switch_and_model_default(server: Server) -> None:
    client = server.client()
    usage = {}
    for switch in (None, True, False):
        extra = {} if switch is None else {"chat_template_kwargs": {"enable_thinking": switch}}
        reply = client.chat.completions.create(model="tiny-qwen3.gguf", messages=HELLO,
                                               max_tokens=2, extra_body=extra)
        usage[switch] = reply.usage.prompt_tokens  # type: ignore[union-attr]
    # Qwen3's template writes an empty <think>\n\n</think>\n\n (4 tokens) only when it is off
    assert usage == {None: 15, True: 15, False: 19}


def test_reasoning_content_is_kept_out_of_content(files: dict[str, Path]) -> None:
    # The thinking-only template opens <think> in the prompt: every token here is thinking.
    running = Server(files, model="thinker").ready()
    try:
        client = running.client()
        reply = client.chat.completions.create(model="tiny-thinker.gguf", max_tokens=12,
                                               seed=4, messages=HELLO)
        message = reply.choices[0].message
        thinking = _extra(message, "reasoning_content")
        assert message.content == "" and thinking and thinking.strip() == thinking
        assert "<think>" not in thinking and "</think>" not in thinking
        chunks = list(client.chat.completions.create(model="tiny-thinker.gguf", max_tokens=12,
                                                     seed=4, messages=HELLO, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasoning = "".join(_extra(c.choices[0].delta, "reasoning_content") or ""
                            for c in chunks if c.choices)
        assert content == "" and reasoning.strip()
    finally:
        assert running.stop() == 0


def test_models_health_and_completions(server: Server) -> None:
    client = server.client()
    [model] = client.models.list().data
    assert model.id == "tiny-qwen3.gguf" and model.owned_by == "qwencli"
    assert _extra(model, "context_length") == 4096
    assert _extra(model, "aliases") == ["tiny-qwen3"]
    assert server.request("GET", "/health")[::2] == (200, {"status": "ok"})
    done = client.completions.create(model="tiny-qwen3.gguf", prompt="Once upon a time",
                                     max_tokens=6, seed=3)
    assert done.object == "text_completion" and done.choices[0].finish_reason == "length"
    assert done.usage.prompt_tokens == 4 and done.usage.completion_tokens == 6  # type: ignore
    pieces = list(client.completions.create(model="tiny-qwen3.gguf", prompt="Once upon a time",
                                            max_tokens=6, seed=3, stream=True))
    assert pieces[-1].choices[0].finish_reason == "length"
    assert "".join(p.choices[0].text for p in pieces)  # text came


def test_a_conversation_reuses_the_kv_cache_of_its_history(server: Server) -> None:
    client = server.client()
    first = client.chat.completions.create(model="tiny-qwen3.gguf", messages=HELLO,
                                           max_tokens=6, seed=1)
    history = [*HELLO, {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "And 3+3?"}]
    second = client.chat.completions.create(model="tiny-qwen3.gguf", messages=history,
                                            max_tokens=6, seed=1)
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    # Everything up to the first answer's "<|im_start|>assistant\n" was already in the cache
    # (the template renders the earlier answer without the thinking tags the first prompt had).
    assert cached >= first.usage.prompt_tokens - 1  # type: ignore[union-attr]
    assert cached < second.usage.prompt_tokens  # type: ignore[union-attr]
    line = server.wait_for(rf"POST /v1/chat/completions 200: prompt "
                           rf"{second.usage.prompt_tokens} tokens \({cached} cached\)")
    assert line


# ------------------------------------------------------------------------------------------
# Errors


def test_bad_requests_get_openai_error_objects(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-qwen3.gguf", messages=HELLO,
                                       temperature=7.0)
    assert bad.value.status_code == 400
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2)
    assert "tiny-qwen3.gguf" in missing.value.body["message"]  # type: ignore[index]
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    status, _, body = server.request("POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]
    status, _, body = server.request("POST", "/v1/chat/completions",
                                     {"messages": [{"role": "tool", "content": "x"}]})
    assert status == 400 and body["error"]["param"] == "messages[0].role"
    status, _, body = server.request("POST", "/v1/chat/completions",
                                     {"messages": HELLO, "n": 2})
    assert status == 400 and body["error"]["param"] == "n"
    status, _, body = server.request("POST", "/v1/nothing", {})
    assert status == 404 and body["error"]["code"] == "not_found"


def test_a_prompt_longer_than_the_context_is_refused_with_the_counts(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as too_long:
        server.client().chat.completions.create(
            model="tiny-qwen3.gguf", messages=[{"role": "user", "content": "word " * 5000}])
    body = too_long.value.body
    assert body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert re.search(r"the input is 5,0\d\d tokens, more than the 4,096-token context",
                     body["message"])  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_much:
        server.client().chat.completions.create(model="tiny-qwen3.gguf", messages=HELLO,
                                                max_tokens=5000)
    assert "15 tokens and max_tokens asks for 5,000 more, more than the 4,096-token" in \
        too_much.value.body["message"]  # type: ignore[index]


def test_a_body_over_the_limit_is_413(server: Server) -> None:
    # Refused on its declared length, before a byte of it is read (the client sends none:
    # no race between its sending and the server's answer).
    connection = http.client.HTTPConnection(server.host, server.port, timeout=ceilings.HTTP_S)
    connection.putrequest("POST", "/v1/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(9 << 20))
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413 and body["error"]["code"] == "request_too_large"
    assert body["error"]["message"] == "the request body is larger than 8,388,608 bytes"
    assert server.request("GET", "/health")[0] == 200  # and the server is none the worse


# ------------------------------------------------------------------------------------------
# Concurrency


def _load(client: openai.OpenAI, clients: int = 8, each: int = 3) -> list[tuple[int, str]]:
    """`clients` threads, each asking `each` questions one after the other (streamed and not,
    in turn): every answer's (completion tokens, finish reason)."""
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def one_client(number: int) -> None:
        try:
            for turn in range(each):
                messages = [{"role": "user", "content": f"Client {number}, question {turn}"}]
                if turn % 2:
                    chunks = list(client.chat.completions.create(
                        model="tiny-qwen3.gguf", messages=messages, max_tokens=16,
                        stream=True, stream_options={"include_usage": True}))
                    finish = [c.choices[0].finish_reason for c in chunks
                              if c.choices and c.choices[0].finish_reason]
                    assert chunks[-1].usage is not None
                    results.append((chunks[-1].usage.completion_tokens, finish[0]))
                else:
                    reply = client.chat.completions.create(
                        model="tiny-qwen3.gguf", messages=messages, max_tokens=16)
                    assert reply.usage is not None
                    results.append((reply.usage.completion_tokens,
                                    reply.choices[0].finish_reason))
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ceilings.PROCESS_S)
    assert errors == []
    return results


def test_load_eight_clients_three_requests_each_in_order(server: Server) -> None:
    client = server.client()
    process = psutil.Process(server.process.pid)
    rss = [process.memory_info().rss]
    logged = sum(line.startswith("#") for line in server.lines)
    for round_number in (1, 2, 3, 4):
        started = time.monotonic()
        results = _load(client)
        elapsed = time.monotonic() - started
        rss.append(process.memory_info().rss)
        # every answer complete: 16 tokens, or fewer when the random weights sampled the
        # end of the turn (a chance of about 1 in 150,000 per token)
        assert len(results) == 24
        assert all((n == 16) if finish == "length" else (finish == "stop" and n <= 16)
                   for n, finish in results), results
        server.wait_for(r"^#", count=logged + 24)  # a line is logged just after its answer
        log = [line for line in server.lines if line.startswith("#")][logged:logged + 24]
        logged += 24
        numbers = [int(line[1:].split()[0]) for line in log]
        assert numbers == sorted(numbers), log  # answered in order of arrival
        assert all(line.endswith(("finish length", "finish stop")) for line in log)  # none
        # cancelled, none failed
        waits = [float(re.search(r"waited (\d+\.\d+) s", line).group(1))  # type: ignore
                 for line in log]
        print(f"\nload round {round_number}: 24 requests from 8 clients in {elapsed:.1f} s, "
              f"longest wait in the queue {max(waits):.2f} s; server RSS "
              f"{rss[-2] / 2**20:.1f} -> {rss[-1] / 2**20:.1f} MiB")
    # The first rounds warm up (the HTTP threads' allocator arenas, buffers, the token-piece
    # cache), and the allocator sometimes hands memory back between rounds; what must not
    # happen is growth with the number of requests. A 15-round soak (360 requests) measured
    # 215 -> 231 -> 233 -> 238 -> 240 -> 244 -> 245.5 MiB, then 245.5-245.7 for 9 more rounds.
    mib = [round(r / 2**20, 1) for r in rss]
    assert rss[4] - max(rss[1:4]) < 16 * 2**20, mib  # the last round adds ~nothing to the peak
    assert rss[4] - rss[0] < 64 * 2**20, mib  # a leak of ~0.7 MiB per request would fail this


def test_a_full_queue_a_key_cors_and_a_client_that_hangs_up(files: dict[str, Path],
                                                             tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key-for-tests\n")
    gate = tmp_path / "loaded"
    running = Server(files, "--queue", "1", "--api-key-file", str(key_file), "--cors",
                     "http://editor.test", hook=True,
                     env={"QWEN_TEST_HOLD_LOAD": str(gate), "QWEN_TEST_HOLD_FIRST": "1"})
    try:
        # Loading (held): /health says so, the API asks to come back.
        status, headers, body = running.request("GET", "/health")
        assert (status, body, headers["retry-after"]) == (503, {"status": "loading"}, "5")
        status, headers, body = running.request(
            "POST", "/v1/chat/completions", {"messages": HELLO},
            headers={"Authorization": "Bearer s3cret-key-for-tests"})
        assert (status, body["error"]["code"], headers["retry-after"]) == (503, "loading", "5")
        gate.touch()
        running.ready()
        assert running.request("GET", "/health")[0] == 200  # no key needed
        with pytest.raises(openai.AuthenticationError):
            running.client("wrong-key-123").models.list()
        status, headers, body = running.request("POST", "/v1/chat/completions",
                                                {"messages": HELLO})
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        assert body["error"]["code"] == "invalid_api_key"
        client = running.client("s3cret-key-for-tests")
        assert client.models.list().data[0].id == "tiny-qwen3.gguf"
        auth = {"Authorization": "Bearer s3cret-key-for-tests"}
        # CORS for the origin given, none for another; a preflight needs no key.
        _, headers, _ = running.request("GET", "/v1/models",
                                        headers={**auth, "Origin": "http://editor.test"})
        assert headers["access-control-allow-origin"] == "http://editor.test"
        _, headers, _ = running.request("GET", "/v1/models",
                                        headers={**auth, "Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in headers
        status, headers, _ = running.request("OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://editor.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert status == 200 and headers["access-control-allow-origin"] == "http://editor.test"

        # A: streams, held after its first words until it is told to stop.
        first = http.client.HTTPConnection(running.host, running.port, timeout=ceilings.HTTP_S)
        first.request("POST", "/v1/chat/completions", headers=auth, body=json.dumps({
            "model": "tiny-qwen3.gguf", "messages": HELLO, "stream": True, "max_tokens": 3000,
            "chat_template_kwargs": {"enable_thinking": False}}))
        stream = first.getresponse()
        assert stream.status == 200
        _until_text(stream)  # A is generating, and held
        # B: waits in the queue (its response starts once it is queued)
        second = http.client.HTTPConnection(running.host, running.port, timeout=ceilings.HTTP_S)
        second.request("POST", "/v1/chat/completions", headers=auth, body=json.dumps({
            "model": "tiny-qwen3.gguf", "messages": HELLO, "stream": True, "max_tokens": 5}))
        queued = second.getresponse()
        assert queued.status == 200 and queued.getheader("X-Request-Number") == "2"
        # C: the queue (1) is full
        with pytest.raises(openai.APIStatusError) as full:
            client.chat.completions.create(model="tiny-qwen3.gguf", messages=HELLO,
                                           max_tokens=2)
        assert full.value.status_code == 503
        assert full.value.response.headers["retry-after"] == "5"
        assert full.value.body["code"] == "queue_full"  # type: ignore[index]
        # A hangs up: its generation stops at once and B is answered, completely.
        first.close()
        line = running.wait_for(r"^#1 POST /v1/chat/completions 200 stream")
        assert re.search(r"stopped: the client went away \(0 tokens after\)", line), line
        tokens = int(re.search(r"answer (\d+) tokens", line).group(1))  # type: ignore
        assert tokens < 3000
        events = queued.read().decode().split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""]
        finish = [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-2]]
        assert finish[-1] == "length"
        second.close()
        assert re.search(r"finish length$", running.wait_for(r"^#2 POST"))
    finally:
        running.kill()


def test_a_client_that_stops_waiting_for_a_whole_answer_stops_it(files: dict[str, Path]) -> None:
    running = Server(files, hook=True, env={"QWEN_TEST_HOLD_FIRST": "1"}).ready()
    try:
        connection = http.client.HTTPConnection(running.host, running.port,
                                                timeout=ceilings.HTTP_S)
        connection.request("POST", "/v1/chat/completions", body=json.dumps({
            "messages": HELLO, "max_tokens": 3000,
            "chat_template_kwargs": {"enable_thinking": False}}))
        running.wait_for(r"^tests.hold: holding")  # generating, and held
        connection.close()  # the client gives up before the answer is whole
        line = running.wait_for(r"^#1 POST /v1/chat/completions 200:")
        assert line.endswith("stopped: the client went away (0 tokens after)"), line
        reply = running.client().chat.completions.create(messages=HELLO, model="tiny-qwen3",
                                                         max_tokens=4)
        assert reply.usage.completion_tokens == 4  # type: ignore[union-attr]
    finally:
        running.kill()


# ------------------------------------------------------------------------------------------
# Safe defaults and the lifecycle


def test_sigterm_stops_an_answer_in_flight_and_exits_0(files: dict[str, Path]) -> None:
    running = Server(files, hook=True, env={"QWEN_TEST_HOLD_FIRST": "1"}).ready()
    connection = http.client.HTTPConnection(running.host, running.port,
                                            timeout=ceilings.HTTP_S)
    connection.request("POST", "/v1/chat/completions", body=json.dumps({
        "messages": HELLO, "stream": True, "max_tokens": 3000,
        "chat_template_kwargs": {"enable_thinking": False}}))
    response = connection.getresponse()
    _until_text(response)  # held mid-answer
    assert running.stop(signal.SIGTERM) == 0
    rest = response.read().decode()
    assert '"code": "shutting_down"' in rest and "[DONE]" not in rest  # told, not cut silently
    assert running.lines[-2:] == ["stopped", "<eof>"]
    assert re.search(r"stopped: the server is shutting down", "\n".join(running.lines))
    assert not [line for line in running.lines if "Traceback" in line]


def test_sigterm_while_loading_takes_effect_when_the_load_ends(files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    gate = tmp_path / "loaded"
    running = Server(files, hook=True, env={"QWEN_TEST_HOLD_LOAD": str(gate)})
    running.process.send_signal(signal.SIGTERM)  # recorded: the load is held
    gate.touch()
    assert running.stop() == 0
    assert running.lines[-2:] == ["stopped", "<eof>"]
    assert not [line for line in running.lines if line.startswith("ready")]


def test_ctrl_c_exits_130_and_a_port_in_use_is_one_line(files: dict[str, Path]) -> None:
    running = Server(files).ready()
    taken = subprocess.run(
        [sys.executable, "-m", "qwencli", "serve", "-m", str(files["qwen3"]), "--port",
         str(running.port)], capture_output=True, timeout=ceilings.PROCESS_S,
        env={**os.environ, "QWEN_CACHE_DIR": str(files["cache"])})
    assert taken.returncode == 1
    assert taken.stderr.decode().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{running.port}: the address is in use",
        "hint: stop what is using it, or choose another --port"]
    assert running.stop(signal.SIGINT) == 130


def test_binding_every_address_without_a_key_warns(files: dict[str, Path]) -> None:
    running = Server(files, "--host", "0.0.0.0", "--quiet")
    try:
        warning = running.wait_for(r"^warning: ")
        assert warning == ("warning: listening on 0.0.0.0 without an API key: every network "
                           "this machine is on can use this model; set --api-key or "
                           "--api-key-file")
        running.ready()
        running.client().chat.completions.create(messages=HELLO, model="tiny-qwen3",
                                                 max_tokens=2)
    finally:
        assert running.stop() == 0
    assert not [line for line in running.lines if line.startswith("#")]  # --quiet
    assert running.stdout == b""  # stdout carries nothing


def test_usage_errors(files: dict[str, Path], tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qwencli", "serve", "-m",
                               str(files["qwen3"]), *args], capture_output=True,
                              timeout=ceilings.PROCESS_S,
                              env={**os.environ, "QWEN_CACHE_DIR": str(files["cache"])})

    short = serve("--api-key", "abc")
    assert short.returncode == 2 and b"at least 8 characters" in short.stderr
    both = serve("--api-key", "abcdefghij", "--api-key-file", str(tmp_path / "k"))
    assert both.returncode == 2 and b"give one of them" in both.stderr
    missing = serve("--api-key-file", str(tmp_path / "nope"))
    assert missing.returncode == 1 and b"no such file" in missing.stderr
    kv = serve("--kv-type", "q3")
    assert kv.returncode == 2 and b"not one of f16, q8_0, q4_0" in kv.stderr
