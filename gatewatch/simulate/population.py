"""Who is on the gateway: tenants, their users (subjects), devices (client instances), service clients.

A device is one client instance of a subject: a browser session, a phone app install (with its own DPoP
key), a developer's SDK/CLI, or a backend service. It holds the subject's cached tokens for that client.
"""

from __future__ import annotations

import base64
import math
import random
from bisect import bisect
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from gatewatch.simulate import catalog, network
from gatewatch.simulate.model import SimulationSpec

# (name, UTC offset in hours, gateway region)
DEFAULT_TENANTS: tuple[tuple[str, float, str], ...] = (
    ("acme", -5.0, "us-east"), ("globex", 1.0, "eu-west"), ("initech", -8.0, "us-west"),
    ("umbrella", 9.0, "ap-northeast"), ("hooli", -8.0, "us-west"), ("soylent", 0.0, "eu-west"),
    ("stark", -5.0, "us-east"), ("wayne", 5.5, "ap-south"),
)
# Corporate egress ranges per tenant: the only sources admin routes (`admin-api`) accept. A tenant at
# position i of a custom list gets `network.corp_cidrs(i)`, see `admin_allowed_cidrs`.
ADMIN_ALLOWED_CIDRS: dict[str, list[str]] = {
    name: network.corp_cidrs(i) for i, (name, _, _) in enumerate(DEFAULT_TENANTS)
}
USERS_PER_TENANT_MIN = 4


def admin_allowed_cidrs(tenant_names: list[str]) -> dict[str, list[str]]:
    return {name: network.corp_cidrs(i) for i, name in enumerate(tenant_names)}


@dataclass(eq=False)
class Device:
    subject: Subject
    family: str  # browser | mobile | sdk | server
    client_id: str
    user_agent: str
    mix: str  # key of catalog.MIXES
    scope: str
    lifetime: int  # access-token lifetime, seconds
    refresh_lifetime: int  # 0: no refresh tokens (client credentials)
    home_ip: str
    dpop_jkt: str | None = None
    carrier: int = 0
    carrier_v6: int | None = None  # this handset's /64 on mobile data
    llm: tuple[str, str, float] | None = None  # (provider, model, ms per completion token)
    prompt_median: float = 600.0
    completion_median: float = 220.0
    weight: float = 1.0
    busy: int = 0  # > 0 while a session or scenario drives this device
    seen: bool = False
    # the cached token (see tokens.TokenBroker)
    token: str | None = None
    jti: str = ""
    iat: int = 0
    exp: int = 0
    claims: dict[str, Any] | None = None
    refresh_jti: str | None = None
    refresh_exp: float = 0.0
    apis: tuple[tuple[str, ...], list[float]] = ((), [])  # API products it calls, cumulative weights

    @property
    def sub(self) -> str:
        return self.subject.sub

    @property
    def tenant(self) -> Tenant:
        return self.subject.tenant


@dataclass(eq=False)
class Subject:
    sub: str
    tenant: Tenant
    role: str  # user | admin | service
    office_worker: bool = False
    customers: list[int] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)  # services: egress addresses


@dataclass(eq=False)
class Tenant:
    name: str
    index: int
    tz: float
    region: str
    weight: float
    apis: tuple[str, ...]
    gateways: tuple[str, ...]
    corp_cidrs: list[str]
    office_ips: list[str]
    lb_ips: list[str]
    llm_models: tuple[tuple[str, str, float], ...]
    users: list[Subject] = field(default_factory=list)
    services: list[Subject] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)  # user devices, for session sampling
    cum: list[float] = field(default_factory=list)
    _mixes: dict[str, tuple[tuple[str, ...], list[float]]] = field(default_factory=dict)

    def pick_device(self, rng: random.Random) -> Device:
        return self.devices[bisect(self.cum, rng.random() * self.cum[-1])]

    def api_mix(self, mix: str) -> tuple[tuple[str, ...], list[float]]:
        """The API products a kind of caller uses on this tenant, with cumulative weights."""
        if mix not in self._mixes:
            weights = {a: w for a, w in catalog.MIXES[mix].items() if a in self.apis or a == "admin-api"}
            if not weights:
                weights = {a: 1.0 for a in self.apis}
            self._mixes[mix] = (tuple(weights), list(accumulate(weights.values())))
        return self._mixes[mix]


@dataclass
class Population:
    tenants: list[Tenant]

    @property
    def devices(self) -> list[Device]:
        return [d for t in self.tenants for d in t.devices]

    @property
    def services(self) -> list[Device]:
        return [s.devices[0] for t in self.tenants for s in t.services]


