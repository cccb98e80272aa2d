"""Plan one MODEL reference on one machine: find its shape (exact header or catalog), then fit.

The header is the truth, so it is preferred: a local file's, a complete download in the Hugging
Face cache, or the Hub's copy read by HTTP Range (a few MB, not the weights). When none can be
read (offline, unreachable, unknown file) a catalog model falls back to the catalog's figures, and
the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qwencli.catalog import (
    Catalog,
    CatalogRef,
    HubRef,
    LocalRef,
    ModelSpec,
    QuantFile,
    parse_ref,
    quant_file,
    resolve_catalog_ref,
)
from qwencli.errors import QwenError, UsageError
from qwencli.fit import ModelShape, Options, Plan, plan
from qwencli.hardware.model import Budget, Hardware

DEFAULT_CTX = 8192


@dataclass(frozen=True)
class FitResult:
    plan: Plan
    spec: ModelSpec | None  # the catalog model, when the reference is one
    notes: tuple[str, ...]  # where the figures came from, adjustments made


def _header_shape(location: str) -> ModelShape:
    from qwencli.gguf_info import read_model
    from qwencli.shapes import shape_from_gguf

    model = read_model(location)
    return shape_from_gguf(model, name=Path(location.split("?")[0]).name)


def _hub_header_shape(repo: str, path: str, revision: str | None) -> ModelShape:
    from qwencli import hub
    from qwencli.shapes import shape_from_gguf

    model = hub.read_remote_model(repo, path, revision)
    return shape_from_gguf(model, name=Path(path).name)


def _catalog_shape(spec: ModelSpec, qf: QuantFile, notes: list[str]) -> ModelShape:
    from qwencli.shapes import shape_from_catalog
    from qwencli.store import find_model

    local = find_model(f"{spec.id}:{qf.quant}")  # a complete download, never a partial
    if local is not None:
        notes.append(f"exact figures from the GGUF header of the downloaded file {local}")
        return _header_shape(str(local))
    from qwencli import hub

    if hub.offline():
        notes.append("catalog estimate: HF_HUB_OFFLINE is set and the file is not downloaded")
        return shape_from_catalog(spec, qf)
    try:
        shape = _hub_header_shape(qf.repo, qf.files[0], qf.revision if qf.revision and
                                  len(qf.revision) == 40 else None)
    except QwenError as exc:
        notes.append(f"catalog estimate: the header could not be read from the Hub ({exc.message})")
        return shape_from_catalog(spec, qf)
    notes.append(f"exact figures from the GGUF header on the Hub ({qf.repo}/{qf.files[0]})")
    return shape


def _default_quant(catalog: Catalog, spec: ModelSpec, hw: Hardware,
                   budget: Budget) -> tuple[str, bool]:
    """The recommended quant for this machine (True), else Q4_K_M or a middle one (False)."""
    from qwencli.recommend import best_quant

    best = best_quant(catalog, spec, hw, budget)
    if best is not None:
        return best.quant, True
    return ("Q4_K_M" if "Q4_K_M" in spec.quants else spec.quants[len(spec.quants) // 2]), False


def _hub_shape(ref: HubRef, catalog: Catalog, notes: list[str]) -> tuple[ModelShape,
                                                                       ModelSpec | None]:
    from qwencli import hub

    spec = catalog.by_repo(ref.repo)
    if ref.filename:
        path = ref.filename
    else:
        files = hub.list_gguf_files(ref.repo, ref.revision)
        chosen = hub.match_quant(files, ref.quant)
        if not chosen:
            available = ", ".join(hub.quants_in(files)) or "no GGUF files"
            raise UsageError(f"{ref.repo} has no {ref.quant} file; it has: {available}")
        path = chosen[0].path
    shape = _hub_header_shape(ref.repo, path, ref.revision)
    notes.append(f"exact figures from the GGUF header on the Hub ({ref.repo}/{path})")
    return shape, spec


def resolve_shape(text: str, catalog: Catalog, hw: Hardware, budget: Budget,
                  notes: list[str]) -> tuple[ModelShape, ModelSpec | None]:
    """The shape of MODEL (a catalog id[:quant], owner/repo[:QUANT] or …/file.gguf, a path)."""
    ref = parse_ref(text)
    if isinstance(ref, LocalRef):
        path = Path(ref.path).expanduser()
        if not path.exists():
            raise QwenError(f"{path}: no such file",
                            hint="give a .gguf path, a catalog name (see `qwen models`) or "
                                 "owner/repo:QUANT")
        if path.is_dir():
            raise QwenError(f"{path} is a folder, not a .gguf file")
        notes.append(f"exact figures from the GGUF header of {path}")
        return _header_shape(str(path)), None
    if isinstance(ref, HubRef):
        return _hub_shape(ref, catalog, notes)
    assert isinstance(ref, CatalogRef)
    spec, quant = resolve_catalog_ref(catalog, ref)
    if quant is None:
        quant, recommended = _default_quant(catalog, spec, hw, budget)
        why = ("the one `qwen recommend` picks for this machine" if recommended else
               "the usual default: no quant of this model reaches the speed floor here")
        notes.append(f"quant {quant}: {why} (choose another with {spec.id}:QUANT)")
    return _catalog_shape(spec, quant_file(spec, quant), notes), spec


def fit_model(text: str, catalog: Catalog, hw: Hardware, budget: Budget, *,
              ctx: int | None = None, gpu_layers: int | None = None,
              kv_type: str = "f16") -> FitResult:
    """`qwen fit`: the memory plan for one model."""
    notes: list[str] = []
    shape, spec = resolve_shape(text, catalog, hw, budget, notes)
    max_ctx = shape.ctx_train
    if ctx is None:
        ctx = min(DEFAULT_CTX, max_ctx)
    elif ctx > max_ctx:
        raise UsageError(f"{shape.name} supports at most {max_ctx:,} tokens of context; "
                         f"--ctx {ctx:,} is more",
                         hint=f"use --ctx {max_ctx} or less")
    if gpu_layers is not None and gpu_layers > shape.n_layers + 1:
        notes.append(f"--gpu-layers {gpu_layers} is more than the model has: using "
                     f"{shape.n_layers + 1} (all {shape.n_layers} layers and the output)")
    if gpu_layers is not None and not any(g.usable for g in budget.gpus):
        notes.append("--gpu-layers has no effect: no GPU this llama.cpp build can use")
    result = plan(shape, hw, budget, Options(ctx=ctx, kv_type=kv_type, n_gpu_layers=gpu_layers))
    return FitResult(result, spec, tuple(notes))
