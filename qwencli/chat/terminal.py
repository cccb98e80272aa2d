"""`qwen chat` at the terminal: one-shot answers, pipes and the interactive session.

All of the chat's terminal I/O is here: stdout carries the answer only, ending in a newline
(through `output.write`, so a reader that goes away stops the answer quietly); thinking goes to
stderr (dimmed on a colour terminal) unless hidden or asked for on stdout; prompts, notes and
questions go to stderr, so `qwen chat > answer.txt` keeps the file clean; Ctrl-C stops an answer
between tokens. The conversation itself is chat.session; which model, chat.select.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from qwencli import output
from qwencli.chat.engine import Stats, inside_llama_callback
from qwencli.chat.select import (
    Fetch,
    Loaded,
    LoadRequest,
    Machine,
    ModelChoice,
    open_model,
    resolve_model,
)
from qwencli.chat.session import (
    COMMANDS,
    Command,
    Conversation,
    LineCollector,
    Reply,
    Session,
    compose_prompt,
    message_text,
    parse_command,
    parse_set,
    reply_document,
    thinking_support,
)
from qwencli.chat.signals import HandledSignals
from qwencli.envvars import env_bool
from qwencli.errors import EXIT_INTERRUPTED, EXIT_OK, QwenError, UsageError, os_error
from qwencli.fileio import atomic_write, ensure_dir

if TYPE_CHECKING:
    from qwencli.chat.engine import ModelInfo
    from qwencli.fit import Plan


@dataclass(frozen=True)
class ChatOptions:
    """Everything `qwen chat` was asked for on the command line."""

    model: str | None = None
    prompt_words: tuple[str, ...] = ()
    system: str | None = None
    think: bool | None = None
    hide_thinking: bool = False
    show_thinking: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    ctx: int | None = None
    gpu_layers: int | None = None
    threads: int | None = None
    json: bool = False
    stream: bool = True
    verbose: bool = False
    assume_yes: bool = False


_DIM, _RESET = "\x1b[2m", "\x1b[0m"


class ChatConsole:
    """Where every chat line goes: the answer on stdout, everything else on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.colour = self.err is not None and output.wants_rich(self.err)

    def dim(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.colour and text else text

    def say(self, text: str) -> None:
        """Part of the answer, on stdout, now (output.StdoutClosed when nobody reads it)."""
        output.write(text, self.out)

    def tell(self, text: str) -> None:
        """Text for the person (stderr), now."""
        if self.err is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.err.write(text)
            self.err.flush()

    def note(self, message: str) -> None:
        self.tell(self.dim(message) + "\n")

    def warn(self, message: str) -> None:
        output.warn(message)

    def error(self, message: str, hint: str | None = None) -> None:
        output.error(message, hint)

    def ask(self, question: str) -> bool:
        """A yes/no question on the terminal (stderr), default yes."""
        return output.confirm(question, default=True)

    def read_line(self, prompt: str) -> str:
        """One line typed at the prompt. The prompt goes where the person sees it: through
        readline when stdout is the terminal (line editing redraws it), else on stderr, so
        `qwen chat > answers.txt` keeps prompts out of the file."""
        if self.out is not None and self.out.isatty():
            return input(prompt)
        self.tell(prompt)
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


class ReplyPrinter:
    """Streams one reply: the answer to stdout (leading and trailing whitespace dropped, one
    final newline), the thinking to stderr (dimmed on a colour terminal), or to stdout inside
    <think> tags with --show-thinking, or nowhere with --hide-thinking."""

    def __init__(self, console: ChatConsole, *, thinking_to: str, stream: bool = True) -> None:
        self.console = console
        self.thinking_to = thinking_to  # "stderr" | "stdout" | "hide"
        self.stream = stream
        self._answer_started = False
        self._pending_ws = ""
        self._thinking_open = False
        self._buffered: list[tuple[str, str]] = []

    def __call__(self, kind: str, text: str) -> None:
        if not self.stream:
            self._buffered.append((kind, text))
            return
        self._write(kind, text)

    def _write(self, kind: str, text: str) -> None:
        console = self.console
        if kind == "thinking":
            if self.thinking_to == "hide" or self._answer_started:
                return
            if not self._thinking_open:
                self._thinking_open = True
                if self.thinking_to == "stdout":
                    console.say("<think>\n")
                elif not console.colour:
                    console.tell("Thinking...\n")
            if self.thinking_to == "stdout":
                console.say(text)
            else:
                console.tell(console.dim(text))
            return
        self._close_thinking()
        if not self._answer_started:
            text = text.lstrip()
            if not text:
                return
            self._answer_started = True
        body = text.rstrip()
        if not body:
            self._pending_ws += text
            return
        console.say(self._pending_ws + text[:len(body)])
        self._pending_ws = text[len(body):]

    @property
    def started(self) -> bool:
        """Something of the reply was shown already."""
        return self._answer_started or self._thinking_open

    def _close_thinking(self, final: bool = False) -> None:
        if not self._thinking_open:
            return
        self._thinking_open = False
        if self.thinking_to == "stdout":
            # the block, a blank line, the answer's line (empty when no answer came)
            self.console.say("\n</think>\n" if final else "\n</think>\n\n")
        else:
            self.console.tell("\n\n" if self.console.colour else "\n...done thinking.\n\n")

    def finish(self) -> None:
        """End the reply: buffered output (--no-stream), then the answer's newline."""
        for kind, text in self._buffered:
            self._write(kind, text)
        self._buffered.clear()
        self._close_thinking(final=True)
        self.console.say("\n")


class SessionEnded(BaseException):
    """SIGTERM or SIGHUP (the terminal closed) during a session: leave through the `finally`
    blocks and exit with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class EndSignals(HandledSignals):
    """SIGTERM and SIGHUP end a session the way /bye does, not by killing it mid-step: the
    handler raises SessionEnded (recording it first; inside a llama.cpp callback, where an
    exception would be lost, it only records, and the answer stops at the next token through
    `pending`). Signals someone chose to ignore (`nohup`) or handle stay as they were."""

    SIGNALS = ("SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        super().__init__()
        self.pending: int | None = None
        self.leaving = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pending is not None or self.leaving:
            return  # already on the way out
        self.pending = signum
        if not inside_llama_callback():
            raise SessionEnded(signum)

    def _replaces(self, current: Any) -> bool:
        return current is signal.SIG_DFL

    def check(self) -> None:
        if self.pending is not None:
            raise SessionEnded(self.pending)


class InterruptFlag(HandledSignals):
    """Ctrl-C during an answer sets a flag that the generation loop polls, so the answer stops
    between tokens; a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.hit = False

    def __call__(self) -> bool:
        return self.hit

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit and not inside_llama_callback():  # ctypes would drop it there
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> InterruptFlag:
        self.hit = False
        super().__enter__()
        return self


def read_piped_stdin() -> str | None:
    """All of stdin when it is a pipe or a file; None for a terminal or a closed stdin."""
    stream = sys.stdin
    if stream is None:
        return None
    try:
        if stream.isatty():
            return None
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    except (OSError, ValueError):
        return None
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def _thinking_target(opts: ChatOptions, one_shot: bool) -> str:
    if opts.hide_thinking:
        return "hide"
    if opts.show_thinking and one_shot:
        return "stdout"
    return "stderr"


def stats_line(stats: Stats) -> str:
    return (f"prompt {stats.prompt_tokens:,} tokens ({stats.prompt_eval_tokens:,} evaluated, "
            f"{stats.prompt_tok_s:.1f} tok/s) · answer {stats.completion_tokens:,} tokens, "
            f"{stats.decode_tok_s:.1f} tok/s · first token after {stats.ttft_s:.2f} s")


def _fetcher(console: ChatConsole, assume_yes: bool, can_ask: bool) -> Fetch | None:
    """How a missing model is downloaded: with --yes, or after a "yes" at the terminal,
    with progress on a terminal; None when nobody agreed (the choice then says how)."""
    if not (assume_yes or can_ask):
        return None

    def fetch(ref: str, quant: str | None) -> Path:
        from qwencli.hub import pull_model

        show = console.err is not None and console.err.isatty()
        result = pull_model(ref, quant=quant, progress=output.progress(show),
                            confirm=None if assume_yes else console.ask,
                            on_wait=console.note)
        return result.path

    return fetch


def run_chat(opts: ChatOptions, machine: Machine) -> int:
    """`qwen chat`: choose the mode, the model, load it, answer. Returns the exit code."""
    if opts.hide_thinking and opts.show_thinking:
        raise UsageError("--hide-thinking and --show-thinking contradict each other")
    console = ChatConsole()
    terminal = _stdin_is_terminal()
    piped = None if terminal else read_piped_stdin()
    text = compose_prompt(opts.prompt_words, piped)
    if text is None and not terminal:
        raise UsageError("nothing to answer: give a prompt, pipe one on stdin, or run "
                         "`qwen chat` in a terminal for a session")
    one_shot = text is not None
    if opts.json and not one_shot:
        raise UsageError("--json needs a prompt (one-shot mode): qwen chat --json \"...\"")
    if not one_shot:
        _history_file()  # a QWEN_NOHISTORY that is neither yes nor no: said before the load

    choice = resolve_model(opts.model, machine=machine,
                           fetch=_fetcher(console, opts.assume_yes, output.can_ask()))
    hw, budget = machine()
    if not one_shot:
        console.note(f"loading {choice.label} ...")
    loaded = open_model(choice, LoadRequest(opts.ctx, opts.gpu_layers, opts.threads,
                                            opts.verbose), hw, budget)
    for note in loaded.notes:
        console.warn(note)
    engine = loaded.engine
    session = Session(engine=engine, support=thinking_support(choice.spec, engine.template),
                      spec=choice.spec, conversation=Conversation(system=opts.system),
                      think=opts.think, overrides=dict(opts.overrides),
                      max_ctx=max(loaded.max_ctx, engine.n_ctx))
    warning = session.thinking().warning
    if warning:
        console.warn(warning)
    if session.thinking().on and session.sampling().temperature == 0:
        console.warn("Qwen advises against greedy decoding (temperature 0) while thinking: "
                     "it can repeat itself endlessly")
    try:
        if one_shot:
            assert text is not None
            return run_once(session, text, opts, console, choice, loaded)
        return run_repl(session, opts, console, choice, loaded)
    finally:
        engine.close()


def run_once(session: Session, text: str, opts: ChatOptions, console: ChatConsole,
             choice: ModelChoice, loaded: Loaded) -> int:
    """One prompt, one answer, then exit (0, or 130 when Ctrl-C stopped the answer)."""
    printer = ReplyPrinter(console, thinking_to=_thinking_target(opts, True),
                           stream=opts.stream)
    wait = long_prompt_note(len(session.engine.tokenize(text)), loaded.plan)
    if wait:
        console.note(wait)
    with InterruptFlag() as flag:
        reply = session.reply(text, trim=False, on_piece=None if opts.json else printer,
                              should_stop=flag)
    sampling = session.sampling()
    if opts.json:
        output.print_json(reply_document(reply, choice.label, quant=loaded.quant,
                                         path=choice.path, sampling=sampling,
                                         thinking_on=session.thinking().on,
                                         n_ctx=session.engine.n_ctx))
    elif reply.kept:  # no answer at all (Ctrl-C before the first token): stdout stays empty
        printer.finish()
    _after_reply(reply, session, console, opts.verbose)
    if reply.stats.finish_reason == "interrupted":
        console.tell("interrupted\n")
        return EXIT_INTERRUPTED
    return EXIT_OK


LONG_PROMPT_TOKENS = 4000  # a prompt this long is told how long it waits for the first token


def long_prompt_note(n_tokens: int, the_plan: Plan) -> str | None:
    """For a long piped prompt: about how long it takes to read (the plan's prompt speed)."""
    rate = the_plan.speed.prompt_tok_s
    if n_tokens < LONG_PROMPT_TOKENS or rate <= 0:
        return None
    seconds = n_tokens / rate
    wait = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"reading a {n_tokens:,}-token prompt: about {wait} before the answer starts"


def _after_reply(reply: Reply, session: Session, console: ChatConsole, verbose: bool) -> None:
    s = reply.stats
    if reply.dropped:
        console.note(f"note: dropped the {reply.dropped} oldest messages to fit the "
                     f"{session.engine.n_ctx:,}-token context")
    if s.context_full:
        console.warn(f"the answer reached the end of the {session.engine.n_ctx:,}-token "
                     "context; a larger --ctx allows longer answers")
    elif reply.thinking_unfinished and s.finish_reason == "length":
        console.warn("the answer ended while the model was still thinking; raise "
                     "--max-tokens or use --no-think")
    if verbose:
        console.note(stats_line(s))


def _history_file() -> Path | None:
    """The history file, or None with QWEN_NOHISTORY set (UsageError for a value that is
    neither yes nor no)."""
    if env_bool("QWEN_NOHISTORY"):
        return None
    from qwencli.paths import config_dir

    return config_dir() / "history"


HISTORY_LINES = 1000  # lines kept in memory and in the file
HISTORY_READ_LIMIT = 1 << 20  # only the newest MiB of the file is ever read
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control bytes, invalid UTF-8


def _open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open for a regular file only: never blocks on a FIFO, never reads a device.
    OSError (EINVAL for something that is not a regular file)."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(22, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class HistoryText:
    lines: list[str]  # from the newest MiB at most, without lines that are not text
    cut: bool  # the file held more than was read
    open_line: bool  # the file does not end with a newline (a write cut short)


def read_history(path: Path) -> HistoryText:
    """The lines of a history file, from its newest MiB at most, with the ones that are not
    text (binary junk, invalid UTF-8, control characters) left out. A missing file has no
    lines; anything else unreadable is a QwenError."""
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return HistoryText([], False, False)
    except OSError as exc:
        if exc.errno == 22:
            raise QwenError(f"the history file {path} is not a regular file") from None
        raise os_error(exc, path, "read") from None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - HISTORY_READ_LIMIT)
        os.lseek(fd, start, os.SEEK_SET)
        chunks: list[bytes] = []
        left = HISTORY_READ_LIMIT
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    open_line = bool(data) and not data.endswith(b"\n")
    if start > 0:
        data = data.partition(b"\n")[2]  # the first line was cut
    lines = [line for line in data.decode("utf-8", errors="replace").split("\n")
             if line.strip() and not _NOT_TEXT.search(line)]
    return HistoryText(lines, start > 0, open_line)


