"""AMD and Intel GPUs from fake /sys/class/drm trees under tests/data/hw/drm (see SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

from qwencli.hardware.drm import parse_amdgpu_ids, scan_drm
from qwencli.hardware.memory import parse_meminfo
from qwencli.hardware.model import Gpu

GIB = 1024**3
MIB = 1024**2


def _root(data_dir: Path, name: str) -> Path:
    return data_dir / "hw" / "drm" / name


def test_rx_7900_xtx_desktop(data_dir: Path) -> None:
    assert scan_drm(_root(data_dir, "rx7900xtx")) == (
        Gpu(
            index=0,
            name="AMD Radeon RX 7900 XTX",
            vendor="amd",
            total_bytes=25753026560,  # 24560 MiB: what amdgpu reports for the 24 GB card
            free_bytes=25753026560 - GIB,
            unified=False,
            backend="hip",
            integrated=False,
        ),
    )


def test_apu_radeon_780m_with_512_mib_carve_out(data_dir: Path) -> None:
    (gpu,) = scan_drm(_root(data_dir, "apu_radeon_780m"))
    # The name comes from the fake root's own libdrm amdgpu.ids (device 15BF, revision C1).
    assert gpu.name == "AMD Radeon 780M Graphics"
    assert (gpu.vendor, gpu.backend, gpu.index) == ("amd", "hip", 0)
    assert (gpu.integrated, gpu.unified) == (True, True)
    assert gpu.total_bytes == 512 * MIB + 16487809024
    assert gpu.free_bytes == (512 * MIB - 100 * MIB) + (16487809024 - 50 * MIB)
    assert gpu.notes == (
        "shares system memory (VRAM carve-out 512.0 MiB; the rest comes from system RAM)",
        "GPU-addressable system RAM (GTT): 15.4 GiB",
    )


def test_unknown_apu_recognised_by_small_carve_out_and_gtt(tmp_path: Path) -> None:
    dev = tmp_path / "sys/class/drm/card0/device"
    dev.mkdir(parents=True)
    for name, value in {"vendor": "0x1002", "device": "0x9999", "mem_info_vram_total": "536870912",
                        "mem_info_gtt_total": "8589934592"}.items():
        (dev / name).write_text(value + "\n")
    (gpu,) = scan_drm(tmp_path)
    assert gpu.name == "AMD GPU [1002:9999]"
    assert (gpu.integrated, gpu.unified, gpu.total_bytes) == (True, True, 512 * MIB + 8 * GIB)


def test_ryzen_igpu_and_discrete_card_in_card_order(data_dir: Path) -> None:
    igpu, dgpu = scan_drm(_root(data_dir, "ryzen_igpu_and_rx7900xtx"))
    # A 2 GiB carve-out is larger than the heuristic allows; the APU table still knows the part.
    assert (igpu.index, igpu.name, igpu.integrated, igpu.unified) == (
        0, "AMD Radeon Graphics (Granite Ridge)", True, True)
    assert igpu.total_bytes == 2 * GIB + 33411203072
    assert igpu.notes[0] == (
        "shares system memory (VRAM carve-out 2.0 GiB; the rest comes from system RAM)"
    )
    assert (dgpu.index, dgpu.name, dgpu.integrated, dgpu.unified) == (
        1, "AMD Radeon RX 7900 XTX", False, False)
    assert (dgpu.total_bytes, dgpu.free_bytes) == (25753026560, 25753026560 - 500 * MIB)


def test_intel_igpu_shares_system_memory(data_dir: Path) -> None:
    root = _root(data_dir, "intel_uhd770")
    info = parse_meminfo((root / "proc/meminfo").read_text())
    assert scan_drm(root) == (
        Gpu(
            index=0,
            name="Intel UHD Graphics 770",
            vendor="intel",
            total_bytes=info["MemTotal"],
            free_bytes=info["MemAvailable"],
            unified=True,
            backend="sycl",
            integrated=True,
            notes=("shares system memory (no dedicated VRAM)",),
        ),
    )


def test_intel_arc_b580_on_xe_reads_hex_tile_vram(data_dir: Path) -> None:
    (gpu,) = scan_drm(_root(data_dir, "intel_arc_b580_xe"))
    assert (gpu.name, gpu.vendor, gpu.backend) == ("Intel Arc B580", "intel", "sycl")
    assert (gpu.total_bytes, gpu.free_bytes) == (12 * GIB, 12 * GIB)
    assert (gpu.integrated, gpu.unified) == (False, False)
    assert gpu.notes == ("free VRAM is not published; all of it is counted as free",)


def test_intel_arc_on_i915_assumes_the_smallest_vram(tmp_path: Path) -> None:
    dev = tmp_path / "sys/class/drm/card1/device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "device").write_text("0x56a0\n")
    (gpu,) = scan_drm(tmp_path)
    assert (gpu.name, gpu.total_bytes, gpu.integrated) == ("Intel Arc A770", 8 * GIB, False)
    assert gpu.notes[0] == (
        "VRAM size not published; assumed 8.0 GiB, the smallest this card is sold with"
    )


def test_nvidia_and_bmc_are_not_ours(data_dir: Path) -> None:
    assert scan_drm(_root(data_dir, "nvidia_and_bmc_only")) == ()


def test_machine_with_none(data_dir: Path, tmp_path: Path) -> None:
    assert scan_drm(_root(data_dir, "empty")) == ()  # /sys/class/drm holds only "version"
    assert scan_drm(tmp_path) == ()  # no /sys/class/drm at all
    assert scan_drm(tmp_path / "does-not-exist") == ()


def test_product_name_wins_and_unknown_parts_get_ids(tmp_path: Path) -> None:
    for card, files in {
        "card0": {"vendor": "0x1002", "device": "0x74a1", "mem_info_vram_total": str(192 * GIB),
                  "mem_info_vram_vendor": "samsung", "product_name": "AMD Instinct MI300X OAM"},
        "card1": {"vendor": "0x1002", "device": "0x7777", "mem_info_vram_total": str(16 * GIB),
                  "mem_info_vram_vendor": "hynix"},
        "card2": {"vendor": "0x1002", "device": "0x744c", "revision": "0xce",
                  "mem_info_vram_total": str(16 * GIB), "mem_info_vram_vendor": "hynix"},
        "card3": {"vendor": "0x1002", "device": "0x744c", "revision": "0x99",
                  "mem_info_vram_total": str(20 * GIB), "mem_info_vram_vendor": "hynix"},
    }.items():
        dev = tmp_path / "sys/class/drm" / card / "device"
        dev.mkdir(parents=True)
        for name, value in files.items():
            (dev / name).write_text(value + "\n")
    names = [g.name for g in scan_drm(tmp_path)]
    assert names == [
        "AMD Instinct MI300X OAM",
        "AMD GPU [1002:7777]",
        "AMD Radeon RX 7900 GRE",
        "AMD Radeon RX 7900 XTX/XT/GRE (Navi 31)",
    ]


def test_amd_card_without_driver_files_reports_zero(tmp_path: Path) -> None:
    dev = tmp_path / "sys/class/drm/card0/device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x1002\n")
    (dev / "device").write_text("0x73bf\n")
    (gpu,) = scan_drm(tmp_path)
    assert (gpu.name, gpu.total_bytes, gpu.free_bytes) == (
        "AMD Radeon RX 6800/6800 XT/6900 XT (Navi 21)", 0, 0)
    assert gpu.notes == ("VRAM size not published (is the amdgpu driver bound?)",)


def test_parse_amdgpu_ids() -> None:
    text = (
        "# List of AMDGPU IDs\n#\n1.0.0\n744C,\tC8,\tAMD Radeon RX 7900 XTX\n"
        "15BF,\tC1,\tAMD Radeon 780M Graphics\n7481,   C7,     AMD Steam Machine\nbad line\n"
    )
    assert parse_amdgpu_ids(text) == {
        (0x744C, 0xC8): "AMD Radeon RX 7900 XTX",
        (0x15BF, 0xC1): "AMD Radeon 780M Graphics",
        (0x7481, 0xC7): "AMD Steam Machine",
    }


def test_real_sysfs_never_raises() -> None:
    gpus = scan_drm()
    assert all(g.vendor in ("amd", "intel") for g in gpus)
    assert [g.index for g in gpus] == list(range(len(gpus)))


def test_a_machine_with_none_of_these(data_dir: Path, tmp_path: Path) -> None:
    """No NVML library, an empty DRM class, Linux sysctl: no GPUs anywhere, and no exception."""
    from qwencli.hardware.apple import apple_gpu
    from qwencli.hardware.nvidia import probe_nvidia
    from tests.hardware.test_nvidia import RTX_4090, FakeNvml

    nvidia, status = probe_nvidia(FakeNvml([RTX_4090], init_error=12).module())
    drm = scan_drm(_root(data_dir, "empty")) + scan_drm(tmp_path)
    apple = apple_gpu({"kernel.ostype": "Linux", "kernel.osrelease": "6.1.0"}, None, None)
    assert (nvidia, drm, apple) == ((), (), None)
    assert status == "NVIDIA driver not found (NVML library missing)"
