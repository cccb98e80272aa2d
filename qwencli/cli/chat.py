"""`qwen chat`: parse the options, hand them to `chat.terminal.run_chat`, exit with its code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from qwencli.cli._common import (
    DownloadYesOpt,
    GpuLayersOpt,
    KvTypeOpt,
    ModelOpt,
    ThreadsOpt,
    command,
    command_app,
    ctx_option,
    lazy_machine,
    worker_options,
)

if TYPE_CHECKING:
    from qwencli.hardware.cluster import WorkerOptions

app = command_app()

SAMPLING_PANEL = "Sampling (default: Qwen's published settings for the model and mode)"
OUTPUT_PANEL = "Output"
LOG_PANEL = "Conversation log"
CtxOpt = ctx_option("8192, or the largest that fits, at most the model's")

CHAT_HELP = """Chat with a Qwen model: a session in a terminal, or one answer for a script.

A prompt on the command line (or on stdin) gives one answer on stdout and exits; with neither,
a terminal gets an interactive session (/help lists its commands). Piped stdin comes first,
then the prompt: `cat notes.txt | qwen chat "summarize this"`.

Examples:

  qwen chat

  qwen chat -m qwen3-8b "Why is the sky blue?"

  echo "Write a haiku about rain" | qwen chat -m ./Qwen3-0.6B-Q8_0.gguf

  git diff | qwen chat --no-think "write a commit message for this diff"

  qwen chat --json --seed 1 "2+2?" | jq -r .answer

  qwen chat -c "shorter, please"      (continues the latest conversation; see `qwen logs`)
"""



@command(app, "chat", help=CHAT_HELP)
@worker_options
def chat(
    prompt: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        metavar="PROMPT", help="The prompt (words are joined with spaces).",
        show_default=False)] = None,
    model: ModelOpt = None,
    yes: DownloadYesOpt = False,
    ctx: CtxOpt = None,
    gpu_layers: GpuLayersOpt = None,
    threads: ThreadsOpt = None,
    kv_type: KvTypeOpt = "f16",
    system: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--system", "-s", metavar="TEXT", help="System prompt.")] = None,
    system_file: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--system-file", metavar="FILE", dir_okay=False,
        help="Read the system prompt from a UTF-8 text file (at most 1 MiB).")] = None,
    continue_latest: Annotated[bool, typer.Option(
        "--continue", "-c", rich_help_panel=LOG_PANEL,
        help="Continue the latest logged conversation (its model unless -m says otherwise, "
             "its system prompt and settings).")] = False,
    conversation_id: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--cid", metavar="ID", min=1, rich_help_panel=LOG_PANEL,
        help="Continue logged conversation ID (`qwen logs list` shows them).")] = None,
    no_log: Annotated[bool, typer.Option(
        "--no-log", rich_help_panel=LOG_PANEL,
        help="Do not write this chat to the conversation log (also QWEN_NOLOG=1, or "
             "`qwen config set log false`).")] = False,
    think: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--think/--no-think", show_default=False,
        help="Think before answering, or not (default: the model's own default).")] = None,
    hide_thinking: Annotated[bool, typer.Option(
        "--hide-thinking", rich_help_panel=OUTPUT_PANEL,
        help="Do not show the thinking (the model may still think).")] = False,
    show_thinking: Annotated[bool, typer.Option(
        "--show-thinking", rich_help_panel=OUTPUT_PANEL,
        help="One-shot: put the thinking on stdout too, inside <think> tags.")] = False,
    temperature: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--temperature", "--temp", min=0.0, max=5.0, rich_help_panel=SAMPLING_PANEL,
        help="Randomness; 0 is greedy (Qwen advises against greedy in thinking mode).")
    ] = None,
    top_p: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--top-p", min=0.0, max=1.0, rich_help_panel=SAMPLING_PANEL,
        help="Nucleus sampling.")] = None,
    top_k: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--top-k", min=0, rich_help_panel=SAMPLING_PANEL,
        help="Keep the K likeliest tokens (0: all).")] = None,
    min_p: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--min-p", min=0.0, max=1.0, rich_help_panel=SAMPLING_PANEL,
        help="Drop tokens below this share of the likeliest one.")] = None,
    presence_penalty: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--presence-penalty", min=-2.0, max=2.0, rich_help_panel=SAMPLING_PANEL,
        help="Penalise tokens already in the answer (Qwen suggests up to 1.5 against "
             "repetition).")] = None,
    repeat_penalty: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--repeat-penalty", min=0.0, max=10.0, rich_help_panel=SAMPLING_PANEL,
        help="Multiplicative repetition penalty (1: off).")] = None,
    seed: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--seed", min=0, max=2**32 - 2, rich_help_panel=SAMPLING_PANEL,
        help="Random seed, for repeatable answers.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--max-tokens", "-n", min=1, rich_help_panel=SAMPLING_PANEL,
        help="Longest answer in tokens, thinking included (default: the rest of the "
             "context).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", rich_help_panel=OUTPUT_PANEL,
        help="One-shot: print one JSON document (answer, thinking, usage, timings).")
    ] = False,
    no_stream: Annotated[bool, typer.Option(
        "--no-stream", rich_help_panel=OUTPUT_PANEL,
        help="Print the answer when it is complete instead of as it comes.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", rich_help_panel=OUTPUT_PANEL,
        help="llama.cpp's log and timings on stderr.")] = False,
    *,
    workers: WorkerOptions,
) -> None:
    from qwencli.chat.terminal import ChatOptions, run_chat
    from qwencli.hardware.whatif import WhatIf

    overrides = {key: value for key, value in (
        ("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
        ("min_p", min_p), ("presence_penalty", presence_penalty),
        ("repeat_penalty", repeat_penalty), ("seed", seed), ("max_tokens", max_tokens),
    ) if value is not None}
    code = run_chat(ChatOptions(
        model=model, prompt_words=tuple(prompt or ()), system=system, think=think,
        hide_thinking=hide_thinking, show_thinking=show_thinking, overrides=overrides,
        ctx=ctx, gpu_layers=gpu_layers, threads=threads, kv_type=kv_type, json=json_output,
        stream=not no_stream, verbose=verbose, assume_yes=yes, system_file=system_file,
        continue_latest=continue_latest, conversation_id=conversation_id, no_log=no_log),
        lazy_machine(WhatIf(workers=workers)))
    raise typer.Exit(code)
