"""One model, one generation at a time, and a queue in front of it.

llama-cpp-python's own server cancels the answer in progress when another request comes; here
requests wait their turn in a bounded FIFO queue (full: 503 with Retry-After) and each runs to
its end, unless its client goes away or the server stops: both are seen by `should_stop`, which
the engine polls around every token, so a generation ends within a token of it. Requests are
answered in the order they entered the queue (their number, `#N` in the request log).

The worker runs in the main thread (where llama.cpp was loaded and where signals arrive); the
HTTP side runs in uvicorn's thread and hears about each request through a callback that hands
events to its event loop. The KV cache stays between requests: llama-cpp-python reuses the
longest common prefix of the previous tokens, so a conversation's next turn reads only what is
new (`usage.prompt_tokens_details.cached_tokens` says how much was reused).

The conversation rules are chat.session's, the same `qwen chat` uses: Qwen's sampling presets
for the mode, the thinking switch, thinking kept out of earlier assistant turns, the streaming
split of `<think>` blocks into `reasoning_content`.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwencli.chat.engine import EngineError, Prompt, Sampling, Stats
from qwencli.chat.session import (
    Conversation,
    ThinkingSupport,
    ThinkSplitter,
    apply_overrides,
    choose_thinking,
    overflow_error,
    preset_sampling,
    strip_thinking,
)
from qwencli.serve.protocol import ApiError, ChatRequest, CompletionRequest

RETRY_AFTER_S = 5  # what a 503 (queue full, loading) asks the client to wait


@dataclass(frozen=True)
class ServedModel:
    """The loaded model as the API shows it."""

    engine: Any  # chat.engine.Engine (a fake in tests)
    id: str  # what /v1/models lists
    aliases: tuple[str, ...]  # other names a request's `model` may use
    support: ThinkingSupport
    spec: Any  # catalog.ModelSpec | None
    path: Path
    created: int

    @property
    def n_ctx(self) -> int:
        return int(self.engine.n_ctx)

    def accepts(self, name: str | None) -> bool:
        """A request naming no model gets this one; a name must be the id or an alias."""
        return name is None or name in (self.id, *self.aliases)


@dataclass(frozen=True)
class Prepared:
    """A request ready for the engine: the prompt, its sampling, where its output goes."""

    prompt: Prompt
    sampling: Sampling
    stops: tuple[str, ...]
    split_thinking: bool  # chat: <think> blocks go to reasoning_content


def _check_fits(n_prompt: int, max_tokens: int | None, n_ctx: int, field: str) -> None:
    """No silent truncation: a prompt (plus the answer asked for) longer than the context is a
    400 stating the counts."""
    if n_prompt >= n_ctx:
        error = overflow_error(n_prompt, n_ctx, n_ctx, max_tokens or 0)
        raise ApiError(400, f"{error.message}: shorten the {field}, or restart the server "
                            "with a larger --ctx", param=field, code="context_length_exceeded")
    if max_tokens is not None and n_prompt + max_tokens > n_ctx:
        raise ApiError(400, f"the prompt is {n_prompt:,} tokens and max_tokens asks for "
                            f"{max_tokens:,} more, more than the {n_ctx:,}-token context",
                       param="max_tokens", code="context_length_exceeded")


def _sampling(model: ServedModel, thinking: bool, overrides: Mapping[str, Any]) -> Sampling:
    """Qwen's preset for the model and mode, with what the request set."""
    sampling = apply_overrides(preset_sampling(model.spec, thinking), overrides)
    if "frequency_penalty" in overrides:  # OpenAI's; not one of the chat's /set keys
        sampling = replace(sampling, frequency_penalty=overrides["frequency_penalty"])
    return sampling


def prepare_chat(model: ServedModel, request: ChatRequest) -> Prepared:
    """Render and tokenize a chat request as `qwen chat` would render its conversation."""
    choice = choose_thinking(model.support, request.enable_thinking)
    messages = [dict(m, content=strip_thinking(m["content"])) if m["role"] == "assistant"
                else dict(m) for m in request.messages]
    rendered = Conversation(messages=messages).for_model(choice.suffix)
    try:
        prompt = model.engine.prompt(rendered, choice.template_kwargs)
    except EngineError as exc:  # the template refused these messages
        raise ApiError(400, exc.message, param="messages") from None
    _check_fits(len(prompt.tokens), request.max_tokens, model.n_ctx, "messages")
    return Prepared(prompt, _sampling(model, choice.on, request.overrides), request.stop,
                    split_thinking=True)


def prepare_completion(model: ServedModel, request: CompletionRequest) -> Prepared:
    """Tokenize a plain prompt (no template: the text is the model's input as it is)."""
    tokens = tuple(model.engine.tokenize(request.prompt))
    if not tokens:
        raise ApiError(400, "'prompt' is empty", param="prompt")
    _check_fits(len(tokens), request.max_tokens, model.n_ctx, "prompt")
    prompt = Prompt(text=request.prompt, tokens=tokens, opens_thinking=False)
    return Prepared(prompt, _sampling(model, False, request.overrides), request.stop,
                    split_thinking=False)


# ------------------------------------------------------------------------------------------
# Events a job sends to its HTTP request


@dataclass(frozen=True)
class Piece:
    kind: str  # "answer" | "thinking"
    text: str


@dataclass(frozen=True)
class Done:
    stats: Stats
    answer: str
    thinking: str | None  # None: the model did not think
    ended_by: str | None  # None: finished; "client" went away; "shutdown" of the server

    @property
    def finish_reason(self) -> str:
        reason = self.stats.finish_reason
        return reason if reason in ("stop", "length") else "stop"


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Piece | Done | Failed


