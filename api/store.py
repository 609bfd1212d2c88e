"""The alert store: SQLite in WAL mode (`api.database.Database`: one connection guarded by a lock), the
alert tables here and the risk tables in `api.risk_table.RiskTable`, on the same database.

Alerts are idempotent by id (CONTRACT.md §5): re-upserting an alert merges it into the stored one
(min first_seen, max last_seen/count/risk, merged evidence ids, the new severity and reasons) and
never touches triage (status, assignee, notes, audit). The full alert is kept as JSON in `body`;
the other columns are copies for filtering and ordering. `updated_seq` grows by one for every
visible change; `changes_since` reads it (the SSE change feed).

The `meta` table holds small JSON status documents that writers leave for readers (the worker's model
status for /readyz, its figures under `worker.stats/<worker_id>` for /metrics).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, get_args

from api.database import Database, tenant_clause
from api.store_schema import SCHEMA, SCHEMA_VERSION
from api.holds_table import HOLDS_SCHEMA, HoldsTable
from api.risk_table import ENTITY_KINDS, RISK_KINDS, RISK_SCHEMA, RiskPoint, RiskTable, entity_keys
from api.store_rows import (UNSET, AuditEntry, BadCursor, Change, StoredAlert, StoreQueryError, Unset,
                            decode_body, decode_cursor, encode_body, encode_cursor, format_ts, merge_alert,
                            normalise_ts, utc_now)
from ingest.errors import ConfigError
from scoring.alerts import SEVERITIES, Alert, Status
from scoring.risk import RiskUpdate

STATUSES: tuple[str, ...] = get_args(Status)
CLOSED_STATUSES = frozenset({"resolved", "false_positive"})  # closing needs a reason (see `triage`)
def _as_set(value: str | Collection[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return sorted({v for v in items if v})


class AlertStore:
    """Alerts and risk in one SQLite file (or `":memory:"`), safe to share between threads.

    The risk methods (`upsert_risk`, `get_risk`, `entity_risk`, `risk_history`, `top_risk`) are those of
    `risk`, the `api.risk_table.RiskTable` on the same database.
    """

    def __init__(self, path: str | Path = ":memory:", *, risk_staleness_seconds: float = 0.25) -> None:
        self.path = str(path)
        self.db = Database(self.path)
        self._db = self.db.conn
        self._lock = self.db.lock
        self._db.executescript(SCHEMA + RISK_SCHEMA + HOLDS_SCHEMA)
        self.risk = RiskTable(self.db, staleness_seconds=risk_staleness_seconds)
        self.holds = HoldsTable(self.db, staleness_seconds=risk_staleness_seconds)  # the gateway decision's
        self._migrate()

    # -- risk (api.risk_table) ------------------------------------------------------------------
    @property
    def risk_staleness_seconds(self) -> float:
        return self.risk.staleness_seconds

    @risk_staleness_seconds.setter
    def risk_staleness_seconds(self, seconds: float) -> None:
        self.risk.staleness_seconds = seconds
        self.holds.staleness_seconds = seconds

    def upsert_risk(self, updates: Iterable[RiskUpdate]) -> int:
        return self.risk.upsert_risk(updates)

    def get_risk(self, tenants: Collection[str] | None = None, *, sub: str | None = None,
                 client_id: str | None = None, ip: str | None = None, token: str | None = None,
                 tenant: str | None = None) -> list[RiskUpdate]:
        return self.risk.get_risk(tenants, sub=sub, client_id=client_id, ip=ip, token=token, tenant=tenant)

    def entity_risk(self, kind: str, value: str, tenants: Collection[str] | None = None) -> list[RiskUpdate]:
        return self.risk.entity_risk(kind, value, tenants)

    def risk_history(self, kind: str, value: str, tenants: Collection[str] | None = None, *,
                     limit: int = 200) -> list[RiskPoint]:
        return self.risk.risk_history(kind, value, tenants, limit=limit)

    def top_risk(self, tenants: Collection[str] | None = None, *, kind: str | None = None,
                 tenant: str | None = None, min_score: float = 1.0, limit: int = 20) -> list[RiskUpdate]:
        return self.risk.top_risk(tenants, kind=kind, tenant=tenant, min_score=min_score, limit=limit)

    @classmethod
    def from_config(cls, store: Any) -> AlertStore:
        """From the [store] section (`url = "sqlite:///PATH"`)."""
        url: str = store.url
        if not url.startswith("sqlite:///"):
            raise ConfigError("store url must be sqlite:///PATH")
        return cls(url.removeprefix("sqlite:///"))

    def close(self) -> None:
        self.db.close()

    def ping(self) -> tuple[bool, str]:
        """Readiness: can the store answer a query?"""
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM alerts LIMIT 1").fetchall()
            return True, "ok"
        except sqlite3.Error as exc:
            return False, f"store unavailable: {type(exc).__name__}"

    # -- alerts ---------------------------------------------------------------------------------
    def upsert_alerts(self, alerts: Iterable[Alert]) -> int:
        """Insert or merge alerts in one transaction; returns how many rows visibly changed."""
        changed = 0
        with self._lock, self.db.transaction():
            seq = self._next_seq()
            for alert in alerts:
                row = self._db.execute("SELECT body FROM alerts WHERE id = ?", (alert.id,)).fetchone()
                if row is None:
                    stored = StoredAlert(**alert.model_dump(exclude={"audit"}))
                else:
                    old = decode_body(row[0])
                    stored = merge_alert(old, alert)
                    if encode_body(stored) == row[0]:
                        continue
                self._write(stored, seq)
                seq += 1
                changed += 1
        return changed

    def get_alert(self, alert_id: str, tenants: Collection[str] | None = None) -> StoredAlert | None:
        """One alert, or None when it does not exist or its tenant is not in `tenants` (None = all)."""
        with self._lock:
            row = self._db.execute("SELECT tenant, body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None or (tenants is not None and row[0] not in tenants):
            return None
        return decode_body(row[1])

    def list_alerts(self, *, tenants: Collection[str] | None = None,
                    status: str | Collection[str] | None = None,
                    severity: str | Collection[str] | None = None,
                    type: str | Collection[str] | None = None,  # noqa: A002 - the API's filter name
                    tenant: str | None = None, entity: str | None = None, since: str | None = None,
                    until: str | None = None, cursor: str | None = None, suppressed: bool | None = None,
                    limit: int = 100) -> tuple[list[StoredAlert], str | None]:
        """Newest first by (last_seen, id); returns a page and the cursor of the next one (or None).

        `suppressed`: None = muted and unmuted alike, False = only unmuted, True = only muted ones.

        Raises `StoreQueryError` (a ValueError) for a bad filter value and `BadCursor` for a bad cursor.
        """
        if not 1 <= limit <= 10_000:
            raise StoreQueryError("limit out of range")
        restrict = tenant_clause(tenants, tenant)
        if restrict is None:
            return [], None
        where: list[str] = [restrict[0]]
        args: list[Any] = list(restrict[1])
        for column, value, valid in (("status", status, STATUSES), ("severity", severity, SEVERITIES),
                                     ("type", type, None)):
            values = _as_set(value)
            if values is None:
                continue
            if not values:
                raise StoreQueryError(f"{column} is empty")
            if valid is not None and set(values) - set(valid):
                raise StoreQueryError(f"{column} must be one of {', '.join(valid)}")
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args += values
        if entity is not None:
            if not entity:
                raise StoreQueryError("entity is empty")
            kind, sep, value = entity.partition(":")
            if sep and kind in ENTITY_KINDS and value:
                where.append("entity_value = ? AND entity_kind = ?")
                args += [value, kind]
            else:
                where.append("entity_value = ?")
                args.append(entity)
        if suppressed is not None:
            where.append("suppressed = ?")
            args.append(int(suppressed))
        if since is not None:
            where.append("last_seen >= ?")
            args.append(normalise_ts(since, "since"))
        if until is not None:
            where.append("last_seen <= ?")
            args.append(normalise_ts(until, "until"))
        if cursor is not None:
            c_seen, c_id = decode_cursor(cursor)
            where.append("(last_seen < ? OR (last_seen = ? AND id < ?))")
            args += [c_seen, c_seen, c_id]
        sql = "SELECT body FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY last_seen DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        items = [decode_body(r[0]) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].last_seen, items[-1].id) if len(rows) > limit else None
        return items, next_cursor

    def triage(self, alert_id: str, tenants: Collection[str] | None, *, actor: str, at: str,
               status: str | None = None, assignee: str | None | Unset = UNSET,
               note: str | None = None, reason: str | None = None,
               change_id: str | None = None) -> StoredAlert | None:
        """Apply an analyst's change; audit every field that changed. None if not found/not allowed.

        `assignee=None` clears the assignee; leaving it UNSET keeps it. `reason` goes with a status that
        closes the alert (resolved, false_positive): kept as `close_reason` until it is reopened.
        A change with a `change_id` (one read from the triage topic) is applied at most once: applying
        it again returns the alert as it is.
        """
        if status is not None and status not in STATUSES:
            raise StoreQueryError(f"status must be one of {', '.join(STATUSES)}")
        with self._lock, self.db.transaction():
            row = self._db.execute("SELECT tenant, body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None or (tenants is not None and row[0] not in tenants):
                return None
            alert = decode_body(row[1])
            if change_id is not None and not self._db.execute(
                    "INSERT OR IGNORE INTO triage_changes (change_id) VALUES (?)", (change_id,)).rowcount:
                return alert  # applied before
            updates: dict[str, Any] = {}
            audit = list(alert.audit)
            if status is not None and status != alert.status:
                closing = status in CLOSED_STATUSES
                audit.append(AuditEntry(at=at, actor=actor, field="status", from_=alert.status, to=status,
                                        reason=reason if closing else None))
                updates["status"] = status
                updates["close_reason"] = reason if closing else None
            if not isinstance(assignee, Unset) and assignee != alert.assignee:
                audit.append(AuditEntry(at=at, actor=actor, field="assignee", from_=alert.assignee,
                                        to=assignee))
                updates["assignee"] = assignee
            if note is not None:
                notes = [*alert.notes, {"author": actor, "at": at, "text": note}]
                audit.append(AuditEntry(at=at, actor=actor, field="note", from_=None, to=note[:200]))
                updates["notes"] = notes
            if not updates:
                return alert
            updated = StoredAlert.model_validate({**alert.model_dump(exclude={"audit"}), **updates,
                                                  "audit": audit})
            self._write(updated, self._next_seq())
            return updated

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def count_by_type(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT type, COUNT(*) FROM alerts GROUP BY type ORDER BY type").fetchall()
        return {t: int(n) for t, n in rows}

    def counts(self, tenants: Collection[str] | None = None) -> dict[str, Any]:
        """Alert counts in the allowed tenants (None = all): total, suppressed, and by type/tenant/status/
        severity — suppressed alerts included, since muting must never make an alert uncountable."""
        restrict = tenant_clause(tenants)
        if restrict is None:
            return {"total": 0, "suppressed": 0, "by_type": {}, "by_tenant": {}, "by_status": {},
                    "by_severity": {}}
        where, args = f" WHERE {restrict[0]}", restrict[1]
        out: dict[str, Any] = {}
        with self._lock:
            total, muted = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(suppressed), 0) FROM alerts{where}", args).fetchone()
            out["total"], out["suppressed"] = int(total), int(muted)
            for column in ("type", "tenant", "status", "severity"):
                rows = self._db.execute(f"SELECT {column}, COUNT(*) FROM alerts{where} GROUP BY {column} "
                                        f"ORDER BY {column}", args).fetchall()
                out[f"by_{column}"] = {k: int(n) for k, n in rows}
        return out

    def count_by_type_status(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(type, status) → (alerts, of which suppressed), over every tenant: the /metrics gauges."""
        with self._lock:
            rows = self._db.execute("SELECT type, status, COUNT(*), COALESCE(SUM(suppressed), 0) FROM alerts "
                                    "GROUP BY type, status ORDER BY type, status").fetchall()
        return {(t, s): (int(n), int(m)) for t, s, n, m in rows}

    def max_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(updated_seq), 0) FROM alerts").fetchone()[0])

    def changes_since(self, seq: int, tenants: Collection[str] | None = None, *,
                      limit: int = 100) -> list[Change]:
        """Alerts whose last visible change is after `seq`, in `updated_seq` order (the SSE feed).

        An alert changed twice since `seq` appears once, at its newest seq, with its newest body: the
        feed carries states, not a log of every edit. Suppressed alerts are included.
        """
        restrict = tenant_clause(tenants)
        if restrict is None:
            return []
        where, args = f" AND {restrict[0]}", restrict[1]
        with self._lock:
            rows = self._db.execute(f"SELECT updated_seq, body FROM alerts WHERE updated_seq > ?{where} "
                                    "ORDER BY updated_seq LIMIT ?", [seq, *args, limit]).fetchall()
        return [Change(int(s), decode_body(body)) for s, body in rows]

    def entity_alerts(self, kind: str, value: str, tenants: Collection[str] | None = None, *,
                      limit: int = 50) -> list[StoredAlert]:
        """Alerts of one entity (any stored form of it: see `entity_keys`), newest first, suppressed too."""
        keys = entity_keys(kind, value)
        where = "(" + " OR ".join(["(entity_value = ? AND entity_kind = ?)"] * len(keys)) + ")"
        args: list[Any] = [p for k, v in keys for p in (v, k)]
        restrict = tenant_clause(tenants)
        if restrict is None:
            return []
        where += f" AND {restrict[0]}"
        args += restrict[1]
        with self._lock:
            rows = self._db.execute(f"SELECT body FROM alerts WHERE {where} ORDER BY last_seen DESC, id DESC "
                                    "LIMIT ?", [*args, limit]).fetchall()
        return [decode_body(r[0]) for r in rows]

    # -- status that writers leave for readers (e.g. the worker's model status for /readyz) -------
    def set_meta(self, key: str, value: dict[str, Any]) -> None:
        with self._lock, self.db.transaction():
            self._db.execute("INSERT INTO meta (key, value, updated) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                             "UPDATE SET value = excluded.value, updated = excluded.updated",
                             (key, json.dumps(value, sort_keys=True), utc_now()))

    def get_meta(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The value and when it was written (wall clock, RFC 3339), or None."""
        with self._lock:
            row = self._db.execute("SELECT value, updated FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def list_meta(self, prefix: str) -> list[tuple[str, dict[str, Any], str]]:
        """(key, value, updated) of every meta key starting with `prefix`, by key."""
        with self._lock:
            rows = self._db.execute("SELECT key, value, updated FROM meta WHERE substr(key, 1, ?) = ? "
                                    "ORDER BY key", (len(prefix), prefix)).fetchall()
        return [(k, json.loads(v), at) for k, v, at in rows]

    # -- internals --------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema (columns are only ever added)."""
        with self._lock, self.db.transaction():
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}
            if "suppressed" not in columns:  # version 1
                self._db.execute("ALTER TABLE alerts ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0")
                for aid, body in self._db.execute("SELECT id, body FROM alerts").fetchall():
                    if json.loads(body).get("suppression"):
                        self._db.execute("UPDATE alerts SET suppressed = 1 WHERE id = ?", (aid,))
            self._db.execute("CREATE INDEX IF NOT EXISTS alerts_suppressed ON alerts (suppressed, status, "
                             "last_seen DESC, id DESC)")
            if version < 3:  # risk rows written before history existed become its first points
                self.risk.seed_history()
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _next_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM alerts").fetchone()[0])

    def _write(self, a: StoredAlert, seq: int) -> None:
        self._db.execute(
            "INSERT INTO alerts (id, type, severity, tenant, entity_kind, entity_value, first_seen, last_seen, "
            "count, risk, status, assignee, suppressed, body, updated_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET type = excluded.type, severity = excluded.severity, "
            "tenant = excluded.tenant, entity_kind = excluded.entity_kind, "
            "entity_value = excluded.entity_value, first_seen = excluded.first_seen, "
            "last_seen = excluded.last_seen, count = excluded.count, risk = excluded.risk, "
            "status = excluded.status, assignee = excluded.assignee, suppressed = excluded.suppressed, "
            "body = excluded.body, "
            "updated_seq = excluded.updated_seq",
            (a.id, a.type, a.severity, a.tenant, a.entity.kind, a.entity.value, a.first_seen, a.last_seen,
             a.count, a.risk, a.status, a.assignee, int(a.suppression is not None), encode_body(a), seq))


__all__ = ["CLOSED_STATUSES", "ENTITY_KINDS", "RISK_KINDS", "STATUSES", "AlertStore", "AuditEntry", "BadCursor", "Change",
           "StoreQueryError", "StoredAlert", "UNSET", "decode_cursor", "encode_cursor", "format_ts",
           "normalise_ts", "utc_now"]
