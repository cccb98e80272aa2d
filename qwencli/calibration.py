"""What `qwen bench` measured on this machine, and how estimates use it.

A bench becomes a record of factors: for the device that ran the whole model (the host, or
one GPU), measured time / the uncalibrated estimate's time, for decoding (weights and per-layer
cost), reading the KV cache at a depth, prompt processing and attention over a cache
(`fit.DeviceFactors`). The records are kept in the cache directory (`calibration.json`) with the
machine's fingerprint: CPU model, physical cores and threads used, RAM, GPU names and drivers,
llama.cpp version and backend. A fingerprint that no longer matches means "not calibrated".

Several benches combine by the median of each factor, so one noisy run cannot move the
estimate much; a record more than `OUTLIER` away from the median is reported. `fit.plan` takes
the combined `SpeedCalibration`; it never reads this file itself (the CLI loads it, for the real
machine only, never for a what-if machine).

The file is untrusted input: bounded in size, every field checked; a file that does not pass
gives a warning and the uncalibrated estimate, never a crash.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.fit import DeviceFactors, SpeedCalibration, speed_parts

if TYPE_CHECKING:
    from qwencli.bench import BenchResult
    from qwencli.hardware.model import Hardware

FILE_NAME = "calibration.json"
FORMAT = 1  # the file's layout
SPEED_MODEL = 2  # the estimate the factors are relative to: a new one invalidates them
MAX_FILE_BYTES = 1_000_000
MAX_RECORDS = 20  # the newest benches kept
OUTLIER = 0.25  # a record this far from the median (relative) is reported
# A factor outside this is a broken measurement, not a machine (a busy machine with spinning
# threads can be 100x slower than its estimate, so the range is wide).
FACTOR_RANGE = (0.001, 1000.0)
FACTORS = ("decode", "kv", "prompt", "attention")


class CalibrationError(ValueError):
    """The stored calibration cannot be used (the message says why)."""


def calibration_path() -> Path:
    from qwencli.paths import cache_dir

    return cache_dir() / FILE_NAME


def fingerprint_of(hw: Hardware, threads: int) -> dict[str, Any]:
    """What makes this machine's speed this machine's: a change means "not calibrated"."""
    return {
        "cpu": hw.cpu.model,
        "physical_cores": hw.cpu.physical_cores,
        "threads": threads,
        "ram_gib": round(hw.memory.total_bytes / 1024**3),
        "gpus": [f"{g.name} (driver {g.driver_version or 'unknown'})" for g in hw.gpus],
        "llama_cpp": f"{hw.llama_cpp.version or 'unknown'} {hw.llama_cpp.backend}",
    }


@dataclass(frozen=True)
class Record:
    """One bench, as factors for the device that ran the model."""

    date: str
    model: str
    quant: str | None
    device: str  # "host" or the GPU's name
    factors: Mapping[str, float]  # FACTORS -> measured / estimated time (missing: not measured)
    spread: float  # relative run-to-run spread of its figures
    measured: Mapping[str, float]  # "pp512" -> tok/s, for people reading the file

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date, "model": self.model, "quant": self.quant,
                "device": self.device, "factors": dict(self.factors), "spread": self.spread,
                "measured": dict(self.measured)}


@dataclass(frozen=True)
class Calibration:
    """This machine's stored calibration, combined."""

    path: Path
    records: tuple[Record, ...]
    speed: SpeedCalibration | None  # None: nothing usable
    outliers: tuple[str, ...]  # one line per record far from the median


def _clamp_ok(value: float) -> bool:
    return math.isfinite(value) and FACTOR_RANGE[0] <= value <= FACTOR_RANGE[1]


