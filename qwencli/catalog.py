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
      quality (0-100), quality_for? {<use> = score}
      [[models.gguf]]  repo, file ("…-{quant}.gguf" or "{quant_lower}"), split_file?
                       (default: file + "-{part:05d}-of-{parts:05d}"), confirmed, gated?,
                       revision?, mmproj?, mmproj_size?
        quants.<QUANT> = { size = int | [per-part ints], approx?, listed?, parts?,
                           sha256? (str | [per part]), revision?, files? }

Quant names must be keys of `profiles/quants.toml`, which also holds bits per weight and the
(Llama-measured) quality loss of each quant type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from qwencli.errors import ConfigError, UsageError
from qwencli.paths import bundled_profiles_dir, config_dir
from qwencli.refs import ID_RE, REPO_RE, CatalogRef, normalize_quant, parse_ref

SCHEMA_VERSION = 1

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
    quality: float
    quality_for: Mapping[str, float]
    gguf: tuple[GgufSource, ...]
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

    def quant_info(self, name: str) -> QuantInfo:
        info = self.quant_table.get(normalize_quant(name))
        if info is None:
            raise UsageError(f"unknown quant {name!r}; known: {', '.join(self.quant_table)}")
        return info


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class _F:
    """One key of the schema: its kind, whether it is required, and nested keys for tables."""

    kind: str  # str int number bool date strs table tables map int|ints str|strs
    required: bool = False
    sub: Mapping[str, _F] | None = None
    choices: tuple[str, ...] | None = None


_KIND_WORDS = {
    "str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "date": "a date (YYYY-MM-DD, unquoted)", "strs": "a list of strings", "table": "a table",
    "tables": "an array of tables", "map": "a table",
    "int|ints": "an integer or a list of integers",
    "str|strs": "a string or a list of strings",
}

_PRESET = {k: _F("number") for k in ("temperature", "top_p", "min_p", "presence_penalty",
                                     "repetition_penalty")} | {"top_k": _F("int")}

_QUANT_FILE = {
    "size": _F("int|ints", required=True),
    "approx": _F("bool"),
    "listed": _F("bool"),
    "parts": _F("int"),
    "sha256": _F("str|strs"),
    "revision": _F("str"),
    "files": _F("strs"),
}

_SOURCE = {
    "repo": _F("str", required=True),
    "file": _F("str", required=True),
    "split_file": _F("str"),
    "confirmed": _F("bool", required=True),
    "gated": _F("bool"),
    "revision": _F("str"),
    "mmproj": _F("str"),
    "mmproj_size": _F("int"),
    "quants": _F("map", required=True, sub=_QUANT_FILE),  # keys checked against quants.toml
}

_MODEL = {
    "id": _F("str", required=True),
    "name": _F("str", required=True),
    "released": _F("date", required=True),
    "license": _F("str", required=True),
    "hf_repo": _F("str", required=True),
    "arch": _F("str", required=True, choices=ARCHITECTURES),
    "use": _F("strs", required=True, choices=USE_CASES),
    "aliases": _F("strs"),
    "notes": _F("strs"),
    "params_total": _F("int", required=True),
    "params_active": _F("int"),
    "n_layers": _F("int", required=True),
    "gguf_block_count": _F("int"),
    "mtp_layers": _F("int"),
    "hidden_size": _F("int", required=True),
    "n_heads": _F("int", required=True),
    "n_kv_heads": _F("int", required=True),
    "head_dim": _F("int", required=True),
    "head_dim_v": _F("int"),
    "full_attention_interval": _F("int"),
    "linear_attention": _F("table", sub={
        "v_heads": _F("int", required=True), "qk_heads": _F("int", required=True),
        "head_dim": _F("int", required=True), "conv_kernel": _F("int")}),
    "vocab_size": _F("int", required=True),
    "tie_embeddings": _F("bool", required=True),
    "ffn_size": _F("int"),
    "experts": _F("table", sub={
        "total": _F("int", required=True), "active": _F("int", required=True),
        "shared": _F("int", required=True), "ffn_size": _F("int", required=True)}),
    "context_native": _F("int", required=True),
    "context_max": _F("int", required=True),
    "thinking": _F("table", required=True, sub={
        "mode": _F("str", required=True, choices=THINKING_MODES),
        "switch": _F("strs", required=True, choices=THINKING_SWITCHES),
        "default_on": _F("bool", required=True)}),
    "sampling": _F("map", required=True, sub=_PRESET, choices=PRESET_NAMES),
    "quality": _F("number", required=True),
    "quality_for": _F("map", sub=None, choices=USE_CASES),  # values: numbers
    "gguf": _F("tables", required=True, sub=_SOURCE),
}

