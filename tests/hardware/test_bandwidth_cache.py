"""The RAM bandwidth cache is outside data: an entry that is not a believable measurement is
measured again and rewritten, never believed (0 promised thousands of tok/s, 1e999 raised
OverflowError)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli.cli import app
from qwencli.hardware import bandwidth
from qwencli.paths import cache_dir
from tests.gguf_fixtures import write_qwen_gguf

runner = CliRunner()
KEY = "Some CPU|17179869184|4"
FAKE_RATE = 21_000_000_000.0  # what the stubbed copy "measures"

# What the cache file may hold instead of a measurement, as JSON text: 1e999 is how Python's
# json writes no number (it reads back as infinity), NaN as Python writes it.
BAD_VALUES = ["0", "-1", "1e999", "-1e999", "NaN", '"fast"', "true", "null", "[1]",
              '{"x": 1}', "99", "1e20", "12.5"]


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Stub the copy (a fixed rate) and count the measurements."""
    calls: list[int] = []

    def copy_rounds(n_threads: int) -> float:
        calls.append(n_threads)
        return FAKE_RATE

    monkeypatch.setattr(bandwidth, "_copy_rounds", copy_rounds)
    return calls


def entry(value: str, machine: str = KEY) -> str:
    return (f'{{"machine": "{machine}", "bytes_per_s": {value}, "source": "measured", '
            f'"detail": "measured: memmove copy, 4 thread(s) x 64 MiB"}}')


@pytest.mark.parametrize("value", BAD_VALUES)
def test_an_unbelievable_cached_rate_is_measured_again_and_rewritten(
        tmp_path: Path, measured: list[int], value: str) -> None:
    cache = tmp_path / "ram_bandwidth.json"
    cache.write_text(entry(value))
    got = bandwidth.cached_ram_bandwidth(cache, KEY, 4)
    assert measured == [4]
    assert got.bytes_per_s == int(FAKE_RATE) and got.source == "measured"
    rewritten = json.loads(cache.read_text())
    assert rewritten["bytes_per_s"] == int(FAKE_RATE) and rewritten["machine"] == KEY
    # and the rewritten entry is believed: no third measurement
    assert bandwidth.cached_ram_bandwidth(cache, KEY, 4).bytes_per_s == got.bytes_per_s
    assert measured == [4]


@pytest.mark.parametrize("junk", [
    "", "not json", "[" * 100_000,  # deeper than json can recurse
    entry("5000000000").replace('"measured"', '"nvml"'),
    entry("5000000000").replace('"measured: memmove', '"\\u001b[2Jmeasured: memmove'),
    entry("5000000000", machine="Another CPU|1|1"),
])
def test_junk_entries_are_misses(tmp_path: Path, measured: list[int], junk: str) -> None:
    cache = tmp_path / "ram_bandwidth.json"
    cache.write_text(junk)
    assert bandwidth.cached_ram_bandwidth(cache, KEY, 4).bytes_per_s == int(FAKE_RATE)
    assert measured == [4]


def test_a_believable_entry_is_used_without_measuring(tmp_path: Path,
                                                      measured: list[int]) -> None:
    cache = tmp_path / "ram_bandwidth.json"
    cache.write_text(entry("5000000000"))
    assert bandwidth.cached_ram_bandwidth(cache, KEY, 4).bytes_per_s == 5_000_000_000
    assert measured == []


def test_a_broken_measurement_is_not_cached(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bandwidth, "_copy_rounds", lambda n: 0.0)
    cache = tmp_path / "ram_bandwidth.json"
    assert bandwidth.cached_ram_bandwidth(cache, KEY, 4).bytes_per_s == 0
    assert not cache.exists()


def _poison(value: str) -> Path:
    """Replace the cached rate with `value` (JSON text), keeping this machine's key."""
    cache = cache_dir() / "ram_bandwidth.json"
    doc = json.loads(cache.read_text())
    cache.write_text(entry(value, machine=doc["machine"]))
    return cache


def test_hw_and_fit_measure_again_through_the_command_line(tmp_path: Path) -> None:
    """The real measurement, as `qwen hw --json` and `qwen fit` run it."""
    first = runner.invoke(app, ["hw", "--json"])
    assert first.exit_code == 0, first.stderr
    model = write_qwen_gguf(tmp_path / "m.gguf")
    for value in ("0", "-1", "1e999", "NaN", '"fast"'):
        cache = _poison(value)
        hw = runner.invoke(app, ["hw", "--json"])
        assert hw.exit_code == 0, (value, hw.stderr)
        rate = json.loads(hw.stdout)["memory"]["bandwidth"]["bytes_per_s"]
        assert bandwidth.MIN_BYTES_PER_S <= rate <= bandwidth.MAX_BYTES_PER_S, value
        assert json.loads(cache.read_text())["bytes_per_s"] == rate  # rewritten

        cache = _poison(value)
        fit = runner.invoke(app, ["fit", str(model), "--cpu-only", "--json"])
        assert fit.exit_code == 0, (value, fit.stderr)
        assert "OverflowError" not in fit.output
        rewritten = json.loads(cache.read_text())["bytes_per_s"]
        assert bandwidth.MIN_BYTES_PER_S <= rewritten <= bandwidth.MAX_BYTES_PER_S, value
        # the plan used the new measurement: the same plan as a run that trusts the cache
        again = runner.invoke(app, ["fit", str(model), "--cpu-only", "--json"])
        assert json.loads(again.stdout)["speed"] == json.loads(fit.stdout)["speed"], value
