"""llama-cpp-python behind one small interface: load with a memory plan, render the model's own
chat template, stream tokens, report timings.

Why each choice:
- The `fit.Plan` decides n_gpu_layers, tensor_split, n_ctx, flash attention and the KV cache
  type, so what `qwen recommend` / `qwen fit` promised is what is loaded. A MoE plan that keeps
  the experts of the first N layers in host memory is applied as llama.cpp's `-ot` does it:
  `llama_model_params.tensor_buft_overrides`, a NULL-terminated array of (pattern, CPU buffer
  type), which the high-level `Llama()` does not take, so it is given to the params `Llama()`
  builds (`_tensor_overrides`).
- A plan with workers (`qwen worker` on other machines, llama.cpp's RPC backend) loads with
  an explicit device list, workers first, because llama.cpp's default selection does not see
  devices registered at run time (`_explicit_devices`, qwencli.rpc.runtime).
- llama.cpp logs go through our own callback: silent unless verbose, but kept in a short buffer
  so that a failed load can say why in one line (not enough memory, a missing tensor, ...).
- The prompt is rendered with llama-cpp-python's Jinja formatter from the GGUF's own
  `tokenizer.chat_template`, with template arguments (Qwen's `enable_thinking`) that the
  high-level `create_chat_completion` cannot pass. A file without a template gets ChatML, as
  llama.cpp does.
- Tokens are sampled by llama.cpp's sampler chain (llama-cpp-python's `generate`, which also
  reuses the KV cache of a common prefix, so a chat session does not re-read its history);
  the penalty window covers the whole context instead of llama-cpp-python's 64 tokens, so
  Qwen's presence_penalty works as in transformers/vLLM.
- Threads: physical cores, capped by the process's CPU affinity and cgroup quota. llama.cpp's
  threads spin while waiting, so more threads than cores that are really ours is much slower.

Nothing here prints: text pieces and statistics are returned to the caller.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import ctypes
import importlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.chat.signals import HandledSignals
from qwencli.errors import QwenError
from qwencli.hardware.cpu import default_threads

if TYPE_CHECKING:
    from qwencli.fit import Plan

# ggml type ids (ggml.h) for the KV cache types the planner knows.
KV_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
                 "iq4_nl": 20, "bf16": 30}
DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: pick a random seed
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")

_MEMORY_WORDS = re.compile(r"failed to allocate|out of memory|cannot allocate|unable to allocate|"
                           r"not enough memory|mmap failed|ErrorOutOfDeviceMemory",
                           re.IGNORECASE)


class EngineError(QwenError):
    """llama.cpp could not load or run the model."""


class OutOfMemoryError(EngineError):
    """A buffer could not be allocated while loading."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one answer (the chat layer fills them from Qwen's presets)."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0  # OpenAI's; `qwen serve` passes a request's through
    seed: int | None = None  # None: a random seed
    max_tokens: int | None = None  # None: until the end of the context


@dataclass(frozen=True)
class Stats:
    """Timings of one answer. decode_tok_s counts every token after the first (wall clock,
    sampling included); prompt_tok_s the prompt tokens evaluated (not reused from the cache)."""

    prompt_tokens: int
    prompt_eval_tokens: int
    completion_tokens: int
    ttft_s: float
    prompt_tok_s: float
    decode_tok_s: float
    total_s: float
    finish_reason: str  # "stop" | "length" | "interrupted"
    context_full: bool


@dataclass(frozen=True)
class Prompt:
    """A rendered conversation ready to generate from."""

    text: str
    tokens: tuple[int, ...]
    opens_thinking: bool  # the template ends the prompt inside <think>: output holds only </think>


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    n_ctx: int
    n_ctx_train: int
    n_threads: int
    n_gpu_layers: int
    flash_attn: bool
    kv_type: str
    template_source: str  # "gguf" or "chatml (the file has no chat template)"
    tensor_overrides: tuple[str, ...] = ()  # patterns of tensors kept in host memory (MoE)
    devices: tuple[str, ...] = ()  # explicit devices (a plan with workers), in order


# ------------------------------------------------------------------------------------------
# Threads


