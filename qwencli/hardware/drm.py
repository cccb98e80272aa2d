"""AMD and Intel GPUs from Linux sysfs (/sys/class/drm/cardN/device).

amdgpu publishes VRAM in bytes (mem_info_vram_total / _used) and the GPU-addressable system memory
(GTT) beside it (Documentation/gpu/amdgpu/driver-misc.rst). An APU's "VRAM" is a BIOS carve-out of
system RAM, often 512 MiB; the rest of what it uses comes from RAM through GTT, so an APU is
reported as integrated and unified. Intel's integrated GPUs have no VRAM at all; Arc cards on the
xe driver publish theirs per tile (tileN/physical_vram_size_bytes).

NVIDIA cards are skipped here: nvidia.py reads them through NVML, which knows more.
Names: the card's product_name file, then the system's libdrm amdgpu.ids (device, revision), then a
small table of common parts, then "AMD GPU [1002:744c]".
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from qwencli.hardware.memory import parse_meminfo
from qwencli.hardware.model import Gpu
from qwencli.units import format_bytes

AMD, INTEL, NVIDIA = 0x1002, 0x8086, 0x10DE
GIB = 1024**3

_CARD = re.compile(r"^card(\d+)$")

# (device, revision) -> name, from libdrm's data/amdgpu.ids: one device id can be several cards.
AMD_BY_REVISION: dict[tuple[int, int], str] = {
    (0x744C, 0xC8): "AMD Radeon RX 7900 XTX",
    (0x744C, 0xCC): "AMD Radeon RX 7900 XT",
    (0x744C, 0xCE): "AMD Radeon RX 7900 GRE",
    (0x747E, 0xC8): "AMD Radeon RX 7800 XT",
    (0x747E, 0xFF): "AMD Radeon RX 7700 XT",
    (0x7480, 0xC0): "AMD Radeon RX 7600 XT",
    (0x7480, 0xCF): "AMD Radeon RX 7600",
    (0x73BF, 0xC0): "AMD Radeon RX 6900 XT",
    (0x73BF, 0xC1): "AMD Radeon RX 6800 XT",
    (0x73BF, 0xC3): "AMD Radeon RX 6800",
    (0x7550, 0xC0): "AMD Radeon RX 9070 XT",
    (0x7550, 0xC3): "AMD Radeon RX 9070",
    (0x1586, 0xC1): "AMD Radeon 8060S Graphics",
    (0x1586, 0xC2): "AMD Radeon 8050S Graphics",
}

# device -> family name (pci.ids / amdgpu.ids), used when the revision is not in the table above.
AMD_BY_DEVICE: dict[int, str] = {
    0x744C: "AMD Radeon RX 7900 XTX/XT/GRE (Navi 31)",
    0x7448: "AMD Radeon Pro W7900",
    0x747E: "AMD Radeon RX 7800 XT/7700 XT (Navi 32)",
    0x7480: "AMD Radeon RX 7600/7600 XT (Navi 33)",
    0x73A5: "AMD Radeon RX 6950 XT",
    0x73AF: "AMD Radeon RX 6900 XT",
    0x73BF: "AMD Radeon RX 6800/6800 XT/6900 XT (Navi 21)",
    0x73DF: "AMD Radeon RX 6700/6700 XT/6750 XT (Navi 22)",
    0x73FF: "AMD Radeon RX 6600/6600 XT (Navi 23)",
    0x7550: "AMD Radeon RX 9070/9070 XT (Navi 48)",
    0x7590: "AMD Radeon RX 9060 XT (Navi 44)",
    0x74A1: "AMD Instinct MI300X",
    0x15BF: "AMD Radeon 780M/760M (Phoenix)",
    0x15C8: "AMD Radeon 740M (Phoenix2)",
    0x1900: "AMD Radeon 780M/760M (Hawk Point)",
    0x1901: "AMD Radeon 740M (Hawk Point)",
    0x150E: "AMD Radeon 890M/880M (Strix Point)",
    0x1114: "AMD Radeon 860M/840M (Krackan Point)",
    0x1586: "AMD Radeon 8060S/8050S (Strix Halo)",
    0x1681: "AMD Radeon 680M/660M (Rembrandt)",
    0x164E: "AMD Radeon Graphics (Raphael)",
    0x13C0: "AMD Radeon Graphics (Granite Ridge)",
    0x1638: "AMD Radeon Graphics (Cezanne)",
    0x1636: "AMD Radeon Graphics (Renoir)",
    0x163F: "AMD Custom GPU 0405 (Steam Deck)",
}

# AMD device ids of APUs: GPUs inside the processor, whose memory is system RAM.
AMD_APUS = frozenset({
    0x15DD, 0x15D8, 0x1636, 0x1638, 0x164C, 0x15E7, 0x1681, 0x164D, 0x163F, 0x1506, 0x164E,
    0x13C0, 0x15BF, 0x15C8, 0x1900, 0x1901, 0x1902, 0x150E, 0x1114, 0x1586,
})

# Intel discrete (Arc) cards: name and the smallest VRAM sold under that id, used only when the
# driver publishes no size (i915 does not).
INTEL_DISCRETE: dict[int, tuple[str, int]] = {
    0x56A0: ("Intel Arc A770", 8 * GIB),
    0x56A1: ("Intel Arc A750", 8 * GIB),
    0x56A2: ("Intel Arc A580", 8 * GIB),
    0x56A5: ("Intel Arc A380", 6 * GIB),
    0x56A6: ("Intel Arc A310", 4 * GIB),
    0xE20B: ("Intel Arc B580", 12 * GIB),
    0xE20C: ("Intel Arc B570", 10 * GIB),
}

INTEL_INTEGRATED: dict[int, str] = {
    0x3E92: "Intel UHD Graphics 630",
    0x3E9B: "Intel UHD Graphics 630",
    0x9BC5: "Intel UHD Graphics 630",
    0x9A49: "Intel Iris Xe Graphics (Tiger Lake)",
    0x46A6: "Intel Iris Xe Graphics (Alder Lake-P)",
    0x46A8: "Intel Iris Xe Graphics (Alder Lake-U)",
    0x4692: "Intel UHD Graphics 730",
    0xA780: "Intel UHD Graphics 770",
    0xA7A0: "Intel Iris Xe Graphics (Raptor Lake-P)",
    0x7D55: "Intel Arc Graphics (Meteor Lake)",
    0x64A0: "Intel Arc 140V/130V (Lunar Lake)",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\x00 \n\t")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    """Decimal or 0x-prefixed hex (xe prints physical_vram_size_bytes in hex)."""
    text = _read(path)
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_amdgpu_ids(text: str) -> dict[tuple[int, int], str]:
    """libdrm's amdgpu.ids ("744C,\tC8,\tAMD Radeon RX 7900 XTX") as {(device, revision): name}."""
    names: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) != 3:
            continue
        try:
            names.setdefault((int(parts[0], 16), int(parts[1], 16)), parts[2])
        except ValueError:
            continue
    return names


