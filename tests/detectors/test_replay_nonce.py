from detectors.replay_nonce import NonceReplayDetector
from detectors.state import MemoryStore
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.conftest import T0
from tests.events import access, raw


def run(detector, decoder, records, store=None):
    store = store if store is not None else MemoryStore()
    out = []
    for i, rec in enumerate(records):
        out += detector.observe(decoder.decode(raw(rec), Source("t", 0, i)), store)
    return out, store


def test_nonce_seen_twice_inside_window_is_a_replay(validator, minter) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 900, "iat": T0, "cnf": {"jkt": "k1"}})
    sigs, _ = run(NonceReplayDetector(window_seconds=300), dec, [
        access("e1", T0 + 1, token=tok, nonce="n-1"),
        access("e2", T0 + 2, token=tok, nonce="n-2"),
        access("e3", T0 + 40, token=tok, nonce="n-1", client_ip="198.51.100.9"),
    ])
    assert len(sigs) == 1
    s = sigs[0]
    assert s.type == "replay.nonce" and s.event_ids == ("e1", "e3")
    assert s.entity.kind == "subject" and s.entity.value == "alice"
    assert "different IP" in s.reasons[1]
    assert tok not in repr(s)  # never the raw token


def test_outside_window_or_other_key_is_not_a_replay(validator, minter) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    a = minter.mint({"sub": "a", "exp": T0 + 3600, "iat": T0, "cnf": {"jkt": "ka"}})
    b = minter.mint({"sub": "b", "exp": T0 + 3600, "iat": T0, "cnf": {"jkt": "kb"}})
    sigs, _ = run(NonceReplayDetector(window_seconds=300), dec, [
        access("e1", T0, token=a, nonce="same"),
        access("e2", T0 + 1, token=b, nonce="same"),  # scoped by key: another client's nonce
        access("e3", T0 + 301, token=a, nonce="same"),  # beyond the window
    ])
    assert sigs == []


def test_redelivery_of_the_same_record_is_not_a_replay(validator, minter) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    tok = minter.mint({"sub": "a", "exp": T0 + 3600, "iat": T0})
    rec = access("e1", T0, token=tok, nonce="n")
    sigs, _ = run(NonceReplayDetector(), dec, [rec, rec, rec])
    assert sigs == []


def test_single_use_token_used_twice(validator, minter) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    tok = minter.mint({"sub": "a", "exp": T0 + 120, "iat": T0, "use": "once"})
    sigs, _ = run(NonceReplayDetector(), dec, [access("e1", T0, token=tok), access("e2", T0 + 5, token=tok)])
    assert [s.figures["scope"] for s in sigs] == ["tfp"] and "single-use token" in sigs[0].reasons[0]


def test_out_of_order_pair_gives_the_same_evidence(validator, minter) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    tok = minter.mint({"sub": "a", "exp": T0 + 3600, "iat": T0})
    first, second = access("e1", T0, token=tok, nonce="n"), access("e2", T0 + 9, token=tok, nonce="n")
    in_order, _ = run(NonceReplayDetector(), dec, [first, second])
    reversed_, _ = run(NonceReplayDetector(), dec, [second, first])
    assert [(s.event_ids, s.ts) for s in in_order] == [(s.event_ids, s.ts) for s in reversed_]


def test_anonymous_nonce_is_scoped_by_tenant(validator) -> None:
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    sigs, _ = run(NonceReplayDetector(), dec, [access("e1", T0, nonce="n"), access("e2", T0 + 1, nonce="n"),
                                                access("e3", T0 + 1, nonce="n", tenant="globex")])
    assert len(sigs) == 1 and sigs[0].entity.kind == "ip"
