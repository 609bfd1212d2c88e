"""Gateway events through the real broker into the pipeline, the store, the topics and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.store import AlertStore
from gatewatch.pipeline import Pipeline
from gatewatch.settings import load_settings
from gatewatch.sinks import KafkaResultSink, StoreSink
from gatewatch.topics import ensure_topics
from gatewatch.worker import Worker, WorkerOptions
from ingest.kafka_io import make_consumer, make_producer
from ingest.tokens import TokenValidator
from tests.conftest import T0, write_config
from tests.events import access, raw
from tests.integration.kafka_helpers import produce, read_all


def nonce_attack(minter, n=200):
    tok = minter.mint({"sub": "alice", "client_id": "spa", "tid": "acme", "exp": T0 + 3600, "iat": T0,
                       "cnf": {"jkt": "k-alice"}})
    recs = [access(f"ev-{i}", T0 + i, token=tok, nonce=f"n-{i}") for i in range(n)]
    recs.append(access("ev-replayed", T0 + n + 3, token=tok, nonce="n-17", client_ip="198.51.100.66"))
    return [raw(r) for r in recs]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatewatch.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cli_run_processes_kafka_and_api_lists_the_alert(tmp_path: Path, keys_dir, minter, kafka_env) -> None:
    cfg = write_config(tmp_path, keys_dir)
    settings = load_settings(cfg, environ=kafka_env)
    ensure_topics(settings.kafka)
    poison = [b"{not json", raw({**json.loads(nonce_attack(minter, 1)[0]), "status": "teapot"}),
              b'{"kind":"access","pad":"' + b"x" * 70_000 + b'"}']
    records = nonce_attack(minter)
    produce(settings.kafka.bootstrap_servers, settings.kafka.access_topic, poison[:1] + records[:100] + poison[1:]
            + records[100:], key=b"alice")

    done = cli(kafka_env, "--config", str(cfg), "run", "--idle-exit", "3")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["events"] == len(records) and summary["dead_letters"] == 3

    dlq = read_all(settings.kafka.bootstrap_servers, settings.kafka.dlq_topic, expect_at_least=3)
    entries = [json.loads(m.value) for m in dlq]
    assert sorted(e["code"] for e in entries) == ["not_json", "oversize", "schema"]
    assert all(e["source"]["topic"] == settings.kafka.access_topic for e in entries)

    alerts_topic = read_all(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic, expect_at_least=1)
    assert [json.loads(m.value)["type"] for m in alerts_topic] == ["replay.nonce"]
    risk_topic = read_all(settings.kafka.bootstrap_servers, settings.kafka.risk_topic, expect_at_least=1)
    assert any(m.key == b"acme|subject|alice" for m in risk_topic)

    analyst = json.loads((keys_dir / "credentials.json").read_text())["analyst"]
    app = create_app(api_settings=settings.api, store=AlertStore(str(settings.store_path)))
    with TestClient(app) as client:
        page = client.get("/v1/alerts", headers={"Authorization": f"Bearer {analyst}"}).json()
    assert [a["type"] for a in page["items"]] == ["replay.nonce"]
    alert = page["items"][0]
    assert alert["entity"] == {"kind": "subject", "value": "alice"}
    assert set(alert["evidence"]["event_ids"]) == {"ev-17", "ev-replayed"}
    assert alert["id"] == json.loads(alerts_topic[0].value)["id"]

    # Committed offsets: a second run in the same group has nothing left to do.
    again = cli(kafka_env, "--config", str(cfg), "run", "--idle-exit", "2")
    assert json.loads(again.stdout.strip().splitlines()[-1])["records"] == 0


class FailingSink:
    """A store that is down: flush raises, so the worker must not commit."""

    def write(self, result) -> None:
        pass

    def flush(self) -> None:
        raise OSError("store unavailable")


def _worker(settings, validator, sinks, idle=2.0):
    k = settings.kafka
    return Worker(consumer=make_consumer(k), topics=[k.access_topic], pipeline=Pipeline.from_settings(settings, validator),
                  sinks=sinks, poll_timeout_ms=200, options=WorkerOptions(idle_exit_seconds=idle))


def test_offsets_are_committed_only_after_results_are_durable(tmp_path, keys_dir, minter, kafka_env) -> None:
    settings = load_settings(write_config(tmp_path, keys_dir), environ=kafka_env)
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    ensure_topics(settings.kafka)
    records = nonce_attack(minter, 50)
    produce(settings.kafka.bootstrap_servers, settings.kafka.access_topic, records, key=b"alice")

    crashing = _worker(settings, validator, [FailingSink()])
    try:
        crashing.run()
        raise AssertionError("flush failure must surface")
    except OSError:
        pass
    finally:
        crashing.close()

    store = AlertStore(str(settings.store_path))
    producer = make_producer(settings.kafka)
    k = settings.kafka
    healthy = _worker(settings, validator, [KafkaResultSink(producer, alerts_topic=k.alerts_topic,
                                                            risk_topic=k.risk_topic, dlq_topic=k.dlq_topic),
                                            StoreSink(store)])
    healthy.run()
    healthy.close()
    assert healthy.records == len(records)  # nothing was committed by the failed worker: all re-read
    assert store.count() == 1


def test_redelivered_records_yield_the_same_alert_ids_and_no_second_alert(tmp_path, keys_dir, minter,
                                                                           kafka_env) -> None:
    settings = load_settings(write_config(tmp_path, keys_dir), environ=kafka_env)
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    ensure_topics(settings.kafka)
    produce(settings.kafka.bootstrap_servers, settings.kafka.access_topic, nonce_attack(minter, 80), key=b"alice")
    store = AlertStore(str(settings.store_path))

    first = _worker(settings, validator, [StoreSink(store)])
    first.run()
    first.close()
    before = [a.model_dump() for a in store.list_alerts(tenants=None)[0]]

    # A second group reads everything again (a full redelivery), into the same store; and a restart
    # of one pipeline object re-reading the same records must not see a replay either.
    redeliver = load_settings(write_config(tmp_path, keys_dir), environ={**kafka_env,
                                                                        "GATEWATCH_KAFKA__GROUP_ID": "again"})
    second = _worker(redeliver, validator, [StoreSink(store)])
    second.pipeline = first.pipeline  # same detector state: the records are known, not replays
    second.run()
    second.close()
    assert second.records == first.records
    after = [a.model_dump() for a in store.list_alerts(tenants=None)[0]]
    assert after == before and len(after) == 1 and after[0]["type"] == "replay.nonce"

    # A fresh worker after a crash (empty state) re-processes everything: same ids, nothing doubled.
    third = _worker(load_settings(write_config(tmp_path, keys_dir),
                                  environ={**kafka_env, "GATEWATCH_KAFKA__GROUP_ID": "fresh"}),
                    validator, [StoreSink(store)])
    third.run()
    third.close()
    assert [a.model_dump() for a in store.list_alerts(tenants=None)[0]] == before