def _host_memory(root: Path) -> tuple[int, int] | None:
    text = _read(root / "proc/meminfo")
    info = parse_meminfo(text) if text else {}
    if "MemTotal" not in info:
        return None
    return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))


def _amd(
    dev: Path, device: int, revision: int | None, system_ids: dict[tuple[int, int], str]
) -> Gpu:
    vram_total = _read_int(dev / "mem_info_vram_total")
    vram_used = _read_int(dev / "mem_info_vram_used") or 0
    gtt_total = _read_int(dev / "mem_info_gtt_total")
    gtt_used = _read_int(dev / "mem_info_gtt_used") or 0

    key = (device, revision if revision is not None else -1)
    name = (
        _read(dev / "product_name")
        or system_ids.get(key)
        or AMD_BY_REVISION.get(key)
        or AMD_BY_DEVICE.get(device)
        or f"AMD GPU [1002:{device:04x}]"
    )
    # A discrete card's VRAM has a memory vendor (Samsung, Hynix GDDR6...); a carve-out has none.
    apu = device in AMD_APUS or (
        not (dev / "mem_info_vram_vendor").exists()
        and vram_total is not None
        and vram_total <= GIB
        and gtt_total is not None
    )
    if apu:
        carve = vram_total or 0
        total = carve + (gtt_total or 0)
        free = max(0, carve - vram_used) + max(0, (gtt_total or 0) - gtt_used)
        notes = [
            f"shares system memory (VRAM carve-out {format_bytes(carve)}; "
            "the rest comes from system RAM)"
        ]
        if gtt_total is not None:
            notes.append(f"GPU-addressable system RAM (GTT): {format_bytes(gtt_total)}")
        return Gpu(0, name, "amd", total, free, unified=True, backend="hip", integrated=True,
                   notes=tuple(notes))
    if vram_total is None:
        return Gpu(0, name, "amd", 0, 0, unified=False, backend="hip",
                   notes=("VRAM size not published (is the amdgpu driver bound?)",))
    return Gpu(0, name, "amd", vram_total, max(0, vram_total - vram_used), unified=False,
               backend="hip")


