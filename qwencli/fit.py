"""The memory plan and speed estimate for one model on one machine. Pure: data in, a Plan out.

The model follows what llama.cpp (the copy vendored by llama-cpp-python 0.3.36) does, and was
checked against measurements (benchmarks/fit_accuracy.py):

Placement (llama-model.cpp, `load_tensors`). `n_gpu_layers` counts the repeating layers and the
output layer. The output layer (output.weight, or the tied token embedding, with output_norm) is
offloaded first, then repeating layers from the last one down: with N layers and `n_gpu_layers = k`,
layers i >= N + 1 - k go to the GPUs. The input embedding always stays on the host. Offloaded layers
are spread over the GPUs in contiguous runs by `tensor_split`; the plan chooses that split.

Weights on the host. llama.cpp maps the file (mmap, MAP_POPULATE on Linux), so every CPU tensor's
bytes are resident; after loading it unmaps the ranges that went to GPUs. The CPU backend also
*repacks* some quant types into an interleaved copy in anonymous memory (CPU_REPACK buffer) while
the mapped pages stay resident, so those tensors count twice: on x86 with AVX2 Q4_0, Q4_K, IQ4_NL
and MXFP4 (and Q2_K with AVX-512); on ARM with dot-product Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL and MXFP4,
plus Q8_0 with i8mm (ggml-cpu/repack.cpp). Measured: Qwen3-0.6B-shaped Q4_K_M, 371 MiB mapped +
205 MiB repacked.

KV cache. n_ctx is padded to a multiple of 256; each layer that keeps a cache stores K and V for
every position: n_kv_heads x (head_dim_k + head_dim_v) x bytes per element (f16: 2; q8_0: 34/32;
q4_0: 18/32). Hybrid models (Qwen3.5/3.6/3.8: Gated DeltaNet with full attention on one layer in
four) keep it only on the attention layers, and a fixed recurrent state on the others. The cache
lives with its layer (on the GPU when offloaded). llama.cpp clears it at creation, so all of it is
resident from the start.

Compute buffers. llama.cpp reserves a graph for a full micro-batch (n_ubatch = 512 tokens) with
every token producing logits, so the reserved buffer is at least n_vocab x 512 x 4 bytes (297 MiB
for Qwen's 151,936 tokens). On a GPU the reservation is real memory. On the host it is allocated
lazily, and in chat (one output row per batch) only the activations of a 512-token batch are
touched: we count those. Without flash attention the attention scores (n_ctx x n_ubatch x n_head x
4 bytes) are materialised too, which is why plans assume flash attention (on by default in qwen).

Output and overhead. The host output buffer holds one row of logits (n_vocab x 4 bytes). A fixed
overhead covers the vocabulary's data structures, thread pools and the llama-cpp-python objects
(calibrated: about 36 MiB for Qwen's vocabulary). The Python process itself and allocator slack are
covered by the budget's headroom (hardware.budget), not here.

Unified memory (Apple Silicon). GPU and host share one pool; Metal maps the file's pages
without a copy, so a byte counts once: the GPU part must fit the Metal working set, and the sum must
fit the pool.

Speed. Decoding one token streams every weight it uses once: per device, the bytes read per token
over that device's bandwidth, plus a fixed per-layer cost (kernel launches, thread sync), the sum
over devices giving the time per token. MoE models read only the active experts' share of the
expert tensors. `typical` is the empty-context figure at typical efficiency (what llama-bench's
tg128 measures); the range: high = empty context, best efficiency; low = full context (the KV
cache read too), worst efficiency. Prompt processing is compute-bound: weight bytes per prompt
token over a per-thread (CPU) or per-bandwidth (GPU) throughput by quant family, plus attention
over the cache; the time to first token of N tokens is N tokens at depth N/2. Efficiencies were
fitted here for the CPU; for GPUs they follow published llama.cpp results (50-75% of peak,
about 0.14 ms per layer, fit-anchors.md section 8). A `SpeedCalibration` (what `qwen bench`
measured on this machine, loaded by the caller) scales each term by measured / estimated time,
for the devices it measured; the range is then the measured spread.

MoE expert placement (llama.cpp's `--n-cpu-moe N`, i.e. `-ot "blk.I.ffn_*_exps=CPU"` for
i < N). When a MoE model does not fit the GPUs whole, llama.cpp can offload every layer and the
output layer (`-ngl` all) but keep the routed-expert tensors (`ffn_{gate,up,down,gate_up}_exps`)
of the first N layers in host memory: attention, the router, shared experts, norms and the KV
cache of every layer stay on the GPU. A token then reads only its 8-of-128 experts' share of
those host tensors, at RAM bandwidth. Memory: the host holds the experts of layers < N (mapped,
and repacked where the CPU repacks that type: llama-model-loader.cpp picks the CPU's extra buffer
types for a tensor overridden to CPU); the GPUs hold the rest. For prompt batches llama.cpp's
scheduler copies a CPU-resident expert tensor to the GPU to multiply there (ggml-backend's
`offload_op` for batches of 32 tokens or more; llama.cpp PR #15346 copies only the experts used),
so each GPU also reserves one layer's experts in its compute buffer (an assumption, cautious).
The planner takes the smallest N whose GPU part fits, and keeps whichever of this and
whole-layer offload is faster within the budgets (`plan`). Speed: the expert bytes read from
host RAM are timed at RAM bandwidth with the CPU's efficiency, plus a share of the CPU's
per-layer cost for each such layer and a GPU-CPU hand-over (`_moe_speed`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from qwencli import placement
from qwencli.hardware.model import Budget, Hardware
from qwencli.hardware.remote import Worker, is_gpu

MIB = 1024**2
CTX_PAD = 256
N_UBATCH = 512
# Fixed host overhead: measured 36 MiB for the 151,936-token vocabulary; scale with the vocabulary.
OVERHEAD_FIXED = 12 * MIB
OVERHEAD_PER_VOCAB_ENTRY = 160  # bytes

KV_TYPE_BYTES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                 "q4_1": 20 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}

# Decode: per device, time per token = weights read / (bandwidth x efficiency) + layers x a fixed
# cost, + the KV cache read at the current depth. Efficiencies are (worst, typical, best)
# fractions of the device's bandwidth figure, layer costs (worst, typical, best) seconds.
# CPU: fitted on this project's build machine (2 threads of a shared AMD EPYC VM) to llama-bench
# medians of four shapes on two days (benchmarks/speed_accuracy.py: Qwen3-0.6B and Qwen2.5-1.5B
# Q4_K_M, Qwen3-1.7B Q8_0, a Qwen3-30B-A3B-shaped MoE; the typical constants reproduce all four
# within 3%), against the measured copy bandwidth (`qwen hw`: a memmove that counts read +
# write bytes). The worst/best constants keep the spread seen between runs (about -25%/+20%).
# A bandwidth stated by a profile is a specification's peak, which a decode does not reach:
# CPU_EFFICIENCY_PEAK (llama.cpp's CPU decode reads at 55-85% of the DDR peak, fit-anchors.md
# section 8, not checked here). GPU: published llama.cpp results, not checked on this code
# (50-75% of peak, about 0.14 ms per layer, shared/reference/fit-anchors.md section 8).
CPU_EFFICIENCY = (0.84, 1.148, 1.35)
CPU_EFFICIENCY_PEAK = (0.55, 0.7, 0.85)
GPU_EFFICIENCY = (0.5, 0.62, 0.75)
CPU_LAYER_COST = (0.26e-3, 0.205e-3, 0.16e-3)
GPU_LAYER_COST = (0.15e-3, 0.11e-3, 0.08e-3)
# Decode efficiency of a quant family relative to Q4_K on the CPU (dequantisation work per byte
# differs; Q8_0 fitted with the constants above, the float types not checked). Families not
# listed count as 1.0.
CPU_DECODE_FAMILY = {"Q8_0": 1.03, "F16": 1.15, "BF16": 1.15, "F32": 1.2}
# A worker's CPU reads weights in their plain layout: an RPC device exposes only its default
# buffer type, so the CPU backend's repacked layouts (repack_types) are not used there, and
# those bytes take longer to go through. Measured here on the Qwen3-0.6B-shaped Q4_K_M file,
# 2 threads, llama_model_params.use_extra_bufts on/off: 78.7 vs 66.3 tok/s, 2.4 ms more per
# token, i.e. the 205 MiB of repackable matrices take 1.54x as long (AVX2/AVX-512 Q4_K).
# Other CPUs and types are not checked.
CPU_PLAIN_LAYOUT = 1.54
# Prompt processing (512-token batches) is compute-bound: weight bytes x tokens per second that
# one CPU thread gets through, by quant family, and the attention over the batch's own earlier
# tokens (flash attention, FLOP/s per thread). Q4_K, Q8_0 and the attention rate are fitted with
# the decode constants (the three reproduce the four shapes' pp512 within 1%: per weight, not
# per byte, Q8_0 and Q4_K run at about the same speed); Q4_0 and F16 keep their ratio to Q4_K
# from llama.cpp's x86 AVX2 kernels, not checked. Families not listed use the default.
CPU_PROMPT_RATE = {"Q4_K": 19e9, "Q8_0": 28e9, "Q4_0": 19e9, "F16": 51e9}
CPU_PROMPT_RATE_DEFAULT = 19e9
CPU_ATTENTION_FLOPS = 12.5e9  # per thread: flash attention over the cache, in a prompt batch
# GPU prompt throughput as a multiple of bandwidth (bytes x tokens / s per byte / s), from
# published llama.cpp pp512 figures for Llama-2-7B Q4_0: RTX 4090 about 14,000 t/s on 1008 GB/s
# (ggml-org/llama.cpp discussion 15013) -> 53; M1 Max about 530 t/s on 400 GB/s (discussion
# 4167) -> 5. Not checked on this code; a bench on the machine replaces them.
GPU_PROMPT_FACTOR = {"cuda": 50.0, "metal": 5.0, "hip": 20.0, "vulkan": 15.0, "sycl": 10.0}
GPU_PROMPT_FACTOR_DEFAULT = 10.0
GPU_ATTENTION_FLOPS_PER_BYTE = 20.0  # attention FLOP/s per byte/s of bandwidth
CALIBRATED_SPREAD_MIN = 0.05  # a calibrated range is at least +-5%


def quant_family(quant: str | None) -> str:
    """Q4_K_M -> Q4_K, Q8_0 -> Q8_0: the kernels are per ggml type, the suffix is a mix."""
    label = (quant or "").upper()
    match = re.fullmatch(r"(Q\d_K)(_[SML]|_XL)?", label)
    return match.group(1) if match else (label or "unknown")


@dataclass(frozen=True)
class DeviceFactors:
    """What `qwen bench` measured on one device, as ratios to the uncalibrated estimate:
    measured time / estimated time (below 1: faster than estimated)."""

    decode: float  # time per decoded token (weights and per-layer cost), empty context
    kv: float = 1.0  # the extra time per token of reading the KV cache at a depth
    prompt: float = 1.0  # time per prompt token, 512-token batches, empty context
    attention: float = 1.0  # the extra prompt time of attention over the cache at a depth


@dataclass(frozen=True)
class SpeedCalibration:
    """This machine's measured speed factors (qwencli.calibration builds it from the stored
    benches). Passed to `plan` for the real machine only, never for a what-if machine."""

    label: str  # "measured on this machine by qwen bench on DATE, MODEL"
    devices: Mapping[str, DeviceFactors]  # "host" or a GPU's name -> factors
    spread: float = CALIBRATED_SPREAD_MIN  # run-to-run spread: the range's half-width


@dataclass(frozen=True)
class LayerShape:
    """One repeating layer as the planner sees it."""

    weight_bytes: int
    kv: bool = True  # keeps a KV cache (an attention layer)
    recurrent_bytes: int = 0  # fixed state of a recurrent (Gated DeltaNet) layer
    expert_bytes: int = 0  # bytes in routed-expert tensors (MoE)
    repackable: Mapping[str, int] = field(default_factory=dict)  # ggml type -> matrix bytes


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about one model file: exact from a GGUF header, or
    estimated from the catalog (`source` says which)."""

    name: str
    quant: str | None
    source: str  # "header" | "catalog"
    arch: str
    layers: tuple[LayerShape, ...]
    token_embd_bytes: int
    output_bytes: int  # output.weight (the token embedding when tied) + output_norm
    output_tied: bool  # the output layer reuses the token embedding (held once on the host)
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    ctx_train: int
    n_expert: int = 0
    n_expert_used: int = 0
    output_repackable: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def output_host_bytes(self) -> int:
        """What the output layer adds on the host: its norm only when tied to the embedding."""
        return self.output_bytes - self.token_embd_bytes if self.output_tied else self.output_bytes

    @property
    def weight_bytes(self) -> int:
        return (sum(layer.weight_bytes for layer in self.layers) + self.token_embd_bytes
                + self.output_host_bytes)


