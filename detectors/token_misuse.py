"""Token misuse the gateway let through: `token.expired_use` and `token.cross_tenant`.

Both are facts about one request, decided from the validated token and the event; state only
rate-limits the signals to one per token per `realert_seconds` of event time, so a client replaying
one expired token a hundred times is one incident (whose alert counts the uses), not a hundred.
Partition-locality: keyed by token fingerprint, which follows the token's subject.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Signal, principal_entities
from detectors.state import StateStore
from ingest.events import AccessRecord, Event


def _first_in_while(state: StateStore, key: tuple[str, ...], ts: float, realert: float) -> bool:
    last = state.get(key)
    if last is not None and ts - last < realert:
        return False
    state.set(key, int(ts), expires_at=ts + realert)
    return True


def _let_through(rec: AccessRecord) -> bool:
    return rec.status < 400


class ExpiredUseDetector:
    """A token used after `exp` + leeway, and the gateway answered as if it were valid (status < 400)."""

    name: ClassVar[str] = "token.expired_use"
    settings_key: ClassVar[str] = "token_expired_use"
    partition_by: ClassVar[tuple[str, ...]] = ("principal",)
    reads: ClassVar[tuple[str, ...]] = ("access.invalid",)
    state_kind: ClassVar[str] = "packed"

    def __init__(self, *, leeway_seconds: float = 30.0, realert_seconds: float = 600.0) -> None:
        self.leeway_seconds = leeway_seconds
        self.realert_seconds = realert_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> ExpiredUseDetector:
        return cls(leeway_seconds=float(tokens.leeway_seconds), realert_seconds=float(section.realert_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info, rec = event.token, event.record
        if info is None or info.verdict != "expired" or not isinstance(rec, AccessRecord) or not _let_through(rec):
            return []
        if not _first_in_while(state, ("expired", info.tfp), event.ts, self.realert_seconds):
            return []
        late = event.ts - (info.exp or event.ts)
        return [Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts, entities=principal_entities(event),
            strength=min(1.0, 0.5 + late / 7200),
            reasons=(f"token tfp {info.tfp} expired {late / 60:.1f} min before this request, "
                     f"yet {rec.gateway} answered {rec.status} on {rec.method} {rec.path}",
                     f"leeway is {self.leeway_seconds:.0f}s: the gateway is not checking expiry, or its clock is off"),
            event_ids=(rec.event_id,), token_fps=(info.tfp,),
            figures={"seconds_after_exp": round(late, 1), "status": rec.status, "gateway": rec.gateway})]


class CrossTenantDetector:
    """A token whose `tid` names one tenant, used on another tenant's API."""

    name: ClassVar[str] = "token.cross_tenant"
    settings_key: ClassVar[str] = "token_cross_tenant"
    partition_by: ClassVar[tuple[str, ...]] = ("principal",)
    reads: ClassVar[tuple[str, ...]] = ("access.valid", "access.invalid")
    state_kind: ClassVar[str] = "packed"

    def __init__(self, *, realert_seconds: float = 600.0) -> None:
        self.realert_seconds = realert_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> CrossTenantDetector:
        return cls(realert_seconds=float(section.realert_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info, rec = event.token, event.record
        if info is None or not info.signed or info.tid is None or info.tid == rec.tenant \
                or not isinstance(rec, AccessRecord):
            return []
        if not _first_in_while(state, ("xt", info.tfp, rec.tenant), event.ts, self.realert_seconds):
            return []
        outcome = "and was let through" if _let_through(rec) else f"and was refused ({rec.status})"
        return [Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts, entities=principal_entities(event),
            strength=0.9 if _let_through(rec) else 0.7,
            reasons=(f"a token of tenant {info.tid} (sub {info.sub}) was used on tenant {rec.tenant}'s "
                     f"{rec.route or rec.path} {outcome}",
                     f"from {rec.client_ip}, token tfp {info.tfp}"),
            event_ids=(rec.event_id,), token_fps=(info.tfp,),
            figures={"token_tenant": info.tid, "request_tenant": rec.tenant, "status": rec.status})]
