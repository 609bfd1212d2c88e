"""One API request as a gateway logs it: endpoint, concrete path, status, latency, bytes, LLM usage."""

from __future__ import annotations

from bisect import bisect
from itertools import accumulate
from typing import Any

from gatewatch.simulate import catalog
from gatewatch.simulate.catalog import Endpoint
from gatewatch.simulate.context import NO_LABELS, Item, Sim
from gatewatch.simulate.population import Device, Tenant

# Error mixes (probability, status) by kind of request; the rest is the endpoint's success status.
_GET_ID = ((0.02, 404), (0.003, 403), (0.002, 429), (0.001, 500), (0.001, 502), (0.0008, 503), (0.0004, 504))
_GET_LIST = ((0.005, 400), (0.003, 403), (0.002, 429), (0.001, 500), (0.001, 502), (0.0008, 503),
             (0.0004, 504))
_WRITE = ((0.012, 400), (0.012, 422), (0.003, 409), (0.003, 403), (0.002, 429), (0.0015, 500),
          (0.001, 502), (0.001, 503), (0.0005, 504))
_DELETE = ((0.01, 404), (0.003, 403), (0.002, 500))
_LLM = ((0.015, 429), (0.005, 400), (0.003, 500), (0.003, 502), (0.002, 503), (0.002, 504))
_PUBLIC = ((0.004, 404), (0.001, 502), (0.0005, 503))


def _errors(route: str, ep: Endpoint) -> tuple[list[float], list[int]]:
    if route == "public":
        table = _PUBLIC
    elif ep.llm:
        table = _LLM
    elif ep.method == "GET":
        table = _GET_ID if ep.by_id else _GET_LIST
    elif ep.method == "DELETE":
        table = _DELETE
    else:
        table = _WRITE
    return list(accumulate(p for p, _ in table)), [s for _, s in table]


_TABLES = {
    route: ([ep for ep in eps], list(accumulate(ep.weight for ep in eps)), [_errors(route, ep) for ep in eps])
    for route, eps in catalog.APIS.items()
}


_READS = {
    route: ([i for i, ep in enumerate(eps) if ep.method == "GET"],
            list(accumulate(ep.weight for ep in eps if ep.method == "GET")))
    for route, eps in catalog.APIS.items()
}


def pick_endpoint(sim: Sim, route: str) -> int:
    _, cum, _ = _TABLES[route]
    return bisect(cum, sim.rng.random() * cum[-1])


def pick_read(sim: Sim, route: str) -> int:
    """A GET of `route` (the follow-up calls of a page view), or any endpoint if it has none."""
    indices, cum = _READS[route]
    if not indices:
        return pick_endpoint(sim, route)
    return indices[bisect(cum, sim.rng.random() * cum[-1])]


def pick_api(sim: Sim, apis: tuple[tuple[str, ...], list[float]]) -> str:
    names, cum = apis
    return names[bisect(cum, sim.rng.random() * cum[-1])]


def render(sim: Sim, ep: Endpoint, tenant: Tenant, device: Device | None, ids: dict[str, Any] | None = None) -> str:
    fields = ep.fields
    if not fields:
        return ep.template
    rng = sim.rng
    values: dict[str, Any] = {}
    for f in fields:
        if ids and f in ids:
            values[f] = ids[f]
        elif f == "oid":
            values[f] = rng.randint(10_000_000, 99_999_999)
        elif f == "cid":
            book = device.subject.customers if device is not None and device.subject.customers else None
            values[f] = rng.choice(book) if book else rng.randint(100_000, 999_999)
        elif f == "sku":
            values[f] = f"SKU-{10_000 + int(rng.paretovariate(1.1) * 37) % 90_000}"
        elif f == "pid":
            values[f] = f"pay_{rng.getrandbits(48):012x}"
        elif f == "uid":
            values[f] = rng.choice(tenant.users).sub
        elif f == "page":
            values[f] = 1 + int(rng.expovariate(0.9))
        elif f == "q":
            values[f] = rng.choice(catalog.SEARCH_TERMS).replace(" ", "+")
        else:
            values[f] = rng.randint(1, 6)
    return ep.template.format(**values)


