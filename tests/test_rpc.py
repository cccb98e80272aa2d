"""One model across this machine and two `qwen worker` processes (llama.cpp's RPC backend, on
loopback): it answers, the same text with a fixed seed as twice and as fully local; the workers
hold what was put on them; a worker that is not there, or is lost mid-answer, is one line and
exit code 1 within 30 s, and the conversation log keeps what was typed.

Workers are real `qwen worker` processes (tests/rpc_workers.py), waited for by their ready line.
The plan is built by hand (tests/rpc_workers.py run as `qwen`): on the tiny 2-layer model,
the embeddings and the first layer on this machine's CPU, the second layer on one worker and
the output layer on the other (llama.cpp offloads from the end).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from qwencli.logs import ConversationLog
from qwencli.rpc import library
from tests import ceilings
from tests.chat_process import PROMPT, terminal_env
from tests.rpc_workers import (
    LONG_PROMPT,
    ROOT,
    RunningWorker,
    chat_memory,
    free_port,
    workers,
)

LOST_WITHIN_S = 30.0  # the bound for a lost or unreachable worker to be said
LAYERS = 2  # as llama.cpp's n_gpu_layers: the last repeating layer and the output layer



@pytest.fixture(scope="module", autouse=True)
def rpc_build() -> None:
    """These tests need llama-cpp-python built with RPC (.ci/run builds it so): without it
    they fail here, saying so, rather than being skipped."""
    if not library.supports_rpc():
        pytest.fail("the installed llama-cpp-python has no RPC backend; "
                    f"{library.reinstall_hint()}")


@pytest.fixture
def two(tmp_path: Path) -> Iterator[list[RunningWorker]]:
    with workers(tmp_path / "workers", 2) as started:
        yield started


def _env(cache: Path, log: Path, endpoints: list[str], **extra: str) -> dict[str, str]:
    env = terminal_env(cache, QWEN_LOG_DB=str(log), **extra)
    env.pop("QWEN_NOLOG", None)
    if endpoints:
        env.update(QWEN_TEST_RPC_WORKERS=",".join(endpoints), QWEN_TEST_RPC_LAYERS=str(LAYERS))
    return env


def _qwen(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.rpc_workers", *args]


def _answer(model: Path, env: dict[str, str], seed: int = 3) -> str:
    done = subprocess.run(
        _qwen("chat", "-m", str(model), "--threads", "1", "--seed", str(seed), "-n", "24",
              "--json", "Tell me a story."),
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=ceilings.PROCESS_S)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["answer"]


def _logged_user_messages(log: Path) -> list[str]:
    with ConversationLog.open(log, read_only=True) as opened:
        latest = opened.latest_id()
        assert latest is not None
        return [m.content for m in opened.get(latest).active if m.role == "user"]


def test_a_model_split_over_two_workers_answers_as_it_does_alone(
        model: Path, cache: Path, tmp_path: Path, two: list[RunningWorker]) -> None:
    endpoints = [w.endpoint for w in two]
    split = _answer(model, _env(cache, tmp_path / "a.db", endpoints))
    assert split.strip()
    assert _answer(model, _env(cache, tmp_path / "b.db", endpoints)) == split
    assert _answer(model, _env(cache, tmp_path / "c.db", [])) == split
    # Both workers served a client and are ready for the next one.
    for worker in two:
        assert worker.process.poll() is None


def test_the_layers_are_on_the_workers_and_a_lost_worker_ends_the_session_in_one_line(
        model: Path, cache: Path, tmp_path: Path, two: list[RunningWorker],
        record_property: pytest.RecordProperty) -> None:
    log = tmp_path / "log.db"
    child = pexpect.spawn(sys.executable,
                          ["-m", "tests.rpc_workers", "chat", "-m", str(model), "--threads",
                           "1", "--seed", "1", "-n", "8"],
                          env=_env(cache, log, [w.endpoint for w in two]), cwd=str(ROOT),
                          encoding="utf-8", timeout=ceilings.PROCESS_S, dimensions=(50, 250))
    try:
        child.expect_exact("/bye or Ctrl-D to leave")
        child.expect_exact(PROMPT)
        # Loaded: each worker now holds its layer's weights and KV cache and a compute buffer.
        growth = [w.rss_growth() for w in two]
        record_property("worker_rss_growth_bytes", growth)
        assert all(g > 0 for g in growth), growth
        child.sendline("first question")
        child.expect_exact(PROMPT)
        two[1].kill()
        start = time.monotonic()
        child.sendline("second question")
        child.expect(pexpect.EOF)
        elapsed = time.monotonic() - start
        child.close()
    finally:
        if child.isalive():
            child.terminate(force=True)
    errors = [line for line in child.before.splitlines() if line.startswith("error:")]
    assert errors == [f"error: worker {two[1].endpoint} was lost: connection refused"], \
        child.before
    assert child.exitstatus == 1
    assert elapsed < LOST_WITHIN_S
    assert _logged_user_messages(log) == ["first question", "second question"]


def test_a_worker_killed_mid_answer_is_one_line_and_the_question_is_kept(
        model: Path, cache: Path, tmp_path: Path, two: list[RunningWorker]) -> None:
    log = tmp_path / "log.db"
    process = subprocess.Popen(
        _qwen("chat", "-m", str(model), "--threads", "1", "--seed", "5", "-n", "3000",
              "Tell me a very long story."),
        env=_env(cache, log, [w.endpoint for w in two]), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        first = process.stdout.read(1)  # the answer has begun: the model is running remotely
        assert first, process.stderr.read().decode()
        two[0].kill()
        start = time.monotonic()
        code = process.wait(ceilings.PROCESS_S)
        elapsed = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: worker {two[0].endpoint} was lost: connection refused"], stderr
    assert "Traceback" not in stderr and "ggml" not in stderr
    assert "`qwen chat -c` continues this conversation" in stderr
    assert code == 1
    assert elapsed < LOST_WITHIN_S
    assert _logged_user_messages(log) == ["Tell me a very long story."]


def _silent_listener() -> tuple[socket.socket, str]:
    """Something that accepts connections and never answers (a busy worker looks so)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_worker_is_named_in_one_line(model: Path, cache: Path, tmp_path: Path,
                                                    kind: str) -> None:
    listener = None
    if kind == "silent":
        listener, endpoint = _silent_listener()
    else:
        endpoint = f"127.0.0.1:{free_port()}"
    try:
        start = time.monotonic()
        done = subprocess.run(
            _qwen("chat", "-m", str(model), "--threads", "1", "-n", "4", "hello"),
            env=_env(cache, tmp_path / "log.db", [endpoint]), cwd=ROOT, capture_output=True,
            text=True, timeout=ceilings.PROCESS_S)
        elapsed = time.monotonic() - start
    finally:
        if listener is not None:
            listener.close()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: worker {endpoint} cannot be reached: "), done.stderr
    assert ("refused" in errors[0]) == (kind == "refused")
    assert done.returncode == 1 and done.stdout == ""
    assert elapsed < LOST_WITHIN_S


