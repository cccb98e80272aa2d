"""Turn results into what `output` prints: JSON documents and report sections. Pure.

The JSON keys are a contract documented in the README; add keys freely, never rename one without
bumping `output.SCHEMA_VERSION`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qwencli.hardware.model import Bandwidth, Budget, Hardware
from qwencli.hardware.remote import Link, Worker
from qwencli.output import Section
from qwencli.units import format_bytes, format_rate

if TYPE_CHECKING:
    from pathlib import Path

    from qwencli.bench import BenchResult
    from qwencli.calibration import Calibration
    from qwencli.catalog import ModelSpec
    from qwencli.fit import Breakdown, DevicePlan, Plan
    from qwencli.hub import PullResult
    from qwencli.logs import LoggedConversation, Message, SearchHit, Summary
    from qwencli.planner import FitResult
    from qwencli.recommend import Pick
    from qwencli.store import LocalModel


def hardware_document(hw: Hardware, budget: Budget) -> dict[str, Any]:
    """`qwen hw --json`."""
    return {
        "source": hw.source,
        "os": hw.os,
        "cpu": dataclasses.asdict(hw.cpu),
        "memory": dataclasses.asdict(hw.memory),
        "gpus": [dataclasses.asdict(gpu) for gpu in hw.gpus],
        "llama_cpp": dataclasses.asdict(hw.llama_cpp),
        "budget": dataclasses.asdict(budget),
        "warnings": list(hw.warnings),
        "notes": list(hw.notes),
        "workers": [worker_document(w) for w in hw.workers],
    }


def link_document(link: Link) -> dict[str, Any]:
    return {"bandwidth_bytes_per_s": round(link.bandwidth_bytes_per_s),
            "rtt_s": link.rtt_s, "source": link.source, "detail": link.detail}


def worker_document(w: Worker) -> dict[str, Any]:
    """One worker device (--rpc, --rpc-whatif), as `qwen hw`, `fit` and `recommend` give it."""
    return {"endpoint": w.endpoint, "device": w.device, "name": w.name,
            "description": w.description, "backend": w.backend or None,
            "free_bytes": w.free_bytes, "total_bytes": w.total_bytes, "whatif": w.whatif,
            "bandwidth_bytes_per_s": w.bandwidth.bytes_per_s if w.bandwidth else None,
            "link": link_document(w.link)}


def _bandwidth(bw: Bandwidth | None) -> str:
    if bw is None:
        return "unknown"
    return f"{format_rate(bw.bytes_per_s)} ({bw.detail})"


def hardware_sections(hw: Hardware, budget: Budget) -> list[Section]:
    """`qwen hw` for people."""
    cpu = hw.cpu
    cores = f"{cpu.physical_cores} physical, {cpu.logical_cores} logical"
    if cpu.performance_cores:
        cores += f" ({cpu.performance_cores} performance)"
    sections = [
        Section("Machine", rows=(("source", hw.source), ("os", hw.os))),
        Section("CPU", rows=(
            ("model", cpu.model),
            ("architecture", cpu.arch),
            ("cores", cores),
            ("instruction sets", " ".join(cpu.features) or "none detected"),
        )),
    ]
    mem = hw.memory
    mem_rows = [
        ("total", format_bytes(mem.total_bytes)),
        ("available", format_bytes(mem.available_bytes)),
        ("swap", f"{format_bytes(mem.swap_free_bytes)} free of "
                 f"{format_bytes(mem.swap_total_bytes)}"),
        ("container limit", f"{format_bytes(mem.limit_bytes)} ({mem.limit_source})"
         if mem.limit_bytes is not None else "none"),
        ("bandwidth", _bandwidth(mem.bandwidth)),
    ]
    sections.append(Section("Memory", rows=tuple(mem_rows), notes=(mem.reason,)))
    if hw.gpus:
        for gpu in hw.gpus:
            rows = [("vendor", f"{gpu.vendor} ({gpu.backend})")]
            if gpu.unified:
                share = "integrated, shares system memory" if gpu.integrated else "unified memory"
                rows.append(("memory", f"{format_bytes(gpu.total_bytes)} {share}"))
                if gpu.working_set_bytes:
                    working_set = format_bytes(gpu.working_set_bytes)
                    rows.append(("GPU working set", f"{working_set} ({gpu.working_set_source})"))
            else:
                rows.append(("memory", f"{format_bytes(gpu.free_bytes)} free of "
                                       f"{format_bytes(gpu.total_bytes)}"))
            rows.append(("bandwidth", _bandwidth(gpu.bandwidth)))
            for label, value in (("GPU cores", gpu.cores), ("driver", gpu.driver_version),
                                 ("CUDA (driver)", gpu.cuda_version),
                                 ("compute capability", gpu.compute_capability)):
                if value:
                    rows.append((label, str(value)))
            sections.append(Section(f"GPU {gpu.index}: {gpu.name}", rows=tuple(rows),
                                    notes=gpu.notes))
    else:
        sections.append(Section("GPUs", rows=(("found", "none"),), notes=hw.notes))
    build = hw.llama_cpp
    if build.installed:
        build_rows = (
            ("version", build.version or "unknown"),
            ("backend", build.backend + (" (assumed for this machine)"
                                         if build.source == "assumed" else "")),
            ("GPU offload", "yes" if build.gpu_offload else "no"),
            ("CPU features", " ".join(build.cpu_features) or "-"),
            ("RPC (qwen worker, --rpc)", "yes" if build.rpc else "no"),
        )
    else:
        build_rows = (("installed", "no"),)
    build_notes = (build.error,) if build.error else ()
    if build.installed and not build.rpc and build.source == "probed":
        build_notes += (rpc_rebuild_note(hw),)
    sections.append(Section("llama.cpp (llama-cpp-python)", rows=build_rows,
                            notes=build_notes))
    from qwencli.hardware.cluster import link_text

    for number, worker in enumerate(hw.workers):
        sections.append(Section(f"Worker {number}: {worker.name}", rows=(
            ("endpoint", worker.endpoint if not worker.whatif else "(what-if)"),
            ("device", worker.description),
            ("memory", f"{format_bytes(worker.free_bytes)} free of "
                       f"{format_bytes(worker.total_bytes)}"),
            ("bandwidth", _bandwidth(worker.bandwidth)),
            ("link", link_text(worker.link)),
        ), notes=(worker.link.detail,) if worker.link.detail else ()))
    budget_rows = [("host (RAM)", f"{format_bytes(budget.host_bytes)}  ({budget.host_reason})")]
    for gb in budget.gpus:
        label = f"GPU {gb.index}" + ("" if gb.usable else " (unusable)")
        budget_rows.append((label, f"{format_bytes(gb.bytes)}  ({gb.reason})"))
    for number, wb in enumerate(budget.workers):
        budget_rows.append((f"worker {number}", f"{format_bytes(wb.bytes)}  ({wb.reason})"))
    budget_notes = ("GPU and host budgets are one shared pool: a byte counts once.",) \
        if budget.unified_pool else ()
    sections.append(Section("Budget for models", rows=tuple(budget_rows), notes=budget_notes))
    return sections


# ------------------------------------------------------------------------------------------
# Plans: `qwen fit`, `qwen recommend`


def _breakdown_document(b: Breakdown) -> dict[str, int]:
    return {"weights": b.weights, "kv_cache": b.kv_cache, "compute": b.compute,
            "output": b.output, "overhead": b.overhead, "total": b.total}


def plan_document(p: Plan) -> dict[str, Any]:
    """The plan object shared by `qwen fit --json` and each `qwen recommend --json` pick."""
    from qwencli.recommend import is_tight

    return {
        "model": p.model,
        "quant": p.quant,
        "source": p.source,
        "ctx": p.ctx,
        "usable_ctx": p.usable_ctx,
        "fits": p.fits,
        "n_gpu_layers": p.n_gpu_layers,
        "n_layers": p.n_layers,
        "flash_attn": p.flash_attn,
        "kv_type": p.kv_type,
        "tensor_split": list(p.tensor_split),
        "moe_cpu_layers": p.moe_cpu_layers,
        "tensor_overrides": [f"{pattern}=CPU" for pattern in p.expert_overrides],
        "tight": is_tight(p),
        "memory": {
            "host_bytes": p.host_bytes,
            "host_peak_bytes": p.host.peak_bytes,
            "host_budget_bytes": p.host.budget_bytes,
            "unified_pool": p.unified_pool,
            "devices": [{"index": d.index, "name": d.name, "bytes": d.bytes,
                         "peak_bytes": d.peak_bytes, "budget_bytes": d.budget_bytes,
                         "layers": d.layers,
                         "kind": "worker" if d.worker is not None else "gpu",
                         "worker": None if d.worker is None else worker_document(d.worker),
                         "breakdown": _breakdown_document(d.breakdown)} for d in p.devices],
            "breakdown": _breakdown_document(p.breakdown),
            "host_breakdown": _breakdown_document(p.host.breakdown),
        },
        "speed": {
            "decode_tok_s": {"low": round(p.speed.low, 1), "high": round(p.speed.high, 1),
                             "typical": round(p.speed.typical, 1)},
            "prompt_tok_s": round(p.speed.prompt_tok_s, 1),
            "ttft_s": None if p.speed.ttft_s is None else round(p.speed.ttft_s, 2),
            "source": p.speed.source,
            "source_detail": speed_source_text(p),
            "bytes_per_token": p.speed.bytes_per_token,
            "bottleneck": p.speed.bottleneck,
            "network_s_per_token": round(p.speed.network_s, 6),
            "network_share": round(network_share(p), 3),
            "limited_by": p.speed.limited_by or p.speed.bottleneck,
        },
    }


def network_share(p: Plan) -> float:
    """The share of a decoded token's time (typical) spent on the links to workers."""
    if p.speed.typical <= 0:
        return 0.0
    return min(1.0, p.speed.network_s * p.speed.typical)


