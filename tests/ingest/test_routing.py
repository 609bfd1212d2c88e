"""Routing keys and the wire form of normalised events (ingest/routing.py)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.decode import EventDecoder
from ingest.events import Source
from ingest.routing import FramePacker, decode_frame, partition_of, principal_key, side_keys
from tests.conftest import T0
from tests.events import access, raw, token_event


@pytest.fixture
def decoder(validator):
    return EventDecoder(validator=validator, max_event_bytes=65_536)


def test_an_event_round_trips_without_its_raw_token(decoder, minter) -> None:
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 900, "iat": T0, "jti": "j-1"})
    ev = decoder.decode(raw(access("e1", T0, token=tok, nonce="n-1", llm={"prompt_tokens": 5})),
                        Source("gateway.access", 3, 42))
    [(_, _, wire)] = _packer(side=frozenset()).pack([ev], None)  # alone: one frame, on its principal's partition
    assert tok.encode() not in wire and b"alice" in wire  # claims travel, the token does not
    [(_, back)] = decode_frame(wire).entries
    assert back.record.token is None and back.ts == ev.ts
    # the token as detectors read it: named claims, signed or not, alg; not the claim set and header
    assert back.token == replace(ev.token, claims={}, header={"alg": ev.token.header["alg"]})
    assert back.token.signed and back.token.ok and back.token.sub == "alice" and back.token.identity
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


def _packer(side=frozenset({"ip", "tenant", "nonce", "jti", "client"}), **kw) -> FramePacker:
    return FramePacker(events_partitions=4, keyed_partitions=3, side_kinds=side, **kw)


def _unpacked(frames):
    """(stream, partition) -> [(kinds, event id)], and -> marks of its last frame."""
    entries, marks = {}, {}
    for stream, p, data in frames:
        frame = decode_frame(data)
        entries.setdefault((stream, p), []).extend((kinds, ev.event_id) for kinds, ev in frame.entries)
        marks[(stream, p)] = frame.marks
    return entries, marks


def test_a_batch_packs_into_one_frame_per_partition_each_event_routed_by_its_keys(decoder, minter) -> None:
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 900, "iat": T0, "jti": "j-1"})
    events = [decoder.decode(raw(access(f"e{i}", T0 + i, token=tok, nonce=f"n-{i}", client_ip=f"198.51.100.{i}")),
                             Source("gateway.access", 0, i)) for i in range(20)]
    events.append(decoder.decode(raw(token_event("t1", T0 + 30, "revoked", jti="j-1")), None))  # no principal
    marks = {"gateway.access/0": (T0 + 30.0, False)}
    frames = _packer().pack(events, marks)
    entries, last_marks = _unpacked(frames)
    assert len(frames) == 4 + 3  # one per partition of each stream: the marks reach every one
    assert all(m == marks for m in last_marks.values())
    alice = partition_of("sub:alice", 4)
    assert [e for _, e in entries[("events", alice)]] == [f"e{i}" for i in range(20)] + ["t1"]
    assert all(entries[("events", p)] == [(("principal",), "t1")] for p in range(4) if p != alice)  # broadcast
    for ev in events[:20]:  # every side key of every event on its own key's partition, once per kind
        for kind, key in side_keys(ev):
            p = partition_of(f"{kind}\x1f{key}", 3)
            assert sum(kind in kinds for kinds, eid in entries[("keyed", p)] if eid == ev.event_id) == 1
    # an event decoded from a frame is the event, without its raw token
    back = decode_frame(next(d for s, p, d in frames if (s, p) == ("events", alice))).entries[0][1]
    assert back.token.tfp == events[0].token.tfp and back.token.sub == "alice"
    assert back.record.token is None and back.source == events[0].source


def test_frames_split_past_the_size_cap_and_only_the_last_carries_the_marks(decoder) -> None:
    events = [decoder.decode(raw(access(f"e{i}", T0 + i, client_ip="203.0.113.9")), None) for i in range(50)]
    frames = _packer(side=frozenset(), max_frame_bytes=2_000).pack(events, {"s/0": (T0, True)})
    mine = [decode_frame(d) for s, p, d in frames if (s, p) == ("events", partition_of("ip:203.0.113.9", 4))]
    assert len(mine) > 2 and all(len(f.entries) for f in mine)
    assert [f.marks for f in mine] == [None] * (len(mine) - 1) + [{"s/0": (T0, True)}]
    assert [ev.event_id for f in mine for _, ev in f.entries] == [f"e{i}" for i in range(50)]
    assert {s for s, _, _ in frames} == {"events"}  # no side kinds asked for: nothing on the side stream
    assert _packer().pack(events[:1], None) and all(decode_frame(d).marks is None
                                                    for _, _, d in _packer().pack(events[:1], None))


@given(st.binary(max_size=200))
def test_foreign_bytes_never_decode_into_a_frame_silently(data) -> None:
    try:
        frame = decode_frame(data)
    except (ValueError, TypeError):
        return
    assert all(ev.record.event_id is not None for _, ev in frame.entries)
