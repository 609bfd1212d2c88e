"""ingest/adapters/aws_apigw.py: Amazon API Gateway's JSON access log ($context variables) → access event."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings as hsettings

from ingest.adapters import aws_apigw
from tests.ingest.adapter_cases import adapts_or_refuses, decode, mutated, objects, refusal, samples

KEYS = ["requestId", "requestTime", "requestTimeEpoch", "httpMethod", "path", "resourcePath", "routeKey", "status",
        "ip", "identity.sourceIp", "identity", "identity.userAgent", "userAgent", "responseLatency",
        "integrationLatency", "responseLength", "apiId", "stage", "tenant"]


def test_the_rest_api_example_format() -> None:
    rec = decode("aws_apigw", samples("aws_apigw")[0], tenant="acme")
    assert (rec.event_id, rec.ts, rec.client_ip, rec.method) == (
        "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "2015-04-09T12:34:56+00:00", "192.0.2.10", "GET")
    assert (rec.path, rec.route, rec.status, rec.bytes_out) == ("/pets/{petId}", "/pets/{petId}", 200, 1145)
    assert (rec.tenant, rec.gateway, rec.token) == ("acme", "aws-apigw", None)  # no apiId: the static gateway


def test_the_http_api_example_format() -> None:
    rec = decode("aws_apigw", samples("aws_apigw")[1], tenant="acme")
    assert rec.path == "/v1/chat/completions" and rec.route == "POST /v1/chat/completions"  # path from routeKey
    assert rec.status == 429 and rec.bytes_out is None  # "-": absent
    assert rec.ts == "2026-11-28T10:00:00+01:00"


def test_every_variable_named_after_its_context_variable() -> None:
    rec = decode("aws_apigw", samples("aws_apigw")[2])
    assert (rec.ts, rec.client_ip, rec.user_agent) == ("2026-11-18T11:06:40.123Z", "2001:db8::10",
                                                       "python-requests/2.32.3")
    assert (rec.path, rec.route, rec.latency_ms, rec.bytes_out) == ("/prod/pets/42", "/pets/{petId}", 42.0, 512)
    assert (rec.tenant, rec.gateway) == ("globex", "a1b2c3d4e5")  # the tenant key and the apiId


def test_flat_dotted_keys_and_fallbacks() -> None:
    line = {**samples("aws_apigw")[0], "identity.sourceIp": "203.0.113.9", "identity.userAgent": "ua/1",
            "integrationLatency": "7.5", "requestTimeEpoch": "1428582896789"}
    del line["ip"]
    rec = decode("aws_apigw", line, tenant="acme")
    assert (rec.client_ip, rec.user_agent, rec.latency_ms) == ("203.0.113.9", "ua/1", 7.5)
    assert rec.ts == "2015-04-09T12:34:56.789Z"  # the epoch wins over the CLF time


@pytest.mark.parametrize("key, named", [("requestTime", "requestTimeEpoch (or requestTime)"), ("httpMethod", "httpMethod"),
                                        ("ip", "ip (or identity.sourceIp)"), ("status", "status"),
                                        ("resourcePath", "path (or resourcePath, routeKey)")])
def test_a_missing_variable_is_named(key: str, named: str) -> None:
    line = {k: v for k, v in samples("aws_apigw")[0].items() if k != key}
    err = refusal("aws_apigw", line, tenant="acme")
    assert err.code == "missing_field" and named in str(err)


@pytest.mark.parametrize("change, code", [
    ({"requestTime": "2015-04-09T12:34:56Z"}, "bad_timestamp"),
    ({"requestTime": "09/Foo/2015:12:34:56 +0000"}, "bad_timestamp"),
    ({"requestTime": "31/Feb/2015:12:34:56 +0000"}, "bad_timestamp"),  # the decoder checks the date
    ({"requestTimeEpoch": "soon"}, "bad_timestamp"),
    ({"status": "2OO"}, "invalid_field"),
    ({"status": "99"}, "invalid_field"),
    ({"ip": "192.0.2.300"}, "invalid_field"),
    ({"responseLength": "1.5k"}, "invalid_field"),
    ({"responseLatency": -3}, "invalid_field"),
    ({"httpMethod": {"m": 1}}, "invalid_field"),
])
def test_bad_values_are_refused_with_their_code(change: dict[str, Any], code: str) -> None:
    err = refusal("aws_apigw", {**samples("aws_apigw")[0], **change}, tenant="acme")
    assert err.code == code, str(err)


def test_no_tenant_is_refused_not_guessed() -> None:
    err = refusal("aws_apigw", samples("aws_apigw")[0])
    assert err.code == "missing_field" and "[ingest.aws_apigw] tenant" in str(err)
    claims = {**samples("aws_apigw")[0], "authorizer": {"claims": {"tid": "initech"}}}
    assert decode("aws_apigw", claims, tenant_field="authorizer.claims.tid").tenant == "initech"


def test_module_default_origin() -> None:
    o = aws_apigw.DEFAULT_ORIGIN
    assert (o.tenant, o.tenant_field, o.gateway, o.gateway_field) == ("", "tenant", "aws-apigw", "apiId")


@hsettings(max_examples=300, deadline=None)
@given(objects(KEYS))
def test_arbitrary_objects_adapt_or_are_refused(obj: dict[str, Any]) -> None:
    adapts_or_refuses("aws_apigw", obj)


@hsettings(max_examples=300, deadline=None)
@given(mutated("aws_apigw"))
def test_mutated_samples_adapt_or_are_refused(obj: dict[str, Any]) -> None:
    adapts_or_refuses("aws_apigw", obj)


def test_the_contracts_example_format_adapts() -> None:
    """The log format CONTRACT.md §1 gives for API Gateway, rendered as API Gateway would, is read whole."""
    contract = (Path(__file__).resolve().parents[2] / "docs" / "CONTRACT.md").read_text(encoding="utf-8")
    section = contract[contract.index("**Amazon API Gateway**"):]
    template = section[section.index("```json") + 7:section.index("```", section.index("```json") + 7)]
    values = {"requestId": "r-1", "requestTimeEpoch": "1795000000123", "httpMethod": "POST", "path": "/prod/v1/chat",
              "routeKey": "POST /v1/chat", "status": "201", "identity.sourceIp": "198.51.100.7",
              "identity.userAgent": "ua/2", "responseLatency": "-", "responseLength": "77", "apiId": "abc123",
              "authorizer.claims.tid": "acme"}
    rendered = re.sub(r"\$context\.([A-Za-z.]+)", lambda m: values[m.group(1)], template)
    rec = decode("aws_apigw", json.loads(rendered))
    assert (rec.event_id, rec.ts, rec.method, rec.path, rec.route, rec.status) == (
        "r-1", "2026-11-18T11:06:40.123Z", "POST", "/prod/v1/chat", "POST /v1/chat", 201)
    assert (rec.client_ip, rec.user_agent, rec.latency_ms, rec.bytes_out, rec.gateway, rec.tenant) == (
        "198.51.100.7", "ua/2", None, 77, "abc123", "acme")