def _device_label(d: DevicePlan) -> str:
    if d.worker is not None:
        where = "what-if" if d.worker.whatif else d.worker.endpoint
        return f"{d.name} [{where}]" if d.worker.whatif else f"{d.name}"
    return f"GPU {d.index} ({d.name})"


def _ctx_text(ctx: int) -> str:
    return f"{ctx // 1024}K" if ctx >= 1024 and ctx % 1024 == 0 else f"{ctx:,}"


def placement_text(p: Plan) -> str:
    if any(d.worker is not None for d in p.devices):
        return _across_text(p)
    if not p.devices:
        return f"all {p.n_layers} layers on the CPU"
    total = p.n_layers + 1
    where = ", ".join(f"{d.layers} on GPU {d.index} ({d.name})" for d in p.devices if d.layers)
    if p.moe_cpu_layers:
        gpus = ", ".join(f"GPU {d.index} ({d.name})" for d in p.devices if d.layers)
        memory = "unified memory" if p.unified_pool else "VRAM"
        return (f"experts of {p.moe_cpu_layers} of {p.n_layers} layers in RAM, everything else "
                f"in {memory} ({gpus})")
    if p.n_gpu_layers >= total:
        return f"all {p.n_layers} layers and the output layer on the GPU: {where}"
    return f"{p.n_gpu_layers} of {total} layers on the GPU ({where}), the rest on the CPU"


