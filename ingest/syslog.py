"""nginx's syslog access log → CONTRACT.md §1 access events (pure; the socket is gatewatch/collector.py).

nginx sends each access-log line as one datagram in the RFC 3164 form `<PRI>Mmm dd hh:mm:ss [HOST ]TAG: MSG`
(`access_log syslog:server=...,tag=gatewatch,nohostname` leaves HOST out). MSG is the JSON object of the
`log_format gatewatch escape=json` that `gatewatch nginx-config` renders. nginx cannot write everything in
the contract's shape, so `access_event` finishes the job:

* `msec` ($msec, epoch seconds with milliseconds, taken when the request ended) minus `request_time`
  ($request_time, seconds) becomes `ts`, RFC 3339 UTC with milliseconds: when nginx read the request. A `ts`
  already in the line is kept as it is;
* `request_time` becomes `latency_ms`; `status`, `bytes_in`, `bytes_out` (written as strings, so that an
  empty variable cannot break the JSON) become ints;
* an optional field nginx wrote as "" (or "-") is dropped: nginx logs "" for an absent header, and an
  empty `token` would be judged `malformed`;
* `path` loses any query string (it may hold secrets), `token` any `Bearer ` scheme;
* bytes that are not UTF-8 (nginx's JSON escaping passes them through, and a client controls the path
  and the agent) become U+FFFD: a request is never dropped for its bytes;
* fields the contract does not name are left out.

The result is checked by the workers' own strict decoder (`ingest.decode.decode_record`), so what is
published decodes there. Every failure is a `RecordError` whose `code` lands in the dead letter; nothing
else is raised, whatever the bytes (tests/ingest/test_syslog.py).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from ingest.decode import decode_record
from ingest.errors import DecodeError, OversizeError

# <PRI> then the RFC 3164 timestamp nginx writes ("Dec  3 17:40:01": day padded with a space).
_FRAME = re.compile(rb"<(\d{1,3})>([A-Z][a-z]{2} [ 0-3]\d \d\d:\d\d:\d\d) ")
_TAG = re.compile(rb"[A-Za-z0-9_]{1,32}")
_HOST = re.compile(rb"[!-~]{1,255}")  # printable ASCII without space
_EPOCH = re.compile(r"\d{1,11}(\.\d{1,9})?")  # $msec, $request_time
_INT = re.compile(r"\d{1,18}")
_BEARER = re.compile(r"bearer[ \t]+", re.IGNORECASE)
_MONTHS = frozenset(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())

REQUIRED = ("event_id", "gateway", "tenant", "client_ip", "method", "path")  # strings; ts and status apart
OPTIONAL_STRINGS = ("route", "user_agent", "token", "nonce")
_EMPTY = ("", "-")


def parse_frame(datagram: bytes, *, tag: str | None = "gatewatch") -> bytes:
    """One syslog datagram → its message (the bytes after `TAG: `). With `tag`, a frame of another tag is
    refused: something else is writing to the collector's socket."""
    m = _FRAME.match(datagram)
    if m is None or int(m.group(1)) > 191 or m.group(2)[:3] not in _MONTHS:
        raise DecodeError("not a syslog frame: expected '<PRI>Mmm dd hh:mm:ss TAG: '", "not_json")
    rest = datagram[m.end():]
    colon = rest.find(b": ", 0, 300)  # HOST (255) + SP + TAG (32)
    if colon < 0:
        raise DecodeError("not a syslog frame: no 'TAG: ' after the timestamp", "not_json")
    header = rest[:colon].split(b" ")
    if len(header) > 2 or not _TAG.fullmatch(header[-1]) or (len(header) == 2 and not _HOST.fullmatch(header[0])):
        raise DecodeError("not a syslog frame: bad HOST or TAG", "not_json")
    if tag is not None and header[-1].decode("ascii") != tag:
        raise DecodeError(f"syslog tag {header[-1].decode('ascii')!r} is not {tag!r}", "not_json")
    return rest[colon + 2:]


