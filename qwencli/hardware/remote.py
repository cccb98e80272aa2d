"""Other machines' devices, served by llama.cpp's RPC backend (`qwen worker`): what the planner
knows of them. Pure records and parsers; asking a worker over the network lives with the
runtime (qwencli.rpc), which returns these records.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from qwencli.errors import UsageError
from qwencli.hardware.model import Bandwidth

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
MAX_WORKERS = 16  # a bound on what a command line may ask the planner to consider


@dataclass(frozen=True)
class Link:
    """The network between this machine and one worker: what each token's activations and
    round trips cost."""

    bandwidth_bytes_per_s: float
    rtt_s: float  # one request and its answer
    source: str  # "measured" | "stated" | "preset NAME"
    detail: str = ""


@dataclass(frozen=True)
class Worker:
    """One device a worker serves, as the planner places layers on it."""

    endpoint: str  # "host:port", as llama.cpp's RPC backend takes it
    device: int  # the device's number on that worker (0 for a worker with one device)
    name: str  # what the plan calls it, e.g. "RPC0[10.0.0.2:50052]"
    description: str  # what the worker serves: "CPU", a GPU's name, or "what-if"
    free_bytes: int
    total_bytes: int
    link: Link
    bandwidth: Bandwidth | None = None  # the device's memory bandwidth, when known
    whatif: bool = False
    # the llama.cpp backend of the device ("cpu", "cuda", "metal", ...); "" when unknown
    # (then a description starting with "CPU" means the CPU: hardware.cluster.is_gpu)
    backend: str = ""


def is_gpu(worker: Worker) -> bool:
    """Whether the worker's device computes like a GPU (else like a CPU): its backend when
    known, else its description ("CPU" for a worker's CPU device)."""
    if worker.backend:
        return worker.backend != "cpu"
    return not worker.description.strip().upper().startswith("CPU")


def parse_endpoint(text: str) -> str:
    """'host:port', '[v6]:port' or 'host' (port 50052) -> 'host:port'; UsageError (a sentence
    naming what was wrong) otherwise."""
    raw = text.strip()
    if not raw or len(raw) > 300 or any(c.isspace() or not c.isprintable() for c in raw):
        raise UsageError(f"not a worker address: {text!r} (expected HOST:PORT)")
    host, port_text = raw, str(DEFAULT_PORT)
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or (end + 1 < len(raw) and raw[end + 1] != ":"):
            raise UsageError(f"not a worker address: {text!r} (expected [IPv6]:PORT)")
        host = raw[1:end]
        port_text = raw[end + 2:] if end + 1 < len(raw) else port_text
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UsageError(f"not an IPv6 address in {text!r}") from exc
        host = f"[{host}]"
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif raw.count(":") > 1:
        raise UsageError(f"not a worker address: {text!r} (write an IPv6 address as [ADDR]:PORT)")
    if not host or (not host.startswith("[") and not all(c.isalnum() or c in ".-_" for c in host)):
        raise UsageError(f"not a worker address: {text!r} (bad host name)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"not a worker address: {text!r} (the port must be 1-65535)")
    return f"{host}:{int(port_text)}"


def parse_endpoints(text: str) -> tuple[str, ...]:
    """'a:1,b:2' -> ('a:1', 'b:2'): each checked, no repeats, at most MAX_WORKERS."""
    endpoints = tuple(parse_endpoint(part) for part in text.split(","))
    if len(endpoints) > MAX_WORKERS:
        raise UsageError(f"at most {MAX_WORKERS} workers, got {len(endpoints)}")
    if len(set(endpoints)) != len(endpoints):
        raise UsageError(f"a worker is named twice in {text!r}")
    return endpoints
