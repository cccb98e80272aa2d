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
expert tensors. The range: high = empty context, best efficiency; low = full context (the KV cache
read too), worst efficiency. Efficiencies were measured here for the CPU (against the measured
copy bandwidth); for GPUs they follow published llama.cpp results (50-75% of peak, about 0.14 ms
per layer, fit-anchors.md section 8).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from qwencli.hardware.model import Budget, Hardware

MIB = 1024**2
CTX_PAD = 256
N_UBATCH = 512
# Fixed host overhead: measured 36 MiB for the 151,936-token vocabulary; scale with the vocabulary.
OVERHEAD_FIXED = 12 * MIB
OVERHEAD_PER_VOCAB_ENTRY = 160  # bytes

KV_TYPE_BYTES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                 "q4_1": 20 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}

# Decode efficiency ranges, as (worst, best) fractions of the device's bandwidth figure, and the
# fixed cost per layer in seconds (worst, best).
CPU_EFFICIENCY = (0.9, 1.3)  # against the measured copy bandwidth, which counts read + write
GPU_EFFICIENCY = (0.5, 0.75)  # against the specification's peak bandwidth
CPU_LAYER_COST = (0.30e-3, 0.20e-3)
GPU_LAYER_COST = (0.15e-3, 0.08e-3)


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

    @property
    def bytes(self) -> int:
        return self.breakdown.total

    @property
    def fits(self) -> bool:
        return self.bytes <= self.budget_bytes


@dataclass(frozen=True)
class Speed:
    low: float  # tokens/s at a full context, worst efficiency
    high: float  # tokens/s at an empty context, best efficiency
    bytes_per_token: int  # weights read per token (empty context)
    bottleneck: str  # the device that takes the most time per token


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
    tensor_split: tuple[float, ...]  # per usable GPU, as llama.cpp's tensor_split
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
    index: int
    name: str
    budget: int
    bandwidth: float | None


def _usable_gpus(hw: Hardware, budget: Budget) -> list[_Gpu]:
    gpus = []
    for gpu_budget in budget.gpus:
        if not gpu_budget.usable:
            continue
        gpu = next(g for g in hw.gpus if g.index == gpu_budget.index)
        bandwidth = gpu.bandwidth.bytes_per_s if gpu.bandwidth else None
        gpus.append(_Gpu(gpu.index, gpu.name, gpu_budget.bytes, bandwidth))
    return gpus


def _split_layers(counts_needed: int, gpus: Sequence[_Gpu], per_layer: Sequence[int],
                  fixed: Sequence[int]) -> list[int] | None:
    """Greedy contiguous split of the offloaded layers (last first) over the GPUs in order.

    per_layer[j] is the bytes of the j-th offloaded layer counted from the lowest index; fixed[g]
    is what GPU g needs regardless (compute buffer, output layer for the last GPU). Returns how
    many layers each GPU takes, or None when they do not fit.
    """
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
            n_gpu_layers: int, gpus: Sequence[_Gpu],
            n_cpu_moe: int = 0) -> tuple[DevicePlan, list[DevicePlan], bool]:
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
    host_compute = activation_bytes(shape, opts.n_ubatch) if host_layers or moved or not gpus else \
        4 * opts.n_ubatch * shape.n_embd
    if host_layers and not opts.flash_attn:
        host_compute += attention_scores_bytes(shape, opts.ctx, opts.n_ubatch)
    host_output = 4 * shape.n_vocab
    host_overhead = OVERHEAD_FIXED + OVERHEAD_PER_VOCAB_ENTRY * shape.n_vocab
    host_breakdown = Breakdown(host_weights, host_kv, host_compute, host_output, host_overhead)

    # Devices: a compute buffer on each GPU that holds layers; the output layer on the last.
    device_plans: list[DevicePlan] = []
    fitted = True
    if gpus and ngl:
        compute = activation_bytes(shape, opts.n_ubatch)
        if not opts.flash_attn:
            compute += attention_scores_bytes(shape, opts.ctx, opts.n_ubatch)
        logits = 4 * shape.n_vocab * opts.n_ubatch
        compute += expert_copy
        fixed = [compute] * len(gpus)
        fixed[-1] = max(compute, logits) + shape.output_bytes
        per_layer = [layer_cost[i] - moved.get(i, 0) for i in gpu_layers]
        counts = _split_layers(len(gpu_layers), gpus, per_layer, fixed)
        if counts is None:
            fitted = False
            share = len(gpu_layers) // len(gpus)
            counts = [share] * len(gpus)
            counts[-1] += len(gpu_layers) - share * len(gpus)
        position = 0
        for g, gpu in enumerate(gpus):
            taken = gpu_layers[position:position + counts[g]]
            position += counts[g]
            holds_output = g == len(gpus) - 1
            weights = sum(shape.layers[i].weight_bytes - moved.get(i, 0) for i in taken)
            kv = sum(layer_state_bytes(shape, shape.layers[i], opts.ctx, opts.kv_type)
                     for i in taken)
            gpu_compute = 0
            if taken or holds_output:
                gpu_compute = max(compute, logits) if holds_output else compute
            if holds_output:
                weights += shape.output_bytes
            device_plans.append(DevicePlan(gpu.index, gpu.name, len(taken) + holds_output,
                                           gpu.budget, Breakdown(weights, kv, gpu_compute)))
    host_budget = budget.host_bytes
    if unified:
        # One pool: what the GPU holds is also taken from the host budget.
        host_budget -= sum(device.bytes for device in device_plans)
    host_plan = DevicePlan(-1, "host", len(host_layers), host_budget, host_breakdown)
    return host_plan, device_plans, fitted


