"""Ask a `qwen worker` (llama.cpp's RPC server) what it serves, over its own protocol, with
timeouts.

Why in Python: llama.cpp's client connects without a timeout and aborts the whole process when
a worker does not answer, and a worker serves one client at a time (a busy one accepts the
connection and then says nothing). So `probe` talks to the worker first, with a deadline on
every step, and only a worker that answered is handed to llama.cpp.

The wire format (ggml-rpc.cpp, protocol 7.0.0, little-endian, structs packed): a request is
| command (1 byte) | size (8 bytes) | payload |; a response is | size (8 bytes) | payload |.
The first command of a connection must be HELLO.

The link is measured, not assumed: the round trip is the fastest of a few GET_DEVICE_MEMORY
calls, and the bandwidth is the time to upload PROBE_UPLOAD_BYTES into a buffer allocated on
the worker for that (freed at once), less one round trip.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from qwencli.errors import WorkerUnreachable
from qwencli.hardware.remote import Link, Worker

PROTO_MAJOR = 7
CONN_CAPS_SIZE = 24
CMD_ALLOC_BUFFER = 0
CMD_GET_ALIGNMENT = 1
CMD_GET_MAX_SIZE = 2
CMD_BUFFER_GET_BASE = 3
CMD_FREE_BUFFER = 4
CMD_SET_TENSOR = 6
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
MAX_DEVICES = 16  # a bound on what a worker may claim (llama.cpp's GGML_RPC_MAX_SERVERS)
GGML_TYPE_I8 = 24  # ggml.h: one byte per element, so any byte count is a valid tensor
PROBE_UPLOAD_BYTES = 2 << 20  # 2 MiB: 17 ms at 1 Gb/s, 0.17 s at 100 Mb/s
RTT_SAMPLES = 5

# struct rpc_tensor (ggml-rpc.cpp): id, type, buffer, ne[4], nb[4], op, op_params[16], flags,
# src[10], view_src, view_offs, data, name[64], use_count
_RPC_TENSOR = struct.Struct("<QIQ4I4II16ii10QQQQ64si")
assert _RPC_TENSOR.size == 296


@dataclass(frozen=True)
class Probe:
    """What one worker answered."""

    endpoint: str
    version: tuple[int, int, int]
    devices: tuple[tuple[int, int], ...]  # (free, total) bytes per device
    link: Link
    kinds: tuple[str, ...] = ()  # "CPU" or "GPU" per device (see `_kind`)


class _Connection:
    def __init__(self, endpoint: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        host, _, port = endpoint.rpartition(":")
        self.deadline = time.monotonic() + timeout_s
        try:
            self.sock = socket.create_connection((host.strip("[]"), int(port)),
                                                 timeout=timeout_s)
        except TimeoutError:
            raise self._error(f"no answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise self._error(exc.strerror or str(exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _error(self, why: str) -> WorkerUnreachable:
        return WorkerUnreachable(
            f"worker {self.endpoint} cannot be reached: {why}",
            hint=f"start it there with `qwen worker --host ADDRESS --port PORT`, and check "
                 f"that this machine can reach {self.endpoint}")

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._error("it stopped answering (busy with another client, or not a "
                              "qwen worker?)")
        return left

    def _recv(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            self.sock.settimeout(self._remaining())
            try:
                chunk = self.sock.recv(size - len(chunks))
            except TimeoutError:
                raise self._error("it accepted the connection but did not answer (busy with "
                                  "another client, or not a qwen worker?)") from None
            except OSError as exc:
                raise self._error(exc.strerror or str(exc)) from None
            if not chunk:
                raise self._error("it closed the connection (a different llama.cpp RPC "
                                  "version, or not a qwen worker?)")
            chunks += chunk
        return bytes(chunks)

    def call(self, command: int, payload: bytes, answer_size: int | None) -> bytes:
        """Send one command; read its answer of exactly `answer_size` bytes (None: none)."""
        self.sock.settimeout(self._remaining())
        try:
            self.sock.sendall(bytes([command]) + struct.pack("<Q", len(payload)) + payload)
        except TimeoutError:
            raise self._error("it stopped reading (busy, or a slow link)") from None
        except OSError as exc:
            raise self._error(exc.strerror or str(exc)) from None
        if answer_size is None:
            return b""
        (size,) = struct.unpack("<Q", self._recv(8))
        if size != answer_size:
            raise self._error(f"it answered {size} bytes where {answer_size} were expected "
                              "(a different llama.cpp RPC version?)")
        return self._recv(size)

    def close(self) -> None:
        self.sock.close()


def _hello(conn: _Connection) -> tuple[int, int, int]:
    answer = conn.call(CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE)
    major, minor, patch = answer[0], answer[1], answer[2]
    if major != PROTO_MAJOR:
        raise WorkerUnreachable(
            f"worker {conn.endpoint} speaks llama.cpp RPC protocol {major}.{minor}.{patch}; "
            f"this llama-cpp-python speaks {PROTO_MAJOR}.x",
            hint="install the same llama-cpp-python version on every machine")
    return major, minor, patch


def _device_memory(conn: _Connection, device: int) -> tuple[int, int]:
    free, total = struct.unpack("<QQ", conn.call(CMD_GET_DEVICE_MEMORY,
                                                 struct.pack("<I", device), 16))
    return free, total


CPU_ALIGNMENT = 32  # ggml's TENSOR_ALIGNMENT: the CPU buffer type's
NO_LIMIT = 2**64 - 1  # SIZE_MAX: a buffer type that states no largest buffer (the CPU's)


def _kind(conn: _Connection, device: int) -> str:
    """"CPU" or "GPU". The protocol does not name a worker's devices, but their buffer types
    tell: the CPU's aligns to 32 bytes and has no largest buffer; CUDA/ROCm align to 128,
    Metal and Vulkan state a largest buffer."""
    (alignment,) = struct.unpack("<Q", conn.call(CMD_GET_ALIGNMENT,
                                                 struct.pack("<I", device), 8))
    (max_size,) = struct.unpack("<Q", conn.call(CMD_GET_MAX_SIZE, struct.pack("<I", device), 8))
    return "CPU" if alignment == CPU_ALIGNMENT and max_size == NO_LIMIT else "GPU"


def _upload_seconds(conn: _Connection, size: int) -> float | None:
    """Seconds to upload `size` bytes into a buffer on device 0 and hear back; None when the
    worker cannot allocate one."""
    remote, remote_size = struct.unpack("<QQ", conn.call(
        CMD_ALLOC_BUFFER, struct.pack("<IQ", 0, size), 16))
    if not remote or remote_size < size:
        return None
    try:
        (base,) = struct.unpack("<Q", conn.call(CMD_BUFFER_GET_BASE,
                                                struct.pack("<Q", remote), 8))
        tensor = _RPC_TENSOR.pack(
            1, GGML_TYPE_I8, remote, size, 1, 1, 1, 1, size, size, size, 0,
            *([0] * 16), 0, *([0] * 10), 0, 0, base, b"qwen-link-probe", 0)
        payload = tensor + b"\0" + struct.pack("<Q", 0) + bytes(size)  # no cache, offset 0
        start = time.perf_counter()
        conn.call(CMD_SET_TENSOR, payload, None)
        _device_memory(conn, 0)  # the answer comes after the upload was read
        return time.perf_counter() - start
    finally:
        conn.call(CMD_FREE_BUFFER, struct.pack("<Q", remote), None)


def probe_endpoint(endpoint: str, timeout_s: float = 5.0, *,
                   measure_bandwidth: bool = True) -> Probe:
    """Ask the worker at `endpoint` ("host:port") its devices' memory and measure the link.
    Raises WorkerUnreachable (naming the worker) within about `timeout_s`."""
    conn = _Connection(endpoint, timeout_s)
    try:
        version = _hello(conn)
        (count,) = struct.unpack("<I", conn.call(CMD_DEVICE_COUNT, b"", 4))
        if not 1 <= count <= MAX_DEVICES:
            raise WorkerUnreachable(f"worker {endpoint} says it serves {count} devices")
        devices = tuple(_device_memory(conn, d) for d in range(count))
        kinds = tuple(_kind(conn, d) for d in range(count))
        rtts = []
        for _ in range(RTT_SAMPLES):
            start = time.perf_counter()
            _device_memory(conn, 0)
            rtts.append(time.perf_counter() - start)
        rtt = min(rtts)
        link = Link(bandwidth_bytes_per_s=0.0, rtt_s=rtt, source="measured",
                    detail=f"round trip {rtt * 1e3:.2f} ms (fastest of {RTT_SAMPLES})")
        if measure_bandwidth:
            seconds = _upload_seconds(conn, PROBE_UPLOAD_BYTES)
            if seconds is not None:
                bandwidth = PROBE_UPLOAD_BYTES / max(seconds - rtt, 1e-6)
                link = Link(bandwidth_bytes_per_s=bandwidth, rtt_s=rtt, source="measured",
                            detail=f"{link.detail}; {PROBE_UPLOAD_BYTES >> 20} MiB uploaded in "
                                   f"{seconds * 1e3:.1f} ms")
    finally:
        conn.close()
    return Probe(endpoint=endpoint, version=version, devices=devices, link=link, kinds=kinds)


def probe(endpoint: str, timeout_s: float = 5.0) -> tuple[Worker, ...]:
    """The worker's devices as the planner places layers on them (one Worker per device).
    Device names follow llama.cpp's ("RPC<n>[host:port]", numbered here per worker); the
    description starts with "CPU" or "GPU" (what the device computes like)."""
    answer = probe_endpoint(endpoint, timeout_s)
    return tuple(
        Worker(endpoint=endpoint, device=index, name=f"RPC{index}[{endpoint}]",
               description=f"{kind} (device {index} of the worker at {endpoint})",
               free_bytes=free, total_bytes=total, link=answer.link)
        for index, ((free, total), kind) in enumerate(zip(answer.devices, answer.kinds,
                                                          strict=True)))
