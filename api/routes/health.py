"""Liveness and readiness (no credential needed).

Readiness lists its checks: the store, whatever the caller adds (e.g. Kafka), and `model`: what the
worker last reported about the behaviour model. A missing model does not make the service unready
(rule detectors work without it) but the detail says that `anomaly.behaviour` is silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.routes import StoreDep
from api.store import AlertStore

MODEL_STATUS_KEY = "worker.model"  # written by `gatewatch run`: {"status": "active"|"silent", "reason"}
WORKER_STATS_PREFIX = "worker.stats/"  # + worker id: the figures each worker reports (see /metrics)

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

ReadyCheck = Callable[[], tuple[bool, str]]


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


def _run(name: str, check: ReadyCheck) -> Check:
    try:
        ok, detail = check()
        return Check(ok=bool(ok), detail=str(detail))
    except Exception as exc:  # a failing check is a readiness answer, not a 500
        log.warning("readiness check %s raised %s", name, type(exc).__name__)
        return Check(ok=False, detail=f"check failed: {type(exc).__name__}")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


def _model_check(store: AlertStore) -> ReadyCheck:
    def check() -> tuple[bool, str]:
        found = store.get_meta(MODEL_STATUS_KEY)
        if found is None:
            return True, "no worker has reported its anomaly model yet"
        status, at = found
        if status.get("status") == "active":
            return True, f"anomaly model active (reported {at}): {status.get('reason', '')}"
        return True, f"anomaly.behaviour is silent (reported {at}): {status.get('reason', 'no model')}"
    return check


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request, store: StoreDep) -> JSONResponse:
    checks: dict[str, ReadyCheck] = {"store": store.ping, "model": _model_check(store),
                                     **request.app.state.ready_checks}
    results = {name: _run(name, check) for name, check in checks.items()}
    ready = all(c.ok for c in results.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=results)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