def test_probe_reads_the_workers_memory_and_measures_the_link(two: list[RunningWorker]) -> None:
    from qwencli.rpc import probe  # as the planner's command line imports it

    found = probe(two[0].endpoint)
    assert len(found) == 1
    device = found[0]
    assert device.endpoint == two[0].endpoint and device.device == 0
    assert 0 < device.free_bytes <= device.total_bytes
    assert device.description.startswith("CPU")  # a CPU worker: computes like a CPU
    assert device.link.source == "measured"
    assert 0 < device.link.rtt_s < 1.0
    assert device.link.bandwidth_bytes_per_s > 1e6  # loopback: far above a megabyte per second
    # The worker freed the probe's buffer and serves the next client.
    assert probe(two[0].endpoint)[0].total_bytes == device.total_bytes


def test_a_worker_answering_another_client_is_reported_busy_not_waited_for(
        two: list[RunningWorker]) -> None:
    from qwencli.errors import WorkerUnreachable
    from qwencli.rpc.protocol import probe_endpoint

    host, port = two[0].endpoint.split(":")
    holder = socket.create_connection((host, int(port)))  # a client the worker is serving
    try:
        holder.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))  # HELLO
        assert len(holder.recv(64)) > 0
        start = time.monotonic()
        with pytest.raises(WorkerUnreachable, match=two[0].endpoint):
            probe_endpoint(two[0].endpoint, timeout_s=1.0)
        assert time.monotonic() - start < 5
    finally:
        holder.close()


# ------------------------------------------------------------------------------------------
# `qwen worker` itself


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "qwencli", "worker", "--threads", "1",
                             *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})


def _ready(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("listening on "):
            return lines
    stderr = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"no ready line: {lines} {stderr}")


