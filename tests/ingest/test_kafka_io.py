"""The shared Kafka plumbing, against a fake consumer (the broker-backed paths: tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from ingest.errors import GatewatchError
from ingest.kafka_io import assign_at, caught_up, lag, wait_for_topics


class Consumer:
    def __init__(self, partitions: dict[str, set[int]], high: dict[TopicPartition, int | None] | None = None,
                 position: dict[TopicPartition, int] | None = None) -> None:
        self.partitions = partitions
        self.high = high or {}
        self.positions = dict(position or {})
        self.assigned: list[TopicPartition] = []
        self.calls: list[tuple[Any, ...]] = []
        self.broker_away = False

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic) or None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", tp.topic, tp.partition, offset))

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.calls.append(("beginning", *sorted((tp.topic, tp.partition) for tp in tps)))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp)

    def position(self, tp: TopicPartition) -> int:
        if self.broker_away:
            raise KafkaConnectionError("away")
        return self.positions.get(tp, 0)


def test_assign_at_puts_each_partition_at_its_stored_position_else_the_log_start() -> None:
    c = Consumer({"alerts": {0, 1}, "risk": {0}})
    tps = assign_at(c, ["alerts", "risk"], {("alerts", 1): 42, ("risk", 0): 7})
    assert [(tp.topic, tp.partition) for tp in tps] == [("alerts", 0), ("alerts", 1), ("risk", 0)]
    assert c.calls == [("seek", "alerts", 1, 42), ("seek", "risk", 0, 7), ("beginning", ("alerts", 0))]


def test_a_topic_that_never_shows_up_is_one_clear_error() -> None:
    slept: list[float] = []
    with pytest.raises(GatewatchError, match="does not show topic risk"):
        wait_for_topics(Consumer({"alerts": {0}}), ["alerts", "risk"], timeout=0.0, sleep=slept.append)


def test_lag_and_caught_up_say_unknown_while_the_end_or_position_is_not_known() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    c = Consumer({"t": {0, 1}}, high={a: 10, b: None}, position={a: 4})
    c.assign([a, b])
    assert lag(c) == {a: 6, b: None}
    since: dict[Any, float] = {}
    assert caught_up(c, since, now=100.0) == {a: False, b: False}
    assert caught_up(c, since, now=106.0)[b] is True  # an end unknown for longer than the grace: not holding back
    c.positions[a] = 10
    assert caught_up(c, since, now=107.0)[a] is True
    c.broker_away = True  # position() needs the broker: not known, so neither lag nor caught up
    assert lag(c)[a] is None and caught_up(c, since, now=108.0)[a] is False
