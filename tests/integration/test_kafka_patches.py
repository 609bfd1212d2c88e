"""ingest/kafka_patches.py through the real broker: a consumer polled with `timeout_ms=0` completes a rebalance.

Consumer A is alone in a group and busy between polls, which it makes with `timeout_ms=0` (what a keyed
worker's detect consumer does while its ingest stage has records). Consumer B joins. The JoinGroup/SyncGroup
round trip A starts then finishes while A is busy; unpatched kafka-python 3.0.12 threw that finished join
away and sent another JoinGroup — and since A leads the group, every one of those started a new rebalance
for B too (three in 9 s, measured). With the fix, the group settles in one rebalance: B is assigned once,
and A gets the partitions B did not.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import ConsumerRebalanceListener, KafkaAdminClient
from kafka.admin import NewTopic

from ingest.kafka_patches import keep_finished_joins

pytestmark = pytest.mark.integration


class Recorder(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []

    def on_partitions_revoked(self, revoked) -> None:
        self.revoked.append({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned) -> None:
        self.assigned.append({tp.partition for tp in assigned})


def consumer(bootstrap: str, group: str):
    from kafka import KafkaConsumer
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)


def test_a_join_that_finishes_between_two_zero_timeout_polls_is_kept(broker: str) -> None:
    assert keep_finished_joins()  # kafka-python 3.0.12 has the faulty test: the fix must be needed and in
    topic = f"joins-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    a, a_seen = consumer(broker, f"g-{topic}"), Recorder()
    a.subscribe([topic], listener=a_seen)
    deadline = time.monotonic() + 60  # a safety net for a broken group, not a measurement
    while not a.assignment() and time.monotonic() < deadline:
        a.poll(timeout_ms=200)
    assert {tp.partition for tp in a.assignment()} == {0, 1, 2, 3}

    b_seen, b_done = Recorder(), threading.Event()

    def run_b() -> None:
        b = consumer(broker, f"g-{topic}")
        b.subscribe([topic], listener=b_seen)
        while not b_done.is_set():
            b.poll(timeout_ms=200)
        b.close()

    thread = threading.Thread(target=run_b, daemon=True)
    thread.start()
    try:
        # A: zero-timeout polls with 50 ms of "work" between them, until it holds partitions again after
        # giving all four back (B's arrival)
        while time.monotonic() < deadline:
            a.poll(timeout_ms=0)
            if len(a_seen.revoked) >= 2 and a_seen.revoked[-1] and a_seen.assigned[-1] != {0, 1, 2, 3}:
                break
            time.sleep(0.05)
        for _ in range(20):  # a few more rounds: a stray rebalance would show up in B's record
            a.poll(timeout_ms=0)
            time.sleep(0.05)
    finally:
        b_done.set()
        thread.join(timeout=30)
        a.close()
    a_parts = a_seen.assigned[-1]
    b_assignments = [s for s in b_seen.assigned if s]
    assert a_parts and len(b_assignments) == 1, (a_seen.__dict__, b_seen.__dict__)  # one rebalance, not several
    assert a_parts | b_assignments[0] == {0, 1, 2, 3} and not a_parts & b_assignments[0]
