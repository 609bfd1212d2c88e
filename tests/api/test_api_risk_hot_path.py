"""The risk look-up's hot path (a plain Starlette endpoint) answers exactly as the documented FastAPI route.

Two apps over one store: the one `create_app` builds (hot path first), and the same with the hot path
removed, so every request reaches FastAPI's `get_risk`. Every case — answers, tenant limits, missing and
overlong parameters, missing and wrong credentials, wrong scope — must give the same status and body.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from api.app import create_app
from api.routes.risk import RiskAnswer
from scoring.risk import RiskUpdate


@pytest.fixture
def doors(api_settings, store):
    store.upsert_risk([
        RiskUpdate("subject", "alice", "acme", 81.5, "high", "deny", ("nonce replayed",), 1_764_324_000.0),
        RiskUpdate("ip", "10.0.0.9", "acme", 35.0, "medium", "step_up", ("rate limit",), 1_764_324_001.0),
        RiskUpdate("subject", "alice", "globex", 12.0, "low", "allow", (), 1_764_324_002.0),
    ])
    hot = create_app(api_settings=api_settings, store=store)
    documented = create_app(api_settings=api_settings, store=store)
    documented.router.routes[:] = [r for r in documented.router.routes
                                   if not (type(r) is Route and r.path == "/v1/risk")]
    assert len(documented.router.routes) == len(hot.router.routes) - 1
    return TestClient(hot), TestClient(documented)


def _cases(creds, mint):
    gateway = {"Authorization": f"Bearer {creds['gateway']}"}
    acme_only = {"Authorization": f"Bearer {mint(scope='risk:read', tenants=['acme'])}"}
    no_scope = {"Authorization": f"Bearer {mint(scope='alerts:read')}"}
    return [
        ("sub=alice&ip=10.0.0.9", gateway), ("sub=alice", acme_only), ("sub=alice&tenant=globex", acme_only),
        ("sub=alice&tenant=globex", gateway), ("ip=10.0.0.9&unknown=1", gateway), ("sub=nobody", gateway),
        ("", gateway), ("sub=", gateway), ("ip=" + "9" * 65, gateway), ("sub=alice", {}),
        ("sub=alice", {"Authorization": "Bearer gw_not_a_key"}), ("sub=alice", {"Authorization": "Basic abc"}),
        ("sub=alice", no_scope), ("sub=alice&sub=bob", gateway),
    ]


def test_both_doors_give_the_same_status_and_body(doors, creds, mint):
    hot, documented = doors
    statuses = set()
    for query, headers in _cases(creds, mint):
        a = hot.get(f"/v1/risk?{query}", headers=headers)
        b = documented.get(f"/v1/risk?{query}", headers=headers)
        assert (a.status_code, a.json()) == (b.status_code, b.json()) or \
            (a.status_code == b.status_code and a.json()["error"]["code"] == b.json()["error"]["code"]), query
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
        if a.status_code == 200:
            RiskAnswer.model_validate(a.json())
        statuses.add(a.status_code)
    assert statuses == {200, 400, 401, 403}


def test_the_hot_path_is_the_one_that_answers(doors, creds):
    hot, _ = doors
    answer = hot.get("/v1/risk?sub=alice&ip=10.0.0.9", headers={"Authorization": f"Bearer {creds['gateway']}"})
    assert answer.json()["score"] == 81.5 and answer.json()["action"] == "deny"
    assert [e["kind"] for e in answer.json()["entities"]] == ["subject", "ip", "subject"]
    assert type(hot.app.router.routes[0]) is Route and hot.app.router.routes[0].path == "/v1/risk"
    refused = hot.post("/v1/risk?sub=alice", headers={"Authorization": f"Bearer {creds['gateway']}"})
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
