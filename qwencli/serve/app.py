"""The HTTP side: routes, the API key, the body limit, CORS, the request log.

Order of checks for a request: key (401) -> model loaded (503) -> body size (413) -> JSON and
fields (400) -> model name (404) -> prompt fits the context (400) -> room in the queue (503).
None of them touches the job in progress: a rejected request never reaches the queue.
Errors are OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`), for
unknown paths and methods too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from qwencli.serve import protocol
from qwencli.serve.protocol import ApiError, Envelope, Usage
from qwencli.serve.worker import (
    RETRY_AFTER_S,
    Done,
    Event,
    Failed,
    Job,
    Piece,
    Prepared,
    prepare_chat,
    prepare_completion,
)

if TYPE_CHECKING:
    from qwencli.serve.worker import Scheduler, ServedModel


@dataclass
class ServerState:
    """What the routes read; the lifecycle (server.py) fills in the model once it is loaded."""

    api_key: str | None
    log: Callable[[str], None]  # the request log (a no-op with --quiet)
    max_body: int = protocol.MAX_BODY_BYTES
    model: ServedModel | None = None
    scheduler: Scheduler | None = None
    status: str = "loading"  # "loading" | "ready" | "stopping"


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.document(), status_code=error.status, headers=error.headers)


def _authorized(state: ServerState, request: Request) -> None:
    """401 unless the request carries the key (`Authorization: Bearer KEY`), compared in
    constant time."""
    if state.api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), state.api_key.encode("utf-8")):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _ready(state: ServerState) -> tuple[ServedModel, Scheduler]:
    if state.status == "stopping":
        raise ApiError(503, "the server is shutting down", kind="server_error",
                       code="shutting_down")
    if state.model is None or state.scheduler is None:
        raise ApiError(503, "the model is still loading; try again shortly",
                       kind="server_error", code="loading",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    return state.model, state.scheduler


async def _body(state: ServerState, request: Request) -> bytes:
    """The request body, 413 past the limit (checked before reading when it is declared)."""
    limit = state.max_body
    too_large = ApiError(413, f"the request body is larger than {limit:,} bytes",
                         code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read: what comes is the end)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _envelope(prefix: str, model: ServedModel) -> Envelope:
    return Envelope(f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model.id)


def _usage(done: Done) -> Usage:
    s = done.stats
    return Usage(s.prompt_tokens, s.completion_tokens, s.prompt_tokens - s.prompt_eval_tokens,
                 {"ttft_s": round(s.ttft_s, 4), "prompt_tok_s": round(s.prompt_tok_s, 2),
                  "decode_tok_s": round(s.decode_tok_s, 2), "total_s": round(s.total_s, 4)})


class _Channel:
    """A job's events, carried from the worker thread into this request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    def deliver(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def _shutdown_error() -> ApiError:
    return ApiError(503, "the server is shutting down", kind="server_error",
                    code="shutting_down")


async def _handle(state: ServerState, request: Request, kind: str) -> Response:
    label = f"{request.method} {request.url.path}"
    try:
        _authorized(state, request)
        model, scheduler = _ready(state)
        document = protocol.parse_json(await _body(state, request))
        parsed = (protocol.parse_chat(document) if kind == "chat"
                  else protocol.parse_completion(document))
        if not model.accepts(parsed.model):
            also = "".join(f", or {name!r}" for name in model.aliases)
            raise ApiError(404, f"the model {parsed.model!r} is not served here; this server "
                                f"serves {model.id!r} (name it so{also}, or leave 'model' "
                                "out)",
                           param="model", code="model_not_found")
        prepare = prepare_chat if kind == "chat" else prepare_completion
        prepared: Prepared = await run_in_threadpool(prepare, model, parsed)  # type: ignore[arg-type]
        channel = _Channel()
        job = Job(prepared, channel.deliver, label, stream=parsed.stream)
        scheduler.submit(job)
    except ApiError as error:
        state.log(f"- {label} {error.status}: {error.message}")
        return error_response(error)
    except Exception as exc:  # a bug: one line in the log and a 500, never a traceback
        error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}",
                         kind="server_error")
        state.log(f"- {label} 500: {error.message}")
        return error_response(error)
    headers = {"X-Request-Number": str(job.number)}
    envelope = _envelope("chatcmpl" if kind == "chat" else "cmpl", model)
    if parsed.stream:
        body = (_chat_stream if kind == "chat" else _completion_stream)(
            job, channel, envelope, parsed.include_usage)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
    return await _whole(request, job, channel, envelope, kind, headers)


