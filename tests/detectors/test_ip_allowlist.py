"""traffic.ip_not_allowed: tenant and route CIDR allow-lists (IPv4 and IPv6), one signal per source
and hour, startup errors for bad CIDRs, and the simulator's admin-route intruders (caught)."""

from __future__ import annotations

import ipaddress
import json
import random
import tomllib
from types import SimpleNamespace

import pytest

from detectors.state import MemoryStore
from detectors.traffic_ip_allowlist import AllowList, IpAllowlistDetector, route_allow_lists
from gatewatch.pipeline import Pipeline
from gatewatch.simulate import ADMIN_ALLOWED_CIDRS, SimulationSpec, generate
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.conftest import T0
from tests.events import access, raw

UMBRELLA_ADMIN = {"umbrella": {"admin-api": ["10.20.0.0/16", "2001:db8:20::/48"]}}


def run(detector, validator, records, store=None):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    store = store if store is not None else MemoryStore()
    out = []
    for i, rec in enumerate(records):
        out += detector.observe(dec.decode(raw(rec), Source("t", 0, i)), store)
    return out


def admin(event_id: str, ts: float, ip: str, **fields):
    return access(event_id, ts, **{"tenant": "umbrella", "route": "admin-api", "path": "/admin/v1/users?page=1",
                                   "client_ip": ip, **fields})


# -- route and tenant lists ------------------------------------------------------------------------
def test_a_request_from_outside_the_routes_allow_list(validator) -> None:
    det = IpAllowlistDetector(routes=UMBRELLA_ADMIN)
    sigs = run(det, validator, [
        admin("in", T0, "10.20.3.4"),
        admin("out", T0 + 1, "203.0.113.9", status=403),
        access("other-route", T0 + 2, tenant="umbrella", route="orders-api", client_ip="203.0.113.9"),
        access("other-tenant", T0 + 3, tenant="acme", route="admin-api", client_ip="203.0.113.9"),
        access("no-route", T0 + 4, tenant="umbrella", route=None, client_ip="203.0.113.9"),
    ])
    assert len(sigs) == 1
    s = sigs[0]
    assert s.type == "traffic.ip_not_allowed" and s.tenant == "umbrella" and s.event_ids == ("out",)
    assert (s.entity.kind, s.entity.value) == ("ip", "203.0.113.9")
    assert s.reasons[0] == ("request to umbrella admin-api from 203.0.113.9, outside the route's allow-list "
                            "10.20.0.0/16, 2001:db8:20::/48")
    assert s.reasons[1] == "the gateway answered 403: it refused the request"
    assert s.figures["allow_list"] == {"route": ["10.20.0.0/16", "2001:db8:20::/48"]}
    assert s.figures["scopes"] == ["route"] and s.figures["status"] == 403
    assert s.strength == 0.5


@pytest.mark.parametrize(("ip", "allowed"), [
    ("2001:db8:20::5", True), ("2001:db8:20:ffff:ffff:ffff:ffff:ffff", True),
    ("2001:db8:21::1", False), ("2001:db8::1", False), ("::1", False),
    ("::ffff:10.20.1.1", True),  # IPv4-mapped IPv6 is the IPv4 address
    ("10.21.0.1", False), ("10.20.255.255", True),
])
def test_ipv6_and_ipv4_lists(ip, allowed, validator) -> None:
    sigs = run(IpAllowlistDetector(routes=UMBRELLA_ADMIN), validator, [admin("e1", T0, ip)])
    assert (sigs == []) == allowed


def test_a_tenant_list_covers_every_route_and_both_lists_must_hold(validator) -> None:
    det = IpAllowlistDetector(tenants={"umbrella": ["10.0.0.0/8", "2001:db8::/32"]}, routes=UMBRELLA_ADMIN)
    sigs = run(det, validator, [
        access("orders-in", T0, tenant="umbrella", route="orders-api", client_ip="10.99.0.1"),
        access("orders-out", T0 + 1, tenant="umbrella", route="orders-api", client_ip="198.51.100.7"),
        admin("admin-in-tenant-only", T0 + 2, "10.99.0.1"),  # inside the tenant's, outside the route's
        admin("admin-out-both", T0 + 3, "198.51.100.8"),
        admin("admin-in-both", T0 + 4, "2001:db8:20::1"),
    ])
    assert [(s.event_ids[0], s.figures["scopes"]) for s in sigs] == [
        ("orders-out", ["tenant"]), ("admin-in-tenant-only", ["route"]), ("admin-out-both", ["tenant", "route"])]
    assert sigs[2].reasons[0] == ("request to umbrella admin-api from 198.51.100.8, outside the tenant's allow-list "
                                  "10.0.0.0/8, 2001:db8::/32 and the route's allow-list 10.20.0.0/16, "
                                  "2001:db8:20::/48")


