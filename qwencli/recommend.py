"""Rank (model, quant) candidates for a use case on one machine. Pure: data in, picks out.

1. Candidates: every catalog model meant for the use case, at every quant some source offers,
   planned with `fit.plan` at the requested context (so what is recommended is what `qwen fit`
   and `qwen chat` load).
2. Constraints: the plan must fit the budget, the model must support the context, and its typical
   decode speed (the geometric mean of the plan's low and high estimates) must reach the speed
   floor (default 10 tokens/s, a comfortable reading speed).
3. Score: the model's quality prior for the use case (catalog `quality`, from published results
   where there are some; see profiles/models/*.toml) less the quant's loss. The loss is the quant's
   mean KL divergence from llama.cpp's LLaMA-3-8B scoreboard (profiles/quants.toml; Llama data,
   no Qwen table exists) x 30 points, scaled by sqrt(8B / model size): small models lose more
   from the same quant, and under the small-model rule (at most ~2B parameters, fewer than 4 bits;
   quantgap's Qwen3-0.6B Q3_K_M KLD is 0.40) the loss counts four times. A bonus of one point per
   doubling of speed above the floor (at most 3) goes to faster plans, so a plan that keeps every
   layer on the GPU beats a slower one of near-equal quality.
4. Specialists: for `code`, coder models form a first tier: when one fits, the picks start with
   them (a person asking for a code model wants the one trained for it: fill-in-the-middle,
   repository-level context, tool calls).
5. Each model appears once, at its best quant; every pick carries reasons a person can check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwencli.catalog import Catalog, ModelSpec, QuantFile, quant_file
from qwencli.fit import Options, Plan, plan
from qwencli.hardware.model import Budget, Hardware
from qwencli.shapes import shape_from_catalog
from qwencli.units import format_bytes

USES = ("chat", "code", "math", "reasoning")
DEFAULT_CTX = {"chat": 8192, "code": 16384, "math": 8192, "reasoning": 16384}
DEFAULT_MIN_SPEED = 10.0
KLD_POINTS = 30.0
SMALL_MODEL_FACTOR = 4.0
SPEED_BONUS_MAX = 3.0
SPECIALISTS = {"code": "coder"}


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    quant: QuantFile
    plan: Plan
    speed: float  # typical decode tokens/s
    loss: float  # points lost to the quant
    score: float
    rejected: str | None  # why it cannot be recommended, or None


@dataclass(frozen=True)
class Pick:
    spec: ModelSpec
    quant: QuantFile
    use: str
    plan: Plan
    speed: float
    score: float
    reasons: tuple[str, ...]


def typical_speed(p: Plan) -> float:
    return math.sqrt(max(p.speed.low, 0.0) * max(p.speed.high, 0.0))


UNKNOWN_QUANT_KLD = 0.05  # a quant with no published figure: assume a 4-bit-class loss


def quant_kld(catalog: Catalog, quant: str) -> float:
    """The quant's mean KLD on LLaMA-3-8B: without imatrix where published, else with."""
    info = catalog.quant_table.get(quant)
    if info is None:
        return UNKNOWN_QUANT_KLD
    if info.kld is not None:
        return info.kld
    return info.kld_imatrix if info.kld_imatrix is not None else UNKNOWN_QUANT_KLD


def quant_loss(catalog: Catalog, spec: ModelSpec, quant: str) -> float:
    """Quality points a quant costs this model (see the module docstring)."""
    kld = quant_kld(catalog, quant)
    info = catalog.quant_table.get(quant)
    size = spec.effective_params or 1.0
    loss = KLD_POINTS * kld * min(4.0, max(0.5, math.sqrt(8e9 / size)))
    rule = catalog.small_model_rule
    if info is not None and rule.applies(spec.params_total) and info.bits < rule.min_bits:
        loss *= SMALL_MODEL_FACTOR
    return loss


def _placement(p: Plan) -> str:
    if not p.devices:
        return "on the CPU"
    offloaded = p.n_gpu_layers
    total = p.n_layers + 1
    where = "unified memory" if p.unified_pool else "VRAM"
    if offloaded >= total:
        return f"entirely in {where}"
    return f"{offloaded} of {total} layers in {where}, the rest on the CPU"


def _spare(p: Plan) -> int:
    spare = [d.budget_bytes - d.bytes for d in p.devices] or [p.host.budget_bytes - p.host.bytes]
    if p.devices and not p.unified_pool:
        spare.append(p.host.budget_bytes - p.host.bytes)
    return min(spare)


def _ctx_label(ctx: int) -> str:
    return f"{ctx // 1024}K" if ctx % 1024 == 0 else str(ctx)


def _consider(catalog: Catalog, spec: ModelSpec, quant: str, hw: Hardware, budget: Budget,
              ctx: int, min_speed: float, use: str) -> Candidate:
    qf = quant_file(spec, quant)
    p = plan(shape_from_catalog(spec, qf), hw, budget, Options(ctx=ctx), find_usable_ctx=False)
    speed = typical_speed(p)
    loss = quant_loss(catalog, spec, quant)
    bonus = 0.0
    if speed > min_speed > 0:
        bonus = min(SPEED_BONUS_MAX, math.log2(speed / min_speed))
    score = spec.quality_for_use(use) - loss + bonus
    rejected = None
    if ctx > spec.context_max:
        rejected = f"supports at most {_ctx_label(spec.context_max)} context"
    elif not p.fits:
        need = p.host.bytes + sum(d.bytes for d in p.devices)
        rejected = f"does not fit (needs {format_bytes(need)} at {_ctx_label(ctx)} context)"
    elif speed < min_speed:
        rejected = (f"would run at about {speed:.0f} tok/s ({_placement(p)}), under the "
                    f"{min_speed:g} tok/s floor")
    return Candidate(spec, qf, p, speed, loss, score, rejected)


