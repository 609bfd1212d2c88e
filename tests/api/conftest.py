"""Fixtures for the API tests: demo keys, an in-memory store, a TestClient, alert and JWT makers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jws

from api.app import create_app
from api.store import AlertStore
from gatewatch.keys import generate_keys, load_key_set
from gatewatch.settings import ApiSettings
from scoring.alerts import Alert, EntityRef

API_ISSUER = "https://idp.example"


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keys(directory, rsa_bits=2048)
    return directory


@pytest.fixture(scope="session")
def creds(key_dir: Path) -> dict[str, str]:
    return json.loads((key_dir / "credentials.json").read_text())


@pytest.fixture
def api_settings(key_dir: Path) -> ApiSettings:
    return ApiSettings(jwks=key_dir / "api-issuer.jwks.json", api_keys=key_dir / "api-keys.json",
                       issuers=[API_ISSUER], audience="gatewatch", max_body_bytes=2048)


@pytest.fixture
def store() -> AlertStore:
    s = AlertStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def client(api_settings: ApiSettings, store: AlertStore) -> TestClient:
    return TestClient(create_app(api_settings=api_settings, store=store))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_alert(n: int = 0, **over: Any) -> Alert:
    data: dict[str, Any] = {
        "id": f"al_{n:024d}", "type": "replay.nonce", "severity": "high", "tenant": "acme",
        "entity": EntityRef(kind="subject", value=f"user-{n}"),
        "first_seen": f"2026-11-28T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "last_seen": f"2026-11-28T10:{n // 60 % 60:02d}:{n % 60:02d}.500Z",
        "count": 1, "risk": 50.0, "reasons": ["nonce seen twice"],
        "evidence": {"event_ids": [f"e{n}"], "token_fps": [], "figures": {}},
    }
    data.update(over)
    return Alert(**data)


def mint_jwt(key_dir: Path, *, scope: str = "alerts:read alerts:write risk:read",
             tenants: list[str] | None = None, exp_in: float = 600, **claims: Any) -> str:
    key = load_key_set(key_dir / "api-issuer-private.jwks.json").keys[0]
    now = int(time.time())
    body = {"iss": API_ISSUER, "aud": "gatewatch", "sub": "alice@example", "iat": now,
            "exp": int(now + exp_in), "scope": scope, "tenants": ["*"] if tenants is None else tenants,
            **claims}
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    return jws.serialize_compact(header, json.dumps(body), key, algorithms=["ES256"])


@pytest.fixture(name="make_alert")
def _make_alert_fixture() -> Any:
    return make_alert


@pytest.fixture(name="mint")
def _mint_fixture(key_dir: Path) -> Any:
    def mint(**kw: Any) -> str:
        return mint_jwt(key_dir, **kw)
    return mint


@pytest.fixture(name="auth")
def _auth_fixture() -> Any:
    return auth
