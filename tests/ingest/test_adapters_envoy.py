"""ingest/adapters/envoy.py: Envoy's JSON access log (format dictionary with gatewatch's keys) → access event."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as hsettings

from ingest.adapters import envoy
from ingest.deadletter import DeadLetter
from ingest.errors import RecordError
from tests.ingest.adapter_cases import SECRET, adapts_or_refuses, decode, decoder, mutated, objects, refusal, samples

KEYS = ["start_time", "method", "path", "response_code", "downstream_remote_address", "request_id", "duration",
        "bytes_received", "bytes_sent", "user_agent", "authorization", "nonce", "route_name", "upstream_cluster",
        "tenant", "gateway"]


def test_typed_json_format_sample_maps_every_field() -> None:
    rec = decode("envoy", samples("envoy")[0])
    assert (rec.event_id, rec.ts, rec.gateway, rec.tenant, rec.client_ip) == (
        "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2", "2016-04-15T20:17:00.310Z", "edge-envoy-1", "acme", "10.0.35.28")
    assert (rec.method, rec.path, rec.status, rec.route) == ("POST", "/api/v1/locations", 204, "locations_route")
    assert (rec.latency_ms, rec.bytes_in, rec.bytes_out, rec.user_agent) == (226.0, 154, 0, "nsq2http")
    assert rec.token == "sample-token-not-a-jwt"  # the Bearer prefix stripped


def test_untyped_json_format_strings_and_dashes() -> None:
    rec = decode("envoy", samples("envoy")[1])
    assert rec.status == 200 and rec.latency_ms == 12.0 and rec.bytes_in == 0 and rec.bytes_out == 1342
    assert rec.client_ip == "2001:db8::7"  # [IPv6]:port
    assert rec.path == "/api/v1/locations"  # the query string dropped
    assert rec.route == "locations"  # ROUTE_NAME "-": the upstream cluster
    assert rec.token is None and rec.gateway == "envoy"  # "-" is unset: the static gateway


def test_unset_values_take_the_origin_and_a_digest_id() -> None:
    line = samples("envoy")[2]
    err = refusal("envoy", line)
    assert err.code == "missing_field" and "tenant" in str(err) and "[ingest.envoy]" in str(err)
    rec = decode("envoy", line, tenant="acme")
    assert rec.tenant == "acme" and rec.gateway == "envoy" and rec.route is None and rec.status == 503
    assert rec.event_id.startswith("sha256:")
    again = decode("envoy", dict(reversed(list(line.items()))), tenant="acme")
    assert again.event_id == rec.event_id  # the same record (key order aside): the same id, a redelivery
    assert decode("envoy", {**line, "duration": 1}, tenant="acme").event_id != rec.event_id


@pytest.mark.parametrize("key", ["start_time", "method", "path", "response_code", "downstream_remote_address"])
def test_a_missing_required_key_is_named(key: str) -> None:
    for unset in (None, "-"):
        err = refusal("envoy", {**samples("envoy")[0], key: unset})
        assert err.code == "missing_field" and key in str(err)
    line = dict(samples("envoy")[0])
    del line[key]
    assert refusal("envoy", line).code == "missing_field"


@pytest.mark.parametrize("change, code", [
    ({"response_code": "abc"}, "invalid_field"),
    ({"response_code": 0}, "invalid_field"),  # the client went away before a response: status out of range
    ({"response_code": 200.5}, "invalid_field"),
    ({"response_code": True}, "invalid_field"),
    ({"bytes_sent": -1}, "invalid_field"),
    ({"bytes_sent": 2**64}, "invalid_field"),
    ({"duration": "fast"}, "invalid_field"),
    ({"method": 7}, "invalid_field"),
    ({"request_id": "x" * 300}, "invalid_field"),
    ({"downstream_remote_address": "not-an-address:80"}, "invalid_field"),
    ({"start_time": "2016-04-15 20:17:00"}, "bad_timestamp"),
    ({"start_time": "1460751420"}, "bad_timestamp"),
    ({"path": "?only=query"}, "invalid_field"),
    ({"tenant": 42}, "invalid_field"),
    ({"route_name": ["a"]}, "invalid_field"),
])
def test_bad_values_are_refused_with_their_code(change: dict[str, object], code: str) -> None:
    err = refusal("envoy", {**samples("envoy")[0], **change})
    assert err.code == code, str(err)


@pytest.mark.parametrize("header, token", [
    ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer   abc ", "abc"), ("DPoP abc", "abc"), ("Bearer", None),
    ("Bearer  ", None), ("Basic dXNlcjpwYXNz", None), ("abc.def.ghi", None), (None, None), ("-", None), (17, None),
])
def test_the_token_is_the_bearer_or_dpop_credential_only(header: object, token: str | None) -> None:
    assert decode("envoy", {**samples("envoy")[0], "authorization": header}).token == token


def test_the_client_address_without_its_port() -> None:
    for addr, ip in [("10.0.0.1:80", "10.0.0.1"), ("[2001:db8::1]:443", "2001:db8::1"), ("10.0.0.1", "10.0.0.1"),
                     ("2001:db8::1", "2001:db8::1"), ("[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1")]:
        assert decode("envoy", {**samples("envoy")[0], "downstream_remote_address": addr}).client_ip == ip


def test_tenant_and_gateway_keys_are_configurable() -> None:
    line = {**samples("envoy")[0], "x_tenant": "globex", "hostname": "node-7"}
    rec = decode("envoy", line, tenant_field="x_tenant", gateway_field="hostname")
    assert (rec.tenant, rec.gateway) == ("globex", "node-7")
    rec = decode("envoy", line, tenant_field="", tenant="static", gateway_field="")
    assert (rec.tenant, rec.gateway) == ("static", "envoy")


def test_a_token_never_reaches_a_dead_letter_reason() -> None:
    line = {**samples("envoy")[0], "authorization": f"Bearer {SECRET}"}
    for change in ({"response_code": "x"}, {"start_time": "bad"}, {"method": None}, {"tenant": None},
                   {"downstream_remote_address": "x"}, {"response_code": 999}, {"request_id": 5}):
        raw = json.dumps({**line, **change}).encode()
        with pytest.raises(RecordError) as err:
            decoder("envoy").decode_record(raw)
        dead = DeadLetter.from_error(err.value, raw, None)  # as the pipeline dead-letters it
        assert SECRET not in dead.reason and SECRET.encode() in dead.original


def test_module_default_origin_is_what_the_docs_say() -> None:
    assert (envoy.DEFAULT_ORIGIN.tenant, envoy.DEFAULT_ORIGIN.tenant_field) == ("", "tenant")
    assert (envoy.DEFAULT_ORIGIN.gateway, envoy.DEFAULT_ORIGIN.gateway_field) == ("envoy", "gateway")


@hsettings(max_examples=300, deadline=None)
@given(objects(KEYS))
def test_arbitrary_objects_adapt_or_are_refused(obj: dict[str, object]) -> None:
    adapts_or_refuses("envoy", obj)


@hsettings(max_examples=300, deadline=None)
@given(mutated("envoy"))
def test_mutated_samples_adapt_or_are_refused(obj: dict[str, object]) -> None:
    adapts_or_refuses("envoy", obj)