class _History:
    """Line editing through the stdlib readline (where it exists) and a history file that
    loses nothing: each line is appended to the file as it is entered (one O_APPEND write, so
    a closed terminal, a kill or a second session at once keep every line), and the file is
    cut back to its newest lines, in one rename, when a session ends with it grown well past
    them. A history file that cannot be read or written is a warning, never the end of the
    session."""

    def __init__(self, path: Path | None, console: ChatConsole) -> None:
        self.path = path
        self.console = console
        self._last: str | None = None
        self._open_line = False  # the file ends inside a line: start the next one first
        try:
            import readline
        except ImportError:  # Windows without pyreadline: plain input()
            self.readline: Any = None
        else:
            self.readline = readline
            readline.set_history_length(HISTORY_LINES)
        if path is None:
            return
        try:
            text = read_history(path)
        except QwenError as exc:
            self._give_up(exc.message)
            return
        self._open_line = text.open_line
        lines = text.lines[-HISTORY_LINES:]
        if self.readline is not None:
            for line in lines:
                self.readline.add_history(line)
        self._last = lines[-1] if lines else None

    def _give_up(self, why: str) -> None:
        self.console.warn(f"{why}; this session's lines are not kept in the history")
        self.path = None

    def record(self, line: str) -> None:
        """Append one entered line to the history file, now."""
        if self.path is None or not line.strip() or line == self._last:
            return
        self._last = line
        data = (line.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace")
        if self._open_line:
            data = b"\n" + data
        try:
            ensure_dir(self.path.parent)
            fd = _open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, data)
                self._open_line = False
            finally:
                os.close(fd)
        except OSError as exc:
            why = (f"the history file {self.path} is not a regular file" if exc.errno == 22
                   else os_error(exc, self.path).message)
            self._give_up(why)

    def close(self) -> None:
        """Cut the file back to its newest HISTORY_LINES lines when it holds many more (or
        more than we read): one rename, so it is always either the old file or the new."""
        if self.path is None:
            return
        try:
            text = read_history(self.path)
            if text.cut or len(text.lines) > 2 * HISTORY_LINES:
                keep = "".join(line + "\n" for line in text.lines[-HISTORY_LINES:])
                atomic_write(self.path, keep)
        except (QwenError, OSError):
            pass  # the lines are in the file already; trimming can wait for the next session


