"""Routing keys and the wire form of normalised events (DESIGN.md "State, partitions and scale-out").

Every stateful detector keeps state per some key; all events with the same key must reach the same
partition, hence the same worker. The **principal** key (token subject, else token fingerprint, else
client IP) carries the whole event on `gatewatch.events`; the other key kinds a detector may need go
to one side topic (`gatewatch.events.by_key`):

    ip      the client address            per-IP rates, refused-token bursts, allow-lists, IP windows
    client  the token's client_id         per-client rates, plain-JWS clients, client windows
    tenant  the tenant                    per-tenant rates and windows
    jti     the token's (issuer, jti)     one jti carried by different tokens
    nonce   the tenant and nonce          a nonce replayed from another address, with or without a token

A token event with neither a `sub` nor a token has no principal: it is broadcast to every partition
of `gatewatch.events`, so whichever worker holds the affected tokens sees it.

Normalised events travel as msgpack without the raw token (only what the validator made of it, less
the claims and header fields no detector reads), with
their **original** source (input topic, partition, offset): a record re-published after a crash of the
ingest stage is then recognised downstream as a redelivery, not as a replay.

**Frames.** A re-keyed record is a frame: the events of one published batch bound for one partition,
each with the key kinds it is there for (`FramePacker`). The partition is `partition_of(key)`, chosen
by the ingest stage, not by Kafka's partitioner.

**Source watermarks.** Several ingest workers publish onto the same partitions, each aligned only on
its own input partitions, so one re-keyed partition interleaves their records by publish time, not
event time. Each published batch's frames (and, every few seconds when idle, an empty frame) carry
the ingest worker's source watermarks to every re-keyed partition: for each input partition it owns,
the event time up to which it has published everything, or "idle" (caught up, nothing held). The
detect stage releases an event only once every input partition's watermark has passed it
(gatewatch/alignment.py), so a slow ingest worker holds the detectors back instead of having its
events arrive late.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import NamedTuple

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


class _Wire(msgspec.Struct, array_like=True):
    record: Record
    ts: float
    token: TokenInfo | None
    source: tuple[str, int, int] | None


def _slim(info: TokenInfo) -> TokenInfo:
    """What detectors read of a token: its named claims, whether it was signed (`claims` not None) and
    its `alg` — not the whole claim set and header, which made up half of a re-keyed entry's bytes."""
    header = info.header
    if info.claims is None and header is None:
        return info
    alg = None if header is None else header.get("alg")
    return replace(info, claims=None if info.claims is None else {},
                   header=None if header is None else ({} if alg is None else {"alg": alg}))


def _wire(event: Event, slimmed: dict[int, TokenInfo] | None = None) -> _Wire:
    """`slimmed`: slim copies by id of the token info, for a batch whose events all stay alive meanwhile
    (one token is on many events: `replace` costs ≈ 5 µs)."""
    record = event.record
    if record.token is not None:  # the raw token never leaves ingest; TokenInfo says what it was
        record = msgspec.structs.replace(record, token=None)
    src = event.source
    info = event.token
    if info is not None:
        if slimmed is None:
            info = _slim(info)
        else:
            slim = slimmed.get(id(info))
            if slim is None:
                slim = slimmed[id(info)] = _slim(info)
            info = slim
    return _Wire(record=record, ts=event.ts, token=info,
                 source=None if src is None else (src.topic, src.partition, src.offset))


def _event(wire: _Wire) -> Event:
    return Event(record=wire.record, ts=wire.ts, token=wire.token,
                 source=None if wire.source is None else Source(*wire.source))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


def encode_event(event: Event) -> bytes:
    """One normalised event in its wire form (as it travels inside a frame)."""
    return _encoder.encode(_wire(event))


def decode_event(data: bytes) -> Event:
    """The inverse of `encode_event`; raises msgspec.DecodeError (a ValueError) on foreign bytes."""
    return _event(_decoder.decode(data))


# -- frames: what the re-keyed topics carry -------------------------------------------------------

Marks = dict[str, tuple[float, bool]]  # input partition ("topic/partition") -> (published up to, idle)


class _EntryOut(msgspec.Struct, array_like=True):
    kinds: tuple[str, ...]
    event: msgspec.Raw  # encoded once per event, embedded as-is in every frame that carries it


class _FrameOut(msgspec.Struct, array_like=True):
    entries: list[_EntryOut]
    marks: Marks | None


