"""Workers in the machine picture: `--rpc`, `--rpc-whatif` and `--link`, as the planner sees them.

A plan across machines places layers on other computers' devices, served by llama.cpp's RPC
backend (`qwen worker`). This module turns the options into `Worker` records (hardware.remote)
and is pure apart from the probe it is handed: asking a real worker over the network is the
runtime's (`qwencli.rpc.probe`), which the command line passes in as a callable.

Rules:

* `--rpc HOST:PORT[,HOST:PORT...]`: real workers. Each is probed (its devices, their free
  memory, the link measured by a short exchange); `--link` given too replaces the measured
  link with the stated one. A worker that cannot be reached is a one-line error naming it
  (`WorkerUnreachable`, exit 1).
* `--rpc-whatif SPEC[,SPEC...]`: imagined workers, to plan before buying or wiring. A SPEC is
  either a size (`64GB`) or a hardware profile name (`apple-m3-max-64gb`, see
  profiles/hardware/). A size alone is a machine *like the one planned for* (this machine, or
  the `--hardware` profile) with that much memory on its main device: a unified-memory GPU
  (Apple) gets the pool and Metal's default working set of it; a discrete GPU gets that much
  VRAM at the same bandwidth; a machine without a usable GPU gets that much RAM less the idle
  OS reserve, at the same RAM bandwidth. A profile brings its own devices: each usable GPU, else
  its CPU with its available RAM. What was assumed is written in the worker's description.
  A what-if worker makes the whole machine what-if: no `qwen bench` calibration applies.
* `--link PRESET` or `--link BANDWIDTH,RTT` (e.g. `1.25GB/s,0.2ms`, `10Gbit,0.1ms`): the
  network to every worker. Without it, real workers keep their measured link and what-if
  workers assume `DEFAULT_WHATIF_LINK`, and say so.

Presets (`LINK_PRESETS`): wired Ethernet rates are IEEE 802.3 line rates (1000BASE-T,
2.5GBASE-T in 802.3bz, 10GBASE-T in 802.3an) times the TCP payload share of a 1500-byte-MTU
frame (1448 payload bytes of 1538 on the wire with TCP timestamps: 94.1 %, the figure iperf
reaches on a clean link). Round trips and the Wi-Fi, Thunderbolt and loopback figures are
assumptions, named as such: measure your own with `qwen worker` and `--rpc`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from qwencli.errors import QwenError, UsageError, WorkerUnreachable
from qwencli.hardware import metal
from qwencli.hardware.budget import build_can_drive
from qwencli.hardware.model import Bandwidth, Gpu, Hardware
from qwencli.hardware.remote import MAX_WORKERS, Link, Worker, is_gpu, parse_endpoints
from qwencli.units import format_bytes, format_rate, parse_size

GIB = 1024**3
TCP_PAYLOAD_SHARE = 1448 / 1538  # TCP payload per 1500-MTU Ethernet frame on the wire
DEFAULT_WHATIF_LINK = "1gbe"
PROBE_TIMEOUT_S = 5.0


def _ethernet(gbit: float) -> float:
    return gbit * 1e9 / 8 * TCP_PAYLOAD_SHARE


# name -> (bytes/s, round trip s, where the figures come from)
LINK_PRESETS: dict[str, tuple[float, float, str]] = {
    "loopback": (4e9, 0.05e-3,
                 "assumed: TCP over the loopback interface of one machine (Linux loopback "
                 "carries tens of Gbit/s; 4 GB/s and 50 us are cautious)"),
    "1gbe": (_ethernet(1), 0.3e-3,
             "IEEE 802.3 1000BASE-T line rate x 94.1 % TCP payload; 0.3 ms round trip "
             "assumed (one switch)"),
    "2.5gbe": (_ethernet(2.5), 0.3e-3,
               "IEEE 802.3bz 2.5GBASE-T line rate x 94.1 % TCP payload; 0.3 ms round trip "
               "assumed (one switch)"),
    "10gbe": (_ethernet(10), 0.2e-3,
              "IEEE 802.3an 10GBASE-T line rate x 94.1 % TCP payload; 0.2 ms round trip "
              "assumed (one switch)"),
    "thunderbolt": (_ethernet(10), 0.1e-3,
                    "assumed: IP over a Thunderbolt cable between two computers, counted "
                    "as 10 Gbit/s (what such links are reported to sustain varies, 10-20 "
                    "Gbit/s), 0.1 ms round trip"),
    "wifi": (400e6 / 8, 3e-3,
             "assumed: a good Wi-Fi 5/6 link sustains about 400 Mbit/s with 3 ms round "
             "trips; Wi-Fi varies widely, measure it"),
}

_BANDWIDTH_UNITS = {"gbit": 1e9 / 8, "gbps": 1e9 / 8, "gb/s": 1e9, "mbit": 1e6 / 8,
                    "mbps": 1e6 / 8, "mb/s": 1e6}
_RTT_UNITS = {"ms": 1e-3, "us": 1e-6, "µs": 1e-6, "s": 1.0}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zµ/]+)\s*$", re.IGNORECASE)
MIN_LINK_BYTES_PER_S = 1e6 / 8  # 1 Mbit/s: anything slower is a typo
MAX_LINK_BYTES_PER_S = 1e12 / 8  # 1 Tbit/s
MAX_RTT_S = 10.0


def parse_link(text: str) -> Link:
    """`--link`: a preset name, or 'BANDWIDTH,RTT' (e.g. '1.25GB/s,0.2ms', '10Gbit,0.1ms');
    UsageError naming what was wrong otherwise."""
    raw = text.strip().lower()
    if raw in LINK_PRESETS:
        bandwidth, rtt, source = LINK_PRESETS[raw]
        return Link(bandwidth, rtt, f"preset {raw}", source)
    presets = ", ".join(LINK_PRESETS)
    parts = raw.split(",")
    if len(parts) != 2:
        raise UsageError(f"--link {text!r} is not a preset ({presets}) nor BANDWIDTH,RTT "
                         "(e.g. 1.25GB/s,0.2ms)")
    bandwidth = _number(parts[0], _BANDWIDTH_UNITS, "--link bandwidth", "e.g. 10Gbit or 1.25GB/s")
    rtt = _number(parts[1], _RTT_UNITS, "--link round trip", "e.g. 0.2ms or 200us")
    if not MIN_LINK_BYTES_PER_S <= bandwidth <= MAX_LINK_BYTES_PER_S:
        raise UsageError(f"--link bandwidth {parts[0].strip()!r} is outside 1 Mbit/s-1 Tbit/s")
    if rtt > MAX_RTT_S:
        raise UsageError(f"--link round trip {parts[1].strip()!r} is over {MAX_RTT_S:g} s")
    return Link(bandwidth, rtt, "stated", f"--link {text.strip()}")


def _number(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = _NUMBER_UNIT.match(text)
    if not match or match.group(2).lower() not in units:
        raise UsageError(f"{what} {text.strip()!r} is not a number with a unit ({example}; "
                         f"units: {', '.join(units)})")
    return float(match.group(1)) * units[match.group(2).lower()]


def link_text(link: Link) -> str:
    """'9.41 Gbit/s, 0.20 ms round trip (preset 10gbe)': networks are quoted in bits."""
    return (f"{link.bandwidth_bytes_per_s * 8 / 1e9:.3g} Gbit/s, {link.rtt_s * 1e3:.2f} ms "
            f"round trip ({link.source})")


@dataclass(frozen=True)
class WorkerOptions:
    """`--rpc`, `--rpc-whatif` and `--link` as given, checked (UsageError) but not resolved."""

    endpoints: tuple[str, ...] = ()
    whatif: tuple[str, ...] = ()  # sizes or profile names
    link: Link | None = None

    @classmethod
    def parse(cls, rpc: str | None = None, rpc_whatif: str | None = None,
              link: str | None = None) -> WorkerOptions:
        endpoints = parse_endpoints(rpc) if rpc is not None else ()
        specs: tuple[str, ...] = ()
        if rpc_whatif is not None:
            specs = tuple(part.strip() for part in rpc_whatif.split(","))
            if not all(specs):
                raise UsageError(f"--rpc-whatif {rpc_whatif!r} has an empty entry; give sizes "
                                 "or profile names, e.g. 64GB,64GB")
            for spec in specs:
                _check_spec(spec)
        if len(endpoints) + len(specs) > MAX_WORKERS:
            raise UsageError(f"at most {MAX_WORKERS} workers, got {len(endpoints) + len(specs)}")
        parsed_link = parse_link(link) if link is not None else None
        if parsed_link is not None and not endpoints and not specs:
            raise UsageError("--link describes the network to workers; give --rpc or "
                             "--rpc-whatif too")
        return cls(endpoints, specs, parsed_link)

    def is_empty(self) -> bool:
        return not self.endpoints and not self.whatif

    def describe(self) -> str:
        parts = []
        if self.endpoints:
            parts.append(f"--rpc {','.join(self.endpoints)}")
        if self.whatif:
            parts.append(f"--rpc-whatif {','.join(self.whatif)}")
        if self.link is not None:
            parts.append(f"--link {self.link.detail.removeprefix('--link ')}"
                         if self.link.source == "stated" else
                         f"--link {self.link.source.removeprefix('preset ')}")
        return ", ".join(parts)


def _is_size(spec: str) -> bool:
    return bool(spec) and spec[0].isdigit()


def _check_spec(spec: str) -> None:
    """A what-if worker is a size or a profile name: checked before anything is probed."""
    if _is_size(spec):
        try:
            size = parse_size(spec)
        except ValueError as exc:
            raise UsageError(f"--rpc-whatif: {exc}") from None
        if size < GIB:
            raise UsageError(f"--rpc-whatif {spec!r}: a worker needs at least 1 GiB")
        return
    if len(spec) > 100 or not all(c.isalnum() or c in "-_." for c in spec):
        raise UsageError(f"--rpc-whatif {spec!r} is neither a size (64GB) nor a hardware "
                         "profile name")


Probe = Callable[[str, float], Sequence[Worker]]


def resolve_workers(options: WorkerOptions, base: Hardware,
                    probe: Probe | None = None) -> tuple[Worker, ...]:
    """The workers to plan with, in the order given (real ones first, then what-if ones).
    `probe(endpoint, timeout_s)` asks a real worker; any failure of it becomes a one-line
    `WorkerUnreachable` naming the worker."""
    workers: list[Worker] = []
    for endpoint in options.endpoints:
        if probe is None:
            raise QwenError("--rpc: no way to ask a worker was given")
        try:
            found = tuple(probe(endpoint, PROBE_TIMEOUT_S))
        except QwenError:
            raise
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            raise WorkerUnreachable(f"worker {endpoint} is unreachable: {exc}",
                                    hint=f"start it there with `qwen worker --host ADDRESS`, "
                                         f"or drop {endpoint} from --rpc") from None
        if not found:
            raise WorkerUnreachable(f"worker {endpoint} serves no device")
        for device in found:
            _check_reported(endpoint, device)
        if options.link is not None:
            found = tuple(replace(w, link=options.link) for w in found)
        workers.extend(found)
    link = options.link
    if link is None and options.whatif:
        bandwidth, rtt, source = LINK_PRESETS[DEFAULT_WHATIF_LINK]
        link = Link(bandwidth, rtt, f"preset {DEFAULT_WHATIF_LINK}",
                    f"assumed: no --link given; {source}")
    for number, spec in enumerate(options.whatif, 1):
        assert link is not None
        workers.extend(whatif_workers(spec, number, base, link))
    return tuple(workers)


MAX_DEVICE_BYTES = 1 << 50  # 1 PiB: a larger figure from a worker is not a memory size
MAX_WORKER_DEVICES = 64


def _check_reported(endpoint: str, worker: Worker) -> None:
    """What a worker reports comes over the network: bound it before planning with it."""
    link = worker.link
    sane = (0 <= worker.free_bytes <= worker.total_bytes <= MAX_DEVICE_BYTES
            and 0 <= worker.device < MAX_WORKER_DEVICES
            and 0 < link.bandwidth_bytes_per_s <= MAX_LINK_BYTES_PER_S * 10
            and 0 <= link.rtt_s <= MAX_RTT_S
            and len(worker.name) <= 200 and worker.name.isprintable()
            and len(worker.description) <= 200 and worker.description.isprintable())
    if not sane:
        raise WorkerUnreachable(f"worker {endpoint} reported figures that cannot be right "
                                f"(free {worker.free_bytes} of {worker.total_bytes} bytes, "
                                f"device {worker.device})")


def whatif_workers(spec: str, number: int, base: Hardware, link: Link) -> tuple[Worker, ...]:
    """The devices one `--rpc-whatif` entry stands for (see the module docstring)."""
    endpoint = f"what-if-{number}"
    if _is_size(spec):
        return (_sized_worker(parse_size(spec), endpoint, number, base, link),)
    from qwencli.hardware.profiles import load_profile, profile_to_hardware

    machine = profile_to_hardware(load_profile(spec))  # UsageError for an unknown name
    return _machine_workers(machine, spec, endpoint, number, link)


def _usable_gpus(hw: Hardware) -> list[Gpu]:
    return [gpu for gpu in hw.gpus if build_can_drive(hw.llama_cpp, gpu)]


def _sized_worker(size: int, endpoint: str, number: int, base: Hardware,
                  link: Link) -> Worker:
    """A machine like `base` with `size` of memory on its main device."""
    like = "this machine" if base.source == "probed" else base.source
    gpus = _usable_gpus(base)
    label = f"what-if worker {number}"
    if gpus and gpus[0].unified:
        gpu = gpus[0]
        free = metal.default_working_set(size) if gpu.backend == "metal" else size
        return Worker(endpoint, 0, f"{label} ({gpu.name}, {format_bytes(size)})",
                      f"what-if: like {like}: {gpu.name} with {format_bytes(size)} unified "
                      f"memory (GPU share {format_bytes(free)})",
                      free, size, link, gpu.bandwidth, whatif=True, backend=gpu.backend)
    if gpus:
        gpu = gpus[0]
        return Worker(endpoint, 0, f"{label} ({gpu.name}, {format_bytes(size)})",
                      f"what-if: like {like}: {gpu.name} with {format_bytes(size)} of VRAM",
                      size, size, link, gpu.bandwidth, whatif=True, backend=gpu.backend)
    from qwencli.hardware.profiles import idle_os_reserve

    free = size - idle_os_reserve(size, base.os)
    return Worker(endpoint, 0, f"{label} (CPU, {format_bytes(size)})",
                  f"what-if: like {like}: its CPU with {format_bytes(size)} of RAM "
                  f"({format_bytes(free)} after the idle OS reserve)",
                  free, size, link, base.memory.bandwidth, whatif=True, backend="cpu")


def _machine_workers(machine: Hardware, spec: str, endpoint: str, number: int,
                     link: Link) -> tuple[Worker, ...]:
    """A profile's devices as `qwen worker` would serve them: its GPUs, else its CPU."""
    label = f"what-if worker {number}"
    gpus = _usable_gpus(machine)
    if not gpus:
        mem = machine.memory
        return (Worker(endpoint, 0, f"{label} ({spec}, CPU)",
                       f"what-if: profile {spec}: its CPU with {format_bytes(mem.available_bytes)}"
                       " available", mem.available_bytes, mem.total_bytes, link, mem.bandwidth,
                       whatif=True, backend="cpu"),)
    workers = []
    for device, gpu in enumerate(gpus):
        free = gpu.working_set_bytes or gpu.free_bytes
        workers.append(Worker(endpoint, device, f"{label} ({spec}, {gpu.name})",
                              f"what-if: profile {spec}: {gpu.name}", free, gpu.total_bytes,
                              link, gpu.bandwidth, whatif=True, backend=gpu.backend))
    return tuple(workers)


