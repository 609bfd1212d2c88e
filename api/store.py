"""The alert store and the risk table: SQLite in WAL mode, one connection guarded by a lock.

Alerts are idempotent by id (CONTRACT.md §5): re-upserting an alert merges it into the stored one
(min first_seen, max last_seen/count/risk, merged evidence ids, the new severity and reasons) and
never touches triage (status, assignee, notes, audit). The full alert is kept as JSON in `body`;
the other columns are copies for filtering and ordering. `updated_seq` grows by one for every
visible change (the future change feed reads it).

The risk table holds the newest `RiskUpdate` per (tenant, kind, value). Reads on the gateway's hot
path go through an in-process cache that this process refreshes on its own writes and drops when
`PRAGMA data_version` says another process (the worker) committed. That check itself is done at most
every `risk_staleness_seconds` (default 0.25 s), so a cached look-up touches no database at all: the
price is that a worker's write shows up in look-ups up to that long after it committed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from ingest.tokens import fingerprint
from scoring.alerts import MAX_EVIDENCE_IDS, SEVERITIES, Alert, Status
from scoring.risk import RiskUpdate

STATUSES: tuple[str, ...] = get_args(Status)
ENTITY_KINDS: tuple[str, ...] = ("subject", "client", "ip", "token", "tenant")
RISK_KINDS: tuple[str, ...] = ("subject", "client", "ip", "token")
_TFP = re.compile(r"^[0-9a-f]{16}$")
_MAX_CURSOR_CHARS = 1024
_RISK_CACHE_MAX = 100_000
_SCHEMA_VERSION = 2  # 2: alerts.suppressed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    entity_kind   TEXT NOT NULL,
    entity_value  TEXT NOT NULL,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    count         INTEGER NOT NULL,
    risk          REAL NOT NULL,
    status        TEXT NOT NULL,
    assignee      TEXT,
    suppressed    INTEGER NOT NULL DEFAULT 0,
    body          TEXT NOT NULL,
    updated_seq   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_recent   ON alerts (last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_tenant   ON alerts (tenant, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_status   ON alerts (status, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_severity ON alerts (severity, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_type     ON alerts (type, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_entity   ON alerts (entity_value, entity_kind, last_seen DESC);
CREATE INDEX IF NOT EXISTS alerts_seq      ON alerts (updated_seq);
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
CREATE TABLE IF NOT EXISTS meta (
    key      TEXT PRIMARY KEY,
    value    TEXT NOT NULL,
    updated  TEXT NOT NULL
);
"""


class StoreQueryError(ValueError):
    """A filter value the store cannot use; `code` is the API error code."""

    code = "bad_filter"


class BadCursor(StoreQueryError):
    code = "bad_cursor"


class AuditEntry(BaseModel):
    """One triage change: who changed which field from what to what, and when."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    at: str
    actor: str
    field: str
    from_: Any = Field(None, alias="from")
    to: Any = None


class StoredAlert(Alert):
    """An alert as stored: the §5 alert plus its triage audit trail."""

    audit: list[AuditEntry] = []


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def utc_now() -> str:
    return format_ts(datetime.now(timezone.utc))


def format_ts(dt: datetime) -> str:
    dt = dt.astimezone(timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def normalise_ts(value: str, name: str) -> str:
    """An RFC 3339 time (with offset) → the store's canonical `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise StoreQueryError(f"{name} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise StoreQueryError(f"{name} needs a UTC offset (e.g. Z)")
    try:
        return format_ts(dt)
    except (OverflowError, ValueError):  # e.g. year 1 with a negative offset
        raise StoreQueryError(f"{name} is out of range") from None


