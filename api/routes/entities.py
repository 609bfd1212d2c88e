"""Entity pages: one entity's current risk, risk history and recent alerts; the riskiest entities now.

An entity is named by kind and value as alerts name it (CONTRACT.md §5). The value is taken the way
`GET /v1/risk` takes it: an IP address in any spelling (`2001:0db8::1` finds `2001:db8::1`), a token as
its 16-hex fingerprint or the compact token itself (answers name only the fingerprint). The value is
the rest of the path, so it may contain `/` (client ids are often URLs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from api.auth import Principal, require
from api.errors import NotFound, error_responses
from api.risk_table import canonical_value
from api.routes import StoreDep
from api.routes.alerts import AlertOut
from scoring.alerts import rfc3339
from scoring.risk import RiskUpdate

router = APIRouter(prefix="/v1/entities", tags=["entities"])

Reader = Annotated[Principal, Depends(require("alerts:read"))]
Kind = Literal["subject", "client", "ip", "token", "tenant"]
_ERRORS = error_responses(400, 401, 403)


# -- response schemas (separate from the stored rows) ---------------------------------------------
class EntityRisk(BaseModel):
    """An entity's current risk in one tenant."""

    tenant: str
    score: float = Field(ge=0, le=100)
    level: str
    action: Literal["allow", "step_up", "deny"]
    reasons: list[str]
    as_of: str = Field(description="event time the score was computed at (RFC 3339)")


class RiskPointOut(BaseModel):
    at: str = Field(description="event time (RFC 3339)")
    tenant: str
    score: float = Field(ge=0, le=100)
    level: str


class HoldOut(BaseModel):
    """The gateway decision denies this entity until `until` (CONTRACT.md §6, Decision endpoint)."""

    tenant: str
    type: str = Field(description="the alert type that caused it, or token.revoked")
    reason: str
    since: str = Field(description="event time (RFC 3339)")
    until: str = Field(description="event time (RFC 3339); ended holds stay listed for a day")


class EntityPage(BaseModel):
    kind: Kind
    value: str = Field(description="as stored: a canonical IP address, a token's fingerprint")
    risk: list[EntityRisk] = Field(description="current risk per tenant, highest first")
    holds: list[HoldOut] = Field(default_factory=list,
                                 description="what the gateway decision denies it for, newest first")
    history: list[RiskPointOut] = Field(description="the newest risk changes, oldest first")
    alerts: list[AlertOut] = Field(description="recent alerts, newest first, suppressed ones included")


class RiskyEntity(EntityRisk):
    kind: Kind
    value: str


class RiskyEntities(BaseModel):
    items: list[RiskyEntity]


def _risk(r: RiskUpdate) -> dict[str, Any]:
    return {"tenant": r.tenant, "score": r.score, "level": r.level, "action": r.action,
            "reasons": list(r.reasons), "as_of": rfc3339(r.ts)}


# -- routes ----------------------------------------------------------------------------------------
@router.get("", response_model=RiskyEntities, responses=_ERRORS)
def riskiest_entities(
    principal: Reader, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    kind: Annotated[Kind | None, Query()] = None,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    min_score: Annotated[float, Query(ge=0, le=100)] = 1.0,
) -> RiskyEntities:
    """The riskiest entities now in the caller's tenants, highest score first."""
    rows = store.top_risk(principal.tenant_filter(), kind=kind, tenant=tenant, min_score=min_score, limit=limit)
    return RiskyEntities(items=[RiskyEntity(kind=r.kind, value=r.value, **_risk(r))  # type: ignore[arg-type]
                                for r in rows])


@router.get("/{kind}/{value:path}", response_model=EntityPage,
            responses=error_responses(400, 401, 403, 404))
def entity_page(
    kind: Kind, value: Annotated[str, Path(min_length=1, max_length=16_384)], principal: Reader, store: StoreDep,
    history: Annotated[int, Query(ge=0, le=500, description="at most this many history points")] = 200,
    alerts: Annotated[int, Query(ge=0, le=200, description="at most this many alerts")] = 50,
) -> EntityPage:
    """One entity: its current risk per tenant, its risk history and its recent alerts."""
    tenants = principal.tenant_filter()
    risk = store.entity_risk(kind, value, tenants)
    found = store.entity_alerts(kind, value, tenants, limit=max(alerts, 1))  # ≥ 1: does it have any?
    held = sorted(store.holds.holds_of([(kind, canonical_value(kind, value))], tenants),
                  key=lambda h: (-h.since, h.type))
    if not risk and not found and not held:
        raise NotFound("no such entity")
    points = store.risk_history(kind, value, tenants, limit=history)
    return EntityPage(
        kind=kind, value=canonical_value(kind, value),
        risk=[EntityRisk(**_risk(r)) for r in risk],
        holds=[HoldOut(tenant=h.tenant, type=h.type, reason=h.reason, since=rfc3339(h.since),
                       until=rfc3339(h.until)) for h in held],
        history=[RiskPointOut(at=rfc3339(p.ts), tenant=p.tenant, score=p.score, level=p.level) for p in points],
        alerts=[AlertOut.of(a) for a in found[:alerts]])
