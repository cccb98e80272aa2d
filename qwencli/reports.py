"""Turn results into what `output` prints: JSON documents and report sections. Pure.

The JSON keys are a contract documented in the README; add keys freely, never rename one without
bumping `output.SCHEMA_VERSION`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qwencli.hardware.model import Bandwidth, Budget, Hardware
from qwencli.output import Section
from qwencli.units import format_bytes, format_rate


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
    }


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
        )
    else:
        build_rows = (("installed", "no"),)
    sections.append(Section("llama.cpp (llama-cpp-python)", rows=build_rows,
                            notes=(build.error,) if build.error else ()))
    budget_rows = [("host (RAM)", f"{format_bytes(budget.host_bytes)}  ({budget.host_reason})")]
    for gb in budget.gpus:
        label = f"GPU {gb.index}" + ("" if gb.usable else " (unusable)")
        budget_rows.append((label, f"{format_bytes(gb.bytes)}  ({gb.reason})"))
    budget_notes = ("GPU and host budgets are one shared pool: a byte counts once.",) \
        if budget.unified_pool else ()
    sections.append(Section("Budget for models", rows=tuple(budget_rows), notes=budget_notes))
    return sections
