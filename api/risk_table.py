"""The risk table, its history and the hot-path cache: the risk half of `AlertStore`.

`risk` holds the newest `RiskUpdate` per (tenant, kind, value). Reads on the gateway's hot path go through
an in-process cache that this process refreshes on its own writes and drops when `PRAGMA data_version`
says another process (the worker) committed. That check itself is done at most every
`risk_staleness_seconds` (default 0.25 s), so a cached look-up touches no database at all: the price is
that a worker's write shows up in look-ups up to that long after it committed.

`risk_history` gets one row (event time, score, level) for every risk row actually written, for the
entity pages. Each (tenant, kind, value) keeps its newest `HISTORY_PER_ENTITY` rows: rows carry a
per-entity counter `n`, so pruning is one primary-key range delete per write, never a scan.

`RiskTable` works on the store's `api.database.Database`: alerts and risk share one connection, one lock
and one file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from api.database import ChangeWatch, Database, tenant_clause
from ingest.tokens import fingerprint
from scoring.risk import RiskUpdate

ENTITY_KINDS: tuple[str, ...] = ("subject", "client", "ip", "token", "tenant")
RISK_KINDS: tuple[str, ...] = ("subject", "client", "ip", "token")
HISTORY_PER_ENTITY = 500
_TFP = re.compile(r"^[0-9a-f]{16}$")
_RISK_CACHE_MAX = 100_000

RISK_SCHEMA = """
CREATE TABLE IF NOT EXISTS risk (
    tenant   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    value    TEXT NOT NULL,
    score    REAL NOT NULL,
    level    TEXT NOT NULL,
    action   TEXT NOT NULL,
    reasons  TEXT NOT NULL,
    ts       REAL NOT NULL,
    PRIMARY KEY (tenant, kind, value)
);
CREATE INDEX IF NOT EXISTS risk_entity ON risk (kind, value);
CREATE INDEX IF NOT EXISTS risk_score  ON risk (score DESC);
CREATE TABLE IF NOT EXISTS risk_history (
    kind     TEXT NOT NULL,
    value    TEXT NOT NULL,
    tenant   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    ts       REAL NOT NULL,
    score    REAL NOT NULL,
    level    TEXT NOT NULL,
    PRIMARY KEY (kind, value, tenant, n)
) WITHOUT ROWID;
"""

_KEY = "kind = ? AND value = ? AND tenant = ?"


@dataclass(frozen=True, slots=True)
class RiskPoint:
    """One row of an entity's risk history: its score at event time `ts`."""

    tenant: str
    kind: str
    value: str
    ts: float
    score: float
    level: str


def canonical_value(kind: str, value: str) -> str:
    """The form an entity is stored under: a canonical IP address, a token's fingerprint."""
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    if kind == "token":
        return value if _TFP.match(value) else fingerprint(value)
    return value


def entity_keys(kind: str, value: str) -> list[tuple[str, str]]:
    """(kind, value) pairs to look an entity up by: an IP also as given, in case it was stored that way."""
    canonical = canonical_value(kind, value)
    if kind == "ip" and canonical != value:
        return [(kind, value), (kind, canonical)]
    return [(kind, canonical)]


