"""Window features per entity, for the behaviour model (DESIGN.md "Anomaly model").

Access events are cut into tumbling windows of event time (`window_seconds`, default 60 s) per
entity — subject, client, IP and tenant — and each closed window becomes one row of `FEATURES`.
Events are buffered as compact numpy columns until the watermark passes their window's end; then
all due windows are computed together, as array operations over the batch (sort once, group with
`bincount` / `lexsort`), never per event.

Which events a window holds depends only on the stream's order, not on how it was cut into batches:
an event is dropped as too late when its window ended at or before the watermark of the events that
arrived before it (largest event time so far minus the lateness). Windows then close on the
watermark. So replaying a stream in batches of 1 or of 10,000 gives the same rows.

Per-entity state (kept between windows, in arrays indexed by a slot per entity): the request and
completion-token totals of its last `rolling_windows` windows, a 24-bin histogram of the hours its
past requests fell in, and a running typical value of every feature (log scale; used to explain, not
to score). An entity idle for `entity_ttl_seconds` starts afresh on its next window, whether or not
its slot has been freed yet (that happens at most hourly), so the TTL too is independent of batching.
Strings (paths, agents, IPs, subjects, event ids) are kept as Python hashes: only equality inside one
process matters.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import numpy as np

from ingest.events import AccessRecord, Event
from scoring.windows import (EVIDENCE_IDS, EXCESS_FEATURES, FEATURES, HOUR_PRIOR, KINDS, LATENCY_QUANTILE,
                             LOG_MASK, PACE, ROLLING, SHARE_FEATURES, SHARE_PSEUDO, Columns, WindowTable, _IDX,
                             _EMA_FLOOR, excess_eligible, raw_share, transform, window_aggregates)


# -- the stateful part ---------------------------------------------------------------------------------
class WindowFeatures:
    """Buffers access events as columns and turns closed windows into feature rows.

    `observe(events)` in arrival order; `close(watermark)` returns every window that ended at or
    before the watermark (`float("inf")`: all of them, at the end of a replay).
    """

    def __init__(self, *, window_seconds: int = 60, rolling_windows: int = 15, lateness_seconds: float = 30.0,
                 entity_ttl_seconds: int = 7 * 86_400, kinds: tuple[str, ...] = KINDS) -> None:
        self.window_seconds = window_seconds
        self.kinds = kinds  # the entity kinds to window (a re-keyed stream's worker does only its own)
        self._on = tuple(k in kinds for k in KINDS)
        self.rolling_windows = rolling_windows
        self.lateness_seconds = lateness_seconds
        self.entity_ttl_seconds = entity_ttl_seconds
        self.too_late = 0  # events dropped: their window had closed before they arrived
        self._parts: list[Columns] = []
        self._max_ts = -math.inf
        self._closed_through = -(2**62)  # last window index closed
        self._keys: dict[tuple[int, str, str], int] = {}
        self._slot_key: list[tuple[int, str, str] | None] = []
        self._free: list[int] = []
        self._cap = 0
        self._last_sweep = -math.inf
        # per-slot state arrays, sized by `_grow`
        self._ring_w: np.ndarray
        self._ring_n: np.ndarray
        self._hours: np.ndarray
        self._ema: np.ndarray
        self._seen: np.ndarray
        self._last_w: np.ndarray
        self._grow(1024)

    # state arrays, one row per slot
    def _grow(self, cap: int) -> None:
        def grown(old: np.ndarray | None, shape: tuple[int, ...], dtype: type, fill: float) -> np.ndarray:
            new: np.ndarray = np.full((cap, *shape), fill, dtype=dtype)
            if old is not None:
                new[: len(old)] = old
            return new

        first = self._cap == 0
        r, f = self.rolling_windows, len(FEATURES)
        self._ring_w = grown(None if first else self._ring_w, (r,), np.int64, -(2**62))
        # float32 where exactness does not matter: ~0.45 KB per entity at the defaults
        self._ring_n = grown(None if first else self._ring_n, (r, len(ROLLING)), np.float32, 0.0)
        self._hours = grown(None if first else self._hours, (24,), np.float32, 0.0)
        self._ema = grown(None if first else self._ema, (f,), np.float32, 0.0)
        self._seen = grown(None if first else self._seen, (), np.int64, 0)
        self._last_w = grown(None if first else self._last_w, (), np.int64, -(2**62))
        self._cap = cap

    def _reset(self, slots: np.ndarray) -> None:
        self._ring_w[slots] = -(2**62)
        self._ring_n[slots] = 0.0
        self._hours[slots] = 0.0
        self._ema[slots] = 0.0
        self._seen[slots] = 0
        self._last_w[slots] = -(2**62)

    def _slot(self, kind: int, tenant: str, value: str) -> int:
        key = (kind, tenant, value)
        slot = self._keys.get(key)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._slot_key[slot] = key
            else:
                slot = len(self._slot_key)
                self._slot_key.append(key)
                if slot >= self._cap:
                    self._grow(self._cap * 2)
            self._keys[key] = slot
        return slot

    @property
    def entities(self) -> int:
        return len(self._keys)

    @property
    def pending(self) -> int:
        return sum(len(p) for p in self._parts)

    def observe(self, events: Sequence[Event]) -> int:
        """Buffer the access events of a batch (in arrival order); returns how many were kept."""
        if not events:
            return 0
        all_ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
        running = np.maximum.accumulate(np.concatenate(([self._max_ts], all_ts)))
        self._max_ts = float(running[-1])
        idx: list[int] = []
        # One tuple per kept event, transposed once below: cheaper than a list append per column.
        rows_out: list[tuple[Any, ...]] = []
        slot = self._slot
        on_sub, on_client, on_ip, on_tenant = self._on
        nan = math.nan
        for i, ev in enumerate(events):
            rec = ev.record
            if type(rec) is not AccessRecord:
                continue
            idx.append(i)
            tok = ev.token
            if tok is not None:
                sub, client = tok.sub, tok.client_id
                iat = tok.iat if tok.claims is not None else None
            else:
                sub = client = iat = None
            tenant = rec.tenant
            ip = rec.client_ip
            llm = rec.llm
            lat = rec.latency_ms
            rt = rec.route
            ag = rec.user_agent
            k0 = slot(0, tenant, sub) if sub is not None and on_sub else -1
            k1 = slot(1, tenant, client) if client is not None and client != sub and on_client else -1
            k2 = slot(2, tenant, ip) if on_ip else -1
            k3 = slot(3, tenant, tenant) if on_tenant else -1
            # `_h` inlined (a call per column per event is a tenth of this loop): 0 for None, else the
            # string's hash (never 0)
            rows_out.append((
                k0, k1, k2, k3, rec.event_id, hash(rec.path) or 1, 0 if rt is None else hash(rt) or 1,
                0 if ag is None else hash(ag) or 1, hash(ip) or 1, 0 if sub is None else hash(sub) or 1,
                rec.status, rec.bytes_in or 0, rec.bytes_out or 0, nan if lat is None else lat,
                llm.prompt_tokens if llm is not None else 0, llm.completion_tokens if llm is not None else 0,
                llm is not None, nan if iat is None else ev.ts - iat))
        if not idx:
            return 0
        (s0, s1, s2, s3, event_ids, path, route, agent, ip_h, sub_h, status, bytes_in, bytes_out, latency,
         prompt, completion, llm_on, token_age) = zip(*rows_out, strict=True)
        rows = np.asarray(idx, dtype=np.int64)
        ts = all_ts[rows]
        win = np.floor(ts / self.window_seconds).astype(np.int64)
        watermark_before = running[rows] - self.lateness_seconds  # running[i] = max over events before i
        keep = ((win + 1) * self.window_seconds > watermark_before) & (win > self._closed_through)
        batch = Columns(
            ts=ts, win=win, slots=np.array((s0, s1, s2, s3), dtype=np.int64).T.copy(),
            eid=np.fromiter((hash(e) for e in event_ids), dtype=np.int64, count=len(rows)),
            event_id=np.asarray(event_ids, dtype=object),
            path=np.asarray(path, dtype=np.int64), route=np.asarray(route, dtype=np.int64),
            agent=np.asarray(agent, dtype=np.int64), ip=np.asarray(ip_h, dtype=np.int64),
            sub=np.asarray(sub_h, dtype=np.int64), status=np.asarray(status, dtype=np.int16),
            bytes_in=np.asarray(bytes_in, dtype=np.float64),
            bytes_out=np.asarray(bytes_out, dtype=np.float64),
            latency=np.asarray(latency, dtype=np.float64),
            prompt=np.asarray(prompt, dtype=np.float64),
            completion=np.asarray(completion, dtype=np.float64),
            llm=np.asarray(llm_on, dtype=bool), token_age=np.asarray(token_age, dtype=np.float64))
        kept = int(keep.sum())
        self.too_late += len(rows) - kept
        if kept:
            self._parts.append(batch if kept == len(rows) else batch.take(np.flatnonzero(keep)))
        return kept

    def close(self, watermark: float) -> WindowTable:
        """Feature rows of every buffered window that ended at or before `watermark`.

        `float("inf")` closes every open window (the end of a replay); events of those windows that
        arrive afterwards are dropped as too late.
        """
        if not self._parts:
            return WindowTable.empty()
        buf = Columns.concat(self._parts)
        if math.isinf(watermark) and watermark > 0:
            last = int(buf.win.max())
        else:
            last = math.floor(watermark / self.window_seconds) - 1
        due = buf.win <= last
        if not due.any():
            self._parts = [buf]
            return WindowTable.empty()
        self._parts = [buf.take(np.flatnonzero(~due))] if not due.all() else []
        self._closed_through = max(self._closed_through, last)
        table = self._features(buf.take(np.flatnonzero(due)))
        self._sweep(last)
        return table

    def _features(self, cols: Columns) -> WindowTable:
        _, first = np.unique(cols.eid, return_index=True)  # a redelivered event counts once
        if len(first) < len(cols):
            cols = cols.take(np.sort(first))
        present = cols.slots >= 0
        ev_idx, kind_idx = np.nonzero(present)  # one row per (event, kind it has an entity for)
        if len(ev_idx) == 0:  # e.g. a stream windowing subjects only, and no event had one
            return WindowTable.empty()
        slot = cols.slots[ev_idx, kind_idx]
        win = cols.win[ev_idx]
        order = np.lexsort((cols.ts[ev_idx], win, slot))  # by entity, then window, then time
        ev_idx, slot, win = ev_idx[order], slot[order], win[order]
        starts = np.ones(len(slot), dtype=bool)
        starts[1:] = (slot[1:] != slot[:-1]) | (win[1:] != win[:-1])
        group = np.cumsum(starts) - 1
        n_groups = int(group[-1]) + 1
        head = np.flatnonzero(starts)
        g_slot, g_win = slot[head], win[head]
        X = window_aggregates(cols, ev_idx, group, n_groups)
        ts = cols.ts[ev_idx]
        first_ts = ts[head]
        last_ts = ts[np.append(head[1:], len(ts)) - 1]
        typical, history = self._stateful(g_slot, g_win, X)
        # Evidence: up to EVIDENCE_IDS events spread evenly over the window (what dominates it, dominates them).
        rank = np.arange(len(group)) - head[group]
        size = np.bincount(group, minlength=n_groups)[group]
        step = np.maximum(1, -(-size // EVIDENCE_IDS))
        pick = (rank % step) == 0
        ids: list[list[str]] = [[] for _ in range(n_groups)]
        for g, eid in zip(group[pick].tolist(), cols.event_id[ev_idx[pick]].tolist(), strict=True):
            ids[g].append(eid)
        out = np.lexsort((g_slot, g_win))  # emit in window order (then slot: arrival of the entity)
        keys = [self._slot_key[s] for s in g_slot[out].tolist()]
        return WindowTable(
            kind=np.array([k[0] for k in keys], dtype=np.int8) if keys else np.zeros(0, np.int8),
            tenant=[k[1] for k in keys], value=[k[2] for k in keys],
            window=g_win[out], first_ts=first_ts[out], last_ts=last_ts[out], X=X[out], typical=typical[out],
            history=history[out], event_ids=[tuple(ids[g]) for g in out.tolist()])

    def _stateful(self, g_slot: np.ndarray, g_win: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rolling counts and hour shares from the entity state; then fold each window into the state.

        Groups are sorted by (slot, window); the k-th window of every entity is handled in step k, so
        each step is one vectorised update in which no slot appears twice.
        """
        n = len(g_slot)
        first_of_slot = np.ones(n, dtype=bool)
        first_of_slot[1:] = g_slot[1:] != g_slot[:-1]
        head = np.flatnonzero(first_of_slot)
        rank = np.arange(n) - head[np.cumsum(first_of_slot) - 1]
        typical = np.full_like(X, np.nan)
        history = np.zeros(n, dtype=np.int64)
        r = self.rolling_windows
        ttl_windows = max(1, self.entity_ttl_seconds // self.window_seconds)
        hour_of = ((g_win * self.window_seconds) // 3600) % 24
        sums = [_IDX[f] for f in ROLLING.values()]
        totals = [_IDX[f] for f in ROLLING]
        hi = _IDX["hour_share"]
        for k in range(int(rank.max()) + 1):
            g = np.flatnonzero(rank == k)
            s, w = g_slot[g], g_win[g]
            stale = self._last_w[s] < w - ttl_windows
            if stale.any():
                self._reset(s[stale])
            now = X[g][:, sums]  # (n, len(ROLLING)) this window's amounts
            ring_w = self._ring_w[s]
            inside = (ring_w > w[:, None] - r) & (ring_w < w[:, None])
            X[g[:, None], totals] = now + (self._ring_n[s] * inside[:, :, None]).sum(axis=1)
            pos = w % r
            self._ring_w[s, pos] = w
            self._ring_n[s, pos] = now
            count = X[g, _IDX["requests"]]
            h = hour_of[g]
            hours = self._hours[s]
            X[g, hi] = (hours[np.arange(len(g)), h] + HOUR_PRIOR / 24.0) / (hours.sum(axis=1) + HOUR_PRIOR)
            self._hours[s, h] += count
            seen = self._seen[s]
            history[g] = seen
            known = seen > 0
            typical[g[known]] = self._ema[s[known]]
            alpha = np.maximum(1.0 / (seen + 1.0), _EMA_FLOOR)[:, None]
            self._ema[s] += alpha * (transform(X[g]) - self._ema[s])
            self._seen[s] = seen + 1
            self._last_w[s] = w
        return typical, history

    def _sweep(self, last_closed: int) -> None:
        """Free the slots of entities idle for longer than the TTL (at most once per hour of event time)."""
        now = (last_closed + 1) * self.window_seconds
        if now - self._last_sweep < 3600 or not self._keys:
            return
        self._last_sweep = now
        ttl_windows = max(1, self.entity_ttl_seconds // self.window_seconds)
        used = len(self._slot_key)
        idle = np.flatnonzero((self._last_w[:used] < last_closed - ttl_windows)
                              & np.array([k is not None for k in self._slot_key]))
        if len(idle) == 0:
            return
        if self._parts:  # an entity with events still buffered keeps its slot
            pending = np.unique(np.concatenate([p.slots.ravel() for p in self._parts]))
            idle = np.setdiff1d(idle, pending)
        self._reset(idle)
        for s in idle.tolist():
            key = self._slot_key[s]
            assert key is not None
            del self._keys[key]
            self._slot_key[s] = None
            self._free.append(s)


__all__ = ["Columns", "EVIDENCE_IDS", "EXCESS_FEATURES", "FEATURES", "HOUR_PRIOR", "KINDS",
           "LATENCY_QUANTILE", "LOG_MASK", "PACE", "ROLLING", "SHARE_FEATURES", "SHARE_PSEUDO",
           "WindowFeatures", "WindowTable", "excess_eligible", "raw_share", "transform", "window_aggregates"]
