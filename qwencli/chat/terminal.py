"""`qwen chat` at the terminal: one-shot answers, pipes and the interactive session.

All of the chat's terminal I/O is here: stdout carries the answer only, ending in a newline
(through `output.write`, so a reader that goes away stops the answer quietly); thinking goes to
stderr (dimmed on a colour terminal) unless hidden or asked for on stdout; prompts, notes and
questions go to stderr, so `qwen chat > answer.txt` keeps the file clean; Ctrl-C stops an answer
between tokens. The conversation itself is chat.session; which model, chat.select.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from qwencli import output
from qwencli.chat.engine import Stats, inside_llama_callback
from qwencli.chat.files import (
    History,
    history_file,
    load_conversation,
    read_system_file,
    save_conversation,
    save_target,
)
from qwencli.chat.logbook import (
    ChatLog,
    Header,
    continued_model,
    continued_settings,
    past_messages,
    read_continued,
)
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
from qwencli.errors import EXIT_INTERRUPTED, EXIT_OK, QwenError, UsageError
from qwencli.rpc.runtime import on_worker_lost

if TYPE_CHECKING:
    from qwencli.chat.engine import ModelInfo
    from qwencli.fit import Plan
    from qwencli.logs import LoggedConversation
    from qwencli.recommend import Calibrate


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
    kv_type: str = "f16"
    json: bool = False
    stream: bool = True
    verbose: bool = False
    assume_yes: bool = False
    system_file: Path | None = None
    continue_latest: bool = False  # -c: continue the latest logged conversation
    conversation_id: int | None = None  # --cid: continue this one
    no_log: bool = False


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
    """SIGTERM and SIGHUP end a session the way /bye does, not by killing it mid-step. The
    handler records the signal, and raises SessionEnded only while the session waits at its
    prompt (`at_prompt`): anywhere else an exception raised between two bytecodes could leave
    a lock half-taken (the log's queue), so the step ends first: an answer stops at the next
    token through `pending`, other steps at the loop's `check()`. Signals someone chose to
    ignore (`nohup`) or handle stay as they were."""

    SIGNALS = ("SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        super().__init__()
        self.pending: int | None = None
        self.leaving = False
        self.at_prompt = False  # waiting for a line: the one place the handler raises

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pending is not None or self.leaving:
            return  # already on the way out
        self.pending = signum
        if self.at_prompt and not inside_llama_callback():
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


def run_chat(opts: ChatOptions, machine: Machine, calibrate: Calibrate | None = None) -> int:
    """`qwen chat`: choose the mode, the model, load it, answer. Returns the exit code.
    `calibrate`: this machine's measured speed, for choosing the model as `qwen fit` does."""
    from qwencli.logs import log_path, logging_enabled

    if opts.hide_thinking and opts.show_thinking:
        raise UsageError("--hide-thinking and --show-thinking contradict each other")
    if opts.system is not None and opts.system_file is not None:
        raise UsageError("--system and --system-file contradict each other; give one")
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
        history_file()  # a QWEN_NOHISTORY that is neither yes nor no: said before the load
    system = read_system_file(opts.system_file) if opts.system_file else opts.system
    past = (read_continued(opts.conversation_id)
            if opts.continue_latest or opts.conversation_id is not None else None)
    chat_log = ChatLog(log_path() if logging_enabled(opts.no_log) else None,
                       conversation=past)  # opens the file while the model loads
    on_worker_lost(lambda error: _worker_lost(console, chat_log, error))
    try:
        return _run_chat(opts, machine, calibrate, console, text, system, past, chat_log)
    finally:
        chat_log.close()
        for warning in chat_log.warnings():
            console.warn(warning)


def _worker_lost(console: ChatConsole, chat_log: ChatLog, error: QwenError) -> None:
    """A worker went away (llama.cpp's thread calls this; the process then ends with exit
    code 1): commit the conversation so far, the message being answered included, so that
    `qwen chat -c` continues it, and say which worker in one line."""
    chat_log.flush()
    with contextlib.suppress(OSError, ValueError):
        console.out.flush()
    console.tell("\n")
    console.error(error.message, f"{error.hint}; `qwen chat -c` continues this conversation")


def _run_chat(opts: ChatOptions, machine: Machine, calibrate: Calibrate | None,
              console: ChatConsole, text: str | None,
              system: str | None, past: LoggedConversation | None, chat_log: ChatLog) -> int:
    think, overrides = opts.think, dict(opts.overrides)
    model = opts.model
    if past is not None:
        past_think, past_overrides = continued_settings(past)
        think = past_think if think is None else think
        overrides = {**past_overrides, **overrides}
        system = past.system if system is None else system
        model = model or continued_model(past)
    choice = resolve_model(model, machine=machine, calibrate=calibrate,
                           fetch=_fetcher(console, opts.assume_yes, output.can_ask()))
    hw, budget = machine()
    if text is None:
        console.note(f"loading {choice.label} ...")
    loaded = open_model(choice, LoadRequest(opts.ctx, opts.gpu_layers, opts.threads,
                                            opts.verbose, kv_type=opts.kv_type), hw, budget)
    for note in loaded.notes:
        console.warn(note)
    engine = loaded.engine
    conversation = Conversation(system=system,
                                messages=past_messages(past) if past is not None else [])
    session = Session(engine=engine, support=thinking_support(choice.spec, engine.template),
                      spec=choice.spec, conversation=conversation,
                      think=think, overrides=overrides,
                      max_ctx=max(loaded.max_ctx, engine.n_ctx))
    chat_log.describe(_log_header(session, choice, loaded))
    warning = session.thinking().warning
    if warning:
        console.warn(warning)
    if session.thinking().on and session.sampling().temperature == 0:
        console.warn("Qwen advises against greedy decoding (temperature 0) while thinking: "
                     "it can repeat itself endlessly")
    if past is not None:
        console.note(f"continuing conversation {past.id} ({len(conversation.messages)} "
                     "messages)")
    try:
        if text is not None:
            code = run_once(session, text, opts, console, choice, loaded, chat_log,
                            trim=past is not None)
        else:
            code = run_repl(session, opts, console, choice, loaded, chat_log)
        if opts.verbose and chat_log.enabled:
            chat_log.flush()
            console.note(f"log: conversation {chat_log.conversation_id} in {chat_log.path}; "
                         f"the chat waited {chat_log.waited_s * 1000:.2f} ms for it, "
                         f"{chat_log.worked_s * 1000:.2f} ms of work in the background")
        return code
    finally:
        engine.close()


def _log_header(session: Session, choice: ModelChoice, loaded: Loaded) -> Header:
    """What the log records about this conversation (and a continuation reads back)."""
    return Header(model=choice.label, quant=loaded.quant, path=str(choice.path),
                  system=session.conversation.system, thinking=session.thinking().on,
                  think=session.think, overrides=dict(session.overrides))


def run_once(session: Session, text: str, opts: ChatOptions, console: ChatConsole,
             choice: ModelChoice, loaded: Loaded, chat_log: ChatLog | None = None, *,
             trim: bool = False) -> int:
    """One prompt, one answer, then exit (0, or 130 when Ctrl-C stopped the answer).
    `trim`: a continued conversation drops its oldest turns to fit (a new one never has
    any to drop)."""
    chat_log = chat_log or ChatLog(None)
    printer = ReplyPrinter(console, thinking_to=_thinking_target(opts, True),
                           stream=opts.stream)
    wait = long_prompt_note(len(session.engine.tokenize(text)), loaded.plan)
    if wait:
        console.note(wait)
    chat_log.user(text)
    try:
        with InterruptFlag() as flag:
            reply = session.reply(text, trim=trim, on_piece=None if opts.json else printer,
                                  should_stop=flag)
    except QwenError:
        chat_log.not_kept()
        raise
    sampling = reply.sampling or session.sampling()
    if reply.kept:
        chat_log.answer(reply, sampling)
    else:
        chat_log.not_kept()
    if opts.json:
        document = reply_document(reply, choice.label, quant=loaded.quant, path=choice.path,
                                  sampling=sampling, thinking_on=session.thinking().on,
                                  n_ctx=session.engine.n_ctx)
        chat_log.flush()  # the id is the writer's: a fraction of a millisecond
        document["conversation_id"] = chat_log.conversation_id  # None: not logged
        output.print_json(document)
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


HELP_TEXT = "\n".join([*COMMANDS.values(),
                       '"""                   begin and end a multi-line message',
                       "Ctrl-C                stop the answer; Ctrl-D or /bye leaves"])


def run_repl(session: Session, opts: ChatOptions, console: ChatConsole, choice: ModelChoice,
             loaded: Loaded, chat_log: ChatLog | None = None) -> int:
    """The interactive session. Returns 0 when the person leaves (/bye or Ctrl-D), 128 + the
    signal's number when SIGTERM or SIGHUP ends it."""
    history = History(history_file(), console.warn)
    chat_log = chat_log or ChatLog(None)
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
            _loop(session, opts, console, choice, label, history, ending, chat_log)
            code = EXIT_OK
        except SessionEnded as ended:
            console.tell(f"\nended by {signal.Signals(ended.signum).name}\n")
            code = 128 + ended.signum
        finally:
            ending.leaving = True  # a signal from here on is only recorded: we are leaving
            history.close()
    return code


def _loop(session: Session, opts: ChatOptions, console: ChatConsole, choice: ModelChoice,
          label: str, history: History, ending: EndSignals, chat_log: ChatLog) -> None:
    """Read, run, repeat, until /bye or Ctrl-D. Ctrl-C never ends it: at the prompt it clears
    the line; during an answer or a command it stops that one step, and the conversation is
    as the step left it (whole: see Session.reply)."""
    collector = LineCollector()
    while True:
        ending.at_prompt = True  # from here a signal raises at once; one before is pending
        try:
            ending.check()
            line = console.read_line("... " if collector.in_block else ">>> ")
        except EOFError:
            console.tell("\n")
            return
        except KeyboardInterrupt:
            collector.reset()
            console.tell("\n")
            console.note("(Ctrl-D or /bye leaves)")
            continue
        finally:
            ending.at_prompt = False
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
                    outcome = _run_command(command, session, console, choice, label, chat_log)
                    if outcome == "bye":
                        return
                    if outcome == "regen":
                        _answer(session, None, opts, console, label, ending, chat_log)
                    continue
                message = message_text(text)
            if message.strip():
                _answer(session, message, opts, console, label, ending, chat_log)
        except KeyboardInterrupt:
            console.tell("\n")
            console.note("(interrupted)")


def _answer(session: Session, message: str | None, opts: ChatOptions, console: ChatConsole,
            label: str, ending: EndSignals | None = None,
            chat_log: ChatLog | None = None) -> None:
    """Answer `message`, or (None) answer the last message again with a new seed (/regen)."""
    chat_log = chat_log or ChatLog(None)
    printer = ReplyPrinter(console, thinking_to=_thinking_target(opts, False),
                           stream=opts.stream)
    regen_seed = None
    if message is None:
        regen_seed = secrets.randbelow(2**32 - 1)
        if not any(m["role"] == "user" for m in session.conversation.messages):
            console.error("nothing to answer again yet")
            return
        console.note(f"(answering again with seed {regen_seed})")
    else:
        chat_log.user(message)

    def should_stop() -> bool:
        return flag.hit or (ending is not None and ending.pending is not None)

    try:
        with InterruptFlag() as flag:
            if message is None:
                reply = session.regenerate(seed=regen_seed, on_piece=printer,
                                           should_stop=should_stop)
            else:
                reply = session.reply(message, on_piece=printer, should_stop=should_stop)
    except QwenError as exc:
        if message is not None:
            chat_log.not_kept()
        if printer.started:
            printer.finish()
        console.error(exc.message, exc.hint)
        return
    sampling = reply.sampling or session.sampling()
    if message is None and reply.kept:
        chat_log.regenerated(reply, sampling)
    elif message is not None:
        if reply.kept:
            chat_log.answer(reply, sampling)
        else:
            chat_log.not_kept()
    printer.finish()
    for warning in chat_log.warnings():
        console.warn(warning)
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
                 choice: ModelChoice, label: str, chat_log: ChatLog | None = None) -> str | None:
    """Carry out one slash command; "bye" ends the session, "regen" asks for the last
    message to be answered again."""
    name, arg = command.name, command.arg
    chat_log = chat_log or ChatLog(None)
    try:
        if name == "bye":
            return "bye"
        if name == "regen":
            return "regen"
        if name == "help":
            console.note(HELP_TEXT)
        elif name == "clear":
            session.conversation.clear()
            _restart_log(chat_log, session)
            console.note("conversation cleared")
        elif name == "undo":
            gone = session.undo()
            if gone:
                chat_log.undo()
                console.note(f"dropped the last exchange ({gone} message"
                             f"{'s' if gone != 1 else ''}); "
                             f"{len(session.conversation.messages)} left")
            else:
                console.note("nothing to undo")
        elif name == "history":
            console.note(history_text(session.conversation))
        elif name == "system":
            if arg:
                session.conversation.system = arg
                chat_log.system(arg)
                console.note("system prompt set")
            else:
                console.note(f"system prompt: {session.conversation.system or '(none)'}")
        elif name == "set":
            _set(arg, session, console)
            chat_log.settings(session.think, session.thinking().on, session.overrides)
        elif name in ("think", "no_think"):
            session.think = name == "think"
            chat_log.settings(session.think, session.thinking().on, session.overrides)
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
            _restart_log(chat_log, session, loaded.messages)
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


def _restart_log(chat_log: ChatLog, session: Session,
                 messages: list[dict[str, str]] | None = None) -> None:
    """/clear and /load begin a new logged conversation (with the messages /load read)."""
    chat_log.restart(session.conversation.system, messages or [], think=session.think,
                     thinking=session.thinking().on, overrides=dict(session.overrides))


HISTORY_SHOWN_CHARS = 300  # /history shortens longer messages


def history_text(conversation: Conversation) -> str:
    """/history: the system prompt and the turns so far, numbered, long messages shortened."""
    lines = [f"system: {_shortened(conversation.system)}"] if conversation.system else []
    turn = 0
    for message in conversation.messages:
        if message["role"] == "user":
            turn += 1
            lines.append(f"{turn:>3}  you:   {_shortened(message['content'])}")
        else:
            lines.append(f"     model: {_shortened(message['content'])}")
    return "\n".join(lines) if lines else "no messages yet"


def _shortened(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= HISTORY_SHOWN_CHARS:
        return flat
    return flat[:HISTORY_SHOWN_CHARS].rstrip() + f"... ({len(flat):,} characters)"