@dataclass(frozen=True)
class Options:
    ctx: int
    kv_type: str = "f16"
    flash_attn: bool = True
    n_gpu_layers: int | None = None  # None: the most that fits
    n_ubatch: int = N_UBATCH
    # MoE: layers (from the first) whose routed experts stay on the host; None: the planner's
    # choice (only when n_gpu_layers is None too), 0: none
    moe_cpu_layers: int | None = None
    prompt_tokens: int | None = None  # a prompt to read: the plan gives its time to first token


@dataclass(frozen=True)
class Breakdown:
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    output: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output + self.overhead

    def __add__(self, other: Breakdown) -> Breakdown:
        return Breakdown(self.weights + other.weights, self.kv_cache + other.kv_cache,
                         self.compute + other.compute, self.output + other.output,
                         self.overhead + other.overhead)


@dataclass(frozen=True)
class DevicePlan:
    index: int
    name: str
    layers: int  # repeating layers on this device (+1 when it holds the output layer)
    budget_bytes: int
    breakdown: Breakdown
    worker: Worker | None = None  # a device another machine serves over RPC (`qwen worker`)
    load_peak: int = 0  # what it holds at most while loading (see worker_load_peak)

    @property
    def bytes(self) -> int:
        return self.breakdown.total

    @property
    def peak_bytes(self) -> int:
        """The most it holds at any time: loading or running."""
        return max(self.bytes, self.load_peak)

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget_bytes


# What a worker process grows by for a client beyond the buffers llama.cpp reports (the CPU
# backend's work buffer, the server's message buffers): measured 5.0 MiB on a loopback worker
# holding only an output layer (its RSS growth less its weights and one row of logits).
WORKER_CLIENT_OVERHEAD = 5 * MIB