HELP_TEXT = "\n".join([*COMMANDS.values(),
                       '"""                   begin and end a multi-line message',
                       "Ctrl-C                stop the answer; Ctrl-D or /bye leaves"])


def run_repl(session: Session, opts: ChatOptions, console: ChatConsole, choice: ModelChoice,
             loaded: Loaded) -> int:
    """The interactive session. Returns 0 when the person leaves (/bye or Ctrl-D), 128 + the
    signal's number when SIGTERM or SIGHUP ends it."""
    history = _History(_history_file(), console)
    engine = session.engine
    info: ModelInfo = engine.info
    label = _model_label(choice, loaded)
    where = (f"{loaded.plan.n_gpu_layers}/{loaded.plan.n_layers + 1} layers on the GPU"
             if loaded.plan.n_gpu_layers else "CPU")
    threads = f"{info.n_threads} thread{'s' if info.n_threads != 1 else ''}"
    console.note(f"{label} · context {engine.n_ctx:,} tokens · {where}, {threads} · "
                 f"thinking {_on_off(session.thinking().on)}")
    console.note("type a message; /help for commands, /bye or Ctrl-D to leave")
    with EndSignals() as ending:
        try:
            _loop(session, opts, console, choice, label, history, ending)
            code = EXIT_OK
        except SessionEnded as ended:
            console.tell(f"\nended by {signal.Signals(ended.signum).name}\n")
            code = 128 + ended.signum
        finally:
            ending.leaving = True  # a signal from here on is only recorded: we are leaving
            history.close()
    return code