def encode_cursor(last_seen: str, alert_id: str) -> str:
    raw = json.dumps([last_seen, alert_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise BadCursor("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("invalid cursor") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadCursor("invalid cursor")
    return value[0], value[1]


def _as_set(value: str | Collection[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return sorted({v for v in items if v})


def _merge_ids(old: list[Any], new: list[Any]) -> list[Any]:
    out = list(old[:MAX_EVIDENCE_IDS])
    seen = set(out)
    for item in new:
        if len(out) >= MAX_EVIDENCE_IDS:
            break
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _merge(old: StoredAlert, new: Alert) -> StoredAlert:
    evidence = dict(new.evidence)
    for key in ("event_ids", "token_fps"):
        old_ids, new_ids = old.evidence.get(key), new.evidence.get(key)
        if isinstance(old_ids, list) and isinstance(new_ids, list):
            evidence[key] = _merge_ids(old_ids, new_ids)
        elif isinstance(old_ids, list) and key not in evidence:
            evidence[key] = old_ids
    return StoredAlert(
        **new.model_dump(exclude={"status", "assignee", "notes", "evidence", "first_seen", "last_seen",
                                  "count", "risk", "audit"}),
        first_seen=min(old.first_seen, new.first_seen), last_seen=max(old.last_seen, new.last_seen),
        count=max(old.count, new.count), risk=max(old.risk, new.risk), evidence=evidence,
        status=old.status, assignee=old.assignee, notes=old.notes, audit=old.audit,
    )


def _body(alert: StoredAlert) -> str:
    return json.dumps(alert.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)


def _load(body: str) -> StoredAlert:
    return StoredAlert.model_validate_json(body)


class AlertStore:
    """Alerts and risk in one SQLite file (or `":memory:"`), safe to share between threads."""

    def __init__(self, path: str | Path = ":memory:", *, risk_staleness_seconds: float = 0.25) -> None:
        self.path = str(path)
        self.risk_staleness_seconds = risk_staleness_seconds
        self._checked_at = float("-inf")  # time.monotonic() of the last data_version check
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed batch survives a power cut, since Kafka offsets are committed after it.
            self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._risk_cache: dict[tuple[str, str], tuple[RiskUpdate, ...]] = {}
        self._data_version = self._current_data_version()

    @classmethod
    def from_config(cls, store: Any) -> AlertStore:
        """From the [store] section (`url = "sqlite:///PATH"`)."""
        url: str = store.url
        if not url.startswith("sqlite:///"):
            raise ValueError("store url must be sqlite:///PATH")
        return cls(url.removeprefix("sqlite:///"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
        with self._lock, self._transaction():
            seq = self._next_seq()
            for alert in alerts:
                row = self._db.execute("SELECT body FROM alerts WHERE id = ?", (alert.id,)).fetchone()
                if row is None:
                    stored = StoredAlert(**alert.model_dump(exclude={"audit"}))
                else:
                    old = _load(row[0])
                    stored = _merge(old, alert)
                    if _body(stored) == row[0]:
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
        return _load(row[1])

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
        where: list[str] = []
        args: list[Any] = []
        if tenants is not None:
            allowed = sorted(set(tenants))
            if tenant is not None:
                allowed = [t for t in allowed if t == tenant]
            if not allowed:
                return [], None
            where.append(f"tenant IN ({','.join('?' * len(allowed))})")
            args += allowed
        elif tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
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
        items = [_load(r[0]) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].last_seen, items[-1].id) if len(rows) > limit else None
        return items, next_cursor

    def triage(self, alert_id: str, tenants: Collection[str] | None, *, actor: str, at: str,
               status: str | None = None, assignee: str | None | _Unset = UNSET,
               note: str | None = None) -> StoredAlert | None:
        """Apply an analyst's change; audit every field that changed. None if not found/not allowed.

        `assignee=None` clears the assignee; leaving it UNSET keeps it.
        """
        if status is not None and status not in STATUSES:
            raise StoreQueryError(f"status must be one of {', '.join(STATUSES)}")
        with self._lock, self._transaction():
            row = self._db.execute("SELECT tenant, body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None or (tenants is not None and row[0] not in tenants):
                return None
            alert = _load(row[1])
            updates: dict[str, Any] = {}
            audit = list(alert.audit)
            if status is not None and status != alert.status:
                audit.append(AuditEntry(at=at, actor=actor, field="status", from_=alert.status, to=status))
                updates["status"] = status
            if not isinstance(assignee, _Unset) and assignee != alert.assignee:
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
        where, args = "", []
        if tenants is not None:
            allowed = sorted(set(tenants))
            if not allowed:
                return {"total": 0, "suppressed": 0, "by_type": {}, "by_tenant": {}, "by_status": {},
                        "by_severity": {}}
            where, args = f" WHERE tenant IN ({','.join('?' * len(allowed))})", allowed
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

    def max_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(updated_seq), 0) FROM alerts").fetchone()[0])

    # -- risk -----------------------------------------------------------------------------------
    def upsert_risk(self, updates: Iterable[RiskUpdate]) -> int:
        """Write risk updates (the newer `ts` wins per tenant/kind/value); returns rows written."""
        written = 0
        with self._lock, self._transaction():
            for u in updates:
                cur = self._db.execute(
                    "INSERT INTO risk (tenant, kind, value, score, level, action, reasons, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant, kind, value) DO UPDATE SET score = excluded.score, "
                    "level = excluded.level, action = excluded.action, reasons = excluded.reasons, "
                    "ts = excluded.ts WHERE excluded.ts >= risk.ts",
                    (u.tenant, u.kind, u.value, float(u.score), u.level, u.action,
                     json.dumps(list(u.reasons)), float(u.ts)))
                written += cur.rowcount
                self._risk_cache.pop((u.kind, u.value), None)
        return written

    def get_risk(self, tenants: Collection[str] | None = None, *, sub: str | None = None,
                 client_id: str | None = None, ip: str | None = None, token: str | None = None,
                 tenant: str | None = None) -> list[RiskUpdate]:
        """Risk rows of the given entities in the allowed tenants (None = all), highest score first.

        `token` may be the token fingerprint (16 hex chars) or the compact token itself.
        """
        wanted: list[tuple[str, str]] = []
        if sub:
            wanted.append(("subject", sub))
        if client_id:
            wanted.append(("client", client_id))
        if ip:
            wanted.append(("ip", ip))
            try:
                canonical = str(ipaddress.ip_address(ip))
                if canonical != ip:
                    wanted.append(("ip", canonical))
            except ValueError:
                pass
        if token:
            wanted.append(("token", token if _TFP.match(token) else fingerprint(token)))
        rows: list[RiskUpdate] = []
        with self._lock:
            self._refresh_cache_if_stale()
            for key in wanted:
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

    # -- status that writers leave for readers (e.g. the worker's model status for /readyz) -------
    def set_meta(self, key: str, value: dict[str, Any]) -> None:
        with self._lock, self._transaction():
            self._db.execute("INSERT INTO meta (key, value, updated) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                             "UPDATE SET value = excluded.value, updated = excluded.updated",
                             (key, json.dumps(value, sort_keys=True), utc_now()))

    def get_meta(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The value and when it was written (wall clock, RFC 3339), or None."""
        with self._lock:
            row = self._db.execute("SELECT value, updated FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    # -- internals --------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema (columns are only ever added)."""
        with self._lock, self._transaction():
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}
            if "suppressed" not in columns:  # version 1
                self._db.execute("ALTER TABLE alerts ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0")
                for aid, body in self._db.execute("SELECT id, body FROM alerts").fetchall():
                    if json.loads(body).get("suppression"):
                        self._db.execute("UPDATE alerts SET suppressed = 1 WHERE id = ?", (aid,))
            self._db.execute("CREATE INDEX IF NOT EXISTS alerts_suppressed ON alerts (suppressed, status, "
                             "last_seen DESC, id DESC)")
            self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

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
             a.count, a.risk, a.status, a.assignee, int(a.suppression is not None), _body(a), seq))

    def _read_risk(self, kind: str, value: str) -> tuple[RiskUpdate, ...]:
        rows = self._db.execute(
            "SELECT tenant, score, level, action, reasons, ts FROM risk WHERE kind = ? AND value = ?",
            (kind, value)).fetchall()
        return tuple(RiskUpdate(kind=kind, value=value, tenant=t, score=s, level=lv, action=ac,
                                reasons=tuple(json.loads(rs)), ts=ts) for t, s, lv, ac, rs, ts in rows)

    def _current_data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _refresh_cache_if_stale(self) -> None:
        now = time.monotonic()  # wall clock on purpose: this bounds cache staleness, not detection
        if now - self._checked_at < self.risk_staleness_seconds:
            return
        self._checked_at = now
        version = self._current_data_version()
        if version != self._data_version:  # another connection committed: our cache may be stale
            self._risk_cache.clear()
            self._data_version = version


class _Tx:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


__all__ = ["AlertStore", "AuditEntry", "BadCursor", "StoreQueryError", "StoredAlert", "UNSET",
           "decode_cursor", "encode_cursor", "normalise_ts", "utc_now"]