def _llm_usage(sim: Sim, ep: Endpoint, device: Device | None, tenant: Tenant,
               scale: float, long_prompt: float | None = None) -> tuple[dict[str, Any], float, int, int]:
    provider, model, ms_per_token = device.llm if device is not None and device.llm else tenant.llm_models[0]
    prompt_med = device.prompt_median if device is not None else 600.0
    comp_med = device.completion_median if device is not None else 220.0
    if long_prompt is None:
        prompt = int(min(max(sim.lognormal(prompt_med, 0.8), 8), 100_000))
    else:  # whole documents pasted in, up to a 128k context window
        prompt = int(min(max(sim.lognormal(long_prompt, 0.3), 1_000), 128_000))
    if ep.llm == "embeddings":
        emb = catalog.EMBEDDING_MODELS[1 if provider == "mistral" else 0]
        usage = {"provider": emb[0], "model": emb[1], "prompt_tokens": prompt // 2 + 1, "completion_tokens": 0}
        return usage, sim.lognormal(ep.latency_ms, ep.sigma), prompt * 2 + 120, 17_000 + prompt * 4
    if scale == 1.0:
        completion = int(min(max(sim.lognormal(comp_med, 0.6), 1), 4_096))
    else:
        completion = int(min(max(sim.lognormal(comp_med * scale, 0.25), 1), 65_536))
    latency = 180.0 + completion * ms_per_token * sim.lognormal(1.0, 0.25) + prompt * 0.02
    usage = {"provider": provider, "model": model, "prompt_tokens": prompt, "completion_tokens": completion}
    return usage, latency, prompt * 4 + 200, completion * 4 + 450


def request(sim: Sim, t: float, tenant: Tenant, route: str, *, ip: str, ua: str | None,
            device: Device | None = None, token: str | None = None, nonce: str | None = None,
            key: str | None = None, status: int | None = None, endpoint: int | None = None,
            ids: dict[str, Any] | None = None, llm_scale: float = 1.0, long_prompt: float | None = None,
            labels: tuple[dict[str, Any], ...] = NO_LABELS) -> Item:
    """An access event for one call of `route` on `tenant` (endpoint drawn by weight unless given);
    `llm_scale` multiplies an LLM call's completion, `long_prompt` is the median of its prompt."""
    eps, _, errors = _TABLES[route]
    i = pick_endpoint(sim, route) if endpoint is None else endpoint
    ep = eps[i]
    rng = sim.rng
    if status is None:
        cum, codes = errors[i]
        r = rng.random()
        status = ep.ok if r >= cum[-1] else codes[bisect(cum, r)]
    path = render(sim, ep, tenant, device, ids)
    bytes_in = int(sim.lognormal(ep.bytes_in, 0.4)) if ep.bytes_in else 0
    usage = None
    if status < 300:
        if ep.llm:
            usage, latency, bytes_in, bytes_out = _llm_usage(sim, ep, device, tenant, llm_scale, long_prompt)
        else:
            latency = sim.lognormal(ep.latency_ms, ep.sigma)
            bytes_out = 0 if status == 204 else int(sim.lognormal(ep.bytes_out, 0.5))
    else:
        bytes_out = int(rng.uniform(60, 260))
        if status == 504:
            latency = rng.uniform(29_000.0, 30_050.0)  # the upstream timeout
        elif status in (401, 403, 429, 503):
            latency = sim.lognormal(3.0, 0.5)  # refused at the gateway
        else:
            latency = sim.lognormal(max(ep.latency_ms, 40.0), 0.7)
    return sim.access(t, tenant, ip=ip, ua=ua, method=ep.method, path=path, route=route, status=status,
                      latency_ms=latency, bytes_in=bytes_in, bytes_out=bytes_out, token=token,
                      nonce=nonce, llm=usage, key=key, labels=labels)


def endpoint_index(route: str, method: str, template: str) -> int:
    eps = _TABLES[route][0]
    return next(i for i, ep in enumerate(eps) if ep.method == method and ep.template == template)
