"""The decision's tables: holds (deny this entity until then) and token rows (fingerprint → whose token).

Written by the worker (gatewatch/sinks.py `StoreSink`) from the pipeline's `Hold`s and `TokenSeen`s
(scoring/holds.py); read by the decision endpoint (api/decision.py) on the gateway's hot path and by the
entity pages. Reads go through an in-process cache dropped when `PRAGMA data_version` says another
connection committed, checked at most every `staleness_seconds` — as the risk table's cache does.

A hold is one row per (tenant, kind, value, type): a later hold of the same type extends `until`. Rows
whose `until` (holds) or `exp` (tokens) lies more than `KEEP_SECONDS` behind the newest written event
time are pruned on write.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from api.database import ChangeWatch, Database, tenant_clause
from scoring.holds import Hold, TokenSeen

KEEP_SECONDS = 86_400.0  # an expired hold stays visible on entity pages this long
_CACHE_MAX = 100_000

HOLDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    tenant  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    value   TEXT NOT NULL,
    type    TEXT NOT NULL,
    reason  TEXT NOT NULL,
    since   REAL NOT NULL,
    until   REAL NOT NULL,
    PRIMARY KEY (kind, value, tenant, type)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_until ON holds (until);
CREATE TABLE IF NOT EXISTS tokens (
    tfp        TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    sub        TEXT,
    client_id  TEXT,
    iss        TEXT,
    jti        TEXT,
    exp        REAL,
    ts         REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_exp ON tokens (exp);
"""


class HoldsTable:
    def __init__(self, db: Database, *, staleness_seconds: float = 0.25) -> None:
        self.db = db
        self._conn = db.conn
        self._lock = db.lock
        self.staleness_seconds = staleness_seconds
        self._others = ChangeWatch(db)  # another process's commits drop the caches
        self._holds: dict[tuple[str, str], tuple[Hold, ...]] = {}
        self._tokens: dict[str, TokenSeen | None] = {}

    # -- writes -------------------------------------------------------------------------------------
    def upsert(self, holds: Iterable[Hold], tokens: Iterable[TokenSeen]) -> None:
        holds, tokens = list(holds), list(tokens)
        if not holds and not tokens:
            return
        newest = max([h.since for h in holds] + [t.ts for t in tokens])
        with self._lock, self.db.transaction():
            self._conn.executemany(
                "INSERT INTO holds (tenant, kind, value, type, reason, since, until) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, value, tenant, type) DO UPDATE SET "
                "reason = CASE WHEN excluded.until > holds.until THEN excluded.reason ELSE holds.reason END, "
                "since = MIN(holds.since, excluded.since), until = MAX(holds.until, excluded.until)",
                [(h.tenant, h.kind, h.value, h.type, h.reason, h.since, h.until) for h in holds])
            self._conn.executemany(
                "INSERT OR IGNORE INTO tokens (tfp, tenant, sub, client_id, iss, jti, exp, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(t.tfp, t.tenant, t.sub, t.client_id, t.iss, t.jti, t.exp, t.ts) for t in tokens])
            horizon = newest - KEEP_SECONDS
            self._conn.execute("DELETE FROM holds WHERE until < ?", (horizon,))
            self._conn.execute("DELETE FROM tokens WHERE exp < ?", (horizon,))
            for h in holds:
                self._holds.pop((h.kind, h.value), None)
            for t in tokens:
                self._tokens.pop(t.tfp, None)

    # -- reads --------------------------------------------------------------------------------------
    def token(self, tfp: str) -> TokenSeen | None:
        """Whose token this fingerprint is, if a worker has seen it signed."""
        with self._lock:
            self._refresh_if_stale()
            if tfp in self._tokens:
                return self._tokens[tfp]
            row = self._conn.execute("SELECT tfp, tenant, sub, client_id, iss, jti, exp, ts FROM tokens "
                                     "WHERE tfp = ?", (tfp,)).fetchone()
            found = TokenSeen(*row) if row is not None else None
            self._cache(self._tokens, tfp, found)
            return found

    def holds_of(self, keys: Sequence[tuple[str, str]], tenants: Collection[str] | None = None) -> list[Hold]:
        """Every stored hold (live or recently ended) of the given (kind, value) entities in `tenants`."""
        out: list[Hold] = []
        with self._lock:
            self._refresh_if_stale()
            for key in dict.fromkeys(keys):
                cached = self._holds.get(key)
                if cached is None:
                    rows = self._conn.execute(
                        "SELECT tenant, kind, value, type, reason, since, until FROM holds "
                        "WHERE kind = ? AND value = ?", key).fetchall()
                    cached = tuple(Hold(*r) for r in rows)
                    self._cache(self._holds, key, cached)
                out.extend(cached)
        if tenants is not None:
            allowed = set(tenants)
            out = [h for h in out if h.tenant in allowed]
        return out

    def holds_in(self, tenants: Collection[str] | None, *, at: float, limit: int = 100) -> list[Hold]:
        """Live holds (until > at) in the allowed tenants, newest first: for listing."""
        restrict = tenant_clause(tenants, None)
        if restrict is None:
            return []
        with self._lock:
            rows = self._conn.execute(
                f"SELECT tenant, kind, value, type, reason, since, until FROM holds WHERE until > ? AND "
                f"{restrict[0]} ORDER BY since DESC LIMIT ?", [at, *restrict[1], limit]).fetchall()
        return [Hold(*r) for r in rows]

    def count_by_type(self, *, live_at: float | None = None) -> dict[str, int]:
        """Stored holds by type (`live_at`: only those still denying at that event time)."""
        where, args = ("WHERE until > ?", [live_at]) if live_at is not None else ("", [])
        with self._lock:
            rows = self._conn.execute(f"SELECT type, COUNT(*) FROM holds {where} GROUP BY type", args).fetchall()
        return dict(rows)

    def _cache(self, cache: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = value

    def _refresh_if_stale(self) -> None:
        if self._others.changed(self.staleness_seconds):
            self._holds.clear()
            self._tokens.clear()