_MODEL_FILE = {
    "schema": _F("int", required=True),
    "family": _F("str", required=True),
    "family_name": _F("str", required=True),
    "defaults": _F("table", sub=_MODEL),  # checked without `required`
    "models": _F("tables", required=True, sub=_MODEL),
}

_QUANT_ENTRY = {
    "bits": _F("int", required=True),
    "bpw": _F("number", required=True),
    "kld": _F("number"),
    "kld_imatrix": _F("number"),
    "delta_ppl": _F("number"),
    "delta_ppl_pct_70b": _F("number"),
    "loss_assumed": _F("bool"),
}

_QUANTS_FILE = {
    "schema": _F("int", required=True),
    "quants": _F("map", required=True, sub=_QUANT_ENTRY),
    "small_models": _F("table", required=True, sub={
        "max_params": _F("int", required=True), "min_bits": _F("int", required=True),
        "prefer": _F("strs", required=True)}),
    "qwen_kld": _F("tables", sub={
        "model": _F("str", required=True), "quant": _F("str", required=True),
        "kld": _F("number", required=True), "top1": _F("number")}),
}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "date":
        return isinstance(value, date) and not hasattr(value, "hour")
    if kind == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind in ("table", "map"):
        return isinstance(value, dict)
    if kind == "tables":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == "int|ints":
        return _is_kind(value, "int") or (
            isinstance(value, list) and bool(value) and all(_is_kind(v, "int") for v in value))
    if kind == "str|strs":
        return isinstance(value, str) or _is_kind(value, "strs")
    raise AssertionError(kind)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Checker:
    """Walks a parsed TOML document against a schema, naming the file and key path on error."""

    def __init__(self, file: Path, quant_names: Iterable[str] = ()) -> None:
        self.file = file
        self.quant_names = tuple(quant_names)

    def fail(self, path: str, message: str) -> ConfigError:
        where = f"{self.file}: {path}" if path else str(self.file)
        return ConfigError(f"{where}: {message}",
                           hint="fix the file, or move it out of the models/ directory")

    def table(self, data: Mapping[str, Any], spec: Mapping[str, _F], path: str,
              required: bool = True) -> None:
        for key, value in data.items():
            f = spec.get(key)
            if f is None:
                raise self.fail(_join(path, key), "unknown key" + _did_you_mean(key, spec))
            self.value(value, f, _join(path, key), required)
        if required:
            for key, f in spec.items():
                if f.required and key not in data:
                    raise self.fail(_join(path, key), "missing required key")

    def required(self, data: Mapping[str, Any], spec: Mapping[str, _F], path: str) -> None:
        """Required keys only, recursively (for entries merged from already-checked parts)."""
        for key, f in spec.items():
            if key not in data:
                if f.required:
                    raise self.fail(_join(path, key), "missing required key")
                continue
            if f.sub is None:
                continue
            value = data[key]
            if f.kind == "table":
                self.required(value, f.sub, _join(path, key))
            elif f.kind == "tables":
                for i, item in enumerate(value):
                    self.required(item, f.sub, _join(_join(path, key), i))
            elif f.kind == "map":
                for name, item in value.items():
                    self.required(item, f.sub, _join(_join(path, key), name))

    def value(self, value: Any, f: _F, path: str, required: bool = True) -> None:
        if not _is_kind(value, f.kind):
            raise self.fail(path, f"expected {_KIND_WORDS[f.kind]}, got {_toml_type(value)}")
        if f.kind == "str" and f.choices and value not in f.choices:
            raise self.fail(path, f"unknown value {value!r}; expected one of "
                                  f"{', '.join(f.choices)}")
        if f.kind == "strs" and f.choices:
            for i, item in enumerate(value):
                if item not in f.choices:
                    raise self.fail(_join(path, i), f"unknown value {item!r}; expected one of "
                                                    f"{', '.join(f.choices)}")
        if f.kind == "table" and f.sub is not None:
            self.table(value, f.sub, path, required)
        elif f.kind == "tables" and f.sub is not None:
            for i, item in enumerate(value):
                self.table(item, f.sub, _join(path, i), required)
        elif f.kind == "map":
            self.mapping(value, f, path, required)

    def mapping(self, value: Mapping[str, Any], f: _F, path: str, required: bool) -> None:
        choices = f.choices if f.choices is not None else (
            self.quant_names if f.sub is _QUANT_FILE else None)
        for key, item in value.items():
            sub_path = _join(path, key)
            if choices is not None and key not in choices:
                what = "quant" if f.sub is _QUANT_FILE else "key"
                tip = _did_you_mean(key.upper() if what == "quant" else key, choices)
                raise self.fail(sub_path, f"unknown {what}{tip}")
            if f.sub is None:
                if not _is_kind(item, "number"):
                    raise self.fail(sub_path, f"expected a number, got {_toml_type(item)}")
            elif not isinstance(item, dict):
                raise self.fail(sub_path, f"expected a table, got {_toml_type(item)}")
            else:
                self.table(item, f.sub, sub_path, required)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    import difflib  # only on the error path: keeps start-up lean

    near = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date):
        return "a date/time"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Reading files


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line N, column M)"
        raise ConfigError(f"{path}: invalid TOML: {exc}",
                          hint="fix the syntax, or move the file out of the models/ directory"
                          ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc


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
        Mapping[str, QuantInfo], SmallModelRule, tuple[QwenKld, ...]]:
    file = Path(path)
    data = _read_toml(file)
    check = _Checker(file)
    check.table(data, _QUANTS_FILE, "")
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
    return MappingProxyType(table), rule, tuple(points)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@lru_cache(maxsize=256)
