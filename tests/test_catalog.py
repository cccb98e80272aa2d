"""The model catalog: bundled data, schema errors, user overlays and MODEL reference parsing."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest

from qwencli import catalog as cat_mod
from qwencli.catalog import (
    ARCHITECTURES,
    USE_CASES,
    Catalog,
    clear_cache,
    load_catalog,
    quant_file,
    resolve_catalog_ref,
)
from qwencli.errors import ConfigError, UsageError
from qwencli.paths import bundled_profiles_dir, config_dir
from qwencli.refs import CatalogRef, HubRef, LocalRef, parse_ref

DATA = Path(__file__).parent / "data" / "catalog"
TINY = (DATA / "tiny.toml").read_text(encoding="utf-8")

# The lineup the catalog must carry (the selection-matrix issue).
EXPECTED_IDS = [
    *(f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")),
    *(f"qwen2.5-coder-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b")),
    *(f"qwen2.5-math-{s}" for s in ("1.5b", "7b", "72b")),
    *(f"qwen3-{s}" for s in ("0.6b", "1.7b", "4b", "8b", "14b", "32b", "30b-a3b", "235b-a22b")),
    "qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507", "qwen3-30b-a3b-instruct-2507",
    "qwen3-30b-a3b-thinking-2507", "qwen3-coder-30b-a3b-instruct", "qwen3-next-80b-a3b-instruct",
    *(f"qwen3.5-{s}" for s in ("0.8b", "2b", "4b", "9b", "27b", "35b-a3b", "122b-a10b")),
    "qwen3.6-27b", "qwen3.6-35b-a3b", "qwen3.8-27b",
]

# f16 KV cache per token in KiB, qwen-catalog.md §1a/§1c/§1d/§1e (column "KV/tok f16").
REFERENCE_KV_KIB = {
    "qwen2.5-0.5b": 12, "qwen2.5-1.5b": 28, "qwen2.5-3b": 36, "qwen2.5-7b": 56,
    "qwen2.5-14b": 192, "qwen2.5-32b": 256, "qwen2.5-72b": 320,
    "qwen3-0.6b": 112, "qwen3-1.7b": 112, "qwen3-4b": 144, "qwen3-8b": 144, "qwen3-14b": 160,
    "qwen3-32b": 256, "qwen3-30b-a3b": 96, "qwen3-235b-a22b": 188,
    "qwen3-4b-instruct-2507": 144, "qwen3-30b-a3b-instruct-2507": 96,
    "qwen3.5-0.8b": 12, "qwen3.5-2b": 12, "qwen3.5-4b": 32, "qwen3.5-9b": 32, "qwen3.5-27b": 64,
    "qwen3.5-35b-a3b": 20, "qwen3.5-122b-a10b": 24,
    "qwen3-next-80b-a3b-instruct": 24,  # §1d: 12 full-attention layers -> 24 KiB/token
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The bundled catalog (no user overlay: conftest points the config dir at a temp dir)."""
    return load_catalog()


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# The bundled data


def test_bundled_catalog_has_the_lineup(catalog: Catalog) -> None:
    ids = [m.id for m in catalog.models()]
    assert sorted(ids) == sorted(EXPECTED_IDS)
    assert len(set(ids)) == len(ids)
    families = {m.family for m in catalog.models()}
    assert families == {"qwen2.5", "qwen2.5-coder", "qwen2.5-math", "qwen3", "qwen3-2507",
                        "qwen3-coder", "qwen3-next", "qwen3.5", "qwen3.6", "qwen3.8"}


