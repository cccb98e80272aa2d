"""One decision: `qwen fit` (no quant), `qwen pull` (its resolution), `qwen chat -m` (its model
choice) and `qwen recommend` agree on the quant and the file of MODEL, on every bundled machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import hub, store
from qwencli.catalog import load_catalog
from qwencli.chat import select
from qwencli.cli import app
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.profiles import list_profiles, load_profile, profile_to_hardware
from qwencli.planner import fit_model
from qwencli.recommend import choose_quant, default_quant, rank
from qwencli.refs import CatalogRef
from tests import fake_hub
from tests.gguf_fixtures import write_qwen_gguf
from tests.test_hub import serve

MODELS = ("qwen3-0.6b", "qwen3-4b", "qwen3.5-2b", "qwen3.5-4b", "qwen3-8b", "qwen3-30b-a3b")
MACHINES = sorted(list_profiles())


@pytest.fixture
def hub_with_every_quant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                         ) -> Iterator[fake_hub.FakeHub]:
    """The local Hub holding every file the catalog names for MODELS (small stand-ins)."""
    for served in serve(tmp_path, monkeypatch):
        catalog = load_catalog()
        for model in MODELS:
            for source in catalog.get(model).gguf:
                for quant in source.quants.values():
                    for name in quant.files:
                        served.add_file(source.repo, name, b"GGUF" + name.encode())
        yield served


def test_machines_and_models_cover_the_ground() -> None:
    assert len(MACHINES) == 8 and len(MODELS) >= 5


def _chat_choice(model: str, machine) -> tuple[str | None, str]:
    """What `qwen chat -m MODEL` would run: its quant, and the file its download fetches."""
    fetched: list[str] = []

    def fetch(ref: str, quant: str | None) -> Path:
        plan = hub.resolve_pull(ref, quant=quant)
        fetched.append(f"{plan.repo}/{plan.files[0].path}")
        return Path("/nonexistent/chosen.gguf")

    choice = select.resolve_model(model, machine=machine, fetch=fetch, environ={})
    return choice.quant, fetched[0]


def test_fit_pull_chat_and_recommend_agree_key_by_key(hub_with_every_quant) -> None:
    catalog = load_catalog()
    disagreements = []
    for name in MACHINES:
        hw = profile_to_hardware(load_profile(name))
        budget = plan_budget(hw)

        def machine(hw=hw, budget=budget):
            return hw, budget

        picks = {p.spec.id: p for p in rank(catalog, hw, budget, use="chat", top=100)}
        for model in MODELS:
            fitted = fit_model(model, catalog, hw, budget)
            fit_key = (fitted.choice.quant, fitted.file)
            wanted = default_quant(CatalogRef(model), catalog, machine).quant
            plan = hub.resolve_pull(model, quant=wanted)
            pull_key = (plan.quant, f"{plan.repo}/{plan.files[0].path}")
            chat_key = _chat_choice(model, machine)
            chosen = choose_quant(catalog, catalog.get(model), hw, budget, use="chat")
            qf = chosen.candidate.quant
            recommend_key = (qf.quant, f"{qf.repo}/{qf.filename}")
            keys = {"fit": fit_key, "pull": pull_key, "chat": chat_key,
                    "recommend": recommend_key}
            if model in picks:  # when it is listed, the list shows the same choice
                pick = picks[model].quant
                keys["recommend list"] = (pick.quant, f"{pick.repo}/{pick.filename}")
            if len(set(keys.values())) != 1:
                disagreements.append((name, model, keys))
    assert disagreements == []


def test_a_quant_offered_as_one_file_and_as_a_split_set_gets_one_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for served in serve(tmp_path, monkeypatch):
        single = write_qwen_gguf(tmp_path / "single.gguf")
        served.add_file("o/r", "m-Q4_K_M.gguf", single)
        for part in (1, 2):  # sorts before the top-level file, and is not it
            served.add_file("o/r", f"Q4_K_M/m-Q4_K_M-0000{part}-of-00002.gguf",
                            b"GGUF" + bytes([part]) * 64)
        runner = CliRunner()
        fitted = json.loads(runner.invoke(app, ["fit", "o/r:Q4_K_M", "--json"]).stdout)
        plan = hub.resolve_pull("o/r:Q4_K_M")
        assert (fitted["file"], fitted["source"]) == ("o/r/m-Q4_K_M.gguf", "header")
        assert [f.path for f in plan.files] == ["m-Q4_K_M.gguf"]
        assert plan.warnings and "took m-Q4_K_M.gguf" in plan.warnings[0]
        assert _chat_choice("o/r:Q4_K_M", lambda: pytest.fail("no hardware needed"))[1] == \
            "o/r/m-Q4_K_M.gguf"
        pulled = runner.invoke(app, ["pull", "o/r:Q4_K_M", "--json"])
        assert pulled.exit_code == 0, pulled.stderr
        assert json.loads(pulled.stdout)["files"][0]["path"] == "m-Q4_K_M.gguf"
        # with both on disk, the cache answers the same
        for part in (1, 2):
            assert runner.invoke(app, ["pull", f"o/r/Q4_K_M/m-Q4_K_M-0000{part}-of-00002.gguf"]
                                 ).exit_code == 0
        assert store.find_model("o/r:Q4_K_M") == Path(json.loads(pulled.stdout)["path"])


def test_stopping_early_never_changes_the_choice() -> None:
    # recommend plans each model only up to the first quant too slow to matter; the choice
    # must be the one planning every quant gives (as fit, pull and chat ask it)
    catalog = load_catalog()
    for name in MACHINES:
        hw = profile_to_hardware(load_profile(name))
        budget = plan_budget(hw)
        for spec in catalog.all_models:
            quick = choose_quant(catalog, spec, hw, budget)
            full = choose_quant(catalog, spec, hw, budget, every=True)
            assert (quick.quant, quick.below_floor, quick.fits) == \
                (full.quant, full.below_floor, full.fits), (name, spec.id)
