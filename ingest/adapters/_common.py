"""What the gateway log adapters share: reading a field, its type checks, times, addresses and tokens.

Every failure is a `DecodeError` whose code is `missing_field`, `invalid_field` or `bad_timestamp` and
whose message names the field by its key in the gateway's log — never its value: a misconfigured log
could put a credential anywhere, and dead-letter reasons are read by people.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from ingest.errors import DecodeError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT = re.compile(r"-?[0-9]{1,19}")
_NUMBER = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,12})?")
_INT_MAX = 2**63 - 1  # what every consumer of an event (msgpack frames, SQLite) can hold
# Common Log Format time, what AWS writes for $context.requestTime: 09/Apr/2015:12:34:56 +0000
_CLF = re.compile(r"([0-9]{2})/([A-Z][a-z]{2})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), start=1)}
# Authorization schemes whose credential is an access token: RFC 6750 (Bearer), RFC 9449 (DPoP). Case-insensitive
# (RFC 9110 §11.1). Anything else (Basic, an API key, a gateway's "REDACTED") carries no token.
_TOKEN_SCHEMES = frozenset({"bearer", "dpop"})


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an adapter takes the two access-event fields no gateway logs the gatewatch way: the record's
    `tenant_field` / `gateway_field` when it holds a value, else the static `tenant` / `gateway`; "" is unset.
    `setting` names the configuration section, for the dead-letter reason when neither is there."""

    tenant: str = ""
    tenant_field: str = ""
    gateway: str = ""
    gateway_field: str = ""
    setting: str = "ingest"


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (for reasons: the type, never the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def missing(key: str) -> DecodeError:
    return DecodeError(f"missing_field: {key}", "missing_field")


def invalid(key: str, why: str) -> DecodeError:
    return DecodeError(f"invalid_field: {key} {why}", "invalid_field")


def lookup(obj: Mapping[str, Any], key: str) -> Any:
    """`obj[key]`; else, for a dotted key, the path through nested objects (`consumer.username`); else None.
    A value a gateway writes for "not available" (`-`, `""`) counts as absent."""
    value = obj.get(key)
    if value is None and "." in key:
        node: Any = obj
        for part in key.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        value = node
    return None if value == "-" or value == "" else value


def first(obj: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of `keys` that holds a value, and that value; else ("k1 (or k2, k3)", None), for the reason."""
    for key in keys:
        value = lookup(obj, key)
        if value is not None:
            return key, value
    return f"{keys[0]} (or {', '.join(keys[1:])})", None


def text(key: str, value: Any, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise missing(key)
        return None
    if not isinstance(value, str):
        raise invalid(key, f"is a {json_type(value)}, not a string")
    return value


def integer(key: str, value: Any, *, required: bool = False, low: int = 0) -> int | None:
    """A whole number, as a JSON number or a string of digits (Envoy's untyped `json_format`, AWS's quoted
    variables), within [low, 2**63)."""
    if value is None:
        if required:
            raise missing(key)
        return None
    if isinstance(value, str) and _INT.fullmatch(value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(key, "is not a whole number")
    if not low <= value <= _INT_MAX:
        raise invalid(key, "is out of range")
    return value


def number(key: str, value: Any) -> float | None:
    """A finite non-negative number (a latency in ms), as a JSON number or a decimal string."""
    if value is None:
        return None
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(key, "is not a number")
    if isinstance(value, int) and value > _INT_MAX:
        raise invalid(key, "is out of range")
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise invalid(key, "is out of range")
    return out


def time_from_epoch_ms(key: str, value: Any) -> str:
    """Epoch milliseconds (a JSON number or a string of digits) → RFC 3339 UTC with milliseconds, the form
    the decoder reads fastest."""
    if value is None:
        raise missing(key)
    if isinstance(value, str) and _INT.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DecodeError(f"bad_timestamp: {key} is not epoch milliseconds", "bad_timestamp")
    if abs(value) > 1e15:  # beyond year 33,000 either way: timedelta would overflow first
        raise DecodeError(f"bad_timestamp: {key} is outside years 1..9999", "bad_timestamp")
    seconds, millis = divmod(round(value), 1000)
    try:
        t = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise DecodeError(f"bad_timestamp: {key} is outside years 1..9999", "bad_timestamp") from None
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
            f".{millis:03d}Z")


def time_from_clf(key: str, value: Any) -> str:
    """Common Log Format time (`dd/MMM/yyyy:HH:mm:ss +hhmm`) → RFC 3339 with its offset; the decoder checks
    the date itself (a 31st of February is `bad_timestamp` there)."""
    found = _CLF.fullmatch(value) if isinstance(value, str) else None
    if found is None or found[2] not in _MONTHS:
        raise DecodeError(f"bad_timestamp: {key} is not a time dd/MMM/yyyy:HH:mm:ss +hhmm", "bad_timestamp")
    day, month, year, hh, mm, ss, sign, oh, om = found.groups()
    return f"{year}-{_MONTHS[month]:02d}-{day}T{hh}:{mm}:{ss}{sign}{oh}:{om}"


def client_address(key: str, value: Any) -> str:
    """The client's address without its port: `10.0.0.1:5432` → `10.0.0.1`, `[2001:db8::1]:443` →
    `2001:db8::1`; a bare address stays as it is. The decoder then checks it is an IP address."""
    address = text(key, value, required=True)
    assert address is not None
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


def bearer_token(value: Any) -> str | None:
    """The access token of an `Authorization` header value: the credential of a `Bearer` or `DPoP`
    scheme, without the scheme; None for anything else (another scheme, a redacted or repeated header)."""
    if not isinstance(value, str):
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() not in _TOKEN_SCHEMES:
        return None
    return credential.strip() or None


def path_only(key: str, value: Any) -> str:
    """A request path without its query string or fragment: a query can carry secrets (`?access_token=`)
    and makes every path distinct."""
    path = text(key, value, required=True)
    assert path is not None
    path = path.partition("?")[0].partition("#")[0]
    if not path:
        raise invalid(key, "has no path")
    return path


def record_id(obj: Mapping[str, Any]) -> str:
    """An event id for a log that names none: a digest of the record's content (key order aside), so the same
    record read twice is recognised as a redelivery."""
    return "sha256:" + hashlib.sha256(msgspec.json.encode(obj, order="sorted")).hexdigest()[:32]


def origin_value(obj: Mapping[str, Any], field: str, static: str, what: str, origin: Origin) -> str:
    """The tenant or gateway of a record: its `field` when it holds a string, else the static value."""
    if field:
        value = text(field, lookup(obj, field))
        if value is not None:
            return value
    if static:
        return static
    where = f"no {field!r} in the record and " if field else ""
    raise DecodeError(f"missing_field: {what}: {where}[{origin.setting}] {what} is not set", "missing_field")


def access_event(obj: Mapping[str, Any], origin: Origin, **fields: Any) -> dict[str, Any]:
    """The access event of CONTRACT.md §1, with its tenant and gateway from `origin`; fields left None are
    left out (they are optional)."""
    out: dict[str, Any] = {
        "kind": "access",
        "tenant": origin_value(obj, origin.tenant_field, origin.tenant, "tenant", origin),
        "gateway": origin_value(obj, origin.gateway_field, origin.gateway, "gateway", origin),
    }
    for name, value in fields.items():
        if value is not None:
            out[name] = value
    if "event_id" not in out:
        out["event_id"] = record_id(obj)
    return out
