"""token.revoked_use: a token used after its revocation; silent on requests in flight at logout."""

from __future__ import annotations

import itertools

import pytest

from detectors.packed_store import PackedStore
from detectors.state import MemoryStore
from detectors.token_revoked_use import RevokedUseDetector
from gatewatch.simulate import SimulationSpec
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.detectors.helpers import observe, run_simulated, within_lateness
from tests.conftest import T0
from tests.events import access, raw, token_event


@pytest.fixture()
def decode(validator):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    return lambda recs: [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


@pytest.fixture(scope="module")
def tok(minter):
    return minter.mint({"sub": "alice", "client_id": "acme-web", "jti": "j-1", "tid": "acme",
                        "exp": T0 + 900, "iat": T0})


def revoked(eid, ts, jti="j-1", **fields):
    return token_event(eid, ts, "revoked", jti=jti, sub="alice", client_id="acme-web", **fields)


def test_use_after_revocation(decode, tok, minter) -> None:
    other = minter.mint({"sub": "alice", "jti": "j-2", "tid": "acme", "exp": T0 + 900, "iat": T0})
    events = decode([
        token_event("i1", T0, "issued", token=tok, sub="alice", client_id="acme-web"),
        access("e1", T0 + 10, token=tok),
        revoked("k1", T0 + 100),
        access("e2", T0 + 103, token=tok),  # in flight when the user logged out
        access("e3", T0 + 200, token=tok, client_ip="198.51.100.23"),
        access("o1", T0 + 210, token=other),  # another token of the same user
        access("e4", T0 + 260, token=tok, status=401),  # a gateway that does check revocation
    ])
    sigs = observe(RevokedUseDetector(), events)
    assert [s.event_ids for s in sigs] == [("k1", "e3"), ("k1", "e4")]
    s = sigs[0]
    assert s.type == "token.revoked_use" and s.tenant == "acme" and s.ts == T0 + 200
    assert [(e.kind, e.value) for e in s.entities] == [("subject", "alice"), ("token", s.token_fps[0]),
                                                       ("ip", "198.51.100.23")]
    assert s.reasons[0] == f"token tfp {s.token_fps[0][:8]}… (jti j-1) used 100s after it was revoked " \
                           "(grace 5s for requests in flight)"
    assert "answered 200: it does not check revocation" in s.reasons[1]
    assert s.figures["seconds_after_revocation"] == 100.0
    assert (s.strength, sigs[1].strength) == (0.9, 0.6)
    assert tok not in repr(sigs)


def test_requests_in_flight_at_logout_are_silent(decode, tok) -> None:
    events = decode([access("e1", T0 + 99.5, token=tok), revoked("k1", T0 + 100),
                     access("e2", T0 + 100.2, token=tok), access("e3", T0 + 105, token=tok)])
    assert observe(RevokedUseDetector(grace_seconds=5), events) == []


def test_key_is_tenant_and_jti(decode, minter) -> None:
    globex = minter.mint({"sub": "bob", "jti": "j-1", "tid": "globex", "exp": T0 + 900, "iat": T0})
    no_tid = minter.mint({"sub": "carol", "jti": "j-1", "exp": T0 + 900, "iat": T0})
    events = decode([revoked("k1", T0),
                     access("g1", T0 + 60, token=globex),  # same jti, another tenant's token
                     access("n1", T0 + 60, token=no_tid, tenant="initech"),  # no tid: the request's tenant
                     access("n2", T0 + 70, token=no_tid)])  # no tid, on acme: matches
    assert [s.event_ids for s in observe(RevokedUseDetector(), events)] == [("k1", "n2")]


def test_unverified_tokens_are_ignored(decode, keys_dir) -> None:
    from gatewatch.keys import TokenMinter
    rogue = TokenMinter.from_dir(keys_dir, issuer="https://evil.example", audience="api://gateway")
    forged = rogue.mint({"sub": "alice", "jti": "j-1", "tid": "acme", "exp": T0 + 900, "iat": T0})
    events = decode([revoked("k1", T0), access("f1", T0 + 60, token=forged), access("f2", T0 + 61, token="x.y.z")])
    assert observe(RevokedUseDetector(), events) == []


def test_remembered_until_exp_when_the_token_was_seen(decode, tok) -> None:
    det, store = RevokedUseDetector(leeway_seconds=30), MemoryStore()
    observe(det, decode([access("e1", T0, token=tok), revoked("k1", T0 + 100)]), store)
    store.expire(T0 + 900 + 29)
    assert len(store) == 2  # the revocation and the token's exp (its recent uses went 30 s after e1)
    store.expire(T0 + 900 + 31)
    assert len(store) == 0


def test_recent_uses_are_kept_reorder_seconds_and_exp_until_exp(decode, tok) -> None:
    det, store = RevokedUseDetector(reorder_seconds=30), PackedStore()
    observe(det, decode([access("e1", T0, token=tok), access("e2", T0 + 10, token=tok)]), store)
    assert len(store) == 2 and store.get(("rve", "acme", "j-1")) == T0 + 900  # exp: one packed int
    store.expire(T0 + 10 + 31)
    assert len(store) == 1  # the recent uses went 30 s after the newest
    # a revocation read now still finds the exp: remembered until exp + leeway, not remember_seconds
    assert observe(det, decode([revoked("k1", T0 + 60)]), store) == []
    store.expire(T0 + 900 + 31)
    assert len(store) == 0


def test_remembered_for_remember_seconds_when_exp_unknown(decode, tok) -> None:
    det, store = RevokedUseDetector(remember_seconds=3600), MemoryStore()
    observe(det, decode([revoked("k1", T0 + 100)]), store)
    store.expire(T0 + 100 + 3599)
    assert len(store) == 1
    store.expire(T0 + 100 + 3601)
    assert len(store) == 0


def test_redelivery_never_signals(decode, tok) -> None:
    events = decode([access("e1", T0, token=tok), revoked("k1", T0 + 100), access("e2", T0 + 200, token=tok),
                     access("e3", T0 + 230, token=tok)])
    det, store = RevokedUseDetector(), MemoryStore()
    once = observe(det, events, store)
    assert [s.event_ids for s in once] == [("k1", "e2"), ("k1", "e3")]
    assert observe(det, events, store) == [] and observe(det, events[::-1], store) == []
    assert [s.event_ids for s in observe(det, events + events)] == [s.event_ids for s in once]


def test_out_of_order_within_30s_gives_the_same_event_sets(decode, tok) -> None:
    events = decode([
        access("e1", T0 + 95, token=tok),
        revoked("k1", T0 + 100),
        access("e2", T0 + 103, token=tok),  # in flight
        access("e3", T0 + 110, token=tok),
        access("e4", T0 + 118, token=tok, client_ip="198.51.100.23"),
        access("e5", T0 + 125, token=tok),
    ])
    det = RevokedUseDetector(grace_seconds=5)
    base = sorted(s.event_ids for s in observe(det, events))
    assert base == [("k1", "e3"), ("k1", "e4"), ("k1", "e5")]
    orders = [list(p) for p in itertools.permutations(events) if within_lateness(p)]
    assert any(o.index(events[1]) == 5 for o in orders)  # the revocation read after every use
    for order in orders:
        sigs = observe(det, order)
        assert sorted(s.event_ids for s in sigs) == base
        assert {s.ts for s in sigs} == {T0 + 110, T0 + 118, T0 + 125}


def test_an_earlier_revocation_read_late_takes_over(decode, tok) -> None:
    events = decode([revoked("k2", T0 + 300), access("e1", T0 + 200, token=tok), revoked("k1", T0 + 100),
                     access("e2", T0 + 400, token=tok)])
    assert [s.event_ids for s in observe(RevokedUseDetector(reorder_seconds=300), events)] == \
        [("k1", "e1"), ("k1", "e2")]


# -- in simulated traffic -------------------------------------------------------------------------
def _run(minter, settings, validator, spec):
    return run_simulated(minter, settings, validator, spec, "token.revoked_use")


def test_caught_in_simulated_traffic(minter, settings, validator) -> None:
    spec = SimulationSpec(seed=5, events=30_000, attacks=("token.revoked_use",), attack_every=1500)
    found, labels, _ = _run(minter, settings, validator, spec)
    attacked = {eid for eid, lab in labels if lab["type"] == "token.revoked_use"}
    runs = {lab["attack_id"] for _, lab in labels}
    assert len(runs) >= 10
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)
    evidence = {eid for a in found for eid in a.evidence["event_ids"]}
    assert {lab["attack_id"] for eid, lab in labels if eid in evidence} == runs


def test_silent_on_clean_simulated_traffic(minter, settings, validator) -> None:
    spec = SimulationSpec(seed=12, events=None, duration_seconds=8 * 3600, rate=3.0, attacks=())
    found, labels, stats = _run(minter, settings, validator, spec)
    assert not labels and stats["logouts"] >= 30
    assert [a.reasons[0] for a in found] == []