def _across_text(p: Plan) -> str:
    """Where each part runs when the plan may use workers, in llama.cpp's device order."""
    used = [d for d in p.devices if d.layers]
    parts = []
    host_layers = p.n_layers + 1 - p.n_gpu_layers if used else p.n_layers
    if host_layers > 0:
        parts.append(f"{min(host_layers, p.n_layers)} on this machine's CPU")
    for d in used:
        parts.append(f"{d.layers} on {_device_label(d)}")
    idle = [d for d in p.devices if not d.layers]
    text = "layers: " + ", ".join(parts) + " (the output layer on the last)" if used \
        else f"all {p.n_layers} layers on this machine's CPU"
    if idle:
        text += "; unused: " + ", ".join(_device_label(d) for d in idle)
    return text


def speed_text(p: Plan) -> str:
    text = (f"about {p.speed.typical:.0f} tok/s decoding ({p.speed.low:.0f}-"
            f"{p.speed.high:.0f}, full to empty context; bound by {p.speed.bottleneck}), "
            f"prompt about {p.speed.prompt_tok_s:.0f} tok/s")
    if p.used_workers:
        limit = p.speed.limited_by or p.speed.bottleneck
        text += (f"; the network takes {network_share(p):.0%} of each token "
                 f"({p.speed.network_s * 1e3:.1f} ms); limited by "
                 f"{'the network' if limit == 'network' else limit}")
    return text


def speed_source_text(p: Plan) -> str:
    """Where the speed figures come from, for people."""
    if p.speed.source == "calibrated" and p.speed.calibration:
        return p.speed.calibration
    return "estimate; run `qwen bench` to calibrate"


def ttft_text(p: Plan, prompt_tokens: int) -> str:
    seconds = p.speed.ttft_s or 0.0
    wait = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"about {wait} for a {prompt_tokens:,}-token prompt"


def fit_document(result: FitResult) -> dict[str, Any]:
    doc = plan_document(result.plan)
    doc["file"] = result.file
    choice = result.choice
    doc["quant_choice"] = None if choice is None else {
        "quant": choice.quant, "chosen": choice.reason is not None, "reason": choice.reason,
        "below_speed_floor": choice.below_floor, "over_budget": choice.over_budget}
    doc["prompt_tokens"] = result.prompt_tokens
    doc["notes"] = list(result.notes)
    return doc