def worker_cpu_compute(shape: ModelShape, ubatch: int, holds_layers: bool,
                       holds_output: bool) -> int:
    """What a worker's CPU touches of its compute buffer (allocated like the host's: a page is
    resident once written). A prompt of a full micro-batch writes the activations of every
    layer it holds (measured on loopback after a 560-token prompt: the Qwen3-0.6B-shaped
    worker's RSS growth matched this to 0.1%); decoding writes one row of logits. A worker
    holding only the output layer receives the selected rows only (llama.cpp picks the rows
    that give logits in the last layer), so it writes little besides that row. (The buffer
    llama.cpp reserves is larger, by about 4.4 x n_embd floats per token on the device that
    computes the first layer, but those pages were not written in the same runs.)"""
    compute = activation_bytes(shape, ubatch) if holds_layers else 0
    return compute + (4 * shape.n_vocab if holds_output else 0)


def worker_largest_tensor(shape: ModelShape, layers: Sequence[LayerShape],
                          holds_output: bool) -> int:
    """The largest tensor loaded onto a worker: the output matrix, or a layer's largest
    matrix, taken as a third of the layer (the three FFN matrices hold most of it)."""
    largest = max((layer.weight_bytes for layer in layers), default=0) // 3
    return max(largest, shape.output_bytes if holds_output else 0)


def worker_load_peak(shape: ModelShape, layers: Sequence[LayerShape], weights: int,
                     holds_output: bool) -> int:
    """What a worker's CPU holds at most while a model loads onto it. llama.cpp's RPC server
    receives each tensor whole into a buffer of its own before copying it into place, so the
    tensor being loaded is held twice; the output matrix is loaded first (llama.cpp creates it
    before the layers), and a layer's largest matrix is taken as a third of the layer (the
    three FFN matrices hold most of it). Measured on loopback: a worker holding only the output
    layer of a Qwen3-0.6B-shaped file peaked at 250 MiB for a 122 MiB matrix (plan: 243 MiB).
    A worker's GPU receives into host memory, outside the device's budget: not counted."""
    return max(2 * shape.output_bytes if holds_output else 0,
               weights + worker_largest_tensor(shape, layers, False))


@dataclass(frozen=True)
class Speed:
    low: float  # tokens/s at a full context, worst efficiency
    high: float  # tokens/s at an empty context, best efficiency
    bytes_per_token: int  # weights read per token (empty context)
    bottleneck: str  # the device that takes the most time per token
    typical: float = 0.0  # tokens/s at an empty context, typical (or measured) efficiency
    prompt_tok_s: float = 0.0  # prompt processing as pp512 measures it (512 tokens from empty)
    ttft_s: float | None = None  # time to first token for Options.prompt_tokens
    source: str = "estimate"  # "calibrated" (by `qwen bench` on this machine) | "estimate"
    calibration: str | None = None  # where a calibrated figure comes from
    network_s: float = 0.0  # seconds per decoded token on links to workers (typical)
    limited_by: str = ""  # what takes the most time per token: a device's name, or "network"


@dataclass(frozen=True)
class Plan:
    model: str
    quant: str | None
    source: str
    ctx: int
    usable_ctx: int  # the largest context that fits (0 when none does)
    fits: bool
    n_gpu_layers: int
    n_layers: int
    host: DevicePlan
    devices: tuple[DevicePlan, ...]
    unified_pool: bool
    # per device in `devices` order (workers first, then local GPUs), as llama.cpp's
    # tensor_split
    tensor_split: tuple[float, ...]
    flash_attn: bool
    kv_type: str
    speed: Speed
    moe_cpu_layers: int = 0  # MoE: layers whose routed experts stay in host memory

    @property
    def expert_overrides(self) -> tuple[str, ...]:
        """llama.cpp tensor-override patterns (to the CPU buffer type) for the host experts."""
        return expert_override_patterns(self.moe_cpu_layers)

    @property
    def breakdown(self) -> Breakdown:
        total = self.host.breakdown
        for device in self.devices:
            total = total + device.breakdown
        return total

    @property
    def host_bytes(self) -> int:
        return self.host.bytes

    @property
    def used_workers(self) -> tuple[DevicePlan, ...]:
        """The workers' devices that hold layers (a plan lists unused ones with none)."""
        return tuple(d for d in self.devices if d.worker is not None and d.layers)


# ------------------------------------------------------------------------------------------
# Memory


def padded_ctx(ctx: int) -> int:
    return max(CTX_PAD, math.ceil(ctx / CTX_PAD) * CTX_PAD)


def kv_bytes_per_layer(shape: ModelShape, ctx: int, kv_type: str) -> int:
    per_element = KV_TYPE_BYTES[kv_type]
    row = shape.n_kv_head * (shape.head_dim_k + shape.head_dim_v)
    return int(padded_ctx(ctx) * row * per_element)


def layer_state_bytes(shape: ModelShape, layer: LayerShape, ctx: int, kv_type: str) -> int:
    """KV cache or recurrent state that lives with a layer."""
    kv = kv_bytes_per_layer(shape, ctx, kv_type) if layer.kv else 0
    return kv + layer.recurrent_bytes


def activation_bytes(shape: ModelShape, n_tokens: int) -> int:
    """Activations live at once in one layer for a batch (f32): the residual stream, the normed
    input, Q, K, V and the attention output, then the FFN's gate and up (the product is written
    over one of them). Measured with 512-token prompts on Qwen3-0.6B: within a few MiB."""
    q_dim = shape.n_head * shape.head_dim_k
    kv_dim = shape.n_kv_head * (shape.head_dim_k + shape.head_dim_v)
    ffn = shape.n_ff
    if shape.n_expert:
        ffn = shape.n_ff * max(1, shape.n_expert_used)
    return 4 * n_tokens * (3 * shape.n_embd + 2 * q_dim + kv_dim + 2 * ffn)


def attention_scores_bytes(shape: ModelShape, ctx: int, n_tokens: int) -> int:
    """KQ scores materialised without flash attention (f32)."""
    return 4 * padded_ctx(ctx) * n_tokens * shape.n_head


def repacked_bytes(repackable: Mapping[str, int], repack_types: frozenset[str]) -> int:
    return sum(nbytes for ggml_type, nbytes in repackable.items() if ggml_type in repack_types)


def repack_types(hw: Hardware) -> frozenset[str]:
    """The quant types the installed CPU backend repacks on this CPU (ggml-cpu/repack.cpp)."""
    build = hw.llama_cpp
    if build.source == "probed" and build.cpu_features and "repack" not in build.cpu_features:
        return frozenset()
    features = set(hw.cpu.features)
    if hw.cpu.arch == "x86_64":
        types = {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"} if "avx2" in features else set()
        if "avx512f" in features:
            types.add("Q2_K")
        return frozenset(types)
    if hw.cpu.arch == "arm64":
        types = set()
        if "dotprod" in features or "i8mm" in features:
            types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}
        if "i8mm" in features:
            types.add("Q8_0")
        return frozenset(types)
    return frozenset()


@dataclass(frozen=True)
class _Gpu:
    """A device layers can be offloaded to: a local GPU, or a worker's device."""

    index: int
    name: str
    budget: int
    bandwidth: float | None
    worker: Worker | None = None
    gpu: bool = True  # computes like a GPU (a worker's CPU does not)
    cpu_measured: bool = False  # a CPU worker's bandwidth is a measured copy bandwidth


