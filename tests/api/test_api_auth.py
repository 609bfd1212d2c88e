"""Credentials: API keys and bearer JWTs, scopes (401/403), tenants, no credential in logs."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient
from joserfc import jws
from joserfc.jwk import ECKey

from api.app import create_app
from api.auth import Authenticator, Principal, load_api_keys, require
from gatewatch.keys import load_key_set
from gatewatch.settings import ApiSettings
from ingest.errors import KeyMaterialError


def _assert_401(r):
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic YTpi"},
                                     {"Authorization": "Bearer gw_not-a-real-key"},
                                     {"Authorization": "Bearer a.b.c"}, {"Authorization": "Bearer " + "x" * 9000}])
def test_missing_or_invalid_credential_is_401(client, headers):
    for path in ("/v1/alerts", "/v1/risk?ip=10.0.0.1"):
        _assert_401(client.get(path, headers=headers))
    _assert_401(client.patch("/v1/alerts/al_x", json={"status": "resolved"}, headers=headers))


def test_scopes_are_enforced(client, creds, auth, store, make_alert):
    store.upsert_alerts([make_alert(1)])
    aid = make_alert(1).id
    gw = auth(creds["gateway"])
    for r in (client.get("/v1/alerts", headers=gw), client.get(f"/v1/alerts/{aid}", headers=gw),
              client.patch(f"/v1/alerts/{aid}", json={"status": "resolved"}, headers=gw)):
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/risk", params={"ip": "10.0.0.1"}, headers=gw).status_code == 200
    viewer = auth(creds["viewer-acme"])
    assert client.patch(f"/v1/alerts/{aid}", json={"status": "resolved"}, headers=viewer).status_code == 403
    assert client.get("/v1/risk", params={"ip": "10.0.0.1"}, headers=viewer).status_code == 403
    assert store.get_alert(aid).status == "open"


def test_bearer_jwt(client, mint, auth, store, make_alert):
    store.upsert_alerts([make_alert(1, tenant="acme"), make_alert(2, tenant="globex")])
    r = client.get("/v1/alerts", headers=auth(mint()))
    assert r.status_code == 200 and len(r.json()["items"]) == 2
    r = client.get("/v1/alerts", headers=auth(mint(tenants=["globex"])))
    assert [a["tenant"] for a in r.json()["items"]] == ["globex"]
    r = client.get("/v1/alerts", headers=auth(mint(scope="risk:read")))
    assert r.status_code == 403
    r = client.get("/v1/alerts", headers=auth(mint(tenants=[])))
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.mark.parametrize("claims", [
    {"exp_in": -120}, {"aud": "someone-else"}, {"iss": "https://evil.example"}, {"tenants": "acme"},
    {"scope": ["alerts:read"]}, {"exp_in": 10 * 86_400},
])
def test_bad_jwts_are_401(client, mint, claims):
    _assert_401(client.get("/v1/alerts", headers={"Authorization": "Bearer " + mint(**claims)}))


def test_jwt_without_exp_is_401(client, key_dir):
    key = load_key_set(key_dir / "api-issuer-private.jwks.json").keys[0]
    body = {"iss": "https://idp.example", "aud": "gatewatch", "scope": "alerts:read", "tenants": ["*"]}
    token = jws.serialize_compact({"alg": "ES256", "kid": key.kid}, json.dumps(body), key, algorithms=["ES256"])
    _assert_401(client.get("/v1/alerts", headers={"Authorization": f"Bearer {token}"}))


def test_jwt_signed_by_unknown_key_is_401(client):
    stranger = ECKey.generate_key("P-256", parameters={"kid": "api-es256-1", "alg": "ES256"})
    now = int(time.time())
    body = {"iss": "https://idp.example", "aud": "gatewatch", "exp": now + 60, "scope": "alerts:read",
            "tenants": ["*"]}
    token = jws.serialize_compact({"alg": "ES256", "kid": "api-es256-1"}, json.dumps(body), stranger,
                                  algorithms=["ES256"])
    _assert_401(client.get("/v1/alerts", headers={"Authorization": f"Bearer {token}"}))


def test_alg_none_is_401(client):
    import base64

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = b64({"alg": "none"}) + "." + b64({"iss": "https://idp.example", "aud": "gatewatch",
                                             "exp": time.time() + 60, "scope": "alerts:read",
                                             "tenants": ["*"]}) + "."
    _assert_401(client.get("/v1/alerts", headers={"Authorization": f"Bearer {token}"}))


def test_expiry_uses_injected_clock(api_settings, store, mint, auth):
    token = mint(exp_in=60)
    later = Authenticator.from_config(api_settings, clock=lambda: time.time() + 3600)
    c = TestClient(create_app(api_settings=api_settings, store=store, authenticator=later))
    _assert_401(c.get("/v1/alerts", headers=auth(token)))


def test_missing_key_files_mean_no_credentials(tmp_path, store, creds, mint, auth):
    settings = ApiSettings(jwks=tmp_path / "none.jwks.json", api_keys=tmp_path / "none.json")
    a = Authenticator.from_config(settings)
    assert a.api_keys == () and a.jwt_validator is None
    c = TestClient(create_app(api_settings=settings, store=store))
    _assert_401(c.get("/v1/alerts", headers=auth(creds["analyst"])))
    _assert_401(c.get("/v1/alerts", headers=auth(mint())))


@pytest.mark.parametrize("content", ['{"keys": 1}', "not json", '{"keys": [{"id": "x", "hash": "md5:00"}]}',
                                     '{"keys": [{"id": "x", "hash": "sha256:zz"}]}'])
def test_bad_api_keys_file(tmp_path, content):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(KeyMaterialError):
        load_api_keys(path)


def test_credentials_never_logged(client, creds, mint, caplog):
    caplog.set_level(logging.DEBUG)
    bad_key = "gw_secret-looking-but-wrong-key"
    expired = mint(exp_in=-3600)
    client.get("/v1/alerts", headers={"Authorization": f"Bearer {bad_key}"})
    client.get("/v1/alerts", headers={"Authorization": f"Bearer {expired}"})
    client.get("/v1/alerts", headers={"Authorization": f"Bearer {creds['analyst']}"})
    text = caplog.text
    assert "refused" in text  # something was logged...
    for secret in (bad_key, expired, creds["analyst"], expired.split(".")[2]):
        assert secret not in text  # ...but never the credential


def test_dependency_overrides(api_settings, store, make_alert):
    store.upsert_alerts([make_alert(1, tenant="acme"), make_alert(2, tenant="globex")])
    app = create_app(api_settings=api_settings, store=store)
    app.dependency_overrides[require("alerts:read")] = lambda: Principal(
        "test", frozenset({"alerts:read"}), frozenset({"globex"}))
    r = TestClient(app).get("/v1/alerts")
    assert r.status_code == 200 and [a["tenant"] for a in r.json()["items"]] == ["globex"]


def test_health_needs_no_credential(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