# ------------------------------------------------------------------------------------------
# llama.cpp logging


_IN_CALLBACK = 0  # > 0 while llama.cpp is calling back into Python (log, load progress)


def inside_llama_callback() -> bool:
    """Whether the interpreter is inside a callback from llama.cpp. A signal handler must not
    raise there: ctypes prints the exception and drops it (record the signal instead)."""
    return _IN_CALLBACK > 0


class _LogSink:
    """Receives llama.cpp's log lines: always kept (the last ones) so that a failure can be
    explained; with verbose, INFO and above are also echoed to the real stderr (a duplicate of
    fd 2 taken at install, because llama-cpp-python points fd 2 at /dev/null while loading)."""

    ECHO_LEVELS = (1, 2, 3)  # ggml INFO, WARN, ERROR; DEBUG (4) is a firehose

    def __init__(self) -> None:
        self.verbose = False
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self._partial = ""
        self._callback: Any = None
        self._echo_fd: int | None = None
        self._last_level = 0

    def install(self) -> None:
        import llama_cpp

        if self._callback is None:
            @llama_cpp.llama_log_callback
            def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
                global _IN_CALLBACK
                _IN_CALLBACK += 1
                try:
                    self.write(level, text.decode("utf-8", errors="replace"))
                finally:
                    _IN_CALLBACK -= 1

            self._callback = callback  # keep a reference: llama.cpp holds only the pointer
            with contextlib.suppress(OSError):
                self._echo_fd = os.dup(2)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def write(self, level: int, text: str) -> None:
        if level != 5:  # 5 continues the previous line at its level
            self._last_level = level
        if self.verbose and self._echo_fd is not None and self._last_level in self.ECHO_LEVELS:
            with contextlib.suppress(OSError):
                os.write(self._echo_fd, text.encode("utf-8", errors="replace"))
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        self.lines.extend(line for line in complete if line.strip())

    def reset(self) -> None:
        self.lines.clear()
        self._partial = ""

    def recent(self) -> list[str]:
        return [*self.lines, self._partial] if self._partial.strip() else list(self.lines)


_LOG = _LogSink()


def load_log() -> list[str]:
    """llama.cpp's last log lines (the end of the last load: its buffer sizes, for bench)."""
    return _LOG.recent()


class _LoadGuard(HandledSignals):
    """Ctrl-C while llama.cpp loads a model ends the command (exit 130), as everywhere else.

    A load runs in C and comes back to Python only through callbacks (the log, the progress).
    Python's own Ctrl-C raises KeyboardInterrupt wherever the interpreter happens to be, which
    during a load is mostly inside one of those callbacks, and ctypes drops an exception raised
    there: the interrupt was lost and the model loaded as if nothing had happened. So while a
    load runs, SIGINT only records the interrupt; the progress callback that llama.cpp calls
    for each tensor then returns False, which makes llama.cpp abandon the load; and once
    `Llama(...)` has returned or failed, the loader frees what was built and raises
    KeyboardInterrupt in plain Python code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hit = False
        self.verbose = False
        self._percent = 0
        self._callback: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.hit = True

    def _replaces(self, current: Any) -> bool:
        return current is not signal.SIG_IGN  # an ignored Ctrl-C stays ignored

    def progress(self, fraction: float) -> bool:
        """llama.cpp's progress callback: True goes on, False abandons the load. Draws the
        dots llama.cpp's own callback would have drawn in the log (seen with --verbose)."""
        percent = int(100 * fraction)
        while percent > self._percent:
            self._percent += 1
            _LOG.write(5, "." if self._percent < 100 else ".\n")
        return not self.hit

    def callback(self, llama_cpp: Any) -> Any:
        """The C function pointer for `llama_model_params.progress_callback` (made once and
        kept: llama.cpp holds only the pointer)."""
        if self._callback is None:
            @llama_cpp.llama_progress_callback
            def callback(progress: float, user_data: ctypes.c_void_p) -> bool:
                global _IN_CALLBACK
                _IN_CALLBACK += 1
                try:
                    return self.progress(progress)
                finally:
                    _IN_CALLBACK -= 1

            self._callback = callback
        return self._callback

    def __enter__(self) -> _LoadGuard:
        self.hit = False
        self._percent = 0
        super().__enter__()
        return self


