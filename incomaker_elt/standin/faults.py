"""Faults on demand: deterministic from (seed, request number), or asked for per request.

A client's retry logic is only tested if the failures are reproducible: the decision for the n-th
request is a pure function of (seed, n), so the same run fails the same way every time.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_STATUSES = {"429": 429, "500": 500, "502": 502, "503": 503}
FAULT_KINDS = (*ERROR_STATUSES, "truncate", "slow", "drift")
FAULT_HEADER = "X-Standin-Fault"
DRIFT_FIELD = "loyaltyTier"
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(h: int) -> float:
    return (h >> 11) / float(1 << 53)


@dataclass(frozen=True)
class Faults:
    """rate: share of requests that fail, each with one of `kinds`; `slow` waits slow_seconds;
    drift: every record of every response carries an extra field (schema drift)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "502", "503", "truncate")
    slow_seconds: float = 5.0
    retry_after: int = 1
    drift: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"unknown fault kinds {unknown or '(none given)'}; "
                f"use some of {', '.join(FAULT_KINDS)}"
            )
        if self.slow_seconds < 0 or self.retry_after < 0:
            raise ValueError("slow_seconds and retry_after must not be negative")

    def decide(self, n: int) -> str | None:
        """The fault for the n-th request (0-based), or None."""
        if self.rate <= 0:
            return None
        h1 = _splitmix64(_splitmix64(self.seed & _MASK) ^ n)
        if _uniform(h1) >= self.rate:
            return None
        return self.kinds[int(_uniform(_splitmix64(h1)) * len(self.kinds))]


@dataclass(frozen=True)
class FaultPlan:
    """What to do to one response."""

    status: int | None = None  # an error status to answer with instead
    truncate: bool = False
    delay: float = 0.0
    drift: bool = False


def parse_header(value: str, faults: Faults) -> FaultPlan:
    """`X-Standin-Fault: 503`, `slow=2.5`, `drift`, or several joined by commas (or one of the
    kinds `faults` decides on)."""
    status, truncate, delay, drift = None, False, 0.0, faults.drift
    for part in (p.strip() for p in value.split(",")):
        name, _, arg = part.partition("=")
        if name in ERROR_STATUSES:
            status = ERROR_STATUSES[name]
        elif name == "truncate":
            truncate = True
        elif name == "drift":
            drift = True
        elif name == "slow":
            try:
                delay = float(arg) if arg else faults.slow_seconds
            except ValueError:
                raise ValueError(f"slow needs seconds, e.g. slow=2.5, got {part!r}") from None
            if delay < 0:
                raise ValueError(f"slow needs non-negative seconds, got {part!r}")
        else:
            raise ValueError(
                f"unknown fault {part!r}; use 429, 500, 502, 503, truncate, slow=<seconds>, drift"
            )
    return FaultPlan(status=status, truncate=truncate, delay=delay, drift=drift)
