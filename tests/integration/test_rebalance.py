"""Rebalance through the real broker: a worker joins, another leaves, and no replay goes undetected.

Forty subjects each use a one-time nonce while worker A is alone. Then worker B joins the group (it takes
over some partitions), and half of the nonces are replayed from another address; then A leaves (B takes
over everything), and the other half are replayed. Every replay's first sighting was processed by a worker
that may no longer hold the key: the new owner must have rebuilt that state (warm-up from the time index)
before it processes the replay — so all forty replays raise `replay.nonce`, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from api.routes.health import WORKER_STATS_PREFIX
from api.store import AlertStore
from gatewatch.settings import load_settings
from gatewatch.topics import ensure_topics
from tests.conftest import T0, write_config
from tests.events import access

SUBJECTS = 40


def _caught_up(bootstrap: str, group: str, topics: list[str], timeout: float = 120.0) -> None:
    """Until `group` has committed the end offset of every partition of `topics`."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        deadline = time.monotonic() + timeout
        done: dict = {}
        while time.monotonic() < deadline:
            ends = consumer.end_offsets(tps)
            try:
                done = admin.list_group_offsets({group: None}).get(group, {})
            except KafkaError as exc:  # e.g. the group coordinator not elected yet on a fresh broker
                if not getattr(exc, "retriable", False):
                    raise
                time.sleep(0.3)
                continue
            if all(ends[tp] == 0 or (tp in done and done[tp].offset >= ends[tp]) for tp in tps):
                return
            time.sleep(0.3)
        behind = {f"{tp.topic}/{tp.partition}": (done[tp].offset if tp in done else None, ends[tp])
                  for tp in tps if ends[tp] and (tp not in done or done[tp].offset < ends[tp])}
        raise AssertionError(f"group {group} did not catch up in {timeout:.0f}s: (committed, end) {behind}")
    finally:
        consumer.close()
        admin.close()


def _figures(cfg: Path, env: dict[str, str]) -> dict:
    """The figures every worker last wrote to the store (every 2 s)."""
    store = AlertStore(str(load_settings(cfg, environ=env).store_path))
    try:
        rows = store._db.execute("SELECT key, value FROM meta WHERE key LIKE ?",
                                 (f"{WORKER_STATS_PREFIX}%",)).fetchall()
    finally:
        store.close()
    return {key: json.loads(value) for key, value in rows}


def _worker(env: dict[str, str], cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run", "--keyed"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(600)
def test_replays_across_a_join_and_a_leave_are_all_detected(tmp_path: Path, keys_dir, minter, kafka_env) -> None:
    env = {**kafka_env, "GATEWATCH_KAFKA__EVENTS_TOPIC": kafka_env["GATEWATCH_KAFKA__ACCESS_TOPIC"] + ".ev",
           "GATEWATCH_KAFKA__KEYED_TOPIC": kafka_env["GATEWATCH_KAFKA__ACCESS_TOPIC"] + ".bykey",
           "GATEWATCH_KAFKA__EVENT_PARTITIONS": "6"}
    cfg = write_config(tmp_path, keys_dir)
    k = load_settings(cfg, environ=env).kafka
    ensure_topics(k)
    producer = KafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all")
    tokens = [minter.mint({"sub": f"s{i}", "client_id": "spa", "tid": "acme", "exp": T0 + 3600, "iat": T0,
                           "cnf": {"jkt": f"k{i}"}}) for i in range(SUBJECTS)]

    def send(records: list[dict]) -> None:
        for rec in records:
            producer.send(k.access_topic, key=rec["event_id"].encode(), value=json.dumps(rec).encode())
        producer.flush()

    def settle() -> None:
        for proc in (p for p in procs if p.poll() is not None and p.returncode != 0):
            raise AssertionError(f"a worker died: {proc.stderr.read()[-3000:]}")
        try:
            _caught_up(k.bootstrap_servers, f"{k.group_id}.ingest", [k.access_topic])
            _caught_up(k.bootstrap_servers, k.group_id, [k.events_topic, k.keyed_topic])
        except AssertionError as exc:  # with what each worker last reported: lag, buffered, waiting for
            raise AssertionError(f"{exc}\nworkers: {_figures(cfg, env)}") from None

    first = [access(f"first-{i}", T0 + i, token=tokens[i], nonce=f"n-{i}", client_ip="198.51.100.1")
             for i in range(SUBJECTS)]
    replay = [access(f"again-{i}", T0 + 120 + i, token=tokens[i], nonce=f"n-{i}", client_ip="203.0.113.9")
              for i in range(SUBJECTS)]
    a = _worker(env, cfg)
    procs = [a]
    try:
        send(first)
        settle()
        b = _worker(env, cfg)  # joins: a rebalance hands it some of A's partitions
        procs.append(b)
        try:
            time.sleep(8)  # its join and the rebalance
            send(replay[: SUBJECTS // 2])
            settle()
            a_summary = _stop(a)  # leaves: B takes every partition over
            time.sleep(5)
            send(replay[SUBJECTS // 2:])
            settle()
        finally:
            b_summary = _stop(b)
    finally:
        if a.poll() is None:
            a.kill()
        producer.close()
    assert a_summary["records"] + b_summary["records"] >= 2 * SUBJECTS
    assert b_summary["warmup_events"] > 0  # B rebuilt state for the partitions it gained
    store = AlertStore(str(load_settings(cfg, environ=env).store_path))
    items, _ = store.list_alerts(type="replay.nonce", limit=500)
    assert sorted(a.entity.value for a in items) == sorted(f"s{i}" for i in range(SUBJECTS))
    assert all(set(a.evidence["event_ids"]) >= {f"first-{a.entity.value[1:]}", f"again-{a.entity.value[1:]}"}
               for a in items)