def _parse_model_file(path: str, _mtime: int, _size: int,
                      quant_names: tuple[str, ...]) -> tuple[ModelSpec, ...]:
    file = Path(path)
    data = _read_toml(file)
    check = _Checker(file, quant_names)
    for key, value in data.items():
        f = _MODEL_FILE.get(key)
        if f is None:
            raise check.fail(key, "unknown key" + _did_you_mean(key, _MODEL_FILE))
        if key != "models":  # [defaults] is a partial model: types checked, nothing required
            check.value(value, f, key, required=False)
    for key in ("schema", "family", "family_name", "models"):
        if key not in data:
            raise check.fail(key, "missing required key")
    if data["schema"] != SCHEMA_VERSION:
        raise check.fail("schema", f"unsupported schema {data['schema']}; expected "
                                   f"{SCHEMA_VERSION}")
    if not _is_kind(data["models"], "tables"):
        raise check.fail("models", f"expected an array of tables ([[models]]), got "
                                   f"{_toml_type(data['models'])}")
    defaults = data.get("defaults", {})
    specs = []
    for i, raw in enumerate(data["models"]):
        path_i = f"models[{i}]"
        check.table(raw, _MODEL, path_i, required=False)  # errors name the model's own keys
        merged = _merge(defaults, raw)
        check.required(merged, _MODEL, path_i)  # types were checked in raw and [defaults]
        specs.append(_build_model(merged, check, path_i, data["family"], data["family_name"]))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise check.fail(f"models[{i}].id", f"duplicate id {spec.id!r} (also models"
                                                f"[{seen[spec.id]}])")
        seen[spec.id] = i
    return tuple(specs)


