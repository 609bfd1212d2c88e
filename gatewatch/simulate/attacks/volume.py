"""Traffic-control scenarios: a rate-limit burst, admin routes called from outside the allow-list, and a
script burning an LLM budget."""

from __future__ import annotations

from collections.abc import Iterator

from gatewatch.simulate import network
from gatewatch.simulate.attacks._common import intruder_ip, is_user, llm_client, reserve, tool_ua, upkeep, weighted_tenant
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import AttackRun
from gatewatch.simulate.requests import endpoint_index, pick_api, pick_endpoint, request


def rate_limit(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A script gone wild: one subject (or one anonymous address) at 40-60 requests/s for about a
    minute; after a few seconds the gateway's own limiter answers most of them with 429."""
    rng = sim.rng
    rate, t = rng.uniform(40.0, 60.0), t0
    end = t0 + rng.uniform(45.0, 90.0)
    dev = reserve(sim, families=("sdk", "browser"), pred=is_user) if rng.random() < 0.7 else None
    if dev is None:
        tenant, ip, ua = weighted_tenant(sim), intruder_ip(sim), tool_ua(sim)
        labels, route = run.labels("ip", ip), "public"
    else:
        tenant, ip, ua = dev.tenant, dev.home_ip, dev.user_agent
        labels, route = run.labels("subject", dev.sub), pick_api(sim, dev.apis)
    endpoint = pick_endpoint(sim, route)  # a tight loop on one call
    while t < end:
        if dev is not None:
            t = yield from upkeep(sim, dev, t, ip)
        limited = t - t0 > 5.0 and rng.random() < 0.85
        yield request(sim, t, tenant, route, ip=ip, ua=ua, device=dev, endpoint=endpoint,
                      token=dev.token if dev else None, key=dev.sub if dev else ip,
                      nonce=sim.nonce() if dev is not None and dev.dpop_jkt else None,
                      status=429 if limited else None, labels=labels)
        t += rng.expovariate(rate)
    if dev is not None:
        dev.busy -= 1


def ip_not_allowed(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """Admin routes called from outside the tenant's corporate ranges: an admin working from home
    without the VPN, or an anonymous probe from a hosting provider."""
    rng = sim.rng
    dev = reserve(sim, pred=lambda d: d.subject.role == "admin") if rng.random() < 0.6 else None
    t = t0
    if dev is not None and not network.in_cidrs(dev.home_ip, dev.tenant.corp_cidrs):
        tenant, ip = dev.tenant, dev.home_ip
        labels = run.labels("subject", dev.sub)
        for _ in range(rng.randint(3, 15)):
            t = yield from upkeep(sim, dev, t, ip)
            yield request(sim, t, tenant, "admin-api", ip=ip, ua=dev.user_agent, device=dev, token=dev.token,
                          nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, labels=labels,
                          status=403 if rng.random() < 0.7 else None)
            t += sim.lognormal(5.0, 0.8)
        dev.busy -= 1
        return
    if dev is not None:
        dev.busy -= 1
    tenant, ip, ua = weighted_tenant(sim), intruder_ip(sim), tool_ua(sim)
    labels = run.labels("ip", ip)
    for _ in range(rng.randint(5, 20)):
        yield request(sim, t, tenant, "admin-api", ip=ip, ua=ua, key=ip, status=403, labels=labels)
        t += sim.lognormal(1.5, 0.8)


def llm_budget(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A script burning one subject's LLM budget — a leaked SDK key run through a batch job, or an agent
    stuck in a loop on its owner's machine: long-context prompts (whole documents, ~50-110k tokens each)
    at 60-120 a minute for one to three minutes, several times a subject's per-minute token budget
    (1 M) from the first minute on. Same address and client as its owner's own use: only the spending
    is unusual."""
    rng = sim.rng
    dev, reserved, ip = llm_client(sim)
    labels = run.labels("subject", dev.sub)
    endpoint = endpoint_index("llm-gateway", "POST", "/v1/chat/completions")
    rate, long_prompt = rng.uniform(60.0, 120.0) / 60.0, rng.uniform(50_000.0, 110_000.0)
    t, end = t0, t0 + rng.uniform(60.0, 180.0)
    while t < end:
        t = yield from upkeep(sim, dev, t, ip)
        yield request(sim, t, dev.tenant, "llm-gateway", ip=ip, ua=dev.user_agent, device=dev, token=dev.token,
                      nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, endpoint=endpoint,
                      long_prompt=long_prompt, labels=labels)
        t += rng.expovariate(rate)
    if reserved:
        dev.busy -= 1
