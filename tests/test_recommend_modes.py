"""`qwen recommend` ranks each model by the quality figure of the mode its chat will run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qwencli.catalog import Catalog, load_catalog
from qwencli.cli import app
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.profiles import load_profile, profile_to_hardware
from qwencli.recommend import USES, choose_quant, quality_mode, rank

runner = CliRunner()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def big_machine():
    hw = profile_to_hardware(load_profile("dual-rtx3090"))
    return hw, plan_budget(hw)


@pytest.mark.parametrize("use", [u for u in USES if u != "reasoning"])
def test_each_model_is_ranked_by_its_default_modes_figure(catalog: Catalog, big_machine,
                                                          use: str) -> None:
    """No model whose default is non-thinking is scored by a thinking figure, nor the reverse."""
    hw, budget = big_machine
    for spec in catalog.models(use):
        candidate = choose_quant(catalog, spec, hw, budget, use=use).candidate
        assert candidate.figure is not None
        assert candidate.figure.mode == spec.default_mode, (spec.id, use)
        assert candidate.figure == spec.quality_modes[spec.default_mode]
        expected = spec.quality_for.get(use, candidate.figure.score)
        assert candidate.prior == expected, (spec.id, use)
        assert candidate.score <= expected + 3.0  # the prior, less the loss, plus <= 3 speed


def test_reasoning_means_thinking_and_the_flags_choose(catalog: Catalog, big_machine) -> None:
    hw, budget = big_machine
    modes = {spec.id: spec.modes() for spec in catalog.models()}
    for spec in catalog.models("reasoning"):
        assert quality_mode(spec, "reasoning") == (
            "thinking" if "thinking" in modes[spec.id] else "non_thinking"), spec.id
    small = catalog.get("qwen3.5-0.8b")  # non-thinking by default (its card)
    assert quality_mode(small, "chat") == "non_thinking"
    assert quality_mode(small, "chat", think=True) == "thinking"
    assert quality_mode(catalog.get("qwen3-8b"), "chat", think=False) == "non_thinking"
    # One mode only: the flag cannot change what the model runs.
    assert quality_mode(catalog.get("qwen2.5-7b"), "chat", think=True) == "non_thinking"
    assert quality_mode(catalog.get("qwen3-4b-thinking-2507"), "chat",
                        think=False) == "thinking"
    for think in (True, False):
        candidate = choose_quant(catalog, small, hw, budget, use="chat", think=think).candidate
        assert candidate.prior == small.quality_modes[
            "thinking" if think else "non_thinking"].score


def test_reasons_name_the_figure_and_the_mode(catalog: Catalog) -> None:
    hw = profile_to_hardware(load_profile("vps-4gb"))
    budget = plan_budget(hw)
    picks = {think: rank(catalog, hw, budget, use="chat", think=think, top=3)
             for think in (None, True, False)}
    # Thinking by default (a fallback from MMLU-Redux) beats Qwen3.5-0.8B's published
    # non-thinking 29.7; asked for non-thinking, Qwen3.5-0.8B's 29.7 beats Qwen3-0.6B's 21.1.
    assert picks[None][0].spec.id == "qwen3-0.6b"
    assert "thinking (the model's default)" in picks[None][0].reasons[1]
    assert "fallback: MMLU-Redux 55.6" in picks[None][0].reasons[1]
    assert picks[False][0].spec.id == "qwen3.5-0.8b"
    assert ("quality prior 29.7 for chat: published MMLU-Pro, non-thinking (the model's "
            "default)") in picks[False][0].reasons[1]
    assert picks[True][0].spec.id == "qwen3.5-0.8b"
    assert "42.3 for chat: published MMLU-Pro, thinking (not the model's default)" in \
        picks[True][0].reasons[1]
    only = next(p for p in picks[True] if p.spec.id == "qwen2.5-0.5b")
    assert "non-thinking (its only mode)" in only.reasons[1]


def test_cli_think_and_no_think() -> None:
    docs = {}
    for flag in ("--think", "--no-think"):
        result = runner.invoke(app, ["recommend", "--hardware", "vps-4gb", flag, "--json"])
        assert result.exit_code == 0, result.output
        docs[flag] = json.loads(result.stdout)
    no_think = docs["--no-think"]["picks"][0]
    assert no_think["model"] == "qwen3.5-0.8b"
    assert any("non-thinking (the model's default)" in r for r in no_think["reasons"])
    result = runner.invoke(app, ["recommend", "--help"])
    assert "--think" in result.stdout and "--no-think" in result.stdout
