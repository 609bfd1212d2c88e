"""Risk through the whole path: events → pipeline → StoreSink → risk table → GET /v1/risk.

An attacker's risk shows up within the batch (one window) that saw the attack, carries its reasons, and
falls back to `allow` while the attacker is quiet and other traffic moves event time on, without any
wall clock involved.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import AlertStore
from gatewatch.pipeline import Pipeline
from gatewatch.sinks import StoreSink
from tests.conftest import T0
from tests.events import access, raw

MINUTE = 60.0


@pytest.fixture
def world(settings, validator, keys_dir):
    store = AlertStore(":memory:")
    app = create_app(api_settings=settings.api, store=store)
    gateway_key = json.loads((keys_dir / "credentials.json").read_text())["gateway"]
    return Pipeline.from_settings(settings, validator), StoreSink(store), TestClient(app), gateway_key


def risk_of(client: TestClient, key: str, sub: str) -> dict:
    r = client.get("/v1/risk", params={"sub": sub}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    return r.json()


def feed(pipeline: Pipeline, sink: StoreSink, records: list[dict]) -> None:
    sink.write(pipeline.process((raw(r), None) for r in records))
    sink.flush()


def test_risk_rises_within_the_window_and_decays_on_quiet_event_time(world, minter) -> None:
    pipeline, sink, client, key = world
    mallory = minter.mint({"sub": "mallory", "client_id": "spa", "exp": T0 + 86_400, "iat": T0,
                           "cnf": {"jkt": "k-m"}})
    bystander = minter.mint({"sub": "bob", "client_id": "spa", "exp": T0 + 86_400, "iat": T0,
                             "cnf": {"jkt": "k-b"}})
    feed(pipeline, sink, [access("m1", T0, token=mallory, nonce="n-1"),
                          access("m2", T0 + 20, token=mallory, nonce="n-1", client_ip="198.51.100.9")])
    hot = risk_of(client, key, "mallory")
    assert hot["score"] > 0 and hot["action"] in ("step_up", "deny")
    assert hot["reasons"] and hot["reasons"][0].startswith("replay.nonce")
    assert hot["as_of"].startswith("2026-11-18")

    seen = [hot["score"]]
    for hour in range(1, 9):  # quiet for mallory; bob's requests move the watermark on
        start = T0 + hour * 3600
        feed(pipeline, sink, [access(f"b{hour}-{i}", start + i * MINUTE, token=bystander) for i in range(60)])
        seen.append(risk_of(client, key, "mallory")["score"])
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False) if a > 0), seen  # strictly falling while above 0
    assert seen[2] < seen[0] / 2  # two hours is four default half-lives
    quiet = risk_of(client, key, "mallory")
    assert quiet["score"] == 0 and quiet["action"] == "allow"
    assert risk_of(client, key, "bob")["score"] == 0
