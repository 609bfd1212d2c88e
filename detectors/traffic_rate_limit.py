"""`traffic.rate_limit`: requests over a configured limit per subject, client, IP or tenant.

Every access event is counted once per dimension — the token's `sub` and `client_id` (only when its
signature verified), the client IP, the tenant — under the key (dimension, tenant, value, route): a
limit is "N requests per `window_seconds` on one route", a default per dimension plus per-route
overrides (`route_limits = {"llm-gateway": {"subject": 120}}`); a limit of 0 switches a dimension
off (for all routes, or for one). Requests answered 429 count too: they are requests.

With N workers every key must see all of its events: subjects travel on the principal-keyed stream,
clients, IPs and tenants need re-keyed streams (docs/DESIGN.md "State, partitions and scale-out"), with one instance per stream
counting only its `dimensions`.

Counting (bounded memory at any cardinality): a ring of `sub_windows` + 1 counters per key, one per
`window_seconds / sub_windows` of event time. The count over the sliding window (t − W, t] is the
full sub-windows plus the oldest one weighted by how much of it is still inside the window (the
Cloudflare/nginx sliding-window-counter estimate, at a finer grain; `sub_windows = 1` is exactly the
two-window version). The estimate is exact when requests are spread evenly inside each sub-window;
its error is at most the requests of that one oldest sub-window (≤ W / sub_windows of traffic, ~1/6
of the window at the default 6; ±1 request for steady traffic). An event older than its key's
window (newest − W) is not counted: it cannot change the current window.

Firing: as soon as the estimate exceeds the limit (a count equal to the limit is allowed), then at
most once per key per window while it stays over. `strength` grows with the overshoot: 0.5 at the
limit, +0.25 per doubling, 1.0 at 4×; the overshoot is the larger of the window count and the pace of
the newest sub-windows projected over the window, so a burst is strong already when it crosses.

Redelivery (the same event id again: at-least-once input, a re-keying producer's retry) is never
counted twice: a 64-bit hash of every event id (Python's string hash: the state lives in one process
and is rebuilt, never persisted) is kept per sub-window of event time, for as long as
a count it made can still be in some key's ring (2 W + one sub-window, plus the watermark's
lateness). A sub-window's hashes are a set while it is current and a sorted array of 8 bytes each
from two sub-windows on (late stragglers go to a small set beside it); a hash collision (odds
~1e-12 per event at 50,000 events/s) would skip one request. Measured: ~2.7 KB of memory
per event/s of throughput (~3.2 KB just before the pipeline's next expiry), i.e. ~160 MB at
50,000 events/s in one process with the default 60 s window, 1/N of it on each of N workers; plain
sets would take ~12.5 KB per event/s. A key costs ~0.5 KB while it is active (ring, times, key,
and ~0.2 KB of it the store's row and deadline entry), plus `max_evidence` event ids while it is
at half of its limit or more; it is dropped a window after its last request. A key keeps the sum of
its ring, so while that sum is under half the limit (nearly every key, nearly always) an event costs
one increment per dimension and no estimate. Cost per event: BENCHMARKS.md "Replay" (per-stage profile).

State values are updated in place after `get` and `set` again only when their deadline moves (once
per sub-window per active key), so the store's deadline heap grows with keys, not with requests. A
durable store must therefore keep the object it returned from `get` (as replay_nonce also assumes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from detectors.base import Entity, Signal
from detectors.seen_ids import SeenIds
from detectors.state import StateStore
from ingest.events import AccessRecord, Event

DIMENSIONS: tuple[str, ...] = ("subject", "client", "ip", "tenant")
# Requests per window (60 s) and route. Chosen on simulated traffic (a whole day at the simulator's
# default rate, two seeds, exact sliding counts): the busiest subject or IP made 195 requests in a
# minute on one route (a backend service; 283 at 4x the rate), the busiest shared client (a tenant's
# web app, all its users together) 293, the busiest tenant 530 (698 at 4x). subject and ip equal the
# simulator's ASSUMED_LIMITS: its rate-limit attack makes 1,800-3,600 a minute, its behavioural flood
# stays at 85-95 % of 600 per IP and must not trip. client and tenant are sums over many people, so
# they are ceilings against a runaway app or tenant, 10x and 100x the per-person limit, never
# tripped by one person's burst: a real deployment sets `tenant` to ~3x its biggest tenant's
# busiest minute on a route (one value serves every tenant), or 0 to leave tenants unlimited.
DEFAULT_LIMITS: dict[str, int] = {"subject": 600, "client": 6_000, "ip": 600, "tenant": 60_000}
_NO_ROUTE = "(no route)"
_M64 = (1 << 64) - 1
_MAX_NAMES = 10_000


@dataclass(slots=True)
class _Rate:
    """One key's sub-window counters: `counts[b % len]` holds bucket b for b in head-N..head."""

    counts: list[int]
    head: int  # absolute index of the newest bucket
    newest: float  # newest event time counted
    total: int = 0  # sum(counts), kept as counts change
    fired: float = float("-inf")  # event time of the last signal
    recent: deque[str] | None = None  # the latest event ids, kept only near or over the limit