def _keys_clause(keys: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    return "(" + " OR ".join(["(kind = ? AND value = ?)"] * len(keys)) + ")", [p for k in keys for p in k]


class RiskTable:
    """Risk rows, their history and the hot-path cache, in `db` (see the module doc)."""

    def __init__(self, db: Database, *, staleness_seconds: float = 0.25) -> None:
        self.db = db
        self._db = db.conn
        self._lock = db.lock
        self.staleness_seconds = staleness_seconds
        self._risk_cache: dict[tuple[str, str], tuple[RiskUpdate, ...]] = {}
        self._others = ChangeWatch(db)  # another process's commits drop the cache

    # -- writes -------------------------------------------------------------------------------------
    def upsert_risk(self, updates: Iterable[RiskUpdate]) -> int:
        """Write risk updates (the newer `ts` wins per tenant/kind/value); returns rows written.

        Every row written is also appended to the entity's history.
        """
        written = 0
        with self._lock, self.db.transaction():
            for u in updates:
                cur = self._db.execute(
                    "INSERT INTO risk (tenant, kind, value, score, level, action, reasons, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant, kind, value) DO UPDATE SET score = excluded.score, "
                    "level = excluded.level, action = excluded.action, reasons = excluded.reasons, "
                    "ts = excluded.ts WHERE excluded.ts >= risk.ts",
                    (u.tenant, u.kind, u.value, float(u.score), u.level, u.action,
                     json.dumps(list(u.reasons)), float(u.ts)))
                if cur.rowcount:
                    written += 1
                    self._append_history(u)
                self._risk_cache.pop((u.kind, u.value), None)
        return written

    def _append_history(self, u: RiskUpdate) -> None:
        key = (u.kind, u.value, u.tenant)
        self._db.execute(
            "INSERT INTO risk_history (kind, value, tenant, n, ts, score, level) "
            f"SELECT ?, ?, ?, COALESCE(MAX(n), 0) + 1, ?, ?, ? FROM risk_history WHERE {_KEY}",
            (*key, float(u.ts), float(u.score), u.level, *key))
        self._db.execute(
            f"DELETE FROM risk_history WHERE {_KEY} AND n <= "
            f"(SELECT MAX(n) FROM risk_history WHERE {_KEY}) - ?", (*key, *key, HISTORY_PER_ENTITY))

    def seed_history(self) -> None:
        """One history point per current risk row (a store from before the history existed)."""
        self._db.execute("INSERT OR IGNORE INTO risk_history (kind, value, tenant, n, ts, score, level) "
                         "SELECT kind, value, tenant, 1, ts, score, level FROM risk")

    # -- reads --------------------------------------------------------------------------------------
    def get_risk(self, tenants: Collection[str] | None = None, *, sub: str | None = None,
                 client_id: str | None = None, ip: str | None = None, token: str | None = None,
                 tenant: str | None = None) -> list[RiskUpdate]:
        """Risk rows of the given entities in the allowed tenants (None = all), highest score first.

        `token` may be the token fingerprint (16 hex chars) or the compact token itself.
        """
        wanted: list[tuple[str, str]] = []
        for kind, value in (("subject", sub), ("client", client_id), ("ip", ip), ("token", token)):
            if value:
                wanted += entity_keys(kind, value)
        return self._risk_of(wanted, tenants, tenant)

    def risk_of_keys(self, keys: list[tuple[str, str]], tenants: Collection[str] | None = None) -> list[RiskUpdate]:
        """Rows of (kind, value) keys already in their stored form (the decision endpoint's hot path)."""
        return self._risk_of(keys, tenants, None)

    def entity_risk(self, kind: str, value: str, tenants: Collection[str] | None = None) -> list[RiskUpdate]:
        """The current risk rows of one entity (any stored form of it), per tenant, highest score first."""
        return self._risk_of(entity_keys(kind, value), tenants, None)

    def risk_history(self, kind: str, value: str, tenants: Collection[str] | None = None, *,
                     limit: int = 200) -> list[RiskPoint]:
        """The newest `limit` history rows of one entity in the allowed tenants, returned oldest first."""
        restrict = tenant_clause(tenants, None)
        if restrict is None or limit <= 0:
            return []
        keys_sql, args = _keys_clause(entity_keys(kind, value))
        with self._lock:
            rows = self._db.execute(
                f"SELECT tenant, kind, value, ts, score, level FROM risk_history WHERE {keys_sql} "
                f"AND {restrict[0]} ORDER BY ts DESC, n DESC, tenant DESC LIMIT ?",
                [*args, *restrict[1], limit]).fetchall()
        return [RiskPoint(*row) for row in reversed(rows)]

    def top_risk(self, tenants: Collection[str] | None = None, *, kind: str | None = None,
                 tenant: str | None = None, min_score: float = 1.0, limit: int = 20) -> list[RiskUpdate]:
        """The riskiest entities now: current rows with `score >= min_score`, highest first."""
        restrict = tenant_clause(tenants, tenant)
        if restrict is None:
            return []
        where, args = f"score >= ? AND {restrict[0]}", [float(min_score), *restrict[1]]
        if kind is not None:
            where += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(
                f"SELECT kind, value, tenant, score, level, action, reasons, ts FROM risk WHERE {where} "
                "ORDER BY score DESC, ts DESC, tenant, kind, value LIMIT ?", [*args, limit]).fetchall()
        return [RiskUpdate(k, v, t, s, lv, ac, tuple(json.loads(rs)), ts) for k, v, t, s, lv, ac, rs, ts in rows]

    # -- the cache ------------------------------------------------------------------------------------
    def _risk_of(self, wanted: list[tuple[str, str]], tenants: Collection[str] | None,
                 tenant: str | None) -> list[RiskUpdate]:
        rows: list[RiskUpdate] = []
        with self._lock:
            self._refresh_cache_if_stale()
            for key in dict.fromkeys(wanted):
                cached = self._risk_cache.get(key)
                if cached is None:
                    cached = self._read_risk(*key)
                    if len(self._risk_cache) >= _RISK_CACHE_MAX:
                        self._risk_cache.clear()
                    self._risk_cache[key] = cached
                rows.extend(cached)
        allowed = None if tenants is None else set(tenants)
        out = [r for r in rows if (allowed is None or r.tenant in allowed)
               and (tenant is None or r.tenant == tenant)]
        out.sort(key=lambda r: (-r.score, r.kind, r.value, r.tenant))
        return out

    def _read_risk(self, kind: str, value: str) -> tuple[RiskUpdate, ...]:
        rows = self._db.execute(
            "SELECT tenant, score, level, action, reasons, ts FROM risk WHERE kind = ? AND value = ?",
            (kind, value)).fetchall()
        return tuple(RiskUpdate(kind=kind, value=value, tenant=t, score=s, level=lv, action=ac,
                                reasons=tuple(json.loads(rs)), ts=ts) for t, s, lv, ac, rs, ts in rows)

    def _refresh_cache_if_stale(self) -> None:
        if self._others.changed(self.staleness_seconds):  # another connection committed: our cache may be stale
            self._risk_cache.clear()


__all__ = ["ENTITY_KINDS", "HISTORY_PER_ENTITY", "RISK_KINDS", "RISK_SCHEMA", "RiskPoint", "RiskTable",
           "canonical_value", "entity_keys"]
