"""`--rpc`, `--rpc-whatif` and `--link` on the command line: what fit and recommend say, the
errors (one line each, the documented exit codes), and the run commands' options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import qwencli.rpc
from qwencli.catalog import clear_cache
from qwencli.cli import _common, app
from qwencli.hardware.cluster import LINK_PRESETS, WorkerOptions, parse_link
from qwencli.hardware.model import Bandwidth
from qwencli.hardware.remote import Worker
from qwencli.hardware.whatif import WhatIf
from tests.gguf_fixtures import write_qwen_gguf

runner = CliRunner()
GIB = 1024**3
M3 = ["--hardware", "apple-m3-max-64gb"]
M2 = ["--hardware", "apple-m2-8gb"]


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch):
    """Catalog figures only: no test here reads a header from a Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clear_cache()
    yield
    clear_cache()


def one_line_error(result: Any, *words: str) -> None:
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.stderr  # the error, and at most one hint
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_fit_with_whatif_workers_says_where_each_part_runs_in_json() -> None:
    result = run("fit", "qwen3-235b-a22b", *M3, "--rpc-whatif", "64GB,64GB", "--link", "10gbe",
                 "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["fits"] is True
    devices = doc["memory"]["devices"]
    assert [d["kind"] for d in devices] == ["worker", "worker", "gpu"]  # workers first
    for device in devices[:2]:
        worker = device["worker"]
        assert worker["whatif"] is True and worker["endpoint"].startswith("what-if-")
        assert worker["link"]["source"] == "preset 10gbe"
        assert worker["link"]["bandwidth_bytes_per_s"] == round(LINK_PRESETS["10gbe"][0])
        assert 0 < device["bytes"] <= device["budget_bytes"]
        assert device["layers"] > 0
    assert doc["n_gpu_layers"] == sum(d["layers"] for d in devices)
    assert len(doc["tensor_split"]) == 3 and sum(doc["tensor_split"]) == pytest.approx(1.0)
    speed = doc["speed"]
    assert 0 < speed["network_share"] < 1 and speed["network_s_per_token"] > 0
    assert speed["limited_by"]
    assert speed["source"] == "estimate"


def test_fit_in_words_names_the_workers_and_the_network_share() -> None:
    result = run("fit", "qwen3-235b-a22b", *M3, "--rpc-whatif", "64GB,64GB", "--link", "10gbe")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "what-if worker 1" in out and "what-if worker 2" in out
    assert "the network takes" in out and "limited by" in out
    assert "Workers" in out and "trusted networks" in out
    assert "10gbe" in out


def test_recommend_picks_a_larger_model_with_workers() -> None:
    alone = json.loads(run("recommend", *M2, "--json").stdout)
    cluster = run("recommend", *M2, "--rpc-whatif", "64GB,64GB", "--link", "10gbe", "--json")
    assert cluster.exit_code == 0, cluster.stderr
    picked = json.loads(cluster.stdout)
    top_alone, top = alone["picks"][0], picked["picks"][0]
    assert top["file"]["size_bytes"] > 4 * top_alone["file"]["size_bytes"]
    assert any(d["worker"] and d["layers"] for d in top["memory"]["devices"])
    assert len(picked["hardware"]["workers"]) == 2
    assert picked["with_workers"] is None  # the first pick already needs the workers
    words = run("recommend", *M2, "--rpc-whatif", "64GB,64GB", "--link", "10gbe").stdout
    assert "where it runs:" in words and "what-if worker 1" in words
    assert "workers" in words.splitlines()[2]  # the table's memory column


def test_recommend_says_what_the_workers_add_when_the_top_pick_fits_alone() -> None:
    """On a 64 GB M3 Max the best chat pick fits the machine alone; two 64 GB workers add a
    larger file of it that does not, shown with its placement in words and in JSON."""
    alone = json.loads(run("recommend", *M3, "--json").stdout)
    assert alone["with_workers"] is None  # no workers: nothing to add
    cluster = run("recommend", *M3, "--rpc-whatif", "64GB,64GB", "--link", "10gbe", "--json")
    assert cluster.exit_code == 0, cluster.stderr
    added = json.loads(cluster.stdout)["with_workers"]
    top_alone = alone["picks"][0]
    assert added["file"]["size_bytes"] > top_alone["file"]["size_bytes"] * 1.2
    assert added["fits"] is True and added["rank"] is None
    assert added["tight"] is False  # a worker filled to its own margin is filled by design
    assert any(d["kind"] == "worker" and d["layers"] for d in added["memory"]["devices"])
    assert added["speed_tok_s"] >= 10  # it reaches the floor
    fit_alone = run("fit", f"{added['model']}:{added['quant']}", *M3, "--json")
    assert json.loads(fit_alone.stdout)["fits"] is False  # it needs the workers
    words = run("recommend", *M3, "--rpc-whatif", "64GB,64GB", "--link", "10gbe").stdout
    section = words[words.index("What the workers add:"):]
    assert f"{added['model']} {added['quant']}" in section.splitlines()[0]
    assert "where it runs:" in section and "what-if worker 1" in section
    assert "does not fit this machine alone" in section


def test_print_llama_args_names_real_workers() -> None:
    def probe(endpoint: str, timeout: float) -> tuple[Worker, ...]:
        return (Worker(endpoint, 0, f"RPC0[{endpoint}]", "NVIDIA GeForce RTX 4090",
                       23 * GIB, 24 * GIB, parse_link("10gbe"),
                       Bandwidth(1_008_000_000_000, "table", "test"), backend="cuda"),)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qwencli.rpc, "probe", probe)
        result = run("fit", "qwen3-235b-a22b", *M3, "--rpc", "10.0.0.2:50052",
                     "--print-llama-args")
    assert result.exit_code == 0, result.stderr
    args = result.stdout.split()
    assert args[args.index("--rpc") + 1] == "10.0.0.2:50052"
    assert "-ts" in args