def _usable_gpus(hw: Hardware, budget: Budget) -> list[_Gpu]:
    gpus = []
    for gpu_budget in budget.gpus:
        if not gpu_budget.usable:
            continue
        gpu = next(g for g in hw.gpus if g.index == gpu_budget.index)
        bandwidth = gpu.bandwidth.bytes_per_s if gpu.bandwidth else None
        gpus.append(_Gpu(gpu.index, gpu.name, gpu_budget.bytes, bandwidth))
    return gpus


def _devices(hw: Hardware, budget: Budget) -> list[_Gpu]:
    """Every device layers may go to, in llama.cpp's order: workers' first, then local GPUs."""
    from qwencli.hardware.cluster import worker_bandwidth

    devices = []
    for number, (worker, worker_budget) in enumerate(zip(hw.workers, budget.workers,
                                                         strict=True)):
        bandwidth = worker_bandwidth(worker, hw)
        devices.append(_Gpu(number, worker.name, worker_budget.bytes, bandwidth.bytes_per_s,
                            worker, is_gpu(worker), bandwidth.source == "measured"))
    return devices + _usable_gpus(hw, budget)


def _seconds_per_byte(shape: ModelShape, device: _Gpu) -> float:
    """What one byte of weights takes to read on a device (typical constants): the key the
    placement ranks devices by."""
    if device.gpu:
        efficiency = GPU_EFFICIENCY[1]
    else:
        efficiency = (CPU_EFFICIENCY if device.cpu_measured else CPU_EFFICIENCY_PEAK)[1]
        efficiency *= CPU_DECODE_FAMILY.get(quant_family(shape.quant), 1.0)
    return 1.0 / max((device.bandwidth or 100e9) * efficiency, 1.0)


def _split_layers(counts_needed: int, gpus: Sequence[_Gpu], per_layer: Sequence[int],
                  fixed: Sequence[int], fill: Sequence[int] | None = None) -> list[int] | None:
    """Greedy contiguous split of the offloaded layers (last first) over the GPUs in order.

    per_layer[j] is the bytes of the j-th offloaded layer counted from the lowest index; fixed[g]
    is what GPU g needs regardless (compute buffer, output layer for the last GPU). Returns how
    many layers each GPU takes, or None when they do not fit. With `fill` (device positions,
    fastest first: placement), devices fill in that order instead, each layer counted at the
    largest layer's bytes so that any contiguous run fits.
    """
    if fill is not None:
        return placement.split_by_order(counts_needed, [gpu.budget for gpu in gpus], fixed,
                                        max(per_layer, default=0), fill)
    counts = [0] * len(gpus)
    position = 0
    for g, gpu in enumerate(gpus):
        room = gpu.budget - fixed[g]
        while position < counts_needed and room >= per_layer[position]:
            room -= per_layer[position]
            counts[g] += 1
            position += 1
    return counts if position == counts_needed else None


def _memory(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
            n_gpu_layers: int, gpus: Sequence[_Gpu], n_cpu_moe: int = 0,
            fill: Sequence[int] | None = None) -> tuple[DevicePlan, list[DevicePlan], bool]:
    """Host and device plans for one n_gpu_layers (and MoE expert placement); the bool says
    whether the split fitted."""
    n = shape.n_layers
    ngl = max(0, min(n_gpu_layers, n + 1)) if gpus else 0
    output_on_gpu = ngl >= 1
    first_gpu_layer = n + 1 - ngl  # layers >= this index are offloaded
    repack = repack_types(hw)
    unified = budget.unified_pool

    layer_cost = [layer.weight_bytes + layer_state_bytes(shape, layer, opts.ctx, opts.kv_type)
                  for layer in shape.layers]
    host_layers = [i for i in range(n) if i < first_gpu_layer]
    gpu_layers = [i for i in range(n) if i >= first_gpu_layer]
    # MoE expert placement: the routed experts of offloaded layers below n_cpu_moe stay on the host.
    moved = {i: shape.layers[i].expert_bytes for i in gpu_layers if i < n_cpu_moe}
    expert_copy = max(moved.values(), default=0)  # one layer's experts copied for prompt batches

    # Host.
    host_weights = shape.token_embd_bytes + sum(shape.layers[i].weight_bytes for i in host_layers)
    host_weights += sum(repacked_bytes(shape.layers[i].repackable, repack) for i in host_layers)
    host_weights += sum(moved.values()) + sum(_expert_repacked(shape.layers[i], repack)
                                              for i in moved)
    if not output_on_gpu:
        host_weights += shape.output_host_bytes + repacked_bytes(shape.output_repackable, repack)
    host_kv = sum(layer_state_bytes(shape, shape.layers[i], opts.ctx, opts.kv_type)
                  for i in host_layers)
    host_compute = activation_bytes(shape, opts.n_ubatch) if host_layers or moved or not gpus \
        else 4 * opts.n_ubatch * shape.n_embd
    if host_layers and not opts.flash_attn:
        host_compute += attention_scores_bytes(shape, opts.ctx, opts.n_ubatch)
    host_output = 4 * shape.n_vocab
    host_overhead = OVERHEAD_FIXED + OVERHEAD_PER_VOCAB_ENTRY * shape.n_vocab
    host_breakdown = Breakdown(host_weights, host_kv, host_compute, host_output, host_overhead)

    # Devices: a compute buffer on each GPU that holds layers; the output layer on the last.
    device_plans: list[DevicePlan] = []
    largest_sent = 0  # the largest tensor sent to a worker (see the host's load peak below)
    fitted = True
    if gpus and ngl:
        # A device's buffers are reserved for a micro-batch, which llama.cpp caps at n_ctx
        # (measured on loopback workers at a 256-token context: within 4%).
        ubatch = min(opts.n_ubatch, padded_ctx(opts.ctx))
        compute = activation_bytes(shape, ubatch)
        if not opts.flash_attn:
            compute += attention_scores_bytes(shape, opts.ctx, ubatch)
        logits = 4 * shape.n_vocab * ubatch
        compute += expert_copy
        fixed = [compute] * len(gpus)
        fixed[-1] = max(compute, logits) + shape.output_bytes
        per_layer = [layer_cost[i] - moved.get(i, 0) for i in gpu_layers]
        for g, gpu in enumerate(gpus):
            if not gpu.gpu:  # a worker's CPU: activations and one row of logits are touched
                fixed[g] = worker_cpu_compute(shape, ubatch, True, g == len(gpus) - 1) \
                    + WORKER_CLIENT_OVERHEAD \
                    + (shape.output_bytes if g == len(gpus) - 1 else 0)
        counts = _split_layers(len(gpu_layers), gpus, per_layer, fixed, fill)
        if counts is None:
            fitted = False
            share = len(gpu_layers) // len(gpus)
            counts = [share] * len(gpus)
            counts[-1] += len(gpu_layers) - share * len(gpus)
        position = 0
        for g, gpu in enumerate(gpus):
            taken = gpu_layers[position:position + counts[g]]
            held = [shape.layers[i] for i in taken]
            position += counts[g]
            holds_output = g == len(gpus) - 1
            weights = sum(shape.layers[i].weight_bytes - moved.get(i, 0) for i in taken)
            kv = sum(layer_state_bytes(shape, shape.layers[i], opts.ctx, opts.kv_type)
                     for i in taken)
            gpu_compute = overhead = load_peak = 0
            if taken or holds_output:
                gpu_compute = max(compute, logits) if holds_output else compute
                if not gpu.gpu:
                    gpu_compute = worker_cpu_compute(shape, ubatch, bool(taken), holds_output)
                    overhead = WORKER_CLIENT_OVERHEAD
            if holds_output:
                weights += shape.output_bytes
            if gpu.worker is not None:
                largest_sent = max(largest_sent,
                                   worker_largest_tensor(shape, held, holds_output))
                if not gpu.gpu:
                    load_peak = worker_load_peak(shape, held, weights, holds_output)
            device_plans.append(DevicePlan(gpu.index, gpu.name, len(taken) + holds_output,
                                           gpu.budget,
                                           Breakdown(weights, kv, gpu_compute, 0, overhead),
                                           worker=gpu.worker, load_peak=load_peak))
    host_budget = budget.host_bytes
    if unified:
        # One pool: what the local GPU holds is also taken from the host budget.
        host_budget -= sum(device.bytes for device in device_plans if device.worker is None)
    # llama.cpp's RPC client copies each tensor it sends into a message of its own: the host
    # holds the largest tensor sent to a worker once more while loading.
    host_plan = DevicePlan(-1, "host", len(host_layers), host_budget, host_breakdown,
                           load_peak=host_breakdown.total + largest_sent if largest_sent else 0)
    return host_plan, device_plans, fitted


