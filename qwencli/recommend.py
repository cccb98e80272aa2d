"""Rank (model, quant) candidates for a use case on one machine. Pure: data in, picks out.

1. Candidates: every catalog model meant for the use case, at every quant some source offers,
   planned with `fit.plan` at the requested context (so what is recommended is what `qwen fit`
   and `qwen chat` load).
2. Constraints: the plan must fit the budget, the model must support the context, and its typical
   decode speed (the plan's typical figure, measured by `qwen bench` on a calibrated machine)
   must reach the speed floor (default 10 tokens/s, a comfortable reading speed).
3. Score: the model's quality prior for the use case, in the mode the chat will run (catalog
   `quality_modes`: Qwen's published MMLU-Pro for that mode, else a named fallback; see
   profiles/models/*.toml): `--use reasoning` means thinking, `think` (`qwen recommend
   --think/--no-think`) chooses, otherwise the model's default mode; a model that has only one
   mode is scored in it. Specialists score their `quality_for` figure at their use. From the
   prior the quant's loss is taken: the quant's mean KL divergence from llama.cpp's LLaMA-3-8B
   scoreboard (profiles/quants.toml; Llama data, no Qwen table exists) x 30 points, scaled by
   sqrt(8B / model size): small models lose more from the same quant, and under the small-model
   rule (at most ~2B parameters, fewer than 4 bits; quantgap's Qwen3-0.6B Q3_K_M KLD is 0.40)
   the loss counts four times. A bonus of one point per doubling of speed above the floor (at
   most 3) goes to faster plans, so a plan that keeps every layer on the GPU beats a slower one
   of near-equal quality.
   A plan that leaves little room (`is_tight`: less spare than 5 % of the budget or 256 MiB,
   whichever is larger) loses TIGHT_PENALTY points, so it ranks below an otherwise equal pick with
   room, and is marked `tight` in the text and the JSON: a person whose machine is a little
   busier than assumed would swap or fail to load it.
4. Specialists: for `code`, coder models form a first tier: when one fits, the picks start with
   them (a person asking for a code model wants the one trained for it: fill-in-the-middle,
   repository-level context, tool calls).
5. Each model appears once, at the quant `choose_quant` picks for it; every pick carries reasons
   a person can check.

Which quant of a model to run here is decided once, in `choose_quant`, and everything that needs
a default asks it (through `default_quant` for a MODEL reference): `qwen recommend`, `qwen fit`,
`qwen pull`, `qwen chat -m`. The rule: of the quants that fit in memory at the default context,
the best-scoring one that reaches the speed floor; the floor ranks but never forces a model of
4B parameters or less below 4 bits when a 4-bit-or-better quant fits (small models collapse
below 4 bits: quantgap's Qwen3-0.6B Q3_K_M KLD is 0.40): then the fastest such quant is taken
and the choice says it runs under the floor. When no quant reaches the floor, the fastest
4-bit-or-better quant that fits (speed is what is short; fewer than 4 bits would cost quality
too). When none fits at all, the usual default (Q4_K_M), marked as over the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwencli.catalog import (
    Catalog,
    ModelSpec,
    QualityFigure,
    QuantFile,
    quant_file,
    resolve_catalog_ref,
)
from qwencli.fit import Options, Plan, SpeedCalibration, plan
from qwencli.hardware.model import Budget, Hardware
from qwencli.refs import DEFAULT_HUB_QUANT, CatalogRef, HubRef, ModelRef
from qwencli.shapes import shape_from_catalog
from qwencli.units import format_bytes

#: This machine's measured speed for a probed machine (None for a what-if one, or none stored).
Calibrate = Callable[[Hardware], "SpeedCalibration | None"]

USES = ("chat", "code", "math", "reasoning")
DEFAULT_CTX = {"chat": 8192, "code": 16384, "math": 8192, "reasoning": 16384}
DEFAULT_MIN_SPEED = 10.0
KLD_POINTS = 30.0
SMALL_MODEL_FACTOR = 4.0
SPEED_BONUS_MAX = 3.0
SPECIALISTS = {"code": "coder"}
SMALL_MODEL_MAX_PARAMS = 4_500_000_000  # "4B or less": Qwen3-4B and Qwen3.5-4B are 4.0B
MIN_SMALL_MODEL_BITS = 4
MIB = 1024**2
TIGHT_SHARE = 0.05  # spare under this share of the budget ...
TIGHT_MIN_BYTES = 256 * MIB  # ... or under this, whichever is larger, is tight
TIGHT_PENALTY = 1.0  # points: about one quant step, so the roomier of two near-equal picks wins


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    quant: QuantFile
    plan: Plan
    speed: float  # typical decode tokens/s
    loss: float  # points lost to the quant
    score: float
    rejected: str | None  # why it cannot be recommended, or None
    too_slow: bool = False  # rejected only because it is under the speed floor
    prior: float = 0.0  # the quality prior the score starts from
    figure: QualityFigure | None = None  # the mode's figure the prior comes from
    tight: bool = False  # fits with little room (see is_tight)


@dataclass(frozen=True)
class Pick:
    spec: ModelSpec
    quant: QuantFile
    use: str
    plan: Plan
    speed: float
    score: float
    reasons: tuple[str, ...]
    below_floor: bool = False  # shown because nothing here reaches the speed floor
    tight: bool = False  # fits with little room (see is_tight)


def typical_speed(p: Plan) -> float:
    """The decode speed a pick is ranked by: the plan's typical figure (measured on this machine
    when it is calibrated)."""
    return max(p.speed.typical, 0.0)


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


MODE_WORDS = {"thinking": "thinking", "non_thinking": "non-thinking"}


def quality_mode(spec: ModelSpec, use: str | None, think: bool | None = None) -> str:
    """The mode a chat with this model runs in, so it is ranked by that mode's figure:
    `think` when given and the model can switch, thinking for `--use reasoning`, else the
    model's default. A model with one mode is always ranked in it."""
    modes = spec.modes()
    if len(modes) == 1:
        return modes[0]
    if think is not None:
        return "thinking" if think else "non_thinking"
    if use == "reasoning":
        return "thinking"
    return spec.default_mode


