"""ingest/syslog.py: nginx's syslog datagrams → CONTRACT.md §1 access events; anything else → RecordError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import decode_record
from ingest.errors import RecordError
from ingest.events import AccessRecord
from ingest.syslog import access_event, normalise, parse_frame

# A line as nginx 1.22 sends it for the log_format `gatewatch nginx-config` renders (captured, token replaced).
LINE = {"kind": "access", "event_id": "48916646a3f13ac246819ef0bd0fc8b8", "msec": "1796319712.077",
        "gateway": "edge-1", "tenant": "acme", "client_ip": "203.0.113.7", "method": "GET", "path": "/api/orders/7",
        "status": "200", "route": "orders", "request_time": "0.012", "bytes_in": "412", "bytes_out": "187",
        "user_agent": "orders-app/1.0", "token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "nonce": "n-1"}


def frame(message: bytes, header: bytes = b"<190>Dec  3 17:41:52 gatewatch: ") -> bytes:
    return header + message


def event(line: dict[str, object]) -> dict[str, object]:
    out = json.loads(access_event(frame(json.dumps(line).encode())))
    assert isinstance(decode_record(json.dumps(out).encode(), 65_536)[0], AccessRecord)
    return out


def test_a_line_from_nginx_becomes_the_contract_event() -> None:
    assert event(LINE) == {
        "kind": "access", "event_id": "48916646a3f13ac246819ef0bd0fc8b8", "gateway": "edge-1", "tenant": "acme",
        "client_ip": "203.0.113.7", "method": "GET", "path": "/api/orders/7",
        "ts": "2026-12-03T17:41:52.065Z",  # $msec (the end) minus $request_time: when the request came in
        "status": 200, "route": "orders", "user_agent": "orders-app/1.0",
        "token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "nonce": "n-1", "latency_ms": 12.0,
        "bytes_in": 412, "bytes_out": 187}


def test_empty_optional_fields_are_dropped_not_sent_as_empty_strings() -> None:
    out = event({**LINE, "token": "", "nonce": "", "user_agent": "", "route": "", "request_time": "",
                 "bytes_in": "-"})
    assert not {"token", "nonce", "user_agent", "route", "latency_ms", "bytes_in"} & set(out)
    assert out["ts"] == "2026-12-03T17:41:52.077Z" and out["bytes_out"] == 187


def test_the_query_string_and_the_bearer_scheme_never_get_through() -> None:
    out = event({**LINE, "path": "/api?access_token=SECRET&x=1", "token": "Bearer  abc.def.ghi"})
    assert out["path"] == "/api" and out["token"] == "abc.def.ghi"
    assert "token" not in event({**LINE, "token": "bearer "})


def test_bytes_that_are_not_utf8_do_not_lose_the_request() -> None:
    raw = frame(json.dumps({**LINE, "path": "/a/PLACEHOLDER"}).encode().replace(b"PLACEHOLDER", b"x\xff\xfe"))
    assert json.loads(access_event(raw))["path"] == "/a/x\ufffd\ufffd"


def test_given_ts_and_latency_are_kept_and_msec_is_exact() -> None:
    out = event({**LINE, "ts": "2026-12-03T17:00:00.5+01:00", "latency_ms": 3.25})
    assert out["ts"] == "2026-12-03T17:00:00.5+01:00" and out["latency_ms"] == 3.25
    out = event({**LINE, "msec": "1796319712.001", "request_time": "0.002"})  # crosses the second
    assert out["ts"] == "2026-12-03T17:41:51.999Z"


def test_frames_with_a_hostname_and_other_tags() -> None:
    body = json.dumps(LINE).encode()
    assert parse_frame(frame(body, b"<190>Dec  3 17:41:52 edge-host gatewatch: ")) == body
    assert parse_frame(frame(body, b"<134>Dec 13 07:01:02 mytag: "), tag=None) == body
    with pytest.raises(RecordError, match="tag 'mytag' is not 'gatewatch'"):
        parse_frame(frame(body, b"<134>Dec 13 07:01:02 mytag: "))


@pytest.mark.parametrize(("datagram", "code"), [
    (b"", "not_json"),
    (b"plain text", "not_json"),
    (b"<999>Dec  3 17:41:52 gatewatch: {}", "not_json"),
    (b"<190>Foo  3 17:41:52 gatewatch: {}", "not_json"),
    (b"<190>Dec  3 17:41:52 gatewatch {}", "not_json"),
    (b"<190>Dec  3 17:41:52 a b gatewatch: {}", "not_json"),
    (b"<190>Dec  3 17:41:52 gatewatch: {not json", "not_json"),
    (b"<190>Dec  3 17:41:52 gatewatch: [1, 2]", "schema"),
    (b'<190>Dec  3 17:41:52 gatewatch: {"kind": "token"}', "schema"),
    (b'<190>Dec  3 17:41:52 gatewatch: {"event_id": "e"}', "schema"),
    (b'<190>Dec  3 17:41:52 gatewatch: "\\ud800"', "schema"),
])
def test_what_is_not_a_line_is_refused_with_a_code(datagram: bytes, code: str) -> None:
    with pytest.raises(RecordError) as info:
        access_event(datagram)
    assert info.value.code == code


@pytest.mark.parametrize(("change", "code"), [
    ({"status": "abc"}, "schema"), ({"status": "999"}, "invalid_field"), ({"status": ""}, "schema"),
    ({"client_ip": "not-an-ip"}, "invalid_field"), ({"tenant": ""}, "schema"), ({"event_id": ""}, "schema"),
    ({"event_id": "x" * 300}, "invalid_field"), ({"msec": "soon"}, "schema"),
    ({"msec": "1.000", "request_time": "99999999999"}, "bad_timestamp"),
    ({"request_time": "-1"}, "schema"), ({"bytes_in": "1.5"}, "schema"), ({"token": 7}, "schema"),
    ({"kind": "token"}, "schema"), ({"method": None}, "schema"), ({"latency_ms": float("nan")}, "schema"),
    ({"ts": "yesterday"}, "bad_timestamp"), ({"llm": {"prompt_tokens": "many"}}, "schema"),
    ({"user_agent": "x" * 70_000}, "oversize"),
])
def test_a_bad_field_is_refused_with_the_decoders_code(change: dict[str, object], code: str) -> None:
    with pytest.raises(RecordError) as info:
        access_event(frame(json.dumps({**LINE, **change}).encode()), max_event_bytes=65_536)
    assert info.value.code == code


def test_an_oversize_datagram_is_refused_before_parsing() -> None:
    with pytest.raises(RecordError) as info:
        access_event(frame(b"x" * 70_000), max_event_bytes=65_536)
    assert info.value.code == "oversize"


def test_normalise_leaves_out_fields_the_contract_does_not_name() -> None:
    out = normalise({**LINE, "upstream_status": "502", "cookie": "session=1"})
    assert "upstream_status" not in out and "cookie" not in out


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_nothing_but_record_error(data: bytes) -> None:
    for datagram in (data, b"<190>Dec  3 17:41:52 gatewatch: " + data):
        try:
            access_event(datagram)
        except RecordError:
            pass


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                    st.sampled_from(["", "-", "200", "0.003", "1796319712.077", "Bearer x", "::1", "access"]),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted({*LINE, "ts", "latency_ms", "llm"})), _values, max_size=8))
def test_any_line_is_an_event_the_strict_decoder_takes_or_a_record_error(change: dict[str, object]) -> None:
    try:
        raw = access_event(frame(json.dumps({**LINE, **change}).encode()))
    except RecordError:
        return
    record, _ = decode_record(raw, 65_536)
    assert isinstance(record, AccessRecord)
    assert record.token != "" and record.nonce != "" and "?" not in record.path