def _b64(rng: random.Random, nbytes: int) -> str:
    return base64.urlsafe_b64encode(rng.getrandbits(8 * nbytes).to_bytes(nbytes, "big")).rstrip(b"=").decode()


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _device(rng: random.Random, subject: Subject, family: str) -> Device:
    t = subject.tenant
    app = t.name.capitalize() + "App"
    scope = "openid profile orders:read orders:write customers:read catalog:read payments:read llm:invoke"
    if family == "browser":
        admin = subject.role == "admin"
        dev = Device(subject, family, f"{t.name}-console" if admin else f"{t.name}-web",
                     rng.choice(catalog.BROWSER_UAS), "admin" if admin else "browser",
                     scope + (" admin" if admin else ""), rng.choice((300, 600, 900)),
                     rng.choice((8, 12, 24)) * 3600, network.residential(rng))
    elif family == "mobile":
        ios = rng.random() < 0.55
        ua = (f"{app}/5.{rng.randint(8, 12)}.0 (iPhone; iOS {rng.choice(catalog.IOS_VERSIONS)}; Scale/3.00)"
              if ios else f"{app}/5.{rng.randint(8, 12)}.0 (Linux; {rng.choice(catalog.ANDROID_DEVICES)}) "
                          "okhttp/4.12.0")
        dev = Device(subject, family, f"{t.name}-{'ios' if ios else 'android'}", ua, "mobile", scope,
                     rng.choice((1800, 3600)), 30 * 86400, network.residential(rng, 0.3),
                     dpop_jkt=_b64(rng, 32), carrier=rng.randrange(4))
        if rng.random() < 0.35:
            dev.carrier_v6 = network.carrier_v6_prefix(rng, dev.carrier)
    elif family == "sdk":
        dev = Device(subject, family, f"{t.name}-dev-{rng.getrandbits(24):06x}",
                     rng.choice(catalog.SDK_UAS).format(tenant=t.name), "sdk", scope,
                     rng.choice((900, 1800, 3600)), 7 * 86400, network.residential(rng),
                     dpop_jkt=_b64(rng, 32) if rng.random() < 0.5 else None)
    else:  # server: a backend service using client credentials (sub = client_id)
        dev = Device(subject, family, subject.sub, rng.choice(catalog.SERVER_UAS), subject.role,
                     "orders:read payments:write customers:read catalog:read llm:invoke",
                     rng.choice((300, 900, 1800, 3600)), 0, subject.ips[0],
                     dpop_jkt=_b64(rng, 32) if rng.random() < 0.2 else None)
    dev.llm = rng.choice(t.llm_models)
    dev.prompt_median = _lognormal(rng, 600.0, 0.6)
    dev.completion_median = min(_lognormal(rng, 220.0, 0.5), 1200.0)
    dev.weight = _lognormal(rng, 1.0, 0.9)
    dev.apis = t.api_mix(dev.mix)
    subject.devices.append(dev)
    return dev


def _tenant(rng: random.Random, index: int, name: str, weight: float) -> Tenant:
    tz, region = (DEFAULT_TENANTS[index][1:] if index < len(DEFAULT_TENANTS)
                  else (rng.choice((-8.0, -5.0, 0.0, 1.0, 9.0)), rng.choice(("us-east", "eu-west"))))
    optional = rng.sample(["orders-api", "payments-api", "catalog-api"], rng.randint(2, 3))
    apis = tuple(a for a in catalog.BUSINESS_APIS if a in optional or a in ("customers-api", "llm-gateway"))
    cidrs = network.corp_cidrs(index)
    offices = [network.corp_ip(rng, cidrs[0]) for _ in range(rng.randint(2, 4))] + [
        network.corp_ip(rng, cidrs[1])]
    gateways = tuple(f"gw-{region}-{c}" for c in "abc"[: rng.randint(2, 3)])
    return Tenant(name, index, tz, region, weight, apis, gateways, cidrs, offices,
                  [network.internal(rng) for _ in gateways], tuple(rng.sample(catalog.LLM_MODELS, 2)))


def build_population(spec: SimulationSpec, rng: random.Random, names: list[str] | None = None) -> Population:
    if names is None:
        names = [DEFAULT_TENANTS[i][0] if i < len(DEFAULT_TENANTS) else f"tenant{i + 1}"
                 for i in range(spec.tenants)]
    raw = [1.0 / (i + 1) ** 0.8 for i in range(len(names))]
    tenants = [_tenant(rng, i, n, w / sum(raw)) for i, (n, w) in enumerate(zip(names, raw, strict=True))]
    for t in tenants:
        n_users = max(USERS_PER_TENANT_MIN, round(spec.subjects * t.weight))
        for u in range(n_users):
            family = ("browser", "mobile", "browser", "sdk")[u] if u < 4 else rng.choices(
                ("browser", "mobile", "sdk"), (0.55, 0.3, 0.15))[0]
            admin = u == 0 or (u >= 4 and family == "browser" and rng.random() < 0.05)
            s = Subject(f"usr_{rng.getrandbits(64):016x}", t, "admin" if admin else "user",
                        office_worker=admin or (family != "mobile" and rng.random() < 0.4))
            s.customers = [rng.randint(100_000, 999_999) for _ in range(rng.randint(15, 150))]
            _device(rng, s, family)
            if family == "browser" and not admin and rng.random() < 0.25:
                _device(rng, s, "mobile")
            t.users.append(s)
            t.devices.extend(s.devices)
        for kind in rng.sample(catalog.SERVICE_KINDS, rng.randint(2, 4)):
            s = Subject(f"{t.name}-{kind}", t, kind)
            cloud = rng.random() < 0.6
            s.ips = [network.hosting_v4(rng) if cloud else network.internal(rng) for _ in range(rng.randint(1, 2))]
            _device(rng, s, "server").weight = _lognormal(rng, 1.0, 0.6)
            t.services.append(s)
        t.cum = list(accumulate(d.weight for d in t.devices))
    return Population(tenants)