def _intel_vram(dev: Path) -> int | None:
    """Dedicated memory of an Intel card: xe per-tile sizes summed, else i915's lmem_total_bytes."""
    tiles = 0
    for tile in sorted(dev.glob("tile[0-9]*")):
        size = _read_int(tile / "physical_vram_size_bytes") or _read_int(
            tile / "memory" / "physical_vram_size_bytes"
        )
        tiles += size or 0
    if tiles:
        return tiles
    return _read_int(dev / "lmem_total_bytes")


def _intel(dev: Path, card: Path, device: int, host: tuple[int, int] | None) -> Gpu:
    product = _read(dev / "product_name")
    vram = _intel_vram(dev) or _read_int(card / "lmem_total_bytes")
    known = INTEL_DISCRETE.get(device)
    if vram or known:
        name = product or (known[0] if known else f"Intel GPU [8086:{device:04x}]")
        notes = ["free VRAM is not published; all of it is counted as free"]
        if not vram and known:
            vram = known[1]
            notes.insert(0, f"VRAM size not published; assumed {format_bytes(vram)}, "
                            "the smallest this card is sold with")
        return Gpu(0, name, "intel", vram or 0, vram or 0, unified=False, backend="sycl",
                   notes=tuple(notes))
    name = product or INTEL_INTEGRATED.get(device) or f"Intel integrated GPU [8086:{device:04x}]"
    total, free = host if host else (0, 0)
    notes = ["shares system memory (no dedicated VRAM)"]
    if host is None:
        notes.append("system memory size unknown")
    return Gpu(0, name, "intel", total, free, unified=True, backend="sycl", integrated=True,
               notes=tuple(notes))


def scan_drm(root: Path = Path("/")) -> tuple[Gpu, ...]:
    """AMD and Intel GPUs under <root>/sys/class/drm, indexed in card order. Never raises."""
    drm = root / "sys/class/drm"
    try:
        cards = sorted(
            (int(m.group(1)), entry)
            for entry in drm.iterdir()
            if (m := _CARD.match(entry.name))
        )
    except OSError:
        return ()

    system_ids: dict[tuple[int, int], str] | None = None
    host: tuple[int, int] | None = None
    host_read = False
    gpus: list[Gpu] = []
    seen: set[Path] = set()
    for _, card in cards:
        dev = card / "device"
        vendor = _read_int(dev / "vendor")
        device = _read_int(dev / "device")
        if vendor not in (AMD, INTEL) or device is None:
            continue
        try:
            real = dev.resolve()
        except OSError:
            real = dev
        if real in seen:
            continue
        seen.add(real)
        try:
            if vendor == AMD:
                if system_ids is None:
                    text = _read(root / "usr/share/libdrm/amdgpu.ids")
                    system_ids = parse_amdgpu_ids(text) if text else {}
                gpu = _amd(dev, device, _read_int(dev / "revision"), system_ids)
            else:
                if not host_read:
                    host, host_read = _host_memory(root), True
                gpu = _intel(dev, card, device, host)
        except OSError:
            continue
        gpus.append(replace(gpu, index=len(gpus)))
    return tuple(gpus)
