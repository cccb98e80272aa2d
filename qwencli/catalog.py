"""The model catalog: `profiles/models/*.toml` -> `ModelSpec`, and catalog names -> models.

The selection matrix is data, not code: one TOML file per Qwen family (bundled in
`profiles/models/`), a shared quant table (`profiles/quants.toml`), and optional user files in
`<config dir>/models/*.toml`. Every file is checked against a schema at load, so a typo in a
profile is a one-line `ConfigError` naming the file and the key path, never a traceback later.

Overlay rule: files are read in this order, bundled first, then the user's config directory,
then any `extra_dirs` (each directory's files sorted by name). A model whose `id` is already
known *replaces* the earlier entry as a whole (no field-by-field merge, so what a user file says
is exactly what is used); a new `id` is appended. Within one directory an `id` may appear once.

Loading is cached per file (path, mtime, size), so `qwen recommend --json` pays for TOML
parsing once per process and a changed file is picked up on the next call.

Model file schema (`schema = 1`; unknown keys are errors; `?` = optional):

    schema = 1, family = "qwen3", family_name = "Qwen3"
    [defaults]   any model key below; merged under each [[models]] entry (tables key by key)
    [[models]]
      id, name, hf_repo ("owner/name"), released (date), license, arch (ARCHITECTURES),
      use (USE_CASES), aliases?, notes?
      params_total, params_active? (MoE), n_layers, gguf_block_count? (default n_layers +
      mtp_layers), mtp_layers?, hidden_size, n_heads, n_kv_heads, head_dim, head_dim_v?,
      full_attention_interval? (default 1; 4 = DeltaNet hybrid), linear_attention? {v_heads,
      qk_heads, head_dim, conv_kernel?}, vocab_size, tie_embeddings, ffn_size (dense) |
      experts {total, active, shared, ffn_size}, context_native, context_max (> native = YaRN)
      thinking {mode, switch, default_on}
      [models.sampling.<PRESET_NAMES>] temperature?, top_p?, top_k?, min_p?, presence_penalty?,
                                       repetition_penalty?
      params_gguf? (weights stored in the GGUF file: a Q8_0 file's bytes / 1.0625; default
      params_total; used only to estimate file sizes)
      quality_modes {thinking?, non_thinking? = {score (0-100), basis}} | quality (one figure
      for every mode, for user files), quality_for? {<use> = score}
      [[models.gguf]]  repo, file ("…-{quant}.gguf" or "{quant_lower}"), split_file?
                       (default: file + "-{part:05d}-of-{parts:05d}"), confirmed, gated?,
                       revision?, mmproj?, mmproj_size?, output_copy? (the files store a
                       separate output matrix although the model ties it)
        quants.<QUANT> = { size? = int | [per-part ints], approx?, listed?, parts?,
                           sha256? (str | [per part]), revision?, files? }
                         (no size: approx, estimated by `estimate_size`)

Quality by mode: `quality_modes.<mode>.score` is the model's MMLU-Pro in that mode where Qwen
publishes one (`basis = "MMLU-Pro"`), else a documented fallback whose `basis` says what it
is derived from. A hybrid model carries both modes, a thinking-only model `thinking`, a model
without thinking `non_thinking`. `ModelSpec.quality` is the figure of the model's default mode.

Quant names must be keys of `profiles/quants.toml`, which also holds bits per weight, the
(Llama-measured) quality loss of each quant type and the measured size rules (`[sizes.<class>]`,
see `estimate_size`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from qwencli import tomlfile
from qwencli.errors import ConfigError, UsageError
from qwencli.paths import bundled_profiles_dir, config_dir
from qwencli.refs import ID_RE, REPO_RE, CatalogRef, HubRef, normalize_quant, parse_ref
from qwencli.tomlfile import Field, join

SCHEMA_VERSION = 1
QUALITY_MODES = ("thinking", "non_thinking")
PUBLISHED_BASIS = "MMLU-Pro"  # a figure Qwen publishes (tests hold it to the reference)
# Size-rule classes: how a family's GGUF files spend bits (quants.toml [sizes.<class>]).
SIZE_CLASSES = {"qwen2": "dense", "qwen3": "dense", "qwen2moe": "moe", "qwen3moe": "moe",
                "qwen35": "hybrid", "qwen3next": "hybrid-moe", "qwen35moe": "hybrid-moe"}
# llama.cpp keeps the output matrix (or a tied embedding) at Q6_K for k-quants, Q8_0 at Q8_0.
_OUTPUT_BPW = {"Q8_0": 8.5, "F16": 16.0, "BF16": 16.0}
_DEFAULT_OUTPUT_BPW = 6.5625
# Rows whose length is not a multiple of 256 cannot hold k-quant blocks: llama.cpp falls back
# (llama-quant.cpp: Q2_K/Q3_K/IQ4_XS -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0).
_KQUANT_FALLBACK_BPW = {"Q2_K": 4.5, "Q3_K_M": 4.5, "IQ4_XS": 4.5, "Q4_K_M": 5.5, "Q4_K_S": 5.5,
                        "Q5_K_M": 6.0, "Q5_K_S": 6.0, "Q6_K": 8.5}

USE_CASES = ("chat", "code", "math", "reasoning", "vision")
THINKING_MODES = ("hybrid", "thinking-only", "none")
# How a chat template turns thinking on/off (or tunes it): the kwarg / soft switch it honours.
THINKING_SWITCHES = ("enable_thinking", "soft-switch", "preserve_thinking", "reasoning_effort")
PRESET_NAMES = ("thinking", "non_thinking", "thinking_code", "non_thinking_reasoning")
# general.architecture values of Qwen GGUF files (llama.cpp gguf-py constants).
ARCHITECTURES = ("qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl",
                 "qwen3vlmoe", "qwen35", "qwen35moe")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_REV_RE = re.compile(r"^[0-9a-f]{7,40}$")


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class QuantInfo:
    """What a quant type costs and loses (from quants.toml; loss figures are Llama data)."""

    name: str
    bits: int  # nominal bits in the name (Q3_K_M -> 3); the small-model rule compares these
    bpw: float  # bits per weight of a whole file, used for approximate sizes
    kld: float | None  # mean KLD vs FP16, LLaMA-3-8B, no imatrix (llama.cpp scoreboard)
    kld_imatrix: float | None
    delta_ppl: float | None  # PPL increase vs FP16, LLaMA-3-8B (llama-quantize table)
    delta_ppl_pct_70b: float | None  # PPL increase in %, Llama-3-70B
    loss_assumed: bool = False  # True when no published figure exists and one was assumed


@dataclass(frozen=True)
class QwenKld:
    """A measured Qwen quant-loss point (quantgap): why small models avoid < 4-bit quants."""

    model: str
    quant: str
    kld: float
    top1: float | None


@dataclass(frozen=True)
class SmallModelRule:
    """Models at or below `max_params` lose too much below `min_bits`; prefer `prefer`."""

    max_params: int
    min_bits: int
    prefer: tuple[str, ...]

    def applies(self, params: int) -> bool:
        return params <= self.max_params


@dataclass(frozen=True)
class QualityFigure:
    """One mode's quality prior: the score and what it is (published MMLU-Pro, or a fallback)."""

    mode: str  # "thinking" | "non_thinking"
    score: float
    basis: str  # "MMLU-Pro" when Qwen publishes the figure; else how the fallback is derived

    @property
    def published(self) -> bool:
        return self.basis == PUBLISHED_BASIS


