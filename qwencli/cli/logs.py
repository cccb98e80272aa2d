"""`qwen logs`: the conversations `qwen chat` logged: list, show, search, rm, path."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from qwencli.cli._common import JsonOpt, YesOpt, command, command_app
from qwencli.errors import EXIT_ERROR, QwenError, UsageError

app = command_app(
    name="logs", no_args_is_help=True,
    help="The conversations `qwen chat` logged: list, show, search, remove; "
         "`qwen chat -c` continues the latest.")

LimitOpt = Annotated[int, typer.Option(
    "--count", "-n", metavar="N", min=1, max=100_000, help="How many to show.")]


@command(app, "list")
def logs_list(count: LimitOpt = 20, json_output: JsonOpt = False) -> None:
    """The latest conversations, the one written to last first.

    Examples:

      qwen logs list

      qwen logs list -n 5 --json
    """
    from qwencli import output, reports
    from qwencli.logs import ConversationLog, log_path

    path = log_path()
    with ConversationLog.open(path, read_only=True) as log:
        found = log.recent(count)
    if json_output:
        output.print_json(reports.log_list_document(found, path))
    else:
        output.print_report(reports.log_list_sections(found, path))


@command(app, "show")
def logs_show(
    conversation_id: Annotated[Optional[int], typer.Argument(  # noqa: UP045
        metavar="ID", min=1, help="The conversation (default: the latest).",
        show_default=False)] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Also the messages /undo and /regen replaced.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """A conversation, as text (or one JSON document).

    Examples:

      qwen logs show

      qwen logs show 12 --json | jq -r '.messages[-1].content'
    """
    from qwencli import output, reports
    from qwencli.logs import ConversationLog, LogError

    with ConversationLog.open(read_only=True) as log:
        wanted = conversation_id if conversation_id is not None else log.latest_id()
        if wanted is None:
            raise LogError("there is no conversation in the log yet",
                           hint='qwen chat "..." starts one')
        conversation = log.get(wanted)
    if json_output:
        output.print_json(reports.conversation_document(conversation, everything=everything))
    else:
        output.write(reports.conversation_text(conversation, everything=everything))


@command(app, "search")
def logs_search(
    words: Annotated[list[str], typer.Argument(
        metavar="TEXT", help="Words that must all be in the message (its thinking counts).")],
    count: LimitOpt = 20,
    json_output: JsonOpt = False,
) -> None:
    """Messages that contain every word of TEXT, latest first (SQLite full-text search where
    the sqlite3 module has FTS5; plain matching otherwise).

    Examples:

      qwen logs search rust lifetimes

      qwen logs search "commit message" --json
    """
    from qwencli import output, reports
    from qwencli.logs import ConversationLog

    text = " ".join(words).strip()
    if not text:
        raise UsageError("search needs some text")
    with ConversationLog.open(read_only=True) as log:
        hits = log.search(text, count)
    if json_output:
        output.print_json(reports.search_document(hits, text))
    else:
        output.print_report(reports.search_sections(hits, text))


@command(app, "rm")
def logs_rm(
    conversation_ids: Annotated[Optional[list[int]], typer.Argument(  # noqa: UP045
        metavar="ID...", min=1, help="The conversations to remove.", show_default=False)
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every conversation.")]
    = False,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Remove conversations from the log. Asks first on a terminal; elsewhere pass --yes.

    Examples:

      qwen logs rm 12 13

      qwen logs rm --all --yes
    """
    from qwencli import output
    from qwencli.logs import ConversationLog

    ids = sorted(set(conversation_ids or ()))
    if everything == bool(ids):
        raise UsageError("give conversation IDs or --all (not both)")
    with ConversationLog.open(read_only=True) as log:
        found = [s.id for s in log.recent(1_000_000_000)] if everything else \
            [log.get(cid).id for cid in ids]  # LogError for an id that is not there
    if not found:
        output.info("the log holds no conversations; nothing to remove")
        if json_output:
            output.print_json({"removed": []})
        return
    what = (f"all {len(found)} logged conversations" if everything
            else f"conversation{'s' if len(found) > 1 else ''} "
                 f"{', '.join(map(str, found))}")
    if not yes:
        if not output.can_ask():
            raise QwenError(f"qwen logs rm asks before removing {what}, and there is no "
                            "terminal to ask", hint="add --yes")
        if not output.confirm(f"Remove {what}?", default=False):
            output.error("nothing removed")
            raise typer.Exit(EXIT_ERROR)
    with ConversationLog.open() as log:
        log.remove(found)  # what was asked about, not what came in meanwhile
    if json_output:
        output.print_json({"removed": found})
    else:
        output.info(f"removed {what}")


@command(app, "path")
def logs_path() -> None:
    """Print where the log lives (QWEN_LOG_DB moves it)."""
    from qwencli import output
    from qwencli.logs import log_path

    output.write(f"{log_path()}\n")
