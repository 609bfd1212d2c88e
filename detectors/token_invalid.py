"""`token.invalid`: a burst of refused tokens from one source (forgery, probing, key guessing).

Counts, per (tenant, client IP), the access events whose token the validator refused for what it
*is* (malformed, forged, wrong key or issuer, bad claims) — not for when it was used: expiry is
`token.expired_use`. A burst is `threshold` refusals inside `window_seconds` of event time. One
signal per source and window; a redelivered event (same id) is not counted twice.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.state import StateStore
from ingest.events import AccessRecord, Event

NOT_FORGERY = frozenset({"ok", "expired", "not_yet_valid"})


@dataclass(slots=True)
class _Burst:
    seen: list[tuple[float, str, str]] = field(default_factory=list)  # (ts, event_id, verdict), by ts
    last_signal: float = float("-inf")


class InvalidTokenBurstDetector:
    name: ClassVar[str] = "token.invalid"
    settings_key: ClassVar[str] = "token_invalid"
    partition_by: ClassVar[tuple[str, ...]] = ("ip",)
    reads: ClassVar[tuple[str, ...]] = ("access.invalid",)

    def __init__(self, *, threshold: int = 20, window_seconds: float = 60.0) -> None:
        self.threshold = threshold
        self.window_seconds = window_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> InvalidTokenBurstDetector:
        return cls(threshold=section.threshold, window_seconds=float(section.window_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info = event.token
        rec = event.record
        if info is None or info.verdict in NOT_FORGERY or not isinstance(rec, AccessRecord):
            return []
        key = ("invalid", rec.tenant, rec.client_ip)
        burst: _Burst | None = state.get(key)
        if burst is None:
            burst = _Burst()
        if any(eid == rec.event_id for _, eid, _ in burst.seen):
            return []  # a redelivery
        bisect.insort(burst.seen, (event.ts, rec.event_id, info.verdict))
        newest = burst.seen[-1][0]
        cut = bisect.bisect_left(burst.seen, (newest - self.window_seconds,))
        del burst.seen[:cut]
        del burst.seen[: max(0, len(burst.seen) - 4 * self.threshold)]  # bounded per source
        fire = len(burst.seen) >= self.threshold and newest - burst.last_signal >= self.window_seconds
        if fire:
            burst.last_signal = newest
        state.set(key, burst, expires_at=newest + self.window_seconds)
        if not fire:
            return []
        verdicts = Counter(v for _, _, v in burst.seen)
        span = burst.seen[-1][0] - burst.seen[0][0]
        top = ", ".join(f"{v} ×{n}" for v, n in verdicts.most_common(3))
        return [Signal(
            type=self.name, tenant=rec.tenant, ts=newest,
            entities=(Entity("ip", rec.client_ip),),
            strength=min(1.0, 0.6 + 0.1 * len(burst.seen) / self.threshold),
            reasons=(f"{len(burst.seen)} refused tokens from {rec.client_ip} in {span:.0f}s "
                     f"(threshold {self.threshold} in {self.window_seconds:.0f}s)",
                     f"verdicts: {top}"),
            event_ids=tuple(eid for _, eid, _ in burst.seen[: self.threshold]),
            figures={"refused": len(burst.seen), "window_seconds": self.window_seconds,
                     "verdicts": dict(verdicts)})]
