"""Normal behaviour: user sessions, service-to-service clients, anonymous visitors, health checks.

Traffic volume follows each tenant's local daily rhythm (`clock.diurnal`); the shares below split the
spec's mean rate between kinds of callers. Sessions are bursts of actions (a page view = a few API
calls within a second) separated by think times; phones hop between Wi-Fi and mobile data mid-session
with the same token and user agent (normal, never labelled); DPoP clients send a fresh proof `jti`
(`nonce`) with every request; browsers sometimes refresh from two tabs at once (normal).
"""

from __future__ import annotations

import math
from bisect import bisect
from collections.abc import Generator, Iterator
from itertools import accumulate

from gatewatch.simulate import catalog, network
from gatewatch.simulate.clock import DIURNAL_MAX, diurnal, local_hour
from gatewatch.simulate.context import Item, Sim, Spawn
from gatewatch.simulate.population import Device, Tenant
from gatewatch.simulate.requests import pick_api, pick_read, request

# Health checks take HEALTH_SHARE of the rate (at least one probe per instance every 30 s, at most one
# every 5 s); the rest is split between users, service clients and anonymous callers.
HEALTH_SHARE = 0.03
USER_SHARE, SERVICE_SHARE, PUBLIC_SHARE = 0.765, 0.165, 0.07
# family: (mean actions per session, mean requests per action, think-time median s, its sigma, logout p)
SESSION = {
    "browser": (12.0, 2.2, 7.0, 1.0, 0.06),
    "mobile": (8.0, 1.8, 9.0, 1.0, 0.01),
    "sdk": (18.0, 1.2, 3.0, 1.1, 0.0),
}


def _geometric(sim: Sim, mean: float) -> int:
    """1, 2, 3, ... (geometric) with the given mean."""
    if mean <= 1.0:
        return 1
    return 1 + int(math.log(1.0 - sim.rng.random()) / math.log(1.0 - 1.0 / mean))


def health_interval(sim: Sim) -> float:
    n = sum(len(ten.gateways) for ten in sim.pop.tenants)
    return min(max(n / (sim.spec.rate * HEALTH_SHARE), 5.0), 30.0)


def budget(sim: Sim) -> float:
    """Events per second left for callers other than the health checks."""
    n = sum(len(ten.gateways) for ten in sim.pop.tenants)
    rate = sim.spec.rate
    return max(rate - n / health_interval(sim), 0.5 * rate)


def mobile_data_ip(sim: Sim, device: Device) -> str:
    if device.carrier_v6 is not None and sim.rng.random() < 0.7:
        return network.carrier_v6(sim.rng, device.carrier_v6)
    return network.carrier_v4(sim.rng, device.carrier)


def session_ip(sim: Sim, device: Device, t: float) -> tuple[str, bool]:
    """Where a session comes from: (ip, at the office?)."""
    s = device.subject
    if device.family == "mobile":
        return (device.home_ip if sim.rng.random() < 0.55 else mobile_data_ip(sim, device)), False
    h = local_hour(t, s.tenant.tz)
    if s.role == "admin" or (s.office_worker and 8.0 <= h < 18.0 and sim.rng.random() < 0.85):
        return sim.rng.choice(s.tenant.office_ips), True
    return device.home_ip, False


def user_session(sim: Sim, device: Device, t: float, *, actions: int | None = None,
                 logout: bool | None = None, ip: str | None = None) -> Generator[Item, None, float]:
    """One sitting of a user on one device; returns the time it ended. The caller reserved the device."""
    rng, broker, tenant = sim.rng, sim.tokens, device.tenant
    mean_actions, mean_reqs, think, sigma, logout_p = SESSION[device.family]
    n_actions = actions or _geometric(sim, mean_actions)
    at_office = False
    if ip is None:
        ip, at_office = session_ip(sim, device, t)
    apis = device.apis if device.mix != "admin" or at_office else tenant.api_mix("browser")
    on_wifi = ip == device.home_ip
    sim.stats["sessions"] += 1
    for a in range(n_actions):
        if device.family == "mobile" and a and rng.random() < 0.06:  # leaves / reaches Wi-Fi
            on_wifi = not on_wifi
            ip = device.home_ip if on_wifi else mobile_data_ip(sim, device)
            sim.stats["network_switches"] += 1
        if device.family == "mobile" and broker.stale(device, t) and rng.random() < 0.35:
            # back from the background with an expired token: refused, then the app refreshes
            yield request(sim, t, tenant, pick_api(sim, apis), ip=ip, ua=device.user_agent, device=device,
                          token=device.token, nonce=sim.nonce() if device.dpop_jkt else None,
                          key=device.sub, status=401)
            t += rng.uniform(0.2, 0.8)
        for item in broker.ensure(device, t, ip):
            yield item
            t = item[0] + rng.uniform(0.05, 0.3)
        route = pick_api(sim, apis)
        for n in range(_geometric(sim, mean_reqs)):  # one call, then the reads the screen needs
            yield request(sim, t, tenant, route, ip=ip, ua=device.user_agent, device=device, token=device.token,
                          nonce=sim.nonce() if device.dpop_jkt else None, key=device.sub,
                          endpoint=pick_read(sim, route) if n else None)
            t += rng.uniform(0.02, 0.35)
        if a + 1 < n_actions:
            t += min(sim.lognormal(think, sigma), 900.0)
    if logout or (logout is None and rng.random() < logout_p):
        t += rng.uniform(0.5, 5.0)
        items, _, _ = broker.logout(device, t, ip)
        yield from items
    return t