def record_from(result: BenchResult, hw: Hardware) -> Record:
    """The factors one bench measured. CalibrationError (a sentence) when there is nothing
    to learn: the model was split over devices (no one device's figure can be told apart), or
    nothing usable was measured at an empty context."""
    tg0, pp0 = result.find("decode"), result.find("prompt")
    if tg0 is None or pp0 is None or tg0.median <= 0 or pp0.median <= 0:
        raise CalibrationError("nothing was measured at an empty context")
    n_prompt = pp0.tokens
    base = speed_parts(result.shape, hw, result.plan, 0, n_prompt // 2)
    if base.device is None:
        raise CalibrationError("the model was split over devices, so no one device's speed "
                               "can be told apart; bench a model that fits on one device")
    if base.decode_s <= 0 or base.prompt_s <= 0:
        raise CalibrationError("the estimate has no time to compare with")
    factors = {"decode": (1 / tg0.median) / base.decode_s,
               "prompt": (1 / pp0.median) / (base.prompt_s + base.attention_s)}
    deep = [m.depth for m in result.measures if m.depth > 0]
    if deep:
        depth = max(deep)
        tg_d, pp_d = result.find("decode", depth), result.find("prompt", depth)
        at = speed_parts(result.shape, hw, result.plan, depth, depth + n_prompt // 2)
        if tg_d is not None and tg_d.median > 0 and at.kv_s > 0:
            factors["kv"] = (1 / tg_d.median - 1 / tg0.median) / at.kv_s
        extra = at.attention_s - base.attention_s
        if pp_d is not None and pp_d.median > 0 and extra > 0:
            factors["attention"] = (1 / pp_d.median - 1 / pp0.median) / extra
    factors = {name: value for name, value in factors.items() if _clamp_ok(value)}
    if "decode" not in factors or "prompt" not in factors:
        raise CalibrationError("the measured speed is too far from any estimate to be a "
                               "measurement (was the machine busy?)")
    spreads = [m.spread for m in result.measures if len(m.runs) > 1]
    return Record(date=result.date, model=f"{result.model}", quant=result.quant,
                  device=base.device, factors=factors,
                  spread=statistics.median(spreads) if spreads else 0.0,
                  measured={m.test: round(m.median, 3) for m in result.measures})


def combine(records: Sequence[Record], path: Path) -> Calibration:
    """Medians per device and factor; records far from the median are reported."""
    devices: dict[str, DeviceFactors] = {}
    outliers: list[str] = []
    for device in sorted({r.device for r in records}):
        mine = [r for r in records if r.device == device]
        medians: dict[str, float] = {}
        for name in FACTORS:
            values = [r.factors[name] for r in mine if name in r.factors]
            if values:
                medians[name] = statistics.median(values)
        if "decode" not in medians or "prompt" not in medians:
            continue
        devices[device] = DeviceFactors(**medians)
        if len(mine) >= 3:  # with two, each is as far from the median as the other
            for r in mine:
                for name in ("decode", "prompt"):
                    off = r.factors[name] / medians[name] - 1
                    if abs(off) > OUTLIER:
                        outliers.append(f"{r.date} {r.model}: {name} {off:+.0%} from the "
                                        f"median of {len(mine)} benches (left to the median)")
    if not devices:
        return Calibration(path, tuple(records), None, tuple(outliers))
    latest = max(records, key=lambda r: r.date)
    day = latest.date[:10]
    label = f"measured on this machine by qwen bench on {day}, {latest.model}"
    if len(records) > 1:
        label += f" (median of {len(records)} benches)"
    spreads = [r.spread for r in records]
    speed = SpeedCalibration(label=label, devices=devices,
                             spread=statistics.median(spreads) if spreads else 0.0)
    return Calibration(path, tuple(records), speed, tuple(outliers))


# ------------------------------------------------------------------------------------------
# The file


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise CalibrationError(f"{what} is not a number")
    return float(value)


def _text(value: Any, what: str, limit: int = 500) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise CalibrationError(f"{what} is not a short text")
    return value


def _parse_record(data: Any) -> Record:
    if not isinstance(data, dict):
        raise CalibrationError("a bench record is not an object")
    factors_in = data.get("factors")
    if not isinstance(factors_in, dict):
        raise CalibrationError("a bench record has no factors")
    factors = {}
    for name, value in factors_in.items():
        if name in FACTORS:
            number = _number(value, f"factor {name!r}")
            if not _clamp_ok(number):
                raise CalibrationError(f"factor {name!r} = {number} is out of range")
            factors[name] = number
    if "decode" not in factors or "prompt" not in factors:
        raise CalibrationError("a bench record lacks its decode or prompt factor")
    measured_in = data.get("measured", {})
    measured = {}
    if isinstance(measured_in, dict):
        for key, value in list(measured_in.items())[:50]:
            if isinstance(key, str) and len(key) <= 50:
                measured[key] = _number(value, f"measured {key!r}")
    quant = data.get("quant")
    spread = _number(data.get("spread", 0.0), "spread")
    return Record(date=_text(data.get("date"), "date", 40),
                  model=_text(data.get("model"), "model"),
                  quant=_text(quant, "quant", 40) if quant is not None else None,
                  device=_text(data.get("device"), "device", 200),
                  factors=factors, spread=min(max(spread, 0.0), 1.0), measured=measured)


def _read(path: Path) -> dict[str, Any] | None:
    """The file's document; None when there is none. CalibrationError when it is unusable."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CalibrationError(f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CalibrationError(f"is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CalibrationError(f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CalibrationError("is not a JSON object")
    if data.get("format") != FORMAT:
        raise CalibrationError(f"has format {data.get('format')!r}, not {FORMAT}")
    return data


def _records_for(data: dict[str, Any] | None, machine: dict[str, Any]) -> list[Record]:
    """The records stored for this machine (none when the fingerprint or the speed model
    changed)."""
    if data is None:
        return []
    benches = data.get("benches")
    if not isinstance(benches, list) or not isinstance(data.get("fingerprint"), dict):
        raise CalibrationError("has no fingerprint or no list of benches")
    if data.get("fingerprint") != machine or data.get("speed_model") != SPEED_MODEL:
        return []
    return [_parse_record(item) for item in benches[-MAX_RECORDS:]]


@dataclass(frozen=True)
class Loaded:
    """The calibration for this machine, or why there is none."""

    calibration: Calibration | None
    warning: str | None = None  # a stored file that could not be used
    stale: bool = False  # a file exists, for another machine or llama.cpp build


def load(hw: Hardware, threads: int, path: Path | None = None) -> Loaded:
    """This machine's calibration. Never raises for a bad file: a warning instead."""
    path = path or calibration_path()
    machine = fingerprint_of(hw, threads)
    try:
        data = _read(path)
        records = _records_for(data, machine)
    except CalibrationError as exc:
        return Loaded(None, f"the stored calibration {path} {exc}: using the uncalibrated "
                            "estimate (`qwen bench` measures again, `qwen bench --reset` "
                            "removes it)")
    if not records:
        return Loaded(None, stale=data is not None)
    combined = combine(records, path)
    return Loaded(combined if combined.speed is not None else None)


def store(record: Record, hw: Hardware, threads: int, path: Path | None = None) -> Calibration:
    """Add one bench to this machine's calibration (a changed fingerprint starts afresh; an
    unusable file is replaced) and write it atomically."""
    from qwencli.errors import os_error
    from qwencli.fileio import atomic_write

    path = path or calibration_path()
    machine = fingerprint_of(hw, threads)
    try:
        records = _records_for(_read(path), machine)
    except CalibrationError:
        records = []
    records = [*records, record][-MAX_RECORDS:]
    document = {"format": FORMAT, "speed_model": SPEED_MODEL, "fingerprint": machine,
                "benches": [r.as_dict() for r in records]}
    try:
        atomic_write(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise os_error(exc, path) from None
    return combine(records, path)


def reset(path: Path | None = None) -> bool:
    """Forget this machine's calibration; False when there was none."""
    from qwencli.errors import os_error

    path = path or calibration_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise os_error(exc, path, "remove") from None
    return True