async def _whole(request: Request, job: Job, channel: _Channel, envelope: Envelope, kind: str,
                 headers: dict[str, str]) -> Response:
    """A non-streamed answer: wait for it, and stop it if the client leaves meanwhile."""
    text: list[str] = []

    async def collect() -> Done | Failed:
        while True:
            event = await channel.events.get()
            if isinstance(event, Piece):
                text.append(event.text)
            else:
                return event

    waiting = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()
            job.cancel("client")
    if not waiting.done() or waiting.cancelled():
        return Response(status_code=499)  # nobody is there to read it
    event = waiting.result()
    if isinstance(event, Failed):
        return error_response(event.error)
    if event.ended_by == "shutdown":
        return error_response(_shutdown_error())
    if kind == "chat":
        document = protocol.chat_completion(envelope, event.answer, event.thinking,
                                            event.finish_reason, _usage(event))
    else:
        document = protocol.text_completion(envelope, "".join(text), event.finish_reason,
                                            _usage(event))
    return JSONResponse(document, headers=headers)


async def _chat_stream(job: Job, channel: _Channel, envelope: Envelope,
                       include_usage: bool) -> AsyncIterator[bytes]:
    """SSE chunks: the role, then content / reasoning_content deltas, the finish reason,
    the usage when asked, `[DONE]`. A client that leaves cancels this generator (Starlette
    listens for the disconnect), which stops the job at its next token."""
    try:
        yield protocol.sse(protocol.chat_chunk(envelope, {"role": "assistant", "content": ""}))
        while True:
            event = await channel.events.get()
            if isinstance(event, Piece):
                key = "reasoning_content" if event.kind == "thinking" else "content"
                yield protocol.sse(protocol.chat_chunk(envelope, {key: event.text}))
                continue
            if isinstance(event, Failed) or event.ended_by == "shutdown":
                error = event.error if isinstance(event, Failed) else _shutdown_error()
                yield protocol.sse(error.document())
                return
            yield protocol.sse(protocol.chat_chunk(envelope, {}, event.finish_reason))
            if include_usage:
                yield protocol.sse(protocol.chat_chunk(envelope, {}, usage=_usage(event),
                                                       choices=False))
            yield protocol.sse("[DONE]")
            return
    finally:
        job.cancel("client")  # a no-op once the job is done


async def _completion_stream(job: Job, channel: _Channel, envelope: Envelope,
                             include_usage: bool) -> AsyncIterator[bytes]:
    try:
        while True:
            event = await channel.events.get()
            if isinstance(event, Piece):
                yield protocol.sse(protocol.text_completion(envelope, event.text, None, None,
                                                            chunk=True))
                continue
            if isinstance(event, Failed) or event.ended_by == "shutdown":
                error = event.error if isinstance(event, Failed) else _shutdown_error()
                yield protocol.sse(error.document())
                return
            yield protocol.sse(protocol.text_completion(envelope, "", event.finish_reason, None,
                                                        chunk=True))
            if include_usage:
                yield protocol.sse(protocol.text_completion(envelope, "", None, _usage(event),
                                                            chunk=True, choices=False))
            yield protocol.sse("[DONE]")
            return
    finally:
        job.cancel("client")


def create_app(state: ServerState, *, cors: tuple[str, ...] = ()) -> Starlette:
    """The ASGI app. `cors`: origins allowed to call from a browser (none by default)."""

    async def health(request: Request) -> Response:
        if state.status == "ready":
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": state.status}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    async def models(request: Request) -> Response:
        try:
            _authorized(state, request)
            model, _ = _ready(state)
        except ApiError as error:
            state.log(f"- GET /v1/models {error.status}: {error.message}")
            return error_response(error)
        return JSONResponse(protocol.models_list(model.id, model.created, model.n_ctx,
                                                 model.aliases, str(model.path)))

    async def chat(request: Request) -> Response:
        return await _handle(state, request, "chat")

    async def completions(request: Request) -> Response:
        return await _handle(state, request, "completion")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no such endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            status, "internal error")
        state.log(f"- {request.method} {request.url.path} {status}")
        return error_response(ApiError(status, message,
                                       code="not_found" if status == 404 else None))

    middleware = [Middleware(CORSMiddleware, allow_origins=list(cors),
                             allow_methods=["GET", "POST", "OPTIONS"],
                             allow_headers=["Authorization", "Content-Type"])] if cors else []
    handlers: dict[Any, Any] = {HTTPException: http_error}
    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ], middleware=middleware, exception_handlers=handlers)
