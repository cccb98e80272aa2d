"""`qwen bench`: measure how fast this machine runs a model, the way `qwen chat` loads it.

The model is chosen and loaded exactly as `qwen chat` does (chat.select: the same reference
rules, the same memory plan, the same engine and thread count), then measured in process the way
llama.cpp's own `llama-bench` measures, so the two can be compared on the same file:

- prompt processing (`pp512`): a batch of N random tokens decoded in 512-token batches, with
  logits for the last token only, timed from the first batch to the last one finished;
- decode (`tg128`): N random tokens decoded one at a time, no sampling;
- both at an empty context and after `depth` tokens already in the KV cache (filled untimed,
  as `llama-bench -d` does), after one untimed warm-up.

Around that: time to load, time to first token of a chat prompt of `prompt_tokens` tokens
(through the engine's own generation, sampling included), peak host memory (RSS), per NVIDIA
GPU the memory in use (NVML), and the device buffers llama.cpp reported at load (Metal's among
them). Each figure stands beside the plan's estimate (`fit.predict_at`).

Nothing here prints or stores: progress goes through a callback, and the caller decides what
to keep (calibration.record). Ctrl-C raises KeyboardInterrupt between two llama.cpp calls.
"""

from __future__ import annotations

import contextlib
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.errors import UsageError

if TYPE_CHECKING:
    from qwencli.chat.select import Fetch, Machine
    from qwencli.fit import ModelShape, Plan, SpeedCalibration
    from qwencli.recommend import Calibrate

#: Progress: one short line about what is being measured now.
Progress = Callable[[str], None]

N_BATCH = 512  # what the engine loads with (and llama-bench's n_ubatch)
QUICK_GEN_TOKENS = 32
MIN_TOKENS = 1
MAX_TOKENS = 1_000_000


@dataclass(frozen=True)
class BenchRequest:
    """What to measure. `depths` None: half the context (none with `quick`)."""

    model: str | None = None
    ctx: int | None = None
    prompt_tokens: int = 512
    gen_tokens: int = 128
    depths: tuple[int, ...] | None = None
    repetitions: int = 3
    threads: int | None = None
    quick: bool = False