def fit_sections(result: FitResult, hw: Hardware) -> list[Section]:
    p = result.plan
    title = f"{p.model} {p.quant or ''}".strip()
    verdict = "yes" if p.fits else "NO"
    rows = (
        ("figures from", "GGUF header (exact)" if p.source == "header" else "catalog (estimate)"),
        ("fits", verdict),
        ("context", f"{_ctx_text(p.ctx)} tokens (largest that fits here: "
                    f"{_ctx_text(p.usable_ctx) if p.usable_ctx else 'none'})"),
        ("placement", placement_text(p)),
        ("speed", speed_text(p)),
        *((("first token", ttft_text(p, result.prompt_tokens)),)
          if result.prompt_tokens and p.speed.ttft_s is not None else ()),
        ("speed from", speed_source_text(p)),
        ("machine", hw.source),
        *((("file", result.file),) if result.file else ()),
    )
    columns = [("host (RAM)", p.host.breakdown, p.host.budget_bytes)]
    columns += [(f"worker {d.index}" if d.worker is not None else f"GPU {d.index}",
                 d.breakdown, d.budget_bytes) for d in p.devices]
    header = ("", *(name for name, _, _ in columns))

    def row(label: str, pick: Callable[[Breakdown], int]) -> tuple[str, ...]:
        return (label, *(format_bytes(pick(b)) for _, b, _ in columns))

    table = (
        row("weights", lambda b: b.weights),
        row("KV cache", lambda b: b.kv_cache),
        row("compute", lambda b: b.compute),
        row("output", lambda b: b.output),
        row("overhead", lambda b: b.overhead),
        row("total", lambda b: b.total),
        ("budget", *(format_bytes(budget) for _, _, budget in columns)),
    )
    notes = list(result.notes)
    if not p.fits:
        notes.append("does not fit: try a smaller quant, a shorter --ctx, or `qwen recommend`")
    if p.unified_pool:
        notes.append("unified memory: the host budget shown is what the GPU part leaves")
    sections = [Section(title, rows=rows), Section("Memory plan", header=header, table=table,
                                                   notes=tuple(notes))]
    workers = [d for d in p.devices if d.worker is not None]
    if workers:
        from qwencli.hardware.cluster import link_text

        sections.append(Section("Workers", header=("", "device", "layers", "memory", "link"),
                                table=tuple(
            (f"worker {d.index}", d.worker.description if d.worker else "", str(d.layers),
             f"{format_bytes(d.bytes)} of {format_bytes(d.budget_bytes)}" + (
                 f" ({format_bytes(d.load_peak)} while loading)" if d.load_peak > d.bytes
                 else ""),
             link_text(d.worker.link) if d.worker else "")
            for d in workers),
            notes=("llama.cpp's RPC has no authentication or encryption: run workers on "
                   "trusted networks only",)))
    return sections


def llama_args(result: FitResult) -> list[str]:
    """The llama.cpp `llama-server` / `llama-cli` arguments that load the model as planned.

    Checked against llama.cpp's common/arg.cpp (the copy vendored by llama-cpp-python 0.3.36):
    `-m FNAME` (a local file) or `-hf REPO -hff FILE` (the Hub file planned), `-c N`, `-ngl N`,
    `-ts N0,N1,...` (several GPUs), `-fa on|off`, `-ctk/-ctv TYPE`, `--n-cpu-moe N` (the experts of
    the first N layers on the CPU, the same `blk.i.ffn_*_exps` patterns the plan names) and
    `-fit off`, so llama.cpp's own fitting does not change the plan."""
    p = result.plan
    file = result.file or p.model
    parts = file.split("/", 2)
    if result.choice is None or file.startswith(("/", ".", "~")) or len(parts) < 3:
        args = ["-m", file]  # a local file, or a download in the cache
    else:
        args = ["-hf", f"{parts[0]}/{parts[1]}", "-hff", parts[2]]
    endpoints = list(dict.fromkeys(d.worker.endpoint for d in p.devices
                                   if d.worker is not None and not d.worker.whatif))
    if endpoints:
        args += ["--rpc", ",".join(endpoints)]
    args += ["-c", str(p.ctx), "-ngl", str(p.n_gpu_layers)]
    if len(p.tensor_split) > 1:
        args += ["-ts", ",".join(f"{share:.4g}" for share in p.tensor_split)]
    args += ["-fa", "on" if p.flash_attn else "off", "-ctk", p.kv_type, "-ctv", p.kv_type]
    if p.moe_cpu_layers:
        args += ["--n-cpu-moe", str(p.moe_cpu_layers)]
    args += ["-fit", "off"]
    return args


def _pick_document(pick: Pick, rank: int | None) -> dict[str, Any]:
    return {
        "rank": rank,
        "model": pick.spec.id,
        "name": pick.spec.name,
        "quant": pick.quant.quant,
        "use": pick.use,
        "score": pick.score,
        "speed_tok_s": round(pick.speed, 1),
        "below_speed_floor": pick.below_floor,
        "tight": pick.tight,
        "reasons": list(pick.reasons),
        "file": {"repo": pick.quant.repo, "files": list(pick.quant.files),
                 "size_bytes": pick.quant.size_bytes, "approx": pick.quant.approx},
        **{k: v for k, v in plan_document(pick.plan).items() if k not in ("model", "quant")},
    }


def recommend_document(picks: Sequence[Pick], hw: Hardware, budget: Budget, use: str,
                       ctx: int | None, min_speed: float,
                       with_workers: Pick | None = None) -> dict[str, Any]:
    return {
        "use": use,
        "ctx": ctx,
        "min_speed_tok_s": min_speed,
        "hardware": {
            "source": hw.source,
            "budget": dataclasses.asdict(budget),
            "memory": {"total_bytes": hw.memory.total_bytes,
                       "available_bytes": hw.memory.available_bytes,
                       "bandwidth_bytes_per_s": hw.memory.bandwidth.bytes_per_s
                       if hw.memory.bandwidth else None},
            "gpus": [{"index": g.index, "name": g.name, "vendor": g.vendor, "backend": g.backend,
                      "total_bytes": g.total_bytes, "free_bytes": g.free_bytes,
                      "unified": g.unified,
                      "bandwidth_bytes_per_s": g.bandwidth.bytes_per_s if g.bandwidth else None}
                     for g in hw.gpus],
            "llama_cpp": {"backend": hw.llama_cpp.backend,
                          "gpu_offload": hw.llama_cpp.gpu_offload},
            "workers": [worker_document(w) for w in hw.workers],
        },
        "picks": [_pick_document(pick, number) for number, pick in enumerate(picks, 1)],
        # the best pick that needs the workers (--rpc / --rpc-whatif), when the first does not
        "with_workers": None if with_workers is None else _pick_document(with_workers, None),
    }