def _as_dict(value: Any) -> dict[str, Any]:
    """A settings section or a mapping → a plain dict (unset fields of a pydantic model dropped)."""
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"expected a table of limits, got {value!r}")


def _check_limits(limits: Mapping[str, Any], where: str) -> dict[str, int]:
    out = {}
    for dim, limit in limits.items():
        if dim not in DIMENSIONS:
            raise ValueError(f"{where}.{dim}: unknown dimension (expected one of {', '.join(DIMENSIONS)})")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"{where}.{dim}: limit must be a whole number >= 0, got {limit!r}")
        out[dim] = limit
    return out


class RateLimitDetector:
    name: ClassVar[str] = "traffic.rate_limit"
    settings_key: ClassVar[str] = "traffic_rate_limit"
    partition_by: ClassVar[tuple[str, ...]] = ("principal", "client", "ip", "tenant")  # a dimension each
    reads: ClassVar[tuple[str, ...]] = ("access", "access.valid", "access.invalid")

    def __init__(self, *, window_seconds: float = 60.0, limits: Mapping[str, int] | None = None,
                 route_limits: Mapping[str, Mapping[str, int]] | None = None, sub_windows: int = 6,
                 max_evidence: int = 20, dimensions: Sequence[str] = DIMENSIONS) -> None:
        self.window_seconds = window_seconds
        self.limits = limits
        self.route_limits = route_limits
        self.sub_windows = sub_windows
        self.max_evidence = max_evidence
        self.dimensions = dimensions  # which of DIMENSIONS this instance counts (one per re-keyed stream)
        # derived lookup tables: an unset dimension falls back to the default, then to DEFAULT_LIMITS
        self._default = {**DEFAULT_LIMITS, **(limits or {})}
        self._by_route = {route: {**self._default, **over} for route, over in (route_limits or {}).items()}
        self._sub = window_seconds / sub_windows
        self._dims = tuple(d for d in DIMENSIONS if d in dimensions)  # counted in this order
        self._ring = sub_windows + 1
        # per route (None: no route, or one without overrides), the (dimension, limit) pairs counted
        self._active_default = self._active_for(self._default)
        self._active: dict[str | None, tuple[tuple[str, int], ...]] = {
            route: self._active_for(table) for route, table in self._by_route.items()}
        self._names: dict[str, str] = {}  # one shared copy of each tenant and route name in the keys

    @classmethod
    def from_config(cls, section: Any, tokens: Any, *,
                    dimensions: Sequence[str] = DIMENSIONS) -> RateLimitDetector:
        """Build from [detectors.traffic_rate_limit]; a bad value raises ValueError naming its key.

        `dimensions` is for the wiring, not the config: with N workers each dimension must see all
        events of its key, so an instance per re-keyed stream counts only that stream's dimensions."""
        unknown = [d for d in dimensions if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown rate-limit dimension {unknown[0]!r}")
        window = float(getattr(section, "window_seconds", 60))
        if not window > 0:
            raise ValueError(f"window_seconds must be positive, got {window!r}")
        sub_windows = int(getattr(section, "sub_windows", 6))
        if sub_windows < 1:
            raise ValueError(f"sub_windows must be >= 1, got {sub_windows!r}")
        limits = _check_limits(_as_dict(getattr(section, "limits", None)), "limits")
        routes = {route: _check_limits(_as_dict(over), f"route_limits.{route}")
                  for route, over in _as_dict(getattr(section, "route_limits", None)).items()}
        return cls(window_seconds=window, limits=limits, route_limits=routes, sub_windows=sub_windows,
                   max_evidence=int(getattr(section, "max_evidence", 20)), dimensions=tuple(dimensions))

    @classmethod
    def for_partition(cls, section: Any, tokens: Any, kind: str) -> RateLimitDetector:
        """The dimension keyed like the stream: subject on the principal stream, else the same name."""
        return cls.from_config(section, tokens, dimensions=("subject" if kind == "principal" else kind,))

    def _active_for(self, table: dict[str, int]) -> tuple[tuple[str, int], ...]:
        return tuple((d, table[d]) for d in self._dims if table[d] > 0)

    def limit_for(self, route: str | None, dimension: str) -> int:
        table = self._by_route.get(route, self._default) if route is not None else self._default
        return table[dimension]

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if not isinstance(rec, AccessRecord):
            return []
        ts = event.ts
        slot = int(ts // self._sub)
        ids_key = ("rl-ids", slot)
        ids: SeenIds | None = state.get(ids_key)
        h = hash(rec.event_id) & _M64
        if ids is None:
            ids = SeenIds()
            state.set(ids_key, ids, expires_at=(slot + 1) * self._sub + 2 * self.window_seconds)
            older: SeenIds | None = state.get(("rl-ids", slot - 2))
            if older is not None:
                older.pack()  # its sub-window is over: 8 bytes per id from now on
        elif h in ids:
            return []  # a redelivery: already counted
        ids.add(h)

        info = event.token
        route = rec.route
        names = self._names
        tenant: str = names.get(rec.tenant) or self._shared(rec.tenant)
        if route is not None:
            route = names.get(route) or self._shared(route)
        signals = []
        for dim, limit in self._active.get(route, self._active_default):
            if dim == "ip":
                value = rec.client_ip
            elif dim == "tenant":
                value = tenant
            elif info is None:
                continue
            else:
                named = info.sub if dim == "subject" else info.client_id
                if named is None:
                    continue
                value = named
            key = (dim, tenant, value, route)
            rate: _Rate | None = state.get(key)
            # The common case inline (a key already counting in this sub-window, far under its limit):
            # exactly the first steps of `_count`, without the call.
            if rate is not None and slot == rate.head and rate.recent is None \
                    and ts > rate.newest - self.window_seconds:
                rate.counts[slot % self._ring] += 1
                rate.total += 1
                if ts > rate.newest:
                    rate.newest = ts
                if 2 * rate.total < limit:
                    continue
                signal = self._judge(event, dim, value, limit, rate)
            else:
                signal = self._count(state, event, dim, key, value, limit, slot, rate)
            if signal is not None:
                signals.append(signal)
        return signals

    # -- internals ----------------------------------------------------------------------------
    def _shared(self, name: str) -> str:
        """The first copy seen of a tenant or route name: keys then share it (saves ~100 B a key)."""
        shared = self._names.get(name)
        if shared is None:
            if len(self._names) < _MAX_NAMES:
                self._names[name] = name
            return name
        return shared

    def _count(self, state: StateStore, event: Event, dim: str, key: tuple[str, str, str, str | None], value: str, limit: int,
               bucket: int, rate: _Rate | None) -> Signal | None:
        """Count the event under `key` (whose state is `rate`), then `_judge`."""
        ts, window, n = event.ts, self.window_seconds, self.sub_windows
        ring = n + 1
        if rate is None:
            rate = _Rate([0] * ring, bucket, ts)
            state.set(key, rate, expires_at=(bucket + 1) * self._sub + window)
        elif ts <= rate.newest - window:
            return None  # older than this key's window: it cannot change the current count
        elif bucket > rate.head:
            counts = rate.counts
            for b in range(max(rate.head + 1, bucket - n), bucket + 1):
                rate.total -= counts[b % ring]
                counts[b % ring] = 0
            rate.head = bucket
            state.set(key, rate, expires_at=(bucket + 1) * self._sub + window)
        rate.counts[bucket % ring] += 1
        rate.total += 1
        if ts > rate.newest:
            rate.newest = ts
        if 2 * rate.total < limit and rate.recent is None:
            return None  # the common case: the window's count (≤ total) is under half of the limit
        return self._judge(event, dim, value, limit, rate)

    def _judge(self, event: Event, dim: str, value: str, limit: int, rate: _Rate) -> Signal | None:
        """A key near its limit, its event counted: keep evidence, and fire once per window when over."""
        count, pace = self._estimate(rate)
        if 2 * count >= limit:
            if rate.recent is None:
                rate.recent = deque(maxlen=self.max_evidence)
            rate.recent.append(event.record.event_id)
        elif rate.recent is not None and 4 * count < limit:
            rate.recent = None
        if count <= limit + 1e-6 or rate.newest - rate.fired < self.window_seconds:  # (float rounding of `into`)
            return None
        rate.fired = rate.newest
        return self._signal(event, dim, value, limit, rate, count, pace)

    def _estimate(self, rate: _Rate) -> tuple[float, float]:
        """(requests in the window ending at the key's newest event, pace of the newest sub-windows
        projected over a whole window)."""
        n, ring, counts, head = self.sub_windows, self.sub_windows + 1, rate.counts, rate.head
        into = rate.newest / self._sub - head  # how far into the head bucket, [0, 1)
        count = rate.total - counts[(head - n) % ring] * into
        current = counts[head % ring] * min(1.0 / into, 2.0) if into > 0 else 0.0
        previous = counts[(head - 1) % ring]
        return count, max(current, previous) * n

    def _signal(self, event: Event, dim: str, value: str, limit: int, rate: _Rate, count: float,
                pace: float) -> Signal:
        rec = cast(AccessRecord, event.record)  # observe took access records only
        info = event.token
        window = self.window_seconds
        route = rec.route if rec.route is not None else _NO_ROUTE
        shown = math.ceil(count)
        ratio = max(count, pace) / limit
        overridden = rec.route is not None and dim in (self.route_limits or {}).get(rec.route, {})
        reasons = [f"{dim} {value} made {shown:,} requests in {window:g} s on {route} (limit {limit:,})"]
        if pace > count:
            reasons.append(f"current pace about {pace:,.0f} requests per {window:g} s "
                           f"({ratio:.1f}× the limit)")
        reasons.append(f"{'route' if overridden else 'default'} {dim} limit for {route}: {limit:,} per "
                       f"{window:g} s; counted on a sliding window of {self.sub_windows} sub-windows")
        recent = tuple(rate.recent) if rate.recent is not None else (rec.event_id,)
        return Signal(
            type=self.name, tenant=rec.tenant, ts=rate.newest, entities=(Entity(dim, value),),
            strength=round(min(1.0, 0.5 + 0.25 * math.log2(max(ratio, 1.0))), 3),
            reasons=tuple(reasons), event_ids=recent,
            token_fps=(info.tfp,) if info is not None and dim in ("subject", "client") else (),
            figures={"dimension": dim, "route": route, "count": shown, "limit": limit,
                     "window_seconds": window, "pace_per_window": round(pace), "overshoot": round(ratio, 2),
                     "limit_source": "route" if overridden else "default",
                     "sub_window_seconds": round(self._sub, 3)})