def _loop(session: Session, opts: ChatOptions, console: ChatConsole, choice: ModelChoice,
          label: str, history: _History, ending: EndSignals) -> None:
    """Read, run, repeat, until /bye or Ctrl-D. Ctrl-C never ends it: at the prompt it clears
    the line; during an answer or a command it stops that one step, and the conversation is
    as the step left it (whole: see Session.reply)."""
    collector = LineCollector()
    while True:
        ending.check()
        try:
            line = console.read_line("... " if collector.in_block else ">>> ")
        except EOFError:
            console.tell("\n")
            return
        except KeyboardInterrupt:
            collector.reset()
            console.tell("\n")
            console.note("(Ctrl-D or /bye leaves)")
            continue
        history.record(line)
        text = collector.feed(line)
        if text is None:
            continue
        try:
            if collector.last_was_block:
                message = text.strip("\n")
            else:
                try:
                    command = parse_command(text)
                except UsageError as exc:
                    console.error(exc.message)
                    continue
                if command is not None:
                    if _run_command(command, session, console, choice, label) == "bye":
                        return
                    continue
                message = message_text(text)
            if message.strip():
                _answer(session, message, opts, console, label, ending)
        except KeyboardInterrupt:
            console.tell("\n")
            console.note("(interrupted)")


def _answer(session: Session, message: str, opts: ChatOptions, console: ChatConsole,
            label: str, ending: EndSignals | None = None) -> None:
    printer = ReplyPrinter(console, thinking_to=_thinking_target(opts, False),
                           stream=opts.stream)
    try:
        with InterruptFlag() as flag:
            reply = session.reply(
                message, on_piece=printer,
                should_stop=lambda: flag.hit or (ending is not None and
                                                 ending.pending is not None))
    except QwenError as exc:
        if printer.started:
            printer.finish()
        console.error(exc.message, exc.hint)
        return
    printer.finish()
    if ending is not None:
        ending.check()
    if not reply.kept:
        console.note("(interrupted before the answer began; the conversation is as it was)")
        return
    if reply.stats.finish_reason == "interrupted":
        console.note("(interrupted)")
    _after_reply(reply, session, console, opts.verbose)
    console.note(_status_line(session, label))