def quality_prior(spec: ModelSpec, use: str | None,
                  think: bool | None = None) -> tuple[float, QualityFigure]:
    """The prior a candidate is scored from, and the mode's figure it rests on."""
    figure = spec.quality_in(quality_mode(spec, use, think))
    if use is not None and use in spec.quality_for:
        return spec.quality_for[use], figure
    return figure.score, figure


def describe_prior(spec: ModelSpec, use: str, prior: float, figure: QualityFigure) -> str:
    """'quality prior 29.7 for chat: published MMLU-Pro, non-thinking (the model's default)'."""
    mode = MODE_WORDS.get(figure.mode, figure.mode)
    if len(spec.modes()) == 1:
        mode += " (its only mode)"
    elif figure.mode == spec.default_mode:
        mode += " (the model's default)"
    else:
        mode += " (not the model's default)"
    basis = "published MMLU-Pro" if figure.published else figure.basis
    if use in spec.quality_for:
        return (f"quality prior {prior:.1f} for {use}: the {use}-specialist figure "
                f"(general {figure.score:.1f}, {basis}, {mode})")
    return f"quality prior {prior:.1f} for {use}: {basis}, {mode}"


def _placement(p: Plan) -> str:
    workers = p.used_workers
    if workers:
        local = p.n_gpu_layers - sum(d.layers for d in workers)
        here = p.n_layers + 1 - p.n_gpu_layers + local
        return (f"{sum(d.layers for d in workers)} of {p.n_layers + 1} layers on "
                f"{len(workers)} worker{'s' if len(workers) > 1 else ''}, {here} here")
    if not p.devices:
        return "on the CPU"
    offloaded = p.n_gpu_layers
    total = p.n_layers + 1
    where = "unified memory" if p.unified_pool else "VRAM"
    if p.moe_cpu_layers:
        return (f"experts of {p.moe_cpu_layers} of {p.n_layers} layers in RAM, everything else "
                f"in {where}")
    if offloaded >= total:
        return f"entirely in {where}"
    return f"{offloaded} of {total} layers in {where}, the rest on the CPU"


