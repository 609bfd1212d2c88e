"""Entity pages and the riskiest entities: risk, bounded risk history, recent alerts, tenants, spellings."""

from __future__ import annotations

import sqlite3

import pytest

from api.risk_table import HISTORY_PER_ENTITY
from api.store import AlertStore
from api.store_schema import SCHEMA_VERSION
from ingest.tokens import fingerprint
from scoring.alerts import EntityRef, Suppression, rfc3339
from scoring.risk import RiskUpdate

T0 = 1_795_860_000.0  # 2026-11-28T10:00:00Z
MUTE = Suppression(rule="scanner", owner="secops@example", expires="2026-12-01T00:00:00.000Z", reason="ours")


def _r(kind, value, score, *, tenant="acme", ts=T0, reasons=("why",)):
    level, action = ("high", "deny") if score >= 75 else ("medium", "step_up") if score >= 40 else ("low", "allow")
    return RiskUpdate(kind, value, tenant, float(score), level, action, tuple(reasons), ts)


def _subject(value):
    return EntityRef(kind="subject", value=value)


@pytest.fixture
def alice(store, make_alert):
    """alice: risk and history in acme and globex, alerts in both (one muted), plus unrelated rows."""
    store.upsert_risk([_r("subject", "alice", 20, ts=T0)])
    store.upsert_risk([_r("subject", "alice", 55, ts=T0 + 60, reasons=("replay.nonce: twice",))])
    store.upsert_risk([_r("subject", "alice", 30, ts=T0 + 30)])  # older than the row: not written
    store.upsert_risk([_r("subject", "alice", 90, tenant="globex", ts=T0 + 90)])
    store.upsert_risk([_r("subject", "bob", 99, ts=T0), _r("client", "alice", 80, ts=T0)])
    store.upsert_alerts([make_alert(1, entity=_subject("alice")), make_alert(2, entity=_subject("alice"),
                                                                              suppression=MUTE),
                         make_alert(3, entity=_subject("alice"), tenant="globex"),
                         make_alert(4, entity=_subject("bob")),
                         make_alert(5, entity=EntityRef(kind="client", value="alice"))])


def test_entity_page_shape(client, creds, auth, alice, make_alert):
    h = auth(creds["analyst"])
    r = client.get("/v1/entities/subject/alice", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"kind", "value", "risk", "holds", "history", "alerts"}
    assert (body["kind"], body["value"]) == ("subject", "alice")
    assert body["risk"] == [
        {"tenant": "globex", "score": 90.0, "level": "high", "action": "deny", "reasons": ["why"],
         "as_of": rfc3339(T0 + 90)},
        {"tenant": "acme", "score": 55.0, "level": "medium", "action": "step_up",
         "reasons": ["replay.nonce: twice"], "as_of": rfc3339(T0 + 60)}]
    assert body["history"] == [
        {"at": "2026-11-28T10:00:00.000Z", "tenant": "acme", "score": 20.0, "level": "low"},
        {"at": "2026-11-28T10:01:00.000Z", "tenant": "acme", "score": 55.0, "level": "medium"},
        {"at": "2026-11-28T10:01:30.000Z", "tenant": "globex", "score": 90.0, "level": "high"}]
    # Newest first, muted ones included, each exactly as GET /v1/alerts/{id} shows it.
    assert [a["id"] for a in body["alerts"]] == [make_alert(n).id for n in (3, 2, 1)]
    assert body["alerts"][1]["suppression"]["rule"] == "scanner"
    for alert in body["alerts"]:
        assert alert == client.get(f"/v1/alerts/{alert['id']}", headers=h).json()


def test_history_and_alert_limits(client, creds, auth, alice, make_alert):
    h = auth(creds["analyst"])
    body = client.get("/v1/entities/subject/alice", params={"history": 2, "alerts": 1}, headers=h).json()
    assert [p["score"] for p in body["history"]] == [55.0, 90.0]  # the newest two, oldest first
    assert [a["id"] for a in body["alerts"]] == [make_alert(3).id]
    body = client.get("/v1/entities/subject/alice", params={"history": 0, "alerts": 0}, headers=h).json()
    assert body["history"] == [] and body["alerts"] == [] and len(body["risk"]) == 2


