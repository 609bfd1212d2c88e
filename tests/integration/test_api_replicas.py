"""Two API replicas serve one cluster through the real broker: each materialises the alerts and risk
topics into its own store, and a triage change made on either is seen by both (api/follow.py).

The worker is the real `gatewatch run` over simulated traffic with attacks; the replicas are the real
app with real followers and a real triage producer, each with its own SQLite file. A replica whose
positions are thrown away re-reads everything and ends in the same state: every apply is idempotent.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer

from api.app import create_app
from api.follow import OFFSETS_KEY, ClusterFollower, TriageLog
from api.store import AlertStore
from gatewatch.settings import load_settings
from gatewatch.simulate import SimulationSpec, generate
from gatewatch.topics import ensure_topics
from tests.conftest import write_config


class Replica:
    """One `gatewatch serve` with `[api] follow_kafka = true`, in process."""

    def __init__(self, settings: Any, path: Path) -> None:
        k = settings.kafka
        self.store = AlertStore(path)
        self.producer = KafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all")
        self.follower = self._follow(settings)
        triage = TriageLog(store=self.store, follower=self.follower, timeout_seconds=20,
                           publish=lambda key, value: self.producer.send(
                               k.triage_topic, key=key.encode(), value=value).get(timeout=10))
        self.client = TestClient(create_app(api_settings=settings.api, store=self.store, triage=triage,
                                            ready_checks={"kafka": lambda: self.follower.ready()}))

    def _follow(self, settings: Any) -> ClusterFollower:
        k = settings.kafka
        follower = ClusterFollower(store=self.store, alerts_topic=k.alerts_topic, risk_topic=k.risk_topic,
                                   triage_topic=k.triage_topic)
        follower.attach(KafkaConsumer(bootstrap_servers=k.bootstrap_servers, group_id=None,
                                      enable_auto_commit=False, auto_offset_reset="earliest"))
        follower.start()
        return follower

    def restart_from_scratch(self, settings: Any) -> None:
        self.follower.stop()
        self.store.set_meta(OFFSETS_KEY, {})
        self.follower = self._follow(settings)

    def alert_ids(self) -> set[tuple]:
        return _alerts(self.store)

    def risk_rows(self) -> set[tuple]:
        return _risk_rows(self.store.path)

    def close(self) -> None:
        self.follower.stop()
        self.producer.close()
        self.store.close()


def _alerts(store: AlertStore) -> set[tuple]:
    items, _ = store.list_alerts(limit=10_000, suppressed=None)
    return {(x.id, x.type, x.count, x.last_seen) for x in items}


def _risk_rows(path: str) -> set[tuple]:
    db = sqlite3.connect(path)
    try:
        return set(db.execute("SELECT tenant, kind, value, score, level, ts FROM risk").fetchall())
    finally:
        db.close()


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_two_replicas_converge_and_see_each_others_triage(tmp_path: Path, keys_dir, minter, kafka_env) -> None:
    cfg = write_config(tmp_path, keys_dir)
    settings = load_settings(cfg, environ=kafka_env)
    ensure_topics(settings.kafka)
    creds = json.loads((keys_dir / "credentials.json").read_text())
    auth = {"Authorization": f"Bearer {creds['analyst']}"}
    a, b = Replica(settings, tmp_path / "a.db"), Replica(settings, tmp_path / "b.db")
    try:
        # The replicas follow while the worker runs: live, not a copy made afterwards.
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=20)
        topics = {"gateway.access": settings.kafka.access_topic, "gateway.tokens": settings.kafka.tokens_topic}
        for ev in generate(SimulationSpec(seed=5, events=3_000, rate=10, attack_every=400), minter):
            producer.send(topics[ev.topic], key=ev.key.encode(), value=json.dumps(ev.event).encode())
        producer.flush()
        producer.close()
        done = subprocess.run([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run", "--idle-exit", "4"],
                              env={**os.environ, **kafka_env}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        worker_store = AlertStore(settings.store_path)
        expected = _alerts(worker_store)
        worker_store.close()
        expected_risk = _risk_rows(str(settings.store_path))
        assert len(expected) >= 3 and expected_risk
        for r in (a, b):
            _until(lambda r=r: r.alert_ids() == expected and r.risk_rows() == expected_risk,
                   "a replica holds the worker's alerts and risk")
            ready = r.client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["kafka"]["ok"], ready.json()

        target = sorted(expected)[0][0]
        patched = a.client.patch(f"/v1/alerts/{target}", headers=auth,
                                 json={"status": "acknowledged", "note": "on it"})
        assert patched.status_code == 200, patched.json()
        assert patched.json()["status"] == "acknowledged"  # answered with the change applied
        assert a.store.get_alert(target).status == "acknowledged"
        _until(lambda: b.client.get(f"/v1/alerts/{target}", headers=auth).json()["status"] == "acknowledged",
               "replica B sees replica A's triage")
        other = b.client.patch(f"/v1/alerts/{target}", headers=auth, json={"assignee": "bob"})
        assert other.status_code == 200 and other.json()["assignee"] == "bob"
        _until(lambda: a.store.get_alert(target).assignee == "bob", "replica A sees replica B's triage")
        seen = a.client.get(f"/v1/alerts/{target}", headers=auth).json()
        assert [n["text"] for n in seen["notes"]] == ["on it"]
        assert [e["field"] for e in seen["audit"]] == ["status", "note", "assignee"]

        before = b.store.get_alert(target)
        b.restart_from_scratch(settings)  # re-reads every record of the three topics
        _until(lambda: b.follower.caught_up_once, "replica B caught up again")
        after = b.store.get_alert(target)
        assert after.notes == before.notes and after.audit == before.audit  # nothing applied twice
        assert b.alert_ids() == expected and b.risk_rows() == expected_risk
    finally:
        a.close()
        b.close()
