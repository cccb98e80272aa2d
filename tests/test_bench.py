"""`qwen bench` on real llama.cpp (a small synthetic Qwen3 file): what it measures, what it
stores, the same errors as `qwen chat`, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli.bench import BenchRequest, buffer_sizes, check_request, run_bench
from qwencli.calibration import calibration_path, record_from
from qwencli.cli import app
from qwencli.cli._common import lazy_machine
from qwencli.errors import UsageError
from tests import ceilings
from tests.gguf_fixtures import QwenShape, qwen3_tokenizer, write_header_only_gguf, write_qwen_gguf

runner = CliRunner()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small but real: llama.cpp loads and runs it; the Qwen3 vocabulary and template."""
    return write_qwen_gguf(tmp_path_factory.mktemp("bench") / "small-qwen3.gguf",
                           n_layers=4, n_embd=256, n_head=4, n_head_kv=2, head_dim=64,
                           n_ff=512, tokenizer=qwen3_tokenizer(), vocab=151_936, ctx=4096,
                           tensor_type="F16")


def test_bench_measures_like_llama_bench_and_sets_each_figure_beside_the_estimate(
        model_file: Path) -> None:
    lines: list[str] = []
    result = run_bench(BenchRequest(model=str(model_file), ctx=2048, prompt_tokens=256,
                                    gen_tokens=16, depths=(1024,), repetitions=2, threads=1),
                       machine=lazy_machine(), progress=lines.append)
    tests = [(m.test, m.depth, len(m.runs)) for m in result.measures]
    assert tests == [("pp256", 0, 2), ("tg16", 0, 2), ("pp256 @ d1024", 1024, 2),
                     ("tg16 @ d1024", 1024, 2)]
    for m in result.measures:
        assert all(r > 0 for r in m.runs) and m.predicted > 0 and m.ratio > 0
    # Decoding after 1,024 tokens reads the cache too: not faster than at an empty context.
    assert result.find("decode", 1024).median < result.find("decode").median * 1.5
    assert result.plan.ctx == 2048 and result.threads == 1
    assert result.load_s > 0 and result.ttft_s > 0 and result.ttft_prompt_tokens >= 256
    assert result.peak_rss_bytes > result.plan.host.breakdown.weights
    assert "CPU" in result.buffers and result.buffers["CPU"] > 0
    assert any(line.startswith("loading small-qwen3.gguf") for line in lines)
    assert any("after 1,024 tokens" in line for line in lines)
    record = record_from(result, lazy_machine()()[0])
    assert record.device == "host"
    assert set(record.factors) >= {"decode", "prompt"}


