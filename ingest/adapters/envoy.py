"""Envoy's JSON access log (`json_format` or `typed_json_format`) → the access event.

Envoy lets the operator name every key of a format dictionary; gatewatch reads the keys below, each with the
command operator it expects (the names Envoy's own examples use where they have one). Values may be typed
(`typed_json_format`: numbers, `null` when unset) or strings (`json_format`: `"123"`, `"-"` when unset).

    start_time                 %START_TIME%                              ts (RFC 3339, Envoy's default form)
    method                     %REQ(:METHOD)%                            method
    path                       %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%        path (query string dropped)
    response_code              %RESPONSE_CODE%                           status
    downstream_remote_address  %DOWNSTREAM_REMOTE_ADDRESS%               client_ip (port dropped)
    request_id                 %REQ(X-REQUEST-ID)%                       event_id (else a digest of the record)
    duration                   %DURATION%                                latency_ms
    bytes_received             %BYTES_RECEIVED%                          bytes_in
    bytes_sent                 %BYTES_SENT%                              bytes_out
    user_agent                 %REQ(USER-AGENT)%                         user_agent
    authorization              %REQ(AUTHORIZATION)%                      token (the Bearer / DPoP credential)
    nonce                      %REQ(X-REQUEST-NONCE)%                    nonce
    route_name                 %ROUTE_NAME%                              route (else upstream_cluster)
    upstream_cluster           %UPSTREAM_CLUSTER%                        route, when there is no route name
    tenant, gateway            a literal, %REQ(X-TENANT)%, %HOSTNAME%…   tenant, gateway (Origin fields)

The client address is DOWNSTREAM_REMOTE_ADDRESS, never X-Forwarded-For (which a client writes): Envoy puts the
trusted client address there when it is configured to take it from XFF or the PROXY protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.adapters._common import (Origin, access_event, bearer_token, client_address, integer, lookup, number,
                                     path_only, text)

DEFAULT_ORIGIN = Origin(tenant_field="tenant", gateway="envoy", gateway_field="gateway", setting="ingest.envoy")


def adapt(obj: Mapping[str, Any], origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """One Envoy access log object → the fields of an access event (CONTRACT.md §1)."""
    return access_event(
        obj, origin,
        event_id=text("request_id", lookup(obj, "request_id")),
        ts=text("start_time", lookup(obj, "start_time"), required=True),
        client_ip=client_address("downstream_remote_address", lookup(obj, "downstream_remote_address")),
        method=text("method", lookup(obj, "method"), required=True),
        path=path_only("path", lookup(obj, "path")),
        status=integer("response_code", lookup(obj, "response_code"), required=True),
        route=text("route_name", lookup(obj, "route_name")) or text("upstream_cluster", lookup(obj, "upstream_cluster")),
        latency_ms=number("duration", lookup(obj, "duration")),
        bytes_in=integer("bytes_received", lookup(obj, "bytes_received")),
        bytes_out=integer("bytes_sent", lookup(obj, "bytes_sent")),
        user_agent=text("user_agent", lookup(obj, "user_agent")),
        token=bearer_token(lookup(obj, "authorization")),
        nonce=text("nonce", lookup(obj, "nonce")),
    )
