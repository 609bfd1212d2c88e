"""Strict decoding of raw records (CONTRACT.md §1) into `Event`s; failures become `RecordError`s.

`EventDecoder` keeps two small caches, because a gateway's log repeats itself: the minute of
canonical timestamps (a busy gateway writes thousands of events in one) and the client addresses
already found valid. Each value is then parsed once, not once per event; a miss costs the full parse,
and a full cache is cleared, so memory stays bounded.

A record of another gateway's log (a topic's `[ingest] formats`, `replay --format`) is parsed as any JSON
object, mapped to an access event by its adapter (ingest/adapters) and then validated like a gatewatch
record: every rule below applies to it too. gatewatch's own records keep their direct path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime, timezone

import msgspec

from ingest.adapters import Adapter, json_type
from ingest.errors import DecodeError, OversizeError, RecordError
from ingest.events import AccessRecord, Event, Record, Source, TokenRecord
from ingest.tokens import TokenValidator

_decoder = msgspec.json.Decoder(AccessRecord | TokenRecord)
_any_decoder = msgspec.json.Decoder()  # another gateway's log: any JSON, for its adapter
_MAX_ID = 256
_DIGITS = frozenset("0123456789")
_CACHE_MAX = 100_000


def parse_ts(value: str) -> float:
    """RFC 3339 timestamp with an explicit zone ('Z' or an offset) → epoch seconds."""
    if len(value) > 40 or "T" not in value.upper():
        raise DecodeError(f"ts is not an RFC 3339 timestamp: {value[:40]!r}", "bad_timestamp")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"ts is not an RFC 3339 timestamp: {value!r}", "bad_timestamp") from None
    if dt.tzinfo is None:
        raise DecodeError("ts has no time zone (use Z)", "bad_timestamp")
    try:  # 9999-12-31T23:59:59-14:00 is valid RFC 3339 but lies in year 10000 UTC
        dt.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise DecodeError(f"ts is outside years 1..9999 in UTC: {value!r}", "bad_timestamp") from None
    return dt.timestamp()


def _check_token_record(record: TokenRecord) -> None:
    required = {"issued": "token", "revoked": "jti", "refreshed": "presented_jti"}[record.type]
    if getattr(record, required) is None:
        raise DecodeError(f"token event of type {record.type!r} needs {required!r}", "missing_field")
    if record.type == "refreshed" and record.issued_jti is None:
        raise DecodeError("token event of type 'refreshed' needs 'issued_jti'", "missing_field")


def _adapted(raw: bytes, adapter: Adapter) -> AccessRecord:
    """Another gateway's log record → its access event, validated as strictly as a gatewatch record."""
    try:
        obj = _any_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not UTF-8 JSON: {exc}", "not_json") from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply", "not_json") from None
    if type(obj) is not dict:
        raise DecodeError(f"schema: expected a JSON object, got {json_type(obj)}", "schema")
    try:
        fields = adapter(obj)
    except RecordError:
        raise
    except Exception as exc:  # an adapter's bug must not stop the stream: the record is dead-lettered
        raise DecodeError(f"schema: record not understood ({type(exc).__name__})", "schema") from None
    try:
        return msgspec.convert(fields, AccessRecord)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"schema: {exc}", "schema") from None


def _parse_record(raw: bytes, max_bytes: int, adapter: Adapter | None = None) -> Record:
    if len(raw) > max_bytes:
        raise OversizeError(f"record of {len(raw)} bytes exceeds limits.max_event_bytes={max_bytes}")
    if not raw.isascii():  # ASCII is UTF-8 (and the check is cheaper than decoding)
        try:  # msgspec lets invalid UTF-8 through in fields it skips, and raises UnicodeDecodeError in others
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: invalid byte at {exc.start}", "not_json") from None
    try:
        record: Record = _decoder.decode(raw) if adapter is None else _adapted(raw, adapter)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"schema: {exc}", "schema") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not UTF-8 JSON: {exc}", "not_json") from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply", "not_json") from None
    if not record.event_id or len(record.event_id) > _MAX_ID:
        raise DecodeError("event_id must be 1..256 characters", "invalid_field")
    return record


class EventDecoder:
    """Bytes → `Event`, with the token (if any) validated at the event's time."""

    def __init__(self, *, validator: TokenValidator | None, max_event_bytes: int,
                 formats: Mapping[str, Adapter] | None = None, every: Adapter | None = None) -> None:
        self.validator = validator
        self.max_event_bytes = max_event_bytes
        self._minutes: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" → epoch seconds
        self._valid_ips: set[str] = set()
        self.set_formats(formats or {}, every)

    def set_formats(self, by_topic: Mapping[str, Adapter], every: Adapter | None = None) -> None:
        """Which records are another gateway's log (ingest/adapters): those read from a topic of `by_topic`
        (`[ingest] formats`: the live run, `replay --from-topic`), or every record whatever its source
        (`every`: `replay --format`). Any other record is in gatewatch's own format."""
        self._by_topic = dict(by_topic)
        self._every = every
        self._adapting = every is not None or bool(self._by_topic)

    def _adapter(self, source: Source | None) -> Adapter | None:
        if self._every is not None:
            return self._every
        return self._by_topic.get(source.topic) if source is not None else None

    def decode_record(self, raw: bytes, source: Source | None = None) -> tuple[Record, float]:
        """Bytes → (record, event time). Raises `DecodeError`/`OversizeError` with a reason."""
        record = _parse_record(raw, self.max_event_bytes, self._adapter(source) if self._adapting else None)
        if type(record) is AccessRecord:
            ip = record.client_ip
            if ip not in self._valid_ips:
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    raise DecodeError(f"client_ip is not an IP address: {ip[:64]!r}", "invalid_field") from None
                if len(self._valid_ips) >= _CACHE_MAX:
                    self._valid_ips.clear()
                self._valid_ips.add(ip)
            if not 100 <= record.status <= 599:
                raise DecodeError(f"status out of range: {record.status}", "invalid_field")
        else:
            assert type(record) is TokenRecord
            _check_token_record(record)
        return record, self.event_time(record.ts)

    def event_time(self, value: str) -> float:
        """`parse_ts`, with the gateways' canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ` taken by a look-up of
        its minute plus its seconds and milliseconds in integer microseconds: the same float as
        `datetime.timestamp()` (both divide a whole number of microseconds by 10**6 once)."""
        if len(value) == 24 and value[23] == "Z" and value[19] == "." and value[16] == ":" \
                and _DIGITS.issuperset(value[17:19]) and _DIGITS.issuperset(value[20:23]) and value[17] < "6":
            base = self._minutes.get(value[:16])
            if base is not None:
                return ((base + int(value[17:19])) * 1_000_000 + int(value[20:23]) * 1000) / 1_000_000
            full = parse_ts(value)  # a bad value raises here, with its own message
            if len(self._minutes) >= _CACHE_MAX:
                self._minutes.clear()
            self._minutes[value[:16]] = int(parse_ts(value[:16] + ":00Z"))
            return full
        return parse_ts(value)

    def decode(self, raw: bytes, source: Source | None = None) -> Event:
        record, ts = self.decode_record(raw, source)
        token = record.token
        info = self.validator.check(token, ts) if token and self.validator is not None else None
        return Event(record=record, ts=ts, token=info, source=source)


def decode_record(raw: bytes, max_bytes: int) -> tuple[Record, float]:
    """Bytes → (record, event time), without a decoder's caches (one-off callers and tests)."""
    return EventDecoder(validator=None, max_event_bytes=max_bytes).decode_record(raw)