def recommend_sections(picks: Sequence[Pick], hw: Hardware, use: str, ctx: int | None,
                       min_speed: float, with_workers: Pick | None = None) -> list[Section]:
    ctx_note = _ctx_text(ctx) if ctx else "the use case's default"
    machine = "this machine" if hw.source == "probed" else hw.source
    title = (f"Best Qwen models for {use} on {machine} ({ctx_note} context, "
             f"at least {min_speed:g} tok/s)")
    if not picks:
        return [Section(title, notes=(
            "nothing fits at that context and speed; try a shorter --ctx, a lower "
            "--min-speed, or see `qwen fit MODEL` for one model's plan",))]
    header = ("#", "model", "quant", "ctx", "placement", "memory", "tok/s", "score")
    table = [_pick_row(str(number), pick) for number, pick in enumerate(picks, 1)]
    floor_note = (f"nothing here reaches {min_speed:g} tok/s: these are the best of what runs",) \
        if picks[0].below_floor else ()
    source = f"speed: {speed_source_text(picks[0].plan)}"
    sections = [Section(title, header=header, table=tuple(table), notes=(*floor_note, source))]
    sections.append(_why(f"Why {picks[0].spec.id} {picks[0].quant.quant}", picks[0], hw))
    if with_workers is not None:
        sections.append(Section(
            f"What the workers add: {with_workers.spec.id} {with_workers.quant.quant}",
            header=header, table=(_pick_row("+", with_workers),),
            notes=(f"the best pick that does not fit this machine alone; it scores "
                   f"{with_workers.score:.1f} against {picks[0].score:.1f} for "
                   f"{picks[0].spec.id} {picks[0].quant.quant}",)))
        sections.append(_why(f"Why {with_workers.spec.id} {with_workers.quant.quant} "
                             "with the workers", with_workers, hw))
    return sections


def _why(title: str, pick: Pick, hw: Hardware) -> Section:
    where = ()
    if hw.workers:
        where = (f"- where it runs: {placement_text(pick.plan)}",
                 f"- speed: {speed_text(pick.plan)}")
    return Section(title, notes=(*(f"- {reason}" for reason in pick.reasons), *where,
                                 f"next: qwen pull {pick.spec.id}:{pick.quant.quant}"))


def _pick_row(number: str, pick: Pick) -> tuple[str, ...]:
    p = pick.plan
    if p.used_workers:
        remote = sum(d.bytes for d in p.devices if d.worker is not None)
        local = sum(d.bytes for d in p.devices if d.worker is None) + p.host_bytes
        memory = f"{format_bytes(local)} here + {format_bytes(remote)} workers"
        used = len(p.used_workers)
        placement = f"{p.n_gpu_layers}/{p.n_layers + 1} on devices, {used} worker" + (
            "s" if used > 1 else "")
    elif any(d.worker is None for d in p.devices):  # a local GPU (workers hold nothing)
        gpu_bytes = sum(d.bytes for d in p.devices)
        memory = f"{format_bytes(gpu_bytes)} GPU + {format_bytes(p.host_bytes)} RAM"
        placement = f"{p.n_gpu_layers}/{p.n_layers + 1} GPU"
        if p.moe_cpu_layers:
            placement = f"GPU, experts {p.moe_cpu_layers}/{p.n_layers} CPU"
    else:
        memory = f"{format_bytes(p.host_bytes)} RAM"
        placement = "CPU"
    if pick.tight:
        memory += " tight"
    return (number, pick.spec.id, pick.quant.quant, _ctx_text(p.ctx), placement, memory,
            f"{p.speed.typical:.0f} ({p.speed.low:.0f}-{p.speed.high:.0f})",
            f"{pick.score:.1f}")


def models_document(models: Sequence[ModelSpec]) -> dict[str, Any]:
    return {"models": [
        {"id": m.id, "name": m.name, "family": m.family, "released": m.released.isoformat(),
         "license": m.license, "params": m.params_total, "active_params": m.params_active,
         "use": list(m.use), "thinking": m.thinking.mode, "context_native": m.context_native,
         "context_max": m.context_max, "quality": m.quality, "quants": list(m.quants),
         "repos": [s.repo for s in m.gguf]}
        for m in models]}


