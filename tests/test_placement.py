"""Plans across machines: device order, budgets on every device, the network in the speed."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from qwencli.fit import CPU_EFFICIENCY, CPU_PLAIN_LAYOUT, Options, plan
from qwencli.hardware.budget import GPU_HEADROOM, HOST_HEADROOM, plan_budget
from qwencli.hardware.cluster import LINK_PRESETS, WorkerOptions, parse_link, resolve_workers
from qwencli.hardware.model import Bandwidth, Hardware
from qwencli.hardware.remote import Link, Worker
from qwencli.placement import RPC_HANDOFF_S, RemoteRun, candidate_sets, decode_network_seconds
from tests.hardware.factories import GIB
from tests.test_fit import MIB, cpu_box, gpu_box, shape


def worker(endpoint: str = "10.0.0.2:50052", *, free_gib: float = 24, gpu: bool = True,
           bandwidth: float = 1e12, link: Link | None = None) -> Worker:
    return Worker(endpoint, 0, f"RPC0[{endpoint}]", "NVIDIA GeForce RTX 4090" if gpu else "CPU",
                  int(free_gib * GIB), int(free_gib * GIB), link or parse_link("10gbe"),
                  Bandwidth(int(bandwidth), "table", "test"), backend="cuda" if gpu else "cpu")


def with_workers(hw: Hardware, *workers: Worker) -> tuple[Hardware, object]:
    hw = dataclasses.replace(hw, workers=tuple(workers))
    return hw, plan_budget(hw)


def test_worker_budgets_keep_the_documented_margins() -> None:
    _hw, budget = with_workers(cpu_box(), worker(free_gib=24), worker("b:1", free_gib=8,
                                                                      gpu=False))
    assert [wb.bytes for wb in budget.workers] == [24 * GIB - GPU_HEADROOM,
                                                    8 * GIB - HOST_HEADROOM]
    assert "headroom" in budget.workers[0].reason


def test_workers_come_first_then_local_gpus_and_the_split_follows_that_order() -> None:
    # 60 layers of 300 MiB (17.6 GiB): neither the 12 GiB card nor the worker holds them alone.
    hw, budget = with_workers(gpu_box(12), worker(free_gib=12))
    p = plan(shape(n_layers=60, layer_mib=300), hw, budget, Options(ctx=4096))
    assert p.fits
    assert [d.worker is not None for d in p.devices] == [True, False]
    remote, local = p.devices
    assert remote.worker is not None and remote.worker.endpoint == "10.0.0.2:50052"
    assert remote.layers > 0 and local.layers > 0
    assert p.n_gpu_layers == remote.layers + local.layers == 61  # every layer and the output
    assert p.tensor_split == pytest.approx((remote.layers / 61, local.layers / 61))
    assert local.breakdown.weights >= 250 * MIB  # the output layer is on the last device
    assert all(d.bytes <= d.budget_bytes for d in p.devices)
    assert p.host.bytes <= p.host.budget_bytes


def test_a_fast_local_gpu_fills_before_a_slow_worker() -> None:
    slow = worker(free_gib=24, bandwidth=100e9)  # a tenth of the local card's bandwidth
    hw, budget = with_workers(gpu_box(12, ram_gib=8), slow)  # the host cannot take the rest
    p = plan(shape(n_layers=60, layer_mib=300), hw, budget, Options(ctx=4096))
    remote, local = p.devices
    # The local card takes all it can; the worker only what the card cannot hold.
    assert local.budget_bytes - local.bytes < 400 * MIB
    assert 0 < remote.layers < 61 - local.layers + 1


def test_a_worker_is_not_used_when_this_machine_alone_is_faster() -> None:
    hw = gpu_box(23)
    alone = plan(shape(), hw, plan_budget(hw), Options(ctx=4096))
    hw2, budget = with_workers(hw, worker(link=parse_link("wifi")))
    p = plan(shape(), hw2, budget, Options(ctx=4096))
    assert p.devices[0].worker is not None and p.devices[0].layers == 0
    assert p.n_gpu_layers == alone.n_gpu_layers
    assert p.devices[1] == alone.devices[0]
    assert p.speed.typical == pytest.approx(alone.speed.typical)
    assert p.tensor_split[0] == 0.0


def test_a_model_no_single_machine_holds_fits_across_them() -> None:
    big = shape(n_layers=80, layer_mib=400)  # 31 GiB
    hw = gpu_box(23, ram_gib=16)
    assert not plan(big, hw, plan_budget(hw), Options(ctx=4096)).fits
    hw2, budget = with_workers(hw, worker(free_gib=23))
    p = plan(big, hw2, budget, Options(ctx=4096))
    assert p.fits and p.devices[0].layers > 0
    assert all(d.bytes <= d.budget_bytes for d in p.devices)


def test_every_budget_is_respected_with_many_workers() -> None:
    workers = [worker(f"10.0.0.{i}:50052", free_gib=6, gpu=i % 2 == 0,
                      bandwidth=200e9 if i % 2 == 0 else 60e9) for i in range(2, 6)]
    hw, budget = with_workers(gpu_box(8, ram_gib=16), *workers)
    p = plan(shape(n_layers=80, layer_mib=300), hw, budget, Options(ctx=8192))
    assert p.fits
    assert all(d.bytes <= d.budget_bytes for d in p.devices)
    assert p.host.bytes <= p.host.budget_bytes
    assert len(p.tensor_split) == len(p.devices) == 5
    assert sum(d.layers for d in p.devices) == p.n_gpu_layers


def test_a_cpu_worker_holds_no_repacked_copy() -> None:
    s = shape(n_layers=20, layer_mib=100, repack={"Q4_K": 80 * MIB})
    hw, budget = with_workers(cpu_box(ram_gib=4), worker(free_gib=16, gpu=False,
                                                         bandwidth=30e9))
    p = plan(s, hw, budget, Options(ctx=2048, n_gpu_layers=21))
    remote = p.devices[0]
    assert remote.layers == 21
    assert remote.breakdown.weights == 20 * 100 * MIB + 250 * MIB  # once, no repacked copy


def test_a_slower_link_gives_a_slower_estimate() -> None:
    speeds = []
    for preset in ("loopback", "10gbe", "1gbe", "wifi"):
        hw, budget = with_workers(gpu_box(4), worker(link=parse_link(preset)))
        p = plan(shape(n_layers=40, layer_mib=200), hw, budget, Options(ctx=4096))
        assert p.devices[0].layers > 0
        speeds.append(p.speed.typical)
        assert p.speed.network_s > 0
    assert speeds == sorted(speeds, reverse=True) and speeds[0] > speeds[-1] * 1.05


def test_loopback_costs_about_the_hand_off_per_remote_device() -> None:
    hw = cpu_box(ram_gib=16)
    s = shape(n_layers=28, layer_mib=10)
    local = plan(s, hw, plan_budget(hw), Options(ctx=4096))
    times = [1 / local.speed.typical]
    for count in (1, 2):
        workers = [worker(f"127.0.0.1:{50052 + i}", gpu=False, bandwidth=30e9,
                          link=parse_link("loopback")) for i in range(count)]
        workers = [dataclasses.replace(w, bandwidth=hw.memory.bandwidth) for w in workers]
        hw2, budget = with_workers(hw, *workers)
        p = plan(s, hw2, budget, Options(ctx=4096, n_gpu_layers=29))
        assert sum(1 for d in p.devices if d.layers) == count
        times.append(1 / p.speed.typical)
    # Same bytes read on the same kind of CPU (no repackable types here): each remote device
    # adds its hand-off, a loopback round trip and its bytes, nothing more.
    link = parse_link("loopback")

    def network(count: int) -> float:
        return sum(decode_network_seconds(RemoteRun("w", link, i == count - 1), s.n_embd,
                                          s.n_vocab, 0, True, 1) for i in range(count))

    for count, (before, after) in enumerate(itertools.pairwise(times), start=1):
        assert after - before == pytest.approx(network(count) - network(count - 1), rel=0.02)
        assert after - before > RPC_HANDOFF_S[1]


def test_a_worker_cpu_reads_repackable_weights_in_their_plain_layout() -> None:
    """A worker's CPU backend cannot use the repacked layouts: its repackable bytes take
    CPU_PLAIN_LAYOUT times as long; on a worker's GPU nothing changes."""
    hw = cpu_box(ram_gib=16)
    remote = worker("127.0.0.1:50052", gpu=False, link=parse_link("loopback"))
    remote = dataclasses.replace(remote, bandwidth=hw.memory.bandwidth)
    hw2, budget = with_workers(hw, remote)
    seconds = {}
    for repack in ({}, {"Q4_K": 6 * MIB}):
        s = shape(n_layers=28, layer_mib=10, repack=repack)
        p = plan(s, hw2, budget, Options(ctx=4096, n_gpu_layers=29))
        assert p.devices[0].layers == 29
        seconds[bool(repack)] = 1 / p.speed.typical
    rate = hw.memory.bandwidth.bytes_per_s * CPU_EFFICIENCY[1]
    assert seconds[True] - seconds[False] == pytest.approx(
        (CPU_PLAIN_LAYOUT - 1) * 28 * 6 * MIB / rate, rel=0.02)