def test_nothing_is_restricted_by_default(validator) -> None:
    det = IpAllowlistDetector.from_config(SimpleNamespace(enabled=True), tokens=None)
    assert run(det, validator, [admin("e1", T0, "203.0.113.9")]) == []


def test_a_request_that_got_through_is_stronger_and_names_who(validator, minter) -> None:
    tok = minter.mint({"sub": "usr_admin", "client_id": "umbrella-console", "exp": T0 + 900, "iat": T0})
    sigs = run(IpAllowlistDetector(routes=UMBRELLA_ADMIN), validator,
               [admin("e1", T0, "198.18.4.4", token=tok, status=200)])
    s = sigs[0]
    assert s.strength == 0.85
    assert s.reasons[1].startswith("the gateway answered 200: the request got through")
    assert s.reasons[2] == "GET /admin/v1/users?page=1 by subject usr_admin (client umbrella-console)"
    assert [(e.kind, e.value) for e in s.entities] == [
        ("ip", "198.18.4.4"), ("subject", "usr_admin"), ("client", "umbrella-console")]
    assert len(s.token_fps) == 1 and tok not in repr(s)


# -- flood control, redelivery, state --------------------------------------------------------------
def test_one_signal_per_route_and_address_per_hour(validator) -> None:
    det, store = IpAllowlistDetector(tenants={"umbrella": ["10.20.0.0/16"]}), MemoryStore()
    recs = [admin(f"a{i}", T0 + i * 60, "203.0.113.9") for i in range(30)]  # half an hour of probing
    recs += [admin("b", T0 + 100, "203.0.113.10"),  # another address
             access("c", T0 + 200, tenant="umbrella", route="orders-api", client_ip="203.0.113.9")]  # another route
    sigs = run(det, validator, sorted(recs, key=lambda r: r["ts"]), store)
    assert [s.event_ids[0] for s in sigs] == ["a0", "b", "c"]
    store.expire(T0 + 3600 + 1)
    assert [s.event_ids for s in run(det, validator, [admin("a-next-hour", T0 + 3601, "203.0.113.9")], store)] \
        == [("a-next-hour",)]


