"""The one SQLite database of a store: a connection and its lock, shared by the alert and risk tables.

`Database` opens the file (WAL, `synchronous = FULL`: a committed batch survives a power cut, since Kafka
offsets are committed after it) in autocommit mode, so every write transaction is explicit
(`transaction()`: BEGIN IMMEDIATE … COMMIT, ROLLBACK on error). One connection serves every thread of a
process, each use under `lock`. `tenant_clause` is the one place that turns a credential's tenants into
SQL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection
from typing import Any


class Database:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")

    def transaction(self) -> _Tx:
        """A write transaction; take `lock` first."""
        return _Tx(self.conn)

    def data_version(self) -> int:
        """Changes when another connection commits (PRAGMA data_version)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class ChangeWatch:
    """For an in-process read cache: has another connection committed since we last looked? Asked at most every
    `staleness_seconds` (wall clock on purpose: it bounds how stale a cache may get, not detection), so a
    cached read touches no database at all in between."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._checked_at = float("-inf")  # time.monotonic() of the last data_version check
        self._version = db.data_version()

    def changed(self, staleness_seconds: float) -> bool:
        now = time.monotonic()
        if now - self._checked_at < staleness_seconds:
            return False
        self._checked_at = now
        version = self.db.data_version()
        if version == self._version:
            return False
        self._version = version
        return True


class _Tx:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def tenant_clause(tenants: Collection[str] | None, tenant: str | None = None) -> tuple[str, list[str]] | None:
    """SQL restricting rows to the allowed `tenants` (None: all) and, if given, the asked-for `tenant`:
    (condition, its arguments), or None when nothing is visible (the caller answers empty)."""
    if tenants is not None:
        allowed = sorted(t for t in set(tenants) if tenant is None or t == tenant)
        if not allowed:
            return None
        return f"tenant IN ({','.join('?' * len(allowed))})", allowed
    if tenant is not None:
        return "tenant = ?", [tenant]
    return "1", []