def access_event(datagram: bytes, *, tag: str | None = "gatewatch", max_event_bytes: int = 65_536) -> bytes:
    """One datagram from nginx → the access event's JSON (CONTRACT.md §1), checked by the strict decoder."""
    if len(datagram) > max_event_bytes + 512:  # the frame's header is ~50 bytes; the event is judged below too
        raise OversizeError(f"datagram of {len(datagram)} bytes exceeds limits.max_event_bytes={max_event_bytes}")
    message = parse_frame(datagram, tag=tag)
    try:
        line = json.loads(message.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        raise DecodeError("message is not JSON", "not_json") from None
    if not isinstance(line, dict):
        raise DecodeError("message is not a JSON object", "schema")
    out = normalise(line)
    try:
        raw = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written as a \u escape (never by nginx)
        raise DecodeError("message holds a lone UTF-16 surrogate", "not_json") from None
    decode_record(raw, max_event_bytes)  # what the workers will do with it; raises with their code
    return raw


def normalise(line: dict[str, Any]) -> dict[str, Any]:
    """The fields of one nginx log line → an access event's fields (see the module docstring)."""
    kind = line.get("kind", "access")
    if kind != "access":
        raise DecodeError(f"kind must be 'access', not {str(kind)[:20]!r}", "schema")
    out: dict[str, Any] = {"kind": "access"}
    for name in REQUIRED:
        value = line.get(name)
        if not isinstance(value, str):
            raise DecodeError(f"{name} missing or not a string", "schema")
        if not value and name in ("event_id", "gateway", "tenant", "client_ip"):
            raise DecodeError(f"{name} is empty", "schema")
        out[name] = value
    out["path"] = out["path"].split("?", 1)[0]
    request_time = _number(line, "request_time")
    out["ts"] = _ts(line, request_time)
    status = _int(line, "status")
    if status is None:
        raise DecodeError("status missing", "schema")
    out["status"] = status
    for name in OPTIONAL_STRINGS:
        value = line.get(name)
        if value is None or value in _EMPTY:
            continue
        if not isinstance(value, str):
            raise DecodeError(f"{name} is not a string", "schema")
        if name == "token":
            value = _strip_bearer(value)
            if not value:
                continue
        out[name] = value
    latency = _number(line, "latency_ms")
    if latency is None and request_time is not None:
        latency = round(request_time * 1000.0, 3)
    if latency is not None:
        out["latency_ms"] = latency
    for name in ("bytes_in", "bytes_out"):
        count = _int(line, name)
        if count is not None:
            out[name] = count
    llm = line.get("llm")
    if isinstance(llm, dict):
        out["llm"] = llm
    return out


def _strip_bearer(value: str) -> str:
    m = _BEARER.match(value)
    return value[m.end():].strip() if m else value.strip()


def _present(line: dict[str, Any], name: str) -> Any:
    value = line.get(name)
    return None if value is None or value in _EMPTY else value


def _number(line: dict[str, Any], name: str) -> float | None:
    value = _present(line, name)
    if value is None:
        return None
    if isinstance(value, str) and _EPOCH.fullmatch(value):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    raise DecodeError(f"{name} is not a non-negative number", "schema")


def _int(line: dict[str, Any], name: str) -> int | None:
    value = _present(line, name)
    if value is None:
        return None
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise DecodeError(f"{name} is not a non-negative integer", "schema")


def _ts(line: dict[str, Any], request_time: float | None) -> str:
    """`ts` as given, else `msec` − `request_time` as RFC 3339 UTC with milliseconds (whole milliseconds:
    both values have three decimals, so the subtraction is exact)."""
    given = line.get("ts")
    if isinstance(given, str) and given:
        return given
    msec = _present(line, "msec")
    if not isinstance(msec, str) or not _EPOCH.fullmatch(msec):
        raise DecodeError("ts missing: neither ts nor msec ($msec) in the line", "schema")
    millis = _millis(msec) - (_millis(f"{request_time:.3f}") if request_time is not None else 0)
    try:
        dt = datetime.fromtimestamp(millis // 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise DecodeError(f"msec out of range: {msec[:24]!r}", "bad_timestamp") from None
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


def _millis(seconds: str) -> int:
    whole, _, frac = seconds.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])
