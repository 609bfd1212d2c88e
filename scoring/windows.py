"""What one window of one entity's traffic becomes: the `FEATURES`, their scales, and their computation
from a batch of events held as columns (pure array functions; scoring/features.py keeps the per-entity
state and decides which windows close when)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FEATURES: tuple[str, ...] = (
    "requests", "requests_rolling", "distinct_paths", "distinct_routes",
    "share_4xx", "share_401", "share_403", "share_404", "share_5xx",
    "bytes_in", "bytes_out", "latency_mean_ms", "latency_p95_ms",
    "distinct_ips", "distinct_agents", "distinct_subjects", "hour_share",
    "prompt_tokens", "completion_tokens", "completion_per_call", "completion_rolling", "token_age_s",
)
# Rolling totals over the last `rolling_windows` windows (this one included) and the feature they sum.
ROLLING: dict[str, str] = {"requests_rolling": "requests", "completion_rolling": "completion_tokens"}
# Shares live in [0, 1]; everything else is a count or an amount, compared on a log scale.
SHARE_FEATURES: frozenset[str] = frozenset(f for f in FEATURES if f.startswith("share_")) | {"hour_share"}
LOG_MASK = np.array([f not in SHARE_FEATURES for f in FEATURES])
# The features whose excess over the training range can raise an alert (scoring.anomaly): what the caller
# did. Not the hour share (low when suspicious, never high), not latency and 5xx (more the backend's
# doing than the caller's). A rolling total counts only while the window keeps pace with it (see there).
EXCESS_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f not in {
    "hour_share", "latency_mean_ms", "latency_p95_ms", "share_5xx"})
KINDS: tuple[str, ...] = ("subject", "client", "ip", "tenant")
HOUR_PRIOR = 24.0  # pseudo-requests spread evenly over the day: a new entity's hour share is 1/24
# Status shares are shrunk towards 0 by this many pseudo-requests: k of n → k / (n + 5), so one refused
# request out of one is 17 %, not 100 %, while 80 refusals out of 100 stay 76 %. `raw_share` undoes it.
SHARE_PSEUDO = 5.0
LATENCY_QUANTILE = 0.95
EVIDENCE_IDS = 10  # event ids kept per window, spread evenly over it in time
_IDX = {name: i for i, name in enumerate(FEATURES)}
_EMA_FLOOR = 0.05  # the running typical value averages the first 20 windows, then decays at 5 %
PACE = 0.5  # a rolling total is evidence of this window only while the window runs at ≥ half its average


def excess_eligible(X: np.ndarray, rolling_windows: int) -> np.ndarray:
    """Which features of each row may raise an alert by their excess over the training range: those of
    `EXCESS_FEATURES`, rolling totals only while this window keeps pace with them (so that a burst is not
    re-reported by every quiet window of the next quarter of an hour)."""
    X = np.atleast_2d(X)
    ok = np.tile(np.array([f in EXCESS_FEATURES for f in FEATURES]), (len(X), 1))
    for total, base in ROLLING.items():
        t, b = _IDX[total], _IDX[base]
        ok[:, t] &= X[:, b] * rolling_windows >= PACE * X[:, t]
    return ok


def raw_share(share: float, requests: float) -> float:
    """The plain share k / n behind a shrunk status share k / (n + SHARE_PSEUDO)."""
    return share * (requests + SHARE_PSEUDO) / requests if requests > 0 else 0.0


def transform(X: np.ndarray) -> np.ndarray:
    """Feature values → the scale the model and the explanations compare on (log1p for amounts)."""
    out = np.array(X, dtype=np.float64, copy=True)
    out[:, LOG_MASK] = np.log1p(np.maximum(out[:, LOG_MASK], 0.0))
    return out


@dataclass(frozen=True)
class Columns:
    """One batch of access events as columns (strings hashed: only equality within a window matters)."""

    ts: np.ndarray  # float64 event time
    win: np.ndarray  # int64 window index
    slots: np.ndarray  # int64 (n, len(KINDS)): the entity slot per kind, -1 when the event has none
    eid: np.ndarray  # int64 hash of the event id (redeliveries are counted once)
    event_id: np.ndarray  # object: the event ids, for evidence
    path: np.ndarray
    route: np.ndarray
    agent: np.ndarray
    ip: np.ndarray
    sub: np.ndarray  # int64 hashes; 0 = absent
    status: np.ndarray  # int16
    bytes_in: np.ndarray
    bytes_out: np.ndarray
    latency: np.ndarray  # float64, NaN when absent
    prompt: np.ndarray
    completion: np.ndarray
    llm: np.ndarray  # bool: carried LLM usage
    token_age: np.ndarray  # float64 ts − iat of a verified token, NaN when none

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Columns:
        return Columns(**{name: getattr(self, name)[idx] for name in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        if len(parts) == 1:
            return parts[0]
        return Columns(**{name: np.concatenate([getattr(p, name) for p in parts])
                          for name in Columns.__dataclass_fields__})


@dataclass
class WindowTable:
    """Closed windows, one row each, in (window, kind, entity) order."""

    kind: np.ndarray  # int8 index into KINDS
    tenant: list[str]
    value: list[str]
    window: np.ndarray  # int64 window index (start = window * window_seconds)
    first_ts: np.ndarray
    last_ts: np.ndarray
    X: np.ndarray  # float64 (n, len(FEATURES)), raw values
    typical: np.ndarray  # float64 (n, len(FEATURES)): the entity's typical transformed value before; NaN if new
    history: np.ndarray  # int64: windows of this entity seen before this one
    event_ids: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.window)

    def rows(self, start: int, stop: int) -> WindowTable:
        return WindowTable(self.kind[start:stop], self.tenant[start:stop], self.value[start:stop],
                           self.window[start:stop], self.first_ts[start:stop], self.last_ts[start:stop],
                           self.X[start:stop], self.typical[start:stop], self.history[start:stop],
                           self.event_ids[start:stop])

    @staticmethod
    def empty() -> WindowTable:
        f = len(FEATURES)
        return WindowTable(np.zeros(0, np.int8), [], [], np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                           np.zeros((0, f)), np.zeros((0, f)), np.zeros(0, np.int64), [])

    @staticmethod
    def concat(parts: Sequence[WindowTable]) -> WindowTable:
        parts = [p for p in parts if len(p)] or [WindowTable.empty()]
        if len(parts) == 1:
            return parts[0]
        return WindowTable(
            np.concatenate([p.kind for p in parts]), [t for p in parts for t in p.tenant],
            [v for p in parts for v in p.value], np.concatenate([p.window for p in parts]),
            np.concatenate([p.first_ts for p in parts]), np.concatenate([p.last_ts for p in parts]),
            np.vstack([p.X for p in parts]), np.vstack([p.typical for p in parts]),
            np.concatenate([p.history for p in parts]), [e for p in parts for e in p.event_ids])


# -- pure functions over columns ---------------------------------------------------------------------
def _distinct(group: np.ndarray, values: np.ndarray, n_groups: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Distinct `values` per group (rows need not be sorted)."""
    if valid is not None:
        group, values = group[valid], values[valid]
    if len(group) == 0:
        return np.zeros(n_groups)
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    new = np.ones(len(g), dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    return np.bincount(g[new], minlength=n_groups).astype(np.float64)


def _group_quantile(group: np.ndarray, values: np.ndarray, n_groups: int, q: float) -> np.ndarray:
    """The q-quantile (lower nearest rank) of the finite `values` per group; 0 for a group without any."""
    ok = np.isfinite(values)
    group, values = group[ok], values[ok]
    out = np.zeros(n_groups)
    if len(group) == 0:
        return out
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    out[has] = v[starts[has] + np.floor(q * (counts[has] - 1)).astype(np.int64)]
    return out


def _mean(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    ok = np.isfinite(values)
    n = np.bincount(group[ok], minlength=n_groups)
    s = np.bincount(group[ok], weights=values[ok], minlength=n_groups)
    return np.divide(s, n, out=np.zeros(n_groups), where=n > 0)


def window_aggregates(cols: Columns, rows: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """The features of `FEATURES` that need nothing but the window's own events, one row per group.

    `rows[i]` is an event index into `cols` that belongs to group `group[i]`. The state-dependent
    features (`ROLLING`, `hour_share`) are left at 0 for the caller.
    """
    X = np.zeros((n_groups, len(FEATURES)))
    n = np.bincount(group, minlength=n_groups).astype(np.float64)
    denom = n + SHARE_PSEUDO
    status = cols.status[rows]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=mask.astype(np.float64), minlength=n_groups)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values.astype(np.float64), minlength=n_groups)

    X[:, _IDX["requests"]] = n
    X[:, _IDX["distinct_paths"]] = _distinct(group, cols.path[rows], n_groups)
    X[:, _IDX["distinct_routes"]] = _distinct(group, cols.route[rows], n_groups)
    X[:, _IDX["share_4xx"]] = count((status >= 400) & (status < 500)) / denom
    X[:, _IDX["share_401"]] = count(status == 401) / denom
    X[:, _IDX["share_403"]] = count(status == 403) / denom
    X[:, _IDX["share_404"]] = count(status == 404) / denom
    X[:, _IDX["share_5xx"]] = count(status >= 500) / denom
    X[:, _IDX["bytes_in"]] = total(cols.bytes_in[rows])
    X[:, _IDX["bytes_out"]] = total(cols.bytes_out[rows])
    latency = cols.latency[rows]
    X[:, _IDX["latency_mean_ms"]] = _mean(group, latency, n_groups)
    X[:, _IDX["latency_p95_ms"]] = _group_quantile(group, latency, n_groups, LATENCY_QUANTILE)
    X[:, _IDX["distinct_ips"]] = _distinct(group, cols.ip[rows], n_groups)
    agent = cols.agent[rows]
    X[:, _IDX["distinct_agents"]] = _distinct(group, agent, n_groups, agent != 0)
    sub = cols.sub[rows]
    X[:, _IDX["distinct_subjects"]] = _distinct(group, sub, n_groups, sub != 0)
    X[:, _IDX["prompt_tokens"]] = total(cols.prompt[rows])
    completion = total(cols.completion[rows])
    X[:, _IDX["completion_tokens"]] = completion
    calls = count(cols.llm[rows])
    X[:, _IDX["completion_per_call"]] = np.divide(completion, calls, out=np.zeros(n_groups), where=calls > 0)
    X[:, _IDX["token_age_s"]] = _mean(group, cols.token_age[rows], n_groups)
    return X