@pytest.mark.parametrize("model_id", EXPECTED_IDS)
def test_every_model_has_the_required_fields(catalog: Catalog, model_id: str) -> None:
    m = catalog.get(model_id)
    assert m.name and m.hf_repo.count("/") == 1 and m.license
    assert m.arch in ARCHITECTURES
    assert isinstance(m.released, date) and date(2024, 9, 1) <= m.released <= date(2026, 11, 30)
    assert m.use and set(m.use) <= set(USE_CASES)
    assert m.params_total > 0 and m.n_layers > 0 and m.hidden_size > 0
    assert m.n_heads % m.n_kv_heads == 0
    assert m.vocab_size in (151_936, 152_064, 248_320)
    assert m.context_max >= m.context_native >= 4096
    assert m.thinking.mode in ("hybrid", "thinking-only", "none")
    assert m.sampling and all(p.temperature is not None for p in m.sampling.values())
    assert 0 < m.quality <= 100
    assert m.gguf and m.quants
    assert (m.experts is None) == (m.params_active is None) == (m.ffn_size is not None)
    assert (m.arch.endswith("moe") or m.arch == "qwen3next") == m.is_moe
    if m.thinking.mode == "hybrid":
        assert "enable_thinking" in m.thinking.switch
        assert {"thinking", "non_thinking"} <= set(m.sampling)
    if m.thinking.mode == "none":
        assert not m.thinking.default_on and set(m.sampling) == {"non_thinking"}


def test_every_quant_size_is_positive_and_files_match_parts(catalog: Catalog) -> None:
    for m in catalog.models():
        for source in m.gguf:
            for name, qf in source.quants.items():
                assert qf.size_bytes > 0, (m.id, source.repo, name)
                assert qf.quant == name and qf.repo == source.repo
                assert len(qf.files) == qf.parts >= 1
                assert all(f.endswith(".gguf") for f in qf.files)
                assert len(set(qf.files)) == qf.parts
                if qf.parts > 1:
                    assert qf.files[0].endswith(f"-00001-of-{qf.parts:05d}.gguf")
                if qf.part_sizes:
                    assert sum(qf.part_sizes) == qf.size_bytes
                if qf.sha256:
                    assert not qf.approx and len(qf.sha256) == qf.parts


def test_estimated_sizes_are_the_measured_rule(catalog: Catalog) -> None:
    """A quant without a size in its profile is sized by estimate_size from the measured
    bits per weight (tests/test_catalog_reference.py holds the rule to the real files)."""
    checked = 0
    for m in catalog.models():
        for source in m.gguf:
            for name, qf in source.quants.items():
                if not qf.approx or qf.listed:
                    continue
                rule = cat_mod.estimate_size(
                    catalog.size_rules, arch=m.arch, quant=name, params=m.params_gguf,
                    vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                    output_copy=source.output_copy)
                if qf.size_bytes != rule:  # a copy of the same model's exact file elsewhere
                    assert abs(qf.size_bytes / rule - 1) < 0.08, (m.id, source.repo, name)
                checked += 1
    assert checked > 100


def test_sizes_grow_with_bits_per_weight_within_a_source(catalog: Catalog) -> None:
    """Standard quants of one repo are ordered by size, so a smaller quant is never bigger."""
    for m in catalog.models():
        for source in m.gguf:
            standard = [q for q in source.quants.values() if not q.quant.startswith("UD-")]
            standard.sort(key=lambda q: catalog.quant_info(q.quant).bpw)
            sizes = [q.size_bytes for q in standard]
            assert sizes == sorted(sizes), (m.id, source.repo, [q.quant for q in standard])


