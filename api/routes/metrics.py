"""Prometheus metrics at `GET /metrics` (CONTRACT.md §6: "none or metrics:read").

No credential is asked for: Prometheus scrapers usually hold none, and the figures name no tenant data
beyond alert types and counts. Put `/metrics` behind the network (or a proxy) if that is too much; the
`metrics:read` scope exists for when this endpoint is made to require it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.metrics import ApiMetrics

router = APIRouter(tags=["metrics"])


async def get_metrics(request: Request) -> ApiMetrics:  # async: no thread-pool hop (see api/auth.py)
    return request.app.state.metrics  # type: ignore[no-any-return]


MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