def _build_model(m: Mapping[str, Any], check: _Checker, path: str, family: str,
                 family_name: str) -> ModelSpec:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(_join(path, key), message)

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
    if not 0 <= m["quality"] <= 100:
        raise fail("quality", "must be between 0 and 100")
    t = m["thinking"]
    thinking = Thinking(t["mode"], tuple(t["switch"]), t["default_on"])
    if thinking.mode == "none" and thinking.default_on:
        raise fail("thinking.default_on", "is true but mode is 'none'")
    if not m["sampling"]:
        raise fail("sampling", "give at least one preset")
    sampling = {name: SamplingPreset(**{k: v for k, v in p.items()})
                for name, p in m["sampling"].items()}
    if not m["gguf"]:
        raise fail("gguf", "list at least one GGUF source")
    sources = tuple(_build_source(s, check, _join(_join(path, "gguf"), i))
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
        sampling=MappingProxyType(sampling), quality=float(m["quality"]),
        quality_for=MappingProxyType({k: float(v) for k, v in m.get("quality_for", {}).items()}),
        gguf=sources, quants=quants, aliases=aliases, notes=tuple(m.get("notes", ())),
        source_file=str(check.file))


def _build_source(s: Mapping[str, Any], check: _Checker, path: str) -> GgufSource:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(_join(path, key), message)

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
    quants = {}
    for name, q in s["quants"].items():
        quants[name] = _build_quant_file(name, q, repo, pattern, split, revision,
                                         s["confirmed"], check, _join(_join(path, "quants"),
                                                                      name))
    return GgufSource(repo=repo, file_pattern=pattern, split_pattern=split,
                      confirmed=s["confirmed"], gated=s.get("gated", False), revision=revision,
                      mmproj=s.get("mmproj"), mmproj_size=s.get("mmproj_size"),
                      quants=MappingProxyType(quants))


def _default_split(pattern: str) -> str:
    return pattern[: -len(".gguf")] + "-{part:05d}-of-{parts:05d}.gguf"


def _build_quant_file(name: str, q: Mapping[str, Any], repo: str, pattern: str, split: str,
                      source_revision: str | None, confirmed: bool, check: _Checker,
                      path: str) -> QuantFile:
    def fail(key: str, message: str) -> ConfigError:
        return check.fail(_join(path, key), message)

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
    approx = q.get("approx", False)
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
    table, rule, points = _parse_quants_file(*quants_sig)
    names = tuple(sorted(table, key=lambda n: (table[n].bpw, n)))  # ModelSpec.quants order
    order: dict[str, ModelSpec] = {}
    files: list[str] = []
    for layer in layers:
        in_layer: dict[str, str] = {}
        for sig in layer:
            files.append(sig[0])
            for spec in _parse_model_file(*sig, names):
                if spec.id in in_layer:
                    raise ConfigError(f"{sig[0]}: model id {spec.id!r} is also defined in "
                                      f"{in_layer[spec.id]}")
                in_layer[spec.id] = sig[0]
                order[spec.id] = spec  # replaces a model from an earlier layer, keeps its place
    models = tuple(order.values())
    return Catalog(all_models=models, quant_table=table, small_model_rule=rule,
                   qwen_kld=points, files=tuple(files), _by_key=_index(models),
                   _by_repo=_repo_index(models))


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
    "ARCHITECTURES", "PRESET_NAMES", "THINKING_MODES", "THINKING_SWITCHES", "USE_CASES",
    "Catalog", "Experts", "GgufSource", "LinearAttention", "ModelSpec", "QuantFile", "QuantInfo",
    "QwenKld", "SamplingPreset", "SmallModelRule", "Thinking", "clear_cache", "load_catalog",
    "nearest_models", "quant_file", "resolve_catalog_ref",
]
