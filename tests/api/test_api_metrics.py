"""GET /metrics: Prometheus text with the risk look-up histogram, alert gauges and the workers' figures."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import StoreCollector
from api.store import AlertStore
from scoring.alerts import Suppression
from scoring.risk import RiskUpdate

MUTE = Suppression(rule="scanner", owner="secops@example", expires="2026-12-01T00:00:00.000Z", reason="ours")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a scrape."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics")  # no credential
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def L(**labels: str) -> frozenset:  # noqa: N802 - reads like a label set
    return frozenset(labels.items())


def test_risk_look_ups_are_timed(client, creds, auth, store):
    store.upsert_risk([RiskUpdate("subject", "alice", "acme", 50.0, "medium", "step_up", ("x",), 1.0)])
    before = scrape(client)
    assert before[("gatewatch_risk_lookup_seconds_count", L())] == 0
    h = auth(creds["gateway"])
    for params in ({"sub": "alice"}, {"sub": "nobody"}, {"ip": "10.0.0.1", "client_id": "c"}):
        assert client.get("/v1/risk", params=params, headers=h).status_code == 200
    assert client.get("/v1/risk", headers=h).status_code == 400  # no entity: not a look-up
    after = scrape(client)
    assert after[("gatewatch_risk_lookup_seconds_count", L())] == 3
    assert after[("gatewatch_risk_lookup_seconds_bucket", L(le="+Inf"))] == 3
    assert after[("gatewatch_risk_lookup_seconds_sum", L())] > 0
    assert ("gatewatch_risk_lookup_seconds_bucket", L(le="5e-05")) in after  # sub-millisecond buckets


def test_each_app_has_its_own_registry(api_settings, store, creds, auth):
    one, two = (TestClient(create_app(api_settings=api_settings, store=store)) for _ in range(2))
    one.get("/v1/risk", params={"sub": "a"}, headers=auth(creds["gateway"]))
    assert scrape(one)[("gatewatch_risk_lookup_seconds_count", L())] == 1
    assert scrape(two)[("gatewatch_risk_lookup_seconds_count", L())] == 0


def test_alert_gauges_count_suppressed_alerts_too(client, store, make_alert):
    got = scrape(client)
    assert got[("gatewatch_alerts_suppressed", L())] == 0
    assert not [k for k in got if k[0] == "gatewatch_alerts"]
    store.upsert_alerts([make_alert(1), make_alert(2, suppression=MUTE), make_alert(3, type="token.invalid"),
                         make_alert(4, tenant="globex")])
    store.triage(make_alert(4).id, None, actor="x", at="2026-11-28T12:00:00.000Z", status="resolved")
    got = scrape(client)
    assert {k: v for k, v in got.items() if k[0] == "gatewatch_alerts"} == {
        ("gatewatch_alerts", L(type="replay.nonce", status="open")): 2,
        ("gatewatch_alerts", L(type="replay.nonce", status="resolved")): 1,
        ("gatewatch_alerts", L(type="token.invalid", status="open")): 1}
    assert got[("gatewatch_alerts_suppressed", L())] == 1


def _stats(worker: str, **over):
    stats = {"worker": worker, "records": 1000, "events": 990, "dead_letters": {"bad_json": 7, "bad_schema": 3},
             "signals": {"replay.nonce": 4, "token.invalid": 2}, "lag": {"gw.events/0": 12, "gw.events/1": 0},
             "watermark": "2026-11-28T10:00:00.000Z"}
    stats.update(over)
    return stats


def test_worker_figures(client, store):
    store.set_meta("worker.stats/w1", _stats("w1"))
    store.set_meta("worker.stats/w2", _stats("w2", records=5, events=5, dead_letters={}, signals={},
                                             lag={"gw.events.v2/3": 4}, watermark=None))
    store.set_meta("worker.model", {"status": "active", "reason": "loaded"})  # not worker stats
    got = scrape(client)
    expected = {
        ("gatewatch_events_in_total", L(worker="w1")): 1000, ("gatewatch_events_in_total", L(worker="w2")): 5,
        ("gatewatch_events_decoded_total", L(worker="w1")): 990,
        ("gatewatch_events_decoded_total", L(worker="w2")): 5,
        ("gatewatch_dead_letters_total", L(worker="w1", code="bad_json")): 7,
        ("gatewatch_dead_letters_total", L(worker="w1", code="bad_schema")): 3,
        ("gatewatch_signals_total", L(worker="w1", type="replay.nonce")): 4,
        ("gatewatch_signals_total", L(worker="w1", type="token.invalid")): 2,
        ("gatewatch_consumer_lag", L(worker="w1", topic="gw.events", partition="0")): 12,
        ("gatewatch_consumer_lag", L(worker="w1", topic="gw.events", partition="1")): 0,
        ("gatewatch_consumer_lag", L(worker="w2", topic="gw.events.v2", partition="3")): 4,
        ("gatewatch_watermark_seconds", L(worker="w1")): datetime.fromisoformat("2026-11-28T10:00:00+00:00").timestamp(),
    }
    names = {name for name, _ in expected}
    assert {k: v for k, v in got.items() if k[0] in names} == expected  # w2 has no watermark yet: no sample
    assert {k[1] for k in got if k[0] == "gatewatch_worker_report_age_seconds"} == {L(worker="w1"), L(worker="w2")}


def test_report_age_from_the_meta_update_time(store, monkeypatch):
    monkeypatch.setattr("api.store.utc_now", lambda: "2026-11-28T10:00:00.000Z")
    store.set_meta("worker.stats/w1", _stats("w1"))
    reported = datetime.fromisoformat("2026-11-28T10:00:00+00:00").timestamp()
    collector = StoreCollector(lambda: store, clock=lambda: reported + 42.5)
    ages = {s.labels["worker"]: s.value for family in collector.collect()
            if family.name == "gatewatch_worker_report_age_seconds" for s in family.samples}
    assert ages == {"w1": 42.5}


@pytest.mark.parametrize("bad", [
    {"records": "many", "events": True, "dead_letters": ["x"], "signals": {"a": "b"}, "lag": {"nopartition": 3},
     "watermark": "yesterday"},
    {"records": None, "lag": None, "signals": None},
])
def test_a_malformed_worker_report_never_breaks_the_scrape(client, store, bad):
    store.set_meta("worker.stats/odd", _stats("odd", **bad))
    store.set_meta("worker.stats/ok", _stats("ok"))
    got = scrape(client)
    assert got[("gatewatch_events_in_total", L(worker="ok"))] == 1000
    assert ("gatewatch_events_in_total", L(worker="odd")) not in got
    assert ("gatewatch_worker_report_age_seconds", L(worker="odd")) in got


def test_scrape_reads_the_store_the_app_holds_now(api_settings, store, make_alert):
    app = create_app(api_settings=api_settings, store=store)
    other = AlertStore(":memory:")
    other.upsert_alerts([make_alert(1)])
    app.state.store = other
    try:
        assert scrape(TestClient(app))[("gatewatch_alerts", L(type="replay.nonce", status="open"))] == 1
    finally:
        other.close()


def test_list_meta_by_prefix(store):
    store.set_meta("worker.stats/b", {"n": 2})
    store.set_meta("worker.stats/a", {"n": 1})
    store.set_meta("worker.statsX", {"n": 3})
    store.set_meta("worker.model", {"n": 4})
    got = store.list_meta("worker.stats/")
    assert [(k, v) for k, v, _ in got] == [("worker.stats/a", {"n": 1}), ("worker.stats/b", {"n": 2})]
    assert all(at.endswith("Z") for _, _, at in got)
    assert store.list_meta("nothing/") == []
    assert [k for k, _, _ in store.list_meta("")] == ["worker.model", "worker.stats/a", "worker.stats/b",
                                                      "worker.statsX"]


def test_metrics_is_in_the_openapi_document(client):
    spec = client.get("/openapi.json").json()
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "security" not in spec["paths"]["/metrics"]["get"]
    stream = spec["paths"]["/v1/alerts/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {"400", "401", "403"} <= set(stream["responses"])
    for path in ("/v1/entities", "/v1/entities/{kind}/{value}"):
        assert {"400", "401", "403"} <= set(spec["paths"][path]["get"]["responses"])
    assert "404" in spec["paths"]["/v1/entities/{kind}/{value}"]["get"]["responses"]
