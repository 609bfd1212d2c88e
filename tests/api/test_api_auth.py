"""Credentials: API keys and bearer JWTs, scopes (401/403), tenants, no credential in logs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


def test_jwt_issued_in_the_future_is_401(client, mint):
    now = int(time.time())
    _assert_401(client.get("/v1/alerts", headers={"Authorization": "Bearer " + mint(iat=now + 3600, exp_in=7200)}))


def test_jwt_issued_within_the_clock_skew_leeway_is_accepted(client, mint, auth):
    # The API's validator allows 30 s of skew on exp/nbf; iat gets the same.
    assert client.get("/v1/alerts", headers=auth(mint(iat=int(time.time()) + 10))).status_code == 200


def _write_keys(path, keys, mtime_ns):
    path.write_text(json.dumps({"keys": [
        {"id": kid, "hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(),
         "scopes": ["alerts:read"], "tenants": ["*"]} for kid, key in keys.items()]}))
    os.utime(path, ns=(mtime_ns, mtime_ns))  # a distinct mtime even within the filesystem's granularity


@pytest.fixture
def keys_file(tmp_path):
    """(path, settings, now): an API keys file with two keys, and a settable clock."""
    path = tmp_path / "api-keys.json"
    _write_keys(path, {"kept": "gw_kept-key", "revoked": "gw_revoked-key"}, 1_000_000_000_000_000_000)
    now = [time.time()]
    return path, ApiSettings(jwks=tmp_path / "none.jwks.json", api_keys=path), now


def test_a_key_removed_from_the_file_stops_working(keys_file, store, auth):
    path, settings, now = keys_file
    c = TestClient(create_app(api_settings=settings, store=store,
                              authenticator=Authenticator.from_config(settings, clock=lambda: now[0])))
    assert c.get("/v1/alerts", headers=auth("gw_revoked-key")).status_code == 200
    _write_keys(path, {"kept": "gw_kept-key"}, 1_000_000_001_000_000_000)
    now[0] += 2  # past the once-a-second check
    _assert_401(c.get("/v1/alerts", headers=auth("gw_revoked-key")))
    assert c.get("/v1/alerts", headers=auth("gw_kept-key")).status_code == 200
    _write_keys(path, {"kept": "gw_kept-key", "added": "gw_added-key"}, 1_000_000_002_000_000_000)
    now[0] += 2
    assert c.get("/v1/alerts", headers=auth("gw_added-key")).status_code == 200


def test_the_keys_file_is_looked_at_at_most_once_a_second(keys_file):
    path, settings, now = keys_file
    authenticator = Authenticator.from_config(settings, clock=lambda: now[0])
    _write_keys(path, {"kept": "gw_kept-key"}, 1_000_000_001_000_000_000)
    now[0] += 0.5
    assert authenticator.authenticate("gw_revoked-key") is not None  # not looked at yet
    now[0] += 0.6
    assert authenticator.authenticate("gw_revoked-key") is None


@pytest.mark.parametrize("content", ["not json", '{"keys": [{"id": "x", "hash": "md5:00"}]}'])
def test_a_broken_keys_file_keeps_the_last_good_keys_and_logs_once(keys_file, caplog, content):
    path, settings, now = keys_file
    authenticator = Authenticator.from_config(settings, clock=lambda: now[0])
    path.write_text(content)
    os.utime(path, ns=(1_000_000_001_000_000_000,) * 2)
    caplog.set_level(logging.WARNING, logger="api.auth")
    for _ in range(3):
        now[0] += 2
        assert authenticator.authenticate("gw_revoked-key").id == "revoked"
    assert len([r for r in caplog.records if r.name == "api.auth"]) == 1
    _write_keys(path, {"kept": "gw_kept-key"}, 1_000_000_002_000_000_000)  # fixed: read again
    now[0] += 2
    assert authenticator.authenticate("gw_revoked-key") is None


def test_an_unreadable_keys_file_keeps_the_last_good_keys(keys_file):
    path, settings, now = keys_file
    authenticator = Authenticator.from_config(settings, clock=lambda: now[0])
    path.write_bytes(b"\xff\xfe not utf-8")
    os.utime(path, ns=(1_000_000_001_000_000_000,) * 2)
    now[0] += 2
    assert authenticator.authenticate("gw_kept-key").id == "kept"
