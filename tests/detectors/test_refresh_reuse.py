"""replay.refresh_reuse: a rotated refresh token presented again; silent on two-tab races."""

from __future__ import annotations

import itertools

import pytest

from detectors.replay_refresh_reuse import RefreshReuseDetector
from detectors.state import MemoryStore
from gatewatch.simulate import SimulationSpec
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.detectors.helpers import observe, run_simulated, within_lateness
from tests.conftest import T0
from tests.events import raw, token_event


def refreshed(eid, ts, presented, issued, **fields):
    fields.setdefault("sub", "alice")
    fields.setdefault("client_id", "acme-web")
    return token_event(eid, ts, "refreshed", presented_jti=presented, issued_jti=issued, **fields)


@pytest.fixture()
def decode():
    dec = EventDecoder(validator=None, max_event_bytes=65536)
    return lambda recs: [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


def test_rotated_token_presented_again_later(decode) -> None:
    events = decode([
        refreshed("r1", T0, "rt-0", "rt-1"),
        refreshed("r2", T0 + 900, "rt-1", "rt-2"),  # the owner's next rotation
        refreshed("x1", T0 + 1200, "rt-0", "rt-x", client_id="acme-web"),  # the stolen copy
        refreshed("r3", T0 + 1800, "rt-2", "rt-3"),
    ])
    sigs = observe(RefreshReuseDetector(), events)
    assert len(sigs) == 1
    s = sigs[0]
    assert s.type == "replay.refresh_reuse" and s.event_ids == ("r1", "x1") and s.ts == T0 + 1200
    assert [(e.kind, e.value) for e in s.entities] == [("subject", "alice"), ("client", "acme-web")]
    assert "presented again 1200.0s later (grace 10s" in s.reasons[0]
    assert "had itself been rotated 300s before" in s.reasons[1]  # an old link of the chain
    assert s.figures["gap_seconds"] == 1200.0 and s.figures["successor_rotated"]
    assert 0.0 <= s.strength <= 1.0


def test_two_tab_race_inside_grace_is_silent(decode) -> None:
    events = decode([
        refreshed("r1", T0, "rt-0", "rt-1a"),
        refreshed("r2", T0 + 1.9, "rt-0", "rt-1b"),  # the second tab, same token
        refreshed("r3", T0 + 600, "rt-1b", "rt-2"),  # life goes on with the second tab's token
        refreshed("r4", T0 + 10.0, "rt-0", "rt-1c"),  # a third tab, exactly at the grace limit
    ])
    assert observe(RefreshReuseDetector(grace_seconds=10), events) == []


def test_just_after_grace_is_a_reuse(decode) -> None:
    events = decode([refreshed("r1", T0, "rt-0", "rt-1"), refreshed("r2", T0 + 10.5, "rt-0", "rt-1b")])
    [s] = observe(RefreshReuseDetector(grace_seconds=10), events)
    assert s.event_ids == ("r1", "r2") and s.strength == 0.95


def test_chain_inside_grace_is_no_race(decode) -> None:
    events = decode([
        refreshed("r1", T0, "rt-0", "rt-1"),
        refreshed("r2", T0 + 1, "rt-1", "rt-2"),  # the token r1 issued is already rotated ...
        refreshed("x1", T0 + 3, "rt-0", "rt-9"),  # ... so rt-0 again, 3 s later, is no two-tab race
    ])
    [s] = observe(RefreshReuseDetector(grace_seconds=10), events)
    assert s.event_ids == ("r1", "x1") and s.strength == 0.85
    assert "had already been rotated too" in s.reasons[0]


def test_entity_falls_back_to_client_then_tenant(decode) -> None:
    events = decode([
        refreshed("a1", T0, "a-0", "a-1", sub=None), refreshed("a2", T0 + 60, "a-0", "a-2", sub=None),
        token_event("b1", T0, "refreshed", presented_jti="b-0", issued_jti="b-1"),
        token_event("b2", T0 + 60, "refreshed", presented_jti="b-0", issued_jti="b-2"),
    ])
    sigs = observe(RefreshReuseDetector(), events)
    assert [(s.entity.kind, s.entity.value) for s in sigs] == [("client", "acme-web"), ("tenant", "acme")]


def test_other_client_or_subject_is_named(decode) -> None:
    events = decode([refreshed("r1", T0, "rt-0", "rt-1"),
                     refreshed("x1", T0 + 60, "rt-0", "rt-x", client_id="evil-app", sub="mallory")])
    [s] = observe(RefreshReuseDetector(), events)
    assert "rotated by client acme-web, presented again by client evil-app" in s.reasons
    assert s.entity.value == "mallory"


def test_redelivery_never_signals(decode) -> None:
    events = decode([refreshed("r1", T0, "rt-0", "rt-1"), refreshed("r2", T0 + 1, "rt-0", "rt-1b"),
                     refreshed("x1", T0 + 300, "rt-0", "rt-x"), refreshed("x2", T0 + 400, "rt-0", "rt-y")])
    det, store = RefreshReuseDetector(), MemoryStore()
    once = observe(det, events, store)
    assert [s.event_ids for s in once] == [("r1", "x1"), ("r1", "x2")]
    assert observe(det, events, store) == [] and observe(det, events[::-1], store) == []
    assert [s.event_ids for s in observe(det, events + events)] == [s.event_ids for s in once]


def test_out_of_order_within_30s_gives_the_same_event_sets(decode) -> None:
    events = decode([
        refreshed("r1", T0, "rt-0", "rt-1"),
        refreshed("r2", T0 + 8, "rt-0", "rt-1b"),  # a race, 8 s apart
        refreshed("x1", T0 + 15, "rt-0", "rt-x"),  # 15 s after the rotation: a reuse
        refreshed("r3", T0 + 25, "rt-1b", "rt-2"),
        refreshed("x2", T0 + 40, "rt-0", "rt-y"),
    ])
    det = RefreshReuseDetector(grace_seconds=10)
    base = sorted(s.event_ids for s in observe(det, events))
    assert base == [("r1", "x1"), ("r1", "x2")]
    orders = [list(p) for p in itertools.permutations(events) if within_lateness(p)]
    assert len(orders) > 30
    for order in orders:
        sigs = observe(det, order)
        assert sorted(s.event_ids[1] for s in sigs) == ["x1", "x2"]  # the same reuses, whatever the order
        if order.index(events[0]) < order.index(events[1]):  # the rotation read before its race partner
            assert sorted(s.event_ids for s in sigs) == base


def test_state_is_bounded_by_remember_seconds(decode) -> None:
    det, store = RefreshReuseDetector(remember_seconds=3600), MemoryStore()
    observe(det, decode([refreshed("r1", T0, "rt-0", "rt-1")]), store)
    # a presentation after remember_seconds is not recognised, even before the store's sweep ran
    assert observe(det, decode([refreshed("x1", T0 + 3601, "rt-0", "rt-x")]), store) == []
    store.expire(T0 + 3601 + 3601)
    assert len(store) == 0


# -- in simulated traffic -------------------------------------------------------------------------
def _run(minter, settings, validator, spec):
    return run_simulated(minter, settings, validator, spec, "replay.refresh_reuse")


def test_caught_in_simulated_traffic(minter, settings, validator) -> None:
    # one reuse scenario every 3000 events, at 5 events/s so that the intruder (2-25 min later) shows up
    spec = SimulationSpec(seed=5, events=None, duration_seconds=3 * 3600, rate=5.0,
                          attacks=("replay.refresh_reuse",), attack_every=3000)
    found, labels, _ = _run(minter, settings, validator, spec)
    attacked = {eid for eid, lab in labels if lab["type"] == "replay.refresh_reuse"}
    reuses = {lab["attack_id"] for eid, lab in labels}
    assert len(reuses) >= 10
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)
    evidence = {eid for a in found for eid in a.evidence["event_ids"]}
    caught = {lab["attack_id"] for eid, lab in labels if eid in evidence}
    assert caught == reuses


def test_silent_on_clean_simulated_traffic(minter, settings, validator) -> None:
    spec = SimulationSpec(seed=12, events=None, duration_seconds=8 * 3600, rate=3.0, attacks=())
    found, labels, stats = _run(minter, settings, validator, spec)
    assert not labels and stats["refresh_races"] >= 20 and stats["refreshes"] >= 500
    assert [a.reasons[0] for a in found] == []