def test_a_tenant_credential_sees_only_its_tenant(client, creds, auth, alice, store, make_alert):
    h = auth(creds["viewer-acme"])
    body = client.get("/v1/entities/subject/alice", headers=h).json()
    assert [r["tenant"] for r in body["risk"]] == ["acme"]
    assert {p["tenant"] for p in body["history"]} == {"acme"}
    assert {a["tenant"] for a in body["alerts"]} == {"acme"} and len(body["alerts"]) == 2
    # Known only in globex: not found for acme, as if it did not exist.
    store.upsert_risk([_r("ip", "10.9.9.9", 70, tenant="globex")])
    store.upsert_alerts([make_alert(9, tenant="globex", entity=_subject("carol"))])
    for path in ("/v1/entities/ip/10.9.9.9", "/v1/entities/subject/carol"):
        r = client.get(path, headers=h)
        assert r.status_code == 404 and r.json() == {"error": {"code": "not_found", "message": "no such entity"}}
        assert client.get(path, headers=auth(creds["analyst"])).status_code == 200


def test_an_entity_with_only_alerts_or_only_risk(client, creds, auth, store, make_alert):
    h = auth(creds["analyst"])
    store.upsert_alerts([make_alert(1, entity=EntityRef(kind="tenant", value="acme"), type="traffic.rate_limit")])
    body = client.get("/v1/entities/tenant/acme", headers=h).json()
    assert body["risk"] == [] and body["history"] == [] and len(body["alerts"]) == 1
    store.upsert_risk([_r("client", "app-1", 12)])
    body = client.get("/v1/entities/client/app-1", headers=h).json()
    assert [r["score"] for r in body["risk"]] == [12.0] and body["alerts"] == []
    assert client.get("/v1/entities/client/app-2", headers=h).status_code == 404


def test_ip_and_token_spellings(client, creds, auth, store, make_alert):
    h = auth(creds["analyst"])
    store.upsert_risk([_r("ip", "2001:db8::1", 45)])
    store.upsert_alerts([make_alert(1, entity=EntityRef(kind="ip", value="2001:db8::1"))])
    for spelling in ("2001:db8::1", "2001:0DB8:0000::0001"):
        body = client.get(f"/v1/entities/ip/{spelling}", headers=h).json()
        assert body["value"] == "2001:db8::1" and body["risk"][0]["score"] == 45 and len(body["alerts"]) == 1
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    tfp = fingerprint(token)
    store.upsert_risk([_r("token", tfp, 66)])
    for spelling in (token, tfp):
        r = client.get(f"/v1/entities/token/{spelling}", headers=h)
        assert r.status_code == 200 and r.json()["value"] == tfp and r.json()["risk"][0]["score"] == 66
        assert token not in r.text  # answers name the fingerprint, never the token


def test_values_may_contain_slashes(client, creds, auth, store):
    store.upsert_risk([_r("client", "https://app.example/cb", 33)])
    r = client.get("/v1/entities/client/https://app.example/cb", headers=auth(creds["analyst"]))
    assert r.status_code == 200 and r.json()["value"] == "https://app.example/cb"


@pytest.mark.parametrize("path,params", [
    ("/v1/entities/user/alice", {}), ("/v1/entities/subject/alice", {"history": 501}),
    ("/v1/entities/subject/alice", {"history": -1}), ("/v1/entities/subject/alice", {"alerts": 201}),
    ("/v1/entities", {"limit": 0}), ("/v1/entities", {"limit": 201}), ("/v1/entities", {"kind": "user"}),
    ("/v1/entities", {"min_score": 101}),
])
def test_bad_parameters_are_400(client, creds, auth, alice, path, params):
    r = client.get(path, params=params, headers=auth(creds["analyst"]))
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/v1/entities", "/v1/entities/subject/alice"])
def test_entities_need_alerts_read(client, creds, auth, alice, path):
    r = client.get(path)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.get(path, headers=auth(creds["gateway"]))  # risk:read only
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_riskiest_entities(client, creds, auth, alice, store):
    store.upsert_risk([_r("ip", "10.0.0.1", 0.5), _r("ip", "10.0.0.2", 0, ts=T0)])
    h = auth(creds["analyst"])
    items = client.get("/v1/entities", headers=h).json()["items"]
    assert [(i["kind"], i["value"], i["tenant"], i["score"]) for i in items] == [
        ("subject", "bob", "acme", 99.0), ("subject", "alice", "globex", 90.0),
        ("client", "alice", "acme", 80.0), ("subject", "alice", "acme", 55.0)]  # min_score 1 by default
    assert items[3] == {"tenant": "acme", "kind": "subject", "value": "alice", "score": 55.0, "level": "medium",
                        "action": "step_up", "reasons": ["replay.nonce: twice"], "as_of": rfc3339(T0 + 60)}
    get = lambda **p: [(i["kind"], i["value"], i["tenant"])  # noqa: E731
                       for i in client.get("/v1/entities", params=p, headers=h).json()["items"]]
    assert get(limit=2) == [("subject", "bob", "acme"), ("subject", "alice", "globex")]
    assert get(kind="client") == [("client", "alice", "acme")]
    assert get(tenant="globex") == [("subject", "alice", "globex")]
    assert get(min_score=85) == [("subject", "bob", "acme"), ("subject", "alice", "globex")]
    assert len(get(min_score=0)) == 6
    viewer = auth(creds["viewer-acme"])
    items = client.get("/v1/entities", headers=viewer).json()["items"]
    assert {i["tenant"] for i in items} == {"acme"} and len(items) == 3
    assert client.get("/v1/entities", params={"tenant": "globex"}, headers=viewer).json() == {"items": []}