def test_cli_bench_stores_a_calibration_that_fit_then_uses(model_file: Path) -> None:
    done = runner.invoke(app, ["bench", str(model_file), "--quick", "--ctx", "1024",
                               "--threads", "1", "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["schema_version"] == 1
    assert [t["test"] for t in doc["tests"]] == ["pp512", "tg32"]
    assert all(t["tok_s"] > 0 and t["predicted_tok_s"] > 0 for t in doc["tests"])
    assert doc["memory"]["peak_rss_bytes"] > 0 and doc["load_s"] > 0
    assert doc["calibration"]["path"] == str(calibration_path()) and calibration_path().exists()
    assert doc["calibration"]["benches"] == 1
    assert "loading small-qwen3.gguf" in done.stderr
    # Stored for 1 thread: `qwen fit` on the default threads of this machine is another
    # fingerprint unless this machine has one core. Bench the default thread count instead.
    default = runner.invoke(app, ["bench", str(model_file), "--quick", "--ctx", "1024"])
    assert default.exit_code == 0, default.output
    assert "measured / estimate" in default.stdout and "pp512" in default.stdout
    fit = json.loads(runner.invoke(app, ["fit", str(model_file), "--json"]).stdout)
    assert fit["speed"]["source"] == "calibrated"
    assert fit["speed"]["source_detail"].startswith("measured on this machine by qwen bench on ")
    assert "small-qwen3.gguf" in fit["speed"]["source_detail"]
    reset = runner.invoke(app, ["bench", "--reset"])
    assert reset.exit_code == 0 and not calibration_path().exists()
    assert "forgot this machine's calibration" in reset.stderr
    fit = json.loads(runner.invoke(app, ["fit", str(model_file), "--json"]).stdout)
    assert fit["speed"]["source"] == "estimate"


def test_a_model_that_does_not_fit_is_the_same_error_as_chat(tmp_path: Path) -> None:
    huge = QwenShape("qwen2", 80, 8192, 64, 8, 128, 29568, 152_064, 32_768, False)
    path = write_header_only_gguf(tmp_path / "huge.gguf", huge.tensor_specs("F16"),
                                  arch="qwen2", metadata=huge.arch_metadata())
    bench = runner.invoke(app, ["bench", str(path), "--quick"])
    chat = runner.invoke(app, ["chat", "-m", str(path), "hi"])
    assert bench.exit_code == chat.exit_code == 1
    def free(text: str) -> str:  # what is free moves between two probes; the rest is equal
        return re.sub(r"the [\d.]+ GiB this machine has free", "the N GiB ...", text)

    assert free(bench.stderr) == free(chat.stderr)
    assert "this machine has free" in bench.stderr
    assert bench.stderr.startswith("error: huge.gguf needs ") and "Traceback" not in bench.stderr
    assert not calibration_path().exists()


def test_bad_requests_are_usage_errors(model_file: Path) -> None:
    with pytest.raises(UsageError):
        check_request(BenchRequest(repetitions=0))
    with pytest.raises(UsageError):
        check_request(BenchRequest(prompt_tokens=0))
    quick = check_request(BenchRequest(quick=True))
    assert quick.repetitions == 1 and quick.depths == () and quick.gen_tokens == 32
    done = runner.invoke(app, ["bench", str(model_file), "--ctx", "1024", "--depth", "900"])
    assert done.exit_code == 2 and "leaves no room" in done.stderr
    assert not calibration_path().exists()


def test_buffer_sizes_from_llama_cpp_s_log() -> None:
    log = ["load_tensors:   CPU_Mapped model buffer size =   371.45 MiB",
           "load_tensors:  MTL0_Mapped model buffer size =  1000.00 MiB",
           "llama_kv_cache:       MTL0 KV buffer size =   448.00 MiB",
           "llama_context:      MTL0 compute buffer size =   300.75 MiB",
           "llama_context:  CUDA_Host output buffer size =     0.58 MiB",
           "noise: size = 12 MiB"]
    sizes = buffer_sizes(log)
    assert sizes["MTL0"] == (1000 * 2**20) + (448 * 2**20) + int(300.75 * 2**20)
    assert sizes["CPU"] == int(371.45 * 2**20) and "CUDA" in sizes and len(sizes) == 3


def test_ctrl_c_exits_130_and_stores_nothing(model_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "qwencli", "bench", str(model_file), "--ctx", "2048",
         "--threads", "1", "--repetitions", "100", "--gen-tokens", "1000", "--depth", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    seen = []
    for raw in process.stderr:  # wait for the measuring to begin (a marker, not a sleep)
        seen.append(raw.decode())
        if "repetition 1/100" in seen[-1]:
            break
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=ceilings.PROCESS_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 130, (seen, err)
    assert out == b"" and b"Traceback" not in err
    assert err.decode().strip().endswith("interrupted")
    assert not calibration_path().exists()


def test_a_long_piped_prompt_is_told_how_long_it_waits(model_file: Path) -> None:
    from qwencli.chat.terminal import long_prompt_note
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.shapes import shape_from_gguf

    hw, budget = lazy_machine()()
    the_plan = plan(shape_from_gguf(read_model(model_file)), hw, budget, Options(ctx=4096))
    assert long_prompt_note(100, the_plan) is None
    note = long_prompt_note(20_000, the_plan)
    assert note is not None and note.startswith("reading a 20,000-token prompt: about ")
