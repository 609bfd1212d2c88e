"""Alerts from signals: grouping, deterministic ids, severity, capped evidence (CONTRACT.md §5).

Signals of one type about one entity inside one event-time bucket (`group_seconds`) become one alert.
The id is a hash of (type, tenant, entity, bucket): the same evidence always yields the same id, so
re-processing a batch rewrites an alert instead of adding one. A signal already folded into an alert
(same event ids) does not count twice: redeliveries do not inflate `count`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from detectors.base import Signal
from scoring.suppression import Suppressions

Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
# Base severity of each alert type before the entity's risk raises it.
BASE_SEVERITY: dict[str, str] = {
    "replay.nonce": "high", "replay.token_context": "high", "replay.refresh_reuse": "high",
    "token.revoked_use": "high", "token.expired_use": "medium", "token.cross_tenant": "critical",
    "token.jti_collision": "critical", "token.invalid": "medium", "token.unencrypted": "low",
    "traffic.rate_limit": "medium", "traffic.ip_not_allowed": "medium", "anomaly.behaviour": "medium",
    "traffic.llm_budget": "high",
}
MAX_EVIDENCE_IDS = 50
MAX_REASONS = 10


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(round(ts * 1000)) % 1000:03d}Z"


class EntityRef(BaseModel):
    kind: Literal["subject", "client", "ip", "token", "tenant"]
    value: str


class Note(BaseModel):
    author: str
    at: str
    text: str


class Suppression(BaseModel):
    """The rule that mutes an alert: stored and counted, not shown as open (scoring/suppression.py)."""

    rule: str
    owner: str
    expires: str
    reason: str = ""


class Alert(BaseModel):
    id: str
    type: str
    severity: Severity
    tenant: str
    entity: EntityRef
    first_seen: str
    last_seen: str
    count: int = Field(ge=1)
    risk: float = Field(ge=0, le=100)
    reasons: list[str]
    evidence: dict[str, Any]
    status: Status = "open"
    assignee: str | None = None
    notes: list[Note] = []
    suppression: Suppression | None = None


def alert_id(type_: str, tenant: str, kind: str, value: str, bucket: int) -> str:
    digest = hashlib.sha256(f"{type_}\x1f{tenant}\x1f{kind}\x1f{value}\x1f{bucket}".encode()).hexdigest()
    return "al_" + digest[:24]


def severity_for(type_: str, strength: float, risk: float) -> str:
    level = SEVERITIES.index(BASE_SEVERITY.get(type_, "medium"))
    if risk >= 90 or strength >= 0.99:
        level += 1
    return SEVERITIES[min(level, len(SEVERITIES) - 1)]


class _Open:
    __slots__ = ("alert", "signal_keys", "event_ids", "token_fps", "figures", "first", "last", "strength",
                 "bucket_end")

    def __init__(self, bucket_end: float) -> None:
        self.signal_keys: set[tuple[str, ...]] = set()
        self.event_ids: list[str] = []
        self.token_fps: list[str] = []
        self.figures: dict[str, Any] = {}
        self.first = float("inf")
        self.last = float("-inf")
        self.strength = 0.0
        self.bucket_end = bucket_end
        self.alert: Alert | None = None


class AlertBuilder:
    """Folds signals into alerts; holds the alerts of open buckets until the watermark passes them."""

    def __init__(self, *, group_seconds: int = 3600, suppressions: Suppressions | None = None) -> None:
        self.group_seconds = group_seconds
        self.suppressions = suppressions if suppressions is not None else Suppressions()
        self._open: dict[str, _Open] = {}

    def add(self, signal: Signal, risk: float) -> str | None:
        """Fold one signal in; return the id of the alert it changed (None if it was a duplicate)."""
        ent = signal.entity
        bucket = int(signal.ts // self.group_seconds)
        aid = alert_id(signal.type, signal.tenant, ent.kind, ent.value, bucket)
        cur = self._open.get(aid)
        if cur is None:
            cur = self._open[aid] = _Open((bucket + 1) * self.group_seconds)
        key = signal.event_ids
        if key in cur.signal_keys:
            return None
        cur.signal_keys.add(key)
        cur.first = min(cur.first, signal.ts)
        cur.last = max(cur.last, signal.ts)
        for eid in signal.event_ids:
            if eid not in cur.event_ids and len(cur.event_ids) < MAX_EVIDENCE_IDS:
                cur.event_ids.append(eid)
        for fp in signal.token_fps:
            if fp not in cur.token_fps and len(cur.token_fps) < MAX_EVIDENCE_IDS:
                cur.token_fps.append(fp)
        if signal.strength >= cur.strength:
            cur.strength = signal.strength
            cur.figures = dict(signal.figures)
            reasons = list(signal.reasons)
        else:
            reasons = cur.alert.reasons if cur.alert is not None else list(signal.reasons)
        risk = max(risk, cur.alert.risk if cur.alert is not None else 0.0)
        # Muted while the newest signal is before the rule's expiry: a later signal surfaces it again.
        rule = self.suppressions.match(signal.type, signal.tenant, ent.kind, ent.value, cur.last)
        cur.alert = Alert(
            id=aid, type=signal.type, severity=severity_for(signal.type, cur.strength, risk),  # type: ignore[arg-type]
            tenant=signal.tenant, entity=EntityRef(kind=ent.kind, value=ent.value),  # type: ignore[arg-type]
            first_seen=rfc3339(cur.first), last_seen=rfc3339(cur.last), count=len(cur.signal_keys),
            risk=round(risk, 1), reasons=reasons[:MAX_REASONS],
            evidence={"event_ids": list(cur.event_ids), "token_fps": list(cur.token_fps),
                      "figures": cur.figures,
                      "entities": [{"kind": e.kind, "value": e.value} for e in signal.entities]},
            suppression=None if rule is None else Suppression(
                rule=rule.id, owner=rule.owner, expires=rfc3339(rule.expires), reason=rule.reason),
        )
        return aid

    def get(self, aid: str) -> Alert:
        alert = self._open[aid].alert
        assert alert is not None  # set by the add() that returned aid
        return alert

    def expire(self, watermark: float) -> None:
        """Forget alerts whose bucket closed before the watermark (they are in the store already)."""
        done = [aid for aid, cur in self._open.items() if cur.bucket_end < watermark]
        for aid in done:
            del self._open[aid]

    def __len__(self) -> int:
        return len(self._open)
