"""Routing keys and the wire form of normalised events (DESIGN.md "State, partitions and scale-out").

Every stateful detector keeps state per some key; all events with the same key must reach the same
partition, hence the same worker. The **principal** key (token subject, else token fingerprint, else
client IP) carries the whole event on `gatewatch.events`; the other key kinds a detector may need go
to one side topic (`gatewatch.events.by_key`) as one record per (kind, key):

    ip      the client address            per-IP rates, refused-token bursts, allow-lists, IP windows
    client  the token's client_id         per-client rates, plain-JWS clients, client windows
    tenant  the tenant                    per-tenant rates and windows
    jti     the token's (issuer, jti)     one jti carried by different tokens
    nonce   the tenant and nonce          a nonce replayed from another address, with or without a token

A token event with neither a `sub` nor a token has no principal: it is broadcast to every partition
of `gatewatch.events`, so whichever worker holds the affected tokens sees it.

Normalised events travel as msgpack without the raw token (only what the validator made of it), with
their **original** source (input topic, partition, offset): a record re-published after a crash of the
ingest stage is then recognised downstream as a redelivery, not as a replay.

**Source watermarks.** Several ingest workers publish onto the same partitions, each aligned only on
its own input partitions, so one re-keyed partition interleaves their records by publish time, not
event time. After each published batch (and every few seconds when idle) an ingest worker writes a
watermark record to every re-keyed partition: for each input partition it owns, the event time up to
which it has published everything, or "idle" (caught up, nothing held). The detect stage releases
an event only once every input partition's watermark has passed it (gatewatch/alignment.py), so a
slow ingest worker holds the detectors back instead of having its events arrive late. A watermark
record is told apart by its `wm` header.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgspec

from ingest.events import AccessRecord, Event, Record, Source
from ingest.tokens import TokenInfo

PRINCIPAL = "principal"
SIDE_KINDS: tuple[str, ...] = ("ip", "client", "tenant", "jti", "nonce")
KEY_KINDS: tuple[str, ...] = (PRINCIPAL, *SIDE_KINDS)


def principal_key(event: Event) -> str | None:
    """The principal of DESIGN.md; None for a token event that names no one (broadcast)."""
    info = event.token
    if info is not None and info.sub is not None:
        return f"sub:{info.sub}"
    rec = event.record
    sub = getattr(rec, "sub", None)
    if sub is not None:
        return f"sub:{sub}"
    if info is not None:
        return f"tfp:{info.tfp}"
    if isinstance(rec, AccessRecord):
        return f"ip:{rec.client_ip}"
    return None


def side_keys(event: Event, kinds: tuple[str, ...] | frozenset[str] = SIDE_KINDS) -> list[tuple[str, str]]:
    """(kind, key) pairs of this event for the side topic, for the kinds asked for."""
    rec = event.record
    info = event.token
    out: list[tuple[str, str]] = []
    if isinstance(rec, AccessRecord):
        if "ip" in kinds:
            out.append(("ip", rec.client_ip))
        if "client" in kinds and info is not None:
            out.append(("client", info.client_id or "(none)"))
        if "tenant" in kinds:
            out.append(("tenant", rec.tenant))
        if "nonce" in kinds and rec.nonce is not None:
            out.append(("nonce", f"{rec.tenant}\x1f{rec.nonce}"))
    if "jti" in kinds and info is not None and info.jti is not None:
        out.append(("jti", f"{info.iss}\x1f{info.jti}"))
    return out


WATERMARK_HEADER = "wm"


class SourceWatermarks(msgspec.Struct, array_like=True):
    """Per input partition ("topic/partition"): (event time published up to, idle)."""
    marks: dict[str, tuple[float, bool]]


def source_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


_wm_encoder = msgspec.msgpack.Encoder()
_wm_decoder = msgspec.msgpack.Decoder(SourceWatermarks)


def encode_watermarks(marks: dict[str, tuple[float, bool]]) -> bytes:
    return _wm_encoder.encode(SourceWatermarks(marks=marks))


def decode_watermarks(data: bytes) -> SourceWatermarks:
    """Raises msgspec.DecodeError (a ValueError) on foreign bytes."""
    return _wm_decoder.decode(data)


class _Wire(msgspec.Struct, array_like=True):
    record: Record
    ts: float
    token: dict[str, Any] | None
    source: tuple[str, int, int] | None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


def encode_event(event: Event) -> bytes:
    record = event.record
    if record.token is not None:  # the raw token never leaves ingest; TokenInfo says what it was
        record = msgspec.structs.replace(record, token=None)
    src = event.source
    return _encoder.encode(_Wire(record=record, ts=event.ts,
                                 token=None if event.token is None else asdict(event.token),
                                 source=None if src is None else (src.topic, src.partition, src.offset)))


def decode_event(data: bytes) -> Event:
    """The inverse of `encode_event`; raises msgspec.DecodeError (a ValueError) on foreign bytes."""
    wire = _decoder.decode(data)
    return Event(record=wire.record, ts=wire.ts,
                 token=None if wire.token is None else TokenInfo(**wire.token),
                 source=None if wire.source is None else Source(*wire.source))
