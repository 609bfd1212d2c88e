"""The adapters in the decoder (ingest/decode.py `EventDecoder`): chosen by input topic or for every record,
their output validated like a gatewatch record, gatewatch's own records untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest.adapters import DEFAULT_ORIGINS, FORMATS, Origin, bind
from ingest.decode import EventDecoder
from ingest.errors import RecordError
from ingest.events import AccessRecord, Source
from tests.conftest import T0
from tests.events import access, raw, token_event
from tests.ingest.adapter_cases import samples

ENVOY = json.dumps(samples("envoy")[0]).encode()
OWN = raw(access("e1", T0))


def test_the_registry() -> None:
    assert set(FORMATS) == {"gatewatch", "envoy", "kong", "aws_apigw"} and FORMATS["gatewatch"] is None
    assert set(DEFAULT_ORIGINS) == set(FORMATS) - {"gatewatch"}
    assert bind("gatewatch") is None
    with pytest.raises(KeyError):
        bind("nginx")


def test_by_topic_only_the_named_topic_is_adapted() -> None:
    d = EventDecoder(validator=None, max_event_bytes=65_536, formats={"envoy.access": bind("envoy")})
    assert d.decode(ENVOY, Source("envoy.access", 0, 1)).record.event_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"
    assert d.decode(OWN, Source("gateway.access", 0, 1)).record.event_id == "e1"
    assert d.decode(OWN).record.event_id == "e1"  # no source: gatewatch's own
    with pytest.raises(RecordError) as err:  # an Envoy line on a gatewatch topic: the contract's schema
        d.decode(ENVOY, Source("gateway.access", 0, 2))
    assert err.value.code == "schema"
    with pytest.raises(RecordError):  # a gatewatch record on the Envoy topic: not Envoy's keys
        d.decode(OWN, Source("envoy.access", 0, 3))


def test_every_record_overrides_the_topics() -> None:
    d = EventDecoder(validator=None, max_event_bytes=65_536, formats={"t": bind("kong")},
                     every=bind("envoy"))
    assert d.decode(ENVOY, Source("t", 0, 1)).record.method == "POST"
    d.set_formats({})
    assert d.decode(OWN, Source("t", 0, 1)).record.event_id == "e1"


def test_a_token_event_topic_stays_gatewatch() -> None:
    d = EventDecoder(validator=None, max_event_bytes=65_536, formats={"gateway.access": bind("envoy")})
    ev = d.decode(raw(token_event("t1", T0, "revoked", jti="j")), Source("gateway.tokens", 0, 1))
    assert ev.kind == "token"


@pytest.mark.parametrize("payload, code", [
    (b"x" * 70_000, "oversize"),
    (b"\xff{}", "not_json"),
    (b"{not json", "not_json"),
    (b"[" * 10_000 + b"]" * 10_000, "not_json"),
    (b"[1, 2]", "schema"),
    (b'"a string"', "schema"),
    (b"{}", "missing_field"),
])
def test_the_raw_record_rules_hold_for_adapted_records(payload: bytes, code: str) -> None:
    d = EventDecoder(validator=None, max_event_bytes=65_536, every=bind("envoy"))
    with pytest.raises(RecordError) as err:
        d.decode(payload)
    assert err.value.code == code


def test_the_event_is_validated_and_timed_like_a_gatewatch_record(validator: Any) -> None:
    d = EventDecoder(validator=validator, max_event_bytes=65_536, every=bind("envoy"))
    ev = d.decode(ENVOY, Source("f", 0, 1))
    assert isinstance(ev.record, AccessRecord) and ev.ts == pytest.approx(1460751420.31)
    assert ev.token is not None and ev.token.verdict == "malformed"  # the sample's placeholder token, validated
    assert ev.source == Source("f", 0, 1)


def test_an_adapter_that_raises_anything_else_dead_letters_the_record() -> None:
    def broken(obj: Any) -> dict[str, Any]:
        raise ZeroDivisionError("bug")

    d = EventDecoder(validator=None, max_event_bytes=65_536, every=broken)
    with pytest.raises(RecordError) as err:
        d.decode(ENVOY)
    assert err.value.code == "schema" and "ZeroDivisionError" in str(err.value)


def test_an_adapter_returning_a_wrong_shape_is_a_schema_error() -> None:
    d = EventDecoder(validator=None, max_event_bytes=65_536, every=lambda obj: {"kind": "access", "status": "x"})
    with pytest.raises(RecordError) as err:
        d.decode(ENVOY)
    assert err.value.code == "schema"


def test_origin_setting_names_the_section() -> None:
    adapter = bind("aws_apigw", Origin(tenant_field="nope", gateway="g", setting="ingest.aws_apigw"))
    assert adapter is not None
    with pytest.raises(RecordError) as err:
        adapter(samples("aws_apigw")[0])
    assert str(err.value) == ("missing_field: tenant: no 'nope' in the record and [ingest.aws_apigw] tenant is "
                              "not set")
