"""Helpers shared by the attack scenarios: choosing victims, intruder addresses, merging timelines."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from gatewatch.simulate import catalog, network
from gatewatch.simulate.clock import quantize, rfc3339
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import SimEvent
from gatewatch.simulate.population import Device, Tenant

# What the traffic scenarios assume of the gateway's fixed rate limits (what a [detectors] rate-limit
# configuration would hold): `traffic.rate_limit` bursts at several times these, `anomaly.flood` stays
# at 85-95 % of the per-IP limit for a long time. Normal traffic stays far below them.
ASSUMED_LIMITS = {"ip_per_minute": 600, "subject_per_minute": 600}


def reserve(sim: Sim, *, families: tuple[str, ...] | None = None, tenant: Tenant | None = None,
            pred: Callable[[Device], bool] | None = None) -> Device | None:
    """A victim device matching the filters, preferably one no session is using; marked busy."""
    devices = tenant.devices if tenant is not None else sim.pop.devices
    pool = [d for d in devices if (families is None or d.family in families) and (pred is None or pred(d))]
    free = [d for d in pool if not d.busy]
    if not (free or pool):
        return None
    dev = sim.rng.choice(free or pool)
    dev.busy += 1
    return dev


def llm_client(sim: Sim) -> tuple[Device, bool, str]:
    """An SDK device calling the LLM gateway (reserved, else any service of it): (device, whether it was
    reserved — release it with `busy -= 1` — and the address it calls from)."""
    dev = reserve(sim, families=("sdk",), pred=lambda d: "llm-gateway" in d.apis[0])
    reserved = dev is not None
    if dev is None:
        dev = sim.rng.choice([d for d in sim.pop.services if "llm-gateway" in d.apis[0]] or sim.pop.services)
    ip = dev.home_ip if dev.family != "server" else sim.rng.choice(dev.subject.ips)
    return dev, reserved, ip


def is_user(device: Device) -> bool:
    return device.subject.role == "user"


def intruder_ip(sim: Sim) -> str:
    """Intruders mostly rent hosting-provider addresses."""
    return network.hosting(sim.rng)


def tool_ua(sim: Sim) -> str:
    return sim.rng.choice(catalog.TOOL_UAS)


def weighted_tenant(sim: Sim) -> Tenant:
    tenants = sim.pop.tenants
    return sim.rng.choices(tenants, [t.weight for t in tenants])[0]


def uses_token(item: Item) -> bool:
    """A successful API call carrying a token (not a call to the token endpoint)."""
    ev = item[1]
    if not isinstance(ev, SimEvent):
        return False
    e = ev.event
    return e["kind"] == "access" and "token" in e and e["status"] < 300 and e.get("route") != "auth"


def copy_request(sim: Sim, item: Item, t: float, *, ip: str, labels: tuple[dict[str, Any], ...],
                 status: int | None = None, ua: str | None = None) -> Item:
    """The same request (method, path, token, nonce) sent again at `t` from `ip`."""
    original = item[1]
    assert isinstance(original, SimEvent)
    t = quantize(t)
    e = dict(original.event)
    e["event_id"] = sim.event_id()
    e["ts"] = rfc3339(t)
    e["client_ip"] = ip
    if ua is not None:
        e["user_agent"] = ua
    if status is not None and status != e["status"]:
        e["status"] = status
        e["latency_ms"] = round(sim.lognormal(3.0, 0.5), 1)
        e["bytes_out"] = int(sim.rng.uniform(60, 260))
        e.pop("llm", None)
    else:
        e["latency_ms"] = round(sim.lognormal(max(e.get("latency_ms") or 30.0, 1.0), 0.3), 1)
    return t, SimEvent(original.topic, original.key, e, labels)


def merge(primary: Iterator[Item], hook: Callable[[Item], Iterable[Item]] | None = None,
          extra: Iterable[Item] = ()) -> Generator[Item, None, Any]:
    """Interleave a timeline with items created along the way (`hook(item)` → later items).

    Returns what `primary` returns. Hook items must not be earlier than the item that created them.
    """
    pending: list[tuple[float, int, Item]] = []
    seq = 0

    def push(items: Iterable[Item]) -> None:
        nonlocal seq
        for it in items:
            seq += 1
            heapq.heappush(pending, (it[0], seq, it))

    push(extra)
    while True:
        try:
            item = next(primary)
        except StopIteration as stop:
            result = stop.value
            break
        while pending and pending[0][0] <= item[0]:
            yield heapq.heappop(pending)[2]
        yield item
        if hook is not None:
            push(hook(item))
    while pending:
        yield heapq.heappop(pending)[2]
    return result


def upkeep(sim: Sim, device: Device, t: float, ip: str) -> Generator[Item, None, float]:
    """The client's own token upkeep (normal, unlabelled events); returns the time after it."""
    for item in sim.tokens.ensure(device, t, ip):
        yield item
        t = item[0] + sim.rng.uniform(0.05, 0.3)
    return t