def _status_line(session: Session, label: str) -> str:
    reply = session.last
    used = reply.stats.prompt_tokens + reply.stats.completion_tokens if reply else 0
    speed = f" · {reply.stats.decode_tok_s:.1f} tok/s" if reply and reply.stats.decode_tok_s \
        else ""
    return f"[{label} · context {used:,}/{session.engine.n_ctx:,}{speed}]"


def _model_label(choice: ModelChoice, loaded: Loaded) -> str:
    quant = loaded.quant
    if quant and quant.lower() not in choice.label.lower():
        return f"{choice.label} ({quant})"
    return choice.label


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _run_command(command: Command, session: Session, console: ChatConsole,
                 choice: ModelChoice, label: str) -> str | None:
    """Carry out one slash command; "bye" ends the session."""
    name, arg = command.name, command.arg
    try:
        if name == "bye":
            return "bye"
        if name == "help":
            console.note(HELP_TEXT)
        elif name == "clear":
            session.conversation.clear()
            console.note("conversation cleared")
        elif name == "system":
            if arg:
                session.conversation.system = arg
                console.note("system prompt set")
            else:
                console.note(f"system prompt: {session.conversation.system or '(none)'}")
        elif name == "set":
            _set(arg, session, console)
        elif name in ("think", "no_think"):
            session.think = name == "think"
            choice_now = session.thinking()
            if choice_now.warning:
                console.warn(choice_now.warning.replace("--think", "/think"))
            console.note(f"thinking {_on_off(choice_now.on)}")
        elif name == "stats":
            console.note(_stats_text(session, label))
        elif name == "save":
            _save(command, session, console, choice)
        elif name == "load":
            if not arg:
                raise UsageError("/load needs a file name")
            loaded = load_conversation(Path(arg))
            session.conversation = loaded
            console.note(f"loaded {len(loaded.messages)} messages from {arg}")
    except QwenError as exc:
        console.error(exc.message, exc.hint)
    except output.StdoutClosed:
        raise
    except Exception as exc:  # a command that fails must not take the conversation with it
        console.error(f"/{name} failed: unexpected {type(exc).__name__}: {exc}",
                      "the conversation is unchanged; please report this")
    return None


