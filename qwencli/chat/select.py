"""Which model `qwen chat` runs, and loading it with the plan `qwen fit` would show.

Order when no model is named: -m, QWEN_MODEL, the config's default-model, the best-ranked
downloaded model that fits, the top recommendation. A name without a quant means the quant the
recommender picks here (`recommend.default_quant`, the same one `qwen fit` plans and `qwen pull`
fetches); when that one is not downloaded but another quant of the model is, the downloaded one
runs (the recommender's order decides which), with a note. A model that is not downloaded at all
is fetched only through the `fetch` callback (the terminal asks for consent first). The file is
then planned exactly as `qwen fit` plans it (GPU layers and their split, context, flash
attention, KV cache type), so what `recommend` promised is what runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli import store
from qwencli.catalog import ModelSpec, load_catalog
from qwencli.errors import QwenError
from qwencli.fit import CTX_PAD
from qwencli.recommend import DEFAULT_CTX, default_quant, rank
from qwencli.refs import HubRef, LocalRef, parse_ref, with_quant

if TYPE_CHECKING:
    from qwencli.fit import Plan
    from qwencli.hardware.model import Budget, Hardware

DEFAULT_CHAT_CTX = DEFAULT_CTX["chat"]  # what `qwen recommend` plans for chat
MIN_AUTO_CTX = 1024  # the smallest context chosen on its own when the default does not fit

Machine = Callable[[], "tuple[Hardware, Budget]"]
#: Downloads `ref` (a reference naming one quant or file) and returns the local path.
Fetch = Callable[[str, "str | None"], Path]


# ------------------------------------------------------------------------------------------
# Which model


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    label: str  # how to name it: the reference given, or the file name
    spec: ModelSpec | None
    quant: str | None
    origin: str  # "-m", "QWEN_MODEL", "config", "downloaded", "recommended"
    notes: tuple[str, ...] = ()


def spec_for_file(path: Path) -> tuple[ModelSpec | None, str | None]:
    """The catalog model a local file is (by its Hub file name, or its HF-cache repo folder)."""
    try:
        catalog = load_catalog()
    except QwenError:
        return None, None
    name = path.name.lower()
    for spec in catalog.all_models:
        for source in spec.gguf:
            for quant in source.quants.values():
                if quant.files and quant.files[0].rsplit("/", 1)[-1].lower() == name:
                    return spec, quant.quant
    for part in path.parts:
        if part.startswith("models--"):
            repo = part[len("models--"):].replace("--", "/", 1)
            spec = catalog.by_repo(repo)
            if spec is not None:
                return spec, None
    return None, None


def configured_reference(model: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The model named by -m, QWEN_MODEL or the config file, with where it came from."""
    if model is not None:  # `-m ""` is a mistake to report, not "no model named"
        return model, "-m"
    env = environ.get("QWEN_MODEL", "").strip()
    if env:
        return env, "QWEN_MODEL"
    from qwencli.config import default_model

    saved = default_model()
    if saved:
        return saved, "config"
    return None


@dataclass(frozen=True)
class Wanted:
    """What a reference means here, before anything is downloaded: the quant (and the text
    naming exactly it), the catalog model, and a download of it when there is one."""

    ref_text: str
    exact: str  # the reference naming one quant or file (`qwen3-8b:Q4_K_M`)
    quant: str | None
    spec: ModelSpec | None
    local: Path | None
    notes: tuple[str, ...] = ()


def wanted_model(ref_text: str, machine: Machine) -> Wanted:
    """The quant and file `ref_text` means on this machine, and the download of it if any."""
    ref = parse_ref(ref_text)
    assert not isinstance(ref, LocalRef)
    catalog = load_catalog()
    choice = default_quant(ref, catalog, machine)  # UsageError: unknown names, nearest ones
    spec = catalog.spec_of(ref)
    exact = with_quant(ref, choice.quant)
    local = store.find_download(exact)
    if local is None and choice.reason is not None:  # our default; another quant may be here
        other = store.find_download(with_quant(ref, None), prefer=choice.ranked)
        if other is not None:
            return Wanted(ref_text, with_quant(ref, other.quant), other.quant, spec, other.path,
                          (f"using the downloaded {other.quant}; the default here is "
                           f"{choice.quant} (`qwen pull {exact}` fetches it)",))
    return Wanted(ref_text, exact, choice.quant, spec, local.path if local else None)


def resolve_model(model: str | None, *, machine: Machine, fetch: Fetch | None,
                  environ: Mapping[str, str] | None = None) -> ModelChoice:
    """Find the file to load, fetching it through `fetch` when it is missing (None: nobody
    agreed to a download, so a missing model is an error saying how to get it)."""
    named = configured_reference(model, os.environ if environ is None else environ)
    ref_text, origin = named if named is not None else _pick_unnamed(machine)
    ref = parse_ref(ref_text)
    if isinstance(ref, LocalRef):
        path = ref.path.expanduser()
        if not path.exists():
            from qwencli.gguf_info import GgufNotFoundError

            where = "" if origin == "-m" else f" (from {origin})"
            raise GgufNotFoundError(f"{path}: no such file{where}",
                                    hint="give a .gguf path, a catalog name (see `qwen models`)"
                                         " or owner/repo:QUANT")
        spec, quant = spec_for_file(path)
        return ModelChoice(path, path.name, spec, quant, origin)
    wanted = wanted_model(ref_text, machine)
    path = wanted.local
    if path is None:
        if fetch is None:
            raise QwenError(f"{wanted.exact} is not downloaded",
                            hint=f"run `qwen pull {wanted.exact}` first, or add --yes to "
                                 "download it now")
        path = fetch(wanted.exact, wanted.quant)
    quant = wanted.quant if not isinstance(ref, HubRef) or not ref.filename else None
    return ModelChoice(Path(path), ref_text, wanted.spec, quant, origin, wanted.notes)