class _EntryIn(msgspec.Struct, array_like=True):
    kinds: tuple[str, ...]
    event: _Wire


class _FrameIn(msgspec.Struct, array_like=True):
    entries: list[_EntryIn]
    marks: Marks | None


_frame_decoder = msgspec.msgpack.Decoder(_FrameIn)


class Frame(NamedTuple):
    """A decoded frame: (key kinds, event) in publish order, then the source watermarks, if any."""
    entries: list[tuple[tuple[str, ...], Event]]
    marks: Marks | None


def decode_frame(data: bytes) -> Frame:
    """Raises msgspec.DecodeError (a ValueError) on foreign bytes."""
    frame = _frame_decoder.decode(data)
    return Frame([(e.kinds, _event(e.event)) for e in frame.entries], frame.marks)


def partition_of(key: str, partitions: int) -> int:
    """The re-keyed partition of a key. Any stable hash does (every ingest worker uses this one); CRC-32
    is in C, where Kafka's murmur2 partitioner runs in Python in kafka-python (≈ 10 µs a key)."""
    return zlib.crc32(key.encode()) % partitions


EVENTS, KEYED = "events", "keyed"  # the two re-keyed streams: whole events by principal, side keys


class FramePacker:
    """Packs one published batch into frames, one Kafka record per re-keyed partition (more only past
    `max_frame_bytes`), instead of one record per (event, key): kafka-python spends ≈ 100 µs producing
    and ≈ 40 µs fetching each record, which made that fan-out the keyed worker's main cost.

    An event is encoded once; each partition it is routed to gets one entry naming every key kind it
    goes there for (two side keys hashing to the same partition share the entry). A token event without
    a principal goes to every partition of the events stream. With `marks`, every partition of both
    streams gets a frame and its last one carries the marks: the watermarks are published after the
    events they cover, in the same records."""

    def __init__(self, *, events_partitions: int, keyed_partitions: int, side_kinds: frozenset[str],
                 max_frame_bytes: int = 256 * 1024) -> None:
        self.partitions = {EVENTS: events_partitions, KEYED: keyed_partitions}
        self.side_kinds = side_kinds
        self.max_frame_bytes = max_frame_bytes

    def pack(self, events: list[Event], marks: Marks | None) -> list[tuple[str, int, bytes]]:
        """(stream, partition, frame) to publish, in order per partition."""
        done: list[tuple[str, int, bytes]] = []
        open_: dict[tuple[str, int], tuple[list[_EntryOut], int]] = {}
        n_events = self.partitions[EVENTS]
        n_keyed = self.partitions[KEYED]
        principal_kinds = (PRINCIPAL,)

        def put(where: tuple[str, int], kinds: tuple[str, ...], raw: msgspec.Raw, size: int) -> None:
            entries, used = open_.get(where, (None, 0))
            if entries is None:
                entries = []
            elif used + size > self.max_frame_bytes:
                done.append((*where, _encoder.encode(_FrameOut(entries, None))))
                entries, used = [], 0
            entries.append(_EntryOut(kinds, raw))
            open_[where] = (entries, used + size)

        slimmed: dict[int, TokenInfo] = {}  # valid while `events` holds every token info
        for event in events:
            data = _encoder.encode(_wire(event, slimmed))
            raw, size = msgspec.Raw(data), len(data)
            key = principal_key(event)
            if key is None:  # a token event that names no one: every partition must see it
                for p in range(n_events):
                    put((EVENTS, p), principal_kinds, raw, size)
            else:
                put((EVENTS, partition_of(key, n_events)), principal_kinds, raw, size)
            if self.side_kinds:
                by_partition: dict[int, list[str]] = {}
                for kind, side in side_keys(event, self.side_kinds):
                    by_partition.setdefault(partition_of(f"{kind}\x1f{side}", n_keyed), []).append(kind)
                for p, kinds in by_partition.items():
                    put((KEYED, p), tuple(kinds), raw, size)
        if marks is not None:
            streams = (EVENTS, KEYED) if self.side_kinds else (EVENTS,)
            for stream in streams:
                for p in range(self.partitions[stream]):
                    open_.setdefault((stream, p), ([], 0))
        for (stream, p), (entries, _) in open_.items():
            done.append((stream, p, _encoder.encode(_FrameOut(entries, marks))))
        return done


def source_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"