_LOAD = _LoadGuard()


@contextlib.contextmanager
def _progress_reported(llama_cpp: Any) -> Iterator[None]:
    """`Llama(...)` builds its `llama_model_params` from `llama_model_default_params()` and
    offers no way to pass llama.cpp a progress callback; this gives the params it builds ours,
    for the length of one load. (Were the name to change in llama-cpp-python, loads would still
    stop at Ctrl-C, only later: when `Llama(...)` returns.)"""
    module = importlib.import_module("llama_cpp.llama_cpp")
    original = getattr(module, "llama_model_default_params", None)
    if original is None or not hasattr(llama_cpp, "llama_progress_callback"):
        yield
        return
    callback = _LOAD.callback(llama_cpp)

    def with_progress() -> Any:
        params = original()
        with contextlib.suppress(AttributeError, TypeError):
            params.progress_callback = callback
        return params

    module.llama_model_default_params = with_progress
    try:
        yield
    finally:
        module.llama_model_default_params = original


class _TensorOverride(ctypes.Structure):
    """llama.h's `struct llama_model_tensor_buft_override { const char * pattern;
    ggml_backend_buffer_type_t buft; }` (llama-cpp-python declares the field as a void pointer
    and no structure for it)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


GGML_BACKEND_DEVICE_TYPE_CPU = 0  # ggml-backend.h


def cpu_buffer_type() -> int:
    """The CPU device's buffer type, which is `ggml_backend_cpu_buffer_type()`: the one llama.cpp
    compares an override with to pick the CPU's repacking buffer types too (as `-ot X=CPU`)."""
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    device = lib.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    if not device:
        raise EngineError("llama.cpp has no CPU device to keep the MoE experts on")
    buft = lib.ggml_backend_dev_buffer_type(device)
    if not buft:
        raise EngineError("llama.cpp's CPU device has no buffer type")
    return int(buft)


def override_array(patterns: Sequence[str], buft: int) -> ctypes.Array[_TensorOverride]:
    """The NULL-terminated override array for `patterns`, all to buffer type `buft`."""
    array = (_TensorOverride * (len(patterns) + 1))()
    for i, pattern in enumerate(patterns):
        array[i].pattern = pattern.encode("ascii")
        array[i].buft = buft
    array[len(patterns)].pattern = None  # the terminator llama.cpp stops at
    array[len(patterns)].buft = None
    return array


@contextlib.contextmanager
def _tensor_overrides(patterns: Sequence[str]) -> Iterator[Any]:
    """For the length of one load, give the params `Llama()` builds our override array (the
    same way `_progress_reported` gives it the progress callback). Yields the array, which the
    caller keeps alive as long as the model (llama.cpp keeps only the pointer)."""
    if not patterns:
        yield None
        return
    module = importlib.import_module("llama_cpp.llama_cpp")
    original = module.llama_model_default_params
    array = override_array(patterns, cpu_buffer_type())

    def with_overrides() -> Any:
        params = original()
        params.tensor_buft_overrides = ctypes.cast(array, ctypes.c_void_p)
        return params

    module.llama_model_default_params = with_overrides
    try:
        yield array
    finally:
        module.llama_model_default_params = original


@contextlib.contextmanager
def _explicit_devices(devices: Any) -> Iterator[None]:
    """For the length of one load, give the params `Llama()` builds an explicit device list
    (`llama_model_params.devices`, which `Llama()` does not take): a plan with workers
    (qwencli.rpc.runtime.Devices; None leaves llama.cpp's own choice)."""
    if devices is None:
        yield
        return
    module = importlib.import_module("llama_cpp.llama_cpp")
    original = module.llama_model_default_params

    def with_devices() -> Any:
        params = original()
        params.devices = ctypes.cast(devices.array, ctypes.c_void_p)
        return params

    module.llama_model_default_params = with_devices
    try:
        yield
    finally:
        module.llama_model_default_params = original


