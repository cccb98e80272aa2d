"""What-if hardware: plan for a machine other than this one (`--ram`, `--gpu`, `--hardware`, ...).

Every command that plans takes the same options; `resolve_hardware` turns them into the
`Hardware` the planner sees, and `apply` is the pure rule set. Rules:

* `--hardware NAME` starts from a named profile (`profiles.py`) instead of the probe, and the
  probe is not run at all; the other options then apply on top of the profile.
* `--ram SIZE` sets total RAM; available = total less the OS's idle reserve (macOS 2.5 GiB;
  others 10 % of RAM, at least 0.5 GiB and at most 2 GiB: `profiles.idle_os_reserve`), the same
  rule the bundled profiles use. A container limit is cleared
  (the what-if machine has none); swap and RAM bandwidth stay as probed (or as the profile
  states). On a unified machine the GPU's pool follows the new RAM.
* `--gpu NAME` replaces the GPUs with that card from the known-GPU table (memory, bandwidth,
  backend, vendor); an unknown name is a usage error that lists the nearest known names. An
  Apple chip or Jetson is unified whether or not `--unified` is given; a Jetson module brings
  its memory, which becomes the RAM unless `--ram` is given.
* A GPU that is part of a system on a chip (Apple M-series, Jetson: the `cpu_*` keys of
  `profiles/gpus.toml`) brings its machine, not just its GPU: the chip's CPU (architecture,
  cores, performance cores, instruction sets), the OS it runs (macOS for Apple, with macOS's
  reserve), the unified bandwidth as the RAM's (or what the chip's CPU cores can draw, where
  the table gives `cpu_bandwidth_gbs`: Max and Ultra chips), no swap, and a llama.cpp build
  for that CPU. So
  `--ram 8GB --gpu "Apple M2"` and `--hardware apple-m2-8gb` describe the same Mac and plan
  alike; this host's CPU and instruction sets never appear on another architecture. `--unified`
  without a chip assumes an M2-class Mac (the bandwidth and CPU of the base chip, "assumed").
* `--gpus N` makes N identical GPUs: N of `--gpu`, else N of the first probed GPU, else N
  generic GPUs from `--vram`. With none of those it is a usage error.
* `--vram SIZE` sets total and free memory of each GPU. With no `--gpu` and no probed GPU it
  creates a generic CUDA GPU, "GPU (what-if)", whose bandwidth is unknown: an assumed
  `ASSUMED_GPU_BANDWIDTH` (360 GB/s, an RTX 3060 12GB: cautious for larger cards), marked
  "assumed". `--vram` on a unified-memory GPU is a usage error (use `--ram`).
* `--unified` makes Apple-style shared memory: one GPU (the `--gpu` chip, else the probed
  unified GPU, else "Apple Silicon (what-if)" with an assumed 100 GB/s, an M2/M3) whose total
  is the RAM (`--ram` is the pool), whose free memory is Metal's default working set
  (`metal.default_working_set`). It conflicts with `--vram`, `--gpus N>1` and a discrete `--gpu`.
* `--cpu-only` removes all GPUs; it conflicts with `--gpu`, `--gpus`, `--vram`, `--unified`.
* A what-if GPU is idle: free = total (Metal: free = working set).
* When the result has GPUs, the llama.cpp build is assumed to drive them (installed, same
  version as probed, gpu_offload, the GPUs' backend, source "assumed"); with `--cpu-only` it
  is the probed build with offload off and backend "cpu". Otherwise the build is unchanged.
  When the GPUs or the build change, the probe's offload warnings are worked out again for the
  what-if machine (`probe.offload_warnings`), so no stale "cannot use your GPU" remains.
* `source` records what happened: "probed + what-if (--ram 16GiB, --gpu RTX 4090)", or
  "profile NAME + what-if (...)". An empty what-if returns the base unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from qwencli.errors import UsageError
from qwencli.hardware import metal
from qwencli.hardware.cluster import WorkerOptions
from qwencli.hardware.known_gpus import KnownGpu, lookup, nearest_names, split_cores
from qwencli.hardware.model import Bandwidth, Gpu, Hardware
from qwencli.hardware.probe import offload_warnings
from qwencli.hardware.profiles import (
    assumed_build,
    load_profile,
    profile_to_hardware,
    stated_memory,
)
from qwencli.units import parse_size

GIB = 1024**3
MIB = 1024**2

GENERIC_GPU_NAME = "GPU (what-if)"
GENERIC_UNIFIED_NAME = "Apple Silicon (what-if)"
ASSUMED_GPU_BANDWIDTH = 360 * 10**9  # RTX 3060 12GB (profiles/gpus.toml): a mid-range CUDA card
ASSUMED_UNIFIED_BANDWIDTH = 100 * 10**9  # Apple M2 / M3 (profiles/gpus.toml): the base chips
ASSUMED_CHIP = "Apple M2"  # a bare --unified: the base chip whose bandwidth is assumed above


@dataclass(frozen=True)
class WhatIf:
    """The what-if options as given; None / False means "as probed". Sizes in bytes.

    Conflicts that need no hardware to detect (e.g. `--cpu-only` with `--gpu`) are rejected
    here, so they fail before any probing.
    """

    ram_bytes: int | None = None
    vram_bytes: int | None = None  # per GPU
    gpu_count: int | None = None
    gpu_name: str | None = None
    unified: bool = False
    cpu_only: bool = False
    hardware: str | None = None  # profile name
    # other machines' devices (--rpc, --rpc-whatif, --link): hardware.cluster resolves them
    workers: WorkerOptions = field(default_factory=WorkerOptions)

    def __post_init__(self) -> None:
        for option, value in (("--ram", self.ram_bytes), ("--vram", self.vram_bytes)):
            if value is not None and value <= 0:
                raise UsageError(f"{option} must be greater than zero")
        if self.gpu_count is not None and self.gpu_count < 1:
            raise UsageError(f"--gpus must be at least 1, got {self.gpu_count}")
        if self.gpu_name is not None and not self.gpu_name.strip():
            raise UsageError("--gpu needs a GPU name, e.g. --gpu 'RTX 4090'")
        if self.hardware is not None and not self.hardware.strip():
            raise UsageError("--hardware is empty; give a name (`qwen hw --help` lists how)")
        if self.cpu_only:
            clashing = [
                option
                for option, given in (
                    ("--gpu", self.gpu_name is not None),
                    ("--gpus", self.gpu_count is not None),
                    ("--vram", self.vram_bytes is not None),
                    ("--unified", self.unified),
                )
                if given
            ]
            if clashing:
                raise UsageError(f"--cpu-only cannot be combined with {', '.join(clashing)}")
        if self.unified and self.vram_bytes is not None:
            raise UsageError(
                "--unified and --vram conflict: unified memory is the RAM; give --ram instead"
            )
        if self.unified and self.gpu_count is not None and self.gpu_count > 1:
            raise UsageError("--unified describes one Apple-style GPU; --gpus must be 1")

    def is_empty(self) -> bool:
        """True when no option was given, so the probed machine is used as is."""
        return self == WhatIf()

    def imagined(self) -> bool:
        """True when the machine planned for is not this one as it is: a hardware option, or
        a what-if worker (real workers named by --rpc leave this machine as it is)."""
        return replace(self, workers=WorkerOptions()) != WhatIf() or bool(self.workers.whatif)

    def changes_hardware(self) -> bool:
        """True when an option other than --hardware (and the workers) was given."""
        return replace(self, hardware=None, workers=WorkerOptions()) != WhatIf()

    def changes_gpus(self) -> bool:
        """True when the options describe other GPUs than the base machine's."""
        return (self.gpu_name is not None or self.vram_bytes is not None
                or self.gpu_count is not None or self.unified)

    def describe(self, gpu_label: str | None = None) -> str:
        """The options as a user would type them, e.g. "--ram 16GiB, --gpu RTX 4090"."""
        parts = []
        if self.ram_bytes is not None:
            parts.append(f"--ram {size_text(self.ram_bytes)}")
        if self.gpu_name is not None:
            parts.append(f"--gpu {gpu_label or self.gpu_name}")
        if self.gpu_count is not None:
            parts.append(f"--gpus {self.gpu_count}")
        if self.vram_bytes is not None:
            parts.append(f"--vram {size_text(self.vram_bytes)}")
        if self.unified:
            parts.append("--unified")
        if self.cpu_only:
            parts.append("--cpu-only")
        return ", ".join(parts)