def test_a_cpu_worker_holding_only_the_output_layer_peaks_at_twice_it_while_loading() -> None:
    """llama.cpp's RPC server receives a tensor whole before storing it: a worker holding only
    the output matrix peaks at twice its size, and that is what must fit its budget."""
    hw = cpu_box(ram_gib=16)
    s = shape(n_layers=28, layer_mib=10)
    remote = worker("127.0.0.1:50052", gpu=False, link=parse_link("loopback"),
                    free_gib=2 * s.output_bytes / GIB + 0.6)  # 0.5 GiB of it is the margin
    hw2, budget = with_workers(hw, dataclasses.replace(remote, bandwidth=hw.memory.bandwidth))
    p = plan(s, hw2, budget, Options(ctx=4096, n_gpu_layers=1))
    (device,) = [d for d in p.devices if d.layers]
    assert device.load_peak == 2 * s.output_bytes > device.bytes
    assert device.peak_bytes == device.load_peak and device.fits
    small = dataclasses.replace(remote, free_bytes=int(1.5 * s.output_bytes) + HOST_HEADROOM)
    hw3, budget3 = with_workers(hw, dataclasses.replace(small, bandwidth=hw.memory.bandwidth))
    tight = plan(s, hw3, budget3, Options(ctx=4096, n_gpu_layers=1))
    assert not tight.fits  # its final bytes would fit; the load peak does not
    # The main process copies each tensor it sends into a message: its peak holds the
    # largest one (here the output matrix) once more.
    assert p.host.load_peak == p.host.bytes + s.output_bytes
    alone = plan(s, hw, plan_budget(hw), Options(ctx=4096))
    assert alone.host.load_peak == 0 and alone.host.peak_bytes == alone.host.bytes


