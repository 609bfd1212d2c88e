"""Amazon API Gateway's JSON access log (REST and HTTP APIs) → the access event.

The operator writes the log format; gatewatch reads each `$context` variable under the key that is its
name without `$context.` (`"httpMethod": "$context.httpMethod"`), a dotted name either as one key or as
nested objects (`"identity.sourceIp"` or `{"identity": {"sourceIp": …}}`), and the source IP also under
`ip`, the key of AWS's example formats. Quoted (`"$context.status"`) and bare numbers are both read; API
Gateway's `-` for an empty value counts as absent.

    requestId                                      event_id (else a digest of the record)
    requestTimeEpoch (ms), else requestTime (CLF)  ts
    httpMethod                                     method
    path, else resourcePath, else routeKey's path  path (query string dropped)
    status                                         status
    ip, else identity.sourceIp                     client_ip
    identity.userAgent (or userAgent)              user_agent
    routeKey (HTTP API), else resourcePath (REST)  route
    responseLatency, else integrationLatency (ms)  latency_ms
    responseLength                                 bytes_out
    tenant (Origin field by default: e.g.          tenant
      "tenant": "$context.authorizer.claims.tid")
    apiId (Origin field by default)                gateway

API Gateway cannot log the Authorization header, so these events carry no token: the token detectors do not
see them, the traffic detectors and the behaviour model do. An authorizer's claims can still name the tenant
(`$context.authorizer.claims.<claim>`, `$context.authorizer.<key>`) through the tenant field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.adapters._common import (Origin, access_event, first, integer, lookup, missing, number, path_only,
                                     text, time_from_clf, time_from_epoch_ms)

DEFAULT_ORIGIN = Origin(tenant_field="tenant", gateway="aws-apigw", gateway_field="apiId", setting="ingest.aws_apigw")


def _time(obj: Mapping[str, Any]) -> str:
    epoch = lookup(obj, "requestTimeEpoch")
    if epoch is not None:
        return time_from_epoch_ms("requestTimeEpoch", epoch)
    clf = lookup(obj, "requestTime")
    if clf is None:
        raise missing("requestTimeEpoch (or requestTime)")
    return time_from_clf("requestTime", clf)


def _path(obj: Mapping[str, Any]) -> tuple[str, Any]:
    """`path`, else `resourcePath`, else the path of an HTTP API's `routeKey` (`GET /pets/{id}`; not `$default`)."""
    key, path = first(obj, ("path", "resourcePath"))
    if path is None:
        route = lookup(obj, "routeKey")
        if isinstance(route, str) and " /" in route:
            return "routeKey", route.partition(" ")[2]
        key = "path (or resourcePath, routeKey)"
    return key, path


def adapt(obj: Mapping[str, Any], origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """One API Gateway access log object → the fields of an access event (CONTRACT.md §1)."""
    path_key, path = _path(obj)
    ip_key, ip = first(obj, ("ip", "identity.sourceIp"))
    ua_key, ua = first(obj, ("identity.userAgent", "userAgent"))
    route_key, route = first(obj, ("routeKey", "resourcePath"))
    latency_key, latency = first(obj, ("responseLatency", "integrationLatency"))
    return access_event(
        obj, origin,
        event_id=text("requestId", lookup(obj, "requestId")),
        ts=_time(obj),
        client_ip=text(ip_key, ip, required=True),
        method=text("httpMethod", lookup(obj, "httpMethod"), required=True),
        path=path_only(path_key, path),
        status=integer("status", lookup(obj, "status"), required=True),
        route=text(route_key, route),
        latency_ms=number(latency_key, latency),
        bytes_out=integer("responseLength", lookup(obj, "responseLength")),
        user_agent=text(ua_key, ua),
    )