def models_sections(models: Sequence[ModelSpec], use: str | None) -> list[Section]:
    def params(m: ModelSpec) -> str:
        total = f"{m.params_total / 1e9:.1f}B"
        return f"{total} ({m.params_active / 1e9:.1f}B active)" if m.params_active else total

    table = tuple((m.id, params(m), _ctx_text(m.context_native), ",".join(m.use),
                   m.thinking.mode, m.license, f"{m.quality_for_use(use):.0f}")
                  for m in models)
    title = f"Qwen models in the catalog{f' for {use}' if use else ''} ({len(models)})"
    return [Section(title, header=("model", "params", "context", "use", "thinking", "licence",
                                   "quality"), table=table,
                    notes=("quality: the prior used for ranking (published results where "
                           "known, see profiles/models/)",))]


# --------------------------------------------------------------------------------------------
# Downloads: qwen pull, qwen list, qwen rm


def pulled_ref(r: PullResult) -> str:
    """The reference that names exactly what was pulled: catalog id or repo, with its quant."""
    if r.model_id and r.quant:
        return f"{r.model_id}:{r.quant}"
    if r.quant:
        return f"{r.repo}:{r.quant}"
    return str(r.path)


def pull_document(r: PullResult) -> dict[str, Any]:
    return {
        "model": r.model_id,
        "repo": r.repo,
        "revision": r.revision,
        "commit": r.commit,
        "quant": r.quant,
        "path": str(r.path),
        "files": [{"path": remote.path, "local_path": str(local), "size_bytes": remote.size,
                   "sha256": remote.sha256} for remote, local in zip(r.remote, r.files,
                                                                     strict=False)],
        "size_bytes": r.size_bytes,
        "bytes_downloaded": r.bytes_downloaded,
        "resumed": r.resumed,
        "already_present": r.already_present,
        "verified": r.verified,
        "seconds": round(r.seconds, 3),
        "warnings": list(r.warnings),
    }


def pull_sections(r: PullResult, ref: str) -> list[Section]:
    name = r.model_id or r.repo
    title = (f"Already downloaded: {name} {r.quant or ''}" if r.already_present
             else f"Downloaded {name} {r.quant or ''}").rstrip()
    first = r.remote[0].path if r.remote else r.path.name
    files = (f"{first} ({format_bytes(r.size_bytes)})" if len(r.files) == 1 else
             f"{first} and {len(r.files) - 1} more parts ({format_bytes(r.size_bytes)} in all)")
    rows = [("repo", f"{r.repo} @ {r.commit[:12]}" if r.commit else r.repo),
            ("file", files),
            ("path", str(r.path))]
    if not r.already_present:
        rate = r.bytes_downloaded / r.seconds / 1e6 if r.seconds > 0 else 0.0
        transfer = f"{format_bytes(r.bytes_downloaded)} in {r.seconds:.1f} s ({rate:.0f} MB/s)"
        if r.resumed:
            transfer += ", resumed"
        rows.append(("transfer", transfer))
        rows.append(("checked", "sha256 matches the Hub's listing" if r.verified else
                     "size only (the Hub lists no sha256 for this file)"))
    if r.model_id and r.quant:
        chat_ref = f"{r.model_id}:{r.quant.lower()}"
    elif r.quant and not ref.lower().endswith(".gguf"):
        chat_ref = f"{r.repo}:{r.quant}"
    else:
        chat_ref = ref
    return [Section(title, rows=tuple(rows), notes=(f"next: qwen chat -m {chat_ref}",))]


def local_model_document(m: LocalModel) -> dict[str, Any]:
    problem = {"problem": m.problem} if m.problem else {}  # only for entries that are no model
    return {
        "model": m.model_id,
        "repo": m.repo,
        "quant": m.quant,
        "files": [f for f in m.files if f],
        "parts": m.parts,
        "parts_complete": m.parts_complete,
        "size_bytes": m.size_bytes,
        "downloaded_bytes": m.downloaded_bytes,
        "complete": m.complete,
        "percent": round(m.percent, 1) if m.percent is not None else None,
        "path": str(m.path),
        "commit": m.commit,
        "refs": list(m.refs),
        **problem,
    }


def list_document(models: Sequence[LocalModel], cache: Path) -> dict[str, Any]:
    return {
        "cache_dir": str(cache),
        "models": [local_model_document(m) for m in models],
        "total_bytes": sum(m.downloaded_bytes for m in models),
    }


def download_status(m: LocalModel) -> str:
    if m.complete:
        return "complete"
    if m.problem:
        return m.problem
    if m.other_tool:
        return f"partial ({format_bytes(m.downloaded_bytes)}, another tool's)"
    parts = f", {m.parts_complete}/{m.parts} parts" if m.parts > 1 else ""
    pct = f"{m.percent:.0f}%" if m.percent is not None else format_bytes(m.downloaded_bytes)
    return f"partial {pct}{parts}"