def test_exact_sizes_from_the_reference(catalog: Catalog) -> None:
    q = quant_file(catalog.get("qwen3-8b"), "Q4_K_M")
    assert (q.repo, q.files, q.size_bytes, q.approx) == (
        "Qwen/Qwen3-8B-GGUF", ("Qwen3-8B-Q4_K_M.gguf",), 5_027_783_488, False)
    assert q.sha256 == ("d98cdcbd03e17ce47681435b5150e34c1417f50b5c0019dd560e4882c5745785",)
    assert q.revision == "212c964b"

    q = quant_file(catalog.get("qwen2.5-7b"), "q4_k_m")
    assert q.repo == "Qwen/Qwen2.5-7B-Instruct-GGUF"
    assert q.parts == 2 and q.size_bytes == 4_683_073_632
    assert q.part_sizes == (3_993_201_344, 689_872_288)
    assert q.files == ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
                       "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf")
    assert q.filename == q.files[0]

    q = quant_file(catalog.get("qwen3-235b-a22b"), "Q4_K_M")
    assert q.parts == 5 and q.size_bytes == 142_154_074_176
    assert q.files[0] == "Q4_K_M/Qwen3-235B-A22B-Q4_K_M-00001-of-00005.gguf"

    exact = {
        ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M"): 491_400_032,
        ("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Q4_K_M"): 1_117_320_736,
        ("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct-GGUF", "Q4_K_M"): 2_104_932_768,
        ("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "Q4_K_M"): 1_117_320_768,
        ("qwen2.5-7b", "bartowski/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M"): 4_683_074_240,
        ("qwen2.5-14b", "bartowski/Qwen2.5-14B-Instruct-GGUF", "Q4_K_M"): 8_988_110_976,
        ("qwen2.5-32b", "bartowski/Qwen2.5-32B-Instruct-GGUF", "Q4_K_M"): 19_851_336_576,
        ("qwen2.5-72b", "bartowski/Qwen2.5-72B-Instruct-GGUF", "Q4_K_M"): 47_415_715_488,
        ("qwen3-0.6b", "Qwen/Qwen3-0.6B-GGUF", "Q8_0"): 639_446_688,
        ("qwen3-0.6b", "unsloth/Qwen3-0.6B-GGUF", "Q4_K_M"): 396_705_472,
        ("qwen3-1.7b", "Qwen/Qwen3-1.7B-GGUF", "Q8_0"): 1_834_426_016,
        ("qwen3-1.7b", "unsloth/Qwen3-1.7B-GGUF", "Q4_K_M"): 1_107_409_472,
        ("qwen3-1.7b", "unsloth/Qwen3-1.7B-GGUF", "Q8_0"): 1_834_426_944,
        ("qwen3-4b", "Qwen/Qwen3-4B-GGUF", "Q4_K_M"): 2_497_280_256,
        ("qwen3-14b", "Qwen/Qwen3-14B-GGUF", "Q4_K_M"): 9_001_752_960,
        ("qwen3-32b", "Qwen/Qwen3-32B-GGUF", "Q4_K_M"): 19_762_149_024,
        ("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B-GGUF", "Q4_K_M"): 18_556_685_824,
        ("qwen3-4b-instruct-2507", "unsloth/Qwen3-4B-Instruct-2507-GGUF", "Q4_K_M"): 2_497_281_120,
        ("qwen3-4b-instruct-2507", "unsloth/Qwen3-4B-Instruct-2507-GGUF", "Q6_K"): 3_306_261_600,
        ("qwen3.8-27b", "unsloth/Qwen3.8-27B-GGUF", "UD-Q4_K_M"): 16_464_440_224,
        ("qwen3.8-27b", "bartowski/Qwen_Qwen3.8-27B-GGUF", "Q4_K_M"): 17_772_537_440,
    }
    for (model_id, repo, quant), size in exact.items():
        source = next(s for s in catalog.get(model_id).gguf if s.repo == repo)
        qf = source.quants[quant]
        assert (qf.size_bytes, qf.approx) == (size, False), (model_id, repo, quant)


def test_fallback_rule_takes_the_first_repo_offering_a_quant(catalog: Catalog) -> None:
    small = catalog.get("qwen3-0.6b")
    assert [s.repo for s in small.gguf] == ["Qwen/Qwen3-0.6B-GGUF", "unsloth/Qwen3-0.6B-GGUF"]
    assert list(small.gguf[0].quants) == ["Q8_0"]  # the official repo holds Q8_0 only
    assert quant_file(small, "Q8_0").repo == "Qwen/Qwen3-0.6B-GGUF"
    assert quant_file(small, "Q4_K_M").repo == "unsloth/Qwen3-0.6B-GGUF"
    assert quant_file(catalog.get("qwen3-8b"), "Q2_K").repo == "unsloth/Qwen3-8B-GGUF"
    # The official 4B-Instruct-2507 repo answers 401: unsloth is listed first, the gated one last.
    gated = catalog.get("qwen3-4b-instruct-2507")
    assert quant_file(gated, "Q4_K_M").repo == "unsloth/Qwen3-4B-Instruct-2507-GGUF"
    assert gated.gguf[-1].gated and gated.gguf[-1].official
    # No official GGUF for Qwen3.5/3.6/3.8.
    for model_id in ("qwen3.5-9b", "qwen3.6-27b", "qwen3.8-27b"):
        assert not any(s.official for s in catalog.get(model_id).gguf)
    assert quant_file(catalog.get("qwen3.8-27b"), "Q4_K_M").repo.startswith("bartowski/")
    with pytest.raises(UsageError, match="no quant 'Q4_K_S'"):
        quant_file(catalog.get("qwen3-8b"), "q4_k_s")


def test_hybrid_models_cache_every_fourth_layer(catalog: Catalog) -> None:
    hybrids = [m for m in catalog.models() if m.arch in ("qwen35", "qwen35moe", "qwen3next")]
    assert len(hybrids) == 11
    for m in hybrids:
        assert m.full_attention_interval == 4 and m.is_hybrid
        assert m.kv_layers == m.n_layers // 4
        assert m.kv_layer_indices == tuple(range(3, m.n_layers, 4))
        assert m.linear_attention is not None and m.linear_attention.head_dim == 128
        assert m.head_dim_k == m.head_dim_v == 256
    for m in catalog.models():
        if m.arch not in ("qwen35", "qwen35moe", "qwen3next"):
            assert m.kv_layers == m.n_layers and not m.is_hybrid
    q38 = catalog.get("qwen3.8-27b")
    assert (q38.n_layers, q38.gguf_block_count, q38.mtp_layers, q38.kv_layers) == (64, 65, 1, 16)
    assert catalog.get("qwen3.5-27b").gguf_block_count == 64


@pytest.mark.parametrize(("model_id", "kib"), sorted(REFERENCE_KV_KIB.items()))
def test_kv_cache_per_token_matches_the_reference(catalog: Catalog, model_id: str,
                                                  kib: int) -> None:
    assert catalog.get(model_id).kv_bytes_per_token() == kib * 1024


def test_moe_shapes(catalog: Catalog) -> None:
    m = catalog.get("qwen3-30b-a3b")
    assert m.experts is not None
    assert (m.experts.total, m.experts.active, m.experts.shared, m.experts.ffn_size) == (
        128, 8, 0, 768)
    assert m.params_active == 3_300_000_000
    assert math.isclose(m.effective_params, math.sqrt(30.5e9 * 3.3e9))
    m = catalog.get("qwen3.5-35b-a3b")
    assert m.experts is not None and (m.experts.total, m.experts.shared) == (256, 1)


def test_sampling_presets_and_thinking(catalog: Catalog) -> None:
    q3 = catalog.get("qwen3-8b")
    assert (q3.sampling["thinking"].temperature, q3.sampling["thinking"].top_p) == (0.6, 0.95)
    assert q3.sampling["non_thinking"].temperature == 0.7
    assert q3.thinking.switch == ("enable_thinking", "soft-switch") and q3.thinking.default_on
    q25 = catalog.get("qwen2.5-7b")
    assert q25.sampling["non_thinking"].repetition_penalty == 1.05
    assert q25.preset(thinking=True) is q25.sampling["non_thinking"]  # only one mode exists
    q35 = catalog.get("qwen3.5-9b")
    assert q35.sampling["thinking"].presence_penalty == 1.5
    assert q35.sampling["thinking_code"].temperature == 0.6
    assert "soft-switch" not in q35.thinking.switch
    think = catalog.get("qwen3-30b-a3b-thinking-2507")
    assert think.thinking.mode == "thinking-only" and set(think.sampling) == {"thinking"}
    assert catalog.get("qwen3-30b-a3b-instruct-2507").thinking.mode == "none"
    assert "reasoning_effort" in catalog.get("qwen3.8-27b").thinking.switch


def test_use_case_filter(catalog: Catalog) -> None:
    code = {m.id for m in catalog.models(use="code")}
    assert {"qwen2.5-coder-7b", "qwen2.5-coder-32b", "qwen3-coder-30b-a3b-instruct"} <= code
    assert "qwen2.5-7b" not in code and "qwen2.5-math-7b" not in code
    math_ids = {m.id for m in catalog.models(use="math")}
    assert {"qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen2.5-math-72b"} <= math_ids
    vision = {m.id for m in catalog.models(use="vision")}
    assert "qwen3.5-9b" in vision and "qwen3-8b" not in vision
    assert len(catalog.models()) == len(EXPECTED_IDS)
    with pytest.raises(UsageError, match="unknown use 'poetry'"):
        catalog.models(use="poetry")


def test_quality_prior_is_consistent(catalog: Catalog) -> None:
    q = {m.id: m.quality for m in catalog.models()}
    # Newer generations score higher at the same size.
    assert q["qwen2.5-7b"] < q["qwen3-8b"] < q["qwen3.5-9b"]
    assert q["qwen3.5-27b"] < q["qwen3.6-27b"] < q["qwen3.8-27b"]
    assert q["qwen3-4b"] < q["qwen3-4b-thinking-2507"] and q["qwen3-4b"] < q["qwen3.5-4b"]
    assert q["qwen3-30b-a3b"] < q["qwen3-30b-a3b-thinking-2507"]
    # Bigger scores higher within a family.
    for family in ("qwen2.5", "qwen3", "qwen3.5"):
        dense = sorted((m for m in catalog.models() if m.family == family and not m.is_moe),
                       key=lambda m: m.params_total)
        assert [m.quality for m in dense] == sorted(m.quality for m in dense), family
    # Specialists win at their speciality, not at chat.
    coder = catalog.get("qwen2.5-coder-7b")
    assert coder.quality_for_use("code") > q["qwen2.5-7b"] > coder.quality_for_use("chat")
    assert catalog.get("qwen2.5-math-7b").quality_for_use("math") > q["qwen2.5-7b"]
    assert catalog.get("qwen3-8b").quality_for_use("code") == q["qwen3-8b"]


def test_quant_table(catalog: Catalog) -> None:
    info = catalog.quant_info("q4_k_m")
    assert (info.name, info.bits, info.bpw) == ("Q4_K_M", 4, 4.89)
    assert (info.kld, info.kld_imatrix) == (0.03127, 0.02815)
    assert catalog.quant_info("Q8_0").kld == 0.00136
    assert catalog.quant_info("UD-Q4_K_XL").loss_assumed
    with pytest.raises(UsageError, match="unknown quant 'Q9_X'"):
        catalog.quant_info("Q9_X")
    rule = catalog.small_model_rule
    assert (rule.max_params, rule.min_bits, rule.prefer) == (2_000_000_000, 4, ("Q8_0", "Q6_K"))
    assert rule.applies(catalog.get("qwen3-0.6b").params_total)
    assert not rule.applies(catalog.get("qwen3-4b").params_total)
    points = {(p.model, p.quant): p.kld for p in catalog.qwen_kld}
    assert points[("qwen3-0.6b", "Q2_K")] == 2.455
    # ModelSpec.quants runs from the fewest bits per weight to the most.
    bpws = [catalog.quant_info(n).bpw for n in catalog.get("qwen3-8b").quants]
    assert bpws == sorted(bpws)


def test_lookup_by_alias_and_repo(catalog: Catalog) -> None:
    assert catalog.get("Qwen2.5-7B-Instruct").id == "qwen2.5-7b"
    assert catalog.get("QWEN3-8B").id == "qwen3-8b"
    assert catalog.get("qwen3-coder-flash").id == "qwen3-coder-30b-a3b-instruct"
    for repo in ("qwen/qwen3-8b-gguf", "unsloth/Qwen3-8B-GGUF", "Qwen/Qwen3-8B"):
        spec = catalog.by_repo(repo)
        assert spec is not None and spec.id == "qwen3-8b"
    assert catalog.by_repo("someone/else-GGUF") is None
    # Specs can be dict keys and set members (recommend caches plans per spec).
    assert len({catalog.get("qwen3-8b"), catalog.get("qwen3-8b"), catalog.get("qwen3-4b")}) == 2


# --------------------------------------------------------------------------------------------
# MODEL references


@pytest.mark.parametrize(("text", "expected"), [
    ("qwen3-8b", CatalogRef("qwen3-8b")),
    ("qwen3-8b:q5_k_m", CatalogRef("qwen3-8b", "Q5_K_M")),
    ("Qwen3-8B", CatalogRef("qwen3-8b")),
    ("Qwen3.5-9B:UD-Q4_K_XL", CatalogRef("qwen3.5-9b", "UD-Q4_K_XL")),
    ("Qwen/Qwen3-8B-GGUF:Q4_K_M", HubRef("Qwen/Qwen3-8B-GGUF", "Q4_K_M", quant_given=True)),
    ("unsloth/Qwen3.5-9B-GGUF:ud-q4_k_xl",
     HubRef("unsloth/Qwen3.5-9B-GGUF", "UD-Q4_K_XL", quant_given=True)),
    ("Qwen/Qwen3-8B-GGUF", HubRef("Qwen/Qwen3-8B-GGUF", "Q4_K_M", quant_given=False)),
    ("bartowski/Qwen_Qwen3-32B-GGUF/Qwen_Qwen3-32B-Q4_K_M.gguf",
     HubRef("bartowski/Qwen_Qwen3-32B-GGUF", None, "Qwen_Qwen3-32B-Q4_K_M.gguf")),
    ("Qwen/Qwen3-235B-A22B-GGUF/Q4_K_M/Qwen3-235B-A22B-Q4_K_M-00001-of-00005.gguf",
     HubRef("Qwen/Qwen3-235B-A22B-GGUF", None,
            "Q4_K_M/Qwen3-235B-A22B-Q4_K_M-00001-of-00005.gguf")),
    ("hf.co/unsloth/Qwen3-8B-GGUF:Q8_0", HubRef("unsloth/Qwen3-8B-GGUF", "Q8_0", quant_given=True)),
    ("https://huggingface.co/Qwen/Qwen3-8B-GGUF/resolve/212c964b/Qwen3-8B-Q4_K_M.gguf",
     HubRef("Qwen/Qwen3-8B-GGUF", None, "Qwen3-8B-Q4_K_M.gguf", revision="212c964b")),
    ("./models/qwen.gguf", LocalRef(Path("models/qwen.gguf"))),
    ("/opt/models/qwen.gguf", LocalRef(Path("/opt/models/qwen.gguf"))),
    ("model.GGUF", LocalRef(Path("model.GGUF"))),
    ("models/qwen.gguf", LocalRef(Path("models/qwen.gguf"))),
])
def test_parse_ref(text: str, expected: object) -> None:
    assert parse_ref(text) == expected


def test_parse_ref_home_and_existing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_ref("~/m/qwen.gguf") == LocalRef(tmp_path / "m" / "qwen.gguf")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qwen3-8b").write_bytes(b"GGUF")  # a file on disk does not hijack the name
    assert parse_ref("qwen3-8b") == CatalogRef("qwen3-8b")
    assert parse_ref("./qwen3-8b") == LocalRef(Path("./qwen3-8b"))  # named as a path, it is one


@pytest.mark.parametrize(("text", "message"), [
    ("", "MODEL is empty"),
    ("qwen3-8b:", "expected NAME:QUANT"),
    ("qwen3-8b:q4:k", "expected NAME:QUANT"),
    ("Qwen/", "owner/repo"),
    ("Qwen/Qwen3-8B-GGUF:bad tag", "bad quant tag"),
    ("Qwen/Qwen3-8B-GGUF/README.md", "is not a .gguf file"),
    ("Qwen/Qwen3-8B-GGUF/x.gguf:Q4_K_M", "not both"),
    ("qwen 3", "is not a model name"),
])
def test_parse_ref_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_ref(text)
    assert info.value.exit_code == 2


def test_unknown_model_names_the_nearest(catalog: Catalog) -> None:
    with pytest.raises(UsageError) as info:
        resolve_catalog_ref(catalog, parse_ref("qwen3-9b"))
    message = info.value.message
    assert message.startswith("unknown model 'qwen3-9b'; nearest: ")
    assert "qwen3-8b" in message and "qwen3.5-9b" in message
    assert info.value.exit_code == 2 and info.value.hint
    with pytest.raises(UsageError, match=r"unknown model 'llama-3'$"):
        resolve_catalog_ref(catalog, "llama-3")


def test_resolve_catalog_ref_quants(catalog: Catalog) -> None:
    spec, quant = resolve_catalog_ref(catalog, "Qwen3-8B:q5_k_m")
    assert (spec.id, quant) == ("qwen3-8b", "Q5_K_M")
    spec, quant = resolve_catalog_ref(catalog, CatalogRef("qwen3.5-9b"))
    assert (spec.id, quant) == ("qwen3.5-9b", None)
    with pytest.raises(UsageError) as info:
        resolve_catalog_ref(catalog, "qwen3-0.6b:iq1_s")
    assert info.value.message == ("qwen3-0.6b has no quant 'IQ1_S'; available: Q2_K, Q3_K_M, "
                                  "IQ4_XS, Q4_K_M, UD-Q4_K_XL, Q5_K_M, Q6_K, Q8_0")
    with pytest.raises(UsageError, match="not a catalog model name"):
        resolve_catalog_ref(catalog, "Qwen/Qwen3-8B-GGUF")


# --------------------------------------------------------------------------------------------
# Overlay, cache and schema errors


def test_user_overlay_adds_and_overrides(catalog: Catalog) -> None:
    override = TINY.replace('id = "tiny-1b"', 'id = "qwen3-8b"').replace(
        "quality = 12.5", "quality = 99.0")
    _write(config_dir() / "models", "a-override.toml", override)
    _write(config_dir() / "models", "b-tiny.toml", TINY)
    merged = load_catalog()
    assert merged.get("tiny-1b").quality == 12.5
    assert merged.models()[-1].id == "tiny-1b"  # new ids are appended
    mine = merged.get("qwen3-8b")
    assert (mine.quality, mine.family, mine.n_layers) == (99.0, "test", 16)  # replaced whole
    bundled_ids = [m.id for m in catalog.models()]
    assert [m.id for m in merged.models()][: len(bundled_ids)] == bundled_ids  # same place
    assert len(merged.models()) == len(bundled_ids) + 1
    assert any(f.endswith("b-tiny.toml") for f in merged.files)


def test_extra_dirs_come_last(tmp_path: Path) -> None:
    _write(config_dir() / "models", "tiny.toml", TINY)
    extra = tmp_path / "extra"
    _write(extra, "tiny.toml", TINY.replace("quality = 12.5", "quality = 20"))
    assert load_catalog().get("tiny-1b").quality == 12.5
    assert load_catalog([extra]).get("tiny-1b").quality == 20.0


def test_catalog_is_cached_and_reloads_on_change(tmp_path: Path) -> None:
    path = _write(tmp_path / "m", "tiny.toml", TINY)
    first = load_catalog([tmp_path / "m"])
    assert load_catalog([tmp_path / "m"]) is first
    path.write_text(TINY.replace("quality = 12.5", "quality = 13.25"), encoding="utf-8")
    assert load_catalog([tmp_path / "m"]).get("tiny-1b").quality == 13.25


def test_cold_load_reads_each_file_once_and_a_warm_load_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`qwen recommend --json` must start in < 0.4 s; the catalog's share is kept small by
    parsing each profile file once per process. (Its time is measured by
    benchmarks/read_paths.py, not here: a timed test fails on a busy machine.)"""
    from qwencli import tomlfile

    reads: list[Path] = []
    real_read = tomlfile.read

    def counting_read(path: Path, *args, **kwargs):
        reads.append(Path(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(tomlfile, "read", counting_read)
    clear_cache()
    catalog = load_catalog()
    files = [Path(f) for f in catalog.files]
    assert len(files) >= 2 and all(f.suffix == ".toml" for f in files)
    assert sorted(reads) == sorted([*files, bundled_profiles_dir() / "quants.toml"])
    reads.clear()
    assert load_catalog() is catalog and reads == []  # warm: not a file read, not a parse


def _error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = _write(tmp_path / "bad", "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_catalog([tmp_path / "bad"])
    assert info.value.exit_code == 1
    return info.value.message, path


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("n_layers = 16", "n_layers = 16\nn_layer = 3",
     "models[0].n_layer: unknown key (did you mean 'n_layers'?)"),
    ("hidden_size = 2048\n", "", "models[0].hidden_size: missing required key"),
    ("quants.Q8_0 = { size = 1_062_500_000 }", 'quants.Q8_0 = { size = "1GB" }',
     "models[0].gguf[0].quants.Q8_0.size: expected an integer or a list of integers, "
     "got a string"),
    ("n_heads = 16", "n_heads = 16.0", "models[0].n_heads: expected an integer, got a float"),
    ("context_max = 32_768", 'context_max = "32k"',
     "defaults.context_max: expected an integer, got a string"),
    ('use = ["chat"]', 'use = ["chat", "poetry"]', "defaults.use[1]: unknown value 'poetry'"),
    ("quants.Q4_K_M", "quants.q4_k_m",
     "models[0].gguf[0].quants.q4_k_m: unknown quant (did you mean 'Q4_K_M'?)"),
    ("top_p = 0.8", "top_p = 0.8\n[defaults.sampling.creative]\ntemperature = 1.2",
     "defaults.sampling.creative: unknown key"),
    ('file = "Tiny-1B-{quant}.gguf"', 'file = "Tiny-1B.gguf"',
     "models[0].gguf[0].file: 'Tiny-1B.gguf' has no {quant}"),
    ("quants.Q8_0 = { size = 1_062_500_000 }",
     'quants.Q8_0 = { size = 1_062_500_000, sha256 = "abc" }',
     "models[0].gguf[0].quants.Q8_0.sha256: 'abc' is not a lower-case hex SHA-256"),
    ("schema = 1", "schema = 2", "schema: unsupported schema 2"),
    ('hf_repo = "example/Tiny-1B"\n', 'hf_repo = "example/Tiny-1B"\nexperts = { total = 4, '
     'active = 2, shared = 0, ffn_size = 64 }\n',
     "models[0].params_active: missing required key (the model has experts)"),
])
def test_schema_errors_name_file_and_key(tmp_path: Path, old: str, new: str,
                                         expected: str) -> None:
    assert old in TINY
    message, path = _error(tmp_path, TINY.replace(old, new, 1))
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    broken = TINY.replace('name = "Tiny-1B"', 'name = "Tiny-1B')
    line = broken.splitlines().index('name = "Tiny-1B') + 1
    message, path = _error(tmp_path, broken)
    assert message.startswith(f"{path}: line {line}: ")
    assert "illegal character" in message


def test_duplicate_ids_in_one_directory_are_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "dup", "a.toml", TINY)
    _write(tmp_path / "dup", "b.toml", TINY)
    with pytest.raises(ConfigError,
                       match=r"b\.toml: model id 'tiny-1b' is also defined in .*a\.toml"):
        load_catalog([tmp_path / "dup"])
    two = TINY + TINY[TINY.index("[[models]]"):]
    message, _ = _error(tmp_path, two)
    assert "models[1].id: duplicate id 'tiny-1b'" in message


def test_missing_quant_table_is_a_config_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cat_mod, "bundled_profiles_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"quants\.toml: missing"):
        load_catalog()
