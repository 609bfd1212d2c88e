"""Dynamic risk per entity: a noisy-OR of recent signals, each decaying with a half-life on event time.

    risk(t) = 100 · (1 − Π_i (1 − w_i · s_i · 2^(−(t − t_i)/half_life)))

A signal's contribution is weight × strength; the top contributions are kept as reasons. Levels and
actions come from two thresholds (`step_up_at`, `deny_at`). The result is written to the risk table,
so the gateway's look-up is a read, never this computation. Risk also falls while an entity is quiet:
`refresh(at)` (called by the pipeline as the watermark passes) re-scores the entities it has reported
and returns a new row for each whose score moved by a point or more, down to a last row of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.base import Entity, Signal

# How much one signal of each type counts (0..1); unknown types count DEFAULT_WEIGHT.
WEIGHTS: dict[str, float] = {
    "replay.nonce": 0.6, "replay.token_context": 0.7, "replay.refresh_reuse": 0.7,
    "token.revoked_use": 0.6, "token.expired_use": 0.3, "token.cross_tenant": 0.8,
    "token.jti_collision": 0.8, "token.invalid": 0.4, "token.unencrypted": 0.1,
    "traffic.rate_limit": 0.3, "traffic.ip_not_allowed": 0.4, "anomaly.behaviour": 0.4,
    # over a configured LLM budget: 0.8 x its strength (>= 0.95) = risk 76, `deny` on its own (deny_at 75)
    "traffic.llm_budget": 0.8,
}
DEFAULT_WEIGHT = 0.3
_MAX_CONTRIBUTIONS = 32  # per entity; the weakest (after decay) are dropped first
_NEGLIGIBLE = 0.005  # a contribution decayed below this counts for nothing (in `score` and in `expire`)
# Signals can be somewhat older than the watermark (a behaviour window is scored when the watermark has
# passed its end): `expire` keeps what might still count for a signal up to this much older.
_EXPIRY_MARGIN_SECONDS = 3600.0
_REFRESH_STEP = 1.0  # points: a decayed score is re-reported once it moved at least this much


@dataclass(frozen=True, slots=True)
class RiskUpdate:
    kind: str
    value: str
    tenant: str
    score: float
    level: str
    action: str
    reasons: tuple[str, ...]
    ts: float  # event time the score was computed at


@dataclass(slots=True)
class _Contribution:
    type: str
    amount: float
    ts: float
    reason: str


class RiskEngine:
    def __init__(self, *, half_life_seconds: float = 1800.0, step_up_at: float = 40.0,
                 deny_at: float = 75.0, top_reasons: int = 5,
                 weights: dict[str, float] | None = None) -> None:
        self.half_life_seconds = half_life_seconds
        self.step_up_at = step_up_at
        self.deny_at = deny_at
        self.top_reasons = top_reasons
        self.weights = dict(WEIGHTS if weights is None else weights)
        self._entities: dict[tuple[str, str, str], list[_Contribution]] = {}
        # What the risk table holds per entity, as (score, level, ts) of the last update returned.
        self._reported: dict[tuple[str, str, str], tuple[float, str, float]] = {}

    def _decayed(self, c: _Contribution, at: float) -> float:
        return float(c.amount * 0.5 ** (max(0.0, at - c.ts) / self.half_life_seconds))

    def level(self, score: float) -> tuple[str, str]:
        if score >= self.deny_at:
            return "high", "deny"
        if score >= self.step_up_at:
            return "medium", "step_up"
        return "low", "allow"

    def score(self, tenant: str, entity: Entity, at: float) -> tuple[float, tuple[str, ...]]:
        contributions = self._entities.get((tenant, entity.kind, entity.value), [])
        remaining = 1.0
        ranked = []
        for c in contributions:
            d = self._decayed(c, at)
            if d < _NEGLIGIBLE:  # so that when `expire` drops it (which depends on batching) changes nothing
                continue
            remaining *= 1.0 - min(d, 0.999)
            ranked.append((d, c.reason))
        ranked.sort(key=lambda r: -r[0])
        return round(100.0 * (1.0 - remaining), 1), tuple(r for _, r in ranked[: self.top_reasons])

    def add(self, signal: Signal) -> list[RiskUpdate]:
        amount = self.weights.get(signal.type, DEFAULT_WEIGHT) * signal.strength
        reason = f"{signal.type}: {signal.reasons[0]}" if signal.reasons else signal.type
        updates = []
        for entity in signal.entities:
            key = (signal.tenant, entity.kind, entity.value)
            bucket = self._entities.setdefault(key, [])
            bucket.append(_Contribution(signal.type, amount, signal.ts, reason))
            if len(bucket) > _MAX_CONTRIBUTIONS:
                bucket.sort(key=lambda c: self._decayed(c, signal.ts), reverse=True)
                del bucket[_MAX_CONTRIBUTIONS:]
            score, reasons = self.score(signal.tenant, entity, signal.ts)
            level, action = self.level(score)
            updates.append(RiskUpdate(entity.kind, entity.value, signal.tenant, score, level, action,
                                      reasons, signal.ts))
            self._reported[key] = (score, level, max(signal.ts, self._reported.get(key, (0, "", 0.0))[2]))
        return updates

    def refresh(self, at: float) -> list[RiskUpdate]:
        """Rows for the entities whose reported risk has decayed by a point or more (or changed level) by
        event time `at`; an entity whose signals have all faded gets a last row of 0 and is forgotten."""
        updates = []
        for key, (reported, reported_level, reported_ts) in list(self._reported.items()):
            if reported_ts >= at:  # a signal at or after `at` wrote a newer row already
                continue
            tenant, kind, value = key
            score, reasons = self.score(tenant, Entity(kind, value), at)
            level, action = self.level(score)
            if abs(score - reported) < _REFRESH_STEP and level == reported_level and score > 0:
                continue
            updates.append(RiskUpdate(kind, value, tenant, score, level, action, reasons, at))
            if score > 0:
                self._reported[key] = (score, level, at)
            else:
                del self._reported[key]
        return updates

    def expire(self, watermark: float) -> None:
        """Drop contributions decayed to nothing by the watermark (less a margin); forget empty entities."""
        horizon = watermark - _EXPIRY_MARGIN_SECONDS
        for key in list(self._entities):
            kept = [c for c in self._entities[key] if self._decayed(c, horizon) >= _NEGLIGIBLE]
            if kept:
                self._entities[key] = kept
            else:
                del self._entities[key]

    def __len__(self) -> int:
        return len(self._entities)
