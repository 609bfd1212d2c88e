"""Suppressed alerts: stored and countable, hidden from the queue unless asked for; the schema migration."""

from __future__ import annotations

import sqlite3

from api.store import AlertStore
from api.store_schema import SCHEMA_VERSION
from scoring.alerts import Suppression

MUTE = Suppression(rule="scanner", owner="secops@example", expires="2026-12-01T00:00:00.000Z", reason="ours")


def test_the_queue_hides_muted_alerts_but_they_are_stored_and_counted(client, store, creds, auth, make_alert):
    store.upsert_alerts([make_alert(1), make_alert(2, suppression=MUTE), make_alert(3, type="token.invalid")])
    h = auth(creds["analyst"])
    default = client.get("/v1/alerts", headers=h).json()["items"]
    assert sorted(a["id"] for a in default) == [make_alert(1).id, make_alert(3).id]
    only = client.get("/v1/alerts", params={"suppressed": "only"}, headers=h).json()["items"]
    assert [a["id"] for a in only] == [make_alert(2).id] and only[0]["suppression"]["owner"] == "secops@example"
    assert len(client.get("/v1/alerts", params={"suppressed": "include"}, headers=h).json()["items"]) == 3
    assert client.get(f"/v1/alerts/{make_alert(2).id}", headers=h).json()["suppression"]["rule"] == "scanner"
    counts = client.get("/v1/alerts/counts", headers=h).json()
    assert counts["total"] == 3 and counts["suppressed"] == 1
    assert counts["by_type"] == {"replay.nonce": 2, "token.invalid": 1} and counts["by_status"] == {"open": 3}
    bad = client.get("/v1/alerts", params={"suppressed": "maybe"}, headers=h)
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_counts_only_cover_the_callers_tenants(client, store, creds, auth, make_alert):
    store.upsert_alerts([make_alert(1), make_alert(2, tenant="globex")])
    counts = client.get("/v1/alerts/counts", headers=auth(creds["viewer-acme"])).json()
    assert counts["total"] == 1 and counts["by_tenant"] == {"acme": 1}


def test_a_rule_that_expired_unmutes_the_stored_alert(store, make_alert):
    store.upsert_alerts([make_alert(1, suppression=MUTE)])
    store.upsert_alerts([make_alert(1, suppression=None, count=2)])
    items, _ = store.list_alerts(suppressed=False)
    assert [a.id for a in items] == [make_alert(1).id] and items[0].suppression is None


def test_a_version_1_store_is_migrated_in_place(tmp_path, make_alert):
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE alerts (id TEXT PRIMARY KEY, type TEXT NOT NULL, severity TEXT NOT NULL,
        tenant TEXT NOT NULL, entity_kind TEXT NOT NULL, entity_value TEXT NOT NULL, first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL, count INTEGER NOT NULL, risk REAL NOT NULL, status TEXT NOT NULL,
        assignee TEXT, body TEXT NOT NULL, updated_seq INTEGER NOT NULL); PRAGMA user_version = 1;""")
    a = make_alert(1, suppression=MUTE)
    db.execute("INSERT INTO alerts VALUES (?, 'replay.nonce', 'high', 'acme', 'subject', 'u', ?, ?, 1, 50, "
               "'open', NULL, ?, 1)", (a.id, a.first_seen, a.last_seen, a.model_dump_json()))
    db.commit()
    db.close()
    store = AlertStore(path)
    assert store.list_alerts(suppressed=True)[0][0].id == a.id
    assert store.counts()["suppressed"] == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
