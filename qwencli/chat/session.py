"""A chat session without a terminal: what `qwen chat` and `qwen serve` share.

- the message list (the assistant's thinking is never kept in it: Qwen's rule, and its
  templates expect it), and trimming the oldest turns when the context is full;
- slash-command parsing, multi-line input, `/set` values;
- Qwen's sampling presets per mode, and the thinking switch (`enable_thinking` or the `/think`
  and `/no_think` soft switch, as the catalog says);
- a streaming splitter for `<think>` blocks (including templates that open `<think>` in the
  prompt, so the output holds only `</think>`).

Nothing here prints, reads a terminal or touches the disk; the engine is anything with the
`EngineLike` shape (chat.engine.Engine, or a fake in tests). The terminal is chat.terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qwencli.chat.engine import THINK_CLOSE, THINK_OPEN, Prompt, Sampling, Stats
from qwencli.errors import QwenError, UsageError
from qwencli.fit import CTX_PAD

if TYPE_CHECKING:
    from qwencli.catalog import ModelSpec
    from qwencli.chat.engine import ChatTemplate

SCHEMA_VERSION = 1
REPLY_ROOM = 1024  # tokens kept free for an answer when trimming or suggesting --ctx

# Qwen3's published settings (qwen-catalog.md section 3), used when the catalog has no preset
# for the model (a local file of unknown origin) or leaves a value unstated.
FALLBACK_PRESETS = {
    True: Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0),
    False: Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0),
}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                 "repeat_penalty", "seed", "max_tokens")
_SET_ALIASES = {"temp": "temperature", "repetition_penalty": "repeat_penalty",
                "num_predict": "max_tokens", "n_predict": "max_tokens"}


class ContextOverflowError(QwenError):
    """The input does not fit the context window."""


# ------------------------------------------------------------------------------------------
# Thinking


def strip_thinking(text: str) -> str:
    """The answer part of an assistant message: Qwen's rule splits at the last </think>; an
    unclosed <think> (an answer stopped while thinking) leaves no answer."""
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1].strip()
    if text.lstrip().startswith(THINK_OPEN):
        return ""
    return text.strip()


class ThinkSplitter:
    """Splits streamed output into ("thinking", text) and ("answer", text) pieces.

    A `<think>` counts only at the very start of the output (after whitespace); when the
    prompt already opened it, the output starts inside the thinking block. Tags split across
    pieces are held back until they are complete. Whitespace around the blocks is dropped.
    """

    def __init__(self, opened: bool = False) -> None:
        self.state = "think" if opened else "start"
        self._buffer = ""
        self.thinking = ""
        self.answer = ""
        self.thought = opened  # a thinking block was seen

    @property
    def in_thinking(self) -> bool:
        return self.state == "think"

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._buffer += text
        out: list[tuple[str, str]] = []
        while self._buffer:
            if self.state == "start":
                stripped = self._buffer.lstrip()
                if not stripped:
                    return out
                if stripped.startswith(THINK_OPEN):
                    self._buffer = stripped[len(THINK_OPEN):]
                    self.state, self.thought = "think", True
                    continue
                if THINK_OPEN.startswith(stripped):
                    return out  # maybe the start of <think>
                self.state, self._buffer = "answer", stripped
                continue
            if self.state == "think":
                if not self.thinking:
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        return out
                at = self._buffer.find(THINK_CLOSE)
                if at != -1:
                    self._emit(out, "thinking", self._buffer[:at])
                    self._buffer = self._buffer[at + len(THINK_CLOSE):]
                    self.state = "after"
                    continue
                keep = _partial_suffix(self._buffer, THINK_CLOSE)
                self._emit(out, "thinking", self._buffer[:len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep:]
                return out
            if self.state == "after":
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    return out
                self.state = "answer"
                continue
            self._emit(out, "answer", self._buffer)
            self._buffer = ""
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The held-back rest, at the end of the output."""
        out: list[tuple[str, str]] = []
        rest, self._buffer = self._buffer, ""
        if self.state == "think":
            self._emit(out, "thinking", rest)
        elif self.state in ("start", "answer") and rest.strip():
            self._emit(out, "answer", rest.lstrip() if self.state == "start" else rest)
        return out

    def _emit(self, out: list[tuple[str, str]], kind: str, text: str) -> None:
        if not text:
            return
        if kind == "thinking":
            self.thinking += text
        else:
            self.answer += text
        out.append((kind, text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass(frozen=True)
class ThinkingSupport:
    """How a model thinks and how to switch it (from the catalog, else from its template)."""

    mode: str  # "hybrid" | "thinking-only" | "none"
    switch: str | None  # "enable_thinking" | "soft-switch" | None
    default_on: bool


def thinking_support(spec: ModelSpec | None, template: ChatTemplate | Any) -> ThinkingSupport:
    if spec is not None:
        t = spec.thinking
        switch = None
        if t.mode == "hybrid":
            if "enable_thinking" in t.switch and template.has_enable_thinking:
                switch = "enable_thinking"
            elif "soft-switch" in t.switch:
                switch = "soft-switch"
            elif "enable_thinking" in t.switch:
                switch = "enable_thinking"
        return ThinkingSupport(t.mode, switch, t.default_on and t.mode != "none")
    if template.has_enable_thinking:
        return ThinkingSupport("hybrid", "enable_thinking", True)
    if template.mentions_thinking:
        return ThinkingSupport("thinking-only", None, True)
    return ThinkingSupport("none", None, False)


@dataclass(frozen=True)
class ThinkingChoice:
    """What one turn does: whether it thinks, the template arguments, the soft-switch suffix."""

    on: bool
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    suffix: str | None = None
    warning: str | None = None


def choose_thinking(support: ThinkingSupport, think: bool | None) -> ThinkingChoice:
    """Map --think/--no-think (None: the model's default) to the model's switch."""
    if support.mode == "none":
        warning = "this model has no thinking mode; --think is ignored" if think else None
        return ThinkingChoice(False, warning=warning)
    if support.mode == "thinking-only":
        warning = ("this model always thinks; --hide-thinking hides it"
                   if think is False else None)
        return ThinkingChoice(True, warning=warning)
    on = support.default_on if think is None else think
    if support.switch == "enable_thinking":
        return ThinkingChoice(on, {"enable_thinking": on})
    if support.switch == "soft-switch":
        suffix = None if think is None else (" /think" if on else " /no_think")
        return ThinkingChoice(on, suffix=suffix)
    warning = ("this model's chat template has no thinking switch"
               if think is not None else None)
    return ThinkingChoice(support.default_on, warning=warning)


# ------------------------------------------------------------------------------------------
# Sampling


def preset_sampling(spec: ModelSpec | None, thinking: bool) -> Sampling:
    """Qwen's published settings for the model and mode; unstated values from Qwen3's."""
    base = FALLBACK_PRESETS[thinking]
    preset = spec.preset(thinking) if spec is not None else None
    if preset is None:
        return base
    return Sampling(
        temperature=_pick(preset.temperature, base.temperature),
        top_p=_pick(preset.top_p, base.top_p),
        top_k=int(_pick(preset.top_k, base.top_k)),
        min_p=_pick(preset.min_p, base.min_p),
        presence_penalty=_pick(preset.presence_penalty, base.presence_penalty),
        repeat_penalty=_pick(preset.repetition_penalty, base.repeat_penalty),
    )


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def apply_overrides(base: Sampling, overrides: Mapping[str, Any]) -> Sampling:
    return replace(base, **{k: v for k, v in overrides.items() if k in SAMPLING_KEYS})


def parse_set(name: str, value: str) -> tuple[str, Any]:
    """`/set NAME VALUE` -> (key, value); `default` removes an override. UsageError if bad."""
    key = name.strip().lower().replace("-", "_")
    key = _SET_ALIASES.get(key, key)
    if key not in SAMPLING_KEYS:
        raise UsageError(f"unknown setting {name!r}; one of: {', '.join(SAMPLING_KEYS)}")
    text = value.strip().lower()
    if not text:
        raise UsageError(f"/set {key} needs a value (or `default`)")
    if text in ("default", "none", "random", "unset"):
        return key, None
    limits: dict[str, tuple[type, float, float]] = {
        "temperature": (float, 0.0, 5.0), "top_p": (float, 0.0, 1.0), "top_k": (int, 0, 10**6),
        "min_p": (float, 0.0, 1.0), "presence_penalty": (float, -2.0, 2.0),
        "repeat_penalty": (float, 0.0, 10.0), "seed": (int, 0, 2**32 - 2),
        "max_tokens": (int, 1, 10**9),
    }
    kind, low, high = limits[key]
    try:
        number = kind(text) if kind is float else int(text, 10)
    except ValueError:
        raise UsageError(f"{key} must be {'a number' if kind is float else 'an integer'}, "
                         f"not {value.strip()!r}") from None
    if not low <= number <= high:
        raise UsageError(f"{key} must be between {_plain(low, kind)} and {_plain(high, kind)}")
    return key, number


def _plain(number: float, kind: type) -> str:
    """A limit as a person types it: integers in full (4294967294, not 4.29497e+09)."""
    return str(int(number)) if kind is int else f"{number:g}"


# ------------------------------------------------------------------------------------------
# The conversation


@dataclass
class Conversation:
    """The message list sent to the model: an optional system prompt, then user/assistant
    turns. Assistant turns hold the answer only, never the thinking."""

    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": strip_thinking(text)})

    def clear(self) -> None:
        self.messages.clear()

    def copy(self) -> Conversation:
        return Conversation(self.system, [dict(m) for m in self.messages])

    def for_model(self, suffix: str | None = None) -> list[dict[str, str]]:
        """What the template renders; `suffix` (a soft switch) goes on the last user message."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += [dict(m) for m in self.messages]
        if suffix:
            for message in reversed(out):
                if message["role"] == "user":
                    message["content"] += suffix
                    break
        return out

    def drop_oldest(self) -> int:
        """Drop the oldest turn (a user message and its answer); never the last user message.
        Returns how many messages went."""
        if len(self.messages) <= 1:
            return 0
        count = 2 if len(self.messages) > 2 and self.messages[1]["role"] == "assistant" else 1
        del self.messages[:count]
        return count

    def to_document(self, model: str | None = None, thinking: bool | None = None) -> dict:
        return {"schema_version": SCHEMA_VERSION, "model": model, "system": self.system,
                "thinking": thinking, "messages": [dict(m) for m in self.messages]}

    @classmethod
    def from_document(cls, data: Any, source: str = "conversation") -> Conversation:
        """A saved conversation (ours, or a bare OpenAI-style message list)."""
        system = None
        messages = data.get("messages") if isinstance(data, dict) else data
        if isinstance(data, dict):
            version = data.get("schema_version", SCHEMA_VERSION)
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise QwenError(f"{source}: 'schema_version' must be a positive integer")
            if version > SCHEMA_VERSION:
                raise QwenError(f"{source}: written by a newer qwen (schema_version "
                                f"{version}; this one reads {SCHEMA_VERSION})",
                                hint="upgrade qwen to load it")
            system = data.get("system")
            if system is not None and not isinstance(system, str):
                raise QwenError(f"{source}: 'system' must be a string")
        if not isinstance(messages, list):
            raise QwenError(f"{source}: expected a list of messages")
        conversation = cls(system=system or None)
        for number, message in enumerate(messages, 1):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise QwenError(f"{source}: message {number} needs a string 'content'")
            role = message.get("role")
            if role == "system":
                conversation.system = message["content"] or None
            elif role == "user":
                conversation.add_user(message["content"])
            elif role == "assistant":
                conversation.add_assistant(message["content"])
            else:
                raise QwenError(f"{source}: message {number} has role {role!r}; expected "
                                "system, user or assistant")
        return conversation


# ------------------------------------------------------------------------------------------
# Slash commands and input


COMMANDS: dict[str, str] = {
    "help": "/help                 this list",
    "clear": "/clear                forget the conversation (keeps the system prompt)",
    "system": "/system [TEXT]        show or set the system prompt",
    "set": "/set [NAME VALUE]     show or change a setting: temperature top_p top_k min_p "
           "presence_penalty repeat_penalty seed max_tokens (VALUE `default` resets one)",
    "think": "/think                think before answering (models with a thinking mode)",
    "no_think": "/no_think             answer without thinking",
    "stats": "/stats                timings of the last answer and context use",
    "save": "/save FILE            save the conversation as JSON (asks before replacing FILE)"
            "\n/save! FILE           save it, replacing FILE without asking",
    "load": "/load FILE            replace the conversation with a saved one (at most 16 MiB)",
    "regen": "/regen                answer the last message again, with a new seed",
    "undo": "/undo                 drop the last exchange (your message and its answer)",
    "history": "/history              the turns so far, numbered",
    "bye": "/bye                  leave (also Ctrl-D)",
}
_COMMAND_ALIASES = {"?": "help", "exit": "bye", "quit": "bye", "nothink": "no_think",
                    "no-think": "no_think", "reset": "clear",
                    "retry": "regen", "regenerate": "regen"}


FORCEABLE = ("save",)  # `/save! FILE`: replace an existing file without asking


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""
    force: bool = False  # written with a `!` (`/save! FILE`)


def parse_command(line: str) -> Command | None:
    """A slash command, or None for a message. `//text` sends "/text" as a message. Unknown
    commands raise UsageError (a typo should not be sent to the model)."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    word, _, arg = text[1:].partition(" ")
    bare = word.lower()
    force = bare.endswith("!") and bare[:-1] in FORCEABLE
    if force:
        bare = bare[:-1]
    name = _COMMAND_ALIASES.get(bare, bare)
    if name not in COMMANDS:
        raise UsageError(f"unknown command /{word}; /help lists them (start with // to send "
                         "a message that begins with /)")
    return Command(name, arg.strip(), force)


def message_text(line: str) -> str:
    """The message a non-command line sends (`//x` -> `/x`)."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


class LineCollector:
    """Multi-line input: a line starting with \"\"\" opens a block that ends at a line ending
    with \"\"\"; the quotes are not part of the message."""

    QUOTES = '"""'

    def __init__(self) -> None:
        self._lines: list[str] | None = None
        self.last_was_block = False

    @property
    def in_block(self) -> bool:
        return self._lines is not None

    def reset(self) -> None:
        self._lines = None

    def feed(self, line: str) -> str | None:
        """The complete input, or None while a block is open. `last_was_block` tells whether
        the input came from a block (a block is always a message, never a command)."""
        if self._lines is None:
            self.last_was_block = False
            if not line.lstrip().startswith(self.QUOTES):
                return line
            body = line.lstrip()[len(self.QUOTES):]
            if body.rstrip().endswith(self.QUOTES):
                self.last_was_block = True
                return body.rstrip()[:-len(self.QUOTES)]
            self._lines = [body] if body else []
            return None
        if line.rstrip().endswith(self.QUOTES):
            self._lines.append(line.rstrip()[:-len(self.QUOTES)])
            text = "\n".join(self._lines)
            self._lines = None
            self.last_was_block = True
            return text
        self._lines.append(line)
        return None


def compose_prompt(words: Sequence[str], piped: str | None) -> str | None:
    """One-shot input: piped stdin first, then the prompt words (`cat f | qwen chat "sum"`)."""
    parts = [p for p in ((piped or "").strip(), " ".join(words).strip()) if p]
    return "\n\n".join(parts) if parts else None


def overflow_error(n_prompt: int, n_ctx: int, max_ctx: int, reply_room: int) -> \
        ContextOverflowError:
    """A prompt that does not fit: its size, and the --ctx that would (or why none does)."""
    need = -(-(n_prompt + reply_room) // CTX_PAD) * CTX_PAD
    message = f"the input is {n_prompt:,} tokens, more than the {n_ctx:,}-token context"
    if need <= max_ctx:
        return ContextOverflowError(message, hint=f"run again with --ctx {need}")
    return ContextOverflowError(
        message, hint=f"at most {max_ctx:,} tokens of context fit for this model here; "
                      "shorten the input")


# ------------------------------------------------------------------------------------------
# The session


class EngineLike(Protocol):
    """What a session needs from an engine (engine.Engine; tests use a fake)."""

    @property
    def n_ctx(self) -> int: ...

    template: Any

    def prompt(self, messages: Sequence[Mapping[str, str]],
               template_kwargs: Mapping[str, Any] | None = None) -> Prompt: ...

    def generate(self, prompt: Prompt, sampling: Sampling,
                 should_stop: Callable[[], bool] | None = None) -> Any: ...


@dataclass(frozen=True)
class Reply:
    answer: str
    thinking: str | None  # None when the model did not think
    stats: Stats
    dropped: int  # oldest messages dropped to fit the context
    thinking_unfinished: bool  # stopped while still thinking
    kept: bool = True  # False: interrupted before the first token; the conversation is as it was
    sampling: Sampling | None = None  # the settings this answer was made with


@dataclass
class Session:
    """One model and one conversation: settings that /set and /think change, and `reply`."""

    engine: EngineLike
    support: ThinkingSupport
    spec: ModelSpec | None = None
    conversation: Conversation = field(default_factory=Conversation)
    think: bool | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    max_ctx: int = 0  # the largest context that fits (for --ctx hints)
    last: Reply | None = None

    def thinking(self) -> ThinkingChoice:
        return choose_thinking(self.support, self.think)

    def sampling(self) -> Sampling:
        return apply_overrides(preset_sampling(self.spec, self.thinking().on), self.overrides)

    def settings(self) -> dict[str, Any]:
        current = self.sampling()
        return {f.name: getattr(current, f.name) for f in fields(current)}

    def reply(self, text: str, *, trim: bool = True,
              on_piece: Callable[[str, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Reply:
        """Answer `text`. With `trim`, the oldest turns are dropped when the context is full
        (a session); without, a prompt that does not fit is an error (one-shot).

        The turn is worked out on a copy of the conversation and committed only when an
        answer comes: a message that can never fit (ContextOverflowError), an engine error,
        or an interrupt before the first token leaves the conversation exactly as it was.
        """
        return self._answer(self.conversation, text, trim=trim, on_piece=on_piece,
                            should_stop=should_stop)

    def regenerate(self, *, seed: int | None = None, trim: bool = True,
                   on_piece: Callable[[str, str], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Reply:
        """Answer the last user message again; the new answer replaces the old one (which
        stays when no new answer comes). `seed`: for this answer only (None: the session's).
        UsageError when there is no message yet."""
        at = self._last_user()
        if at is None:
            raise UsageError("nothing to answer again yet")
        base = Conversation(self.conversation.system,
                            [dict(m) for m in self.conversation.messages[:at]])
        return self._answer(base, self.conversation.messages[at]["content"], trim=trim,
                            on_piece=on_piece, should_stop=should_stop, seed=seed)

    def undo(self) -> int:
        """Drop the last exchange (the last user message and what came after it); how many
        messages went (0: nothing to drop)."""
        at = self._last_user()
        if at is None:
            return 0
        gone = len(self.conversation.messages) - at
        del self.conversation.messages[at:]
        return gone

    def _last_user(self) -> int | None:
        for index in range(len(self.conversation.messages) - 1, -1, -1):
            if self.conversation.messages[index]["role"] == "user":
                return index
        return None

    def _answer(self, base: Conversation, text: str, *, trim: bool,
                on_piece: Callable[[str, str], None] | None,
                should_stop: Callable[[], bool] | None, seed: int | None = None) -> Reply:
        """`base` plus `text`, answered; on an answer the conversation becomes that turn."""
        choice = self.thinking()
        sampling = self.sampling()
        if seed is not None:
            sampling = replace(sampling, seed=seed)
        n_ctx = self.engine.n_ctx
        room = min(sampling.max_tokens or REPLY_ROOM, n_ctx // 4)
        turn = base.copy()
        turn.add_user(text)
        prompt, dropped = self._fit(turn, choice, sampling, room, trim)
        splitter = ThinkSplitter(opened=prompt.opens_thinking)
        generation = self.engine.generate(prompt, sampling, should_stop)
        try:
            for piece in generation:
                for kind, part in splitter.feed(piece):
                    if on_piece:
                        on_piece(kind, part)
        except KeyboardInterrupt:
            generation.interrupt()
        for kind, part in splitter.flush():
            if on_piece:
                on_piece(kind, part)
        answer = splitter.answer.strip()
        stats = generation.stats
        kept = not (stats.finish_reason == "interrupted" and stats.completion_tokens == 0)
        reply = Reply(answer=answer,
                      thinking=splitter.thinking.strip() if splitter.thought else None,
                      stats=stats, dropped=dropped if kept else 0,
                      thinking_unfinished=splitter.in_thinking, kept=kept, sampling=sampling)
        if kept:
            turn.add_assistant(answer)
            self.conversation.messages[:] = turn.messages  # one step: all of the turn or none
        self.last = reply
        return reply

    def _fit(self, turn: Conversation, choice: ThinkingChoice, sampling: Sampling, room: int,
             trim: bool) -> tuple[Prompt, int]:
        """The prompt for `turn` (its last message is the new one) and how many of its oldest
        messages were dropped (from `turn`) to leave `room` tokens for the answer. Whether the
        new message can fit at all is decided first, so a message too long for any context
        costs nothing."""
        n_ctx = self.engine.n_ctx

        def render(conversation: Conversation) -> Prompt:
            return self.engine.prompt(conversation.for_model(choice.suffix),
                                      choice.template_kwargs)

        prompt = render(turn)
        dropped = 0
        if trim and len(prompt.tokens) + room > n_ctx and len(turn.messages) > 1:
            alone = render(Conversation(turn.system, turn.messages[-1:]))
            if len(alone.tokens) >= n_ctx:
                prompt = alone
            else:
                while len(prompt.tokens) + room > n_ctx:
                    gone = turn.drop_oldest()
                    if not gone:
                        break
                    dropped += gone
                    prompt = render(turn)
        if len(prompt.tokens) >= n_ctx:
            raise overflow_error(len(prompt.tokens), n_ctx, max(self.max_ctx, n_ctx),
                                 sampling.max_tokens or REPLY_ROOM)
        return prompt, dropped


def reply_document(reply: Reply, model: str, *, quant: str | None, path: Path | None,
                   sampling: Sampling, thinking_on: bool, n_ctx: int) -> dict[str, Any]:
    """The --json document (schema_version is added by output.print_json)."""
    s = reply.stats
    return {
        "answer": reply.answer,
        "thinking": reply.thinking,
        "model": model,
        "quant": quant,
        "path": str(path) if path else None,
        "finish_reason": s.finish_reason,
        "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                  "total_tokens": s.prompt_tokens + s.completion_tokens},
        "timings": {"ttft_s": round(s.ttft_s, 4), "prompt_tok_s": round(s.prompt_tok_s, 2),
                    "decode_tok_s": round(s.decode_tok_s, 2), "total_s": round(s.total_s, 4)},
        "context": {"n_ctx": n_ctx, "used": s.prompt_tokens + s.completion_tokens},
        "thinking_mode": thinking_on,
        "sampling": {f.name: getattr(sampling, f.name) for f in fields(sampling)},
    }


