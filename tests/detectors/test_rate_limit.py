"""traffic.rate_limit: limits per subject, client, IP and tenant on a sliding event-time window,
per-route overrides, redelivery, and the simulator's rate-limit attack (caught) and flood (not)."""

from __future__ import annotations

import bisect
import json
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest

from detectors.state import MemoryStore
from detectors.traffic_rate_limit import DEFAULT_LIMITS, RateLimitDetector
from gatewatch.pipeline import Pipeline
from gatewatch.simulate import ASSUMED_LIMITS, SimulationSpec, generate
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.conftest import T0
from tests.events import access, raw, token_event

OFF = {"subject": 0, "client": 0, "ip": 0, "tenant": 0}


def only(dim: str, limit: int) -> dict[str, int]:
    """Limits with every dimension switched off but `dim`."""
    return {**OFF, dim: limit}


def run(detector, validator, records, store=None):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    store = store if store is not None else MemoryStore()
    out = []
    for i, rec in enumerate(records):
        out += detector.observe(dec.decode(raw(rec), Source("t", 0, i)), store)
    return out


@pytest.fixture(scope="module")
def token(minter) -> str:
    return minter.mint({"sub": "u123", "client_id": "app1", "exp": T0 + 3600, "iat": T0})


# -- per dimension ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("dim", "value"), [("subject", "u123"), ("client", "app1"), ("ip", "192.0.2.50"),
                                            ("tenant", "acme")])
def test_over_the_limit_is_caught_per_dimension(dim, value, validator, token) -> None:
    recs = [access(f"e{i}", T0 + i * 0.5, token=token, client_ip="192.0.2.50") for i in range(30)]
    sigs = run(RateLimitDetector(limits=only(dim, 20)), validator, recs)
    assert len(sigs) == 1  # one signal per key and window, not one per request over the limit
    s = sigs[0]
    assert s.type == "traffic.rate_limit" and s.tenant == "acme"
    assert (s.entity.kind, s.entity.value) == (dim, value) and len(s.entities) == 1
    assert s.reasons[0] == f"{dim} {value} made 21 requests in 60 s on orders-api (limit 20)"
    assert s.event_ids[-1] == "e20" and len(s.event_ids) <= 20  # a bounded sample ending at the crossing
    assert s.figures["count"] == 21 and s.figures["limit"] == 20 and s.figures["window_seconds"] == 60
    assert s.figures["dimension"] == dim and s.figures["limit_source"] == "default"
    assert 0.5 <= s.strength <= 1.0
    assert (s.token_fps != ()) == (dim in ("subject", "client"))
    assert token not in repr(s)


def test_a_forged_token_counts_for_ip_and_tenant_but_names_no_subject(validator) -> None:
    recs = [access(f"e{i}", T0 + i, token=f"forged{i}.x.y") for i in range(5)]
    sigs = run(RateLimitDetector(limits={"subject": 1, "client": 1, "ip": 4, "tenant": 100}), validator, recs)
    assert [s.entity.kind for s in sigs] == ["ip"]


def test_token_events_are_not_requests(validator) -> None:
    recs = [token_event(f"t{i}", T0 + i, "revoked", jti=f"j{i}") for i in range(10)]
    assert run(RateLimitDetector(limits=only("tenant", 1)), validator, recs) == []


def test_defaults() -> None:
    det = RateLimitDetector()
    assert DEFAULT_LIMITS == {"subject": 600, "client": 6_000, "ip": 600, "tenant": 60_000}
    assert det.limit_for("orders-api", "ip") == ASSUMED_LIMITS["ip_per_minute"]
    assert det.limit_for(None, "subject") == ASSUMED_LIMITS["subject_per_minute"]


# -- boundaries of the window ----------------------------------------------------------------------
def test_exactly_the_limit_is_allowed_one_more_is_not(validator) -> None:
    det = RateLimitDetector(limits=only("ip", 10))
    recs = [access(f"e{i}", T0 + i, client_ip="192.0.2.1") for i in range(10)]
    assert run(det, validator, recs) == []
    assert len(run(det, validator, [*recs, access("e10", T0 + 59.9, client_ip="192.0.2.1")])) == 1


