"""Risk look-up for the gateway's hot path: a read of the precomputed risk table (CONTRACT.md §6)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.auth import Principal, require
from api.errors import BadRequest, error_responses
from api.routes import StoreDep
from api.routes.metrics import MetricsDep
from scoring.alerts import rfc3339

router = APIRouter(prefix="/v1", tags=["risk"])

RiskReader = Annotated[Principal, Depends(require("risk:read"))]


class RiskEntity(BaseModel):
    kind: str
    value: str
    tenant: str
    score: float = Field(ge=0, le=100)


class RiskAnswer(BaseModel):
    """The highest-scoring matching entity decides `score`, `level`, `action` and `reasons`."""

    score: float = Field(ge=0, le=100)
    level: str
    action: Literal["allow", "step_up", "deny"]
    reasons: list[str]
    entities: list[RiskEntity]
    as_of: str | None = Field(None, description="event time the deciding score was computed at (RFC 3339)")


@router.get("/risk", response_model=RiskAnswer,
            responses=error_responses(400, 401, 403))
def get_risk(
    principal: RiskReader, store: StoreDep, metrics: MetricsDep,
    sub: Annotated[str | None, Query(max_length=1000)] = None,
    client_id: Annotated[str | None, Query(max_length=1000)] = None,
    ip: Annotated[str | None, Query(max_length=64)] = None,
    token: Annotated[str | None, Query(max_length=16_384,
                                       description="token fingerprint (tfp), or the compact token")] = None,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
) -> RiskAnswer:
    if not any((sub, client_id, ip, token)):
        raise BadRequest("give at least one of sub, client_id, ip, token")
    started = time.perf_counter()  # wall clock on purpose: this times I/O for /metrics, not detection
    allowed = principal.tenant_filter()
    if tenant is not None and allowed is not None and tenant not in allowed:
        rows = []
    else:
        rows = store.get_risk(allowed, sub=sub, client_id=client_id, ip=ip, token=token, tenant=tenant)
    if rows:
        top = rows[0]
        answer = RiskAnswer(
            score=top.score, level=top.level, action=top.action,  # type: ignore[arg-type]
            reasons=list(top.reasons), as_of=rfc3339(top.ts),
            entities=[RiskEntity(kind=r.kind, value=r.value, tenant=r.tenant, score=r.score) for r in rows])
    else:
        answer = RiskAnswer(score=0.0, level="low", action="allow", reasons=[], entities=[])
    metrics.risk_lookup_seconds.observe(time.perf_counter() - started)
    return answer
