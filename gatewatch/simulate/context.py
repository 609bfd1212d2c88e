"""The shared state of one simulation run and the builders of the two kinds of records (CONTRACT.md §1).

Every random draw goes through `Sim.rng` (ids, nonces and jtis included), so a seed fixes the run.
Actors produce `Item`s: (event time, payload), where the payload is a `SimEvent`, a `Spawn` of a new
actor, or None (a wake-up that lets an actor look at shared state at that event time).
"""

from __future__ import annotations

import base64
import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any, Union

from gatewatch.keys import TokenMinter
from gatewatch.simulate.clock import quantize, rfc3339
from gatewatch.simulate.model import ACCESS_TOPIC, TOKENS_TOPIC, SimEvent, SimulationSpec
from gatewatch.simulate.population import Population, Tenant


class Spawn:
    """Start another actor (a generator of `Item`s) at this point of event time."""

    __slots__ = ("actor",)

    def __init__(self, actor: Iterator[Item]) -> None:
        self.actor = actor


Item = tuple[float, Union[SimEvent, Spawn, None]]
NO_LABELS: tuple[dict[str, Any], ...] = ()


class Sim:
    def __init__(self, spec: SimulationSpec, minter: TokenMinter, population: Population,
                 rng: random.Random) -> None:
        self.spec = spec
        self.minter = minter
        self.pop = population
        self.rng = rng
        self.stats: Counter[str] = Counter()
        self.tokens: Any = None  # the TokenBroker, set by the engine

    # -- identifiers ---------------------------------------------------------------------------
    def event_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def jti(self) -> str:
        return f"{self.rng.getrandbits(96):024x}"

    def nonce(self) -> str:
        """A DPoP proof `jti`: 128 random bits, base64url."""
        return base64.urlsafe_b64encode(self.rng.getrandbits(128).to_bytes(16, "big")).rstrip(b"=").decode()

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    # -- records -------------------------------------------------------------------------------
    def access(self, t: float, tenant: Tenant, *, ip: str, ua: str | None, method: str, path: str,
               route: str | None, status: int, latency_ms: float, bytes_in: int | None = None,
               bytes_out: int | None = None, token: str | None = None, nonce: str | None = None,
               llm: dict[str, Any] | None = None, key: str | None = None, gateway: str | None = None,
               labels: tuple[dict[str, Any], ...] = NO_LABELS) -> Item:
        t = quantize(t)
        if gateway is None:  # the load balancer spreads requests over the tenant's gateway instances
            gw = tenant.gateways
            gateway = gw[int(self.rng.random() * len(gw))]
        ev: dict[str, Any] = {
            "kind": "access", "event_id": self.event_id(), "ts": rfc3339(t),
            "gateway": gateway, "tenant": tenant.name, "client_ip": ip, "method": method, "path": path,
            "route": route, "status": status, "latency_ms": round(latency_ms, 1),
        }
        if route is None:
            del ev["route"]
        if bytes_in is not None:
            ev["bytes_in"] = bytes_in
        if bytes_out is not None:
            ev["bytes_out"] = bytes_out
        if ua is not None:
            ev["user_agent"] = ua
        if token is not None:
            ev["token"] = token
        if nonce is not None:
            ev["nonce"] = nonce
        if llm is not None:
            ev["llm"] = llm
        return t, SimEvent(ACCESS_TOPIC, key or ip, ev, labels)

    def token_event(self, t: float, tenant: Tenant, type_: str, *, sub: str, client_id: str,
                    token: str | None = None, jti: str | None = None, presented_jti: str | None = None,
                    issued_jti: str | None = None, refresh_jti: str | None = None,
                    labels: tuple[dict[str, Any], ...] = NO_LABELS) -> Item:
        t = quantize(t)
        ev: dict[str, Any] = {"kind": "token", "event_id": self.event_id(), "ts": rfc3339(t),
                              "tenant": tenant.name, "type": type_}
        if token is not None:
            ev["token"] = token
        if jti is not None:
            ev["jti"] = jti
        if presented_jti is not None:
            ev["presented_jti"] = presented_jti
            ev["issued_jti"] = issued_jti
        if refresh_jti is not None:  # `issued`: the refresh token issued with it (its family)
            ev["refresh_jti"] = refresh_jti
        ev["sub"] = sub
        ev["client_id"] = client_id
        return t, SimEvent(TOKENS_TOPIC, sub, ev, labels)

    # -- picking -------------------------------------------------------------------------------
    def other_tenant(self, tenant: Tenant) -> Tenant | None:
        others = [t for t in self.pop.tenants if t is not tenant]
        return self.rng.choice(others) if others else None
