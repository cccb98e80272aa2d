"""`qwen pull`, `qwen list`, `qwen rm`: the commands over `hub` (network) and `store` (cache).

Thin like the rest of the CLI: parse, call the library, render through `output`. The library
never prints; the only exception is the transfer's progress bar on stderr, which `hub` draws
because it lives inside the transfer loop.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from qwencli.errors import EXIT_ERROR, EXIT_INTERRUPTED, QwenError

if TYPE_CHECKING:
    from qwencli.hub import PullResult
    from qwencli.output import Section
    from qwencli.store import LocalModel

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; answer yes.")]
ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL",
    help="A catalog name (qwen3-8b, qwen3-8b:q5_k_m), a Hub reference "
         "(Qwen/Qwen3-8B-GGUF:Q4_K_M, owner/repo/file.gguf) or, for rm, a path in the cache.")]


def _interactive() -> bool:
    """Someone can answer a question: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _fmt(n: int | None) -> str:
    from qwencli.units import format_bytes

    return format_bytes(n)


# --------------------------------------------------------------------------------------------
# qwen pull


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

    Interrupted (Ctrl-C, a cut connection)? Run the same command again: it resumes.

    Examples:

      qwen pull qwen3-8b

      qwen pull qwen3-8b:q5_k_m

      qwen pull Qwen/Qwen3-8B-GGUF:Q4_K_M

      qwen pull unsloth/Qwen3-30B-A3B-GGUF/Qwen3-30B-A3B-Q4_K_M.gguf --json
    """
    from qwencli import hub, output

    plan = hub.resolve_pull(model, quant=quant)
    for warning in plan.warnings:
        output.warn(warning)
    if plan.over_budget and not yes and _interactive() and not typer.confirm(
            f"Download {plan.files[0].path} ({_fmt(plan.size_bytes)}) anyway?", default=False,
            err=True):
        raise QwenError("nothing downloaded", hint=f"`qwen recommend` lists what fits; "
                                                   f"`qwen pull {model} --yes` downloads it")
    show = progress if progress is not None else (sys.stderr.isatty() and not json_output)
    try:
        result = hub.download(plan, progress=hub.progress_for(show))
    except hub.PullInterrupted as exc:
        output.warn(f"interrupted: {_fmt(exc.done)} of {_fmt(exc.total)} kept in the cache; "
                    f"run `qwen pull {model}` again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if make_default:
        from qwencli.config import save_default_model

        saved = save_default_model(default_ref(result))
        output.info(f"`qwen chat` now uses {saved} by default")
    if json_output:
        output.print_json(pull_document(result))
    else:
        output.print_report(pull_sections(result, model))


def default_ref(r: PullResult) -> str:
    """The reference that names exactly what was pulled: catalog id or repo, with its quant."""
    if r.model_id and r.quant:
        return f"{r.model_id}:{r.quant}"
    if r.quant:
        return f"{r.repo}:{r.quant}"
    return str(r.path)


def pull_document(r: PullResult) -> dict[str, Any]:
    return {
        "model": r.model_id,
        "repo": r.repo,
        "revision": r.revision,
        "commit": r.commit,
        "quant": r.quant,
        "path": str(r.path),
        "files": [{"path": remote.path, "local_path": str(local), "size_bytes": remote.size,
                   "sha256": remote.sha256} for remote, local in zip(r.remote, r.files,
                                                                     strict=False)],
        "size_bytes": r.size_bytes,
        "bytes_downloaded": r.bytes_downloaded,
        "resumed": r.resumed,
        "already_present": r.already_present,
        "verified": r.verified,
        "seconds": round(r.seconds, 3),
        "warnings": list(r.warnings),
    }


def pull_sections(r: PullResult, ref: str) -> list[Section]:
    from qwencli.output import Section

    name = r.model_id or r.repo
    title = (f"Already downloaded: {name} {r.quant or ''}" if r.already_present
             else f"Downloaded {name} {r.quant or ''}").rstrip()
    first = r.remote[0].path if r.remote else r.path.name
    files = (f"{first} ({_fmt(r.size_bytes)})" if len(r.files) == 1 else
             f"{first} and {len(r.files) - 1} more parts ({_fmt(r.size_bytes)} in all)")
    rows = [("repo", f"{r.repo} @ {r.commit[:12]}" if r.commit else r.repo),
            ("file", files),
            ("path", str(r.path))]
    if not r.already_present:
        rate = r.bytes_downloaded / r.seconds / 1e6 if r.seconds > 0 else 0.0
        transfer = f"{_fmt(r.bytes_downloaded)} in {r.seconds:.1f} s ({rate:.0f} MB/s)"
        if r.resumed:
            transfer += ", resumed"
        rows.append(("transfer", transfer))
        rows.append(("checked", "sha256 matches the Hub's listing" if r.verified else
                     "size only (the Hub lists no sha256 for this file)"))
    if r.model_id and r.quant:
        chat_ref = f"{r.model_id}:{r.quant.lower()}"
    elif r.quant and not ref.lower().endswith(".gguf"):
        chat_ref = f"{r.repo}:{r.quant}"
    else:
        chat_ref = ref
    return [Section(title, rows=tuple(rows), notes=(f"next: qwen chat -m {chat_ref}",))]


# --------------------------------------------------------------------------------------------
# qwen list


def list_models(json_output: JsonOpt = False) -> None:
    """List the GGUF models in the Hugging Face cache (also other tools' downloads).

    Partial downloads are shown as partial, with how far they got; `qwen pull` resumes them.

    Examples:

      qwen list

      qwen list --json
    """
    from qwencli import output, store

    models = sorted(store.scan(model_id=store.catalog_id_lookup()),
                    key=lambda m: (m.model_id or "~", m.repo.lower(), m.files))
    if json_output:
        output.print_json(list_document(models, store.hub_cache()))
    else:
        output.print_report(list_sections(models, store.hub_cache()))


def _model_document(m: LocalModel) -> dict[str, Any]:
    return {
        "model": m.model_id,
        "repo": m.repo,
        "quant": m.quant,
        "files": [f for f in m.files if f],
        "parts": m.parts,
        "parts_complete": m.parts_complete,
        "size_bytes": m.size_bytes,
        "downloaded_bytes": m.downloaded_bytes,
        "complete": m.complete,
        "percent": round(m.percent, 1) if m.percent is not None else None,
        "path": str(m.path),
        "commit": m.commit,
        "refs": list(m.refs),
    }


def list_document(models: list[LocalModel], cache: Any) -> dict[str, Any]:
    return {
        "cache_dir": str(cache),
        "models": [_model_document(m) for m in models],
        "total_bytes": sum(m.downloaded_bytes for m in models),
    }


def _status(m: LocalModel) -> str:
    if m.complete:
        return "complete"
    if m.other_tool:
        return f"partial ({_fmt(m.downloaded_bytes)}, another tool's)"
    parts = f", {m.parts_complete}/{m.parts} parts" if m.parts > 1 else ""
    pct = f"{m.percent:.0f}%" if m.percent is not None else _fmt(m.downloaded_bytes)
    return f"partial {pct}{parts}"


def list_sections(models: list[LocalModel], cache: Any) -> list[Section]:
    from qwencli.output import Section

    if not models:
        return [Section("No GGUF models downloaded", rows=(("cache", str(cache)),),
                        notes=("get one: qwen pull qwen3-8b (or `qwen recommend` first)",))]
    table = tuple((m.model_id or "-", m.repo, m.quant or "?",
                   _fmt(m.size_bytes if m.size_bytes is not None else m.downloaded_bytes),
                   _status(m), str(m.path)) for m in models)
    partial = [m for m in models if not m.complete]
    notes = [f"{len(models)} models, {_fmt(sum(m.downloaded_bytes for m in models))} in "
             f"{cache}"]
    if partial:
        notes.append("partial downloads resume with `qwen pull MODEL`; `qwen rm MODEL` "
                     "removes them")
    return [Section("Downloaded models", header=("MODEL", "REPO", "QUANT", "SIZE", "STATUS",
                                                 "PATH"), table=table, notes=tuple(notes))]


# --------------------------------------------------------------------------------------------
# qwen rm


def rm(model: ModelArg, yes: YesOpt = False, json_output: JsonOpt = False) -> None:
    """Remove a downloaded model from the cache (blobs, snapshot links and partial files).

    A catalog name or `owner/repo` without a quant removes every quant of it. Asks first on a
    terminal; elsewhere pass --yes.

    Examples:

      qwen rm qwen3-8b:q4_k_m

      qwen rm Qwen/Qwen3-8B-GGUF --yes
    """
    from qwencli import output, store

    found = store.matching(model, include_partial=True)
    if not found:
        raise QwenError(f"nothing to remove: {model} is not in the cache ({store.hub_cache()})",
                        hint="`qwen list` shows what is downloaded")
    lines = [f"  {m.repo}  {m.quant or '?'}  {_fmt(m.downloaded_bytes)}  {_status(m)}  "
             f"{m.path}" for m in found]
    if not yes:
        if not _interactive():
            raise QwenError(f"qwen rm asks before deleting {len(found)} download(s), and "
                            "there is no terminal to ask", hint=f"`qwen rm {model} --yes`")
        sys.stderr.write("This removes:\n" + "\n".join(lines) + "\n")
        if not typer.confirm("Remove?", default=False, err=True):
            output.error("nothing removed")
            raise typer.Exit(EXIT_ERROR)
    result = store.remove(found)
    if json_output:
        output.print_json({"removed": [_model_document(m) for m in result.removed],
                           "freed_bytes": result.freed_bytes})
    else:
        from qwencli.output import Section

        output.print_report([Section(
            f"Removed {len(result.removed)} download(s), {_fmt(result.freed_bytes)} freed",
            table=tuple((m.model_id or "-", m.repo, m.quant or "?", m.name)
                        for m in result.removed))])


# --------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add pull, list and rm to the app (once; calling it twice changes nothing)."""
    from qwencli.cli import handle_errors

    present = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
    if "pull" in present:
        return
    app.command("pull")(handle_errors(pull))
    app.command("list")(handle_errors(list_models))
    app.command("rm")(handle_errors(rm))
