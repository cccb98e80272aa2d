"""`qwen hw` on RPC: whether the installed llama-cpp-python can use other machines, and the exact
rebuild command when it cannot (RPC plus the machine's GPU flags, without pip's wheel cache);
and the lost-worker message, from llama.cpp's abort text. Needs no worker."""

from __future__ import annotations

import dataclasses
import socket

from qwencli import reports
from qwencli.errors import WorkerLost
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.llama_build import reinstall_command
from qwencli.rpc.runtime import lost_error
from tests.hardware.factories import apple, build, machine, nvidia


def _llama_section(hw) -> reports.Section:
    sections = reports.hardware_sections(hw, plan_budget(hw))
    return next(s for s in sections if s.title.startswith("llama.cpp"))


def test_the_rebuild_command_adds_rpc_to_the_gpu_flags_without_the_wheel_cache() -> None:
    command = reinstall_command("cuda", python="/venv/bin/python", rpc=True)
    assert command == ('CMAKE_ARGS="-DGGML_RPC=on -DGGML_CUDA=on" /venv/bin/python -m pip '
                       "install --force-reinstall --no-cache-dir llama-cpp-python")
    assert '"-DGGML_RPC=on -DGGML_METAL=on"' in reinstall_command("metal", rpc=True)
    assert '"-DGGML_RPC=on -DGGML_HIP=on"' in reinstall_command("hip", rpc=True)
    assert 'CMAKE_ARGS="-DGGML_RPC=on" ' in reinstall_command("cpu", rpc=True)


def test_hw_says_a_build_without_rpc_and_how_to_rebuild_it_for_this_machine() -> None:
    cuda_box = machine((nvidia(),), backend="cuda")  # a CUDA build without RPC
    section = _llama_section(cuda_box)
    assert ("RPC (qwen worker, --rpc)", "no") in section.rows
    note = next(n for n in section.notes if "rebuild it with RPC" in n)
    assert '"-DGGML_RPC=on -DGGML_CUDA=on"' in note and "--no-cache-dir" in note
    assert "does not key on CMAKE_ARGS" in note
    # A CPU-only build on a Mac: the rebuild brings Metal too.
    mac = machine((apple(),), backend="cpu")
    assert '"-DGGML_RPC=on -DGGML_METAL=on"' in next(
        n for n in _llama_section(mac).notes if "rebuild it with RPC" in n)


def test_hw_with_an_rpc_build_says_yes_and_no_more() -> None:
    hw = machine()
    hw = dataclasses.replace(hw, llama_cpp=dataclasses.replace(build(), rpc=True))
    section = _llama_section(hw)
    assert ("RPC (qwen worker, --rpc)", "yes") in section.rows
    assert not [n for n in section.notes if "RPC" in n]
    assert reports.hardware_document(hw, plan_budget(hw))["llama_cpp"]["rpc"] is True


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_a_lost_worker_is_named_from_llamas_message_or_found_by_trying_each() -> None:
    gone, alive = _closed_port(), socket.socket()
    alive.bind(("127.0.0.1", 0))
    alive.listen(1)
    up = f"127.0.0.1:{alive.getsockname()[1]}"
    try:
        error = lost_error("ggml-rpc.cpp:35: Remote RPC server crashed or returned malformed "
                           "response", [up, gone])
        assert isinstance(error, WorkerLost)
        assert error.message == f"worker {gone} was lost: connection refused"
        assert "qwen worker" in (error.hint or "")
        named = lost_error(f"ggml-rpc.cpp:547: Failed to connect to {up}\n", [up, gone])
        assert named.message == f"worker {up} was lost: it could not be reached"
        nobody = lost_error("Remote RPC server crashed or returned malformed response", [up])
        assert nobody.message == f"lost the connection to worker {up}"
    finally:
        alive.close()


def test_connections_to_workers_get_keepalive_so_a_vanished_machine_is_noticed() -> None:
    from qwencli.rpc.runtime import KEEPALIVE_IDLE_S, keep_alive

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    other = socket.socket()
    try:
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert keep_alive([endpoint]) == 1  # the client's connection, not the listener's
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert served.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        client.sendall(b"still open")  # setting it through a duplicate closed nothing
        assert served.recv(16) == b"still open"
        assert keep_alive([_closed_port()]) == 0
    finally:
        for sock in (client, served, listener, other):
            sock.close()
