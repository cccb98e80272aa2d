"""Invariants of the ranking over every bundled machine and use case."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from qwencli.catalog import load_catalog
from qwencli.cli import app
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.profiles import list_profiles, load_profile, profile_to_hardware
from qwencli.hardware.whatif import WhatIf, apply
from qwencli.recommend import DEFAULT_MIN_SPEED, USES, quant_loss, rank

GIB = 1024**3
PROFILES = sorted(list_profiles())


def machine(name: str):
    hw = profile_to_hardware(load_profile(name))
    return hw, plan_budget(hw)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("use", USES)
def test_everything_recommended_fits_and_is_fast_enough(catalog, name: str, use: str) -> None:
    hw, budget = machine(name)
    picks = rank(catalog, hw, budget, use=use, top=5)
    assert picks, f"nothing recommended for {use} on {name}"
    for pick in picks:
        assert pick.plan.fits
        assert pick.plan.host_bytes <= pick.plan.host.budget_bytes
        assert all(d.bytes <= d.budget_bytes for d in pick.plan.devices)
        # the floor holds, unless nothing here reaches it: then every pick says so
        assert pick.speed >= DEFAULT_MIN_SPEED or (
            all(p.below_floor for p in picks) and "under the 10 tok/s floor" in pick.reasons[0])
        assert use in pick.spec.use
        assert pick.plan.ctx <= pick.spec.context_max
        assert pick.reasons and "to spare" in pick.reasons[0]
    scores = [p.score for p in picks]
    specialists = [p for p in picks if "coder" in p.spec.id]
    if use != "code" or not specialists:
        assert scores == sorted(scores, reverse=True)
    assert len({p.spec.id for p in picks}) == len(picks)  # one quant per model


@pytest.mark.parametrize("use", USES)
def test_more_ram_never_gives_a_worse_pick(catalog, use: str) -> None:
    base, _ = machine("vps-4gb")
    previous = None
    for ram in (4, 8, 16, 32, 64, 128):
        hw = apply(base, WhatIf(ram_bytes=ram * GIB))
        picks = rank(catalog, hw, plan_budget(hw), use=use, top=1)
        score = picks[0].score if picks else float("-inf")
        if previous is not None:
            assert score >= previous, f"{use}: {ram} GiB scored {score} < {previous}"
        previous = score


@pytest.mark.parametrize("use", ["chat", "reasoning"])
def test_more_vram_never_gives_a_worse_pick(catalog, use: str) -> None:
    base, _ = machine("desktop-rtx4090-64gb")
    previous = float("-inf")
    for vram in (4, 6, 8, 12, 16, 24, 32, 48):
        hw = apply(base, WhatIf(vram_bytes=vram * GIB))
        score = rank(catalog, hw, plan_budget(hw), use=use, top=1)[0].score
        assert score >= previous, f"{use}: {vram} GiB VRAM scored {score} < {previous}"
        previous = score


@pytest.mark.parametrize("name", PROFILES)
def test_code_picks_a_coder_model_where_one_fits(catalog, name: str) -> None:
    hw, budget = machine(name)
    coder_fits = any("coder" in p.spec.id for p in rank(catalog, hw, budget, use="code", top=50))
    top = rank(catalog, hw, budget, use="code", top=1)[0]
    assert coder_fits
    assert "coder" in top.spec.id


def test_small_models_lose_more_below_four_bits(catalog) -> None:
    small, big = catalog.get("qwen3-0.6b"), catalog.get("qwen3-32b")
    assert quant_loss(catalog, small, "Q3_K_M") > 4 * quant_loss(catalog, big, "Q3_K_M")
    # the small-model rule multiplies, on top of the size scaling
    ratio_q3 = quant_loss(catalog, small, "Q3_K_M") / quant_loss(catalog, big, "Q3_K_M")
    ratio_q4 = quant_loss(catalog, small, "Q4_K_M") / quant_loss(catalog, big, "Q4_K_M")
    assert ratio_q3 == pytest.approx(4 * ratio_q4)
    assert quant_loss(catalog, big, "Q8_0") < quant_loss(catalog, big, "Q4_K_M")


def test_a_slow_floor_excludes_and_a_low_floor_admits(catalog) -> None:
    hw, budget = machine("vps-4gb")
    strict = rank(catalog, hw, budget, use="chat", min_speed=1000, top=5)
    assert strict == []
    relaxed = rank(catalog, hw, budget, use="chat", min_speed=1, top=5)
    assert relaxed and relaxed[0].score >= rank(catalog, hw, budget, use="chat")[0].score


def test_a_pick_plan_equals_qwen_fit_of_the_same_model(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # catalog figures on both sides
    runner = CliRunner()
    for use in ("chat", "code"):
        result = runner.invoke(app, ["recommend", "--hardware", "laptop-rtx4060-32gb", "--use",
                                     use, "--json", "--top", "3"])
        assert result.exit_code == 0, result.stderr
        for pick in json.loads(result.stdout)["picks"]:
            ref = f"{pick['model']}:{pick['quant']}"
            fitted = runner.invoke(app, ["fit", ref, "--ctx", str(pick["ctx"]), "--hardware",
                                         "laptop-rtx4060-32gb", "--json"])
            assert fitted.exit_code == 0, fitted.stderr
            doc = json.loads(fitted.stdout)
            for key in ("source", "ctx", "usable_ctx", "fits", "n_gpu_layers", "n_layers",
                        "memory", "speed", "tensor_split"):
                assert pick[key] == doc[key], (ref, key)
            assert doc["model"] == pick["model"] and doc["quant"] == pick["quant"]


def test_recommend_json_contract() -> None:
    result = CliRunner().invoke(app, ["recommend", "--hardware", "dual-rtx3090", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1
    assert doc["hardware"]["budget"]["host_bytes"] > 0
    assert len(doc["hardware"]["budget"]["gpus"]) == 2
    pick = doc["picks"][0]
    for key in ("model", "quant", "use", "score", "reasons", "source", "ctx", "usable_ctx",
                "fits", "n_gpu_layers", "n_layers"):
        assert key in pick
    assert set(pick["memory"]) >= {"host_bytes", "devices", "breakdown"}
    assert set(pick["memory"]["breakdown"]) >= {"weights", "kv_cache", "compute", "output",
                                                "overhead"}
    assert [d["name"] for d in pick["memory"]["devices"]]
    assert pick["speed"]["decode_tok_s"]["low"] <= pick["speed"]["decode_tok_s"]["high"]


def test_recommend_text_names_the_top_pick_and_why() -> None:
    result = CliRunner().invoke(app, ["recommend", "--hardware", "apple-m2-8gb"])
    assert result.exit_code == 0
    out = result.stdout
    assert "Best Qwen models for chat on profile apple-m2-8gb" in out
    assert "Why " in out and "next: qwen pull " in out and "\x1b" not in out


def test_bad_use_and_impossible_requests() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["recommend", "--use", "poetry"]).exit_code == 2
    result = runner.invoke(app, ["recommend", "--hardware", "vps-4gb", "--min-speed", "5000"])
    assert result.exit_code == 0
    assert "nothing fits" in result.stdout


def test_every_profile_has_a_pick_for_every_use(catalog) -> None:
    # The table printed by benchmarks/recommend_table.py, checked for completeness.
    for name in PROFILES:
        hw, budget = machine(name)
        for use in USES:
            assert rank(catalog, hw, budget, use=use, top=1), (name, use)


def test_unusable_gpu_is_not_planned_on(catalog) -> None:
    hw, _ = machine("desktop-rtx4090-64gb")
    cpu_build = dataclasses.replace(hw.llama_cpp, gpu_offload=False, backend="cpu")
    hw = dataclasses.replace(hw, llama_cpp=cpu_build)
    for pick in rank(catalog, hw, plan_budget(hw), use="chat", top=3):
        assert pick.plan.devices == () and pick.plan.n_gpu_layers == 0