ASSUMED_WORKER_GPU_BANDWIDTH = 360 * 10**9  # as hardware.whatif: an RTX 3060 12GB, cautious


def worker_bandwidth(worker: Worker, local: Hardware) -> Bandwidth:
    """The worker device's memory bandwidth: its own when known; a GPU's from the known-GPU
    table by name; a CPU's assumed to be this machine's RAM bandwidth (said so)."""
    if worker.bandwidth is not None:
        return worker.bandwidth
    if is_gpu(worker):
        from qwencli.hardware.known_gpus import lookup

        known = lookup(worker.description)
        if known is not None and known.bandwidth_bytes_per_s:
            return Bandwidth(known.bandwidth_bytes_per_s, "table",
                             f"known-GPU table: {known.name}")
        return Bandwidth(ASSUMED_WORKER_GPU_BANDWIDTH, "assumed",
                         "assumed 360 GB/s (an RTX 3060 12GB): the worker's GPU is not in "
                         "the known-GPU table")
    if local.memory.bandwidth is not None:
        # The source stays the local figure's: a measured copy bandwidth is read with the
        # constants fitted to such measurements (fit.CPU_EFFICIENCY).
        return replace(local.memory.bandwidth,
                       detail=f"assumed like this machine's RAM "
                              f"({format_rate(local.memory.bandwidth.bytes_per_s)}, "
                              f"{local.memory.bandwidth.source})")
    return Bandwidth(20 * 10**9, "assumed", "assumed 20 GB/s (dual-channel DDR4)")
