"""Shared by tests/ingest/test_adapters_*.py: the documented samples, a decoder per format, and the hypothesis
strategies that throw arbitrary and mutated JSON objects at an adapter."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ingest.adapters import Origin, bind
from ingest.decode import EventDecoder
from ingest.errors import RecordError
from ingest.events import AccessRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapters"
SECRET = "SECRET-token-must-not-leak"


def samples(fmt: str) -> list[dict[str, Any]]:
    """The documented sample records of `fmt` (tests/fixtures/adapters/<fmt>.jsonl)."""
    return [json.loads(line) for line in (FIXTURES / f"{fmt}.jsonl").read_text(encoding="utf-8").splitlines()]


def decoder(fmt: str, **origin: str) -> EventDecoder:
    """A decoder reading every record as `fmt`; `origin` overrides the format's default Origin fields."""
    from ingest.adapters import DEFAULT_ORIGINS

    base = DEFAULT_ORIGINS[fmt]
    bound = Origin(**{**{k: getattr(base, k) for k in ("tenant", "tenant_field", "gateway", "gateway_field",
                                                          "setting")}, **origin})
    return EventDecoder(validator=None, max_event_bytes=65_536, every=bind(fmt, bound))


def decode(fmt: str, obj: Any, **origin: str) -> AccessRecord:
    record, _ = decoder(fmt, **origin).decode_record(json.dumps(obj).encode())
    assert isinstance(record, AccessRecord)
    return record


def refusal(fmt: str, obj: Any, **origin: str) -> RecordError:
    """The RecordError the decoder raises on `obj` (fails if it decodes)."""
    try:
        decoder(fmt, **origin).decode_record(json.dumps(obj).encode())
    except RecordError as err:
        return err
    raise AssertionError("decoded")


# -- hypothesis ----------------------------------------------------------------------------------
_ODD_STRINGS = ["-", "", " ", "null", "Bearer", "Bearer ", "bearer x", "DPoP y", "Basic dXNlcjpwYXNz", "REDACTED",
                "10.0.0.1:80", "[2001:db8::1]:443", "[::1", "::1", "not-an-ip", "2026-11-28T10:00:00.000Z",
                "2026-11-28T10:00:00", "09/Apr/2015:12:34:56 +0000", "31/Feb/2015:12:34:56 +0000", "200", "0", "-1",
                "1795000000123", "99999999999999999999999", "1e3", "12.5", "/a?b=c", "?", "GET /x", "$default",
                "\x00", "\ud7ff", "é" * 3]
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | st.sampled_from(_ODD_STRINGS))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def objects(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Arbitrary JSON objects whose keys are often the adapter's own (flat and dotted)."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=10), json_values, max_size=12)


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> dict[str, Any]:
    """A documented sample of `fmt` with some of its members (at any depth) deleted or replaced by any JSON value."""
    obj = copy.deepcopy(draw(st.sampled_from(samples(fmt))))
    paths = _paths(obj)
    for path in draw(st.lists(st.sampled_from(paths), max_size=4)):
        node: Any = obj
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        if draw(st.booleans()):
            del node[path[-1]]
        else:
            node[path[-1]] = draw(json_values)
    return obj


def adapts_or_refuses(fmt: str, obj: dict[str, Any]) -> None:
    """The property every adapter keeps: a valid access event or a RecordError, never another exception, both
    from the adapter alone and through the decoder; and a token in the record never reaches a reason."""
    adapter = bind(fmt, Origin(tenant="t", tenant_field="tenant", gateway="g", setting=f"ingest.{fmt}"))
    assert adapter is not None
    try:
        fields = adapter(obj)
    except RecordError as err:
        assert err.code in ("missing_field", "invalid_field", "bad_timestamp"), err.code
        assert SECRET not in str(err)
    else:
        assert fields["kind"] == "access" and isinstance(fields["event_id"], str)
    try:
        record, _ = decoder(fmt, tenant="t", gateway="g").decode_record(json.dumps(obj).encode())
    except RecordError as err:
        assert SECRET not in str(err)
    else:
        assert isinstance(record, AccessRecord) and 100 <= record.status <= 599
