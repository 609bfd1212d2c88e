import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from ingest.decode import decode_record, parse_ts
from ingest.errors import DecodeError, OversizeError, RecordError
from ingest.events import AccessRecord, TokenRecord
from tests.conftest import T0
from tests.events import access, raw, token_event


def test_access_record_decodes_with_event_time() -> None:
    rec, ts = decode_record(raw(access("e1", T0 + 0.123, nonce="n1", llm={"provider": "openai",
                                                                         "model": "m", "prompt_tokens": 5,
                                                                         "completion_tokens": 7})), 65536)
    assert isinstance(rec, AccessRecord)
    assert rec.nonce == "n1" and rec.llm is not None and rec.llm.completion_tokens == 7
    assert ts == pytest.approx(T0 + 0.123, abs=1e-3)


def test_unknown_fields_are_ignored() -> None:
    rec, _ = decode_record(raw(access("e1", T0, x_custom={"a": 1})), 65536)
    assert rec.event_id == "e1"


@pytest.mark.parametrize("payload, code", [
    (b"not json", "not_json"),
    (b"\xff\xfe{}", "not_json"),
    (b"[]", "schema"),
    (raw({**access("e", T0), "status": "200"}), "schema"),
    (raw({k: v for k, v in access("e", T0).items() if k != "tenant"}), "schema"),
    (raw({**access("e", T0), "kind": "other"}), "schema"),
    (raw({**access("e", T0), "ts": "yesterday"}), "bad_timestamp"),
    (raw({**access("e", T0), "ts": "2026-11-28T10:00:00"}), "bad_timestamp"),
    (raw({**access("e", T0), "client_ip": "999.1.1.1"}), "invalid_field"),
    (raw({**access("e", T0), "status": 42}), "invalid_field"),
    (raw({**access("e", T0), "event_id": ""}), "invalid_field"),
    (raw(token_event("t", T0, "revoked")), "missing_field"),
    (raw(token_event("t", T0, "refreshed", presented_jti="a")), "missing_field"),
    (raw(token_event("t", T0, "issued")), "missing_field"),
    (raw(token_event("t", T0, "stolen", jti="a")), "schema"),
])
def test_bad_records_are_refused_with_a_reason(payload: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_record(payload, 65536)
    assert err.value.code == code


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(OversizeError):
        decode_record(raw(access("e", T0, path="/" + "a" * 70_000)), 65536)


def test_token_records() -> None:
    rec, _ = decode_record(raw(token_event("t", T0, "refreshed", presented_jti="a", issued_jti="b")), 65536)
    assert isinstance(rec, TokenRecord) and rec.presented_jti == "a"


def test_parse_ts_offsets() -> None:
    assert parse_ts("2026-11-28T10:00:00.000Z") == parse_ts("2026-11-28T11:00:00.000+01:00")


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        decode_record(data, 512)
    except RecordError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=10)


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(access("e", T0)) + ["llm", "token", "nonce"]), json_values))
def test_mutated_records_either_decode_or_raise_record_error(fields: dict) -> None:
    rec = {**access("e", T0), **fields}
    try:
        decoded, _ = decode_record(json.dumps(rec).encode(), 65536)
    except RecordError:
        return
    assert decoded.event_id == rec["event_id"]


@pytest.mark.parametrize(("raw", "code"), [
    (b'{"kind":"access","event_id":"e","ts":"2026-11-28T10:00:00.000Z","gateway":"g","tenant":"t",'
     b'"client_ip":"10.0.0.1","method":"GET","path":"/caf\xe2\x82","status":200}', "not_json"),
    (b'{"kind":"access","event_id":"e","ts":"2026-11-28T10:00:00.000Z","gateway":"g","tenant":"t",'
     b'"client_ip":"10.0.0.1","method":"GET","path":"/","status":200,"x\xff":1}', "not_json"),
    (b'{"kind":"access","x":' + b"[" * 5000 + b"]" * 5000 + b"}", "not_json"),
    (b'{"kind":"access","event_id":"e","ts":"9999-12-31T23:59:59.999-14:00","gateway":"g","tenant":"t",'
     b'"client_ip":"10.0.0.1","method":"GET","path":"/","status":200}', "bad_timestamp"),
])
def test_hostile_bytes_found_by_the_poison_test_are_dead_letters_not_crashes(raw, code) -> None:
    from ingest.decode import decode_record
    from ingest.errors import DecodeError

    with pytest.raises(DecodeError) as err:
        decode_record(raw, 1 << 20)
    assert err.value.code == code


_CANONICAL = st.datetimes(min_value=__import__("datetime").datetime(1, 1, 2),
                          max_value=__import__("datetime").datetime(9999, 12, 30)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z")


@given(values=st.lists(_CANONICAL | st.text(max_size=30), min_size=1, max_size=20))
@hsettings(max_examples=300)
def test_the_decoders_cached_event_time_is_parse_ts_exactly(values) -> None:
    """The per-minute cache gives the very float `parse_ts` gives, or the same refusal — also when a
    minute is looked up again with other (or impossible) seconds and milliseconds."""
    from ingest.decode import EventDecoder

    decoder = EventDecoder(validator=None, max_event_bytes=1 << 16)
    again = [v[:17] + s + v[19:] for v in values if len(v) == 24 for s in ("00", "59", "60", "7x", "٣1")]
    for value in values + again + [v[:20] + "999Z" for v in values if len(v) == 24]:
        try:
            expected: float | str = parse_ts(value)
        except DecodeError as err:
            expected = err.code
        try:
            got: float | str = decoder.event_time(value)
        except DecodeError as err:
            got = err.code
        assert got == expected, value


def test_a_bad_address_is_refused_after_good_ones_were_cached() -> None:
    from ingest.decode import EventDecoder

    decoder = EventDecoder(validator=None, max_event_bytes=1 << 16)
    decoder.decode_record(raw(access("a", T0, client_ip="10.0.0.1")))
    assert decoder.decode_record(raw(access("b", T0, client_ip="10.0.0.1")))[0].client_ip == "10.0.0.1"
    with pytest.raises(DecodeError) as err:
        decoder.decode_record(raw(access("c", T0, client_ip="10.0.0.1 ")))
    assert err.value.code == "invalid_field"
