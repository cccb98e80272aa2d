"""`qwen fit MODEL`: find the model's shape (exact header or catalog figures), then plan it.

The file planned is the one `qwen pull` would fetch and `qwen chat -m` would load: the quant comes
from the recommender (`recommend.default_quant`) and the file from the Hub's listing
(`hub.resolve_pull`). The header is the truth, so it is preferred: a local file's, a complete
download in the Hugging Face cache (offline too), or the Hub's copy read by HTTP Range (a few MB,
not the weights). When none can be read (offline, unreachable), a catalog model falls back to
the catalog's figures, and the result says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwencli import hub, store
from qwencli.catalog import Catalog, ModelSpec, quant_file
from qwencli.errors import QwenError, UsageError
from qwencli.fit import ModelShape, Options, Plan, SpeedCalibration, plan
from qwencli.hardware.model import Budget, Hardware
from qwencli.recommend import RefQuant, default_quant
from qwencli.refs import CatalogRef, HubRef, LocalRef, parse_ref, with_quant

DEFAULT_CTX = 8192


@dataclass(frozen=True)
class FitResult:
    plan: Plan
    spec: ModelSpec | None  # the catalog model, when the reference is one
    notes: tuple[str, ...]  # where the figures came from, adjustments made
    choice: RefQuant | None = None  # the quant the reference means here (None: a local file)
    file: str | None = None  # what was planned: "owner/repo/path.gguf", or the local path
    prompt_tokens: int | None = None  # --prompt-tokens: the plan's speed has its ttft_s


def _local_shape(path: Path) -> ModelShape:
    from qwencli.gguf_info import read_model
    from qwencli.shapes import shape_from_gguf

    return shape_from_gguf(read_model(path), name=path.name)


def _remote_shape(repo: str, path: str, commit: str) -> ModelShape:
    from qwencli.shapes import shape_from_gguf

    return shape_from_gguf(hub.read_remote_model(repo, path, commit), name=Path(path).name)


def _shape_of(ref: CatalogRef | HubRef, quant: str | None, catalog: Catalog,
              notes: list[str]) -> tuple[ModelShape, ModelSpec | None, str]:
    """The shape of one quant (or file) of a Hub or catalog model, and which file it is."""
    wanted = with_quant(ref, quant)
    spec = catalog.spec_of(ref)
    local = store.find_model(wanted)  # a complete download, never a partial
    if local is not None:
        notes.append(f"exact figures from the GGUF header of the downloaded file {local}")
        return _local_shape(local), spec, str(local)
    if isinstance(ref, CatalogRef):
        assert spec is not None and quant is not None
        qf = quant_file(spec, quant)
        file = f"{qf.repo}/{qf.filename}"
        if hub.offline():
            notes.append("catalog estimate: HF_HUB_OFFLINE is set and the file is not "
                         "downloaded")
            return _catalog_shape(spec, quant), spec, file
        try:
            pull = hub.resolve_pull(wanted, quant=quant)
            file = f"{pull.repo}/{pull.files[0].path}"
            shape = _remote_shape(pull.repo, pull.files[0].path, pull.commit)
        except UsageError:
            raise
        except QwenError as exc:
            notes.append(f"catalog estimate: the header could not be read from the Hub "
                         f"({exc.message})")
            return _catalog_shape(spec, quant), spec, file
    else:
        if hub.offline():
            raise hub.HubError(f"cannot read {wanted}: HF_HUB_OFFLINE is set and it is not "
                               "downloaded", hint=f"`qwen pull {wanted}` when online")
        pull = hub.resolve_pull(wanted, quant=quant)
        file = f"{pull.repo}/{pull.files[0].path}"
        shape = _remote_shape(pull.repo, pull.files[0].path, pull.commit)
    notes.append(f"exact figures from the GGUF header on the Hub ({file})")
    return shape, spec, file


def _catalog_shape(spec: ModelSpec, quant: str) -> ModelShape:
    from qwencli.shapes import shape_from_catalog

    return shape_from_catalog(spec, quant_file(spec, quant))


def resolve_shape(text: str, catalog: Catalog, machine: Callable[[], tuple[Hardware, Budget]],
                  notes: list[str], calibration: SpeedCalibration | None = None) -> \
        tuple[ModelShape, ModelSpec | None, RefQuant | None, str]:
    """The shape of MODEL (a catalog id[:quant], owner/repo[:QUANT] or …/file.gguf, a path),
    the quant it means here, and the file planned."""
    ref = parse_ref(text)
    if isinstance(ref, LocalRef):
        path = ref.path.expanduser()
        if not path.exists():
            raise QwenError(f"{path}: no such file",
                            hint="give a .gguf path, a catalog name (see `qwen models`) or "
                                 "owner/repo:QUANT")
        if path.is_dir():
            raise QwenError(f"{path} is a folder, not a .gguf file")
        notes.append(f"exact figures from the GGUF header of {path}")
        return _local_shape(path), None, None, str(path)
    choice = default_quant(ref, catalog, machine, calibrate=lambda _hw: calibration)
    if choice.reason:
        name = ref.id if isinstance(ref, CatalogRef) else ref.repo
        notes.append(f"quant {choice.quant}: {choice.reason} (choose another with "
                     f"{name}:QUANT)")
    shape, spec, file = _shape_of(ref, choice.quant, catalog, notes)
    return shape, spec, choice, file


def check_ctx(ctx: int | None, max_ctx: int, name: str) -> None:
    """The one rule for an explicit --ctx, for `qwen fit` and `qwen chat` alike: at most the
    context the model supports (UsageError, exit 2)."""
    if ctx is not None and ctx > max_ctx:
        raise UsageError(f"{name} supports at most {max_ctx:,} tokens of context; "
                         f"--ctx {ctx:,} is more",
                         hint=f"use --ctx {max_ctx} or less")


def fit_model(text: str, catalog: Catalog, hw: Hardware, budget: Budget, *,
              ctx: int | None = None, gpu_layers: int | None = None,
              kv_type: str = "f16", prompt_tokens: int | None = None,
              calibration: SpeedCalibration | None = None) -> FitResult:
    """`qwen fit`: the memory plan for one model. `calibration`: this machine's, passed only
    when `hw` is this machine; `prompt_tokens`: a prompt whose time to first token to give."""
    notes: list[str] = []
    shape, spec, choice, file = resolve_shape(text, catalog, lambda: (hw, budget), notes,
                                              calibration)
    max_ctx = shape.ctx_train
    check_ctx(ctx, max_ctx, shape.name)
    if ctx is None:
        ctx = min(DEFAULT_CTX, max_ctx)
    if gpu_layers is not None and gpu_layers > shape.n_layers + 1:
        notes.append(f"--gpu-layers {gpu_layers} is more than the model has: using "
                     f"{shape.n_layers + 1} (all {shape.n_layers} layers and the output)")
    if prompt_tokens is not None and prompt_tokens >= ctx:
        notes.append(f"a {prompt_tokens:,}-token prompt does not fit a {ctx:,}-token context "
                     f"(try --ctx {min(max_ctx, prompt_tokens + 1024)})")
    if gpu_layers is not None and not any(g.usable for g in budget.gpus):
        notes.append("--gpu-layers has no effect: no GPU this llama.cpp build can use")
    result = plan(shape, hw, budget, Options(ctx=ctx, kv_type=kv_type, n_gpu_layers=gpu_layers,
                                             prompt_tokens=prompt_tokens),
                  calibration=calibration)
    return FitResult(result, spec, tuple(notes), choice, file, prompt_tokens)