def explain_load_failure(log_lines: Sequence[str], path: Path, ctx: int,
                         error: str) -> EngineError:
    """Turn llama.cpp's log of a failed load into one line with the cause and a next step."""
    memory = [line for line in log_lines if _MEMORY_WORDS.search(line)]
    if memory:
        detail = _clean_log_line(memory[-1])
        return OutOfMemoryError(
            f"not enough memory to load {path.name} with a {ctx}-token context ({detail})",
            hint="try a smaller quant (`qwen recommend` lists what fits) or a shorter --ctx")
    # The specific line ("error loading model: ...") beats the generic "failed to load model".
    errors = ([line for line in log_lines if re.search(r"\berror\b", line, re.IGNORECASE)]
              or [line for line in log_lines if re.search(r"failed|invalid|missing", line,
                                                          re.IGNORECASE)])
    reason = _clean_log_line(errors[-1]) if errors else error
    return EngineError(f"llama.cpp could not load {path.name}: {reason}",
                       hint="run again with --verbose for llama.cpp's log")


def _clean_log_line(line: str) -> str:
    text = line.strip()
    # "llama_model_load: error loading model: missing tensor 'x'" -> the part after the labels
    parts = [p.strip() for p in text.split(": ") if p.strip()]
    while len(parts) > 1 and re.fullmatch(r"[\w.]+|error loading model|error", parts[0]):
        parts = parts[1:]
    return ": ".join(parts) or text


# ------------------------------------------------------------------------------------------
# Chat template