def test_history_is_bounded_per_entity(store):
    extra = 7
    store.upsert_risk(_r("subject", "alice", i % 100, ts=T0 + i) for i in range(HISTORY_PER_ENTITY + extra))
    store.upsert_risk([_r("subject", "alice", 5, tenant="globex", ts=T0)])
    points = store.risk_history("subject", "alice", {"acme"}, limit=10_000)
    assert len(points) == HISTORY_PER_ENTITY
    assert points[0].ts == T0 + extra and points[-1].ts == T0 + HISTORY_PER_ENTITY + extra - 1  # oldest dropped
    assert [p.ts for p in points] == sorted(p.ts for p in points)
    assert [(p.tenant, p.score) for p in store.risk_history("subject", "alice", {"globex"})] == [("globex", 5.0)]
    # Writes after pruning keep the window sliding.
    store.upsert_risk([_r("subject", "alice", 77, ts=T0 + 10_000)])
    points = store.risk_history("subject", "alice", {"acme"}, limit=10_000)
    assert len(points) == HISTORY_PER_ENTITY and points[-1].score == 77 and points[0].ts == T0 + extra + 1


def test_history_rows_only_for_rows_written(store):
    assert store.upsert_risk([_r("ip", "10.0.0.1", 40, ts=T0 + 10)]) == 1
    assert store.upsert_risk([_r("ip", "10.0.0.1", 60, ts=T0)]) == 0  # older: the row keeps 40
    assert store.upsert_risk([_r("ip", "10.0.0.1", 50, ts=T0 + 10)]) == 1  # same time: written
    assert [(p.ts, p.score) for p in store.risk_history("ip", "10.0.0.1")] == [(T0 + 10, 40.0), (T0 + 10, 50.0)]
    assert store.risk_history("ip", "10.0.0.1", set()) == []


def test_a_version_2_store_gets_a_history_from_its_risk_rows(tmp_path):
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE risk (tenant TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
        score REAL NOT NULL, level TEXT NOT NULL, action TEXT NOT NULL, reasons TEXT NOT NULL, ts REAL NOT NULL,
        PRIMARY KEY (tenant, kind, value)); PRAGMA user_version = 2;""")
    db.execute("INSERT INTO risk VALUES ('acme', 'ip', '10.0.0.1', 64, 'medium', 'step_up', '[]', ?)", (T0,))
    db.commit()
    db.close()
    store = AlertStore(path)
    try:
        assert [(p.tenant, p.ts, p.score) for p in store.risk_history("ip", "10.0.0.1")] == [("acme", T0, 64.0)]
        store.upsert_risk([_r("ip", "10.0.0.1", 70, ts=T0 + 1)])
        assert [p.score for p in store.risk_history("ip", "10.0.0.1")] == [64.0, 70.0]
    finally:
        store.close()
    reopened = AlertStore(path)  # the current version now: not seeded twice
    try:
        assert len(reopened.risk_history("ip", "10.0.0.1")) == 2
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
    finally:
        reopened.close()


def test_entity_page_lists_what_the_gateway_denies_it_for(client, creds, auth, store) -> None:
    """A revoked token has no alert and no risk row, yet its page exists and shows the hold, per tenant."""
    from scoring.holds import Hold

    tfp = fingerprint("a.revoked.token")
    store.holds.upsert([Hold("acme", "token", tfp, "token.revoked", "token j-1 was revoked", T0, T0 + 3600),
                        Hold("globex", "token", tfp, "token.revoked", "elsewhere", T0, T0 + 60)], [])
    r = client.get("/v1/entities/token/a.revoked.token", headers=auth(creds["analyst"]))  # the compact form
    assert r.status_code == 200
    body = r.json()
    assert body["value"] == tfp and body["risk"] == [] and body["alerts"] == []
    assert [(x["tenant"], x["type"], x["reason"], x["until"]) for x in body["holds"] if x["tenant"] == "acme"] == [
        ("acme", "token.revoked", "token j-1 was revoked", rfc3339(T0 + 3600))]
    assert client.get(f"/v1/entities/token/{fingerprint('other')}", headers=auth(creds["analyst"])).status_code == 404