def test_network_seconds_count_bytes_round_trip_and_hand_off() -> None:
    link = Link(1e6, 0.01, "stated")
    run = RemoteRun("w", link, holds_output=False)
    seconds = decode_network_seconds(run, n_embd=1000, n_vocab=50_000, depth=0,
                                     flash_attn=True, which=1)
    sent = 4 * 1000 + 256 * 2 + 8
    assert seconds == pytest.approx((sent + 4 * 1000) / 1e6 + 0.01 + RPC_HANDOFF_S[1])
    out = decode_network_seconds(RemoteRun("w", link, True), 1000, 50_000, 0, True, 1)
    assert out - seconds == pytest.approx(4 * (50_000 - 1000) / 1e6)  # the logits come back


def test_candidate_sets_keep_local_devices_and_add_workers_fastest_first() -> None:
    # positions 0, 1 are workers (1 faster), 2 is local
    sets = candidate_sets([2, 1, 0], [True, True, False])
    assert sets == [([2], [0]), ([1, 2], [1, 0]), ([0, 1, 2], [2, 1, 0])]


def test_whatif_workers_and_measured_workers_resolve_in_order() -> None:
    hw = gpu_box(12)
    probed = (worker("10.0.0.9:50052"),)
    options = WorkerOptions.parse("10.0.0.9", "16GB", "2.5gbe")
    workers = resolve_workers(options, hw, lambda endpoint, timeout: probed)
    assert [w.endpoint for w in workers] == ["10.0.0.9:50052", "what-if-1"]
    assert all(w.link.source == "preset 2.5gbe" for w in workers)  # --link replaces measured
    sized = workers[1]
    assert sized.whatif and sized.total_bytes == 16 * GIB and sized.backend == "cuda"
    assert "like" in sized.description