class ChatTemplate:
    """The model's chat template, rendered by llama-cpp-python's Jinja formatter."""

    def __init__(self, template: str | None, *, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.source = "gguf" if template else "chatml (the file has no chat template)"
        self.text = template or CHATML_TEMPLATE
        self.stops: tuple[str, ...] = () if template else CHATML_STOPS
        self._formatter = Jinja2ChatFormatter(self.text, eos_token=eos_token,
                                              bos_token=bos_token)
        self.bos_token = bos_token

    @property
    def has_enable_thinking(self) -> bool:
        """The template reads `enable_thinking` (Qwen3 hybrid, Qwen3.5 and later)."""
        return "enable_thinking" in self.text

    @property
    def mentions_thinking(self) -> bool:
        return THINK_OPEN in self.text or "enable_thinking" in self.text

    def render(self, messages: Sequence[Mapping[str, str]], **kwargs: Any) -> str:
        try:
            return self._formatter(messages=[dict(m) for m in messages], **kwargs).prompt
        except Exception as exc:  # jinja2 raises many types; a broken template is one line
            raise EngineError(f"the model's chat template failed: {type(exc).__name__}: {exc}",
                              hint="run again with --verbose; report the model file") from exc


def prompt_opens_thinking(prompt: str) -> bool:
    """Whether the rendered prompt ends inside an open <think> (Qwen3-Thinking-2507, Qwen3.5)."""
    return prompt.rstrip().endswith(THINK_OPEN)


# ------------------------------------------------------------------------------------------
# Generation


class _StopStrings:
    """Holds back text that could be the start of a stop string; reports a complete one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, stopped)."""
        if not self.stops:
            return text, False
        self.pending += text
        for stop in self.stops:
            at = self.pending.find(stop)
            if at != -1:
                out, self.pending = self.pending[:at], ""
                return out, True
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Generation:
    """One answer being generated: iterate for text pieces; `stats` when done.

    `should_stop` is polled before the first token and around every token (the chat layer's
    Ctrl-C flag), so an interrupt ends the answer between tokens, never inside llama.cpp; one
    that came while the prompt was read gives an answer of no tokens.
    """

    def __init__(self, engine: Engine, prompt: Prompt, sampling: Sampling,
                 should_stop: Callable[[], bool] | None = None,
                 stops: Sequence[str] = ()) -> None:
        self._engine = engine
        self._stops = (*engine.template.stops, *stops)  # the template's, then the caller's
        self.prompt = prompt
        self.sampling = sampling
        self._should_stop = should_stop or (lambda: False)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.context_full = False
        self._t_start = self._t_first = self._t_last = 0.0
        self._sampled = 0
        self._prompt_eval = len(prompt.tokens)

    def __iter__(self) -> Iterator[str]:
        engine = self._engine
        llm = engine.llm
        s = self.sampling
        tokens = list(self.prompt.tokens)
        n_ctx = engine.n_ctx
        limit = n_ctx - len(tokens)
        if s.max_tokens is not None:
            limit = min(limit, s.max_tokens)
        self._prompt_eval = len(tokens) - engine.reused_prefix(tokens)
        llm.set_seed(DEFAULT_SEED if s.seed is None else s.seed)
        llm.last_n_tokens_size = n_ctx  # penalties see the whole answer, not 64 tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = _StopStrings(self._stops)
        self._t_start = time.perf_counter()
        if limit <= 0:  # the prompt fills the context (the chat layer checks this first)
            self.finish_reason, self.context_full = "length", True
            return
        if self._should_stop():  # stopped before it began
            self.finish_reason = "interrupted"
            return
        stream = llm.generate(tokens, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                              typical_p=1.0, temp=s.temperature,
                              repeat_penalty=s.repeat_penalty,
                              presence_penalty=s.presence_penalty,
                              frequency_penalty=s.frequency_penalty)
        try:
            for token in stream:
                if self._should_stop():  # e.g. Ctrl-C while the prompt was read: no token
                    self.finish_reason = "interrupted"
                    break
                now = time.perf_counter()
                if not self._sampled:
                    self._t_first = now
                self._t_last = now
                self._sampled += 1
                if engine.is_eog(token):
                    self.finish_reason = "stop"
                    break
                self.completion_tokens += 1
                text, stopped = stops.feed(decoder.decode(engine.piece(token)))
                if text:
                    yield text
                if stopped:
                    self.finish_reason = "stop"
                    break
                if self._should_stop():
                    self.finish_reason = "interrupted"
                    break
                if self.completion_tokens >= limit:
                    self.finish_reason = "length"
                    self.context_full = len(tokens) + self.completion_tokens >= n_ctx
                    break
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp failed while generating: {exc}",
                              hint="run again with --verbose for llama.cpp's log") from exc
        finally:
            stream.close()
        tail = stops.flush() + decoder.decode(b"", final=True)
        if tail and self.finish_reason != "stop":
            yield tail

    def interrupt(self) -> None:
        """Mark an answer abandoned by a KeyboardInterrupt the caller caught."""
        if self.finish_reason is None:
            self.finish_reason = "interrupted"

    @property
    def stats(self) -> Stats:
        ttft = max(0.0, self._t_first - self._t_start) if self._sampled else 0.0
        decode_s = self._t_last - self._t_first
        steps = self._sampled - 1
        end = self._t_last if self._sampled else self._t_start
        return Stats(
            prompt_tokens=len(self.prompt.tokens),
            prompt_eval_tokens=self._prompt_eval,
            completion_tokens=self.completion_tokens,
            ttft_s=ttft,
            prompt_tok_s=self._prompt_eval / ttft if ttft > 0 else 0.0,
            decode_tok_s=steps / decode_s if steps > 0 and decode_s > 0 else 0.0,
            total_s=max(0.0, end - self._t_start),
            finish_reason=self.finish_reason or "stop",
            context_full=self.context_full,
        )


# ------------------------------------------------------------------------------------------
# The engine


