"""ingest/adapters/kong.py: Kong's log object (the http-log plugin's body) → access event."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings as hsettings

from ingest.adapters import kong
from ingest.deadletter import DeadLetter
from ingest.errors import RecordError
from tests.ingest.adapter_cases import SECRET, adapts_or_refuses, decode, decoder, mutated, objects, refusal, samples

KEYS = ["request", "response", "started_at", "client_ip", "route", "service", "latencies", "workspace",
        "workspace_name", "consumer", "authenticated_entity", "tries", "ai", "request.headers", "request.method",
        "request.uri", "request.id", "response.status", "route.name", "ai.proxy"]


def with_(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `obj` with the member at dotted `path` set to `value` (deleted when value is ...)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def test_the_documented_sample_log_object() -> None:
    rec = decode("kong", samples("kong")[0])
    assert (rec.event_id, rec.ts, rec.tenant, rec.gateway) == (
        "2f6946328ffc4946b8c9120704a4a155", "2024-09-19T22:10:39.538Z", "default", "kong")
    assert (rec.client_ip, rec.method, rec.path, rec.status) == ("192.168.65.1", "GET", "/example-route", 200)
    assert (rec.route, rec.latency_ms, rec.bytes_in, rec.bytes_out) == ("example_route", 173.0, 139, 9982)
    assert rec.user_agent == "HTTPie/3.2.3" and rec.token is None and rec.llm is None


def test_a_redacted_authorization_header_carries_no_token() -> None:
    rec = decode("kong", samples("kong")[1])
    assert rec.token is None  # Kong's default: the header is redacted
    assert rec.path == "/orders/1234" and rec.status == 401  # query string dropped
    assert rec.event_id == "7d1c0b6a2e5f4c3b9a8d7e6f5a4b3c2d"  # no request.id: the X-Kong-Request-Id header
    assert rec.route == "orders"


def test_an_unredacted_bearer_header_and_ai_usage() -> None:
    rec = decode("kong", samples("kong")[2])
    assert rec.token == "sample-token-not-a-jwt" and rec.tenant == "globex" and rec.latency_ms == 1641.5
    assert rec.llm is not None
    assert (rec.llm.provider, rec.llm.model, rec.llm.prompt_tokens, rec.llm.completion_tokens) == (
        "openai", "gpt-4o", 28, 100)


def test_route_falls_back_to_the_service_name_and_ids_to_a_digest() -> None:
    line = with_(samples("kong")[0], "route.name", ...)
    assert decode("kong", line).route == "example_service"
    line = with_(with_(line, "request.id", ...), "response.headers", {})
    rec = decode("kong", line)
    assert rec.event_id.startswith("sha256:") and rec.event_id == decode("kong", line).event_id


@pytest.mark.parametrize("path", ["started_at", "client_ip", "request.method", "request.uri", "response.status",
                                  "request", "response"])
def test_a_missing_required_member_is_named(path: str) -> None:
    err = refusal("kong", with_(samples("kong")[0], path, ...))
    assert err.code == "missing_field", str(err)
    assert path.split(".")[0] in str(err)


@pytest.mark.parametrize("path, value, code", [
    ("started_at", "yesterday", "bad_timestamp"),
    ("started_at", 10**16, "bad_timestamp"),
    ("started_at", -10**14, "bad_timestamp"),
    ("started_at", True, "bad_timestamp"),
    ("response.status", "OK", "invalid_field"),
    ("response.status", 700, "invalid_field"),
    ("client_ip", "unix:/var/run/kong.sock", "invalid_field"),
    ("request.size", -5, "invalid_field"),
    ("latencies.request", "slow", "invalid_field"),
    ("ai.proxy.usage.prompt_tokens", "many", "invalid_field"),
    ("workspace_name", ["a"], "invalid_field"),
])
def test_bad_members_are_refused_with_their_code(path: str, value: Any, code: str) -> None:
    err = refusal("kong", with_(samples("kong")[2], path, value))
    assert err.code == code, str(err)


def test_started_at_as_digits_or_a_float() -> None:
    assert decode("kong", with_(samples("kong")[0], "started_at", "1726783839538")).ts == "2024-09-19T22:10:39.538Z"
    assert decode("kong", with_(samples("kong")[0], "started_at", 1726783839538.4)).ts == "2024-09-19T22:10:39.538Z"
    assert decode("kong", with_(samples("kong")[0], "started_at", 0)).ts == "1970-01-01T00:00:00.000Z"


def test_headers_repeated_or_odd_give_no_token() -> None:
    base = samples("kong")[2]
    for value in (["Bearer a", "Bearer b"], "REDACTED", "Basic abc", 12, None):
        assert decode("kong", with_(base, "request.headers.authorization", value)).token is None
    assert decode("kong", with_(base, "request.headers.authorization", "DPoP tok")).token == "tok"
    assert decode("kong", with_(base, "request.headers", "not an object")).user_agent is None


def test_the_tenant_is_the_workspace_name_else_the_static_tenant() -> None:
    line = with_(samples("kong")[0], "workspace_name", ...)
    err = refusal("kong", line)
    assert err.code == "missing_field" and "workspace_name" in str(err) and "[ingest.kong] tenant" in str(err)
    assert decode("kong", line, tenant="acme").tenant == "acme"
    assert decode("kong", samples("kong")[1], tenant_field="consumer.username").tenant == "mobile-app"


def test_a_batch_array_is_not_a_record() -> None:
    raw = json.dumps(samples("kong")).encode()
    with pytest.raises(RecordError) as err:
        decoder("kong").decode_record(raw)
    assert err.value.code == "schema" and "object" in str(err.value)


def test_a_token_never_reaches_a_dead_letter_reason() -> None:
    line = with_(samples("kong")[2], "request.headers.authorization", f"Bearer {SECRET}")
    for path, value in (("started_at", "x"), ("response.status", None), ("client_ip", "x"), ("request.uri", 5),
                        ("workspace_name", None), ("latencies.request", -1)):
        raw = json.dumps(with_(line, path, value)).encode()
        with pytest.raises(RecordError) as err:
            decoder("kong").decode_record(raw)
        assert SECRET not in DeadLetter.from_error(err.value, raw, None).reason


def test_module_default_origin() -> None:
    assert (kong.DEFAULT_ORIGIN.tenant_field, kong.DEFAULT_ORIGIN.gateway) == ("workspace_name", "kong")


@hsettings(max_examples=300, deadline=None)
@given(objects(KEYS))
def test_arbitrary_objects_adapt_or_are_refused(obj: dict[str, Any]) -> None:
    adapts_or_refuses("kong", obj)


@hsettings(max_examples=400, deadline=None)
@given(mutated("kong"))
def test_mutated_samples_adapt_or_are_refused(obj: dict[str, Any]) -> None:
    adapts_or_refuses("kong", obj)