def released(actor: Iterator[Item], device: Device) -> Iterator[Item]:
    try:
        yield from actor
    finally:
        device.busy -= 1


def _events_per_session(device: Device) -> float:
    mean_actions, mean_reqs, *_ = SESSION[device.family]
    return mean_actions * mean_reqs + 0.5


def user_spawner(sim: Sim, t: float) -> Iterator[Item]:
    """Session starts: a Poisson process thinned by each tenant's daily rhythm."""
    rng, tenants = sim.rng, sim.pop.tenants
    peaks = []
    for ten in tenants:
        per_session = sum(d.weight * _events_per_session(d) for d in ten.devices) / ten.cum[-1]
        peaks.append(budget(sim) * USER_SHARE * ten.weight * DIURNAL_MAX / per_session)
    cum = list(accumulate(peaks))
    while True:
        t += rng.expovariate(cum[-1])
        ten = tenants[bisect(cum, rng.random() * cum[-1])]
        if rng.random() * DIURNAL_MAX > diurnal(t, ten.tz):
            continue
        for _ in range(8):  # someone not already in a session on that device
            dev = ten.pick_device(rng)
            if not dev.busy:
                dev.busy += 1
                yield t, Spawn(released(user_session(sim, dev, t), dev))
                break


def service_actor(sim: Sim, device: Device, t: float, share: float) -> Iterator[Item]:
    """A backend client (client-credentials grant, sub = client_id) calling steadily, busier by day."""
    rng, broker, tenant = sim.rng, sim.tokens, device.tenant
    peak = 0.6 + 0.4 * DIURNAL_MAX
    lam = budget(sim) * SERVICE_SHARE * share * peak / 1.6
    ips = device.subject.ips
    while True:
        t += rng.expovariate(lam)
        if rng.random() * peak > 0.6 + 0.4 * diurnal(t, tenant.tz):
            continue
        ip = ips[int(rng.random() * len(ips))]
        for item in broker.ensure(device, t, ip):
            yield item
            t = item[0] + rng.uniform(0.02, 0.1)
        route = pick_api(sim, device.apis)
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 6)):
            yield request(sim, t, tenant, route, ip=ip, ua=device.user_agent, device=device, token=device.token,
                          nonce=sim.nonce() if device.dpop_jkt else None, key=device.sub)
            t += rng.uniform(0.005, 0.08)


def public_actor(sim: Sim, t: float) -> Iterator[Item]:
    """Anonymous callers arriving: visitors of public pages, crawlers, apps calling before login,
    people who forgot their password."""
    rng, tenants = sim.rng, sim.pop.tenants
    cum = list(accumulate(ten.weight for ten in tenants))
    lam = budget(sim) * PUBLIC_SHARE * DIURNAL_MAX / 1.93  # 1.93 events per visit
    while True:
        t += rng.expovariate(lam)
        ten: Tenant = tenants[bisect(cum, rng.random() * cum[-1])]
        if rng.random() * DIURNAL_MAX <= diurnal(t, ten.tz):
            yield t, Spawn(_visit(sim, ten, t))


def _visit(sim: Sim, ten: Tenant, t: float) -> Iterator[Item]:
    rng = sim.rng
    r = rng.random()
    if 0.7 <= r < 0.8:
        ip = network.hosting(rng)
    else:
        ip = network.residential(rng) if rng.random() < 0.6 else network.carrier_v4(rng, rng.randrange(4))
    if r < 0.8:
        ua = rng.choice(catalog.BROWSER_UAS) if r < 0.7 else rng.choice(catalog.CRAWLER_UAS)
        for _ in range(rng.randint(1, 3 if r < 0.7 else 4)):
            yield request(sim, t, ten, "public", ip=ip, ua=ua)
            t += rng.uniform(0.05, 4.0)
    elif r < 0.92:  # an app calling a protected API before it has a token
        yield request(sim, t, ten, pick_api(sim, ten.api_mix("browser")), ip=ip,
                      ua=rng.choice(catalog.BROWSER_UAS), status=401)
    else:  # someone who forgot their password
        ua = rng.choice(catalog.BROWSER_UAS)
        for _ in range(rng.randint(1, 3)):
            yield sim.access(t, ten, ip=ip, ua=ua, method="POST", path="/v1/login", route="auth", status=401,
                             latency_ms=sim.lognormal(240.0, 0.4), bytes_in=int(sim.lognormal(480, 0.3)),
                             bytes_out=int(rng.uniform(80, 200)))
            t += rng.uniform(3.0, 20.0)


def health_actor(sim: Sim, tenant: Tenant, index: int, t: float) -> Iterator[Item]:
    """The load balancer probing one gateway instance at a fixed interval."""
    interval = health_interval(sim)
    rng, gateway, ip = sim.rng, tenant.gateways[index], tenant.lb_ips[index]
    ua = catalog.HEALTH_UAS[tenant.index % 2]
    while True:
        yield sim.access(t, tenant, ip=ip, ua=ua, method="GET", path="/healthz", route="health",
                         status=503 if rng.random() < 0.001 else 200, latency_ms=sim.lognormal(1.2, 0.4),
                         bytes_in=0, bytes_out=int(rng.uniform(15, 60)), gateway=gateway)
        t += interval * rng.uniform(0.98, 1.02)