def _pick_unnamed(machine: Machine) -> tuple[str, str]:
    """The best-ranked downloaded model that fits, else the top recommendation."""
    hw, budget = machine()
    picks = rank(load_catalog(), hw, budget, use="chat", top=50)
    if not picks:
        raise QwenError("no Qwen model fits this machine's memory",
                        hint="`qwen recommend` shows why; `qwen chat -m FILE.gguf` runs a file")
    for pick in picks:
        if store.find_download(f"{pick.spec.id}:{pick.quant.quant}") is not None:
            return f"{pick.spec.id}:{pick.quant.quant.lower()}", "downloaded"
    for pick in picks:
        if store.find_download(pick.spec.id) is not None:
            return pick.spec.id, "downloaded"
    top = picks[0]
    return f"{top.spec.id}:{top.quant.quant.lower()}", "recommended"


# ------------------------------------------------------------------------------------------
# Loading with the plan


@dataclass(frozen=True)
class LoadRequest:
    ctx: int | None = None
    gpu_layers: int | None = None
    threads: int | None = None
    verbose: bool = False
    kv_type: str = "f16"
    largest_ctx: bool = False  # no --ctx: the largest the plan allows, not chat's default


@dataclass(frozen=True)
class Loaded:
    engine: Any  # engine.Engine
    plan: Plan
    notes: tuple[str, ...]
    quant: str | None
    max_ctx: int


def plan_load(path: Path, request: LoadRequest, hw: Hardware, budget: Budget) -> \
        tuple[Plan, int, tuple[str, ...], str | None]:
    """The memory plan `qwen fit` would make for this file, at the requested or default
    context; a default context that does not fit shrinks to the largest that does."""
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.planner import check_ctx
    from qwencli.shapes import shape_from_gguf
    from qwencli.units import format_bytes

    model = read_model(path)  # GgufError for a missing, truncated or non-GGUF file
    shape = shape_from_gguf(model, name=path.name)
    check_ctx(request.ctx, shape.ctx_train, shape.name)  # as `qwen fit` does: exit 2
    ctx_train = max(CTX_PAD, shape.ctx_train)
    notes: list[str] = []
    default_ctx = ctx_train if request.largest_ctx else min(DEFAULT_CHAT_CTX, ctx_train)
    ctx = request.ctx if request.ctx is not None else default_ctx
    gpu_layers = request.gpu_layers
    if gpu_layers is not None and gpu_layers < 0:
        gpu_layers = shape.n_layers + 1  # -1: all of them (the output layer counts as one)
    options = Options(ctx=ctx, n_gpu_layers=gpu_layers, kv_type=request.kv_type)
    the_plan = plan(shape, hw, budget, options)
    max_ctx = the_plan.usable_ctx
    if not the_plan.fits and request.ctx is None and max_ctx >= MIN_AUTO_CTX:
        notes.append(f"the default {ctx:,}-token context does not fit; using {max_ctx:,}")
        the_plan = plan(shape, hw, budget, replace(options, ctx=max_ctx))
    if not the_plan.fits:
        need = the_plan.host.bytes + sum(d.bytes for d in the_plan.devices)
        have = budget.host_bytes + sum(g.bytes for g in budget.gpus if g.usable) \
            + sum(w.bytes for w in budget.workers)
        fits = (f"; the largest context that fits is {max_ctx:,}" if max_ctx >= CTX_PAD
                else "")
        from qwencli.chat.engine import OutOfMemoryError

        raise OutOfMemoryError(
            f"{path.name} needs {format_bytes(need)} at a {the_plan.ctx:,}-token context, "
            f"more than the {format_bytes(have)} this machine has free{fits}",
            hint="try a smaller quant (`qwen recommend` lists what fits) or a shorter --ctx")
    return the_plan, max_ctx, tuple(notes), model.quant_label


def open_model(choice: ModelChoice, request: LoadRequest, hw: Hardware,
               budget: Budget) -> Loaded:
    from qwencli.chat.engine import Engine
    from qwencli.hardware.cpu import default_threads

    the_plan, max_ctx, notes, quant = plan_load(choice.path, request, hw, budget)
    threads = request.threads or default_threads(hw.cpu.physical_cores)
    engine = Engine.load(choice.path, the_plan, n_threads=threads, verbose=request.verbose)
    return Loaded(engine, the_plan, (*choice.notes, *notes), choice.quant or quant, max_ctx)