def candidates(catalog: Catalog, hw: Hardware, budget: Budget, use: str, ctx: int | None,
               min_speed: float) -> list[Candidate]:
    """Every (model, quant) for the use case, planned; rejected ones say why.

    Quants are tried from the fewest bits up: once one is too big or too slow, the larger ones
    are too, so the first rejection ends that model's list.
    """
    found = []
    for spec in catalog.models(use):
        model_ctx = ctx if ctx is not None else min(DEFAULT_CTX[use], spec.context_max)
        for quant in spec.quants:
            candidate = _consider(catalog, spec, quant, hw, budget, model_ctx, min_speed, use)
            found.append(candidate)
            if candidate.rejected:
                break
    return found


def _is_specialist(spec: ModelSpec, use: str) -> bool:
    marker = SPECIALISTS.get(use)
    return bool(marker) and marker in spec.id


def _tier_key(use: str) -> Callable[[Candidate], tuple[int, float]]:
    def key(c: Candidate) -> tuple[int, float]:
        return (1 if _is_specialist(c.spec, use) else 0, c.score)
    return key


def _reasons(best: Candidate, others: Sequence[Candidate], catalog: Catalog, use: str,
             min_speed: float) -> tuple[str, ...]:
    p = best.plan
    reasons = [
        f"{_placement(p)} with {format_bytes(max(0, _spare(p)))} to spare at "
        f"{_ctx_label(p.ctx)} context, about {best.speed:.0f} tok/s "
        f"({p.speed.low:.0f}-{p.speed.high:.0f})",
    ]
    info = catalog.quant_table.get(best.quant.quant)
    kld = f"KLD {quant_kld(catalog, best.quant.quant):.3f} on Llama-3-8B"
    if info is None or info.loss_assumed:
        kld += ", assumed"
    reasons.append(
        f"quality prior {best.spec.quality_for_use(use):.0f} for {use}; {best.quant.quant} "
        f"costs about {best.loss:.1f} points ({kld})")
    if _is_specialist(best.spec, use):
        reasons.append(f"a {use}-specialised model: preferred for --use {use}")
    # The strongest model that did not make it, and why: the trade-off a person wants to see.
    better = [c for c in others if c.rejected and c.spec.id != best.spec.id
              and c.spec.quality_for_use(use) > best.spec.quality_for_use(use)]
    if better:
        nearest = min(better, key=lambda c: (c.spec.quality_for_use(use), -c.score))
        reasons.append(f"{nearest.spec.id} ({nearest.quant.quant}) {nearest.rejected}")
    if best.quant.approx:
        reasons.append("file size from the catalog is an estimate; `qwen fit` reads the exact "
                       "header")
    return tuple(reasons)


def rank(catalog: Catalog, hw: Hardware, budget: Budget, *, use: str = "chat",
         ctx: int | None = None, min_speed: float = DEFAULT_MIN_SPEED,
         top: int = 5) -> list[Pick]:
    """The best `top` picks, best first: one per model, at its best-scoring quant."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r}")
    everything = candidates(catalog, hw, budget, use, ctx, min_speed)
    accepted = [c for c in everything if c.rejected is None]
    best_per_model: dict[str, Candidate] = {}
    for c in accepted:
        current = best_per_model.get(c.spec.id)
        if current is None or c.score > current.score:
            best_per_model[c.spec.id] = c
    ordered = sorted(best_per_model.values(), key=_tier_key(use), reverse=True)[:top]
    # Rejections worth citing: the best-scoring quant of each model that has no accepted quant.
    rejected_models: dict[str, Candidate] = {}
    for c in everything:
        if c.rejected and c.spec.id not in best_per_model:
            current = rejected_models.get(c.spec.id)
            if current is None or c.score > current.score:
                rejected_models[c.spec.id] = c
    return [Pick(c.spec, c.quant, use, plan_for(c.spec, c.quant, hw, budget, c.plan.ctx), c.speed,
                 round(c.score, 2),
                 _reasons(c, list(rejected_models.values()), catalog, use, min_speed))
            for c in ordered]


def plan_for(spec: ModelSpec, qf: QuantFile, hw: Hardware, budget: Budget, ctx: int) -> Plan:
    """The full plan of a catalog model at a quant: what `qwen fit MODEL:QUANT` shows."""
    return plan(shape_from_catalog(spec, qf), hw, budget, Options(ctx=ctx))


def best_quant(catalog: Catalog, spec: ModelSpec, hw: Hardware, budget: Budget, *,
               use: str | None = None, ctx: int | None = None,
               min_speed: float = DEFAULT_MIN_SPEED) -> QuantFile | None:
    """The quant `qwen recommend` would pick for this model on this machine (None: none fits).

    A model outside the use case's list is scored for its own first use case.
    """
    use = use if use in USES and use in spec.use else next(
        (u for u in spec.use if u in USES), "chat")
    model_ctx = ctx if ctx is not None else min(DEFAULT_CTX[use], spec.context_max)
    best: Candidate | None = None
    for quant in spec.quants:
        c = _consider(catalog, spec, quant, hw, budget, model_ctx, min_speed, use)
        if c.rejected:
            break
        if best is None or c.score > best.score:
            best = c
    return best.quant if best else None
