"""Risk look-up for the gateway's hot path: a read of the precomputed risk table (CONTRACT.md §6).

Two doors to one answer (`risk_answer`):

* `hot_path_route`, mounted first by `api.app`: a plain Starlette endpoint that authenticates, checks
  the scope and reads the parameters itself. FastAPI's per-request dependency solving and response-model
  validation were most of a look-up's server time (measured in-process when this was written: about
  200 µs per look-up through the FastAPI route, about 70 µs here), which a gateway asking on every
  request should not pay.
* `get_risk`, the FastAPI route: what `/openapi.json` documents (parameters, answer, errors). Requests
  only reach it if the hot path is not mounted (it is, in `create_app`); both share every rule below,
  and tests/api check both against `RiskAnswer`.

`app.dependency_overrides` does not apply on the hot path: it reads the app's authenticator directly.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.routing import Route

from api.auth import Principal, bearer_of, principal_of, require, with_scope
from api.errors import BadRequest, error_responses
from api.routes import StoreDep, only_declared
from api.routes.metrics import MetricsDep
from api.store import AlertStore
from scoring.alerts import rfc3339

router = APIRouter(prefix="/v1", tags=["risk"])

SCOPE = "risk:read"
RiskReader = Annotated[Principal, Depends(require(SCOPE))]
# The look-up's parameters and their longest accepted value.
MAX_CHARS = {"sub": 1000, "client_id": 1000, "ip": 64, "token": 16_384, "tenant": 200}

_ENCODE = msgspec.json.Encoder().encode
_NO_MATCH = _ENCODE({"score": 0.0, "level": "low", "action": "allow", "reasons": [], "entities": [],
                     "as_of": None})


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


def risk_answer(store: AlertStore, principal: Principal, metrics: Any, *, sub: str | None, client_id: str | None,
                ip: str | None, token: str | None, tenant: str | None) -> Response:
    """The JSON answer (a `RiskAnswer`), encoded directly: the rows come from our own table."""
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
        body = _ENCODE({"score": float(top.score), "level": top.level, "action": top.action,
                        "reasons": list(top.reasons),
                        "entities": [{"kind": r.kind, "value": r.value, "tenant": r.tenant, "score": float(r.score)}
                                     for r in rows],
                        "as_of": rfc3339(top.ts)})
    else:
        body = _NO_MATCH
    metrics.risk_lookup_seconds.observe(time.perf_counter() - started)
    return Response(body, media_type="application/json")


@router.get("/risk", response_model=RiskAnswer,
            responses=error_responses(400, 401, 403))
async def get_risk(
    principal: RiskReader, store: StoreDep, metrics: MetricsDep,
    sub: Annotated[str | None, Query(max_length=MAX_CHARS["sub"])] = None,
    client_id: Annotated[str | None, Query(max_length=MAX_CHARS["client_id"])] = None,
    ip: Annotated[str | None, Query(max_length=MAX_CHARS["ip"])] = None,
    token: Annotated[str | None, Query(max_length=MAX_CHARS["token"],
                                       description="token fingerprint (tfp), or the compact token")] = None,
    tenant: Annotated[str | None, Query(max_length=MAX_CHARS["tenant"])] = None,
) -> Response:
    # async: a cache hit does no I/O, and a miss is one indexed SQLite read — cheaper than a thread hop.
    return risk_answer(store, principal, metrics, sub=sub, client_id=client_id, ip=ip, token=token, tenant=tenant)


async def _hot_path(request: Request) -> Response:
    state = request.app.state
    principal = with_scope(principal_of(state.authenticator, bearer_of(request.headers.get("authorization"))),
                           SCOPE)
    query = request.query_params
    only_declared(query.keys(), MAX_CHARS)  # what the app-wide `refuse_unknown_query` does for every route
    params: dict[str, str | None] = {}
    for name, limit in MAX_CHARS.items():
        value = query.get(name)
        if value is not None and len(value) > limit:
            raise BadRequest(f"query parameter {name}: at most {limit} characters")
        params[name] = value
    return risk_answer(state.store, principal, state.metrics, **params)


def hot_path_route() -> Route:
    """`GET /v1/risk` without FastAPI's dependency machinery (see the module docstring)."""
    return Route("/v1/risk", _hot_path, methods=["GET"], include_in_schema=False)
