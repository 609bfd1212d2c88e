"""Strict decoding of raw records (CONTRACT.md §1) into `Event`s; failures become `RecordError`s."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

import msgspec

from ingest.errors import DecodeError, OversizeError
from ingest.events import AccessRecord, Event, Record, Source, TokenRecord
from ingest.tokens import TokenValidator

_decoder = msgspec.json.Decoder(AccessRecord | TokenRecord)
_MAX_ID = 256


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


def _check(record: Record) -> None:
    if not record.event_id or len(record.event_id) > _MAX_ID:
        raise DecodeError("event_id must be 1..256 characters", "invalid_field")
    if isinstance(record, AccessRecord):
        try:
            ipaddress.ip_address(record.client_ip)
        except ValueError:
            raise DecodeError(f"client_ip is not an IP address: {record.client_ip[:64]!r}",
                              "invalid_field") from None
        if not 100 <= record.status <= 599:
            raise DecodeError(f"status out of range: {record.status}", "invalid_field")
        return
    required = {"issued": "token", "revoked": "jti", "refreshed": "presented_jti"}[record.type]
    if getattr(record, required) is None:
        raise DecodeError(f"token event of type {record.type!r} needs {required!r}", "missing_field")
    if record.type == "refreshed" and record.issued_jti is None:
        raise DecodeError("token event of type 'refreshed' needs 'issued_jti'", "missing_field")


def decode_record(raw: bytes, max_bytes: int) -> tuple[Record, float]:
    """Bytes → (record, event time). Raises `DecodeError`/`OversizeError` with a reason."""
    if len(raw) > max_bytes:
        raise OversizeError(f"record of {len(raw)} bytes exceeds limits.max_event_bytes={max_bytes}")
    try:  # msgspec lets invalid UTF-8 through in fields it skips, and raises UnicodeDecodeError in others
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8: invalid byte at {exc.start}", "not_json") from None
    try:
        record = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"schema: {exc}", "schema") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not UTF-8 JSON: {exc}", "not_json") from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply", "not_json") from None
    _check(record)
    return record, parse_ts(record.ts)


class EventDecoder:
    """Bytes → `Event`, with the token (if any) validated at the event's time."""

    def __init__(self, *, validator: TokenValidator | None, max_event_bytes: int) -> None:
        self.validator = validator
        self.max_event_bytes = max_event_bytes

    def decode(self, raw: bytes, source: Source | None = None) -> Event:
        record, ts = decode_record(raw, self.max_event_bytes)
        token = record.token
        info = self.validator.check(token, ts) if token and self.validator is not None else None
        return Event(record=record, ts=ts, token=info, source=source)
