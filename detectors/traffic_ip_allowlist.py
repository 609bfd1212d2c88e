"""`traffic.ip_not_allowed`: a request from outside the tenant's or the route's IP allow-list.

Two kinds of allow-lists, IPv4 and IPv6 CIDRs (a bare address is a /32 or /128):

* `tenants = {tenant: [cidr, ...]}` — the tenant accepts requests only from these, on *every* route;
* `routes = {tenant: {route: [cidr, ...]}}` — only that route of that tenant is restricted.

Both apply when both exist: a request must be inside each list that covers it. Nothing is
restricted by default. The simulator's (and the demo's) admin routes accept only the tenants'
corporate ranges, `gatewatch.simulate.ADMIN_ALLOWED_CIDRS`; `route_allow_lists` turns such a
{tenant: cidrs} table into the `routes` value, and the TOML is one table per tenant:

    [detectors.traffic_ip_not_allowed.routes.acme]
    admin-api = ["192.0.2.0/27", "2001:db8:c000::/48"]

Lists are parsed once, at construction: a value that is not an IP network (or has host bits set,
"10.1.2.3/16") raises ValueError naming the key and the value. A lookup parses the client IP once
(IPv4-mapped IPv6 counts as IPv4) and probes one hash set per distinct prefix length in the list,
so its cost does not grow with the number of CIDRs.

One signal per (tenant, route, IP) per `realert_seconds` (an hour) of event time: a script calling
an admin API from the wrong network raises one alert an hour, not one per request. A request the
gateway let through (status < 400) is stronger evidence than one it refused: it means the
allow-list is not enforced at the gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, cast

from detectors.base import Entity, Signal
from detectors.state import StateStore
from ingest.events import AccessRecord, Event

_SHOWN_CIDRS = 8  # a reason names at most this many networks of a list


@lru_cache(maxsize=65_536)
def _address(ip: str) -> tuple[int, int] | None:
    """(IP version, address as an int); IPv4-mapped IPv6 is IPv4. None if it is not an address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Parsed CIDRs: per IP version, (netmask, network addresses) per distinct prefix length."""

    cidrs: tuple[str, ...]  # as configured, for the reasons
    v4: tuple[tuple[int, frozenset[int]], ...]
    v6: tuple[tuple[int, frozenset[int]], ...]

    @classmethod
    def parse(cls, cidrs: Sequence[str], where: str) -> AllowList:
        if isinstance(cidrs, str) or not isinstance(cidrs, Sequence):
            raise ValueError(f"{where}: expected a list of CIDRs, got {cidrs!r}")
        if not cidrs:
            raise ValueError(f"{where}: empty allow-list (remove the entry to lift the restriction)")
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for cidr in cidrs:
            if not isinstance(cidr, str):
                raise ValueError(f"{where}: {cidr!r} is not a CIDR string")
            try:
                net = ipaddress.ip_network(cidr.strip(), strict=True)
            except ValueError as exc:
                hint = ""
                try:
                    hint = f"; did you mean {ipaddress.ip_network(cidr.strip(), strict=False)}?"
                except ValueError:
                    pass
                raise ValueError(f"{where}: {cidr!r} is not a valid IPv4 or IPv6 network ({exc}){hint}") from None
            tables[net.version].setdefault(int(net.netmask), set()).add(int(net.network_address))

        def frozen(t: dict[int, set[int]]) -> tuple[tuple[int, frozenset[int]], ...]:
            return tuple((mask, frozenset(nets)) for mask, nets in sorted(t.items()))

        return cls(tuple(cidrs), frozen(tables[4]), frozen(tables[6]))

    def allows(self, version: int, address: int) -> bool:
        for mask, nets in self.v4 if version == 4 else self.v6:
            if address & mask in nets:
                return True
        return False

    def describe(self) -> str:
        shown = ", ".join(self.cidrs[:_SHOWN_CIDRS])
        more = len(self.cidrs) - _SHOWN_CIDRS
        return shown + (f" (+{more} more)" if more > 0 else "")


def route_allow_lists(cidrs_by_tenant: Mapping[str, Sequence[str]],
                      route: str = "admin-api") -> dict[str, dict[str, list[str]]]:
    """{tenant: cidrs} → the `routes` value restricting `route` of each tenant to its cidrs, e.g.
    `IpAllowlistDetector(routes=route_allow_lists(ADMIN_ALLOWED_CIDRS))` for the simulator."""
    return {tenant: {route: list(cidrs)} for tenant, cidrs in cidrs_by_tenant.items()}


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump()
        return dumped
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"expected a table, got {value!r}")


class IpAllowlistDetector:
    name: ClassVar[str] = "traffic.ip_not_allowed"
    settings_key: ClassVar[str] = "traffic_ip_not_allowed"
    partition_by: ClassVar[tuple[str, ...]] = ("ip",)
    reads: ClassVar[tuple[str, ...]] = ("access", "access.valid", "access.invalid")

    def __init__(self, *, tenants: Mapping[str, Sequence[str]] | None = None,
                 routes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                 realert_seconds: float = 3600.0) -> None:
        self.tenants = tenants
        self.routes = routes
        self.realert_seconds = realert_seconds
        # parsed once here, so a bad CIDR fails at startup, never on the hot path
        self._tenant_lists = {tenant: AllowList.parse(cidrs, f"tenants.{tenant}")
                              for tenant, cidrs in (tenants or {}).items()}
        self._route_lists: dict[tuple[str, str], AllowList] = {}
        for tenant, by_route in (routes or {}).items():
            if not isinstance(by_route, Mapping):
                raise ValueError(f"routes.{tenant}: expected a table of route = [CIDRs], got {by_route!r}")
            for route, cidrs in by_route.items():
                self._route_lists[(tenant, route)] = AllowList.parse(cidrs, f"routes.{tenant}.{route}")

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> IpAllowlistDetector:
        """Build from [detectors.traffic_ip_not_allowed]; a bad CIDR raises ValueError naming its key."""
        return cls(tenants=_as_dict(getattr(section, "tenants", None)),
                   routes={t: _as_dict(r) for t, r in _as_dict(getattr(section, "routes", None)).items()},
                   realert_seconds=float(getattr(section, "realert_seconds", 3600.0)))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if not isinstance(rec, AccessRecord):
            return []
        tenant_list = self._tenant_lists.get(rec.tenant)
        route_list = self._route_lists.get((rec.tenant, rec.route)) if rec.route is not None else None
        if tenant_list is None and route_list is None:
            return []
        addr = _address(rec.client_ip)
        if addr is None:  # the decoder refuses these; never crash on one
            return []
        outside = [(scope, lst) for scope, lst in (("tenant", tenant_list), ("route", route_list))
                   if lst is not None and not lst.allows(*addr)]
        if not outside:
            return []
        route = rec.route if rec.route is not None else "(no route)"
        key = ("ipallow", rec.tenant, route, rec.client_ip)
        if state.get(key) is not None:
            return []  # reported already inside realert_seconds (or this very record, redelivered)
        state.set(key, int(event.ts), expires_at=event.ts + self.realert_seconds)  # an int: packable
        return [self._signal(event, route, outside)]

    def _signal(self, event: Event, route: str, outside: list[tuple[str, AllowList]]) -> Signal:
        rec = cast(AccessRecord, event.record)  # observe took access records only
        info = event.token
        lists = " and ".join(f"the {scope}'s allow-list {lst.describe()}" for scope, lst in outside)
        reasons = [f"request to {rec.tenant} {route} from {rec.client_ip}, outside {lists}"]
        through = rec.status < 400
        reasons.append(f"the gateway answered {rec.status}: "
                       + ("the request got through, so the allow-list is not enforced there" if through
                          else "it refused the request"))
        who = ""
        entities = [Entity("ip", rec.client_ip)]
        if info is not None and info.sub is not None:
            who = f" by subject {info.sub}" + (f" (client {info.client_id})" if info.client_id else "")
            entities.append(Entity("subject", info.sub))
        if info is not None and info.client_id is not None and info.client_id != info.sub:
            entities.append(Entity("client", info.client_id))
        reasons.append(f"{rec.method} {rec.path}{who}")
        return Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts, entities=tuple(entities),
            strength=0.85 if through else 0.5, reasons=tuple(reasons), event_ids=(rec.event_id,),
            token_fps=(info.tfp,) if info is not None else (),
            figures={"ip": rec.client_ip, "route": route, "status": rec.status,
                     "scopes": [scope for scope, _ in outside],
                     "allow_list": {scope: list(lst.cidrs) for scope, lst in outside},
                     "realert_seconds": self.realert_seconds})
