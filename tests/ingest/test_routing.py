"""Routing keys and the wire form of normalised events (ingest/routing.py)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.decode import EventDecoder
from ingest.events import Source
from ingest.routing import decode_event, encode_event, principal_key, side_keys
from tests.conftest import T0
from tests.events import access, raw, token_event


@pytest.fixture
def decoder(validator):
    return EventDecoder(validator=validator, max_event_bytes=65_536)


def test_an_event_round_trips_without_its_raw_token(decoder, minter) -> None:
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 900, "iat": T0, "jti": "j-1"})
    ev = decoder.decode(raw(access("e1", T0, token=tok, nonce="n-1", llm={"prompt_tokens": 5})),
                        Source("gateway.access", 3, 42))
    wire = encode_event(ev)
    assert tok.encode() not in wire and b"alice" in wire  # claims travel, the token does not
    back = decode_event(wire)
    assert back.record.token is None and back.token == ev.token and back.ts == ev.ts
    assert back.source == Source("gateway.access", 3, 42)  # the original position: redeliveries stay visible
    assert msgspec.structs.replace(ev.record, token=None) == back.record


def test_keys_follow_the_principal_and_each_side_kind(decoder, minter) -> None:
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 900, "iat": T0, "jti": "j-1"})
    ev = decoder.decode(raw(access("e1", T0, token=tok, nonce="n-1", client_ip="198.51.100.4")), None)
    assert principal_key(ev) == "sub:alice"
    assert dict(side_keys(ev)) == {"ip": "198.51.100.4", "client": "spa", "tenant": "acme",
                                   "nonce": "acme\x1fn-1", "jti": "https://idp.example\x1fj-1"}
    assert side_keys(ev, frozenset({"ip"})) == [("ip", "198.51.100.4")]
    anonymous = decoder.decode(raw(access("e2", T0, client_ip="203.0.113.9")), None)
    assert principal_key(anonymous) == "ip:203.0.113.9"


def test_token_events_route_by_subject_or_are_broadcast(decoder) -> None:
    named = decoder.decode(raw(token_event("t1", T0, "revoked", jti="j-1", sub="alice")), None)
    assert principal_key(named) == "sub:alice" and side_keys(named) == []
    nameless = decoder.decode(raw(token_event("t2", T0, "revoked", jti="j-1")), None)
    assert principal_key(nameless) is None  # no one to route by: every partition gets it


@given(st.binary(max_size=200))
def test_foreign_bytes_never_decode_into_an_event_silently(data) -> None:
    try:
        ev = decode_event(data)
    except (ValueError, TypeError):
        return
    assert ev.record.event_id is not None  # decoded only if it really is the wire form
