"""Placement across machines: which devices a plan uses, in what order they fill, and what the
network costs each token. Pure; `fit.plan` asks it when the machine has workers.

Device order. llama.cpp lists RPC devices before local GPUs (ggml's backend registry order as
`llama_model_params.devices` gives it), offloads the last `n_gpu_layers` layers (the output
layer first) and cuts them into contiguous runs by `tensor_split`, in device order; the layers
not offloaded stay on the local CPU. The plan follows that order exactly: workers first, then
local GPUs; the output layer is on the last device that holds layers.

The split is chosen for speed within every budget (`candidate_sets`): devices are ranked by
the time one byte of weights takes to read there (a fast local GPU before a slow worker; among
equally fast devices the one with the larger budget first, so a small machine keeps its room),
the plan is made for this machine's devices
with no worker, with the fastest worker, the fastest two, ... and all of them (layers fill the
faster devices first, each up to its budget, the rest stays on this machine's CPU), and
`fit.plan` keeps the fastest of those that fit. So a worker only holds layers when the memory
is needed or when it is faster than what it relieves, network included; and with no worker in
use the plan is the one this machine alone gets.

The network (ggml-rpc.cpp, llama-cpp-python 0.3.36's llama.cpp). Per token and per remote
device the main process sends the inputs of that device's run (`set_tensor`, no answer awaited:
the activation entering it, n_embd x 4 bytes, the attention mask, n_kv x 2 bytes with flash
attention (f16) or x 4 (f32) for n_kv = the depth padded to 256, and the positions), starts the
graph (`graph_recompute`: llama.cpp reuses the decode graph while n_kv stays in the same 256
block, so the graph is not re-sent each token) and waits for the run's result (`get_tensor`:
n_embd x 4 bytes, or the logits, n_vocab x 4 bytes, from the device that holds the output
layer): one round trip. Activations between two workers pass through the main process (a copy
between two RPC servers is a get and a set), so each remote run pays its own in and out.

Measured overhead. On loopback (benchmarks/rpc_speed.py: Qwen3-0.6B-shaped Q4_K_M, 2 threads
per process on this project's two-core build machine, 64 tokens, medians of 5 runs, two
rounds) a worker costs the bytes and round trip above, its CPU's plain weight layout
(fit.CPU_PLAIN_LAYOUT: the worker's CPU backend cannot use the repacked layouts), and a
hand-off per remote device per token: the main process's dispatcher thread wakes the worker's
server thread, which computes and wakes the dispatcher, which wakes the main thread. Fitted
from those runs: 0.69-0.88 ms per device, so RPC_HANDOFF_S typical is 0.75 ms, in line with
the one published figure on one machine (+0.8 ms per token through an RPC server on the same
machine's CUDA GPU: TinyLlama 1.1B F16, 63 -> 60 t/s, ggml-org/llama.cpp PR #6829). The worst
case (3 ms) covers a busy machine where each wake-up waits for a core; the best (0.3 ms) an
idle one. Before the workers' and the main process's idle threads stopped spinning
(qwencli/rpc/threads.py) the same runs cost 5-6 ms per device: the spinning threads of the
process that waited took the cores of the one that computed. Not checked here on a real
network or a GPU worker; a remote GPU over an unstated network was published at +9.8 ms per
token with the 2024 protocol, which re-sent the graph every token (issue #7292).

Memory. A worker's CPU holds its share as the host would, without the repacked copy (it does
not repack), and, while loading, the tensor it is receiving twice (fit.worker_load_peak).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from qwencli.hardware.remote import Link

KV_PAD = 256
RPC_HANDOFF_S = (3e-3, 0.75e-3, 0.3e-3)  # (worst, typical, best) per remote device per token

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteRun:
    """One remote device's share of a token, as the network sees it."""

    name: str
    link: Link
    holds_output: bool


def padded_kv(depth: int) -> int:
    return max(KV_PAD, -(-depth // KV_PAD) * KV_PAD)


def decode_network_seconds(run: RemoteRun, n_embd: int, n_vocab: int, depth: int,
                           flash_attn: bool, which: int) -> float:
    """Seconds one decoded token spends on `run`'s link and hand-offs (see the module
    docstring); `which`: 0 worst, 1 typical, 2 best."""
    mask = padded_kv(depth) * (2 if flash_attn else 4)
    sent = 4 * n_embd + mask + 8
    received = 4 * (n_vocab if run.holds_output else n_embd)
    link = run.link
    return (sent + received) / max(link.bandwidth_bytes_per_s, 1.0) + link.rtt_s \
        + RPC_HANDOFF_S[which]


def prompt_network_seconds(run: RemoteRun, n_embd: int, n_vocab: int, depth: int,
                           flash_attn: bool, n_ubatch: int) -> float:
    """Seconds per prompt token on `run`'s link, prompts read in `n_ubatch`-token batches: each
    token's activation in and out, its row of the mask, and per batch one round trip, one
    hand-off and one row of logits."""
    mask_row = padded_kv(depth) * (2 if flash_attn else 4)
    per_token = 8 * n_embd + mask_row + 8
    per_batch = (4 * n_vocab if run.holds_output else 0)
    link = run.link
    bandwidth = max(link.bandwidth_bytes_per_s, 1.0)
    return per_token / bandwidth + (per_batch / bandwidth + link.rtt_s + RPC_HANDOFF_S[1]) \
        / max(1, n_ubatch)


def speed_order(devices: Sequence[T], seconds_per_byte: Callable[[T], float],
                budget: Callable[[T], int]) -> list[int]:
    """Device positions, fastest first; among equally fast devices the larger budget first
    (a small machine keeps its room: which of them holds a layer costs the same time), then
    llama.cpp's order."""
    return sorted(range(len(devices)),
                  key=lambda i: (seconds_per_byte(devices[i]), -budget(devices[i]), i))


def candidate_sets(order: Sequence[int], remote: Sequence[bool]
                   ) -> list[tuple[list[int], list[int]]]:
    """Every local device with the fastest k workers, k = 0..n: (their positions in llama.cpp's
    order, the order in which they fill, as indices into that list). Local GPUs are always in
    (the plan for this machine alone stays what it was); workers join fastest first."""
    local = [position for position in order if not remote[position]]
    workers = [position for position in order if remote[position]]
    sets = []
    for k in range(len(workers) + 1):
        members = set(local) | set(workers[:k])
        chosen = sorted(members)
        fill = [chosen.index(position) for position in order if position in members]
        sets.append((chosen, fill))
    return sets


def split_by_order(counts_needed: int, budgets: Sequence[int], fixed: Sequence[int],
                   per_layer: int, fill: Sequence[int]) -> list[int] | None:
    """How many of `counts_needed` layers (each at most `per_layer` bytes) each device takes,
    filling devices in `fill` order up to their budgets less `fixed`; None when they do not
    fit. The runs are then laid out contiguously in device order by the caller."""
    counts = [0] * len(budgets)
    left = counts_needed
    for position in fill:
        if left <= 0:
            break
        room = budgets[position] - fixed[position]
        take = min(left, max(0, room // per_layer)) if per_layer > 0 else left
        counts[position] = take
        left -= take
    return counts if left <= 0 else None
