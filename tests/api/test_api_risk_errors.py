"""GET /v1/risk, readiness, and the error contract: 413, 404, 500 without a trace."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.health import MODEL_STATUS_KEY
from api.store import AlertStore
from ingest.tokens import fingerprint
from scoring.risk import RiskUpdate


def _r(kind, value, score, tenant="acme", reasons=("why",), ts=1.0):
    level, action = ("high", "deny") if score >= 75 else ("medium", "step_up") if score >= 40 else ("low", "allow")
    return RiskUpdate(kind, value, tenant, score, level, action, tuple(reasons), ts)


def test_risk_highest_entity_decides(client, creds, auth, store):
    store.upsert_risk([_r("subject", "alice", 45, reasons=("replay.nonce: twice",)),
                       _r("ip", "10.0.0.9", 82, reasons=("token.invalid: burst", "traffic.rate_limit: x")),
                       _r("client", "app-1", 10)])
    r = client.get("/v1/risk", params={"sub": "alice", "ip": "10.0.0.9", "client_id": "app-1"},
                   headers=auth(creds["gateway"]))
    assert r.status_code == 200
    body = r.json()
    assert body["score"] == 82 and body["level"] == "high" and body["action"] == "deny"
    assert body["reasons"] == ["token.invalid: burst", "traffic.rate_limit: x"]
    assert [(e["kind"], e["value"], e["score"]) for e in body["entities"]] == [
        ("ip", "10.0.0.9", 82), ("subject", "alice", 45), ("client", "app-1", 10)]


def test_risk_no_match_is_allow(client, creds, auth):
    r = client.get("/v1/risk", params={"sub": "nobody"}, headers=auth(creds["gateway"]))
    assert r.json() == {"score": 0.0, "level": "low", "action": "allow", "reasons": [], "entities": [],
                        "as_of": None}


def test_risk_needs_an_entity(client, creds, auth):
    for params in ({}, {"tenant": "acme"}, {"sub": ""}):
        r = client.get("/v1/risk", params=params, headers=auth(creds["gateway"]))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


def test_risk_by_token(client, creds, auth, store):
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    store.upsert_risk([_r("token", fingerprint(token), 55)])
    body = client.get("/v1/risk", params={"token": token}, headers=auth(creds["gateway"])).json()
    assert body["score"] == 55 and body["action"] == "step_up"
    assert token not in str(body)  # the answer names the fingerprint, never the token


def test_risk_tenant_limited_by_credential(client, mint, auth, store):
    store.upsert_risk([_r("ip", "10.0.0.9", 90, tenant="globex"), _r("ip", "10.0.0.9", 30, tenant="acme")])
    acme_only = auth(mint(scope="risk:read", tenants=["acme"]))
    assert client.get("/v1/risk", params={"ip": "10.0.0.9"}, headers=acme_only).json()["score"] == 30
    r = client.get("/v1/risk", params={"ip": "10.0.0.9", "tenant": "globex"}, headers=acme_only)
    assert r.status_code == 200 and r.json()["score"] == 0
    everyone = auth(mint(scope="risk:read"))
    assert client.get("/v1/risk", params={"ip": "10.0.0.9"}, headers=everyone).json()["score"] == 90
    assert client.get("/v1/risk", params={"ip": "10.0.0.9", "tenant": "acme"},
                      headers=everyone).json()["score"] == 30


def test_readyz(api_settings, store):
    checks = {"kafka": lambda: (False, "broker unreachable"), "model": lambda: (True, "loaded")}
    c = TestClient(create_app(api_settings=api_settings, store=store, ready_checks=checks))
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready"
    assert r.json()["checks"]["kafka"] == {"ok": False, "detail": "broker unreachable"}
    assert r.json()["checks"]["store"]["ok"] is True

    def explode():
        raise RuntimeError("secret internals")

    c = TestClient(create_app(api_settings=api_settings, store=store, ready_checks={"x": explode}))
    r = c.get("/readyz")
    assert r.status_code == 503 and "secret internals" not in r.text
    ok = TestClient(create_app(api_settings=api_settings, store=store)).get("/readyz")
    assert ok.status_code == 200 and ok.json() == {
        "status": "ready", "checks": {"store": {"ok": True, "detail": "ok"},
                                      "model": {"ok": True, "detail": "no worker has reported its anomaly model yet"}}}


def test_readyz_says_whether_the_worker_has_a_model(api_settings, store):
    c = TestClient(create_app(api_settings=api_settings, store=store))
    store.set_meta(MODEL_STATUS_KEY, {"status": "silent", "reason": "no anomaly model at /m (train one)"})
    model = c.get("/readyz").json()["checks"]["model"]
    assert model["ok"] is True and "anomaly.behaviour is silent" in model["detail"] and "/m" in model["detail"]
    store.set_meta(MODEL_STATUS_KEY, {"status": "active", "reason": "anomaly model loaded (kinds: ip)"})
    assert c.get("/readyz").json()["checks"]["model"]["detail"].startswith("anomaly model active")


def test_readyz_store_down(api_settings):
    s = AlertStore(":memory:")
    c = TestClient(create_app(api_settings=api_settings, store=s))
    s.close()
    assert c.get("/readyz").status_code == 503


def test_oversize_body_is_413(client, creds, auth, store, make_alert):
    store.upsert_alerts([make_alert(1)])
    url = f"/v1/alerts/{make_alert(1).id}"
    h = auth(creds["analyst"])
    r = client.patch(url, json={"note": "x" * 3000}, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: streamed
        for _ in range(10):
            yield b"x" * 500

    r = client.patch(url, content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = client.patch(url, json={"note": "x" * 1000}, headers=h)
    assert r.status_code == 200
    assert store.get_alert(make_alert(1).id).notes[0].text == "x" * 1000


def test_unknown_path_and_method(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.delete("/healthz")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_an_unknown_query_parameter_is_400_not_ignored(client, creds, auth, store, make_alert):
    store.upsert_alerts([make_alert(1), make_alert(2, status="resolved")])
    headers = auth(creds["analyst"])
    assert len(client.get("/v1/alerts?status=open", headers=headers).json()["items"]) == 1
    typo = client.get("/v1/alerts?statsu=open", headers=headers)  # would otherwise list every alert
    assert typo.status_code == 400 and "statsu" in typo.json()["error"]["message"]
    assert client.get("/v1/alerts?=x", headers=headers).status_code == 400
    # declared parameters of the route's dependencies count too; the stream declares its own
    assert client.get("/v1/alerts/stream?after=0&max_events=1&timeout=0.1", headers=headers).status_code == 200
    assert client.get("/v1/alerts/stream?afterr=0", headers=headers).status_code == 400
    assert client.get("/v1/risk?sub=a&subject=b", headers=auth(creds["gateway"])).status_code == 400


class _BrokenStore(AlertStore):
    def list_alerts(self, **kw):
        raise RuntimeError("Traceback: /srv/secret/path.py line 1 password=hunter2")

    def get_alert(self, *a, **kw):
        raise ZeroDivisionError("division by zero in secret place")


def test_internal_errors_never_leak(api_settings, creds, auth, caplog):
    app = create_app(api_settings=api_settings, store=_BrokenStore(":memory:"))
    c = TestClient(app, raise_server_exceptions=False)
    for path in ("/v1/alerts", "/v1/alerts/al_x"):
        r = c.get(path, headers=auth(creds["analyst"]))
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
        assert "Traceback" not in r.text and "secret" not in r.text and "hunter2" not in r.text


@pytest.mark.parametrize("path", ["/v1/alerts?limit=-1", "/v1/alerts?cursor=%%%", "/v1/risk"])
def test_error_bodies_have_one_shape(client, creds, auth, path):
    r = client.get(path, headers=auth(creds["analyst"]))
    assert 400 <= r.status_code < 500
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}
    assert "Traceback" not in r.text
