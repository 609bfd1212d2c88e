"""Property-based conformance of the HTTP API to its own OpenAPI document (CONTRACT.md §6), with Schemathesis.

Every operation in `/openapi.json` — whatever it lists when this runs, so new routes are covered without
touching this file — is driven with generated requests (valid and invalid: examples, coverage and fuzzing
phases), once with the analyst credential (every scope, every tenant) and once with no credential at all.
Every built-in Schemathesis check is on (no 5xx, status code documented, content type and body conform to
the schema, invalid data refused, valid data accepted, auth not ignored, 405s carry `Allow`, ...), plus
the contract's error shape: any 4xx/5xx body is exactly `{"error": {"code", "message"}}` as JSON.

Excluded: `GET /v1/alerts/stream` — server-sent events that never end, so a generated request would
hang; it has its own tests. The console's static routes (`/`, `/console/...`) are not in the schema.

The store is in memory, seeded with a few alerts and risk rows; positive cases that name an alert or an
entity are pointed at a seeded one about half the time, so 200s and PATCHes on real rows are exercised too,
not only 404s. Hypothesis runs derandomized (same cases on every run, reproducible in CI).
"""

from __future__ import annotations

import json
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

from api.app import create_app
from api.store import AlertStore, encode_cursor
from gatewatch.keys import generate_keys
from gatewatch.settings import ApiSettings
from scoring.alerts import Alert, EntityRef
from scoring.risk import RiskUpdate

STREAM_PATH = "/v1/alerts/stream"


def _alert(n: int) -> Alert:
    entity = EntityRef(kind="ip", value=f"10.0.0.{n}") if n % 3 == 2 else EntityRef(kind="subject", value=f"user-{n}")
    return Alert(id=f"al_{n:024d}", type=("replay.nonce", "token.invalid", "traffic.rate_limit")[n % 3],
                 severity=("low", "medium", "high", "critical")[n % 4], tenant=("acme", "globex")[n % 2],
                 entity=entity, first_seen=f"2026-11-28T10:00:{n:02d}.000Z",
                 last_seen=f"2026-11-28T10:00:{n:02d}.500Z", count=n + 1, risk=10.0 * n,
                 reasons=[f"reason {n}"], evidence={"event_ids": [f"e{n}"], "token_fps": [], "figures": {}})


ALERTS = [_alert(n) for n in range(6)]
RISK = [
    RiskUpdate("subject", "user-0", "acme", 82.0, "high", "deny", ("replay.nonce: twice",), 1_764_000_000.0),
    RiskUpdate("subject", "user-1", "globex", 45.0, "medium", "step_up", ("token.invalid: burst",), 1_764_000_000.0),
    RiskUpdate("ip", "10.0.0.2", "acme", 20.0, "low", "allow", ("traffic.rate_limit: over",), 1_764_000_000.0),
    RiskUpdate("client", "app-1", "acme", 10.0, "low", "allow", (), 1_764_000_000.0),
]
# Values a positive case may be pointed at (see `_make_positive_cases_meaningful`).
_SEEDS: dict[str, list[str]] = {
    "alert_id": [a.id for a in ALERTS],
    "value": sorted({a.entity.value for a in ALERTS} | {r.value for r in RISK}),
    "alert_cursor": [encode_cursor(a.last_seen, a.id) for a in ALERTS],
    "risk_sub": ["user-0", "user-1", "nobody"],
}

_ENTITY_VALUES: dict[str, list[str]] = {}
for _kind, _value in sorted({(a.entity.kind, a.entity.value) for a in ALERTS} | {(r.kind, r.value) for r in RISK}):
    _ENTITY_VALUES.setdefault(_kind, []).append(_value)


def _seeded_store() -> AlertStore:
    store = AlertStore(":memory:")
    store.upsert_alerts(ALERTS)
    store.upsert_risk(RISK)
    return store


def _pick(value: Any, n: int) -> int | None:
    """A deterministic coin (crc32 of the generated value, not `hash()`): an index below n, or None."""
    h = zlib.crc32(repr(value).encode("utf-8", "surrogatepass"))
    return (h >> 1) % n if n and h % 2 == 0 else None