def _fits(host: DevicePlan, devices: Sequence[DevicePlan], fitted: bool) -> bool:
    return fitted and host.fits and all(device.fits for device in devices)


# ------------------------------------------------------------------------------------------
# Speed


@dataclass(frozen=True)
class _Part:
    """One device's share of a token: what it reads and computes."""

    name: str
    weight: int  # weight bytes read per decoded token
    prompt_weight: int  # weight bytes per prompt token (the output layer runs once a batch)
    kv_layers: int  # layers whose KV cache this device reads
    layers: int
    bandwidth: float
    gpu: bool
    worker: Worker | None = None  # a worker's device: its link is part of each token
    cpu_measured: bool | None = None  # a worker CPU's bandwidth kind (None: the host's)
    holds_output: bool = False


def _parts(shape: ModelShape, hw: Hardware, devices: Sequence[DevicePlan]) -> list[_Part]:
    n = shape.n_layers
    devices = [device for device in devices if device.layers]  # a zero share holds nothing
    active_share = (shape.n_expert_used / shape.n_expert) if shape.n_expert else 1.0

    def read_bytes(layers: Sequence[LayerShape]) -> int:
        total = 0
        for layer in layers:
            total += layer.weight_bytes - layer.expert_bytes
            total += int(layer.expert_bytes * active_share)
        return total

    repack = repack_types(hw)

    def plain_layout_extra(layers: Sequence[LayerShape], output: bool) -> int:
        """What reading repackable weights in their plain layout (a worker's CPU) adds, as
        bytes at the repacked rate (CPU_PLAIN_LAYOUT)."""
        extra = 0.0
        for layer in layers:
            read_share = read_bytes([layer]) / max(layer.weight_bytes, 1)
            extra += repacked_bytes(layer.repackable, repack) * read_share
        if output:
            extra += repacked_bytes(shape.output_repackable, repack)
        return int(extra * (CPU_PLAIN_LAYOUT - 1.0))

    first_gpu_layer = n - sum(d.layers for d in devices) + (1 if devices else 0)
    host_layers = list(shape.layers[:first_gpu_layer]) if devices else list(shape.layers)
    output_on_host = not devices
    # (a tied output layer reads the whole embedding matrix: output_bytes covers it)
    host_weights = read_bytes(host_layers)
    ram_bw = hw.memory.bandwidth.bytes_per_s if hw.memory.bandwidth else 20e9  # assumed
    parts = [_Part("host", host_weights + (shape.output_bytes if output_on_host else 0),
                   host_weights, sum(1 for layer in host_layers if layer.kv), len(host_layers),
                   ram_bw, False)]
    position = first_gpu_layer
    gpu_by_index = {gpu.index: gpu for gpu in hw.gpus}
    # The output layer is on the last device that holds layers (llama.cpp's tensor_split
    # gives devices with a zero share nothing).
    output_device = next((d for d in reversed(devices) if d.layers), devices[-1]) \
        if devices else None
    for device in devices:
        holds_output = device is output_device
        repeating = device.layers - (1 if holds_output else 0)
        layers = list(shape.layers[position:position + repeating])
        position += repeating
        weights = read_bytes(layers)
        output = shape.output_bytes if holds_output else 0
        kv_layers = sum(1 for layer in layers if layer.kv)
        if device.worker is not None:
            from qwencli.hardware.cluster import worker_bandwidth

            bw = worker_bandwidth(device.worker, hw)
            remote_gpu = is_gpu(device.worker)
            read = weights + output + (
                0 if remote_gpu else plain_layout_extra(layers, holds_output))
            parts.append(_Part(device.name, read, weights, kv_layers, len(layers),
                               bw.bytes_per_s, remote_gpu, device.worker,
                               bw.source == "measured", holds_output))
            continue
        gpu = gpu_by_index.get(device.index)
        bandwidth = gpu.bandwidth.bytes_per_s if gpu and gpu.bandwidth else 100e9  # assumed
        parts.append(_Part(device.name, weights + output, weights, kv_layers, len(layers),
                           bandwidth, True, holds_output=holds_output))
    return [part for part in parts if part.weight or part.layers]


def _threads(hw: Hardware) -> int:
    return max(1, hw.cpu.physical_cores or 1)


def _gpu_backend(hw: Hardware) -> str:
    return hw.llama_cpp.backend if hw.llama_cpp.backend in GPU_PROMPT_FACTOR else \
        next((g.backend for g in hw.gpus), "unknown")


def decode_seconds(shape: ModelShape, hw: Hardware, part: _Part, depth: int, kv_type: str,
                   which: int) -> tuple[float, float]:
    """(weights and layers, KV cache at `depth`) seconds per decoded token on one device,
    uncalibrated; `which` picks the constants: 0 worst, 1 typical, 2 best."""
    if part.gpu:
        efficiency = GPU_EFFICIENCY[which]
    else:
        measured = hw.memory.bandwidth is not None and hw.memory.bandwidth.source == "measured"
        if part.cpu_measured is not None:
            measured = part.cpu_measured
        efficiency = (CPU_EFFICIENCY if measured else CPU_EFFICIENCY_PEAK)[which]
        efficiency *= CPU_DECODE_FAMILY.get(quant_family(shape.quant), 1.0)
    cost = (GPU_LAYER_COST if part.gpu else CPU_LAYER_COST)[which]
    rate = max(part.bandwidth * efficiency, 1.0)  # a bandwidth of 0 from a profile: no crash
    kv = kv_bytes_per_layer(shape, depth, kv_type) * depth / padded_ctx(depth) if depth else 0
    return part.weight / rate + part.layers * cost, part.kv_layers * kv / rate


def prompt_seconds(shape: ModelShape, hw: Hardware, part: _Part, depth: int) -> tuple[float,
                                                                                      float]:
    """(weights, attention over `depth` cached tokens) seconds per prompt token on one device
    in 512-token batches, uncalibrated."""
    attention_flops = 4 * shape.n_head * max(shape.head_dim_k, shape.head_dim_v) * depth \
        * part.kv_layers
    if part.gpu:
        backend = _gpu_backend(hw)
        if part.worker is not None and part.worker.backend in GPU_PROMPT_FACTOR:
            backend = part.worker.backend
        factor = GPU_PROMPT_FACTOR.get(backend, GPU_PROMPT_FACTOR_DEFAULT)
        bandwidth = max(part.bandwidth, 1.0)
        return (part.prompt_weight / (bandwidth * factor),
                attention_flops / (bandwidth * GPU_ATTENTION_FLOPS_PER_BYTE))
    threads = _threads(hw)
    rate = CPU_PROMPT_RATE.get(quant_family(shape.quant), CPU_PROMPT_RATE_DEFAULT) * threads
    return part.prompt_weight / rate, attention_flops / (CPU_ATTENTION_FLOPS * threads)