def test_worker_says_what_it_serves_and_stops_on_sigterm_and_ctrl_c(tmp_path: Path) -> None:
    import signal

    port = free_port()
    process = _worker("--port", str(port), "--cache", str(tmp_path / "c"))
    try:
        lines = _ready(process)
        assert lines[0].startswith(f"qwen worker: llama.cpp RPC server on 127.0.0.1:{port}")
        assert any("device 0: CPU" in line and "free of" in line for line in lines), lines
        assert lines[-1] == f"listening on 127.0.0.1:{port}\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(ceilings.PROCESS_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert (tmp_path / "c").is_dir()
    process = _worker("--port", str(port), "--cache", str(tmp_path / "c"))
    try:
        _ready(process)  # the port is free again at once
        process.send_signal(signal.SIGINT)
        assert process.wait(ceilings.PROCESS_S) == 130
    finally:
        if process.poll() is None:
            process.kill()
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_a_worker_on_a_network_address_warns_every_start(tmp_path: Path) -> None:
    process = _worker("--host", "0.0.0.0", "--port", str(free_port()), "--cache",
                      str(tmp_path / "c"))
    try:
        _ready(process)
    finally:
        process.terminate()
        process.wait(ceilings.PROCESS_S)
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert "warning:" in stderr and "no authentication" in stderr, stderr
    assert "anyone who can reach this port can use this machine's memory" in stderr


def test_a_worker_on_loopback_does_not_warn(two: list[RunningWorker]) -> None:
    two[0].stop()
    assert "warning" not in two[0].stderr.rest()


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "qwencli", "worker", "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True,
                              timeout=ceilings.PROCESS_S, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == \
        f"error: port {port} on 127.0.0.1 is in use (another qwen worker?)"
    assert done.stdout == ""


def test_worker_host_must_be_an_ipv4_address() -> None:
    done = subprocess.run([sys.executable, "-m", "qwencli", "worker", "--host", "localhost"],
                          cwd=ROOT, capture_output=True, text=True, timeout=ceilings.PROCESS_S,
                          env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 2
    assert done.stderr.startswith("error: --host must be an IPv4 address")


MEMORY_WITHIN = 0.05  # the bound: fit --rpc against each worker's RSS growth


@pytest.fixture(scope="module")
def qwen_like_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3-shaped model scaled down (Qwen3-0.6B's proportions: FFN 3x and attention 2x the
    width), with layers wide enough (7 MiB each, F16; ten on one worker) that what a worker
    holds is far above what a process's resident memory moves by on its own."""
    from tests.gguf_fixtures import qwen3_tokenizer, write_qwen_gguf

    return write_qwen_gguf(tmp_path_factory.mktemp("qwen-like") / "qwen-like.gguf", n_layers=12,
                           n_embd=512, n_head=8, n_head_kv=2, head_dim=128, n_ff=1536,
                           vocab=151_936, ctx=4096, tensor_type="F16",
                           tokenizer=qwen3_tokenizer())


def test_fit_rpc_matches_what_each_worker_holds(qwen_like_model: Path, cache: Path,
                                                tmp_path: Path, two: list[RunningWorker],
                                                record_property: pytest.RecordProperty) -> None:
    """`qwen fit --rpc` plans each worker's bytes; `qwen chat --rpc` loads that plan. After a
    prompt longer than a micro-batch each worker's resident memory has grown by its planned
    bytes, and its peak by its planned peak (loading), within 5%."""
    endpoints = ",".join(w.endpoint for w in two)
    placement = ["--rpc", endpoints, "--gpu-layers", "11", "--ctx", "1024"]
    env = _env(cache, tmp_path / "log.db", [])
    done = subprocess.run(
        [sys.executable, "-m", "qwencli", "fit", str(qwen_like_model), "--json", *placement],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=ceilings.PROCESS_S)
    assert done.returncode == 0, done.stderr
    devices = {d["name"]: d for d in json.loads(done.stdout)["memory"]["devices"]}
    planned = [devices[f"RPC0[{w.endpoint}]"] for w in two]
    assert all(d["layers"] for d in planned), planned  # both workers hold part of it
    measured = chat_memory(qwen_like_model, two, placement, [LONG_PROMPT], env)
    growth, peaks = measured.after[0], measured.peaks
    record_property("worker_rss_growth_bytes", growth)
    record_property("worker_peak_rss_growth_bytes", peaks)
    record_property("worker_planned_bytes", [(d["bytes"], d["peak_bytes"]) for d in planned])
    for device, grown, peak in zip(planned, growth, peaks, strict=True):
        assert grown == pytest.approx(device["bytes"], rel=MEMORY_WITHIN), (planned, growth)
        assert peak == pytest.approx(device["peak_bytes"], rel=MEMORY_WITHIN), (planned, peaks)