def _spare(p: Plan) -> int:
    spare = [d.budget_bytes - d.bytes for d in p.devices] or [p.host.budget_bytes - p.host.bytes]
    if p.devices and not p.unified_pool:
        spare.append(p.host.budget_bytes - p.host.bytes)
    return min(spare)


def _tight_at(spare: int, budget: int) -> bool:
    return spare < max(TIGHT_SHARE * budget, TIGHT_MIN_BYTES)


def is_tight(p: Plan) -> bool:
    """Whether a fitting plan leaves less than max(5 % of the budget, 256 MiB) spare where
    running out hurts: the host's RAM (on a unified machine, the whole pool), and a GPU that
    holds the whole model. A partly offloaded plan fills its GPUs by design (the budget keeps
    llama.cpp's 1 GiB margin, and one layer fewer makes room), so those are not counted; nor are
    workers, which a plan across machines fills the same way (each keeps its own margin), and
    what they hold is not in this machine's pool."""
    if not p.fits:
        return False
    local = [d for d in p.devices if d.worker is None]
    device_bytes = sum(d.bytes for d in local)
    host_budget = p.host.budget_bytes + (device_bytes if p.unified_pool else 0)
    if _tight_at(p.host.budget_bytes - p.host.bytes, host_budget):
        return True
    on_workers = any(d.layers for d in p.devices if d.worker is not None)
    whole = local and p.n_gpu_layers >= p.n_layers + 1 and not p.moe_cpu_layers \
        and not on_workers
    return bool(whole) and any(_tight_at(d.budget_bytes - d.bytes, d.budget_bytes)
                               for d in local)


def _ctx_label(ctx: int) -> str:
    return f"{ctx // 1024}K" if ctx % 1024 == 0 else str(ctx)


def _consider(catalog: Catalog, spec: ModelSpec, quant: str, hw: Hardware, budget: Budget,
              ctx: int, min_speed: float, use: str, think: bool | None = None,
              calibration: SpeedCalibration | None = None) -> Candidate:
    qf = quant_file(spec, quant)
    p = plan(shape_from_catalog(spec, qf), hw, budget, Options(ctx=ctx), find_usable_ctx=False,
             calibration=calibration)
    speed = typical_speed(p)
    loss = quant_loss(catalog, spec, quant)
    bonus = 0.0
    if speed > min_speed > 0:
        bonus = min(SPEED_BONUS_MAX, math.log2(speed / min_speed))
    prior, figure = quality_prior(spec, use, think)
    score = prior - loss + bonus
    tight = is_tight(p)
    if tight:
        score -= TIGHT_PENALTY
    rejected = None
    too_slow = False
    if ctx > spec.context_max:
        rejected = f"supports at most {_ctx_label(spec.context_max)} context"
    elif not p.fits:
        need = p.host.bytes + sum(d.bytes for d in p.devices)
        rejected = f"does not fit (needs {format_bytes(need)} at {_ctx_label(ctx)} context)"
    elif speed < min_speed:
        rejected = (f"would run at about {speed:.0f} tok/s ({_placement(p)}), under the "
                    f"{min_speed:g} tok/s floor")
        too_slow = True
    return Candidate(spec, qf, p, speed, loss, score, rejected, too_slow, prior, figure,
                     tight)


@dataclass(frozen=True)
class QuantChoice:
    """The quant of one model to run on this machine, and why (see the module docstring)."""

    candidate: Candidate  # the chosen quant, planned; `rejected` says why recommend skips it
    reason: str  # one line for a person: why this quant
    fits: bool  # False: no quant fits; the quant is the usual default
    below_floor: bool  # it runs, but under the speed floor
    ranked: tuple[str, ...]  # quants by preference here (complete with `every=True`)

    @property
    def quant(self) -> str:
        return self.candidate.quant.quant


