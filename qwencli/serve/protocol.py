"""OpenAI's API, the part `qwen serve` speaks: request bodies checked field by field, and the
JSON documents it answers with (as platform.openai.com documents them; `reasoning_content` as
llama.cpp's server and vLLM add it).

Pure: bytes and dicts in, frozen dataclasses and dicts out. Every body is untrusted: a field of
the wrong type, out of range, or a feature this server does not have (tools, logprobs, n > 1)
is a 400 with an OpenAI-style error object naming the field, never a silent default. Fields
this server has no use for and that change nothing (`user`, `metadata`, `store`, ...) are
accepted and ignored, as clients send them unasked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body larger than this is a 413
MAX_MESSAGES = 10_000
MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
SEED_MODULUS = 0xFFFFFFFF  # llama.cpp's seeds are 32-bit; 0xFFFFFFFF itself means "random"

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer "system"


class ApiError(Exception):
    """A request that gets an error answer: HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def document(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad(param: str, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# ------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Common:
    """What chat and plain completions share."""

    model: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    overrides: Mapping[str, Any]  # sampling values the request set (chat.session's keys)
    stop: tuple[str, ...]


@dataclass(frozen=True)
class ChatRequest(Common):
    messages: tuple[Mapping[str, str], ...] = ()
    enable_thinking: bool | None = None  # chat_template_kwargs.enable_thinking; None: default


@dataclass(frozen=True)
class CompletionRequest(Common):
    prompt: str = ""


@dataclass(frozen=True)
class _Number:
    kind: type
    low: float
    high: float
    key: str  # chat.session's sampling key


# name in the request -> how to check it and where it goes (OpenAI's ranges; top_k, min_p and
# repetition_penalty are llama.cpp/vLLM extensions clients such as Open WebUI send)
_SAMPLING = {
    "temperature": _Number(float, 0.0, 2.0, "temperature"),
    "top_p": _Number(float, 0.0, 1.0, "top_p"),
    "presence_penalty": _Number(float, -2.0, 2.0, "presence_penalty"),
    "frequency_penalty": _Number(float, -2.0, 2.0, "frequency_penalty"),
    "top_k": _Number(int, 0, 10**6, "top_k"),
    "min_p": _Number(float, 0.0, 1.0, "min_p"),
    "repetition_penalty": _Number(float, 0.0, 10.0, "repeat_penalty"),
}

# Features a client may ask for that this server does not have: asking is an error, not silence.
_UNSUPPORTED = {
    "tools": "tool calling is not supported",
    "functions": "function calling is not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
}


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("", "the request body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = f": {exc.msg} at line {exc.lineno} column {exc.colno}" \
            if isinstance(exc, json.JSONDecodeError) else ": nested too deeply"
        raise bad("", f"the request body is not valid JSON{detail}") from None
    if not isinstance(document, dict):
        raise bad("", "the request body must be a JSON object")
    return document


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _common(doc: Mapping[str, Any], *, chat: bool) -> dict[str, Any]:
    for name, why in _UNSUPPORTED.items():
        value = doc.get(name)
        if value not in (None, False, [], {}, 0):
            raise bad(name, f"'{name}': {why} by qwen serve")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("model", "'model' must be a string")
    stream = doc.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad("stream", "'stream' must be true or false")
    include_usage = False
    options = doc.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad("stream_options", "'stream_options' must be an object")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise bad("stream_options.include_usage", "'include_usage' must be true or false")
    n = doc.get("n")
    if n is not None and n != 1:
        raise bad("n", "'n' must be 1: qwen serve gives one answer per request")
    if not chat and doc.get("best_of") not in (None, 1):
        raise bad("best_of", "'best_of' must be 1")
    max_tokens = None
    for name in (("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)):
        value = doc.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise bad(name, f"'{name}' must be a positive integer")
        max_tokens = value
        break
    overrides: dict[str, Any] = {}
    for name, rule in _SAMPLING.items():
        value = doc.get(name)
        if value is None:
            continue
        if not (_is_int(value) if rule.kind is int else _is_number(value)):
            raise bad(name, f"'{name}' must be {'an integer' if rule.kind is int else 'a number'}")
        if not rule.low <= value <= rule.high:
            raise bad(name, f"'{name}' must be between {rule.low:g} and {rule.high:g}")
        overrides[rule.key] = rule.kind(value)
    seed = doc.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise bad("seed", "'seed' must be an integer")
        overrides["seed"] = seed % SEED_MODULUS
    if max_tokens is not None:
        overrides["max_tokens"] = max_tokens
    return {"model": model, "stream": stream, "include_usage": include_usage,
            "max_tokens": max_tokens, "overrides": overrides, "stop": _stops(doc.get("stop"))}


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop", "'stop' must be a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise bad("stop", f"'stop' takes at most {MAX_STOPS} strings")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise bad("stop", f"each 'stop' string is at most {MAX_STOP_CHARS} characters")
    return tuple(s for s in stops if s)


def _content(value: Any, where: str, role: str) -> str:
    """A message's content: a string, or a list of text parts (joined, as OpenAI does)."""
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list):
        texts = []
        for number, part in enumerate(value):
            if not isinstance(part, dict):
                raise bad(f"{where}.content[{number}]", "a content part must be an object")
            if part.get("type") != "text":
                raise bad(f"{where}.content[{number}].type",
                          f"content parts of type {part.get('type')!r} are not supported "
                          "(this model reads text only)")
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"{where}.content[{number}].text", "a text part needs a string 'text'")
            texts.append(text)
        return "\n".join(texts)
    raise bad(f"{where}.content", "'content' must be a string or a list of text parts")


def parse_chat(doc: Mapping[str, Any]) -> ChatRequest:
    """A /v1/chat/completions body -> ChatRequest (ApiError 400 with the field at fault)."""
    common = _common(doc, chat=True)
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise bad("messages", f"at most {MAX_MESSAGES:,} messages")
    checked: list[dict[str, str]] = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if not isinstance(message, dict):
            raise bad(where, "each message must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise bad(f"{where}.role", f"role {role!r} is not supported; use one of "
                                       "system, developer, user, assistant")
        if role == "assistant" and message.get("tool_calls"):
            raise bad(f"{where}.tool_calls", "tool calls are not supported by qwen serve")
        checked.append({"role": "system" if role == "developer" else role,
                        "content": _content(message.get("content"), where, role)})
    if checked[-1]["role"] == "assistant":
        raise bad("messages", "the last message must not be the assistant's (continuing an "
                              "answer is not supported)")
    thinking = None
    kwargs = doc.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise bad("chat_template_kwargs", "'chat_template_kwargs' must be an object")
        unknown = sorted(set(kwargs) - {"enable_thinking"})
        if unknown:
            raise bad(f"chat_template_kwargs.{unknown[0]}",
                      "only 'enable_thinking' is supported in 'chat_template_kwargs'")
        thinking = kwargs.get("enable_thinking")
        if thinking is not None and not isinstance(thinking, bool):
            raise bad("chat_template_kwargs.enable_thinking",
                      "'enable_thinking' must be true or false")
    response_format = doc.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise bad("response_format", "only the 'text' response format is supported")
    return ChatRequest(**common, messages=tuple(checked), enable_thinking=thinking)


def parse_completion(doc: Mapping[str, Any]) -> CompletionRequest:
    """A /v1/completions body -> CompletionRequest (one prompt string)."""
    common = _common(doc, chat=False)
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "'prompt' must be a string (one prompt per request)")
    return CompletionRequest(**common, prompt=prompt)


# ------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV cache an earlier request left
    # the engine's own timings, as `qwen chat --json` reports them (ttft_s, prompt_tok_s,
    # decode_tok_s, total_s): sent beside `usage` as `timings`, as llama.cpp's server does
    timings: Mapping[str, float] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


@dataclass(frozen=True)
class Envelope:
    """What every answer and chunk of one request repeats."""

    id: str
    created: int
    model: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def chat_message(answer: str, thinking: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if thinking is not None:
        message["reasoning_content"] = thinking
    return message


def chat_completion(env: Envelope, answer: str, thinking: str | None, finish_reason: str,
                    usage: Usage) -> dict[str, Any]:
    return {"id": env.id, "object": "chat.completion", "created": env.created,
            "model": env.model,
            "choices": [{"index": 0, "message": chat_message(answer, thinking),
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage.document(), "timings": dict(usage.timings)}


def chat_chunk(env: Envelope, delta: Mapping[str, Any], finish_reason: str | None = None,
               usage: Usage | None = None, *, choices: bool = True) -> dict[str, Any]:
    document = {"id": env.id, "object": "chat.completion.chunk", "created": env.created,
                "model": env.model,
                "choices": [{"index": 0, "delta": dict(delta), "logprobs": None,
                             "finish_reason": finish_reason}] if choices else [],
                "usage": usage.document() if usage else None}
    if usage is not None:
        document["timings"] = dict(usage.timings)
    return document


def text_completion(env: Envelope, text: str, finish_reason: str | None,
                    usage: Usage | None, *, chunk: bool = False,
                    choices: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
        "choices": [{"index": 0, "text": text, "logprobs": None,
                     "finish_reason": finish_reason}] if choices else []}
    if usage is not None or not chunk:
        document["usage"] = usage.document() if usage else None
    if usage is not None:
        document["timings"] = dict(usage.timings)
    return document


def models_list(model_id: str, created: int, n_ctx: int, aliases: tuple[str, ...],
                path: str) -> dict[str, Any]:
    return {"object": "list", "data": [{
        "id": model_id, "object": "model", "created": created, "owned_by": "qwencli",
        "context_length": n_ctx, "aliases": list(aliases), "path": path}]}


def sse(document: Mapping[str, Any] | str) -> bytes:
    """One Server-Sent Event (`data: [DONE]` for the end marker)."""
    text = document if isinstance(document, str) else json.dumps(document,
                                                                  ensure_ascii=False)
    return f"data: {text}\n\n".encode()