def size_text(n: int) -> str:
    """Compact binary size for a source line: 16GiB, 1536MiB, or bytes."""
    if n % GIB == 0:
        return f"{n // GIB}GiB"
    if n % MIB == 0:
        return f"{n // MIB}MiB"
    return f"{n}B"


def parse_whatif(
    *,
    ram: str | None = None,
    vram: str | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    unified: bool = False,
    cpu_only: bool = False,
    hardware: str | None = None,
) -> WhatIf:
    """Build a WhatIf from command-line strings; a bad size is a usage error naming the option."""
    return WhatIf(
        ram_bytes=_option_size("--ram", ram),
        vram_bytes=_option_size("--vram", vram),
        gpu_count=gpus,
        gpu_name=gpu,
        unified=unified,
        cpu_only=cpu_only,
        hardware=hardware,
    )


def _option_size(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def resolve_hardware(whatif: WhatIf, probe: Callable[[], Hardware]) -> Hardware:
    """The machine to plan for: the profile or the probe, then the what-if options.

    `probe` is only called when no --hardware profile is given, so what-if runs on a named
    machine do not pay for probing.
    """
    base = profile_to_hardware(load_profile(whatif.hardware)) if whatif.hardware else probe()
    return apply(base, whatif)


def apply(base: Hardware, whatif: WhatIf, *, table: Sequence[KnownGpu] | None = None) -> Hardware:
    """Pure: `base` with the what-if options applied (see the module docstring for the rules).

    `whatif.hardware` is not read here: `resolve_hardware` has already started from it.
    """
    if not whatif.changes_hardware():
        return base
    known = _known_gpu(whatif.gpu_name, table) if whatif.gpu_name is not None else None
    cores = split_cores(whatif.gpu_name)[1] if whatif.gpu_name is not None else None
    soc = _soc_of(base, whatif, known, table)
    if soc is not None:
        return _on_chip(base, whatif, known, cores, soc)

    memory = base.memory
    if whatif.ram_bytes is not None:
        memory = stated_memory(
            whatif.ram_bytes,
            available_bytes=None,
            bandwidth=base.memory.bandwidth,
            swap_total_bytes=base.memory.swap_total_bytes,
            swap_free_bytes=base.memory.swap_free_bytes,
            origin=f"what-if --ram {size_text(whatif.ram_bytes)}",
            os=base.os,
        )
    elif known is not None and known.unified and known.memory_bytes is not None:
        # A Jetson module brings its own memory, which is the machine's RAM.
        memory = stated_memory(
            known.memory_bytes,
            available_bytes=None,
            bandwidth=base.memory.bandwidth,
            swap_total_bytes=base.memory.swap_total_bytes,
            swap_free_bytes=base.memory.swap_free_bytes,
            origin=f"what-if --gpu {known.name}",
        )

    gpus = _gpus(base, whatif, known, cores, memory.total_bytes)

    if whatif.cpu_only:
        llama_cpp = replace(base.llama_cpp, gpu_offload=False, backend="cpu", source="assumed")
    elif gpus and whatif.changes_gpus():
        # A machine with other GPUs is imagined with a build that can use them; --ram alone
        # keeps the probed build, so its warnings about an unusable GPU still stand.
        llama_cpp = assumed_build(
            gpus, version=base.llama_cpp.version, cpu_features=base.llama_cpp.cpu_features
        )
    else:
        llama_cpp = base.llama_cpp

    warnings = base.warnings
    if llama_cpp != base.llama_cpp or gpus != base.gpus:
        # The probe's warnings judge the probed build against the probed GPUs; judge again.
        warnings = tuple(offload_warnings(gpus, llama_cpp))
    label = known.name if known is not None else None
    return replace(
        base,
        memory=memory,
        gpus=gpus,
        llama_cpp=llama_cpp,
        warnings=warnings,
        source=f"{base.source} + what-if ({whatif.describe(label)})",
    )


def _soc_of(base: Hardware, whatif: WhatIf, known: KnownGpu | None,
            table: Sequence[KnownGpu] | None) -> KnownGpu | None:
    """The system on a chip the what-if machine is, when its GPU implies one: the named chip,
    or for a bare `--unified` on a machine with no unified GPU the assumed base Apple chip."""
    if whatif.cpu_only:
        return None
    if known is not None:
        return known if known.unified and known.cpu is not None else None
    if whatif.unified and not any(gpu.unified for gpu in base.gpus):
        assumed = lookup(ASSUMED_CHIP, table=table)
        if assumed is not None and assumed.cpu is not None:
            return replace(assumed, cpu=replace(
                assumed.cpu, model=f"Apple Silicon (what-if, assumed {assumed.name} CPU)"))
    return None


def _on_chip(base: Hardware, whatif: WhatIf, known: KnownGpu | None, cores: int | None,
             soc: KnownGpu) -> Hardware:
    """The what-if machine built around a system on a chip (see the module docstring)."""
    assert soc.cpu is not None and soc.os is not None
    if whatif.vram_bytes is not None or (whatif.gpu_count or 1) > 1:
        raise UsageError(f"{soc.name} is a system on a chip with one GPU sharing its RAM; "
                         "--vram and --gpus do not apply (give --ram)")
    total = whatif.ram_bytes or soc.memory_bytes or base.memory.total_bytes
    stated = f"--ram {size_text(whatif.ram_bytes)}" if whatif.ram_bytes else f"--gpu {soc.name}"
    bandwidth = Bandwidth(
        soc.bandwidth_bytes_per_s,
        soc.bandwidth.source if known is not None else "assumed",
        f"unified memory: {soc.name} specification (known-GPU table, profiles/gpus.toml)",
    )
    if soc.cpu_bandwidth_bytes_per_s is not None:  # what its CPU cores can draw
        bandwidth = Bandwidth(soc.cpu_bandwidth_bytes_per_s, bandwidth.source,
                              f"{soc.name}'s CPU cores (known-GPU table, profiles/gpus.toml: "
                              "cpu_bandwidth_gbs)")
    memory = stated_memory(total, available_bytes=None, bandwidth=bandwidth,
                           origin=f"what-if {stated}", os=soc.os)
    if known is not None:
        gpu = soc.to_gpu(0, pool_bytes=total, cores=cores)
    else:
        gpu = _unified_gpu(base, None, None, total)
    gpus = (gpu,)
    llama_cpp = assumed_build(gpus, version=base.llama_cpp.version,
                              cpu_features=soc.cpu.features)
    label = known.name if known is not None else None
    return replace(
        base,
        os=soc.os,
        cpu=soc.cpu,
        memory=memory,
        gpus=gpus,
        llama_cpp=llama_cpp,
        warnings=tuple(offload_warnings(gpus, llama_cpp)),
        notes=(),  # the probe's notes are about this host
        source=f"{base.source} + what-if ({whatif.describe(label)})",
    )


def _known_gpu(name: str, table: Sequence[KnownGpu] | None) -> KnownGpu:
    known = lookup(name, table=table)
    if known is None:
        near = nearest_names(name, table=table)
        suggestion = f"; nearest known: {', '.join(near)}" if near else ""
        raise UsageError(
            f"unknown GPU {name!r}{suggestion}",
            hint="or describe it with --vram SIZE (e.g. --vram 16GB)",
        )
    return known


def _gpus(
    base: Hardware,
    whatif: WhatIf,
    known: KnownGpu | None,
    cores: int | None,
    ram_bytes: int,
) -> tuple[Gpu, ...]:
    """The GPUs of the what-if machine."""
    if whatif.cpu_only:
        return ()
    if whatif.unified or (known is not None and known.unified):
        return (_unified_gpu(base, known, cores, ram_bytes),)
    count = whatif.gpu_count
    if known is not None:
        return tuple(known.to_gpu(i, vram_bytes=whatif.vram_bytes) for i in range(count or 1))
    if whatif.vram_bytes is None and count is None:
        # Only --ram changed: GPUs stay as probed, but a unified GPU's pool follows the RAM.
        if whatif.ram_bytes is not None:
            return tuple(_repool(gpu, ram_bytes) if gpu.unified else gpu for gpu in base.gpus)
        return base.gpus
    if base.gpus:
        if any(gpu.unified for gpu in base.gpus):
            raise UsageError(
                f"--vram and --gpus do not apply to {base.gpus[0].name}, which shares system "
                "RAM; give --ram, or --gpu NAME for a discrete card"
            )
        templates = [base.gpus[0]] * count if count is not None else list(base.gpus)
        return tuple(_resized(gpu, i, whatif.vram_bytes) for i, gpu in enumerate(templates))
    if whatif.vram_bytes is None:
        raise UsageError(
            "--gpus needs a GPU to repeat and this machine has none",
            hint="give --gpu NAME (e.g. --gpu 'RTX 3090') or --vram SIZE",
        )
    return tuple(_generic_gpu(i, whatif.vram_bytes) for i in range(count or 1))


def _resized(gpu: Gpu, index: int, vram_bytes: int | None) -> Gpu:
    """A probed GPU as a what-if card: renumbered, optionally resized, idle."""
    total = vram_bytes if vram_bytes is not None else gpu.total_bytes
    return replace(gpu, index=index, total_bytes=total, free_bytes=total)


def _repool(gpu: Gpu, ram_bytes: int) -> Gpu:
    """A unified GPU on a machine with different RAM: the pool (and Metal's share) follow it."""
    if gpu.backend == "metal":
        working_set = metal.default_working_set(ram_bytes)
        return replace(
            gpu,
            total_bytes=ram_bytes,
            free_bytes=working_set,
            working_set_bytes=working_set,
            working_set_source=metal.DEFAULT_SHARE_SOURCE,
        )
    return replace(gpu, total_bytes=ram_bytes, free_bytes=ram_bytes)


def _unified_gpu(base: Hardware, known: KnownGpu | None, cores: int | None, ram_bytes: int) -> Gpu:
    if known is not None:
        if not known.unified:
            raise UsageError(
                f"--unified describes Apple-style shared memory, but {known.name} is a discrete "
                "card with its own memory; drop --unified, or give an Apple chip (--gpu 'M3 Max')"
            )
        return known.to_gpu(0, pool_bytes=ram_bytes, cores=cores)
    probed = [gpu for gpu in base.gpus if gpu.unified]
    if len(probed) == 1:
        return _repool(replace(probed[0], index=0), ram_bytes)
    working_set = metal.default_working_set(ram_bytes)
    return Gpu(
        index=0,
        name=GENERIC_UNIFIED_NAME,
        vendor="apple",
        total_bytes=ram_bytes,
        free_bytes=working_set,
        unified=True,
        backend="metal",
        integrated=True,
        bandwidth=Bandwidth(
            ASSUMED_UNIFIED_BANDWIDTH,
            "assumed",
            "assumed 100 GB/s (an Apple M2/M3); give --gpu with the chip for its real figure",
        ),
        working_set_bytes=working_set,
        working_set_source=metal.DEFAULT_SHARE_SOURCE,
        notes=("what-if unified GPU: bandwidth assumed",),
    )


def _generic_gpu(index: int, vram_bytes: int) -> Gpu:
    return Gpu(
        index=index,
        name=GENERIC_GPU_NAME,
        vendor="nvidia",
        total_bytes=vram_bytes,
        free_bytes=vram_bytes,
        unified=False,
        backend="cuda",
        bandwidth=Bandwidth(
            ASSUMED_GPU_BANDWIDTH,
            "assumed",
            "assumed 360 GB/s (an RTX 3060 12GB); give --gpu NAME for the card's real figure",
        ),
        notes=("what-if GPU: bandwidth assumed",),
    )