class Engine:
    """A loaded model: template, tokenizer, generation."""

    def __init__(self, llm: Any, info: ModelInfo, template: ChatTemplate) -> None:
        import llama_cpp

        self.llm = llm
        self.info = info
        self.template = template
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._pieces: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(256)
        self._tensor_override_array: Any = None
        self._device_array: Any = None

    @classmethod
    def load(cls, path: Path, plan: Plan, *, n_threads: int | None = None,
             verbose: bool = False) -> Engine:
        """Load `path` exactly as `plan` says. Raises EngineError (OutOfMemoryError) with the
        reason llama.cpp gave."""
        with_workers = any(device.worker is not None for device in plan.devices)
        if with_workers:
            from qwencli.rpc.threads import quiet_idle_threads

            quiet_idle_threads()
        try:
            import llama_cpp
        except ImportError as exc:
            import sys

            raise EngineError(f"llama-cpp-python cannot be imported: {exc}",
                              hint=f"install it: {sys.executable} -m pip install "
                                   "llama-cpp-python") from None

        _LOG.verbose = verbose
        _LOG.install()
        _LOG.reset()
        threads = n_threads or default_threads(None)
        kv_type = KV_GGML_TYPES.get(plan.kv_type, 1)
        patterns = plan.expert_overrides
        devices = None
        if with_workers:
            from qwencli.rpc.runtime import plan_devices

            devices = plan_devices(plan)  # checks each worker answers before llama.cpp asks
        with _LOAD as guard, _progress_reported(llama_cpp), \
                _tensor_overrides(patterns) as overrides, _explicit_devices(devices):
            try:
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=plan.n_gpu_layers,
                    tensor_split=list(plan.tensor_split) or None,
                    n_ctx=plan.ctx,
                    n_batch=512,
                    n_ubatch=512,
                    n_threads=threads,
                    n_threads_batch=threads,
                    flash_attn=plan.flash_attn,
                    type_k=kv_type,
                    type_v=kv_type,
                    verbose=False,  # its own prints are noise; llama.cpp's log: through _LOG
                )
            except (ValueError, RuntimeError, OSError) as exc:
                if guard.hit:  # the progress callback abandoned the load
                    raise KeyboardInterrupt from None
                raise explain_load_failure(_LOG.recent(), path, plan.ctx, str(exc)) from None
            if guard.hit:  # Ctrl-C after the last tensor (creating the context)
                with contextlib.suppress(Exception):
                    llm.close()
                raise KeyboardInterrupt
        if devices is not None:
            from qwencli.rpc.runtime import keep_alive

            keep_alive(devices.endpoints)  # a vanished worker machine: an error, not a hang
        metadata = getattr(llm, "metadata", {}) or {}
        eos = llm.token_eos()
        bos = llm.token_bos()
        template = ChatTemplate(
            metadata.get("tokenizer.chat_template") or None,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "")
        info = ModelInfo(path=path, n_ctx=llm.n_ctx(), n_ctx_train=llm._model.n_ctx_train(),
                         n_threads=threads, n_gpu_layers=plan.n_gpu_layers,
                         flash_attn=plan.flash_attn, kv_type=plan.kv_type,
                         template_source=template.source, tensor_overrides=patterns,
                         devices=devices.names if devices is not None else ())
        engine = cls(llm, info, template)
        engine._tensor_override_array = overrides  # llama.cpp holds only the pointer
        engine._device_array = devices
        return engine

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a rendered prompt (special tokens parsed; BOS added when the vocabulary
        wants one and the template did not write it)."""
        add_bos = self._add_bos and not (self.template.bos_token
                                         and text.startswith(self.template.bos_token))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def prompt(self, messages: Sequence[Mapping[str, str]],
               template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        text = self.template.render(messages, **(template_kwargs or {}))
        return Prompt(text=text, tokens=tuple(self.tokenize(text)),
                      opens_thinking=prompt_opens_thinking(text))

    def generate(self, prompt: Prompt, sampling: Sampling,
                 should_stop: Callable[[], bool] | None = None,
                 stops: Sequence[str] = ()) -> Generation:
        """`stops`: stop strings besides the template's (an API request's `stop`)."""
        return Generation(self, prompt, sampling, should_stop, stops)

    def reused_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens the KV cache already holds (llama-cpp-python reuses them)."""
        cached = self.llm.input_ids[:self.llm.n_tokens].tolist()
        n = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n - 1 if n == len(tokens) and n else n

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        size = len(self._buffer)
        n = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, size, 0, False)
        if n < 0:  # the piece is longer than the buffer
            self._buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, -n, 0, False)
        data = self._buffer.raw[:max(0, n)]
        self._pieces[token] = data
        return data

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()


__all__ = [
    "KV_GGML_TYPES", "ChatTemplate", "Engine", "EngineError", "Generation", "ModelInfo",
    "OutOfMemoryError", "Prompt", "Sampling", "Stats",
    "explain_load_failure", "inside_llama_callback", "load_log", "prompt_opens_thinking",
]
