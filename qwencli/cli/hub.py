"""`qwen pull`, `qwen list`, `qwen rm`: downloads, over `hub` (network) and `store` (cache)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from qwencli.cli import _complete
from qwencli.cli._common import (
    JsonOpt,
    YesOpt,
    command,
    command_app,
    lazy_machine,
    speed_calibration,
)
from qwencli.errors import EXIT_ERROR, EXIT_INTERRUPTED, QwenError

app = command_app()

_MODEL_HELP = ("A catalog name (qwen3-8b, qwen3-8b:q5_k_m), a Hub reference "
               "(Qwen/Qwen3-8B-GGUF:Q4_K_M, owner/repo/file.gguf) or, for rm, a path in the "
               "cache.")
ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL", help=_MODEL_HELP, autocompletion=_complete.models)]
DownloadedArg = Annotated[str, typer.Argument(
    metavar="MODEL", help=_MODEL_HELP, autocompletion=_complete.downloaded)]


@command(app, "pull")
def pull(
    model: ModelArg,
    quant: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
        "--quant", "-q", metavar="QUANT",
        help="Quantization, e.g. Q4_K_M (default: the one `qwen recommend` picks here; "
             "Q4_K_M for a Hub reference).")] = None,
    json_output: JsonOpt = False,
    yes: YesOpt = False,
    progress: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--progress/--no-progress",
        help="Progress on stderr (default: on a terminal, and not with --json).")] = None,
    make_default: Annotated[bool, typer.Option(
        "--default", help="Make it the model `qwen chat` uses without -m.")] = False,
) -> None:
    """Download a model's GGUF file(s) into the Hugging Face cache, verified by sha256.

    Interrupted (Ctrl-C, a cut connection)? Run the same command again: it resumes. A file that
    another qwen or `hf download` is fetching is waited for, not fetched twice.

    Examples:

      qwen pull qwen3-8b

      qwen pull qwen3-8b:q5_k_m

      qwen pull Qwen/Qwen3-8B-GGUF:Q4_K_M

      qwen pull unsloth/Qwen3-30B-A3B-GGUF/Qwen3-30B-A3B-Q4_K_M.gguf --json
    """
    import sys

    from qwencli import hub, output, reports
    from qwencli.catalog import load_catalog
    from qwencli.recommend import default_quant
    from qwencli.refs import parse_ref
    from qwencli.units import format_bytes

    ref = parse_ref(model)
    choice = default_quant(ref, load_catalog(), lazy_machine(),
                           calibrate=speed_calibration) if quant is None else None
    plan = hub.resolve_pull(model, quant=choice.quant if choice else quant)
    if choice is not None and choice.over_budget:
        output.warn(f"{choice.reason}; pulling it anyway (choose another with --quant)")
    for warning in plan.warnings:
        output.warn(warning)
    if choice is not None and choice.over_budget and not yes and output.can_ask() and \
            not output.confirm(f"Download {plan.files[0].path} "
                               f"({format_bytes(plan.size_bytes)}) anyway?", default=False):
        raise QwenError("nothing downloaded", hint=f"`qwen recommend` lists what fits; "
                                                   f"`qwen pull {model} --yes` downloads it")
    show = progress if progress is not None else (sys.stderr.isatty() and not json_output)
    waiting = output.info if sys.stderr.isatty() or show else None
    try:
        result = hub.download(plan, progress=output.progress(show), on_wait=waiting)
    except hub.PullInterrupted as exc:
        output.warn(f"interrupted: {format_bytes(exc.done)} of {format_bytes(exc.total)} kept "
                    f"in the cache; run `qwen pull {model}` again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if make_default:
        from qwencli.config import save_default_model

        saved = save_default_model(reports.pulled_ref(result))
        output.info(f"`qwen chat` now uses {saved} by default")
    if json_output:
        output.print_json(reports.pull_document(result))
    else:
        output.print_report(reports.pull_sections(result, model))


@command(app, "list")
def list_models(json_output: JsonOpt = False) -> None:
    """List the GGUF models in the Hugging Face cache (also other tools' downloads).

    Partial downloads are shown as partial, with how far they got; `qwen pull` resumes them.

    Examples:

      qwen list

      qwen list --json
    """
    from qwencli import output, reports, store

    models = sorted(store.scan(model_id=store.catalog_id_lookup()),
                    key=lambda m: (m.model_id or "~", m.repo.lower(), m.files))
    if json_output:
        output.print_json(reports.list_document(models, store.hub_cache()))
    else:
        output.print_report(reports.list_sections(models, store.hub_cache()))


@command(app, "rm")
def rm(model: DownloadedArg, yes: YesOpt = False, json_output: JsonOpt = False) -> None:
    """Remove a downloaded model from the cache (blobs, snapshot links and partial files).

    A catalog name or `owner/repo` without a quant removes every quant of it. Asks first on a
    terminal; elsewhere pass --yes.

    Examples:

      qwen rm qwen3-8b:q4_k_m

      qwen rm Qwen/Qwen3-8B-GGUF --yes
    """
    from qwencli import output, reports, store
    from qwencli.units import format_bytes

    found = store.matching(model, include_partial=True)
    if not found:
        raise QwenError(f"nothing to remove: {model} is not in the cache ({store.hub_cache()})",
                        hint="`qwen list` shows what is downloaded")
    if not yes:
        if not output.can_ask():
            raise QwenError(f"qwen rm asks before deleting {len(found)} download(s), and "
                            "there is no terminal to ask", hint=f"`qwen rm {model} --yes`")
        output.info("This removes:\n" + "\n".join(
            f"  {m.repo}  {m.quant or '?'}  {format_bytes(m.downloaded_bytes)}  "
            f"{reports.download_status(m)}  {m.path}" for m in found))
        if not output.confirm("Remove?", default=False):
            output.error("nothing removed")
            raise typer.Exit(EXIT_ERROR)
    result = store.remove(found)
    if json_output:
        output.print_json({"removed": [reports.local_model_document(m) for m in result.removed],
                           "freed_bytes": result.freed_bytes})
    else:
        output.print_report(reports.remove_sections(result.removed, result.freed_bytes))