def prompt_token_seconds(shape: ModelShape, hw: Hardware, part: _Part, mean_depth: int,
                         factors: DeviceFactors | None = None) -> float:
    """Seconds per prompt token on one device, in 512-token batches, when the prompt's tokens
    sit on average after `mean_depth` cached tokens (a pp512 from an empty context: 256).
    Calibrated as `qwen bench` measures: a batch from an empty context scaled by the prompt
    factor, the attention the extra depth adds by the attention factor."""
    weights, attention = prompt_seconds(shape, hw, part, mean_depth)
    if factors is None:
        return weights + attention
    _weights, attention_empty = prompt_seconds(shape, hw, part, N_UBATCH // 2)
    return (weights + attention_empty) * factors.prompt \
        + (attention - attention_empty) * factors.attention


def _measured_factors(parts: Sequence[_Part],
                      calibration: SpeedCalibration | None) -> list[DeviceFactors] | None:
    """Each part's measured factors, in order; None unless the calibration measured every
    device the plan uses (a half-measured plan stays an estimate)."""
    if calibration is None:
        return None
    found = [calibration.devices.get(part.name) for part in parts]
    return None if any(f is None for f in found) else [f for f in found if f is not None]


def estimate_speed(shape: ModelShape, hw: Hardware, host: DevicePlan,
                   devices: Sequence[DevicePlan], opts: Options,
                   calibration: SpeedCalibration | None = None) -> Speed:
    """Decode tokens/s (a typical figure and a range), prompt tokens/s and the time to first
    token (see the module docstring). A calibration measured on this machine replaces the
    constants for the devices it measured."""
    parts = _parts(shape, hw, devices)
    if not parts:
        return Speed(0.0, 0.0, 0, "host")
    measured = _measured_factors(parts, calibration)
    per_part = measured or [None] * len(parts)
    full = opts.ctx
    slow = fast = typical = 0.0
    worst_name, worst_time = "host", -1.0
    # The links to workers (placement): at an empty and a full context, per constant set.
    runs = _remote_runs(parts)
    network = [sum(placement.decode_network_seconds(run, shape.n_embd, shape.n_vocab, depth,
                                                    opts.flash_attn, which) for run in runs)
               for which, depth in ((0, full), (1, 0), (2, 0))]
    slow, typical, fast = network
    for part, factors in zip(parts, per_part, strict=True):
        if factors is not None:
            weights, _kv = decode_seconds(shape, hw, part, 0, opts.kv_type, 1)
            _w, kv_full = decode_seconds(shape, hw, part, full, opts.kv_type, 1)
            part_typical = weights * factors.decode
            part_slow = part_typical + kv_full * factors.kv
            part_fast = part_typical
        else:
            weights_worst, kv_worst = decode_seconds(shape, hw, part, full, opts.kv_type, 0)
            part_typical = decode_seconds(shape, hw, part, 0, opts.kv_type, 1)[0]
            part_slow = weights_worst + kv_worst
            part_fast = decode_seconds(shape, hw, part, 0, opts.kv_type, 2)[0]
        slow += part_slow
        fast += part_fast
        typical += part_typical
        if part_typical > worst_time:
            worst_name, worst_time = part.name, part_typical

    def prompt_time(mean_depth: int) -> float:
        return sum(prompt_token_seconds(shape, hw, part, mean_depth, factors)
                   for part, factors in zip(parts, per_part, strict=True)) + sum(
            placement.prompt_network_seconds(run, shape.n_embd, shape.n_vocab, mean_depth,
                                             opts.flash_attn, opts.n_ubatch) for run in runs)

    prompt_empty = prompt_time(N_UBATCH // 2)  # as pp512 measures it
    ttft = None
    if opts.prompt_tokens is not None and opts.prompt_tokens > 0:
        # Attention grows with the position: a prompt of N tokens costs N tokens at depth N/2.
        ttft = opts.prompt_tokens * prompt_time(opts.prompt_tokens // 2) + typical
    bytes_per_token = sum(part.weight for part in parts)

    def per_s(seconds: float, scale: float = 1.0) -> float:
        return scale / seconds if seconds > 0 else 0.0

    limited_by = "network" if network[1] > worst_time else worst_name
    if measured is not None and calibration is not None:
        spread = max(CALIBRATED_SPREAD_MIN, calibration.spread)
        return Speed(low=per_s(slow, 1 - spread), high=per_s(typical, 1 + spread),
                     bytes_per_token=bytes_per_token, bottleneck=worst_name,
                     typical=per_s(typical), prompt_tok_s=per_s(prompt_empty), ttft_s=ttft,
                     source="calibrated", calibration=calibration.label,
                     network_s=network[1], limited_by=limited_by)
    return Speed(low=per_s(slow), high=per_s(fast), bytes_per_token=bytes_per_token,
                 bottleneck=worst_name, typical=per_s(typical), prompt_tok_s=per_s(prompt_empty),
                 ttft_s=ttft, network_s=network[1], limited_by=limited_by)


def _remote_runs(parts: Sequence[_Part]) -> list[placement.RemoteRun]:
    return [placement.RemoteRun(part.name, part.worker.link, part.holds_output)
            for part in parts if part.worker is not None]


@dataclass(frozen=True)
class SpeedParts:
    """The uncalibrated estimate split into what a calibration scales: seconds per token."""

    decode_s: float  # weights and per-layer cost, empty context
    kv_s: float  # what reading the KV cache at `depth` adds per decoded token
    prompt_s: float  # weights, per prompt token in 512-token batches
    attention_s: float  # what attention over `prompt_depth` cached tokens adds per prompt token
    device: str | None  # the one device that runs the whole model; None when it is split


def speed_parts(shape: ModelShape, hw: Hardware, p: Plan, depth: int,
                prompt_depth: int) -> SpeedParts:
    """What `qwen bench` compares its measurements with, part by part."""
    parts = _parts(shape, hw, p.devices)
    decode = kv = prompt = attention = 0.0
    for part in parts:
        weights_s, kv_part = decode_seconds(shape, hw, part, depth, p.kv_type, 1)
        prompt_part, attention_part = prompt_seconds(shape, hw, part, prompt_depth)
        decode, kv = decode + weights_s, kv + kv_part
        prompt, attention = prompt + prompt_part, attention + attention_part
    for run in _remote_runs(parts):  # the links to workers count as decode time
        decode += placement.decode_network_seconds(run, shape.n_embd, shape.n_vocab, depth,
                                                   p.flash_attn, 1)
    device = parts[0].name if len(parts) == 1 else None
    return SpeedParts(decode, kv, prompt, attention, device)


def predict_at(shape: ModelShape, hw: Hardware, p: Plan, depth: int, prompt_tokens: int,
               calibration: SpeedCalibration | None = None) -> tuple[float, float]:
    """(decode tok/s after `depth` tokens, prompt tok/s for `prompt_tokens` after `depth`):
    the estimate a bench's figures are set beside."""
    parts = _parts(shape, hw, p.devices)
    measured = _measured_factors(parts, calibration)
    decode = prompt = 0.0
    for part, factors in zip(parts, measured or [DeviceFactors(1.0)] * len(parts), strict=True):
        weights_s, kv_s = decode_seconds(shape, hw, part, depth, p.kv_type, 1)
        decode += weights_s * factors.decode + kv_s * factors.kv
        prompt += prompt_token_seconds(shape, hw, part, depth + prompt_tokens // 2, factors)
    for run in _remote_runs(parts):
        decode += placement.decode_network_seconds(run, shape.n_embd, shape.n_vocab, depth,
                                                   p.flash_attn, 1)
        prompt += placement.prompt_network_seconds(run, shape.n_embd, shape.n_vocab,
                                                   depth + prompt_tokens // 2, p.flash_attn,
                                                   N_UBATCH)
    return (1 / decode if decode > 0 else 0.0, 1 / prompt if prompt > 0 else 0.0)


# ------------------------------------------------------------------------------------------
# The plan


def _plan_at(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
             gpus: Sequence[_Gpu], fill: Sequence[int] | None = None
             ) -> tuple[int, DevicePlan, list[DevicePlan], bool]:
    """The placement for `opts`: the given n_gpu_layers, or the most that the GPUs hold.

    What the GPUs need only grows with n_gpu_layers and what the host needs only shrinks, so the
    most layers the GPUs hold (found by bisection) is also the host's best chance to fit.
    """
    max_layers = shape.n_layers + 1 if gpus else 0
    if opts.n_gpu_layers is not None:
        ngl = max(0, min(opts.n_gpu_layers, max_layers))
    else:
        def gpus_hold(count: int) -> bool:
            _host, devices, fitted = _memory(shape, hw, budget, opts, count, gpus, fill=fill)
            return fitted and all(device.fits for device in devices)

        low, high = 0, max_layers  # gpus_hold(0) is always true
        if gpus_hold(high):
            low = high
        while high - low > 1:
            middle = (low + high) // 2
            if gpus_hold(middle):
                low = middle
            else:
                high = middle
        ngl = low
    host, devices, fitted = _memory(shape, hw, budget, opts, ngl, gpus, fill=fill)
    return ngl, host, devices, _fits(host, devices, fitted)


def max_context(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options) -> int:
    """The largest context (a multiple of 256, at most the model's) that fits."""
    gpus = _devices(hw, budget)
    fill = _fill_order(shape, gpus) if hw.workers else None
    limit = max(CTX_PAD, shape.ctx_train)

    def fits(ctx: int) -> bool:
        at = replace(opts, ctx=ctx)
        if _plan_at(shape, hw, budget, at, gpus, fill)[3]:
            return True
        moe = _moe_at(shape, hw, budget, at, gpus)
        return moe is not None and moe[3]

    if not fits(CTX_PAD):
        return 0
    low, high = 1, limit // CTX_PAD  # in units of CTX_PAD; fits(low) is true
    if fits(high * CTX_PAD):
        return min(limit, high * CTX_PAD)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle * CTX_PAD):
            low = middle
        else:
            high = middle
    return low * CTX_PAD


def plan(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options, *,
         find_usable_ctx: bool = True, calibration: SpeedCalibration | None = None) -> Plan:
    """Plan loading `shape` at `opts.ctx` on this machine.

    `find_usable_ctx=False` skips the search for the largest context (usable_ctx is then 0),
    for callers that plan many candidates and only show a few. `calibration`: what `qwen bench`
    measured on this machine (the caller loads it; only for the real machine).
    """
    if opts.kv_type not in KV_TYPE_BYTES:
        raise ValueError(f"unknown KV cache type {opts.kv_type!r}")
    gpus = _usable_gpus(hw, budget)
    if hw.workers:
        ngl, host, devices, fits, speed = _across_machines(shape, hw, budget, opts,
                                                           calibration)
    else:
        ngl, host, devices, fits = _plan_at(shape, hw, budget, opts, gpus)
        speed = estimate_speed(shape, hw, host, devices, opts, calibration)
    # MoE expert placement (see the module docstring): kept when it fits and is faster.
    n_cpu_moe = 0
    moe = _moe_at(shape, hw, budget, opts, gpus)
    if moe is not None:
        moe_n, moe_host, moe_devices, moe_fits = moe
        moe_speed = _moe_speed(estimate_speed(shape, hw, moe_host, moe_devices, opts, calibration),
                               shape, hw, moe_devices, opts, moe_n)
        if (moe_fits, moe_speed.typical) > (fits, speed.typical) \
                or opts.moe_cpu_layers is not None:
            ngl, host, devices, fits = shape.n_layers + 1, moe_host, moe_devices, moe_fits
            speed, n_cpu_moe = moe_speed, moe_n
    total_layers = sum(device.layers for device in devices)
    tensor_split = tuple(device.layers / total_layers for device in devices) \
        if total_layers else ()
    return Plan(
        model=shape.name, quant=shape.quant, source=shape.source, ctx=opts.ctx,
        usable_ctx=max_context(shape, hw, budget, opts) if find_usable_ctx else 0,
        fits=fits, n_gpu_layers=ngl,
        n_layers=shape.n_layers, host=host, devices=tuple(devices),
        unified_pool=budget.unified_pool, tensor_split=tensor_split,
        flash_attn=opts.flash_attn, kv_type=opts.kv_type,
        speed=speed, moe_cpu_layers=n_cpu_moe,
    )


# ------------------------------------------------------------------------------------------
# Across machines (placement's module docstring)


def _fill_order(shape: ModelShape, devices: Sequence[_Gpu]) -> list[int]:
    return placement.speed_order(devices, lambda d: _seconds_per_byte(shape, d),
                                 lambda d: d.budget)


ROOM_SPEED_SHARE = 0.99  # within 1 % of a device set's fastest split, the roomiest is kept


def _room(host: DevicePlan, devices: Sequence[DevicePlan]) -> float:
    """The smallest share of a budget left free, over the host and the devices used."""
    used = [host, *(device for device in devices if device.layers)]
    return min((d.budget_bytes - d.bytes) / d.budget_bytes if d.budget_bytes > 0 else -1.0
               for d in used)


def _least_offload(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
                   subset: Sequence[_Gpu], fill: Sequence[int] | None, most: int) -> int:
    """The fewest offloaded layers with which the plan still fits (`most` fits)."""
    def fits(count: int) -> bool:
        host, devices, fitted = _memory(shape, hw, budget, opts, count, subset, fill=fill)
        return _fits(host, devices, fitted)

    low, high = -1, most  # fits(high) is true
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


def _across_machines(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
                     calibration: SpeedCalibration | None
                     ) -> tuple[int, DevicePlan, list[DevicePlan], bool, Speed]:
    """The fastest placement that fits, over this machine's devices with the fastest k
    workers for every k (placement's `candidate_sets`); every device stays in the plan's list,
    in llama.cpp's order, an unused one with no layers (its tensor_split share is 0).

    Within one set of devices that includes workers, the most layers they hold is one choice;
    the fewest with which the plan fits, and the middle, are others: when one of those is
    within 1 % of the fastest (layers on a worker that is no faster than this machine's CPU),
    the roomiest of them is kept, so equally fast machines share the model instead of one
    being filled to its margin."""
    devices = _devices(hw, budget)
    best: tuple[tuple[bool, float], tuple[int, DevicePlan, list[DevicePlan], bool, Speed]] \
        | None = None
    candidates = placement.candidate_sets(_fill_order(shape, devices),
                                          [d.worker is not None for d in devices])
    if opts.n_gpu_layers is not None:
        candidates = candidates[-1:]  # --gpu-layers N: N layers over every device
    for chosen, order in candidates:
        fill: list[int] | None = order
        subset = [devices[i] for i in chosen]
        if not any(device.worker is not None for device in subset):
            fill = None  # this machine alone: exactly the plan it gets without workers
        splits = [_plan_at(shape, hw, budget, opts, subset, fill)]
        most = splits[0][0]
        if fill is not None and opts.n_gpu_layers is None and splits[0][3] and most > 0:
            least = _least_offload(shape, hw, budget, opts, subset, fill, most)
            for count in sorted({least, (least + most) // 2} - {most}):
                splits.append(_plan_at(shape, hw, budget, replace(opts, n_gpu_layers=count),
                                       subset, fill))
        options = []
        for ngl, host, plans, fits in splits:
            if not plans:
                ngl = 0  # nothing offloaded: every layer on the local CPU
            speed = estimate_speed(shape, hw, host, plans, opts, calibration)
            options.append((ngl, host, plans, fits, speed))
        if fill is not None and opts.n_gpu_layers is None:
            # A split of a set with workers that leaves them empty is this machine alone, but
            # not the plan it gets alone (the set with no worker gives that one): not a choice.
            options = [o for o in options
                       if any(p.worker is not None and p.layers for p in o[2])]
            if not options:
                continue
        fastest = max(option[4].typical for option in options)
        ngl, host, plans, fits, speed = max(
            options, key=lambda o: (o[3], o[4].typical >= ROOM_SPEED_SHARE * fastest,
                                    _room(o[1], o[2]), o[4].typical))
        by_position = dict(zip(chosen, plans, strict=False))
        full = [by_position.get(i) or DevicePlan(d.index, d.name, 0, d.budget, Breakdown(),
                                                 worker=d.worker)
                for i, d in enumerate(devices)]
        key = (fits, speed.typical)
        if best is None or key > best[0]:
            best = (key, (ngl, host, full, fits, speed))
    assert best is not None
    return best[1]


# ------------------------------------------------------------------------------------------
# MoE expert placement (llama.cpp's --n-cpu-moe; see the module docstring)

# llama.cpp's LLM_FFN_EXPS_REGEX (common/common.h) after `blk\.N`, as `--n-cpu-moe N` builds it.
EXPERT_TENSOR_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


# A layer whose only CPU work is its experts runs a few of a layer's graph nodes there (the three
# expert matrix products, the gating and the weighted sum: about 6 of some 15 per layer), so it pays
# that share of the CPU's per-layer cost, plus one hand-over each way between GPU and CPU (an
# estimate: a few microseconds per copy and a stream synchronisation).
MOE_CPU_OP_SHARE = 0.4
MOE_SYNC_COST = 0.03e-3


def expert_override_patterns(n_layers: int) -> tuple[str, ...]:
    """The `-ot` patterns `--n-cpu-moe n_layers` makes: layer i's routed experts, i < n."""
    return tuple(f"blk\\.{i}{EXPERT_TENSOR_REGEX}" for i in range(max(0, n_layers)))


def _expert_repacked(layer: LayerShape, repack: frozenset[str]) -> int:
    """The repacked copy of a layer's experts: its repackable bytes in the experts' share."""
    if not layer.weight_bytes:
        return 0
    return int(repacked_bytes(layer.repackable, repack) * layer.expert_bytes / layer.weight_bytes)


def _moe_at(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
            gpus: Sequence[_Gpu]) -> tuple[int, DevicePlan, list[DevicePlan], bool] | None:
    """Every layer offloaded with the experts of the first N layers on the host: N as given
    (`opts.moe_cpu_layers`), or the smallest N whose GPU part fits. None when it does not apply
    (no GPU, not a MoE, --gpu-layers given, or even all experts on the host leave the GPUs
    short)."""
    n = shape.n_layers
    if not gpus or not shape.n_expert or not any(layer.expert_bytes for layer in shape.layers):
        return None
    if hw.workers:
        return None  # not planned across machines (yet): whole layers go to the workers
    ngl = n + 1
    if opts.moe_cpu_layers is not None:
        if opts.moe_cpu_layers <= 0:
            return None
        count = min(opts.moe_cpu_layers, n)
        host, devices, fitted = _memory(shape, hw, budget, opts, ngl, gpus, count)
        return count, host, devices, _fits(host, devices, fitted)
    if opts.n_gpu_layers is not None:
        return None

    def gpus_hold(count: int) -> bool:
        _host, devices, fitted = _memory(shape, hw, budget, opts, ngl, gpus, count)
        return fitted and all(device.fits for device in devices)

    if gpus_hold(0) or not gpus_hold(n):
        return None  # the whole model fits (whole-layer offload has it), or nothing helps
    low, high = 0, n  # gpus_hold(high) is true, gpus_hold(low) false
    while high - low > 1:
        middle = (low + high) // 2
        if gpus_hold(middle):
            high = middle
        else:
            low = middle
    host, devices, fitted = _memory(shape, hw, budget, opts, ngl, gpus, high)
    return high, host, devices, _fits(host, devices, fitted)


def _moe_speed(base: Speed, shape: ModelShape, hw: Hardware, devices: Sequence[DevicePlan],
               opts: Options, n_cpu_moe: int) -> Speed:
    """`base` (every layer on the GPUs) with the active experts of layers < n_cpu_moe read
    from host RAM instead: their GPU time comes off, their RAM time and the CPU's per-layer
    cost go on, at each of the (worst, typical, best) constants."""
    if n_cpu_moe <= 0 or min(base.low, base.typical, base.high) <= 0:
        return base
    active_share = (shape.n_expert_used / shape.n_expert) if shape.n_expert else 1.0
    gpu_by_index = {gpu.index: gpu for gpu in hw.gpus}
    ram_bw = hw.memory.bandwidth.bytes_per_s if hw.memory.bandwidth else 20e9
    measured = hw.memory.bandwidth is not None and hw.memory.bandwidth.source == "measured"
    cpu_efficiency = CPU_EFFICIENCY if measured else CPU_EFFICIENCY_PEAK
    seconds = [1 / base.low, 1 / base.typical, 1 / base.high]  # worst, typical, best
    host_read = 0
    position = 0
    for device in devices:  # device plans list their repeating layers in order, from layer 0
        repeating = device.layers - (1 if device is devices[-1] else 0)
        indices = range(position, position + repeating)
        position += repeating
        read = sum(int(shape.layers[i].expert_bytes * active_share)
                   for i in indices if i < n_cpu_moe)
        gpu = gpu_by_index.get(device.index)
        bw = gpu.bandwidth.bytes_per_s if gpu and gpu.bandwidth else 100e9
        seconds = [t - read / (bw * GPU_EFFICIENCY[i]) for i, t in enumerate(seconds)]
        host_read += read
    layers = min(n_cpu_moe, shape.n_layers)
    host = [host_read / (max(ram_bw, 1.0) * cpu_efficiency[i])
            + layers * (CPU_LAYER_COST[i] * MOE_CPU_OP_SHARE + MOE_SYNC_COST) for i in range(3)]
    seconds = [max(t, 1e-9) + h for t, h in zip(seconds, host, strict=True)]
    bottleneck = "host" if host[1] > seconds[1] - host[1] else base.bottleneck
    return replace(base, low=1 / seconds[0], typical=1 / seconds[1], high=1 / seconds[2],
                   bottleneck=bottleneck)
