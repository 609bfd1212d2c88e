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
each with the key kinds it is there for, and the token infos they carry, each once (`FramePacker`).
The partition is `partition_of(key)`, chosen
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


def _slim(info: TokenInfo) -> TokenInfo:
    """What detectors read of a token: its named claims, whether it was signed (`claims` not None) and
    its `alg` — not the whole claim set and header, which made up half of a re-keyed entry's bytes."""
    header = info.header
    if info.claims is None and header is None:
        return info
    alg = None if header is None else header.get("alg")
    return replace(info, claims=None if info.claims is None else {},
                   header=None if header is None else ({} if alg is None else {"alg": alg}))


# -- frames: what the re-keyed topics carry -------------------------------------------------------
#
# A frame: the token infos its events carry, each once (one token is on many events of a batch: its
# decoding was half an entry's), the entries — key kinds, index into that table (-1: none), the event
# without its token — and the source watermarks, if any.

Marks = dict[str, tuple[float, bool]]  # input partition ("topic/partition") -> (published up to, idle)


class _Body(msgspec.Struct, array_like=True):
    """An event without its token (which the frame's table holds) nor its raw token string."""
    record: Record
    ts: float
    source: tuple[str, int, int] | None


class _EntryOut(msgspec.Struct, array_like=True):
    kinds: tuple[str, ...]
    token: int
    body: msgspec.Raw  # encoded once per event, embedded as-is in every frame that carries it


class _FrameOut(msgspec.Struct, array_like=True):
    tokens: list[msgspec.Raw]
    entries: list[_EntryOut]
    marks: Marks | None


class _EntryIn(msgspec.Struct, array_like=True):
    kinds: tuple[str, ...]
    token: int
    body: _Body


class _FrameIn(msgspec.Struct, array_like=True):
    tokens: list[TokenInfo]
    entries: list[_EntryIn]
    marks: Marks | None


_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(_FrameIn)


def _body(event: Event) -> bytes:
    record = event.record
    if record.token is not None:  # the raw token never leaves ingest; TokenInfo says what it was
        record = msgspec.structs.replace(record, token=None)
    src = event.source
    return _encoder.encode(_Body(record=record, ts=event.ts,
                                 source=None if src is None else (src.topic, src.partition, src.offset)))


class Frame(NamedTuple):
    """A decoded frame: (key kinds, event) in publish order, then the source watermarks, if any."""
    entries: list[tuple[tuple[str, ...], Event]]
    marks: Marks | None


def decode_frame(data: bytes) -> Frame:
    """Raises msgspec.DecodeError (a ValueError) on foreign bytes, ValueError on a bad token index."""
    frame = _frame_decoder.decode(data)
    tokens = frame.tokens
    out = []
    for e in frame.entries:
        b = e.body
        i = e.token
        if not -1 <= i < len(tokens):
            raise ValueError(f"token index {i} outside the frame's {len(tokens)} tokens")
        out.append((e.kinds, Event(record=b.record, ts=b.ts, token=None if i < 0 else tokens[i],
                                   source=None if b.source is None else Source(*b.source))))
    return Frame(out, frame.marks)


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
        open_: dict[tuple[str, int], _Open] = {}
        n_events = self.partitions[EVENTS]
        n_keyed = self.partitions[KEYED]
        principal_kinds = (PRINCIPAL,)
        encoded: dict[int, msgspec.Raw] = {}  # slim token info by id: valid while `events` holds them all
        cap = self.max_frame_bytes

        def put(where: tuple[str, int], kinds: tuple[str, ...], info: TokenInfo | None, body: msgspec.Raw,
                size: int) -> None:
            frame = open_.get(where)
            if frame is None:
                frame = open_[where] = _Open()
            elif frame.size + size > cap:
                done.append((*where, frame.encode(None)))
                frame = open_[where] = _Open()
            index = -1
            if info is not None:
                index = frame.index.get(id(info), -1)
                if index < 0:
                    raw = encoded.get(id(info))
                    if raw is None:
                        raw = encoded[id(info)] = msgspec.Raw(_encoder.encode(_slim(info)))
                    index = frame.index[id(info)] = len(frame.tokens)
                    frame.tokens.append(raw)
                    frame.size += len(raw)
            frame.entries.append(_EntryOut(kinds, index, body))
            frame.size += size

        for event in events:
            data = _body(event)
            body, size, info = msgspec.Raw(data), len(data), event.token
            key = principal_key(event)
            if key is None:  # a token event that names no one: every partition must see it
                for p in range(n_events):
                    put((EVENTS, p), principal_kinds, info, body, size)
            else:
                put((EVENTS, partition_of(key, n_events)), principal_kinds, info, body, size)
            if self.side_kinds:
                by_partition: dict[int, list[str]] = {}
                for kind, side in side_keys(event, self.side_kinds):
                    by_partition.setdefault(partition_of(f"{kind}\x1f{side}", n_keyed), []).append(kind)
                for p, kinds in by_partition.items():
                    put((KEYED, p), tuple(kinds), info, body, size)
        if marks is not None:
            streams = (EVENTS, KEYED) if self.side_kinds else (EVENTS,)
            for stream in streams:
                for p in range(self.partitions[stream]):
                    open_.setdefault((stream, p), _Open())
        for (stream, p), frame in open_.items():
            done.append((stream, p, frame.encode(marks)))
        return done


class _Open:
    """A frame being filled: its token table (index by id of the token info), entries and byte size."""
    __slots__ = ("tokens", "index", "entries", "size")

    def __init__(self) -> None:
        self.tokens: list[msgspec.Raw] = []
        self.index: dict[int, int] = {}
        self.entries: list[_EntryOut] = []
        self.size = 0

    def encode(self, marks: Marks | None) -> bytes:
        return _encoder.encode(_FrameOut(self.tokens, self.entries, marks))


def source_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"
