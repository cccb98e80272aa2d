"""`tight`: a pick with less than max(5 % of the budget, 256 MiB) spare is said so and ranks
below an otherwise equal pick with room."""

from __future__ import annotations

import dataclasses

from qwencli import recommend
from qwencli.catalog import load_catalog
from qwencli.fit import Options, plan
from qwencli.hardware.budget import HOST_HEADROOM, plan_budget
from qwencli.hardware.model import Bandwidth
from qwencli.recommend import TIGHT_MIN_BYTES, TIGHT_PENALTY, is_tight
from tests.hardware.factories import machine, memory
from tests.test_fit import MIB, gpu_box, shape

GIB = 1024**3


def box_with_spare(spare: int, *, base_gib: float = 0.0):
    """A CPU machine whose host budget is the test shape's need plus `spare` (and base_gib)."""
    probe = machine(mem=memory(64, 60))
    need = plan(shape(), probe, plan_budget(probe), Options(ctx=4096)).host.bytes
    available = need + spare + HOST_HEADROOM + int(base_gib * GIB)
    hw = machine(mem=dataclasses.replace(memory(64, 1), available_bytes=available))
    return dataclasses.replace(hw, memory=dataclasses.replace(
        hw.memory, bandwidth=Bandwidth(30 * 10**9, "measured", "test")))


def planned(hw):
    return plan(shape(), hw, plan_budget(hw), Options(ctx=4096))


def test_under_256_mib_spare_is_tight() -> None:
    assert is_tight(planned(box_with_spare(TIGHT_MIN_BYTES - MIB)))
    assert not is_tight(planned(box_with_spare(TIGHT_MIN_BYTES + 10 * MIB)))


def with_spare(p, spare: int, budget: int):
    """`p` with its host budget set to `budget` and its need to leave `spare`."""
    host = dataclasses.replace(p.host, budget_bytes=budget, breakdown=dataclasses.replace(
        p.host.breakdown, weights=p.host.breakdown.weights + budget - spare - p.host.bytes))
    return dataclasses.replace(p, host=host)


def test_under_5_percent_of_a_large_budget_is_tight() -> None:
    p = planned(box_with_spare(2 * GIB))
    assert not is_tight(with_spare(p, GIB, 10 * GIB))  # 1 GiB of 10: 10 %
    assert is_tight(with_spare(p, GIB, 30 * GIB))  # 1 GiB of 30: 3.3 %
    assert is_tight(with_spare(p, 200 * MIB, 2 * GIB))  # 10 %, but under 256 MiB


def test_a_plan_that_does_not_fit_is_not_called_tight() -> None:
    p = planned(box_with_spare(-GIB))
    assert not p.fits and not is_tight(p)


def test_a_whole_model_on_a_full_gpu_is_tight_but_partial_offload_is_not() -> None:
    from qwencli.hardware.budget import GPU_HEADROOM

    roomy = plan(shape(10, 100), gpu_box(23), plan_budget(gpu_box(23)), Options(ctx=2048))
    need = roomy.devices[0].bytes
    full = gpu_box((need + GPU_HEADROOM + 100 * MIB) / GIB)
    whole = plan(shape(10, 100), full, plan_budget(full), Options(ctx=2048))
    assert whole.n_gpu_layers == 11
    assert is_tight(whole) and not is_tight(roomy)
    partial = plan(shape(40, 100), gpu_box(3), plan_budget(gpu_box(3)), Options(ctx=2048))
    assert partial.n_gpu_layers < 41 and not is_tight(partial)


def test_tight_costs_points_marks_the_pick_and_says_so() -> None:
    catalog = load_catalog()
    spec = next(m for m in catalog.models() if m.id == "qwen3-4b")
    quant = "Q4_K_M"
    from qwencli.catalog import quant_file
    from qwencli.shapes import shape_from_catalog

    need = plan(shape_from_catalog(spec, quant_file(spec, quant)), box_with_spare(0),
                plan_budget(box_with_spare(0)), Options(ctx=8192)).host.bytes

    def machine_with(spare: int):
        hw = machine(mem=dataclasses.replace(memory(64, 1), available_bytes=need + spare
                                             + HOST_HEADROOM))
        return dataclasses.replace(hw, memory=dataclasses.replace(
            hw.memory, bandwidth=Bandwidth(200 * 10**9, "measured", "test")))

    tight_hw, roomy_hw = machine_with(64 * MIB), machine_with(4 * GIB)
    tight = recommend._consider(catalog, spec, quant, tight_hw, plan_budget(tight_hw), 8192,
                                1.0, "chat")
    roomy = recommend._consider(catalog, spec, quant, roomy_hw, plan_budget(roomy_hw), 8192,
                                1.0, "chat")
    assert tight.tight and not roomy.tight
    assert round(roomy.score - tight.score, 6) == TIGHT_PENALTY
    picks = recommend.rank(catalog, tight_hw, plan_budget(tight_hw), ctx=8192, min_speed=1.0,
                           top=20)
    mine = [p for p in picks if p.spec.id == "qwen3-4b"]
    assert all(p.tight == is_tight(p.plan) for p in picks)
    if mine and mine[0].tight:
        assert "tight" in mine[0].reasons[0] or mine[0] is not picks[0]