def test_steady_traffic_just_under_the_limit_stays_silent(validator) -> None:
    # 95 requests a minute against a limit of 100 for an hour (the flood's pace): the estimate of a
    # steady stream is off by less than one request, so it never drifts over
    recs = [access(f"e{i}", T0 + i * 60 / 95, client_ip="192.0.2.1") for i in range(95 * 60)]
    assert run(RateLimitDetector(limits=only("ip", 100)), validator, recs) == []


def test_requests_older_than_the_window_no_longer_count(validator) -> None:
    burst = [access(f"b{i}", T0 + 1 + i / 10, client_ip="192.0.2.1") for i in range(10)]  # T0+1.0 .. 1.9
    det = RateLimitDetector(limits=only("ip", 10))
    # 60.5 s after the burst began, the whole burst is inside the window (0.5, 60.5]: 11 > 10
    assert len(run(det, validator, [*burst, access("late", T0 + 60.5, client_ip="192.0.2.1")])) == 1
    # at T0+62 the window (2, 62] holds only the new request: silent (the estimate is 9, exact 1)
    assert run(det, validator, [*burst, access("later", T0 + 62, client_ip="192.0.2.1")]) == []


def test_the_estimate_errs_by_at_most_one_sub_window(validator) -> None:
    """The documented approximation: against the exact sliding count, the estimate is off by no more
    than the requests of the oldest sub-window (10 s of 60 s at the default 6 sub-windows)."""
    rng = random.Random(4)
    ts, t = [], T0
    while len(ts) < 3000:  # bursts and pauses, the worst case for any window estimate
        t += rng.expovariate(8.0) if rng.random() < 0.9 else rng.uniform(5, 40)
        ts.append(round(t, 3))
    limit = 20
    sigs = run(RateLimitDetector(limits=only("ip", limit)), validator,
               [access(f"e{i}", x, client_ip="192.0.2.1") for i, x in enumerate(ts)])
    assert sigs
    per_sub = defaultdict(int)
    for x in ts:
        per_sub[int(x // 10)] += 1
    worst = max(per_sub.values())

    def exact(t: float) -> int:  # requests in (t - 60, t]
        return bisect.bisect_right(ts, t) - bisect.bisect_right(ts, t - 60)

    for s in sigs:
        assert abs(s.figures["count"] - exact(s.ts)) <= worst
    # and wherever the exact count went clearly over, a signal covers it within one window
    over = [x for x in ts if exact(x) > limit + worst]
    assert over and all(any(s.ts <= x < s.ts + 60 for s in sigs) for x in over)


# -- signals ---------------------------------------------------------------------------------------
def test_one_signal_per_window_and_strength_grows_with_the_overshoot(validator) -> None:
    det = RateLimitDetector(limits=only("ip", 60))
    # a burst at 8x the limit's pace for two and a half minutes: one signal per window, all strong
    burst = [access(f"b{i}", T0 + i / 8, client_ip="192.0.2.66") for i in range(8 * 150)]
    # a slow creep just over the limit (66 a minute) for the same time, from another address
    creep = [access(f"c{i}", T0 + i * 60 / 66, client_ip="192.0.2.77") for i in range(165)]
    sigs = run(det, validator, sorted(burst + creep, key=lambda r: r["ts"]))
    fast = [s for s in sigs if s.entity.value == "192.0.2.66"]
    slow = [s for s in sigs if s.entity.value == "192.0.2.77"]
    assert len(fast) == 3 and [round(b.ts - a.ts) for a, b in zip(fast, fast[1:], strict=False)] == [60, 60]
    assert all(s.strength == 1.0 for s in fast)  # 4x the limit or more
    assert fast[0].figures["count"] == 61 and fast[0].figures["overshoot"] > 7  # strong when it crosses
    assert fast[0].reasons[1].startswith("current pace about 4")
    assert abs(fast[1].figures["count"] - 480) <= 2
    assert slow and all(0.5 <= s.strength < 0.65 for s in slow)


def test_route_override_and_switching_a_dimension_off(validator, token) -> None:
    det = RateLimitDetector(limits={"subject": 100}, route_limits={"llm-gateway": {"subject": 5},
                                                                    "health": {"ip": 0}})
    llm = [access(f"l{i}", T0 + i, token=token, route="llm-gateway") for i in range(6)]
    orders = [access(f"o{i}", T0 + i, token=token, route="orders-api") for i in range(50)]
    health = [access(f"h{i}", T0 + i / 10, client_ip="10.0.0.5", route="health", path="/healthz")
              for i in range(601)]
    sigs = run(det, validator, sorted(llm + orders + health, key=lambda r: r["ts"]))
    assert [(s.entity.kind, s.figures["route"]) for s in sigs] == [("subject", "llm-gateway")]
    assert sigs[0].figures["limit_source"] == "route"
    assert sigs[0].reasons[0] == "subject u123 made 6 requests in 60 s on llm-gateway (limit 5)"
    assert det.limit_for("llm-gateway", "ip") == 600  # dimensions not overridden keep the default


def test_an_instance_per_re_keyed_stream_counts_only_its_dimensions(validator, token) -> None:
    section = SimpleNamespace(window_seconds=60, limits=dict.fromkeys(("subject", "client", "ip", "tenant"), 5),
                              route_limits={"orders-api": {"subject": 3}})
    recs = [access(f"e{i}", T0 + i, token=token) for i in range(10)]
    per_ip = RateLimitDetector.from_config(section, tokens=None, dimensions=("ip",))
    assert [s.entity.kind for s in run(per_ip, validator, recs)] == ["ip"]
    everything = RateLimitDetector.from_config(section, tokens=None)
    assert sorted(s.entity.kind for s in run(everything, validator, recs)) == ["client", "ip", "subject", "tenant"]
    with pytest.raises(ValueError, match="unknown rate-limit dimension 'user'"):
        RateLimitDetector.from_config(section, tokens=None, dimensions=("user",))


# -- redelivery and order --------------------------------------------------------------------------
def test_redelivered_events_are_not_counted_twice(validator) -> None:
    det, store = RateLimitDetector(limits=only("ip", 10)), MemoryStore()
    recs = [access(f"e{i}", T0 + i, client_ip="192.0.2.1") for i in range(10)]
    others = [access(f"x{i}", T0 + 10 + i, client_ip=f"192.0.2.{100 + i}") for i in range(40)]  # time goes on
    assert run(det, validator, recs + others + recs + recs[:5], store) == []  # 10, never 25


def test_the_same_stream_twice_gives_the_same_signals(validator) -> None:
    recs = [access(f"e{i}", T0 + i / 4, client_ip=f"192.0.2.{i % 3}") for i in range(200)]
    once = run(RateLimitDetector(limits=only("ip", 30)), validator, recs)
    twice = run(RateLimitDetector(limits=only("ip", 30)), validator, recs + recs)
    assert once and [s.event_ids for s in twice] == [s.event_ids for s in once]


def test_out_of_order_within_lateness_finds_the_same(validator) -> None:
    rng = random.Random(2)
    recs = [access(f"e{i}", T0 + i / 4 + rng.uniform(-5, 5), client_ip="192.0.2.1") for i in range(400)]
    in_order = run(RateLimitDetector(limits=only("ip", 100)), validator, sorted(recs, key=lambda r: r["ts"]))
    shuffled = run(RateLimitDetector(limits=only("ip", 100)), validator, recs)
    assert len(in_order) == len(shuffled) == 2
    assert all(abs(a.ts - b.ts) < 10 for a, b in zip(in_order, shuffled, strict=True))


def test_state_is_bounded_and_expires_on_event_time(validator) -> None:
    det, store = RateLimitDetector(), MemoryStore()
    run(det, validator, [access(f"e{i}", T0 + i / 100, client_ip=f"198.18.{i // 250}.{i % 250}")
                         for i in range(5000)], store)
    # 5,000 one-off addresses in 50 s: one key each, the tenant's key, one id set per 10 s
    assert len(store) == 5000 + 1 + 5
    store.expire(T0 + 50 + 60 + 1)  # a window after their last sub-window, the keys are gone
    assert len(store) == 5
    store.expire(T0 + 50 + 120 + 1)  # the id sets live two windows: as long as a count could matter
    assert len(store) == 0


# -- configuration ---------------------------------------------------------------------------------
def test_from_config_reads_a_duck_typed_section() -> None:
    section = SimpleNamespace(enabled=True, window_seconds=30, sub_windows=3, max_evidence=5,
                              limits={"ip": 1200}, route_limits={"llm-gateway": {"subject": 120}})
    det = RateLimitDetector.from_config(section, tokens=None)
    assert det.window_seconds == 30.0 and det.sub_windows == 3 and det.max_evidence == 5
    assert det.limit_for("orders-api", "ip") == 1200 and det.limit_for("orders-api", "subject") == 600
    assert det.limit_for("llm-gateway", "subject") == 120 and det.limit_for("llm-gateway", "ip") == 1200


@pytest.mark.parametrize(("limits", "routes", "message"), [
    ({"ipp": 5}, {}, "limits.ipp: unknown dimension"),
    ({"ip": -1}, {}, "limits.ip: limit must be a whole number >= 0, got -1"),
    ({}, {"llm-gateway": {"subject": 2.5}}, "route_limits.llm-gateway.subject: limit must be a whole number"),
])
def test_from_config_names_the_bad_key(limits, routes, message) -> None:
    section = SimpleNamespace(window_seconds=60, limits=limits, route_limits=routes)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        RateLimitDetector.from_config(section, tokens=None)


# -- against the simulator -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(minter):
    def make(attacks, events=30_000, seed=5, attack_every=5000, start=SimulationSpec.start):
        spec = SimulationSpec(seed=seed, events=events, attacks=attacks, attack_every=attack_every, start=start)
        lines, labels = [], []
        for ev in generate(spec, minter):
            lines.append(json.dumps(ev.event).encode())
            labels += [(ev.event["event_id"], lab) for lab in ev.labels]
        return lines, labels
    return make


def with_detector(settings, validator, detector) -> Pipeline:
    pipeline = Pipeline.from_settings(settings, validator)
    pipeline.detectors = [d for d in pipeline.detectors if d.name != detector.name] + [detector]
    pipeline.stores[detector.name] = MemoryStore()
    return pipeline


def test_the_simulated_rate_limit_attack_is_caught(simulated, settings, validator) -> None:
    lines, labels = simulated(("traffic.rate_limit",), events=25_000, seed=2)
    runs: dict[str, set[str]] = defaultdict(set)
    entity = {}
    for eid, lab in labels:
        runs[lab["attack_id"]].add(eid)
        entity[lab["attack_id"]] = (lab["entity"]["kind"], lab["entity"]["value"])
    assert {kind for kind, _ in entity.values()} == {"subject", "ip"}  # a signed-in script, an anonymous one
    attacked = set().union(*runs.values())
    result = with_detector(settings, validator, RateLimitDetector()).process([(line, None) for line in lines])
    found = [a for a in result.alerts if a.type == "traffic.rate_limit"]
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)
    for attack_id, run_ids in runs.items():  # every burst is caught, on the entity it is labelled with
        assert any((a.entity.kind, a.entity.value) == entity[attack_id] and set(a.evidence["event_ids"]) & run_ids
                   for a in found)
    assert {a.entity.kind for a in found} <= {"subject", "ip"}  # a shared client or a tenant is not blamed


def test_the_behavioural_flood_just_under_the_limit_does_not_trip_it(simulated, settings, validator) -> None:
    lines, labels = simulated(("anomaly.flood",), events=40_000, attack_every=8000)
    assert len({lab["attack_id"] for _, lab in labels}) >= 3
    result = with_detector(settings, validator, RateLimitDetector()).process([(line, None) for line in lines])
    assert not [a for a in result.alerts if a.type == "traffic.rate_limit"]


def test_clean_traffic_at_the_daily_peak_raises_nothing(simulated, settings, validator) -> None:
    # 19:00 UTC: afternoon peak of the biggest tenant (acme, UTC-5) and evening of the others;
    # (a whole simulated day peaks at about a third of the limits: see DEFAULT_LIMITS)
    lines, _ = simulated((), events=30_000, seed=9, start=SimulationSpec.start + 19 * 3600)
    result = with_detector(settings, validator, RateLimitDetector()).process([(line, None) for line in lines])
    assert not [a for a in result.alerts if a.type == "traffic.rate_limit"]