@pytest.mark.parametrize(("options", "words"), [
    (["--link", "10gbx", "--rpc-whatif", "64GB"], ["--link", "10gbx"]),
    (["--link", "10Gbit,fast", "--rpc-whatif", "64GB"], ["round trip"]),
    (["--link", "1Kbit,1ms", "--rpc-whatif", "64GB"], ["bandwidth"]),
    (["--link", "10gbe"], ["--rpc"]),
    (["--rpc-whatif", "64XB"], ["--rpc-whatif"]),
    (["--rpc-whatif", "64GB,,64GB"], ["empty"]),
    (["--rpc-whatif", "512MB"], ["1 GiB"]),
    (["--rpc-whatif", "no-such-machine"], ["no-such-machine"]),
    (["--rpc", "a:b:c"], ["a:b:c"]),
    (["--rpc", "10.0.0.2:70000"], ["port"]),
    (["--rpc", "10.0.0.2,10.0.0.2:50052"], ["twice"]),
])
def test_bad_worker_options_are_one_line_usage_errors(options: list[str],
                                                      words: list[str]) -> None:
    result = run("fit", "qwen3-8b", *M3, *options)
    assert result.exit_code == 2, result.stderr
    one_line_error(result, *words)


def test_an_unreachable_worker_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(endpoint: str, timeout: float) -> tuple[Worker, ...]:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(qwencli.rpc, "probe", probe)
    result = run("recommend", "--rpc", "127.0.0.1:9", *M3)
    assert result.exit_code == 1
    one_line_error(result, "127.0.0.1:9", "unreachable")


def test_chat_with_an_unreachable_worker_exits_1_naming_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    model = write_qwen_gguf(tmp_path / "tiny.gguf")

    def probe(endpoint: str, timeout: float) -> tuple[Worker, ...]:
        raise TimeoutError("timed out")

    monkeypatch.setattr(qwencli.rpc, "probe", probe)
    result = run("chat", "-m", str(model), "--rpc", "127.0.0.1:9", "--no-log", "hello")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["chat", "serve", "bench"])
def test_run_commands_take_rpc_and_link_but_not_whatif_workers(command: str) -> None:
    help_text = run(command, "--help").stdout
    assert "--rpc HOST:PORT" in help_text and "--link" in help_text
    assert "--rpc-whatif" not in help_text
    result = run(command, "--rpc-whatif", "64GB")
    assert result.exit_code == 2


def test_a_whatif_worker_makes_the_machine_whatif_and_ignores_the_calibration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from qwencli.hardware.probe import probe

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the calibration was read for a what-if machine")

    monkeypatch.setattr("qwencli.calibration.load", must_not_load)
    hw = probe()
    assert hw.source == "probed"
    whatif = WhatIf(workers=WorkerOptions.parse(rpc_whatif="16GB"))
    assert whatif.imagined() and not whatif.changes_hardware()
    assert _common.speed_calibration(hw, whatif) is None
    assert not WhatIf(workers=WorkerOptions.parse(rpc="10.0.0.2")).imagined()


def test_hw_lists_whatif_workers_and_their_budgets() -> None:
    result = run("hw", *M3, "--rpc-whatif", "apple-m2-8gb,32GB", "--link", "wifi", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    names = [w["name"] for w in doc["workers"]]
    assert len(names) == 2 and "apple-m2-8gb" in names[0]
    assert doc["workers"][1]["total_bytes"] == 32 * GIB
    assert [w["endpoint"] for w in doc["budget"]["workers"]] == ["what-if-1", "what-if-2"]
    assert doc["workers"][0]["link"]["source"] == "preset wifi"
    words = run("hw", *M3, "--rpc-whatif", "32GB").stdout
    assert "Worker 0" in words and "worker 0" in words and "assumed: no --link given" in words
