"""Behavioural scenarios: nothing in any single request is wrong, only the behaviour is. Labelled with
type `anomaly.behaviour` (the isolation-forest model's alert type)."""

from __future__ import annotations

from collections.abc import Iterator

from gatewatch.simulate import catalog, network
from gatewatch.simulate.attacks._common import (ASSUMED_LIMITS, intruder_ip, is_user, llm_client, reserve, upkeep,
                                                weighted_tenant)
from gatewatch.simulate.clock import night_distance
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import AttackRun
from gatewatch.simulate.requests import endpoint_index, request


def scraping(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A (compromised) account pages through thousands of customer records, at night where it is night."""
    rng = sim.rng
    tenant = min(sim.pop.tenants, key=lambda ten: night_distance(t0, ten.tz))
    dev = reserve(sim, tenant=tenant, families=("browser", "sdk"), pred=is_user) or reserve(sim, tenant=tenant)
    assert dev is not None
    ip, labels = dev.home_ip, run.labels("subject", dev.sub)
    endpoint = endpoint_index("customers-api", "GET", "/v1/customers/{cid}")
    cid, rate, t = rng.randint(100_000, 800_000), rng.uniform(2.0, 5.0), t0
    for _ in range(rng.randint(1500, 3000)):
        t = yield from upkeep(sim, dev, t, ip)
        yield request(sim, t, tenant, "customers-api", ip=ip, ua=dev.user_agent, device=dev, token=dev.token,
                      nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, endpoint=endpoint,
                      ids={"cid": cid}, status=404 if rng.random() < 0.2 else 200, labels=labels)
        cid += 1 if rng.random() < 0.9 else rng.randint(2, 9)
        t += rng.uniform(0.6, 1.4) / rate
    dev.busy -= 1


def llm_abuse(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A client's LLM completions balloon to ~40x its usual size (a leaked key resold, or a runaway
    agent loop), for a quarter of an hour or more."""
    rng = sim.rng
    dev, reserved, ip = llm_client(sim)
    labels = run.labels("client", dev.client_id)
    endpoint = endpoint_index("llm-gateway", "POST", "/v1/chat/completions")
    t, end = t0, t0 + rng.uniform(900.0, 2400.0)
    while t < end:
        t = yield from upkeep(sim, dev, t, ip)
        yield request(sim, t, dev.tenant, "llm-gateway", ip=ip, ua=dev.user_agent, device=dev, token=dev.token,
                      nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, endpoint=endpoint,
                      llm_scale=40.0, labels=labels)
        t += sim.lognormal(12.0, 0.6)
    if reserved:
        dev.busy -= 1


def flood(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """One address hammering public endpoints at 85-95 % of the per-IP limit for 6-12 minutes:
    never over the limit, far above any real visitor."""
    rng = sim.rng
    tenant, ip = weighted_tenant(sim), intruder_ip(sim)
    ua, labels = rng.choice(catalog.BROWSER_UAS), run.labels("ip", ip)
    rate = ASSUMED_LIMITS["ip_per_minute"] / 60.0 * rng.uniform(0.85, 0.95)
    t, end = t0, t0 + rng.uniform(360.0, 720.0)
    while t < end:
        yield request(sim, t, tenant, "public", ip=ip, ua=ua, key=ip, labels=labels)
        t += rng.uniform(0.85, 1.15) / rate


def credential_stuffing(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """Leaked passwords tried against one tenant's login from a botnet: many addresses, many accounts,
    nearly all 401; the rare success gets a token issued."""
    rng, broker = sim.rng, sim.tokens
    tenant = weighted_tenant(sim)
    pool = [network.residential(rng) if r < 0.5 else network.carrier_v4(rng, rng.randrange(4)) if r < 0.75
            else intruder_ip(sim) for r in (rng.random() for _ in range(rng.randint(60, 250)))]
    labels = run.labels("tenant", tenant.name)
    rate = rng.uniform(1.0, 3.0)
    t, end = t0, t0 + rng.uniform(480.0, 1200.0)
    while t < end:
        ip = rng.choice(pool)
        r = rng.random()
        status = 200 if r < 0.02 else 429 if r < 0.05 else 401
        yield sim.access(t, tenant, ip=ip, ua=rng.choice(catalog.BROWSER_UAS), method="POST",
                         path="/v1/login" if rng.random() < 0.6 else "/oauth/token", route="auth", status=status,
                         latency_ms=sim.lognormal(3.0 if status == 429 else 240.0, 0.4),
                         bytes_in=int(sim.lognormal(450, 0.3)), bytes_out=int(rng.uniform(80, 300)),
                         key=ip, labels=labels)
        if status == 200:
            victim = rng.choice(tenant.users).devices[0]
            token = broker.mint(broker.claims(victim, int(t)))
            t += rng.uniform(0.3, 1.5)
            yield sim.token_event(t, tenant, "issued", sub=victim.sub, client_id=victim.client_id, token=token,
                                  labels=labels)
        t += rng.expovariate(rate)