def list_sections(models: Sequence[LocalModel], cache: Path) -> list[Section]:
    if not models:
        return [Section("No GGUF models downloaded", rows=(("cache", str(cache)),),
                        notes=("get one: qwen pull qwen3-8b (or `qwen recommend` first)",))]
    table = tuple((m.model_id or "-", m.repo, m.quant or "?",
                   format_bytes(m.size_bytes if m.size_bytes is not None else m.downloaded_bytes),
                   download_status(m), str(m.path)) for m in models)
    partial = [m for m in models if not m.complete and not m.problem]
    total = format_bytes(sum(m.downloaded_bytes for m in models))
    notes = [f"{len(models)} models, {total} in {cache}"]
    if any(m.problem and m.problem.startswith("damaged") for m in models):
        notes.append("damaged downloads are fetched again by `qwen pull MODEL`")
    if any(m.problem and not m.problem.startswith("damaged") for m in models):
        notes.append("broken and foreign links are not models of this cache; `qwen rm MODEL` "
                     "removes the link (never what it points to)")
    if partial:
        notes.append("partial downloads resume with `qwen pull MODEL`; `qwen rm MODEL` "
                     "removes them")
    return [Section("Downloaded models", header=("MODEL", "REPO", "QUANT", "SIZE", "STATUS",
                                                 "PATH"), table=table, notes=tuple(notes))]


def remove_sections(removed: Sequence[LocalModel], freed_bytes: int) -> list[Section]:
    return [Section(f"Removed {len(removed)} download(s), {format_bytes(freed_bytes)} freed",
                    table=tuple((m.model_id or "-", m.repo, m.quant or "?", m.name)
                                for m in removed))]


# --------------------------------------------------------------------------------------------
# The conversation log (`qwen logs`)


def _when(stamp: str) -> str:
    """An ISO UTC time as a person reads it: 2026-11-30 20:01 UTC."""
    return stamp.replace("T", " ")[:16] + " UTC" if "T" in stamp else stamp


def log_list_document(summaries: Sequence[Summary], path: Path) -> dict[str, Any]:
    """`qwen logs list --json`."""
    return {"path": str(path),
            "conversations": [dataclasses.asdict(s) for s in summaries]}


def log_list_sections(summaries: Sequence[Summary], path: Path) -> list[Section]:
    if not summaries:
        return [Section("Conversations", notes=(f"none logged yet ({path})",))]
    rows = tuple((str(s.id), _when(s.updated), s.model or "?", str(s.messages), s.first)
                 for s in summaries)
    return [Section("Conversations (latest first)",
                    header=("ID", "LAST", "MODEL", "MESSAGES", "FIRST MESSAGE"), table=rows,
                    notes=("qwen logs show ID · qwen chat --cid ID continues one",))]


def _message_document(m: Message) -> dict[str, Any]:
    document = dataclasses.asdict(m)
    document.pop("conversation_id")
    document["sampling"] = dict(m.sampling) if m.sampling is not None else None
    return document


def conversation_document(c: LoggedConversation, *, everything: bool) -> dict[str, Any]:
    """`qwen logs show ID --json`: the header and its messages (`everything`: also those
    /undo and /regen replaced, marked `superseded`)."""
    messages = c.messages if everything else c.active
    return {"id": c.id, "started": c.started, "model": c.model, "quant": c.quant,
            "path": c.path, "system": c.system, "thinking_mode": c.thinking,
            "settings": dict(c.settings),
            "messages": [_message_document(m) for m in messages]}


def conversation_text(c: LoggedConversation, *, everything: bool) -> str:
    """`qwen logs show ID`: the conversation as a person reads it."""
    quant = f" ({c.quant})" if c.quant and c.quant.lower() not in (c.model or "").lower() \
        else ""
    lines = [f"# conversation {c.id} · {c.model or '?'}{quant} · started {_when(c.started)}"]
    if c.system:
        lines += ["", "## system", "", c.system]
    for m in c.messages if everything else c.active:
        mark = " (superseded)" if m.superseded else ""
        who = "you" if m.role == "user" else "model"
        lines += ["", f"## {who}{mark} · {_when(m.created)}", ""]
        if m.thinking:
            lines += ["<think>", m.thinking, "</think>", ""]
        lines.append(m.content)
    return "\n".join(lines) + "\n"


def search_document(hits: Sequence[SearchHit], text: str) -> dict[str, Any]:
    """`qwen logs search TEXT --json`."""
    return {"query": text, "results": [dataclasses.asdict(h) for h in hits]}


def search_sections(hits: Sequence[SearchHit], text: str) -> list[Section]:
    if not hits:
        return [Section(f"Messages with {text!r}", notes=("none found",))]
    rows = tuple((str(h.conversation_id), _when(h.created),
                  "you" if h.role == "user" else "model", h.snippet) for h in hits)
    return [Section(f"Messages with {text!r} (latest first)",
                    header=("ID", "WHEN", "WHO", "TEXT"), table=rows)]


# ------------------------------------------------------------------------------------------
# `qwen bench`


