"""Builders of input records for tests (CONTRACT.md §1 shape)."""

from __future__ import annotations

import json
from typing import Any

from scoring.alerts import rfc3339


def access(event_id: str, ts: float, **fields: Any) -> dict[str, Any]:
    rec = {"kind": "access", "event_id": event_id, "ts": rfc3339(ts), "gateway": "gw-1", "tenant": "acme",
           "client_ip": "203.0.113.7", "method": "GET", "path": "/v1/orders/1", "route": "orders-api",
           "status": 200, "latency_ms": 12.5, "user_agent": "Mozilla/5.0"}
    rec.update(fields)
    return rec


def token_event(event_id: str, ts: float, type_: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "token", "event_id": event_id, "ts": rfc3339(ts), "tenant": "acme", "type": type_, **fields}


def raw(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec).encode()
