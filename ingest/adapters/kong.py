"""Kong's log object (the body of the `http-log` plugin, and of `file-log`, `tcp-log`, `udp-log`,
`syslog`: `kong.log.serialize()`) → the access event.

    request.id, else response.headers.x-kong-request-id   event_id (else a digest of the record)
    started_at (epoch ms)                                  ts
    request.method                                         method
    request.uri                                            path (query string dropped)
    response.status                                        status
    client_ip                                              client_ip
    route.name, else service.name                          route
    latencies.request (ms)                                 latency_ms
    request.size, response.size                            bytes_in, bytes_out
    request.headers.user-agent                             user_agent
    request.headers.authorization                          token (Bearer / DPoP credential; Kong writes
                                                           "REDACTED" there unless told not to: then none)
    request.headers.x-request-nonce                        nonce
    ai.proxy.meta.provider_name, .request_model,           llm (Kong AI Gateway's AI Proxy plugins)
    ai.proxy.usage.prompt_tokens, .completion_tokens
    workspace_name (Origin field by default)               tenant
    (static, "kong" by default)                            gateway

One log object per record: `http-log` with `queue.max_batch_size` above 1 posts a JSON array, which is not a
record gatewatch reads (`schema`). Not read: `consumer`, `authenticated_entity` (identity comes from the
token's claims), `tries`, `upstream_uri`, `service` beyond its name, `workspace` (a UUID).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.adapters._common import (Origin, access_event, bearer_token, integer, lookup, number, path_only,
                                     text, time_from_epoch_ms)

DEFAULT_ORIGIN = Origin(tenant_field="workspace_name", gateway="kong", setting="ingest.kong")


def _header(obj: Mapping[str, Any], name: str) -> Any:
    """A request header as Kong logs it (names in lower case; a repeated header is a list: not used)."""
    headers = lookup(obj, "request.headers")
    if not isinstance(headers, dict):
        return None
    value = headers.get(name)
    return None if isinstance(value, list) or value == "" else value


def _llm(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    proxy = lookup(obj, "ai.proxy")
    if not isinstance(proxy, dict):
        return None
    return {
        "provider": text("ai.proxy.meta.provider_name", lookup(proxy, "meta.provider_name")),
        "model": text("ai.proxy.meta.request_model", lookup(proxy, "meta.request_model")),
        "prompt_tokens": integer("ai.proxy.usage.prompt_tokens", lookup(proxy, "usage.prompt_tokens")) or 0,
        "completion_tokens": integer("ai.proxy.usage.completion_tokens",
                                     lookup(proxy, "usage.completion_tokens")) or 0,
    }


def adapt(obj: Mapping[str, Any], origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """One Kong log object → the fields of an access event (CONTRACT.md §1)."""
    request_id = text("request.id", lookup(obj, "request.id"))
    if request_id is None:
        response_headers = lookup(obj, "response.headers")
        if isinstance(response_headers, dict):
            request_id = text("response.headers.x-kong-request-id", response_headers.get("x-kong-request-id") or None)
    return access_event(
        obj, origin,
        event_id=request_id,
        ts=time_from_epoch_ms("started_at", lookup(obj, "started_at")),
        client_ip=text("client_ip", lookup(obj, "client_ip"), required=True),
        method=text("request.method", lookup(obj, "request.method"), required=True),
        path=path_only("request.uri", lookup(obj, "request.uri")),
        status=integer("response.status", lookup(obj, "response.status"), required=True),
        route=text("route.name", lookup(obj, "route.name")) or text("service.name", lookup(obj, "service.name")),
        latency_ms=number("latencies.request", lookup(obj, "latencies.request")),
        bytes_in=integer("request.size", lookup(obj, "request.size")),
        bytes_out=integer("response.size", lookup(obj, "response.size")),
        user_agent=text("request.headers.user-agent", _header(obj, "user-agent")),
        token=bearer_token(_header(obj, "authorization")),
        nonce=text("request.headers.x-request-nonce", _header(obj, "x-request-nonce")),
        llm=_llm(obj),
    )