def _save(command: Command, session: Session, console: ChatConsole,
          choice: ModelChoice) -> None:
    """/save FILE: asks before replacing a file (`/save! FILE` does not ask); the file is
    written whole or not at all, and synced to the disk."""
    if not command.arg:
        raise UsageError("/save needs a file name")
    path = Path(command.arg).expanduser()
    target, mode = save_target(path)
    if mode is not None and not command.force:
        if not output.can_ask():
            raise QwenError(f"{path} exists; not replaced",
                            hint=f"/save! {command.arg} replaces it")
        if not output.confirm(f"overwrite {path}?", default=False):
            console.note(f"not saved; {path} is unchanged")
            return
    document = session.conversation.to_document(choice.label, session.thinking().on)
    with InterruptFlag():  # Ctrl-C once: the write finishes; twice: the old file stays
        save_conversation(target, document, mode=mode)
    console.note(f"saved {len(document['messages'])} messages to {path}")


def _set(arg: str, session: Session, console: ChatConsole) -> None:
    parts = arg.split()
    if not parts:
        for key, value in session.settings().items():
            mark = " (set)" if key in session.overrides else ""
            console.note(f"{key} = {'default' if value is None else value}{mark}")
        return
    if parts[0].lower() == "parameter":  # Ollama's `/set parameter NAME VALUE`
        parts = parts[1:]
    if len(parts) != 2:
        raise UsageError("usage: /set NAME VALUE, e.g. /set temperature 0.3")
    key, value = parse_set(parts[0], parts[1])
    if value is None:
        session.overrides.pop(key, None)
    else:
        session.overrides[key] = value
    current = session.settings()[key]
    console.note(f"{key} = {'default' if current is None else current}"
                 + ("" if value is not None else " (default)"))


