"""`replay.nonce`: a one-time nonce, or a single-use token, presented twice inside its window.

The nonce is scoped by the proof-of-possession key (`cnf.jkt`) when the token has one, else by the
token fingerprint, else by tenant (RFC 9449 §11.1: a server tracks nonces per key, not globally).
A second sighting of the *same* record (same event id) is a redelivery, never a replay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from detectors.base import Entity, Signal, principal_entities
from detectors.state import StateStore
from ingest.events import AccessRecord, Event


@dataclass(slots=True)
class _Sighting:
    """The first use of a one-time value, and the ids of every later use already reported."""

    event_id: str
    ts: float
    ip: str
    later: tuple[str, ...] = ()


_MAX_LATER = 64  # beyond this many reuses of one value, alert grouping still dedupes by event ids


def _short(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class NonceReplayDetector:
    name: ClassVar[str] = "replay.nonce"
    settings_key: ClassVar[str] = "replay_nonce"
    # nonces by value, single-use tokens by principal; in the order `observe` raises them (replay --jobs
    # merges the streams' signals back in this order)
    partition_by: ClassVar[tuple[str, ...]] = ("nonce", "principal")
    reads: ClassVar[tuple[str, ...]] = ("access", "access.valid", "access.invalid")

    def __init__(self, *, window_seconds: float = 300.0, max_evidence: int = 20, nonces: bool = True,
                 single_use_tokens: bool = True) -> None:
        self.window_seconds = window_seconds
        self.max_evidence = max_evidence
        self.nonces = nonces  # request nonces (keyed by tenant and nonce)
        self.single_use_tokens = single_use_tokens  # `use: once` tokens (keyed by principal)

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> NonceReplayDetector:
        window = section.window_seconds or tokens.nonce_window_seconds
        return cls(window_seconds=float(window), max_evidence=section.max_evidence)

    @classmethod
    def for_partition(cls, section: Any, tokens: Any, kind: str) -> NonceReplayDetector:
        """On the principal stream: single-use tokens; on the nonce stream: nonces."""
        d = cls.from_config(section, tokens)
        d.nonces, d.single_use_tokens = kind == "nonce", kind == "principal"
        return d

    def _keys(self, event: Event, rec: AccessRecord) -> list[tuple[str, str, str]]:
        """(state key, what was replayed, scope description) for each one-time value in the event."""
        info = event.token
        keys = []
        if rec.nonce and self.nonces:
            if info is not None and info.cnf_jkt:
                scope = f"jkt:{info.cnf_jkt}"
            elif info is not None:
                scope = f"tfp:{info.tfp}"
            else:
                scope = f"tenant:{rec.tenant}"
            keys.append((f"n|{scope}|{rec.nonce}", "nonce", scope))
        if (self.single_use_tokens and info is not None and info.use == "once"
                and info.verdict in ("ok", "expired")):
            keys.append((f"t|{info.tfp}", "single-use token", f"tfp:{info.tfp}"))
        return keys

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if not isinstance(rec, AccessRecord):
            return []
        signals = []
        for key, what, scope in self._keys(event, rec):
            first: _Sighting | None = state.get(key)
            if first is None:
                state.set(key, _Sighting(rec.event_id, event.ts, rec.client_ip),
                          expires_at=event.ts + self.window_seconds)
                continue
            if rec.event_id == first.event_id or rec.event_id in first.later:
                continue  # the same record again: a redelivery, not a replay
            gap = abs(event.ts - first.ts)
            if gap > self.window_seconds:
                continue
            signals.append(self._signal(event, first, what, scope, gap))
            if event.ts < first.ts:  # out of order: the earliest sighting becomes the first
                first = _Sighting(rec.event_id, event.ts, rec.client_ip, (first.event_id, *first.later))
                state.set(key, first, expires_at=event.ts + self.window_seconds)
            elif len(first.later) < _MAX_LATER:
                first.later = (*first.later, rec.event_id)
        return signals

    def _signal(self, event: Event, first: _Sighting, what: str, scope: str, gap: float) -> Signal:
        rec = cast(AccessRecord, event.record)  # observe took access records only
        info = event.token
        entities = principal_entities(event) or (Entity("ip", rec.client_ip),)
        reasons = [f"{what} presented again {gap:.1f}s after its first use "
                   f"(window {self.window_seconds:.0f}s)"]
        if first.ip != rec.client_ip:
            reasons.append(f"second use came from a different IP ({first.ip} then {rec.client_ip})")
        else:
            reasons.append(f"both uses from {rec.client_ip}")
        reasons.append(f"nonce scope: {scope.split(':', 1)[0]}")
        pair = sorted([(first.ts, first.event_id), (event.ts, rec.event_id)])
        figures: dict[str, Any] = {"gap_seconds": round(gap, 3), "window_seconds": self.window_seconds,
                                   "scope": scope.split(":", 1)[0]}
        if rec.nonce:
            figures["nonce_fp"] = _short(rec.nonce)
        return Signal(type=self.name, tenant=rec.tenant, ts=max(first.ts, event.ts), entities=entities,
                      strength=0.9 if first.ip == rec.client_ip else 0.97, reasons=tuple(reasons),
                      event_ids=tuple(eid for _, eid in pair),
                      token_fps=(info.tfp,) if info is not None else (), figures=figures)
