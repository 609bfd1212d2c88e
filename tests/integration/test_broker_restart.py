"""Broker restart: stop and start the real broker mid-run; the worker resumes and loses no record.

A stream with labelled attacks is produced in two halves; the broker is stopped (by the project's own
script) while the worker is processing the first, and started again before the second. The worker must
carry on by itself, process every record (a batch caught by the outage possibly twice), and raise the
alerts of every labelled attack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from api.store import AlertStore
from gatewatch.settings import load_settings
from gatewatch.simulate import ALL_ATTACKS, SimulationSpec, generate
from gatewatch.topics import ensure_topics
from tests.conftest import write_config
from tests.integration.conftest import SCRIPT
from tests.integration.kafka_helpers import GroupProbe, committed_by_partition

RULE_ATTACKS = tuple(a for a in ALL_ATTACKS if not a.startswith("anomaly.") and a != "traffic.ip_not_allowed")


def _produce(bootstrap: str, topics: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for topic, key, value in records:
        producer.send(topics[topic], key=key, value=value)
    producer.flush()
    producer.close()


@pytest.mark.timeout(600)
def test_the_worker_rides_out_a_broker_restart(tmp_path: Path, keys_dir, minter, kafka_env) -> None:
    cfg = write_config(tmp_path, keys_dir)
    k = load_settings(cfg, environ=kafka_env).kafka
    ensure_topics(k)
    records, labelled = [], set()
    for ev in generate(SimulationSpec(seed=31, events=40_000, rate=20, attacks=RULE_ATTACKS, attack_every=3_000),
                       minter):
        records.append((ev.topic, ev.key.encode(), json.dumps(ev.event).encode()))
        labelled |= {lab["type"] for lab in ev.labels}
    topics = {"gateway.access": k.access_topic, "gateway.tokens": k.tokens_topic}
    half = len(records) // 2
    _produce(k.bootstrap_servers, topics, records[:half])

    worker = subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run",
                               "--idle-exit", "30"], env={**os.environ, **kafka_env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = GroupProbe(k.bootstrap_servers, k.group_id, [k.access_topic, k.tokens_topic])
        done = 0
        deadline = time.monotonic() + 60
        while done == 0 and time.monotonic() < deadline:  # stop the broker once the worker is under way
            done = sum(sum(offs.values()) for offs in committed_by_partition(probe).values())
            time.sleep(0.05)
        probe.admin.close()
        assert 0 < done < half, f"the broker must stop mid-run: {done} of {half} committed"
        subprocess.run([str(SCRIPT), "stop"], check=True, timeout=120)
        time.sleep(3)
        subprocess.run([str(SCRIPT), "start"], check=True, timeout=300)
        _produce(k.bootstrap_servers, topics, records[half:])
        out, err = worker.communicate(timeout=400)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    # At least once: a batch processed but not yet committed when the broker went away is processed again.
    assert summary["events"] >= len(records) and summary["dead_letters"] == 0, summary
    store = AlertStore(str(load_settings(cfg, environ=kafka_env).store_path))
    types = set(store.count_by_type())
    assert types >= labelled, f"missing after the restart: {labelled - types}"
