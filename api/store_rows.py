"""The alert store's rows and codecs: stored alerts, the merge rule, cursors, timestamps, query errors.

Split from `api/store.py` (which re-exports the public names) so the store module is only SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ingest.errors import QueryError
from scoring.alerts import MAX_EVIDENCE_IDS, Alert

_MAX_CURSOR_CHARS = 1024


class StoreQueryError(QueryError):
    """A filter value the store cannot use; `code` is the API error code."""

    code = "bad_filter"


class BadCursor(StoreQueryError):
    code = "bad_cursor"


class AuditEntry(BaseModel):
    """One triage change: who changed which field from what to what, and when."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    at: str
    actor: str
    field: str
    from_: Any = Field(None, alias="from")
    to: Any = None
    reason: str | None = None  # why, for a status change that closes the alert


class StoredAlert(Alert):
    """An alert as stored: the §5 alert plus its triage audit trail and, while closed, why."""

    audit: list[AuditEntry] = []
    close_reason: str | None = None


class Change(NamedTuple):
    """One entry of the change feed: an alert as it is now, and the `updated_seq` of that state."""

    seq: int
    alert: StoredAlert


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = Unset()


def utc_now() -> str:
    return format_ts(datetime.now(timezone.utc))


def format_ts(dt: datetime) -> str:
    dt = dt.astimezone(timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def normalise_ts(value: str, name: str) -> str:
    """An RFC 3339 time (with offset) → the store's canonical `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise StoreQueryError(f"{name} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise StoreQueryError(f"{name} needs a UTC offset (e.g. Z)")
    try:
        return format_ts(dt)
    except (OverflowError, ValueError):  # e.g. year 1 with a negative offset
        raise StoreQueryError(f"{name} is out of range") from None


def encode_cursor(last_seen: str, alert_id: str) -> str:
    raw = json.dumps([last_seen, alert_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise BadCursor("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("invalid cursor") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadCursor("invalid cursor")
    return value[0], value[1]


def merge_ids(old: list[Any], new: list[Any]) -> list[Any]:
    out = list(old[:MAX_EVIDENCE_IDS])
    seen = set(out)
    for item in new:
        if len(out) >= MAX_EVIDENCE_IDS:
            break
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def merge_alert(old: StoredAlert, new: Alert) -> StoredAlert:
    evidence = dict(new.evidence)
    for key in ("event_ids", "token_fps"):
        old_ids, new_ids = old.evidence.get(key), new.evidence.get(key)
        if isinstance(old_ids, list) and isinstance(new_ids, list):
            evidence[key] = merge_ids(old_ids, new_ids)
        elif isinstance(old_ids, list) and key not in evidence:
            evidence[key] = old_ids
    return StoredAlert(
        **new.model_dump(exclude={"status", "assignee", "notes", "evidence", "first_seen", "last_seen",
                                  "count", "risk", "audit", "close_reason"}),
        first_seen=min(old.first_seen, new.first_seen), last_seen=max(old.last_seen, new.last_seen),
        count=max(old.count, new.count), risk=max(old.risk, new.risk), evidence=evidence,
        status=old.status, assignee=old.assignee, notes=old.notes, audit=old.audit, close_reason=old.close_reason,
    )


def encode_body(alert: StoredAlert) -> str:
    return json.dumps(alert.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)


def decode_body(body: str) -> StoredAlert:
    return StoredAlert.model_validate_json(body)


__all__ = ["UNSET", "AuditEntry", "BadCursor", "Change", "StoreQueryError", "StoredAlert", "Unset", "decode_body",
           "decode_cursor", "encode_body", "encode_cursor", "format_ts", "merge_alert", "merge_ids",
           "normalise_ts", "utc_now"]