def test_redelivery_adds_nothing_and_state_expires(validator) -> None:
    recs = [admin(f"e{i}", T0 + i, f"203.0.113.{i % 4}") for i in range(12)]
    store = MemoryStore()
    once = run(IpAllowlistDetector(routes=UMBRELLA_ADMIN), validator, recs)
    twice = run(IpAllowlistDetector(routes=UMBRELLA_ADMIN), validator, recs + recs, store)
    assert len(once) == 4 and [s.event_ids for s in twice] == [s.event_ids for s in once]
    assert len(store) == 4
    store.expire(T0 + 12 + 3600)
    assert len(store) == 0


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("tenants", "routes", "message"), [
    ({"acme": ["10.0.0.300/8"]}, {}, "tenants.acme: '10.0.0.300/8' is not a valid IPv4 or IPv6 network"),
    ({}, {"acme": {"admin-api": ["2001:db8::/129"]}}, "routes.acme.admin-api: '2001:db8::/129' is not a valid"),
    ({"acme": ["10.1.2.3/16"]}, {}, "did you mean 10.1.0.0/16"),
    ({"acme": ["corp-vpn"]}, {}, "tenants.acme: 'corp-vpn'"),
    ({"acme": []}, {}, "tenants.acme: empty allow-list"),
    ({"acme": "10.0.0.0/8"}, {}, "tenants.acme: expected a list of CIDRs"),
])
def test_an_invalid_cidr_is_a_startup_error_naming_the_value(tenants, routes, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        IpAllowlistDetector.from_config(SimpleNamespace(tenants=tenants, routes=routes), tokens=None)
    with pytest.raises(ValueError):
        IpAllowlistDetector(tenants=tenants, routes=routes)


def test_the_documented_toml_configures_the_simulators_admin_routes(validator) -> None:
    """The exact TOML of the module docstring, for every simulated tenant, equals the helper's output."""
    toml = "".join(f"[detectors.traffic_ip_not_allowed.routes.{tenant}]\nadmin-api = {json.dumps(cidrs)}\n"
                   for tenant, cidrs in ADMIN_ALLOWED_CIDRS.items())
    section = tomllib.loads(toml)["detectors"]["traffic_ip_not_allowed"]
    assert section["routes"] == route_allow_lists(ADMIN_ALLOWED_CIDRS)
    det = IpAllowlistDetector.from_config(SimpleNamespace(**section), tokens=None)
    assert ADMIN_ALLOWED_CIDRS["acme"] == ["192.0.2.0/27", "2001:db8:c000::/48"]
    ok = [admin("v4", T0, "192.0.2.17", tenant="acme"), admin("v6", T0, "2001:db8:c000:1::9", tenant="acme")]
    assert run(det, validator, ok) == []
    assert len(run(det, validator, [admin("x", T0, "192.0.2.40", tenant="acme")])) == 1  # globex's range


def test_lookup_agrees_with_ipaddress_for_many_networks() -> None:
    rng = random.Random(7)
    nets = [ipaddress.ip_network(f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24").supernet(
        new_prefix=rng.choice([8, 12, 16, 20, 24])) for _ in range(300)]
    nets += [ipaddress.ip_network(f"2001:db8:{rng.randrange(65536):x}::/48").supernet(
        new_prefix=rng.choice([32, 40, 48])) for _ in range(100)]
    allow = AllowList.parse([str(n) for n in nets], "x")
    for _ in range(3000):
        addr = ipaddress.ip_address(rng.choice([
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96)))]))
        assert allow.allows(addr.version, int(addr)) == any(addr in n for n in nets)


# -- against the simulator -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(minter):
    def make(attacks, events, seed=5, attack_every=1500, start=SimulationSpec.start):
        spec = SimulationSpec(seed=seed, events=events, attacks=attacks, attack_every=attack_every, start=start)
        return list(generate(spec, minter))
    return make


def process(settings, validator, sim_events):
    detector = IpAllowlistDetector(routes=route_allow_lists(ADMIN_ALLOWED_CIDRS))
    pipeline = Pipeline.from_settings(settings, validator)
    pipeline.detectors = [d for d in pipeline.detectors if d.name != detector.name] + [detector]
    pipeline.stores[detector.name] = MemoryStore()
    result = pipeline.process([(json.dumps(ev.event).encode(), None) for ev in sim_events])
    return [a for a in result.alerts if a.type == "traffic.ip_not_allowed"]


def test_admin_routes_called_from_outside_are_caught(simulated, settings, validator) -> None:
    events = simulated(("traffic.ip_not_allowed",), events=20_000)
    sources = {(ev.event["tenant"], ev.event["client_ip"]) for ev in events if ev.labels}
    attacked = {ev.event["event_id"] for ev in events if ev.labels}
    assert len(sources) >= 5
    found = process(settings, validator, events)
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)
    # every intruding address is reported, at most once an hour per (tenant, route, address)
    assert {(a.tenant, a.entity.value) for a in found} == sources
    assert all(a.entity.kind == "ip" for a in found)


def test_clean_traffic_with_the_admin_allow_lists_raises_nothing(simulated, settings, validator) -> None:
    # office hours on both sides of the Atlantic: admins at work, on IPv4 and IPv6 office addresses
    events = simulated((), events=40_000, seed=3, start=SimulationSpec.start + 15 * 3600)
    admin_ips = {ev.event["client_ip"] for ev in events if ev.event.get("route") == "admin-api"}
    assert any(":" in ip for ip in admin_ips) and any("." in ip for ip in admin_ips)
    assert process(settings, validator, events) == []