def _stats_text(session: Session, label: str) -> str:
    lines = [_status_line(session, label)]
    if session.last is not None:
        s = session.last.stats
        lines.append(stats_line(s))
        lines.append(f"finish: {s.finish_reason}")
    else:
        lines.append("no answer yet")
    lines.append(f"thinking {_on_off(session.thinking().on)}; "
                 + ", ".join(f"{k}={v}" for k, v in session.settings().items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Saved conversations


LOAD_LIMIT = 16 * 1024 * 1024  # the largest file /load reads


def save_target(path: Path) -> tuple[Path, int | None]:
    """The file /save writes for `path` (a symbolic link: the file it points to) and, when it
    exists already, its permission bits. QwenError for a folder, a device or a FIFO, and for
    a folder that does not exist (a typo should not create folders)."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        info = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise os_error(exc, path, "write") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise QwenError(f"{path} is a folder", hint=f"give a file name: /save "
                                                        f"{path / 'conversation.json'}")
        if not stat.S_ISREG(info.st_mode):
            raise QwenError(f"{path} is not a regular file; /save writes only files")
        return target, stat.S_IMODE(info.st_mode)
    if not target.parent.is_dir():
        raise QwenError(f"cannot write {path}: the folder {target.parent} does not exist",
                        hint=f"create it first (mkdir -p {target.parent}) or choose another")
    return target, None


def save_conversation(path: Path, document: Mapping[str, Any], *,
                      mode: int | None = None) -> None:
    """Write `document` to `path` in one rename after syncing it to the disk: a reader, a
    crash or a full disk sees the old file or the new one, never half of one. `mode`: the
    permission bits of the file replaced (a new file is private to its owner)."""
    try:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the terminal: JSON escapes it
        payload = (json.dumps(document, indent=2) + "\n").encode("ascii")
    try:
        atomic_write(path, payload, durable=True)
    except OSError as exc:
        raise os_error(exc, path, "write") from None
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def read_limited(path: Path, limit: int = LOAD_LIMIT) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (QwenError otherwise: a folder, a
    device such as /dev/zero, a FIFO, a larger file, one that cannot be read)."""
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        raise QwenError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == 22:
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise QwenError(f"{path} is {kind}; /load reads a JSON file") from None
        raise os_error(exc, path, "read") from None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise QwenError(f"{path} is {_mib(size)}; /load reads at most {_mib(limit)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read
                raise QwenError(f"{path} is over {_mib(limit)}; /load reads at most "
                                f"{_mib(limit)}")
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB".replace(".0 MiB", " MiB")


def load_conversation(path: Path) -> Conversation:
    """A conversation saved by /save (or an OpenAI-style message list): a regular UTF-8 JSON
    file of at most LOAD_LIMIT bytes, of the right shape. QwenError, in one line, otherwise."""
    path = path.expanduser()
    data = read_limited(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QwenError(f"{path}: not UTF-8 text (byte {exc.start:,}); /load reads JSON "
                        "saved by /save") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise QwenError(f"{path}: not a conversation (JSON nested too deeply)") from None
    except ValueError as exc:
        raise QwenError(f"{path}: not a JSON conversation ({exc})") from None
    return Conversation.from_document(document, str(path))