@dataclass(frozen=True)
class Measure:
    """One test, like one llama-bench row: `runs` are tok/s of each repetition."""

    test: str  # "pp512", "tg128", "pp512 @ d4096"
    kind: str  # "prompt" | "decode"
    tokens: int
    depth: int
    runs: tuple[float, ...]
    predicted: float  # the plan's estimate for this test, tok/s

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else 0.0

    @property
    def ratio(self) -> float:
        """measured / predicted (above 1: faster than estimated)."""
        return self.median / self.predicted if self.predicted > 0 else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median over the repetitions: how noisy the machine was."""
        if len(self.runs) < 2 or self.median <= 0:
            return 0.0
        return (max(self.runs) - min(self.runs)) / self.median


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class BenchResult:
    model: str  # the reference or file name
    path: Path
    quant: str | None
    plan: Plan
    shape: ModelShape
    threads: int
    load_s: float
    ttft_s: float
    ttft_prompt_tokens: int
    ttft_predicted_s: float
    peak_rss_bytes: int
    gpu_memory: tuple[GpuMemory, ...]
    buffers: dict[str, int]  # llama.cpp's device buffers at load: "MTL0" -> bytes, ...
    measures: tuple[Measure, ...]
    date: str  # ISO 8601, UTC
    calibrated_estimate: bool  # the predictions used an existing calibration
    notes: tuple[str, ...] = field(default=())

    def find(self, kind: str, depth: int = 0) -> Measure | None:
        return next((m for m in self.measures if m.kind == kind and m.depth == depth), None)


# ------------------------------------------------------------------------------------------
# Validation


def check_request(request: BenchRequest) -> BenchRequest:
    """Bounds on what a person typed (UsageError, exit 2); --quick fills in its defaults."""
    for name, value in (("--prompt-tokens", request.prompt_tokens),
                        ("--gen-tokens", request.gen_tokens)):
        if not MIN_TOKENS <= value <= MAX_TOKENS:
            raise UsageError(f"{name} must be between {MIN_TOKENS} and {MAX_TOKENS:,}, "
                             f"not {value}")
    if not 1 <= request.repetitions <= 100:
        raise UsageError(f"--repetitions must be between 1 and 100, not {request.repetitions}")
    if request.depths is not None and any(d < 0 or d > MAX_TOKENS for d in request.depths):
        raise UsageError("--depth must be between 0 and 1,000,000")
    if request.quick:
        from dataclasses import replace

        return replace(request, repetitions=1, gen_tokens=min(request.gen_tokens,
                                                              QUICK_GEN_TOKENS),
                       depths=request.depths if request.depths is not None else ())
    return request


# ------------------------------------------------------------------------------------------
# Measuring


class _Decoder:
    """llama.cpp's own decode calls on a loaded engine's context, as llama-bench makes them."""

    def __init__(self, engine: Any, seed: int = 1) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.ctx = engine.llm.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(
            llama_cpp.llama_model_get_vocab(engine.llm.model)))
        self.random = random.Random(seed)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def keep(self, n_tokens: int) -> None:
        """Drop every cached position from `n_tokens` on (sequence 0)."""
        self.lib.llama_memory_seq_rm(self.memory, 0, n_tokens, -1)

    def decode(self, n_tokens: int) -> None:
        """n_tokens random tokens after what the cache holds, in batches of N_BATCH."""
        from qwencli.chat.engine import EngineError

        left = n_tokens
        while left > 0:
            n = min(N_BATCH, left)
            tokens = (self.lib.llama_token * n)(
                *(self.random.randrange(self.n_vocab) for _ in range(n)))
            code = self.lib.llama_decode(self.ctx, self.lib.llama_batch_get_one(tokens, n))
            if code != 0:
                raise EngineError(f"llama.cpp failed to decode a batch (code {code})",
                                  hint="run again with a smaller --ctx or --depth")
            left -= n
        self.lib.llama_synchronize(self.ctx)

    def prompt_rate(self, n_tokens: int) -> float:
        start = time.perf_counter()
        self.decode(n_tokens)
        return n_tokens / (time.perf_counter() - start)

    def decode_rate(self, n_tokens: int) -> float:
        start = time.perf_counter()
        for _ in range(n_tokens):
            self.decode(1)
        return n_tokens / (time.perf_counter() - start)


def _peak_rss() -> int:
    """The process's peak resident memory in bytes (0 when the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss))
        except Exception:
            return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _nvml_memory() -> tuple[GpuMemory, ...]:
    """Memory in use per NVIDIA GPU, from NVML; () without one (or without the driver)."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception:
        return ()
    found = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append(GpuMemory(index, name.decode() if isinstance(name, bytes) else str(name),
                                   int(info.used), int(info.total)))
    except Exception:
        pass
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return tuple(found)


_BUFFER = re.compile(r"\b([A-Za-z]+\d*)(?:_[A-Za-z_]+)? (?:model|KV|compute|output|RS) buffer "
                     r"size\s*=\s*([\d.]+) MiB")


def buffer_sizes(log_lines: Sequence[str]) -> dict[str, int]:
    """Bytes per device buffer from llama.cpp's load log ("MTL0 compute buffer size = 3.5 MiB"
    -> {"MTL0": ...}): where Metal and other backends report what they allocated."""
    sizes: dict[str, int] = {}
    for line in log_lines:
        for device, mib in _BUFFER.findall(line):
            sizes[device] = sizes.get(device, 0) + int(float(mib) * 1024 * 1024)
    return sizes


def _chat_prompt(engine: Any, n_tokens: int) -> Any:
    """A chat prompt of about `n_tokens` tokens (the template's own tokens included)."""
    words = "The lighthouse keeper counted the ships that passed in the night. "
    text = words
    prompt = engine.prompt([{"role": "user", "content": text}], {"enable_thinking": False})
    per = max(1, len(engine.tokenize(words)))
    while len(prompt.tokens) < n_tokens:
        repeat = max(1, (n_tokens - len(prompt.tokens)) // per)
        text += words * repeat
        prompt = engine.prompt([{"role": "user", "content": text}], {"enable_thinking": False})
    return prompt


def run_bench(request: BenchRequest, *, machine: Machine, fetch: Fetch | None = None,
              calibration: SpeedCalibration | None = None, calibrate: Calibrate | None = None,
              progress: Progress | None = None) -> BenchResult:
    """Load the model as `qwen chat` would and measure it (see the module docstring).
    `calibrate` gives this machine's calibration to choose the model and quant as `qwen chat`
    does; `calibration`, when given, is used for the predictions shown beside (None: the
    uncalibrated estimate, whose ratios are what a calibration learns)."""
    from qwencli.chat.engine import Engine, Sampling, load_log
    from qwencli.chat.select import LoadRequest, plan_load, resolve_model
    from qwencli.fit import predict_at
    from qwencli.gguf_info import read_model
    from qwencli.hardware.cpu import default_threads
    from qwencli.shapes import shape_from_gguf

    request = check_request(request)
    say = progress or (lambda _line: None)
    hw, budget = machine()
    choice = resolve_model(request.model, machine=machine, fetch=fetch, calibrate=calibrate)
    load = LoadRequest(ctx=request.ctx, threads=request.threads)
    the_plan, _max_ctx, notes, quant = plan_load(choice.path, load, hw, budget)
    shape = shape_from_gguf(read_model(choice.path), name=choice.path.name)
    threads = request.threads or default_threads(hw.cpu.physical_cores)
    depths = request.depths if request.depths is not None else (the_plan.ctx // 2,)
    depths = tuple(sorted(set(depths)))
    longest = max(request.prompt_tokens, request.gen_tokens + 1)
    for depth in depths:
        if depth + longest > the_plan.ctx:
            raise UsageError(f"--depth {depth:,} leaves no room for {longest:,} tokens in a "
                             f"{the_plan.ctx:,}-token context",
                             hint=f"use --depth {max(0, the_plan.ctx - longest)} or less, "
                                  "or a larger --ctx")
    say(f"loading {choice.label} ({the_plan.ctx:,}-token context, {threads} threads)")
    start = time.perf_counter()
    engine = Engine.load(choice.path, the_plan, n_threads=threads)
    load_s = time.perf_counter() - start
    buffers = buffer_sizes(load_log())
    try:
        say(f"time to first token, {request.prompt_tokens}-token chat prompt")
        prompt = _chat_prompt(engine, min(request.prompt_tokens, the_plan.ctx - 2))
        generation = engine.generate(prompt, Sampling(temperature=0.0, seed=0, max_tokens=1))
        for _piece in generation:
            pass
        stats = generation.stats
        decoder = _Decoder(engine)
        decoder.clear()
        say("warm-up")
        decoder.decode(min(request.prompt_tokens, N_BATCH))
        decoder.decode(1)
        runs: dict[tuple[str, int], list[float]] = {}
        for rep in range(request.repetitions):
            for depth in sorted({0, *depths}):
                label = f"repetition {rep + 1}/{request.repetitions}" + \
                    (f", after {depth:,} tokens" if depth else "")
                decoder.clear()
                if depth:
                    say(f"{label}: filling the context")
                    decoder.decode(depth)
                say(f"{label}: pp{request.prompt_tokens}")
                runs.setdefault(("prompt", depth), []).append(
                    decoder.prompt_rate(request.prompt_tokens))
                decoder.keep(depth)
                say(f"{label}: tg{request.gen_tokens}")
                runs.setdefault(("decode", depth), []).append(
                    decoder.decode_rate(request.gen_tokens))
        decoder.clear()
    finally:
        peak = _peak_rss()
        gpus = _nvml_memory()
        engine.close()
    measures = []
    for (kind, depth), values in sorted(runs.items(), key=lambda item: (item[0][1],
                                                                       item[0][0] != "prompt")):
        decode_est, prompt_est = predict_at(shape, hw, the_plan, depth, request.prompt_tokens,
                                            calibration)
        tokens = request.prompt_tokens if kind == "prompt" else request.gen_tokens
        test = f"{'pp' if kind == 'prompt' else 'tg'}{tokens}" + (f" @ d{depth}" if depth else "")
        measures.append(Measure(test, kind, tokens, depth, tuple(values),
                                prompt_est if kind == "prompt" else decode_est))
    decode0, prompt_ttft = predict_at(shape, hw, the_plan, 0, stats.prompt_eval_tokens,
                                      calibration)
    ttft_predicted = (stats.prompt_eval_tokens / prompt_ttft if prompt_ttft else 0.0) + \
        (1 / decode0 if decode0 else 0.0)
    return BenchResult(
        model=choice.label, path=choice.path, quant=choice.quant or quant, plan=the_plan,
        shape=shape, threads=threads, load_s=load_s, ttft_s=stats.ttft_s,
        ttft_prompt_tokens=stats.prompt_eval_tokens, ttft_predicted_s=ttft_predicted,
        peak_rss_bytes=peak, gpu_memory=gpus, buffers=buffers, measures=tuple(measures),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        calibrated_estimate=calibration is not None, notes=(*choice.notes, *notes))
