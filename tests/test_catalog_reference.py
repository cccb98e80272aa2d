"""The catalog held against the published sources: quality by mode, real file sizes, file names.

tests/data/reference/ holds machine-readable copies of the reference rows the catalog uses:
- mmlu_pro.csv: Qwen's published MMLU-Pro per model and mode (quality-sources.md);
- quality_calibration.csv: the rows with MMLU-Pro and MMLU-Redux / GPQA-Diamond side by side
  that the named fallbacks are calibrated on (quality-sources.md);
- gguf_sizes.csv: real GGUF file sizes (gguf-sizes.md; the exact seed sizes of qwen-catalog.md
  §2c), exact bytes or the rounded figure its source shows.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from qwencli.catalog import Catalog, estimate_size, load_catalog, quant_file

REFERENCE = Path(__file__).parent / "data" / "reference"
# Models the reference publishes a figure for that the catalog does not carry, and why.
NOT_IN_CATALOG = {"qwen3-next-80b-a3b-thinking": "no GGUF repository or file in the reference"}


def _csv(name: str) -> list[dict[str, str]]:
    with (REFERENCE / name).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    slope = (sum((x - mx) * (y - my) for x, y in points)
             / sum((x - mx) ** 2 for x, _ in points))
    return my - slope * mx, slope


# --------------------------------------------------------------------------------------------
# Quality


def test_every_published_figure_matches_for_the_same_mode(catalog: Catalog) -> None:
    rows = _csv("mmlu_pro.csv")
    assert len(rows) >= 35
    seen = set()
    for row in rows:
        spec = catalog.find(row["model"])
        if spec is None:
            assert row["model"] in NOT_IN_CATALOG, row
            continue
        figure = spec.quality_modes.get(row["mode"])
        assert figure is not None, (row["model"], row["mode"])
        assert figure.score == float(row["mmlu_pro"]), (row["model"], row["mode"])
        assert figure.published, (row["model"], row["mode"], figure.basis)
        seen.add((spec.id, row["mode"]))
    # ... and every figure the catalog calls published is one of those rows.
    for spec in catalog.models():
        for mode, figure in spec.quality_modes.items():
            if figure.published:
                assert (spec.id, mode) in seen, (spec.id, mode)
            else:
                assert figure.basis.startswith("fallback: "), (spec.id, mode, figure.basis)


def test_a_model_has_a_figure_for_every_mode_it_runs_in(catalog: Catalog) -> None:
    for spec in catalog.models():
        assert set(spec.quality_modes) == set(spec.modes()), spec.id
        assert spec.quality == spec.quality_modes[spec.default_mode].score
    # The small Qwen3.5 models default to non-thinking (their cards), so their prior is the
    # non-thinking figure, not the thinking one nor a size interpolation.
    assert catalog.get("qwen3.5-0.8b").quality == 29.7
    assert catalog.get("qwen3.5-2b").quality == 55.3
    assert catalog.get("qwen3.5-35b-a3b").quality == 85.3


def test_redux_fallbacks_follow_the_calibration_line(catalog: Catalog) -> None:
    """Qwen3-0.6B/8B/14B: no post-trained MMLU-Pro; MMLU-Redux (Qwen3 TR) mapped by a line
    fitted on the Qwen3-generation rows that publish both."""
    rows = [r for r in _csv("quality_calibration.csv")
            if r["mmlu_redux"] and not r["model"].startswith("Qwen2.5")]
    intercept, slope = _line([(float(r["mmlu_redux"]), float(r["mmlu_pro"])) for r in rows])
    assert len(rows) == 19
    assert (round(intercept, 2), round(slope, 4)) == (-36.76, 1.2975)
    redux = {("qwen3-0.6b", "thinking"): 55.6, ("qwen3-0.6b", "non_thinking"): 44.6,
             ("qwen3-8b", "thinking"): 87.5, ("qwen3-8b", "non_thinking"): 79.5,
             ("qwen3-14b", "thinking"): 88.6, ("qwen3-14b", "non_thinking"): 82.0}
    for (model_id, mode), value in redux.items():
        figure = catalog.get(model_id).quality_modes[mode]
        assert figure.score == round(-36.76 + 1.2975 * value, 1), (model_id, mode)
        assert f"MMLU-Redux {value}" in figure.basis


def test_gpqa_and_mode_gap_fallbacks_follow_their_calibration(catalog: Catalog) -> None:
    rows = _csv("quality_calibration.csv")
    same_arch = [r for r in rows if r["gpqa_diamond"] and r["model"].startswith("Qwen3.")]
    intercept, slope = _line([(float(r["gpqa_diamond"]), float(r["mmlu_pro"]))
                              for r in same_arch])
    assert len(same_arch) == 7 and (round(intercept, 2), round(slope, 4)) == (28.04, 0.6714)
    q38 = catalog.get("qwen3.8-27b").quality_modes["thinking"]
    assert q38.score == round(28.04 + 0.6714 * 89.2, 1) and not q38.published
    # The non-thinking fallback: thinking less the median gap of the Qwen3 models >= 4B that
    # publish both modes (4B, 30B-A3B, 32B, 235B-A22B).
    both: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["model"] in ("Qwen3-4B", "Qwen3-30B-A3B", "Qwen3-32B", "Qwen3-235B-A22B"):
            both.setdefault(r["model"], {})[r["mode"]] = float(r["mmlu_pro"])
    gap = statistics.median(m["thinking"] - m["non_thinking"] for m in both.values())
    assert round(gap, 1) == 8.5
    for spec in catalog.models():
        figure = spec.quality_modes.get("non_thinking")
        if figure is not None and "thinking/non-thinking gap" in figure.basis:
            assert figure.score == round(spec.quality_modes["thinking"].score - gap, 1), spec.id


# --------------------------------------------------------------------------------------------
# Sizes and names


def _size_rows(catalog: Catalog) -> list[tuple[dict[str, str], object]]:
    out = []
    for row in _csv("gguf_sizes.csv"):
        spec = catalog.get(row["model"])
        source = next(s for s in spec.gguf if s.repo == row["repo"])
        out.append((row, source))
    return out


def test_every_real_size_is_in_the_catalog_within_one_percent(catalog: Catalog) -> None:
    rows = _size_rows(catalog)
    assert len(rows) >= 140
    for row, source in rows:
        qf = source.quants.get(row["quant"])
        assert qf is not None, (row["model"], row["repo"], row["quant"])
        real = int(row["bytes"])
        assert abs(qf.size_bytes / real - 1) <= 0.01, (row["model"], row["quant"], qf.size_bytes)
        if row["precision"] == "exact":
            assert (qf.size_bytes, qf.approx) == (real, False), (row["model"], row["quant"])
        else:
            assert qf.approx and qf.listed, (row["model"], row["quant"])


def test_the_size_rule_reproduces_the_real_files(catalog: Catalog) -> None:
    """The rule alone (no real figure used), over every row with a real size."""
    errors = []
    for row, source in _size_rows(catalog):
        spec = catalog.get(row["model"])
        estimate = estimate_size(catalog.size_rules, arch=spec.arch, quant=row["quant"],
                                 params=spec.params_gguf, vocab_size=spec.vocab_size,
                                 hidden_size=spec.hidden_size, output_copy=source.output_copy)
        errors.append((abs(estimate / int(row["bytes"]) - 1), row["model"], row["quant"]))
    median = statistics.median(e for e, _, _ in errors)
    worst = max(errors)
    print(f"size rule over {len(errors)} real files: median |error| {median:.2%}, "
          f"worst {worst[0]:.2%} ({worst[1]} {worst[2]})")
    assert median <= 0.02
    assert worst[0] <= 0.08, worst


def test_file_names_match_the_listings(catalog: Catalog) -> None:
    for row, source in _size_rows(catalog):
        qf = source.quants[row["quant"]]
        if qf.parts == 1 and row["file"].endswith(".gguf"):
            assert qf.files == (row["file"],), (row["model"], row["quant"])
    assert quant_file(catalog.get("qwen3.8-27b"), "Q4_K_M").files == (
        "Qwen_Qwen3.8-27B-Q4_K_M.gguf",)


def test_quants_the_listings_show_missing_are_absent(catalog: Catalog) -> None:
    for size in ("0.8b", "2b", "4b", "9b", "27b", "35b-a3b", "122b-a10b"):
        assert "Q2_K" not in catalog.get(f"qwen3.5-{size}").quants, size  # finding 4
    q36 = catalog.get("qwen3.6-35b-a3b")  # finding 2: only UD- names
    assert set(q36.quants) == {"UD-Q3_K_M", "UD-IQ4_XS", "UD-Q4_K_M", "UD-Q4_K_XL",
                               "UD-Q5_K_M", "UD-Q6_K", "Q8_0"}
    for model_id in ("qwen3.5-35b-a3b", "qwen3.5-122b-a10b"):  # finding 3
        spec = catalog.get(model_id)
        assert "IQ4_XS" not in spec.quants and "UD-IQ4_XS" in spec.quants


def test_split_counts_match_the_listings(catalog: Catalog) -> None:
    parts = {("qwen2.5-coder-7b", "Q4_K_M"): 2, ("qwen2.5-coder-14b", "Q4_K_M"): 2,
             ("qwen2.5-coder-14b", "Q6_K"): 2, ("qwen2.5-coder-32b", "Q4_K_M"): 3,
             ("qwen2.5-14b", "Q4_K_M"): 3, ("qwen2.5-32b", "Q4_K_M"): 5,
             ("qwen3-235b-a22b", "Q4_K_M"): 5,
             **{("qwen3.5-122b-a10b", q): 3 for q in ("Q3_K_M", "Q4_K_M", "Q5_K_M")},
             **{("qwen3.5-122b-a10b", q): 4 for q in ("Q6_K", "Q8_0")}}
    for (model_id, quant), n in parts.items():
        qf = quant_file(catalog.get(model_id), quant)
        assert qf.parts == n, (model_id, quant, qf.parts)
    qf = quant_file(catalog.get("qwen3.5-122b-a10b"), "Q6_K")
    assert qf.files[0] == "Q6_K/Qwen3.5-122B-A10B-Q6_K-00001-of-00004.gguf"


def test_no_projector_is_counted(catalog: Catalog) -> None:
    """The 0.764/2.01/3.58 GB listings were model + mmproj-F16 (finding 1)."""
    for model_id, size in (("qwen3.5-0.8b", 558_772_480), ("qwen3.5-2b", 1_339_752_704),
                           ("qwen3.5-4b", 2_912_109_728), ("qwen3.6-35b-a3b", 22_360_456_160)):
        assert quant_file(catalog.get(model_id), "UD-Q4_K_XL").size_bytes == size