@dataclass(eq=False)
class Job:
    """One queued request. `deliver` hands an event to the request's side (thread-safe)."""

    prepared: Prepared
    deliver: Callable[[Event], None]
    label: str  # "POST /v1/chat/completions" for the log
    stream: bool = False
    number: int = 0  # place in the order of arrival, given by the queue
    queued_at: float = field(default_factory=time.monotonic)
    ended_by: str | None = None
    generation: Any = None  # the engine's Generation while the job runs
    generated_at_cancel: int | None = None  # its tokens when it was told to stop

    def cancel(self, why: str = "client") -> None:
        """Stop this job (before it runs, or at the next token). Idempotent; may be called
        from any thread (the count read is one int of the running generation)."""
        if self.ended_by is None:
            running = self.generation
            self.generated_at_cancel = running.completion_tokens if running is not None else 0
            self.ended_by = why


class Scheduler:
    """The bounded FIFO queue and the loop that runs its jobs one at a time."""

    def __init__(self, model: ServedModel, *, limit: int,
                 log: Callable[[str], None]) -> None:
        self.model = model
        self.limit = limit
        self._log = log
        self._lock = threading.Lock()
        self._pending: collections.deque[Job] = collections.deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # put() is signal-safe
        self._count = 0
        self._stopping = False
        self.running: Job | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, job: Job) -> int:
        """Queue `job`; its number in the order of arrival. 503 when full or stopping."""
        with self._lock:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", kind="server_error",
                               code="shutting_down")
            if len(self._pending) >= self.limit:
                raise ApiError(503, f"the queue is full ({self.limit} requests waiting); "
                                    "try again shortly", kind="server_error",
                               code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
            self._count += 1
            job.number = self._count
            self._pending.append(job)
        self._wake.put(None)
        return job.number

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self) -> None:
        """Stop the loop: the job in progress ends at its next token, queued ones get 503.
        Safe in a signal handler (a flag and a SimpleQueue.put)."""
        self._stopping = True
        self._wake.put(None)

    def run(self) -> None:
        """Run jobs in order until `stop`. Call from the thread that loaded the model."""
        while not self._stopping:
            try:
                self._wake.get(timeout=0.5)  # the timeout only re-checks the flag
            except queue.Empty:
                continue
            while not self._stopping:
                with self._lock:
                    job = self._pending.popleft() if self._pending else None
                if job is None:
                    break
                if job.ended_by is not None:  # its client left while it waited
                    self._log(f"#{job.number} {job.label} - client went away while queued")
                    continue
                self.running = job
                try:
                    self._run(job)
                finally:
                    self.running = None
        with self._lock:
            left, self._pending = list(self._pending), collections.deque()
        for job in left:
            job.cancel("shutdown")
            job.deliver(Failed(ApiError(503, "the server is shutting down",
                                        kind="server_error", code="shutting_down")))

    def _run(self, job: Job) -> None:
        prepared = job.prepared
        started = time.monotonic()

        def should_stop() -> bool:
            if self._stopping:
                job.cancel("shutdown")
            return job.ended_by is not None

        generation = self.model.engine.generate(prepared.prompt, prepared.sampling,
                                                should_stop, prepared.stops)
        job.generation = generation
        splitter = ThinkSplitter(opened=prepared.prompt.opens_thinking) \
            if prepared.split_thinking else None
        try:
            for text in generation:
                for kind, part in (splitter.feed(text) if splitter else [("answer", text)]):
                    job.deliver(Piece(kind, part))
        except Exception as exc:  # llama.cpp failed, or a bug: this request fails, not the server
            message = exc.message if isinstance(exc, EngineError) else \
                f"internal error: {type(exc).__name__}: {exc}"
            self._log(f"#{job.number} {job.label} 500: {message}")
            job.deliver(Failed(ApiError(500, message, kind="server_error")))
            return
        for kind, part in (splitter.flush() if splitter else []):
            job.deliver(Piece(kind, part))
        stats = generation.stats
        if splitter is not None:
            answer = splitter.answer.strip()
            thinking = splitter.thinking.strip() if splitter.thought else None
        else:
            answer, thinking = "", None
        done = Done(stats, answer, thinking, job.ended_by)
        job.deliver(done)
        self._log(request_line(job, done, waited=started - job.queued_at))


def request_line(job: Job, done: Done, *, waited: float) -> str:
    """The log line of a finished job: what was asked, what came, how fast."""
    s = done.stats
    cached = s.prompt_tokens - s.prompt_eval_tokens
    line = (f"#{job.number} {job.label} 200{' stream' if job.stream else ''}: "
            f"prompt {s.prompt_tokens} tokens ({cached} cached), "
            f"answer {s.completion_tokens} tokens, {s.decode_tok_s:.1f} tok/s, "
            f"{s.total_s:.2f} s, waited {waited:.2f} s, ")
    if done.ended_by == "client":
        after = s.completion_tokens - (job.generated_at_cancel or 0)
        return line + f"stopped: the client went away ({after} tokens after)"
    if done.ended_by == "shutdown":
        return line + "stopped: the server is shutting down"
    return line + f"finish {done.finish_reason}"


__all__ = ["RETRY_AFTER_S", "Done", "Event", "Failed", "Job", "Piece", "Prepared", "Scheduler",
           "ServedModel", "prepare_chat", "prepare_completion", "request_line"]
