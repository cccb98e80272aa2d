"""The planner's budget: free memory less the documented margins."""

from __future__ import annotations

from qwencli.hardware.budget import GPU_HEADROOM, HOST_HEADROOM, plan_budget
from tests.hardware.factories import GIB, apple, machine, memory, nvidia


def test_cpu_only_machine_budget_is_available_less_headroom() -> None:
    budget = plan_budget(machine(mem=memory(total_gib=32, available_gib=20)))
    assert budget.host_bytes == 20 * GIB - HOST_HEADROOM
    assert budget.gpus == ()
    assert not budget.unified_pool


def test_discrete_gpu_budget_uses_free_not_total() -> None:
    budget = plan_budget(machine(gpus=(nvidia(total_gib=24, free_gib=21.5),), backend="cuda"))
    (gpu,) = budget.gpus
    assert gpu.usable
    assert gpu.bytes == int(21.5 * GIB) - GPU_HEADROOM
    assert "free" in gpu.reason


def test_two_gpus_each_get_their_own_budget() -> None:
    budget = plan_budget(machine(gpus=(nvidia(0, 24, 23), nvidia(1, 24, 20)), backend="cuda"))
    assert [g.bytes for g in budget.gpus] == [23 * GIB - GPU_HEADROOM, 20 * GIB - GPU_HEADROOM]


def test_gpu_the_build_cannot_drive_is_marked_unusable() -> None:
    budget = plan_budget(machine(gpus=(nvidia(),), backend="cpu"))
    (gpu,) = budget.gpus
    assert not gpu.usable
    assert "cpu-only" in gpu.reason


def test_vulkan_build_drives_any_vendor() -> None:
    budget = plan_budget(machine(gpus=(nvidia(),), backend="vulkan"))
    assert budget.gpus[0].usable


def test_unified_memory_is_one_pool_capped_by_working_set_and_host() -> None:
    hw = machine(gpus=(apple(total_gib=64, working_set_gib=48),), backend="metal",
                 mem=memory(total_gib=64, available_gib=40))
    budget = plan_budget(hw)
    assert budget.unified_pool
    host = 40 * GIB - HOST_HEADROOM
    assert budget.host_bytes == host
    # working set 48 GiB less headroom is above the host budget: the host budget wins
    assert budget.gpus[0].bytes == host
    roomy = plan_budget(machine(gpus=(apple(64, 48),), backend="metal",
                                mem=memory(total_gib=64, available_gib=60)))
    assert roomy.gpus[0].bytes == 48 * GIB - GPU_HEADROOM


def test_budget_never_negative() -> None:
    budget = plan_budget(machine(gpus=(nvidia(total_gib=1, free_gib=0.5),), backend="cuda",
                                 mem=memory(total_gib=1, available_gib=0.25)))
    assert budget.host_bytes == 0
    assert budget.gpus[0].bytes == 0