def bench_document(result: BenchResult, stored: Calibration | None) -> dict[str, Any]:
    """`qwen bench --json` (documented in the README)."""
    return {
        "model": result.model,
        "file": str(result.path),
        "quant": result.quant,
        "date": result.date,
        "threads": result.threads,
        "ctx": result.plan.ctx,
        "n_gpu_layers": result.plan.n_gpu_layers,
        "load_s": round(result.load_s, 3),
        "ttft": {"s": round(result.ttft_s, 3), "prompt_tokens": result.ttft_prompt_tokens,
                 "predicted_s": round(result.ttft_predicted_s, 3)},
        "tests": [{"test": m.test, "kind": m.kind, "tokens": m.tokens, "depth": m.depth,
                   "tok_s": round(m.median, 2), "runs_tok_s": [round(r, 2) for r in m.runs],
                   "predicted_tok_s": round(m.predicted, 2), "ratio": round(m.ratio, 3)}
                  for m in result.measures],
        "memory": {
            "peak_rss_bytes": result.peak_rss_bytes,
            "planned_host_bytes": result.plan.host_bytes,
            "gpus": [{"index": g.index, "name": g.name, "used_bytes": g.used_bytes,
                      "total_bytes": g.total_bytes} for g in result.gpu_memory],
            "buffers": dict(result.buffers),
        },
        "calibration": None if stored is None else {
            "path": str(stored.path),
            "benches": len(stored.records),
            "source": stored.speed.label if stored.speed else None,
            "outliers": list(stored.outliers),
        },
        "notes": list(result.notes),
    }


def bench_reset_document(removed: bool, path: Path) -> dict[str, Any]:
    return {"reset": removed, "path": str(path)}


def bench_sections(result: BenchResult, stored: Calibration | None) -> list[Section]:
    """`qwen bench` for people: each figure beside the estimate."""
    p = result.plan
    placement = placement_text(p)
    title = f"{result.model} {result.quant or ''}".strip()
    rows = (
        ("file", str(result.path)),
        ("loaded", f"{_ctx_text(p.ctx)} context, {placement}, {result.threads} threads, "
                   f"in {result.load_s:.1f} s"),
        ("first token", f"{result.ttft_s:.2f} s after a {result.ttft_prompt_tokens:,}-token "
                        f"prompt (estimate {result.ttft_predicted_s:.2f} s)"),
        ("peak memory", f"{format_bytes(result.peak_rss_bytes)} RSS (plan: "
                        f"{format_bytes(p.host_bytes)} on the host)"),
        *((f"GPU {g.index}", f"{format_bytes(g.used_bytes)} used of "
                             f"{format_bytes(g.total_bytes)} ({g.name}, NVML)")
          for g in result.gpu_memory),
        *((f"{name} buffers", format_bytes(size)) for name, size in result.buffers.items()
          if name.upper().startswith(("MTL", "METAL"))),
    )
    header = ("test", "tok/s", "runs", "estimate", "measured / estimate")
    table = tuple((m.test, f"{m.median:.1f}", " ".join(f"{r:.1f}" for r in m.runs),
                   f"{m.predicted:.1f}", f"{m.ratio:.2f}") for m in result.measures)
    notes = list(result.notes)
    if stored is not None and stored.speed is not None:
        notes.append(f"stored in {stored.path} ({len(stored.records)} bench(es)); `qwen fit` and "
                     "`qwen recommend` now use it; `qwen bench --reset` forgets it")
        notes.extend(f"outlier: {line}" for line in stored.outliers)
    elif stored is None:
        notes.append("not stored")
    return [Section(title, rows=rows),
            Section("Speed (median of the runs; estimate: before calibration)", header=header,
                    table=table, notes=tuple(notes))]


# ------------------------------------------------------------------------------------------
# `qwen worker`


def rpc_backend(hw: Hardware) -> str:
    """The GPU flags an RPC rebuild keeps: the build's own GPU backend, else the one this
    machine's GPUs need (a CPU-only build on a GPU machine is rebuilt for both at once)."""
    if hw.llama_cpp.backend not in ("cpu", "unknown"):
        return hw.llama_cpp.backend
    return next((gpu.backend for gpu in hw.gpus if gpu.backend), "cpu")


def rpc_rebuild_note(hw: Hardware) -> str:
    from qwencli.hardware.llama_build import reinstall_command

    return ("this build cannot use other machines (`qwen worker`, --rpc); rebuild it with "
            f"RPC: {reinstall_command(rpc_backend(hw), rpc=True)}  (--no-cache-dir: pip's wheel "
            "cache does not key on CMAKE_ARGS and would reinstall the build without RPC)")

WORKER_EXPOSED_WARNING = (
    "{endpoint} is reachable from other machines: llama.cpp's RPC has no authentication and "
    "no encryption, so anyone who can reach this port can use this machine's memory and "
    "compute. Run workers only on a network you trust.")


def worker_lines(serving: Any) -> list[str]:
    """What a started worker (qwencli.rpc.server.Serving) serves, one line each."""
    lines = [f"qwen worker: llama.cpp RPC server on {serving.endpoint}, "
             f"{serving.threads} thread{'s' if serving.threads != 1 else ''}"]
    for index, device in enumerate(serving.devices):
        lines.append(f"  device {index}: {device.name} ({device.description}), "
                     f"{format_bytes(device.free_bytes)} free of "
                     f"{format_bytes(device.total_bytes)}")
    lines.append(f"  tensor cache: {serving.cache_dir or 'off'}")
    return lines