@dataclass(frozen=True)
class SizeRules:
    """Measured bits per weight per size class and quant: (output matrix, everything else).

    Hashable (tuples), so model files parsed with it stay cached."""

    rules: tuple[tuple[str, str, float, float], ...] = ()  # (class, quant, output bpw, body)
    fallback_bpw: tuple[tuple[str, float], ...] = ()  # quants.toml `bpw`, for unmeasured pairs

    def bpw(self, size_class: str, quant: str) -> tuple[float, float, bool]:
        """(output bpw, body bpw, measured) for a quant in a class."""
        for cls, name, output, body in self.rules:
            if cls == size_class and name == quant:
                return output, body, True
        body = dict(self.fallback_bpw).get(quant, 4.89)
        return _OUTPUT_BPW.get(quant, max(_DEFAULT_OUTPUT_BPW, body)), body, False


def estimate_size(rules: SizeRules, *, arch: str, quant: str, params: int, vocab_size: int,
                  hidden_size: int, output_copy: bool = False) -> int:
    """A GGUF file's bytes from measured bits per weight (gguf-sizes.md, quants.toml [sizes]).

    The output matrix (vocab x hidden; the embedding itself when tied) is kept at higher
    precision than the rest, which is why small models with a 248K vocabulary run at 5.2-5.6
    bits per weight at Q4_K_M; the rest follows its size class (dense, MoE, DeltaNet hybrid,
    hybrid MoE: their tensor mixes differ). `output_copy`: the files store a separate output
    matrix for a tied model (official Qwen2.5 <= 3B repos). Rows not a multiple of 256 fall
    back from k-quants to larger types. No projector is ever counted.
    """
    size_class = SIZE_CLASSES.get(arch, "dense")
    output_bpw, body_bpw, _ = rules.bpw(size_class, quant)
    output = vocab_size * hidden_size
    total = params + (output if output_copy else 0)
    if hidden_size % 256:
        body_bpw = _KQUANT_FALLBACK_BPW.get(quant, body_bpw)
        output_bpw = max(output_bpw, 8.5)
    return int((output * output_bpw + max(0, total - output) * body_bpw) / 8)