def _fits(host: DevicePlan, devices: Sequence[DevicePlan], fitted: bool) -> bool:
    return fitted and host.fits and all(device.fits for device in devices)


# ------------------------------------------------------------------------------------------
# Speed


def estimate_speed(shape: ModelShape, hw: Hardware, host: DevicePlan,
                   devices: Sequence[DevicePlan], opts: Options) -> Speed:
    """Decode tokens/s as a range (see the module docstring)."""
    n = shape.n_layers
    active_share = (shape.n_expert_used / shape.n_expert) if shape.n_expert else 1.0

    def read_bytes(layers: Sequence[LayerShape]) -> int:
        total = 0
        for layer in layers:
            total += layer.weight_bytes - layer.expert_bytes
            total += int(layer.expert_bytes * active_share)
        return total

    first_gpu_layer = n - sum(d.layers for d in devices) + (1 if devices else 0)
    host_layers = list(shape.layers[:first_gpu_layer]) if devices else list(shape.layers)
    output_on_host = not devices
    host_read = read_bytes(host_layers) + (shape.output_bytes if output_on_host else 0)
    # (a tied output layer reads the whole embedding matrix: output_bytes covers it)
    kv_full_host = sum(kv_bytes_per_layer(shape, opts.ctx, opts.kv_type)
                       for layer in host_layers if layer.kv)

    parts: list[tuple[str, int, int, float | None, bool, int]] = []
    # (name, weight bytes, kv bytes at full context, bandwidth, is_gpu, layers)
    ram_bw = hw.memory.bandwidth.bytes_per_s if hw.memory.bandwidth else None
    parts.append(("host", host_read, kv_full_host, ram_bw, False, len(host_layers)))
    position = first_gpu_layer
    gpu_by_index = {gpu.index: gpu for gpu in hw.gpus}
    for device in devices:
        repeating = device.layers - (1 if device is devices[-1] else 0)
        layers = list(shape.layers[position:position + repeating])
        position += repeating
        weight = read_bytes(layers) + (shape.output_bytes if device is devices[-1] else 0)
        kv = sum(kv_bytes_per_layer(shape, opts.ctx, opts.kv_type) for layer in layers if layer.kv)
        gpu = gpu_by_index.get(device.index)
        bandwidth = gpu.bandwidth.bytes_per_s if gpu and gpu.bandwidth else None
        parts.append((device.name, weight, kv, bandwidth, True, len(layers)))

    slow = fast = 0.0
    worst_name, worst_time = "host", -1.0
    total_read = 0
    for name, weight, kv, bandwidth, is_gpu, layers in parts:
        if weight == 0 and layers == 0:
            continue
        total_read += weight
        bw = bandwidth or (100e9 if is_gpu else 20e9)  # assumed when unknown
        eff_low, eff_high = GPU_EFFICIENCY if is_gpu else CPU_EFFICIENCY
        cost_low, cost_high = GPU_LAYER_COST if is_gpu else CPU_LAYER_COST
        t_slow = (weight + kv) / (bw * eff_low) + layers * cost_low
        t_fast = weight / (bw * eff_high) + layers * cost_high
        slow += t_slow
        fast += t_fast
        if t_fast > worst_time:
            worst_name, worst_time = name, t_fast
    if fast <= 0:
        return Speed(0.0, 0.0, 0, "host")
    return Speed(low=1 / slow, high=1 / fast, bytes_per_token=total_read, bottleneck=worst_name)