def _make_positive_cases_meaningful(context: Any, case: Any) -> Any:
    """`map_case` hook, for valid (positive) cases only — negative ones must stay invalid.

    * a generated alert id or entity value is swapped for a seeded one about half the time, so 200s and
      PATCHes of real rows are checked too, not only 404s;
    * a generated `cursor` is replaced by a real one: a cursor is opaque, so a random string can never be
      valid, whatever the schema says;
    * `GET /v1/risk` needs at least one of sub, client_id, ip, token (a rule across parameters OpenAPI
      cannot state; its 400 is documented): a case naming none gets a `sub`, often a seeded one.
    """
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if case.path_parameters:
        params = dict(case.path_parameters)
        for name in ("alert_id", "value"):
            seeds = _SEEDS[name]
            if name == "value" and params.get("kind") in _ENTITY_VALUES:  # an entity of that kind
                seeds = _ENTITY_VALUES[params["kind"]]
            value = params.get(name)
            if isinstance(value, str) and (i := _pick(value, len(seeds))) is not None:
                params[name] = seeds[i]
        case.path_parameters = params
    query = dict(case.query or {})
    if "cursor" in query:
        alerts = _SEEDS["alert_cursor"]
        query["cursor"] = alerts[zlib.crc32(repr(query["cursor"]).encode()) % len(alerts)]
    if case.operation.method.upper() == "GET" and case.operation.path == "/v1/risk":
        subjects = _SEEDS["risk_sub"]
        if not any(query.get(k) for k in ("sub", "client_id", "ip", "token")):
            query["sub"] = subjects[zlib.crc32(repr(query).encode()) % len(subjects)]
        elif isinstance(query.get("sub"), str) and (i := _pick(query["sub"], len(subjects))) is not None:
            query["sub"] = subjects[i]
    if case.query is not None or query:
        case.query = query
    return case


def _error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """CONTRACT.md §6: every error is JSON `{"error": {"code", "message"}}`, no trace; 401s say `Bearer`."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.split(";")[0].strip() == "application/json", \
        f"{response.status_code} with Content-Type {content_type!r}, expected application/json"
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, f"error body is not {{'error': ...}}: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message"}, f"error object keys: {err!r}"
    assert isinstance(err["code"], str) and err["code"], f"error code: {err['code']!r}"
    assert isinstance(err["message"], str) and err["message"], f"error message: {err['message']!r}"
    assert "Traceback" not in err["message"], "a stack trace reached the client"
    if response.status_code == 401:
        challenge = (response.headers.get("www-authenticate") or [""])[0]
        assert challenge.lower().startswith("bearer"), f"401 without WWW-Authenticate: Bearer ({challenge!r})"
    return None


# The schema is loaded when this module is collected: Schemathesis 4.32.5's fixture-based loader
# (`schemathesis.pytest.from_fixture`) touches `Node._nodeid`, which pytest 9.2 no longer has. So the app,
# its keys and credentials are built here once; each test gets a freshly seeded store (fixture below).
# (Under pytest 9.2 the per-operation items also share one node id: the short summary repeats the test
# name, and the failure headers name the operation, e.g. `...[GET /v1/risk]`; `-k risk` selects one.)
_KEYS = tempfile.TemporaryDirectory(prefix="gw-schema-keys-")
generate_keys(Path(_KEYS.name), rsa_bits=2048)
_CREDS: dict[str, str] = json.loads((Path(_KEYS.name) / "credentials.json").read_text())
APP = create_app(
    api_settings=ApiSettings(jwks=Path(_KEYS.name) / "api-issuer.jwks.json",
                             api_keys=Path(_KEYS.name) / "api-keys.json", issuers=["https://idp.example"],
                             audience="gatewatch"),  # max_body_bytes: the production default
    store=AlertStore(":memory:"))

schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(method="GET", path=STREAM_PATH)
schema.hook("map_case")(_make_positive_cases_meaningful)


@pytest.fixture(autouse=True)
def _fresh_store() -> Any:
    """Each operation's test starts from the same seeded store (PATCHes of one test never leak)."""
    store = _seeded_store()
    old, APP.state.store = APP.state.store, store
    yield store
    APP.state.store = old
    store.close()


def _secured(case: Any) -> bool:
    op = APP.openapi()["paths"][case.operation.path][case.operation.method.lower()]
    return bool(op.get("security"))


def _refused_without_credential(ctx: Any, response: Any, case: Any) -> bool | None:
    """No credential: an operation that declares `security` must never answer with data."""
    if _secured(case):
        assert response.status_code >= 400, \
            f"{case.operation.label} answered {response.status_code} to a request without a credential"
    return None


# 40 generated cases per operation and mode, on top of the explicit examples and coverage cases; no
# deadline (per-request time is not what this checks); derandomized and no example database, so CI runs
# the same cases every time. Only `too_slow` is suppressed: it times Schemathesis's own case generation,
# which says nothing about the API and depends on how loaded the CI machine is.
_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@schema.parametrize()
@_SETTINGS
def test_api_conforms_with_analyst_credential(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {_CREDS['analyst']}"},
                           additional_checks=[_error_shape])


@schema.parametrize()
@_SETTINGS
def test_api_conforms_without_credential(case: Any) -> None:
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
    case.call_and_validate(additional_checks=[_error_shape, _refused_without_credential])
