"""The alert tables of the store (SQLite); `SCHEMA_VERSION` is PRAGMA user_version, which `AlertStore`
migrates from (columns and tables are only ever added). The risk tables are api/risk_table.py's."""

SCHEMA_VERSION = 4  # 2: alerts.suppressed; 3: risk_history; 4: triage_changes (new tables come with the schema)

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS triage_changes (
    change_id  TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key      TEXT PRIMARY KEY,
    value    TEXT NOT NULL,
    updated  TEXT NOT NULL
);
"""