# ------------------------------------------------------------------------------------------
# The plan


def _plan_at(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
             gpus: Sequence[_Gpu]) -> tuple[int, DevicePlan, list[DevicePlan], bool]:
    """The placement for `opts`: the given n_gpu_layers, or the most that the GPUs hold.

    What the GPUs need only grows with n_gpu_layers and what the host needs only shrinks, so the
    most layers the GPUs hold (found by bisection) is also the host's best chance to fit.
    """
    max_layers = shape.n_layers + 1 if gpus else 0
    if opts.n_gpu_layers is not None:
        ngl = max(0, min(opts.n_gpu_layers, max_layers))
    else:
        def gpus_hold(count: int) -> bool:
            _host, devices, fitted = _memory(shape, hw, budget, opts, count, gpus)
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
    host, devices, fitted = _memory(shape, hw, budget, opts, ngl, gpus)
    return ngl, host, devices, _fits(host, devices, fitted)


def max_context(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options) -> int:
    """The largest context (a multiple of 256, at most the model's) that fits."""
    gpus = _usable_gpus(hw, budget)
    limit = max(CTX_PAD, shape.ctx_train)

    def fits(ctx: int) -> bool:
        at = replace(opts, ctx=ctx)
        if _plan_at(shape, hw, budget, at, gpus)[3]:
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
         find_usable_ctx: bool = True) -> Plan:
    """Plan loading `shape` at `opts.ctx` on this machine.

    `find_usable_ctx=False` skips the search for the largest context (usable_ctx is then 0),
    for callers that plan many candidates and only show a few.
    """
    if opts.kv_type not in KV_TYPE_BYTES:
        raise ValueError(f"unknown KV cache type {opts.kv_type!r}")
    gpus = _usable_gpus(hw, budget)
    ngl, host, devices, fits = _plan_at(shape, hw, budget, opts, gpus)
    speed = estimate_speed(shape, hw, host, devices, opts)
    # MoE expert placement (see the module docstring): kept when it fits and is faster.
    n_cpu_moe = 0
    moe = _moe_at(shape, hw, budget, opts, gpus)
    if moe is not None:
        moe_n, moe_host, moe_devices, moe_fits = moe
        moe_speed = _moe_speed(estimate_speed(shape, hw, moe_host, moe_devices, opts),
                               shape, hw, moe_devices, opts, moe_n)
        if (moe_fits, _typical(moe_speed)) > (fits, _typical(speed)) \
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


def _typical(speed: Speed) -> float:
    return math.sqrt(max(speed.low, 0.0) * max(speed.high, 0.0))


def _moe_at(shape: ModelShape, hw: Hardware, budget: Budget, opts: Options,
            gpus: Sequence[_Gpu]) -> tuple[int, DevicePlan, list[DevicePlan], bool] | None:
    """Every layer offloaded with the experts of the first N layers on the host: N as given
    (`opts.moe_cpu_layers`), or the smallest N whose GPU part fits. None when it does not apply
    (no GPU, not a MoE, --gpu-layers given, or even all experts on the host leave the GPUs
    short)."""
    n = shape.n_layers
    if not gpus or not shape.n_expert or not any(layer.expert_bytes for layer in shape.layers):
        return None
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
    cost go on."""
    if n_cpu_moe <= 0 or base.high <= 0 or base.low <= 0:
        return base
    active_share = (shape.n_expert_used / shape.n_expert) if shape.n_expert else 1.0
    gpu_by_index = {gpu.index: gpu for gpu in hw.gpus}
    ram_bw = hw.memory.bandwidth.bytes_per_s if hw.memory.bandwidth else 20e9
    slow, fast = 1 / base.low, 1 / base.high
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
        slow -= read / (bw * GPU_EFFICIENCY[0])
        fast -= read / (bw * GPU_EFFICIENCY[1])
        host_read += read
    layers = min(n_cpu_moe, shape.n_layers)
    cost_slow, cost_fast = (c * MOE_CPU_OP_SHARE + MOE_SYNC_COST for c in CPU_LAYER_COST)
    host_slow = host_read / (ram_bw * CPU_EFFICIENCY[0]) + layers * cost_slow
    host_fast = host_read / (ram_bw * CPU_EFFICIENCY[1]) + layers * cost_fast
    slow = max(slow, 1e-9) + host_slow
    fast = max(fast, 1e-9) + host_fast
    bottleneck = "host" if host_fast > fast - host_fast else base.bottleneck
    return replace(base, low=1 / slow, high=1 / fast, bottleneck=bottleneck)