def _use_for(spec: ModelSpec, use: str | None) -> str:
    """The use case a model is scored for: the one asked when it has it, else its first."""
    if use in USES and use in spec.use:
        return use
    return "chat" if "chat" in spec.use else next((u for u in spec.use if u in USES), "chat")


def _bits(catalog: Catalog, quant: str) -> int:
    info = catalog.quant_table.get(quant)
    return info.bits if info is not None else MIN_SMALL_MODEL_BITS


def choose_quant(catalog: Catalog, spec: ModelSpec, hw: Hardware, budget: Budget, *,
                 use: str | None = None, ctx: int | None = None,
                 min_speed: float = DEFAULT_MIN_SPEED, every: bool = False,
                 think: bool | None = None,
                 calibration: SpeedCalibration | None = None) -> QuantChoice:
    """The quant of `spec` to run here: the one decision `recommend`, `fit`, `pull` and `chat`
    share (see the module docstring for the rule).

    Quants are planned from the smallest file up (the file's size, not the quant's nominal
    bits: a listed size may include a projector), so memory only grows and speed only falls
    along the way; the choice needs only the quants up to the first one that is too slow once a
    4-bit one is among them. `every` plans every quant that fits, for `ranked`.
    `calibration`: this machine's measured speed (only when `hw` is this machine).
    """
    use = _use_for(spec, use)
    model_ctx = ctx if ctx is not None else min(DEFAULT_CTX[use], spec.context_max)
    fitting: list[Candidate] = []
    by_size = sorted(spec.quants, key=lambda q: (quant_file(spec, q).size_bytes, q))
    for quant in by_size:  # smallest file first: once one does not fit, larger ones do not,
        candidate = _consider(catalog, spec, quant, hw, budget, model_ctx, min_speed, use,
                              think, calibration)
        if not candidate.plan.fits:
            break
        fitting.append(candidate)
        if not every and candidate.speed < min_speed and any(  # ... nor run faster
                _bits(catalog, c.quant.quant) >= MIN_SMALL_MODEL_BITS for c in fitting):
            break
    if not fitting:
        usual = DEFAULT_HUB_QUANT if DEFAULT_HUB_QUANT in spec.quants else \
            spec.quants[len(spec.quants) // 2]
        chosen = _consider(catalog, spec, usual, hw, budget, model_ctx, min_speed, use,
                           think, calibration)
        return QuantChoice(chosen, f"no quant of {spec.id} fits this machine's memory at "
                                   f"{_ctx_label(model_ctx)} context; {usual} is the usual default",
                           False, chosen.speed < min_speed, (usual,))
    fast = [c for c in fitting if c.speed >= min_speed]
    best_fast = max(fast, key=lambda c: c.score) if fast else None
    four_up = [c for c in fitting if _bits(catalog, c.quant.quant) >= MIN_SMALL_MODEL_BITS]
    small = spec.params_total <= SMALL_MODEL_MAX_PARAMS
    if best_fast is not None and not (
            small and four_up and _bits(catalog, best_fast.quant.quant) < MIN_SMALL_MODEL_BITS):
        chosen = best_fast
        reason = "the one `qwen recommend` picks for this machine"
    else:
        pool = four_up or fitting
        chosen = max(pool, key=lambda c: (c.speed, c.score))
        reason = f"about {chosen.speed:.0f} tok/s here, under the {min_speed:g} tok/s floor"
        if best_fast is not None:
            reason += (f"; {best_fast.quant.quant} would reach it, but a model of "
                       f"{spec.params_total / 1e9:.1f}B loses too much below "
                       f"{MIN_SMALL_MODEL_BITS} bits")
        elif pool is four_up:
            reason += f"; the fastest {MIN_SMALL_MODEL_BITS}-bit-or-better quant that fits"
    others = sorted((c for c in fitting if c is not chosen),
                    key=lambda c: (c.speed >= min_speed, c.score), reverse=True)
    ranked = (chosen.quant.quant, *(c.quant.quant for c in others),
              *(q for q in spec.quants if q not in {c.quant.quant for c in fitting}))
    return QuantChoice(chosen, reason, True, chosen.speed < min_speed, ranked)


@dataclass(frozen=True)
class RefQuant:
    """The quant a MODEL reference means here: given, chosen, or none (a file is named)."""

    quant: str | None
    reason: str | None = None  # set when the quant was chosen, not given
    over_budget: bool = False  # chosen although nothing fits
    below_floor: bool = False
    ranked: tuple[str, ...] = ()  # preference among downloads of the model


def default_quant(ref: ModelRef, catalog: Catalog,
                  machine: Callable[[], tuple[Hardware, Budget]], *,
                  calibrate: Calibrate | None = None) -> RefQuant:
    """The quant `ref` means on this machine. The machine (and its calibration, through
    `calibrate`) is asked only when the choice is ours to make (a catalog name without a
    quant), so that fit, pull, chat, serve and bench choose alike. A Hub repository without a
    tag means Q4_K_M, as llama.cpp's `-hf` does; a named file or a local path needs no
    quant."""
    if isinstance(ref, CatalogRef):
        spec, quant = resolve_catalog_ref(catalog, ref)  # UsageError for unknown names
        if quant is not None:
            return RefQuant(quant, ranked=(quant,))
        hw, budget = machine()
        calibration = calibrate(hw) if calibrate is not None else None
        choice = choose_quant(catalog, spec, hw, budget, every=True, calibration=calibration)
        return RefQuant(choice.quant, choice.reason, not choice.fits, choice.below_floor,
                        choice.ranked)
    if isinstance(ref, HubRef) and ref.filename is None:
        quant = ref.quant if ref.quant_given and ref.quant else DEFAULT_HUB_QUANT
        return RefQuant(quant, ranked=(quant,))
    return RefQuant(None)


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
    if best.tight:
        reasons[0] += (f"; tight: less than {TIGHT_SHARE:.0%} of the budget or "
                       f"{format_bytes(TIGHT_MIN_BYTES)} spare, so a busier machine may swap")
    if best.too_slow:
        reasons[0] += (f", under the {min_speed:g} tok/s floor: no model reaches it on this "
                       "machine")
    info = catalog.quant_table.get(best.quant.quant)
    kld = f"KLD {quant_kld(catalog, best.quant.quant):.3f} on Llama-3-8B"
    if info is None or info.loss_assumed:
        kld += ", assumed"
    figure = best.figure or best.spec.quality_in(best.spec.default_mode)
    reasons.append(
        f"{describe_prior(best.spec, use, best.prior, figure)}; {best.quant.quant} "
        f"costs about {best.loss:.1f} points ({kld})")
    if _is_specialist(best.spec, use):
        reasons.append(f"a {use}-specialised model: preferred for --use {use}")
    # The strongest model that did not make it, and why: the trade-off a person wants to see.
    better = [c for c in others if c.rejected and c.spec.id != best.spec.id
              and c.prior > best.prior]
    if better:
        nearest = min(better, key=lambda c: (c.prior, -c.score))
        reasons.append(f"{nearest.spec.id} ({nearest.quant.quant}) {nearest.rejected}")
    if best.quant.approx:
        what = "a rounded listing figure" if best.quant.listed else "an estimate"
        reasons.append(f"file size from the catalog is {what}; `qwen fit` reads the exact "
                       "header")
    return tuple(reasons)


def rank(catalog: Catalog, hw: Hardware, budget: Budget, *, use: str = "chat",
         ctx: int | None = None, min_speed: float | None = None,
         top: int = 5, think: bool | None = None,
         calibration: SpeedCalibration | None = None) -> list[Pick]:
    """The best `top` picks, best first: one per model, at the quant `choose_quant` picks.

    `think` ranks hybrid models by their thinking (True) or non-thinking (False) figure; None:
    the mode the chat runs by default (thinking for `reasoning`). A floor the person set
    (`min_speed`) is strict. The default floor is not: when no model
    reaches it here, the best of what runs is shown, each pick saying it is under the floor.
    """
    if use not in USES:
        raise ValueError(f"unknown use {use!r}")
    strict = min_speed is not None
    min_speed = DEFAULT_MIN_SPEED if min_speed is None else min_speed
    choices = [choose_quant(catalog, spec, hw, budget, use=use, ctx=ctx, min_speed=min_speed,
                            think=think, calibration=calibration)
               for spec in catalog.models(use)]
    accepted = [c.candidate for c in choices if c.candidate.rejected is None]
    below_floor = not accepted and not strict
    if below_floor:  # nothing reaches the floor: the best of what runs, said plainly
        accepted = [c.candidate for c in choices if c.candidate.too_slow]
    ordered = sorted(accepted, key=_tier_key(use), reverse=True)[:top]
    # Rejections worth citing: each model that has no acceptable quant, at its chosen one.
    rejected = [c.candidate for c in choices if c.candidate.rejected is not None
                and not (below_floor and c.candidate.too_slow)]
    return [Pick(c.spec, c.quant, use,
                 plan_for(c.spec, c.quant, hw, budget, c.plan.ctx, calibration), c.speed,
                 round(c.score, 2), _reasons(c, rejected, catalog, use, min_speed),
                 below_floor, c.tight) for c in ordered]


def workers_pick(catalog: Catalog, hw: Hardware, budget: Budget, *, use: str = "chat",
                 ctx: int | None = None, min_speed: float | None = None,
                 think: bool | None = None, calibration: SpeedCalibration | None = None,
                 first: Pick | None = None) -> Pick | None:
    """What the workers add: the best (model, quant) that runs across them, reaches the speed
    floor and does not fit this machine alone, ranked as `rank` ranks; None without workers,
    when nothing needs them, or when it is `first` (rank's first pick) already.

    `rank` puts it first only when it is the best overall; when a pick that fits this machine
    alone scores higher (a smaller quant of the same model runs faster), the person still sees
    what the cluster would buy, and at what speed."""
    if not hw.workers:
        return None
    from dataclasses import replace

    from qwencli.hardware.budget import plan_budget

    alone_hw = replace(hw, workers=())
    alone_budget = plan_budget(alone_hw)
    floor = DEFAULT_MIN_SPEED if min_speed is None else min_speed
    best: Candidate | None = None
    key = _tier_key(use)
    for spec in catalog.models(use):
        model_use = _use_for(spec, use)
        model_ctx = ctx if ctx is not None else min(DEFAULT_CTX[model_use], spec.context_max)
        for quant in spec.quants:
            candidate = _consider(catalog, spec, quant, hw, budget, model_ctx, floor, model_use,
                                  think, calibration)
            if candidate.rejected is not None or not candidate.plan.used_workers:
                continue
            if best is not None and key(candidate) <= key(best):
                continue
            alone = plan(shape_from_catalog(spec, candidate.quant), alone_hw, alone_budget,
                         Options(ctx=model_ctx), find_usable_ctx=False)
            if not alone.fits:
                best = candidate
    if best is None or (first is not None and (best.spec.id, best.quant.quant) == (
            first.spec.id, first.quant.quant)):
        return None
    reasons = _reasons(best, (), catalog, use, floor)
    return Pick(best.spec, best.quant, use,
                plan_for(best.spec, best.quant, hw, budget, best.plan.ctx, calibration),
                best.speed, round(best.score, 2),
                (*reasons, "does not fit this machine alone at this context: it needs the "
                           "workers"), False, best.tight)


def plan_for(spec: ModelSpec, qf: QuantFile, hw: Hardware, budget: Budget, ctx: int,
             calibration: SpeedCalibration | None = None) -> Plan:
    """The full plan of a catalog model at a quant: what `qwen fit MODEL:QUANT` shows."""
    return plan(shape_from_catalog(spec, qf), hw, budget, Options(ctx=ctx),
                calibration=calibration)
