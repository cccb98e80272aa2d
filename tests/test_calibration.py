"""The stored calibration: combined by medians, tied to the machine, never a crash on a bad
file; `qwen fit` and `qwen recommend` use it on this machine only."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli.calibration import (
    Record,
    calibration_path,
    combine,
    fingerprint_of,
    load,
    reset,
    store,
)
from qwencli.catalog import clear_cache
from qwencli.cli import app
from qwencli.fit import DeviceFactors, Options, SpeedCalibration, plan
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.cpu import default_threads
from qwencli.hardware.model import Bandwidth
from qwencli.hardware.probe import probe
from tests.gguf_fixtures import write_qwen_gguf
from tests.hardware.factories import machine, memory
from tests.test_fit import shape

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_catalog():
    clear_cache()
    yield
    clear_cache()


def cpu_box():
    hw = machine(mem=memory(total_gib=32, available_gib=24))
    return dataclasses.replace(hw, memory=dataclasses.replace(
        hw.memory, bandwidth=Bandwidth(30_000_000_000, "measured", "test")))


def record(decode: float, prompt: float = 1.0, *, date: str = "2026-11-30T20:00:00+00:00",
           model: str = "m.gguf", device: str = "host", spread: float = 0.02) -> Record:
    return Record(date=date, model=model, quant="Q4_K_M", device=device,
                  factors={"decode": decode, "prompt": prompt}, spread=spread,
                  measured={"tg128": 10.0})


def test_several_benches_combine_by_median_and_report_the_outlier(tmp_path: Path) -> None:
    records = [record(0.8, date="2026-11-30T10:00:00+00:00"),
               record(0.9, date="2026-11-30T11:00:00+00:00"),
               record(2.0, date="2026-11-30T12:00:00+00:00", model="noisy.gguf")]
    combined = combine(records, tmp_path / "c.json")
    assert combined.speed is not None
    assert combined.speed.devices["host"].decode == pytest.approx(0.9)
    assert len(combined.outliers) == 1 and "noisy.gguf" in combined.outliers[0]
    assert combined.speed.label.startswith("measured on this machine by qwen bench on "
                                           "2026-11-30, noisy.gguf")


def test_the_benched_figures_come_back_from_the_plan() -> None:
    # Factors derived as calibration.record_from derives them (measured pp512 and tg128 against
    # the estimate's parts for a 512-token batch from an empty context): the plan of the same
    # model then says the measured speeds back, and bench's own estimate agrees with it.
    from qwencli.fit import predict_at, speed_parts

    hw = cpu_box()
    s = shape()
    estimate = plan(s, hw, plan_budget(hw), Options(ctx=8192))
    base = speed_parts(s, hw, estimate, 0, 512 // 2)
    pp512, tg128 = 37.0, 11.0
    measured = SpeedCalibration("measured", {"host": DeviceFactors(
        decode=(1 / tg128) / base.decode_s,
        prompt=(1 / pp512) / (base.prompt_s + base.attention_s))})
    after = plan(s, hw, plan_budget(hw), Options(ctx=8192), calibration=measured)
    assert after.speed.prompt_tok_s == pytest.approx(pp512)
    assert after.speed.typical == pytest.approx(tg128)
    assert predict_at(s, hw, after, 0, 512, measured) == pytest.approx((tg128, pp512))
    assert predict_at(s, hw, estimate, 0, 512) == pytest.approx(
        (estimate.speed.typical, estimate.speed.prompt_tok_s))


def test_calibration_scales_the_estimate_and_says_so() -> None:
    hw = cpu_box()
    s = shape()
    before = plan(s, hw, plan_budget(hw), Options(ctx=8192)).speed
    slow = SpeedCalibration("measured on this machine by qwen bench on 2026-11-30, m.gguf",
                            {"host": DeviceFactors(decode=2.0, prompt=2.0)})
    after = plan(s, hw, plan_budget(hw), Options(ctx=8192, prompt_tokens=2000),
                 calibration=slow).speed
    assert before.source == "estimate" and before.calibration is None
    assert after.source == "calibrated" and after.calibration == slow.label
    assert after.typical == pytest.approx(before.typical / 2)
    assert after.prompt_tok_s == pytest.approx(before.prompt_tok_s / 2)
    assert after.low < after.typical < after.high
    assert after.high / after.typical < 1.2  # a tight range once measured
    assert after.ttft_s is not None and after.ttft_s > 2000 / before.prompt_tok_s
    # A calibration for another device (a GPU that is not here) changes nothing.
    other = SpeedCalibration("x", {"RTX 4090": DeviceFactors(decode=2.0, prompt=2.0)})
    assert plan(s, hw, plan_budget(hw), Options(ctx=8192), calibration=other).speed == before


def test_store_load_and_reset(tmp_path: Path) -> None:
    hw = cpu_box()
    path = tmp_path / "cal.json"
    assert load(hw, 2, path).calibration is None
    store(record(0.5), hw, 2, path)
    stored = store(record(0.7), hw, 2, path)
    assert len(stored.records) == 2
    loaded = load(hw, 2, path)
    assert loaded.calibration is not None and loaded.warning is None
    assert loaded.calibration.speed.devices["host"].decode == pytest.approx(0.6)
    # Another thread count, another CPU or another llama.cpp: not calibrated.
    assert load(hw, 4, path).calibration is None and load(hw, 4, path).stale
    other_cpu = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, model="Other CPU"))
    assert load(other_cpu, 2, path).calibration is None
    other_build = dataclasses.replace(hw, llama_cpp=dataclasses.replace(hw.llama_cpp,
                                                                        version="9.9.9"))
    assert load(other_build, 2, path).calibration is None
    # A bench under a changed fingerprint starts afresh.
    assert len(store(record(0.9), hw, 4, path).records) == 1
    assert reset(path) and not path.exists() and not reset(path)


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"format": 1, "speed_model": 1, "fingerprint": {}, "benches": 3}',
    b"\xff\xfe garbage", b"{" * 100_000, b" " * 2_000_000,
])
def test_a_corrupted_file_is_a_warning_never_a_crash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cal.json"
    path.write_bytes(content)
    loaded = load(cpu_box(), 2, path)
    assert loaded.calibration is None
    assert loaded.warning is not None and str(path) in loaded.warning
    assert "uncalibrated estimate" in loaded.warning and "\n" not in loaded.warning


def test_hostile_fields_are_refused(tmp_path: Path) -> None:
    hw = cpu_box()
    path = tmp_path / "cal.json"
    store(record(0.5), hw, 2, path)
    document = json.loads(path.read_text())
    for bad in ({"decode": "fast", "prompt": 1.0}, {"decode": 1e300, "prompt": 1.0},
                {"decode": -1, "prompt": 1.0}, {"prompt": 1.0}, {"decode": True, "prompt": 1}):
        document["benches"][0]["factors"] = bad
        path.write_text(json.dumps(document))
        loaded = load(hw, 2, path)
        assert loaded.calibration is None and loaded.warning, bad


def _store_for_this_machine(decode: float) -> None:
    hw = probe()
    store(record(decode, decode, model="bench.gguf"), hw,
          default_threads(hw.cpu.physical_cores))


def test_recommend_ranks_with_the_calibrated_speed_and_a_what_if_ignores_it() -> None:
    def picks(*args: str) -> list[dict]:
        done = runner.invoke(app, ["recommend", "--json", "--top", "5", *args])
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)["picks"]

    before = picks()
    whatif_before = picks("--ram", "16GB")
    _store_for_this_machine(decode=2.0)  # this machine measured at half the estimated speed
    after = picks()
    assert all(p["speed"]["source"] == "calibrated" for p in after)
    assert all(p["speed"]["source"] == "estimate" for p in before)
    assert "measured on this machine by qwen bench on" in after[0]["speed"]["source_detail"]
    # Half the speed: slower picks, and the ranking changes accordingly.
    assert [(p["model"], p["quant"]) for p in after] != [(p["model"], p["quant"])
                                                        for p in before]
    same = {(p["model"], p["quant"]): p for p in before}
    for pick in after:
        if (pick["model"], pick["quant"]) in same:
            was = same[(pick["model"], pick["quant"])]["speed"]["decode_tok_s"]["typical"]
            assert pick["speed"]["decode_tok_s"]["typical"] == pytest.approx(was / 2, rel=0.02)
    # Slower everywhere: what still reaches the 10 tok/s floor is smaller models or quants.
    assert all(p["speed_tok_s"] >= 10 or p["below_speed_floor"] for p in after)
    # A what-if machine is not this one: planned from the constants, as before.
    whatif_after = picks("--ram", "16GB")
    assert whatif_after == whatif_before
    assert all(p["speed"]["source"] == "estimate" for p in whatif_after)


def test_fit_says_where_the_speed_comes_from_and_survives_a_bad_file(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "tiny.gguf")
    done = runner.invoke(app, ["fit", str(path), "--prompt-tokens", "1000"])
    assert done.exit_code == 0, done.output
    assert "estimate; run `qwen bench` to calibrate" in done.stdout
    assert "for a 1,000-token prompt" in done.stdout
    _store_for_this_machine(decode=1.1)
    doc = json.loads(runner.invoke(app, ["fit", str(path), "--json", "--prompt-tokens",
                                         "1000"]).stdout)
    assert doc["speed"]["source"] == "calibrated"
    assert doc["speed"]["ttft_s"] > 0 and doc["speed"]["prompt_tok_s"] > 0
    assert doc["speed"]["decode_tok_s"]["low"] <= doc["speed"]["decode_tok_s"]["typical"] \
        <= doc["speed"]["decode_tok_s"]["high"]
    text = runner.invoke(app, ["fit", str(path)]).stdout
    assert "measured on this machine by qwen bench on 2026-11-30, bench.gguf" in text
    whatif = json.loads(runner.invoke(app, ["fit", str(path), "--json", "--cpu-only"]).stdout)
    assert whatif["speed"]["source"] == "estimate"
    calibration_path().write_text("{broken")
    broken = runner.invoke(app, ["fit", str(path), "--json"])
    assert broken.exit_code == 0
    assert json.loads(broken.stdout)["speed"]["source"] == "estimate"
    assert "warning:" in broken.stderr and "qwen bench --reset" in broken.stderr


def test_fingerprint_names_what_makes_the_speed() -> None:
    print_keys = set(fingerprint_of(cpu_box(), 2))
    assert print_keys == {"cpu", "physical_cores", "threads", "ram_gib", "gpus", "llama_cpp"}


def test_chat_serve_bench_and_pull_choose_the_quant_fit_plans_on_a_calibrated_machine() -> None:
    """The quant of a model named without one is one decision: on a calibrated machine,
    `qwen fit` and what chat, serve, bench (select.wanted_model) and pull (default_quant)
    download or load agree, and the calibration is what moved it."""
    from qwencli.catalog import load_catalog
    from qwencli.chat.select import wanted_model
    from qwencli.cli._common import lazy_machine, speed_calibration
    from qwencli.recommend import default_quant
    from qwencli.refs import parse_ref

    catalog = load_catalog()
    uncalibrated = {spec.id: wanted_model(spec.id, lazy_machine()).quant
                    for spec in catalog.models() if spec.params_total < 3e9}
    _store_for_this_machine(decode=50.0)  # far slower than estimated: smaller quants win
    moved = []
    for model_id, before in uncalibrated.items():
        chosen = wanted_model(model_id, lazy_machine(), speed_calibration).quant
        pulled = default_quant(parse_ref(model_id), catalog, lazy_machine(),
                               calibrate=speed_calibration).quant
        done = runner.invoke(app, ["fit", model_id, "--json"])
        assert done.exit_code == 0, done.output
        planned = json.loads(done.stdout)["quant"]
        assert chosen == pulled == planned, model_id
        if chosen != before:
            moved.append(model_id)
    assert moved, "no small model's quant moved with a 50x slower calibration"