@pytest.mark.parametrize(("text", "bandwidth", "rtt"), [
    ("1.25GB/s,0.2ms", 1.25e9, 0.2e-3),
    ("10Gbit, 100us", 10e9 / 8, 100e-6),
    ("500Mbps,3ms", 500e6 / 8, 3e-3),
    ("10GbE", LINK_PRESETS["10gbe"][0], LINK_PRESETS["10gbe"][1]),
])
def test_links_parse_presets_and_stated_figures(text: str, bandwidth: float, rtt: float) -> None:
    link = parse_link(text)
    assert link.bandwidth_bytes_per_s == pytest.approx(bandwidth)
    assert link.rtt_s == pytest.approx(rtt)
    assert link.source in ("stated", "preset 10gbe")


def test_every_preset_names_its_source() -> None:
    for name, (bandwidth, rtt, source) in LINK_PRESETS.items():
        assert bandwidth > 0 and rtt > 0 and len(source) > 20, name
        assert "IEEE" in source or "assumed" in source


@pytest.mark.parametrize("bad", [
    {"free_bytes": -1},
    {"free_bytes": 2 * GIB, "total_bytes": GIB},
    {"total_bytes": 1 << 60, "free_bytes": 1 << 60},
    {"name": "RPC0\x1b[31m"},
    {"link": Link(0.0, 0.001, "measured")},
])
def test_nonsense_from_a_worker_is_a_one_line_error(bad: dict) -> None:
    from qwencli.errors import WorkerUnreachable

    reported = dataclasses.replace(worker("10.0.0.9:50052"), **bad)
    with pytest.raises(WorkerUnreachable, match=r"10\.0\.0\.9:50052"):
        resolve_workers(WorkerOptions.parse("10.0.0.9"), gpu_box(12),
                        lambda endpoint, timeout: (reported,))


def test_an_equally_fast_cpu_worker_shares_the_model_instead_of_filling_up() -> None:
    hw = cpu_box(ram_gib=16)  # 12 GiB available: the 16 GiB of layers do not fit alone
    like_host = dataclasses.replace(worker(free_gib=16, gpu=False), bandwidth=hw.memory.bandwidth)
    hw2, budget = with_workers(hw, like_host)
    p = plan(shape(n_layers=80, layer_mib=200), hw2, budget, Options(ctx=4096))
    remote = p.devices[0]
    assert p.fits and 0 < remote.layers < 81
    # Neither machine is left at its margin when the other has room.
    assert remote.budget_bytes - remote.bytes > 0.15 * remote.budget_bytes
    assert p.host.budget_bytes - p.host.bytes > 0.15 * p.host.budget_bytes


def test_a_device_reserves_for_a_micro_batch_no_longer_than_the_context() -> None:
    """llama.cpp caps n_batch (and so n_ubatch) at n_ctx: at a 256-token context a worker's
    compute buffer is a 256-token batch's (measured on loopback workers within 4%)."""
    from qwencli.fit import activation_bytes

    s = shape(n_layers=20, layer_mib=100)
    hw, budget = with_workers(cpu_box(ram_gib=4), worker(free_gib=16, gpu=False,
                                                         bandwidth=30e9))
    short = plan(s, hw, budget, Options(ctx=256, n_gpu_layers=10)).devices[0]
    long = plan(s, hw, budget, Options(ctx=4096, n_gpu_layers=10)).devices[0]
    row = 4 * s.n_vocab  # the one row of logits the worker that holds the output touches
    assert short.breakdown.compute == activation_bytes(s, 256) + row
    assert long.breakdown.compute == activation_bytes(s, 512) + row