@dataclass(frozen=True)
class SamplingPreset:
    """Qwen's published sampling settings for one mode; None = not stated by Qwen."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None


@dataclass(frozen=True)
class Thinking:
    mode: str  # "hybrid" | "thinking-only" | "none"
    switch: tuple[str, ...]  # subset of THINKING_SWITCHES
    default_on: bool


@dataclass(frozen=True)
class LinearAttention:
    """Gated DeltaNet layers (Qwen3.5/3.6/3.8): a fixed-size recurrent state, no KV cache."""

    v_heads: int
    qk_heads: int
    head_dim: int
    conv_kernel: int | None = None


@dataclass(frozen=True)
class Experts:
    total: int
    active: int  # routed experts per token
    shared: int
    ffn_size: int  # intermediate size of one expert


@dataclass(frozen=True)
class QuantFile:
    """One downloadable quant: every file (all split parts, in order) and what it should weigh."""

    quant: str
    repo: str
    files: tuple[str, ...]
    size_bytes: int  # total over all parts
    parts: int
    part_sizes: tuple[int, ...] | None  # per part, when known exactly
    sha256: tuple[str, ...] | None  # one per file, when known
    approx: bool  # size not exact: estimated (params x bpw) or a rounded listing figure
    listed: bool  # approx, but a rounded figure from a Hub listing or catalog, not an estimate
    revision: str | None  # commit (possibly a prefix) the exact size/hash was read at
    confirmed: bool  # the repo and its naming were seen in a checkable source

    @property
    def filename(self) -> str:
        """The file to hand llama.cpp (the first part of a split model)."""
        return self.files[0]


@dataclass(frozen=True)
class GgufSource:
    """A Hub repository with GGUF files for one model, and the quants it offers."""

    repo: str
    file_pattern: str
    split_pattern: str
    confirmed: bool
    gated: bool
    revision: str | None
    mmproj: str | None
    mmproj_size: int | None
    quants: Mapping[str, QuantFile]
    output_copy: bool = False  # a separate output matrix although the model ties it

    @property
    def official(self) -> bool:
        return self.repo.split("/", 1)[0] == "Qwen"

    def __hash__(self) -> int:  # the quants mapping is not hashable; repo + pattern identify it
        return hash((self.repo, self.file_pattern))


@dataclass(frozen=True)
class ModelSpec:
    """Everything the tool knows about one model: identity, shape, behaviour, where to get it."""

    id: str
    name: str
    family: str
    family_name: str
    released: date
    license: str
    hf_repo: str
    arch: str
    use: tuple[str, ...]
    params_total: int
    params_active: int | None
    n_layers: int
    gguf_block_count: int  # n_layers plus any MTP block stored in the GGUF
    mtp_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    full_attention_interval: int  # 1: every layer has a KV cache; 4: every 4th (DeltaNet hybrid)
    linear_attention: LinearAttention | None
    vocab_size: int
    tie_embeddings: bool
    ffn_size: int | None
    experts: Experts | None
    context_native: int
    context_max: int
    thinking: Thinking
    sampling: Mapping[str, SamplingPreset]
    quality: float  # the default mode's figure
    quality_for: Mapping[str, float]
    gguf: tuple[GgufSource, ...]
    quality_modes: Mapping[str, QualityFigure] = field(default_factory=dict)
    params_gguf: int = 0  # weights in the GGUF (sizes only); 0: params_total
    quants: tuple[str, ...] = ()  # every quant some source offers, fewest bits per weight first
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    source_file: str = ""

    def __hash__(self) -> int:  # mappings inside are not hashable; id + file identify a spec
        return hash((self.id, self.source_file))

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def is_hybrid(self) -> bool:
        return self.full_attention_interval > 1

    @property
    def kv_layer_indices(self) -> tuple[int, ...]:
        """Layers that keep a KV cache: all, or every Nth (3 DeltaNet layers, then attention)."""
        step = self.full_attention_interval
        return tuple(i for i in range(self.n_layers) if (i + 1) % step == 0)

    @property
    def kv_layers(self) -> int:
        return self.n_layers // self.full_attention_interval

    @property
    def effective_params(self) -> float:
        """Size used for quality interpolation: total for dense, sqrt(total x active) for MoE."""
        if self.params_active:
            return math.sqrt(self.params_total * self.params_active)
        return float(self.params_total)

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> int:
        """K and V cache per token over all KV layers (f16 by default)."""
        per_layer = self.n_kv_heads * (self.head_dim_k + self.head_dim_v)
        return int(self.kv_layers * per_layer * bytes_per_element)

    @property
    def default_mode(self) -> str:
        """The mode a chat runs without --think/--no-think."""
        return "thinking" if self.thinking.default_on else "non_thinking"

    def modes(self) -> tuple[str, ...]:
        """The modes this model can run in."""
        if self.thinking.mode == "none":
            return ("non_thinking",)
        if self.thinking.mode == "thinking-only":
            return ("thinking",)
        return QUALITY_MODES

    def quality_in(self, mode: str) -> QualityFigure:
        """The quality figure for a mode (the default mode's when the model cannot run it)."""
        found = self.quality_modes.get(mode) or self.quality_modes.get(self.default_mode)
        if found is None:
            return QualityFigure(self.default_mode, self.quality, "profile figure")
        return found

    def quality_for_use(self, use: str | None) -> float:
        """The quality prior for a use case (specialists score higher at their speciality)."""
        if use is not None and use in self.quality_for:
            return self.quality_for[use]
        return self.quality

    def preset(self, thinking: bool) -> SamplingPreset | None:
        """The sampling preset for a mode, falling back to the other mode's when only one exists."""
        first, second = ("thinking", "non_thinking") if thinking else ("non_thinking", "thinking")
        return self.sampling.get(first) or self.sampling.get(second)


@dataclass(frozen=True, eq=False)
class Catalog:
    """The loaded catalog; lookups are case-insensitive."""

    all_models: tuple[ModelSpec, ...]
    quant_table: Mapping[str, QuantInfo]
    small_model_rule: SmallModelRule
    qwen_kld: tuple[QwenKld, ...]
    files: tuple[str, ...]
    size_rules: SizeRules = SizeRules()
    _by_key: Mapping[str, ModelSpec] = field(repr=False, compare=False, default_factory=dict)
    _by_repo: Mapping[str, ModelSpec] = field(repr=False, compare=False, default_factory=dict)

    def get(self, model_id: str) -> ModelSpec:
        """A model by id or alias; UsageError with the nearest names when unknown."""
        spec = self.find(model_id)
        if spec is None:
            raise _unknown_model(self, model_id)
        return spec

    def find(self, model_id: str) -> ModelSpec | None:
        return self._by_key.get(model_id.strip().lower())

    def models(self, use: str | None = None) -> tuple[ModelSpec, ...]:
        """All models, or those recommended for one use case."""
        if use is None:
            return self.all_models
        if use not in USE_CASES:
            raise UsageError(f"unknown use {use!r}; choose one of {', '.join(USE_CASES)}")
        return tuple(m for m in self.all_models if use in m.use)

    def by_repo(self, repo: str) -> ModelSpec | None:
        """The model a Hub repo (one of its GGUF repos, or its own weights repo) belongs to,
        so a Hub reference still gets Qwen's sampling presets and shape facts."""
        return self._by_repo.get(repo.strip().lower())

    def spec_of(self, ref: CatalogRef | HubRef) -> ModelSpec | None:
        """The catalog model a reference is about (None for a Hub repository the catalog
        does not know); UsageError, with the nearest names, for an unknown catalog name."""
        if isinstance(ref, CatalogRef):
            return self.get(ref.id)
        return self.by_repo(ref.repo)

    def quant_info(self, name: str) -> QuantInfo:
        info = self.quant_table.get(normalize_quant(name))
        if info is None:
            raise UsageError(f"unknown quant {name!r}; known: {', '.join(self.quant_table)}")
        return info


# --------------------------------------------------------------------------------------------
# Schema


_HINT = "fix the file, or move it out of the models/ directory"

_PRESET = {k: Field("number") for k in ("temperature", "top_p", "min_p", "presence_penalty",
                                        "repetition_penalty")} | {"top_k": Field("int")}

_QUANT_FILE = {
    "size": Field("int|ints"),
    "approx": Field("bool"),
    "listed": Field("bool"),
    "parts": Field("int"),
    "sha256": Field("str|strs"),
    "revision": Field("str"),
    "files": Field("strs"),
}

_SOURCE = {
    "repo": Field("str", required=True),
    "file": Field("str", required=True),
    "split_file": Field("str"),
    "confirmed": Field("bool", required=True),
    "gated": Field("bool"),
    "revision": Field("str"),
    "mmproj": Field("str"),
    "mmproj_size": Field("int"),
    "output_copy": Field("bool"),
    # "quants": a map of quant name -> _QUANT_FILE; the names come from quants.toml (_schemas)
}

_MODEL = {
    "id": Field("str", required=True),
    "name": Field("str", required=True),
    "released": Field("date", required=True),
    "license": Field("str", required=True),
    "hf_repo": Field("str", required=True),
    "arch": Field("str", required=True, choices=ARCHITECTURES),
    "use": Field("strs", required=True, choices=USE_CASES),
    "aliases": Field("strs"),
    "notes": Field("strs"),
    "params_total": Field("int", required=True),
    "params_active": Field("int"),
    "n_layers": Field("int", required=True),
    "gguf_block_count": Field("int"),
    "mtp_layers": Field("int"),
    "hidden_size": Field("int", required=True),
    "n_heads": Field("int", required=True),
    "n_kv_heads": Field("int", required=True),
    "head_dim": Field("int", required=True),
    "head_dim_v": Field("int"),
    "full_attention_interval": Field("int"),
    "linear_attention": Field("table", sub={
        "v_heads": Field("int", required=True), "qk_heads": Field("int", required=True),
        "head_dim": Field("int", required=True), "conv_kernel": Field("int")}),
    "vocab_size": Field("int", required=True),
    "tie_embeddings": Field("bool", required=True),
    "ffn_size": Field("int"),
    "experts": Field("table", sub={
        "total": Field("int", required=True), "active": Field("int", required=True),
        "shared": Field("int", required=True), "ffn_size": Field("int", required=True)}),
    "context_native": Field("int", required=True),
    "context_max": Field("int", required=True),
    "thinking": Field("table", required=True, sub={
        "mode": Field("str", required=True, choices=THINKING_MODES),
        "switch": Field("strs", required=True, choices=THINKING_SWITCHES),
        "default_on": Field("bool", required=True)}),
    "sampling": Field("map", required=True, choices=PRESET_NAMES,
                      of=Field("table", sub=_PRESET)),
    "quality": Field("number"),
    "quality_modes": Field("map", choices=QUALITY_MODES, of=Field("table", sub={
        "score": Field("number", required=True, minimum=0, maximum=100),
        "basis": Field("str", required=True, blank=False)})),
    "params_gguf": Field("int"),
    "quality_for": Field("map", choices=USE_CASES, of=Field("number")),
    # "gguf": an array of _SOURCE tables (_schemas)
}

_QUANT_ENTRY = {
    "bits": Field("int", required=True),
    "bpw": Field("number", required=True),
    "kld": Field("number"),
    "kld_imatrix": Field("number"),
    "delta_ppl": Field("number"),
    "delta_ppl_pct_70b": Field("number"),
    "loss_assumed": Field("bool"),
}

_QUANTS_FILE = {
    "schema": Field("int", required=True),
    "quants": Field("map", required=True, of=Field("table", sub=_QUANT_ENTRY)),
    "small_models": Field("table", required=True, sub={
        "max_params": Field("int", required=True), "min_bits": Field("int", required=True),
        "prefer": Field("strs", required=True)}),
    "sizes": Field("map", choices=tuple(sorted(set(SIZE_CLASSES.values()))), of=Field(
        "map", of=Field("table", sub={"output": Field("number", required=True, above=0),
                                      "body": Field("number", required=True, above=0)}))),
    "qwen_kld": Field("tables", sub={
        "model": Field("str", required=True), "quant": Field("str", required=True),
        "kld": Field("number", required=True), "top1": Field("number")}),
}


@lru_cache(maxsize=4)
def _schemas(quant_names: tuple[str, ...]) -> tuple[tomlfile.Schema, tomlfile.Schema]:
    """(model file, one merged [[models]] entry): quant names must be keys of quants.toml."""
    quants = Field("map", required=True, choices=quant_names, noun="quant",
                   of=Field("table", sub=_QUANT_FILE))
    model = _MODEL | {"gguf": Field("tables", required=True, sub=_SOURCE | {"quants": quants})}
    model_file = {
        "schema": Field("int", required=True),
        "family": Field("str", required=True),
        "family_name": Field("str", required=True),
        # [defaults] is a partial model: types checked, nothing required until the merge
        "defaults": Field("table", sub=model, partial=True),
        # each entry is checked after [defaults] is merged under it
        "models": Field("tables", required=True, expect="an array of tables ([[models]])"),
    }
    return model_file, model


@dataclass(frozen=True)
class _Where:
    """The file a model is built from: checks past the schema fail in tomlfile's format."""

    file: Path
    quant_names: tuple[str, ...] = ()
    size_rules: SizeRules = SizeRules()

    def fail(self, path: str, message: str) -> ConfigError:
        return tomlfile.error(self.file, path, message, hint=_HINT)


# --------------------------------------------------------------------------------------------
# Reading files


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A model entry on top of the file's [defaults]: tables merge key by key, the rest replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@lru_cache(maxsize=64)
def _parse_quants_file(path: str, _mtime: int, _size: int) -> tuple[
        Mapping[str, QuantInfo], SmallModelRule, tuple[QwenKld, ...], SizeRules]:
    file = Path(path)
    data = tomlfile.read(file, hint=_HINT)
    tomlfile.check(data, _QUANTS_FILE, file, hint=_HINT)
    check = _Where(file)
    if data["schema"] != SCHEMA_VERSION:
        raise check.fail("schema", f"unsupported schema {data['schema']}; expected "
                                   f"{SCHEMA_VERSION}")
    table: dict[str, QuantInfo] = {}
    for name, q in data["quants"].items():
        if name != normalize_quant(name):
            raise check.fail(f"quants.{name}", f"write quant names in upper case "
                                               f"({normalize_quant(name)!r})")
        if q["bpw"] <= 0 or q["bits"] <= 0:
            raise check.fail(f"quants.{name}", "bits and bpw must be positive")
        table[name] = QuantInfo(
            name=name, bits=q["bits"], bpw=float(q["bpw"]), kld=_opt_float(q.get("kld")),
            kld_imatrix=_opt_float(q.get("kld_imatrix")),
            delta_ppl=_opt_float(q.get("delta_ppl")),
            delta_ppl_pct_70b=_opt_float(q.get("delta_ppl_pct_70b")),
            loss_assumed=q.get("loss_assumed", False))
    small = data["small_models"]
    for i, name in enumerate(small["prefer"]):
        if name not in table:
            raise check.fail(f"small_models.prefer[{i}]", f"unknown quant {name!r}")
    rule = SmallModelRule(max_params=small["max_params"], min_bits=small["min_bits"],
                          prefer=tuple(small["prefer"]))
    points = []
    for i, p in enumerate(data.get("qwen_kld", [])):
        if p["quant"] not in table:
            raise check.fail(f"qwen_kld[{i}].quant", f"unknown quant {p['quant']!r}")
        points.append(QwenKld(model=p["model"], quant=p["quant"], kld=float(p["kld"]),
                              top1=_opt_float(p.get("top1"))))
    measured = []
    for size_class, per_quant in data.get("sizes", {}).items():
        for name, bpw in per_quant.items():
            if name not in table:
                raise check.fail(f"sizes.{size_class}.{name}", f"unknown quant {name!r}")
            measured.append((size_class, name, float(bpw["output"]), float(bpw["body"])))
    rules = SizeRules(tuple(measured), tuple((n, q.bpw) for n, q in table.items()))
    return MappingProxyType(table), rule, tuple(points), rules


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@lru_cache(maxsize=256)
def _parse_model_file(path: str, _mtime: int, _size: int, quant_names: tuple[str, ...],
                      size_rules: SizeRules = SizeRules()) -> tuple[ModelSpec, ...]:
    file = Path(path)
    data = tomlfile.read(file, hint=_HINT)
    file_schema, model_schema = _schemas(quant_names)
    tomlfile.check(data, file_schema, file, hint=_HINT)
    check = _Where(file, quant_names, size_rules)
    if data["schema"] != SCHEMA_VERSION:
        raise check.fail("schema", f"unsupported schema {data['schema']}; expected "
                                   f"{SCHEMA_VERSION}")
    defaults = data.get("defaults", {})
    specs = []
    for i, raw in enumerate(data["models"]):
        path_i = f"models[{i}]"
        merged = _merge(defaults, raw)  # errors name the model's own keys: models[i].key
        tomlfile.check(merged, model_schema, file, path_i, hint=_HINT)
        specs.append(_build_model(merged, check, path_i, data["family"], data["family_name"]))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise check.fail(f"models[{i}].id", f"duplicate id {spec.id!r} (also models"
                                                f"[{seen[spec.id]}])")
        seen[spec.id] = i
    return tuple(specs)


def _build_model(m: Mapping[str, Any], check: _Where, path: str, family: str,
                 family_name: str) -> ModelSpec:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(join(path, key), message)

    if not ID_RE.match(m["id"]):
        raise fail("id", f"{m['id']!r}: use lower case letters, digits, '.', '-', '_'")
    if not REPO_RE.match(m["hf_repo"]):
        raise fail("hf_repo", f"{m['hf_repo']!r} is not owner/name")
    if not m["use"]:
        raise fail("use", "list at least one use case")
    for key in ("params_total", "n_layers", "hidden_size", "n_heads", "n_kv_heads", "head_dim",
                "vocab_size", "context_native", "context_max"):
        if m[key] <= 0:
            raise fail(key, "must be positive")
    if m["context_max"] < m["context_native"]:
        raise fail("context_max", "is smaller than context_native")
    interval = m.get("full_attention_interval", 1)
    if interval < 1 or m["n_layers"] % interval:
        raise fail("full_attention_interval", f"{interval} does not divide n_layers "
                                              f"{m['n_layers']}")
    linear = None
    if "linear_attention" in m:
        la = m["linear_attention"]
        linear = LinearAttention(la["v_heads"], la["qk_heads"], la["head_dim"],
                                 la.get("conv_kernel"))
    if interval > 1 and linear is None:
        raise fail("linear_attention", "required when full_attention_interval > 1")
    experts = None
    if "experts" in m:
        e = m["experts"]
        if not 0 < e["active"] <= e["total"]:
            raise fail("experts.active", "must be between 1 and experts.total")
        experts = Experts(e["total"], e["active"], e["shared"], e["ffn_size"])
        if "params_active" not in m:
            raise fail("params_active", "missing required key (the model has experts)")
    elif "ffn_size" not in m:
        raise fail("ffn_size", "missing required key (dense model)")
    active = m.get("params_active")
    if active is not None and not 0 < active <= m["params_total"]:
        raise fail("params_active", "must be between 1 and params_total")
    t = m["thinking"]
    thinking = Thinking(t["mode"], tuple(t["switch"]), t["default_on"])
    if thinking.mode == "none" and thinking.default_on:
        raise fail("thinking.default_on", "is true but mode is 'none'")
    if thinking.mode == "thinking-only" and not thinking.default_on:
        raise fail("thinking.default_on", "is false but mode is 'thinking-only'")
    modes = _quality_modes(m, thinking, fail)
    default_mode = "thinking" if thinking.default_on else "non_thinking"
    if not m["sampling"]:
        raise fail("sampling", "give at least one preset")
    sampling = {name: SamplingPreset(**{k: v for k, v in p.items()})
                for name, p in m["sampling"].items()}
    if not m["gguf"]:
        raise fail("gguf", "list at least one GGUF source")
    params_gguf = m.get("params_gguf", m["params_total"])
    if params_gguf <= 0:
        raise fail("params_gguf", "must be positive")

    def estimate(quant: str, output_copy: bool) -> int:
        return estimate_size(check.size_rules, arch=m["arch"], quant=quant, params=params_gguf,
                             vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
                             output_copy=output_copy)

    sources = tuple(_build_source(s, check, join(join(path, "gguf"), i), estimate)
                    for i, s in enumerate(m["gguf"]))
    n_layers = m["n_layers"]
    mtp = m.get("mtp_layers", 0)
    name = m["name"]
    offered = {name for source in sources for name in source.quants}
    quants = tuple(name for name in check.quant_names if name in offered)
    aliases = tuple(dict.fromkeys(a.lower() for a in (
        *m.get("aliases", ()), name, m["hf_repo"].split("/", 1)[1]) if a.lower() != m["id"]))
    return ModelSpec(
        id=m["id"], name=name, family=family, family_name=family_name,
        released=m["released"], license=m["license"], hf_repo=m["hf_repo"], arch=m["arch"],
        use=tuple(m["use"]), params_total=m["params_total"], params_active=active,
        n_layers=n_layers, gguf_block_count=m.get("gguf_block_count", n_layers + mtp),
        mtp_layers=mtp, hidden_size=m["hidden_size"], n_heads=m["n_heads"],
        n_kv_heads=m["n_kv_heads"], head_dim_k=m["head_dim"],
        head_dim_v=m.get("head_dim_v", m["head_dim"]), full_attention_interval=interval,
        linear_attention=linear, vocab_size=m["vocab_size"],
        tie_embeddings=m["tie_embeddings"], ffn_size=m.get("ffn_size"), experts=experts,
        context_native=m["context_native"], context_max=m["context_max"], thinking=thinking,
        sampling=MappingProxyType(sampling), quality=modes[default_mode].score,
        quality_for=MappingProxyType({k: float(v) for k, v in m.get("quality_for", {}).items()}),
        gguf=sources, quality_modes=MappingProxyType(modes), params_gguf=params_gguf,
        quants=quants, aliases=aliases, notes=tuple(m.get("notes", ())),
        source_file=str(check.file))


def _quality_modes(m: Mapping[str, Any], thinking: Thinking,
                   fail: Callable[[str, str], ConfigError]) -> dict[str, QualityFigure]:
    """The quality figure of every mode the model runs in: `quality_modes`, or one `quality`."""
    needed = {"none": ("non_thinking",), "thinking-only": ("thinking",)}.get(
        thinking.mode, QUALITY_MODES)
    given = m.get("quality_modes")
    if given is None:
        if "quality" not in m:
            raise fail("quality_modes", "missing required key (or give one `quality`)")
        if not 0 <= m["quality"] <= 100:
            raise fail("quality", "must be between 0 and 100")
        return {mode: QualityFigure(mode, float(m["quality"]), "profile figure")
                for mode in needed}
    if "quality" in m:
        raise fail("quality", "give quality_modes or quality, not both")
    for mode in needed:
        if mode not in given:
            raise fail(f"quality_modes.{mode}", f"missing (a {thinking.mode} model runs in "
                                                f"{' and '.join(needed)} mode)")
    for mode in given:
        if mode not in needed:
            raise fail(f"quality_modes.{mode}", f"this {thinking.mode} model has no {mode} mode")
    return {mode: QualityFigure(mode, float(given[mode]["score"]), given[mode]["basis"])
            for mode in needed}


def _build_source(s: Mapping[str, Any], check: _Where, path: str,
                  estimate: Callable[[str, bool], int]) -> GgufSource:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(join(path, key), message)

    repo = s["repo"]
    if not REPO_RE.match(repo):
        raise fail("repo", f"{repo!r} is not owner/name")
    pattern = s["file"]
    split = s.get("split_file") or _default_split(pattern)
    for key, pat, needs in (("file", pattern, ()), ("split_file", split, ("part", "parts"))):
        if not pat.endswith(".gguf"):
            raise fail(key, f"{pat!r} must end in .gguf")
        if "{quant}" not in pat and "{quant_lower}" not in pat:
            raise fail(key, f"{pat!r} has no {{quant}} or {{quant_lower}}")
        if any("{" + n not in pat for n in needs):
            raise fail(key, f"{pat!r} needs {{part:05d}} and {{parts:05d}}")
        try:
            pat.format(quant="Q4_K_M", quant_lower="q4_k_m", part=1, parts=2)
        except (KeyError, IndexError, ValueError) as exc:
            raise fail(key, f"{pat!r}: bad placeholder ({exc})") from None
    revision = s.get("revision")
    if revision is not None and not _REV_RE.match(revision):
        raise fail("revision", f"{revision!r} is not a commit hash")
    if not s["quants"]:
        raise fail("quants", "list at least one quant")
    output_copy = s.get("output_copy", False)
    quants = {}
    for name, q in s["quants"].items():
        if "size" not in q:
            q = {**q, "size": estimate(name, output_copy), "estimated": True}
        quants[name] = _build_quant_file(name, q, repo, pattern, split, revision,
                                         s["confirmed"], check, join(join(path, "quants"),
                                                                      name))
    return GgufSource(repo=repo, file_pattern=pattern, split_pattern=split,
                      confirmed=s["confirmed"], gated=s.get("gated", False), revision=revision,
                      mmproj=s.get("mmproj"), mmproj_size=s.get("mmproj_size"),
                      quants=MappingProxyType(quants), output_copy=output_copy)


def _default_split(pattern: str) -> str:
    return pattern[: -len(".gguf")] + "-{part:05d}-of-{parts:05d}.gguf"


def _build_quant_file(name: str, q: Mapping[str, Any], repo: str, pattern: str, split: str,
                      source_revision: str | None, confirmed: bool, check: _Where,
                      path: str) -> QuantFile:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(join(path, key), message)

    size = q["size"]
    part_sizes = tuple(size) if isinstance(size, list) else None
    total = sum(part_sizes) if part_sizes else size
    parts = q.get("parts", len(part_sizes) if part_sizes else 1)
    if part_sizes and parts != len(part_sizes):
        raise fail("parts", f"is {parts} but size lists {len(part_sizes)} parts")
    if parts < 1:
        raise fail("parts", "must be at least 1")
    if total <= 0 or (part_sizes and min(part_sizes) <= 0):
        raise fail("size", "must be positive")
    estimated = q.get("estimated", False)
    approx = q.get("approx", False)
    if estimated and not approx:
        raise fail("size", "missing: give the file's size, or approx = true to estimate it")
    listed = q.get("listed", False)
    if listed and not approx:
        raise fail("listed", "a listed (rounded) size also needs approx = true")
    sha = q.get("sha256")
    hashes = None
    if sha is not None:
        hashes = (sha,) if isinstance(sha, str) else tuple(sha)
        if len(hashes) != parts:
            raise fail("sha256", f"gives {len(hashes)} hashes for {parts} files")
        for h in hashes:
            if not _SHA_RE.match(h):
                raise fail("sha256", f"{h!r} is not a lower-case hex SHA-256")
        if approx:
            raise fail("sha256", "a hash needs an exact size (approx = true)")
    revision = q.get("revision", source_revision)
    if revision is not None and not _REV_RE.match(revision):
        raise fail("revision", f"{revision!r} is not a commit hash")
    if "files" in q:
        files = tuple(q["files"])
        if len(files) != parts:
            raise fail("files", f"lists {len(files)} files for {parts} parts")
    elif parts == 1:
        files = (pattern.format(quant=name, quant_lower=name.lower()),)
    else:
        files = tuple(split.format(quant=name, quant_lower=name.lower(), part=i, parts=parts)
                      for i in range(1, parts + 1))
    return QuantFile(quant=name, repo=repo, files=files, size_bytes=total, parts=parts,
                     part_sizes=part_sizes, sha256=hashes, approx=approx, listed=listed,
                     revision=revision, confirmed=confirmed)


# --------------------------------------------------------------------------------------------
# Loading


def _signature(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def _toml_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".toml" and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot list: {exc.strerror or exc}") from exc


def load_catalog(extra_dirs: Sequence[Path] | None = None) -> Catalog:
    """The bundled catalog, the user's overlay and any `extra_dirs` (later files win by id)."""
    bundled = bundled_profiles_dir()
    quants_path = bundled / "quants.toml"
    if not quants_path.is_file():
        raise ConfigError(f"{quants_path}: missing (the installation is incomplete)")
    dirs = [bundled / "models", config_dir() / "models", *(Path(d) for d in extra_dirs or ())]
    layers = tuple(tuple(_signature(p) for p in _toml_files(d)) for d in dirs)
    return _assemble(_signature(quants_path), layers)


@lru_cache(maxsize=16)
def _assemble(quants_sig: tuple[str, int, int],
              layers: tuple[tuple[tuple[str, int, int], ...], ...]) -> Catalog:
    table, rule, points, size_rules = _parse_quants_file(*quants_sig)
    names = tuple(sorted(table, key=lambda n: (table[n].bpw, n)))  # ModelSpec.quants order
    order: dict[str, ModelSpec] = {}
    files: list[str] = []
    for layer in layers:
        in_layer: dict[str, str] = {}
        for sig in layer:
            files.append(sig[0])
            for spec in _parse_model_file(*sig, names, size_rules):
                if spec.id in in_layer:
                    raise ConfigError(f"{sig[0]}: model id {spec.id!r} is also defined in "
                                      f"{in_layer[spec.id]}")
                in_layer[spec.id] = sig[0]
                order[spec.id] = spec  # replaces a model from an earlier layer, keeps its place
    models = tuple(order.values())
    return Catalog(all_models=models, quant_table=table, small_model_rule=rule,
                   qwen_kld=points, files=tuple(files), size_rules=size_rules,
                   _by_key=_index(models), _by_repo=_repo_index(models))


def _repo_index(models: tuple[ModelSpec, ...]) -> Mapping[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for m in models:
        index.setdefault(m.hf_repo.lower(), m)
        for source in m.gguf:
            index.setdefault(source.repo.lower(), m)
    return MappingProxyType(index)


def _index(models: tuple[ModelSpec, ...]) -> Mapping[str, ModelSpec]:
    """Ids first, then aliases that no id or earlier alias has taken."""
    index = {m.id: m for m in models}
    for m in models:
        for alias in m.aliases:
            index.setdefault(alias, m)
    return MappingProxyType(index)


def clear_cache() -> None:
    """Forget parsed files (tests measure a cold load with this)."""
    _assemble.cache_clear()
    _parse_model_file.cache_clear()
    _parse_quants_file.cache_clear()


# --------------------------------------------------------------------------------------------
# Catalog references


def nearest_models(catalog: Catalog, text: str, n: int = 4) -> tuple[str, ...]:
    """Ids that look like `text` (ids and display names compared), best first."""
    import difflib

    key = text.strip().lower()
    names: dict[str, str] = {}
    for m in catalog.all_models:
        names.setdefault(m.id, m.id)
        names.setdefault(m.name.lower(), m.id)
    found: dict[str, None] = {}
    for match in difflib.get_close_matches(key, list(names), n=n * 2, cutoff=0.6):
        found.setdefault(names[match], None)
    return tuple(found)[:n]


def _unknown_model(catalog: Catalog, text: str) -> UsageError:
    near = nearest_models(catalog, text)
    tip = f"; nearest: {', '.join(near)}" if near else ""
    return UsageError(f"unknown model {text.strip()!r}{tip}",
                      hint="`qwen recommend` lists what fits this machine")


def resolve_catalog_ref(catalog: Catalog, ref: CatalogRef | str) -> tuple[ModelSpec,
                                                                           str | None]:
    """The model and (validated, upper-case) quant a catalog reference names."""
    if isinstance(ref, str):
        parsed = parse_ref(ref)
        if not isinstance(parsed, CatalogRef):
            raise UsageError(f"{ref!r} is not a catalog model name")
        ref = parsed
    spec = catalog.get(ref.id)
    if ref.quant is None:
        return spec, None
    quant = normalize_quant(ref.quant)
    if quant not in spec.quants:
        raise _unknown_quant(spec, quant)
    return spec, quant


def _unknown_quant(spec: ModelSpec, quant: str) -> UsageError:
    return UsageError(f"{spec.id} has no quant {quant!r}; available: {', '.join(spec.quants)}",
                      hint=f"e.g. `{spec.id}:{spec.quants[0].lower()}`")


def quant_file(spec: ModelSpec, quant: str) -> QuantFile:
    """Where to get one quant: the first source (official first, then fallbacks) offering it."""
    name = normalize_quant(quant)
    for source in spec.gguf:
        found = source.quants.get(name)
        if found is not None:
            return found
    raise _unknown_quant(spec, name)


__all__ = [
    "ARCHITECTURES",
    "PRESET_NAMES",
    "QUALITY_MODES",
    "THINKING_MODES",
    "THINKING_SWITCHES",
    "USE_CASES",
    "Catalog",
    "Experts",
    "GgufSource",
    "LinearAttention",
    "ModelSpec",
    "QualityFigure",
    "QuantFile",
    "QuantInfo",
    "QwenKld",
    "SamplingPreset",
    "SizeRules",
    "SmallModelRule",
    "Thinking",
    "clear_cache",
    "estimate_size",
    "load_catalog",
    "nearest_models",
    "quant_file",
    "resolve_catalog_ref",
]
